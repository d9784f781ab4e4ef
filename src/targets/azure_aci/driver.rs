//! `AciTarget`: container groups through the ARM REST API (GET, PUT, polled provisioning state).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use deploybot_commands::ServiceName;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::time::Instant;

use super::auth::{Credentials, TokenSource};
use super::config::AciConfig;
use super::group::{self, Supplied};
use crate::secrets::{redact, Secret};
use crate::targets::docker::{chain, tag_of};
use crate::targets::{log_lines, since_stamped, DeployRequest, DeployTarget, Deployed, LogQuery, RollbackRequest, Running, TargetError, LOG_FETCH_MAX_LINES};

/// Attempts per ARM call when it throttles (429) or is briefly unavailable (5xx).
const MAX_ATTEMPTS: u32 = 5;
/// The longest a `Retry-After` is honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub struct AciTarget {
    config: AciConfig,
    http: reqwest::Client,
    tokens: TokenSource,
    secure_environment: BTreeMap<String, BTreeMap<String, Secret>>,
    registry_passwords: BTreeMap<String, Secret>,
    rollout_timeout: Duration,
    poll_interval: Duration,
}

impl AciTarget {
    /// Resolves the secrets the config refers to; talks to nothing until first used.
    pub fn new(config: &AciConfig, vars: &crate::secrets::Vars) -> anyhow::Result<AciTarget> {
        let duration = |field: &str, value: &str| crate::config::parse_duration(value).map_err(anyhow::Error::msg).with_context(|| format!("target.{field}"));
        let resolve = |field: String, r: &crate::secrets::SecretRef| r.resolve_in(vars).map_err(anyhow::Error::msg).with_context(|| field);
        let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().context("building the HTTP client for Azure")?;
        let credentials = match (&config.client_secret, &config.tenant_id, &config.client_id) {
            (Some(secret), Some(tenant_id), Some(client_id)) => Credentials::Client {
                login_url: config.login_url.clone(),
                tenant_id: tenant_id.clone(),
                client_id: client_id.clone(),
                secret: resolve("target.client_secret".into(), secret)?,
            },
            (Some(_), _, _) => anyhow::bail!("target.client_secret: client credentials need tenant_id and client_id too"),
            (None, _, client_id) => Credentials::ManagedIdentity { identity_url: config.identity_url.clone(), client_id: client_id.clone() },
        };
        let mut secure_environment = BTreeMap::new();
        for (container, vars) in &config.secure_environment {
            let mut resolved = BTreeMap::new();
            for (var, r) in vars {
                resolved.insert(var.clone(), resolve(format!("target.secure_environment.{container}.{var}"), r)?);
            }
            secure_environment.insert(container.clone(), resolved);
        }
        let mut registry_passwords = BTreeMap::new();
        for (server, r) in &config.registry_passwords {
            registry_passwords.insert(server.clone(), resolve(format!("target.registry_passwords.\"{server}\""), r)?);
        }
        Ok(AciTarget {
            config: config.clone(),
            tokens: TokenSource::new(http.clone(), credentials),
            http,
            secure_environment,
            registry_passwords,
            rollout_timeout: duration("rollout_timeout", &config.rollout_timeout)?,
            poll_interval: duration("poll_interval", &config.poll_interval)?,
        })
    }

    fn group_name(&self, service: &ServiceName) -> Result<&str, TargetError> {
        self.config.container_groups.get(service.as_str()).map(String::as_str).ok_or_else(|| {
            TargetError::failed(format!("service {service} has no container group in target.container_groups of this environment"))
        })
    }

    /// The URL of container group `name`, or of something under it (`sub`: `/containers/web/logs`),
    /// with `query` added after the API version.
    fn group_url(&self, name: &str, sub: &str, query: &str) -> String {
        format!(
            "{}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ContainerInstance/containerGroups/{name}{sub}?api-version={}{query}",
            self.config.management_url.trim_end_matches('/'),
            self.config.subscription_id,
            self.config.resource_group,
            self.config.api_version
        )
    }

    /// One ARM call on container group `name`, with a fresh token after a 401 and backoff on 429/5xx.
    async fn arm(&self, method: Method, name: &str, body: Option<&Value>) -> Result<Value, TargetError> {
        self.arm_at(method, name, "", "", body).await
    }

