//! The outbox: every message the bot sends is written to the store under an idempotency key,
//! and delivered later by a delivery task ([`Outbox::run`], started with the app's background
//! loops; [`Outbox::drain`] for callers that drive the engine without them). Writing never waits
//! for the chat platform, so a chat outage delays messages, never deployments or rollbacks.
//!
//! Writers and the deliverer share nothing but the store row, which is the truth: a writer sets
//! a new text (bumping the row's `rev`) and wakes the deliverer; the deliverer claims ready rows
//! (a lease, `FOR UPDATE SKIP LOCKED` on PostgreSQL, so replicas never send one message at the
//! same time), sends them, and marks a row posted only if the `rev` it sent is still the stored
//! one — a text written during the call stays pending and goes out as the next edit. Once a
//! message has a platform id, later deliveries are edits: nothing is posted twice, and edits are
//! coalesced to the latest text.
//!
//! Order: posts reach a channel in the order they were written and a thread reply waits for its
//! thread's message (see [`Store::outbox_claim`]).
//!
//! Pacing: edits to one channel go out at most once per the platform's
//! [`ChatPlatform::edit_interval`] (about a second on Slack); a quicker one is handed back to the
//! store until its turn. A rate limit (`Retry-After`) or an unavailable platform stops the
//! round; a rate limit holds every delivery of this replica until it has passed. A message the
//! platform keeps refusing is given up after [`GIVE_UP_AFTER`] attempts, with an error logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::{watch, Notify};

use super::{ChatError, ChatPlatform, OutMessage};
use crate::model::Millis;
use crate::store::{OutboxMessage, Store, StoredMessage};

/// How long a claim protects a message from other deliverers. A round stops sending once half
/// of it has passed, so the last call (Slack's time out after 10 s) ends before the claim does;
/// no longer, because a dead replica's claimed messages wait this long for another one.
const CLAIM_MS: i64 = 30_000;
/// Messages claimed per round.
const BATCH: i64 = 50;
/// How often an idle deliverer looks for messages written by other replicas or now due.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// How long the delivery task waits after being woken, to take what else is written meanwhile
/// in the same claim (see [`Outbox::run`]).
const COALESCE: Duration = Duration::from_millis(20);
/// The longest wait between two attempts at one message: how late messages catch up after an outage.
const MAX_BACKOFF_MS: i64 = 15_000;
/// Refusals (the platform answered, and said no) before a message is given up.
pub const GIVE_UP_AFTER: i64 = 5;

#[derive(Clone)]
pub struct Outbox {
    store: Store,
    chat: Arc<dyn ChatPlatform>,
    /// Who claims messages (this replica).
    owner: Arc<str>,
    wake: Arc<Notify>,
    /// Only deliveries touch this (never held across an await).
    pacing: Arc<std::sync::Mutex<Pacing>>,
}

#[derive(Default)]
struct Pacing {
    last_edit: HashMap<String, Instant>,
    /// Set by a rate limit: nothing is sent before this instant.
    paused_until: Option<Instant>,
}

/// What to write under a key.
#[derive(Debug, Clone)]
pub struct Draft<'a> {
    pub key: &'a str,
    pub channel: &'a str,
    /// Key of the message this one is a thread reply to.
    pub thread_key: Option<&'a str>,
    pub deployment_id: Option<i64>,
    pub alert_id: Option<i64>,
    pub purpose: &'a str,
    pub text: &'a str,
}

/// What a delivery means for the rest of its round.
enum Next {
    Continue,
    /// Stop the round; hand the rest back, due at this time (Unix ms).
    StopUntil(Millis),
}

impl Draft<'_> {
    /// The row the outbox stores for this draft.
    fn message(&self) -> Result<OutboxMessage> {
        Ok(OutboxMessage {
            key: self.key.to_string(),
            channel: self.channel.to_string(),
            thread_key: self.thread_key.map(str::to_string),
            deployment_id: self.deployment_id,
            alert_id: self.alert_id,
            purpose: self.purpose.to_string(),
            body: serde_json::to_string(&OutMessage::new(self.text))?,
            recipient: None,
        })
    }
}

fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

impl Outbox {
    /// `owner` names this replica in its claims.
    pub fn new(store: Store, chat: Arc<dyn ChatPlatform>, owner: &str) -> Outbox {
        Outbox { store, chat, owner: owner.into(), wake: Arc::new(Notify::new()), pacing: Arc::default() }
    }

    pub fn chat(&self) -> &Arc<dyn ChatPlatform> {
        &self.chat
    }

    /// Writes the message (new, or a new text for an existing key) and wakes the deliverer.
    /// Never waits for the chat platform.
    pub async fn send(&self, d: Draft<'_>) -> Result<()> {
        let message = d.message()?;
        let now = now_ms();
        if self.store.outbox_upsert(&message, None, now).await? {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Like [`Outbox::send`] for a message that renders something moving forward: `as_of` says how
    /// far it had got when it was read, and a render from an earlier point never replaces a later one
    /// (two replicas, or a slow task, may write renders out of order).
    pub async fn send_as_of(&self, d: Draft<'_>, as_of: i64) -> Result<()> {
        if self.store.outbox_put_as_of(&d.message()?, as_of, now_ms()).await? {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// A private reply only `user` sees in `channel`, delivered through the outbox. Sent once per
    /// `key` (e.g. the inbound event's id): a re-handled event never replies twice, and a later
    /// text under the same key is ignored.
    pub async fn ephemeral(&self, key: &str, channel: &str, user: &str, text: &str) -> Result<()> {
        let body = serde_json::to_string(&OutMessage::new(text))?;
        let message = OutboxMessage {
            key: key.to_string(),
            channel: channel.to_string(),
            thread_key: None,
            deployment_id: None,
            alert_id: None,
            purpose: "ephemeral".into(),
            body,
            recipient: Some(user.to_string()),
        };
        if self.store.outbox_put(&message, now_ms()).await?.1 {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// The platform id of a delivered message; `None` until its post has been delivered.
    pub async fn platform_id(&self, key: &str) -> Result<Option<String>> {
        Ok(self.store.outbox_message(key).await?.and_then(|m| m.platform_id))
    }

    /// The delivery task: delivers whatever is ready, then waits to be woken (a new message),
    /// for the next poll (messages written by other replicas, retries coming due), or for shutdown.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                break;
            }
            let claimed = match self.deliver_ready().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "could not read the outbox; retrying");
                    0
                }
            };
            if claimed as i64 >= BATCH {
                continue;
            }
            if claimed == 0 {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.changed() => {}
                }
            }
            // What else is written in the next moment goes out in the same claim, and a progress
            // message edited again meanwhile is sent once, as it is then: under load (hundreds of
            // deployments at once) this is fewer claims and fewer chat calls, at a cost of
            // COALESCE to each message's delivery.
            tokio::select! {
                _ = tokio::time::sleep(COALESCE) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Delivers until nothing is ready now and no delivery of this or another task is in flight:
    /// for the demo and tests, which drive the engine themselves and then read the chat.
    /// Messages waiting for a retry or for their pacing turn stay pending.
    pub async fn drain(&self) -> Result<()> {
        loop {
            if self.deliver_ready().await? > 0 {
                continue;
            }
            if self.store.outbox_in_flight(now_ms()).await? == 0 {
                // Another deliverer may have just posted what a message here waited for (a post
                // earlier in its channel, its thread): one more look before calling it done.
                if self.deliver_ready().await? > 0 {
                    continue;
                }
                if self.store.outbox_in_flight(now_ms()).await? == 0 {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// One round: claims the messages that are ready and delivers them in order; returns how
    /// many were claimed.
    pub async fn deliver_ready(&self) -> Result<usize> {
        let paused = self.pacing.lock().ok().and_then(|p| p.paused_until).is_some_and(|t| Instant::now() < t);
        if paused {
            return Ok(0);
        }
        let claimed_at = Instant::now();
        let batch = self.store.outbox_claim(&self.owner, now_ms(), CLAIM_MS, BATCH).await?;
        let claimed = batch.len();
        let mut rest = batch.into_iter();
        let mut stop = None;
        for m in rest.by_ref() {
            // A claim that may lapse before the call ends could let another replica send too.
            if claimed_at.elapsed() > Duration::from_millis(CLAIM_MS as u64 / 2) {
                self.release(&m, now_ms()).await;
                stop = Some(now_ms());
                break;
            }
            if let Next::StopUntil(at) = self.deliver(&m).await {
                stop = Some(at);
                break;
            }
        }
        if let Some(at) = stop {
            for m in rest {
                self.release(&m, at).await;
            }
        }
        Ok(claimed)
    }

    /// For a post tried before (an attempt that failed without a clear refusal, or a claim that
    /// lapsed because its replica died mid-call), the message that attempt may have made, so that
    /// it is recorded instead of posted again. When the platform refuses to look (Slack without
    /// the history scope), it is posted.
    async fn posted_before(&self, m: &StoredMessage) -> Result<Option<String>, ChatError> {
        if m.attempts == 0 {
            return Ok(None);
        }
        match self.chat.find_post(&m.key, &m.channel).await {
            Ok(Some(id)) => {
                tracing::info!(key = %m.key, attempts = m.attempts, "an earlier attempt had posted the message; it is recorded, not posted again");
                Ok(Some(id))
            }
            Ok(None) => Ok(None),
            Err(ChatError::Refused(e)) => {
                tracing::warn!(error = %e, key = %m.key, "could not look for an earlier attempt's message; it is posted (it may show twice)");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn release(&self, m: &StoredMessage, retry_at: Millis) {
        if let Err(e) = self.store.outbox_release(m.id, &self.owner, retry_at).await {
            // The claim lapses by itself.
            tracing::warn!(error = format!("{e:#}"), key = %m.key, "could not hand a message back to the outbox");
        }
    }

    /// When an edit to `channel` may go out, if not now.
    fn edit_turn(&self, channel: &str) -> Option<Duration> {
        let interval = self.chat.edit_interval();
        let p = self.pacing.lock().ok()?;
        let since = p.last_edit.get(channel)?.elapsed();
        (since < interval).then(|| interval - since)
    }

    async fn deliver(&self, m: &StoredMessage) -> Next {
        let msg: OutMessage = match serde_json::from_str(&m.body) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::error!(error = %e, key = %m.key, "an outbox message is not valid JSON; it will not be sent");
                if let Err(e) = self.store.outbox_give_up(m.id, "invalid body", now_ms()).await {
                    tracing::error!(error = format!("{e:#}"), key = %m.key, "could not record a delivery in the outbox");
                }
                return Next::Continue;
            }
        };
        let is_edit = m.recipient.is_none() && m.platform_id.is_some();
        // A post an earlier attempt had made, found on the platform.
        let mut found = false;
        if is_edit {
            if let Some(wait) = self.edit_turn(&m.channel) {
                self.release(m, now_ms() + wait.as_millis() as Millis).await;
                return Next::Continue;
            }
        }
        let result: Result<Option<String>, ChatError> = match (&m.recipient, &m.platform_id, &m.thread_key) {
            (Some(user), _, _) => self.chat.private_reply(&m.key, &m.channel, user, &msg).await.map(|()| None),
            (None, Some(id), _) => self.chat.edit(&m.channel, id, &msg).await.map(|()| Some(id.clone())),
            (None, None, Some(parent)) => match self.store.outbox_message(parent).await {
                Ok(Some(StoredMessage { platform_id: Some(parent_id), .. })) => self.chat.reply(&m.key, &m.channel, &parent_id, &msg).await.map(Some),
                // Claimed only once its thread is posted; a store error: try again soon.
                _ => {
                    self.release(m, now_ms() + 1000).await;
                    return Next::Continue;
                }
            },
            (None, None, None) => match self.posted_before(m).await {
                Ok(Some(id)) => {
                    found = true;
                    Ok(Some(id))
                }
                Ok(None) => self.chat.post(&m.key, &m.channel, &msg).await.map(Some),
                Err(e) => Err(e),
            },
        };
        let now = now_ms();
        let (outcome, next) = match result {
            Ok(id) => {
                if is_edit {
                    if let Ok(mut p) = self.pacing.lock() {
                        p.last_edit.insert(m.channel.clone(), Instant::now());
                    }
                }
                // What was found may show an earlier text: recorded as an older revision, the
                // message stays pending and the current text goes out as an edit.
                let rev = if found { m.rev - 1 } else { m.rev };
                // Sent but not recorded would be sent again once the claim lapses: insist a little.
                let mut recorded = self.store.outbox_mark_posted(m.id, id.as_deref(), rev, now).await;
                for _ in 0..4 {
                    if recorded.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    recorded = self.store.outbox_mark_posted(m.id, id.as_deref(), rev, now_ms()).await;
                }
                // A new message: the platform may add what goes with it (Discord's reactions),
                // off the delivery round.
                if let (false, None, Some(id)) = (is_edit, &m.recipient, id) {
                    let (chat, purpose) = (self.chat.clone(), m.purpose.clone());
                    tokio::spawn(async move { chat.decorate(&id, &purpose, &msg).await });
                }
                (recorded, Next::Continue)
            }
            Err(e) => {
                let attempt = m.attempts + 1;
                match &e {
                    ChatError::RateLimited { retry_after_secs } => {
                        let wait = Duration::from_secs((*retry_after_secs).max(1));
                        if let Ok(mut p) = self.pacing.lock() {
                            p.paused_until = Some(Instant::now() + wait);
                        }
                        let at = now + wait.as_millis() as Millis;
                        tracing::warn!(error = %e, key = %m.key, attempt, "the chat platform is rate limiting; deliveries wait");
                        (self.store.outbox_mark_failed(m.id, &e.to_string(), at, now).await, Next::StopUntil(at))
                    }
                    ChatError::Refused(_) if attempt >= GIVE_UP_AFTER => {
                        tracing::error!(error = %e, key = %m.key, attempt, "the chat platform keeps refusing a message; it is given up");
                        (self.store.outbox_give_up(m.id, &e.to_string(), now).await, Next::Continue)
                    }
                    ChatError::Refused(_) => {
                        tracing::warn!(error = %e, key = %m.key, attempt, "the chat platform refused a message; it will be retried");
                        (self.store.outbox_mark_failed(m.id, &e.to_string(), now + backoff_ms(m.attempts), now).await, Next::Continue)
                    }
                    // The platform is down (or slow): the rest of the round would only wait too.
                    ChatError::Unavailable(_) => {
                        let at = now + backoff_ms(m.attempts);
                        tracing::warn!(error = %e, key = %m.key, attempt, "a chat message could not be delivered; it will be retried");
                        (self.store.outbox_mark_failed(m.id, &e.to_string(), at, now).await, Next::StopUntil(at))
                    }
                }
            }
        };
        if let Err(e) = outcome {
            tracing::error!(error = format!("{e:#}"), key = %m.key, "could not record a delivery in the outbox");
        }
        next
    }
}

/// 1 s, 2 s, 4 s … up to [`MAX_BACKOFF_MS`].
fn backoff_ms(attempts: i64) -> Millis {
    (1000i64 << attempts.clamp(0, 6)).min(MAX_BACKOFF_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let waits: Vec<Millis> = (0..7).map(backoff_ms).collect();
        assert_eq!(waits, [1000, 2000, 4000, 8000, 15_000, 15_000, 15_000]);
    }
}
