"""Creates the runbook's AWS side in moto: the S3 bucket `backups`, the ECS cluster
invoice-me-cluster, one task definition (bridge network mode) and one service per app service."""
import sys

import boto3

endpoint, version = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
ecs = boto3.client("ecs", endpoint_url=endpoint, region_name="us-east-1")

s3.create_bucket(Bucket="backups")
ecs.create_cluster(clusterName="invoice-me-cluster")
for service, port in (("backend", 8080), ("frontend", 80)):
    name = f"invoice-me-{service}"
    td = ecs.register_task_definition(
        family=name,
        networkMode="bridge",
        containerDefinitions=[{
            "name": service,
            "image": f"invoiceme/invoice-me-{service}:{version}",
            "memory": 512,
            "cpu": 256,
            "essential": True,
            "portMappings": [{"containerPort": port, "hostPort": 0}],
            "environment": [{"name": "SPRING_PROFILES_ACTIVE", "value": "production"}],
        }],
    )["taskDefinition"]
    ecs.create_service(cluster="invoice-me-cluster", serviceName=name, taskDefinition=td["taskDefinitionArn"], desiredCount=2)
    print(f"  ECS service {name} on {td['family']}:{td['revision']} ({version})")
print("  S3 bucket s3://backups")
