//! The chat boundary: one trait every platform implements, and the normalised events the
//! engine receives.
//!
//! *Invariant*: Slack and Discord types never leave their folder; the engine sees a
//! [`ChatEvent`] and answers with an [`OutMessage`]. Mentions are written `<@USERID>` in text,
//! which Slack and Discord both understand and the console turns into `@name`.

use async_trait::async_trait;

pub mod console;
pub mod discord;
pub mod outbox;
pub mod slack;

/// Someone on the chat platform.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserRef {
    pub id: String,
    pub name: String,
}

/// What a reaction was added to: a message, or (console shorthand) a deployment's approval message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ReactionTarget {
    Message { channel: String, id: String },
    Deployment(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChatEvent {
    /// `/deploy v1.0.0 prod` typed by `user` in `channel`.
    Command { event_id: Option<String>, user: UserRef, channel: String, command: String, text: String },
    ReactionAdded { event_id: Option<String>, user: UserRef, target: ReactionTarget, emoji: String },
    ReactionRemoved { event_id: Option<String>, user: UserRef, target: ReactionTarget, emoji: String },
}

impl ChatEvent {
    pub fn event_id(&self) -> Option<&str> {
        match self {
            ChatEvent::Command { event_id, .. } | ChatEvent::ReactionAdded { event_id, .. } | ChatEvent::ReactionRemoved { event_id, .. } => {
                event_id.as_deref()
            }
        }
    }
}

/// A platform-neutral message: light Markdown (`*bold*`, `` `code` ``, `<@U123>` mentions),
/// with a first line that works as a notification summary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutMessage {
    pub text: String,
}

impl OutMessage {
    pub fn new(text: impl Into<String>) -> OutMessage {
        OutMessage { text: crate::secrets::redact(&text.into()) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("rate limited by the chat platform; retry after {retry_after_secs}s")]
    RateLimited { retry_after_secs: u64 },
    #[error("the chat platform is unavailable: {0}")]
    Unavailable(String),
    #[error("the chat platform refused the call: {0}")]
    Refused(String),
}

#[async_trait]
pub trait ChatPlatform: Send + Sync {
    fn name(&self) -> &'static str;
    /// Posts a message to a channel; returns the platform's message id. `key` is the message's
    /// outbox key, the same for every attempt at it: a platform that can make a post idempotent
    /// (Discord's `nonce` with `enforce_nonce`) uses it, so that an attempt whose answer was lost
    /// does not post the message twice.
    async fn post(&self, key: &str, channel: &str, msg: &OutMessage) -> Result<String, ChatError>;
    /// Replaces the text of a message the bot posted.
    async fn edit(&self, channel: &str, id: &str, msg: &OutMessage) -> Result<(), ChatError>;
    /// The message an earlier attempt at the post stored under `key` may have made in `channel`
    /// without the bot learning its id (the answer was lost, or the replica making it died):
    /// its id, when the platform can find it. The outbox asks before posting again a message
    /// that was tried before; `Ok(None)` (the default): nothing found, post it.
    async fn find_post(&self, _key: &str, _channel: &str) -> Result<Option<String>, ChatError> {
        Ok(None)
    }
    /// Replies in the thread of message `thread`; returns the reply's id. `key` as for
    /// [`ChatPlatform::post`].
    async fn reply(&self, key: &str, channel: &str, thread: &str, msg: &OutMessage) -> Result<String, ChatError>;
    /// A message only `user` sees.
    async fn ephemeral(&self, channel: &str, user: &str, msg: &OutMessage) -> Result<(), ChatError>;
    /// The private answer stored under the outbox key `key` (`reply:<event id>` for the answer
    /// to a command): platforms that answer a command through the command itself (Discord's
    /// interactions) find it by the key; the others send an [`ChatPlatform::ephemeral`].
    async fn private_reply(&self, _key: &str, channel: &str, user: &str, msg: &OutMessage) -> Result<(), ChatError> {
        self.ephemeral(channel, user, msg).await
    }
    /// Called once after a message was posted (`id`) with the purpose it was written for
    /// (`approval`, `alert`, …): Discord adds the emoji people are asked to react with.
    /// Failures are the platform's to log; the message stays posted.
    async fn decorate(&self, _id: &str, _purpose: &str, _msg: &OutMessage) {}
    /// Whether `user` belongs to the group (Slack user group, Discord role).
    async fn in_group(&self, user: &str, group: &str) -> Result<bool, ChatError>;
    /// The person's display name, when the platform's events carry only an id (Slack reactions).
    async fn user_name(&self, _user: &str) -> Option<String> {
        None
    }
    /// The shortest time between two edits in one channel (the outbox holds quicker ones back).
    fn edit_interval(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// Stores an inbound event with its payload (once: a repeated event id is a retry, a redelivery
/// or a replay) and handles it in a spawned task; returns whether it was new. Only the store's
/// insert is awaited, and it is awaited before the platform is answered: an error here means
/// "not recorded, try again".
pub async fn accept(engine: &std::sync::Arc<crate::engine::Engine>, event: ChatEvent) -> anyhow::Result<bool> {
    if !engine.accept(&event).await? {
        return Ok(false);
    }
    let engine = engine.clone();
    let platform = engine.chat.name();
    tokio::spawn(async move {
        if let Err(e) = engine.process(event).await {
            tracing::error!(error = format!("{e:#}"), platform, "a chat event could not be handled");
        }
    });
    Ok(true)
}
