//! Durable state: SQLite by default, PostgreSQL for several replicas, behind one [`Store`].
//!
//! *Invariant*: all SQL of the bot lives in this folder. Queries are written once, in the
//! dialect both databases accept (`$1` parameters, `ON CONFLICT`, `RETURNING`); where they
//! differ (`FOR UPDATE SKIP LOCKED`), [`Dialect`] picks. Times are Unix milliseconds.
//! Nothing here deletes history.

use std::collections::HashMap;
use std::str::FromStr;

use anyhow::{Context, Result};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, Connection, Executor, Row, TransactionManager};

use crate::model::*;

mod history;
mod interactions;
mod notify;
mod outbox;
mod queue;
mod releases;
mod seed;
mod stats;

pub use history::{render_history_markdown, Stats, StatsCounts, StatsInput};
pub use notify::{NewNotification, StoredNotification};
pub use outbox::{progress_as_of, progress_key, OutboxMessage, StoredMessage};
pub use releases::{Release, ReleaseImage, ABANDONED as RELEASE_ABANDONED};
pub use seed::{SeedReport, SeedSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    conns: Conns,
    dialect: Dialect,
}

/// The connections statements run on.
#[derive(Clone)]
enum Conns {
    /// PostgreSQL: a pool, which replaces a connection a server restart cut.
    Pool(AnyPool),
    /// SQLite: connections opened once and kept. A pooled connection costs a second round trip
    /// to its worker thread each time it goes back to the pool (sqlx pings it then), and the
    /// single writer was unavailable to the next write until that ping had come back: with 500
    /// deployments at once that ping was a fifth of every deployment's overhead. A SQLite
    /// connection is an open file nothing outside can break, so it needs neither the ping nor
    /// the pool's replacement of broken connections.
    Held(std::sync::Arc<Held>),
}

impl std::fmt::Debug for Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conns::Pool(pool) => f.debug_tuple("Pool").field(pool).finish(),
            Conns::Held(held) => f.debug_struct("Held").field("readers", &held.readers.len()).finish(),
        }
    }
}

struct Held {
    /// The one connection every write goes through (see [`Routed`]).
    writer: tokio::sync::Mutex<Option<AnyConnection>>,
    /// Connections for reads; none for an in-memory database, whose data belongs to the one
    /// connection that made it (reads then use the writer).
    readers: Vec<tokio::sync::Mutex<Option<AnyConnection>>>,
    next: std::sync::atomic::AtomicUsize,
}

/// A held SQLite connection, locked for one statement or transaction.
pub(crate) struct HeldConn<'a>(tokio::sync::MutexGuard<'a, Option<AnyConnection>>);

impl<'a> HeldConn<'a> {
    /// Refuses a connection the store's `close` took, with the error a closed pool gave.
    fn open(guard: tokio::sync::MutexGuard<'a, Option<AnyConnection>>) -> Result<Self, sqlx::Error> {
        if guard.is_none() {
            return Err(sqlx::Error::PoolClosed);
        }
        Ok(HeldConn(guard))
    }
}

impl std::ops::Deref for HeldConn<'_> {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        self.0.as_ref().expect("a closed connection is refused when locked")
    }
}

impl std::ops::DerefMut for HeldConn<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.0.as_mut().expect("a closed connection is refused when locked")
    }
}

impl Held {
    /// Waits for a connection as long as the pool did for one, and refuses once the store is
    /// closed, with the errors the pool gave, so [`is_unavailable`] reads them the same.
    async fn lock(m: &tokio::sync::Mutex<Option<AnyConnection>>) -> Result<HeldConn<'_>, sqlx::Error> {
        let guard = tokio::time::timeout(SQLITE_ACQUIRE_TIMEOUT, m.lock()).await.map_err(|_| sqlx::Error::PoolTimedOut)?;
        HeldConn::open(guard)
    }

    async fn writer(&self) -> Result<HeldConn<'_>, sqlx::Error> {
        Self::lock(&self.writer).await
    }

    /// A free reader if there is one, else a wait for the next in turn.
    async fn reader(&self) -> Result<HeldConn<'_>, sqlx::Error> {
        let n = self.readers.len();
        if n == 0 {
            return self.writer().await;
        }
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for i in 0..n {
            if let Ok(guard) = self.readers[(start + i) % n].try_lock() {
                return HeldConn::open(guard);
            }
        }
        Self::lock(&self.readers[start % n]).await
    }

    /// The writer for a statement that may write, else a reader.
    async fn for_sql(&self, sql: &str) -> Result<HeldConn<'_>, sqlx::Error> {
        if writes(sql) {
            self.writer().await
        } else {
            self.reader().await
        }
    }

    async fn close(&self) {
        for m in std::iter::once(&self.writer).chain(&self.readers) {
            if let Some(conn) = m.lock().await.take() {
                let _ = conn.close().await;
            }
        }
    }
}

/// A write transaction (see [`Store::begin`]); dropped without `commit`, it rolls back.
pub(crate) enum WriteTx<'a> {
    Pool(sqlx::Transaction<'static, sqlx::Any>),
    Held(HeldTx<'a>),
}

pub(crate) struct HeldTx<'a> {
    conn: HeldConn<'a>,
    open: bool,
}

impl Drop for HeldTx<'_> {
    fn drop(&mut self) {
        if self.open {
            // Queued on the connection's worker ahead of whatever the next holder sends.
            <sqlx::Any as sqlx::Database>::TransactionManager::start_rollback(&mut self.conn);
        }
    }
}

impl WriteTx<'_> {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            WriteTx::Pool(tx) => tx.commit().await,
            WriteTx::Held(mut tx) => {
                <sqlx::Any as sqlx::Database>::TransactionManager::commit(&mut tx.conn).await?;
                tx.open = false;
                Ok(())
            }
        }
    }

    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            WriteTx::Pool(tx) => tx.rollback().await,
            WriteTx::Held(mut tx) => {
                <sqlx::Any as sqlx::Database>::TransactionManager::rollback(&mut tx.conn).await?;
                tx.open = false;
                Ok(())
            }
        }
    }
}

impl std::ops::Deref for WriteTx<'_> {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            WriteTx::Pool(tx) => tx,
            WriteTx::Held(tx) => &tx.conn,
        }
    }
}

impl std::ops::DerefMut for WriteTx<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            WriteTx::Pool(tx) => tx,
            WriteTx::Held(tx) => &mut tx.conn,
        }
    }
}

/// Where a statement runs. SQLite lets one connection write at a time; a second writer waits in
/// SQLite's busy handler, which sleeps 1, 2, 5, 10… ms between tries. With hundreds of
/// deployments at once those sleeps were most of a step's time, so on SQLite every write (an
/// INSERT, UPDATE or DELETE, also behind a WITH, and every transaction) queues for the single
/// writer connection instead, and reads use the others (WAL: readers never wait for the writer).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Routed<'c> {
    conns: &'c Conns,
}

/// Whether `sql` may write (then it goes to the writer connection).
fn writes(sql: &str) -> bool {
    let head = sql.trim_start();
    let word: String = head.chars().take_while(|c| c.is_ascii_alphabetic()).collect::<String>().to_ascii_uppercase();
    match word.as_str() {
        "SELECT" | "EXPLAIN" => false,
        "WITH" => {
            let upper = head.to_ascii_uppercase();
            upper.contains("INSERT ") || upper.contains("UPDATE ") || upper.contains("DELETE ")
        }
        _ => true,
    }
}

