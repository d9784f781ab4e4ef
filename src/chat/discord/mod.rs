//! Discord: the REST client behind [`ChatPlatform`] ([`rest`]), the gateway connection that
//! brings reactions and (in `gateway` mode) commands ([`gateway`]), the signed interactions
//! endpoint of `interactions` mode ([`http`]), and the translation of Discord's payloads into
//! [`ChatEvent`](super::ChatEvent)s ([`inbound`]).
//!
//! *Invariant*: Discord's JSON stays in this folder. Inbound work is stored with its payload
//! before Discord is answered (`processed_events`, which also recognises an event replayed after
//! a RESUME) and handled from there in a spawned task.
//!
//! Platform message ids are `"<channel id>/<message id>"`: a reply lives in the thread started
//! from its message (whose channel id is that message's id), so the id says where to edit it,
//! and a reaction names the message the same way wherever it is.
//!
//! serenity provides the Ed25519 verification of the interactions endpoint
//! (`serenity::interactions_endpoint::Verifier`) and the gateway intents; REST and the gateway
//! loop are our own (see [`rest`] and [`gateway`] for why).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_trait::async_trait;
use reqwest::Method;
use serde_json::{json, Value};

use super::{ChatError, ChatPlatform, OutMessage};
use crate::config::{DiscordConfig, Reactions};
use crate::secrets::Secret;
use rest::{Rest, Retry};

pub mod gateway;
pub mod http;
pub mod inbound;
pub mod rest;

/// How long a member's roles are trusted before they are asked for again.
const ROLES_TTL: Duration = Duration::from_secs(300);
/// Display names change rarely.
const NAME_TTL: Duration = Duration::from_secs(3600);
/// An interaction token lets the bot answer for 15 minutes.
const INTERACTION_TTL: Duration = Duration::from_secs(15 * 60);
/// Discord's limits, in characters.
const CONTENT_MAX: usize = 2000;
const EMBED_MAX: usize = 4096;
const THREAD_NAME_MAX: usize = 100;
/// "A thread has already been created for this message."
const THREAD_EXISTS: u64 = 160_004;
/// How long after an interaction arrived its original response may still be unknown to Discord.
const ANSWER_GRACE: Duration = Duration::from_secs(10);
/// The answer to a command that could not be recorded.
pub const TRY_AGAIN: &str = "⚠️ deploybot could not record this command (its database is unreachable); nothing was done. Try again in a minute.";
/// Message flag: only the person who ran the command sees it.
pub const EPHEMERAL: u64 = 1 << 6;

/// Slack short names of the emoji the bot uses, and the Unicode Discord sends for them.
const EMOJI: &[(&str, &str)] = &[
    ("white_check_mark", "✅"),
    ("heavy_check_mark", "✔️"),
    ("x", "❌"),
    ("rewind", "⏪"),
    ("thumbsup", "👍"),
    ("+1", "👍"),
    ("thumbsdown", "👎"),
    ("-1", "👎"),
    ("no_entry", "⛔"),
    ("no_entry_sign", "🚫"),
    ("rocket", "🚀"),
    ("warning", "⚠️"),
    ("leftwards_arrow_with_hook", "↩️"),
    ("arrows_counterclockwise", "🔄"),
];

/// The short name an emoji of a reaction stands for: Unicode emoji through the table (with or
/// without the variation selector), custom emoji by their name.
pub fn short_name(unicode_or_name: &str) -> String {
    let bare = unicode_or_name.trim_end_matches('\u{fe0f}');
    EMOJI.iter().find(|(_, u)| u.trim_end_matches('\u{fe0f}') == bare).map_or_else(|| unicode_or_name.to_string(), |(n, _)| n.to_string())
}

/// The Unicode emoji of a short name, when it is one the table knows.
pub fn unicode(short: &str) -> Option<&'static str> {
    EMOJI.iter().find(|(n, _)| *n == short.trim_matches(':')).map(|(_, u)| *u)
}

