//! An Azure double on 127.0.0.1: the Entra ID token endpoint (client credentials), the managed
//! identity endpoint (IMDS), and Azure Resource Manager's container group GET and PUT, with
//! provisioning states that advance, fail, or hang. Like ARM, it refuses a PUT that carries
//! read-only properties and a request without the token it issued.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json};
use serde_json::{json, Value};

pub const TENANT: &str = "tenant-1";
pub const CLIENT_ID: &str = "client-1";
pub const SUBSCRIPTION: &str = "sub-1";
pub const RESOURCE_GROUP: &str = "invoice-me-rg";

/// What happens after a PUT: the states GETs report, one per GET, the last one repeating.
#[derive(Clone, Debug)]
pub enum Provisioning {
    Succeeds,
    Fails,
    Hangs,
}

struct Inner {
    secret: String,
    groups: HashMap<String, Value>,
    provisioning: Provisioning,
    gets_since_put: usize,
    tokens_issued: usize,
    current_token: Option<String>,
    /// Tokens ARM no longer accepts (as if expired).
    revoked: Vec<String>,
    puts: Vec<Value>,
    /// What the logs API returns per (group, container): (RFC 3339 timestamp, line).
    logs: HashMap<(String, String), Vec<(String, String)>>,
}

#[derive(Clone)]
pub struct ArmDouble {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

/// A container group as ARM's GET returns it: read-only properties included, the secure
/// variable's value withheld.
pub fn group(name: &str, image: &str) -> Value {
    json!({
        "id": format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.ContainerInstance/containerGroups/{name}"),
        "name": name,
        "type": "Microsoft.ContainerInstance/containerGroups",
        "location": "eastus",
        "tags": { "app": "invoiceme" },
        "properties": {
            "provisioningState": "Succeeded",
            "sku": "Standard",
            "osType": "Linux",
            "restartPolicy": "Always",
            "containers": [{
                "name": name,
                "properties": {
                    "image": image,
                    "ports": [{ "port": 8080, "protocol": "TCP" }],
                    "environmentVariables": [
                        { "name": "SPRING_PROFILES_ACTIVE", "value": "prod" },
                        { "name": "JWT_SECRET" }
                    ],
                    "resources": { "requests": { "cpu": 2.0, "memoryInGB": 4.0 } },
                    "instanceView": {
                        "restartCount": 0,
                        "currentState": { "state": "Running", "detailStatus": "", "startTime": "2024-11-09T12:00:00Z" },
                        "events": []
                    }
                }
            }],
            "ipAddress": { "type": "Public", "ip": "20.1.2.3", "ports": [{ "port": 8080, "protocol": "TCP" }], "dnsNameLabel": "invoiceme", "fqdn": "invoiceme.eastus.azurecontainer.io" },
            "instanceView": { "state": "Running", "events": [] }
        }
    })
}

impl ArmDouble {
    pub async fn start(secret: &str, groups: Vec<Value>, provisioning: Provisioning) -> ArmDouble {
        let inner = Inner {
            secret: secret.into(),
            groups: groups.into_iter().map(|g| (g["name"].as_str().unwrap().to_string(), g)).collect(),
            provisioning,
            gets_since_put: 0,
            tokens_issued: 0,
            current_token: None,
            revoked: Vec::new(),
            puts: Vec::new(),
            logs: HashMap::new(),
        };
        let double = ArmDouble { url: String::new(), inner: Arc::new(Mutex::new(inner)) };
        let app = axum::Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/metadata/identity/oauth2/token", get(imds))
            .route(
                "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroups/{name}",
                get(get_group).put(put_group),
            )
            .route(
                "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroups/{name}/containers/{container}/logs",
                get(get_logs),
            )
            .with_state(double.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        ArmDouble { url, ..double }
    }

    pub fn tokens_issued(&self) -> usize {
        self.inner.lock().unwrap().tokens_issued
    }

    /// ARM stops accepting the current token, as when it expires early.
    pub fn revoke_token(&self) {
        let mut s = self.inner.lock().unwrap();
        if let Some(t) = s.current_token.clone() {
            s.revoked.push(t);
        }
    }

    pub fn puts(&self) -> Vec<Value> {
        self.inner.lock().unwrap().puts.clone()
    }

    /// The log lines (timestamp, text) the logs API has for a container of a group.
    pub fn set_logs(&self, group: &str, container: &str, lines: &[(&str, &str)]) {
        let lines = lines.iter().map(|(t, l)| (t.to_string(), l.to_string())).collect();
        self.inner.lock().unwrap().logs.insert((group.to_string(), container.to_string()), lines);
    }

    pub fn group(&self, name: &str) -> Value {
        self.inner.lock().unwrap().groups[name].clone()
    }
}

fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": { "code": code, "message": message } }))).into_response()
}

fn issue(s: &mut Inner, expires_in: Value) -> Response {
    s.tokens_issued += 1;
    let token = format!("token-{}", s.tokens_issued);
    s.current_token = Some(token.clone());
    Json(json!({ "token_type": "Bearer", "access_token": token, "expires_in": expires_in })).into_response()
}

async fn token(State(double): State<ArmDouble>, Path(tenant): Path<String>, Form(form): Form<HashMap<String, String>>) -> Response {
    let mut s = double.inner.lock().unwrap();
    let field = |k: &str| form.get(k).map(String::as_str);
    if tenant != TENANT || field("grant_type") != Some("client_credentials") || field("scope") != Some("https://management.azure.com/.default") {
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": "invalid_request", "error_description": "AADSTS900144: bad request" }))).into_response();
    }
    if field("client_id") != Some(CLIENT_ID) || field("client_secret") != Some(s.secret.as_str()) {
        // Like Entra ID, the answer does not echo the secret; a careless client might, so the test checks.
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1" })),
        )
            .into_response();
    }
    issue(&mut s, json!(3599))
}

