//! The chat outbox table (`chat_messages`): every message the bot sends is written here first,
//! and the delivery task of any replica claims what is ready to go.
//!
//! *Invariant*: the row is the truth. A writer only changes the text (bumping `rev`); a delivery
//! marks a message posted only if the `rev` it sent is still the stored one, and never replaces
//! a platform id once one is recorded (later deliveries are edits).

use anyhow::Result;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::queue::Queue;
use super::{Dialect, Store};
use crate::model::Millis;

/// A message as the outbox receives it.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub key: String,
    pub channel: String,
    pub thread_key: Option<String>,
    pub deployment_id: Option<i64>,
    pub alert_id: Option<i64>,
    pub purpose: String,
    pub body: String,
    /// The only person who sees it (an ephemeral reply); `None` for a channel message.
    pub recipient: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub id: i64,
    pub key: String,
    pub channel: String,
    pub thread_key: Option<String>,
    pub deployment_id: Option<i64>,
    pub alert_id: Option<i64>,
    pub purpose: String,
    pub body: String,
    pub platform_id: Option<String>,
    pub state: String,
    pub attempts: i64,
    pub recipient: Option<String>,
    /// Bumped by every new text.
    pub rev: i64,
    pub created_at: Millis,
    /// When the platform last accepted it.
    pub delivered_at: Option<Millis>,
}

const MESSAGE_COLUMNS: &str =
    "id, key, channel, thread_key, deployment_id, alert_id, purpose, body, platform_id, state, attempts, recipient, rev, created_at, delivered_at";

/// The key of deployment `id`'s progress message (`progress_behind` builds the same in SQL).
pub fn progress_key(id: i64) -> String {
    format!("deployment:{id}:progress")
}

/// What one transition (`deployments.rev`) outweighs in a progress render's `source_rev`: its
/// steps (up to 999) and those finished (up to 999).
const PROGRESS_REV_WEIGHT: i64 = 1_000_000;

/// How far a deployment had got when its progress message was rendered: its transitions, then its
/// steps, then those finished (all only ever grow), so a render from an earlier point never
/// replaces a later one (`outbox_put_as_of`).
pub fn progress_as_of(rev: i64, steps: usize, finished: usize) -> i64 {
    rev * PROGRESS_REV_WEIGHT + (steps.min(999) as i64) * 1000 + finished.min(999) as i64
}

fn message_from_row(r: &AnyRow) -> Result<StoredMessage> {
    Ok(StoredMessage {
        id: r.try_get("id")?,
        key: r.try_get("key")?,
        channel: r.try_get("channel")?,
        thread_key: r.try_get("thread_key")?,
        deployment_id: r.try_get("deployment_id")?,
        alert_id: r.try_get("alert_id")?,
        purpose: r.try_get("purpose")?,
        body: r.try_get("body")?,
        platform_id: r.try_get("platform_id")?,
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        recipient: r.try_get("recipient")?,
        rev: r.try_get("rev")?,
        created_at: r.try_get("created_at")?,
        delivered_at: r.try_get("delivered_at")?,
    })
}

/// A message blocks later posts in its channel while it waits to be posted itself; a reply whose
/// thread is not posted yet does not (it waits for its thread, which may come later).
const BLOCKS_LATER_POSTS: &str = "p.state = 'pending' AND p.platform_id IS NULL AND p.recipient IS NULL \
    AND (p.thread_key IS NULL OR EXISTS (SELECT 1 FROM chat_messages pt WHERE pt.key = p.thread_key AND pt.platform_id IS NOT NULL))";

