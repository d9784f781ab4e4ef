//! The `ecs` driver against moto (the calls end to end: registration, UpdateService, rollback to
//! the exact ARN, wrong names) and against an ECS double of our own (rollout progress, the circuit
//! breaker, a rollout that never completes, throttling), which moto cannot play.

#[path = "support/ecs_double.rs"]
mod ecs_double;

use std::collections::BTreeMap;
use std::time::Instant;

use deploybot::targets::aws_ecs::{EcsConfig, EcsTarget};
use deploybot::targets::{DeployRequest, DeployTarget, RollbackRequest, Running, TargetError};
use deploybot_commands::ServiceName;
use ecs_double::{td_arn, EcsDouble, Rollout};
use serde_json::{json, Value};

const REPO: &str = "your-registry/invoice-me-backend";
const ECS_SERVICE: &str = "invoice-me-backend";

/// Static test keys, given to the driver explicitly, so that the standard chain is never asked
/// (environment, profiles, IMDS).
fn test_vars() -> deploybot::secrets::Vars {
    deploybot::secrets::Vars::from_pairs([("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")])
}

fn backend() -> ServiceName {
    ServiceName::new("backend").unwrap()
}

fn config(endpoint: &str, cluster: &str, rollout_timeout: &str) -> EcsConfig {
    EcsConfig {
        cluster: cluster.into(),
        region: "us-east-1".into(),
        endpoint_url: Some(endpoint.into()),
        services: BTreeMap::from([("backend".to_string(), ECS_SERVICE.to_string())]),
        containers: BTreeMap::new(),
        rollout_timeout: rollout_timeout.into(),
        poll_interval: "20ms".into(),
    }
}

async fn target(config: &EcsConfig) -> EcsTarget {
    EcsTarget::new(config, &test_vars()).await.unwrap()
}

fn deploy_request(version: &str) -> DeployRequest {
    DeployRequest { deployment_id: 7, env: "production".into(), service: backend(), image: REPO.into(), version: version.into(), digest: None, previous: None }
}

fn rollback_request(from: &str, to: Running) -> RollbackRequest {
    RollbackRequest { deployment_id: 7, env: "production".into(), service: backend(), image: REPO.into(), from_version: from.into(), to }
}

/// The runbook's backend task definition: env, secrets, CPU, memory, roles, a sidecar, a volume,
/// a placement constraint and tags, all of which a new revision must keep.
fn task_definition(network_mode: &str, compatibility: &str) -> Value {
    json!({
        "family": "invoice-me-backend",
        "taskRoleArn": "arn:aws:iam::123456789012:role/invoice-me-task",
        "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
        "networkMode": network_mode,
        "requiresCompatibilities": [compatibility],
        "cpu": "512",
        "memory": "1024",
        "containerDefinitions": [
            {
                "name": "backend",
                "image": format!("{REPO}:v1.0.0"),
                "cpu": 448, "memory": 960, "essential": true,
                "portMappings": [{ "containerPort": 8080, "hostPort": 8080, "protocol": "tcp" }],
                "environment": [
                    { "name": "SPRING_PROFILES_ACTIVE", "value": "prod" },
                    { "name": "DATABASE_URL", "value": "jdbc:postgresql://db.internal:5432/invoiceme" }
                ],
                "secrets": [{ "name": "JWT_SECRET", "valueFrom": "arn:aws:secretsmanager:us-east-1:123456789012:secret:invoiceme/jwt" }],
                "mountPoints": [{ "sourceVolume": "tmp", "containerPath": "/tmp" }],
                "logConfiguration": { "logDriver": "awslogs", "options": { "awslogs-group": "/ecs/invoice-me-backend", "awslogs-region": "us-east-1" } }
            },
            // ECS reports an unset container cpu as 0 (the SDK's field is not optional), so say it.
            { "name": "log-router", "image": "amazon/aws-for-fluent-bit:2.31.0", "cpu": 0, "essential": false, "memory": 64 }
        ],
        "volumes": [{ "name": "tmp", "host": { "sourcePath": "/var/tmp/invoiceme" } }],
        "placementConstraints": [{ "type": "memberOf", "expression": "attribute:ecs.instance-type =~ t3.*" }],
        "tags": [{ "key": "team", "value": "billing" }]
    })
}

/// Everything a registration may change between two revisions: identity and bookkeeping.
fn comparable(mut td: Value) -> Value {
    for key in ["taskDefinitionArn", "revision", "registeredAt", "registeredBy", "status"] {
        td.as_object_mut().unwrap().remove(key);
    }
    td
}

