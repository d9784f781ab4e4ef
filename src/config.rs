//! The operator's TOML file, typed and validated once at load.
//!
//! Loading never stops at the first mistake: the file is split into its sections and each one is
//! deserialized on its own, then every semantic rule (timezones, cron, durations, URLs, emoji,
//! references between services and environments, secrets) is checked, and all problems are
//! returned together with their key path and, where the TOML parser knows it, their line.
//!
//! Secrets are never inline: a secret field must hold a `${ENV_VAR}` reference, kept as a
//! [`SecretRef`] whose value is read from the environment only when the part that needs it starts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use deploybot_commands::{Catalog, EnvName, ServiceName};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::monitor::rules::{AlertsConfig, MonitorConfig};
use crate::policy::{Policy, Window, WindowConfig};
use crate::secrets::SecretRef;
use crate::targets::TargetConfig;
use crate::verify::VerifyConfig;

/// One problem found in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} (line {}): {}", self.path, line, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Every problem of a file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{} problem(s) in {file}:\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<ConfigProblem>,
}

// ---------------------------------------------------------------------------------------------
// Raw sections, as they appear in the file.

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    #[serde(default = "default_database_url")]
    pub database_url: String,
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// `text` (default) or `json` log lines.
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// Where the Markdown history file is written, if anywhere.
    #[serde(default)]
    pub history_file: Option<String>,
    /// A git repository (URL or local path) the history file is committed and pushed to after
    /// each deployment ends.
    #[serde(default)]
    pub history_repo: Option<String>,
    /// The branch of `history_repo`.
    #[serde(default = "default_history_branch")]
    pub history_branch: String,
    /// A PEM file of a private CA every HTTP check (health, smoke, checklist, security) trusts
    /// besides the public roots, unless the check names its own `ca_file`.
    #[serde(default)]
    pub ca_file: Option<String>,
}

fn default_history_branch() -> String {
    "main".into()
}

impl Default for BotConfig {
    fn default() -> Self {
        BotConfig {
            database_url: default_database_url(),
            listen: default_listen(),
            timezone: default_timezone(),
            log_format: default_log_format(),
            history_file: None,
            history_repo: None,
            history_branch: default_history_branch(),
            ca_file: None,
        }
    }
}

fn default_database_url() -> String {
    "sqlite://deploybot.db".into()
}
fn default_listen() -> String {
    "127.0.0.1:3000".into()
}
fn default_timezone() -> String {
    "UTC".into()
}
fn default_log_format() -> String {
    "text".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    #[default]
    Console,
    Slack,
    Discord,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SlackMode {
    #[default]
    Socket,
    Events,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    #[serde(default)]
    pub mode: SlackMode,
    pub bot_token: SecretRef,
    #[serde(default)]
    pub app_token: Option<SecretRef>,
    #[serde(default)]
    pub signing_secret: Option<SecretRef>,
    #[serde(default = "default_slack_api")]
    pub api_url: String,
}

fn default_slack_api() -> String {
    "https://slack.com/api".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DiscordMode {
    /// Commands arrive as `INTERACTION_CREATE` over the gateway (no public URL needed).
    #[default]
    Gateway,
    /// Commands arrive as signed `POST /discord/interactions` on the listener.
    Interactions,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    #[serde(default)]
    pub mode: DiscordMode,
    pub token: SecretRef,
    /// The application's Ed25519 public key (hex), literally or as a `${VAR}` reference.
    #[serde(default)]
    pub public_key: Option<String>,
    #[serde(default)]
    pub application_id: Option<String>,
    /// Register the commands in this guild only (instant), instead of globally.
    #[serde(default)]
    pub guild_id: Option<String>,
    #[serde(default = "default_discord_api")]
    pub api_url: String,
}

fn default_discord_api() -> String {
    "https://discord.com".into()
}

/// Discord ids are snowflakes: unsigned 64-bit numbers, written as strings.
fn is_snowflake(id: &str) -> bool {
    !id.is_empty() && id.len() <= 20 && id.parse::<u64>().is_ok()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    #[serde(default)]
    pub platform: Platform,
    #[serde(default)]
    pub slack: Option<SlackConfig>,
    #[serde(default)]
    pub discord: Option<DiscordConfig>,
    #[serde(default)]
    pub console: ConsoleConfig,
}

/// The console platform: who types, and which groups exist (Slack user groups stand-in).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    #[serde(default = "default_console_user")]
    pub user: String,
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig { user: default_console_user(), groups: BTreeMap::new() }
    }
}

fn default_console_user() -> String {
    std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "operator".into())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reactions {
    #[serde(default = "default_approve")]
    pub approve: String,
    #[serde(default = "default_reject")]
    pub reject: String,
    #[serde(default = "default_rollback")]
    pub rollback: String,
}

impl Default for Reactions {
    fn default() -> Self {
        Reactions { approve: default_approve(), reject: default_reject(), rollback: default_rollback() }
    }
}

fn default_approve() -> String {
    "white_check_mark".into()
}
fn default_reject() -> String {
    "x".into()
}
fn default_rollback() -> String {
    "rewind".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The image repository without tag, e.g. `your-registry/invoice-me-backend`.
    pub image: String,
    /// Deploy order: lower first; ties by name. The runbook deploys the backend before the frontend.
    #[serde(default = "default_order")]
    pub order: u32,
    /// How `/release` builds its image.
    #[serde(default)]
    pub build: Option<crate::release::BuildConfig>,
}

