//! Fresh stores for tests: a SQLite file in a temporary directory, and a PostgreSQL database of
//! its own on the cluster `DEPLOYBOT_TEST_PG_URL` points to, so tests run in parallel.
//!
//! Without `DEPLOYBOT_TEST_PG_URL` a PostgreSQL test fails and says how to start a cluster
//! (`source scripts/services/postgres.sh && postgres_start`), unless `DEPLOYBOT_SKIP_PG=1` asks to skip PostgreSQL explicitly.

use std::ops::Deref;
use std::sync::atomic::{AtomicU32, Ordering};

use deploybot::model::{DeploymentKind, DeploymentState, Millis, NewDeployment};
use deploybot::store::Store;
use sqlx::Connection;

pub const PG_URL_VAR: &str = "DEPLOYBOT_TEST_PG_URL";
pub const SKIP_PG_VAR: &str = "DEPLOYBOT_SKIP_PG";

/// A store on a database that exists only for this test.
pub struct TestDb {
    /// `sqlite` or `postgres`, for assertion messages.
    pub name: &'static str,
    pub store: Store,
    /// The URL the store was opened with (a second `Store::connect` reaches the same data).
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    /// Removed with the directory when the test ends.
    Sqlite(tempfile::TempDir),
    Postgres { admin_url: String, database: String },
}

impl Deref for TestDb {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Best effort, so a long-lived server does not collect test databases; a throwaway
        // cluster from scripts/services/postgres.sh is deleted as a whole anyway.
        if let Cleanup::Postgres { admin_url, database } = &self.cleanup {
            let (admin_url, database) = (admin_url.clone(), database.clone());
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                rt.block_on(async {
                    if let Ok(mut conn) = sqlx::postgres::PgConnection::connect(&admin_url).await {
                        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)")).execute(&mut conn).await;
                        let _ = conn.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// A fresh SQLite store and a fresh PostgreSQL store (only SQLite when PostgreSQL is skipped
/// explicitly).
pub async fn stores() -> Vec<TestDb> {
    let mut out = vec![sqlite().await];
    if let Some(pg) = postgres().await {
        out.push(pg);
    }
    out
}

/// A fresh SQLite store in its own temporary directory.
pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = sqlite_url(&dir.path().join("deploybot.db"));
    let store = Store::connect(&url).await.unwrap_or_else(|e| panic!("cannot open a SQLite store at {url}: {e:#}"));
    TestDb { name: "sqlite", store, url, cleanup: Cleanup::Sqlite(dir) }
}

pub fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite://{}", path.display())
}

/// The admin URL of the test cluster; `None` only when PostgreSQL is skipped explicitly.
pub fn pg_admin_url() -> Option<String> {
    match std::env::var(PG_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var(SKIP_PG_VAR).is_ok_and(|v| v == "1") => {
            eprintln!("skipped PostgreSQL in this test: {SKIP_PG_VAR}=1 and {PG_URL_VAR} is not set");
            None
        }
        _ => panic!(
            "{PG_URL_VAR} is not set, so the PostgreSQL tests cannot run. Start a throwaway cluster with \
             `source scripts/services/postgres.sh && postgres_start` (it exports {PG_URL_VAR}; `postgres_stop` stops it), or set {SKIP_PG_VAR}=1 \
             to skip them explicitly"
        ),
    }
}

/// A fresh PostgreSQL store in a database of its own; `None` when PostgreSQL is skipped explicitly.
pub async fn postgres() -> Option<TestDb> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let admin_url = pg_admin_url()?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let database = format!("deploybot_test_{}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst), nanos);
    let mut admin = sqlx::postgres::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {PG_URL_VAR}={admin_url} (is it running? `source scripts/services/postgres.sh && postgres_start`): {e}"));
    sqlx::query(&format!("CREATE DATABASE \"{database}\""))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("cannot create the test database {database}: {e}"));
    let _ = admin.close().await;
    let mut url = url::Url::parse(&admin_url).unwrap_or_else(|e| panic!("{PG_URL_VAR} is not a URL: {e}"));
    url.set_path(&format!("/{database}"));
    let url = url.to_string();
    let store = Store::connect(&url).await.unwrap_or_else(|e| panic!("cannot open a PostgreSQL store at {url}: {e:#}"));
    Some(TestDb { name: "postgres", store, url, cleanup: Cleanup::Postgres { admin_url, database } })
}

/// A deploy request as `/deploy <version> <env>` by Alice would make it, in `state`.
pub fn request(env: &str, version: &str, state: DeploymentState) -> NewDeployment {
    NewDeployment {
        env: env.to_string(),
        kind: DeploymentKind::Deploy,
        version: version.to_string(),
        services: vec!["backend".to_string(), "frontend".to_string()],
        state,
        requested_by: "U0ALICE".to_string(),
        requested_by_name: "Alice".to_string(),
        channel: format!("C0{}", env.to_uppercase()),
        hotfix_reason: None,
        scheduled_for: None,
        rollback_of: None,
        with_db: false,
        approvals_required: 0,
        approval_expires_at: None,
        request_event: None,
    }
}

/// 2026-12-01 (a Tuesday) 10:00 America/New_York, in Unix milliseconds.
pub const TUE_1_DEC_2026_10AM_NY: Millis = 1_796_137_200_000;
pub const MINUTE: Millis = 60_000;
pub const HOUR: Millis = 60 * MINUTE;
pub const DAY: Millis = 24 * HOUR;
