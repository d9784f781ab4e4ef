//! Deploy targets: one trait, one folder per driver (`command`, `docker`, `aws_ecs`, `azure_aci`),
//! chosen per environment by `target.kind`.
//!
//! *Invariant*: AWS, Docker and Azure types never leave this folder. A driver's `validate` does
//! no I/O; building the driver does.

use std::collections::BTreeMap;

use deploybot_commands::ServiceName;
use serde::Deserialize;

use crate::config::ServiceConfig;

pub mod aws_ecs;
pub mod azure_aci;
pub mod command;
pub mod docker;

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetConfig {
    Command(command::CommandConfig),
    Docker(docker::DockerConfig),
    Ecs(aws_ecs::EcsConfig),
    AzureAci(azure_aci::AciConfig),
}

impl TargetConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            TargetConfig::Command(_) => "command",
            TargetConfig::Docker(_) => "docker",
            TargetConfig::Ecs(_) => "ecs",
            TargetConfig::AzureAci(_) => "azure_aci",
        }
    }

    /// Problems as (sub-path, message); no I/O.
    pub fn validate(&self, services: &BTreeMap<ServiceName, ServiceConfig>) -> Vec<(String, String)> {
        match self {
            TargetConfig::Command(c) => c.validate(),
            TargetConfig::Docker(c) => c.validate(services),
            TargetConfig::Ecs(c) => c.validate(services),
            TargetConfig::AzureAci(c) => c.validate(services),
        }
    }
}

/// Checks a map keyed by our service names: every key must be a configured service.
pub(crate) fn check_service_keys<V>(
    field: &str,
    map: &BTreeMap<String, V>,
    services: &BTreeMap<ServiceName, ServiceConfig>,
    out: &mut Vec<(String, String)>,
) {
    for key in map.keys() {
        if !services.keys().any(|s| s.as_str() == key) {
            out.push((
                format!("{field}.{key}"),
                format!(
                    "unknown service \"{key}\" (known: {})",
                    services.keys().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
}

pub(crate) fn check_duration(field: &str, value: &str, out: &mut Vec<(String, String)>) {
    if let Err(e) = crate::config::parse_duration(value) {
        out.push((field.to_string(), e));
    }
}

pub(crate) fn check_url(field: &str, value: &str, out: &mut Vec<(String, String)>) {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https" | "unix" | "tcp") => {}
        Ok(u) => out.push((field.to_string(), format!("unsupported URL scheme \"{}\" in \"{value}\"", u.scheme()))),
        Err(e) => out.push((field.to_string(), format!("invalid URL \"{value}\": {e}"))),
    }
}

/// What runs for a service, exactly enough to put it back: the version (image tag) and a
/// driver-specific reference (ECS task-definition ARN, Docker image id, ACI container group
/// revision…).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Running {
    pub version: String,
    pub reference: Option<String>,
}

/// One service to move to `version`.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub deployment_id: i64,
    pub env: String,
    pub service: ServiceName,
    /// Repository without tag (`your-registry/invoice-me-backend`).
    pub image: String,
    pub version: String,
    /// The digest `/release` recorded for `image:version`: the target puts exactly that image in
    /// place (`image:version@digest`), whatever the tag points at by then.
    pub digest: Option<String>,
    /// What ran before, as `current` reported it when the deployment started.
    pub previous: Option<Running>,
}

impl DeployRequest {
    /// What the target runs: `image:version`, pinned to the released digest when there is one.
    pub fn reference(&self) -> String {
        match &self.digest {
            Some(d) => format!("{}:{}@{d}", self.image, self.version),
            None => format!("{}:{}", self.image, self.version),
        }
    }
}

/// One service to put back on exactly what ran before.
#[derive(Debug, Clone)]
pub struct RollbackRequest {
    pub deployment_id: i64,
    pub env: String,
    pub service: ServiceName,
    pub image: String,
    /// The version being replaced (the failed or unwanted one).
    pub from_version: String,
    pub to: Running,
}

/// What a deploy or rollback put in place, with the driver's own account of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    pub running: Running,
    /// Output worth keeping as the step's detail (command output, new revision, …).
    pub detail: String,
}

/// Why a target could not do what was asked. `diagnostics` is the target's own reason
/// (ECS stopped reason, container exit code and last log lines, command output).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TargetError {
    #[error("{what} timed out after {after}")]
    Timeout { what: String, after: String, diagnostics: Option<String> },
    #[error("{reason}")]
    Failed { reason: String, diagnostics: Option<String> },
    #[error("cannot reach the target: {reason}")]
    Unreachable { reason: String },
}

impl TargetError {
    pub fn failed(reason: impl Into<String>) -> TargetError {
        TargetError::Failed { reason: reason.into(), diagnostics: None }
    }

