//! The post-deploy watch end to end: the stand-in InvoiceMe app deployed by a `command` target
//! (the real `deploybot standin start`), scraped by a real Prometheus; the watch's alerts and
//! rollbacks observed in the console transcript and the store.

// The engine's futures (command handling, the whole pipeline) nest deeper than the default limit.
#![recursion_limit = "256"]

#[path = "support/prom.rs"]
mod prom;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deploybot::app::{self, App};
use deploybot::chat::console::{self, Shown};
use deploybot::config::Config;
use deploybot::engine::clock::SystemClock;
use deploybot::model::{DeploymentKind, DeploymentState, StepState};

/// Kills the stand-ins the targets started when the test ends.
struct StandIns(PathBuf);

impl Drop for StandIns {
    fn drop(&mut self) {
        for e in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "pid") {
                if let Some(pid) = std::fs::read_to_string(e.path()).ok().and_then(|s| s.trim().parse::<u32>().ok()) {
                    let _ = std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status();
                }
            }
        }
    }
}

const ERROR_RATIO: &str = r#"(sum(rate(http_server_requests_seconds_count{env="staging",status=~"5.."}[5s])) or vector(0)) / sum(rate(http_server_requests_seconds_count{env="staging"}[5s]))"#;

fn config(dir: &Path, backend: u16, monitor: &str) -> Config {
    let d = dir.display();
    let exe = env!("CARGO_BIN_EXE_deploybot");
    let start = |v: &str| format!(r#"["{exe}", "standin", "start", "--dir", "{d}", "--env", "staging", "--service", "{{service}}", "--version", "{v}", "--ports", "backend={backend}"]"#);
    let text = format!(
        r#"[bot]
database_url = "sqlite://{d}/deploybot.db"
listen = "127.0.0.1:{listen}"

[chat]
platform = "console"

[chat.console]
user = "alice"

[services.backend]
image = "invoiceme/invoice-me-backend"

[environments.staging]
channel = "C0STAGING"
target = {{ kind = "command", deploy = {deploy}, rollback = {rollback}, timeout = "30s" }}

[environments.staging.verify]
retries = 2
backoff = "200ms"
timeout = "3s"

[[environments.staging.verify.health]]
name = "backend health"
url = "http://127.0.0.1:{backend}/api/actuator/health"
expect_json = {{ status = "UP" }}

{monitor}
"#,
        listen = prom::free_port(),
        deploy = start("{version}"),
        rollback = start("{previous}"),
    );
    Config::parse(&text).unwrap_or_else(|p| panic!("test config: {}", p.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")))
}

struct Bot {
    app: App,
    seq: std::sync::atomic::AtomicU64,
}

impl Bot {
    async fn new(config: Config) -> Bot {
        let app = app::build_console_app(config, Arc::new(SystemClock), None).await.unwrap();
        Bot { app, seq: Default::default() }
    }

    /// `/deploy version staging` by alice, run to its end; the deployment's id.
    async fn deploy(&self, version: &str) -> i64 {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let event = console::parse_line(&format!("/deploy {version} staging"), "alice", "console", seq).unwrap().unwrap();
        let reply = self.app.engine.handle(event).await.unwrap().unwrap().0;
        assert!(reply.contains("requested"), "{reply}");
        let id = self.app.engine.store.deployments(None, &[], 1).await.unwrap()[0].id;
        assert!(self.app.engine.run_next_job().await.unwrap());
        self.app.engine.outbox.drain().await.unwrap();
        id
    }

    async fn state(&self, id: i64) -> DeploymentState {
        self.app.engine.store.deployment(id).await.unwrap().unwrap().state
    }

    async fn monitor_step(&self, id: i64) -> (StepState, String) {
        let step = self.app.engine.store.steps(id).await.unwrap().into_iter().rfind(|s| s.name == "monitor").expect("a monitor step");
        (step.state, step.detail.unwrap_or_default())
    }

    fn said(&self) -> String {
        self.app.console.transcript().iter().map(|s| s.text().to_string()).collect::<Vec<_>>().join("\n---\n")
    }
}

/// Requests to the stand-in's `/` (one in five fails in an `-errors` version), like users would.
fn traffic(backend: u16) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        loop {
            let _ = http.get(format!("http://127.0.0.1:{backend}/")).send().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

async fn running_version(backend: u16) -> String {
    let v: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{backend}/api/version")).await.unwrap().json().await.unwrap();
    v["version"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_returning_5xx_is_caught_by_the_watch_alerted_and_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let _standins = StandIns(dir.path().to_path_buf());
    let backend = prom::free_port();
    let Some(prometheus) = prom::prometheus(dir.path(), &[("staging", format!("127.0.0.1:{backend}"))], None, None).await else { return };
    let monitor = format!(
        r#"[environments.staging.monitor]
prometheus_url = "{url}"
watch = "6s"
interval = "1s"

[[environments.staging.monitor.rules]]
name = "error rate"
query = '{ERROR_RATIO}'
above = 0.01
unit = "percent"
hint = "investigate immediately"

[[environments.staging.monitor.rules]]
name = "error rate (sustained)"
query = '{ERROR_RATIO}'
above = 0.05
for = 2
unit = "percent"
action = "rollback"
"#,
        url = prometheus.url
    );
    let bot = Bot::new(config(dir.path(), backend, &monitor)).await;
    let load = traffic(backend);

    let good = bot.deploy("v1.0.0").await;
    assert_eq!(bot.state(good).await, DeploymentState::Succeeded, "{}", bot.said());
    let (state, detail) = bot.monitor_step(good).await;
    assert_eq!(state, StepState::Succeeded);
    assert!(detail.starts_with("6 s clean: error rate max 0%"), "{detail}");

    let bad = bot.deploy("v1.1.0-errors").await;
    load.abort();
    let said = bot.said();
    assert_eq!(bot.state(bad).await, DeploymentState::RolledBack, "{said}\nPrometheus log:\n{}", prometheus.log());
    assert_eq!(bot.monitor_step(bad).await.0, StepState::Failed);
    let transcript = bot.app.console.transcript();
    let alerts: Vec<&Shown> = transcript.iter().filter(|s| s.text().starts_with("🚨 *error rate*")).collect();
    assert_eq!(alerts.len(), 1, "one alert for the alert rule:\n{said}");
    let alert = alerts[0].text();
    assert!(alert.contains("(threshold > 1%)") && alert.contains(&format!("#{bad} v1.1.0-errors by <@alice>")) && alert.contains("Runbook: investigate immediately"), "{alert}");
    assert!(matches!(alerts[0], Shown::Reply { .. }), "threaded under the deployment's message");
    assert!(said.contains("🚨 *error rate (sustained)*") && said.contains("rolling staging back automatically"), "{said}");
    assert!(said.contains("*monitor* failed") && said.contains("rule action rollback"), "{said}");
    assert_eq!(running_version(backend).await, "v1.0.0", "the stand-in runs the previous version again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_rule_rolls_back_after_consecutive_failed_checks() {
    let dir = tempfile::tempdir().unwrap();
    let _standins = StandIns(dir.path().to_path_buf());
    let backend = prom::free_port();
    let monitor = r#"[environments.staging.monitor]
watch = "3s"
interval = "500ms"

[[environments.staging.monitor.rules]]
name = "failed health checks"
health = true
for = 3
action = "rollback"
"#;
    let mut config = config(dir.path(), backend, monitor);
    // One attempt per evaluation: a health rule counts evaluations, not retries.
    for env in config.environments.values_mut() {
        env.verify.retries = 0;
    }
    let bot = Arc::new(Bot::new(config).await);
    let first = bot.deploy("v1.0.0").await;
    assert_eq!(bot.state(first).await, DeploymentState::Succeeded, "{}", bot.said());
    assert_eq!(bot.monitor_step(first).await.1, "3 s clean: failed health checks: none");

    let job = {
        let bot = bot.clone();
        tokio::spawn(async move { bot.deploy("v1.1.0").await })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let latest = bot.app.engine.store.deployments(None, &[], 1).await.unwrap();
        if latest.first().is_some_and(|d| d.id != first && d.state == DeploymentState::Monitoring) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the second deployment never reached its watch:\n{}", bot.said());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = reqwest::Client::new().post(format!("http://127.0.0.1:{backend}/__standin/health")).json(&serde_json::json!({"up": false})).send().await.unwrap();
    assert!(r.status().is_success());
    let second = job.await.unwrap();
    let said = bot.said();
    assert_eq!(bot.state(second).await, DeploymentState::RolledBack, "{said}");
    assert!(said.contains("🚨 *failed health checks* on staging: 3 consecutive failures (threshold > 2 consecutive failures)"), "{said}");
    assert_eq!(running_version(backend).await, "v1.0.0");
    let rollbacks = bot.app.engine.store.deployments(None, &[], 10).await.unwrap().into_iter().filter(|d| d.kind == DeploymentKind::Rollback).count();
    assert_eq!(rollbacks, 0, "the pipeline rolled back the failed deployment itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_prometheus_is_reported_and_never_counts_as_clean() {
    let dir = tempfile::tempdir().unwrap();
    let _standins = StandIns(dir.path().to_path_buf());
    let backend = prom::free_port();
    let closed = prom::free_port();
    let monitor = format!(
        r#"[environments.staging.monitor]
prometheus_url = "http://127.0.0.1:{closed}"
watch = "2s"
interval = "500ms"

[[environments.staging.monitor.rules]]
name = "error rate"
query = '{ERROR_RATIO}'
above = 0.01
unit = "percent"
"#
    );
    let bot = Bot::new(config(dir.path(), backend, &monitor)).await;
    let id = bot.deploy("v1.0.0").await;
    let said = bot.said();
    assert_eq!(bot.state(id).await, DeploymentState::Succeeded, "{said}");
    assert!(said.contains(&format!("*error rate* could not be evaluated: Prometheus is unreachable at http://127.0.0.1:{closed}")), "{said}");
    assert_eq!(said.matches("could not be evaluated").count(), 1, "reported once, not every interval:\n{said}");
    let (_, detail) = bot.monitor_step(id).await;
    assert_eq!(detail, "2 s watched, not clean: error rate: no data (4/4 evaluations failed)");
}
