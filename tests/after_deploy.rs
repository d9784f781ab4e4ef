//! After the deploy (issue 14): drift in `/status`, `/logs`, the log watch.
//!
//! The engine runs on SQLite with the console chat and a `command` target made of shell scripts
//! in a tempdir: `deploy.sh ENV SERVICE VERSION` writes `<dir>/<env>-<service>.version`,
//! `current.sh SERVICE` prints it (exit 1 while `<dir>/current-fails` exists), `logs.sh SERVICE
//! SINCE TAIL` prints the last TAIL lines of `<dir>/<service>.log` and, to prove redaction, the
//! `API_TOKEN` it is given through its environment; it exits 3 while `<dir>/logs-fail` exists,
//! and empties the log after reading it while `<dir>/consume` exists (only new lines next time).
//! `deploy.sh` appends `<dir>/noise-on-deploy` to `backend.log` when it exists.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use deploybot::app::{self, App};
use deploybot::chat::console;
use deploybot::engine::clock::SystemClock;
use deploybot::model::{Deployment, DeploymentState};

const DEPLOY_SH: &str = r#"#!/bin/sh
set -e
dir=$(dirname "$0")
echo "$3" > "$dir/$1-$2.version"
if [ -f "$dir/noise-on-deploy" ] && [ "$2" = backend ]; then cat "$dir/noise-on-deploy" >> "$dir/$2.log"; fi
"#;

const CURRENT_SH: &str = r#"#!/bin/sh
dir=$(dirname "$0")
if [ -f "$dir/current-fails" ]; then echo "cannot reach the host" >&2; exit 1; fi
cat "$dir/staging-$1.version" 2>/dev/null || true
"#;

const LOGS_SH: &str = r#"#!/bin/sh
dir=$(dirname "$0")
if [ -f "$dir/logs-fail" ]; then echo "journal unavailable" >&2; exit 3; fi
echo "INFO token in use: $API_TOKEN"
[ -f "$dir/$1.log" ] && tail -n "$3" "$dir/$1.log"
# With `consume`, what was read is gone: the next read shows only newer lines, like {since}.
if [ -f "$dir/consume" ] && [ -f "$dir/$1.log" ]; then : > "$dir/$1.log"; fi
exit 0
"#;

const TOKEN: &str = "tok-9f8e7d6c5b4a";

fn config_text(dir: &Path, monitor: &str) -> String {
    let d = dir.display();
    format!(
        r#"[bot]
database_url = "sqlite://{d}/deploybot.db"
listen = "127.0.0.1:0"
timezone = "America/New_York"

[chat]
platform = "console"

[chat.console]
user = "alice"

[services.backend]
image = "invoiceme/backend"
order = 1

[services.frontend]
image = "invoiceme/frontend"
order = 2

[environments.staging]
channel = "C0STAGING"
deployers = ["alice", "bob"]
target = {{ kind = "command", deploy = ["sh", "{d}/deploy.sh", "{{env}}", "{{service}}", "{{version}}"], current = ["sh", "{d}/current.sh", "{{service}}"], logs = ["sh", "{d}/logs.sh", "{{service}}", "{{since}}", "{{tail}}"], env = {{ API_TOKEN = "${{API_TOKEN}}" }}, timeout = "20s" }}
{monitor}
"#
    )
}

struct Harness {
    dir: tempfile::TempDir,
    app: App,
    seq: AtomicU64,
}

impl Harness {
    async fn new(monitor: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [("deploy.sh", DEPLOY_SH), ("current.sh", CURRENT_SH), ("logs.sh", LOGS_SH)] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let mut config = support::bot::parse_config(&config_text(dir.path(), monitor));
        config.vars = deploybot::secrets::Vars::from_pairs([("API_TOKEN", TOKEN)]);
        let app = app::build_console_app(config, Arc::new(SystemClock), None).await.unwrap();
        Harness { dir, app, seq: AtomicU64::new(0) }
    }

    async fn say(&self, line: &str) -> String {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let event = console::parse_line(line, "alice", "console", seq).unwrap().unwrap();
        self.app.engine.handle(event).await.unwrap().map(|r| r.0).unwrap_or_default()
    }

