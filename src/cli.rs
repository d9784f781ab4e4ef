//! The command line: `deploybot --config FILE <command>`. Each command loads what it needs and
//! returns an exit code: 0 success, 1 failure (broken config, unreachable store), 2 bad argument.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use deploybot_commands::{Catalog, EnvName};

use crate::config::Config;
use crate::store::{render_history_markdown, Store};

#[derive(Debug, Parser)]
#[command(name = "deploybot", version, about = "Chat-ops deployment bot: windows, approvals, runbook pipeline, rollback")]
pub struct Cli {
    /// The bot's TOML config.
    #[arg(long, global = true, default_value = "deploybot.toml", env = "DEPLOYBOT_CONFIG")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bot: chat, HTTP listener, job runner, scheduler.
    Run {
        /// Override `[chat] platform` (e.g. `console`).
        #[arg(long)]
        chat: Option<String>,
    },
    /// Validate the config and print a summary, or every problem with its key path.
    CheckConfig {
        /// Also check that every `${VAR}` this environment's steps need is set.
        #[arg(long)]
        env: Option<String>,
    },
    /// Deployment-window policy.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Print deployment history from the store.
    History {
        #[arg(long)]
        env: Option<String>,
        #[arg(long, default_value_t = 10)]
        limit: u32,
        #[arg(long, value_enum, default_value_t = HistoryFormat::Markdown)]
        format: HistoryFormat,
    },
    /// Print deployment stats (frequency, change failure rate, time to restore, duration).
    Stats {
        #[arg(long)]
        env: Option<String>,
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    /// Apply the store's migrations and exit.
    Migrate,
    /// Chat command definitions.
    Commands {
        #[command(subcommand)]
        command: CommandsCommand,
    },
    /// Walk through the runbook on the embedded default, printing the chat transcript.
    Demo,
    /// The stand-in InvoiceMe app the demo's command targets start (not for operators).
    #[command(hide = true)]
    Standin {
        #[command(subcommand)]
        command: StandinCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum StandinCommand {
    /// Replace the running stand-in of an environment's service and wait until it answers.
    Start(crate::demo::StartArgs),
    /// Serve the stand-in in the foreground.
    Serve {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        version: String,
    },
    /// Print the version the stand-in of a service answers with (the demo targets' `current`).
    Current {
        #[arg(long)]
        service: String,
        /// `backend=PORT,frontend=PORT`
        #[arg(long)]
        ports: String,
    },
    /// Print the last lines of a service's stand-in log (the demo targets' `logs`).
    Logs {
        #[arg(long)]
        dir: std::path::PathBuf,
        #[arg(long)]
        env: String,
        #[arg(long)]
        service: String,
        #[arg(long)]
        tail: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Is a deploy allowed at an instant? Prints {"allowed", "reason", "next_window"}.
    Check {
        #[arg(long)]
        env: String,
        /// RFC 3339 instant, e.g. 2026-12-01T10:05:00-05:00 (now when absent).
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        hotfix: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CommandsCommand {
    /// Write the Slack app manifest and the Discord command registration.
    Export {
        #[arg(long, default_value = "commands/manifests")]
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum HistoryFormat {
    Markdown,
    Json,
}

/// Runs the parsed command line.
pub fn main(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> ExitCode {
    match cli.command {
        Command::CheckConfig { env } => check_config(&cli.config, env.as_deref()),
        Command::Policy { command: PolicyCommand::Check { env, at, hotfix } } => policy_check(&cli.config, &env, at.as_deref(), hotfix),
        Command::Commands { command: CommandsCommand::Export { dir } } => export_commands(&dir),
        Command::History { env, limit, format } => report(history(&cli.config, env.as_deref(), limit, format).await),
        Command::Stats { env, days } => report(stats(&cli.config, env.as_deref(), days).await),
        Command::Migrate => report(migrate(&cli.config).await),
        Command::Run { chat } => report(crate::app::run_from_cli(&cli.config, chat.as_deref()).await),
        Command::Demo => report(crate::demo::run().await),
        Command::Standin { command: StandinCommand::Start(args) } => report(crate::demo::standin_start(args).await),
        Command::Standin { command: StandinCommand::Serve { port, version } } => report(crate::demo::standin_serve(port, &version).await),
        Command::Standin { command: StandinCommand::Current { service, ports } } => report(crate::demo::standin_current(&service, &ports).await),
        Command::Standin { command: StandinCommand::Logs { dir, env, service, tail } } => report(crate::demo::standin_logs(&dir, &env, &service, tail)),
    }
}

/// A mistake on the command line (exit 2), as opposed to a failure (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadArgument(String);

fn bad_argument(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(BadArgument(message.into()))
}

fn report(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", crate::secrets::redact(&format!("{e:#}")));
            ExitCode::from(if e.downcast_ref::<BadArgument>().is_some() { 2 } else { 1 })
        }
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(1)
    })
}

fn check_config(path: &Path, env: Option<&str>) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut missing: Vec<String> = config
        .required_secrets()
        .into_iter()
        .filter(|(_, s)| s.resolve_in(&config.vars).is_err())
        .map(|(key, s)| format!("  - {key}: environment variable {} is not set", s.var()))
        .collect();
    if let Some(name) = env {
        let environment = match resolve_env(&config, name).ok().and_then(|e| config.env(&e).cloned()) {
            Some(e) => e,
            None => {
                eprintln!("error: unknown environment \"{name}\" (known: {})", config.environments.keys().map(|e| e.as_str()).collect::<Vec<_>>().join(", "));
                return ExitCode::from(2);
            }
        };
        missing.extend(
            crate::checklist::missing_vars(&environment, &config.vars)
                .into_iter()
                .map(|(key, var)| format!("  - {key}: environment variable {var} is not set")),
        );
    }
    if !missing.is_empty() {
        eprintln!("{} problem(s) in {}:\n{}", missing.len(), path.display(), missing.join("\n"));
        return ExitCode::from(1);
    }
    print!("{}", config.summary());
    for warning in config.warnings() {
        eprintln!("warning: {warning}");
    }
    ExitCode::SUCCESS
}

fn resolve_env(config: &Config, name: &str) -> Result<EnvName, String> {
    let line = format!("/window {name}");
    match deploybot_commands::parse(&config.catalog(), &line) {
        Ok(deploybot_commands::Command::Window { env: Some(env) }) => Ok(env),
        Ok(_) => Err(format!("unknown environment \"{name}\"")),
        Err(e) => Err(e.message().to_string()),
    }
}

fn policy_check(path: &Path, env: &str, at: Option<&str>, hotfix: bool) -> ExitCode {
    let at = match at {
        None => Utc::now(),
        Some(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => t.with_timezone(&Utc),
            Err(e) => {
                eprintln!("error: --at \"{s}\" is not an RFC 3339 instant like 2026-12-01T10:05:00-05:00 ({e})");
                return ExitCode::from(2);
            }
        },
    };
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let env = match resolve_env(&config, env) {
        Ok(e) => e,
        Err(msg) => {
            eprintln!("error: --env: {msg}");
            return ExitCode::from(2);
        }
    };
    let Some(environment) = config.env(&env) else {
        eprintln!("error: --env: unknown environment \"{env}\"");
        return ExitCode::from(2);
    };
    println!("{}", policy_json(&environment.policy, at, hotfix));
    ExitCode::SUCCESS
}

/// The JSON of PRODUCT.md section 4; instants in the window's own timezone.
pub fn policy_json(policy: &crate::policy::Policy, at: DateTime<Utc>, hotfix: bool) -> serde_json::Value {
    let decision = policy.check(at, hotfix);
    let next = decision.next_window.map(|t| match policy.timezone() {
        // AutoSi: a fraction of a second is kept when there is one, so that an open `--at` is
        // answered with itself and never with an instant before it.
        Some(tz) => t.with_timezone(&tz).to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    });
    serde_json::json!({ "allowed": decision.allowed, "reason": decision.reason, "next_window": next })
}

fn export_commands(dir: &Path) -> ExitCode {
    let files = [
        ("slack-app.yml", deploybot_commands::slack_manifest_yaml()),
        ("discord-commands.json", deploybot_commands::discord_commands_json()),
    ];
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("error: cannot create {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    for (name, text) in files {
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

async fn open_store(config: &Config) -> Result<Store> {
    Store::connect(&config.bot.database_url).await
}

fn load_any(path: &Path) -> Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn env_filter(config: &Config, env: Option<&str>) -> Result<Option<EnvName>> {
    env.map(|e| resolve_env(config, e).map_err(|m| bad_argument(format!("--env: {m}")))).transpose()
}

async fn history(path: &Path, env: Option<&str>, limit: u32, format: HistoryFormat) -> Result<()> {
    let config = load_any(path)?;
    let env = env_filter(&config, env)?;
    if !(1..=1000).contains(&limit) {
        return Err(bad_argument("--limit must be from 1 to 1000"));
    }
    let store = open_store(&config).await?;
    let entries = store.history(env.as_ref().map(|e| e.as_str()), limit as i64, config.bot_timezone).await?;
    match format {
        HistoryFormat::Markdown => print!("{}", render_history_markdown(&entries)),
        HistoryFormat::Json => println!("{}", serde_json::to_string_pretty(&entries).context("history as JSON")?),
    }
    store.close().await;
    Ok(())
}

async fn stats(path: &Path, env: Option<&str>, days: u32) -> Result<()> {
    let config = load_any(path)?;
    let env = env_filter(&config, env)?;
    if !(1..=3650).contains(&days) {
        return Err(bad_argument("--days must be from 1 to 3650"));
    }
    let store = open_store(&config).await?;
    let now = Utc::now();
    let since = now - chrono::Duration::days(days as i64);
    let stats = store.stats(env.as_ref().map(|e| e.as_str()), since.timestamp_millis(), days).await?;
    println!("{}", stats.render(env.as_ref().map_or("all environments", |e| e.as_str())));
    store.close().await;
    Ok(())
}

async fn migrate(path: &Path) -> Result<()> {
    let config = load_any(path)?;
    let store = open_store(&config).await?;
    println!("store at {} is up to date", crate::store::describe_url(&config.bot.database_url));
    store.close().await;
    Ok(())
}

/// The parser's view of a config, for callers outside the engine.
pub fn catalog(config: &Config) -> Catalog {
    config.catalog()
}
