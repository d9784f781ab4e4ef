//! The outbox: every message the bot sends to a channel is written to the store first, under
//! an idempotency key, then delivered (posted the first time, edited afterwards). A delivery
//! that fails stays pending and is retried with backoff, so a message is never lost and never
//! posted twice: once a message has a platform id, later deliveries are edits.

use std::sync::Arc;

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
        Outbox { store, chat, delivering: Arc::new(Mutex::new(())) }
    }

    pub fn chat(&self) -> &Arc<dyn ChatPlatform> {
        &self.chat
    }

    /// Writes the message (new, or a new text for an existing key) and tries to deliver it now.
    pub async fn send(&self, d: Draft<'_>) -> Result<()> {
        let now = now_ms();
        let body = serde_json::to_string(&OutMessage::new(d.text))?;
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
        self.deliver_key(d.key).await;
        Ok(())
    }

    /// The platform id of a delivered message.
    pub async fn platform_id(&self, key: &str) -> Result<Option<String>> {
        Ok(self.store.outbox_message(key).await?.and_then(|m| m.platform_id))
    }

    async fn deliver_key(&self, key: &str) {
        let _guard = self.delivering.lock().await;
        match self.store.outbox_message(key).await {
            Ok(Some(m)) if m.state == "pending" => self.deliver(m).await,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, key, "could not read a message from the outbox"),
        }
    }

    /// Retries every pending message that is due.
    pub async fn flush(&self) {
        let due = match self.store.outbox_due(now_ms(), 100).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the outbox");
                return;
            }
        };
        let _guard = self.delivering.lock().await;
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
        let result = match (&m.platform_id, &m.thread_key) {
            (Some(id), _) => self.chat.edit(&m.channel, id, &msg).await.map(|_| id.clone()),
            (None, Some(parent)) => match self.store.outbox_message(parent).await {
                Ok(Some(StoredMessage { platform_id: Some(parent_id), .. })) => self.chat.reply(&m.channel, &parent_id, &msg).await,
                _ => Err(ChatError::Unavailable("the thread's first message is not posted yet".into())),
            },
            (None, None) => self.chat.post(&m.channel, &msg).await,
        };
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
