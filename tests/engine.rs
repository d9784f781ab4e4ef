//! End-to-end tests of the engine: chat events in, deployments through their lifecycle on a
//! `command` target (a small shell script in a tempdir), verification against an in-process
//! health endpoint, the console transcript and the store observed.
//!
//! The deploy script writes `<dir>/<env>-<service>.version`; the health endpoint
//! `/<env>/health` answers 503 while a version containing `broken` is deployed there. When the
//! file `<dir>/sleep` exists, the script first writes `<dir>/sleeping` and sleeps that many
//! seconds (a slow deploy).

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deploybot::app::{self, App};
use deploybot::chat::console::{self, Shown};
use deploybot::engine::clock::ShiftedClock;
use deploybot::model::{Deployment, DeploymentKind, DeploymentState, StepState};
use support::bot::{free_port, open_tuesday, parse_config, BotProcess};
use support::db;

const DEPLOY_SH: &str = r#"#!/bin/sh
set -e
dir=$(dirname "$0")
env=$1 service=$2 version=$3
echo $$ > "$dir/deploy.pid"
if [ -f "$dir/sleep" ]; then echo "$env $service $version" > "$dir/sleeping"; sleep "$(cat "$dir/sleep")"; fi
echo "$env $service $version" >> "$dir/deploy.log"
echo "$version" > "$dir/$env-$service.version"
echo "deployed $service $version"
"#;

/// The tempdir's deploy script and an HTTP health endpoint reading what it deployed.
async fn health_server(dir: PathBuf) -> std::net::SocketAddr {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::StatusCode;
    use axum::Json;
    async fn health(
        State(dir): State<Arc<PathBuf>>,
        UrlPath(env): UrlPath<String>,
    ) -> (StatusCode, Json<serde_json::Value>) {
        let broken = ["backend", "frontend"].iter().any(|s| {
            std::fs::read_to_string(dir.join(format!("{env}-{s}.version")))
                .is_ok_and(|v| v.contains("broken"))
        });
        if broken {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "status": "DOWN" })),
            )
        } else {
            (StatusCode::OK, Json(serde_json::json!({ "status": "UP" })))
        }
    }
    let router = axum::Router::new()
        .route("/{env}/health", axum::routing::get(health))
        .with_state(Arc::new(dir));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

fn config_text(
    dir: &Path,
    database_url: &str,
    health: std::net::SocketAddr,
    expires_after: &str,
    listen: u16,
) -> String {
    let d = dir.display();
    let env = |name: &str, channel: &str, alias: &str, extra: &str| {
        format!(
            r#"
[environments.{name}]
channel = "{channel}"
aliases = ["{alias}"]
checklist = ["Deployment window scheduled and communicated"]
{extra}
target = {{ kind = "command", deploy = ["sh", "{d}/deploy.sh", "{{env}}", "{{service}}", "{{version}}"], timeout = "20s" }}

[environments.{name}.verify]
retries = 1
backoff = "50ms"
timeout = "2s"

[[environments.{name}.verify.health]]
name = "backend health"
url = "http://{health}/{name}/health"
expect_json = {{ status = "UP" }}
"#
        )
    };
    let prod_extra = format!(
        r#"requires = ["staging"]
window = {{ timezone = "America/New_York", allow = [ {{ days = "tue-wed", hours = "10:00-14:00" }} ], month_end_days = 3, holidays = ["2026-12-25", "2027-01-01", "07-04"] }}
approvals = {{ required = 1, approvers = ["carol", "group:S0DEVOPS"], expires_after = "{expires_after}" }}"#
    );
    format!(
        r#"[bot]
database_url = "{database_url}"
listen = "127.0.0.1:{listen}"
timezone = "America/New_York"
history_file = "{d}/history.md"

[chat]
platform = "console"

[chat.console]
user = "alice"
groups = {{ S0DEVOPS = ["dan"] }}

[services.backend]
image = "invoiceme/invoice-me-backend"
order = 1

[services.frontend]
image = "invoiceme/invoice-me-frontend"
order = 2
{}{}"#,
        env("staging", "C0STAGING", "stg", ""),
        env("production", "C0PROD", "prod", &prod_extra)
    )
}

/// The store a test runs on: every test runs on both (see `on_each_store!`).
#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// A fresh database of this kind, of the test's own.
    async fn fresh(self) -> db::TestDb {
        match self {
            Backend::Sqlite => db::sqlite().await,
            Backend::Postgres => db::postgres()
                .await
                .expect("PostgreSQL tests are only run when PostgreSQL is not skipped"),
        }
    }
}

