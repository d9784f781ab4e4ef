//! The environment's pre-deployment checklist (`[environments.X.checklist]`), checked by the bot at
//! request time (its results are in the approval message) and again in preflight, before anything
//! changes.
//!
//! Items, in the order they are shown:
//! - built in: every `${VAR}` the environment's steps need is set (`vars`); the environment's
//!   Prometheus answers and each watch rule's query returns data (`monitoring`); the backup's S3
//!   destination is writable (`backup`); the security checks of `[[environments.X.verify.security]]`
//!   against what runs now (`security`). Each is `"required"` (a failure refuses the deployment),
//!   `"optional"` (shown to the approvers) or `"off"`;
//! - automatic items (`[[environments.X.checklist.checks]]`): HTTP checks (the verify runner's,
//!   templated with `{version}`, `{sha}`, `{env}`), `required` unless they say otherwise;
//! - manual items (`manual`, or the whole `checklist = [...]` list): text the approvers confirm by
//!   approving, never checked by the bot.

use std::time::Duration;

use serde::Deserialize;

use crate::config::Environment;
use crate::verify::CheckConfig;

/// How a built-in item counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// A failure refuses the deployment.
    Required,
    /// A failure is shown to the approvers.
    Optional,
    Off,
}

/// `[environments.X.checklist]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecklistConfig {
    /// Items the approvers confirm by approving.
    #[serde(default)]
    pub manual: Vec<String>,
    /// Automatic items: HTTP checks with `required` (default true).
    #[serde(default)]
    pub checks: Vec<CheckConfig>,
    /// The git repository (URL or path) whose tag `{version}` names the commit `{sha}`; read with
    /// `git ls-remote`, so nothing is cloned.
    #[serde(default)]
    pub repo: Option<String>,
    #[serde(default = "required")]
    pub vars: Level,
    #[serde(default = "optional")]
    pub monitoring: Level,
    #[serde(default = "optional")]
    pub backup: Level,
    #[serde(default = "optional")]
    pub security: Level,
}

fn required() -> Level {
    Level::Required
}
fn optional() -> Level {
    Level::Optional
}

impl Default for ChecklistConfig {
    fn default() -> Self {
        ChecklistConfig { manual: Vec::new(), checks: Vec::new(), repo: None, vars: Level::Required, monitoring: Level::Optional, backup: Level::Optional, security: Level::Optional }
    }
}

impl ChecklistConfig {
    /// A plain list (`checklist = ["…"]`) is the manual items; a table is the whole checklist.
    pub fn from_value(value: toml::Value) -> Result<ChecklistConfig, String> {
        match value {
            toml::Value::Array(items) => {
                let manual = items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| match item {
                        toml::Value::String(s) => Ok(s),
                        other => Err(format!("[{i}]: expected a string (a manual item), found {}", other.type_str())),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(ChecklistConfig { manual, ..ChecklistConfig::default() })
            }
            table @ toml::Value::Table(_) => {
                let mut track = serde_path_to_error::Track::new();
                ChecklistConfig::deserialize(serde_path_to_error::Deserializer::new(table, &mut track)).map_err(|e| {
                    let path = track.path().to_string();
                    if path.is_empty() || path == "." {
                        e.to_string()
                    } else {
                        format!("{path}: {e}")
                    }
                })
            }
            other => Err(format!("expected a list of manual items or a table, found {}", other.type_str())),
        }
    }

    /// Problems as (path under `checklist`, message). No I/O.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, item) in self.manual.iter().enumerate() {
            if item.trim().is_empty() {
                out.push((format!("manual[{i}]"), "must not be empty".to_string()));
            }
        }
        out.extend(self.settings(&crate::verify::VerifyConfig::default()).validate());
        let uses_sha = self.checks.iter().any(|c| c.uses("sha"));
        if uses_sha && self.repo.is_none() {
            out.push(("repo".into(), "a check uses {sha}: set repo to the git repository whose tags name the commits".into()));
        }
        out
    }

    /// The items as a verify table of their own: the environment's verify timeouts and backoff, no
    /// retries unless an item asks for them.
    fn settings(&self, verify: &crate::verify::VerifyConfig) -> crate::verify::VerifyConfig {
        crate::verify::VerifyConfig { health: Vec::new(), smoke: Vec::new(), security: Vec::new(), checklist: self.checks.clone(), retries: 0, ..verify.clone() }
    }
}

