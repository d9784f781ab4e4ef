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
use crate::chat::discord::{DiscordPlatform, DiscordSecrets};
use crate::chat::slack::{SlackPlatform, SlackSecrets};
use crate::chat::ChatPlatform;
use crate::config::{Config, DiscordMode, Platform, SlackMode};
use crate::engine::clock::SystemClock;
use crate::engine::{Clock, Engine};
use crate::registry::RegistryAuth;
use crate::store::Store;
use crate::targets::DeployTarget;

/// Builds the drivers of every environment; one that cannot be built is reported, and that
/// environment refuses deployments with the reason.
/// `registry`: the one set of `[registry]` credentials (and its cached tokens) the process uses,
/// shared with the engine's preflight check and `/release` pushes.
pub async fn build_targets(config: &Config, registry: Option<Arc<RegistryAuth>>) -> BTreeMap<deploybot_commands::EnvName, Arc<dyn DeployTarget>> {
    let mut out = BTreeMap::new();
    for env in config.environments.values() {
        match crate::targets::build(&env.target, &config.vars, registry.clone()).await {
            Ok(t) => {
                out.insert(env.name.clone(), t);
            }
            Err(e) => tracing::warn!(env = %env.name, error = format!("{e:#}"), "this environment's target is unavailable; deployments there will be refused"),
        }
    }
    out
}

/// The background work every replica does: jobs, schedules, approval expiry, and the outbox's
/// delivery task (chat delivery never runs on the pipeline's path).
pub fn spawn_loops(engine: &Arc<Engine>, shutdown: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    let jobs = tokio::spawn(engine.clone().run_jobs(shutdown.clone()));
    let outbox = tokio::spawn(engine.outbox.clone().run(shutdown.clone()));
    let notifier = tokio::spawn(engine.clone().run_notifier(shutdown.clone()));
    let schedules = tokio::spawn(crate::engine::schedule::Scheduler::new(engine.clone()).run(shutdown.clone()));
    let ticker = {
        let engine = engine.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut turn: u32 = 0;
            loop {
                if let Err(e) = engine.expire_approvals().await {
                    tracing::warn!(error = format!("{e:#}"), "approval expiry check failed");
                }
                // Every 10 s: releases whose process died are ended and said so, and ended
                // deployments whose replica died before rendering the end are rendered.
                if turn % 40 == 0 {
                    if let Err(e) = engine.sweep_abandoned_releases().await {
                        tracing::warn!(error = format!("{e:#}"), "abandoned-release check failed");
                    }
                    if let Err(e) = engine.sweep_progress_behind().await {
                        tracing::warn!(error = format!("{e:#}"), "progress-message check failed");
                    }
                }
                turn = turn.wrapping_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = shutdown.changed() => break,
                }
            }
        })
    };
    // Chat events accepted but never handled (a crash, a dead replica) are handled once their
    // lease has lapsed; in a task of its own, so a slow command never delays the ticker.
    let inbound = {
        let engine = engine.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = Box::pin(engine.resume_inbound()).await {
                    tracing::warn!(error = format!("{e:#}"), "could not look for chat events left unhandled");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown.changed() => break,
                }
            }
        })
    };
    vec![jobs, outbox, notifier, ticker, schedules, inbound]
}

/// The HTTP routes of PRODUCT.md section 9 that exist in this build.
pub fn router(engine: Arc<Engine>) -> Router {
    let slack = crate::chat::slack::http::routes(&engine);
    let monitor = crate::monitor::http::routes(&engine);
    Router::new().route("/healthz", get(healthz)).with_state(engine).merge(slack).merge(monitor)
}

async fn healthz(State(engine): State<Arc<Engine>>) -> (StatusCode, String) {
    crate::monitor::http::health(&engine).await
}

/// Serves the HTTP listener until `shutdown` turns true.
pub async fn serve(engine: Arc<Engine>, listener: tokio::net::TcpListener, shutdown: watch::Receiver<bool>) -> Result<()> {
    serve_with(engine, Router::new(), listener, shutdown).await
}

/// [`serve`] with the routes of a platform that needs its own state (Discord's interactions).
pub async fn serve_with(engine: Arc<Engine>, extra: Router, listener: tokio::net::TcpListener, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    axum::serve(listener, router(engine).merge(extra))
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
    let registry = config.registry.clone().map(|r| Arc::new(RegistryAuth::new(r, config.vars.clone())));
    let targets = build_targets(&config, registry.clone()).await;
    let chat: Arc<dyn ChatPlatform> = console.clone();
    let engine = Engine::new(Arc::new(config), store, chat, targets, registry, clock);
    Ok(App { engine, console })
}