impl Store {
    /// Writes a message to the outbox under an idempotency key; returns its id and whether it is
    /// new. An existing key keeps its text (see [`Store::outbox_update_body`]).
    pub async fn outbox_put(&self, m: &OutboxMessage, now: Millis) -> Result<(i64, bool)> {
        let inserted = sqlx::query(
            "INSERT INTO chat_messages (key, channel, thread_key, deployment_id, alert_id, purpose, body, recipient, state, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $9) ON CONFLICT (key) DO NOTHING RETURNING id",
        )
        .bind(&m.key)
        .bind(&m.channel)
        .bind(&m.thread_key)
        .bind(m.deployment_id)
        .bind(m.alert_id)
        .bind(&m.purpose)
        .bind(crate::secrets::redact(&m.body))
        .bind(&m.recipient)
        .bind(now)
        .fetch_optional(self.db())
        .await?;
        if let Some(r) = inserted {
            return Ok((r.try_get(0)?, true));
        }
        let id: i64 = sqlx::query("SELECT id FROM chat_messages WHERE key = $1").bind(&m.key).fetch_one(self.db()).await?.try_get(0)?;
        Ok((id, false))
    }

    /// Writes a rendering of something that only moves forward (a deployment's progress message),
    /// `as_of` saying how far it had got: new, or a new text for the key unless the stored one was
    /// rendered from a later state. Returns whether anything changed.
    pub async fn outbox_put_as_of(&self, m: &OutboxMessage, as_of: i64, now: Millis) -> Result<bool> {
        self.outbox_upsert(m, Some(as_of), now).await
    }

    /// New, or a new text for the key (an edit to make: pending again with the next `rev`) when
    /// the text differs, the message is not private, and — with `as_of` — the stored text was not
    /// rendered from a later state. One statement; returns whether anything changed. A message
    /// not posted yet keeps its count of attempts: one that may have gone is looked for before
    /// it is posted again ([`crate::chat::ChatPlatform::find_post`]).
    pub async fn outbox_upsert(&self, m: &OutboxMessage, as_of: Option<i64>, now: Millis) -> Result<bool> {
        let changed = sqlx::query(
            "INSERT INTO chat_messages (key, channel, thread_key, deployment_id, alert_id, purpose, body, recipient, state, created_at, updated_at, source_rev) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $9, $10) \
             ON CONFLICT (key) DO UPDATE SET body = excluded.body, rev = chat_messages.rev + 1, state = 'pending', next_attempt_at = NULL, \
             attempts = CASE WHEN chat_messages.platform_id IS NULL THEN chat_messages.attempts ELSE 0 END, \
             updated_at = excluded.updated_at, source_rev = COALESCE(excluded.source_rev, chat_messages.source_rev) \
             WHERE chat_messages.body <> excluded.body AND chat_messages.recipient IS NULL \
             AND (excluded.source_rev IS NULL OR chat_messages.source_rev IS NULL OR chat_messages.source_rev <= excluded.source_rev) \
             RETURNING id",
        )
        .bind(&m.key)
        .bind(&m.channel)
        .bind(&m.thread_key)
        .bind(m.deployment_id)
        .bind(m.alert_id)
        .bind(&m.purpose)
        .bind(crate::secrets::redact(&m.body))
        .bind(&m.recipient)
        .bind(now)
        .bind(as_of)
        .fetch_optional(self.db())
        .await?;
        Ok(changed.is_some())
    }