/// One item's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub name: String,
    pub ok: bool,
    pub required: bool,
    pub detail: String,
}

/// Every automatic item's result, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Results {
    pub items: Vec<Item>,
}

impl Results {
    /// The first failed required item: the deployment may not proceed.
    pub fn refusal(&self) -> Option<&Item> {
        self.items.iter().find(|i| i.required && !i.ok)
    }

    /// One line per item: `✅ name — detail`, `❌ name — detail`, `⚠️ name (optional) — detail`.
    pub fn lines(&self) -> String {
        self.items
            .iter()
            .map(|i| {
                let mark = match (i.ok, i.required) {
                    (true, _) => "✅",
                    (false, true) => "❌",
                    (false, false) => "⚠️",
                };
                let optional = if !i.ok && !i.required { " (optional)" } else { "" };
                format!("{mark} {}{optional} — {}", i.name, crate::engine::render::first_line(&i.detail))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Whether `env` has anything for the bot to check.
pub fn has_automatic_items(env: &Environment) -> bool {
    let c = &env.checklist;
    !c.checks.is_empty()
        || (c.vars != Level::Off && !env.secret_refs.is_empty())
        || (c.monitoring != Level::Off && monitoring_configured(env))
        || (c.backup != Level::Off && backup_destination(env).is_some())
        || (c.security != Level::Off && !env.verify.security.is_empty())
}

fn monitoring_configured(env: &Environment) -> bool {
    env.monitor.as_ref().is_some_and(|m| m.prometheus_url.is_some() && m.rules.iter().any(|r| r.query.is_some()))
}

fn backup_destination(env: &Environment) -> Option<&crate::config::BackupConfig> {
    env.backup.as_ref().filter(|b| b.s3.is_some() && env.step_enabled("backup"))
}

/// The `${VAR}`s of the environment that are unset or empty, with where each is used.
pub fn missing_vars(env: &Environment, vars: &crate::secrets::Vars) -> Vec<(String, String)> {
    env.secret_refs.iter().filter(|(_, var)| vars.get(var).is_none_or(|v| v.is_empty())).cloned().collect()
}

/// Checks every automatic item of `env` for `version`. Never panics; every failure is one line.
pub async fn evaluate(env: &Environment, vars: &crate::secrets::Vars, http: &reqwest::Client, version: &str) -> Results {
    let c = &env.checklist;
    let mut items = Vec::new();
    let level = |l: Level| l == Level::Required;

    if c.vars != Level::Off && !env.secret_refs.is_empty() {
        let missing = missing_vars(env, vars);
        let mut names: Vec<&str> = Vec::new();
        for (_, var) in &missing {
            if !names.contains(&var.as_str()) {
                names.push(var);
            }
        }
        let detail = if missing.is_empty() {
            let mut all: Vec<&str> = env.secret_refs.iter().map(|(_, v)| v.as_str()).collect();
            all.sort();
            all.dedup();
            format!("{} set", all.join(", "))
        } else {
            let first = &missing[0];
            format!(
                "{} {} not set (needed by {}{})",
                names.join(", "),
                if names.len() == 1 { "is" } else { "are" },
                first.0,
                if missing.len() > 1 { format!(" and {} more", missing.len() - 1) } else { String::new() }
            )
        };
        items.push(Item { name: "environment variables configured".into(), ok: missing.is_empty(), required: level(c.vars), detail });
    }

    if c.monitoring != Level::Off && monitoring_configured(env) {
        if let Some(m) = &env.monitor {
            let url = m.prometheus_url.clone().unwrap_or_default();
            let prometheus = crate::monitor::prometheus::Prometheus::from_config(&url, m.prometheus_auth.as_ref(), vars, http.clone());
            let mut failures = Vec::new();
            let mut asked = 0;
            for rule in m.rules.iter().filter(|r| r.query.is_some()) {
                asked += 1;
                if let Err(e) = prometheus.query(rule.query.as_deref().unwrap_or_default()).await {
                    let unreachable = matches!(e, crate::monitor::prometheus::QueryError::Unreachable { .. });
                    failures.push(format!("rule '{}': {e}", rule.name));
                    if unreachable {
                        break;
                    }
                }
            }
            let detail = match failures.first() {
                None => format!("Prometheus at {} answers; {asked}/{asked} rule queries return data", crate::secrets::display_url(&url)),
                Some(first) if failures.len() > 1 => format!("{first} ({} more rules without data)", failures.len() - 1),
                Some(first) => first.clone(),
            };
            items.push(Item { name: "monitoring configured".into(), ok: failures.is_empty(), required: level(c.monitoring), detail });
        }
    }

    if c.backup != Level::Off {
        if let Some(b) = backup_destination(env) {
            let uri = b.s3.clone().unwrap_or_default();
            let result = async {
                let location = crate::backup::s3::S3Location::new(&uri, &b.s3_region, b.s3_endpoint_url.as_deref(), vars).await.map_err(|e| e.to_string())?;
                tokio::time::timeout(Duration::from_secs(20), location.check_writable()).await.map_err(|_| format!("no answer from S3 within 20s writing to {uri}"))?.map_err(|e| e.to_string())
            }
            .await;
            let (ok, detail) = match result {
                Ok(()) => (true, format!("{uri} is writable")),
                Err(e) => (false, e),
            };
            items.push(Item { name: "backup destination writable".into(), ok, required: level(c.backup), detail });
        }
    }

    if c.security != Level::Off && !env.verify.security.is_empty() {
        let run = crate::verify::Vars::new(version, env.name.as_str(), "preflight");
        let report = crate::verify::run_security(&env.verify, &run, http, vars).await;
        for outcome in report.checks {
            items.push(Item { name: format!("security: {}", outcome.name), ok: outcome.ok, required: level(c.security), detail: outcome.detail });
        }
    }

    if !c.checks.is_empty() {
        let uses_sha = c.checks.iter().any(|check| check.uses("sha"));
        let mut sha = None;
        if uses_sha {
            if let Some(repo) = &c.repo {
                match resolve_sha(repo, version).await {
                    Ok(commit) => sha = Some(commit),
                    Err(e) => items.push(Item { name: format!("commit of {version}"), ok: false, required: false, detail: e }),
                }
            }
        }
        let run = crate::verify::Vars::new(version, env.name.as_str(), "checklist").with_sha(sha);
        let report = crate::verify::run_checklist(&c.checks, &c.settings(&env.verify), &run, http, vars).await;
        for (outcome, check) in report.checks.into_iter().zip(&c.checks) {
            items.push(Item { name: outcome.name, ok: outcome.ok, required: check.required.unwrap_or(true), detail: outcome.detail });
        }
    }
    Results { items }
}

/// The commit the tag `version` names in `repo` (`git ls-remote`, the peeled commit of an annotated
/// tag). `git` reads the repository's credentials itself; none are in the argv.
pub async fn resolve_sha(repo: &str, version: &str) -> Result<String, String> {
    let shown = crate::secrets::display_url(repo);
    let tag = format!("refs/tags/{version}");
    let peeled = format!("{tag}^{{}}");
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("git").arg("ls-remote").arg("--tags").arg("--").arg(repo).arg(&tag).env("GIT_TERMINAL_PROMPT", "0").kill_on_drop(true).output(),
    )
    .await
    .map_err(|_| format!("git ls-remote {shown} did not answer within 30s"))?
    .map_err(|e| format!("cannot run git: {e}"))?;
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        return Err(format!("git ls-remote {shown} failed: {}", crate::secrets::redact(crate::engine::render::first_line(err.trim()))));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut direct = None;
    for line in text.lines() {
        let Some((sha, name)) = line.split_once('\t') else { continue };
        if name == peeled {
            return Ok(sha.to_string());
        }
        if name == tag {
            direct = Some(sha.to_string());
        }
    }
    direct.ok_or_else(|| format!("tag {version} is not in {shown}"))
}
