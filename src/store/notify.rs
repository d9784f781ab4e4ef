//! The notifications table (`notifications`): what `[[notify]]` and `[bot] history_repo` are to
//! be told about a deployment, written when the deployment reaches a state and delivered by the
//! notifier task of any replica (`engine::notify`).
//!
//! *Invariant*: a key is written once (`ON CONFLICT DO NOTHING`), a delivered row is never
//! claimed again, and a row is delivered by one replica at a time (a claim with a lease).

use anyhow::Result;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::queue::Queue;
use super::{Dialect, Store};
use crate::model::Millis;

/// A notification to write.
#[derive(Debug, Clone)]
pub struct NewNotification {
    /// `<deployment>:<notifier>:<event>`.
    pub key: String,
    pub deployment_id: i64,
    /// The index in `[[notify]]`, or `history`.
    pub notifier: String,
    pub kind: String,
    pub event: String,
    /// JSON, already redacted.
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredNotification {
    pub id: i64,
    pub key: String,
    pub deployment_id: i64,
    pub notifier: String,
    pub kind: String,
    pub event: String,
    pub payload: String,
    pub state: String,
    pub attempts: i64,
    pub result: Option<String>,
    pub last_error: Option<String>,
    pub created_at: Millis,
    pub delivered_at: Option<Millis>,
}

const COLUMNS: &str = "id, key, deployment_id, notifier, kind, event, payload, state, attempts, result, last_error, created_at, delivered_at";

fn from_row(r: &AnyRow) -> Result<StoredNotification> {
    Ok(StoredNotification {
        id: r.try_get("id")?,
        key: r.try_get("key")?,
        deployment_id: r.try_get("deployment_id")?,
        notifier: r.try_get("notifier")?,
        kind: r.try_get("kind")?,
        event: r.try_get("event")?,
        payload: r.try_get("payload")?,
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        result: r.try_get("result")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        delivered_at: r.try_get("delivered_at")?,
    })
}

impl Store {
    /// Writes a notification under its key; false when the key was written before.
    pub async fn notify_put(&self, n: &NewNotification, now: Millis) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO notifications (key, deployment_id, notifier, kind, event, payload, state, attempts, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7) ON CONFLICT (key) DO NOTHING RETURNING id",
        )
        .bind(&n.key)
        .bind(n.deployment_id)
        .bind(&n.notifier)
        .bind(&n.kind)
        .bind(&n.event)
        .bind(crate::secrets::redact(&n.payload))
        .bind(now)
        .fetch_optional(self.db())
        .await?;
        Ok(inserted.is_some())
    }

    /// Claims up to `limit` pending notifications that are due and held by nobody, oldest first.
    pub async fn notify_claim(&self, owner: &str, now: Millis, lease_ms: i64, limit: i64) -> Result<Vec<StoredNotification>> {
        let lock_clause = match self.dialect {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "WITH ready AS (SELECT id FROM notifications WHERE state = 'pending' AND next_attempt_at <= $3 \
               AND (claimed_until IS NULL OR claimed_until < $3) ORDER BY id LIMIT $4{lock_clause}) \
             UPDATE notifications SET claimed_by = $1, claimed_until = $2 \
             WHERE id IN (SELECT id FROM ready) AND state = 'pending' AND (claimed_until IS NULL OR claimed_until < $3) \
             RETURNING {COLUMNS}"
        );
        let mut claimed = sqlx::query(&sql)
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .bind(limit)
            .fetch_all(self.db())
            .await?
            .iter()
            .map(from_row)
            .collect::<Result<Vec<_>>>()?;
        claimed.sort_by_key(|n| n.id);
        Ok(claimed)
    }

    /// The receiver accepted it (with what later rows need, if anything); only by the claimer.
    pub async fn notify_mark_delivered(&self, id: i64, owner: &str, result: Option<&str>, now: Millis) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE notifications SET state = 'delivered', result = $1, delivered_at = $2, claimed_by = NULL, claimed_until = NULL \
             WHERE id = $3 AND claimed_by = $4 AND state = 'pending'",
        )
        .bind(result)
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(self.db())
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// A delivery failed: retried at `retry_at`, or given up (`failed`) when there is none.
    pub async fn notify_mark_failed(&self, id: i64, error: &str, retry_at: Option<Millis>, now: Millis) -> Result<()> {
        self.queue_failure(Queue::Notifications, id, error, retry_at, now).await
    }

    /// Hands a claimed notification back untried (it waits for an earlier one), due at `retry_at`.
    pub async fn notify_release(&self, id: i64, owner: &str, retry_at: Millis) -> Result<()> {
        self.queue_release(Queue::Notifications, id, owner, retry_at).await
    }

    pub async fn notification(&self, key: &str) -> Result<Option<StoredNotification>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM notifications WHERE key = $1")).bind(key).fetch_optional(self.db()).await?;
        row.as_ref().map(from_row).transpose()
    }

    /// A deployment's notifications, in the order they were written.
    pub async fn notifications_of(&self, deployment_id: i64) -> Result<Vec<StoredNotification>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM notifications WHERE deployment_id = $1 ORDER BY id")).bind(deployment_id).fetch_all(self.db()).await?;
        rows.iter().map(from_row).collect()
    }

    /// How many notifications are still to be delivered (pending), for tests and the demo.
    pub async fn notifications_pending(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM notifications WHERE state = 'pending'").fetch_one(self.db()).await?.try_get(0)?)
    }
}
