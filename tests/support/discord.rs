//! A Discord of our own for the tests, on 127.0.0.1:
//!
//! - **REST** (`/api/v10/…`): every call is recorded, and refused the way Discord would refuse
//!   it when its published OpenAPI spec (`tests/fixtures/discord/openapi.json`) would not accept
//!   it — unknown route or method, a path id that is not a snowflake, a body that breaks the
//!   operation's request schema (types, required fields, lengths, enums, patterns), a missing or
//!   wrong `Authorization: Bot` token. Answers carry the `X-RateLimit-*` headers of a bucket per
//!   route and major parameter, each bucket enforces its limit (a call over it gets a 429 and is
//!   recorded as such), and faults can be injected (429 with `retry_after`, global or not; 500;
//!   a call carried out whose answer is lost on the way back, as a 502 from a proxy). A new
//!   message with `enforce_nonce` and the `nonce` of one the bot created in the past few minutes
//!   is not created again: that message is returned, as Discord's Create Message documents.
//!   It keeps messages, threads, reactions, members and their roles, registered commands, and
//!   interactions (an interaction's original response can be edited only once it was answered,
//!   as on Discord).
//! - **Gateway** (WebSocket): HELLO, IDENTIFY → READY, RESUME → replay + RESUMED (or
//!   INVALID_SESSION when the session is unknown), heartbeats answered with ACKs, dispatches
//!   with sequence numbers kept per session (sent while connected, replayed on RESUME), and the
//!   server's RECONNECT / INVALID_SESSION / a dropped TCP connection on demand.
//! - Discord's documented **inbound payloads** (interactions, reaction dispatches), and the
//!   Ed25519 signature of interactions.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/discord/openapi.json");

pub const BOT_USER: &str = "1000000000000000001";
pub const GUILD: &str = "1000000000000000002";
const SNOWFLAKE_BASE: u64 = 1_200_000_000_000_000_000;

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    /// The spec's path template (`/channels/{channel_id}/messages`), when one matched.
    pub route: Option<String>,
    pub body: Value,
    pub status: u16,
    /// Why it was refused (spec, auth, fault, over the bucket's limit).
    pub error: Option<String>,
    pub at: Instant,
    /// The id of what it created (message, thread).
    pub created: Option<String>,
    /// A new message's `nonce` matched one created before: that message's id (nothing created).
    pub same_as: Option<String>,
}

impl Call {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    pub fn content(&self) -> String {
        let mut text = self.body["content"].as_str().unwrap_or_default().to_string();
        for e in self.body["embeds"].as_array().into_iter().flatten() {
            text.push('\n');
            text.push_str(e["description"].as_str().unwrap_or_default());
        }
        text
    }
    /// `POST /channels/{channel}/messages`, the channel.
    pub fn channel(&self) -> Option<&str> {
        self.path.strip_prefix("/channels/").and_then(|r| r.split('/').next())
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    RateLimited { retry_after: f64, global: bool },
    ServerError,
    /// Carried out, but the caller gets a 502 (a proxy between it and Discord gave up waiting).
    AnswerLost,
}

#[derive(Debug, Clone, Default)]
pub struct StoredMessage {
    pub id: String,
    pub channel: String,
    pub content: String,
    pub flags: u64,
    /// Emoji (as sent: Unicode) → user ids who reacted.
    pub reactions: HashMap<String, Vec<String>>,
    pub edits: usize,
    /// The `nonce` it was created with, and when.
    pub nonce: Option<String>,
    pub created: Option<Instant>,
}

#[derive(Debug, Clone, Default)]
pub struct StoredInteraction {
    pub token: String,
    /// The initial response's type (1 PONG, 4 message, 5 deferred), once answered.
    pub response: Option<u64>,
    pub response_flags: u64,
    pub answered_at: Option<Instant>,
    pub received_at: Option<Instant>,
    /// The original response's content, once edited.
    pub original: Option<String>,
    pub original_flags: u64,
}

struct Bucket {
    remaining: u32,
    reset: Instant,
}

enum WsCommand {
    Send(String),
    /// Close the TCP connection without a close frame.
    Drop,
}

#[derive(Default)]
struct Session {
    id: String,
    /// Every dispatch of the session: (seq, text).
    log: Vec<(u64, String)>,
    seq: u64,
    /// The connection the session is on, if any.
    live: Option<mpsc::UnboundedSender<WsCommand>>,
}

struct Shared {
    spec: Value,
    /// (method, template, segments) of every operation.
    routes: Vec<(String, String, Vec<String>)>,
    token: String,
    application_id: String,
    ws_url: Mutex<String>,
    calls: Mutex<Vec<Call>>,
    faults: Mutex<VecDeque<(Option<String>, Fault)>>,
    next_id: AtomicU64,
    messages: Mutex<HashMap<String, StoredMessage>>,
    /// Guild text channels the bot can post in (threads and DMs are added as they are made).
    channels: Mutex<HashSet<String>>,
    threads: Mutex<HashMap<String, String>>,
    dms: Mutex<HashMap<String, String>>,
    users: Mutex<HashMap<String, String>>,
    roles: Mutex<HashMap<String, Vec<String>>>,
    commands: Mutex<HashMap<String, Value>>,
    interactions: Mutex<HashMap<String, StoredInteraction>>,
    /// Route template + method → (limit, period) of its buckets.
    limits: Mutex<HashMap<String, (u32, Duration)>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    global_until: Mutex<Option<Instant>>,
    sessions: Mutex<HashMap<String, Session>>,
    /// The session of the current connection.
    current: Mutex<Option<String>>,
    heartbeat_ms: u64,
    connections: AtomicUsize,
    identifies: AtomicUsize,
    resumes: AtomicUsize,
    heartbeats: AtomicUsize,
    /// Dispatches Discord would have sent to no connection (no session yet).
    gateway_log: Mutex<Vec<Value>>,
}

#[derive(Clone)]
pub struct FakeDiscord {
    /// What `[chat.discord] api_url` is set to.
    pub api_url: String,
    pub application_id: String,
    shared: Arc<Shared>,
}

fn routes_of(spec: &Value) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for (path, ops) in spec["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys().filter(|m| *m != "parameters") {
            out.push((method.to_uppercase(), path.clone(), path.trim_start_matches('/').split('/').map(str::to_string).collect()));
        }
    }
    out
}

