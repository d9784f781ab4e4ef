//! `EcsTarget`: the calls the driver makes (DescribeServices, DescribeTaskDefinition,
//! RegisterTaskDefinition, UpdateService, ListTasks, DescribeTasks) and how their errors read.

use std::time::Duration;

use anyhow::Context as _;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ecs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::types::{DesiredStatus, Service, ServiceEvent, Tag, Task, TaskDefinition, TaskDefinitionField};
use aws_sdk_ecs::Client;
use deploybot_commands::ServiceName;
use tokio::time::Instant;

use super::config::EcsConfig;
use super::diagnostics::{self, MAX_TASKS};
use super::rollout::{progress, Rollout};
use super::taskdef::{self, short};
use crate::secrets::redact;
use crate::targets::docker::tag_of;
use crate::targets::{DeployRequest, DeployTarget, Deployed, LogQuery, RollbackRequest, Running, TargetError};

/// Attempts per call, throttling included; the SDK backs off exponentially between them.
const MAX_ATTEMPTS: u32 = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct EcsTarget {
    config: EcsConfig,
    client: Client,
    /// CloudWatch Logs, at the same endpoint.
    logs: aws_sdk_cloudwatchlogs::Client,
    rollout_timeout: Duration,
    poll_interval: Duration,
}

