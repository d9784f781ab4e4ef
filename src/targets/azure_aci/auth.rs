//! Tokens for Azure Resource Manager: client credentials (Microsoft Entra ID's v2.0 token
//! endpoint) when a client secret is configured, else the managed identity (IMDS). A token is
//! kept until shortly before it expires.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::secrets::{redact, Secret};
use crate::targets::TargetError;

const SCOPE: &str = "https://management.azure.com/.default";
const RESOURCE: &str = "https://management.azure.com/";
/// A token is renewed this long before it expires (at most half its lifetime).
const RENEW_BEFORE: Duration = Duration::from_secs(300);

pub(super) enum Credentials {
    Client { login_url: String, tenant_id: String, client_id: String, secret: Secret },
    /// `client_id` picks a user-assigned identity; the system-assigned one when absent.
    ManagedIdentity { identity_url: String, client_id: Option<String> },
}

pub(super) struct TokenSource {
    http: reqwest::Client,
    credentials: Credentials,
    cached: tokio::sync::Mutex<Option<(Secret, Instant)>>,
}

impl TokenSource {
    pub(super) fn new(http: reqwest::Client, credentials: Credentials) -> TokenSource {
        TokenSource { http, credentials, cached: tokio::sync::Mutex::new(None) }
    }

    /// A valid token, from the cache or fetched.
    pub(super) async fn token(&self) -> Result<Secret, TargetError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let (token, lifetime) = self.fetch().await?;
        let keep = lifetime.saturating_sub(RENEW_BEFORE).max(lifetime / 2);
        *cached = Some((token.clone(), Instant::now() + keep));
        Ok(token)
    }

    /// Forgets the cached token (ARM refused it).
    pub(super) async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    #[tracing::instrument(skip(self))]
    async fn fetch(&self) -> Result<(Secret, Duration), TargetError> {
        let (request, from) = match &self.credentials {
            Credentials::Client { login_url, tenant_id, client_id, secret } => {
                let url = format!("{}/{tenant_id}/oauth2/v2.0/token", login_url.trim_end_matches('/'));
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", secret.expose()),
                    ("scope", SCOPE),
                ];
                (self.http.post(&url).form(&form), format!("client credentials of {client_id} at {}", crate::secrets::display_url(&url)))
            }
            Credentials::ManagedIdentity { identity_url, client_id } => {
                let url = format!("{}/metadata/identity/oauth2/token", identity_url.trim_end_matches('/'));
                let mut query = vec![("api-version", "2018-02-01"), ("resource", RESOURCE)];
                if let Some(id) = client_id {
                    query.push(("client_id", id));
                }
                (self.http.get(&url).query(&query).header("Metadata", "true"), format!("the managed identity at {}", crate::secrets::display_url(&url)))
            }
        };
        let response = request.send().await.map_err(|e| TargetError::Unreachable {
            reason: redact(&format!("cannot get an Azure token from {from}: {}", crate::targets::docker::chain(&e))),
        })?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let field = |k: &str| json.get(k).and_then(Value::as_str);
            let why = match (field("error"), field("error_description")) {
                (Some(code), Some(description)) => format!("{code}: {}", description.lines().next().unwrap_or("")),
                (Some(code), None) => code.to_string(),
                _ => body.chars().take(300).collect(),
            };
            return Err(TargetError::failed(redact(&format!("Azure refused the {from} (HTTP {}): {why}", status.as_u16()))));
        }
        let token = json
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| TargetError::failed(format!("the token endpoint for the {from} returned no access_token")))?;
        // Entra ID gives `expires_in` as a number, IMDS as a string.
        let lifetime = match json.get("expires_in") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .unwrap_or(300);
        Ok((Secret::from_value(token.to_string()), Duration::from_secs(lifetime)))
    }
}
