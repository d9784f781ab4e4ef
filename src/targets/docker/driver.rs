//! The `docker` driver: one container per service, replaced in place with a new image.
//!
//! A deploy stops the service's container, renames it `<name>-deploybot-prev`, and creates and starts
//! the replacement under the original name with the same config. The renamed container is kept until
//! `wait_rollout` confirms the replacement runs (and is healthy), so a failed rollout is undone by
//! renaming it back and starting it: no image pull, no config to rebuild.

use std::time::Duration;

use anyhow::Context as _;
use bollard::errors::Error as EngineError;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum, ImageInspect, NetworkConnectRequest};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, LogsOptions, RemoveContainerOptions, RenameContainerOptions,
    StartContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use deploybot_commands::ServiceName;
use futures_util::{StreamExt as _, TryStreamExt as _};
use tokio::time::Instant;

use super::config::DockerConfig;
use super::diagnostics::{self, short_id, LOG_LINES};
use super::spec::{self, tag_of};
use crate::secrets::redact;
use crate::targets::{log_lines, since_stamped, DeployRequest, DeployTarget, Deployed, LogQuery, RollbackRequest, Running, TargetError, LOG_FETCH_MAX_LINES};

/// Suffix of the container kept during a rollout.
pub const PREVIOUS_SUFFIX: &str = "-deploybot-prev";

/// Seconds bollard waits for one engine request.
const REQUEST_TIMEOUT_SECS: u64 = 120;

const POLL_INTERVAL: Duration = Duration::from_millis(500);
const RESTART_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long to look for a restarting container's exit code before reporting the restarts alone.
const RESTART_GRACE: Duration = Duration::from_secs(5);

pub struct DockerTarget {
    config: DockerConfig,
    /// Where the engine is, for messages.
    endpoint: String,
    /// Connected and version-negotiated on first use, so that the bot starts while an engine is down.
    engine: tokio::sync::OnceCell<Docker>,
    rollout_timeout: Duration,
    stop_timeout: Duration,
    settle: Duration,
    /// `[registry]`'s credentials for pulls.
    registry: Option<std::sync::Arc<crate::registry::RegistryAuth>>,
}

/// Which container a wait is about, and what counts as it.
struct Watch<'a> {
    service: &'a ServiceName,
    name: &'a str,
    /// The image id the container must run; another one means someone replaced it meanwhile.
    image_id: Option<&'a str>,
}

impl DockerTarget {
    /// Parses durations and the engine address; connects on first use.
    pub fn new(config: &DockerConfig) -> anyhow::Result<DockerTarget> {
        let duration = |field: &str, value: &str| crate::config::parse_duration(value).map_err(anyhow::Error::msg).with_context(|| format!("target.{field}"));
        if let Some(host) = &config.host {
            if !(host.starts_with("unix://") || host.starts_with("tcp://") || host.starts_with("http://")) {
                anyhow::bail!("target.host: \"{host}\" is not supported: use unix:///path/to/docker.sock, tcp://host:port or http://host:port (TLS to the engine is not built in)");
            }
        }
        let endpoint = config
            .host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        Ok(DockerTarget {
            config: config.clone(),
            endpoint,
            engine: tokio::sync::OnceCell::new(),
            rollout_timeout: duration("rollout_timeout", &config.rollout_timeout)?,
            stop_timeout: duration("stop_timeout", &config.stop_timeout)?,
            settle: duration("settle", &config.settle)?,
            registry: None,
        })
    }

    /// Pulls with `[registry]`'s credentials where they apply.
    pub fn with_registry(mut self, registry: Option<std::sync::Arc<crate::registry::RegistryAuth>>) -> DockerTarget {
        self.registry = registry;
        self
    }

    async fn engine(&self) -> Result<&Docker, TargetError> {
        self.engine
            .get_or_try_init(|| async {
                let docker = match self.config.host.as_deref() {
                    None => Docker::connect_with_defaults(),
                    Some(h) if h.starts_with("unix://") => Docker::connect_with_unix(h, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION),
                    Some(h) => Docker::connect_with_http(h, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION),
                };
                let docker = docker.map_err(|e| self.unreachable(&e))?;
                docker.negotiate_version().await.map_err(|e| self.unreachable(&e))
            })
            .await
    }