impl EcsTarget {
    /// Builds the client: credentials by the standard AWS chain (resolved on first call), the
    /// configured region, `endpoint_url` when set, throttling retried with backoff.
    pub async fn new(config: &EcsConfig, vars: &crate::secrets::Vars) -> anyhow::Result<EcsTarget> {
        let duration = |field: &str, value: &str| crate::config::parse_duration(value).map_err(anyhow::Error::msg).with_context(|| format!("target.{field}"));
        let rollout_timeout = duration("rollout_timeout", &config.rollout_timeout)?;
        let poll_interval = duration("poll_interval", &config.poll_interval)?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).operation_attempt_timeout(ATTEMPT_TIMEOUT).build());
        if let Some((id, secret, token)) = vars.explicit_aws_keys() {
            let credentials = aws_sdk_ecs::config::Credentials::new(id, secret.expose(), token.map(|t| t.expose().to_string()), None, "deploybot-vars");
            loader = loader.credentials_provider(credentials);
        }
        let shared = loader.load().await;
        let mut ecs = aws_sdk_ecs::config::Builder::from(&shared);
        let mut logs = aws_sdk_cloudwatchlogs::config::Builder::from(&shared);
        if let Some(url) = &config.endpoint_url {
            ecs = ecs.endpoint_url(url);
            logs = logs.endpoint_url(url);
        }
        Ok(EcsTarget {
            config: config.clone(),
            client: Client::from_conf(ecs.build()),
            logs: aws_sdk_cloudwatchlogs::Client::from_conf(logs.build()),
            rollout_timeout,
            poll_interval,
        })
    }

    fn ecs_service(&self, service: &ServiceName) -> Result<&str, TargetError> {
        self.config.services.get(service.as_str()).map(String::as_str).ok_or_else(|| {
            TargetError::failed(format!("service {service} has no ECS service in target.services of this environment"))
        })
    }

    fn endpoint(&self) -> &str {
        self.config.endpoint_url.as_deref().unwrap_or("the AWS endpoint")
    }

    /// A readable error for `doing` on ECS service `ecs`; network failures are `Unreachable`.
    fn error<E>(&self, ecs: &str, doing: &str, e: SdkError<E>) -> TargetError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let cluster = &self.config.cluster;
        let network = match &e {
            SdkError::TimeoutError(_) => true,
            SdkError::DispatchFailure(d) => d.is_io() || d.is_timeout(),
            _ => false,
        };
        if network {
            return TargetError::Unreachable {
                reason: redact(&format!("cannot reach ECS at {} ({}) while {doing}: {}", self.endpoint(), self.config.region, DisplayErrorContext(&e))),
            };
        }
        let message = e.message().unwrap_or("").to_string();
        let reason = match e.code() {
            Some("ClusterNotFoundException") => {
                format!("ECS service {ecs} not found: cluster {cluster} does not exist in {}", self.config.region)
            }
            Some("ServiceNotFoundException" | "ServiceNotActiveException") => {
                format!("ECS service {ecs} not found in cluster {cluster}")
            }
            Some(code @ ("UnrecognizedClientException" | "InvalidClientTokenId" | "ExpiredTokenException" | "ExpiredToken"
            | "InvalidSignatureException" | "SignatureDoesNotMatch" | "AccessDeniedException")) => {
                format!("AWS refused {doing}: {code}: {message} (check the credentials and permissions the bot runs with)")
            }
            Some(code) => format!("{doing} failed: {code}: {message}"),
            None => format!("{doing} failed: {}", DisplayErrorContext(&e)),
        };
        TargetError::failed(redact(&reason))
    }

    #[tracing::instrument(skip(self))]
    async fn describe_service(&self, ecs: &str) -> Result<Service, TargetError> {
        let out = self
            .client
            .describe_services()
            .cluster(&self.config.cluster)
            .services(ecs)
            .send()
            .await
            .map_err(|e| self.error(ecs, &format!("describing ECS service {ecs}"), e))?;
        out.services()
            .iter()
            .find(|s| s.status() != Some("INACTIVE"))
            .cloned()
            .ok_or_else(|| TargetError::failed(format!("ECS service {ecs} not found in cluster {}", self.config.cluster)))
    }

    /// The service's task definition and its tags.
    #[tracing::instrument(skip(self))]
    async fn describe_task_definition(&self, ecs: &str, arn: &str) -> Result<(TaskDefinition, Vec<Tag>), TargetError> {
        let out = self
            .client
            .describe_task_definition()
            .task_definition(arn)
            .include(TaskDefinitionField::Tags)
            .send()
            .await
            .map_err(|e| self.error(ecs, &format!("describing task definition {}", short(arn)), e))?;
        let tags = out.tags().to_vec();
        let td = out.task_definition.ok_or_else(|| TargetError::failed(format!("ECS returned no task definition for {}", short(arn))))?;
        Ok((td, tags))
    }

    /// The service's current task definition, and the index of the service's container in it.
    async fn current_task_definition(&self, service: &ServiceName, ecs: &str, image: &str) -> Result<(TaskDefinition, Vec<Tag>, usize), TargetError> {
        let svc = self.describe_service(ecs).await?;
        let arn = svc
            .task_definition()
            .ok_or_else(|| TargetError::failed(format!("ECS service {ecs} has no task definition")))?;
        let (td, tags) = self.describe_task_definition(ecs, arn).await?;
        let configured = self.config.containers.get(service.as_str()).map(String::as_str);
        let index = taskdef::container_index(&td, configured, image).map_err(TargetError::failed)?;
        Ok((td, tags, index))
    }

    #[tracing::instrument(skip(self))]
    async fn point_service_at(&self, ecs: &str, arn: &str) -> Result<(), TargetError> {
        self.client
            .update_service()
            .cluster(&self.config.cluster)
            .service(ecs)
            .task_definition(arn)
            .send()
            .await
            .map_err(|e| self.error(ecs, &format!("updating ECS service {ecs} to {}", short(arn)), e))?;
        Ok(())
    }

    /// Follows the service's deployment of `arn` until it completes, fails, or the rollout timeout.
    #[tracing::instrument(skip(self))]
    async fn follow(&self, ecs: &str, arn: &str) -> Result<(), TargetError> {
        let deadline = Instant::now() + self.rollout_timeout;
        loop {
            let svc = self.describe_service(ecs).await?;
            let what = format!("ECS rollout of {ecs} to {}", short(arn));
            match progress(&svc, arn) {
                Rollout::Completed => {
                    tracing::info!(service = ecs, task_definition = short(arn), "The ECS rollout completed.");
                    return Ok(());
                }
                Rollout::Failed(reason) => {
                    return Err(TargetError::Failed {
                        reason: redact(&format!("{what} failed: {reason}")),
                        diagnostics: Some(self.diagnose(ecs, arn, svc.events()).await),
                    })
                }
                Rollout::Replaced(other) => {
                    return Err(TargetError::Failed {
                        reason: format!("{what} was replaced: the service's primary deployment is now {other}"),
                        diagnostics: Some(self.diagnose(ecs, arn, svc.events()).await),
                    })
                }
                Rollout::InProgress { running, desired, pending } => {
                    tracing::debug!(service = ecs, running, desired, pending, "The ECS rollout is in progress.");
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(TargetError::Timeout {
                    what,
                    after: self.config.rollout_timeout.clone(),
                    diagnostics: Some(self.diagnose(ecs, arn, svc.events()).await),
                });
            }
            tokio::time::sleep(self.poll_interval.min(deadline - now)).await;
        }
    }

    /// The stopped tasks of revision `arn` and the latest `events`, as text.
    async fn diagnose(&self, ecs: &str, arn: &str, events: &[ServiceEvent]) -> String {
        let stopped = match self.stopped_tasks(ecs, arn).await {
            Ok(tasks) => tasks,
            Err(e) => {
                tracing::warn!(service = ecs, error = %e, "Could not read the stopped tasks of the ECS service.");
                Vec::new()
            }
        };
        redact(&diagnostics::render(arn, &stopped, events))
    }

    #[tracing::instrument(skip(self))]
    async fn stopped_tasks(&self, ecs: &str, arn: &str) -> Result<Vec<Task>, TargetError> {
        let listed = self
            .client
            .list_tasks()
            .cluster(&self.config.cluster)
            .service_name(ecs)
            .desired_status(DesiredStatus::Stopped)
            .send()
            .await
            .map_err(|e| self.error(ecs, &format!("listing the stopped tasks of {ecs}"), e))?;
        if listed.task_arns().is_empty() {
            return Ok(Vec::new());
        }
        let described = self
            .client
            .describe_tasks()
            .cluster(&self.config.cluster)
            .set_tasks(Some(listed.task_arns().iter().take(100).cloned().collect()))
            .send()
            .await
            .map_err(|e| self.error(ecs, &format!("describing the stopped tasks of {ecs}"), e))?;
        let mut tasks: Vec<Task> = described.tasks().iter().filter(|t| t.task_definition_arn() == Some(arn)).cloned().collect();
        tasks.sort_by_key(|t| std::cmp::Reverse(t.stopped_at().map(|s| s.as_nanos())));
        tasks.truncate(MAX_TASKS);
        Ok(tasks)
    }
}

