//! Where a service's rollout of one task-definition revision stands, read from `DescribeServices`.

use aws_sdk_ecs::types::{Deployment, DeploymentRolloutState, Service};

use super::taskdef::short;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Rollout {
    /// The revision's deployment is PRIMARY, `COMPLETED`, and runs as many tasks as desired.
    Completed,
    InProgress { running: i32, desired: i32, pending: i32 },
    /// The deployment failed (the circuit breaker tripped); ECS's reason.
    Failed(String),
    /// Another revision became the service's primary deployment meanwhile.
    Replaced(String),
}

/// The progress of `service`'s deployment of task definition `arn`.
pub(super) fn progress(service: &Service, arn: &str) -> Rollout {
    let deployments = service.deployments();
    let primary = deployments.iter().find(|d| d.status() == Some("PRIMARY"));
    let ours = primary
        .filter(|d| d.task_definition() == Some(arn))
        .or_else(|| deployments.iter().filter(|d| d.task_definition() == Some(arn)).max_by_key(|d| d.created_at().map(|t| t.as_nanos())));
    let Some(ours) = ours else {
        return match primary.and_then(Deployment::task_definition) {
            Some(other) => Rollout::Replaced(short(other).to_string()),
            None if service.task_definition() == Some(arn) => in_progress(None),
            None => Rollout::Replaced(service.task_definition().map_or("another task definition", short).to_string()),
        };
    };
    if ours.rollout_state() == Some(&DeploymentRolloutState::Failed) {
        let reason = ours.rollout_state_reason().unwrap_or("the deployment failed");
        return Rollout::Failed(format!("{reason} ({} failed tasks)", ours.failed_tasks()));
    }
    if ours.status() != Some("PRIMARY") {
        let other = primary.and_then(Deployment::task_definition).map_or("another task definition", short);
        return Rollout::Replaced(other.to_string());
    }
    let settled = ours.running_count() == ours.desired_count();
    let done = match ours.rollout_state() {
        Some(DeploymentRolloutState::Completed) => settled,
        // No rollout tracking (older APIs, emulators): steady once alone and at the desired count.
        None => settled && ours.pending_count() == 0 && deployments.len() == 1,
        Some(_) => false,
    };
    if done {
        Rollout::Completed
    } else {
        in_progress(Some(ours))
    }
}

fn in_progress(d: Option<&Deployment>) -> Rollout {
    Rollout::InProgress {
        running: d.map_or(0, Deployment::running_count),
        desired: d.map_or(0, Deployment::desired_count),
        pending: d.map_or(0, Deployment::pending_count),
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ecs::primitives::DateTime;

    use super::*;

    const NEW: &str = "arn:aws:ecs:us-east-1:123456789012:task-definition/backend:8";
    const OLD: &str = "arn:aws:ecs:us-east-1:123456789012:task-definition/backend:7";

    fn deployment(td: &str, status: &str, state: Option<DeploymentRolloutState>, running: i32, created: i64) -> Deployment {
        Deployment::builder()
            .task_definition(td)
            .status(status)
            .set_rollout_state(state)
            .desired_count(2)
            .running_count(running)
            .created_at(DateTime::from_secs(created))
            .build()
    }

    fn service(deployments: Vec<Deployment>) -> Service {
        Service::builder().task_definition(NEW).set_deployments(Some(deployments)).build()
    }

    #[test]
    fn aws_ecs_rollout_progress_follows_the_deployment_of_the_new_revision() {
        use DeploymentRolloutState::{Completed, Failed, InProgress};
        let check = |deployments: Vec<Deployment>, expected: Rollout| assert_eq!(progress(&service(deployments), NEW), expected);

        check(
            vec![deployment(NEW, "PRIMARY", Some(InProgress), 1, 2), deployment(OLD, "ACTIVE", Some(Completed), 2, 1)],
            Rollout::InProgress { running: 1, desired: 2, pending: 0 },
        );
        check(vec![deployment(NEW, "PRIMARY", Some(Completed), 2, 2)], Rollout::Completed);
        check(vec![deployment(NEW, "PRIMARY", Some(Completed), 1, 2)], Rollout::InProgress { running: 1, desired: 2, pending: 0 });
        check(vec![deployment(NEW, "PRIMARY", None, 2, 2)], Rollout::Completed);
        check(
            vec![deployment(NEW, "PRIMARY", None, 2, 2), deployment(OLD, "ACTIVE", None, 2, 1)],
            Rollout::InProgress { running: 2, desired: 2, pending: 0 },
        );
        // The circuit breaker with rollback: ours FAILED and ACTIVE, the old revision PRIMARY again.
        let failed = Deployment::builder()
            .task_definition(NEW)
            .status("ACTIVE")
            .rollout_state(Failed)
            .rollout_state_reason("ECS deployment circuit breaker: tasks failed to start.")
            .failed_tasks(3)
            .created_at(DateTime::from_secs(2))
            .build();
        check(
            vec![deployment(OLD, "PRIMARY", Some(InProgress), 0, 3), failed],
            Rollout::Failed("ECS deployment circuit breaker: tasks failed to start. (3 failed tasks)".into()),
        );
        check(vec![deployment(OLD, "PRIMARY", Some(Completed), 2, 3)], Rollout::Replaced("backend:7".into()));
    }
}