impl FakeDiscord {
    pub async fn start(token: &str, application_id: &str) -> FakeDiscord {
        let spec: Value = serde_json::from_str(&std::fs::read_to_string(SPEC).expect("Discord's OpenAPI spec in tests/fixtures/discord")).expect("the spec is JSON");
        let shared = Arc::new(Shared {
            routes: routes_of(&spec),
            spec,
            token: token.into(),
            application_id: application_id.into(),
            ws_url: Mutex::default(),
            calls: Mutex::default(),
            faults: Mutex::default(),
            next_id: AtomicU64::new(1),
            messages: Mutex::default(),
            channels: Mutex::default(),
            threads: Mutex::default(),
            dms: Mutex::default(),
            users: Mutex::default(),
            roles: Mutex::default(),
            commands: Mutex::default(),
            interactions: Mutex::default(),
            limits: Mutex::default(),
            buckets: Mutex::default(),
            global_until: Mutex::default(),
            sessions: Mutex::default(),
            current: Mutex::default(),
            heartbeat_ms: 1_000,
            connections: AtomicUsize::new(0),
            identifies: AtomicUsize::new(0),
            resumes: AtomicUsize::new(0),
            heartbeats: AtomicUsize::new(0),
            gateway_log: Mutex::default(),
        });
        let ws_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *shared.ws_url.lock().unwrap() = format!("ws://{}", ws_listener.local_addr().unwrap());
        tokio::spawn(ws_server(ws_listener, shared.clone()));
        let router = axum::Router::new().route("/api/v10/{*path}", axum::routing::any(rest)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        FakeDiscord { api_url, application_id: application_id.into(), shared }
    }

    pub fn new_id(&self) -> String {
        new_id(&self.shared)
    }

    pub fn add_channel(&self, id: &str) {
        self.shared.channels.lock().unwrap().insert(id.into());
    }

    pub fn add_user(&self, id: &str, name: &str, roles: &[&str]) {
        self.shared.users.lock().unwrap().insert(id.into(), name.into());
        self.shared.roles.lock().unwrap().insert(id.into(), roles.iter().map(|r| r.to_string()).collect());
    }

    /// `count` calls (to routes whose template contains `route`, or any) meet `fault`.
    pub fn inject(&self, route: Option<&str>, fault: Fault, count: usize) {
        let mut f = self.shared.faults.lock().unwrap();
        for _ in 0..count {
            f.push_back((route.map(str::to_string), fault));
        }
    }

    /// Buckets of `METHOD template` allow `limit` calls per `period` (per major parameter).
    pub fn limit(&self, method: &str, template: &str, limit: u32, period: Duration) {
        self.shared.limits.lock().unwrap().insert(format!("{method} {template}"), (limit, period));
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap().clone()
    }

    pub fn calls_to(&self, method: &str, template: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.method == method && c.route.as_deref() == Some(template)).collect()
    }

    /// Calls Discord would have refused as malformed (spec, auth, unknown route).
    pub fn refusals(&self) -> Vec<Call> {
        self.calls().into_iter().filter(|c| matches!(c.status, 400 | 401 | 404 | 405) && c.error.as_deref().is_some_and(|e| e.starts_with("spec:") || e.starts_with("auth:"))).collect()
    }

    pub fn message(&self, id: &str) -> Option<StoredMessage> {
        self.shared.messages.lock().unwrap().get(id).cloned()
    }

    pub fn messages_in(&self, channel: &str) -> Vec<StoredMessage> {
        let mut all: Vec<StoredMessage> = self.shared.messages.lock().unwrap().values().filter(|m| m.channel == channel).cloned().collect();
        all.sort_by_key(|m| m.id.parse::<u64>().unwrap_or_default());
        all
    }

    /// The thread started from a message, if any (its id is the message's).
    pub fn thread_of(&self, message: &str) -> Option<String> {
        self.shared.threads.lock().unwrap().contains_key(message).then(|| message.to_string())
    }

    pub fn dm_channel(&self, user: &str) -> Option<String> {
        self.shared.dms.lock().unwrap().get(user).cloned()
    }

    pub fn interaction(&self, id: &str) -> Option<StoredInteraction> {
        self.shared.interactions.lock().unwrap().get(id).cloned()
    }

    pub fn registered_commands(&self, scope: &str) -> Option<Value> {
        self.shared.commands.lock().unwrap().get(scope).cloned()
    }