    fn unreachable(&self, e: &EngineError) -> TargetError {
        TargetError::Unreachable { reason: redact(&format!("cannot reach the Docker Engine at {}: {}", self.endpoint, chain(e))) }
    }

    /// A readable error for `doing` (e.g. "stopping container x"); connection problems are `Unreachable`.
    fn error(&self, doing: &str, e: EngineError) -> TargetError {
        if is_connection(&e) {
            return self.unreachable(&e);
        }
        TargetError::failed(redact(&format!("{doing} failed: {}", engine_message(&e))))
    }

    async fn inspect(&self, docker: &Docker, name: &str) -> Result<Option<ContainerInspectResponse>, TargetError> {
        match docker.inspect_container(name, None::<InspectContainerOptions>).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(self.error(&format!("inspecting container {name}"), e)),
        }
    }

    async fn inspect_image(&self, docker: &Docker, reference: &str) -> Result<Option<ImageInspect>, TargetError> {
        match docker.inspect_image(reference).await {
            Ok(i) => Ok(Some(i)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(self.error(&format!("inspecting image {reference}"), e)),
        }
    }

    /// The image `reference` (`repo:tag`), found locally or pulled.
    async fn ensure_image(&self, docker: &Docker, reference: &str) -> Result<ImageInspect, TargetError> {
        if let Some(image) = self.inspect_image(docker, reference).await? {
            return Ok(image);
        }
        let unavailable = |why: String| TargetError::failed(redact(&format!("image {reference} is not available: not found locally and the pull failed: {why}")));
        tracing::info!(image = reference, "Pulling the image, which is not on the engine yet.");
        let repository = spec::repository_of(reference);
        // A reference pinned to a digest (a released image) is pulled by its digest, not its tag.
        let tag = reference.split_once('@').map(|(_, digest)| digest).or_else(|| tag_of(reference));
        let options = CreateImageOptions { from_image: Some(repository.to_string()), tag: tag.map(str::to_string), ..Default::default() };
        let registry = crate::registry::ImageRef::parse(repository, tag.unwrap_or("latest")).registry;
        let credentials = match &self.registry {
            Some(auth) => auth.credentials_for(&registry).await.map_err(|e| unavailable(e.to_string()))?.map(|c| bollard::auth::DockerCredentials {
                username: Some(c.username),
                password: Some(c.password.expose().to_string()),
                serveraddress: Some(registry.clone()),
                ..Default::default()
            }),
            None => None,
        };
        let pull = docker.create_image(Some(options), None, credentials).try_collect::<Vec<_>>();
        match tokio::time::timeout(self.rollout_timeout, pull).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if is_connection(&e) => return Err(self.unreachable(&e)),
            Ok(Err(e)) => return Err(unavailable(engine_message(&e))),
            Err(_) => return Err(unavailable(format!("no answer within {}", self.config.rollout_timeout))),
        }
        self.inspect_image(docker, reference).await?.ok_or_else(|| unavailable("the engine reported success but has no such image".into()))
    }

    /// The container `name`, putting back a renamed one left by an interrupted replacement.
    async fn existing(&self, docker: &Docker, name: &str) -> Result<ContainerInspectResponse, TargetError> {
        if let Some(c) = self.inspect(docker, name).await? {
            return Ok(c);
        }
        let previous = format!("{name}{PREVIOUS_SUFFIX}");
        if self.inspect(docker, &previous).await?.is_some() {
            tracing::warn!(container = name, "Found only {previous}, left by an interrupted replacement; putting it back.");
            self.rename(docker, &previous, name).await?;
            if let Some(c) = self.inspect(docker, name).await? {
                return Ok(c);
            }
        }
        Err(TargetError::failed(format!(
            "container {name} does not exist: deploybot replaces a service's running container and does not create one; start it first (docker compose up -d)"
        )))
    }

    async fn rename(&self, docker: &Docker, from: &str, to: &str) -> Result<(), TargetError> {
        docker
            .rename_container(from, RenameContainerOptions { name: to.to_string() })
            .await
            .map_err(|e| self.error(&format!("renaming container {from} to {to}"), e))
    }

    async fn start(&self, docker: &Docker, name: &str) -> Result<(), TargetError> {
        match docker.start_container(name, None::<StartContainerOptions>).await {
            Ok(()) => Ok(()),
            Err(EngineError::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            Err(e) => Err(self.error(&format!("starting container {name}"), e)),
        }
    }

    async fn stop(&self, docker: &Docker, name: &str) -> Result<(), TargetError> {
        let t = i32::try_from(self.stop_timeout.as_secs()).unwrap_or(i32::MAX);
        match docker.stop_container(name, Some(StopContainerOptions { t: Some(t), signal: None })).await {
            Ok(()) => Ok(()),
            Err(EngineError::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            Err(e) => Err(self.error(&format!("stopping container {name}"), e)),
        }
    }

    async fn remove(&self, docker: &Docker, name: &str) -> Result<(), TargetError> {
        match docker.remove_container(name, Some(RemoveContainerOptions { force: true, v: false, link: false })).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(self.error(&format!("removing container {name}"), e)),
        }
    }

    /// Replaces container `name` (inspected as `old`) by one running `image`, keeping the old one as
    /// `<name>-deploybot-prev`. On a failure the old container is put back and started again.
    async fn replace(&self, docker: &Docker, name: &str, old: &ContainerInspectResponse, image: &str, labels: &[(&str, String)]) -> Result<(), TargetError> {
        let previous = format!("{name}{PREVIOUS_SUFFIX}");
        let old_image = match old.image.as_deref() {
            Some(id) => self.inspect_image(docker, id).await?.and_then(|i| i.config),
            None => None,
        };
        if old_image.is_none() {
            tracing::warn!(container = name, "The old image's config is gone; copying the container's config whole, image defaults included.");
        }
        let replacement = spec::replacement(old, old_image.as_ref(), image, labels);

        if self.inspect(docker, &previous).await?.is_some() {
            tracing::info!(container = %previous, "Removing a previous container left by an earlier deployment.");
            self.remove(docker, &previous).await?;
        }
        self.stop(docker, name).await?;
        if let Err(e) = self.rename(docker, name, &previous).await {
            let _ = self.start(docker, name).await;
            return Err(e);
        }
        let created = async {
            let options = CreateContainerOptions { name: Some(name.to_string()), ..Default::default() };
            docker.create_container(Some(options), replacement.body).await.map_err(|e| self.error(&format!("creating container {name} from {image}"), e))?;
            for (network, endpoint) in replacement.extra_networks {
                let request = NetworkConnectRequest { container: Some(name.to_string()), endpoint_config: Some(endpoint) };
                docker.connect_network(&network, request).await.map_err(|e| self.error(&format!("connecting container {name} to network {network}"), e))?;
            }
            self.start(docker, name).await
        };
        if let Err(e) = created.await {
            let restored = self.restore(docker, name).await;
            return Err(with_note(e, restored.err().map_or("the previous container was put back".to_string(), |r| format!("putting the previous container back failed too: {r}"))));
        }
        Ok(())
    }

    /// Removes container `name` and puts `<name>-deploybot-prev` back in its place, running.
    async fn restore(&self, docker: &Docker, name: &str) -> Result<(), TargetError> {
        let previous = format!("{name}{PREVIOUS_SUFFIX}");
        self.remove(docker, name).await?;
        self.rename(docker, &previous, name).await?;
        self.start(docker, name).await
    }

    async fn logs(&self, docker: &Docker, name: &str) -> String {
        let options = LogsOptions { stdout: true, stderr: true, tail: LOG_LINES.to_string(), ..Default::default() };
        let chunks: Vec<_> = docker.logs(name, Some(options)).take_while(|r| std::future::ready(r.is_ok())).collect().await;
        let bytes: Vec<u8> = chunks.into_iter().flatten().flat_map(|c| c.into_bytes().to_vec()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    async fn describe(&self, docker: &Docker, name: &str, container: &ContainerInspectResponse) -> String {
        let logs = self.logs(docker, name).await;
        redact(&diagnostics::describe(name, container, &logs))
    }

    /// Polls until the container runs (and is healthy, when it has a health check) or fails.
    async fn watch(&self, docker: &Docker, watch: &Watch<'_>) -> Result<(), TargetError> {
        let deadline = Instant::now() + self.rollout_timeout;
        let name = watch.name;
        let service = watch.service;
        let mut running_since: Option<Instant> = None;
        let mut restart_seen: Option<Instant> = None;
        loop {
            let Some(c) = self.inspect(docker, name).await? else {
                return Err(TargetError::failed(format!("container {name} disappeared during the rollout of {service}")));
            };
            let inspected = &c;
            let fail = |reason: String| async move { TargetError::Failed { reason, diagnostics: Some(self.describe(docker, name, inspected).await) } };
            if let (Some(want), Some(has)) = (watch.image_id, c.image.as_deref()) {
                if want != has {
                    return Err(fail(format!("container {name} now runs image {} instead of {}: something else replaced it", short_id(has), short_id(want))).await);
                }
            }
            let state = c.state.clone().unwrap_or_default();
            let exit_code = state.exit_code.unwrap_or_default();
            // Starting a container resets its count, and we started this one: any restart is a crash.
            let restarts = c.restart_count.unwrap_or_default();
            let oom = if state.oom_killed == Some(true) { " (killed: out of memory)" } else { "" };
            match state.status {
                Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
                    return Err(fail(format!("{service} container {name} exited with status {exit_code}{oom}")).await);
                }
                Some(ContainerStateStatusEnum::RESTARTING) => {
                    return Err(fail(format!("{service} container {name} keeps restarting (last exit status {exit_code}){oom}")).await);
                }
                // Running again after a crash, and the exit code gone with it: look again while the
                // restart policy's back-off doubles, to catch it between runs.
                Some(ContainerStateStatusEnum::RUNNING) if restarts > 0 => {
                    if restart_seen.get_or_insert_with(Instant::now).elapsed() >= RESTART_GRACE {
                        return Err(fail(format!("{service} container {name} restarted {restarts} times during the rollout")).await);
                    }
                }
                Some(ContainerStateStatusEnum::RUNNING) => {
                    let since = *running_since.get_or_insert_with(Instant::now);
                    match state.health.as_ref().and_then(|h| h.status) {
                        Some(HealthStatusEnum::HEALTHY) => return Ok(()),
                        Some(HealthStatusEnum::UNHEALTHY) => {
                            let last = diagnostics::last_health_output(&c).map(|o| format!(" (last check {o})")).unwrap_or_default();
                            return Err(fail(format!("{service} container {name} is unhealthy{last}")).await);
                        }
                        Some(HealthStatusEnum::STARTING) => {}
                        _ if since.elapsed() >= self.settle => return Ok(()),
                        _ => {}
                    }
                }
                _ => running_since = None,
            }
            if Instant::now() >= deadline {
                return Err(TargetError::Timeout {
                    what: format!("rollout of {service} (container {name})"),
                    after: self.config.rollout_timeout.clone(),
                    diagnostics: Some(self.describe(docker, name, &c).await),
                });
            }
            let interval = if restart_seen.is_some() { RESTART_POLL_INTERVAL } else { POLL_INTERVAL };
            tokio::time::sleep(interval.min(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10)))).await;
        }
    }

    fn labels(&self, old: &ContainerInspectResponse, service: &ServiceName, version: &str, deployment_id: i64) -> Vec<(&'static str, String)> {
        let old_labels = old.config.as_ref().and_then(|c| c.labels.as_ref());
        let mut labels = Vec::new();
        // Compose's own labels stay as Compose wrote them; a hand-made container gets ours.
        if !old_labels.is_some_and(|l| l.contains_key("com.docker.compose.project")) {
            labels.push(("com.docker.compose.project", self.config.project.clone()));
        }
        if !old_labels.is_some_and(|l| l.contains_key("com.docker.compose.service")) {
            labels.push(("com.docker.compose.service", service.to_string()));
        }
        labels.push(("deploybot.version", version.to_string()));
        labels.push(("deploybot.deployment", deployment_id.to_string()));
        labels
    }

    /// The version a container runs: its image tag, else the label deploybot set, else a tag of its image in `repository`.
    async fn version_of(&self, docker: &Docker, c: &ContainerInspectResponse, repository: &str) -> Result<Option<String>, TargetError> {
        let config = c.config.as_ref();
        if let Some(tag) = config.and_then(|c| c.image.as_deref()).and_then(tag_of) {
            return Ok(Some(tag.to_string()));
        }
        if let Some(v) = config.and_then(|c| c.labels.as_ref()).and_then(|l| l.get("deploybot.version")) {
            return Ok(Some(v.clone()));
        }
        let Some(id) = c.image.as_deref() else { return Ok(None) };
        let tags = self.inspect_image(docker, id).await?.and_then(|i| i.repo_tags).unwrap_or_default();
        Ok(tags.iter().find(|t| spec::repository_of(t) == repository).and_then(|t| tag_of(t)).map(str::to_string))
    }

    /// How to name `to` when creating a container: `repo:version` while that tag still points at the
    /// recorded image, else the image id itself.
    async fn rollback_image(&self, docker: &Docker, req: &RollbackRequest) -> Result<(String, String), TargetError> {
        let tagged = format!("{}:{}", req.image, req.to.version);
        if let Some(id) = &req.to.reference {
            if self.inspect_image(docker, id).await?.is_some() {
                let tag_points_there = self.inspect_image(docker, &tagged).await?.and_then(|i| i.id).is_some_and(|tid| &tid == id);
                return Ok((if tag_points_there { tagged } else { id.clone() }, id.clone()));
            }
            tracing::warn!(image = %short_id(id), "The image that ran before is gone; rolling back to {tagged} instead.");
        }
        let image = self.ensure_image(docker, &tagged).await?;
        let id = image.id.unwrap_or_default();
        Ok((tagged, id))
    }
}

