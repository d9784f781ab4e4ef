//! The endpoints, in the shapes Spring Boot and InvoiceMe give them.

use std::hash::BuildHasher as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use serde_json::{json, Value};

use crate::metrics::Gauges;
use crate::text::{base64url, rfc3339_now, uuid_like};
use crate::{lock, StandinState, SMOKE_PASSWORD, SMOKE_USERNAME, TOKEN_TTL_SECS};

const ACTUATOR_JSON: &str = "application/vnd.spring-boot.actuator.v3+json";
const JSON: &str = "application/json";
const HTML: &str = "text/html;charset=UTF-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const DB_ERROR: &str =
    "org.springframework.jdbc.CannotGetJdbcConnectionException: Failed to obtain JDBC Connection";

/// A customer as InvoiceMe's API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    pub id: String,
    pub name: String,
    pub email: String,
    pub created_at: String,
}

pub(crate) fn router(state: StandinState) -> Router {
    let app = Router::new()
        .route("/", get(frontend))
        .route("/api/version", get(version))
        .route("/api/actuator/health", get(health))
        .route("/api/actuator/health/db", get(health_db))
        .route("/api/auth/login", post(login))
        .route("/api/customers", get(list_customers).post(create_customer))
        .route("/actuator/prometheus", get(prometheus))
        .route("/api/actuator/prometheus", get(prometheus))
        .route("/http", get(plain_http))
        .route("/http/", get(plain_http))
        .route("/http/{*rest}", get(plain_http))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), security))
        // The delay sits inside the counter so that `-slow` shows in the latency histogram.
        .layer(middleware::from_fn_with_state(state.clone(), delay))
        .layer(middleware::from_fn_with_state(state.clone(), count));
    // Controls are neither counted nor delayed: they are the test's hand, not the app.
    let controls = Router::new()
        .route("/__standin/health", post(set_health))
        .route("/__standin/errors", post(set_errors))
        .route("/__standin/state", get(show_state));
    app.merge(controls).with_state(state)
}

/// What a hardened deployment's proxy adds: security headers on every response, CORS preflights
/// answered for [`crate::ALLOWED_ORIGIN`] only, failed logins throttled (after
/// [`crate::LOGIN_FAILURES_ALLOWED`] in [`crate::LOGIN_WINDOW`], 429). `-insecure` does none of it.
async fn security(State(state): State<StandinState>, request: Request, next: Next) -> Response {
    let insecure = state.behaviour().insecure;
    if request.method() == axum::http::Method::OPTIONS {
        let origin = request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut response = match origin {
            Some(_) if insecure => StatusCode::NO_CONTENT.into_response(),
            Some(origin) if origin == crate::ALLOWED_ORIGIN => StatusCode::NO_CONTENT.into_response(),
            _ => spring_error(StatusCode::FORBIDDEN, "Invalid CORS request", request.uri().path()),
        };
        let allow = if insecure { Some("*".to_owned()) } else { origin_allowed(&request) };
        if let Some(allow) = allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
        }
        return harden(response, insecure);
    }
    let login = request.uri().path() == "/api/auth/login";
    let response = next.run(request).await;
    // Failed logins are throttled (a correct password still gets in, so smoke tests never meet it).
    if login && !insecure && !response.status().is_success() {
        if state.login_throttled(Instant::now()) {
            let mut response = spring_error(StatusCode::TOO_MANY_REQUESTS, "Too many failed login attempts", "/api/auth/login");
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            return harden(response, insecure);
        }
        state.record_failed_login(Instant::now());
    }
    harden(response, insecure)
}

fn origin_allowed(request: &Request) -> Option<String> {
    request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).filter(|o| *o == crate::ALLOWED_ORIGIN).map(str::to_owned)
}

fn harden(mut response: Response, insecure: bool) -> Response {
    if !insecure {
        let headers = response.headers_mut();
        headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000; includeSubDomains"));
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'self'"));
    }
    response
}

