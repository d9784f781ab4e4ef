//! Discord's inbound payloads as [`ChatEvent`]s: an `APPLICATION_COMMAND` interaction (from the
//! interactions endpoint or the gateway's `INTERACTION_CREATE`) and the gateway's
//! `MESSAGE_REACTION_ADD` / `_REMOVE`.

use serde_json::{json, Value};

use super::{display_name, short_name, DiscordPlatform, EPHEMERAL};
use crate::chat::{ChatEvent, ReactionTarget, UserRef};

/// Interaction types.
pub const PING: u64 = 1;
pub const APPLICATION_COMMAND: u64 = 2;
/// Option types that hold options themselves (sub-commands), which ours never have.
const SUB_COMMAND: u64 = 1;
const SUB_COMMAND_GROUP: u64 = 2;

const INTERACTION_PREFIX: &str = "discord-interaction:";

/// The event id of an interaction: unique, and the same when Discord delivers it again.
pub fn interaction_event_id(id: &str) -> String {
    format!("{INTERACTION_PREFIX}{id}")
}

/// The interaction a private reply's outbox key (`reply:<event id>`) answers.
pub fn interaction_of_reply_key(key: &str) -> Option<&str> {
    key.strip_prefix("reply:")?.strip_prefix(INTERACTION_PREFIX)
}

/// The response that acknowledges a command: "deferred", private to its author; the answer
/// replaces it later.
pub fn deferred_response() -> Value {
    json!({ "type": 5, "data": { "flags": EPHEMERAL } })
}

/// An immediate private answer (a command that cannot be recorded).
pub fn message_response(text: &str) -> Value {
    json!({ "type": 4, "data": { "content": text, "flags": EPHEMERAL } })
}

/// What an interaction asks for.
#[derive(Debug)]
pub enum Interaction {
    Ping,
    Command {
        event: ChatEvent,
        /// The interaction's id and token, for the answer.
        id: String,
        token: String,
    },
    /// Another type (components, autocomplete, modals): acknowledged, nothing to do.
    Other(u64),
}

/// Reads an interaction; `Err` says what is missing. Learns the member's roles and name.
pub fn interaction(discord: &DiscordPlatform, body: &Value) -> Result<Interaction, String> {
    let kind = body["type"].as_u64().ok_or("the interaction has no type")?;
    if kind == PING {
        return Ok(Interaction::Ping);
    }
    if kind != APPLICATION_COMMAND {
        return Ok(Interaction::Other(kind));
    }
    let id = body["id"].as_str().ok_or("the interaction has no id")?;
    let token = body["token"].as_str().ok_or("the interaction has no token")?;
    let channel = body["channel_id"].as_str().or_else(|| body["channel"]["id"].as_str()).ok_or("the interaction has no channel_id")?;
    // In a guild the person is `member.user` (with their roles); in a DM, `user`.
    let member = &body["member"];
    let user = if member["user"].is_object() { &member["user"] } else { &body["user"] };
    let user_id = user["id"].as_str().ok_or("the interaction has no member.user.id or user.id")?;
    let name = if member.is_object() { display_name(member) } else { display_name(user) };
    let guild = body["guild_id"].as_str();
    let roles: Option<Vec<String>> = member["roles"].as_array().map(|r| r.iter().filter_map(|v| v.as_str().map(str::to_string)).collect());
    discord.learn_member(user_id, name.as_deref(), guild, roles.as_deref());
    let data = &body["data"];
    let command = data["name"].as_str().ok_or("the interaction has no data.name")?;
    let mut options: Vec<deploybot_commands::DiscordOption> = Vec::new();
    for o in data["options"].as_array().into_iter().flatten() {
        let name = o["name"].as_str().ok_or("an option has no name")?;
        if matches!(o["type"].as_u64(), Some(SUB_COMMAND | SUB_COMMAND_GROUP)) {
            return Err(format!("/{command} {name}: sub-commands are not part of deploybot's commands"));
        }
        options.push((name.to_string(), o["value"].clone()));
    }
    // A command that is not ours still reaches the parser, which answers with the usage.
    let text = deploybot_commands::discord_text(command, &options).unwrap_or_default();
    let event = ChatEvent::Command {
        event_id: Some(interaction_event_id(id)),
        user: UserRef { id: user_id.to_string(), name: name.unwrap_or_else(|| user_id.to_string()) },
        channel: channel.to_string(),
        command: format!("/{command}"),
        text,
    };
    Ok(Interaction::Command { event, id: id.to_string(), token: token.to_string() })
}