/// The version an image reference runs: its tag, else its digest.
fn version_of(image: &str) -> String {
    tag_of(image)
        .map(str::to_string)
        .or_else(|| image.split_once('@').map(|(_, digest)| digest.to_string()))
        .unwrap_or_else(|| "latest".into())
}

impl EcsTarget {
    /// Registers the next revision of `service`'s current task definition with `image:version` in
    /// its container; the new ARN, and a sentence saying what was registered over what.
    async fn register_version(&self, service: &ServiceName, ecs: &str, image: &str, version: &str, digest: Option<&str>) -> Result<(String, String), TargetError> {
        let (td, tags, index) = self.current_task_definition(service, ecs, image).await?;
        let previous_arn = td.task_definition_arn().unwrap_or("?").to_string();
        let previous_image = td.container_definitions()[index].image().unwrap_or("?").to_string();
        let image = match digest {
            Some(d) => format!("{image}:{version}@{d}"),
            None => format!("{image}:{version}"),
        };
        let registered = taskdef::next_revision(self.client.register_task_definition(), &td, index, &image, tags)
            .send()
            .await
            .map_err(|e| self.error(ecs, &format!("registering a new revision of {}", short(&previous_arn)), e))?;
        let arn = registered
            .task_definition()
            .and_then(TaskDefinition::task_definition_arn)
            .ok_or_else(|| TargetError::failed("ECS registered the task definition but returned no ARN"))?
            .to_string();
        tracing::info!(service = ecs, task_definition = short(&arn), image, "Registered a task-definition revision.");
        let sentence = format!("registered {} ({image}; was {} with {previous_image})", short(&arn), short(&previous_arn));
        Ok((arn, sentence))
    }
}

