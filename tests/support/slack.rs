//! A Slack of our own for the tests: the Web API on 127.0.0.1 (every call recorded, and refused
//! the way Slack would refuse it when Slack's published OpenAPI spec would not accept it), fault
//! injection (429 with Retry-After, 500, slow answers, a call carried out whose answer is lost),
//! a Socket Mode WebSocket, and Slack's documented inbound payloads (slash-command form fields,
//! `event_callback` envelopes), signed. It keeps the messages posted, with their metadata, and
//! answers `conversations.history` from them (newest first; metadata with
//! `include_all_metadata`).
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const SPEC_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/slack");

/// Methods Slack has that the published spec misses.
const UNLISTED: &[&str] = &["apps.connections.open"];

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub args: HashMap<String, Value>,
    /// HTTP status sent back.
    pub status: u16,
    /// `error` of an `ok: false` answer.
    pub error: Option<String>,
    pub at: Instant,
    /// The `ts` of the message a successful postMessage created.
    pub ts: Option<String>,
}

impl Call {
    pub fn ok(&self) -> bool {
        self.status == 200 && self.error.is_none()
    }
    pub fn arg(&self, name: &str) -> Option<&str> {
        self.args.get(name).and_then(Value::as_str)
    }
    /// The message's text (the `text` fallback, which carries the same text as the blocks).
    pub fn text(&self) -> &str {
        self.arg("text").unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    RateLimited { retry_after: u64 },
    ServerError,
    Slow(Duration),
    /// Carried out, but the caller gets an HTTP 503 (a proxy on the way gave up).
    AnswerLost,
}

/// What every Web API call meets during an outage ([`FakeSlack::outage`]).
#[derive(Debug, Clone, Copy)]
pub enum Outage {
    /// Answered at once with HTTP 503.
    Fail,
    /// Answered normally, but only after this long.
    Hang(Duration),
}

enum WsCommand {
    Send(String),
    Disconnect,
    Drop,
}

struct Posted {
    ts: String,
    channel: String,
    thread_ts: Option<String>,
    metadata: Option<Value>,
}

struct Shared {
    /// Method → its required arguments (besides the token).
    spec: HashMap<String, Vec<String>>,
    bot_token: String,
    app_token: String,
    ws_url: String,
    calls: Mutex<Vec<Call>>,
    faults: Mutex<VecDeque<(Option<String>, Fault)>>,
    /// Until when every Web API call meets the outage.
    outage: Mutex<Option<(Instant, Outage)>>,
    next_ts: AtomicU64,
    groups: Mutex<HashMap<String, Vec<String>>>,
    users: Mutex<HashMap<String, String>>,
    /// Current text of each posted message, by ts.
    messages: Mutex<HashMap<String, String>>,
    /// Every message posted, in order.
    posted: Mutex<Vec<Posted>>,
    ws: Mutex<Option<mpsc::UnboundedSender<WsCommand>>>,
    connections: AtomicUsize,
    acks: Mutex<Vec<String>>,
}

#[derive(Clone)]
pub struct FakeSlack {
    pub api_url: String,
    shared: Arc<Shared>,
}

fn load_spec() -> HashMap<String, Vec<String>> {
    let text = std::fs::read_to_string(format!("{SPEC_DIR}/web-api-openapi-v2.json")).expect("Slack's OpenAPI spec in tests/fixtures/slack");
    let spec: Value = serde_json::from_str(&text).expect("the spec is JSON");
    let mut out = HashMap::new();
    for (path, ops) in spec["paths"].as_object().expect("paths") {
        let mut required = Vec::new();
        for op in ops.as_object().expect("operations").values() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["required"].as_bool() == Some(true) {
                    required.push(p["name"].as_str().unwrap_or_default().to_string());
                }
            }
        }
        out.insert(path.trim_start_matches('/').to_string(), required);
    }
    out
}