/// `name_sqlite` and `name_postgres` tests for each `async fn name(store: Backend)` (the
/// PostgreSQL one fails without `DEPLOYBOT_TEST_PG_URL` unless `DEPLOYBOT_SKIP_PG=1`).
macro_rules! on_each_store {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(super::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if super::db::pg_admin_url().is_some() {
                        super::$name(super::Backend::Postgres).await;
                    }
                }
            }
        )*
    };
}

struct Harness {
    dir: tempfile::TempDir,
    /// Kept for as long as the harness: dropping it removes the database.
    _db: db::TestDb,
    app: App,
    clock: Arc<ShiftedClock>,
    tuesday: DateTime<Utc>,
    seq: AtomicU64,
}

impl Harness {
    async fn new(store: Backend) -> Harness {
        Harness::with_expiry(store, "30m").await
    }

    async fn with_expiry(store: Backend, expires_after: &str) -> Harness {
        Harness::build(store, expires_after, "").await
    }

    /// A harness with `extra` appended whose `${VAR}` references are read from `vars` only.
    async fn with_vars(store: Backend, extra: &str, vars: deploybot::secrets::Vars) -> Harness {
        Harness::build_with(store, "30m", extra, vars).await
    }

    async fn build(store: Backend, expires_after: &str, extra: &str) -> Harness {
        Harness::build_with(store, expires_after, extra, deploybot::secrets::Vars::process()).await
    }

    async fn build_with(store: Backend, expires_after: &str, extra: &str, vars: deploybot::secrets::Vars) -> Harness {
        let db = store.fresh().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("deploy.sh"), DEPLOY_SH).unwrap();
        let health = health_server(dir.path().to_path_buf()).await;
        let text = config_text(dir.path(), &db.url, health, expires_after, free_port()) + extra;
        let mut config = parse_config(&text);
        config.vars = vars;
        let tuesday = open_tuesday(&config, "production");
        let clock = Arc::new(ShiftedClock::at(tuesday));
        let app = app::build_console_app(config, clock.clone(), None)
            .await
            .unwrap();
        Harness {
            dir,
            _db: db,
            app,
            clock,
            tuesday,
            seq: AtomicU64::new(0),
        }
    }

    fn event(&self, line: &str) -> deploybot::chat::ChatEvent {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        console::parse_line(line, "alice", "console", seq)
            .unwrap()
            .unwrap()
    }

    /// Types `line` (as alice, or `@name …`); the private reply, or "" for a reaction. What it
    /// said in the channels is delivered before this returns.
    async fn say(&self, line: &str) -> String {
        let event = self.event(line);
        let reply = self
            .app
            .engine
            .handle(event)
            .await
            .unwrap()
            .map(|r| r.0)
            .unwrap_or_default();
        self.app.engine.outbox.drain().await.unwrap();
        reply
    }

    /// The id of the newest deployment.
    async fn latest(&self) -> i64 {
        self.app
            .engine
            .store
            .deployments(None, &[], 1)
            .await
            .unwrap()
            .first()
            .expect("a deployment")
            .id
    }

    async fn deployment(&self, id: i64) -> Deployment {
        self.app
            .engine
            .store
            .deployment(id)
            .await
            .unwrap()
            .expect("deployment exists")
    }

    async fn state(&self, id: i64) -> DeploymentState {
        self.deployment(id).await.state
    }

    /// Runs ready jobs to their end until none is left, then delivers their messages.
    async fn run_jobs(&self) {
        while self.app.engine.run_next_job().await.unwrap() {}
        self.app.engine.outbox.drain().await.unwrap();
    }

    /// `/deploy version env` by alice, run to its end; the deployment's id.
    async fn deploy(&self, version: &str, env: &str) -> i64 {
        let reply = self.say(&format!("/deploy {version} {env}")).await;
        assert!(
            reply.starts_with("👍"),
            "deploy of {version} to {env} was not accepted: {reply}"
        );
        let id = self.latest().await;
        self.run_jobs().await;
        id
    }

    fn running(&self, env: &str, service: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join(format!("{env}-{service}.version")))
            .ok()
            .map(|s| s.trim().to_string())
    }

    fn deploy_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("deploy.log")).unwrap_or_default()
    }

    async fn steps(&self, id: i64) -> Vec<(String, StepState)> {
        self.app
            .engine
            .store
            .steps(id)
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.name, s.state))
            .collect()
    }

    async fn lock_of(&self, env: &str) -> Option<deploybot::model::Lock> {
        self.app.engine.store.lock(env).await.unwrap()
    }

    fn transcript(&self) -> Vec<Shown> {
        self.app.console.transcript()
    }

    /// The console id of the deployment's progress message (the first non-approval post about it).
    fn progress_message(&self, id: i64, env: &str) -> String {
        let needle = format!("#{id} ");
        self.transcript()
            .into_iter()
            .find_map(|s| match s {
                Shown::Post { id: mid, text, .. }
                    if text.contains(&needle)
                        && text.contains(&format!("→ {env}"))
                        && !text.starts_with("🔐") =>
                {
                    Some(mid)
                }
                _ => None,
            })
            .expect("a progress message was posted")
    }

    fn approval_message(&self, id: i64) -> String {
        let needle = format!("Approval needed for #{id} ");
        self.transcript()
            .into_iter()
            .find_map(|s| match s {
                Shown::Post { id: mid, text, .. } if text.contains(&needle) => Some(mid),
                _ => None,
            })
            .expect("an approval message was posted")
    }

    /// Every text the message showed, in order (the post, then its edits).
    fn versions_of(&self, message: &str) -> Vec<String> {
        self.transcript()
            .into_iter()
            .filter_map(|s| match s {
                Shown::Post { id, text, .. } | Shown::Edit { id, text, .. } if id == message => {
                    Some(text)
                }
                _ => None,
            })
            .collect()
    }

    fn thread_replies(&self, message: &str) -> Vec<String> {
        self.transcript()
            .into_iter()
            .filter_map(|s| match s {
                Shown::Reply { thread, text, .. } if thread == message => Some(text),
                _ => None,
            })
            .collect()
    }

    async fn wait_for(
        &self,
        id: i64,
        what: &str,
        done: impl Fn(&Deployment, &[(String, StepState)]) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
        loop {
            let d = self.deployment(id).await;
            let steps = self.steps(id).await;
            if done(&d, &steps) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "#{id} never reached {what}: {} {:?}",
                d.state,
                steps
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn step_states(steps: &[(String, StepState)], name: &str) -> Vec<StepState> {
    steps
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, s)| *s)
        .collect()
}