fn default_order() -> u32 {
    100
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalConfig {
    #[serde(default = "default_required")]
    pub required: u32,
    #[serde(default)]
    pub approvers: Vec<String>,
    #[serde(default)]
    pub self_approval: bool,
    #[serde(default = "default_expires")]
    pub expires_after: String,
}

fn default_required() -> u32 {
    1
}
fn default_expires() -> String {
    "30m".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotfixConfig {
    /// Whether `--hotfix` is accepted at all in this environment.
    #[serde(default = "default_true")]
    pub allowed: bool,
    /// Votes a hotfix needs (from the environment's approvers unless `approvers` is set).
    #[serde(default = "default_required")]
    pub approvals: u32,
    #[serde(default)]
    pub approvers: Option<Vec<String>>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Connection string of the database to dump, normally `${PROD_DATABASE_URL}`.
    pub database_url: SecretRef,
    /// `s3://bucket/prefix/`; the upload is skipped when absent.
    #[serde(default)]
    pub s3: Option<String>,
    #[serde(default)]
    pub s3_endpoint_url: Option<String>,
    #[serde(default = "default_region")]
    pub s3_region: String,
    #[serde(default = "default_backup_dir")]
    pub dir: String,
    /// How long local dump files are kept, e.g. `7d`; `0s` deletes them after upload.
    #[serde(default = "default_keep_local")]
    pub keep_local: String,
    #[serde(default = "default_backup_timeout")]
    pub timeout: String,
    #[serde(default = "default_pg_dump")]
    pub pg_dump: String,
    /// `psql`, for `/rollback --with-db`; by default the one beside `pg_dump` when that is a path.
    #[serde(default)]
    pub psql: Option<String>,
}

impl BackupConfig {
    pub fn psql_program(&self) -> String {
        if let Some(p) = &self.psql {
            return p.clone();
        }
        match Path::new(&self.pg_dump).parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => dir.join("psql").display().to_string(),
            None => "psql".into(),
        }
    }
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_backup_dir() -> String {
    "backups".into()
}
fn default_keep_local() -> String {
    "7d".into()
}
fn default_backup_timeout() -> String {
    "30m".into()
}
fn default_pg_dump() -> String {
    "pg_dump".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationConfig {
    /// argv of the migration tool; `${ENV}` references are expanded when it runs.
    pub command: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default = "default_migration_timeout")]
    pub timeout: String,
    /// The command's extra environment; values may hold `${VAR}` references, expanded when it runs
    /// (secrets such as `FLYWAY_URL` go here, never in `command`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The migration scripts' folder in the `[release] repo` (e.g.
    /// `backend/src/main/resources/db/migration`): `/deploy --dry-run` lists the scripts in the
    /// requested version's tree newer than the schema version the last migration step reported.
    #[serde(default)]
    pub folder: Option<String>,
}

impl MigrationConfig {
    /// The `env` table with its references read now; the values become known secrets.
    pub fn expanded_env(&self, vars: &crate::secrets::Vars) -> Result<Vec<(String, String)>, String> {
        crate::secrets::expand_env_table(&self.env, vars)
    }
}

fn default_migration_timeout() -> String {
    "15m".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvBase {
    pub channel: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Services deployed here; all configured services when absent.
    #[serde(default)]
    pub services: Option<Vec<String>>,
    /// Promotion rule: the version must have succeeded on each of these first.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Who may request a deployment: user ids, `group:…`, or `"*"`.
    #[serde(default = "default_deployers")]
    pub deployers: Vec<String>,
    /// Pipeline steps switched off here (`backup`, `migrations`, `verify`, `monitor`).
    #[serde(default)]
    pub skip_steps: Vec<String>,
    /// Preflight: refuse a version whose image is not in the registry (Docker Registry HTTP API
    /// v2). Off by default, so that environments without a registry need none.
    #[serde(default)]
    pub check_images: bool,
}

fn default_deployers() -> Vec<String> {
    vec!["*".into()]
}

const STEP_NAMES: [&str; 4] = ["backup", "migrations", "verify", "monitor"];

// ---------------------------------------------------------------------------------------------
// The validated config the rest of the bot uses.

#[derive(Debug, Clone)]
pub struct Config {
    pub bot: BotConfig,
    pub bot_timezone: chrono_tz::Tz,
    pub chat: ChatConfig,
    pub reactions: Reactions,
    /// `[alerts]`: Alertmanager's environment label and the weekly digest.
    pub alerts: AlertsConfig,
    /// `[[notify]]`: who is told about deployments, and how.
    pub notify: Vec<crate::notify::NotifyConfig>,
    pub services: BTreeMap<ServiceName, ServiceConfig>,
    pub environments: BTreeMap<EnvName, Environment>,
    /// `[registry]`: credentials for the image check, pulls and `/release` pushes.
    pub registry: Option<crate::registry::RegistryConfig>,
    /// `[release]`: what `/release` tags and where.
    pub release: Option<crate::release::ReleaseConfig>,
    /// Where `${VAR}` references are read when a part starts: the process environment unless a
    /// caller (a test) gives them explicitly.
    pub vars: crate::secrets::Vars,
}

#[derive(Debug, Clone)]
pub struct Environment {
    pub name: EnvName,
    pub base: EnvBase,
    pub services: Vec<ServiceName>,
    pub requires: Vec<EnvName>,
    pub target: TargetConfig,
    pub policy: Policy,
    pub approvals: Option<Approvals>,
    pub hotfix: HotfixConfig,
    pub verify: VerifyConfig,
    pub backup: Option<BackupConfig>,
    pub migrations: Option<MigrationConfig>,
    pub monitor: Option<MonitorConfig>,
    /// `[environments.X.checklist]` (or `checklist = [...]`, the manual items alone).
    pub checklist: crate::checklist::ChecklistConfig,
    /// Every `${VAR}` in the environment's table, with the key path that uses it.
    pub secret_refs: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Approvals {
    pub required: u32,
    pub approvers: Vec<String>,
    pub self_approval: bool,
    pub expires_after: Duration,
}

impl Environment {
    pub fn step_enabled(&self, step: &str) -> bool {
        !self.base.skip_steps.iter().any(|s| s == step)
    }
}

impl Config {
    /// Reads and validates a file; all problems are reported at once.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            problems: vec![ConfigProblem { path: "(file)".into(), line: None, message: format!("cannot read the file: {e}") }],
        })?;
        Config::parse(&text).map_err(|problems| ConfigError { file, problems })
    }

    pub fn parse(text: &str) -> Result<Config, Vec<ConfigProblem>> {
        let root: toml::Table = match text.parse::<toml::Table>() {
            Ok(t) => t,
            Err(e) => {
                let line = e.span().map(|s| line_of_offset(text, s.start));
                return Err(vec![ConfigProblem {
                    path: "(syntax)".into(),
                    line,
                    message: e.message().trim().to_string(),
                }]);
            }
        };
        let mut v = Validator { problems: Vec::new(), broken: Vec::new() };
        let config = v.config(root);
        if v.problems.is_empty() {
            if let Some(config) = config {
                return Ok(config);
            }
        }
        let spans = toml_edit::ImDocument::parse(text).ok();
        let mut problems = v.problems;
        for p in &mut problems {
            if p.line.is_none() {
                p.line = spans.as_ref().and_then(|d| line_of_path(d, text, &p.path));
            }
        }
        // In file order, as an operator fixes them.
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        if problems.is_empty() {
            problems.push(ConfigProblem { path: "(file)".into(), line: None, message: "the file could not be read as a deploybot config".into() });
        }
        Err(problems)
    }

    /// The command parser's view of environments and services.
    pub fn catalog(&self) -> Catalog {
        Catalog::new(
            self.environments.values().map(|e| (e.name.clone(), e.base.aliases.clone())).collect(),
            self.services.keys().cloned().collect(),
        )
    }

    pub fn env(&self, name: &EnvName) -> Option<&Environment> {
        self.environments.get(name)
    }

    /// The environment whose channel is `channel`, if exactly one uses it.
    pub fn env_for_channel(&self, channel: &str) -> Option<&Environment> {
        let mut it = self.environments.values().filter(|e| e.base.channel == channel);
        match (it.next(), it.next()) {
            (Some(e), None) => Some(e),
            _ => None,
        }
    }

    /// Every `${VAR}` the active parts of the config need, with the key that uses it.
    pub fn required_secrets(&self) -> Vec<(String, &SecretRef)> {
        let mut out = Vec::new();
        match self.chat.platform {
            Platform::Console => {}
            Platform::Slack => {
                if let Some(s) = &self.chat.slack {
                    out.push(("chat.slack.bot_token".to_string(), &s.bot_token));
                    match s.mode {
                        SlackMode::Socket => {
                            if let Some(t) = &s.app_token {
                                out.push(("chat.slack.app_token".to_string(), t));
                            }
                        }
                        SlackMode::Events => {
                            if let Some(t) = &s.signing_secret {
                                out.push(("chat.slack.signing_secret".to_string(), t));
                            }
                        }
                    }
                }
            }
            Platform::Discord => {
                if let Some(d) = &self.chat.discord {
                    out.push(("chat.discord.token".to_string(), &d.token));
                }
            }
        }
        if let Some(t) = &self.alerts.webhook_token {
            out.push(("alerts.webhook_token".to_string(), t));
        }
        if let Some(p) = self.registry.as_ref().and_then(|r| r.password.as_ref()) {
            out.push(("registry.password".to_string(), p));
        }
        for (i, n) in self.notify.iter().enumerate() {
            for (key, r) in n.secrets() {
                out.push((format!("notify[{i}].{key}"), r));
            }
        }
        out
    }

    /// What is allowed but probably a mistake, one sentence each (`check-config` prints them).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let loopback = self.bot.listen.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback());
        if !loopback && self.alerts.webhook_token.is_none() {
            out.push(format!(
                "bot.listen: {} is reachable from other machines and [alerts] has no webhook_token, so anyone who can reach it \
                 can post alerts to POST /alerts/alertmanager; set webhook_token = \"${{ALERTMANAGER_TOKEN}}\" and send it from \
                 Alertmanager's http_config.authorization",
                self.bot.listen
            ));
        }
        out
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "config OK: {} service(s), {} environment(s); chat {:?}; store {}\n",
            self.services.len(),
            self.environments.len(),
            self.chat.platform,
            crate::store::describe_url(&self.bot.database_url)
        );
        for env in self.environments.values() {
            let approvals = match &env.approvals {
                Some(a) => format!("{} approval(s)", a.required),
                None => "no approval".into(),
            };
            s.push_str(&format!(
                "  {} ({}): {} target, services [{}], {}, window: {}{}\n",
                env.name,
                env.base.channel,
                env.target.kind(),
                env.services.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                approvals,
                env.policy.describe(),
                if env.requires.is_empty() {
                    String::new()
                } else {
                    format!(", requires [{}]", env.requires.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", "))
                }
            ));
        }
        s
    }
}

