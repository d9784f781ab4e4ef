//! Monitoring rules as configured (PRODUCT.md section 7): the runbook's table, one rule each.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Base URL of Prometheus' HTTP API, e.g. `http://127.0.0.1:9090`; needed by query rules.
    #[serde(default)]
    pub prometheus_url: Option<String>,
    /// Credentials for Prometheus (or the proxy in front of it), never inside the URL.
    #[serde(default)]
    pub prometheus_auth: Option<PrometheusAuth>,
    /// How long to watch after a successful verification.
    #[serde(default = "default_watch")]
    pub watch: String,
    /// Time between two evaluations of the rules.
    #[serde(default = "default_interval")]
    pub interval: String,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Continuous health probe on a cron schedule, outside deployments too.
    #[serde(default)]
    pub probe: Option<ProbeConfig>,
    /// The runbook's log monitoring: lines matching each pattern, counted over every interval of
    /// the watch in the logs of the deployment's services.
    #[serde(default)]
    pub log_patterns: Vec<LogPattern>,
}

/// `{ pattern = "SQLException|NullPointerException", above = 0, action = "rollback" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogPattern {
    /// A regular expression (Rust `regex` syntax), matched against each log line.
    pub pattern: String,
    /// Matching lines per interval that are fine; more is a breach. 0 when absent.
    #[serde(default)]
    pub above: f64,
    #[serde(default = "default_for", rename = "for")]
    pub for_evaluations: u32,
    #[serde(default)]
    pub action: RuleAction,
    /// Shown in alerts; `log pattern "<pattern>"` when absent.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub hint: Option<String>,
}

impl LogPattern {
    /// The watch rule that counts it.
    pub fn rule(&self) -> RuleConfig {
        RuleConfig {
            name: self.name.clone().unwrap_or_else(|| format!("log pattern \"{}\"", self.pattern)),
            query: None,
            health: false,
            above: Some(self.above),
            below: None,
            for_evaluations: self.for_evaluations,
            action: self.action,
            hint: self.hint.clone(),
            unit: Some("lines".into()),
            log_pattern: Some(self.pattern.clone()),
        }
    }
}

/// `{ token = "${VAR}" }` (bearer) or `{ username = "${VAR}", password = "${VAR}" }` (basic).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusAuth {
    #[serde(default)]
    pub token: Option<crate::secrets::SecretRef>,
    #[serde(default)]
    pub username: Option<crate::secrets::SecretRef>,
    #[serde(default)]
    pub password: Option<crate::secrets::SecretRef>,
}

fn default_watch() -> String {
    "15m".into()
}
fn default_interval() -> String {
    "1m".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    #[default]
    Alert,
    Rollback,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// PromQL instant query; its first sample is compared with the threshold.
    #[serde(default)]
    pub query: Option<String>,
    /// Evaluate the environment's health checks instead of a query.
    #[serde(default)]
    pub health: bool,
    #[serde(default)]
    pub above: Option<f64>,
    #[serde(default)]
    pub below: Option<f64>,
    /// Consecutive failed evaluations before the rule fires.
    #[serde(default = "default_for", rename = "for")]
    pub for_evaluations: u32,
    #[serde(default)]
    pub action: RuleAction,
    /// What to do, shown with the alert ("scale up").
    #[serde(default)]
    pub hint: Option<String>,
    /// How to show the value: `percent` (0.012 → 1.2%), `ms`, `seconds` or `number`.
    #[serde(default)]
    pub unit: Option<String>,
    /// Set for the rules made from `log_patterns`: count the log lines matching it.
    #[serde(skip)]
    pub log_pattern: Option<String>,
}

fn default_for() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Standard 5-field cron, e.g. `* * * * *` for every minute.
    pub schedule: String,
    /// Consecutive failed probes before alerting.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// Also ask each service's target what runs (`current()`) and alert while it differs from
    /// what deploybot recorded (drift), resolving the alert once they agree again.
    #[serde(default)]
    pub drift: bool,
}

fn default_failures() -> u32 {
    3
}