impl<'c> sqlx::Executor<'c> for Routed<'c> {
    type Database = sqlx::Any;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> futures_util::stream::BoxStream<'e, Result<sqlx::Either<sqlx::any::AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + sqlx::Execute<'q, Self::Database>,
    {
        use futures_util::StreamExt;
        match self.conns {
            Conns::Pool(pool) => pool.fetch_many(query),
            Conns::Held(held) => {
                // The results are gathered while the connection is held (no statement of the bot
                // streams a large result), then handed out.
                Box::pin(
                    futures_util::stream::once(async move {
                        let items: Vec<_> = match held.for_sql(query.sql()).await {
                            Ok(mut conn) => (&mut *conn).fetch_many(query).collect().await,
                            Err(e) => vec![Err(e)],
                        };
                        futures_util::stream::iter(items)
                    })
                    .flatten(),
                )
            }
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> futures_util::future::BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + sqlx::Execute<'q, Self::Database>,
    {
        match self.conns {
            Conns::Pool(pool) => pool.fetch_optional(query),
            Conns::Held(held) => Box::pin(async move {
                let mut conn = held.for_sql(query.sql()).await?;
                (&mut *conn).fetch_optional(query).await
            }),
        }
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [sqlx::any::AnyTypeInfo],
    ) -> futures_util::future::BoxFuture<'e, Result<sqlx::any::AnyStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        match self.conns {
            Conns::Pool(pool) => pool.prepare_with(sql, parameters),
            Conns::Held(held) => Box::pin(async move {
                let mut conn = held.for_sql(sql).await?;
                (&mut *conn).prepare_with(sql, parameters).await
            }),
        }
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> futures_util::future::BoxFuture<'e, Result<sqlx::Describe<Self::Database>, sqlx::Error>>
    where
        'c: 'e,
    {
        match self.conns {
            Conns::Pool(pool) => pool.describe(sql),
            Conns::Held(held) => Box::pin(async move {
                let mut conn = held.reader().await?;
                (&mut *conn).describe(sql).await
            }),
        }
    }
}

/// How long a query waits for a PostgreSQL connection: an unreachable store is reported within
/// this, so a command is answered "try again" (and a Slack acknowledgement is not late) rather
/// than hanging. A SQLite file is never unreachable; its wait is only for a busy pool.
const PG_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
const SQLITE_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether an error means the store could not be reached (as opposed to a query it refused):
/// the caller should wait and try again rather than treat it as a verdict.
pub fn is_unavailable(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| match cause.downcast_ref::<sqlx::Error>() {
        Some(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed) => true,
        // PostgreSQL shutting down, starting up, or the connection lost (SQLSTATE classes 08, 57P).
        Some(sqlx::Error::Database(db)) => db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    })
}

/// Checks a `database_url` without connecting.
pub fn check_url(url: &str) -> Result<Dialect, String> {
    if url.starts_with("sqlite:") {
        Ok(Dialect::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Dialect::Postgres)
    } else {
        Err(format!(
            "unsupported database URL \"{}\" (sqlite://deploybot.db or postgres://user@host/db)",
            describe_url(url)
        ))
    }
}

/// The URL without its credentials, for output.
pub fn describe_url(url: &str) -> String {
    crate::secrets::display_url(url)
}

/// A bound parameter of a query whose plan [`Store::query_plans`] shows.
pub(super) enum Param {
    Int(i64),
    Text(String),
}

pub(super) const DEPLOYMENT_COLUMNS: &str = "id, env, kind, version, services, state, requested_by, requested_by_name, channel, \
    hotfix_reason, scheduled_for, rollback_of, with_db, approvals_required, approval_expires_at, current_step, cancel_requested_by, issues, error, \
    lease_owner, lease_until, rev, created_at, started_at, failed_at, finished_at, updated_at, request_event, resolution";

/// The rollbacks of a deployment (`deployments_rollback_of`).
/// The rollbacks of `n` deployments (`$1`…`$n`).
fn rollbacks_of_sql(n: usize) -> String {
    format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE rollback_of IN ({}) ORDER BY id", placeholders(n))
}

