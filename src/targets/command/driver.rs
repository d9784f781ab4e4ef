//! The `command` driver: runs the operator's argv templates; the command's exit is the rollout.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use deploybot_commands::ServiceName;

use super::config::{render, CommandConfig};
use super::process::{self, RunError};
use crate::secrets::redact;
use crate::targets::{log_lines, DeployRequest, DeployTarget, Deployed, LogQuery, RollbackRequest, Running, TargetError, LOG_FETCH_MAX_LINES};

/// Lines of output put in a failure's diagnostics.
const DIAGNOSTIC_LINES: usize = 30;

pub struct CommandTarget {
    config: CommandConfig,
    timeout: Duration,
    /// Where the `env` table's `${VAR}` references are read, at each run: a rotated secret is
    /// picked up, and an unset one fails that run with its name.
    vars: crate::secrets::Vars,
    /// The last output per service, for `diagnostics`.
    last_output: Mutex<HashMap<String, String>>,
}

/// One run of a template: the values of its placeholders and what the command is told.
struct Invocation<'a> {
    operation: &'static str,
    service: &'a str,
    version: &'a str,
    previous: &'a str,
    env: &'a str,
    image: &'a str,
    /// The released digest of `image:version` (empty when none was recorded).
    digest: &'a str,
    deployment_id: Option<i64>,
    /// For a rollback: the version being replaced.
    rollback_from: Option<&'a str>,
    /// For `logs`: `{since}` (seconds) and `{tail}`.
    logs: Option<(&'a str, &'a str)>,
}

impl Invocation<'_> {
    fn placeholder(&self, name: &str) -> Option<&str> {
        Some(match name {
            "service" => self.service,
            "version" => self.version,
            "previous" => self.previous,
            "env" => self.env,
            "image" => self.image,
            "digest" => self.digest,
            "since" => self.logs?.0,
            "tail" => self.logs?.1,
            _ => return None,
        })
    }

    fn vars(&self) -> Vec<(String, String)> {
        let mut vars = vec![
            ("DEPLOYBOT_OPERATION".to_string(), self.operation.to_string()),
            ("DEPLOYBOT_SERVICE".to_string(), self.service.to_string()),
            ("DEPLOYBOT_VERSION".to_string(), self.version.to_string()),
            ("DEPLOYBOT_PREVIOUS".to_string(), self.previous.to_string()),
            ("DEPLOYBOT_ENV".to_string(), self.env.to_string()),
            ("DEPLOYBOT_IMAGE".to_string(), self.image.to_string()),
            ("DEPLOYBOT_IMAGE_DIGEST".to_string(), self.digest.to_string()),
        ];
        if let Some(id) = self.deployment_id {
            vars.push(("DEPLOYBOT_DEPLOYMENT_ID".to_string(), id.to_string()));
        }
        if let Some(from) = self.rollback_from {
            vars.push(("DEPLOYBOT_ROLLBACK_FROM".to_string(), from.to_string()));
        }
        vars
    }

    fn what(&self) -> String {
        format!("{} command for {}", self.operation, self.service)
    }
}

impl CommandTarget {
    /// Parses the timeout; the `env` table is expanded when a command runs.
    pub fn new(config: &CommandConfig, vars: &crate::secrets::Vars) -> anyhow::Result<CommandTarget> {
        let timeout = crate::config::parse_duration(&config.timeout).map_err(anyhow::Error::msg).context("target.timeout")?;
        Ok(CommandTarget { config: config.clone(), timeout, vars: vars.clone(), last_output: Mutex::new(HashMap::new()) })
    }