impl FakeSlack {
    pub async fn start(bot_token: &str, app_token: &str) -> FakeSlack {
        let ws_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws_url = format!("ws://{}/link", ws_listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            spec: load_spec(),
            bot_token: bot_token.into(),
            app_token: app_token.into(),
            ws_url,
            calls: Mutex::default(),
            faults: Mutex::default(),
            outage: Mutex::default(),
            next_ts: AtomicU64::new(1),
            groups: Mutex::default(),
            users: Mutex::default(),
            messages: Mutex::default(),
            posted: Mutex::default(),
            ws: Mutex::default(),
            connections: AtomicUsize::new(0),
            acks: Mutex::default(),
        });
        let router = axum::Router::new().route("/api/{method}", axum::routing::any(api)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_url = format!("http://{}/api", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        tokio::spawn(ws_server(ws_listener, shared.clone()));
        FakeSlack { api_url, shared }
    }

    pub fn add_user(&self, id: &str, display_name: &str) {
        self.shared.users.lock().unwrap().insert(id.into(), display_name.into());
    }

    pub fn add_group(&self, id: &str, members: &[&str]) {
        self.shared.groups.lock().unwrap().insert(id.into(), members.iter().map(|m| m.to_string()).collect());
    }

    /// The next `count` calls (of `method`, or of any Web API method) fail with `fault`.
    pub fn inject(&self, method: Option<&str>, fault: Fault, count: usize) {
        let mut f = self.shared.faults.lock().unwrap();
        for _ in 0..count {
            f.push_back((method.map(str::to_string), fault));
        }
    }

    /// Every Web API call that arrives in the next `period` meets `outage`; returns when it ends.
    pub fn outage(&self, outage: Outage, period: Duration) -> Instant {
        let until = Instant::now() + period;
        *self.shared.outage.lock().unwrap() = Some((until, outage));
        until
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap().clone()
    }

    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.method == method).collect()
    }

    /// Calls Slack would have refused as malformed (unknown method, missing argument or token).
    pub fn refusals(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| matches!(c.error.as_deref(), Some("unknown_method" | "invalid_arguments" | "not_authed" | "invalid_auth" | "no_text" | "invalid_blocks")))
            .collect()
    }

    pub fn message_text(&self, ts: &str) -> Option<String> {
        self.shared.messages.lock().unwrap().get(ts).cloned()
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
                let summary: Vec<String> = calls.iter().map(|c| format!("{} {} {:?} {}", c.method, c.status, c.error, c.text().lines().next().unwrap_or_default())).collect();
                panic!("timed out waiting for {what}; Slack saw:\n{}", summary.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first successful chat.postMessage whose text contains `needle`.
    pub async fn wait_for_post(&self, needle: &str, timeout: Duration) -> Call {
        let calls = self.wait_until(&format!("a message containing {needle:?}"), timeout, |calls| calls.iter().any(|c| c.method == "chat.postMessage" && c.ok() && c.text().contains(needle))).await;
        calls.into_iter().find(|c| c.method == "chat.postMessage" && c.ok() && c.text().contains(needle)).unwrap()
    }

    pub async fn wait_for_ephemeral(&self, user: &str, needle: &str, timeout: Duration) -> Call {
        let pred = |c: &Call| c.method == "chat.postEphemeral" && c.ok() && c.arg("user") == Some(user) && c.text().contains(needle);
        let calls = self.wait_until(&format!("an ephemeral to {user} containing {needle:?}"), timeout, |calls| calls.iter().any(pred)).await;
        calls.into_iter().find(pred).unwrap()
    }

    // ------------------------------------------------------------------ Socket Mode

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    pub fn acks(&self) -> Vec<String> {
        self.shared.acks.lock().unwrap().clone()
    }

    pub async fn wait_connected(&self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.connections() < count || self.shared.ws.lock().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the bot did not open Socket Mode connection #{count}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn ws_command(&self, c: WsCommand) {
        let tx = self.shared.ws.lock().unwrap().clone().expect("a Socket Mode connection");
        tx.send(c).ok();
    }

    /// Pushes an envelope; returns its envelope id.
    pub fn push_envelope(&self, kind: &str, payload: Value) -> String {
        let id = format!("env-{}", self.shared.next_ts.fetch_add(1, Ordering::SeqCst));
        let envelope = json!({ "envelope_id": id, "type": kind, "payload": payload, "accepts_response_payload": kind != "events_api", "retry_attempt": 0, "retry_reason": "" });
        self.ws_command(WsCommand::Send(envelope.to_string()));
        id
    }

    /// Slack's `disconnect` message (the bot must reconnect).
    pub fn disconnect(&self) {
        self.ws_command(WsCommand::Disconnect);
    }

    /// The TCP connection vanishes without a close handshake.
    pub fn drop_socket(&self) {
        self.ws_command(WsCommand::Drop);
        *self.shared.ws.lock().unwrap() = None;
    }

    pub async fn wait_ack(&self, envelope_id: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.acks().iter().any(|a| a == envelope_id) {
            assert!(Instant::now() < deadline, "envelope {envelope_id} was not acknowledged");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn slack_error(error: &str) -> Value {
    json!({ "ok": false, "error": error })
}

async fn api(State(s): State<Arc<Shared>>, Path(method): Path<String>, Query(query): Query<HashMap<String, String>>, headers: HeaderMap, body: Bytes) -> Response {
    let mut args: HashMap<String, Value> = query.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if content_type.starts_with("application/json") {
        if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(&body) {
            args.extend(o);
        } else if !body.is_empty() {
            return record(&s, &method, args, 200, slack_error("invalid_json"), None);
        }
    } else if !body.is_empty() {
        args.extend(url::form_urlencoded::parse(&body).into_owned().map(|(k, v)| (k, Value::String(v))));
    }
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::to_string);
    let token = bearer.or_else(|| args.get("token").and_then(Value::as_str).map(str::to_string));

    // What Slack's published spec accepts.
    let unlisted = UNLISTED.contains(&method.as_str());
    let Some(required) = s.spec.get(&method).cloned().or_else(|| unlisted.then(Vec::new)) else {
        return record(&s, &method, args, 200, slack_error("unknown_method"), None);
    };
    let Some(token) = token else { return record(&s, &method, args, 200, slack_error("not_authed"), None) };
    let expected = if method == "apps.connections.open" { &s.app_token } else { &s.bot_token };
    if &token != expected {
        return record(&s, &method, args, 200, slack_error("invalid_auth"), None);
    }
    if let Some(missing) = required.iter().filter(|r| *r != "token").find(|r| args.get(*r).is_none_or(|v| v.is_null() || v.as_str() == Some(""))) {
        let mut e = slack_error("invalid_arguments");
        e["response_metadata"] = json!({ "messages": [format!("[ERROR] missing required field: {missing}")] });
        return record(&s, &method, args, 200, e, None);
    }
    if method.starts_with("chat.") {
        if args.get("text").and_then(Value::as_str).is_none_or(str::is_empty) && !args.contains_key("blocks") {
            return record(&s, &method, args, 200, slack_error("no_text"), None);
        }
        if let Some(blocks) = args.get("blocks") {
            let blocks = match blocks {
                Value::String(s) => serde_json::from_str::<Value>(s).unwrap_or(Value::Null),
                other => other.clone(),
            };
            let valid = blocks.as_array().is_some_and(|b| {
                b.len() <= 50 && b.iter().all(|b| b["type"] == "section" && b["text"]["type"] == "mrkdwn" && b["text"]["text"].as_str().is_some_and(|t| !t.is_empty() && t.chars().count() <= 3000))
            });
            if !valid {
                return record(&s, &method, args, 200, slack_error("invalid_blocks"), None);
            }
        }
    }

    let outage = s.outage.lock().unwrap().filter(|(until, _)| Instant::now() < *until).map(|(_, o)| o);
    match outage {
        Some(Outage::Fail) => {
            record(&s, &method, args, 503, Value::Null, None);
            return (StatusCode::SERVICE_UNAVAILABLE, "Slack is having trouble").into_response();
        }
        Some(Outage::Hang(d)) => tokio::time::sleep(d).await,
        None => {}
    }

    // Injected faults.
    let fault = {
        let mut faults = s.faults.lock().unwrap();
        let pos = faults.iter().position(|(m, _)| m.as_deref().is_none_or(|m| m == method));
        pos.and_then(|p| faults.remove(p)).map(|(_, f)| f)
    };
    if let Some(Fault::AnswerLost) = fault {
        let (_, _, ts) = carry_out(&s, &method, &args);
        record(&s, &method, args, 503, Value::Null, ts);
        return (StatusCode::SERVICE_UNAVAILABLE, "upstream connect error or disconnect/reset before headers").into_response();
    }
    match fault {
        Some(Fault::RateLimited { retry_after }) => {
            record(&s, &method, args, 429, slack_error("ratelimited"), None);
            return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", retry_after.to_string()), ("content-type", "application/json".into())], slack_error("ratelimited").to_string()).into_response();
        }
        Some(Fault::ServerError) => {
            record(&s, &method, args, 500, Value::Null, None);
            return (StatusCode::INTERNAL_SERVER_ERROR, "upstream trouble").into_response();
        }
        Some(Fault::Slow(d)) => tokio::time::sleep(d).await,
        Some(Fault::AnswerLost) | None => {}
    }
    let (status, answer, ts) = carry_out(&s, &method, &args);
    record(&s, &method, args, status, answer, ts)
}

/// What a call does once it is accepted: its answer, and the ts of a message it posted.
fn carry_out(s: &Shared, method: &str, args: &HashMap<String, Value>) -> (u16, Value, Option<String>) {
    let str_arg = |k: &str| args.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let answer = match method {
        "auth.test" => json!({ "ok": true, "url": "https://example.slack.com/", "team": "Example", "user": "deploybot", "team_id": "T0TEAM", "user_id": "U0BOT", "bot_id": "B0BOT" }),
        "apps.connections.open" => json!({ "ok": true, "url": s.ws_url }),
        "chat.postMessage" => {
            let ts = format!("1700000000.{:06}", s.next_ts.fetch_add(1, Ordering::SeqCst));
            s.messages.lock().unwrap().insert(ts.clone(), str_arg("text"));
            // Metadata comes as an object in a JSON body, as a JSON string in a form.
            let metadata = match args.get("metadata") {
                Some(Value::String(text)) => serde_json::from_str::<Value>(text).ok(),
                Some(v @ Value::Object(_)) => Some(v.clone()),
                _ => None,
            };
            let thread = args.get("thread_ts").and_then(Value::as_str).map(str::to_string);
            s.posted.lock().unwrap().push(Posted { ts: ts.clone(), channel: str_arg("channel"), thread_ts: thread, metadata });
            let ans = json!({ "ok": true, "channel": str_arg("channel"), "ts": ts, "message": { "type": "message", "text": str_arg("text"), "user": "U0BOT", "bot_id": "B0BOT", "ts": ts } });
            return (200, ans, Some(ts));
        }
        "chat.update" => {
            let ts = str_arg("ts");
            let known = s.messages.lock().unwrap().contains_key(&ts);
            if !known {
                return (200, slack_error("message_not_found"), None);
            }
            s.messages.lock().unwrap().insert(ts.clone(), str_arg("text"));
            json!({ "ok": true, "channel": str_arg("channel"), "ts": ts, "text": str_arg("text"), "message": { "text": str_arg("text"), "user": "U0BOT" } })
        }
        // The channel's messages, newest first, without thread replies; `limit` (default 100).
        "conversations.history" => {
            let channel = str_arg("channel");
            let limit = str_arg("limit").parse::<usize>().ok().or_else(|| args.get("limit").and_then(Value::as_u64).map(|l| l as usize)).unwrap_or(100);
            let with_metadata = matches!(args.get("include_all_metadata"), Some(Value::Bool(true))) || str_arg("include_all_metadata") == "true";
            let texts = s.messages.lock().unwrap().clone();
            let posted = s.posted.lock().unwrap();
            let messages: Vec<Value> = posted
                .iter()
                .rev()
                .filter(|p| p.channel == channel && p.thread_ts.is_none())
                .take(limit)
                .map(|p| {
                    let mut m = json!({ "type": "message", "user": "U0BOT", "bot_id": "B0BOT", "text": texts.get(&p.ts).cloned().unwrap_or_default(), "ts": p.ts });
                    if let (true, Some(md)) = (with_metadata, &p.metadata) {
                        m["metadata"] = md.clone();
                    }
                    m
                })
                .collect();
            json!({ "ok": true, "messages": messages, "has_more": false, "pin_count": 0, "response_metadata": { "next_cursor": "" } })
        }
        "chat.postEphemeral" => json!({ "ok": true, "message_ts": format!("1700000001.{:06}", s.next_ts.fetch_add(1, Ordering::SeqCst)) }),
        "users.info" => {
            let id = str_arg("user");
            let name = s.users.lock().unwrap().get(&id).cloned();
            match name {
                Some(n) => json!({ "ok": true, "user": { "id": id, "team_id": "T0TEAM", "name": n.to_lowercase(), "real_name": n, "profile": { "display_name": n, "real_name": n } } }),
                None => slack_error("user_not_found"),
            }
        }
        "usergroups.users.list" => {
            let members = s.groups.lock().unwrap().get(&str_arg("usergroup")).cloned();
            match members {
                Some(m) => json!({ "ok": true, "users": m }),
                None => slack_error("no_such_subteam"),
            }
        }
        _ => json!({ "ok": true }),
    };
    (200, answer, None)
}

fn record(s: &Shared, method: &str, args: HashMap<String, Value>, status: u16, answer: Value, ts: Option<String>) -> Response {
    let error = if status == 200 { answer["error"].as_str().map(str::to_string) } else { None };
    s.calls.lock().unwrap().push(Call { method: method.into(), args, status, error, at: Instant::now(), ts });
    (StatusCode::from_u16(status).unwrap(), axum::Json(answer)).into_response()
}

async fn ws_server(listener: tokio::net::TcpListener, s: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        let s = s.clone();
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
            let (tx, mut rx) = mpsc::unbounded_channel();
            let hello = json!({ "type": "hello", "num_connections": 1, "debug_info": { "host": "fake-slack", "approximate_connection_time": 18060 }, "connection_info": { "app_id": "A0APP" } });
            if ws.send(Message::text(hello.to_string())).await.is_err() {
                return;
            }
            *s.ws.lock().unwrap() = Some(tx);
            s.connections.fetch_add(1, Ordering::SeqCst);
            loop {
                tokio::select! {
                    m = ws.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            if let Ok(v) = serde_json::from_str::<Value>(&t) {
                                if let Some(id) = v["envelope_id"].as_str() {
                                    s.acks.lock().unwrap().push(id.to_string());
                                }
                            }
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => {}
                    },
                    c = rx.recv() => match c {
                        Some(WsCommand::Send(text)) => { let _ = ws.send(Message::text(text)).await; }
                        Some(WsCommand::Disconnect) => {
                            let d = json!({ "type": "disconnect", "reason": "refresh_requested", "debug_info": { "host": "fake-slack" } });
                            let _ = ws.send(Message::text(d.to_string())).await;
                        }
                        Some(WsCommand::Drop) | None => return,
                    },
                }
            }
        });
    }
}

