//! Discord end to end, in both modes, against a Discord of our own (tests/support/discord.rs):
//! the real app (engine, job runner, outbox, HTTP listener, gateway client) on 127.0.0.1,
//! `command` targets whose deploy script is a small shell script, a health endpoint that
//! reports the deployed version broken when it is, and a clock pinned to an open production
//! window. Commands arrive as signed `POST /discord/interactions` (interactions mode) or as
//! `INTERACTION_CREATE` dispatches (gateway mode); reactions always come over the gateway.

mod support;
#[path = "support/discord.rs"]
mod discord_support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use deploybot::app::{self, DiscordApp};
use deploybot::chat::ChatPlatform;
use deploybot::engine::clock::ShiftedClock;
use deploybot::model::DeploymentState;
use discord_support::{FakeDiscord, Fault};
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use tokio::sync::watch;


const LONG: Duration = Duration::from_secs(40);
const SHORT: Duration = Duration::from_secs(8);

const STAGING: &str = "1100000000000000010";
const PROD: &str = "1100000000000000020";
const ALICE: &str = "1300000000000000001";
const BOB: &str = "1300000000000000002";
const CAROL: &str = "1300000000000000003";
const DAN: &str = "1300000000000000004";
const DEVOPS: &str = "1400000000000000001";
const APP_ID: &str = "1500000000000000001";

static SEQ: AtomicU64 = AtomicU64::new(1);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Gateway,
    Interactions,
}

