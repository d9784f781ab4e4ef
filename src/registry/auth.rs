//! Registry credentials, one place for the preflight check, docker pulls and `/release` pushes:
//! `[registry]` with `kind = "anonymous" | "basic" | "bearer" | "ecr"`.
//!
//! - `basic`: `username` / `password` (`${VAR}`s) sent as HTTP basic auth when the registry asks
//!   for it (`WWW-Authenticate: Basic`), and given to the Docker Engine for pushes and pulls.
//! - `bearer`: the Docker Registry token flow; `username` / `password`, when set, authenticate the
//!   token request at the realm the registry names (anonymous tokens without them).
//! - `ecr`: a token from ECR's `GetAuthorizationToken` (AWS SDK, `region`, optional `endpoint_url`),
//!   which is `AWS:<password>` for basic auth; kept until shortly before it expires.
//!
//! Credentials apply to the registry host of `url` (for `ecr` without `url`, every
//! `*.dkr.ecr.*.amazonaws.com` host); other registries are asked anonymously.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::RegistryError;
use crate::secrets::{Secret, SecretRef, Vars};

/// An ECR token is fetched again this long before it expires (they last 12 hours).
pub const ECR_REFRESH_MARGIN: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RegistryKind {
    #[default]
    Anonymous,
    Basic,
    Bearer,
    Ecr,
}

/// `[registry]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    #[serde(default)]
    pub kind: RegistryKind,
    /// The registry the credentials are for, e.g. `https://registry.example.com`.
    #[serde(default)]
    pub url: Option<String>,
    /// A user name, or a `${VAR}` holding one.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// `ecr`: the AWS region (default us-east-1).
    #[serde(default)]
    pub region: Option<String>,
    /// `ecr`: another ECR API endpoint (emulators, tests).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// `ecr`: the account whose registry to log in to (default: the caller's).
    #[serde(default)]
    pub registry_id: Option<String>,
}

impl RegistryConfig {
    /// Problems as (key, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(url) = &self.url {
            if let Err(e) = host_of_url(url) {
                out.push(("url".into(), e));
            }
        }
        let kind = format!("{:?}", self.kind).to_lowercase();
        match self.kind {
            RegistryKind::Anonymous => {
                if self.username.is_some() || self.password.is_some() {
                    out.push(("kind".into(), "username/password are set but kind is anonymous: set kind = \"basic\" (or \"bearer\")".into()));
                }
            }
            RegistryKind::Basic | RegistryKind::Bearer => {
                if self.url.is_none() {
                    out.push(("url".into(), format!("kind = \"{kind}\" needs the registry's url, e.g. https://registry.example.com")));
                }
                match (&self.username, &self.password) {
                    (Some(_), Some(_)) => {}
                    (None, None) if self.kind == RegistryKind::Bearer => {}
                    (None, _) => out.push(("username".into(), format!("kind = \"{kind}\" needs username = \"${{REGISTRY_USER}}\""))),
                    (_, None) => out.push(("password".into(), format!("kind = \"{kind}\" needs password = \"${{REGISTRY_PASSWORD}}\""))),
                }
            }
            RegistryKind::Ecr => {
                if self.username.is_some() || self.password.is_some() {
                    out.push(("kind".into(), "kind = \"ecr\" takes its credentials from ECR's GetAuthorizationToken: remove username/password".into()));
                }
            }
        }
        if self.kind != RegistryKind::Ecr {
            for (key, set) in [("region", self.region.is_some()), ("endpoint_url", self.endpoint_url.is_some()), ("registry_id", self.registry_id.is_some())] {
                if set {
                    out.push((key.into(), format!("{key} is only for kind = \"ecr\"")));
                }
            }
        }
        if let Some(u) = &self.endpoint_url {
            if let Err(e) = url::Url::parse(u) {
                out.push(("endpoint_url".into(), format!("invalid URL \"{}\": {e}", crate::secrets::display_url(u))));
            }
        }
        if let Some(u) = &self.username {
            for var in crate::secrets::referenced_vars(u) {
                if SecretRef::parse(&format!("${{{var}}}")).is_err() {
                    out.push(("username".into(), format!("\"${{{var}}}\" is not an environment variable reference (NAME in capitals)")));
                }
            }
        }
        out
    }

    /// The `${VAR}`s this table needs, with the key using each.
    pub fn required_vars(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(u) = &self.username {
            out.extend(crate::secrets::referenced_vars(u).into_iter().map(|v| ("registry.username".to_string(), v)));
        }
        if let Some(p) = &self.password {
            out.push(("registry.password".to_string(), p.var().to_string()));
        }
        out
    }
}