/// The secrets and keys a Discord deployment needs, resolved from the environment at start.
pub struct DiscordSecrets {
    pub token: Secret,
    /// The Ed25519 public key, hex (interactions mode).
    pub public_key: Option<String>,
    pub application_id: String,
}

impl DiscordSecrets {
    /// Resolves what the configured mode needs; the error names the missing variable or key.
    pub fn resolve(config: &DiscordConfig, vars: &crate::secrets::Vars) -> Result<DiscordSecrets> {
        let token = config.token.resolve_in(vars).map_err(|e| anyhow::anyhow!("[chat.discord] token: {e}"))?;
        let public_key = match config.public_key.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(r) if r.starts_with("${") => {
                let r = crate::secrets::SecretRef::parse(r).map_err(|e| anyhow::anyhow!("[chat.discord] public_key: {e}"))?;
                Some(r.resolve_in(vars).map_err(|e| anyhow::anyhow!("[chat.discord] public_key: {e}"))?.expose().trim().to_string())
            }
            Some(k) => Some(k.to_string()),
        };
        if config.mode == crate::config::DiscordMode::Interactions {
            let Some(key) = &public_key else { anyhow::bail!("[chat.discord] public_key is required in interactions mode") };
            if key.len() != 64 || !key.chars().all(|c| c.is_ascii_hexdigit()) {
                anyhow::bail!("[chat.discord] public_key: expected the application's public key, 64 hex characters (Developer Portal → General Information)");
            }
        }
        let application_id = config.application_id.clone().context("[chat.discord] application_id is required (Developer Portal → General Information → Application ID)")?;
        let application_id = match crate::secrets::SecretRef::parse(&application_id) {
            Ok(r) => r.resolve_in(vars).map_err(|e| anyhow::anyhow!("[chat.discord] application_id: {e}"))?.expose().trim().to_string(),
            Err(_) => application_id,
        };
        if application_id.is_empty() || !application_id.chars().all(|c| c.is_ascii_digit()) {
            anyhow::bail!("[chat.discord] application_id: {application_id:?} is not a Discord id (a number)");
        }
        Ok(DiscordSecrets { token, public_key, application_id })
    }
}

/// What is known about a member: their roles in the guild, and when that was learnt.
#[derive(Clone)]
struct Member {
    at: Instant,
    guild: Option<String>,
    roles: Arc<HashSet<String>>,
}