/// The bot on Slack: the engine with a [`SlackPlatform`], and what Socket Mode needs.
pub struct SlackApp {
    pub engine: Arc<Engine>,
    pub slack: Arc<SlackPlatform>,
    pub secrets: SlackSecrets,
}

/// Resolves the Slack secrets (the error names the missing variable) and builds the engine on Slack.
pub async fn build_slack_app(config: Config, clock: Arc<dyn Clock>) -> Result<SlackApp> {
    let slack_config = config.chat.slack.clone().context("platform is slack but there is no [chat.slack] table")?;
    let secrets = SlackSecrets::resolve(&slack_config, &config.vars)?;
    let slack = Arc::new(SlackPlatform::new(&slack_config.api_url, &secrets.bot_token)?);
    let store = Store::connect(&config.bot.database_url).await?;
    let registry = config.registry.clone().map(|r| Arc::new(RegistryAuth::new(r, config.vars.clone())));
    let targets = build_targets(&config, registry.clone()).await;
    let chat: Arc<dyn ChatPlatform> = slack.clone();
    let engine = Engine::new(Arc::new(config), store, chat, targets, registry, clock);
    Ok(SlackApp { engine, slack, secrets })
}

/// Starts Socket Mode when it is the configured mode (Events API requests arrive on the
/// listener's `/slack/*` routes instead).
pub fn start_slack(app: &SlackApp, shutdown: watch::Receiver<bool>) -> Option<tokio::task::JoinHandle<()>> {
    let mode = app.engine.config.chat.slack.as_ref().map(|s| s.mode).unwrap_or_default();
    match (mode, &app.secrets.app_token) {
        (SlackMode::Socket, Some(token)) => Some(crate::chat::slack::socket::spawn(app.engine.clone(), app.slack.clone(), token.clone(), shutdown)),
        _ => None,
    }
}

/// `deploybot run` on Slack: the loops, the listener, and Socket Mode or the Events API routes.
async fn run_slack(config: Config) -> Result<()> {
    init_tracing(&config.bot.log_format);
    let listen = config.bot.listen.clone();
    let app = build_slack_app(config, Arc::new(SystemClock)).await?;
    let listener = bind(&listen).await?;
    run_until_ctrl_c(&app.engine, listener, |shutdown| {
        let socket = start_slack(&app, shutdown);
        let how = if socket.is_some() { "Socket Mode".to_string() } else { format!("Events API on http://{listen}/slack/{{commands,events,interactions}}") };
        eprintln!("deploybot is running on Slack ({how}), HTTP on {listen}. Ctrl-C stops.");
        socket.into_iter().collect()
    })
    .await
}

/// The bot on Discord: the engine with a [`DiscordPlatform`], and what the gateway and the
/// interactions endpoint need.
pub struct DiscordApp {
    pub engine: Arc<Engine>,
    pub discord: Arc<DiscordPlatform>,
    pub secrets: DiscordSecrets,
}

/// Resolves the Discord secrets (the error names the missing variable) and builds the engine on Discord.
pub async fn build_discord_app(config: Config, clock: Arc<dyn Clock>) -> Result<DiscordApp> {
    let discord_config = config.chat.discord.clone().context("platform is discord but there is no [chat.discord] table")?;
    let secrets = DiscordSecrets::resolve(&discord_config, &config.vars)?;
    let store = Store::connect(&config.bot.database_url).await?;
    let discord = Arc::new(DiscordPlatform::new(&discord_config, &secrets, &config.reactions, Some(store.clone()))?);
    let registry = config.registry.clone().map(|r| Arc::new(RegistryAuth::new(r, config.vars.clone())));
    let targets = build_targets(&config, registry.clone()).await;
    let chat: Arc<dyn ChatPlatform> = discord.clone();
    let engine = Engine::new(Arc::new(config), store, chat, targets, registry, clock);
    Ok(DiscordApp { engine, discord, secrets })
}

impl DiscordApp {
    /// `POST /discord/interactions` in interactions mode (no routes otherwise).
    pub fn routes(&self) -> Router {
        crate::chat::discord::http::routes(&self.engine, &self.discord, self.secrets.public_key.as_deref())
    }
}

/// Registers the commands (when they changed) and opens the gateway, which brings reactions in
/// both modes and commands in gateway mode. Registration is retried in the background while
/// Discord is unreachable.
pub fn start_discord(app: &DiscordApp, shutdown: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    let register = {
        let discord = app.discord.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(1);
            loop {
                match discord.register_commands().await {
                    Ok(_) => break,
                    Err(e) => tracing::warn!(error = %e, retry_in_s = wait.as_secs(), "could not register the Discord commands"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait_for(|s| *s) => break,
                }
                wait = (wait * 2).min(Duration::from_secs(300));
            }
        })
    };
    let gateway = crate::chat::discord::gateway::spawn(app.engine.clone(), app.discord.clone(), app.secrets.token.clone(), shutdown);
    vec![register, gateway]
}