// ---------------------------------------------------------------------------------------------
// moto

/// moto's URL; tests fail with how to start it unless DEPLOYBOT_SKIP_MOTO=1 asks to skip.
fn moto_url() -> Option<String> {
    match std::env::var("DEPLOYBOT_TEST_MOTO_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("DEPLOYBOT_SKIP_MOTO").as_deref() == Ok("1") => {
            eprintln!("skipped: DEPLOYBOT_SKIP_MOTO=1 and no DEPLOYBOT_TEST_MOTO_URL");
            None
        }
        _ => panic!(
            "this test needs moto: run `source scripts/services/moto.sh && moto_start` first (bash scripts/test.sh does it), \
             or set DEPLOYBOT_SKIP_MOTO=1 to skip the moto tests"
        ),
    }
}

/// One raw ECS call to moto, as the AWS CLI would make it.
async fn moto(url: &str, op: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{url}/"))
        .header("x-amz-target", format!("AmazonEC2ContainerServiceV20141113.{op}"))
        .header("content-type", "application/x-amz-json-1.1")
        .header("authorization", "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/ecs/aws4_request, SignedHeaders=host, Signature=0")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "moto {op}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// A fresh cluster and task-definition family (unique per test, so tests sharing one moto never
/// meet) running the backend service on revision 1; returns the cluster name, the family and the
/// revision's ARN.
async fn moto_cluster(url: &str) -> (String, String, String) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let unique = format!("{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let cluster = format!("invoice-me-cluster-{unique}");
    let family = format!("invoice-me-backend-{unique}");
    moto(url, "CreateCluster", json!({ "clusterName": cluster })).await;
    // Bridge networking: awsvpc would need a VPC, subnet and security group in moto's EC2.
    let mut td = task_definition("bridge", "EC2");
    td["family"] = json!(family);
    let registered = moto(url, "RegisterTaskDefinition", td).await;
    let arn = registered["taskDefinition"]["taskDefinitionArn"].as_str().unwrap().to_string();
    moto(
        url,
        "CreateService",
        json!({ "cluster": cluster, "serviceName": ECS_SERVICE, "taskDefinition": arn, "desiredCount": 2, "launchType": "EC2" }),
    )
    .await;
    (cluster, family, arn)
}

async fn moto_task_definition(url: &str, arn: &str) -> Value {
    let out = moto(url, "DescribeTaskDefinition", json!({ "taskDefinition": arn, "include": ["TAGS"] })).await;
    let mut td = out["taskDefinition"].clone();
    td["tags"] = out["tags"].clone();
    td
}

async fn moto_service_task_definition(url: &str, cluster: &str) -> String {
    let out = moto(url, "DescribeServices", json!({ "cluster": cluster, "services": [ECS_SERVICE] })).await;
    out["services"][0]["taskDefinition"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn ecs_deploy_on_moto_registers_a_revision_that_differs_only_in_the_image_and_points_the_service_at_it() {
    let Some(url) = moto_url() else { return };
    let (cluster, family, first) = moto_cluster(&url).await;
    let target = target(&config(&url, &cluster, "10s")).await;

    let before = target.current(&backend(), REPO).await.unwrap();
    assert_eq!(before, Some(Running { version: "v1.0.0".into(), reference: Some(first.clone()) }));

    let deployed = target.deploy(&deploy_request("v1.1.0")).await.unwrap();
    let second = deployed.running.reference.clone().unwrap();
    assert_ne!(second, first);
    assert!(second.ends_with(&format!(":task-definition/{family}:2")), "{second}");
    assert_eq!(deployed.running.version, "v1.1.0");
    assert!(deployed.detail.contains(&format!("registered {family}:2")), "{}", deployed.detail);

    let old = moto_task_definition(&url, &first).await;
    let new = moto_task_definition(&url, &second).await;
    assert_eq!(new["containerDefinitions"][0]["image"], format!("{REPO}:v1.1.0"));
    assert_eq!(new["containerDefinitions"][1]["image"], "amazon/aws-for-fluent-bit:2.31.0");
    let mut expected = comparable(old);
    expected["containerDefinitions"][0]["image"] = json!(format!("{REPO}:v1.1.0"));
    assert_eq!(comparable(new), expected, "the new revision must differ from the old only in the image");

    assert_eq!(moto_service_task_definition(&url, &cluster).await, second);
    let after = target.current(&backend(), REPO).await.unwrap();
    assert_eq!(after, Some(Running { version: "v1.1.0".into(), reference: Some(second) }));
}

#[tokio::test]
async fn ecs_rollback_on_moto_points_the_service_back_at_the_exact_previous_revision() {
    let Some(url) = moto_url() else { return };
    let (cluster, family, first) = moto_cluster(&url).await;
    let target = target(&config(&url, &cluster, "10s")).await;
    let previous = target.current(&backend(), REPO).await.unwrap().unwrap();
    target.deploy(&deploy_request("v1.1.0")).await.unwrap();

    let rolled_back = target.rollback(&rollback_request("v1.1.0", previous.clone())).await.unwrap();

    assert_eq!(rolled_back.running, previous);
    assert_eq!(moto_service_task_definition(&url, &cluster).await, first);
    let revisions = moto(&url, "ListTaskDefinitions", json!({ "familyPrefix": family })).await;
    let revisions: Vec<&str> = revisions["taskDefinitionArns"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(!revisions.iter().any(|r| r.ends_with(":3")), "a rollback must not register a revision: {revisions:?}");
    assert_eq!(target.current(&backend(), REPO).await.unwrap(), Some(previous));
}

#[tokio::test]
async fn ecs_a_wrong_cluster_or_service_on_moto_is_a_readable_failure() {
    let Some(url) = moto_url() else { return };
    let (cluster, _, first) = moto_cluster(&url).await;

    let wrong_cluster = target(&config(&url, "invoice-me-clustr", "10s")).await;
    let err = wrong_cluster.deploy(&deploy_request("v1.1.0")).await.unwrap_err();
    assert!(matches!(err, TargetError::Failed { .. }), "{err:?}");
    assert_eq!(err.to_string(), "ECS service invoice-me-backend not found: cluster invoice-me-clustr does not exist in us-east-1");

    let mut wrong_service = config(&url, &cluster, "10s");
    wrong_service.services.insert("backend".into(), "invoice-me-backnd".into());
    let err = target(&wrong_service).await.current(&backend(), REPO).await.unwrap_err();
    assert_eq!(err.to_string(), format!("ECS service invoice-me-backnd not found in cluster {cluster}"));

    let rollback = target(&wrong_service).await;
    let err = rollback
        .rollback(&rollback_request("v1.1.0", Running { version: "v1.0.0".into(), reference: Some(first) }))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), format!("ECS service invoice-me-backnd not found in cluster {cluster}"));
}

// ---------------------------------------------------------------------------------------------
// The ECS double

async fn double(rollout: Rollout) -> EcsDouble {
    EcsDouble::start("invoice-me-cluster", ECS_SERVICE, task_definition("awsvpc", "FARGATE"), rollout).await
}

#[tokio::test]
async fn ecs_a_rollout_is_followed_from_in_progress_to_completed() {
    let ecs = double(Rollout::Completes { after: 3 }).await;
    let target = target(&config(&ecs.url, "invoice-me-cluster", "10s")).await;

    let deployed = target.deploy(&deploy_request("v1.1.0")).await.unwrap();
    assert_eq!(deployed.running.reference.as_deref(), Some(td_arn("invoice-me-backend", 2).as_str()));
    target.wait_rollout(&backend(), &deployed).await.unwrap();

    let describes = ecs.calls().iter().filter(|c| *c == "DescribeServices").count();
    assert!(describes >= 4, "the rollout was polled until it completed ({describes} describes)");
    let service = ecs.service();
    assert_eq!(service["deployments"].as_array().unwrap().len(), 1);
    assert_eq!(service["deployments"][0]["rolloutState"], "COMPLETED");

    let mut expected = comparable(ecs.task_definition(&td_arn("invoice-me-backend", 1)));
    expected["containerDefinitions"][0]["image"] = json!(format!("{REPO}:v1.1.0"));
    assert_eq!(comparable(ecs.task_definition(&td_arn("invoice-me-backend", 2))), expected);
}

#[tokio::test]
async fn ecs_a_circuit_breaker_failure_reports_the_stopped_tasks_and_the_service_events() {
    let ecs = double(Rollout::Fails { after: 2 }).await;
    let target = target(&config(&ecs.url, "invoice-me-cluster", "10s")).await;

    let deployed = target.deploy(&deploy_request("v1.1.0-crash")).await.unwrap();
    let err = target.wait_rollout(&backend(), &deployed).await.unwrap_err();

    let TargetError::Failed { reason, diagnostics } = &err else { panic!("expected a failure, got {err:?}") };
    assert_eq!(
        reason,
        "ECS rollout of invoice-me-backend to invoice-me-backend:2 failed: ECS deployment circuit breaker: tasks failed to start. (2 failed tasks)"
    );
    let diagnostics = diagnostics.as_deref().unwrap();
    assert!(diagnostics.contains("Stopped tasks of invoice-me-backend:2:"), "{diagnostics}");
    assert!(diagnostics.contains(": Essential container in task exited (EssentialContainerExited)"), "{diagnostics}");
    assert!(diagnostics.contains("container backend: exit code 1 (OutOfMemoryError: Container killed due to memory usage)"), "{diagnostics}");
    assert!(diagnostics.contains("deployment failed: tasks failed to start."), "{diagnostics}");
    assert!(ecs.calls().contains(&"DescribeTasks".to_string()));

    let later = target.diagnostics(&backend()).await.unwrap();
    assert!(later.contains("Essential container in task exited"), "{later}");
}

#[tokio::test]
async fn ecs_a_rollout_that_never_completes_times_out_with_diagnostics() {
    let ecs = double(Rollout::Hangs).await;
    let target = target(&config(&ecs.url, "invoice-me-cluster", "400ms")).await;

    let deployed = target.deploy(&deploy_request("v1.1.0-slow")).await.unwrap();
    let started = Instant::now();
    let err = target.wait_rollout(&backend(), &deployed).await.unwrap_err();

    assert!(started.elapsed().as_millis() >= 400);
    assert!(started.elapsed().as_secs() < 5, "the timeout is the configured one");
    let TargetError::Timeout { what, after, diagnostics } = &err else { panic!("expected a timeout, got {err:?}") };
    assert_eq!(what, "ECS rollout of invoice-me-backend to invoice-me-backend:2");
    assert_eq!(after, "400ms");
    assert!(diagnostics.as_deref().unwrap().contains("No stopped tasks of invoice-me-backend:2."), "{diagnostics:?}");
}

#[tokio::test]
async fn ecs_rollback_points_the_service_at_the_recorded_arn_and_waits_for_it() {
    let ecs = double(Rollout::Completes { after: 1 }).await;
    let target = target(&config(&ecs.url, "invoice-me-cluster", "10s")).await;
    let previous = target.current(&backend(), REPO).await.unwrap().unwrap();
    target.deploy(&deploy_request("v1.1.0")).await.unwrap();

    let rolled_back = target.rollback(&rollback_request("v1.1.0", previous.clone())).await.unwrap();

    assert_eq!(rolled_back.running, previous);
    assert_eq!(ecs.service()["taskDefinition"], td_arn("invoice-me-backend", 1));
    assert_eq!(ecs.service()["deployments"][0]["rolloutState"], "COMPLETED");
    assert_eq!(ecs.task_definition_count(), 2, "a rollback registers nothing");

}

#[tokio::test]
async fn ecs_rollback_to_a_version_with_no_recorded_task_definition_registers_one_from_the_current_revision() {
    let ecs = double(Rollout::Completes { after: 1 }).await;
    let target = target(&config(&ecs.url, "invoice-me-cluster", "10s")).await;
    let rev = |n: usize| td_arn("invoice-me-backend", n);

    let rolled_back = target.rollback(&rollback_request("v1.0.0", Running { version: "v0.9.0".into(), reference: None })).await.unwrap();

    assert_eq!(rolled_back.running, Running { version: "v0.9.0".into(), reference: Some(rev(2)) });
    assert!(
        rolled_back.detail.starts_with("no task definition was recorded for v0.9.0, so registered invoice-me-backend:2 (your-registry/invoice-me-backend:v0.9.0; was invoice-me-backend:1"),
        "{}",
        rolled_back.detail
    );
    assert_eq!(ecs.service()["taskDefinition"], rev(2));
    assert_eq!(ecs.service()["deployments"][0]["rolloutState"], "COMPLETED", "the rollout was followed");
    let mut expected = comparable(ecs.task_definition(&rev(1)));
    expected["containerDefinitions"][0]["image"] = json!(format!("{REPO}:v0.9.0"));
    assert_eq!(comparable(ecs.task_definition(&rev(2))), expected, "the same revision but for the image, as a deploy registers");
}

// ---------------------------------------------------------------------------------------------
// `/rollback --to` through the engine, on the ECS double

struct EcsBot {
    app: deploybot::app::App,
    seq: std::sync::atomic::AtomicU64,
    _dir: tempfile::TempDir,
}

impl EcsBot {
    async fn start(ecs: &EcsDouble) -> EcsBot {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"[bot]
database_url = "sqlite://{d}/deploybot.db"

[chat]
platform = "console"

[chat.console]
user = "alice"

[services.backend]
image = "{REPO}"

[environments.production]
channel = "C0PROD"
target = {{ kind = "ecs", cluster = "invoice-me-cluster", region = "us-east-1", endpoint_url = "{url}", services = {{ backend = "{ECS_SERVICE}" }}, rollout_timeout = "10s", poll_interval = "20ms" }}
"#,
            d = dir.path().display(),
            url = ecs.url
        );
        let mut config = deploybot::config::Config::parse(&text).unwrap_or_else(|p| panic!("{}", p.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")));
        config.vars = test_vars();
        let app = deploybot::app::build_console_app(config, std::sync::Arc::new(deploybot::engine::clock::SystemClock), None).await.unwrap();
        EcsBot { app, seq: std::sync::atomic::AtomicU64::new(0), _dir: dir }
    }

    /// Types `line` as alice and runs every job it queued; the deployment it created.
    async fn run(&self, line: &str) -> deploybot::model::Deployment {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let event = deploybot::chat::console::parse_line(line, "alice", "console", seq).unwrap().unwrap();
        self.app.engine.handle(event).await.unwrap();
        while self.app.engine.run_next_job().await.unwrap() {}
        let d = self.app.engine.store.deployments(None, &[], 1).await.unwrap().remove(0);
        assert_eq!(d.state, deploybot::model::DeploymentState::Succeeded, "{line}: {:?}", d.error);
        d
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_rollback_to_an_older_version_uses_the_task_definition_its_deployment_recorded() {
    let ecs = double(Rollout::Completes { after: 0 }).await;
    let bot = EcsBot::start(&ecs).await;
    let rev = |n: usize| td_arn("invoice-me-backend", n);
    bot.run("/deploy v1.1.0 production").await;
    bot.run("/deploy v1.2.0 production").await;
    bot.run("/deploy v1.3.0 production").await;
    assert_eq!((ecs.service()["taskDefinition"].clone(), ecs.task_definition_count()), (json!(rev(4)), 4));

    // v1.1.0 is two deployments back: not the version the last deployment replaced.
    let rollback = bot.run("/rollback production --to v1.1.0").await;

    assert_eq!(rollback.version, "v1.1.0");
    assert_eq!(ecs.service()["taskDefinition"], rev(2), "the revision v1.1.0's deployment registered");
    assert_eq!(ecs.task_definition_count(), 4, "nothing new registered");
    let services = bot.app.engine.store.deployment_services(rollback.id).await.unwrap();
    assert_eq!(services[0].to_ref.as_deref(), Some(rev(2).as_str()));
    assert_eq!(bot.app.engine.store.recorded_ref("production", "backend", "v1.1.0").await.unwrap().as_deref(), Some(rev(2).as_str()));

    // v1.0.0 ran before the bot: nothing recorded, so the current revision with its image is registered.
    let older = bot.run("/rollback production --to v1.0.0").await;
    assert_eq!(ecs.task_definition_count(), 5);
    assert_eq!(ecs.service()["taskDefinition"], rev(5));
    assert_eq!(ecs.task_definition(&rev(5))["containerDefinitions"][0]["image"], format!("{REPO}:v1.0.0"));
    let services = bot.app.engine.store.deployment_services(older.id).await.unwrap();
    assert_eq!(services[0].to_ref.as_deref(), Some(rev(5).as_str()));
    assert_eq!(bot.app.engine.store.recorded_ref("production", "backend", "v1.0.0").await.unwrap().as_deref(), Some(rev(5).as_str()), "recorded for the next time");
}

#[tokio::test]
async fn ecs_throttling_is_retried_with_backoff() {
    let ecs = double(Rollout::Completes { after: 0 }).await;
    let target = target(&config(&ecs.url, "invoice-me-cluster", "10s")).await;
    ecs.throttle_next(2);

    let current = target.current(&backend(), REPO).await.unwrap();

    assert_eq!(current.map(|r| r.version).as_deref(), Some("v1.0.0"));
    let calls = ecs.calls();
    assert_eq!(calls[..3], ["DescribeServices", "DescribeServices", "DescribeServices"], "{calls:?}");
}

#[tokio::test]
async fn ecs_an_unknown_service_in_the_double_is_a_readable_failure() {
    let ecs = double(Rollout::Hangs).await;
    let mut config = config(&ecs.url, "invoice-me-cluster", "10s");
    config.services.insert("backend".into(), "invoice-me-api".into());
    let err = target(&config).await.deploy(&deploy_request("v1.1.0")).await.unwrap_err();
    assert_eq!(err.to_string(), "ECS service invoice-me-api not found in cluster invoice-me-cluster");
}

// ---------------------------------------------------------------------------------------------
// CloudWatch Logs (for /logs and the log watch), on moto

/// One raw CloudWatch Logs call to moto.
async fn moto_logs(url: &str, op: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{url}/"))
        .header("x-amz-target", format!("Logs_20140328.{op}"))
        .header("content-type", "application/x-amz-json-1.1")
        .header("authorization", "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/logs/aws4_request, SignedHeaders=host, Signature=0")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "moto logs {op}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[tokio::test]
async fn ecs_logs_come_from_cloudwatch_where_the_task_definitions_awslogs_options_send_them() {
    let Some(url) = moto_url() else { return };
    let (cluster, family, _) = moto_cluster(&url).await;
    // A revision whose backend logs to its own group with a stream prefix, as ECS writes them.
    let group = format!("/ecs/{family}");
    let mut td = task_definition("bridge", "EC2");
    td["family"] = json!(family);
    td["containerDefinitions"][0]["logConfiguration"]["options"] = json!({ "awslogs-group": group, "awslogs-region": "us-east-1", "awslogs-stream-prefix": "ecs" });
    let arn = moto(&url, "RegisterTaskDefinition", td).await["taskDefinition"]["taskDefinitionArn"].as_str().unwrap().to_string();
    moto(&url, "UpdateService", json!({ "cluster": cluster, "service": ECS_SERVICE, "taskDefinition": arn })).await;

    let t = target(&config(&url, &cluster, "1m")).await;
    let now = chrono::Utc::now().timestamp_millis();
    let query = deploybot::targets::LogQuery { since_ms: now - 60_000, limit: 100 };
    let missing = t.logs(&backend(), REPO, &query).await.expect_err("the group does not exist yet");
    assert!(missing.to_string().contains(&format!("CloudWatch Logs group {group} does not exist")), "{missing}");

    moto_logs(&url, "CreateLogGroup", json!({ "logGroupName": group })).await;
    for stream in ["ecs/backend/task-1", "ecs/backend/task-2", "ecs/log-router/task-1"] {
        moto_logs(&url, "CreateLogStream", json!({ "logGroupName": group, "logStreamName": stream })).await;
    }
    let put = |stream: &'static str, events: Vec<(i64, &'static str)>| {
        let (url, group) = (url.clone(), group.clone());
        async move {
            let events: Vec<Value> = events.into_iter().map(|(t, m)| json!({ "timestamp": t, "message": m })).collect();
            moto_logs(&url, "PutLogEvents", json!({ "logGroupName": group, "logStreamName": stream, "logEvents": events })).await;
        }
    };
    put("ecs/backend/task-1", vec![(now - 120_000, "too old"), (now - 5_000, "Started InvoiceMeApplication"), (now - 1_000, "ERROR java.sql.SQLException: timeout")]).await;
    put("ecs/backend/task-2", vec![(now - 3_000, "GET /api/customers 200")]).await;
    put("ecs/log-router/task-1", vec![(now - 2_000, "fluent-bit: flushed")]).await;

    let lines = t.logs(&backend(), REPO, &query).await.unwrap();
    assert_eq!(lines, vec!["Started InvoiceMeApplication", "GET /api/customers 200", "ERROR java.sql.SQLException: timeout"], "the backend's streams since the instant, oldest first");
    let last = t.logs(&backend(), REPO, &deploybot::targets::LogQuery { limit: 1, ..query }).await.unwrap();
    assert_eq!(last, vec!["ERROR java.sql.SQLException: timeout"], "the latest `limit` lines");

    // A container that does not log to CloudWatch says so.
    let mut td = task_definition("bridge", "EC2");
    td["family"] = json!(family);
    td["containerDefinitions"][0].as_object_mut().unwrap().remove("logConfiguration");
    let arn = moto(&url, "RegisterTaskDefinition", td).await["taskDefinition"]["taskDefinitionArn"].as_str().unwrap().to_string();
    moto(&url, "UpdateService", json!({ "cluster": cluster, "service": ECS_SERVICE, "taskDefinition": arn })).await;
    let none = t.logs(&backend(), REPO, &query).await.expect_err("no awslogs");
    assert!(none.to_string().contains("container backend has no logConfiguration"), "{none}");
}