pub struct DiscordPlatform {
    rest: Rest,
    application_id: String,
    guild_id: Option<String>,
    reactions: Reactions,
    /// The bot's own user id (from READY): its reactions are not votes.
    bot_user: Mutex<Option<String>>,
    members: Mutex<HashMap<String, Member>>,
    names: Mutex<HashMap<String, (Instant, String)>>,
    /// Interaction id → its token, for the private answer to the command.
    interactions: Mutex<HashMap<String, (Instant, String)>>,
    /// Messages a thread was started from (this process knows).
    threads: Mutex<HashSet<String>>,
    /// The guild seen in events, for role look-ups when `guild_id` is not configured.
    seen_guild: Mutex<Option<String>>,
    /// Where interaction tokens are kept for other replicas and the next process.
    store: Option<crate::store::Store>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `nonce` of the message stored under an outbox key: the same for every attempt at it, on
/// every replica, and within the 25 characters Discord allows (the first 12 bytes of the key's
/// SHA-256, in hex).
fn nonce(key: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes())[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Splits a platform id `"<channel>/<message>"`.
fn split_id(id: &str) -> Result<(&str, &str), ChatError> {
    id.split_once('/').ok_or_else(|| ChatError::Refused(format!("{id:?} is not a Discord message id of this bot (<channel>/<message>)")))
}

impl DiscordPlatform {
    /// `store` keeps interaction tokens beyond this process (without one, they live in memory).
    pub fn new(config: &DiscordConfig, secrets: &DiscordSecrets, reactions: &Reactions, store: Option<crate::store::Store>) -> Result<DiscordPlatform> {
        Ok(DiscordPlatform {
            rest: Rest::new(&config.api_url, &secrets.token)?,
            application_id: secrets.application_id.clone(),
            guild_id: config.guild_id.clone(),
            reactions: reactions.clone(),
            bot_user: Mutex::default(),
            members: Mutex::default(),
            names: Mutex::default(),
            interactions: Mutex::default(),
            threads: Mutex::default(),
            seen_guild: Mutex::default(),
            store,
        })
    }

    pub fn rest(&self) -> &Rest {
        &self.rest
    }

    pub fn application_id(&self) -> &str {
        &self.application_id
    }

    pub fn set_bot_user(&self, id: &str) {
        *lock(&self.bot_user) = Some(id.to_string());
    }

    pub fn is_bot_user(&self, id: &str) -> bool {
        lock(&self.bot_user).as_deref() == Some(id)
    }

    /// Remembers what an event said about a member (their roles, their name).
    pub fn learn_member(&self, user: &str, name: Option<&str>, guild: Option<&str>, roles: Option<&[String]>) {
        if let Some(roles) = roles {
            lock(&self.members).insert(user.to_string(), Member { at: Instant::now(), guild: guild.map(str::to_string), roles: Arc::new(roles.iter().cloned().collect()) });
        }
        if let Some(g) = guild {
            lock(&self.seen_guild).get_or_insert_with(|| g.to_string());
        }
        if let Some(n) = name.filter(|n| !n.trim().is_empty()) {
            lock(&self.names).insert(user.to_string(), (Instant::now(), n.to_string()));
        }
    }

    /// Remembers an interaction's token for the private answer (valid 15 minutes), in memory
    /// and in the store, before the command is recorded: whichever replica delivers the answer,
    /// now or after a restart, can edit the deferred response.
    pub async fn remember_interaction(&self, id: &str, token: &str) {
        {
            let mut map = lock(&self.interactions);
            map.retain(|_, (at, _)| at.elapsed() < INTERACTION_TTL);
            map.insert(id.to_string(), (Instant::now(), token.to_string()));
        }
        if let Some(store) = &self.store {
            if let Err(e) = store.put_interaction_token(id, token, chrono::Utc::now().timestamp_millis(), INTERACTION_TTL.as_millis() as i64).await {
                tracing::warn!(error = format!("{e:#}"), "could not store a Discord interaction's token; only this replica can answer it");
            }
        }
    }

    /// The token of the interaction a reply key answers, and how long ago it arrived.
    async fn interaction_token(&self, key: &str) -> Option<(String, Duration)> {
        let id = inbound::interaction_of_reply_key(key)?;
        if let Some(found) = lock(&self.interactions).get(id).filter(|(at, _)| at.elapsed() < INTERACTION_TTL).map(|(at, t)| (t.clone(), at.elapsed())) {
            return Some(found);
        }
        let now = chrono::Utc::now().timestamp_millis();
        match self.store.as_ref()?.interaction_token(id, now - INTERACTION_TTL.as_millis() as i64).await {
            Ok(found) => found.map(|(token, at)| (token, Duration::from_millis((now - at).max(0) as u64))),
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "could not read a Discord interaction's token");
                None
            }
        }
    }

    /// The body of a message: the text as `content` when it fits, else its first line as
    /// `content` and the rest in an embed. Only user mentions notify.
    fn body(&self, msg: &OutMessage) -> Value {
        let text = to_discord_markdown(&msg.text);
        let mut body = if text.chars().count() <= CONTENT_MAX {
            json!({ "content": text, "embeds": [] })
        } else {
            let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
            json!({ "content": truncate(first, CONTENT_MAX), "embeds": [{ "description": truncate(rest, EMBED_MAX) }] })
        };
        body["allowed_mentions"] = json!({ "parse": ["users"] });
        body
    }

