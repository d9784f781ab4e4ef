//! The bad day: compound failures end in a state a person can see and leave from chat.
//!
//! The engine runs on SQLite with the console chat and `command` targets (shell scripts in a
//! tempdir); faults are real: a rollback script that exits 1, a health endpoint that answers 503,
//! a job's lease taken by another owner, an event accepted by a bot that never handled it.
//!
//! `deploy.sh ENV SERVICE VERSION` writes `<dir>/<env>-<service>.version` and appends to
//! `deploy.log`; `rollback.sh` does the same but exits 1 while `<dir>/rollback-fails` exists.
//! `/<env>/health` answers 503 while a deployed version contains `broken` or `<dir>/down` exists.
//! With `<dir>/sleep`, `deploy.sh` sleeps that many seconds first.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deploybot::app::{self, App};
use deploybot::chat::console;
use deploybot::engine::clock::SystemClock;
use deploybot::model::{Deployment, DeploymentState, LockKind};

const DEPLOY_SH: &str = r#"#!/bin/sh
set -e
dir=$(dirname "$0")
env=$1 service=$2 version=$3
if [ -f "$dir/sleep" ]; then sleep "$(cat "$dir/sleep")"; fi
echo "deploy $env $service $version" >> "$dir/deploy.log"
echo "$version" > "$dir/$env-$service.version"
"#;

const ROLLBACK_SH: &str = r#"#!/bin/sh
dir=$(dirname "$0")
env=$1 service=$2 version=$3
if [ -f "$dir/rollback-fails" ]; then echo "registry unreachable: cannot pull $version" >&2; exit 1; fi
echo "rollback $env $service $version" >> "$dir/deploy.log"
echo "$version" > "$dir/$env-$service.version"
"#;

