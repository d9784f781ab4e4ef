//! Acknowledgement latency of `POST /slack/commands` (not a timed test; `cargo bench --bench slack_ack`).
//!
//! The parent starts the real app in Events API mode on 127.0.0.1 (SQLite in a tempdir, a fake
//! Slack Web API for the replies), then runs itself again as a second process that sends signed
//! slash commands at a fixed rate (open loop: a slow answer does not slow the sending) and
//! reports throughput and p50/p99/max acknowledgement latency. The parent then checks that every
//! command was recorded in the store and answered.
//!
//! `SLACK_ACK_RATE` (default 200 per second) and `SLACK_ACK_SECONDS` (default 10) change the load.

#[path = "../tests/support/slack.rs"]
mod slack_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENT_ENV: &str = "SLACK_ACK_CLIENT";

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    if std::env::var(CLIENT_ENV).is_ok() {
        rt.block_on(client());
    } else {
        rt.block_on(parent());
    }
}

fn rate() -> u64 {
    std::env::var("SLACK_ACK_RATE").ok().and_then(|v| v.parse().ok()).unwrap_or(200)
}

fn seconds() -> u64 {
    std::env::var("SLACK_ACK_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10)
}

async fn parent() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let secret = format!("bench-signing-secret-{}", std::process::id());
    let (bot, app) = (format!("xoxb-bench-{}", std::process::id()), format!("xapp-bench-{}", std::process::id()));
    let slack = slack_support::FakeSlack::start(&bot, &app).await;
    let text = format!(
        r#"[bot]
database_url = "sqlite://{}/deploybot.db"
listen = "127.0.0.1:0"

[chat]
platform = "slack"

[chat.slack]
mode = "events"
bot_token = "${{DEPLOYBOT_BENCH_SLACK_BOT}}"
signing_secret = "${{DEPLOYBOT_BENCH_SLACK_SIGNING}}"
api_url = "{}"

[services.backend]
image = "invoiceme/invoice-me-backend"

[environments.staging]
channel = "C0STAGING"
target = {{ kind = "command", deploy = ["true"] }}
"#,
        dir.path().display(),
        slack.api_url
    );
    let mut config = deploybot::config::Config::parse(&text).unwrap_or_else(|p| panic!("bench config: {}", p.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")));
    config.vars = deploybot::secrets::Vars::from_pairs([
        ("DEPLOYBOT_BENCH_SLACK_BOT", bot.as_str()),
        ("DEPLOYBOT_BENCH_SLACK_APP", app.as_str()),
        ("DEPLOYBOT_BENCH_SLACK_SIGNING", secret.as_str()),
    ]);
    let app = deploybot::app::build_slack_app(config, Arc::new(deploybot::engine::clock::SystemClock)).await.expect("the app");
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address");
    let mut tasks = deploybot::app::spawn_loops(&app.engine, shutdown.clone());
    let engine = app.engine.clone();
    tasks.push(tokio::spawn(async move {
        let _ = deploybot::app::serve(engine, listener, shutdown).await;
    }));

    let (rate, secs) = (rate(), seconds());
    println!("slack_ack: {rate} signed slash commands per second for {secs} s at http://{addr}/slack/commands (a second process)");
    let status = tokio::process::Command::new(std::env::current_exe().expect("this binary"))
        .env(CLIENT_ENV, format!("http://{addr}/slack/commands"))
        .env("SLACK_ACK_SECRET", &secret)
        .status()
        .await
        .expect("the load client runs");
    assert!(status.success(), "the load client failed");

    // Every command recorded (its trigger id is in processed_events) and, soon after, answered.
    let total = rate * secs;
    let mut missing = 0;
    for i in 0..total {
        let id = format!("slack-command:{i}.1234.abcdef{i}");
        if app.engine.store.mark_event(&id, "bench", 0).await.expect("the store") {
            missing += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let answered = loop {
        let n = slack.calls_to("chat.postEphemeral").iter().filter(|c| c.ok() && c.arg("user") == Some("U0BENCH")).count() as u64;
        if n >= total || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("recorded: {}/{total} commands; answered (chat.postEphemeral): {answered}/{total}", total - missing);
    let _ = stop.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    assert_eq!(missing, 0, "commands acknowledged but not recorded");
}

async fn client() {
    let url = std::env::var(CLIENT_ENV).expect("the URL");
    let secret = std::env::var("SLACK_ACK_SECRET").expect("the signing secret");
    let (rate, secs) = (rate(), seconds());
    let total = rate * secs;
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("a client");
    // Warm the connection pool and the app (first SQLite statements) outside the measurement.
    for i in 0..20 {
        let fields = slack_support::slash_command("/help", "", "U0WARM", "warm", "C0STAGING", 1_000_000 + i);
        let _ = send(&http, &url, &secret, &slack_support::form_body(&fields)).await;
    }
    let started = Instant::now();
    let mut handles = Vec::with_capacity(total as usize);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    for i in 0..total {
        let at = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(at.into()).await;
        let body = slack_support::form_body(&slack_support::slash_command("/help", "deploy", "U0BENCH", "bench", "C0STAGING", i));
        let (http, url, secret) = (http.clone(), url.clone(), secret.clone());
        handles.push(tokio::spawn(async move {
            let t = Instant::now();
            let ok = send(&http, &url, &secret, &body).await;
            (t.elapsed(), ok)
        }));
    }
    let mut latencies = Vec::with_capacity(total as usize);
    let mut errors = 0;
    for h in handles {
        let (d, ok) = h.await.expect("a request task");
        if !ok {
            errors += 1;
        }
        latencies.push(d);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1).min(latencies.len() - 1)];
    println!(
        "sent {total} in {:.2} s: throughput {:.0} req/s, errors {errors}; ack latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
}

async fn send(http: &reqwest::Client, url: &str, secret: &str, body: &str) -> bool {
    let (ts, sig) = slack_support::sign(secret, chrono::Utc::now().timestamp(), body);
    let res = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig)
        .body(body.to_string())
        .send()
        .await;
    matches!(res, Ok(r) if r.status() == 200)
}