async fn imds(State(double): State<ArmDouble>, headers: HeaderMap, Query(query): Query<HashMap<String, String>>) -> Response {
    let mut s = double.inner.lock().unwrap();
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": "invalid_request", "error_description": "Required metadata header not specified" }))).into_response();
    }
    if query.get("api-version").map(String::as_str) != Some("2018-02-01") || query.get("resource").map(String::as_str) != Some("https://management.azure.com/") {
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": "invalid_request", "error_description": "bad query" }))).into_response();
    }
    // IMDS gives expires_in as a string.
    issue(&mut s, json!("86399"))
}

fn authorized(s: &Inner, headers: &HeaderMap) -> bool {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    bearer.is_some_and(|b| s.current_token.as_deref() == Some(b) && !s.revoked.iter().any(|r| r == b))
}

fn check_path(sub: &str, rg: &str, query: &HashMap<String, String>) -> Option<Response> {
    if query.get("api-version").map(String::as_str) != Some("2023-05-01") {
        return Some(arm_error(StatusCode::BAD_REQUEST, "MissingApiVersionParameter", "The api-version query parameter is required."));
    }
    if sub != SUBSCRIPTION || rg != RESOURCE_GROUP {
        return Some(arm_error(StatusCode::NOT_FOUND, "ResourceGroupNotFound", &format!("Resource group '{rg}' could not be found.")));
    }
    None
}