/// The plain-HTTP front door: `/http/<path>` stands for `http://<host>/<path>`, which a hardened
/// proxy redirects to HTTPS; `-insecure` serves the page over plain HTTP.
async fn plain_http(State(state): State<StandinState>, headers: HeaderMap, uri: Uri) -> Response {
    if state.behaviour().insecure {
        return respond(StatusCode::OK, HTML, index_page(&state));
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
    let rest = uri.path().strip_prefix("/http").unwrap_or_default();
    let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("https://{host}{}", if rest.is_empty() { "/" } else { rest })) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

async fn delay(State(state): State<StandinState>, request: Request, next: Next) -> Response {
    if state.behaviour().slow {
        tokio::time::sleep(state.config().slow).await;
    }
    next.run(request).await
}

async fn count(State(state): State<StandinState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    // Spring tags unmatched requests by outcome rather than by path, which keeps the series bounded.
    let uri = matched.unwrap_or_else(|| {
        match status {
            404 => "NOT_FOUND",
            300..=399 => "REDIRECTION",
            _ => "UNKNOWN",
        }
        .to_owned()
    });
    state.inner.metrics.record(&method, &uri, status, elapsed);
    if state.config().log_requests {
        println!(
            "{} INFO 1 --- [http-nio-8080-exec] access : {method} {path} {status} {:.1}ms",
            rfc3339_now(),
            elapsed.as_secs_f64() * 1000.0
        );
    }
    response
}

impl StandinState {
    fn log_error(&self, logger: &str, message: &str) {
        if self.config().log_requests {
            eprintln!(
                "{} ERROR 1 --- [http-nio-8080-exec] {logger} : {message}",
                rfc3339_now()
            );
        }
    }

    /// Whether this eligible request is one of the `-errors` failures.
    fn inject_error(&self, path: &str) -> bool {
        let fails = lock(&self.inner.errors).next_fails();
        if fails {
            self.log_error(
                "o.a.c.c.C.[.[.[/].[dispatcherServlet]",
                &format!("Servlet.service() for servlet [dispatcherServlet] threw exception [Request processing failed: java.lang.IllegalStateException: injected failure on {path}]"),
            );
        }
        fails
    }

    fn database_down(&self) -> bool {
        let down = !self.is_healthy();
        if down {
            self.log_error(
                "com.zaxxer.hikari.pool.HikariPool",
                "HikariPool-1 - Connection is not available, request timed out after 30000ms.",
            );
        }
        down
    }

    fn db_connection(&self) -> DbConnection {
        self.inner.db_in_flight.fetch_add(1, Ordering::SeqCst);
        DbConnection(self.clone())
    }

    fn issue_token(&self, subject: &str) -> String {
        let serial = self.inner.ids.fetch_add(1, Ordering::SeqCst);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let header = base64url(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims =
            json!({ "sub": subject, "iat": now, "exp": now + TOKEN_TTL_SECS, "jti": serial });
        let signing_input = format!("{header}.{}", base64url(claims.to_string().as_bytes()));
        let signature: Vec<u8> = (0u8..4)
            .flat_map(|part| {
                self.inner
                    .hasher
                    .hash_one((part, &signing_input))
                    .to_be_bytes()
            })
            .collect();
        let token = format!("{signing_input}.{}", base64url(&signature));
        lock(&self.inner.tokens).insert(token.clone(), Instant::now());
        token
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
        else {
            return false;
        };
        lock(&self.inner.tokens)
            .get(token.trim())
            .is_some_and(|issued| issued.elapsed() < Duration::from_secs(TOKEN_TTL_SECS))
    }

    fn new_customer_id(&self) -> String {
        let serial = self.inner.ids.fetch_add(1, Ordering::SeqCst);
        uuid_like(
            self.inner.hasher.hash_one(("high", serial)),
            self.inner.hasher.hash_one(("low", serial)),
        )
    }
}

/// A pretend pool connection, counted in `hikaricp_connections_active` while held.
struct DbConnection(StandinState);

impl Drop for DbConnection {
    fn drop(&mut self) {
        self.0.inner.db_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

fn json_response(status: StatusCode, content_type: &'static str, body: &Value) -> Response {
    respond(status, content_type, body.to_string())
}

/// Spring Boot's default error body.
fn spring_error(status: StatusCode, message: &str, path: &str) -> Response {
    let body = json!({
        "timestamp": rfc3339_now(),
        "status": status.as_u16(),
        "error": status.canonical_reason().unwrap_or("Error"),
        "message": message,
        "path": path,
    });
    json_response(status, JSON, &body)
}

fn unauthorized(path: &str) -> Response {
    let mut response = spring_error(
        StatusCode::UNAUTHORIZED,
        "Full authentication is required to access this resource",
        path,
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn status_word(up: bool) -> &'static str {
    if up {
        "UP"
    } else {
        "DOWN"
    }
}

fn health_status(up: bool) -> StatusCode {
    if up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn index_page(state: &StandinState) -> String {
    let version = state.version();
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>InvoiceMe</title>\
         <meta name=\"version\" content=\"{version}\"></head>\n\
         <body><div id=\"root\"><h1>InvoiceMe</h1><p>Invoices, customers and payments. Version {version}.</p></div></body>\n</html>\n"
    )
}

/// What a proxy that routes `/api` to the frontend by mistake serves: the SPA's index with 200.
fn html_instead_of_json(state: &StandinState) -> Response {
    respond(StatusCode::OK, HTML, index_page(state))
}

async fn frontend(State(state): State<StandinState>) -> Response {
    if state.inject_error("/") {
        let page = "<!doctype html><html><body><h1>Whitelabel Error Page</h1><p>There was an unexpected error (type=Internal Server Error, status=500).</p></body></html>\n";
        return respond(StatusCode::INTERNAL_SERVER_ERROR, HTML, page.to_owned());
    }
    respond(StatusCode::OK, HTML, index_page(&state))
}

async fn version(State(state): State<StandinState>) -> Response {
    json_response(StatusCode::OK, JSON, &json!({ "version": state.version() }))
}

async fn health(State(state): State<StandinState>) -> Response {
    if state.behaviour().html {
        return html_instead_of_json(&state);
    }
    let up = !state.database_down();
    let db = if up {
        json!({ "status": "UP" })
    } else {
        json!({ "status": "DOWN", "details": { "error": DB_ERROR } })
    };
    let body = json!({ "status": status_word(up), "components": { "db": db, "diskSpace": { "status": "UP" } } });
    json_response(health_status(up), ACTUATOR_JSON, &body)
}

async fn health_db(State(state): State<StandinState>) -> Response {
    if state.behaviour().html {
        return html_instead_of_json(&state);
    }
    let up = !state.database_down();
    let _connection = up.then(|| state.db_connection());
    let body = if up {
        json!({ "status": "UP", "details": { "database": "PostgreSQL", "validationQuery": "isValid()" } })
    } else {
        json!({ "status": "DOWN", "details": { "error": DB_ERROR } })
    };
    json_response(health_status(up), ACTUATOR_JSON, &body)
}

/// The body as a JSON object, if it is one.
fn json_object(body: &[u8]) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Some(object),
        _ => None,
    }
}

/// Spring's 400 for a body that is not a JSON object.
fn malformed(path: &str) -> Response {
    spring_error(
        StatusCode::BAD_REQUEST,
        "Malformed JSON request: expected a JSON object",
        path,
    )
}

fn text_field<'a>(object: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a str> {
    object
        .get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

async fn login(State(state): State<StandinState>, body: Bytes) -> Response {
    const PATH: &str = "/api/auth/login";
    let Some(credentials) = json_object(&body) else {
        return malformed(PATH);
    };
    let (Some(username), Some(password)) = (
        text_field(&credentials, "username"),
        text_field(&credentials, "password"),
    ) else {
        return spring_error(
            StatusCode::BAD_REQUEST,
            "username and password must not be blank",
            PATH,
        );
    };
    if state.database_down() {
        return spring_error(StatusCode::INTERNAL_SERVER_ERROR, DB_ERROR, PATH);
    }
    let _connection = state.db_connection();
    let extra = state.config().extra_password.as_deref();
    if username != SMOKE_USERNAME || (password != SMOKE_PASSWORD && Some(password) != extra) {
        return spring_error(StatusCode::UNAUTHORIZED, "Bad credentials", PATH);
    }
    let token = state.issue_token(username);
    json_response(
        StatusCode::OK,
        JSON,
        &json!({ "token": token, "tokenType": "Bearer", "expiresIn": TOKEN_TTL_SECS }),
    )
}

async fn create_customer(
    State(state): State<StandinState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const PATH: &str = "/api/customers";
    if !state.authorized(&headers) {
        return unauthorized(PATH);
    }
    if state.inject_error(PATH) {
        return spring_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            PATH,
        );
    }
    let Some(fields) = json_object(&body) else {
        return malformed(PATH);
    };
    let Some(name) = text_field(&fields, "name") else {
        return spring_error(StatusCode::BAD_REQUEST, "name must not be blank", PATH);
    };
    let Some(email) = text_field(&fields, "email").filter(|email| email.contains('@')) else {
        return spring_error(
            StatusCode::BAD_REQUEST,
            "email must be a well-formed email address",
            PATH,
        );
    };
    if state.database_down() {
        return spring_error(StatusCode::INTERNAL_SERVER_ERROR, DB_ERROR, PATH);
    }
    let _connection = state.db_connection();
    let customer = Customer {
        id: state.new_customer_id(),
        name: name.to_owned(),
        email: email.to_owned(),
        created_at: rfc3339_now(),
    };
    lock(&state.inner.customers).push(customer.clone());
    let mut response = json_response(StatusCode::CREATED, JSON, &json!(customer));
    if let Ok(location) = HeaderValue::from_str(&format!("{PATH}/{}", customer.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

async fn list_customers(State(state): State<StandinState>, headers: HeaderMap) -> Response {
    const PATH: &str = "/api/customers";
    if !state.authorized(&headers) && !state.behaviour().insecure {
        return unauthorized(PATH);
    }
    if state.inject_error(PATH) {
        return spring_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            PATH,
        );
    }
    if state.database_down() {
        return spring_error(StatusCode::INTERNAL_SERVER_ERROR, DB_ERROR, PATH);
    }
    let _connection = state.db_connection();
    json_response(StatusCode::OK, JSON, &json!(state.customers()))
}

async fn prometheus(State(state): State<StandinState>) -> Response {
    let behaviour = state.behaviour();
    let inner = &state.inner;
    let gauges = Gauges {
        version: state.version(),
        process_cpu: if behaviour.hog { 0.95 } else { 0.03 },
        system_cpu: if behaviour.hog { 0.97 } else { 0.12 },
        heap_used_ratio: if behaviour.hog { 0.9 } else { 0.3 },
        pool_active: if behaviour.dbpool {
            9
        } else {
            inner.db_in_flight.load(Ordering::SeqCst)
        },
        pool_pending: if behaviour.dbpool { 3 } else { 0 },
        uptime: inner.started.elapsed(),
        start_unix: inner.started_unix,
        ready_after: inner.ready_after.get().copied().unwrap_or_default(),
    };
    respond(
        StatusCode::OK,
        PROMETHEUS_TEXT,
        inner.metrics.render(&gauges),
    )
}

async fn not_found(uri: Uri) -> Response {
    spring_error(StatusCode::NOT_FOUND, "No static resource", uri.path())
}

async fn set_health(State(state): State<StandinState>, body: Bytes) -> Response {
    let up = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|value| value.get("up").and_then(Value::as_bool));
    match up {
        Some(up) => {
            state.set_healthy(up);
            json_response(StatusCode::OK, JSON, &json!({ "up": up }))
        }
        None => spring_error(
            StatusCode::BAD_REQUEST,
            "expected {\"up\": true|false}",
            "/__standin/health",
        ),
    }
}

async fn set_errors(State(state): State<StandinState>, body: Bytes) -> Response {
    let rate = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|value| value.get("rate").and_then(Value::as_f64))
        .filter(|rate| (0.0..=1.0).contains(rate));
    match rate {
        Some(rate) => {
            state.set_error_rate(rate);
            json_response(StatusCode::OK, JSON, &json!({ "rate": rate }))
        }
        None => spring_error(
            StatusCode::BAD_REQUEST,
            "expected {\"rate\": a number from 0 to 1}",
            "/__standin/errors",
        ),
    }
}

async fn show_state(State(state): State<StandinState>) -> Response {
    let body = json!({
        "version": state.version(),
        "behaviour": state.behaviour().names(),
        "healthy": state.is_healthy(),
        "errorRate": state.error_rate(),
        "customers": lock(&state.inner.customers).len(),
    });
    json_response(StatusCode::OK, JSON, &body)
}