/// A `MESSAGE_REACTION_ADD` / `_REMOVE` dispatch as a reaction event; `None` for the bot's own
/// reactions and payloads without what a vote needs. `event_id` identifies the dispatch (the
/// gateway session and sequence number: the same when a RESUME replays it).
pub fn reaction(discord: &DiscordPlatform, kind: &str, d: &Value, event_id: String) -> Option<ChatEvent> {
    let user_id = d["user_id"].as_str()?;
    if discord.is_bot_user(user_id) {
        return None;
    }
    let channel = d["channel_id"].as_str()?;
    let message = d["message_id"].as_str()?;
    let emoji = d["emoji"]["name"].as_str()?;
    let member = &d["member"];
    let roles: Option<Vec<String>> = member["roles"].as_array().map(|r| r.iter().filter_map(|v| v.as_str().map(str::to_string)).collect());
    let name = if member.is_object() { display_name(member) } else { None };
    discord.learn_member(user_id, name.as_deref(), d["guild_id"].as_str(), roles.as_deref());
    let user = UserRef { id: user_id.to_string(), name: name.unwrap_or_else(|| user_id.to_string()) };
    // Any channel: the id names the channel (a thread's id for a message in a thread).
    let target = ReactionTarget::Message { channel: String::new(), id: format!("{channel}/{message}") };
    let emoji = short_name(emoji);
    let event_id = Some(event_id);
    match kind {
        "MESSAGE_REACTION_ADD" => Some(ChatEvent::ReactionAdded { event_id, user, target, emoji }),
        "MESSAGE_REACTION_REMOVE" => Some(ChatEvent::ReactionRemoved { event_id, user, target, emoji }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DiscordConfig, DiscordMode, Reactions};

    fn platform() -> DiscordPlatform {
        let config = DiscordConfig {
            mode: DiscordMode::Gateway,
            token: crate::secrets::SecretRef::parse("${DISCORD_TOKEN}").unwrap(),
            public_key: None,
            application_id: Some("42".into()),
            guild_id: None,
            api_url: "http://127.0.0.1:9".into(),
        };
        let secrets = super::super::DiscordSecrets { token: crate::secrets::Secret::from_value("test-token-inbound".into()), public_key: None, application_id: "42".into() };
        DiscordPlatform::new(&config, &secrets, &Reactions::default(), None).unwrap()
    }

    #[test]
    fn a_slash_command_interaction_becomes_the_same_command_line() {
        let discord = platform();
        let body = json!({
            "id": "1100", "application_id": "42", "type": 2, "token": "tok", "version": 1,
            "guild_id": "7", "channel_id": "500",
            "member": { "user": { "id": "300", "username": "alice", "global_name": "Alice" }, "roles": ["900"], "nick": null },
            "data": { "id": "77", "name": "deploy", "type": 1, "options": [
                { "name": "version", "type": 3, "value": "v1.0.0" }, { "name": "env", "type": 3, "value": "prod" },
                { "name": "dry-run", "type": 5, "value": true } ] }
        });
        match interaction(&discord, &body).unwrap() {
            Interaction::Command { event: ChatEvent::Command { event_id, user, channel, command, text }, id, token } => {
                assert_eq!(event_id.as_deref(), Some("discord-interaction:1100"));
                assert_eq!((user.id.as_str(), user.name.as_str()), ("300", "Alice"));
                assert_eq!((channel.as_str(), command.as_str()), ("500", "/deploy"));
                assert_eq!(text, "\"v1.0.0\" \"prod\" --dry-run");
                assert_eq!((id.as_str(), token.as_str()), ("1100", "tok"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(interaction_of_reply_key("reply:discord-interaction:1100"), Some("1100"));
        assert!(matches!(interaction(&discord, &json!({ "type": 1, "id": "1", "token": "t" })).unwrap(), Interaction::Ping));
        assert!(interaction(&discord, &json!({ "type": 2, "id": "1", "token": "t", "data": { "name": "deploy" } })).unwrap_err().contains("channel_id"));
    }

    #[test]
    fn reactions_map_unicode_and_skip_the_bot() {
        let discord = platform();
        discord.set_bot_user("1");
        let d = json!({ "user_id": "300", "channel_id": "500", "message_id": "600", "guild_id": "7", "emoji": { "id": null, "name": "✅" }, "member": { "user": { "id": "300", "username": "carol" }, "roles": ["900"] } });
        match reaction(&discord, "MESSAGE_REACTION_ADD", &d, "e1".into()).unwrap() {
            ChatEvent::ReactionAdded { user, target, emoji, .. } => {
                assert_eq!(user.name, "carol");
                assert_eq!(target, ReactionTarget::Message { channel: String::new(), id: "500/600".into() });
                assert_eq!(emoji, "white_check_mark");
            }
            other => panic!("{other:?}"),
        }
        // A removal carries no member (as documented); the user id is enough to withdraw a vote.
        let removed = json!({ "user_id": "300", "channel_id": "500", "message_id": "600", "guild_id": "7", "emoji": { "id": null, "name": "✅" } });
        match reaction(&discord, "MESSAGE_REACTION_REMOVE", &removed, "e3".into()).unwrap() {
            ChatEvent::ReactionRemoved { event_id, user, emoji, .. } => {
                assert_eq!((event_id.as_deref(), user.id.as_str(), emoji.as_str()), (Some("e3"), "300", "white_check_mark"));
            }
            other => panic!("{other:?}"),
        }
        let custom = json!({ "user_id": "300", "channel_id": "500", "message_id": "600", "emoji": { "id": "41771983429993937", "name": "shipit" } });
        assert!(matches!(reaction(&discord, "MESSAGE_REACTION_ADD", &custom, "e4".into()), Some(ChatEvent::ReactionAdded { emoji, .. }) if emoji == "shipit"));
        let own = json!({ "user_id": "1", "channel_id": "500", "message_id": "600", "emoji": { "id": null, "name": "✅" } });
        assert!(reaction(&discord, "MESSAGE_REACTION_ADD", &own, "e2".into()).is_none());
    }
}