/// Parses `30m`, `1h30m`, `15s`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration \"{s}\" ({e}); use forms like 30s, 5m, 1h30m, 7d"))
}

pub fn valid_emoji_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '+' | '\''))
}

struct Validator {
    problems: Vec<ConfigProblem>,
    /// Key paths already reported as wrong and left out of what is checked next: a problem at or
    /// under one of them is a consequence of the first (a default standing in), not a mistake.
    broken: Vec<String>,
}

/// How many mistakes one table may report before the rest of it is given up.
const MAX_MISTAKES_PER_TABLE: usize = 32;

impl Validator {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let follow_on = self.broken.iter().any(|b| {
            path.strip_prefix(b.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
        });
        if !follow_on {
            self.problems.push(ConfigProblem { path, line: None, message: message.into() });
        }
    }

    /// Deserializes one table. A mistake does not hide the rest of the table: the key it is at
    /// is reported, left out, and the table read again, so every unknown key and every wrong
    /// value is reported and the other values are still checked. `None` when a required key is
    /// wrong or missing.
    fn section<T: DeserializeOwned>(&mut self, path: &str, value: toml::Value) -> Option<T> {
        let mut value = value;
        let join = |inner: String| if inner == "." || inner.is_empty() { path.to_string() } else { format!("{path}.{inner}") };
        for _ in 0..MAX_MISTAKES_PER_TABLE {
            let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                Ok(v) => return Some(v),
                Err(e) => e,
            };
            let mut steps = key_steps(e.path());
            let message = e.into_inner().message().trim().to_string();
            if let (Some(steps), Some(key)) = (steps.as_mut(), unknown_field(&message)) {
                // Inside a tagged enum (`target`) serde reports an unknown key at the enum: point at the key.
                if !matches!(steps.last(), Some(KeyStep::Key(k)) if k == key) {
                    steps.push(KeyStep::Key(key.to_string()));
                }
            }
            let full = join(steps.as_deref().map_or_else(|| ".".to_string(), render_steps));
            let removed = steps.and_then(|steps| remove_at(&mut value, &steps)).map(join);
            let left_out = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.strip_suffix('`'))
                .is_some_and(|field| self.broken.contains(&format!("{full}.{field}")));
            if left_out {
                // Required, and already reported as wrong.
                return None;
            }
            self.problem(full, message);
            match removed {
                Some(removed) => self.broken.push(removed),
                None => return None,
            }
        }
        None
    }

    /// An optional table; when it is there but unusable, checks that need it stay quiet.
    fn optional_section<T: DeserializeOwned>(&mut self, path: &str, raw: Option<toml::Value>) -> Option<T> {
        let parsed = self.section(path, raw?);
        if parsed.is_none() {
            self.broken.push(path.to_string());
        }
        parsed
    }

    fn duration(&mut self, path: &str, s: &str) -> Option<Duration> {
        match parse_duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(path, e);
                None
            }
        }
    }

    fn url(&mut self, path: &str, s: &str) {
        match url::Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "http" | "https" | "ws" | "wss") => {}
            Ok(u) => self.problem(path, format!("unsupported URL scheme \"{}\" in \"{}\" (http or https)", u.scheme(), crate::secrets::display_url(s))),
            Err(e) => self.problem(path, format!("invalid URL \"{}\": {e}", crate::secrets::display_url(s))),
        }
    }

    fn config(&mut self, mut root: toml::Table) -> Option<Config> {
        let bot: BotConfig = match root.remove("bot") {
            Some(v) => self.section("bot", v).unwrap_or_default(),
            None => BotConfig::default(),
        };
        let chat: ChatConfig = match root.remove("chat") {
            Some(toml::Value::Table(mut table)) => {
                // Each platform's table on its own, so that a mistake in one does not hide the others'.
                let slack = table.remove("slack");
                let discord = table.remove("discord");
                let mut chat: ChatConfig = self.section("chat", toml::Value::Table(table)).unwrap_or_default();
                chat.slack = self.optional_section("chat.slack", slack);
                chat.discord = self.optional_section("chat.discord", discord);
                chat
            }
            Some(v) => self.section("chat", v).unwrap_or_default(),
            None => ChatConfig::default(),
        };
        let reactions: Reactions = match root.remove("reactions") {
            Some(v) => self.section("reactions", v).unwrap_or_default(),
            None => Reactions::default(),
        };
        let alerts: AlertsConfig = match root.remove("alerts") {
            Some(v) => self.section("alerts", v).unwrap_or_default(),
            None => AlertsConfig::default(),
        };
        for (p, msg) in alerts.validate() {
            self.problem(format!("alerts.{p}"), msg);
        }
        let registry: Option<crate::registry::RegistryConfig> = self.optional_section("registry", root.remove("registry"));
        for (p, msg) in registry.iter().flat_map(|r| r.validate()) {
            self.problem(format!("registry.{p}"), msg);
        }
        let release: Option<crate::release::ReleaseConfig> = self.optional_section("release", root.remove("release"));
        for (p, msg) in release.iter().flat_map(|r| r.validate()) {
            self.problem(format!("release.{p}"), msg);
        }
        if let Some(list) = release.as_ref().and_then(|r| r.releasers.as_ref()) {
            self.approver_list("release.releasers", list);
        }
        let notify_raw = root.remove("notify");
        let services_raw = root.remove("services");
        let envs_raw = root.remove("environments");
        for key in root.keys() {
            self.problem(
                key.clone(),
                format!("unknown section `{key}`, expected one of `bot`, `chat`, `reactions`, `alerts`, `notify`, `registry`, `release`, `services`, `environments`"),
            );
        }

        let bot_timezone = self.bot(&bot);
        self.chat(&chat);
        for (key, name) in [("approve", &reactions.approve), ("reject", &reactions.reject), ("rollback", &reactions.rollback)] {
            let trimmed = name.trim_matches(':');
            if !valid_emoji_name(trimmed) {
                self.problem(format!("reactions.{key}"), format!("invalid emoji name \"{name}\" (Slack short names like white_check_mark)"));
            }
        }
        let reactions = Reactions {
            approve: reactions.approve.trim_matches(':').to_string(),
            reject: reactions.reject.trim_matches(':').to_string(),
            rollback: reactions.rollback.trim_matches(':').to_string(),
        };
        if reactions.approve == reactions.reject {
            self.problem("reactions.reject", "the reject emoji must differ from the approve emoji");
        }

        let services = self.services(services_raw);
        let mut environments = self.environments(envs_raw, &services);
        if let (Some(ca_file), Some(envs)) = (&bot.ca_file, environments.as_mut()) {
            for env in envs.values_mut() {
                env.verify.default_ca_file = Some(ca_file.clone());
            }
        }
        let notify = self.notify(notify_raw, environments.as_ref());
        if release.is_none() {
            for env in environments.iter().flat_map(|envs| envs.values()) {
                if env.migrations.as_ref().is_some_and(|m| m.folder.is_some()) {
                    self.problem(format!("environments.{}.migrations.folder", env.name), "the folder is read from the [release] repository, and there is no [release] section: add [release] repo = \"…\" or remove folder");
                }
            }
        }
        Some(Config {
            bot,
            bot_timezone: bot_timezone?,
            chat,
            reactions,
            alerts,
            notify,
            services,
            environments: environments?,
            registry,
            release,
            vars: crate::secrets::Vars::process(),
        })
    }

    /// `[[notify]]`: each entry on its own, checked against the environments.
    fn notify(&mut self, raw: Option<toml::Value>, envs: Option<&BTreeMap<EnvName, Environment>>) -> Vec<crate::notify::NotifyConfig> {
        let entries = match raw {
            None => return Vec::new(),
            Some(toml::Value::Array(entries)) => entries,
            Some(_) => {
                self.problem("notify", "write each notification as a [[notify]] table");
                return Vec::new();
            }
        };
        let known: Vec<&str> = envs.map(|e| e.keys().map(|k| k.as_str()).collect()).unwrap_or_default();
        let mut out = Vec::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let path = format!("notify[{i}]");
            if let Some(n) = self.section::<crate::notify::NotifyConfig>(&path, entry) {
                for (p, msg) in n.validate(&known) {
                    self.problem(format!("{path}.{p}"), msg);
                }
                out.push(n);
            }
        }
        out
    }

    fn bot(&mut self, bot: &BotConfig) -> Option<chrono_tz::Tz> {
        if let Some(repo) = &bot.history_repo {
            if repo.trim().is_empty() {
                self.problem("bot.history_repo", "empty repository: give a git URL or a local path, or leave history_repo out");
            }
            if bot.history_branch.trim().is_empty() || bot.history_branch.contains(char::is_whitespace) {
                self.problem("bot.history_branch", format!("\"{}\" is not a branch name", bot.history_branch));
            }
        }
        self.database_url("bot.database_url", &bot.database_url);
        if bot.listen.parse::<std::net::SocketAddr>().is_err() {
            self.problem("bot.listen", format!("\"{}\" is not a socket address like 127.0.0.1:3000", bot.listen));
        }
        if !matches!(bot.log_format.as_str(), "text" | "json") {
            self.problem("bot.log_format", format!("unknown log format \"{}\" (text or json)", bot.log_format));
        }
        match bot.timezone.parse::<chrono_tz::Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                self.problem("bot.timezone", format!("unknown timezone \"{}\" (IANA names like America/New_York)", bot.timezone));
                None
            }
        }
    }

    /// A store URL, possibly with `${ENV}` parts (expanded when the store opens); a password must
    /// be one of them.
    fn database_url(&mut self, path: &str, url: &str) {
        for var in crate::secrets::referenced_vars(url) {
            if SecretRef::parse(&format!("${{{var}}}")).is_err() {
                self.problem(path, format!("\"${{{var}}}\" is not an environment variable reference (NAME in capitals)"));
                return;
            }
        }
        let whole_url_from_env = url.starts_with("${") && url.find('}') == Some(url.len() - 1);
        if !whole_url_from_env {
            if let Err(e) = crate::store::check_url(url) {
                self.problem(path, e);
                return;
            }
        }
        let authority = url.split_once("://").map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
        let password = authority.rsplit_once('@').and_then(|(userinfo, _)| userinfo.split_once(':')).map(|(_, p)| p);
        if password.is_some_and(|p| !p.is_empty() && !p.contains("${")) {
            self.problem(
                path,
                "the password is written inline, and secrets are never inline: write it as a reference, \
                 e.g. postgres://deploybot:${DEPLOYBOT_DB_PASSWORD}@db.internal/deploybot",
            );
        }
    }

    fn chat(&mut self, chat: &ChatConfig) {
        if let Some(slack) = &chat.slack {
            self.url("chat.slack.api_url", &slack.api_url);
            match slack.mode {
                SlackMode::Socket if slack.app_token.is_none() => {
                    self.problem("chat.slack.app_token", "socket mode needs app_token = \"${SLACK_APP_TOKEN}\"")
                }
                SlackMode::Events if slack.signing_secret.is_none() => self.problem(
                    "chat.slack.signing_secret",
                    "events mode needs signing_secret = \"${SLACK_SIGNING_SECRET}\" to verify Slack's requests",
                ),
                _ => {}
            }
        }
        if let Some(discord) = &chat.discord {
            self.url("chat.discord.api_url", &discord.api_url);
            if discord.mode == DiscordMode::Interactions && discord.public_key.as_deref().is_none_or(|k| k.trim().is_empty()) {
                self.problem("chat.discord.public_key", "interactions mode needs public_key = \"${DISCORD_PUBLIC_KEY}\" to verify Discord's requests")
            }
            match &discord.application_id {
                None if chat.platform == Platform::Discord => self.problem("chat.discord.application_id", "the application id is needed to register the commands and answer interactions (Developer Portal → General Information)"),
                Some(id) if !is_snowflake(id) && SecretRef::parse(id).is_err() => self.problem("chat.discord.application_id", format!("{id:?} is not a Discord id (a number) or a ${{VAR}} reference")),
                _ => {}
            }
            if let Some(id) = discord.guild_id.as_deref().filter(|id| !is_snowflake(id)) {
                self.problem("chat.discord.guild_id", format!("{id:?} is not a Discord id (a number)"))
            }
        }
        match chat.platform {
            Platform::Slack if chat.slack.is_none() => self.problem("chat.slack", "platform is slack but there is no [chat.slack] table"),
            Platform::Discord if chat.discord.is_none() => {
                self.problem("chat.discord", "platform is discord but there is no [chat.discord] table")
            }
            _ => {}
        }
    }

    fn services(&mut self, raw: Option<toml::Value>) -> BTreeMap<ServiceName, ServiceConfig> {
        let mut out = BTreeMap::new();
        let table = match raw {
            Some(toml::Value::Table(t)) => t,
            Some(_) => {
                self.problem("services", "must be a table of [services.<name>] tables");
                return out;
            }
            None => {
                self.problem("services", "no services: add at least one [services.<name>] table with an image");
                return out;
            }
        };
        for (name, value) in table {
            let path = format!("services.{name}");
            let id = match ServiceName::new(&name) {
                Ok(id) => Some(id),
                Err(e) => {
                    self.problem(&path, e);
                    None
                }
            };
            if let Some(svc) = self.section::<ServiceConfig>(&path, value) {
                for (p, msg) in svc.build.iter().flat_map(|b| b.validate()) {
                    self.problem(format!("{path}.build.{p}"), msg);
                }
                if svc.image.is_empty() || svc.image.contains(':') && !svc.image.contains('/') || svc.image.ends_with(':') {
                    self.problem(format!("{path}.image"), format!("\"{}\" is not an image repository (no tag: the version is the tag)", svc.image));
                } else if svc.image.rsplit('/').next().is_some_and(|last| last.contains(':') || last.contains('@')) {
                    self.problem(format!("{path}.image"), format!("\"{}\" includes a tag or digest; give the repository only, the version is the tag", svc.image));
                }
                if let Some(id) = id {
                    out.insert(id, svc);
                }
            }
        }
        out
    }

    fn environments(
        &mut self,
        raw: Option<toml::Value>,
        services: &BTreeMap<ServiceName, ServiceConfig>,
    ) -> Option<BTreeMap<EnvName, Environment>> {
        let table = match raw {
            Some(toml::Value::Table(t)) => t,
            Some(_) => {
                self.problem("environments", "must be a table of [environments.<name>] tables");
                return None;
            }
            None => {
                self.problem("environments", "no environments: add at least one [environments.<name>] table");
                return None;
            }
        };
        let names: BTreeSet<String> = table.keys().cloned().collect();
        let mut out = BTreeMap::new();
        let mut aliases_seen: BTreeMap<String, String> = names.iter().map(|n| (n.clone(), n.clone())).collect();
        let mut channels: BTreeMap<String, String> = BTreeMap::new();
        let mut ok = true;
        for (name, value) in table {
            let path = format!("environments.{name}");
            let env_name = match EnvName::new(&name) {
                Ok(n) => Some(n),
                Err(e) => {
                    self.problem(&path, e);
                    None
                }
            };
            let env = self.environment(&path, value, services, &names);
            match (env_name, env) {
                (Some(n), Some(mut env)) => {
                    for alias in &env.base.aliases {
                        if let Some(prev) = aliases_seen.insert(alias.clone(), name.clone()) {
                            self.problem(format!("{path}.aliases"), format!("alias \"{alias}\" is already used by environment {prev}"));
                        }
                        if EnvName::new(alias).is_err() {
                            self.problem(format!("{path}.aliases"), format!("alias \"{alias}\" is not a valid environment name"));
                        }
                    }
                    if let Some(prev) = channels.insert(env.base.channel.clone(), name.clone()) {
                        tracing::debug!(channel = %env.base.channel, first = %prev, second = %name, "two environments share a channel");
                    }
                    env.name = n.clone();
                    out.insert(n, env);
                }
                _ => ok = false,
            }
        }
        self.promotion_cycles(&out);
        ok.then_some(out)
    }

    fn promotion_cycles(&mut self, envs: &BTreeMap<EnvName, Environment>) {
        for start in envs.keys() {
            let mut stack: Vec<&EnvName> = vec![start];
            let mut seen = BTreeSet::new();
            while let Some(e) = stack.pop() {
                if let Some(env) = envs.get(e) {
                    for r in &env.requires {
                        if r == start {
                            self.problem(format!("environments.{start}.requires"), format!("promotion rule loops back to {start}"));
                            return;
                        }
                        if seen.insert(r.clone()) {
                            stack.push(r);
                        }
                    }
                }
            }
        }
    }

    fn environment(
        &mut self,
        path: &str,
        value: toml::Value,
        services: &BTreeMap<ServiceName, ServiceConfig>,
        env_names: &BTreeSet<String>,
    ) -> Option<Environment> {
        let mut table = match value {
            toml::Value::Table(t) => t,
            _ => {
                self.problem(path, "must be a table");
                return None;
            }
        };
        let target_raw = table.remove("target");
        let window_raw = table.remove("window");
        let approvals_raw = table.remove("approvals");
        let hotfix_raw = table.remove("hotfix");
        let verify_raw = table.remove("verify");
        let backup_raw = table.remove("backup");
        let migrations_raw = table.remove("migrations");
        let monitor_raw = table.remove("monitor");
        let checklist_raw = table.remove("checklist");
        let mut secret_refs = Vec::new();
        for (key, value) in table.iter().map(|(k, v)| (k.as_str(), v)).chain([("target", &target_raw), ("verify", &verify_raw), ("backup", &backup_raw), ("migrations", &migrations_raw), ("monitor", &monitor_raw), ("checklist", &checklist_raw)].into_iter().filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))) {
            collect_secret_refs(&format!("{path}.{key}"), value, &mut secret_refs);
        }
        let base: Option<EnvBase> = self.section(path, toml::Value::Table(table));

        let checklist = match checklist_raw {
            None => Some(crate::checklist::ChecklistConfig::default()),
            Some(v) => match crate::checklist::ChecklistConfig::from_value(v) {
                Ok(c) => {
                    for (p, m) in c.validate() {
                        self.problem(format!("{path}.checklist.{p}"), m);
                    }
                    Some(c)
                }
                Err(m) => {
                    self.problem(format!("{path}.checklist"), m);
                    None
                }
            },
        };

        let target: Option<TargetConfig> = match target_raw {
            Some(v) => self.section(&format!("{path}.target"), v),
            None => {
                self.problem(format!("{path}.target"), "missing target: e.g. target = { kind = \"command\", deploy = [...] }");
                None
            }
        };
        if let Some(t) = &target {
            for (p, m) in t.validate(services) {
                self.problem(format!("{path}.target.{p}"), m);
            }
        }

        let policy = match window_raw {
            None => Some(Policy::always_open()),
            Some(v) => self.section::<WindowConfig>(&format!("{path}.window"), v).and_then(|w| match Window::from_config(&w) {
                Ok(window) => Some(Policy::new(window)),
                Err(errors) => {
                    for e in errors {
                        self.problem(format!("{path}.window.{}", e.path), e.message);
                    }
                    None
                }
            }),
        };

        let approvals = match approvals_raw {
            None => Some(None),
            Some(v) => self.section::<ApprovalConfig>(&format!("{path}.approvals"), v).map(|a| {
                let p = format!("{path}.approvals");
                self.approver_list(&format!("{p}.approvers"), &a.approvers);
                if a.required > 0 && a.approvers.is_empty() {
                    self.problem(format!("{p}.approvers"), format!("{} approval(s) required but nobody may approve: list user ids or group:<id>", a.required));
                }
                let expires_after = self.duration(&format!("{p}.expires_after"), &a.expires_after).unwrap_or(Duration::from_secs(1800));
                (a.required > 0).then_some(Approvals {
                    required: a.required,
                    approvers: a.approvers,
                    self_approval: a.self_approval,
                    expires_after,
                })
            }),
        };

        let hotfix = match hotfix_raw {
            None => Some(HotfixConfig { allowed: true, approvals: approvals.as_ref().and_then(|a| a.as_ref()).map_or(0, |a| a.required), approvers: None }),
            Some(v) => self.section::<HotfixConfig>(&format!("{path}.hotfix"), v).inspect(|h| {
                if let Some(list) = &h.approvers {
                    self.approver_list(&format!("{path}.hotfix.approvers"), list);
                }
            }),
        };

        let verify = match verify_raw {
            None => Some(VerifyConfig::default()),
            Some(v) => self.section::<VerifyConfig>(&format!("{path}.verify"), v).inspect(|vc| {
                for (p, m) in vc.validate() {
                    self.problem(format!("{path}.verify.{p}"), m);
                }
            }),
        };

        let backup = match backup_raw {
            None => Some(None),
            Some(v) => self.section::<BackupConfig>(&format!("{path}.backup"), v).map(|b| {
                let p = format!("{path}.backup");
                self.duration(&format!("{p}.keep_local"), &b.keep_local);
                self.duration(&format!("{p}.timeout"), &b.timeout);
                if let Some(s3) = &b.s3 {
                    if let Err(e) = parse_s3_uri(s3) {
                        self.problem(format!("{p}.s3"), e);
                    }
                }
                if let Some(u) = &b.s3_endpoint_url {
                    self.url(&format!("{p}.s3_endpoint_url"), u);
                }
                Some(b)
            }),
        };

        let migrations = match migrations_raw {
            None => Some(None),
            Some(v) => self.section::<MigrationConfig>(&format!("{path}.migrations"), v).map(|m| {
                if m.command.is_empty() {
                    self.problem(format!("{path}.migrations.command"), "empty command: e.g. [\"mvn\", \"flyway:migrate\"]");
                }
                for (p, msg) in crate::targets::command::secret_references_in_argv("command", &m.command)
                    .into_iter()
                    .chain(crate::targets::command::validate_env_table(&m.env))
                {
                    self.problem(format!("{path}.migrations.{p}"), msg);
                }
                self.duration(&format!("{path}.migrations.timeout"), &m.timeout);
                if let Some(folder) = &m.folder {
                    let p = std::path::Path::new(folder);
                    if folder.trim().is_empty() || p.is_absolute() || p.components().any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir)) {
                        self.problem(format!("{path}.migrations.folder"), format!("\"{folder}\" must be a folder inside the [release] repository, relative to its root, e.g. \"backend/src/main/resources/db/migration\""));
                    }
                }
                Some(m)
            }),
        };

        let monitor = match monitor_raw {
            None => Some(None),
            Some(v) => self.section::<MonitorConfig>(&format!("{path}.monitor"), v).map(|m| {
                for (p, msg) in m.validate() {
                    self.problem(format!("{path}.monitor.{p}"), msg);
                }
                if let (Some(TargetConfig::Command(c)), Some(true)) = (&target, m.probe.as_ref().map(|p| p.drift)) {
                    if c.current.is_none() {
                        self.problem(format!("{path}.monitor.probe.drift"), "drift = true needs to know what runs: give the command target a `current` command (e.g. current = [\"./current.sh\", \"{service}\"])");
                    }
                }
                Some(m)
            }),
        };

        let base = base?;
        if base.channel.trim().is_empty() {
            self.problem(format!("{path}.channel"), "empty channel: the chat channel id where this environment's messages go");
        }
        self.approver_list(&format!("{path}.deployers"), &base.deployers);
        for (i, s) in base.skip_steps.iter().enumerate() {
            if !STEP_NAMES.contains(&s.as_str()) {
                self.problem(format!("{path}.skip_steps[{i}]"), format!("unknown step \"{s}\" (one of {})", STEP_NAMES.join(", ")));
            }
        }
        let env_services: Vec<ServiceName> = match &base.services {
            None => services.keys().cloned().collect(),
            Some(list) => {
                let mut v = Vec::new();
                for (i, s) in list.iter().enumerate() {
                    match ServiceName::new(s).ok().filter(|n| services.contains_key(n)) {
                        Some(n) => v.push(n),
                        None => self.problem(
                            format!("{path}.services[{i}]"),
                            format!("unknown service \"{s}\" (known: {})", services.keys().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")),
                        ),
                    }
                }
                v
            }
        };
        let mut requires = Vec::new();
        for (i, r) in base.requires.iter().enumerate() {
            match EnvName::new(r).ok().filter(|_| env_names.contains(r)) {
                Some(n) => requires.push(n),
                None => self.problem(
                    format!("{path}.requires[{i}]"),
                    format!("unknown environment \"{r}\" (known: {})", env_names.iter().cloned().collect::<Vec<_>>().join(", ")),
                ),
            }
        }
        let mut ordered = env_services;
        ordered.sort_by_key(|s| (services.get(s).map_or(u32::MAX, |c| c.order), s.clone()));

        Some(Environment {
            name: EnvName::new("placeholder").ok()?,
            services: ordered,
            requires,
            target: target?,
            policy: policy?,
            approvals: approvals?,
            hotfix: hotfix?,
            verify: verify?,
            backup: backup?,
            migrations: migrations?,
            monitor: monitor?,
            checklist: checklist?,
            secret_refs,
            base,
        })
    }

    fn approver_list(&mut self, path: &str, list: &[String]) {
        for (i, a) in list.iter().enumerate() {
            let ok = a == "*"
                || crate::approval::group_id(a).is_some_and(valid_chat_id)
                || valid_chat_id(a);
            if !ok {
                self.problem(format!("{path}[{i}]"), format!("\"{a}\" is not a user id, group:<id>, role:<id> or \"*\""));
            }
        }
    }
}

