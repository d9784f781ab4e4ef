//! `[[notify]]` entries: who is told what, and how.

use serde::Deserialize;

use crate::secrets::SecretRef;

/// The states a notifier may be told about (`on = [...]`).
pub const NOTIFY_EVENTS: [&str; 6] = ["running", "succeeded", "failed", "rolled_back", "rollback_failed", "cancelled"];

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NotifyConfig {
    Email(EmailConfig),
    Statuspage(StatuspageConfig),
    Webhook(WebhookConfig),
}

/// `kind = "email"`: the deployment summary over SMTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub on: Vec<String>,
    #[serde(default)]
    pub envs: Option<Vec<String>>,
    /// `smtp://host:587` (STARTTLS) or `smtps://host:465` (TLS from the start).
    pub smtp: String,
    #[serde(default)]
    pub username: Option<SecretRef>,
    #[serde(default)]
    pub password: Option<SecretRef>,
    pub from: String,
    pub to: Vec<String>,
    /// A PEM file of the CA that signed the server's certificate (a private CA).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// `required` (default with credentials: never send them in clear) or `opportunistic`
    /// (default without: STARTTLS when the server offers it).
    #[serde(default)]
    pub starttls: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout: String,
}

/// `kind = "statuspage"`: a maintenance on an Atlassian Statuspage while a deployment runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatuspageConfig {
    pub on: Vec<String>,
    #[serde(default)]
    pub envs: Option<Vec<String>>,
    #[serde(default = "default_statuspage_url")]
    pub api_url: String,
    pub page_id: String,
    pub token: SecretRef,
    /// Components the maintenance is about (shown under maintenance while it runs).
    #[serde(default)]
    pub component_ids: Vec<String>,
    /// How long a maintenance is announced for when it starts.
    #[serde(default = "default_window")]
    pub window: String,
}

/// `kind = "webhook"`: the deployment record as a signed JSON POST.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub on: Vec<String>,
    #[serde(default)]
    pub envs: Option<Vec<String>>,
    pub url: String,
    /// HMAC-SHA256 key; the signature goes in `X-Deploybot-Signature: sha256=<hex>`.
    #[serde(default)]
    pub secret: Option<SecretRef>,
}

fn default_timeout() -> String {
    "30s".into()
}
fn default_statuspage_url() -> String {
    "https://api.statuspage.io/v1".into()
}
fn default_window() -> String {
    "1h".into()
}

impl NotifyConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            NotifyConfig::Email(_) => "email",
            NotifyConfig::Statuspage(_) => "statuspage",
            NotifyConfig::Webhook(_) => "webhook",
        }
    }

    pub fn on(&self) -> &[String] {
        match self {
            NotifyConfig::Email(c) => &c.on,
            NotifyConfig::Statuspage(c) => &c.on,
            NotifyConfig::Webhook(c) => &c.on,
        }
    }

    pub fn envs(&self) -> Option<&[String]> {
        match self {
            NotifyConfig::Email(c) => c.envs.as_deref(),
            NotifyConfig::Statuspage(c) => c.envs.as_deref(),
            NotifyConfig::Webhook(c) => c.envs.as_deref(),
        }
    }

    /// Whether this entry is told about `event` in environment `env`.
    pub fn wants(&self, env: &str, event: &str) -> bool {
        self.on().iter().any(|e| e == event) && self.envs().is_none_or(|envs| envs.iter().any(|e| e == env))
    }

    /// Every `${VAR}` it needs, with its key.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        match self {
            NotifyConfig::Email(c) => [("username", &c.username), ("password", &c.password)].into_iter().filter_map(|(k, v)| v.as_ref().map(|v| (k, v))).collect(),
            NotifyConfig::Statuspage(c) => vec![("token", &c.token)],
            NotifyConfig::Webhook(c) => c.secret.iter().map(|s| ("secret", s)).collect(),
        }
    }

    /// Problems as (sub-path, message); `envs` are checked against `known` environments. No I/O.
    pub fn validate(&self, known: &[&str]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.on().is_empty() {
            out.push(("on".into(), format!("say when to notify, e.g. on = [\"succeeded\", \"rolled_back\"] (one or more of {})", NOTIFY_EVENTS.join(", "))));
        }
        for (i, e) in self.on().iter().enumerate() {
            if !NOTIFY_EVENTS.contains(&e.as_str()) {
                out.push((format!("on[{i}]"), format!("unknown state \"{e}\" (one of {})", NOTIFY_EVENTS.join(", "))));
            }
        }
        for (i, e) in self.envs().unwrap_or_default().iter().enumerate() {
            if !known.contains(&e.as_str()) {
                out.push((format!("envs[{i}]"), format!("unknown environment \"{e}\" (known: {})", known.join(", "))));
            }
        }
        match self {
            NotifyConfig::Email(c) => {
                match url::Url::parse(&c.smtp) {
                    Ok(u) if matches!(u.scheme(), "smtp" | "smtps") && u.host_str().is_some() => {
                        if !u.username().is_empty() || u.password().is_some() {
                            out.push(("smtp".into(), "the URL carries credentials: give them as username = \"${SMTP_USER}\", password = \"${SMTP_PASSWORD}\"".into()));
                        }
                    }
                    _ => out.push(("smtp".into(), format!("\"{}\" is not an SMTP URL like smtp://mail.example.com:587", crate::secrets::display_url(&c.smtp)))),
                }
                if c.username.is_some() != c.password.is_some() {
                    out.push(("password".into(), "give both username and password, or neither".into()));
                }
                if !looks_like_address(&c.from) {
                    out.push(("from".into(), format!("\"{}\" is not an email address", c.from)));
                }
                if c.to.is_empty() {
                    out.push(("to".into(), "no recipients: to = [\"team@example.com\"]".into()));
                }
                for (i, a) in c.to.iter().enumerate() {
                    if !looks_like_address(a) {
                        out.push((format!("to[{i}]"), format!("\"{a}\" is not an email address")));
                    }
                }
                if let Some(mode) = &c.starttls {
                    if !matches!(mode.as_str(), "required" | "opportunistic") {
                        out.push(("starttls".into(), format!("unknown mode \"{mode}\" (required or opportunistic)")));
                    }
                }
                if let Err(e) = crate::config::parse_duration(&c.timeout) {
                    out.push(("timeout".into(), e));
                }
            }
            NotifyConfig::Statuspage(c) => {
                http_url("api_url", &c.api_url, &mut out);
                if c.page_id.trim().is_empty() {
                    out.push(("page_id".into(), "empty page id".into()));
                }
                if let Err(e) = crate::config::parse_duration(&c.window) {
                    out.push(("window".into(), e));
                }
            }
            NotifyConfig::Webhook(c) => http_url("url", &c.url, &mut out),
        }
        out
    }
}

fn looks_like_address(a: &str) -> bool {
    a.parse::<lettre::Address>().is_ok()
}

fn http_url(field: &str, value: &str, out: &mut Vec<(String, String)>) {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {
            if !u.username().is_empty() || u.password().is_some() {
                out.push((field.into(), format!("\"{}\" carries credentials: put them in a ${{VAR}} key instead", crate::secrets::display_url(value))));
            }
        }
        _ => out.push((field.into(), format!("\"{}\" is not an http(s) URL", crate::secrets::display_url(value)))),
    }
}