#[async_trait::async_trait]
impl DeployTarget for EcsTarget {
    fn kind(&self) -> &'static str {
        "ecs"
    }

    #[tracing::instrument(skip(self), fields(cluster = %self.config.cluster))]
    async fn current(&self, service: &ServiceName, image: &str) -> Result<Option<Running>, TargetError> {
        let ecs = self.ecs_service(service)?;
        let (td, _, index) = self.current_task_definition(service, ecs, image).await?;
        let running_image = td.container_definitions()[index].image().unwrap_or_default();
        Ok(Some(Running { version: version_of(running_image), reference: td.task_definition_arn().map(str::to_string) }))
    }

    #[tracing::instrument(skip(self, req), fields(deployment = req.deployment_id, service = %req.service, version = %req.version))]
    async fn deploy(&self, req: &DeployRequest) -> Result<Deployed, TargetError> {
        let ecs = self.ecs_service(&req.service)?;
        let (arn, registered) = self.register_version(&req.service, ecs, &req.image, &req.version, req.digest.as_deref()).await?;
        self.point_service_at(ecs, &arn).await?;
        Ok(Deployed {
            detail: format!("{registered} and pointed ECS service {ecs} at it"),
            running: Running { version: req.version.clone(), reference: Some(arn) },
        })
    }

    async fn wait_rollout(&self, service: &ServiceName, deployed: &Deployed) -> Result<(), TargetError> {
        let ecs = self.ecs_service(service)?;
        let arn = deployed
            .running
            .reference
            .as_deref()
            .ok_or_else(|| TargetError::failed(format!("no task definition recorded for the deployment of {service}")))?;
        self.follow(ecs, arn).await
    }

    #[tracing::instrument(skip(self, req), fields(deployment = req.deployment_id, service = %req.service, to = %req.to.version))]
    async fn rollback(&self, req: &RollbackRequest) -> Result<Deployed, TargetError> {
        let ecs = self.ecs_service(&req.service)?;
        let (arn, detail) = match req.to.reference.as_deref() {
            Some(arn) => (arn.to_string(), format!("pointed ECS service {ecs} back at {} ({}) and its rollout completed", short(arn), req.to.version)),
            // No task definition was recorded for that version (deployed before the bot, or its
            // records are gone): the current revision with the version's image, as a deploy makes.
            None => {
                let (arn, registered) = self.register_version(&req.service, ecs, &req.image, &req.to.version, None).await?;
                let detail = format!("no task definition was recorded for {}, so {registered}, pointed ECS service {ecs} at it, and its rollout completed", req.to.version);
                (arn, detail)
            }
        };
        self.point_service_at(ecs, &arn).await?;
        self.follow(ecs, &arn).await?;
        Ok(Deployed { running: Running { version: req.to.version.clone(), reference: Some(arn) }, detail })
    }

    async fn diagnostics(&self, service: &ServiceName) -> Option<String> {
        let ecs = self.ecs_service(service).ok()?;
        let svc = match self.describe_service(ecs).await {
            Ok(s) => s,
            Err(e) => return Some(e.to_string()),
        };
        let primary = svc.deployments().iter().find(|d| d.status() == Some("PRIMARY")).and_then(|d| d.task_definition());
        let arn = primary.or(svc.task_definition())?.to_string();
        Some(self.diagnose(ecs, &arn, svc.events()).await)
    }

    /// CloudWatch Logs of the service's container, where its current task definition's `awslogs`
    /// options send them.
    #[tracing::instrument(skip(self), fields(cluster = %self.config.cluster))]
    async fn logs(&self, service: &ServiceName, image: &str, query: &LogQuery) -> Result<Vec<String>, TargetError> {
        let ecs = self.ecs_service(service)?;
        let (td, _, index) = self.current_task_definition(service, ecs, image).await?;
        let source = super::logs::source(&td.container_definitions()[index]).map_err(TargetError::failed)?;
        super::logs::read(&self.logs, &source, query).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn aws_ecs_the_version_is_the_image_tag_or_digest() {
        assert_eq!(super::version_of("your-registry/invoice-me-backend:v1.0.0"), "v1.0.0");
        assert_eq!(super::version_of("registry:5000/backend@sha256:abc"), "sha256:abc");
        assert_eq!(super::version_of("backend"), "latest");
    }
}