/// `deploybot run` on Discord.
async fn run_discord(config: Config) -> Result<()> {
    init_tracing(&config.bot.log_format);
    let listen = config.bot.listen.clone();
    let app = build_discord_app(config, Arc::new(SystemClock)).await?;
    let listener = bind(&listen).await?;
    let mode = app.engine.config.chat.discord.as_ref().map(|d| d.mode).unwrap_or_default();
    run_until_ctrl_c_with(&app.engine, app.routes(), listener, |shutdown| {
        let how = match mode {
            DiscordMode::Gateway => "commands and reactions over the gateway".to_string(),
            DiscordMode::Interactions => format!("commands on http://{listen}/discord/interactions, reactions over the gateway"),
        };
        eprintln!("deploybot is running on Discord ({how}), HTTP on {listen}. Ctrl-C stops.");
        start_discord(&app, shutdown)
    })
    .await
}

async fn bind(listen: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen} ([bot] listen)"))
}

/// Runs the background loops, the HTTP listener and the platform's own tasks (`start`) until
/// Ctrl-C, then stops them and closes the store.
async fn run_until_ctrl_c(
    engine: &Arc<Engine>,
    listener: tokio::net::TcpListener,
    start: impl FnOnce(watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>>,
) -> Result<()> {
    run_until_ctrl_c_with(engine, Router::new(), listener, start).await
}

async fn run_until_ctrl_c_with(
    engine: &Arc<Engine>,
    extra: Router,
    listener: tokio::net::TcpListener,
    start: impl FnOnce(watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>>,
) -> Result<()> {
    let (stop, shutdown) = watch::channel(false);
    let mut tasks = spawn_loops(engine, shutdown.clone());
    tasks.push(tokio::spawn({
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        async move {
            if let Err(e) = serve_with(engine, extra, listener, shutdown).await {
                tracing::error!(error = format!("{e:#}"), "HTTP listener stopped");
            }
        }
    }));
    let own = start(shutdown);
    tokio::signal::ctrl_c().await.ok();
    let _ = stop.send(true);
    for t in tasks.into_iter().chain(own) {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    engine.store.close().await;
    Ok(())
}

/// `deploybot run`.
pub async fn run_from_cli(path: &Path, chat: Option<&str>) -> Result<()> {
    let mut config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    match chat {
        None => {}
        Some("console") => config.chat.platform = Platform::Console,
        Some("slack") => config.chat.platform = Platform::Slack,
        Some("discord") => config.chat.platform = Platform::Discord,
        Some(other) => anyhow::bail!("--chat {other}: expected console, slack or discord"),
    }
    match config.chat.platform {
        Platform::Console => {}
        Platform::Slack => return Box::pin(run_slack(config)).await,
        Platform::Discord => return Box::pin(run_discord(config)).await,
    }
    init_tracing(&config.bot.log_format);
    let listen = config.bot.listen.clone();
    let user = config.chat.console.user.clone();
    let app = build_console_app(config, Arc::new(SystemClock), Some(Box::new(std::io::stdout()))).await?;
    let listener = bind(&listen).await?;
    eprintln!("deploybot is running: console chat as @{user}, HTTP on {listen}. Type /help; Ctrl-C stops.");
    let engine = app.engine.clone();
    run_until_ctrl_c(&app.engine, listener, move |mut shutdown| {
        let reader = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            let mut seq = 0u64;
            loop {
                let line = tokio::select! {
                    next = lines.next_line() => match next {
                        Ok(Some(line)) => line,
                        _ => break,
                    },
                    _ = shutdown.changed() => break,
                };
                seq += 1;
                match console::parse_line(&line, &user, "console", seq + chrono::Utc::now().timestamp_millis() as u64 * 1000) {
                    Ok(Some(event)) => {
                        match Box::pin(engine.handle(event)).await {
                            Err(e) if crate::store::is_unavailable(&e) => eprintln!("{}", crate::engine::STORE_UNAVAILABLE),
                            Err(e) => eprintln!("error: {e:#}"),
                            Ok(_) => {}
                        }
                    }
                    Ok(None) => {}
                    Err(msg) => eprintln!("{msg}"),
                }
            }
        });
        vec![reader]
    })
    .await
}

pub fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEPLOYBOT_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}