    /// Creates the message stored under the outbox key `key`. Every attempt at it carries the
    /// same `nonce` with `enforce_nonce`: when an earlier attempt was created but its answer was
    /// lost (a timeout, a 5xx from a proxy, a replica killed before recording it), Discord
    /// returns that message instead of creating a second one.
    async fn create_message(&self, key: Option<&str>, channel: &str, msg: &OutMessage) -> Result<String, ChatError> {
        let mut body = self.body(msg);
        if let Some(key) = key {
            body["nonce"] = json!(nonce(key));
            body["enforce_nonce"] = json!(true);
        }
        let answer = self.rest.call(Method::POST, &format!("/channels/{channel}/messages"), Some(&body), Retry::Never).await?;
        let id = answer.body["id"].as_str().ok_or_else(|| ChatError::Unavailable("Discord answered a new message without its id".into()))?;
        Ok(format!("{channel}/{id}"))
    }

    /// A direct message to `user` (the message stored under `key`, when it comes from the outbox).
    async fn direct_message(&self, key: Option<&str>, user: &str, msg: &OutMessage) -> Result<(), ChatError> {
        let dm = self.rest.call(Method::POST, "/users/@me/channels", Some(&json!({ "recipient_id": user })), Retry::Some(2)).await?;
        let channel = dm.body["id"].as_str().ok_or_else(|| ChatError::Unavailable("Discord opened a DM without its id".into()))?.to_string();
        self.create_message(key, &channel, msg).await.map(|_| ())
    }

    /// Starts the thread of a message (once: an existing one is fine).
    async fn ensure_thread(&self, channel: &str, message: &str, first: &OutMessage) -> Result<(), ChatError> {
        if lock(&self.threads).contains(message) {
            return Ok(());
        }
        let name = first.text.lines().next().unwrap_or("details").replace(['*', '`', '_', '~'], "");
        let name = truncate(name.trim(), THREAD_NAME_MAX);
        let body = json!({ "name": if name.is_empty() { "details".to_string() } else { name }, "auto_archive_duration": 10080 });
        match self.rest.call(Method::POST, &format!("/channels/{channel}/messages/{message}/threads"), Some(&body), Retry::Never).await {
            Ok(_) => {}
            Err(e) if rest::error_code(&e) == Some(THREAD_EXISTS) => {}
            Err(e) => return Err(e),
        }
        lock(&self.threads).insert(message.to_string());
        Ok(())
    }

    /// Adds a reaction as the bot, when the emoji is one it can name.
    async fn add_reaction(&self, id: &str, short: &str) -> Result<(), ChatError> {
        let (channel, message) = split_id(id)?;
        let Some(emoji) = unicode(short) else {
            tracing::warn!(emoji = short, "a custom emoji cannot be added by the bot without its id; people add it themselves");
            return Ok(());
        };
        let emoji: String = url::form_urlencoded::byte_serialize(emoji.as_bytes()).collect();
        self.rest.call(Method::PUT, &format!("/channels/{channel}/messages/{message}/reactions/{emoji}/@me"), None, Retry::Some(3)).await.map(|_| ())
    }

    async fn member_roles(&self, user: &str) -> Result<Arc<HashSet<String>>, ChatError> {
        let cached = lock(&self.members).get(user).cloned();
        if let Some(m) = &cached {
            if m.at.elapsed() < ROLES_TTL {
                return Ok(m.roles.clone());
            }
        }
        let guild = self.guild_id.clone().or_else(|| cached.as_ref().and_then(|m| m.guild.clone())).or_else(|| lock(&self.seen_guild).clone());
        let Some(guild) = guild else {
            return Err(ChatError::Refused("no guild is known to look up roles in; set [chat.discord] guild_id".into()));
        };
        match self.rest.call(Method::GET, &format!("/guilds/{guild}/members/{user}"), None, Retry::Some(2)).await {
            Ok(answer) => {
                let roles: Vec<String> = answer.body["roles"].as_array().into_iter().flatten().filter_map(|r| r.as_str().map(str::to_string)).collect();
                let name = display_name(&answer.body);
                self.learn_member(user, name.as_deref(), Some(&guild), Some(&roles));
                Ok(Arc::new(roles.into_iter().collect()))
            }
            // A stale answer beats none while Discord is unreachable.
            Err(e) => match cached {
                Some(m) => {
                    tracing::warn!(error = %e, user, "could not refresh a member's roles; using the cached ones");
                    Ok(m.roles)
                }
                None => Err(e),
            },
        }
    }