#[async_trait::async_trait]
impl DeployTarget for DockerTarget {
    fn kind(&self) -> &'static str {
        "docker"
    }

    #[tracing::instrument(skip(self))]
    async fn current(&self, service: &ServiceName, image: &str) -> Result<Option<Running>, TargetError> {
        let docker = self.engine().await?;
        let name = self.config.container_name(service);
        let Some(c) = self.inspect(docker, &name).await? else { return Ok(None) };
        let Some(version) = self.version_of(docker, &c, image).await? else {
            tracing::warn!(container = %name, "Cannot tell which version the container runs: its image has no tag and no deploybot label.");
            return Ok(None);
        };
        Ok(Some(Running { version, reference: c.image.clone() }))
    }

    #[tracing::instrument(skip(self, req), fields(deployment = req.deployment_id, service = %req.service, version = %req.version))]
    async fn deploy(&self, req: &DeployRequest) -> Result<Deployed, TargetError> {
        let docker = self.engine().await?;
        let name = self.config.container_name(&req.service);
        let reference = req.reference();
        let old = self.existing(docker, &name).await?;
        let image = self.ensure_image(docker, &reference).await?;
        let image_id = image.id.clone().unwrap_or_default();
        let labels = self.labels(&old, &req.service, &req.version, req.deployment_id);
        self.replace(docker, &name, &old, &reference, &labels).await?;
        let was = old.config.as_ref().and_then(|c| c.image.clone()).unwrap_or_else(|| "?".into());
        tracing::info!(container = %name, "Started {reference} in place of {was}.");
        Ok(Deployed {
            running: Running { version: req.version.clone(), reference: Some(image_id.clone()) },
            detail: format!(
                "container {name}: {was} ({}) → {reference} ({}); the old container is kept as {name}{PREVIOUS_SUFFIX} until the rollout is confirmed",
                old.image.as_deref().map(short_id).unwrap_or_default(),
                short_id(&image_id)
            ),
        })
    }

    #[tracing::instrument(skip(self, deployed), fields(version = %deployed.running.version))]
    async fn wait_rollout(&self, service: &ServiceName, deployed: &Deployed) -> Result<(), TargetError> {
        let docker = self.engine().await?;
        let name = self.config.container_name(service);
        self.watch(docker, &Watch { service, name: &name, image_id: deployed.running.reference.as_deref() }).await?;
        self.remove(docker, &format!("{name}{PREVIOUS_SUFFIX}")).await?;
        tracing::info!(container = %name, "The rollout is complete; removed the previous container.");
        Ok(())
    }

    #[tracing::instrument(skip(self, req), fields(deployment = req.deployment_id, service = %req.service, to = %req.to.version))]
    async fn rollback(&self, req: &RollbackRequest) -> Result<Deployed, TargetError> {
        let docker = self.engine().await?;
        let name = self.config.container_name(&req.service);
        let previous_name = format!("{name}{PREVIOUS_SUFFIX}");

        // A deployment that failed before its rollout was confirmed left the old container: put it back.
        if let Some(previous) = self.inspect(docker, &previous_name).await? {
            let matches = match &req.to.reference {
                Some(id) => previous.image.as_deref() == Some(id.as_str()),
                None => self.version_of(docker, &previous, &req.image).await?.as_deref() == Some(req.to.version.as_str()),
            };
            if matches {
                self.restore(docker, &name).await?;
                let image_id = previous.image.clone();
                self.watch(docker, &Watch { service: &req.service, name: &name, image_id: image_id.as_deref() }).await?;
                return Ok(Deployed {
                    running: Running { version: req.to.version.clone(), reference: image_id.clone() },
                    detail: format!(
                        "container {name}: put back the container that ran {} ({}), kept from the failed deployment",
                        req.to.version,
                        image_id.as_deref().map(short_id).unwrap_or_default()
                    ),
                });
            }
        }

        let old = self.existing(docker, &name).await?;
        let (image, image_id) = self.rollback_image(docker, req).await?;
        let labels = self.labels(&old, &req.service, &req.to.version, req.deployment_id);
        self.replace(docker, &name, &old, &image, &labels).await?;
        if let Err(e) = self.watch(docker, &Watch { service: &req.service, name: &name, image_id: Some(&image_id) }).await {
            let restored = self.restore(docker, &name).await;
            return Err(with_note(
                e,
                restored.err().map_or(format!("the container that ran {} was put back", req.from_version), |r| format!("putting back the container that ran {} failed too: {r}", req.from_version)),
            ));
        }
        self.remove(docker, &previous_name).await?;
        Ok(Deployed {
            running: Running { version: req.to.version.clone(), reference: Some(image_id.clone()) },
            detail: format!("container {name}: recreated from {image} ({}) in place of {}", short_id(&image_id), req.from_version),
        })
    }

    async fn diagnostics(&self, service: &ServiceName) -> Option<String> {
        let docker = self.engine().await.ok()?;
        let name = self.config.container_name(service);
        let c = self.inspect(docker, &name).await.ok()??;
        Some(self.describe(docker, &name, &c).await)
    }

    /// The container's stdout and stderr since the instant (the engine's timestamps, to the
    /// nanosecond, decide which lines are in), its last `limit` lines.
    #[tracing::instrument(skip(self))]
    async fn logs(&self, service: &ServiceName, _image: &str, query: &LogQuery) -> Result<Vec<String>, TargetError> {
        let docker = self.engine().await?;
        let name = self.config.container_name(service);
        if self.inspect(docker, &name).await?.is_none() {
            return Err(TargetError::failed(format!("there is no container {name} for {service}")));
        }
        let limit = query.limit.min(LOG_FETCH_MAX_LINES);
        let since = i32::try_from(query.since_ms.div_euclid(1000)).unwrap_or(0);
        let options = LogsOptions { stdout: true, stderr: true, timestamps: true, since, tail: limit.to_string(), ..Default::default() };
        let chunks: Vec<_> = docker.logs(&name, Some(options)).try_collect().await.map_err(|e| self.error(&format!("reading the logs of {name}"), e))?;
        let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.into_bytes().to_vec()).collect();
        let text = String::from_utf8_lossy(&bytes);
        Ok(log_lines(&since_stamped(&text, query.since_ms), limit))
    }
}

