//! Slack's inbound payloads (slash commands, `event_callback` envelopes) as [`ChatEvent`]s, and
//! the one way both transports hand them to the engine: store with the payload, then handle in a
//! spawned task.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::chat::{ChatEvent, ReactionTarget, UserRef};
use crate::engine::Engine;

/// A slash command's fields, as Slack sends them (form fields over HTTP, a JSON object in
/// Socket Mode).
pub fn command_event(fields: &HashMap<String, String>) -> Option<ChatEvent> {
    let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
    let command = get("command");
    let user_id = get("user_id");
    if command.is_empty() || user_id.is_empty() {
        return None;
    }
    // Slack never retries a slash command; the trigger id still makes each one recordable once.
    let event_id = match get("trigger_id") {
        "" => format!("slack-command:{}:{}:{}", get("team_id"), user_id, chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()),
        t => format!("slack-command:{t}"),
    };
    let name = match get("user_name") {
        "" => user_id,
        n => n,
    };
    Some(ChatEvent::Command {
        event_id: Some(event_id),
        user: UserRef { id: user_id.to_string(), name: name.to_string() },
        channel: get("channel_id").to_string(),
        command: command.to_string(),
        text: unescape(get("text")),
    })
}

/// Slack escapes `&`, `<` and `>` in the text it sends.
pub fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum Body {
    #[serde(rename = "url_verification")]
    UrlVerification { challenge: String },
    #[serde(rename = "event_callback")]
    EventCallback { event_id: String, event: serde_json::Value },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct ReactionEvent {
    #[serde(rename = "type")]
    kind: String,
    user: String,
    reaction: String,
    item: Item,
}

#[derive(Deserialize)]
struct Item {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    ts: String,
}

/// What an Events API body asks for.
#[derive(Debug)]
pub enum Delivery {
    /// `url_verification`: answer with the challenge.
    Challenge(String),
    Event(ChatEvent),
    /// A valid body the bot has nothing to do with (another event type, a reaction to a file).
    Ignored,
}

pub fn events_body(body: &[u8]) -> Result<Delivery, serde_json::Error> {
    Ok(match serde_json::from_slice::<Body>(body)? {
        Body::UrlVerification { challenge } => Delivery::Challenge(challenge),
        Body::EventCallback { event_id, event } => match serde_json::from_value::<ReactionEvent>(event) {
            Ok(r) if r.item.kind == "message" && !r.item.ts.is_empty() => {
                let user = UserRef { id: r.user.clone(), name: r.user };
                let target = ReactionTarget::Message { channel: r.item.channel, id: r.item.ts };
                let event_id = Some(event_id);
                match r.kind.as_str() {
                    "reaction_added" => Delivery::Event(ChatEvent::ReactionAdded { event_id, user, target, emoji: r.reaction }),
                    "reaction_removed" => Delivery::Event(ChatEvent::ReactionRemoved { event_id, user, target, emoji: r.reaction }),
                    _ => Delivery::Ignored,
                }
            }
            _ => Delivery::Ignored,
        },
        Body::Other => Delivery::Ignored,
    })
}

/// See [`crate::chat::accept`].
pub async fn accept(engine: &Arc<Engine>, event: ChatEvent) -> anyhow::Result<bool> {
    crate::chat::accept(engine, event).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_escapes_are_undone_before_parsing() {
        assert_eq!(unescape("--hotfix \"a &lt;b&gt; &amp;amp; c\""), "--hotfix \"a <b> &amp; c\"");
    }

    #[test]
    fn a_reaction_to_a_message_becomes_a_reaction_event() {
        let body = br#"{"type":"event_callback","event_id":"Ev1","event_time":1,"event":{"type":"reaction_added","user":"U1","reaction":"white_check_mark","item":{"type":"message","channel":"C1","ts":"1.2"},"event_ts":"1.3"}}"#;
        match events_body(body).unwrap() {
            Delivery::Event(ChatEvent::ReactionAdded { event_id, user, target, emoji }) => {
                assert_eq!(event_id.as_deref(), Some("Ev1"));
                assert_eq!(user.id, "U1");
                assert_eq!(target, ReactionTarget::Message { channel: "C1".into(), id: "1.2".into() });
                assert_eq!(emoji, "white_check_mark");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_events_are_ignored_and_the_challenge_is_returned() {
        let body = br#"{"type":"event_callback","event_id":"Ev2","event":{"type":"reaction_added","user":"U1","reaction":"x","item":{"type":"file","file":"F1"}}}"#;
        assert!(matches!(events_body(body).unwrap(), Delivery::Ignored));
        let body = br#"{"type":"url_verification","token":"t","challenge":"abc"}"#;
        assert!(matches!(events_body(body).unwrap(), Delivery::Challenge(c) if c == "abc"));
    }
}
