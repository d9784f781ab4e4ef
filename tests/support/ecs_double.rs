//! An ECS double: an HTTP server on 127.0.0.1 speaking ECS's JSON protocol (`POST /`,
//! `X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Operation>`, `application/x-amz-json-1.1`)
//! for the calls the `ecs` driver makes, with what moto cannot do: rollouts that progress, fail
//! through the circuit breaker with stopped tasks, or never complete, and throttling.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{json, Value};

const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";
const ACCOUNT: &str = "123456789012";

/// What happens to a deployment started by `UpdateService`.
#[derive(Clone, Copy, Debug)]
pub enum Rollout {
    /// IN_PROGRESS for `after` describes, then COMPLETED with running = desired.
    Completes { after: usize },
    /// IN_PROGRESS for `after` describes, then FAILED by the circuit breaker with stopped tasks.
    Fails { after: usize },
    /// IN_PROGRESS for ever.
    Hangs,
}

struct Inner {
    cluster: String,
    services: Vec<Value>,
    task_definitions: Vec<Value>,
    tasks: Vec<Value>,
    rollout: Rollout,
    describes_since_update: usize,
    throttle_next: usize,
    calls: Vec<String>,
    clock: i64,
}

#[derive(Clone)]
pub struct EcsDouble {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

pub fn td_arn(family: &str, revision: usize) -> String {
    format!("arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/{family}:{revision}")
}

impl EcsDouble {
    /// A cluster with one service running revision 1 of `task_definition` (a RegisterTaskDefinition
    /// request body), its initial rollout completed.
    pub async fn start(cluster: &str, service: &str, task_definition: Value, rollout: Rollout) -> EcsDouble {
        let mut inner = Inner {
            cluster: cluster.into(),
            services: Vec::new(),
            task_definitions: Vec::new(),
            tasks: Vec::new(),
            rollout,
            describes_since_update: 0,
            throttle_next: 0,
            calls: Vec::new(),
            clock: 1_700_000_000,
        };
        let arn = inner.register(task_definition);
        let deployment = inner.deployment(&arn, "PRIMARY", "COMPLETED", 2);
        inner.services.push(json!({
            "serviceName": service,
            "serviceArn": format!("arn:aws:ecs:us-east-1:{ACCOUNT}:service/{cluster}/{service}"),
            "clusterArn": format!("arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/{cluster}"),
            "status": "ACTIVE",
            "desiredCount": 2, "runningCount": 2, "pendingCount": 0,
            "taskDefinition": arn,
            "deployments": [deployment],
            "events": [],
        }));
        let double = EcsDouble { url: String::new(), inner: Arc::new(Mutex::new(inner)) };
        let app = axum::Router::new().route("/", post(handle)).with_state(double.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        EcsDouble { url, ..double }
    }

    /// The next `n` calls answer `ThrottlingException`.
    pub fn throttle_next(&self, n: usize) {
        self.inner.lock().unwrap().throttle_next = n;
    }

    /// The operations called so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.inner.lock().unwrap().calls.clone()
    }

    pub fn task_definition(&self, arn: &str) -> Value {
        self.inner.lock().unwrap().task_definitions.iter().find(|t| t["taskDefinitionArn"] == arn).cloned().unwrap()
    }

    pub fn task_definition_count(&self) -> usize {
        self.inner.lock().unwrap().task_definitions.len()
    }

    pub fn service(&self) -> Value {
        self.inner.lock().unwrap().services[0].clone()
    }
}

impl Inner {
    fn tick(&mut self) -> i64 {
        self.clock += 1;
        self.clock
    }

    fn register(&mut self, mut td: Value) -> String {
        let family = td["family"].as_str().unwrap().to_string();
        let revision = self.task_definitions.iter().filter(|t| t["family"] == family.as_str()).count() + 1;
        let arn = td_arn(&family, revision);
        let tags = td.as_object_mut().unwrap().remove("tags").unwrap_or(json!([]));
        td["taskDefinitionArn"] = json!(arn);
        td["revision"] = json!(revision);
        td["status"] = json!("ACTIVE");
        td["registeredAt"] = json!(self.tick());
        td["__tags"] = tags;
        self.task_definitions.push(td);
        arn
    }