/// `https://registry.example.com:5000/` → `registry.example.com:5000`.
fn host_of_url(url: &str) -> Result<String, String> {
    let u = url::Url::parse(url).map_err(|e| format!("invalid URL \"{}\": {e}", crate::secrets::display_url(url)))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("unsupported URL scheme \"{}\" (http or https)", u.scheme()));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("the URL carries credentials: give them as username/password ${VAR}s instead".into());
    }
    let host = u.host_str().ok_or_else(|| format!("\"{url}\" names no host"))?;
    Ok(match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    })
}

/// A user name and password for one registry.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

#[derive(Clone)]
struct EcrToken {
    credentials: Credentials,
    expires_at: DateTime<Utc>,
    /// `proxyEndpoint`'s host: the registry the token is for.
    host: String,
}

/// The credentials of `[registry]`, resolved when first needed.
pub struct RegistryAuth {
    config: RegistryConfig,
    host: Option<String>,
    vars: Vars,
    ecr: tokio::sync::Mutex<Option<EcrToken>>,
    /// How many ECR tokens were fetched.
    ecr_fetches: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryAuth({:?} for {:?})", self.config.kind, self.host)
    }
}

impl RegistryAuth {
    pub fn new(config: RegistryConfig, vars: Vars) -> RegistryAuth {
        let host = config.url.as_deref().and_then(|u| host_of_url(u).ok());
        RegistryAuth { config, host, vars, ecr: tokio::sync::Mutex::new(None), ecr_fetches: Default::default() }
    }

    pub fn kind(&self) -> RegistryKind {
        self.config.kind
    }

    /// Whether these credentials are for `registry` (`host[:port]`).
    pub fn applies_to(&self, registry: &str) -> bool {
        match (&self.host, self.config.kind) {
            (_, RegistryKind::Anonymous) => false,
            (Some(host), _) => host.eq_ignore_ascii_case(registry) || same_default_port(host, registry),
            (None, RegistryKind::Ecr) => registry.contains(".dkr.ecr.") && registry.ends_with(".amazonaws.com"),
            (None, _) => false,
        }
    }

    /// The credentials for `registry`, or `None` when it is asked anonymously.
    pub async fn credentials_for(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        if !self.applies_to(registry) {
            return Ok(None);
        }
        self.credentials(registry).await.map(Some)
    }

    /// The configured credentials (for `ecr`, a token fetched now or kept from before).
    pub async fn credentials(&self, registry: &str) -> Result<Credentials, RegistryError> {
        let missing = |what: String| RegistryError::Credentials { registry: registry.to_string(), problem: what };
        match self.config.kind {
            RegistryKind::Anonymous => Err(missing("[registry] kind is anonymous".into())),
            RegistryKind::Basic | RegistryKind::Bearer => {
                let username = match &self.config.username {
                    Some(u) => expand_username(u, &self.vars).map_err(missing)?,
                    None => return Err(missing("[registry] has no username".into())),
                };
                let password = match &self.config.password {
                    Some(p) => p.resolve_in(&self.vars).map_err(missing)?,
                    None => return Err(missing("[registry] has no password".into())),
                };
                Ok(Credentials { username, password })
            }
            RegistryKind::Ecr => self.ecr_credentials(Utc::now()).await.map(|t| t.credentials),
        }
    }

    /// Whether the bearer token flow should carry credentials.
    pub fn has_static_credentials(&self) -> bool {
        self.config.username.is_some() && self.config.password.is_some()
    }

    async fn ecr_credentials(&self, now: DateTime<Utc>) -> Result<EcrToken, RegistryError> {
        let mut cached = self.ecr.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| !needs_refresh(t.expires_at, now)) {
            return Ok(token.clone());
        }
        let fresh = super::ecr::authorization_token(&self.config, &self.vars).await?;
        self.ecr_fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = EcrToken {
            credentials: Credentials { username: fresh.username, password: fresh.password },
            expires_at: fresh.expires_at,
            host: fresh.host,
        };
        tracing::info!(registry = %token.host, expires_at = %token.expires_at, "fetched an ECR authorization token");
        *cached = Some(token.clone());
        Ok(token)
    }

    /// How many ECR tokens were fetched so far.
    pub fn ecr_fetches(&self) -> u32 {
        self.ecr_fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `ecr`: the registry host of the current token, when it expires and its user name, fetching
    /// one when there is none or it expires within the margin as of `now` (tests move time).
    pub async fn ecr_token_info_at(&self, now: DateTime<Utc>) -> Result<(String, DateTime<Utc>, String), RegistryError> {
        let t = self.ecr_credentials(now).await?;
        Ok((t.host, t.expires_at, t.credentials.username))
    }
}

