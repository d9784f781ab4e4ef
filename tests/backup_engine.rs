//! The backup step and `/rollback --with-db` end to end through the engine: chat events in, a
//! `command` target (a shell script in a tempdir), a real PostgreSQL database dumped with
//! `pg_dump`, uploaded to S3 on moto, and restored with `psql` after approval.

#[path = "support/services.rs"]
mod services;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::Utc;
use deploybot::app::{self, App};
use deploybot::chat::console::{self, Shown};
use deploybot::config::Config;
use deploybot::engine::clock::ShiftedClock;
use deploybot::model::{DeploymentKind, DeploymentState, StepState};
use services::Database;

const DEPLOY_SH: &str = r#"#!/bin/sh
set -e
dir=$(dirname "$0")
echo "$3" > "$dir/$1-$2.version"
echo "deployed $2 $3"
"#;

struct Harness {
    dir: tempfile::TempDir,
    app: App,
    seq: AtomicU64,
}

impl Harness {
    /// `staging` backs up `db` to `bucket` and needs carol's approval; `dev` backs up too but has
    /// no approvers.
    async fn new(db: &Database, moto: &str, bucket: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("deploy.sh"), DEPLOY_SH).unwrap();
        let var = services::unique("DEPLOYBOT_TEST_BACKUP_DB").replace('-', "_").to_uppercase();
        let mut config = Config::parse(&config_text(dir.path(), &var, moto, bucket)).unwrap_or_else(|p| panic!("test config: {p:?}"));
        config.vars = deploybot::secrets::Vars::from_pairs(services::MOTO_KEYS.into_iter().chain([(var.as_str(), db.url.as_str())]));
        let clock = Arc::new(ShiftedClock::at(Utc::now()));
        let app = app::build_console_app(config, clock, None).await.unwrap();
        Harness { dir, app, seq: AtomicU64::new(0) }
    }

    async fn say(&self, line: &str) -> String {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let event = console::parse_line(line, "alice", "console", seq).unwrap().unwrap();
        let reply = self.app.engine.handle(event).await.unwrap().map(|r| r.0).unwrap_or_default();
        self.app.engine.outbox.drain().await.unwrap();
        reply
    }

    async fn latest(&self) -> i64 {
        self.app.engine.store.deployments(None, &[], 1).await.unwrap().first().expect("a deployment").id
    }

    async fn run_jobs(&self) {
        while self.app.engine.run_next_job().await.unwrap() {}
        self.app.engine.outbox.drain().await.unwrap();
    }

    /// `/deploy version staging`, approved by carol, run to its end.
    async fn deploy(&self, version: &str) -> i64 {
        let reply = self.say(&format!("/deploy {version} staging")).await;
        assert!(reply.starts_with("👍"), "{reply}");
        let id = self.latest().await;
        self.say(&format!("@carol :white_check_mark: #{id}")).await;
        self.run_jobs().await;
        let d = self.app.engine.store.deployment(id).await.unwrap().unwrap();
        assert_eq!(d.state, DeploymentState::Succeeded, "{:?} {:?}", d.error, self.app.engine.store.steps(id).await.unwrap());
        id
    }

    fn running(&self, service: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("staging-{service}.version"))).unwrap_or_default().trim().to_string()
    }

    fn texts(&self) -> Vec<String> {
        self.app.console.transcript().iter().filter(|s| !matches!(s, Shown::Ephemeral { .. })).map(|s| s.text().to_string()).collect()
    }

    async fn step(&self, id: i64, name: &str) -> (StepState, String) {
        let steps = self.app.engine.store.steps(id).await.unwrap();
        let s = steps.iter().rev().find(|s| s.name == name).unwrap_or_else(|| panic!("#{id} has no {name} step: {steps:?}"));
        (s.state, s.detail.clone().unwrap_or_default())
    }
}

