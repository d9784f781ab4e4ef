"""What moto now holds: task-definition revisions (and what differs between them), each service's
task definition and its deployments[], and the backups in S3."""
import sys

import boto3

endpoint = sys.argv[1]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
ecs = boto3.client("ecs", endpoint_url=endpoint, region_name="us-east-1")

def short(arn):
    return arn.rsplit("/", 1)[-1]

for service in ("backend", "frontend"):
    name = f"invoice-me-{service}"
    arns = ecs.list_task_definitions(familyPrefix=name)["taskDefinitionArns"]
    tds = [ecs.describe_task_definition(taskDefinition=a)["taskDefinition"] for a in arns]
    for td in tds:
        print(f"  {short(td['taskDefinitionArn'])}: image {td['containerDefinitions'][0]['image']}")
    ignore = {"taskDefinitionArn", "revision", "registeredAt", "registeredBy"}
    for old, new in zip(tds, tds[1:]):
        diffs = [k for k in set(old) | set(new) if k not in ignore and old.get(k) != new.get(k)]
        cdiff = []
        if "containerDefinitions" in diffs:
            diffs.remove("containerDefinitions")
            o, n = old["containerDefinitions"][0], new["containerDefinitions"][0]
            cdiff = [k for k in set(o) | set(n) if o.get(k) != n.get(k)]
        print(f"    {short(old['taskDefinitionArn'])} -> {short(new['taskDefinitionArn'])}: "
              f"task-level differences {sorted(diffs) or 'none'}, container differences {sorted(cdiff)}")
    svc = ecs.describe_services(cluster="invoice-me-cluster", services=[name])["services"][0]
    print(f"  service {name}: taskDefinition {short(svc['taskDefinition'])}, running {svc['runningCount']}/{svc['desiredCount']}")
    for d in svc.get("deployments", []):
        print(f"    deployments[]: {d['status']} {short(d['taskDefinition'])} rolloutState={d.get('rolloutState')} "
              f"running {d['runningCount']}/{d['desiredCount']}")
for o in s3.list_objects_v2(Bucket="backups").get("Contents", []):
    print(f"  s3://backups/{o['Key']} ({o['Size']} bytes)")
