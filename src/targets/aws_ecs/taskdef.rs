//! Task definitions: which container is the service's, and the next revision with a new image.

use aws_sdk_ecs::operation::register_task_definition::builders::RegisterTaskDefinitionFluentBuilder;
use aws_sdk_ecs::types::{ContainerDefinition, Tag, TaskDefinition};

use crate::targets::docker::repository_of;

/// `family:revision` from a task-definition ARN (`arn:aws:ecs:…:task-definition/backend:5` → `backend:5`).
pub(super) fn short(arn: &str) -> &str {
    arn.rsplit_once(":task-definition/").map_or(arn, |(_, name)| name)
}

/// The index of the service's container in `td`: the configured name, else the one container
/// running `repository`, else the only container.
pub(super) fn container_index(td: &TaskDefinition, configured: Option<&str>, repository: &str) -> Result<usize, String> {
    let containers = td.container_definitions();
    let arn = td.task_definition_arn().map_or("the task definition", short);
    let names = || containers.iter().map(|c| c.name().unwrap_or("?")).collect::<Vec<_>>().join(", ");
    if let Some(name) = configured {
        return containers
            .iter()
            .position(|c| c.name() == Some(name))
            .ok_or_else(|| format!("task definition {arn} has no container named {name} (it has: {})", names()));
    }
    let matching: Vec<usize> = containers
        .iter()
        .enumerate()
        .filter(|(_, c)| c.image().is_some_and(|i| repository_of(i) == repository))
        .map(|(i, _)| i)
        .collect();
    match (matching.as_slice(), containers.len()) {
        ([one], _) => Ok(*one),
        ([], 1) => Ok(0),
        ([], 0) => Err(format!("task definition {arn} has no containers")),
        _ => Err(format!(
            "cannot tell which container of task definition {arn} is the service's ({}): name it in target.containers",
            names()
        )),
    }
}

/// Fills `register` with every property of `td`, the container at `container` running `image`
/// instead: nothing else may differ between two revisions the bot registers. (Inference
/// accelerators are left out: Elastic Inference is retired and ECS refuses them at registration.)
pub(super) fn next_revision(
    register: RegisterTaskDefinitionFluentBuilder,
    td: &TaskDefinition,
    container: usize,
    image: &str,
    tags: Vec<Tag>,
) -> RegisterTaskDefinitionFluentBuilder {
    let containers: Vec<ContainerDefinition> = td
        .container_definitions()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut c = c.clone();
            if i == container {
                c.image = Some(image.to_string());
            }
            c
        })
        .collect();
    register
        .set_family(td.family.clone())
        .set_task_role_arn(td.task_role_arn.clone())
        .set_execution_role_arn(td.execution_role_arn.clone())
        .set_network_mode(td.network_mode.clone())
        .set_container_definitions(Some(containers))
        .set_volumes(td.volumes.clone())
        .set_placement_constraints(td.placement_constraints.clone())
        .set_requires_compatibilities(td.requires_compatibilities.clone())
        .set_cpu(td.cpu.clone())
        .set_memory(td.memory.clone())
        .set_tags(Some(tags).filter(|t| !t.is_empty()))
        .set_pid_mode(td.pid_mode.clone())
        .set_ipc_mode(td.ipc_mode.clone())
        .set_proxy_configuration(td.proxy_configuration.clone())
        .set_ephemeral_storage(td.ephemeral_storage.clone())
        .set_runtime_platform(td.runtime_platform.clone())
        .set_enable_fault_injection(td.enable_fault_injection)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td(images: &[(&str, &str)]) -> TaskDefinition {
        TaskDefinition::builder()
            .task_definition_arn("arn:aws:ecs:us-east-1:123456789012:task-definition/invoice-me-backend:7")
            .set_container_definitions(Some(images.iter().map(|(n, i)| ContainerDefinition::builder().name(*n).image(*i).build()).collect()))
            .build()
    }

    #[test]
    fn aws_ecs_short_names_a_revision_by_family_and_number() {
        assert_eq!(short("arn:aws:ecs:us-east-1:123456789012:task-definition/invoice-me-backend:7"), "invoice-me-backend:7");
        assert_eq!(short("invoice-me-backend:7"), "invoice-me-backend:7");
    }

    #[test]
    fn aws_ecs_the_services_container_is_the_named_one_or_the_one_running_its_repository() {
        let repo = "your-registry/invoice-me-backend";
        let two = td(&[("envoy", "envoyproxy/envoy:v1"), ("app", "your-registry/invoice-me-backend:v1.0.0")]);
        assert_eq!(container_index(&two, None, repo), Ok(1));
        assert_eq!(container_index(&two, Some("envoy"), repo), Ok(0));
        let err = container_index(&two, Some("web"), repo).unwrap_err();
        assert!(err.contains("has no container named web (it has: envoy, app)"), "{err}");

        let one_other = td(&[("app", "123.dkr.ecr.us-east-1.amazonaws.com/backend:v1")]);
        assert_eq!(container_index(&one_other, None, repo), Ok(0));

        let ambiguous = td(&[("a", "x:1"), ("b", "y:1")]);
        let err = container_index(&ambiguous, None, repo).unwrap_err();
        assert!(err.contains("name it in target.containers"), "{err}");
    }
}
