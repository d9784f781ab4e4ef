//! Wiring: config → store → chat → targets → engine, the background loops, and the one HTTP
//! listener. `serve` takes its listener and shutdown signal as arguments so tests run the real
//! app on port 0.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;

use crate::chat::console::{self, ConsoleChat};
use crate::chat::ChatPlatform;
use crate::config::{Config, Platform};
use crate::engine::clock::SystemClock;
use crate::engine::{Clock, Engine};
use crate::store::Store;
use crate::targets::DeployTarget;

/// Builds the drivers of every environment; one that cannot be built is reported, and that
/// environment refuses deployments with the reason.
pub async fn build_targets(config: &Config) -> BTreeMap<deploybot_commands::EnvName, Arc<dyn DeployTarget>> {
    let mut out = BTreeMap::new();
    for env in config.environments.values() {
        match crate::targets::build(&env.target).await {
            Ok(t) => {
                out.insert(env.name.clone(), t);
            }
            Err(e) => tracing::warn!(env = %env.name, error = format!("{e:#}"), "this environment's target is unavailable; deployments there will be refused"),
        }
    }
    out
}

/// The background work every replica does: jobs, approval expiry, outbox retries.
pub fn spawn_loops(engine: &Arc<Engine>, shutdown: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    let jobs = tokio::spawn(engine.clone().run_jobs(shutdown.clone()));
    let ticker = {
        let engine = engine.clone();
        let mut shutdown = shutdown;
        tokio::spawn(async move {
            loop {
                if let Err(e) = engine.expire_approvals().await {
                    tracing::warn!(error = format!("{e:#}"), "approval expiry check failed");
                }
                engine.outbox.flush().await;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => break,
                }
            }
        })
    };
    vec![jobs, ticker]
}

/// The HTTP routes of PRODUCT.md section 9 that exist in this build.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new().route("/healthz", get(healthz)).with_state(engine)
}

async fn healthz(State(engine): State<Arc<Engine>>) -> (StatusCode, String) {
    match engine.store.ping().await {
        Ok(()) => (StatusCode::OK, format!("ok: store reachable, chat {}\n", engine.chat.name())),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("store unreachable: {e}\n")),
    }
}

/// Serves the HTTP listener until `shutdown` turns true.
pub async fn serve(engine: Arc<Engine>, listener: tokio::net::TcpListener, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    axum::serve(listener, router(engine))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
        .context("the HTTP listener failed")
}

fn console_chat(config: &Config, out: Option<Box<dyn std::io::Write + Send>>) -> Arc<ConsoleChat> {
    let names = config.environments.values().map(|e| (e.base.channel.clone(), e.name.to_string())).collect();
    Arc::new(ConsoleChat::new(out, config.chat.console.groups.clone(), names))
}

/// Everything `run` starts, for the console session, the demo and tests.
pub struct App {
    pub engine: Arc<Engine>,
    pub console: Arc<ConsoleChat>,
}

pub async fn build_console_app(config: Config, clock: Arc<dyn Clock>, out: Option<Box<dyn std::io::Write + Send>>) -> Result<App> {
    let store = Store::connect(&config.bot.database_url).await?;
    let console = console_chat(&config, out);
    let targets = build_targets(&config).await;
    let chat: Arc<dyn ChatPlatform> = console.clone();
    let engine = Engine::new(Arc::new(config), store, chat, targets, clock);
    Ok(App { engine, console })
}

/// `deploybot run`.
pub async fn run_from_cli(path: &Path, chat: Option<&str>) -> Result<()> {
    let mut config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    match chat {
        None => {}
        Some("console") => config.chat.platform = Platform::Console,
        Some(other) => anyhow::bail!("--chat {other}: this build runs the console platform only (console)"),
    }
    if config.chat.platform != Platform::Console {
        anyhow::bail!("[chat] platform = {:?} is not available in this build yet; use --chat console", config.chat.platform);
    }
    init_tracing(&config.bot.log_format);
    let listen = config.bot.listen.clone();
    let user = config.chat.console.user.clone();
    let app = build_console_app(config, Arc::new(SystemClock), Some(Box::new(std::io::stdout()))).await?;
    let (stop, shutdown) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("cannot listen on {listen} ([bot] listen)"))?;
    eprintln!("deploybot is running: console chat as @{user}, HTTP on {listen}. Type /help; Ctrl-C stops.");
    let mut tasks = spawn_loops(&app.engine, shutdown.clone());
    tasks.push(tokio::spawn({
        let engine = app.engine.clone();
        let shutdown = shutdown.clone();
        async move {
            if let Err(e) = serve(engine, listener, shutdown).await {
                tracing::error!(error = format!("{e:#}"), "HTTP listener stopped");
            }
        }
    }));
    let engine = app.engine.clone();
    let reader = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut seq = 0u64;
        while let Ok(Some(line)) = lines.next_line().await {
            seq += 1;
            match console::parse_line(&line, &user, "console", seq + chrono::Utc::now().timestamp_millis() as u64 * 1000) {
                Ok(Some(event)) => {
                    if let Err(e) = engine.handle(event).await {
                        eprintln!("error: {e:#}");
                    }
                }
                Ok(None) => {}
                Err(msg) => eprintln!("{msg}"),
            }
        }
    });
    tokio::signal::ctrl_c().await.ok();
    let _ = stop.send(true);
    reader.abort();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    app.engine.store.close().await;
    Ok(())
}

pub fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEPLOYBOT_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}