    /// Registers the commands (`commands/manifests/discord-commands.json`) for the application,
    /// in the configured guild or globally, by a bulk overwrite, and only when what Discord has
    /// differs. Returns whether it wrote them.
    pub async fn register_commands(&self) -> Result<bool, ChatError> {
        let wanted: Value = serde_json::from_str(&deploybot_commands::discord_commands_json()).map_err(|e| ChatError::Refused(format!("the command registration is not JSON: {e}")))?;
        let path = match &self.guild_id {
            Some(g) => format!("/applications/{}/guilds/{g}/commands", self.application_id),
            None => format!("/applications/{}/commands", self.application_id),
        };
        let current = self.rest.call(Method::GET, &path, None, Retry::Some(3)).await?;
        if same_commands(&wanted, &current.body) {
            tracing::info!("the Discord commands are registered already");
            return Ok(false);
        }
        self.rest.call(Method::PUT, &path, Some(&wanted), Retry::Some(3)).await?;
        tracing::info!(scope = if self.guild_id.is_some() { "guild" } else { "global" }, "registered the Discord commands");
        Ok(true)
    }

    /// `GET /gateway/bot`: where to open the gateway.
    pub async fn gateway_url(&self) -> Result<String, ChatError> {
        let answer = self.rest.call(Method::GET, "/gateway/bot", None, Retry::Some(3)).await?;
        answer.body["url"].as_str().map(str::to_string).ok_or_else(|| ChatError::Unavailable("GET /gateway/bot answered without a url".into()))
    }

    /// Answers an interaction over REST (gateway mode): the deferred, private "thinking" state.
    pub async fn defer_interaction(&self, id: &str, token: &str) -> Result<(), ChatError> {
        let body = inbound::deferred_response();
        self.rest.call(Method::POST, &format!("/interactions/{id}/{token}/callback"), Some(&body), Retry::Some(2)).await.map(|_| ())
    }
}

/// Whether the registered commands are the wanted ones (the fields we set; Discord adds ids,
/// versions and defaults).
fn same_commands(wanted: &Value, current: &Value) -> bool {
    fn norm(c: &Value) -> Value {
        let options: Vec<Value> = c["options"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| {
                json!({
                    "name": o["name"], "description": o["description"], "type": o["type"],
                    "required": o["required"].as_bool().unwrap_or(false),
                    "min_value": o.get("min_value").cloned().unwrap_or(Value::Null),
                    "max_value": o.get("max_value").cloned().unwrap_or(Value::Null),
                    "choices": o.get("choices").cloned().unwrap_or(Value::Null),
                })
            })
            .collect();
        json!({ "name": c["name"], "description": c["description"], "type": c["type"].as_u64().unwrap_or(1), "options": options })
    }
    let (Some(w), Some(c)) = (wanted.as_array(), current.as_array()) else { return false };
    let mut w: Vec<Value> = w.iter().map(norm).collect();
    let mut c: Vec<Value> = c.iter().map(norm).collect();
    let key = |v: &Value| v["name"].as_str().unwrap_or_default().to_string();
    w.sort_by_key(key);
    c.sort_by_key(key);
    w == c
}

/// A member's (or user's) name as people see it: nickname, display name, username.
pub fn display_name(member_or_user: &Value) -> Option<String> {
    let user = if member_or_user.get("user").is_some() { &member_or_user["user"] } else { member_or_user };
    [&member_or_user["nick"], &user["global_name"], &user["username"]].into_iter().filter_map(|v| v.as_str()).find(|n| !n.trim().is_empty()).map(str::to_string)
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// The bot's light Markdown for Discord: `*bold*` becomes `**bold**` (a single `*` is italics
/// there), and `:short_name:` emoji the table knows become Unicode (Discord shows unknown ones
/// as typed).
pub fn to_discord_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&bold_line(line));
    }
    let mut result = out;
    for (name, u) in EMOJI {
        result = result.replace(&format!(":{name}:"), u);
    }
    result
}

