//! Alertmanager's webhook end to end (a real Prometheus rule firing into a real Alertmanager that
//! posts to the bot's `/alerts/alertmanager`), and the receiver's contract on its own: dedup,
//! unknown environments, bad payloads, the rollback emoji, `/metrics` and `/healthz`.

// The engine's futures (command handling, the whole pipeline) nest deeper than the default limit.
#![recursion_limit = "256"]

#[path = "support/prom.rs"]
mod prom;

use std::sync::Arc;
use std::time::{Duration, Instant};

use deploybot::app::{self, App};
use deploybot::chat::console::{self, Shown};
use deploybot::chat::{ChatEvent, ReactionTarget, UserRef};
use deploybot::config::Config;
use deploybot::engine::clock::SystemClock;
use deploybot::model::{DeploymentKind, DeploymentState};
use tokio::sync::watch;

struct Bot {
    app: App,
    url: String,
    _dir: tempfile::TempDir,
    _stop: watch::Sender<bool>,
}

async fn bot() -> Bot {
    bot_with("", deploybot::secrets::Vars::process()).await
}

/// A bot with `alerts` added to its `[alerts]` table and its `${VAR}` references read from `vars` only.
async fn bot_with(alerts: &str, vars: deploybot::secrets::Vars) -> Bot {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let text = format!(
        r#"[bot]
database_url = "sqlite://{d}/deploybot.db"

[chat]
platform = "console"

[chat.console]
user = "alice"

[alerts]
env_label = "env"
{alerts}

[services.backend]
image = "invoiceme/invoice-me-backend"

[environments.staging]
channel = "C0STAGING"
aliases = ["stg"]
target = {{ kind = "command", deploy = ["sh", "-c", "true"], rollback = ["sh", "-c", "true"], timeout = "10s" }}
"#
    );
    let mut config = Config::parse(&text).unwrap_or_else(|p| panic!("{}", p.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")));
    config.vars = vars;
    let app = app::build_console_app(config, Arc::new(SystemClock), None).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(app::serve(app.engine.clone(), listener, shutdown.clone()));
    // Alerts arriving from Alertmanager on their own are delivered as in the running bot.
    tokio::spawn(app.engine.outbox.clone().run(shutdown));
    Bot { app, url, _dir: dir, _stop: stop }
}

impl Bot {
    async fn deploy(&self, version: &str, seq: u64) -> i64 {
        let event = console::parse_line(&format!("/deploy {version} staging"), "alice", "console", seq).unwrap().unwrap();
        self.app.engine.handle(event).await.unwrap();
        while self.app.engine.run_next_job().await.unwrap() {}
        self.app.engine.outbox.drain().await.unwrap();
        let d = self.app.engine.store.deployments(None, &[], 1).await.unwrap().remove(0);
        assert_eq!(d.state, DeploymentState::Succeeded);
        d.id
    }

    /// Posts of alert messages whose text contains `needle`.
    fn posts(&self, needle: &str) -> Vec<(String, String)> {
        self.app
            .console
            .transcript()
            .into_iter()
            .filter_map(|s| match s {
                Shown::Post { id, text, .. } if text.contains(needle) => Some((id, text)),
                _ => None,
            })
            .collect()
    }

    async fn webhook(&self, body: &str) -> (u16, String) {
        self.webhook_as(None, body).await
    }

    /// Posts `body` with `authorization` as the `Authorization` header, when given.
    async fn webhook_as(&self, authorization: Option<&str>, body: &str) -> (u16, String) {
        let mut request = reqwest::Client::new().post(format!("{}/alerts/alertmanager", self.url)).header("content-type", "application/json").body(body.to_string());
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        let r = request.send().await.unwrap();
        let answer = (r.status().as_u16(), r.text().await.unwrap());
        self.app.engine.outbox.drain().await.unwrap();
        answer
    }
}

fn payload(status: &str, env: &str, fingerprint: &str, ends_at: &str) -> String {
    serde_json::json!({
        "version": "4", "groupKey": "{}:{alertname=\"HighErrorRate\"}", "truncatedAlerts": 0, "status": status, "receiver": "deploybot",
        "groupLabels": {"alertname": "HighErrorRate"}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093",
        "alerts": [{
            "status": status, "labels": {"alertname": "HighErrorRate", "env": env, "severity": "page"},
            "annotations": {"summary": "5xx ratio above 1%"},
            "startsAt": chrono::Utc::now().to_rfc3339(), "endsAt": ends_at, "generatorURL": "http://127.0.0.1:9090/graph", "fingerprint": fingerprint
        }]
    })
    .to_string()
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>, context: impl Fn() -> String) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "waited 90s for {what}\n{}", context());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The stand-in InvoiceMe app in this process, on `port`; dropping the sender stops it.
async fn standin(port: u16) -> tokio::sync::oneshot::Sender<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(deploybot_standin::serve(listener, deploybot_standin::StandinConfig::new("v1.0.0"), async move {
        let _ = rx.await;
    }));
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alertmanager_alert_fired_and_resolved_is_one_message_edited() {
    let bot = bot().await;
    let deployed = bot.deploy("v1.0.0", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let port = prom::free_port();
    let app_up = standin(port).await;
    let Some(am) = prom::alertmanager(dir.path(), &format!("{}/alerts/alertmanager", bot.url)).await else { return };
    let rules = "groups:\n  - name: invoiceme\n    rules:\n      - alert: InvoiceMeDown\n        expr: up{job=\"standin-staging\"} == 0\n        labels:\n          severity: page\n        annotations:\n          summary: the backend does not answer scrapes\n";
    let Some(prometheus) = prom::prometheus(dir.path(), &[("staging", format!("127.0.0.1:{port}"))], Some(rules), Some(&am.url)).await else { return };
    prom::wait_for(&prometheus, "up{job=\"standin-staging\"}", |v| v == 1.0, "the stand-in to be up").await;

    drop(app_up);
    let logs = || format!("transcript: {:?}\nPrometheus:\n{}\nAlertmanager:\n{}", bot.app.console.transcript(), prometheus.log(), am.log());
    let (id, text) = eventually("the firing alert in the channel", || bot.posts("*InvoiceMeDown*").into_iter().next(), logs).await;
    assert!(text.starts_with("🔥 *InvoiceMeDown* [page] firing in staging: the backend does not answer scrapes"), "{text}");
    assert!(text.contains(&format!("after #{deployed} v1.0.0 by <@alice>")) && text.contains("React with :rewind:"), "{text}");

    let _app_up = standin(port).await;
    let resolved = eventually(
        "the alert's message edited to resolved",
        || bot.app.console.current_text(&id).filter(|t| t.starts_with("✅ *InvoiceMeDown* [page] resolved in staging after")),
        logs,
    )
    .await;
    assert!(resolved.contains(&format!("#{deployed} v1.0.0")), "{resolved}");
    assert_eq!(bot.posts("*InvoiceMeDown*").len(), 1, "one message, edited: {:?}", bot.app.console.transcript());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_alert_sent_twice_is_posted_once_and_resolving_it_edits_that_message() {
    let bot = bot().await;
    let starts = chrono::Utc::now().to_rfc3339();
    let firing = payload("firing", "stg", "abc123", "0001-01-01T00:00:00Z").replace(&chrono::Utc::now().to_rfc3339()[..10], &starts[..10]);
    let body: serde_json::Value = serde_json::from_str(&firing).unwrap();
    let firing = body.to_string();
    assert_eq!(bot.webhook(&firing).await, (200, r#"{"delivered":1,"ignored":[]}"#.into()));
    assert_eq!(bot.webhook(&firing).await.0, 200);
    let posts = bot.posts("*HighErrorRate*");
    assert_eq!(posts.len(), 1, "deduplicated by fingerprint");
    assert!(posts[0].1.contains("No deployment of staging is recorded."), "{}", posts[0].1);
    let mut resolved = body.clone();
    resolved["status"] = "resolved".into();
    resolved["alerts"][0]["status"] = "resolved".into();
    resolved["alerts"][0]["endsAt"] = (chrono::DateTime::parse_from_rfc3339(body["alerts"][0]["startsAt"].as_str().unwrap()).unwrap() + chrono::Duration::minutes(4)).to_rfc3339().into();
    assert_eq!(bot.webhook(&resolved.to_string()).await.0, 200);
    assert_eq!(bot.posts("*HighErrorRate*").len(), 1);
    assert_eq!(bot.app.console.current_text(&posts[0].0).unwrap(), "✅ *HighErrorRate* [page] resolved in staging after 4 min: 5xx ratio above 1%\nNo deployment of staging is recorded.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_for_unknown_environments_are_answered_200_and_bad_payloads_400() {
    let bot = bot().await;
    let (status, body) = bot.webhook(&payload("firing", "qa", "f1", "0001-01-01T00:00:00Z")).await;
    assert_eq!(status, 200);
    assert!(body.contains(r#""delivered":0"#) && body.contains(r#"environment \"qa\" is not configured"#), "{body}");
    assert!(bot.posts("HighErrorRate").is_empty());
    let (status, body) = bot.webhook(&payload("firing", "staging", "f2", "0001-01-01T00:00:00Z").replace("\"version\":\"4\"", "\"version\":\"3\"")).await;
    assert_eq!((status, body.as_str()), (400, "webhook payload version 3 is not supported (version 4 is)"));
    assert_eq!(bot.webhook("{}").await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollback_emoji_on_an_alert_requests_a_rollback_of_its_environment() {
    let bot = bot().await;
    bot.deploy("v1.0.0", 1).await;
    let last = bot.deploy("v1.1.0", 2).await;
    assert_eq!(bot.webhook(&payload("firing", "staging", "r1", "0001-01-01T00:00:00Z")).await.0, 200);
    let (id, text) = bot.posts("*HighErrorRate*").remove(0);
    assert!(text.contains(&format!("after #{last} v1.1.0 by <@alice>")), "{text}");
    let react = |emoji: &str, n: u64| ChatEvent::ReactionAdded {
        event_id: Some(format!("reaction-{n}")),
        user: UserRef { id: "bob".into(), name: "bob".into() },
        target: ReactionTarget::Message { channel: "C0STAGING".into(), id: id.clone() },
        emoji: emoji.into(),
    };
    bot.app.engine.handle(react("thumbsup", 1)).await.unwrap();
    assert!(bot.app.engine.store.deployments(None, &[], 10).await.unwrap().iter().all(|d| d.kind == DeploymentKind::Deploy), "other emoji do nothing");
    bot.app.engine.handle(react("rewind", 2)).await.unwrap();
    bot.app.engine.outbox.drain().await.unwrap();
    let rollback = bot.app.engine.store.deployments(None, &[], 1).await.unwrap().remove(0);
    assert_eq!((rollback.kind, rollback.version.as_str(), rollback.rollback_of, rollback.requested_by.as_str()), (DeploymentKind::Rollback, "v1.0.0", Some(last), "bob"));
    let said = bot.app.console.transcript();
    assert!(said.iter().any(|s| matches!(s, Shown::Reply { thread, text, .. } if *thread == id && text.contains("<@bob> reacted :rewind: — `/rollback staging`"))), "{said:?}");
    while bot.app.engine.run_next_job().await.unwrap() {}
    assert_eq!(bot.app.engine.store.deployment(rollback.id).await.unwrap().unwrap().state, DeploymentState::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_healthz_describe_the_bot() {
    let bot = bot().await;
    bot.deploy("v1.0.0", 1).await;
    let health = reqwest::get(format!("{}/healthz", bot.url)).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(health.text().await.unwrap(), "ok: store reachable, chat console connected\n");
    let text = reqwest::get(format!("{}/metrics", bot.url)).await.unwrap().text().await.unwrap();
    for line in ["deploybot_deployments{outcome=\"succeeded\"} 1", "deploybot_queue_depth{state=\"queued\"} 0", "deploybot_outbox_pending 0"] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    for prefix in ["deploybot_commands_received_total{command=\"deploy\"} ", "deploybot_step_duration_seconds_count{step=\"deploy\",outcome=\"succeeded\"} ", "deploybot_chat_api_errors_total{kind=\"unavailable\"} "] {
        assert!(text.lines().any(|l| l.starts_with(prefix)), "missing {prefix} in\n{text}");
    }
}

// ------------------------------------------------------------------------------------ webhook token

const TOKEN: &str = "am-webhook-7c1e9f02d4";

fn token_vars() -> deploybot::secrets::Vars {
    deploybot::secrets::Vars::from_pairs([("DEPLOYBOT_TEST_AM_TOKEN", TOKEN)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_webhook_token_a_call_without_that_bearer_token_is_refused_401_and_posts_nothing() {
    let bot = bot_with(r#"webhook_token = "${DEPLOYBOT_TEST_AM_TOKEN}""#, token_vars()).await;
    let body = payload("firing", "staging", "t1", "0001-01-01T00:00:00Z");
    let wrong_length = format!("Bearer {TOKEN}0");
    let last_byte_differs = format!("Bearer {}X", &TOKEN[..TOKEN.len() - 1]);
    let basic = format!("Basic {TOKEN}");
    for authorization in [None, Some("Bearer"), Some("Bearer "), Some(wrong_length.as_str()), Some(last_byte_differs.as_str()), Some(basic.as_str())] {
        let (status, text) = bot.webhook_as(authorization, &body).await;
        assert_eq!((status, text.as_str()), (401, "unauthorized\n"), "{authorization:?}");
    }
    assert!(bot.posts("HighErrorRate").is_empty(), "a refused call posts nothing: {:?}", bot.app.console.transcript());

    let (status, text) = bot.webhook_as(Some(&format!("Bearer {TOKEN}")), &body).await;
    assert_eq!((status, text.as_str()), (200, r#"{"delivered":1,"ignored":[]}"#));
    assert_eq!(bot.posts("*HighErrorRate*").len(), 1);
    let (status, _) = bot.webhook_as(Some(&format!("bearer {TOKEN}")), &body).await;
    assert_eq!(status, 200, "the scheme is case-insensitive (RFC 9110)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_token_whose_variable_is_unset_refuses_every_call() {
    let bot = bot_with(r#"webhook_token = "${DEPLOYBOT_TEST_AM_TOKEN_NOT_GIVEN}""#, token_vars()).await;
    let body = payload("firing", "staging", "t2", "0001-01-01T00:00:00Z");
    for authorization in [None, Some(format!("Bearer {TOKEN}")), Some("Bearer ".to_string())] {
        assert_eq!(bot.webhook_as(authorization.as_deref(), &body).await.0, 401, "{authorization:?}");
    }
    assert!(bot.posts("HighErrorRate").is_empty());
}

/// A real Alertmanager configured with `http_config.authorization` delivers to a bot that requires
/// the token; one configured with another token is refused and delivers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_sends_the_webhook_token_from_its_http_config_authorization() {
    let bot = bot_with(r#"webhook_token = "${DEPLOYBOT_TEST_AM_TOKEN}""#, token_vars()).await;
    let webhook = format!("{}/alerts/alertmanager", bot.url);
    let (good_dir, bad_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let Some(good) = prom::alertmanager_with_token(good_dir.path(), &webhook, Some(TOKEN)).await else { return };
    let Some(bad) = prom::alertmanager_with_token(bad_dir.path(), &webhook, Some("not-the-token")).await else { return };
    let alert = |name: &str| serde_json::json!([{ "labels": { "alertname": name, "env": "staging", "severity": "page" }, "annotations": { "summary": "posted through the API" } }]);
    let http = reqwest::Client::new();
    for (am, name) in [(&bad, "SentWithTheWrongToken"), (&good, "SentWithTheToken")] {
        let r = http.post(format!("{}/api/v2/alerts", am.url)).json(&alert(name)).send().await.unwrap();
        assert!(r.status().is_success(), "Alertmanager took the alert: {}", r.status());
    }
    let logs = || format!("transcript: {:?}\ngood Alertmanager:\n{}\nbad Alertmanager:\n{}", bot.app.console.transcript(), good.log(), bad.log());
    eventually("the alert sent with the token in the channel", || bot.posts("*SentWithTheToken*").into_iter().next(), logs).await;
    // Both were sent within the same second (group_wait 1s); give the refused one as long again and
    // check Alertmanager logged the 401 it got.
    eventually("Alertmanager to log the refused notification", || bad.log().contains("401").then_some(()), logs).await;
    assert!(bot.posts("SentWithTheWrongToken").is_empty(), "{}", logs());
}
