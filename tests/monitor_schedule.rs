//! Scheduled work under an injected clock: the health probe's cron schedule, its consecutive
//! failures, the alert and its edit when health returns, each run firing once across two
//! replicas on one store, and the weekly digest.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use deploybot::app;
use deploybot::chat::console::Shown;
use deploybot::config::Config;
use deploybot::engine::clock::ShiftedClock;
use deploybot::engine::schedule::Scheduler;

#[derive(Default)]
struct Health {
    down: AtomicBool,
    hits: AtomicUsize,
}

async fn health_server(state: Arc<Health>) -> std::net::SocketAddr {
    use axum::http::StatusCode;
    let router = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let state = state.clone();
            async move {
                state.hits.fetch_add(1, Ordering::SeqCst);
                if state.down.load(Ordering::SeqCst) {
                    (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"DOWN"}"#)
                } else {
                    (StatusCode::OK, r#"{"status":"UP"}"#)
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

fn config(dir: &std::path::Path, health: std::net::SocketAddr) -> Config {
    let text = format!(
        r#"[bot]
database_url = "sqlite://{d}/deploybot.db"
timezone = "America/New_York"

[chat]
platform = "console"

[alerts]
digest_channel = "C0DEVOPS"
digest_schedule = "0 9 * * mon"

[services.backend]
image = "invoiceme/invoice-me-backend"

[environments.production]
channel = "C0PROD"
target = {{ kind = "command", deploy = ["sh", "-c", "true"], timeout = "10s" }}

[environments.production.verify]
retries = 0
timeout = "2s"

[[environments.production.verify.health]]
name = "backend health"
url = "http://{health}/health"
expect_json = {{ status = "UP" }}

[environments.production.monitor]
probe = {{ schedule = "*/5 * * * *", failures = 2 }}
"#,
        d = dir.display()
    );
    Config::parse(&text).unwrap_or_else(|p| panic!("{}", p.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")))
}

/// Sunday 2026-11-29 08:58 in New York.
fn sunday_morning() -> chrono::DateTime<Utc> {
    chrono_tz::America::New_York.with_ymd_and_hms(2026, 11, 29, 8, 58, 0).unwrap().with_timezone(&Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_runs_on_its_schedule_alerts_after_consecutive_failures_and_edits_when_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let health = Arc::new(Health::default());
    let addr = health_server(health.clone()).await;
    let clock = Arc::new(ShiftedClock::at(sunday_morning()));
    let bot = app::build_console_app(config(dir.path(), addr), clock.clone(), None).await.unwrap();
    let scheduler = Scheduler::new(bot.engine.clone());
    scheduler.register().await.unwrap();
    assert_eq!(scheduler.tick().await.unwrap(), 0, "nothing is due at 08:58");
    let at = |min: i64| sunday_morning() + chrono::Duration::minutes(min);

    clock.set(at(2)); // 09:00: the first */5 run
    health.down.store(true, Ordering::SeqCst);
    assert_eq!(scheduler.tick().await.unwrap(), 1);
    bot.engine.outbox.drain().await.unwrap();
    assert_eq!(health.hits.load(Ordering::SeqCst), 1);
    assert!(bot.console.transcript().is_empty(), "one failure is below the threshold of 2");

    clock.set(at(4)); // 09:02: not due
    assert_eq!(scheduler.tick().await.unwrap(), 0);
    clock.set(at(7)); // 09:05
    assert_eq!(scheduler.tick().await.unwrap(), 1);
    bot.engine.outbox.drain().await.unwrap();
    let posts: Vec<(String, String)> = bot.console.transcript().into_iter().filter_map(|s| match s { Shown::Post { id, text, .. } => Some((id, text)), _ => None }).collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert!(posts[0].1.starts_with("🩺 Health probe: production failed 2 consecutive probes (`*/5 * * * *`; alert after 2)"), "{}", posts[0].1);
    assert!(posts[0].1.contains("No deployment of production is recorded."), "{}", posts[0].1);

    health.down.store(false, Ordering::SeqCst);
    clock.set(at(12)); // 09:10
    assert_eq!(scheduler.tick().await.unwrap(), 1);
    bot.engine.outbox.drain().await.unwrap();
    assert_eq!(bot.console.current_text(&posts[0].0).unwrap(), "✅ Health probe: production is healthy again after 2 failed probes (10 min).");
    assert_eq!(bot.console.transcript().iter().filter(|s| matches!(s, Shown::Post { .. })).count(), 1, "edited, not posted again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_on_one_store_each_run_fires_once() {
    let dir = tempfile::tempdir().unwrap();
    let health = Arc::new(Health::default());
    let addr = health_server(health.clone()).await;
    let clock = Arc::new(ShiftedClock::at(sunday_morning()));
    let a = app::build_console_app(config(dir.path(), addr), clock.clone(), None).await.unwrap();
    let b = app::build_console_app(config(dir.path(), addr), clock.clone(), None).await.unwrap();
    let (sa, sb) = (Scheduler::new(a.engine.clone()), Scheduler::new(b.engine.clone()));
    sa.register().await.unwrap();
    sb.register().await.unwrap();
    for minute in [2, 7, 12] {
        clock.set(sunday_morning() + chrono::Duration::minutes(minute));
        let (ra, rb) = tokio::join!(sa.tick(), sb.tick());
        assert_eq!(ra.unwrap() + rb.unwrap(), 1, "one replica ran the probe at +{minute} min");
    }
    assert_eq!(health.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_weekly_digest_is_posted_on_monday_morning() {
    let dir = tempfile::tempdir().unwrap();
    let addr = health_server(Arc::new(Health::default())).await;
    let clock = Arc::new(ShiftedClock::at(sunday_morning()));
    let bot = app::build_console_app(config(dir.path(), addr), clock.clone(), None).await.unwrap();
    let scheduler = Scheduler::new(bot.engine.clone());
    scheduler.register().await.unwrap();
    clock.set(sunday_morning() + chrono::Duration::hours(24) + chrono::Duration::minutes(3)); // Monday 09:01
    assert_eq!(scheduler.tick().await.unwrap(), 2, "the probe and the digest");
    bot.engine.outbox.drain().await.unwrap();
    let digest: Vec<Shown> = bot.console.transcript().into_iter().filter(|s| matches!(s, Shown::Post { channel, .. } if channel == "C0DEVOPS")).collect();
    assert_eq!(digest.len(), 1, "{digest:?}");
    assert!(digest[0].text().starts_with("📊 Weekly deployment digest\n"), "{}", digest[0].text());
    clock.set(sunday_morning() + chrono::Duration::hours(48));
    scheduler.tick().await.unwrap();
    assert_eq!(bot.console.transcript().iter().filter(|s| matches!(s, Shown::Post { channel, .. } if channel == "C0DEVOPS")).count(), 1, "weekly, not daily");
}