/// Doubles the asterisks of `*x*` spans outside code spans.
fn bold_line(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len() + 4);
    let mut in_code = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '`' {
            in_code = !in_code;
            out.push(c);
        } else if c == '*' && !in_code {
            let prev_star = i > 0 && chars[i - 1] == '*';
            let next_star = chars.get(i + 1) == Some(&'*');
            let closes = chars[i + 1..].iter().position(|&x| x == '*').map(|p| i + 1 + p);
            match closes {
                Some(end) if !prev_star && !next_star && end > i + 1 && chars.get(end + 1) != Some(&'*') && !chars[i + 1].is_whitespace() => {
                    out.push_str("**");
                    out.extend(&chars[i + 1..end]);
                    out.push_str("**");
                    i = end + 1;
                    continue;
                }
                _ => out.push(c),
            }
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

#[async_trait]
impl ChatPlatform for DiscordPlatform {
    fn name(&self) -> &'static str {
        "discord"
    }

    /// Discord allows 5 message edits per 5 s per channel; a second apart stays well inside.
    fn edit_interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    #[tracing::instrument(skip(self, msg))]
    async fn post(&self, key: &str, channel: &str, msg: &OutMessage) -> Result<String, ChatError> {
        self.create_message(Some(key), channel, msg).await
    }

    #[tracing::instrument(skip(self, msg))]
    async fn edit(&self, _channel: &str, id: &str, msg: &OutMessage) -> Result<(), ChatError> {
        let (channel, message) = split_id(id)?;
        self.rest.call(Method::PATCH, &format!("/channels/{channel}/messages/{message}"), Some(&self.body(msg)), Retry::Never).await.map(|_| ())
    }

    /// In the thread started from the message (started with the first reply).
    #[tracing::instrument(skip(self, msg))]
    async fn reply(&self, key: &str, _channel: &str, thread: &str, msg: &OutMessage) -> Result<String, ChatError> {
        let (channel, message) = split_id(thread)?;
        self.ensure_thread(channel, message, msg).await?;
        self.create_message(Some(key), message, msg).await
    }

    /// Discord has no message only one person sees outside an interaction: without one, the
    /// person gets a direct message.
    #[tracing::instrument(skip(self, msg))]
    async fn ephemeral(&self, _channel: &str, user: &str, msg: &OutMessage) -> Result<(), ChatError> {
        self.direct_message(None, user, msg).await
    }

    /// The answer to a command: the deferred interaction's response, edited (only its author sees
    /// it). When the interaction is unknown here (this replica did not receive it, or it is older
    /// than its 15-minute token), a direct message.
    async fn private_reply(&self, key: &str, _channel: &str, user: &str, msg: &OutMessage) -> Result<(), ChatError> {
        let Some((token, age)) = self.interaction_token(key).await else { return self.direct_message(Some(key), user, msg).await };
        let mut body = self.body(msg);
        body["flags"] = json!(EPHEMERAL);
        let path = format!("/webhooks/{}/{token}/messages/@original", self.application_id);
        match self.rest.call(Method::PATCH, &path, Some(&body), Retry::Never).await {
            // Unknown interaction while it is young: the deferred response (the HTTP answer,
            // or the callback) has not reached Discord yet. The outbox tries again shortly.
            Err(ChatError::Refused(e)) if e.contains("HTTP 404") && age < ANSWER_GRACE => Err(ChatError::Unavailable(format!("the interaction is not answered yet: {e}"))),
            // The token is gone: say it directly.
            Err(ChatError::Refused(e)) if e.contains("HTTP 404") => self.direct_message(Some(key), user, msg).await,
            other => other.map(|_| ()),
        }
    }

    /// The approval message gets the approve and reject emoji, an alert that offers a rollback
    /// the rollback emoji, so that people only have to click.
    async fn decorate(&self, id: &str, purpose: &str, msg: &OutMessage) {
        let emoji: Vec<&str> = match purpose {
            "approval" => vec![&self.reactions.approve, &self.reactions.reject],
            "alert" if msg.text.contains(&format!(":{}:", self.reactions.rollback)) => vec![&self.reactions.rollback],
            _ => vec![],
        };
        for e in emoji {
            if let Err(err) = self.add_reaction(id, e).await {
                tracing::warn!(error = %err, emoji = e, "could not add a reaction to the bot's message; people can still add it");
            }
        }
    }

    #[tracing::instrument(skip(self))]
    async fn in_group(&self, user: &str, role: &str) -> Result<bool, ChatError> {
        Ok(self.member_roles(user).await?.contains(role))
    }

    async fn user_name(&self, user: &str) -> Option<String> {
        if let Some((at, name)) = lock(&self.names).get(user).cloned() {
            if at.elapsed() < NAME_TTL {
                return Some(name);
            }
        }
        match self.rest.call(Method::GET, &format!("/users/{user}"), None, Retry::Some(1)).await {
            Ok(answer) => {
                let name = display_name(&answer.body)?;
                lock(&self.names).insert(user.to_string(), (Instant::now(), name.clone()));
                Some(name)
            }
            Err(e) => {
                tracing::warn!(error = %e, user, "could not look up a Discord user's name");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_the_same_for_a_key_different_across_keys_and_short_enough() {
        let a = nonce("progress:42");
        assert_eq!(a, nonce("progress:42"));
        assert_ne!(a, nonce("progress:43"));
        assert_eq!(a.len(), 24);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
    }

    #[test]
    fn emoji_map_both_ways() {
        assert_eq!(short_name("✅"), "white_check_mark");
        assert_eq!(short_name("❌"), "x");
        assert_eq!(short_name("⏪"), "rewind");
        assert_eq!(short_name("⚠"), "warning", "without the variation selector");
        assert_eq!(short_name("shipit"), "shipit", "custom emoji by name");
        assert_eq!(unicode(":white_check_mark:"), Some("✅"));
        assert_eq!(unicode("shipit"), None);
    }

    #[test]
    fn slack_bold_becomes_discord_bold_outside_code() {
        assert_eq!(to_discord_markdown("*#4 v1.0.0* is `a*b*c` and 2 * 3 * 4"), "**#4 v1.0.0** is `a*b*c` and 2 * 3 * 4");
        assert_eq!(to_discord_markdown("**already**"), "**already**");
        assert_eq!(to_discord_markdown("React with :rewind: to roll back."), "React with ⏪ to roll back.");
    }

    #[test]
    fn registered_commands_compare_on_what_we_set() {
        let wanted: Value = serde_json::from_str(&deploybot_commands::discord_commands_json()).unwrap();
        let mut current = wanted.clone();
        for (i, c) in current.as_array_mut().unwrap().iter_mut().enumerate() {
            c["id"] = json!(format!("{}", 1000 + i));
            c["version"] = json!("1");
            c["application_id"] = json!("42");
        }
        current.as_array_mut().unwrap().reverse();
        assert!(same_commands(&wanted, &current));
        current[0]["description"] = json!("changed");
        assert!(!same_commands(&wanted, &current));
        assert!(!same_commands(&wanted, &json!([])));
    }

    #[test]
    fn names_prefer_the_nickname() {
        assert_eq!(display_name(&json!({ "nick": "Caz", "user": { "username": "carol", "global_name": "Carol" } })).as_deref(), Some("Caz"));
        assert_eq!(display_name(&json!({ "user": { "username": "carol", "global_name": null } })).as_deref(), Some("carol"));
        assert_eq!(display_name(&json!({ "username": "dan", "global_name": "Dan" })).as_deref(), Some("Dan"));
    }
}