    async fn deploy(&self, version: &str) -> Deployment {
        let reply = self.say(&format!("/deploy {version} staging")).await;
        assert!(reply.starts_with("👍"), "{version} not accepted: {reply}");
        while self.app.engine.run_next_job().await.unwrap() {}
        self.app.engine.store.deployments(None, &[], 1).await.unwrap().remove(0)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }

    fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join(name)).unwrap();
    }

    /// Every message the engine wrote about deployment `id`, in order.
    async fn thread(&self, id: i64) -> String {
        let messages = self.app.engine.store.outbox_messages_of(id).await.unwrap();
        messages.iter().map(|m| serde_json::from_str::<serde_json::Value>(&m.body).unwrap()["text"].as_str().unwrap_or_default().to_string()).collect::<Vec<_>>().join("\n---\n")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_what_the_target_runs_next_to_the_record_and_marks_drift() {
    let h = Harness::new("").await;
    let d = h.deploy("v1.0.1").await;
    assert_eq!(d.state, DeploymentState::Succeeded, "{:?}", d.error);

    let status = h.say("/status staging").await;
    assert!(status.contains(&format!("backend: v1.0.1 (#{}) ✓ runs", d.id)), "{status}");
    assert!(!status.contains("drift"), "{status}");

    // Someone deployed by hand.
    h.write("staging-backend.version", "v1.0.2\n");
    let status = h.say("/status staging").await;
    assert!(status.contains(&format!("backend: v1.0.1 (#{}) — ⚠️ drift: the target runs v1.0.2, deploybot recorded v1.0.1", d.id)), "{status}");
    assert!(status.contains(&format!("frontend: v1.0.1 (#{}) ✓ runs", d.id)), "only the backend drifted: {status}");

    // The target cannot be asked: said so, never shown as agreeing.
    h.write("current-fails", "");
    let status = h.say("/status").await;
    assert!(status.contains("backend: v1.0.1") && status.contains("(could not ask the target: current command exited with status 1"), "{status}");
    assert!(!status.contains("✓ runs"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_read_from_the_target_filtered_capped_redacted_and_for_deployers_only() {
    let h = Harness::new("").await;
    let mut log = String::new();
    for i in 0..30_000 {
        let level = if i % 1000 == 999 { "ERROR" } else { "INFO" };
        log.push_str(&format!("2026-12-01 10:00:{:02} {level} request {i} {}\n", i % 60, "x".repeat(40)));
    }
    log.push_str("2026-12-01 10:01:00 ERROR java.sql.SQLException: connection refused\n");
    h.write("backend.log", &log);

    let reply = h.say("/logs staging backend --since 1h --grep \"ERROR|Exception\" --tail 5").await;
    assert!(reply.starts_with("📜 Logs of backend in staging, last 1h: "), "{reply}");
    // The target is asked for at most 10 000 lines (`{tail}`), the latest, and the reply says so.
    assert!(reply.contains("10000 lines, 11 matching `ERROR|Exception`, 11 error lines (only the latest 10000 lines were read); the last 5:"), "{reply}");
    assert!(reply.contains("java.sql.SQLException: connection refused") && reply.contains("request 26999") && !reply.contains("request 25999"), "{reply}");
    assert_eq!(reply.matches(" ERROR ").count(), 5, "five lines shown: {reply}");

    // Huge output is capped to what a chat message holds; the secret never shows.
    let reply = h.say("/logs staging backend --tail 500").await;
    assert!(reply.len() < 3_600, "{} characters", reply.len());
    assert!(reply.contains("more cut to fit"), "{reply}");
    h.write("backend.log", "INFO started\n");
    let all = h.say("/logs staging backend --grep \"token in use\"").await;
    assert!(all.contains("2 lines, 1 matching") && all.contains("INFO token in use: •••") && !all.contains(TOKEN), "{all}");

    // Bad input and faults, each with its own message.
    let bad = h.say("/logs staging backend --grep \"(unclosed\"").await;
    assert!(bad.starts_with("⚠️ --grep \"(unclosed\" is not a valid regular expression:"), "{bad}");
    let usage = h.say("/logs staging backend --since 10").await;
    assert!(usage.contains("--since must be a duration such as 30s, 10m, 2h or 1d") && usage.contains("Usage: /logs <env> <service>"), "{usage}");
    h.write("logs-fail", "");
    let failed = h.say("/logs staging backend").await;
    assert!(failed.starts_with("⚠️ Could not read the logs of backend in staging: logs command exited with status 3"), "{failed}");
    h.remove("logs-fail");
    let refused = h.say("@mallory /logs staging backend").await;
    assert!(refused.starts_with("🚫 You may not read the logs of staging") && refused.contains("Who may"), "{refused}");
    let audit = h.app.engine.store.audit_by("mallory").await.unwrap();
    assert!(audit.iter().any(|(_, action, _)| action == "refused:read"), "{audit:?}");
}

const WATCH: &str = r#"
[environments.staging.monitor]
watch = "3s"
interval = "1s"
log_patterns = [
  { pattern = "ERROR", above = 2 },
  { pattern = "SQLException|NullPointerException", above = 0, action = "rollback" },
]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_watch_counts_patterns_per_interval_alerts_and_rolls_back() {
    let h = Harness::new(WATCH).await;
    h.write("consume", "");
    let first = h.deploy("v1.0.0").await;
    assert_eq!(first.state, DeploymentState::Succeeded, "{:?}", first.error);
    let thread = h.thread(first.id).await;
    assert!(thread.contains("log pattern \"ERROR\" max 0 lines"), "a quiet watch is clean: {thread}");

    // Three ERROR lines appear with the new version: above 2, an alert with sample lines.
    h.write("noise-on-deploy", "ERROR payment timeout 1\nERROR payment timeout 2\nERROR payment timeout 3\n");
    let second = h.deploy("v1.1.0").await;
    assert_eq!(second.state, DeploymentState::Succeeded, "an alert rule does not roll back: {:?}", second.error);
    let thread = h.thread(second.id).await;
    assert!(thread.contains("🚨 *log pattern \"ERROR\"* on staging: 3 lines (threshold > 2 lines)"), "{thread}");
    assert!(thread.contains("[backend] ERROR payment timeout 1"), "sample lines in the thread: {thread}");

    // A SQLException: the rollback rule fires and v1.1.0 goes back.
    h.write("noise-on-deploy", "WARN slow\njava.sql.SQLException: deadlock detected\n");
    let third = h.deploy("v1.2.0").await;
    assert_eq!(third.state, DeploymentState::RolledBack, "{:?}", third.error);
    let error = third.error.clone().unwrap_or_default();
    assert!(error.contains("matching log pattern \"SQLException|NullPointerException\" in one interval"), "{error}");
    assert!(h.thread(third.id).await.contains("java.sql.SQLException: deadlock detected"));
}

#[test]
fn check_config_names_a_log_pattern_that_is_not_a_regex() {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), "[environments.staging.monitor]\nlog_patterns = [{ pattern = \"ERROR\" }, { pattern = \"(SQLException\", action = \"rollback\" }]\n");
    let problems = deploybot::config::Config::parse(&text).expect_err("an invalid regex is refused");
    let problem = problems.iter().find(|p| p.path.contains("log_patterns[1].pattern")).unwrap_or_else(|| panic!("{problems:?}"));
    assert!(problem.message.contains("\"(SQLException\" is not a valid regular expression"), "{}", problem.message);
}

/// Runs the environment's probe schedule now, through the scheduler as the bot does.
async fn probe_now(h: &Harness, scheduler: &deploybot::engine::schedule::Scheduler) {
    let now = chrono::Utc::now().timestamp_millis();
    let schedule = deploybot::store::Schedule { id: 0, kind: "probe".into(), key: "probe:staging".into(), env: Some("staging".into()), deployment_id: None, cron: Some("* * * * *".into()), next_run_at: now - 1, enabled: true };
    h.app.engine.store.put_schedule(&schedule, now).await.unwrap();
    assert_eq!(scheduler.tick().await.unwrap(), 1, "the probe ran");
}

/// The drift alerts the engine wrote about deployment `id`: (outbox key, text), oldest first.
async fn drift_alerts(h: &Harness, id: i64) -> Vec<(String, String)> {
    let messages = h.app.engine.store.outbox_messages_of(id).await.unwrap();
    messages
        .iter()
        .filter(|m| m.key.starts_with("drift:"))
        .map(|m| (m.key.clone(), serde_json::from_str::<serde_json::Value>(&m.body).unwrap()["text"].as_str().unwrap_or_default().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drift_probe_alerts_while_what_runs_differs_from_the_record_and_resolves_when_they_agree() {
    let h = Harness::new("[environments.staging.monitor]\nprobe = { schedule = \"* * * * *\", drift = true }").await;
    let scheduler = deploybot::engine::schedule::Scheduler::new(h.app.engine.clone());
    let d = h.deploy("v1.0.1").await;
    assert_eq!(d.state, DeploymentState::Succeeded, "{:?}", d.error);
    probe_now(&h, &scheduler).await;
    assert!(drift_alerts(&h, d.id).await.is_empty(), "the target runs what was recorded");

    // A deployment accepted and not yet run: what runs is about to change, nothing is said.
    assert!(h.say("/deploy v1.0.2 staging").await.starts_with("👍"));
    h.write("staging-backend.version", "v1.0.2\n");
    probe_now(&h, &scheduler).await;
    assert!(drift_alerts(&h, d.id).await.is_empty(), "no drift alert while a deployment is in flight");
    while h.app.engine.run_next_job().await.unwrap() {}
    let d = h.app.engine.store.deployments(None, &[], 1).await.unwrap().remove(0);
    assert_eq!((d.version.as_str(), d.state), ("v1.0.2", DeploymentState::Succeeded), "{:?}", d.error);

    // Someone puts v1.0.3 on the backend by hand.
    h.write("staging-backend.version", "v1.0.3\n");
    probe_now(&h, &scheduler).await;
    let alerts = drift_alerts(&h, d.id).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let (key, text) = &alerts[0];
    assert!(text.starts_with("🔀 Drift in staging: what runs differs from what deploybot recorded.\n  backend: the target runs v1.0.3, deploybot recorded v1.0.2"), "{text}");
    assert!(!text.contains("frontend:"), "only the backend drifted: {text}");
    assert!(text.contains(&format!("since #{} v1.0.2 by ", d.id)) && text.contains("`/deploy v1.0.2 staging` puts back what was recorded"), "{text}");

    // The next probe finds the same drift: the same alert, not a second one.
    probe_now(&h, &scheduler).await;
    assert_eq!(drift_alerts(&h, d.id).await, alerts);

    // The target cannot be asked: that neither resolves the alert nor raises another.
    h.write("current-fails", "");
    h.write("staging-backend.version", "v1.0.2\n");
    probe_now(&h, &scheduler).await;
    assert_eq!(drift_alerts(&h, d.id).await, alerts, "unknown is not agreement");

    // The frontend drifts too: the same alert is edited to say so.
    h.remove("current-fails");
    h.write("staging-backend.version", "v1.0.3\n");
    h.write("staging-frontend.version", "v0.9.0\n");
    probe_now(&h, &scheduler).await;
    let edited = drift_alerts(&h, d.id).await;
    assert_eq!(edited.len(), 1, "{edited:?}");
    assert_eq!(&edited[0].0, key);
    assert!(edited[0].1.contains("frontend: the target runs v0.9.0, deploybot recorded v1.0.2"), "{}", edited[0].1);

    // Put back by hand: the alert is resolved in place.
    h.write("staging-backend.version", "v1.0.2\n");
    h.write("staging-frontend.version", "v1.0.2\n");
    probe_now(&h, &scheduler).await;
    let resolved = drift_alerts(&h, d.id).await;
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert!(resolved[0].1.starts_with("✅ Drift in staging is gone: every service runs what deploybot recorded (drift seen for "), "{}", resolved[0].1);
}

#[test]
fn drift_needs_a_way_to_ask_what_runs() {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), "[environments.staging.monitor]\nprobe = { schedule = \"* * * * *\", drift = true }");
    let current = format!(r#"current = ["sh", "{}/current.sh", "{{service}}"], "#, dir.path().display());
    assert!(text.contains(&current), "{text}");
    let problems = deploybot::config::Config::parse(&text.replace(&current, "")).map(|_| Vec::new()).unwrap_or_else(|p| p.iter().map(|p| p.to_string()).collect());
    assert!(problems.iter().any(|p| p.contains("environments.staging.monitor.probe.drift") && p.contains("give the command target a `current` command")), "{problems:?}");
}
