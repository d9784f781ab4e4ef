//! What the two delivery queues share, the outbox (`chat_messages`) and the notifications:
//! rows claimed with a lease by one replica, then handed back untried, or failed (pending again
//! at a later time, or given up).

use anyhow::Result;

use super::Store;
use crate::model::Millis;

/// A table whose rows are claimed (`claimed_by`, `claimed_until`) and retried (`attempts`,
/// `last_error`, `next_attempt_at`).
#[derive(Debug, Clone, Copy)]
pub(super) enum Queue {
    ChatMessages,
    Notifications,
}

impl Queue {
    fn table(self) -> &'static str {
        match self {
            Queue::ChatMessages => "chat_messages",
            Queue::Notifications => "notifications",
        }
    }
}

impl Store {
    /// Hands a claimed row back untried, due again at `retry_at`; only by its claimer.
    pub(super) async fn queue_release(&self, queue: Queue, id: i64, owner: &str, retry_at: Millis) -> Result<()> {
        sqlx::query(&format!("UPDATE {} SET next_attempt_at = $1, claimed_by = NULL, claimed_until = NULL WHERE id = $2 AND claimed_by = $3", queue.table()))
            .bind(retry_at)
            .bind(id)
            .bind(owner)
            .execute(self.db())
            .await?;
        Ok(())
    }

    /// A failed delivery: pending again at `retry_at`, or given up (`failed`) when there is none.
    /// The error is kept redacted.
    pub(super) async fn queue_failure(&self, queue: Queue, id: i64, error: &str, retry_at: Option<Millis>, now: Millis) -> Result<()> {
        let state = if retry_at.is_none() { "state = 'failed', " } else { "" };
        // A notification always has a next attempt time (its column is NOT NULL): a given-up one
        // keeps `now`. The outbox has an update time of its own.
        let (next, touched) = match queue {
            Queue::ChatMessages => (retry_at, ", updated_at = $4"),
            Queue::Notifications => (Some(retry_at.unwrap_or(now)), ""),
        };
        let sql = format!(
            "UPDATE {} SET {state}attempts = attempts + 1, last_error = $1, next_attempt_at = $2, claimed_by = NULL, claimed_until = NULL{touched} WHERE id = $3",
            queue.table()
        );
        let mut q = sqlx::query(&sql).bind(crate::secrets::redact(error)).bind(next).bind(id);
        if !touched.is_empty() {
            q = q.bind(now);
        }
        q.execute(self.db()).await?;
        Ok(())
    }
}