impl MonitorConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let watch = crate::config::parse_duration(&self.watch).map_err(|e| out.push(("watch".into(), e))).ok();
        let interval = crate::config::parse_duration(&self.interval).map_err(|e| out.push(("interval".into(), e))).ok();
        if let (Some(w), Some(i)) = (watch, interval) {
            if i.is_zero() || i > w {
                out.push(("interval".into(), format!("interval {} must be positive and not longer than the watch {}", self.interval, self.watch)));
            }
        }
        if let Some(u) = &self.prometheus_url {
            match url::Url::parse(u) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
                    if !parsed.username().is_empty() || parsed.password().is_some() {
                        out.push((
                            "prometheus_url".into(),
                            format!(
                                "\"{}\" carries credentials: give the URL without them and put them in prometheus_auth = {{ token = \"${{PROMETHEUS_TOKEN}}\" }} or {{ username = \"${{PROMETHEUS_USER}}\", password = \"${{PROMETHEUS_PASSWORD}}\" }}",
                                crate::secrets::display_url(u)
                            ),
                        ));
                    }
                }
                _ => out.push(("prometheus_url".into(), format!("\"{}\" is not an http(s) URL", crate::secrets::display_url(u)))),
            }
        }
        if let Some(a) = &self.prometheus_auth {
            match (&a.token, &a.username, &a.password) {
                (Some(_), None, None) | (None, Some(_), Some(_)) => {}
                _ => out.push((
                    "prometheus_auth".into(),
                    "give either token = \"${VAR}\" (bearer) or both username and password (basic)".into(),
                )),
            }
            if self.prometheus_url.is_none() {
                out.push(("prometheus_auth".into(), "prometheus_auth is set but prometheus_url is not".into()));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let p = format!("rules[{i}]");
            if r.name.trim().is_empty() {
                out.push((format!("{p}.name"), "empty rule name".into()));
            } else if !names.insert(r.name.clone()) {
                out.push((format!("{p}.name"), format!("duplicate rule name \"{}\"", r.name)));
            }
            match (&r.query, r.health) {
                (Some(_), true) => out.push((p.clone(), "a rule has either a query or health = true, not both".into())),
                (None, false) => out.push((p.clone(), "a rule needs a PromQL query or health = true".into())),
                (Some(q), false) => {
                    if q.trim().is_empty() {
                        out.push((format!("{p}.query"), "empty query".into()));
                    }
                    if self.prometheus_url.is_none() {
                        out.push(("prometheus_url".into(), format!("rule \"{}\" queries Prometheus but prometheus_url is not set", r.name)));
                    }
                    match (r.above, r.below) {
                        (None, None) => out.push((p.clone(), "a query rule needs a threshold: above = … or below = …".into())),
                        (Some(_), Some(_)) => out.push((p.clone(), "give one threshold, above or below".into())),
                        _ => {}
                    }
                }
                (None, true) => {}
            }
            if r.for_evaluations == 0 {
                out.push((format!("{p}.for"), "must be at least 1 evaluation".into()));
            }
            if let Some(u) = &r.unit {
                if !matches!(u.as_str(), "percent" | "ms" | "seconds" | "number" | "lines") {
                    out.push((format!("{p}.unit"), format!("unknown unit \"{u}\" (percent, ms, seconds, number or lines)")));
                }
            }
        }
        for (i, lp) in self.log_patterns.iter().enumerate() {
            let p = format!("log_patterns[{i}]");
            if lp.pattern.is_empty() {
                out.push((format!("{p}.pattern"), "empty pattern: it would match every line".into()));
            } else if let Err(e) = regex::Regex::new(&lp.pattern) {
                let why = e.to_string().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
                out.push((format!("{p}.pattern"), format!("\"{}\" is not a valid regular expression: {why}", lp.pattern)));
            }
            if lp.above.is_nan() || lp.above < 0.0 {
                out.push((format!("{p}.above"), "must be 0 or more (matching lines per interval)".into()));
            }
            if lp.for_evaluations == 0 {
                out.push((format!("{p}.for"), "must be at least 1 evaluation".into()));
            }
            let name = lp.rule().name;
            if !names.insert(name.clone()) {
                out.push((format!("{p}.name"), format!("duplicate rule name \"{name}\"")));
            }
        }
        if let Some(probe) = &self.probe {
            if let Err(e) = crate::policy::parse_cron(&probe.schedule) {
                out.push(("probe.schedule".into(), e));
            }
            if probe.failures == 0 {
                out.push(("probe.failures".into(), "must be at least 1".into()));
            }
        }
        out
    }
}

/// The top-level `[alerts]` table: how Alertmanager's alerts find their environment, and the
/// weekly digest of `/stats`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// The alert label whose value names the environment (or one of its aliases).
    #[serde(default = "default_env_label")]
    pub env_label: String,
    /// Channel that receives the weekly `/stats` digest; no digest when absent.
    #[serde(default)]
    pub digest_channel: Option<String>,
    /// When the digest is posted: 5-field cron in the bot's timezone.
    #[serde(default = "default_digest_schedule")]
    pub digest_schedule: String,
    /// When set, `POST /alerts/alertmanager` requires `Authorization: Bearer <token>`.
    #[serde(default)]
    pub webhook_token: Option<crate::secrets::SecretRef>,
}

fn default_env_label() -> String {
    "env".into()
}
fn default_digest_schedule() -> String {
    "0 9 * * mon".into()
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig { env_label: default_env_label(), digest_channel: None, digest_schedule: default_digest_schedule(), webhook_token: None }
    }
}

impl AlertsConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.env_label.trim().is_empty() {
            out.push(("env_label".into(), "empty label name (Alertmanager's label that names the environment, e.g. env)".into()));
        }
        if let Err(e) = crate::policy::parse_cron(&self.digest_schedule) {
            out.push(("digest_schedule".into(), e));
        }
        if self.digest_channel.as_ref().is_some_and(|c| c.trim().is_empty()) {
            out.push(("digest_channel".into(), "empty channel id".into()));
        }
        out
    }
}