// ------------------------------------------------------------------------------------------ 1

async fn an_approved_production_deploy_ignores_ineligible_reactions_and_runs_every_step(store: Backend) {
    let h = Harness::new(store).await;
    let staged = h.deploy("v1.0.0", "staging").await;
    assert_eq!(h.state(staged).await, DeploymentState::Succeeded);

    let reply = h.say("/deploy v1.0.0 prod").await;
    assert!(reply.contains("waiting for 1 approval"), "{reply}");
    let id = h.latest().await;
    assert_eq!(h.state(id).await, DeploymentState::AwaitingApproval);
    let approval = h.approval_message(id);
    let approval_text = h.app.console.current_text(&approval).unwrap();
    assert!(
        approval_text.contains(":white_check_mark:")
            && approval_text.contains("Deployment window scheduled and communicated"),
        "{approval_text}"
    );
    let progress = h.progress_message(id, "production");

    // Not an approver: ignored, and the thread says why.
    h.say(&format!("@bob :white_check_mark: #{id}")).await;
    assert!(h.app.engine.store.votes(id).await.unwrap().is_empty());
    assert_eq!(h.state(id).await, DeploymentState::AwaitingApproval);
    // The requester's own reaction does not count either.
    h.say(&format!(":white_check_mark: #{id}")).await;
    assert!(h.app.engine.store.votes(id).await.unwrap().is_empty());
    assert_eq!(h.state(id).await, DeploymentState::AwaitingApproval);
    assert!(
        !h.app.engine.run_next_job().await.unwrap(),
        "nothing runs before approval"
    );
    let notes = h.thread_replies(&progress);
    assert!(
        notes.iter().any(
            |t| t.contains("<@bob>'s reaction does not count") && t.contains("not an approver")
        ),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|t| t.contains("<@alice>, your own reaction does not count")),
        "{notes:?}"
    );

    // An approver: queued, then run.
    h.say(&format!("@carol :white_check_mark: #{id}")).await;
    assert_eq!(h.state(id).await, DeploymentState::Queued);
    assert!(
        h.app
            .console
            .current_text(&approval)
            .unwrap()
            .contains("carol"),
        "the approval message shows the vote"
    );
    h.run_jobs().await;
    let d = h.deployment(id).await;
    assert_eq!(d.state, DeploymentState::Succeeded, "{:?}", d.error);
    assert_eq!(
        h.running("production", "backend").as_deref(),
        Some("v1.0.0")
    );
    assert_eq!(
        h.running("production", "frontend").as_deref(),
        Some("v1.0.0")
    );
    assert!(h.lock_of("production").await.is_none());

    // Delivery is asynchronous and edits are coalesced to the latest text, so which running
    // states chat saw is not fixed; the message posted at the request is edited to the end.
    let shown = h.versions_of(&progress);
    assert!(shown.len() >= 2, "the progress message was never edited: {shown:#?}");
    let last = h.app.console.current_text(&progress).unwrap();
    for step in ["preflight", "deploy", "verify", "record"] {
        assert!(last.contains(&format!("✅ {step}")), "{last}");
    }
    assert!(last.contains("succeeded"), "{last}");

    let history = h
        .app
        .engine
        .store
        .history(Some("production"), 10, chrono_tz::America::New_York)
        .await
        .unwrap();
    let entry = history
        .iter()
        .find(|e| e.id == id)
        .expect("a history entry");
    assert!(entry.deployed_by.contains("alice"), "{entry:?}");
    assert_eq!(entry.approvers, vec!["carol".to_string()], "{entry:?}");
    assert_eq!(entry.state, "succeeded");
}