async fn health_server(dir: PathBuf) -> std::net::SocketAddr {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::StatusCode;
    async fn health(State(dir): State<Arc<PathBuf>>, UrlPath(env): UrlPath<String>) -> StatusCode {
        let broken = ["backend", "frontend"].iter().any(|s| std::fs::read_to_string(dir.join(format!("{env}-{s}.version"))).is_ok_and(|v| v.contains("broken")));
        if broken || dir.join("down").exists() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    }
    let router = axum::Router::new().route("/{env}/health", axum::routing::get(health)).with_state(Arc::new(dir));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// Staging: alice and bob deploy, carol approves (production-style rules without a window).
fn config_text(dir: &Path, health: std::net::SocketAddr, database_url: &str) -> String {
    let d = dir.display();
    format!(
        r#"[bot]
database_url = "{database_url}"
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
target = {{ kind = "command", deploy = ["sh", "{d}/deploy.sh", "{{env}}", "{{service}}", "{{version}}"], rollback = ["sh", "{d}/rollback.sh", "{{env}}", "{{service}}", "{{previous}}"], timeout = "20s" }}
hotfix = {{ approvals = 1 }}
approvals = {{ required = 1, approvers = ["carol"], expires_after = "30m" }}

[environments.staging.verify]
retries = 1
backoff = "50ms"
timeout = "2s"

[[environments.staging.verify.health]]
name = "backend health"
url = "http://{health}/staging/health"
"#
    )
}

struct Harness {
    dir: tempfile::TempDir,
    app: App,
    seq: AtomicU64,
}

impl Harness {
    async fn new() -> Harness {
        Harness::on(None).await
    }

    /// On the given store (`None`: a SQLite file in the tempdir).
    async fn on(database_url: Option<&str>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("deploy.sh"), DEPLOY_SH).unwrap();
        std::fs::write(dir.path().join("rollback.sh"), ROLLBACK_SH).unwrap();
        let health = health_server(dir.path().to_path_buf()).await;
        let url = database_url.map(str::to_string).unwrap_or_else(|| format!("sqlite://{}/deploybot.db", dir.path().display()));
        let app = Harness::app(dir.path(), health, &url).await;
        Harness { dir, app, seq: AtomicU64::new(0) }
    }

    async fn app(dir: &Path, health: std::net::SocketAddr, database_url: &str) -> App {
        let config = support::bot::parse_config(&config_text(dir, health, database_url));
        app::build_console_app(config, Arc::new(SystemClock), None).await.unwrap()
    }

    fn event(&self, line: &str) -> deploybot::chat::ChatEvent {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        console::parse_line(line, "alice", "console", seq).unwrap().unwrap()
    }

    /// Types `line` (as alice, or `@name …`); the private reply.
    async fn say(&self, line: &str) -> String {
        self.app.engine.handle(self.event(line)).await.unwrap().map(|r| r.0).unwrap_or_default()
    }

    /// Approves deployment `id` as carol.
    async fn approve(&self, id: i64) {
        self.say(&format!("@carol :white_check_mark: #{id}")).await;
    }

    async fn latest(&self) -> i64 {
        self.app.engine.store.deployments(None, &[], 1).await.unwrap().first().expect("a deployment").id
    }

    async fn deployment(&self, id: i64) -> Deployment {
        self.app.engine.store.deployment(id).await.unwrap().expect("deployment exists")
    }

    async fn run_jobs(&self) {
        while self.app.engine.run_next_job().await.unwrap() {}
    }

    /// `/deploy version staging` by alice, approved by carol, run to its end.
    async fn deploy(&self, version: &str) -> i64 {
        let reply = self.say(&format!("/deploy {version} staging")).await;
        assert!(reply.starts_with("👍"), "{version} not accepted: {reply}");
        let id = self.latest().await;
        self.approve(id).await;
        self.run_jobs().await;
        id
    }

    fn running(&self, service: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join(format!("staging-{service}.version"))).ok().map(|s| s.trim().to_string())
    }

    fn deploy_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("deploy.log")).unwrap_or_default()
    }

    fn touch(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }

    fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.path().join(name));
    }

    /// The text of a message the engine wrote about deployment `id` (`deployment:{id}:{suffix}`).
    async fn message(&self, id: i64, suffix: &str) -> String {
        let m = self.app.engine.store.outbox_message(&format!("deployment:{id}:{suffix}")).await.unwrap();
        let m = m.unwrap_or_else(|| panic!("no message deployment:{id}:{suffix}"));
        serde_json::from_str::<serde_json::Value>(&m.body).unwrap()["text"].as_str().unwrap().to_string()
    }

    async fn refusals(&self, actor: &str) -> usize {
        self.app.engine.store.audit_by(actor).await.unwrap().iter().filter(|(_, action, _)| action.starts_with("refused:")).count()
    }

    /// v1.0.0 succeeds; v1.1.0-broken fails verification and its rollback fails: the id of the second.
    async fn failed_rollback(&self) -> i64 {
        let first = self.deploy("v1.0.0").await;
        assert_eq!(self.deployment(first).await.state, DeploymentState::Succeeded);
        self.touch("rollback-fails", "");
        let id = self.deploy("v1.1.0-broken").await;
        let d = self.deployment(id).await;
        assert_eq!(d.state, DeploymentState::RollbackFailed, "{:?}", d.error);
        id
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_rollback_holds_the_environment_says_what_runs_and_resolve_releases_it() {
    let h = Harness::new().await;
    let id = h.failed_rollback().await;

    let lock = h.app.engine.store.lock("staging").await.unwrap().expect("staging stays held");
    assert_eq!((lock.kind, lock.deployment_id), (LockKind::Deployment, Some(id)));
    let note = h.message(id, "rollback-failed").await;
    for needle in ["Rollback FAILED", "registry unreachable", "What runs now", "backend: v1.1.0-broken", &format!("/resolve #{id}"), "--hotfix"] {
        assert!(note.contains(needle), "{needle:?} missing from: {note}");
    }

    // The dead ends of before: each now names the way out.
    let unlock = h.say("/unlock staging").await;
    assert!(unlock.contains(&format!("/resolve #{id}")) && unlock.contains("--hotfix"), "{unlock}");
    let rollback = h.say("/rollback staging --to v1.0.0").await;
    assert!(rollback.contains(&format!("/resolve #{id}")), "{rollback}");

    // Only an approver may resolve; the refusal names who may and is audited.
    let refused = h.say(&format!("/resolve #{id} \"restarted by hand\"")).await;
    assert!(refused.starts_with("🚫") && refused.contains("<@carol>"), "{refused}");
    assert_eq!(h.refusals("alice").await, 1);
    assert!(h.app.engine.store.lock("staging").await.unwrap().is_some());

    let resolved = h.say(&format!("@carol /resolve #{id} \"pulled v1.0.0 by hand; health checks pass\"")).await;
    assert!(resolved.starts_with("✅"), "{resolved}");
    assert!(h.app.engine.store.lock("staging").await.unwrap().is_none(), "staging is released");
    let d = h.deployment(id).await;
    assert_eq!(d.state, DeploymentState::RollbackFailed, "the record keeps what happened");
    assert!(d.resolution.as_deref().is_some_and(|r| r.contains("carol") && r.contains("pulled v1.0.0 by hand")), "{:?}", d.resolution);
    assert!(h.message(id, "resolved").await.contains("pulled v1.0.0 by hand"));
    let history = h.app.engine.store.history(Some("staging"), 10, chrono_tz::America::New_York).await.unwrap();
    let entry = history.iter().find(|e| e.id == id).expect("a history entry");
    assert!(entry.rollback.as_deref().is_some_and(|r| r.contains("FAILED") && r.contains("pulled v1.0.0 by hand")), "{entry:?}");
    assert!(entry.issues.as_deref().is_some_and(|i| i.contains("pulled v1.0.0 by hand")), "{entry:?}");

    let again = h.say(&format!("@carol /resolve #{id} \"twice\"")).await;
    assert!(again.contains("already closed"), "{again}");
    // And the environment deploys again.
    h.remove("rollback-fails");
    let next = h.deploy("v1.2.0").await;
    assert_eq!(h.deployment(next).await.state, DeploymentState::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hotfix_rolls_forward_over_a_failed_rollback_and_closes_it_as_superseded() {
    let h = Harness::new().await;
    let failed = h.failed_rollback().await;

    let plain = h.say("/deploy v1.2.0 staging").await;
    assert!(plain.starts_with("🔒") && plain.contains("--hotfix"), "a normal deploy is still refused: {plain}");
    let reply = h.say("/deploy v1.2.0 staging --hotfix \"fix the broken release\"").await;
    assert!(reply.starts_with("👍") && reply.contains(&format!("#{failed}")), "{reply}");
    let hotfix = h.latest().await;
    assert_eq!(h.app.engine.store.lock("staging").await.unwrap().and_then(|l| l.deployment_id), Some(failed), "held by the failed one until the hotfix starts");
    h.approve(hotfix).await;
    h.run_jobs().await;

    let d = h.deployment(hotfix).await;
    assert_eq!(d.state, DeploymentState::Succeeded, "{:?}", d.error);
    assert_eq!(h.running("backend").as_deref(), Some("v1.2.0"));
    assert!(h.app.engine.store.lock("staging").await.unwrap().is_none());
    let old = h.deployment(failed).await;
    assert!(old.resolution.as_deref().is_some_and(|r| r.contains(&format!("superseded by #{hotfix}"))), "{:?}", old.resolution);
    assert!(d.resolution.as_deref().is_some_and(|r| r.contains(&format!("#{failed}"))), "{:?}", d.resolution);
    let history = h.app.engine.store.history(Some("staging"), 10, chrono_tz::America::New_York).await.unwrap();
    let entry = |id: i64| history.iter().find(|e| e.id == id).cloned().expect("a history entry");
    assert!(entry(failed).rollback.is_some_and(|r| r.contains(&format!("superseded by #{hotfix}"))));
    assert!(entry(hotfix).issues.is_some_and(|i| i.contains(&format!("#{failed}"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_deployment_that_fails_ends_failed_and_releases_the_environment() {
    let h = Harness::new().await;
    let id = h.deploy("v1.0.0-broken").await;
    let d = h.deployment(id).await;
    assert_eq!(d.state, DeploymentState::Failed, "nothing to roll back to is not a failed rollback: {:?}", d.error);
    assert!(h.app.engine.store.lock("staging").await.unwrap().is_none());
    assert!(!h.deploy_log().contains("rollback"), "{}", h.deploy_log());
    let closed = h.message(id, "closed").await;
    assert!(closed.contains("nothing to roll back") && closed.contains("backend: v1.0.0-broken"), "{closed}");
    let next = h.deploy("v1.0.1").await;
    assert_eq!(h.deployment(next).await.state, DeploymentState::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_whose_verification_fails_never_redeploys_what_it_rolled_away_from() {
    let h = Harness::new().await;
    h.deploy("v1.0.0").await;
    let second = h.deploy("v1.1.0").await;
    assert_eq!(h.deployment(second).await.state, DeploymentState::Succeeded);
    h.touch("down", "");
    let reply = h.say("/rollback staging").await;
    assert!(reply.starts_with("⏪"), "{reply}");
    let id = h.latest().await;
    h.run_jobs().await;

    let d = h.deployment(id).await;
    assert_eq!(d.state, DeploymentState::RollbackFailed, "{:?}", d.error);
    let log = h.deploy_log();
    let after = log.split("rollback staging backend v1.0.0").nth(1).unwrap_or_else(|| panic!("the rollback ran: {log}"));
    assert!(!after.contains("v1.1.0"), "the failed /rollback re-deployed v1.1.0: {log}");
    assert_eq!(h.running("backend").as_deref(), Some("v1.0.0"));
    assert_eq!(h.app.engine.store.lock("staging").await.unwrap().and_then(|l| l.deployment_id), Some(id));
    let note = h.message(id, "rollback-failed").await;
    assert!(note.contains("not undone") && note.contains(&format!("/resolve #{id}")), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_commands_from_people_without_the_role_are_refused_privately_and_audited() {
    let h = Harness::new().await;
    h.deploy("v1.0.0").await;
    h.say("/deploy v1.1.0 staging").await;
    let waiting = h.latest().await;

    for (line, needle) in [
        (format!("@mallory /cancel #{waiting}"), "cancel"),
        ("@mallory /lock staging \"mine now\"".to_string(), "lock staging"),
        ("@mallory /deploy v9.9.9 staging".to_string(), "deploy to staging"),
        ("@mallory /rollback staging".to_string(), "roll back staging"),
        (format!("@mallory /resolve #{waiting} \"nothing\""), "resolve"),
    ] {
        let reply = h.say(&line).await;
        assert!(reply.starts_with("🚫 You may not") && reply.contains(needle) && reply.contains("Who may"), "{line}: {reply}");
    }
    assert_eq!(h.refusals("mallory").await, 5, "every refusal is audited");
    assert_eq!(h.deployment(waiting).await.state, DeploymentState::AwaitingApproval);

    // The requester, a deployer or an approver may cancel.
    let cancelled = h.say(&format!("@bob /cancel #{waiting}")).await;
    assert!(cancelled.contains("cancelled"), "{cancelled}");

    // A manual lock: taken by a deployer; released by its holder or an approver, nobody else.
    assert!(h.say("@bob /lock staging \"db maintenance\"").await.starts_with("🔒 staging is locked"));
    let refused = h.say("/unlock staging").await;
    assert!(refused.starts_with("🚫") && refused.contains("<@bob>") && refused.contains("<@carol>"), "{refused}");
    assert!(h.say("@carol /unlock staging").await.starts_with("🔓"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_accepted_but_never_handled_is_handled_once_by_the_next_process() {
    let h = Harness::new().await;
    h.deploy("v1.0.0").await;
    // The bot stored the command and acknowledged it, then died before handling it.
    let event = h.event("/deploy v1.1.0 staging");
    assert!(h.app.engine.accept(&event).await.unwrap());
    assert!(!h.app.engine.accept(&event).await.unwrap(), "a redelivery is recognised");
    let before = h.latest().await;
    let health = health_server(h.dir.path().to_path_buf()).await;
    h.app.engine.store.close().await;

    let next = Harness::app(h.dir.path(), health, &format!("sqlite://{}/deploybot.db", h.dir.path().display())).await;
    next.engine.store.release_event_leases().await.unwrap();
    assert_eq!(next.engine.resume_inbound().await.unwrap(), 1);
    assert_eq!(next.engine.resume_inbound().await.unwrap(), 0, "handled once");
    let created = next.engine.store.deployments(Some("staging"), &[], 5).await.unwrap();
    assert_eq!(created.first().map(|d| (d.id > before, d.version.as_str(), d.state)), Some((true, "v1.1.0", DeploymentState::AwaitingApproval)));

    // Handling it yet again (a crash after the deployment was recorded) creates nothing new.
    let replay = event.clone();
    next.engine.process(event).await.unwrap();
    let again = next.engine.store.deployments(Some("staging"), &[], 5).await.unwrap();
    assert_eq!(again.iter().filter(|d| d.version == "v1.1.0").count(), 1, "{again:?}");
    assert_eq!(next.engine.store.lock("staging").await.unwrap().and_then(|l| l.deployment_id), Some(created[0].id));

    // Once that deployment has ended, handling the event again must not take the environment.
    let cancel = console::parse_line(&format!("/cancel #{}", created[0].id), "alice", "console", 900).unwrap().unwrap();
    next.engine.handle(cancel).await.unwrap();
    assert!(next.engine.store.lock("staging").await.unwrap().is_none());
    let reply = next.engine.process(replay).await.unwrap().map(|r| r.0).unwrap_or_default();
    assert!(reply.contains("already requested by this command"), "{reply}");
    assert!(next.engine.store.lock("staging").await.unwrap().is_none(), "the environment was not taken again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_lease_is_taken_stops_at_once_and_writes_nothing_more() {
    let h = Harness::new().await;
    h.deploy("v1.0.0").await;
    // Longer than the renewal period (a third of the 30-s lease), so the loss is found mid-step.
    h.touch("sleep", "15");
    h.say("/deploy v1.1.0 staging").await;
    let id = h.latest().await;
    h.approve(id).await;
    let engine = h.app.engine.clone();
    let job = tokio::spawn(async move { engine.run_next_job().await.unwrap() });
    // Wait until the deploy step is running, then let "another replica" take the job.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !h.app.engine.store.steps(id).await.unwrap().iter().any(|s| s.name == "deploy") {
        assert!(tokio::time::Instant::now() < deadline, "the deploy step never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let far = h.app.engine.store.deployment(id).await.unwrap().unwrap().lease_until.unwrap() + 1;
    let stolen = h.app.engine.store.claim_job("other-replica", far, 3_600_000).await.unwrap();
    assert_eq!(stolen.map(|d| d.id), Some(id));
    let steps_then = h.app.engine.store.steps(id).await.unwrap();

    // The renewal (every third of the 30-s lease) finds the lease gone and stops the job.
    tokio::time::timeout(Duration::from_secs(60), job).await.expect("the job stopped").unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let d = h.deployment(id).await;
    assert_eq!(d.lease_owner.as_deref(), Some("other-replica"));
    assert_eq!(d.state, DeploymentState::Running, "nothing more was written");
    assert_eq!(h.app.engine.store.steps(id).await.unwrap(), steps_then, "no step was started or finished after the lease was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_ended_by_a_replica_that_died_before_saying_so_is_shown_ended() {
    let h = Harness::new().await;
    let first = h.deploy("v1.0.0").await;
    assert!(h.message(first, "progress").await.contains("succeeded"));
    h.say("/deploy v1.1.0 staging").await;
    let id = h.latest().await;
    h.approve(id).await;
    // "Another replica" claims the job and ends it: the write a replica makes when a deployment
    // ends, and then it dies before rendering the end.
    let store = &h.app.engine.store;
    let now = chrono::Utc::now().timestamp_millis();
    let claimed = store.claim_job("other-replica", now, 30_000).await.unwrap().expect("the job is ready");
    assert_eq!(claimed.id, id);
    let patch = deploybot::store::Patch { finished_at: Some(now), release_lease: true, release_lock: true, ..Default::default() };
    assert!(store.transition(id, &[claimed.state], DeploymentState::Succeeded, &patch, "deploybot", now).await.unwrap());
    let before = h.message(id, "progress").await;
    assert!(!before.contains("succeeded"), "{before}");
    let first_rev = store.outbox_message(&deploybot::store::progress_key(first)).await.unwrap().unwrap().rev;

    // Every replica's ticker looks for such deployments.
    h.app.engine.sweep_progress_behind().await.unwrap();
    let after = h.message(id, "progress").await;
    assert!(after.contains("succeeded"), "the progress message still shows:\n{after}");
    let rev = store.outbox_message(&deploybot::store::progress_key(id)).await.unwrap().unwrap().rev;
    assert_eq!(store.outbox_message(&deploybot::store::progress_key(first)).await.unwrap().unwrap().rev, first_rev, "a message already right is left alone");
    // Once is enough: the next sweep finds nothing behind.
    assert!(store.progress_behind(now - 60_000).await.unwrap().is_empty());
    h.app.engine.sweep_progress_behind().await.unwrap();
    assert_eq!(store.outbox_message(&deploybot::store::progress_key(id)).await.unwrap().unwrap().rev, rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_under_the_running_bot_pauses_jobs_and_commands_say_try_again() {
    let cluster = support::pg_cluster::Cluster::start();
    let h = Harness::on(Some(&cluster.url())).await;
    h.deploy("v1.0.0").await;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let loops = app::spawn_loops(&h.app.engine, shutdown);

    // A deploy whose command runs while the store goes away.
    h.touch("sleep", "3");
    h.say("/deploy v1.1.0 staging").await;
    let id = h.latest().await;
    h.approve(id).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !h.app.engine.store.steps(id).await.unwrap().iter().any(|s| s.name == "deploy") {
        assert!(tokio::time::Instant::now() < deadline, "the deploy step never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.stop();

    // A command is answered promptly with "try again", not after a hang.
    let asked = std::time::Instant::now();
    let err = h.app.engine.handle(h.event("/status staging")).await.expect_err("the store is down");
    assert!(deploybot::store::is_unavailable(&err), "{err:#}");
    assert!(asked.elapsed() < Duration::from_secs(8), "answered after {:?}", asked.elapsed());
    // The deploy command finishes meanwhile; the job cannot record it and pauses: nothing is
    // rolled back because of the outage.
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.resume();

    // The job resumes from its step once its lease lapses (30 s) and finishes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let d = h.deployment(id).await;
        if d.state.is_terminal() {
            assert_eq!(d.state, DeploymentState::Succeeded, "{:?} {:?}", d.error, d.issues);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "#{id} never finished after the store came back: {}", d.state);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!h.deploy_log().contains("rollback"), "an outage never triggers a rollback: {}", h.deploy_log());
    assert_eq!(h.running("backend").as_deref(), Some("v1.1.0"));
    assert!(h.say("/status staging").await.contains("v1.1.0"));
    let _ = stop.send(true);
    for l in loops {
        let _ = tokio::time::timeout(Duration::from_secs(5), l).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollback_emoji_on_an_alert_counts_only_from_a_deployer_of_that_environment() {
    use deploybot::chat::{ChatEvent, ReactionTarget, UserRef};
    let h = Harness::new().await;
    h.deploy("v1.0.0").await;
    let last = h.deploy("v1.1.0").await;
    let payload = serde_json::json!({
        "version": "4", "groupKey": "{}:{alertname=\"HighErrorRate\"}", "truncatedAlerts": 0, "status": "firing", "receiver": "deploybot",
        "groupLabels": {"alertname": "HighErrorRate"}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093",
        "alerts": [{
            "status": "firing", "labels": {"alertname": "HighErrorRate", "env": "staging"}, "annotations": {"summary": "5xx ratio above 1%"},
            "startsAt": chrono::Utc::now().to_rfc3339(), "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://127.0.0.1:9090/graph", "fingerprint": "f1"
        }]
    });
    let payload: deploybot::monitor::alertmanager::Payload = serde_json::from_value(payload).unwrap();
    h.app.engine.receive_alertmanager(&payload).await.unwrap();
    h.app.engine.outbox.drain().await.unwrap();
    let alert = h
        .app
        .console
        .transcript()
        .into_iter()
        .find_map(|s| match s {
            console::Shown::Post { id, text, .. } if text.contains("HighErrorRate") => Some(id),
            _ => None,
        })
        .expect("the alert was posted");
    let react = |who: &str, n: u64| ChatEvent::ReactionAdded {
        event_id: Some(format!("alert-reaction-{n}")),
        user: UserRef { id: who.into(), name: who.into() },
        target: ReactionTarget::Message { channel: "C0STAGING".into(), id: alert.clone() },
        emoji: "rewind".into(),
    };
    h.app.engine.handle(react("mallory", 1)).await.unwrap();
    assert_eq!(h.latest().await, last, "no rollback was requested by mallory");
    assert_eq!(h.refusals("mallory").await, 1);
    h.app.engine.handle(react("bob", 2)).await.unwrap();
    let rollback = h.deployment(h.latest().await).await;
    assert_eq!((rollback.rollback_of, rollback.requested_by.as_str()), (Some(last), "bob"));
}