    fn deployment(&mut self, arn: &str, status: &str, state: &str, running: i64) -> Value {
        let at = self.tick();
        json!({
            "id": format!("ecs-svc/{at}"), "status": status, "taskDefinition": arn,
            "desiredCount": 2, "pendingCount": 2 - running, "runningCount": running, "failedTasks": 0,
            "createdAt": at, "updatedAt": at, "launchType": "FARGATE",
            "rolloutState": state, "rolloutStateReason": format!("ECS deployment ecs-svc/{at} {}", state.to_lowercase()),
        })
    }

    fn event(&mut self, service: usize, message: String) {
        let at = self.tick();
        let events = self.services[service]["events"].as_array_mut().unwrap();
        events.insert(0, json!({ "id": format!("ev-{at}"), "createdAt": at, "message": message }));
    }

    /// Moves the service's in-progress deployment on, as the scenario says.
    fn advance(&mut self, index: usize) {
        self.describes_since_update += 1;
        let name = self.services[index]["serviceName"].as_str().unwrap().to_string();
        let primary = self.services[index]["deployments"][0].clone();
        if primary["rolloutState"] != "IN_PROGRESS" {
            return;
        }
        let arn = primary["taskDefinition"].as_str().unwrap().to_string();
        match self.rollout {
            Rollout::Completes { after } if self.describes_since_update > after => {
                let d = &mut self.services[index]["deployments"];
                d[0]["rolloutState"] = json!("COMPLETED");
                d[0]["runningCount"] = json!(2);
                d[0]["pendingCount"] = json!(0);
                d.as_array_mut().unwrap().truncate(1);
                self.event(index, format!("(service {name}) has reached a steady state."));
            }
            Rollout::Completes { .. } | Rollout::Hangs => {
                let d = &mut self.services[index]["deployments"][0];
                d["runningCount"] = json!(1);
                d["pendingCount"] = json!(1);
            }
            Rollout::Fails { after } if self.describes_since_update > after => {
                for _ in 0..2 {
                    let at = self.tick();
                    self.tasks.push(json!({
                        "taskArn": format!("arn:aws:ecs:us-east-1:{ACCOUNT}:task/{}/task{at}", self.cluster),
                        "taskDefinitionArn": arn, "group": format!("service:{name}"),
                        "lastStatus": "STOPPED", "desiredStatus": "STOPPED",
                        "stopCode": "EssentialContainerExited", "stoppedReason": "Essential container in task exited",
                        "stoppedAt": at,
                        "containers": [{ "name": "backend", "lastStatus": "STOPPED", "exitCode": 1, "reason": "OutOfMemoryError: Container killed due to memory usage" }],
                    }));
                }
                let d = &mut self.services[index]["deployments"][0];
                d["rolloutState"] = json!("FAILED");
                d["rolloutStateReason"] = json!("ECS deployment circuit breaker: tasks failed to start.");
                d["failedTasks"] = json!(2);
                d["runningCount"] = json!(0);
                self.event(index, format!("(service {name}) has started 1 tasks: (task abc)."));
                self.event(index, format!("(service {name}) deployment {} deployment failed: tasks failed to start.", primary["id"].as_str().unwrap()));
            }
            Rollout::Fails { .. } => {}
        }
    }
}

fn error(code: &str, message: &str) -> Response {
    (StatusCode::BAD_REQUEST, [("content-type", "application/x-amz-json-1.1")], json!({ "__type": code, "message": message }).to_string()).into_response()
}

fn ok(body: Value) -> Response {
    ([("content-type", "application/x-amz-json-1.1")], body.to_string()).into_response()
}

async fn handle(State(double): State<EcsDouble>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(op) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).and_then(|t| t.strip_prefix(TARGET_PREFIX)) else {
        return error("UnknownOperationException", "missing X-Amz-Target");
    };
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/x-amz-json-1.1") {
        return error("SerializationException", "expected application/x-amz-json-1.1");
    }
    if !headers.get("authorization").and_then(|v| v.to_str().ok()).is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 Credential=")) {
        return (StatusCode::FORBIDDEN, [("content-type", "application/x-amz-json-1.1")], json!({ "__type": "MissingAuthenticationTokenException", "message": "unsigned" }).to_string()).into_response();
    }
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut s = double.inner.lock().unwrap();
    s.calls.push(op.to_string());
    if s.throttle_next > 0 {
        s.throttle_next -= 1;
        return error("ThrottlingException", "Rate exceeded");
    }
    let cluster_ok = |s: &Inner| req.get("cluster").and_then(Value::as_str).is_none_or(|c| c == s.cluster);
    match op {
        "DescribeServices" => {
            if !cluster_ok(&s) {
                return error("ClusterNotFoundException", "Cluster not found.");
            }
            let mut services = Vec::new();
            let mut failures = Vec::new();
            for name in req["services"].as_array().into_iter().flatten() {
                match s.services.iter().position(|svc| svc["serviceName"] == *name) {
                    Some(i) => {
                        s.advance(i);
                        services.push(s.services[i].clone());
                    }
                    None => failures.push(json!({ "arn": name, "reason": "MISSING" })),
                }
            }
            ok(json!({ "services": services, "failures": failures }))
        }
        "DescribeTaskDefinition" => {
            let wanted = req["taskDefinition"].as_str().unwrap_or("");
            match s.task_definitions.iter().find(|t| t["taskDefinitionArn"] == wanted) {
                Some(td) => {
                    let mut td = td.clone();
                    let tags = td.as_object_mut().unwrap().remove("__tags").unwrap_or(json!([]));
                    let include_tags = req["include"].as_array().is_some_and(|i| i.contains(&json!("TAGS")));
                    ok(json!({ "taskDefinition": td, "tags": if include_tags { tags } else { json!([]) } }))
                }
                None => error("ClientException", "Unable to describe task definition."),
            }
        }
        "RegisterTaskDefinition" => {
            let arn = s.register(req.clone());
            let mut td = s.task_definitions.iter().find(|t| t["taskDefinitionArn"] == arn.as_str()).cloned().unwrap();
            let tags = td.as_object_mut().unwrap().remove("__tags").unwrap_or(json!([]));
            ok(json!({ "taskDefinition": td, "tags": tags }))
        }
        "UpdateService" => {
            if !cluster_ok(&s) {
                return error("ClusterNotFoundException", "Cluster not found.");
            }
            let Some(i) = s.services.iter().position(|svc| svc["serviceName"] == req["service"]) else {
                return error("ServiceNotFoundException", "Service not found.");
            };
            let arn = req["taskDefinition"].as_str().unwrap_or("").to_string();
            if !s.task_definitions.iter().any(|t| t["taskDefinitionArn"] == arn.as_str()) {
                return error("ClientException", "TaskDefinition not found.");
            }
            let deployment = s.deployment(&arn, "PRIMARY", "IN_PROGRESS", 0);
            let svc = &mut s.services[i];
            svc["taskDefinition"] = json!(arn);
            let deployments = svc["deployments"].as_array_mut().unwrap();
            for d in deployments.iter_mut() {
                d["status"] = json!("ACTIVE");
            }
            deployments.insert(0, deployment);
            s.describes_since_update = 0;
            ok(json!({ "service": s.services[i].clone() }))
        }
        "ListTasks" => {
            let group = format!("service:{}", req["serviceName"].as_str().unwrap_or(""));
            let status = req["desiredStatus"].as_str().unwrap_or("RUNNING");
            let arns: Vec<Value> = s.tasks.iter().filter(|t| t["group"] == group.as_str() && t["desiredStatus"] == status).map(|t| t["taskArn"].clone()).collect();
            ok(json!({ "taskArns": arns }))
        }
        "DescribeTasks" => {
            let wanted = req["tasks"].as_array().cloned().unwrap_or_default();
            let tasks: Vec<Value> = s.tasks.iter().filter(|t| wanted.contains(&t["taskArn"])).cloned().collect();
            ok(json!({ "tasks": tasks, "failures": [] }))
        }
        other => error("UnknownOperationException", &format!("the double does not implement {other}")),
    }
}