/// `GET /{env}/health`: DOWN while the backend's deployed version has `-broken` in it.
async fn health_server(dir: PathBuf) -> std::net::SocketAddr {
    let router = axum::Router::new().route(
        "/{env}/health",
        axum::routing::get(move |axum::extract::Path(env): axum::extract::Path<String>| {
            let dir = dir.clone();
            async move {
                let version = std::fs::read_to_string(dir.join(format!("{env}-backend.version"))).unwrap_or_default();
                if version.contains("broken") {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "status": "DOWN" })))
                } else {
                    (axum::http::StatusCode::OK, axum::Json(json!({ "status": "UP" })))
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// The token is a `${VAR}` each test process names on its own; the public key is literal.
struct Secrets {
    token: String,
    var: String,
    key: SigningKey,
    public_key: String,
}

impl Secrets {
    fn new() -> Secrets {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let salt = format!("{}{n}", std::process::id());
        let (key, public_key) = discord_support::key_pair((n % 200) as u8 + 7);
        Secrets { token: format!("MTAwMDAw.test-{salt}.bot-token"), var: format!("DEPLOYBOT_TEST_DISCORD_TOKEN_{salt}"), key, public_key }
    }
}

fn config_text(dir: &Path, health: std::net::SocketAddr, mode: Mode, api_url: &str, secrets: &Secrets) -> String {
    let d = dir.display();
    let env = |name: &str, channel: &str, alias: &str, extra: &str| {
        format!(
            r#"
[environments.{name}]
channel = "{channel}"
aliases = ["{alias}"]
checklist = ["Deployment window scheduled and communicated"]
{extra}
target = {{ kind = "command", deploy = ["sh", "{d}/deploy.sh", "{{env}}", "{{service}}", "{{version}}"], timeout = "20s" }}

[environments.{name}.verify]
retries = 1
backoff = "50ms"
timeout = "2s"

[[environments.{name}.verify.health]]
name = "backend health"
url = "http://{health}/{name}/health"
expect_json = {{ status = "UP" }}
"#
        )
    };
    let prod_extra = format!(
        r#"window = {{ timezone = "America/New_York", allow = [ {{ days = "tue-wed", hours = "10:00-14:00" }} ] }}
approvals = {{ required = 1, approvers = ["{CAROL}", "role:{DEVOPS}"], expires_after = "30m" }}"#
    );
    let mode = match mode {
        Mode::Gateway => "gateway",
        Mode::Interactions => "interactions",
    };
    format!(
        r#"[bot]
database_url = "sqlite://{d}/deploybot.db"
listen = "127.0.0.1:0"
timezone = "America/New_York"

[chat]
platform = "discord"

[chat.discord]
mode = "{mode}"
token = "${{{var}}}"
application_id = "{APP_ID}"
public_key = "{public_key}"
guild_id = "{guild}"
api_url = "{api_url}"

[services.backend]
image = "invoiceme/invoice-me-backend"
order = 1

[services.frontend]
image = "invoiceme/invoice-me-frontend"
order = 2
{}{}"#,
        env("staging", STAGING, "stg", ""),
        env("production", PROD, "prod", &prod_extra),
        var = secrets.var,
        public_key = secrets.public_key,
        guild = discord_support::GUILD,
    )
}

struct World {
    dir: tempfile::TempDir,
    discord: FakeDiscord,
    secrets: Secrets,
    health: std::net::SocketAddr,
}

impl World {
    async fn new() -> World {
        app::init_tracing("text");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("deploy.sh"), support::bot::DEPLOY_SH).unwrap();
        let secrets = Secrets::new();
        let discord = FakeDiscord::start(&secrets.token, APP_ID).await;
        discord.add_channel(STAGING);
        discord.add_channel(PROD);
        discord.add_user(ALICE, "Alice", &[]);
        discord.add_user(BOB, "Bob", &[]);
        discord.add_user(CAROL, "Carol", &[]);
        discord.add_user(DAN, "Dan", &[DEVOPS]);
        let health = health_server(dir.path().to_path_buf()).await;
        World { dir, discord, secrets, health }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Starts the bot (again, on the same database) in `mode`; waits for its gateway session.
    async fn start(&self, mode: Mode) -> Bot {
        let text = config_text(self.dir.path(), self.health, mode, &self.discord.api_url, &self.secrets);
        let mut config = support::bot::parse_config(&text);
        config.vars = deploybot::secrets::Vars::from_pairs([(self.secrets.var.as_str(), self.secrets.token.as_str())]);
        let clock = Arc::new(ShiftedClock::at(support::bot::open_tuesday(&config, "production")));
        let app = app::build_discord_app(config, clock).await.unwrap();
        let (stop, shutdown) = watch::channel(false);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut tasks = app::spawn_loops(&app.engine, shutdown.clone());
        let (engine, routes, serve_shutdown) = (app.engine.clone(), app.routes(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            let _ = app::serve_with(engine, routes, listener, serve_shutdown).await;
        }));
        let connections = self.discord.connections();
        tasks.extend(app::start_discord(&app, shutdown));
        self.discord.wait_ready(connections + 1, LONG).await;
        Bot { app, stop, tasks, base: format!("http://{addr}"), mode, http: reqwest::Client::new(), key: self.secrets.key.clone(), discord: self.discord.clone() }
    }
}

struct Bot {
    app: DiscordApp,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    base: String,
    mode: Mode,
    http: reqwest::Client,
    key: SigningKey,
    discord: FakeDiscord,
}

impl Bot {
    async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(SHORT, t).await;
        }
        self.app.engine.store.close().await;
    }

    async fn signed_post(&self, body: &str, key: &SigningKey, timestamp: i64) -> reqwest::Response {
        let (sig, ts) = discord_support::sign(key, timestamp, body);
        self.http.post(format!("{}/discord/interactions", self.base)).header("content-type", "application/json").header("x-signature-ed25519", sig).header("x-signature-timestamp", ts).body(body.to_string()).send().await.unwrap()
    }

    /// A slash command, the way the bot's mode receives it; checks Discord got its answer within
    /// 3 s (deferred and private). Returns the interaction id.
    async fn command(&self, user: &str, channel: &str, command: &str, options: Value) -> String {
        let (id, payload) = self.discord.command_interaction(user, channel, command, options);
        let started = Instant::now();
        match self.mode {
            Mode::Interactions => {
                let res = self.signed_post(&payload.to_string(), &self.key, Utc::now().timestamp()).await;
                assert_eq!(res.status(), 200, "/{command} was not answered");
                let answer: Value = res.json().await.unwrap();
                assert_eq!(answer["type"], 5, "a deferred response: {answer}");
                assert_eq!(answer["data"]["flags"], 64, "private: {answer}");
                self.discord.answered(&id, &answer);
            }
            Mode::Gateway => {
                self.discord.dispatch("INTERACTION_CREATE", payload);
                let deadline = Instant::now() + SHORT;
                while self.discord.interaction(&id).and_then(|i| i.response).is_none() {
                    assert!(Instant::now() < deadline, "the bot never answered interaction {id}: {:?}", self.discord.calls());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let i = self.discord.interaction(&id).unwrap();
                assert_eq!((i.response, i.response_flags), (Some(5), 64), "a deferred private response");
            }
        }
        assert!(started.elapsed() < Duration::from_secs(3), "answered after Discord's 3 s");
        id
    }

    fn react(&self, user: &str, emoji: &str, channel: &str, message: &str) {
        self.discord.dispatch("MESSAGE_REACTION_ADD", self.discord.reaction_payload(user, channel, message, emoji));
    }

    async fn wait_state(&self, id: i64, states: &[DeploymentState], timeout: Duration) -> DeploymentState {
        let deadline = Instant::now() + timeout;
        loop {
            let d = self.app.engine.store.deployment(id).await.unwrap().expect("deployment");
            if states.contains(&d.state) {
                return d.state;
            }
            if Instant::now() > deadline {
                let steps = self.app.engine.store.steps(id).await.unwrap();
                panic!("deployment #{id} is {:?} ({:?}), expected one of {states:?}; steps: {steps:#?}", d.state, d.error);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The newest deployment other than `except`, once there is one.
    async fn latest_except(&self, except: Option<i64>) -> i64 {
        let deadline = Instant::now() + SHORT;
        loop {
            if let Some(d) = self.app.engine.store.deployments(None, &[], 1).await.unwrap().first().filter(|d| Some(d.id) != except) {
                return d.id;
            }
            assert!(Instant::now() < deadline, "no deployment was requested");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn latest(&self) -> i64 {
        self.latest_except(None).await
    }
}

fn opts(list: &[(&str, Value)]) -> Value {
    Value::Array(list.iter().map(|(n, v)| json!({ "name": n, "type": if v.is_boolean() { 5 } else if v.is_number() { 4 } else { 3 }, "value": v })).collect())
}

/// Nothing left pending, no call Discord would refuse, no 429 the bot could have avoided (it
/// honoured the bucket headers), no message posted twice, edits a second apart per channel.
async fn assert_conformant(bot: &Bot) {
    let discord = &bot.discord;
    let deadline = Instant::now() + LONG;
    loop {
        let far = Utc::now().timestamp_millis() + 3_600_000;
        let pending = bot.app.engine.store.outbox_due(far, 100).await.unwrap();
        if pending.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "messages never delivered: {:?}", pending.iter().map(|m| &m.key).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(discord.refusals().is_empty(), "Discord would have refused: {:#?}", discord.refusals());
    let over: Vec<_> = discord.calls().into_iter().filter(|c| c.error.as_deref().is_some_and(|e| e.contains("over the limit"))).collect();
    assert!(over.is_empty(), "calls made while their bucket was empty: {over:#?}");
    let posts: Vec<_> = discord.calls_to("POST", "/channels/{channel_id}/messages").into_iter().filter(|c| c.created.is_some()).collect();
    for (i, a) in posts.iter().enumerate() {
        for b in &posts[i + 1..] {
            assert!(!(a.path == b.path && a.content() == b.content()), "posted twice: {}", a.content());
        }
    }
    let edits: Vec<_> = discord.calls_to("PATCH", "/channels/{channel_id}/messages/{message_id}").into_iter().filter(|c| c.ok()).collect();
    for channel in [STAGING, PROD] {
        let times: Vec<Instant> = edits.iter().filter(|c| c.channel() == Some(channel)).map(|c| c.at).collect();
        for w in times.windows(2) {
            let gap = w[1].duration_since(w[0]);
            assert!(gap >= Duration::from_millis(900), "two edits in {channel} only {gap:?} apart");
        }
    }
}

fn progress_of(discord: &FakeDiscord, channel: &str, id: i64, version: &str, env: &str) -> Option<discord_support::StoredMessage> {
    discord.messages_in(channel).into_iter().find(|m| m.content.contains(&format!("#{id} {version} → {env}")) && !m.content.contains("Approval needed"))
}

/// Waits for deployment `id`'s progress message in `channel`.
async fn wait_progress(discord: &FakeDiscord, channel: &str, id: i64, version: &str, env: &str, timeout: Duration) -> discord_support::StoredMessage {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(p) = progress_of(discord, channel, id, version, env) {
            return p;
        }
        assert!(Instant::now() < deadline, "no progress message");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/deploy v1.0.0 prod` → a private "requested" answer → the approval message, with ✅ and ❌
/// added by the bot → the requester's and a non-approver's reactions are ignored (said once in
/// the thread) → an approver through a role approves → the progress message is edited through
/// every step → `/history`.
async fn deploy_end_to_end(mode: Mode) {
    let world = World::new().await;
    let bot = world.start(mode).await;
    let discord = &world.discord;
    std::fs::write(world.path().join("sleep"), "1").unwrap();

    let cmd = bot.command(ALICE, PROD, "deploy", opts(&[("version", json!("v1.0.0")), ("env", json!("prod"))])).await;
    discord.wait_for_answer(&cmd, "requested", SHORT).await;
    let id = bot.latest().await;
    let approval = discord.wait_for_message(Some(PROD), &format!("Approval needed for #{id} v1.0.0 → production"), SHORT).await;
    assert!(approval.content.contains("**"), "Discord bold: {}", approval.content);
    // The bot's own reactions, so approvers only have to click.
    let deadline = Instant::now() + SHORT;
    while discord.message(&approval.id).unwrap().reactions.len() < 2 {
        assert!(Instant::now() < deadline, "the bot did not add ✅ and ❌: {:?}", discord.message(&approval.id));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reactions = discord.message(&approval.id).unwrap().reactions;
    assert!(reactions.contains_key("✅") && reactions.contains_key("❌"), "{reactions:?}");
    // Its own reactions come back over the gateway, and are not votes.
    bot.react(discord_support::BOT_USER, "✅", PROD, &approval.id);

    bot.react(ALICE, "✅", PROD, &approval.id);
    bot.react(BOB, "✅", PROD, &approval.id);
    // Notes go in the deployment's thread, started from its progress message.
    let progress = progress_of(discord, PROD, id, "v1.0.0", "production").expect("a progress message");
    discord.wait_until("the deployment's thread", SHORT, |_| discord.thread_of(&progress.id).is_some()).await;
    let thread = discord.thread_of(&progress.id).unwrap();
    let note = discord.wait_for_message(Some(&thread), "does not count: they are not an approver", SHORT).await;
    assert!(note.content.contains(&format!("<@{BOB}>")) && note.content.contains(&format!("<@{CAROL}>")), "mentions, not raw ids: {}", note.content);
    discord.wait_for_message(Some(&thread), "your own reaction does not count", SHORT).await;
    bot.react(BOB, "✅", PROD, &approval.id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(discord.messages_in(&thread).iter().filter(|m| m.content.contains("not an approver")).count(), 1, "told once");
    assert!(!discord.messages_in(&thread).iter().any(|m| m.content.contains(&format!("<@{}>", discord_support::BOT_USER))), "the bot's reaction was taken for a vote");
    assert_eq!(bot.app.engine.store.deployment(id).await.unwrap().unwrap().state, DeploymentState::AwaitingApproval);

    bot.react(DAN, "✅", PROD, &approval.id);
    bot.wait_state(id, &[DeploymentState::Succeeded], LONG).await;
    assert_eq!(std::fs::read_to_string(world.path().join("production-backend.version")).unwrap().trim(), "v1.0.0");

    let text = discord.wait_for_text(&progress.id, "succeeded", SHORT).await;
    for step in bot.app.engine.store.steps(id).await.unwrap() {
        assert!(text.contains(&step.name), "the progress message lacks step {}:\n{text}", step.name);
    }
    assert!(text.contains("approved by @Dan"), "votes show display names:\n{text}");
    assert!(discord.message(&progress.id).unwrap().edits >= 2, "the progress message is edited in place");
    discord.wait_for_text(&approval.id, "approved", SHORT).await;

    let history = bot.command(ALICE, PROD, "history", opts(&[("env", json!("prod"))])).await;
    discord.wait_for_answer(&history, "v1.0.0", SHORT).await;
    // A usage error is private, with the usage line.
    let bad = bot.command(ALICE, PROD, "deploy", opts(&[("version", json!("1.0")), ("env", json!("prod"))])).await;
    let usage = discord.wait_for_answer(&bad, "/deploy", SHORT).await;
    assert!(usage.contains("⚠️"), "{usage}");
    assert_conformant(&bot).await;
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_runs_end_to_end_over_the_gateway() {
    deploy_end_to_end(Mode::Gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_runs_end_to_end_over_the_interactions_endpoint() {
    deploy_end_to_end(Mode::Interactions).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_stale_signature_is_refused_with_401_and_ping_gets_pong() {
    let world = World::new().await;
    let bot = world.start(Mode::Interactions).await;
    let discord = &world.discord;
    let (_, payload) = discord.command_interaction(ALICE, PROD, "deploy", opts(&[("version", json!("v1.0.0")), ("env", json!("prod"))]));
    let body = payload.to_string();

    let (forger, _) = discord_support::key_pair(250);
    assert_eq!(bot.signed_post(&body, &forger, Utc::now().timestamp()).await.status(), 401, "signed with another key");
    assert_eq!(bot.signed_post(&body, &bot.key, Utc::now().timestamp() - 10 * 60).await.status(), 401, "a replay ten minutes later");
    let (sig, ts) = discord_support::sign(&bot.key, Utc::now().timestamp(), &body);
    let tampered = body.replace("v1.0.0", "v6.6.6");
    let res = bot.http.post(format!("{}/discord/interactions", bot.base)).header("x-signature-ed25519", &sig).header("x-signature-timestamp", &ts).body(tampered).send().await.unwrap();
    assert_eq!(res.status(), 401, "a body that is not the signed one");
    let res = bot.http.post(format!("{}/discord/interactions", bot.base)).body(body.clone()).send().await.unwrap();
    assert_eq!(res.status(), 401, "unsigned");
    let res = bot.http.post(format!("{}/discord/interactions", bot.base)).header("x-signature-ed25519", "zz").header("x-signature-timestamp", &ts).body(body.clone()).send().await.unwrap();
    assert_eq!(res.status(), 401, "not hex");

    // Discord's endpoint check: a signed PING, answered PONG.
    let ping = discord.ping_interaction().to_string();
    let res = bot.signed_post(&ping, &bot.key, Utc::now().timestamp()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({ "type": 1 }));
    // Discord also checks that a bad signature is refused.
    assert_eq!(bot.signed_post(&ping, &forger, Utc::now().timestamp()).await.status(), 401);

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(bot.app.engine.store.deployments(None, &[], 5).await.unwrap().is_empty(), "a refused request must not act");
    assert!(discord.calls_to("POST", "/channels/{channel_id}/messages").is_empty(), "nothing was posted");
    bot.stop().await;
}

/// v1.0.0 to staging, then v1.1.0-broken, whose health check fails: rolled back to v1.0.0 by
/// itself, the progress message saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_version_is_rolled_back() {
    let world = World::new().await;
    let bot = world.start(Mode::Gateway).await;
    let discord = &world.discord;
    bot.command(ALICE, STAGING, "deploy", opts(&[("version", json!("v1.0.0")), ("env", json!("stg"))])).await;
    let first = bot.latest().await;
    bot.wait_state(first, &[DeploymentState::Succeeded], LONG).await;
    let cmd = bot.command(ALICE, STAGING, "deploy", opts(&[("version", json!("v1.1.0-broken")), ("env", json!("staging"))])).await;
    discord.wait_for_answer(&cmd, "requested", SHORT).await;
    let second = bot.latest_except(Some(first)).await;
    bot.wait_state(second, &[DeploymentState::RolledBack], LONG).await;
    assert_eq!(std::fs::read_to_string(world.path().join("staging-backend.version")).unwrap().trim(), "v1.0.0");
    let progress = progress_of(discord, STAGING, second, "v1.1.0-broken", "staging").expect("a progress message");
    let text = discord.wait_for_text(&progress.id, "rolled back", LONG).await;
    assert!(text.contains("v1.0.0"), "says what it went back to:\n{text}");
    assert_conformant(&bot).await;
    bot.stop().await;
}

/// An Alertmanager alert lands in the environment's channel with the rollback emoji added; a
/// deployer's ⏪ asks for the rollback; the resolved alert edits the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_is_posted_and_its_rollback_emoji_rolls_back() {
    let world = World::new().await;
    let bot = world.start(Mode::Gateway).await;
    let discord = &world.discord;
    for v in ["v1.0.0", "v1.1.0"] {
        bot.command(ALICE, STAGING, "deploy", opts(&[("version", json!(v)), ("env", json!("stg"))])).await;
        let deadline = Instant::now() + LONG;
        loop {
            let done = bot.app.engine.store.deployments(None, &[], 1).await.unwrap().first().is_some_and(|d| d.version == v && d.state == DeploymentState::Succeeded);
            if done {
                break;
            }
            assert!(Instant::now() < deadline, "{v} did not succeed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let starts = Utc::now();
    let payload = |status: &str| {
        let ends = if status == "resolved" { (starts + chrono::Duration::minutes(4)).to_rfc3339() } else { "0001-01-01T00:00:00Z".to_string() };
        json!({
            "version": "4", "groupKey": "{}:{alertname=\"HighErrorRate\"}", "truncatedAlerts": 0, "status": status, "receiver": "deploybot",
            "groupLabels": {"alertname": "HighErrorRate"}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093",
            "alerts": [{ "status": status, "labels": {"alertname": "HighErrorRate", "env": "staging", "severity": "page"}, "annotations": {"summary": "5xx ratio above 1%"},
                "startsAt": starts.to_rfc3339(), "endsAt": ends, "generatorURL": "http://127.0.0.1:9090/graph", "fingerprint": "f1" }]
        })
        .to_string()
    };
    let res = bot.http.post(format!("{}/alerts/alertmanager", bot.base)).header("content-type", "application/json").body(payload("firing")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let alert = discord.wait_for_message(Some(STAGING), "HighErrorRate", SHORT).await;
    assert!(alert.content.contains("⏪"), "the emoji as Discord shows it:\n{}", alert.content);
    let deadline = Instant::now() + SHORT;
    while !discord.message(&alert.id).unwrap().reactions.contains_key("⏪") {
        assert!(Instant::now() < deadline, "the bot did not add ⏪ to the alert");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = bot.latest().await;
    bot.react(ALICE, "⏪", STAGING, &alert.id);
    let rollback = bot.latest_except(Some(before)).await;
    bot.wait_state(rollback, &[DeploymentState::Succeeded], LONG).await;
    assert_eq!(std::fs::read_to_string(world.path().join("staging-backend.version")).unwrap().trim(), "v1.0.0");

    let res = bot.http.post(format!("{}/alerts/alertmanager", bot.base)).header("content-type", "application/json").body(payload("resolved")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    discord.wait_for_text(&alert.id, "resolved", SHORT).await;
    assert_conformant(&bot).await;
    bot.stop().await;
}

/// 500s and 429s (a bucket's and a global one) on the messages' routes, and a channel whose
/// message bucket allows 3 calls per 2 s: every message arrives once and complete, no call is
/// made before a 429's `retry_after` has passed, and none while a bucket's headers said it was
/// empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_delays_messages_without_losing_or_duplicating_any() {
    const POST_RETRY_AFTER: f64 = 1.5;
    const EDIT_RETRY_AFTER: f64 = 2.0;
    const GLOBAL_RETRY_AFTER: f64 = 1.0;
    let world = World::new().await;
    let bot = world.start(Mode::Gateway).await;
    let discord = &world.discord;
    std::fs::write(world.path().join("sleep"), "2").unwrap();
    discord.limit("POST", "/channels/{channel_id}/messages", 3, Duration::from_secs(2));
    discord.inject(Some("/channels/{channel_id}/messages"), Fault::ServerError, 1);
    discord.inject(Some("/channels/{channel_id}/messages"), Fault::RateLimited { retry_after: POST_RETRY_AFTER, global: false }, 2);
    discord.inject(Some("/channels/{channel_id}/messages/{message_id}"), Fault::RateLimited { retry_after: EDIT_RETRY_AFTER, global: false }, 1);
    discord.inject(Some("/channels/{channel_id}/messages/{message_id}"), Fault::RateLimited { retry_after: GLOBAL_RETRY_AFTER, global: true }, 1);
    let injected = Duration::from_secs(2 * 2 + 8);

    bot.command(ALICE, STAGING, "deploy", opts(&[("version", json!("v1.0.0")), ("env", json!("stg"))])).await;
    let id = bot.latest().await;
    bot.wait_state(id, &[DeploymentState::Succeeded], LONG + injected).await;
    let progress = wait_progress(discord, STAGING, id, "v1.0.0", "staging", LONG + injected).await;
    discord.wait_for_text(&progress.id, "succeeded", LONG + injected).await;
    assert_conformant(&bot).await;

    let calls = discord.calls();
    let limited: Vec<_> = calls.iter().filter(|c| c.status == 429).collect();
    assert_eq!(limited.len(), 4, "{limited:#?}");
    let is_message_call = |c: &&discord_support::Call| c.route.as_deref().is_some_and(|r| r.starts_with("/channels/{channel_id}/messages"));
    for l in &limited {
        let global = l.error.as_deref().is_some_and(|e| e.contains("global"));
        let wait = Duration::from_secs_f64(if global {
            GLOBAL_RETRY_AFTER
        } else if l.method == "PATCH" {
            EDIT_RETRY_AFTER
        } else {
            POST_RETRY_AFTER
        });
        let early: Vec<_> = calls.iter().filter(is_message_call).filter(|c| c.at > l.at && c.at < l.at + wait).filter(|c| global || (c.method == l.method && c.path == l.path)).collect();
        assert!(early.is_empty(), "calls less than {wait:?} after a 429 ({:?}): {early:#?}", l.error);
    }
    assert_eq!(calls.iter().filter(|c| c.status == 500).count(), 1);
    bot.stop().await;
}

/// A new message Discord created but whose answer the bot never got (a 502 from a proxy): the
/// outbox tries again with the same `nonce` and `enforce_nonce`, Discord returns the message it
/// already has, and the channel shows it once, with the bot's edits going to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_answer_was_lost_is_not_posted_twice() {
    let world = World::new().await;
    let bot = world.start(Mode::Gateway).await;
    let discord = &world.discord;
    std::fs::write(world.path().join("sleep"), "1").unwrap();
    discord.inject(Some("/channels/{channel_id}/messages"), Fault::AnswerLost, 1);

    bot.command(ALICE, STAGING, "deploy", opts(&[("version", json!("v1.0.0")), ("env", json!("stg"))])).await;
    let id = bot.latest().await;
    bot.wait_state(id, &[DeploymentState::Succeeded], LONG).await;
    let progress = wait_progress(discord, STAGING, id, "v1.0.0", "staging", LONG).await;
    discord.wait_for_text(&progress.id, "succeeded", LONG).await;
    assert_conformant(&bot).await;

    let posts = discord.calls_to("POST", "/channels/{channel_id}/messages");
    let lost: Vec<_> = posts.iter().filter(|c| c.status == 502).collect();
    assert_eq!(lost.len(), 1, "{posts:#?}");
    let created = lost[0].created.clone().expect("the lost call created its message");
    let nonce = lost[0].body["nonce"].as_str().expect("a new message carries a nonce").to_string();
    assert_eq!(lost[0].body["enforce_nonce"], json!(true));
    let again: Vec<_> = posts.iter().filter(|c| c.body["nonce"].as_str() == Some(nonce.as_str()) && c.status != 502).collect();
    assert_eq!(again.len(), 1, "the message was tried again once: {again:#?}");
    assert_eq!(again[0].same_as.as_deref(), Some(created.as_str()), "Discord returned the message it had: {:#?}", again[0]);
    let channel = lost[0].channel().unwrap();
    let copies = discord.messages_in(channel).into_iter().filter(|m| m.nonce.as_deref() == Some(nonce.as_str())).count();
    assert_eq!(copies, 1, "the channel shows the message once");
    // The bot recorded the message Discord returned: it is the one its edits and thread go to.
    let recorded: Vec<_> = bot.app.engine.store.outbox_messages_of(id).await.unwrap().into_iter().filter_map(|m| m.platform_id).collect();
    assert!(recorded.contains(&format!("{channel}/{created}")), "{created} not among the recorded ids {recorded:?}");
    // Every new message of the deployment carried a nonce of its own.
    let nonces: Vec<&str> = posts.iter().filter(|c| c.created.is_some()).filter_map(|c| c.body["nonce"].as_str()).collect();
    let distinct: std::collections::HashSet<&&str> = nonces.iter().collect();
    assert_eq!(nonces.len(), posts.iter().filter(|c| c.created.is_some()).count(), "a new message without a nonce: {posts:#?}");
    assert_eq!(distinct.len(), nonces.len(), "two messages with one nonce: {nonces:?}");
    bot.stop().await;
}

/// The gateway drops while a deployment runs (a reaction and a command are dispatched while it is
/// down), then Discord asks for a reconnect, then invalidates the session: the bot resumes (and
/// gets what it missed, once), identifies again when it must, and the deployment is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_dropped_mid_deployment_resumes_and_nothing_is_lost() {
    let world = World::new().await;
    let bot = world.start(Mode::Gateway).await;
    let discord = &world.discord;
    std::fs::write(world.path().join("sleep"), "2").unwrap();
    assert_eq!(discord.identifies(), 1);

    bot.command(ALICE, PROD, "deploy", opts(&[("version", json!("v1.0.0")), ("env", json!("prod"))])).await;
    let id = bot.latest().await;
    let approval = discord.wait_for_message(Some(PROD), &format!("Approval needed for #{id} "), SHORT).await;

    discord.drop_connection();
    // Dispatched while the bot is away: Discord replays them on RESUME.
    bot.react(CAROL, "✅", PROD, &approval.id);
    let (status_id, payload) = discord.command_interaction(ALICE, PROD, "status", opts(&[("env", json!("prod"))]));
    discord.dispatch("INTERACTION_CREATE", payload);
    discord.wait_ready(2, LONG).await;
    assert!(discord.resumes() >= 1, "the bot resumed");
    bot.wait_state(id, &[DeploymentState::Running, DeploymentState::Verifying, DeploymentState::Monitoring, DeploymentState::Succeeded], LONG).await;
    discord.wait_for_answer(&status_id, "production", SHORT).await;

    discord.request_reconnect();
    discord.wait_ready(3, LONG).await;
    discord.invalidate_session(false);
    discord.wait_ready(4, LONG).await;
    assert_eq!(discord.identifies(), 2, "identified again only when the session was gone");
    let deadline = Instant::now() + SHORT;
    while discord.heartbeats() == 0 {
        assert!(Instant::now() < deadline, "no heartbeat within {SHORT:?} (the double's interval is 1 s)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    bot.wait_state(id, &[DeploymentState::Succeeded], LONG).await;
    let progress = progress_of(discord, PROD, id, "v1.0.0", "production").expect("a progress message");
    discord.wait_for_text(&progress.id, "succeeded", SHORT).await;
    let votes = bot.app.engine.store.votes(id).await.unwrap();
    assert_eq!(votes.len(), 1, "the replayed reaction counted once: {votes:?}");
    // Commands keep working on the new session.
    let status = bot.command(ALICE, PROD, "status", opts(&[("env", json!("prod"))])).await;
    discord.wait_for_answer(&status, "production", SHORT).await;
    assert_conformant(&bot).await;
    bot.stop().await;
}

/// The bot stops after posting the approval message; the reaction arrives on the next process.
/// The commands are registered once (the restart finds them unchanged), and a replayed
/// interaction is recognised across the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_approval_request_and_reaction_still_approves() {
    let world = World::new().await;
    let discord = &world.discord;
    let first = world.start(Mode::Interactions).await;
    let (cmd, payload) = discord.command_interaction(ALICE, PROD, "deploy", opts(&[("version", json!("v1.0.0")), ("env", json!("prod"))]));
    let body = payload.to_string();
    let res = first.signed_post(&body, &first.key, Utc::now().timestamp()).await;
    assert_eq!(res.status(), 200);
    discord.answered(&cmd, &res.json::<Value>().await.unwrap());
    let id = first.latest().await;
    let approval = discord.wait_for_message(Some(PROD), "Approval needed for #", SHORT).await;
    discord.wait_until("the commands registered", SHORT, |calls| calls.iter().any(|c| c.method == "PUT" && c.ok())).await;
    first.stop().await;

    let second = world.start(Mode::Interactions).await;
    assert_eq!(second.signed_post(&body, &second.key, Utc::now().timestamp()).await.status(), 200, "a replay is acknowledged");
    second.react(CAROL, "✅", PROD, &approval.id);
    second.wait_state(id, &[DeploymentState::Succeeded], LONG).await;
    assert_eq!(second.app.engine.store.deployments(None, &[], 10).await.unwrap().len(), 1, "the replayed command was acted on again");
    let progress = progress_of(discord, PROD, id, "v1.0.0", "production").expect("a progress message");
    let text = discord.wait_for_text(&progress.id, "succeeded", SHORT).await;
    assert!(text.contains("approved by @Carol"), "{text}");
    // Registered by the first process, found unchanged by the second.
    discord.wait_until("the second process compared the commands", SHORT, |calls| calls.iter().filter(|c| c.method == "GET" && c.path.ends_with("/commands")).count() >= 2).await;
    let puts = discord.calls().into_iter().filter(|c| c.method == "PUT" && c.path.ends_with("/commands")).count();
    assert_eq!(puts, 1, "the commands were overwritten although nothing changed");
    let registered = discord.registered_commands(discord_support::GUILD).expect("registered in the configured guild");
    assert_eq!(registered.as_array().unwrap().len(), serde_json::from_str::<Value>(&deploybot_commands::discord_commands_json()).unwrap().as_array().unwrap().len());
    assert_conformant(&second).await;
    second.stop().await;
}

/// The answer to a command may be delivered by another process than the one that received it
/// (another replica's outbox, or the next process after a restart): it still edits the
/// interaction's deferred response (its token is in the store), never a direct message instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_answers_a_command_through_its_interaction() {
    let world = World::new().await;
    let discord = &world.discord;
    let first = world.start(Mode::Interactions).await;
    let (id, payload) = discord.command_interaction(ALICE, PROD, "help", json!([]));
    let res = first.signed_post(&payload.to_string(), &first.key, Utc::now().timestamp()).await;
    assert_eq!(res.status(), 200);
    discord.answered(&id, &res.json::<Value>().await.unwrap());
    discord.wait_for_answer(&id, "/deploy", SHORT).await;
    first.stop().await;

    // A fresh process, with nothing in memory, answers the same interaction again.
    let second = world.start(Mode::Interactions).await;
    let msg = deploybot::chat::OutMessage::new("answered by the second process");
    second.app.discord.private_reply(&format!("reply:discord-interaction:{id}"), PROD, ALICE, &msg).await.unwrap();
    discord.wait_for_answer(&id, "answered by the second process", SHORT).await;
    assert!(discord.dm_channel(ALICE).is_none(), "no direct message when the interaction can be answered");
    // An interaction nobody knows (older than its token, or never stored) falls back to a DM.
    second.app.discord.private_reply("reply:discord-interaction:1299999999999999999", PROD, ALICE, &deploybot::chat::OutMessage::new("by direct message")).await.unwrap();
    let dm = discord.dm_channel(ALICE).expect("a DM channel was opened");
    discord.wait_for_message(Some(&dm), "by direct message", SHORT).await;
    assert_conformant(&second).await;
    second.stop().await;
}

/// Roles come with interactions and reactions; a member the bot has not seen (or seen more than
/// 5 minutes ago) is looked up in the guild, and a lookup that fails is an error, not a "no".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_membership_is_looked_up_in_the_guild_when_not_known() {
    let world = World::new().await;
    let discord = &world.discord;
    let bot = world.start(Mode::Gateway).await;
    let chat = &bot.app.discord;
    assert!(chat.in_group(DAN, DEVOPS).await.unwrap(), "Dan has the DevOps role");
    assert!(!chat.in_group(BOB, DEVOPS).await.unwrap(), "Bob has not");
    let lookups = discord.calls_to("GET", "/guilds/{guild_id}/members/{user_id}");
    assert_eq!(lookups.len(), 2, "{lookups:#?}");
    assert!(lookups.iter().all(|c| c.ok() && c.path.starts_with(&format!("/guilds/{}/members/", discord_support::GUILD))));
    // Cached: no second lookup.
    assert!(chat.in_group(DAN, DEVOPS).await.unwrap());
    assert_eq!(discord.calls_to("GET", "/guilds/{guild_id}/members/{user_id}").len(), 2);
    // A member Discord does not know, and Discord failing (3 tries): errors, not "not a member".
    assert!(chat.in_group("1300000000000000099", DEVOPS).await.is_err());
    discord.inject(Some("/guilds/{guild_id}/members/{user_id}"), Fault::ServerError, 3);
    assert!(chat.in_group(CAROL, DEVOPS).await.is_err());
    assert_eq!(discord.calls().iter().filter(|c| c.status == 500).count(), 3, "retried before giving up");
    bot.stop().await;
}

/// The store cannot take a reaction when it arrives: the bot does not count the dispatch as
/// seen, closes the connection and resumes from the last event it recorded, so Discord sends the
/// reaction again — until the store takes it. The approval is not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaction_the_store_cannot_take_is_received_again_after_a_resume() {
    use sqlx::Connection;
    let world = World::new().await;
    let bot = world.start(Mode::Gateway).await;
    let discord = &world.discord;
    bot.command(ALICE, PROD, "deploy", opts(&[("version", json!("v1.0.0")), ("env", json!("prod"))])).await;
    let id = bot.latest().await;
    let approval = discord.wait_for_message(Some(PROD), &format!("Approval needed for #{id} "), SHORT).await;

    let url = format!("sqlite://{}", world.path().join("deploybot.db").display());
    let mut db = sqlx::sqlite::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("ALTER TABLE processed_events RENAME TO processed_events_away").execute(&mut db).await.unwrap();
    let resumes = discord.resumes();
    bot.react(CAROL, "✅", PROD, &approval.id);
    let deadline = Instant::now() + LONG;
    while discord.resumes() < resumes + 2 {
        assert!(Instant::now() < deadline, "the bot did not resume to get the reaction again (resumes: {})", discord.resumes());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bot.app.engine.store.deployment(id).await.unwrap().unwrap().state, DeploymentState::AwaitingApproval);
    sqlx::query("ALTER TABLE processed_events_away RENAME TO processed_events").execute(&mut db).await.unwrap();
    db.close().await.unwrap();

    bot.wait_state(id, &[DeploymentState::Succeeded], LONG).await;
    assert_eq!(bot.app.engine.store.votes(id).await.unwrap().len(), 1);
    assert_eq!(discord.identifies(), 1, "the session was resumed, never replaced");
    assert_conformant(&bot).await;
    bot.stop().await;
}