// ------------------------------------------------------------------------------------------ 2

async fn an_approver_rejecting_closes_the_request_and_releases_the_lock(store: Backend) {
    let h = Harness::new(store).await;
    h.deploy("v1.0.0", "staging").await;
    h.say("/deploy v1.0.0 prod").await;
    let id = h.latest().await;
    assert!(h.lock_of("production").await.is_some());
    h.say(&format!("@dan :x: #{id}")).await;
    let d = h.deployment(id).await;
    assert_eq!(d.state, DeploymentState::Rejected);
    assert!(d.error.unwrap_or_default().contains("dan"));
    assert!(h.lock_of("production").await.is_none());
    assert!(!h.app.engine.run_next_job().await.unwrap());
    assert!(h.steps(id).await.is_empty());
    assert_eq!(
        h.running("production", "backend"),
        None,
        "nothing was deployed"
    );
    assert!(h
        .app
        .console
        .current_text(&h.approval_message(id))
        .unwrap()
        .contains("rejected"));
}

// ------------------------------------------------------------------------------------------ 3

async fn an_unanswered_approval_expires_and_releases_the_lock(store: Backend) {
    let h = Harness::with_expiry(store, "1s").await;
    h.deploy("v1.0.0", "staging").await;
    h.say("/deploy v1.0.0 prod").await;
    let id = h.latest().await;
    h.app.engine.expire_approvals().await.unwrap();
    assert_eq!(
        h.state(id).await,
        DeploymentState::AwaitingApproval,
        "not expired yet"
    );
    // Time passes (the clock is moved rather than slept on).
    h.clock.set(h.tuesday + chrono::Duration::seconds(5));
    h.app.engine.expire_approvals().await.unwrap();
    assert_eq!(h.state(id).await, DeploymentState::Expired);
    assert!(h.lock_of("production").await.is_none());
    // A late approval changes nothing.
    h.say(&format!("@carol :white_check_mark: #{id}")).await;
    assert_eq!(h.state(id).await, DeploymentState::Expired);
    assert!(!h.app.engine.run_next_job().await.unwrap());
    assert!(h
        .app
        .console
        .current_text(&h.approval_message(id))
        .unwrap()
        .contains("expired"));
}

// ------------------------------------------------------------------------------------------ 4

async fn a_production_deploy_on_friday_evening_is_denied_with_the_next_window(store: Backend) {
    let h = Harness::new(store).await;
    let friday = h.tuesday - chrono::Duration::days(4) + chrono::Duration::hours(7)
        - chrono::Duration::minutes(5);
    h.clock.set(friday);
    let reply = h.say("/deploy v1.0.0 prod").await;
    assert!(
        reply.starts_with("🚫") && reply.contains("denied"),
        "{reply}"
    );
    assert!(reply.contains("Next window: Tue"), "{reply}");
    assert!(reply.contains("--at next-window"), "{reply}");
    let id = h.latest().await;
    assert_eq!(h.state(id).await, DeploymentState::Denied);
    assert!(h.lock_of("production").await.is_none());
    assert!(!h.app.engine.run_next_job().await.unwrap());
    assert!(h.steps(id).await.is_empty());
    assert_eq!(h.deploy_log(), "", "nothing ran");
}

// ------------------------------------------------------------------------------------------ 5

async fn a_manually_locked_environment_refuses_deploys_until_unlocked(store: Backend) {
    let h = Harness::new(store).await;
    let reply = h.say("@dan /lock staging \"db maintenance\"").await;
    assert!(reply.contains("locked"), "{reply}");
    let reply = h.say("/deploy v1.0.0 staging").await;
    assert!(reply.starts_with("🔒"), "{reply}");
    assert!(
        reply.contains("<@dan>") && reply.contains("db maintenance"),
        "{reply}"
    );
    assert!(!h.app.engine.run_next_job().await.unwrap());
    assert_eq!(h.deploy_log(), "");

    let reply = h.say("@dan /unlock staging").await;
    assert!(reply.contains("unlocked"), "{reply}");
    let id = h.deploy("v1.0.0", "staging").await;
    assert_eq!(h.state(id).await, DeploymentState::Succeeded);
    assert_eq!(h.running("staging", "backend").as_deref(), Some("v1.0.0"));
}