    /// Runs `template` for `inv`; Ok carries the redacted output and stdout of a zero exit.
    async fn run(&self, template: &[String], inv: &Invocation<'_>) -> Result<(String, String), TargetError> {
        let argv: Vec<String> = template.iter().map(|arg| render(arg, |name| inv.placeholder(name))).collect();
        let mut env = inv.vars();
        env.extend(crate::secrets::expand_env_table(&self.config.env, &self.vars).map_err(|e| TargetError::failed(format!("cannot run the {}: target.{e}", inv.what())))?);
        let workdir = self.config.workdir.as_ref().map(PathBuf::from);
        tracing::info!(command = %redact(&argv.join(" ")), "Running the {}.", inv.what());
        let result = process::run(&argv, &env, workdir.as_deref(), self.timeout).await;
        let label = format!("{} command", inv.operation);
        let (output, outcome) = judge(result, &label, &inv.what(), &self.config.timeout);
        self.last_output.lock().unwrap_or_else(PoisonError::into_inner).insert(inv.service.to_string(), output.clone());
        outcome.map(|stdout| (output, stdout))
    }
}

/// Runs a command that is not a deployment (the migration step): the same process handling and
/// errors as the driver's templates. Ok carries the redacted output.
pub async fn run_argv(argv: &[String], workdir: Option<&str>, env: &[(String, String)], timeout: Duration) -> Result<String, TargetError> {
    let program = argv.first().map_or("", String::as_str);
    let label = format!("command \"{program}\"");
    let result = process::run(argv, env, workdir.map(std::path::Path::new), timeout).await;
    let after = humantime::format_duration(timeout).to_string();
    let (output, outcome) = judge(result, &label, &label, &after);
    outcome.map(|_| output)
}

/// The redacted output of a run, and its outcome: Ok(redacted stdout) on a zero exit. `label` names
/// the command in a failure ("deploy command exited with status 3"), `what` in a timeout or a failed start.
fn judge(result: Result<process::Finished, RunError>, label: &str, what: &str, after: &str) -> (String, Result<String, TargetError>) {
    let output = match &result {
        Ok(finished) => redact(&finished.output),
        Err(RunError::TimedOut { output }) => redact(output),
        Err(RunError::Spawn(_)) => String::new(),
    };
    let outcome = match result {
        Ok(finished) if finished.status.success() => Ok(redact(&finished.stdout)),
        Ok(finished) => {
            let how = match (finished.status.code(), std::os::unix::process::ExitStatusExt::signal(&finished.status)) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(signal)) => format!("was killed by signal {signal}"),
                (None, None) => format!("ended with {}", finished.status),
            };
            Err(TargetError::Failed { reason: format!("{label} {how}"), diagnostics: last_lines(&output) })
        }
        Err(RunError::TimedOut { .. }) => Err(TargetError::Timeout { what: what.to_string(), after: after.to_string(), diagnostics: last_lines(&output) }),
        Err(RunError::Spawn(message)) => Err(TargetError::failed(redact(&format!("cannot run the {what}: {message}")))),
    };
    (output, outcome)
}

/// The end of the output, for a failure message; `None` when there was none.
fn last_lines(output: &str) -> Option<String> {
    let lines: Vec<&str> = output.trim_end().lines().collect();
    if lines.is_empty() {
        return None;
    }
    Some(lines[lines.len().saturating_sub(DIAGNOSTIC_LINES)..].join("\n"))
}

fn detail(operation: &str, output: &str) -> String {
    if output.trim().is_empty() {
        format!("{operation} command exited with status 0 (no output)")
    } else {
        output.trim_end().to_string()
    }
}