/// `$1, $2, …, $n`.
pub(super) fn placeholders(n: usize) -> String {
    (1..=n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Fields a transition may set alongside the state.
#[derive(Debug, Default, Clone)]
pub struct Patch {
    pub started_at: Option<Millis>,
    pub failed_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub current_step: Option<String>,
    pub issues: Option<String>,
    pub error: Option<String>,
    pub scheduled_for: Option<Millis>,
    pub approval_expires_at: Option<Millis>,
    /// Drop the job's lease (the job ended or was handed to a human).
    pub release_lease: bool,
    /// Release the environment lock this deployment holds, in the same transaction: a crash
    /// can never leave an ended deployment holding its environment.
    pub release_lock: bool,
}

impl Store {
    /// Connects, creating a SQLite file if needed, and applies the migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let expanded = crate::secrets::expand_env(url).map_err(anyhow::Error::msg).context("bot.database_url")?;
        let dialect = check_url(&expanded).map_err(anyhow::Error::msg)?;
        let (connect_url, max) = match dialect {
            Dialect::Sqlite => {
                let with_mode = if expanded.contains("mode=") || expanded.contains(":memory:") {
                    expanded.clone()
                } else if expanded.contains('?') {
                    format!("{expanded}&mode=rwc")
                } else {
                    format!("{expanded}?mode=rwc")
                };
                (with_mode, 4)
            }
            Dialect::Postgres => (expanded.clone(), 10),
        };
        // An in-memory SQLite database belongs to its connection: a second connection would see an
        // empty database without the migrations, so it gets no readers.
        let in_memory = dialect == Dialect::Sqlite && (expanded.contains(":memory:") || expanded.contains("mode=memory"));
        let options = match dialect {
            // Only opens the connections (with the PRAGMAs below), which are detached and held.
            Dialect::Sqlite => AnyPoolOptions::new().max_connections(1),
            Dialect::Postgres => AnyPoolOptions::new().max_connections(max),
        };
        let timeout = if dialect == Dialect::Postgres { PG_ACQUIRE_TIMEOUT } else { SQLITE_ACQUIRE_TIMEOUT };
        let open = |options: AnyPoolOptions| {
            options
                .acquire_timeout(timeout)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if dialect == Dialect::Sqlite {
                            conn.execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
                                .await?;
                        }
                        Ok(())
                    })
                })
                .connect(&connect_url)
        };
        let unreachable = || format!("cannot open the store at {} (no connection within {})", describe_url(&expanded), humantime::format_duration(timeout));
        let pool = open(options).await.with_context(unreachable)?;
        let conns = match dialect {
            Dialect::Postgres => Conns::Pool(pool),
            Dialect::Sqlite => {
                // SQLite writes go through one connection of their own (see `Routed`).
                let take = || async { Ok::<_, anyhow::Error>(Some(pool.acquire().await.with_context(unreachable)?.detach())) };
                let writer = tokio::sync::Mutex::new(take().await?);
                let mut readers = Vec::new();
                if !in_memory {
                    for _ in 0..max {
                        readers.push(tokio::sync::Mutex::new(take().await?));
                    }
                }
                Conns::Held(std::sync::Arc::new(Held { writer, readers, next: Default::default() }))
            }
        };
        let store = Store { conns, dialect };
        store.migrate().await?;
        Ok(store)
    }

    pub async fn migrate(&self) -> Result<()> {
        match &self.conns {
            Conns::Held(held) => sqlx::migrate!("migrations/sqlite").run(&mut *held.writer().await?).await,
            Conns::Pool(pool) => sqlx::migrate!("migrations/postgres").run(pool).await,
        }
        .context("failed to apply the store's migrations")
    }

    /// A write transaction. SQLite's default (deferred) transaction starts as a reader and fails
    /// with SQLITE_BUSY_SNAPSHOT when it tries to write after another connection wrote; taking
    /// the write lock up front makes it wait (busy_timeout) instead.
    pub(crate) async fn begin(&self) -> Result<WriteTx<'_>> {
        Ok(match &self.conns {
            Conns::Held(held) => {
                let mut conn = held.writer().await?;
                <sqlx::Any as sqlx::Database>::TransactionManager::begin(&mut conn, Some("BEGIN IMMEDIATE".into())).await?;
                WriteTx::Held(HeldTx { conn, open: true })
            }
            Conns::Pool(pool) => WriteTx::Pool(pool.begin().await?),
        })
    }

    /// Where a query runs: reads on the pool, writes on the writer (the same on PostgreSQL).
    pub(crate) fn db(&self) -> Routed<'_> {
        Routed { conns: &self.conns }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Cheap reachability check for `/healthz`.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(self.db()).await.context("store unreachable")?;
        Ok(())
    }

    pub async fn close(&self) {
        match &self.conns {
            Conns::Pool(pool) => pool.close().await,
            Conns::Held(held) => held.close().await,
        }
    }

    // ----------------------------------------------------------------------------- deployments

    /// Records a request. A request carrying the inbound event that created it is recorded once:
    /// handling the same event again returns the deployment it created the first time.
    pub async fn create_deployment(&self, d: &NewDeployment, now: Millis) -> Result<Deployment> {
        let services = serde_json::to_string(&d.services)?;
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO deployments (env, kind, version, services, state, requested_by, requested_by_name, channel, hotfix_reason, \
             scheduled_for, rollback_of, with_db, approvals_required, approval_expires_at, created_at, updated_at, request_event) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $16) ON CONFLICT (request_event) DO NOTHING \
             RETURNING {DEPLOYMENT_COLUMNS}"
        ))
        .bind(&d.env)
        .bind(d.kind.as_str())
        .bind(&d.version)
        .bind(services)
        .bind(d.state.as_str())
        .bind(&d.requested_by)
        .bind(&d.requested_by_name)
        .bind(&d.channel)
        .bind(&d.hotfix_reason)
        .bind(d.scheduled_for)
        .bind(d.rollback_of)
        .bind(d.with_db as i64)
        .bind(d.approvals_required)
        .bind(d.approval_expires_at)
        .bind(now)
        .bind(&d.request_event)
        .fetch_optional(&mut *tx)
        .await
        .context("failed to record the deployment request")?;
        let Some(row) = row else {
            tx.rollback().await?;
            let existing = sqlx::query(&format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE request_event = $1"))
                .bind(&d.request_event)
                .fetch_one(self.db())
                .await
                .context("failed to read the deployment an earlier handling of this event recorded")?;
            return deployment_from_row(&existing);
        };
        let dep = deployment_from_row(&row)?;
        audit_in(&mut *tx, now, &d.requested_by, &format!("created:{}", d.state), Some(&d.env), Some(dep.id), None).await?;
        tx.commit().await?;
        Ok(dep)
    }

    pub async fn deployment(&self, id: i64) -> Result<Option<Deployment>> {
        let row = sqlx::query(&format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db())
            .await?;
        row.as_ref().map(deployment_from_row).transpose()
    }

    /// Moves a deployment to `to` if it is still in one of `from`; false when someone else moved it first.
    /// The audit row is written in the same transaction.
    pub async fn transition(
        &self,
        id: i64,
        from: &[DeploymentState],
        to: DeploymentState,
        patch: &Patch,
        actor: &str,
        now: Millis,
    ) -> Result<bool> {
        if from.is_empty() {
            // `state IN ()` is an error in PostgreSQL; no state to move from moves nothing.
            return Ok(false);
        }
        let mut sql = String::from("UPDATE deployments SET state = $1, updated_at = $2, rev = rev + 1");
        let mut n = 2;
        let mut next = |col: &str, sql: &mut String| {
            n += 1;
            sql.push_str(&format!(", {col} = ${n}"));
        };
        if patch.started_at.is_some() {
            next("started_at", &mut sql);
        }
        if patch.failed_at.is_some() {
            next("failed_at", &mut sql);
        }
        if patch.finished_at.is_some() {
            next("finished_at", &mut sql);
        }
        if patch.current_step.is_some() {
            next("current_step", &mut sql);
        }
        if patch.issues.is_some() {
            next("issues", &mut sql);
        }
        if patch.error.is_some() {
            next("error", &mut sql);
        }
        if patch.scheduled_for.is_some() {
            next("scheduled_for", &mut sql);
        }
        if patch.approval_expires_at.is_some() {
            next("approval_expires_at", &mut sql);
        }
        if patch.release_lease {
            sql.push_str(", lease_owner = NULL, lease_until = NULL");
        }
        let states: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
        sql.push_str(&format!(" WHERE id = ${} AND state IN ({})", n + 1, states.join(", ")));
        let mut q = sqlx::query(&sql).bind(to.as_str()).bind(now);
        for v in [patch.started_at, patch.failed_at, patch.finished_at].into_iter().flatten() {
            q = q.bind(v);
        }
        for v in [&patch.current_step, &patch.issues, &patch.error].into_iter().flatten() {
            q = q.bind(v.clone());
        }
        for v in [patch.scheduled_for, patch.approval_expires_at].into_iter().flatten() {
            q = q.bind(v);
        }
        q = q.bind(id);
        let mut tx = self.begin().await?;
        let done = q.execute(&mut *tx).await.context("failed to record a state change")?.rows_affected() == 1;
        if done {
            audit_in(&mut *tx, now, actor, &format!("state:{to}"), None, Some(id), patch.error.as_deref()).await?;
            if patch.release_lock {
                let released = sqlx::query("DELETE FROM locks WHERE kind = 'deployment' AND deployment_id = $1").bind(id).execute(&mut *tx).await?.rows_affected();
                if released > 0 {
                    audit_in(&mut *tx, now, "deploybot", "unlock:deployment", None, Some(id), None).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(done)
    }

    /// Adds text to the deployment's "issues" (shown in history).
    pub async fn add_issue(&self, id: i64, issue: &str, now: Millis) -> Result<()> {
        let current: Option<String> = sqlx::query("SELECT issues FROM deployments WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db())
            .await?
            .and_then(|r| r.try_get::<Option<String>, _>(0).ok().flatten());
        let text = match current {
            Some(c) if !c.is_empty() => format!("{c}; {issue}"),
            _ => issue.to_string(),
        };
        sqlx::query("UPDATE deployments SET issues = $1, updated_at = $2 WHERE id = $3").bind(text).bind(now).bind(id).execute(self.db()).await?;
        Ok(())
    }

    /// Asks a running job to stop at its next safe point.
    pub async fn request_cancel(&self, id: i64, by: &str, now: Millis) -> Result<bool> {
        let n = sqlx::query("UPDATE deployments SET cancel_requested_by = $1, updated_at = $2 WHERE id = $3 AND cancel_requested_by IS NULL")
            .bind(by)
            .bind(now)
            .bind(id)
            .execute(self.db())
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Drops every lease: with SQLite there is one replica, so at start-up all jobs are ours.
    pub async fn clear_leases(&self) -> Result<u64> {
        Ok(sqlx::query("UPDATE deployments SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL")
            .execute(self.db())
            .await?
            .rows_affected())
    }

    /// Requests waiting for approval whose deadline passed.
    pub async fn expired_approvals(&self, now: Millis) -> Result<Vec<Deployment>> {
        sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE state = 'awaiting_approval' AND approval_expires_at IS NOT NULL AND approval_expires_at <= $1"
        ))
        .bind(now)
        .fetch_all(self.db())
        .await?
        .iter()
        .map(deployment_from_row)
        .collect()
    }

    pub async fn set_current_step(&self, id: i64, step: Option<&str>, now: Millis) -> Result<()> {
        sqlx::query("UPDATE deployments SET current_step = $1, updated_at = $2 WHERE id = $3")
            .bind(step.map(str::to_string))
            .bind(now)
            .bind(id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    /// Deployments of an environment (or all) newest first.
    pub async fn deployments(&self, env: Option<&str>, states: &[DeploymentState], limit: i64) -> Result<Vec<Deployment>> {
        let mut sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE 1 = 1");
        if env.is_some() {
            sql.push_str(" AND env = $2");
        }
        if !states.is_empty() {
            let list: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
            sql.push_str(&format!(" AND state IN ({})", list.join(", ")));
        }
        sql.push_str(" ORDER BY id DESC LIMIT $1");
        let mut q = sqlx::query(&sql).bind(limit);
        if let Some(e) = env {
            q = q.bind(e.to_string());
        }
        q.fetch_all(self.db()).await?.iter().map(deployment_from_row).collect()
    }

    /// How many deployments are in each state, from the counts the triggers of migration 0003
    /// keep: `/metrics` reads a dozen rows, not the history.
    pub async fn deployment_counts(&self) -> Result<std::collections::HashMap<String, i64>> {
        sqlx::query("SELECT state, n FROM deployment_counts")
            .fetch_all(self.db())
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// The deployments that hold or wait for the environment.
    pub async fn in_flight(&self, env: &str) -> Result<Vec<Deployment>> {
        let states: Vec<DeploymentState> = DeploymentState::ALL.into_iter().filter(|s| s.is_in_flight()).collect();
        self.deployments(Some(env), &states, 50).await
    }

    /// Takes the lease of the oldest job that is ready to run (queued, or scheduled and due), or
    /// whose previous lease expired while it was executing. Each job is handed to exactly one replica.
    /// The states are those of the partial index `deployments_claimable` (migration 0003): a claim
    /// reads the few live jobs, not the finished history.
    pub async fn claim_job(&self, owner: &str, now: Millis, lease_ms: i64) -> Result<Option<Deployment>> {
        Ok(self.claim_jobs(owner, now, lease_ms, 1).await?.pop())
    }

    /// Claims up to `limit` ready jobs in one statement, oldest first: when many requests arrive
    /// at once (a fleet deploying together), the runner takes them in a few writes instead of one
    /// write per job queued behind every running job's writes.
    pub async fn claim_jobs(&self, owner: &str, now: Millis, lease_ms: i64, limit: i64) -> Result<Vec<Deployment>> {
        let sql = claim_sql(self.dialect);
        let rows = sqlx::query(&sql).bind(owner).bind(now + lease_ms).bind(now).bind(limit.max(1)).fetch_all(self.db()).await?;
        let mut claimed: Vec<Deployment> = rows.iter().map(deployment_from_row).collect::<Result<_>>()?;
        claimed.sort_by_key(|d| d.id);
        Ok(claimed)
    }

    /// Extends a lease this owner holds; false when it was lost.
    pub async fn renew_lease(&self, id: i64, owner: &str, now: Millis, lease_ms: i64) -> Result<bool> {
        let n = sqlx::query("UPDATE deployments SET lease_until = $1 WHERE id = $2 AND lease_owner = $3")
            .bind(now + lease_ms)
            .bind(id)
            .bind(owner)
            .execute(self.db())
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    // ----------------------------------------------------------------------------- steps

    /// Records a step's start; a repeated step gets the next attempt number.
    pub async fn start_step(&self, deployment_id: i64, seq: i64, name: &str, now: Millis) -> Result<Step> {
        let mut tx = self.begin().await?;
        // The next attempt of this step, numbered in the same statement.
        let row = sqlx::query(
            "INSERT INTO deployment_steps (deployment_id, seq, name, attempt, state, started_at) \
             SELECT $1, $2, $3, COALESCE(MAX(attempt), 0) + 1, 'running', $4 FROM deployment_steps WHERE deployment_id = $1 AND name = $3 \
             RETURNING id, deployment_id, seq, name, attempt, state, detail, started_at, finished_at",
        )
        .bind(deployment_id)
        .bind(seq)
        .bind(name)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("UPDATE deployments SET current_step = $1, updated_at = $2 WHERE id = $3")
            .bind(name)
            .bind(now)
            .bind(deployment_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        step_from_row(&row)
    }

    pub async fn finish_step(&self, step_id: i64, state: StepState, detail: Option<&str>, now: Millis) -> Result<()> {
        sqlx::query("UPDATE deployment_steps SET state = $1, detail = $2, finished_at = $3 WHERE id = $4")
            .bind(state.as_str())
            .bind(detail.map(crate::secrets::redact))
            .bind(now)
            .bind(step_id)
            .execute(self.db())
            .await
            .context("failed to record a step's outcome")?;
        Ok(())
    }

    /// Records a step that did not run, with why.
    pub async fn skip_step(&self, deployment_id: i64, seq: i64, name: &str, why: &str, now: Millis) -> Result<()> {
        let step = self.start_step(deployment_id, seq, name, now).await?;
        self.finish_step(step.id, StepState::Skipped, Some(why), now).await
    }

    pub async fn steps(&self, deployment_id: i64) -> Result<Vec<Step>> {
        sqlx::query(
            "SELECT id, deployment_id, seq, name, attempt, state, detail, started_at, finished_at FROM deployment_steps \
             WHERE deployment_id = $1 ORDER BY id",
        )
        .bind(deployment_id)
        .fetch_all(self.db())
        .await?
        .iter()
        .map(step_from_row)
        .collect()
    }

    /// The latest step in `env` that changed the database's schema and succeeded: a `migrations`
    /// step (its output says the schema's version) or a `restore` (a backup put back, so the
    /// schema is whatever it was then). Its deployment id, name and detail.
    pub async fn last_schema_step(&self, env: &str) -> Result<Option<(i64, String, String)>> {
        let row = sqlx::query(
            "SELECT d.id, s.name, s.detail FROM deployments d JOIN deployment_steps s ON s.deployment_id = d.id \
             WHERE d.env = $1 AND s.name IN ('migrations', 'restore') AND s.state = 'succeeded' ORDER BY d.id DESC, s.id DESC LIMIT 1",
        )
        .bind(env)
        .fetch_optional(self.db())
        .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get::<Option<String>, _>(2)?.unwrap_or_default()))).transpose()
    }

    // ----------------------------------------------------------------------------- services

    pub async fn put_deployment_service(&self, s: &DeploymentService, now: Millis) -> Result<()> {
        sqlx::query(
            "INSERT INTO deployment_services (deployment_id, service, from_version, from_ref, to_version, to_ref, state, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (deployment_id, service) DO UPDATE SET \
             from_version = excluded.from_version, from_ref = excluded.from_ref, to_version = excluded.to_version, \
             to_ref = excluded.to_ref, state = excluded.state, updated_at = excluded.updated_at",
        )
        .bind(s.deployment_id)
        .bind(&s.service)
        .bind(&s.from_version)
        .bind(&s.from_ref)
        .bind(&s.to_version)
        .bind(&s.to_ref)
        .bind(&s.state)
        .bind(now)
        .execute(self.db())
        .await?;
        Ok(())
    }

    pub async fn deployment_services(&self, deployment_id: i64) -> Result<Vec<DeploymentService>> {
        let rows = sqlx::query(
            "SELECT deployment_id, service, from_version, from_ref, to_version, to_ref, state FROM deployment_services \
             WHERE deployment_id = $1 ORDER BY service",
        )
        .bind(deployment_id)
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeploymentService {
                    deployment_id: r.try_get("deployment_id")?,
                    service: r.try_get("service")?,
                    from_version: r.try_get("from_version")?,
                    from_ref: r.try_get("from_ref")?,
                    to_version: r.try_get("to_version")?,
                    to_ref: r.try_get("to_ref")?,
                    state: r.try_get("state")?,
                })
            })
            .collect()
    }

    pub async fn set_service_version(&self, v: &ServiceVersion) -> Result<()> {
        sqlx::query(
            "INSERT INTO service_versions (env, service, version, ref, deployment_id, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (env, service) DO UPDATE SET version = excluded.version, ref = excluded.ref, \
             deployment_id = excluded.deployment_id, updated_at = excluded.updated_at",
        )
        .bind(&v.env)
        .bind(&v.service)
        .bind(&v.version)
        .bind(&v.reference)
        .bind(v.deployment_id)
        .bind(v.updated_at)
        .execute(self.db())
        .await?;
        Ok(())
    }

    pub async fn service_versions(&self, env: &str) -> Result<Vec<ServiceVersion>> {
        let rows = sqlx::query("SELECT env, service, version, ref, deployment_id, updated_at FROM service_versions WHERE env = $1 ORDER BY service")
            .bind(env)
            .fetch_all(self.db())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ServiceVersion {
                    env: r.try_get("env")?,
                    service: r.try_get("service")?,
                    version: r.try_get("version")?,
                    reference: r.try_get("ref")?,
                    deployment_id: r.try_get("deployment_id")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    /// Whether `version` has succeeded on `env` (the promotion rule).
    pub async fn version_succeeded_on(&self, env: &str, version: &str) -> Result<bool> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM deployments WHERE env = $1 AND version = $2 AND kind = 'deploy' AND state = 'succeeded'")
            .bind(env)
            .bind(version)
            .fetch_one(self.db())
            .await?
            .try_get(0)?;
        Ok(n > 0)
    }

    /// The target reference (an ECS task-definition ARN) that `service` of `env` last ran `version`
    /// with, as recorded by a succeeded deployment or rollback; what `/rollback --to` goes back to.
    pub async fn recorded_ref(&self, env: &str, service: &str, version: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT s.to_ref FROM deployment_services s JOIN deployments d ON d.id = s.deployment_id \
             WHERE d.env = $1 AND s.service = $2 AND s.to_version = $3 AND d.state = 'succeeded' AND s.to_ref IS NOT NULL \
             ORDER BY d.id DESC LIMIT 1",
        )
        .bind(env)
        .bind(service)
        .bind(version)
        .fetch_optional(self.db())
        .await?;
        Ok(match row {
            Some(r) => r.try_get("to_ref")?,
            None => None,
        })
    }

    // ----------------------------------------------------------------------------- approvals

    /// Records a vote; false when this user already cast it.
    pub async fn add_vote(&self, v: &Vote) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO approvals (deployment_id, user_id, user_name, vote, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (deployment_id, user_id, vote) DO UPDATE SET withdrawn_at = NULL, created_at = excluded.created_at \
             WHERE approvals.withdrawn_at IS NOT NULL",
        )
        .bind(v.deployment_id)
        .bind(&v.user_id)
        .bind(&v.user_name)
        .bind(v.vote.as_str())
        .bind(v.created_at)
        .execute(self.db())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// A removed reaction withdraws the vote.
    pub async fn withdraw_vote(&self, deployment_id: i64, user_id: &str, vote: VoteKind, now: Millis) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE approvals SET withdrawn_at = $1 WHERE deployment_id = $2 AND user_id = $3 AND vote = $4 AND withdrawn_at IS NULL",
        )
        .bind(now)
        .bind(deployment_id)
        .bind(user_id)
        .bind(vote.as_str())
        .execute(self.db())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn votes(&self, deployment_id: i64) -> Result<Vec<Vote>> {
        let rows = sqlx::query(
            "SELECT deployment_id, user_id, user_name, vote, created_at FROM approvals WHERE deployment_id = $1 AND withdrawn_at IS NULL ORDER BY created_at",
        )
        .bind(deployment_id)
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("vote")?;
                Ok(Vote {
                    deployment_id: r.try_get("deployment_id")?,
                    user_id: r.try_get("user_id")?,
                    user_name: r.try_get("user_name")?,
                    vote: if kind == "reject" { VoteKind::Reject } else { VoteKind::Approve },
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    // ----------------------------------------------------------------------------- locks

    /// Takes the environment's lock, or returns who holds it.
    pub async fn try_lock(&self, lock: &Lock) -> Result<Result<(), Lock>> {
        let n = sqlx::query(
            "INSERT INTO locks (env, kind, holder, reason, deployment_id, created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (env) DO NOTHING",
        )
        .bind(&lock.env)
        .bind(lock.kind.as_str())
        .bind(&lock.holder)
        .bind(&lock.reason)
        .bind(lock.deployment_id)
        .bind(lock.created_at)
        .execute(self.db())
        .await?
        .rows_affected();
        if n == 1 {
            self.audit(lock.created_at, &lock.holder, &format!("lock:{}", lock.kind.as_str()), Some(&lock.env), lock.deployment_id, Some(&lock.reason)).await?;
            return Ok(Ok(()));
        }
        match self.lock(&lock.env).await? {
            Some(existing) => Ok(Err(existing)),
            // Released between our insert and read: try once more.
            None => Box::pin(self.try_lock(lock)).await,
        }
    }

    pub async fn lock(&self, env: &str) -> Result<Option<Lock>> {
        let row = sqlx::query("SELECT env, kind, holder, reason, deployment_id, created_at FROM locks WHERE env = $1")
            .bind(env)
            .fetch_optional(self.db())
            .await?;
        row.as_ref().map(lock_from_row).transpose()
    }

    pub async fn locks(&self) -> Result<Vec<Lock>> {
        sqlx::query("SELECT env, kind, holder, reason, deployment_id, created_at FROM locks ORDER BY env")
            .fetch_all(self.db())
            .await?
            .iter()
            .map(lock_from_row)
            .collect()
    }

    /// Releases the deployment lock held by `deployment_id` (never someone else's).
    pub async fn release_deployment_lock(&self, env: &str, deployment_id: i64, now: Millis) -> Result<bool> {
        let n = sqlx::query("DELETE FROM locks WHERE env = $1 AND kind = 'deployment' AND deployment_id = $2")
            .bind(env)
            .bind(deployment_id)
            .execute(self.db())
            .await?
            .rows_affected();
        if n == 1 {
            self.audit(now, "deploybot", "unlock:deployment", Some(env), Some(deployment_id), None).await?;
        }
        Ok(n == 1)
    }

    /// Moves a deployment lock from `from_deployment` to `lock`'s deployment; false when
    /// `from_deployment` no longer holds it.
    pub async fn take_over_lock(&self, from_deployment: i64, lock: &Lock) -> Result<bool> {
        let n = sqlx::query("UPDATE locks SET holder = $1, reason = $2, deployment_id = $3, created_at = $4 WHERE env = $5 AND kind = 'deployment' AND deployment_id = $6")
            .bind(&lock.holder)
            .bind(&lock.reason)
            .bind(lock.deployment_id)
            .bind(lock.created_at)
            .bind(&lock.env)
            .bind(from_deployment)
            .execute(self.db())
            .await?
            .rows_affected();
        if n == 1 {
            self.audit(lock.created_at, &lock.holder, "lock:taken_over", Some(&lock.env), lock.deployment_id, Some(&format!("from #{from_deployment}"))).await?;
        }
        Ok(n == 1)
    }

    /// Records how a deployment was closed by a person or superseded; false when it already was.
    pub async fn set_resolution(&self, id: i64, resolution: &str, actor: &str, now: Millis) -> Result<bool> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("UPDATE deployments SET resolution = $1, updated_at = $2, rev = rev + 1 WHERE id = $3 AND resolution IS NULL")
            .bind(resolution)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 {
            audit_in(&mut *tx, now, actor, "resolved", None, Some(id), Some(resolution)).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Releases a manual lock; returns it when there was one.
    pub async fn release_manual_lock(&self, env: &str, actor: &str, now: Millis) -> Result<Option<Lock>> {
        let existing = self.lock(env).await?;
        if let Some(l) = existing.as_ref().filter(|l| l.kind == LockKind::Manual) {
            sqlx::query("DELETE FROM locks WHERE env = $1 AND kind = 'manual'").bind(env).execute(self.db()).await?;
            self.audit(now, actor, "unlock:manual", Some(env), None, Some(&l.reason)).await?;
        }
        Ok(existing)
    }

    // ----------------------------------------------------------------------------- chat events

    /// Records a platform event id; true only the first time it is seen.
    pub async fn mark_event(&self, event_id: &str, source: &str, now: Millis) -> Result<bool> {
        let n = sqlx::query("INSERT INTO processed_events (event_id, source, received_at, handled_at) VALUES ($1, $2, $3, $3) ON CONFLICT (event_id) DO NOTHING")
            .bind(event_id)
            .bind(source)
            .bind(now)
            .execute(self.db())
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Stores an inbound event with its payload, pending and leased to `owner` (who handles it
    /// next); true only the first time the id is seen. Called before the platform is answered.
    pub async fn accept_event(&self, event_id: &str, source: &str, payload: &str, owner: &str, now: Millis, lease_ms: i64) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO processed_events (event_id, source, received_at, payload, state, lease_owner, lease_until, attempts) \
             VALUES ($1, $2, $3, $4, 'pending', $5, $6, 1) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event_id)
        .bind(source)
        .bind(now)
        .bind(payload)
        .bind(owner)
        .bind(now + lease_ms)
        .execute(self.db())
        .await
        .context("failed to record an inbound chat event")?
        .rows_affected();
        Ok(n == 1)
    }

    /// Marks an inbound event handled (or, with `error`, given up on).
    pub async fn finish_event(&self, event_id: &str, error: Option<&str>, now: Millis) -> Result<()> {
        sqlx::query("UPDATE processed_events SET state = $1, handled_at = $2, lease_owner = NULL, lease_until = NULL WHERE event_id = $3")
            .bind(if error.is_some() { "failed" } else { "handled" })
            .bind(now)
            .bind(event_id)
            .execute(self.db())
            .await?;
        if let Some(why) = error {
            self.audit(now, "deploybot", "inbound:failed", None, None, Some(&format!("{event_id}: {why}"))).await?;
        }
        Ok(())
    }

    /// Takes the lease of the oldest inbound event that was accepted but not handled (its
    /// handler crashed or its replica died); returns its id, payload and how many times it was taken.
    pub async fn claim_pending_event(&self, owner: &str, now: Millis, lease_ms: i64) -> Result<Option<(String, String, i64)>> {
        let lock_clause = match self.dialect {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "UPDATE processed_events SET lease_owner = $1, lease_until = $2, attempts = attempts + 1 WHERE event_id = (\
               SELECT event_id FROM processed_events WHERE state = 'pending' AND (lease_until IS NULL OR lease_until < $3) \
               ORDER BY received_at LIMIT 1{lock_clause}) \
             RETURNING event_id, payload, attempts"
        );
        let row = sqlx::query(&sql).bind(owner).bind(now + lease_ms).bind(now).fetch_optional(self.db()).await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get::<Option<String>, _>(1)?.unwrap_or_default(), r.try_get(2)?))).transpose()
    }

    /// Drops the leases of pending inbound events: with SQLite there is one replica, so at
    /// start-up every pending event is ours to handle.
    pub async fn release_event_leases(&self) -> Result<u64> {
        Ok(sqlx::query("UPDATE processed_events SET lease_owner = NULL, lease_until = NULL WHERE state = 'pending'")
            .execute(self.db())
            .await?
            .rows_affected())
    }

    // ----------------------------------------------------------------------------- alerts

    /// Inserts or updates an alert by fingerprint; returns its id and whether it is new.
    pub async fn upsert_alert(&self, a: &AlertRecord, now: Millis) -> Result<(i64, bool)> {
        let existing = sqlx::query("SELECT id FROM alerts WHERE fingerprint = $1").bind(&a.fingerprint).fetch_optional(self.db()).await?;
        if let Some(r) = existing {
            let id: i64 = r.try_get(0)?;
            sqlx::query("UPDATE alerts SET status = $1, ends_at = $2, annotations = $3, updated_at = $4 WHERE id = $5")
                .bind(&a.status)
                .bind(a.ends_at)
                .bind(&a.annotations)
                .bind(now)
                .bind(id)
                .execute(self.db())
                .await?;
            return Ok((id, false));
        }
        let row = sqlx::query(
            "INSERT INTO alerts (fingerprint, env, deployment_id, name, status, source, labels, annotations, starts_at, ends_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) ON CONFLICT (fingerprint) DO NOTHING RETURNING id",
        )
        .bind(&a.fingerprint)
        .bind(&a.env)
        .bind(a.deployment_id)
        .bind(&a.name)
        .bind(&a.status)
        .bind(&a.source)
        .bind(&a.labels)
        .bind(&a.annotations)
        .bind(a.starts_at)
        .bind(a.ends_at)
        .bind(now)
        .fetch_optional(self.db())
        .await?;
        match row {
            Some(r) => Ok((r.try_get(0)?, true)),
            None => Box::pin(self.upsert_alert(a, now)).await,
        }
    }

    /// The newest alert named `name` still firing in `env`: its fingerprint and when it started.
    pub async fn firing_alert(&self, env: &str, name: &str) -> Result<Option<(String, Millis)>> {
        let row = sqlx::query("SELECT fingerprint, starts_at FROM alerts WHERE env = $1 AND name = $2 AND status = 'firing' ORDER BY id DESC LIMIT 1")
            .bind(env)
            .bind(name)
            .fetch_optional(self.db())
            .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    // ----------------------------------------------------------------------------- schedules

    /// Creates or replaces a schedule by key.
    pub async fn put_schedule(&self, s: &Schedule, now: Millis) -> Result<()> {
        sqlx::query(
            "INSERT INTO schedules (kind, key, env, deployment_id, cron, next_run_at, enabled, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (key) DO UPDATE SET cron = excluded.cron, next_run_at = excluded.next_run_at, enabled = excluded.enabled",
        )
        .bind(&s.kind)
        .bind(&s.key)
        .bind(&s.env)
        .bind(s.deployment_id)
        .bind(&s.cron)
        .bind(s.next_run_at)
        .bind(s.enabled as i64)
        .bind(now)
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// Claims one due schedule for `owner` (each fires once across replicas).
    pub async fn claim_schedule(&self, owner: &str, now: Millis, lease_ms: i64) -> Result<Option<Schedule>> {
        let lock_clause = match self.dialect {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let row = sqlx::query(&format!(
            "UPDATE schedules SET lease_owner = $1, lease_until = $2 WHERE id = (SELECT id FROM schedules WHERE enabled = 1 AND next_run_at <= $3 \
             AND (lease_until IS NULL OR lease_until < $3) ORDER BY next_run_at LIMIT 1{lock_clause}) \
             RETURNING id, kind, key, env, deployment_id, cron, next_run_at, enabled"
        ))
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .fetch_optional(self.db())
        .await?;
        row.as_ref().map(schedule_from_row).transpose()
    }

    /// Marks a claimed schedule run: the next run, or disabled when it was one-off.
    pub async fn finish_schedule(&self, id: i64, next_run_at: Option<Millis>, now: Millis) -> Result<()> {
        sqlx::query("UPDATE schedules SET last_run_at = $1, next_run_at = COALESCE($2, next_run_at), enabled = $3, lease_owner = NULL, lease_until = NULL WHERE id = $4")
            .bind(now)
            .bind(next_run_at)
            .bind(next_run_at.is_some() as i64)
            .bind(id)
            .execute(self.db())
            .await?;
        Ok(())
    }

    pub async fn disable_schedule(&self, key: &str) -> Result<()> {
        sqlx::query("UPDATE schedules SET enabled = 0 WHERE key = $1").bind(key).execute(self.db()).await?;
        Ok(())
    }

    // ----------------------------------------------------------------------------- backups

    pub async fn record_backup(&self, b: &BackupRecord) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO backups (deployment_id, env, local_path, remote_uri, size_bytes, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(b.deployment_id)
        .bind(&b.env)
        .bind(&b.local_path)
        .bind(&b.remote_uri)
        .bind(b.size_bytes)
        .bind(b.created_at)
        .fetch_one(self.db())
        .await?;
        Ok(row.try_get(0)?)
    }

    pub async fn backup_for(&self, deployment_id: i64) -> Result<Option<BackupRecord>> {
        let row = sqlx::query("SELECT deployment_id, env, local_path, remote_uri, size_bytes, created_at FROM backups WHERE deployment_id = $1 ORDER BY id DESC LIMIT 1")
            .bind(deployment_id)
            .fetch_optional(self.db())
            .await?;
        row.map(|r| {
            Ok(BackupRecord {
                deployment_id: r.try_get("deployment_id")?,
                env: r.try_get("env")?,
                local_path: r.try_get("local_path")?,
                remote_uri: r.try_get("remote_uri")?,
                size_bytes: r.try_get("size_bytes")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    // ----------------------------------------------------------------------------- audit

    pub async fn audit(&self, at: Millis, actor: &str, action: &str, env: Option<&str>, deployment_id: Option<i64>, detail: Option<&str>) -> Result<()> {
        audit_in(self.db(), at, actor, action, env, deployment_id, detail).await
    }

    /// What one person did (or was refused), oldest first: time, action, detail.
    pub async fn audit_by(&self, actor: &str) -> Result<Vec<(Millis, String, Option<String>)>> {
        let rows = sqlx::query("SELECT at, action, detail FROM audit_log WHERE actor = $1 ORDER BY id").bind(actor).fetch_all(self.db()).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    pub async fn audit_log(&self, deployment_id: i64) -> Result<Vec<(Millis, String, String)>> {
        let rows = sqlx::query("SELECT at, actor, action FROM audit_log WHERE deployment_id = $1 ORDER BY id")
            .bind(deployment_id)
            .fetch_all(self.db())
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    // ----------------------------------------------------------------------------- history

    /// Finished deployments (those that ran), newest first, in the runbook's template fields.
    pub async fn history(&self, env: Option<&str>, limit: i64, tz: chrono_tz::Tz) -> Result<Vec<HistoryEntry>> {
        let sql = history_sql(env.is_some());
        let mut q = sqlx::query(&sql).bind(limit);
        if let Some(e) = env {
            q = q.bind(e.to_string());
        }
        let deployments: Vec<Deployment> = q.fetch_all(self.db()).await?.iter().map(deployment_from_row).collect::<Result<_>>()?;
        if deployments.is_empty() {
            return Ok(Vec::new());
        }
        // What each entry shows besides its row, read for all the entries at once: five queries
        // for a page of history, not five per entry (each a round trip to PostgreSQL).
        let ids: Vec<i64> = deployments.iter().map(|d| d.id).collect();
        let list = placeholders(ids.len());
        let mut approvers: HashMap<i64, Vec<String>> = HashMap::new();
        let sql = format!("SELECT deployment_id, user_name FROM approvals WHERE deployment_id IN ({list}) AND withdrawn_at IS NULL AND vote <> 'reject' ORDER BY deployment_id, created_at");
        for r in self.rows_by_ids(&sql, &ids).await? {
            approvers.entry(r.try_get(0)?).or_default().push(r.try_get(1)?);
        }
        let mut rollbacks: HashMap<i64, Vec<Deployment>> = HashMap::new();
        let sql = rollbacks_of_sql(ids.len());
        for r in self.rows_by_ids(&sql, &ids).await? {
            let d = deployment_from_row(&r)?;
            rollbacks.entry(d.rollback_of.unwrap_or_default()).or_default().push(d);
        }
        let mut previous: HashMap<i64, String> = HashMap::new();
        let sql = format!("SELECT deployment_id, from_version FROM deployment_services WHERE deployment_id IN ({list}) AND from_version IS NOT NULL ORDER BY deployment_id, service");
        for r in self.rows_by_ids(&sql, &ids).await? {
            previous.entry(r.try_get(0)?).or_insert(r.try_get(1)?);
        }
        // The summary line the migrations step recorded (`Migrations: applied 2 (…)`), if any.
        let mut migrations: HashMap<i64, String> = HashMap::new();
        let sql = format!(
            "SELECT deployment_id, detail FROM deployment_steps WHERE deployment_id IN ({list}) AND name = 'migrations' AND state = 'succeeded' ORDER BY deployment_id, id DESC"
        );
        for r in self.rows_by_ids(&sql, &ids).await? {
            let id: i64 = r.try_get(0)?;
            if migrations.contains_key(&id) {
                continue;
            }
            if let Some(line) = r.try_get::<Option<String>, _>(1)?.and_then(|d| d.lines().next().and_then(|l| l.strip_prefix("Migrations: ")).map(str::to_string)) {
                migrations.insert(id, line);
            }
        }
        let mut versions: Vec<&str> = deployments.iter().map(|d| d.version.as_str()).collect();
        versions.sort_unstable();
        versions.dedup();
        let images = self.released_images_lines(&versions).await?;
        let mut out = Vec::with_capacity(deployments.len());
        for d in deployments {
            let rolled_back_by = rollbacks.remove(&d.id).unwrap_or_default();
            let mut entry = history::entry(&d, approvers.remove(&d.id).unwrap_or_default(), &rolled_back_by, previous.remove(&d.id), tz);
            entry.migrations = migrations.remove(&d.id);
            entry.images = images.get(&d.version).cloned();
            out.push(entry);
        }
        Ok(out)
    }

    /// The rows of `sql`, whose parameters `$1`…`$n` are `ids`.
    async fn rows_by_ids(&self, sql: &str, ids: &[i64]) -> Result<Vec<AnyRow>> {
        let mut q = sqlx::query(sql);
        for id in ids {
            q = q.bind(*id);
        }
        Ok(q.fetch_all(self.db()).await?)
    }

    /// The database's plans (SQLite `EXPLAIN QUERY PLAN`, PostgreSQL `EXPLAIN`, which plans an
    /// UPDATE without running it) of the queries behind `/history`, `/stats` and the job
    /// runner's claim, by name, for the tests and the
    /// benchmark that check they search indexes rather than scan the history.
    pub async fn query_plans(&self, env: &str, since: Millis) -> Result<Vec<(&'static str, String)>> {
        let prefix = match self.dialect {
            Dialect::Sqlite => "EXPLAIN QUERY PLAN ",
            Dialect::Postgres => "EXPLAIN ",
        };
        let mut queries: Vec<(&'static str, String, Vec<Param>)> = vec![
            ("history --env", history_sql(true), vec![Param::Int(20), Param::Text(env.to_string())]),
            ("history", history_sql(false), vec![Param::Int(20)]),
            ("history: rolled back by", rollbacks_of_sql(1), vec![Param::Int(1)]),
            ("claim_job", claim_sql(self.dialect), vec![Param::Text("explain".into()), Param::Int(since), Param::Int(since), Param::Int(16)]),
        ];
        queries.extend(Store::stats_queries(self.dialect, env, since));
        let mut out = Vec::with_capacity(queries.len());
        for (name, sql, params) in queries {
            let explain = format!("{prefix}{sql}");
            let mut q = sqlx::query(&explain);
            for p in params {
                q = match p {
                    Param::Int(v) => q.bind(v),
                    Param::Text(v) => q.bind(v),
                };
            }
            let rows = q.fetch_all(self.db()).await.with_context(|| format!("cannot explain the {name} query"))?;
            let column = match self.dialect {
                Dialect::Sqlite => 3,
                Dialect::Postgres => 0,
            };
            let lines: Vec<String> = rows.iter().map(|r| r.try_get::<String, _>(column)).collect::<Result<_, _>>()?;
            out.push((name, lines.join("\n")));
        }
        Ok(out)
    }
}

/// Records an audit entry through `conn`: a transaction's connection, or [`Store::db`].
async fn audit_in<'c>(
    conn: impl Executor<'c, Database = sqlx::Any>,
    at: Millis,
    actor: &str,
    action: &str,
    env: Option<&str>,
    deployment_id: Option<i64>,
    detail: Option<&str>,
) -> Result<()> {
    sqlx::query("INSERT INTO audit_log (at, actor, action, env, deployment_id, detail) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(at)
        .bind(actor)
        .bind(action)
        .bind(env.map(str::to_string))
        .bind(deployment_id)
        .bind(detail.map(crate::secrets::redact))
        .execute(conn)
        .await
        .context("failed to write the audit log")?;
    Ok(())
}

/// Finished deployments newest first: a backward range of `deployments_env_finished` (or
/// `deployments_finished`) that stops after `$1` rows.
fn history_sql(by_env: bool) -> String {
    let env = if by_env { " AND env = $2" } else { "" };
    format!(
        "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE started_at IS NOT NULL AND finished_at IS NOT NULL{env} \
         ORDER BY finished_at DESC, id DESC LIMIT $1"
    )
}

fn claim_sql(dialect: Dialect) -> String {
    let lock_clause = match dialect {
        Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        Dialect::Sqlite => "",
    };
    format!(
        "UPDATE deployments SET lease_owner = $1, lease_until = $2, rev = rev + 1 WHERE id IN (\
           SELECT id FROM deployments WHERE {CLAIMABLE} \
             AND (state <> 'scheduled' OR scheduled_for <= $3) \
             AND (lease_until IS NULL OR lease_until < $3) \
           ORDER BY id LIMIT $4{lock_clause}) \
         RETURNING {DEPLOYMENT_COLUMNS}"
    )
}

/// The states a job can be claimed in: the predicate of the partial index `deployments_claimable`,
/// written exactly as there so both planners can prove the index applies.
const CLAIMABLE: &str = "state IN ('queued', 'scheduled', 'running', 'verifying', 'monitoring', 'rolling_back')";

#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    pub fingerprint: String,
    pub env: Option<String>,
    pub deployment_id: Option<i64>,
    pub name: String,
    pub status: String,
    pub source: String,
    pub labels: String,
    pub annotations: String,
    pub starts_at: Millis,
    pub ends_at: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub id: i64,
    pub kind: String,
    pub key: String,
    pub env: Option<String>,
    pub deployment_id: Option<i64>,
    pub cron: Option<String>,
    pub next_run_at: Millis,
    pub enabled: bool,
}

fn schedule_from_row(r: &AnyRow) -> Result<Schedule> {
    Ok(Schedule {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        key: r.try_get("key")?,
        env: r.try_get("env")?,
        deployment_id: r.try_get("deployment_id")?,
        cron: r.try_get("cron")?,
        next_run_at: r.try_get("next_run_at")?,
        enabled: r.try_get::<i64, _>("enabled")? != 0,
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackupRecord {
    pub deployment_id: i64,
    pub env: String,
    pub local_path: Option<String>,
    pub remote_uri: Option<String>,
    pub size_bytes: i64,
    pub created_at: Millis,
}

pub(super) fn deployment_from_row(r: &AnyRow) -> Result<Deployment> {
    let services: String = r.try_get("services")?;
    let state: String = r.try_get("state")?;
    let kind: String = r.try_get("kind")?;
    Ok(Deployment {
        id: r.try_get("id")?,
        env: r.try_get("env")?,
        kind: DeploymentKind::from_str(&kind).map_err(anyhow::Error::msg)?,
        version: r.try_get("version")?,
        services: serde_json::from_str(&services).context("deployments.services is not a JSON list")?,
        state: DeploymentState::from_str(&state).map_err(anyhow::Error::msg)?,
        requested_by: r.try_get("requested_by")?,
        requested_by_name: r.try_get("requested_by_name")?,
        channel: r.try_get("channel")?,
        hotfix_reason: r.try_get("hotfix_reason")?,
        scheduled_for: r.try_get("scheduled_for")?,
        rollback_of: r.try_get("rollback_of")?,
        with_db: r.try_get::<i64, _>("with_db")? != 0,
        approvals_required: r.try_get("approvals_required")?,
        approval_expires_at: r.try_get("approval_expires_at")?,
        current_step: r.try_get("current_step")?,
        cancel_requested_by: r.try_get("cancel_requested_by")?,
        issues: r.try_get("issues")?,
        error: r.try_get("error")?,
        lease_owner: r.try_get("lease_owner")?,
        lease_until: r.try_get("lease_until")?,
        rev: r.try_get("rev")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        failed_at: r.try_get("failed_at")?,
        finished_at: r.try_get("finished_at")?,
        updated_at: r.try_get("updated_at")?,
        request_event: r.try_get("request_event")?,
        resolution: r.try_get("resolution")?,
    })
}

fn step_from_row(r: &AnyRow) -> Result<Step> {
    let state: String = r.try_get("state")?;
    Ok(Step {
        id: r.try_get("id")?,
        deployment_id: r.try_get("deployment_id")?,
        seq: r.try_get("seq")?,
        name: r.try_get("name")?,
        attempt: r.try_get("attempt")?,
        state: StepState::from_str(&state).map_err(anyhow::Error::msg)?,
        detail: r.try_get("detail")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

fn lock_from_row(r: &AnyRow) -> Result<Lock> {
    let kind: String = r.try_get("kind")?;
    Ok(Lock {
        env: r.try_get("env")?,
        kind: if kind == "manual" { LockKind::Manual } else { LockKind::Deployment },
        holder: r.try_get("holder")?,
        reason: r.try_get("reason")?,
        deployment_id: r.try_get("deployment_id")?,
        created_at: r.try_get("created_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::{audit_in, is_unavailable, writes, Store};

    async fn file_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("bot.db").display())).await.unwrap();
        (dir, store)
    }

    async fn actions(store: &Store) -> Vec<String> {
        store.audit_by("alice").await.unwrap().into_iter().map(|(_, action, _)| action).collect()
    }

    #[tokio::test]
    async fn a_transaction_dropped_uncommitted_leaves_nothing_and_the_writer_serves_the_next() {
        let (_dir, store) = file_store().await;
        let mut tx = store.begin().await.unwrap();
        audit_in(&mut *tx, 1, "alice", "abandoned", None, None, None).await.unwrap();
        drop(tx);
        let mut tx = store.begin().await.unwrap();
        audit_in(&mut *tx, 2, "alice", "kept", None, None, None).await.unwrap();
        tx.commit().await.unwrap();
        store.audit(3, "alice", "after", None, None, None).await.unwrap();
        // Read through the reader connections: what the writer committed, and nothing else.
        assert_eq!(actions(&store).await, ["kept", "after"]);
    }

    #[tokio::test]
    async fn a_writer_whose_task_is_aborted_mid_transaction_is_rolled_back_and_free() {
        let (_dir, store) = file_store().await;
        let (began, wrote) = tokio::sync::oneshot::channel();
        let task = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                audit_in(&mut *tx, 1, "alice", "aborted", None, None, None).await.unwrap();
                began.send(()).unwrap();
                std::future::pending::<()>().await;
                tx.commit().await.unwrap();
            })
        };
        wrote.await.unwrap();
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        let mut tx = tokio::time::timeout(std::time::Duration::from_secs(5), store.begin()).await.expect("the writer was freed").unwrap();
        audit_in(&mut *tx, 2, "alice", "next", None, None, None).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(actions(&store).await, ["next"]);
    }

    #[tokio::test]
    async fn a_closed_store_refuses_reads_and_writes_as_unavailable() {
        let (_dir, store) = file_store().await;
        store.audit(1, "alice", "before", None, None, None).await.unwrap();
        store.close().await;
        let read = store.audit_by("alice").await.unwrap_err();
        let write = store.audit(2, "alice", "after", None, None, None).await.unwrap_err();
        assert!(is_unavailable(&read), "{read:#}");
        assert!(is_unavailable(&write), "{write:#}");
    }

    #[test]
    fn statements_that_may_write_go_to_the_writer() {
        for sql in [
            "INSERT INTO audit_log (at) VALUES ($1)",
            "  UPDATE deployments SET state = $1",
            "\n\nDELETE FROM locks WHERE env = $1",
            "WITH ready AS (SELECT id FROM chat_messages) UPDATE chat_messages SET claimed_by = $1 WHERE id IN (SELECT id FROM ready)",
            "ANALYZE",
            "CREATE TABLE t (x INTEGER)",
        ] {
            assert!(writes(sql), "{sql}");
        }
        for sql in ["SELECT 1", " select id from deployments", "WITH recent AS (SELECT id FROM deployments) SELECT * FROM recent", "EXPLAIN QUERY PLAN UPDATE deployments SET x = 1"] {
            assert!(!writes(sql), "{sql}");
        }
    }
}