async fn get_group(
    State(double): State<ArmDouble>,
    headers: HeaderMap,
    Path((sub, rg, name)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut s = double.inner.lock().unwrap();
    if !authorized(&s, &headers) {
        return arm_error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", "The access token is invalid.");
    }
    if let Some(r) = check_path(&sub, &rg, &query) {
        return r;
    }
    s.gets_since_put += 1;
    let step = s.gets_since_put;
    let provisioning = s.provisioning.clone();
    let Some(group) = s.groups.get_mut(&name) else {
        return arm_error(StatusCode::NOT_FOUND, "ResourceNotFound", &format!("The Resource 'Microsoft.ContainerInstance/containerGroups/{name}' was not found."));
    };
    let state = group["properties"]["provisioningState"].as_str().unwrap_or("").to_string();
    if state != "Succeeded" && state != "Failed" {
        match provisioning {
            Provisioning::Succeeds if step >= 2 => group["properties"]["provisioningState"] = json!("Succeeded"),
            Provisioning::Fails if step >= 2 => {
                group["properties"]["provisioningState"] = json!("Failed");
                let view = &mut group["properties"]["containers"][0]["properties"]["instanceView"];
                view["restartCount"] = json!(3);
                view["currentState"] = json!({ "state": "Terminated", "detailStatus": "Error", "exitCode": 1, "finishTime": "2024-11-09T12:01:00Z" });
                view["events"] = json!([
                    { "count": 1, "firstTimestamp": "2024-11-09T12:00:10Z", "lastTimestamp": "2024-11-09T12:00:10Z", "name": "Pulled", "message": "Successfully pulled image", "type": "Normal" },
                    { "count": 3, "firstTimestamp": "2024-11-09T12:00:20Z", "lastTimestamp": "2024-11-09T12:01:00Z", "name": "BackOff", "message": "Back-off restarting failed container", "type": "Warning" }
                ]);
            }
            _ => group["properties"]["provisioningState"] = json!(if step == 1 { "Pending" } else { "Creating" }),
        }
    }
    Json(group.clone()).into_response()
}

async fn put_group(
    State(double): State<ArmDouble>,
    headers: HeaderMap,
    Path((sub, rg, name)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Response {
    let mut s = double.inner.lock().unwrap();
    if !authorized(&s, &headers) {
        return arm_error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", "The access token is invalid.");
    }
    if let Some(r) = check_path(&sub, &rg, &query) {
        return r;
    }
    let read_only = ["/properties/provisioningState", "/properties/instanceView", "/properties/ipAddress/ip", "/properties/ipAddress/fqdn"];
    if let Some(p) = read_only.iter().find(|p| body.pointer(p).is_some()) {
        return arm_error(StatusCode::BAD_REQUEST, "InvalidRequestContent", &format!("The property '{p}' is read-only."));
    }
    let containers = body.pointer("/properties/containers").and_then(Value::as_array).cloned().unwrap_or_default();
    if containers.iter().any(|c| c.pointer("/properties/instanceView").is_some()) {
        return arm_error(StatusCode::BAD_REQUEST, "InvalidRequestContent", "The property 'instanceView' is read-only.");
    }
    for var in containers.iter().flat_map(|c| c.pointer("/properties/environmentVariables").and_then(Value::as_array).cloned().unwrap_or_default()) {
        if var.get("value").is_none() && var.get("secureValue").is_none() {
            return arm_error(StatusCode::BAD_REQUEST, "EnvironmentVariableValueMissing", "An environment variable has no value.");
        }
    }
    s.puts.push(body.clone());
    s.gets_since_put = 0;
    // What GET returns next: the body, withheld secrets, computed properties, a provisioning state.
    let mut stored = body.clone();
    stored["id"] = json!(format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroups/{name}"));
    stored["type"] = json!("Microsoft.ContainerInstance/containerGroups");
    stored["properties"]["provisioningState"] = json!("Pending");
    stored["properties"]["ipAddress"]["ip"] = json!("20.1.2.4");
    stored["properties"]["ipAddress"]["fqdn"] = json!("invoiceme.eastus.azurecontainer.io");
    for c in stored["properties"]["containers"].as_array_mut().unwrap() {
        for var in c["properties"]["environmentVariables"].as_array_mut().into_iter().flatten() {
            var.as_object_mut().unwrap().remove("secureValue");
        }
        c["properties"]["instanceView"] = json!({ "restartCount": 0, "currentState": { "state": "Waiting", "detailStatus": "" }, "events": [] });
    }
    s.groups.insert(name, stored.clone());
    (StatusCode::CREATED, Json(stored)).into_response()
}

/// `GET …/containerGroups/{name}/containers/{container}/logs?api-version&tail&timestamps`:
/// `{"content": "..."}`, the last `tail` lines, each prefixed by its timestamp when asked.
async fn get_logs(
    State(double): State<ArmDouble>,
    headers: HeaderMap,
    Path((sub, rg, name, container)): Path<(String, String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let s = double.inner.lock().unwrap();
    if !authorized(&s, &headers) {
        return arm_error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", "The access token is invalid.");
    }
    if let Some(r) = check_path(&sub, &rg, &query) {
        return r;
    }
    let Some(group) = s.groups.get(&name) else {
        return arm_error(StatusCode::NOT_FOUND, "ResourceNotFound", &format!("The Resource 'Microsoft.ContainerInstance/containerGroups/{name}' was not found."));
    };
    if !group["properties"]["containers"].as_array().is_some_and(|cs| cs.iter().any(|c| c["name"] == json!(container))) {
        return arm_error(StatusCode::NOT_FOUND, "ContainerNotFound", &format!("The container '{container}' is not found in container group '{name}'."));
    }
    let tail = match query.get("tail").map(|t| t.parse::<usize>()) {
        None => usize::MAX,
        Some(Ok(n)) => n,
        Some(Err(_)) => return arm_error(StatusCode::BAD_REQUEST, "InvalidRequestParameter", "The parameter 'tail' must be an integer."),
    };
    let timestamps = match query.get("timestamps").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return arm_error(StatusCode::BAD_REQUEST, "InvalidRequestParameter", "The parameter 'timestamps' must be a boolean."),
    };
    let lines = s.logs.get(&(name.clone(), container.clone())).cloned().unwrap_or_default();
    let content: String = lines[lines.len().saturating_sub(tail)..]
        .iter()
        .map(|(t, l)| if timestamps { format!("{t} {l}\n") } else { format!("{l}\n") })
        .collect();
    Json(json!({ "content": content })).into_response()
}