// ------------------------------------------------------------------------------------------ 6

async fn of_two_simultaneous_deploys_to_one_environment_exactly_one_proceeds(store: Backend) {
    let h = Harness::new(store).await;
    let a = h.event("/deploy v1.0.0 staging");
    let b = h.event("@erin /deploy v1.1.0 staging");
    let (ra, rb) = tokio::join!(h.app.engine.handle(a), h.app.engine.handle(b));
    let replies = [ra.unwrap().unwrap().0, rb.unwrap().unwrap().0];
    let accepted: Vec<&String> = replies.iter().filter(|r| r.starts_with("👍")).collect();
    let refused: Vec<&String> = replies.iter().filter(|r| r.starts_with("🔒")).collect();
    assert_eq!((accepted.len(), refused.len()), (1, 1), "{replies:#?}");
    let winner = if accepted[0] == &replies[0] {
        "alice"
    } else {
        "erin"
    };
    assert!(
        refused[0].contains("held by deployment") && refused[0].contains(&format!("<@{winner}>")),
        "{replies:#?}"
    );

    h.run_jobs().await;
    let all = h
        .app
        .engine
        .store
        .deployments(Some("staging"), &[], 10)
        .await
        .unwrap();
    let succeeded: Vec<&Deployment> = all
        .iter()
        .filter(|d| d.state == DeploymentState::Succeeded)
        .collect();
    assert_eq!(succeeded.len(), 1, "{all:#?}");
    assert!(all.iter().all(|d| d.state == DeploymentState::Succeeded || d.state == DeploymentState::Cancelled), "{all:#?}");
    assert_eq!(
        h.deploy_log().lines().count(),
        2,
        "one deployment of two services ran: {}",
        h.deploy_log()
    );
    assert!(h.lock_of("staging").await.is_none());
}

// ------------------------------------------------------------------------------------------ 7

async fn a_broken_version_fails_verification_and_is_rolled_back_automatically(store: Backend) {
    let h = Harness::new(store).await;
    h.deploy("v1.0.0", "staging").await;
    let id = h.deploy("v1.1.0-broken", "staging").await;
    let d = h.deployment(id).await;
    assert_eq!(d.state, DeploymentState::RolledBack, "{:?}", d.error);
    assert!(d.error.unwrap_or_default().contains("verify failed"));
    let steps = h.steps(id).await;
    assert_eq!(
        step_states(&steps, "deploy"),
        [StepState::Succeeded],
        "{steps:?}"
    );
    assert_eq!(
        step_states(&steps, "verify"),
        [StepState::Failed],
        "{steps:?}"
    );
    assert_eq!(
        step_states(&steps, "rollback"),
        [StepState::Succeeded],
        "{steps:?}"
    );
    assert_eq!(
        step_states(&steps, "verify after rollback"),
        [StepState::Succeeded],
        "{steps:?}"
    );
    assert!(step_states(&steps, "record").is_empty(), "{steps:?}");
    assert_eq!(h.running("staging", "backend").as_deref(), Some("v1.0.0"));
    assert_eq!(h.running("staging", "frontend").as_deref(), Some("v1.0.0"));
    assert!(h.lock_of("staging").await.is_none());
    let recorded = h
        .app
        .engine
        .store
        .service_versions("staging")
        .await
        .unwrap();
    assert!(
        recorded.iter().all(|s| s.version == "v1.0.0"),
        "{recorded:?}"
    );
    let notes = h.thread_replies(&h.progress_message(id, "staging"));
    assert!(
        notes.iter().any(|t| t.contains("*verify* failed")),
        "{notes:?}"
    );
    assert!(notes.iter().any(|t| t.contains("rolled back")), "{notes:?}");
}

// ------------------------------------------------------------------------------------------ 8