    /// [`AciTarget::arm`] on a resource under the group (`sub`) with extra query parameters.
    #[tracing::instrument(skip(self, body))]
    async fn arm_at(&self, method: Method, name: &str, sub: &str, query: &str, body: Option<&Value>) -> Result<Value, TargetError> {
        let url = self.group_url(name, sub, query);
        let doing = if sub.is_empty() { format!("{method} container group {name}") } else { format!("{method} {sub} of container group {name}") };
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.tokens.token().await?;
            let mut request = self.http.request(method.clone(), &url).bearer_auth(token.expose());
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|e| TargetError::Unreachable {
                reason: redact(&format!("cannot reach Azure Resource Manager at {} ({doing}): {}", crate::secrets::display_url(&self.config.management_url), chain(&e))),
            })?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = response.text().await.unwrap_or_default();
            if status.is_success() {
                return serde_json::from_str(&text).map_err(|e| TargetError::failed(format!("{doing}: ARM answered with something that is not JSON: {e}")));
            }
            let why = group::arm_error(&text);
            match status {
                StatusCode::UNAUTHORIZED if !refreshed => {
                    tracing::info!(group = name, "ARM refused the token; getting a new one.");
                    self.tokens.invalidate().await;
                    refreshed = true;
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(TargetError::failed(redact(&format!(
                        "Azure refused {doing} (HTTP {}): {why} (check the identity's credentials and its role on resource group {})",
                        status.as_u16(),
                        self.config.resource_group
                    ))))
                }
                StatusCode::NOT_FOUND => {
                    return Err(TargetError::failed(redact(&format!(
                        "container group {name} not found in resource group {} of subscription {}: {why}",
                        self.config.resource_group, self.config.subscription_id
                    ))))
                }
                s if (s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error()) && attempt < MAX_ATTEMPTS => {
                    let wait = retry_after.unwrap_or(Duration::from_millis(500 * 2u64.pow(attempt - 1))).min(MAX_RETRY_AFTER);
                    tracing::info!(group = name, status = s.as_u16(), ?wait, "ARM asked to retry later.");
                    tokio::time::sleep(wait).await;
                }
                _ => return Err(TargetError::failed(redact(&format!("{doing} failed (HTTP {}): {why}", status.as_u16())))),
            }
        }
    }

    /// The group, and the name of the service's container in it.
    async fn read(&self, service: &ServiceName, name: &str, repository: &str) -> Result<(Value, String), TargetError> {
        let group = self.arm(Method::GET, name, None).await?;
        let configured = self.config.containers.get(service.as_str()).map(String::as_str);
        let container = group::container(&group, configured, repository).map_err(TargetError::failed)?;
        let container_name = container.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        Ok((group, container_name))
    }

    /// PUTs the group with the service's container on `image`; returns the image it had.
    async fn put_image(&self, service: &ServiceName, repository: &str, image: &str) -> Result<String, TargetError> {
        let name = self.group_name(service)?;
        let (group, container) = self.read(service, name, repository).await?;
        let before = group::container(&group, Some(&container), repository).ok().and_then(group::image_of).unwrap_or("?").to_string();
        let supplied = Supplied { secure_environment: &self.secure_environment, registry_passwords: &self.registry_passwords };
        let body = group::put_body(&group, &container, image, &supplied).map_err(|e| TargetError::failed(format!("cannot update container group {name}: {e}")))?;
        let answer = self.arm(Method::PUT, name, Some(&body)).await?;
        tracing::info!(group = name, image, state = group::provisioning_state(&answer), "ARM accepted the container group.");
        Ok(before)
    }

    /// Polls the group until it is provisioned with `image`, fails, or the rollout timeout.
    #[tracing::instrument(skip(self))]
    async fn follow(&self, service: &ServiceName, image: &str) -> Result<(), TargetError> {
        let name = self.group_name(service)?;
        let what = format!("provisioning of container group {name} with {image}");
        let deadline = Instant::now() + self.rollout_timeout;
        loop {
            let group = self.arm(Method::GET, name, None).await?;
            let configured = self.config.containers.get(service.as_str()).map(String::as_str);
            let running = group::container(&group, configured, crate::targets::docker::repository_of(image))
                .ok()
                .and_then(group::image_of)
                .unwrap_or("?");
            if running != image {
                return Err(TargetError::Failed {
                    reason: format!("{what} was replaced: the container now runs {running}"),
                    diagnostics: Some(redact(&group::diagnose(&group))),
                });
            }
            match group::provisioning_state(&group) {
                "Succeeded" => return Ok(()),
                state @ ("Failed" | "Canceled") => {
                    return Err(TargetError::Failed { reason: format!("{what} ended {state}"), diagnostics: Some(redact(&group::diagnose(&group))) })
                }
                state => tracing::debug!(group = name, state, "The container group is still provisioning."),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(TargetError::Timeout {
                    what,
                    after: self.config.rollout_timeout.clone(),
                    diagnostics: Some(redact(&group::diagnose(&group))),
                });
            }
            tokio::time::sleep(self.poll_interval.min(deadline - now)).await;
        }
    }
}