    /// Waits until `pred` holds for the recorded calls; panics with them after `timeout`.
    pub async fn wait_until(&self, what: &str, timeout: Duration, pred: impl Fn(&[Call]) -> bool) -> Vec<Call> {
        let deadline = Instant::now() + timeout;
        loop {
            let calls = self.calls();
            if pred(&calls) {
                return calls;
            }
            if Instant::now() > deadline {
                let summary: Vec<String> = calls.iter().map(|c| format!("{} {} {} {:?} {}", c.method, c.path, c.status, c.error, c.content().lines().next().unwrap_or_default())).collect();
                panic!("timed out waiting for {what}; Discord saw:\n{}", summary.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first message posted in `channel` (any channel when `None`) containing `needle`.
    pub async fn wait_for_message(&self, channel: Option<&str>, needle: &str, timeout: Duration) -> StoredMessage {
        let deadline = Instant::now() + timeout;
        loop {
            let found = {
                let messages = self.shared.messages.lock().unwrap();
                let mut all: Vec<&StoredMessage> = messages.values().filter(|m| channel.is_none_or(|c| m.channel == c) && m.content.contains(needle)).collect();
                all.sort_by_key(|m| m.id.parse::<u64>().unwrap_or_default());
                all.first().map(|m| (*m).clone())
            };
            if let Some(m) = found {
                return m;
            }
            if Instant::now() > deadline {
                let summary: Vec<String> = self.calls().iter().map(|c| format!("{} {} {} {:?} {}", c.method, c.path, c.status, c.error, c.content().lines().next().unwrap_or_default())).collect();
                panic!("no message containing {needle:?} in {channel:?}; Discord saw:\n{}", summary.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until message `id` shows `needle`.
    pub async fn wait_for_text(&self, id: &str, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.message(id).map(|m| m.content).unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            assert!(Instant::now() < deadline, "message {id} never showed {needle:?}; it shows:\n{text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the private answer to interaction `id` contains `needle`.
    pub async fn wait_for_answer(&self, id: &str, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let i = self.interaction(id).unwrap_or_default();
            if let Some(text) = i.original.filter(|t| t.contains(needle)) {
                assert_eq!(i.original_flags & 64, 64, "the answer is not ephemeral");
                return text;
            }
            if Instant::now() > deadline {
                let summary: Vec<String> = self.calls().iter().map(|c| format!("{} {} {} {:?} {}", c.method, c.route.as_deref().unwrap_or(&c.path), c.status, c.error, c.content().lines().next().unwrap_or_default())).collect();
                panic!("interaction {id} was never answered with {needle:?}: {:?}; Discord saw:\n{}", self.interaction(id), summary.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // ---------------------------------------------------------------------------- interactions

    /// An `APPLICATION_COMMAND` interaction as Discord documents it (guild channel, member with
    /// roles); the double remembers its token. Returns (id, payload).
    pub fn command_interaction(&self, user: &str, channel: &str, command: &str, options: Value) -> (String, Value) {
        let id = self.new_id();
        let token = format!("aW50ZXJhY3Rpb246{id}:fake-token-{}", self.new_id());
        let name = self.shared.users.lock().unwrap().get(user).cloned().unwrap_or_else(|| user.to_string());
        let roles = self.shared.roles.lock().unwrap().get(user).cloned().unwrap_or_default();
        self.shared.interactions.lock().unwrap().insert(id.clone(), StoredInteraction { token: token.clone(), received_at: Some(Instant::now()), ..Default::default() });
        let payload = json!({
            "app_permissions": "2248473465835073",
            "application_id": self.application_id,
            "authorizing_integration_owners": { "0": GUILD },
            "channel": { "flags": 0, "guild_id": GUILD, "id": channel, "last_message_id": null, "name": "deploys", "nsfw": false, "parent_id": null, "permissions": "2248473465835073", "position": 0, "rate_limit_per_user": 0, "topic": null, "type": 0 },
            "channel_id": channel,
            "context": 0,
            "data": { "id": self.new_id(), "name": command, "options": options, "type": 1, "guild_id": GUILD },
            "entitlement_sku_ids": [],
            "entitlements": [],
            "guild": { "features": [], "id": GUILD, "locale": "en-US" },
            "guild_id": GUILD,
            "guild_locale": "en-US",
            "id": id,
            "locale": "en-US",
            "member": {
                "avatar": null, "banner": null, "communication_disabled_until": null, "deaf": false, "flags": 0,
                "joined_at": "2025-01-01T00:00:00.000000+00:00", "mute": false, "nick": null, "pending": false,
                "permissions": "2248473465835073", "premium_since": null, "roles": roles, "unusual_dm_activity_until": null,
                "user": { "avatar": null, "avatar_decoration_data": null, "clan": null, "discriminator": "0", "global_name": name, "id": user, "public_flags": 0, "username": name.to_lowercase() }
            },
            "token": token,
            "type": 2,
            "version": 1
        });
        (id, payload)
    }

    pub fn ping_interaction(&self) -> Value {
        json!({ "application_id": self.application_id, "id": self.new_id(), "token": "ping-token", "type": 1, "user": { "id": "1", "username": "discord", "discriminator": "0000", "avatar": null }, "version": 1 })
    }

    /// Records the bot's HTTP answer to an interaction (on Discord, the answer goes to Discord).
    pub fn answered(&self, id: &str, response: &Value) {
        if let Some(i) = self.shared.interactions.lock().unwrap().get_mut(id) {
            i.response = response["type"].as_u64();
            i.response_flags = response["data"]["flags"].as_u64().unwrap_or(0);
            i.answered_at = Some(Instant::now());
            if response["type"] == 4 {
                i.original = response["data"]["content"].as_str().map(str::to_string);
                i.original_flags = i.response_flags;
            }
        }
    }

    /// A reaction dispatch's `d`, as documented (guild channel, with the member).
    pub fn reaction_payload(&self, user: &str, channel: &str, message: &str, emoji: &str) -> Value {
        let name = self.shared.users.lock().unwrap().get(user).cloned().unwrap_or_else(|| user.to_string());
        let roles = self.shared.roles.lock().unwrap().get(user).cloned().unwrap_or_default();
        json!({
            "burst": false, "burst_colors": [], "channel_id": channel, "emoji": { "id": null, "name": emoji }, "guild_id": GUILD,
            "member": { "avatar": null, "banner": null, "communication_disabled_until": null, "deaf": false, "flags": 0,
                "joined_at": "2025-01-01T00:00:00.000000+00:00", "mute": false, "nick": null, "pending": false, "premium_since": null, "roles": roles,
                "user": { "avatar": null, "discriminator": "0", "global_name": name, "id": user, "public_flags": 0, "username": name.to_lowercase() } },
            "message_author_id": BOT_USER, "message_id": message, "type": 0, "user_id": user
        })
    }

    // ---------------------------------------------------------------------------- gateway

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
    pub fn identifies(&self) -> usize {
        self.shared.identifies.load(Ordering::SeqCst)
    }
    pub fn resumes(&self) -> usize {
        self.shared.resumes.load(Ordering::SeqCst)
    }
    pub fn heartbeats(&self) -> usize {
        self.shared.heartbeats.load(Ordering::SeqCst)
    }

    /// Waits until a session is live (READY or RESUMED sent) on connection number `count` or later.
    pub async fn wait_ready(&self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let live = {
                let current = self.shared.current.lock().unwrap().clone();
                current.is_some_and(|id| self.shared.sessions.lock().unwrap().get(&id).is_some_and(|s| s.live.is_some()))
            };
            if live && self.connections() >= count {
                return;
            }
            assert!(Instant::now() < deadline, "the bot never had gateway session #{count} (connections {}, identifies {}, resumes {})", self.connections(), self.identifies(), self.resumes());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends (or, while the bot is disconnected, queues for the RESUME) a dispatch on the current
    /// session; returns its sequence number.
    pub fn dispatch(&self, t: &str, d: Value) -> u64 {
        let current = self.shared.current.lock().unwrap().clone().expect("a gateway session");
        let mut sessions = self.shared.sessions.lock().unwrap();
        let s = sessions.get_mut(&current).expect("the session");
        s.seq += 1;
        let text = json!({ "op": 0, "t": t, "s": s.seq, "d": d }).to_string();
        s.log.push((s.seq, text.clone()));
        if let Some(tx) = &s.live {
            let _ = tx.send(WsCommand::Send(text));
        }
        s.seq
    }

    fn live(&self) -> Option<mpsc::UnboundedSender<WsCommand>> {
        let current = self.shared.current.lock().unwrap().clone()?;
        self.shared.sessions.lock().unwrap().get(&current).and_then(|s| s.live.clone())
    }

    /// Drops the TCP connection (no close frame); the session stays resumable.
    pub fn drop_connection(&self) {
        if let Some(tx) = self.live() {
            let _ = tx.send(WsCommand::Drop);
        }
    }

    /// Op 7 RECONNECT.
    pub fn request_reconnect(&self) {
        if let Some(tx) = self.live() {
            let _ = tx.send(WsCommand::Send(json!({ "op": 7, "d": null }).to_string()));
        }
    }

    /// Op 9 INVALID_SESSION; when not resumable the session is forgotten.
    pub fn invalidate_session(&self, resumable: bool) {
        if !resumable {
            if let Some(id) = self.shared.current.lock().unwrap().clone() {
                if let Some(s) = self.shared.sessions.lock().unwrap().get_mut(&id) {
                    s.id = String::new();
                }
            }
        }
        if let Some(tx) = self.live() {
            let _ = tx.send(WsCommand::Send(json!({ "op": 9, "d": resumable }).to_string()));
        }
    }
}

/// `(X-Signature-Ed25519, X-Signature-Timestamp)` for a body.
pub fn sign(key: &SigningKey, timestamp: i64, body: &str) -> (String, String) {
    let ts = timestamp.to_string();
    let mut message = ts.as_bytes().to_vec();
    message.extend_from_slice(body.as_bytes());
    let sig = key.sign(&message);
    (hex(&sig.to_bytes()), ts)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The application's key pair for a test.
pub fn key_pair(seed: u8) -> (SigningKey, String) {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let public = hex(key.verifying_key().as_bytes());
    (key, public)
}

fn new_id(shared: &Shared) -> String {
    (SNOWFLAKE_BASE + shared.next_id.fetch_add(1, Ordering::SeqCst)).to_string()
}

// ------------------------------------------------------------------------------ schema check

/// Checks `value` against a JSON schema of the spec (the keywords Discord's spec uses).
fn check(spec: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return check(spec, &spec["components"]["schemas"][name], value, at, errors);
    }
    for s in schema["allOf"].as_array().into_iter().flatten() {
        check(spec, s, value, at, errors);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array() {
            let fits = options.iter().any(|s| {
                let mut e = Vec::new();
                check(spec, s, value, at, &mut e);
                e.is_empty()
            });
            if !fits {
                errors.push(format!("{at}: matches none of the {key} alternatives"));
            }
        }
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "string" => value.is_string(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => true,
        });
        if !ok {
            errors.push(format!("{at}: {value} is not of type {t}"));
            return;
        }
    }
    if let Some(c) = schema.get("const") {
        if c != value {
            errors.push(format!("{at}: {value} is not {c}"));
        }
    }
    if let Some(e) = schema["enum"].as_array() {
        if !e.contains(value) {
            errors.push(format!("{at}: {value} is not one of {e:?}"));
        }
    }
    match value {
        Value::String(s) => {
            let n = s.chars().count() as u64;
            if schema["maxLength"].as_u64().is_some_and(|m| n > m) {
                errors.push(format!("{at}: {n} characters, more than {}", schema["maxLength"]));
            }
            if schema["minLength"].as_u64().is_some_and(|m| n < m) {
                errors.push(format!("{at}: {n} characters, fewer than {}", schema["minLength"]));
            }
            if let Some(p) = schema["pattern"].as_str() {
                if !regex::Regex::new(p).map(|r| r.is_match(s)).unwrap_or(true) {
                    errors.push(format!("{at}: {s:?} does not match {p}"));
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if schema["minimum"].as_f64().is_some_and(|m| x < m) || schema["maximum"].as_f64().is_some_and(|m| x > m) {
                errors.push(format!("{at}: {x} is out of range"));
            }
        }
        Value::Array(items) => {
            if schema["maxItems"].as_u64().is_some_and(|m| items.len() as u64 > m) {
                errors.push(format!("{at}: more than {} items", schema["maxItems"]));
            }
            if schema["minItems"].as_u64().is_some_and(|m| (items.len() as u64) < m) {
                errors.push(format!("{at}: fewer than {} items", schema["minItems"]));
            }
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(spec, s, item, &format!("{at}[{i}]"), errors);
                }
            }
        }
        Value::Object(map) => {
            for r in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if !map.contains_key(r) {
                    errors.push(format!("{at}.{r}: required"));
                }
            }
            let props = schema["properties"].as_object();
            for (k, v) in map {
                match props.and_then(|p| p.get(k)) {
                    Some(s) => check(spec, s, v, &format!("{at}.{k}"), errors),
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => errors.push(format!("{at}.{k}: unknown field")),
                        Some(s @ Value::Object(_)) => check(spec, s, v, &format!("{at}.{k}"), errors),
                        _ => {}
                    },
                }
            }
        }
        _ => {}
    }
}

/// The operation a request is for: the matching template with the most literal segments.
fn find_route<'a>(shared: &'a Shared, method: &str, path: &str) -> Result<&'a (String, String, Vec<String>), (u16, String)> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let matches = |t: &[String]| t.len() == segs.len() && t.iter().zip(&segs).all(|(t, s)| t.starts_with('{') || t == s);
    let literal = |t: &[String]| t.iter().filter(|s| !s.starts_with('{')).count();
    let mut candidates: Vec<&(String, String, Vec<String>)> = shared.routes.iter().filter(|(_, _, t)| matches(t)).collect();
    if candidates.is_empty() {
        return Err((404, format!("spec: no route {path}")));
    }
    let best = candidates.iter().map(|(_, _, t)| literal(t)).max().unwrap_or(0);
    candidates.retain(|(_, _, t)| literal(t) == best);
    candidates.into_iter().find(|(m, _, _)| m == method).ok_or_else(|| (405, format!("spec: {method} is not allowed on {path}")))
}

fn validate(shared: &Shared, method: &str, template: &str, path: &str, headers: &HeaderMap, body: &Value, raw_empty: bool) -> Result<(), (u16, String)> {
    let op = &shared.spec["paths"][template][method.to_lowercase()];
    // Path parameters against their schemas.
    let params: Vec<&Value> = shared.spec["paths"][template]["parameters"].as_array().into_iter().flatten().chain(op["parameters"].as_array().into_iter().flatten()).collect();
    let template_segs: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for (t, s) in template_segs.iter().zip(&segs) {
        if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            let decoded = percent_decode(s);
            if let Some(p) = params.iter().find(|p| p["name"] == name && p["in"] == "path") {
                let mut errors = Vec::new();
                check(&shared.spec, &p["schema"], &Value::String(decoded), name, &mut errors);
                if !errors.is_empty() {
                    return Err((400, format!("spec: path parameter {}", errors.join("; "))));
                }
            }
        }
    }
    // Authentication: the bot token, unless the operation also allows none (webhook tokens).
    let security = op["security"].as_array().cloned().unwrap_or_default();
    let anonymous = security.iter().any(|s| s.as_object().is_some_and(|o| o.is_empty()));
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    match auth {
        Some(a) if a == format!("Bot {}", shared.token) => {}
        Some(_) => return Err((401, "auth: wrong token".into())),
        None if anonymous => {}
        None => return Err((401, "auth: no Authorization header".into())),
    }
    let request = &op["requestBody"];
    if request.is_object() {
        if raw_empty {
            if request["required"] == true {
                return Err((400, "spec: a request body is required".into()));
            }
        } else {
            let schema = &request["content"]["application/json"]["schema"];
            let mut errors = Vec::new();
            check(&shared.spec, schema, body, "body", &mut errors);
            if !errors.is_empty() {
                return Err((400, format!("spec: {}", errors.join("; "))));
            }
        }
    } else if !raw_empty {
        return Err((400, "spec: this operation takes no body".into()));
    }
    Ok(())
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

// ------------------------------------------------------------------------------ REST

fn bucket_of(template: &str, method: &str, path: &str) -> (String, String) {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let major = match segs.as_slice() {
        ["channels" | "guilds", id, ..] => format!("{}/{id}", segs[0]),
        ["webhooks" | "interactions", id, token, ..] => format!("{}/{id}/{token}", segs[0]),
        _ => String::new(),
    };
    let hash = format!("{:x}", template.len() * 7919 + method.len() * 131 + template.bytes().map(usize::from).sum::<usize>());
    (hash, major)
}

/// How long Discord checks a nonce's uniqueness ("the past few minutes").
const NONCE_WINDOW: Duration = Duration::from_secs(5 * 60);

fn message_json(m: &StoredMessage) -> Value {
    json!({
        "id": m.id, "channel_id": m.channel, "content": m.content, "type": 0, "flags": m.flags,
        "author": { "id": BOT_USER, "username": "deploybot", "discriminator": "0", "avatar": null, "bot": true, "global_name": null, "public_flags": 0 },
        "attachments": [], "embeds": [], "mentions": [], "mention_roles": [], "mention_everyone": false, "pinned": false, "tts": false,
        "timestamp": "2026-01-01T00:00:00.000000+00:00", "edited_timestamp": null, "components": []
    })
}

fn content_of(body: &Value) -> String {
    let mut text = body["content"].as_str().unwrap_or_default().to_string();
    for e in body["embeds"].as_array().into_iter().flatten() {
        text.push('\n');
        text.push_str(e["description"].as_str().unwrap_or_default());
    }
    text
}

async fn rest(State(shared): State<Arc<Shared>>, method: Method, Path(path): Path<String>, headers: HeaderMap, raw: Bytes) -> Response {
    let path = format!("/{path}");
    let method = method.as_str().to_string();
    let body: Value = if raw.is_empty() { Value::Null } else { serde_json::from_slice(&raw).unwrap_or(Value::String(String::from_utf8_lossy(&raw).into_owned())) };
    let mut call = Call { method: method.clone(), path: path.clone(), route: None, body: body.clone(), status: 200, error: None, at: Instant::now(), created: None, same_as: None };
    let (status, answer, headers_out) = handle(&shared, &method, &path, &headers, &body, raw.is_empty(), &mut call);
    call.status = status;
    shared.calls.lock().unwrap().push(call);
    let mut res = if status == 204 { StatusCode::NO_CONTENT.into_response() } else { (StatusCode::from_u16(status).unwrap(), axum::Json(answer)).into_response() };
    for (k, v) in headers_out {
        res.headers_mut().insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    res
}

fn error_body(code: u64, message: &str) -> Value {
    json!({ "message": message, "code": code })
}

fn handle(shared: &Shared, method: &str, path: &str, headers: &HeaderMap, body: &Value, raw_empty: bool, call: &mut Call) -> (u16, Value, Vec<(String, String)>) {
    let route = match find_route(shared, method, path) {
        Ok(r) => r.clone(),
        Err((status, why)) => {
            call.error = Some(why.clone());
            return (status, error_body(0, &why), vec![]);
        }
    };
    let template = route.1.clone();
    call.route = Some(template.clone());
    if let Err((status, why)) = validate(shared, method, &template, path, headers, body, raw_empty) {
        call.error = Some(why.clone());
        let code = if status == 400 { 50035 } else { 0 };
        return (status, json!({ "message": if status == 401 { "401: Unauthorized" } else { "Invalid Form Body" }, "code": code, "errors": why }), vec![]);
    }
    // Rate limits: the global one, then the bucket's.
    let (bucket, major) = bucket_of(&template, method, path);
    let now = Instant::now();
    if let Some(until) = shared.global_until.lock().unwrap().filter(|u| *u > now) {
        let retry = (until - now).as_secs_f64();
        call.error = Some("rate limit: global, over the limit".into());
        return (429, json!({ "message": "You are being rate limited.", "retry_after": retry, "global": true }), vec![("x-ratelimit-global".into(), "true".into()), ("retry-after".into(), format!("{}", retry.ceil()))]);
    }
    let (limit, period) = shared.limits.lock().unwrap().get(&format!("{method} {template}")).copied().unwrap_or((50, Duration::from_secs(1)));
    let key = format!("{bucket}|{major}");
    let (remaining, reset) = {
        let mut buckets = shared.buckets.lock().unwrap();
        let b = buckets.entry(key).or_insert(Bucket { remaining: limit, reset: now + period });
        if b.reset <= now {
            b.remaining = limit;
            b.reset = now + period;
        }
        if b.remaining == 0 {
            let retry = (b.reset - now).as_secs_f64();
            call.error = Some("rate limit: bucket, over the limit".into());
            let h = vec![("x-ratelimit-limit".into(), limit.to_string()), ("x-ratelimit-remaining".into(), "0".into()), ("x-ratelimit-reset-after".into(), format!("{retry:.3}")), ("x-ratelimit-bucket".into(), bucket.clone()), ("x-ratelimit-scope".into(), "user".into()), ("retry-after".into(), format!("{}", retry.ceil()))];
            return (429, json!({ "message": "You are being rate limited.", "retry_after": retry, "global": false }), h);
        }
        b.remaining -= 1;
        (b.remaining, b.reset - now)
    };
    let mut h: Vec<(String, String)> = vec![
        ("x-ratelimit-limit".into(), limit.to_string()),
        ("x-ratelimit-remaining".into(), remaining.to_string()),
        ("x-ratelimit-reset".into(), format!("{:.3}", (std::time::SystemTime::now() + reset).duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64())),
        ("x-ratelimit-reset-after".into(), format!("{:.3}", reset.as_secs_f64())),
        ("x-ratelimit-bucket".into(), bucket),
    ];
    // Injected faults.
    let fault = {
        let mut faults = shared.faults.lock().unwrap();
        let pos = faults.iter().position(|(r, _)| r.as_deref().is_none_or(|r| template.contains(r)));
        pos.and_then(|p| faults.remove(p)).map(|(_, f)| f)
    };
    match fault {
        Some(Fault::RateLimited { retry_after, global }) => {
            call.error = Some(format!("injected 429 ({retry_after}s{})", if global { ", global" } else { "" }));
            if global {
                *shared.global_until.lock().unwrap() = Some(now + Duration::from_secs_f64(retry_after));
                h = vec![("x-ratelimit-global".into(), "true".into()), ("x-ratelimit-scope".into(), "global".into())];
            } else {
                h.push(("x-ratelimit-scope".into(), "shared".into()));
            }
            h.push(("retry-after".into(), format!("{}", retry_after.ceil())));
            return (429, json!({ "message": "You are being rate limited.", "retry_after": retry_after, "global": global }), h);
        }
        Some(Fault::ServerError) => {
            call.error = Some("injected 500".into());
            return (500, json!({ "message": "500: Internal Server Error", "code": 0 }), h);
        }
        Some(Fault::AnswerLost) | None => {}
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (status, answer) = operation(shared, method, &template, &segs, body, call);
    if matches!(fault, Some(Fault::AnswerLost)) {
        call.error = Some(format!("injected: answered {status}, but the caller got a 502"));
        return (502, json!({ "message": "502: Bad Gateway", "code": 0 }), Vec::new());
    }
    (status, answer, h)
}

fn operation(shared: &Shared, method: &str, template: &str, segs: &[&str], body: &Value, call: &mut Call) -> (u16, Value) {
    let unknown = |code: u64, what: &str| (404, error_body(code, &format!("Unknown {what}")));
    match (method, template) {
        ("GET", "/gateway/bot") => {
            (200, json!({ "url": shared.ws_url.lock().unwrap().clone(), "shards": 1, "session_start_limit": { "total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1 } }))
        }
        ("POST", "/channels/{channel_id}/messages") => {
            let channel = segs[1].to_string();
            let known_channel = shared.channels.lock().unwrap().contains(&channel)
                || shared.threads.lock().unwrap().contains_key(&channel)
                || shared.dms.lock().unwrap().values().any(|d| *d == channel);
            if !known_channel {
                return unknown(10003, "Channel");
            }
            // Create Message: "If true and nonce is present, it will be checked for uniqueness in
            // the past few minutes. If another message was created by the same author with the
            // same nonce, that message will be returned and no new message will be created."
            let nonce = match &body["nonce"] {
                Value::String(n) => Some(n.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            if let (Some(n), Some(true)) = (&nonce, body["enforce_nonce"].as_bool()) {
                let messages = shared.messages.lock().unwrap();
                let recent = |m: &&StoredMessage| m.created.is_some_and(|t| t.elapsed() < NONCE_WINDOW);
                if let Some(m) = messages.values().filter(recent).find(|m| m.nonce.as_ref() == Some(n)) {
                    call.same_as = Some(m.id.clone());
                    return (200, message_json(m));
                }
            }
            let id = new_id(shared);
            let m = StoredMessage { id: id.clone(), channel, content: content_of(body), flags: body["flags"].as_u64().unwrap_or(0), nonce, created: Some(Instant::now()), ..Default::default() };
            call.created = Some(id.clone());
            let answer = message_json(&m);
            shared.messages.lock().unwrap().insert(id, m);
            (200, answer)
        }
        ("PATCH", "/channels/{channel_id}/messages/{message_id}") => {
            let mut messages = shared.messages.lock().unwrap();
            match messages.get_mut(segs[3]).filter(|m| m.channel == segs[1]) {
                Some(m) => {
                    m.content = content_of(body);
                    m.edits += 1;
                    (200, message_json(m))
                }
                None => unknown(10008, "Message"),
            }
        }
        ("POST", "/channels/{channel_id}/messages/{message_id}/threads") => {
            let exists = shared.messages.lock().unwrap().get(segs[3]).is_some_and(|m| m.channel == segs[1]);
            if !exists {
                return unknown(10008, "Message");
            }
            let mut threads = shared.threads.lock().unwrap();
            if threads.contains_key(segs[3]) {
                return (400, error_body(160004, "A thread has already been created for this message"));
            }
            threads.insert(segs[3].to_string(), segs[1].to_string());
            call.created = Some(segs[3].to_string());
            (201, json!({ "id": segs[3], "type": 11, "parent_id": segs[1], "guild_id": GUILD, "name": body["name"], "owner_id": BOT_USER, "message_count": 0, "member_count": 1, "thread_metadata": { "archived": false, "auto_archive_duration": body["auto_archive_duration"].as_u64().unwrap_or(4320), "archive_timestamp": "2026-01-01T00:00:00.000000+00:00", "locked": false } }))
        }
        ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me") => {
            let emoji = percent_decode(segs[5]);
            let mut messages = shared.messages.lock().unwrap();
            match messages.get_mut(segs[3]).filter(|m| m.channel == segs[1]) {
                Some(m) => {
                    let users = m.reactions.entry(emoji).or_default();
                    if !users.iter().any(|u| u == BOT_USER) {
                        users.push(BOT_USER.to_string());
                    }
                    (204, Value::Null)
                }
                None => unknown(10008, "Message"),
            }
        }
        ("GET", "/guilds/{guild_id}/members/{user_id}") => {
            if segs[1] != GUILD {
                return unknown(10004, "Guild");
            }
            let name = shared.users.lock().unwrap().get(segs[3]).cloned();
            match name {
                Some(name) => {
                    let roles = shared.roles.lock().unwrap().get(segs[3]).cloned().unwrap_or_default();
                    (200, json!({ "user": { "id": segs[3], "username": name.to_lowercase(), "global_name": name, "discriminator": "0", "avatar": null }, "nick": null, "roles": roles, "joined_at": "2025-01-01T00:00:00.000000+00:00", "deaf": false, "mute": false, "flags": 0, "pending": false }))
                }
                None => unknown(10013, "User"),
            }
        }
        ("GET", "/users/{user_id}") => match shared.users.lock().unwrap().get(segs[1]) {
            Some(name) => (200, json!({ "id": segs[1], "username": name.to_lowercase(), "global_name": name, "discriminator": "0", "avatar": null })),
            None => unknown(10013, "User"),
        },
        ("POST", "/users/@me/channels") => {
            let user = body["recipient_id"].as_str().unwrap_or_default().to_string();
            let id = shared.dms.lock().unwrap().entry(user.clone()).or_insert_with(|| new_id(shared)).clone();
            (200, json!({ "id": id, "type": 1, "last_message_id": null, "flags": 0, "recipients": [{ "id": user, "username": "someone", "discriminator": "0", "avatar": null }] }))
        }
        ("GET", "/applications/{application_id}/commands") | ("GET", "/applications/{application_id}/guilds/{guild_id}/commands") => {
            if segs[1] != shared.application_id {
                return unknown(10002, "Application");
            }
            let scope = if segs.len() > 3 { segs[3].to_string() } else { "global".into() };
            (200, shared.commands.lock().unwrap().get(&scope).cloned().unwrap_or(json!([])))
        }
        ("PUT", "/applications/{application_id}/commands") | ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands") => {
            if segs[1] != shared.application_id {
                return unknown(10002, "Application");
            }
            let scope = if segs.len() > 3 { segs[3].to_string() } else { "global".into() };
            let stored: Vec<Value> = body
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let mut c = c.clone();
                    c["id"] = json!(new_id(shared));
                    c["application_id"] = json!(shared.application_id);
                    c["version"] = json!(new_id(shared));
                    c["default_member_permissions"] = Value::Null;
                    c["nsfw"] = json!(false);
                    c
                })
                .collect();
            shared.commands.lock().unwrap().insert(scope, json!(stored));
            (200, json!(stored))
        }
        ("POST", "/interactions/{interaction_id}/{interaction_token}/callback") => {
            let mut interactions = shared.interactions.lock().unwrap();
            match interactions.get_mut(segs[1]).filter(|i| i.token == segs[2]) {
                Some(i) if i.response.is_some() => (400, error_body(40060, "Interaction has already been acknowledged.")),
                Some(i) => {
                    i.response = body["type"].as_u64();
                    i.response_flags = body["data"]["flags"].as_u64().unwrap_or(0);
                    i.answered_at = Some(Instant::now());
                    if body["type"] == 4 {
                        i.original = body["data"]["content"].as_str().map(str::to_string);
                        i.original_flags = i.response_flags;
                    }
                    (204, Value::Null)
                }
                None => unknown(10062, "interaction"),
            }
        }
        ("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original") => {
            if segs[1] != shared.application_id {
                return unknown(10015, "Webhook");
            }
            let mut interactions = shared.interactions.lock().unwrap();
            match interactions.iter_mut().find(|(_, i)| i.token == segs[2]) {
                Some((id, i)) if i.response.is_some() => {
                    i.original = Some(content_of(body));
                    i.original_flags = i.response_flags;
                    (200, json!({ "id": id, "channel_id": "0", "content": i.original, "flags": i.original_flags, "type": 20, "author": { "id": BOT_USER, "username": "deploybot", "discriminator": "0", "avatar": null, "bot": true }, "attachments": [], "embeds": [], "mentions": [], "mention_roles": [], "mention_everyone": false, "pinned": false, "tts": false, "timestamp": "2026-01-01T00:00:00.000000+00:00", "edited_timestamp": null }))
                }
                // Not answered yet, or an unknown token: Discord does not know the message.
                _ => unknown(10015, "Webhook"),
            }
        }
        _ => (404, error_body(0, &format!("the double does not implement {method} {template}"))),
    }
}

// ------------------------------------------------------------------------------ gateway

async fn ws_server(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else { return };
            shared.connections.fetch_add(1, Ordering::SeqCst);
            gateway_connection(ws, shared).await;
        });
    }
}

async fn gateway_connection(ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, shared: Arc<Shared>) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<WsCommand>();
    let hello = json!({ "op": 10, "d": { "heartbeat_interval": shared.heartbeat_ms }, "s": null, "t": null });
    if sink.send(Message::text(hello.to_string())).await.is_err() {
        return;
    }
    let mut session: Option<String> = None;
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(WsCommand::Send(text)) => {
                    if sink.send(Message::text(text)).await.is_err() { break; }
                }
                Some(WsCommand::Drop) | None => break,
            },
            frame = stream.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let Ok(p) = serde_json::from_str::<Value>(&text) else {
                    let _ = sink.send(Message::Close(Some(close(4002, "Error while decoding payload.")))).await;
                    break;
                };
                match p["op"].as_u64() {
                    Some(1) => {
                        shared.heartbeats.fetch_add(1, Ordering::SeqCst);
                        if sink.send(Message::text(json!({ "op": 11, "d": null }).to_string())).await.is_err() { break; }
                    }
                    Some(2) => {
                        if p["d"]["token"] != shared.token {
                            let _ = sink.send(Message::Close(Some(close(4004, "Authentication failed.")))).await;
                            break;
                        }
                        if !p["d"]["intents"].is_u64() || p["d"]["properties"]["os"].as_str().is_none() {
                            let _ = sink.send(Message::Close(Some(close(4013, "Invalid intent(s).")))).await;
                            break;
                        }
                        shared.identifies.fetch_add(1, Ordering::SeqCst);
                        let id = format!("session-{}", new_id(&shared));
                        shared.sessions.lock().unwrap().insert(id.clone(), Session { id: id.clone(), log: vec![], seq: 0, live: Some(tx.clone()) });
                        *shared.current.lock().unwrap() = Some(id.clone());
                        session = Some(id.clone());
                        let ready = json!({
                            "v": 10, "user": { "id": BOT_USER, "username": "deploybot", "discriminator": "0", "avatar": null, "bot": true, "global_name": null, "flags": 0, "verified": true },
                            "guilds": [{ "id": GUILD, "unavailable": true }], "session_id": id, "session_type": "normal",
                            "resume_gateway_url": shared.ws_url.lock().unwrap().clone(), "shard": [0, 1],
                            "application": { "id": shared.application_id, "flags": 0 }, "private_channels": [], "relationships": [], "presences": [], "guild_join_requests": [], "geo_ordered_rtc_regions": [], "user_settings": {}
                        });
                        let seq = {
                            let mut sessions = shared.sessions.lock().unwrap();
                            let s = sessions.get_mut(&id).unwrap();
                            s.seq += 1;
                            s.seq
                        };
                        if sink.send(Message::text(json!({ "op": 0, "t": "READY", "s": seq, "d": ready }).to_string())).await.is_err() { break; }
                    }
                    Some(6) => {
                        let id = p["d"]["session_id"].as_str().unwrap_or_default().to_string();
                        let after = p["d"]["seq"].as_u64().unwrap_or(0);
                        if p["d"]["token"] != shared.token {
                            let _ = sink.send(Message::Close(Some(close(4004, "Authentication failed.")))).await;
                            break;
                        }
                        let replay = {
                            let mut sessions = shared.sessions.lock().unwrap();
                            match sessions.get_mut(&id).filter(|s| !s.id.is_empty()) {
                                Some(s) => {
                                    s.live = Some(tx.clone());
                                    s.seq += 1;
                                    let resumed = json!({ "op": 0, "t": "RESUMED", "s": s.seq, "d": null }).to_string();
                                    s.log.push((s.seq, resumed));
                                    Some(s.log.iter().filter(|(n, _)| *n > after).map(|(_, t)| t.clone()).collect::<Vec<_>>())
                                }
                                None => None,
                            }
                        };
                        match replay {
                            Some(texts) => {
                                shared.resumes.fetch_add(1, Ordering::SeqCst);
                                *shared.current.lock().unwrap() = Some(id.clone());
                                session = Some(id);
                                let mut failed = false;
                                for t in texts {
                                    if sink.send(Message::text(t)).await.is_err() { failed = true; break; }
                                }
                                if failed { break; }
                            }
                            None => {
                                if sink.send(Message::text(json!({ "op": 9, "d": false }).to_string())).await.is_err() { break; }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    // The connection is gone; the session stays resumable.
    if let Some(id) = session {
        if let Some(s) = shared.sessions.lock().unwrap().get_mut(&id) {
            if s.live.as_ref().is_some_and(|l| l.same_channel(&tx)) {
                s.live = None;
            }
        }
    }
}

fn close(code: u16, reason: &str) -> tokio_tungstenite::tungstenite::protocol::CloseFrame {
    tokio_tungstenite::tungstenite::protocol::CloseFrame { code: code.into(), reason: reason.to_string().into() }
}

/// A set of the ids in `calls` (test helper).
pub fn ids(calls: &[Call]) -> HashSet<String> {
    calls.iter().filter_map(|c| c.created.clone()).collect()
}