async fn a_manual_rollback_returns_to_the_version_before_the_last_deploy(store: Backend) {
    let h = Harness::new(store).await;
    let first = h.deploy("v1.0.0", "staging").await;
    let second = h.deploy("v1.1.0", "staging").await;
    assert_eq!(h.state(first).await, DeploymentState::Succeeded);
    assert_eq!(h.state(second).await, DeploymentState::Succeeded);
    assert_eq!(h.running("staging", "backend").as_deref(), Some("v1.1.0"));

    let reply = h.say("/rollback staging").await;
    assert!(
        reply.starts_with("⏪") && reply.contains("v1.0.0"),
        "{reply}"
    );
    let id = h.latest().await;
    h.run_jobs().await;
    let d = h.deployment(id).await;
    assert_eq!(d.state, DeploymentState::Succeeded, "{:?}", d.error);
    assert_eq!(d.kind, DeploymentKind::Rollback);
    assert_eq!(d.version, "v1.0.0");
    assert_eq!(d.rollback_of, Some(second));
    assert_eq!(h.running("staging", "backend").as_deref(), Some("v1.0.0"));
    assert_eq!(h.running("staging", "frontend").as_deref(), Some("v1.0.0"));
    let recorded = h
        .app
        .engine
        .store
        .service_versions("staging")
        .await
        .unwrap();
    assert!(
        recorded.iter().all(|s| s.version == "v1.0.0"),
        "{recorded:?}"
    );
    let history = h
        .app
        .engine
        .store
        .history(Some("staging"), 10, chrono_tz::America::New_York)
        .await
        .unwrap();
    let entry = history
        .iter()
        .find(|e| e.id == id)
        .expect("a history entry for the rollback");
    assert_eq!(entry.kind, "rollback", "{entry:?}");
    assert!(h.lock_of("staging").await.is_none());
}

// ------------------------------------------------------------------------------------------ 9

async fn cancelling_a_request_waiting_for_approval_closes_it_without_running(store: Backend) {
    let h = Harness::new(store).await;
    h.deploy("v1.0.0", "staging").await;
    h.say("/deploy v1.0.0 prod").await;
    let id = h.latest().await;
    let reply = h.say(&format!("/cancel #{id}")).await;
    assert!(reply.contains("cancelled before it ran"), "{reply}");
    assert_eq!(h.state(id).await, DeploymentState::Cancelled);
    assert!(h.lock_of("production").await.is_none());
    h.say(&format!("@carol :white_check_mark: #{id}")).await;
    assert_eq!(h.state(id).await, DeploymentState::Cancelled);
    assert!(!h.app.engine.run_next_job().await.unwrap());
    assert_eq!(h.running("production", "backend"), None);
}

async fn cancelling_a_slow_deploy_stops_at_the_next_safe_point_and_rolls_back(store: Backend) {
    let h = Harness::new(store).await;
    h.deploy("v1.0.0", "staging").await;
    let sleep = h.dir.path().join("sleep");
    std::fs::write(&sleep, "2").unwrap();
    let reply = h.say("/deploy v1.1.0 staging").await;
    assert!(reply.starts_with("👍"), "{reply}");
    let id = h.latest().await;
    let job = tokio::spawn({
        let engine = h.app.engine.clone();
        async move { engine.run_next_job().await.unwrap() }
    });
    h.wait_for(id, "the deploy step", |_, steps| {
        step_states(steps, "deploy") == [StepState::Running]
    })
    .await;
    // Cancel while the backend's deploy command is actually sleeping (not before it started).
    let sleeping = h.dir.path().join("sleeping");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !sleeping.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deploy script never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        std::fs::read_to_string(&sleeping).unwrap().trim(),
        "staging backend v1.1.0"
    );
    let reply = h.say(&format!("/cancel {id}")).await;
    assert!(reply.contains("next safe point"), "{reply}");
    std::fs::remove_file(&sleep).unwrap();
    assert!(job.await.unwrap());

    let d = h.deployment(id).await;
    assert_eq!(d.state, DeploymentState::Cancelled, "{:?}", d.error);
    let steps = h.steps(id).await;
    assert_eq!(
        step_states(&steps, "deploy"),
        [StepState::Failed],
        "{steps:?}"
    );
    assert_eq!(
        step_states(&steps, "rollback"),
        [StepState::Succeeded],
        "{steps:?}"
    );
    assert_eq!(
        step_states(&steps, "verify after rollback"),
        [StepState::Succeeded],
        "{steps:?}"
    );
    // The backend was deployed before the cancel was seen, and was put back; the frontend never moved.
    let log = h.deploy_log();
    assert!(log.contains("staging backend v1.1.0"), "{log}");
    assert!(!log.contains("staging frontend v1.1.0"), "{log}");
    assert_eq!(h.running("staging", "backend").as_deref(), Some("v1.0.0"));
    assert_eq!(h.running("staging", "frontend").as_deref(), Some("v1.0.0"));
    assert!(h.lock_of("staging").await.is_none());
}

// ------------------------------------------------------------------------------------------ 10