fn config_text(dir: &Path, var: &str, moto: &str, bucket: &str) -> String {
    let d = dir.display();
    let env = |name: &str, channel: &str, approvals: &str| {
        format!(
            r#"
[environments.{name}]
channel = "{channel}"
{approvals}
target = {{ kind = "command", deploy = ["sh", "{d}/deploy.sh", "{{env}}", "{{service}}", "{{version}}"], timeout = "20s" }}

[environments.{name}.backup]
database_url = "${{{var}}}"
s3 = "s3://{bucket}/invoiceme/"
s3_endpoint_url = "{moto}"
dir = "{d}/backups-{name}"
"#
        )
    };
    format!(
        r#"[bot]
database_url = "sqlite://{d}/deploybot.db"
timezone = "America/New_York"

[chat]
platform = "console"

[chat.console]
user = "alice"

[services.backend]
image = "invoiceme/invoice-me-backend"
order = 1

[services.frontend]
image = "invoiceme/invoice-me-frontend"
order = 2
{}{}"#,
        env("staging", "C0STAGING", r#"approvals = { required = 1, approvers = ["carol"] }"#),
        env("dev", "C0DEV", "")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_with_db_restores_the_exact_pre_deploy_backup_after_approval() {
    let (Some(pg), Some(moto)) = (services::postgres(), services::moto()) else { return };
    let db = Database::create(&pg).await;
    db.seed().await;
    let bucket = services::bucket(&moto).await;
    let h = Harness::new(&db, &moto, &bucket).await;

    let first = h.deploy("v1.0.0").await;
    let (state, detail) = h.step(first, "backup").await;
    assert_eq!(state, StepState::Succeeded);
    assert!(detail.starts_with("backup ") && detail.contains(&format!("→ s3://{bucket}/invoiceme/backup_staging_")), "{detail}");
    let recorded = h.app.engine.store.backup_for(first).await.unwrap().expect("the backup is recorded with the deployment");
    assert!(recorded.size_bytes > 0 && recorded.remote_uri.is_some());

    // v1.1.0's backup holds 5 customers; one more is written after it.
    db.execute("INSERT INTO customers (name) VALUES ('Dan'), ('Eve')").await;
    let second = h.deploy("v1.1.0").await;
    let before_second = h.app.engine.store.backup_for(second).await.unwrap().expect("a backup before #2");
    db.execute("INSERT INTO customers (name) VALUES ('Fay'); DELETE FROM invoices WHERE id = 1;").await;
    // The local copy is gone: the restore must fetch the dump from S3.
    std::fs::remove_file(before_second.local_path.as_deref().unwrap()).unwrap();

    let reply = h.say("/rollback staging --with-db").await;
    assert!(reply.contains("restore the database") && reply.contains("approval"), "{reply}");
    let id = h.latest().await;
    let d = h.app.engine.store.deployment(id).await.unwrap().unwrap();
    assert_eq!((d.state, d.kind, d.with_db, d.rollback_of, d.version.as_str()), (DeploymentState::AwaitingApproval, DeploymentKind::Rollback, true, Some(second), "v1.0.0"));
    let texts = h.texts();
    let loss = texts.iter().position(|t| t.contains("Everything written since then is lost")).unwrap_or_else(|| panic!("what will be lost was posted: {texts:#?}"));
    let approval = texts.iter().position(|t| t.contains(&format!("Approval needed for #{id} "))).expect("an approval message");
    assert!(loss < approval, "what will be lost is posted before approval is asked");
    assert!(texts[loss].contains("public.customers: 6 rows now, 5 in the backup (+1)"), "{}", texts[loss]);
    assert!(texts[loss].contains("public.invoices: 1 rows now, 2 in the backup (-1)"), "{}", texts[loss]);
    assert!(texts[approval].contains("WITH DATABASE RESTORE"), "{}", texts[approval]);

    // Nothing runs before approval.
    h.run_jobs().await;
    assert_eq!(db.count("customers").await, 6);
    assert_eq!(h.running("backend"), "v1.1.0");

    h.say(&format!("@carol :white_check_mark: #{id}")).await;
    h.run_jobs().await;
    let d = h.app.engine.store.deployment(id).await.unwrap().unwrap();
    assert_eq!(d.state, DeploymentState::Succeeded, "{:?} {:?}", d.error, h.app.engine.store.steps(id).await.unwrap());
    assert_eq!(db.count("customers").await, 5, "the database is back to the backup taken before #{second}");
    assert_eq!(db.count("invoices").await, 2);
    assert_eq!((h.running("backend"), h.running("frontend")), ("v1.0.0".to_string(), "v1.0.0".to_string()));
    let (state, detail) = h.step(id, "restore").await;
    assert_eq!(state, StepState::Succeeded, "{detail}");
    assert!(detail.contains(&format!("before #{second}")), "{detail}");
    // The database as it was before the restore was backed up first.
    let pre_restore = h.app.engine.store.backup_for(id).await.unwrap().expect("a backup before the restore");
    assert!(pre_restore.remote_uri.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_with_db_is_refused_without_approvers_or_without_a_backup() {
    let (Some(pg), Some(moto)) = (services::postgres(), services::moto()) else { return };
    let db = Database::create(&pg).await;
    db.seed().await;
    let bucket = services::bucket(&moto).await;
    let h = Harness::new(&db, &moto, &bucket).await;

    let reply = h.say("/rollback dev --with-db").await;
    assert!(reply.contains("always needs approval") && reply.contains("no approvers"), "{reply}");
    let reply = h.say("/rollback staging --with-db").await;
    assert!(reply.contains("Nothing to roll back"), "{reply}");
    assert!(h.app.engine.store.deployments(None, &[], 10).await.unwrap().is_empty(), "no deployment was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backup_stops_the_deployment_before_anything_changes() {
    let (Some(pg), Some(moto)) = (services::postgres(), services::moto()) else { return };
    let db = Database::create(&pg).await;
    // A bucket that does not exist: the dump works, the upload does not.
    let h = Harness::new(&db, &moto, "no-such-bucket-deploybot").await;
    let reply = h.say("/deploy v1.0.0 staging").await;
    assert!(reply.starts_with("👍"), "{reply}");
    let id = h.latest().await;
    h.say(&format!("@carol :white_check_mark: #{id}")).await;
    h.run_jobs().await;
    let d = h.app.engine.store.deployment(id).await.unwrap().unwrap();
    assert_eq!(d.state, DeploymentState::Failed);
    let (state, detail) = h.step(id, "backup").await;
    assert_eq!(state, StepState::Failed);
    assert!(detail.contains("backup failed, nothing was changed") && detail.contains("s3://no-such-bucket-deploybot/invoiceme/") && detail.contains("NoSuchBucket"), "{detail}");
    assert_eq!(h.running("backend"), "", "no service was deployed");
    assert!(h.app.engine.store.backup_for(id).await.unwrap().is_none());
}
