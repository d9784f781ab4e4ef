"""moto's server with one behaviour of real ECS added: UpdateService to a new task definition
starts a new PRIMARY deployment (here completed at once, with running = desired), as ECS reports
it in `deployments[]`. Stock moto only changes the service's `taskDefinition`, so a rollout
can never be seen to complete there. Only scripts/demo-aws.sh uses this; the test suite runs
stock moto and the project's own ECS double for rollout progress and failures.

Usage: python moto_ecs_rollouts.py -H 127.0.0.1 -p PORT
"""
import sys

from moto.core.utils import utcnow
from moto.ecs import models
from moto.moto_api._internal import mock_random
from moto.server import main

_update_service = models.EC2ContainerServiceBackend.update_service


def update_service(self, service_properties):
    before = None
    cluster = service_properties.get("cluster", "default").split("/")[-1]
    name = service_properties.get("service", "").split("/")[-1]
    existing = self.services.get(f"{cluster}:{name}")
    if existing is not None:
        before = existing.task_definition
    service = _update_service(self, service_properties)
    if service.task_definition != before and service.deployment_controller["type"] == "ECS":
        deployment_id = f"ecs-svc/{mock_random.randint(0, 32**12)}"
        template = service.deployments[0] if service.deployments else {}
        now = utcnow()
        service.deployments = [
            dict(
                template,
                id=deployment_id,
                createdAt=now,
                updatedAt=now,
                status="PRIMARY",
                taskDefinition=service.task_definition,
                desiredCount=service.desired_count,
                runningCount=service.desired_count,
                pendingCount=0,
                failedTasks=0,
                rolloutState="COMPLETED",
                rolloutStateReason=f"ECS deployment {deployment_id} completed.",
            )
        ]
        service.running_count = service.desired_count
        service.pending_count = 0
    return service


models.EC2ContainerServiceBackend.update_service = update_service

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