async fn production_refuses_a_version_that_has_not_succeeded_on_staging(store: Backend) {
    let h = Harness::new(store).await;
    let reply = h.say("/deploy v2.0.0 prod").await;
    assert!(
        reply.contains("has not succeeded on staging") && reply.contains("promotion rule"),
        "{reply}"
    );
    assert!(h
        .app
        .engine
        .store
        .deployments(Some("production"), &[], 10)
        .await
        .unwrap()
        .is_empty());
    assert!(h.lock_of("production").await.is_none());

    // A version that failed (and was rolled back) on staging does not count either.
    h.deploy("v1.0.0", "staging").await;
    let broken = h.deploy("v2.0.0-broken", "staging").await;
    assert_eq!(h.state(broken).await, DeploymentState::RolledBack);
    let reply = h.say("/deploy v2.0.0-broken prod").await;
    assert!(reply.contains("has not succeeded on staging"), "{reply}");

    h.deploy("v2.0.0", "staging").await;
    let reply = h.say("/deploy v2.0.0 prod").await;
    assert!(reply.starts_with("👍"), "{reply}");
}

// ------------------------------------------------------------------------------------------ 11

async fn a_deploy_interrupted_by_a_crash_resumes_after_restart_and_succeeds(store: Backend) {
    let db = store.fresh().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("deploy.sh"), DEPLOY_SH).unwrap();
    let health = health_server(dir.path().to_path_buf()).await;
    let config_path = dir.path().join("deploybot.toml");
    std::fs::write(
        &config_path,
        config_text(dir.path(), &db.url, health, "30m", free_port()),
    )
    .unwrap();
    let sleep = dir.path().join("sleep");
    std::fs::write(&sleep, "3").unwrap();

    let stderr = dir.path().join("bot.stderr");
    let mut bot = BotProcess::start(&config_path, &[], &stderr);
    bot.type_line("/deploy v1.0.0 staging");
    bot.wait_line("requested", Duration::from_secs(8));
    let store_kind = store;
    let store = &db.store;
    let id = store.deployments(Some("staging"), &[], 1).await.unwrap()[0].id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        let steps = store.steps(id).await.unwrap();
        if steps
            .iter()
            .any(|s| s.name == "deploy" && s.state == StepState::Running)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deploy step never started: {steps:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // kill -9 in the middle of the deploy step, then start again (and deploy fast this time).
    bot.kill();
    drop(bot);
    // The deploy script it was running is its own process group: stop it too.
    if let Some(pgid) = std::fs::read_to_string(dir.path().join("deploy.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        // SAFETY: killpg has no memory-safety preconditions; the group is the script this test's bot started.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
    }
    std::fs::remove_file(&sleep).unwrap();
    assert_eq!(
        store.deployment(id).await.unwrap().unwrap().state,
        DeploymentState::Running
    );
    // A fresh listen port: another test may have taken the old one while this bot was down.
    let text = std::fs::read_to_string(&config_path).unwrap();
    let fresh = free_port();
    let text = regex::Regex::new(r#"listen = "127\.0\.0\.1:\d+""#).unwrap().replace(&text, format!("listen = \"127.0.0.1:{fresh}\"").as_str()).into_owned();
    std::fs::write(&config_path, text).unwrap();
    let _bot = BotProcess::start(&config_path, &[], &stderr);

    // On SQLite the store is this process's alone, so a restart resumes at once; on PostgreSQL
    // other replicas may be alive, so the job waits for the dead process's lease to lapse.
    let lease = match store_kind {
        Backend::Sqlite => Duration::ZERO,
        Backend::Postgres => Duration::from_millis(30_000),
    };
    let deadline = tokio::time::Instant::now() + lease + Duration::from_secs(8);
    let d = loop {
        let d = store.deployment(id).await.unwrap().unwrap();
        if d.state.is_terminal() {
            break d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "#{id} is still {} after the restart; stderr: {}",
            d.state,
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(d.state, DeploymentState::Succeeded, "{:?}", d.error);
    let steps: Vec<(String, StepState)> = store
        .steps(id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.state))
        .collect();
    assert_eq!(
        step_states(&steps, "preflight"),
        [StepState::Succeeded],
        "{steps:?}"
    );
    assert_eq!(
        step_states(&steps, "deploy"),
        [StepState::Interrupted, StepState::Succeeded],
        "{steps:?}"
    );
    assert_eq!(
        step_states(&steps, "verify"),
        [StepState::Succeeded],
        "{steps:?}"
    );
    assert_eq!(
        step_states(&steps, "record"),
        [StepState::Succeeded],
        "{steps:?}"
    );
    assert!(store.lock("staging").await.unwrap().is_none());
    let recorded = store.service_versions("staging").await.unwrap();
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    assert!(
        recorded.iter().all(|s| s.version == "v1.0.0"),
        "{recorded:?}"
    );
    store.close().await;
}

// ------------------------------------------------------------------------------------------ migrations

async fn a_migration_command_gets_its_env_table_in_its_environment_never_in_its_argv_and_the_values_stay_secret(store: Backend) {
    const URL: &str = "jdbc:postgresql://db/invoiceme?password=hunter2-mig";
    let proc_dir = tempfile::tempdir().unwrap();
    let p = proc_dir.path().display();
    // The command copies what any local user could read of it (/proc/<pid>/cmdline) and its
    // environment to files, which bypass the bot's redaction.
    let h = Harness::with_vars(
        store,
        &format!(
            r#"
[environments.staging.migrations]
command = ["sh", "-c", "cat /proc/$$/cmdline > {p}/cmdline; cat /proc/$$/environ > {p}/environ; echo Successfully applied 1 migration to schema public; echo url=$FLYWAY_URL"]
env = {{ FLYWAY_URL = "${{DEPLOYBOT_TEST_MIGRATION_URL}}" }}
timeout = "10s"
"#
        ),
        deploybot::secrets::Vars::from_pairs([("DEPLOYBOT_TEST_MIGRATION_URL", URL)]),
    )
    .await;
    let id = h.deploy("v1.0.0", "staging").await;
    let d = h.deployment(id).await;
    assert_eq!(d.state, DeploymentState::Succeeded, "{:?}", d.error);

    let cmdline = std::fs::read(proc_dir.path().join("cmdline")).unwrap();
    let environ = std::fs::read(proc_dir.path().join("environ")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    let environ: Vec<String> = String::from_utf8_lossy(&environ).split('\0').map(str::to_string).collect();
    assert!(cmdline.starts_with("sh -c cat /proc/"), "the command's own argv was read: {cmdline}");
    assert!(!cmdline.contains("hunter2-mig"), "the secret is not in the argv: {cmdline}");
    assert!(environ.contains(&format!("FLYWAY_URL={URL}")), "the secret is in the environment: {environ:?}");

    let steps = h.app.engine.store.steps(id).await.unwrap();
    let migration = steps.iter().find(|s| s.name == "migrations").expect("a migrations step");
    let detail = migration.detail.clone().unwrap_or_default();
    assert!(detail.contains("url=•••"), "the command received the value, and the detail masks it: {detail}");
    assert!(!detail.contains("hunter2-mig"), "{detail}");
}

async fn a_migration_command_naming_an_unset_variable_fails_before_any_service_changes(store: Backend) {
    let extra = r#"
[environments.staging.migrations]
command = ["sh", "-c", "echo $TOKEN"]
env = { TOKEN = "${DEPLOYBOT_TEST_SURELY_UNSET_MIGRATION_VAR}" }
"#;
    // The checklist's built-in item refuses the request, naming the variable and where it is used.
    let h = Harness::with_vars(store, extra, deploybot::secrets::Vars::from_pairs([("DEPLOYBOT_TEST_SOME_OTHER_VAR", "x")])).await;
    let reply = h.say("/deploy v1.0.0 staging").await;
    assert!(
        reply.contains("required checklist item 'environment variables configured' failed: DEPLOYBOT_TEST_SURELY_UNSET_MIGRATION_VAR is not set (needed by environments.staging.migrations.env.TOKEN)"),
        "{reply}"
    );
    let id = h.latest().await;
    assert_eq!(h.deployment(id).await.state, DeploymentState::Denied);
    assert!(h.deploy_log().is_empty(), "no service changed");
    assert_eq!(h.steps(id).await, vec![("checklist".to_string(), StepState::Failed)], "nothing but the checklist ran");
}

on_each_store!(
    an_approved_production_deploy_ignores_ineligible_reactions_and_runs_every_step,
    an_approver_rejecting_closes_the_request_and_releases_the_lock,
    an_unanswered_approval_expires_and_releases_the_lock,
    a_production_deploy_on_friday_evening_is_denied_with_the_next_window,
    a_manually_locked_environment_refuses_deploys_until_unlocked,
    of_two_simultaneous_deploys_to_one_environment_exactly_one_proceeds,
    a_broken_version_fails_verification_and_is_rolled_back_automatically,
    a_manual_rollback_returns_to_the_version_before_the_last_deploy,
    cancelling_a_request_waiting_for_approval_closes_it_without_running,
    cancelling_a_slow_deploy_stops_at_the_next_safe_point_and_rolls_back,
    production_refuses_a_version_that_has_not_succeeded_on_staging,
    a_deploy_interrupted_by_a_crash_resumes_after_restart_and_succeeds,
    a_migration_command_gets_its_env_table_in_its_environment_never_in_its_argv_and_the_values_stay_secret,
    a_migration_command_naming_an_unset_variable_fails_before_any_service_changes,
);