/// The engine could not be talked to at all (as opposed to answering with an error).
fn is_connection(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::SocketNotFoundError(_)
            | EngineError::HyperLegacyError { .. }
            | EngineError::HyperResponseError { .. }
            | EngineError::IOError { .. }
            | EngineError::RequestTimeoutError
    )
}

/// What the engine said, without bollard's wrapping.
fn engine_message(e: &EngineError) -> String {
    match e {
        EngineError::DockerResponseServerError { status_code, message } => format!("{} (Docker Engine status {status_code})", message.trim()),
        EngineError::DockerStreamError { error } => error.trim().to_string(),
        other => chain(other),
    }
}

fn not_found(e: &EngineError) -> bool {
    matches!(e, EngineError::DockerResponseServerError { status_code: 404, .. })
}

/// An error and its causes on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// Adds what was done about a failure to its reason.
fn with_note(e: TargetError, note: String) -> TargetError {
    match e {
        TargetError::Failed { reason, diagnostics } => TargetError::Failed { reason: format!("{reason}; {note}"), diagnostics },
        TargetError::Timeout { what, after, diagnostics } => {
            TargetError::Timeout { what, after, diagnostics: Some(format!("{}{note}", diagnostics.map(|d| format!("{d}\n")).unwrap_or_default())) }
        }
        unreachable => unreachable,
    }
}