#[async_trait::async_trait]
impl DeployTarget for AciTarget {
    fn kind(&self) -> &'static str {
        "azure_aci"
    }

    #[tracing::instrument(skip(self))]
    async fn current(&self, service: &ServiceName, image: &str) -> Result<Option<Running>, TargetError> {
        let name = self.group_name(service)?;
        let (group, container) = self.read(service, name, image).await?;
        let Some(running) = group::container(&group, Some(&container), image).ok().and_then(group::image_of) else {
            return Ok(None);
        };
        Ok(Some(Running { version: tag_of(running).unwrap_or("latest").to_string(), reference: Some(running.to_string()) }))
    }

    #[tracing::instrument(skip(self, req), fields(deployment = req.deployment_id, service = %req.service, version = %req.version))]
    async fn deploy(&self, req: &DeployRequest) -> Result<Deployed, TargetError> {
        let image = req.reference();
        let before = self.put_image(&req.service, &req.image, &image).await?;
        Ok(Deployed {
            detail: format!("PUT container group {} with {image} (was {before})", self.group_name(&req.service)?),
            running: Running { version: req.version.clone(), reference: Some(image) },
        })
    }

    async fn wait_rollout(&self, service: &ServiceName, deployed: &Deployed) -> Result<(), TargetError> {
        let image = deployed
            .running
            .reference
            .as_deref()
            .ok_or_else(|| TargetError::failed(format!("no image recorded for the deployment of {service}")))?;
        self.follow(service, image).await
    }

    #[tracing::instrument(skip(self, req), fields(deployment = req.deployment_id, service = %req.service, to = %req.to.version))]
    async fn rollback(&self, req: &RollbackRequest) -> Result<Deployed, TargetError> {
        let image = req.to.reference.clone().unwrap_or_else(|| format!("{}:{}", req.image, req.to.version));
        self.put_image(&req.service, &req.image, &image).await?;
        self.follow(&req.service, &image).await?;
        Ok(Deployed {
            running: Running { version: req.to.version.clone(), reference: Some(image.clone()) },
            detail: format!("PUT container group {} back on {image} and it was provisioned", self.group_name(&req.service)?),
        })
    }

    async fn diagnostics(&self, service: &ServiceName) -> Option<String> {
        let name = self.group_name(service).ok()?;
        match self.arm(Method::GET, name, None).await {
            Ok(group) => Some(redact(&group::diagnose(&group))),
            Err(e) => Some(e.to_string()),
        }
    }

    /// The ARM logs API of the service's container (`…/containers/{name}/logs?tail=N&timestamps=true`):
    /// its last lines, those stamped before the instant dropped.
    #[tracing::instrument(skip(self))]
    async fn logs(&self, service: &ServiceName, image: &str, query: &LogQuery) -> Result<Vec<String>, TargetError> {
        let name = self.group_name(service)?;
        let (_, container) = self.read(service, name, image).await?;
        let limit = query.limit.min(LOG_FETCH_MAX_LINES);
        let answer = self.arm_at(Method::GET, name, &format!("/containers/{container}/logs"), &format!("&tail={limit}&timestamps=true"), None).await?;
        let content = answer.get("content").and_then(Value::as_str).ok_or_else(|| TargetError::failed(format!("the logs of container {container} in group {name}: ARM's answer has no \"content\"")))?;
        Ok(log_lines(&since_stamped(content, query.since_ms), limit))
    }
}