#[async_trait::async_trait]
impl DeployTarget for CommandTarget {
    fn kind(&self) -> &'static str {
        "command"
    }

    /// The last non-empty line the `current` template prints; `None` without a template.
    #[tracing::instrument(skip(self))]
    async fn current(&self, service: &ServiceName, image: &str) -> Result<Option<Running>, TargetError> {
        let Some(template) = &self.config.current else { return Ok(None) };
        let inv = Invocation { operation: "current", service: service.as_str(), version: "", previous: "", env: "", image, digest: "", deployment_id: None, rollback_from: None, logs: None };
        let (_, stdout) = self.run(template, &inv).await?;
        Ok(stdout.lines().map(str::trim).rfind(|l| !l.is_empty()).map(|version| Running { version: version.to_string(), reference: None }))
    }

    #[tracing::instrument(skip(self, req), fields(deployment = req.deployment_id, service = %req.service, version = %req.version))]
    async fn deploy(&self, req: &DeployRequest) -> Result<Deployed, TargetError> {
        let previous = req.previous.as_ref().map_or("", |p| p.version.as_str());
        let inv = Invocation {
            operation: "deploy",
            service: req.service.as_str(),
            version: &req.version,
            previous,
            env: &req.env,
            image: &req.image,
            digest: req.digest.as_deref().unwrap_or_default(),
            deployment_id: Some(req.deployment_id),
            rollback_from: None,
            logs: None,
        };
        let (output, _) = self.run(&self.config.deploy, &inv).await?;
        Ok(Deployed { running: Running { version: req.version.clone(), reference: None }, detail: detail("deploy", &output) })
    }

    async fn wait_rollout(&self, _service: &ServiceName, _deployed: &Deployed) -> Result<(), TargetError> {
        Ok(())
    }

    /// The `rollback` template, or the deploy template run for the version being put back; in both
    /// `{version}` and `{previous}` are that version.
    #[tracing::instrument(skip(self, req), fields(deployment = req.deployment_id, service = %req.service, to = %req.to.version))]
    async fn rollback(&self, req: &RollbackRequest) -> Result<Deployed, TargetError> {
        let template = self.config.rollback.as_ref().unwrap_or(&self.config.deploy);
        let inv = Invocation {
            operation: "rollback",
            service: req.service.as_str(),
            version: &req.to.version,
            previous: &req.to.version,
            env: &req.env,
            image: &req.image,
            digest: "",
            deployment_id: Some(req.deployment_id),
            rollback_from: Some(&req.from_version),
            logs: None,
        };
        let (output, _) = self.run(template, &inv).await?;
        Ok(Deployed { running: req.to.clone(), detail: detail("rollback", &output) })
    }

    async fn diagnostics(&self, service: &ServiceName) -> Option<String> {
        let last = self.last_output.lock().unwrap_or_else(PoisonError::into_inner).get(service.as_str()).cloned();
        last.as_deref().and_then(last_lines)
    }

    /// The `logs` template's stdout (its last [`LOGS_STDOUT_BYTES`]); without one, the target
    /// says it has no logs.
    #[tracing::instrument(skip(self))]
    async fn logs(&self, service: &ServiceName, image: &str, query: &LogQuery) -> Result<Vec<String>, TargetError> {
        let Some(template) = &self.config.logs else {
            return Err(TargetError::failed("this command target has no `logs` command (set target.logs, e.g. [\"./logs.sh\", \"{service}\", \"{since}\"])"));
        };
        let back_ms = (chrono::Utc::now().timestamp_millis() - query.since_ms).max(1000);
        let since = ((back_ms + 999) / 1000).to_string();
        let tail = query.limit.min(LOG_FETCH_MAX_LINES).to_string();
        let inv = Invocation { operation: "logs", service: service.as_str(), version: "", previous: "", env: "", image, digest: "", deployment_id: None, rollback_from: None, logs: Some((&since, &tail)) };
        let argv: Vec<String> = template.iter().map(|arg| render(arg, |name| inv.placeholder(name))).collect();
        let mut env = inv.vars();
        env.extend(crate::secrets::expand_env_table(&self.config.env, &self.vars).map_err(|e| TargetError::failed(format!("cannot run the {}: target.{e}", inv.what())))?);
        let workdir = self.config.workdir.as_ref().map(PathBuf::from);
        let result = process::run_capped(&argv, &env, workdir.as_deref(), self.timeout, LOGS_STDOUT_BYTES).await;
        let (_, outcome) = judge(result, "logs command", &inv.what(), &self.config.timeout);
        let stdout = outcome?;
        let body = stdout.strip_prefix(process::CUT_MARK).map_or(stdout.as_str(), |rest| rest.trim_start_matches('\n'));
        Ok(log_lines(body, query.limit))
    }
}

/// How much of a `logs` command's stdout is read: its end.
const LOGS_STDOUT_BYTES: usize = 2 * 1024 * 1024;
