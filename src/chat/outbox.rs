//! The outbox: every message the bot sends to a channel is written to the store first, under
//! an idempotency key, then delivered (posted the first time, edited afterwards). A delivery
//! that fails stays pending and is retried with backoff, so a message is never lost and never
//! posted twice: once a message has a platform id, later deliveries are edits.
//!
//! Pacing: edits to one channel go out at most once per the platform's
//! [`ChatPlatform::edit_interval`] (about a second on Slack); an edit that comes
//! sooner stays pending with its latest text (a newer text replaces it in the store) and the
//! flush loop sends it when its turn comes. A rate limit (`Retry-After`) pauses every delivery
//! until it has passed. Nothing is dropped: a held message is a pending row.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::Mutex;

use super::{ChatError, ChatPlatform, OutMessage};
use crate::model::Millis;
use crate::store::{OutboxMessage, StoredMessage, Store};

#[derive(Clone)]
pub struct Outbox {
    store: Store,
    chat: Arc<dyn ChatPlatform>,
    /// Deliveries are serialized: an edit never overtakes the post it edits.
    delivering: Arc<Mutex<()>>,
    pacing: Arc<std::sync::Mutex<Pacing>>,
}

#[derive(Default)]
struct Pacing {
    last_edit: HashMap<String, Instant>,
    /// Set by a rate limit: nothing is sent before this instant.
    paused_until: Option<Instant>,
}

impl Pacing {
    /// Whether a delivery must wait (the message stays pending).
    fn holds(&self, channel: &str, is_edit: bool, interval: Duration, now: Instant) -> bool {
        self.paused_until.is_some_and(|t| now < t) || (is_edit && self.last_edit.get(channel).is_some_and(|t| now.duration_since(*t) < interval))
    }
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

fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

impl Outbox {
    pub fn new(store: Store, chat: Arc<dyn ChatPlatform>) -> Outbox {
        Outbox { store, chat, delivering: Arc::new(Mutex::new(())), pacing: Arc::new(std::sync::Mutex::new(Pacing::default())) }
    }

    pub fn chat(&self) -> &Arc<dyn ChatPlatform> {
        &self.chat
    }

    /// Writes the message (new, or a new text for an existing key) and tries to deliver it now.
    pub async fn send(&self, d: Draft<'_>) -> Result<()> {
        let body = serde_json::to_string(&OutMessage::new(d.text))?;
        // Writes happen under the delivery lock too: a delivery in flight (or a flush's batch)
        // never marks an older text as posted over a newer one written meanwhile.
        let _guard = self.delivering.lock().await;
        let now = now_ms();
        let (_, fresh) = self
            .store
            .outbox_put(
                &OutboxMessage {
                    key: d.key.to_string(),
                    channel: d.channel.to_string(),
                    thread_key: d.thread_key.map(str::to_string),
                    deployment_id: d.deployment_id,
                    alert_id: d.alert_id,
                    purpose: d.purpose.to_string(),
                    body: body.clone(),
                },
                now,
            )
            .await?;
        if !fresh {
            let unchanged = self.store.outbox_message(d.key).await?.is_some_and(|m| m.body == crate::secrets::redact(&body) && m.state == "posted");
            if unchanged {
                return Ok(());
            }
            self.store.outbox_update_body(d.key, &body, now).await?;
        }
        match self.store.outbox_message(d.key).await {
            Ok(Some(m)) if m.state == "pending" => Box::pin(self.deliver(m)).await,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, key = d.key, "could not read a message from the outbox"),
        }
        Ok(())
    }

    /// The platform id of a delivered message.
    pub async fn platform_id(&self, key: &str) -> Result<Option<String>> {
        Ok(self.store.outbox_message(key).await?.and_then(|m| m.platform_id))
    }

    /// Retries every pending message that is due.
    pub async fn flush(&self) {
        let _guard = self.delivering.lock().await;
        let due = match self.store.outbox_due(now_ms(), 100).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the outbox");
                return;
            }
        };
        for m in due {
            self.deliver(m).await;
        }
    }

    async fn deliver(&self, m: StoredMessage) {
        let msg: OutMessage = match serde_json::from_str(&m.body) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::error!(error = %e, key = %m.key, "an outbox message is not valid JSON; it will not be sent");
                let _ = self.store.outbox_mark_failed(m.id, "invalid body", i64::MAX, now_ms()).await;
                return;
            }
        };
        let is_edit = m.platform_id.is_some();
        if self.pacing.lock().is_ok_and(|p| p.holds(&m.channel, is_edit, self.chat.edit_interval(), Instant::now())) {
            return;
        }
        let result = match (&m.platform_id, &m.thread_key) {
            (Some(id), _) => self.chat.edit(&m.channel, id, &msg).await.map(|_| id.clone()),
            (None, Some(parent)) => match self.store.outbox_message(parent).await {
                Ok(Some(StoredMessage { platform_id: Some(parent_id), .. })) => self.chat.reply(&m.channel, &parent_id, &msg).await,
                // Not a failure: the reply waits for its thread's first message, which is
                // delivered first (the outbox is flushed in order).
                Ok(Some(_)) => return,
                _ => Err(ChatError::Unavailable("the thread's first message is not in the outbox".into())),
            },
            (None, None) => self.chat.post(&m.channel, &msg).await,
        };
        if let Ok(mut p) = self.pacing.lock() {
            match &result {
                Ok(_) if is_edit => {
                    p.last_edit.insert(m.channel.clone(), Instant::now());
                }
                Err(ChatError::RateLimited { retry_after_secs }) => {
                    p.paused_until = Some(Instant::now() + Duration::from_secs((*retry_after_secs).max(1)));
                }
                _ => {}
            }
        }
        let now = now_ms();
        let outcome = match result {
            Ok(id) => self.store.outbox_mark_posted(m.id, &id, now).await,
            Err(e) => {
                let wait_ms = match &e {
                    ChatError::RateLimited { retry_after_secs } => (*retry_after_secs as i64).max(1) * 1000,
                    _ => (1000i64 << m.attempts.clamp(0, 6)).min(60_000),
                };
                tracing::warn!(error = %e, key = %m.key, attempt = m.attempts + 1, "a chat message could not be delivered; it will be retried");
                self.store.outbox_mark_failed(m.id, &e.to_string(), now + wait_ms, now).await
            }
        };
        if let Err(e) = outcome {
            tracing::error!(error = %e, key = %m.key, "could not record a delivery in the outbox");
        }
    }
}