// ---------------------------------------------------------------------- inbound payloads

/// Slack's slash-command form fields.
pub fn slash_command(command: &str, text: &str, user_id: &str, user_name: &str, channel_id: &str, trigger: u64) -> Vec<(String, String)> {
    [
        ("token", "gIkuvaNzQIHg97ATvDxqgjtO"),
        ("team_id", "T0TEAM"),
        ("team_domain", "example"),
        ("enterprise_id", "E0ENT"),
        ("enterprise_name", "Example"),
        ("channel_id", channel_id),
        ("channel_name", "deploys"),
        ("user_id", user_id),
        ("user_name", user_name),
        ("command", command),
        ("text", &escape(text)),
        ("response_url", "https://hooks.slack.com/commands/1234/5678"),
        ("trigger_id", &format!("{trigger}.1234.abcdef{trigger}")),
        ("api_app_id", "A0APP"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Slack escapes these three in the text it sends.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The slash command as a Socket Mode `slash_commands` payload.
pub fn slash_command_payload(fields: &[(String, String)]) -> Value {
    Value::Object(fields.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
}

/// An `event_callback` envelope with a `reaction_added` / `reaction_removed` event, checked
/// against the required fields of Slack's event wrapper schema.
pub fn reaction_event(event_id: &str, kind: &str, user: &str, reaction: &str, channel: &str, ts: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    let envelope = json!({
        "token": "XXYYZZ",
        "team_id": "T0TEAM",
        "api_app_id": "A0APP",
        "event": {
            "type": kind,
            "user": user,
            "reaction": reaction,
            "item_user": "U0BOT",
            "item": { "type": "message", "channel": channel, "ts": ts },
            "event_ts": format!("{now}.000200"),
        },
        "type": "event_callback",
        "event_id": event_id,
        "event_time": now,
        "authed_users": ["U0BOT"],
    });
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(format!("{SPEC_DIR}/event-wrapper-schema.json")).unwrap()).unwrap();
    for field in schema["required"].as_array().unwrap() {
        assert!(envelope.get(field.as_str().unwrap()).is_some(), "the test's envelope lacks {field}");
    }
    envelope
}

/// `X-Slack-Request-Timestamp` and `X-Slack-Signature` for a body.
pub fn sign(secret: &str, timestamp: i64, body: &str) -> (String, String) {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    (timestamp.to_string(), format!("v0={hex}"))
}

pub fn form_body(fields: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish()
}