/// A user name with its `${VAR}`s read from `vars`. Not a secret: it is not registered for
/// redaction, so that messages can say whose credentials a registry refused.
fn expand_username(s: &str, vars: &Vars) -> Result<String, String> {
    let mut out = s.to_string();
    for var in crate::secrets::referenced_vars(s) {
        let value = vars.get(&var).filter(|v| !v.is_empty()).ok_or_else(|| format!("environment variable {var} is not set"))?;
        out = out.replace(&format!("${{{var}}}"), &value);
    }
    Ok(out)
}

/// Whether a token expiring at `expires_at` must be replaced at `now`.
pub fn needs_refresh(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now + chrono::Duration::from_std(ECR_REFRESH_MARGIN).unwrap_or_default() >= expires_at
}

/// `registry.example.com` and `registry.example.com:443` are the same HTTPS registry.
fn same_default_port(a: &str, b: &str) -> bool {
    let strip = |h: &str| h.strip_suffix(":443").unwrap_or(h).to_ascii_lowercase();
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> RegistryConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn each_kind_says_what_it_lacks() {
        let problems = |text: &str| config(text).validate().into_iter().map(|(k, m)| format!("{k}: {m}")).collect::<Vec<_>>();
        assert!(problems("kind = \"anonymous\"").is_empty());
        assert_eq!(problems("kind = \"basic\"\nurl = \"https://r.example\"\nusername = \"${U}\""), ["password: kind = \"basic\" needs password = \"${REGISTRY_PASSWORD}\""]);
        assert_eq!(problems("kind = \"basic\"\nusername = \"u\"\npassword = \"${P}\""), ["url: kind = \"basic\" needs the registry's url, e.g. https://registry.example.com"]);
        assert!(problems("kind = \"bearer\"\nurl = \"https://r.example\"").is_empty(), "anonymous tokens");
        assert_eq!(problems("kind = \"ecr\"\npassword = \"${P}\""), ["kind: kind = \"ecr\" takes its credentials from ECR's GetAuthorizationToken: remove username/password"]);
        assert_eq!(problems("kind = \"basic\"\nurl = \"https://u:p@r.example\"\nusername = \"u\"\npassword = \"${P}\""), ["url: the URL carries credentials: give them as username/password ${VAR}s instead"]);
        assert_eq!(problems("region = \"eu-west-1\""), ["region: region is only for kind = \"ecr\""]);
        assert!(toml::from_str::<RegistryConfig>("kind = \"basic\"\npassword = \"hunter2\"").is_err(), "an inline password is refused");
    }

    #[test]
    fn credentials_apply_to_their_registry_only() {
        let auth = RegistryAuth::new(config("kind = \"basic\"\nurl = \"http://127.0.0.1:5000\"\nusername = \"u\"\npassword = \"${P}\""), Vars::default());
        assert!(auth.applies_to("127.0.0.1:5000"));
        assert!(!auth.applies_to("127.0.0.1:5001"));
        assert!(!auth.applies_to("registry-1.docker.io"));
        let https = RegistryAuth::new(config("kind = \"basic\"\nurl = \"https://r.example\"\nusername = \"u\"\npassword = \"${P}\""), Vars::default());
        assert!(https.applies_to("r.example") && https.applies_to("r.example:443"));
        let ecr = RegistryAuth::new(config("kind = \"ecr\""), Vars::default());
        assert!(ecr.applies_to("123456789012.dkr.ecr.us-east-1.amazonaws.com"));
        assert!(!ecr.applies_to("ghcr.io"));
    }

    #[test]
    fn a_token_is_refreshed_before_it_expires() {
        let now = Utc::now();
        assert!(!needs_refresh(now + chrono::Duration::hours(12), now));
        assert!(!needs_refresh(now + chrono::Duration::minutes(16), now));
        assert!(needs_refresh(now + chrono::Duration::minutes(14), now));
        assert!(needs_refresh(now - chrono::Duration::minutes(1), now));
    }
}