    pub fn diagnostics(&self) -> Option<&str> {
        match self {
            TargetError::Timeout { diagnostics, .. } | TargetError::Failed { diagnostics, .. } => diagnostics.as_deref(),
            TargetError::Unreachable { .. } => None,
        }
    }
}

/// A deploy target (PRODUCT.md section 6). Implementations live in their own folders.
#[async_trait::async_trait]
pub trait DeployTarget: Send + Sync {
    fn kind(&self) -> &'static str;

    /// What runs now for `service`; `Ok(None)` when nothing is deployed or the driver cannot tell.
    async fn current(&self, service: &ServiceName, image: &str) -> Result<Option<Running>, TargetError>;

    /// Starts putting `req.version` in place; returns once the target accepted the change.
    async fn deploy(&self, req: &DeployRequest) -> Result<Deployed, TargetError>;

    /// Waits until the change is complete (running and healthy) or failed, within the driver's timeout.
    async fn wait_rollout(&self, service: &ServiceName, deployed: &Deployed) -> Result<(), TargetError>;

    /// Puts back exactly what ran before (`req.to`), and waits for it.
    async fn rollback(&self, req: &RollbackRequest) -> Result<Deployed, TargetError>;

    /// The target's own account of a service, for a failure message (exit code, last log lines…).
    async fn diagnostics(&self, service: &ServiceName) -> Option<String>;

    /// The service's log lines since `query.since_ms`, oldest first, at most `query.limit` of the
    /// latest ones, each cut to [`LOG_LINE_MAX_CHARS`] (for `/logs` and the log watch). Not yet
    /// redacted: the caller masks secrets.
    async fn logs(&self, service: &ServiceName, image: &str, query: &LogQuery) -> Result<Vec<String>, TargetError>;
}

/// What `/logs` and the log watch ask a target for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogQuery {
    /// From this instant (Unix milliseconds) on.
    pub since_ms: i64,
    /// At most this many lines, the latest ones.
    pub limit: usize,
}

/// The most lines a driver returns for one query, whatever is asked: what a chat reply or one
/// interval of the watch can use.
pub const LOG_FETCH_MAX_LINES: usize = 10_000;
/// A longer log line is cut to this many characters.
pub const LOG_LINE_MAX_CHARS: usize = 2_000;

/// Splits raw log text into lines for [`DeployTarget::logs`]: no empty trailing line, no `\r`, each
/// cut to [`LOG_LINE_MAX_CHARS`], the latest `limit` kept.
pub(crate) fn log_lines(text: &str, limit: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    let skip = lines.len().saturating_sub(limit.min(LOG_FETCH_MAX_LINES));
    lines[skip..].iter().map(|l| cut_line(l)).collect()
}

/// Lines stamped `<RFC 3339> message` (Docker's and ACI's `timestamps=true`) at or after
/// `since_ms`, without their stamps; a line without a stamp is kept as it is.
pub(crate) fn since_stamped(text: &str, since_ms: i64) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let (stamp, rest) = line.split_once(' ').unwrap_or((line, ""));
        let kept = match chrono::DateTime::parse_from_rfc3339(stamp) {
            Ok(t) if t.timestamp_millis() < since_ms => continue,
            Ok(_) => rest,
            Err(_) => line,
        };
        out.push_str(kept);
        out.push('\n');
    }
    out
}

/// One log line cut to [`LOG_LINE_MAX_CHARS`] characters (marked with `…`).
pub(crate) fn cut_line(line: &str) -> String {
    match line.char_indices().nth(LOG_LINE_MAX_CHARS) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

/// Builds the driver an environment's config asks for (this is where I/O may start).
/// `vars` is where its `${VAR}` references are read.
/// `registry` holds `[registry]`'s credentials, for the drivers that pull images themselves.
pub async fn build(
    config: &TargetConfig,
    vars: &crate::secrets::Vars,
    registry: Option<std::sync::Arc<crate::registry::RegistryAuth>>,
) -> anyhow::Result<std::sync::Arc<dyn DeployTarget>> {
    match config {
        TargetConfig::Command(c) => Ok(std::sync::Arc::new(command::CommandTarget::new(c, vars)?)),
        TargetConfig::Docker(c) => Ok(std::sync::Arc::new(docker::DockerTarget::new(c)?.with_registry(registry))),
        // Boxed: the AWS config loader is a deep future, too deep to inline into every caller's.
        TargetConfig::Ecs(c) => Ok(std::sync::Arc::new(Box::pin(aws_ecs::EcsTarget::new(c, vars)).await?)),
        TargetConfig::AzureAci(c) => Ok(std::sync::Arc::new(azure_aci::AciTarget::new(c, vars)?)),
    }
}