    /// Gives a message a new text (an edit to make): it becomes pending again with the next
    /// `rev`. The same text again changes nothing; returns whether the text changed.
    pub async fn outbox_update_body(&self, key: &str, body: &str, now: Millis) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE chat_messages SET body = $1, rev = rev + 1, state = 'pending', next_attempt_at = NULL, \
               attempts = CASE WHEN platform_id IS NULL THEN attempts ELSE 0 END, updated_at = $2 \
             WHERE key = $3 AND body <> $1 AND recipient IS NULL",
        )
        .bind(crate::secrets::redact(body))
        .bind(now)
        .bind(key)
        .execute(self.db())
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Claims up to `limit` messages that may be delivered now, for `lease_ms`: never delivered
    /// first (oldest first), then the edits whose last delivery is oldest.
    /// A message is ready when it is pending and due, nobody else holds it, its thread (if any)
    /// is posted, and — if it still has to be posted — no earlier message of its channel is
    /// waiting to be posted: posts reach a channel in the order they were written, whichever
    /// replica delivers them. Edits and private replies wait for nothing but their turn.
    /// A claim that lapsed (its replica died, or hung, mid-round: every way out of a round
    /// clears it) counts as an attempt, so the next deliverer knows the message may have gone.
    pub async fn outbox_claim(&self, owner: &str, now: Millis, lease_ms: i64, limit: i64) -> Result<Vec<StoredMessage>> {
        let lock_clause = match self.dialect {
            Dialect::Postgres => " FOR UPDATE OF m SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        // The candidates are chosen (and locked) once, in a CTE: a locking subquery inside the
        // UPDATE's WHERE may be re-run by the planner, and a re-run with SKIP LOCKED picks other rows.
        let sql = format!(
            "WITH ready AS (\
               SELECT m.id FROM chat_messages m WHERE m.state = 'pending' \
                 AND (m.next_attempt_at IS NULL OR m.next_attempt_at <= $3) \
                 AND (m.claimed_until IS NULL OR m.claimed_until < $3) \
                 AND (m.thread_key IS NULL OR m.platform_id IS NOT NULL OR m.recipient IS NOT NULL \
                      OR EXISTS (SELECT 1 FROM chat_messages t WHERE t.key = m.thread_key AND t.platform_id IS NOT NULL)) \
                 AND (m.platform_id IS NOT NULL OR m.recipient IS NOT NULL \
                      OR NOT EXISTS (SELECT 1 FROM chat_messages p WHERE p.channel = m.channel AND p.id < m.id AND {BLOCKS_LATER_POSTS})) \
               ORDER BY COALESCE(m.delivered_at, 0), m.id LIMIT $4{lock_clause}) \
             UPDATE chat_messages SET claimed_by = $1, claimed_until = $2, \
               attempts = attempts + CASE WHEN claimed_until IS NULL THEN 0 ELSE 1 END \
             WHERE id IN (SELECT id FROM ready) AND state = 'pending' AND (claimed_until IS NULL OR claimed_until < $3) \
             RETURNING {MESSAGE_COLUMNS}"
        );
        let mut claimed = sqlx::query(&sql)
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .bind(limit)
            .fetch_all(self.db())
            .await?
            .iter()
            .map(message_from_row)
            .collect::<Result<Vec<_>>>()?;
        // RETURNING gives no order. Within a round, what was delivered longest ago goes first,
        // so one message edited every second cannot keep another's edit from its channel's turn.
        claimed.sort_by_key(|m| (m.delivered_at.unwrap_or(0), m.id));
        Ok(claimed)
    }

    /// Records that the platform accepted revision `rev` of the message (with its id, for a post
    /// or reply). It is posted unless a newer text was written meanwhile, which stays pending
    /// and goes out as an edit. A platform id once recorded is kept.
    pub async fn outbox_mark_posted(&self, id: i64, platform_id: Option<&str>, rev: i64, now: Millis) -> Result<()> {
        sqlx::query(
            "UPDATE chat_messages SET platform_id = COALESCE(platform_id, $1), \
               state = CASE WHEN rev = $2 THEN 'posted' ELSE 'pending' END, \
               attempts = 0, next_attempt_at = NULL, last_error = NULL, claimed_by = NULL, claimed_until = NULL, delivered_at = $3, updated_at = $3 \
             WHERE id = $4",
        )
        .bind(platform_id)
        .bind(rev)
        .bind(now)
        .bind(id)
        .execute(self.db())
        .await?;
        Ok(())
    }

    /// A delivery failed: retried no sooner than `retry_at`.
    pub async fn outbox_mark_failed(&self, id: i64, error: &str, retry_at: Millis, now: Millis) -> Result<()> {
        self.queue_failure(Queue::ChatMessages, id, error, Some(retry_at), now).await
    }

    /// The platform will never accept this message: it stops being retried (and stops holding
    /// back the posts after it in its channel).
    pub async fn outbox_give_up(&self, id: i64, error: &str, now: Millis) -> Result<()> {
        self.queue_failure(Queue::ChatMessages, id, error, None, now).await
    }

    /// Hands a claimed message back untried (held by pacing or a rate limit), due again at `retry_at`.
    pub async fn outbox_release(&self, id: i64, owner: &str, retry_at: Millis) -> Result<()> {
        self.queue_release(Queue::ChatMessages, id, owner, retry_at).await
    }

    /// How many pending messages some replica is delivering right now.
    pub async fn outbox_in_flight(&self, now: Millis) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM chat_messages WHERE state = 'pending' AND claimed_until IS NOT NULL AND claimed_until >= $1")
            .bind(now)
            .fetch_one(self.db())
            .await?
            .try_get(0)?)
    }

    pub async fn outbox_message(&self, key: &str) -> Result<Option<StoredMessage>> {
        let row = sqlx::query(&format!("SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE key = $1")).bind(key).fetch_optional(self.db()).await?;
        row.as_ref().map(message_from_row).transpose()
    }

    /// Every message about a deployment, in the order it was written.
    pub async fn outbox_messages_of(&self, deployment_id: i64) -> Result<Vec<StoredMessage>> {
        sqlx::query(&format!("SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE deployment_id = $1 ORDER BY id"))
            .bind(deployment_id)
            .fetch_all(self.db())
            .await?
            .iter()
            .map(message_from_row)
            .collect()
    }

    /// The message with this platform id in this channel (e.g. the message someone reacted to).
    pub async fn message_by_platform_id(&self, channel: &str, platform_id: &str) -> Result<Option<StoredMessage>> {
        let row = sqlx::query(&format!("SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE channel = $1 AND platform_id = $2"))
            .bind(channel)
            .bind(platform_id)
            .fetch_optional(self.db())
            .await?;
        row.as_ref().map(message_from_row).transpose()
    }

    /// The message with this platform id in any channel (console ids are unique).
    pub async fn message_by_platform_id_any(&self, platform_id: &str) -> Result<Option<StoredMessage>> {
        let row = sqlx::query(&format!("SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE platform_id = $1 ORDER BY id LIMIT 1"))
            .bind(platform_id)
            .fetch_optional(self.db())
            .await?;
        row.as_ref().map(message_from_row).transpose()
    }

    /// How many messages wait to be posted or edited (for `/metrics`).
    pub async fn outbox_pending(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM chat_messages WHERE state = 'pending'").fetch_one(self.db()).await?.try_get(0)?)
    }

    /// Deployments that ended at or after `since` whose progress message was last rendered before
    /// their last change (see [`progress_as_of`]): the replica that ended them died, or lost the
    /// store, before rendering the end. Each as (id, rev).
    pub async fn progress_behind(&self, since: Millis) -> Result<Vec<(i64, i64)>> {
        let rows = sqlx::query(&format!(
            "SELECT d.id, d.rev FROM deployments d JOIN chat_messages m ON m.key = 'deployment:' || d.id || ':progress' \
             WHERE d.finished_at >= $1 AND (m.source_rev IS NULL OR m.source_rev < d.rev * {PROGRESS_REV_WEIGHT}) ORDER BY d.id",
        ))
        .bind(since)
        .fetch_all(self.db())
        .await?;
        rows.iter().map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?))).collect()
    }

    /// Records that deployment `id`'s progress message was rendered at `rev` when the render left
    /// its text as it was (the upsert changes nothing then, `source_rev` included); true when
    /// that was so.
    pub async fn progress_rendered(&self, id: i64, rev: i64) -> Result<bool> {
        let as_of = progress_as_of(rev, 0, 0);
        let n = sqlx::query("UPDATE chat_messages SET source_rev = $1 WHERE key = $2 AND (source_rev IS NULL OR source_rev < $1)")
            .bind(as_of)
            .bind(progress_key(id))
            .execute(self.db())
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Messages waiting to be posted or edited, oldest first.
    pub async fn outbox_due(&self, now: Millis, limit: i64) -> Result<Vec<StoredMessage>> {
        sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE state = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= $1) ORDER BY id LIMIT $2"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(self.db())
        .await?
        .iter()
        .map(message_from_row)
        .collect()
    }
}