fn valid_chat_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'))
}

/// One step of a key path: a table key or an array index.
enum KeyStep {
    Key(String),
    Index(usize),
}

/// The steps of a deserialization error's path; `None` when it goes through something else.
fn key_steps(path: &serde_path_to_error::Path) -> Option<Vec<KeyStep>> {
    use serde_path_to_error::Segment;
    path.iter()
        .map(|segment| match segment {
            Segment::Map { key } => Some(KeyStep::Key(key.clone())),
            Segment::Seq { index } => Some(KeyStep::Index(*index)),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

/// `a.b[0].c`, as `serde_path_to_error` writes paths.
fn render_steps(steps: &[KeyStep]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            KeyStep::Index(i) => out.push_str(&format!("[{i}]")),
            KeyStep::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
        }
    }
    out
}

/// The key of serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split_once('`').map(|(key, _)| key)
}

/// Removes the key `steps` lead to (the whole array for one of its elements, so that later
/// errors keep their indices); the path of what was removed.
fn remove_at(value: &mut toml::Value, steps: &[KeyStep]) -> Option<String> {
    let last_key = steps.iter().rposition(|s| matches!(s, KeyStep::Key(_)))?;
    let mut node = value;
    for step in &steps[..last_key] {
        node = match step {
            KeyStep::Key(key) => node.as_table_mut()?.get_mut(key)?,
            KeyStep::Index(index) => node.as_array_mut()?.get_mut(*index)?,
        };
    }
    let KeyStep::Key(key) = &steps[last_key] else { return None };
    node.as_table_mut()?.remove(key)?;
    Some(render_steps(&steps[..=last_key]))
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// The line of the deepest part of `path` (`environments.prod.window.allow[0].hours`) in the document.
fn line_of_path(doc: &toml_edit::ImDocument<&str>, text: &str, path: &str) -> Option<usize> {
    enum Node<'a> {
        Item(&'a toml_edit::Item),
        Table(&'a toml_edit::Table),
        Value(&'a toml_edit::Value),
    }
    let mut node = Node::Item(doc.as_item());
    let mut best: Option<usize> = None;
    for seg in path_segments(path) {
        let next = match (node, &seg) {
            (Node::Item(toml_edit::Item::Table(t)), Segment::Key(k)) | (Node::Table(t), Segment::Key(k)) => {
                if let Some(span) = t.key(k).and_then(|k| k.span()) {
                    best = Some(span.start);
                }
                t.get(k).map(Node::Item)
            }
            (Node::Item(toml_edit::Item::Value(v)), _) | (Node::Value(v), _) => match (v, &seg) {
                (toml_edit::Value::InlineTable(t), Segment::Key(k)) => t.get(k).map(Node::Value),
                (toml_edit::Value::Array(a), Segment::Index(i)) => a.get(*i).map(Node::Value),
                _ => None,
            },
            (Node::Item(toml_edit::Item::ArrayOfTables(a)), Segment::Index(i)) => a.get(*i).map(Node::Table),
            _ => None,
        };
        match next {
            Some(n) => {
                let span = match n {
                    Node::Item(i) => i.span(),
                    Node::Table(t) => t.span(),
                    Node::Value(v) => v.span(),
                };
                if let Some(span) = span {
                    best = Some(span.start);
                }
                node = n;
            }
            None => break,
        }
    }
    best.map(|o| line_of_offset(text, o))
}

enum Segment {
    Key(String),
    Index(usize),
}

fn path_segments(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut pieces = part.split('[');
        if let Some(key) = pieces.next().filter(|k| !k.is_empty()) {
            out.push(Segment::Key(key.to_string()));
        }
        for idx in pieces {
            if let Ok(n) = idx.trim_end_matches(']').parse::<usize>() {
                out.push(Segment::Index(n));
            }
        }
    }
    out
}

/// Splits `s3://bucket/prefix/` into bucket and key prefix (ending in `/` when not empty).
pub fn parse_s3_uri(uri: &str) -> Result<(String, String), String> {
    let rest = uri.strip_prefix("s3://").ok_or_else(|| format!("\"{uri}\" is not an S3 URI like s3://backups/invoiceme/"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !valid_bucket {
        return Err(format!("\"{bucket}\" is not a valid S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)"));
    }
    let prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix.to_string() } else { format!("{prefix}/") };
    Ok((bucket.to_string(), prefix))
}

/// Every `${VAR}` in `value`, as (key path, variable), in file order.
fn collect_secret_refs(path: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::String(s) => {
            for var in crate::secrets::referenced_vars(s) {
                out.push((path.to_string(), var));
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_secret_refs(&format!("{path}[{i}]"), item, out);
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table {
                collect_secret_refs(&format!("{path}.{key}"), item, out);
            }
        }
        _ => {}
    }
}
