//! The `azure_aci` driver against an Azure double (token endpoints and ARM container groups):
//! current image, a PUT that changes only the image, provisioning that succeeds, fails or hangs,
//! rollback, managed identity, and refused credentials that never leak the secret.

#[path = "support/arm_double.rs"]
mod arm_double;

use std::collections::BTreeMap;

use arm_double::{group, ArmDouble, Provisioning, CLIENT_ID, RESOURCE_GROUP, SUBSCRIPTION, TENANT};
use deploybot::secrets::{SecretRef, Vars};
use deploybot::targets::azure_aci::{AciConfig, AciTarget};
use deploybot::targets::{DeployRequest, DeployTarget, RollbackRequest, Running, TargetError};
use deploybot_commands::ServiceName;
use serde_json::json;

const REPO: &str = "your-registry/invoice-me-backend";
const GROUP: &str = "invoice-me-backend";
const CLIENT_SECRET: &str = "s3cr3t-client-value";
const JWT_SECRET: &str = "jwt-signing-key-value";

/// The variables the configs below refer to, given to the driver explicitly.
fn vars() -> Vars {
    Vars::from_pairs([("DEPLOYBOT_TEST_ACI_CLIENT_SECRET", CLIENT_SECRET), ("DEPLOYBOT_TEST_ACI_JWT_SECRET", JWT_SECRET)])
}

fn backend() -> ServiceName {
    ServiceName::new("backend").unwrap()
}

fn config(arm: &ArmDouble, rollout_timeout: &str) -> AciConfig {
    AciConfig {
        subscription_id: SUBSCRIPTION.into(),
        resource_group: RESOURCE_GROUP.into(),
        container_groups: BTreeMap::from([("backend".to_string(), GROUP.to_string())]),
        containers: BTreeMap::new(),
        tenant_id: Some(TENANT.into()),
        client_id: Some(CLIENT_ID.into()),
        client_secret: Some(SecretRef::parse("${DEPLOYBOT_TEST_ACI_CLIENT_SECRET}").unwrap()),
        management_url: arm.url.clone(),
        login_url: arm.url.clone(),
        api_version: "2023-05-01".into(),
        identity_url: arm.url.clone(),
        rollout_timeout: rollout_timeout.into(),
        poll_interval: "20ms".into(),
        secure_environment: BTreeMap::from([(
            GROUP.to_string(),
            BTreeMap::from([("JWT_SECRET".to_string(), SecretRef::parse("${DEPLOYBOT_TEST_ACI_JWT_SECRET}").unwrap())]),
        )]),
        registry_passwords: BTreeMap::new(),
    }
}

async fn arm(provisioning: Provisioning) -> ArmDouble {
    ArmDouble::start(CLIENT_SECRET, vec![group(GROUP, &format!("{REPO}:v1.0.0"))], provisioning).await
}

fn deploy_request(version: &str) -> DeployRequest {
    DeployRequest { deployment_id: 9, env: "production".into(), service: backend(), image: REPO.into(), version: version.into(), digest: None, previous: None }
}

#[tokio::test]
async fn azure_aci_current_reports_the_image_tag_and_caches_the_token() {
    let arm = arm(Provisioning::Succeeds).await;
    let target = AciTarget::new(&config(&arm, "10s"), &vars()).unwrap();

    let current = target.current(&backend(), REPO).await.unwrap();
    target.current(&backend(), REPO).await.unwrap();

    assert_eq!(current, Some(Running { version: "v1.0.0".into(), reference: Some(format!("{REPO}:v1.0.0")) }));
    assert_eq!(arm.tokens_issued(), 1, "the token is kept until shortly before it expires");
}

#[tokio::test]
async fn azure_aci_deploy_puts_the_group_back_with_only_the_image_changed_and_waits_for_succeeded() {
    let arm = arm(Provisioning::Succeeds).await;
    let target = AciTarget::new(&config(&arm, "10s"), &vars()).unwrap();

    let deployed = target.deploy(&deploy_request("v1.1.0")).await.unwrap();
    target.wait_rollout(&backend(), &deployed).await.unwrap();

    assert_eq!(deployed.running, Running { version: "v1.1.0".into(), reference: Some(format!("{REPO}:v1.1.0")) });
    assert_eq!(deployed.detail, format!("PUT container group {GROUP} with {REPO}:v1.1.0 (was {REPO}:v1.0.0)"));
    let puts = arm.puts();
    assert_eq!(puts.len(), 1);
    // Expected: the GET body less what ARM computes, the image changed, the withheld secret supplied.
    let mut expected = group(GROUP, &format!("{REPO}:v1.1.0"));
    let root = expected.as_object_mut().unwrap();
    root.remove("id");
    root.remove("type");
    let properties = root["properties"].as_object_mut().unwrap();
    properties.remove("provisioningState");
    properties.remove("instanceView");
    properties["ipAddress"].as_object_mut().unwrap().remove("ip");
    properties["ipAddress"].as_object_mut().unwrap().remove("fqdn");
    let container = &mut properties["containers"][0]["properties"];
    container.as_object_mut().unwrap().remove("instanceView");
    container["environmentVariables"][1] = json!({ "name": "JWT_SECRET", "secureValue": JWT_SECRET });
    assert_eq!(puts[0], expected);
    assert_eq!(arm.group(GROUP)["properties"]["provisioningState"], "Succeeded");
    assert_eq!(target.current(&backend(), REPO).await.unwrap().unwrap().version, "v1.1.0");
}

#[tokio::test]
async fn azure_aci_a_failed_provisioning_reports_the_containers_state_and_events() {
    let arm = arm(Provisioning::Fails).await;
    let target = AciTarget::new(&config(&arm, "10s"), &vars()).unwrap();

    let deployed = target.deploy(&deploy_request("v1.1.0-crash")).await.unwrap();
    let err = target.wait_rollout(&backend(), &deployed).await.unwrap_err();

    let TargetError::Failed { reason, diagnostics } = &err else { panic!("expected a failure, got {err:?}") };
    assert_eq!(reason, &format!("provisioning of container group {GROUP} with {REPO}:v1.1.0-crash ended Failed"));
    let diagnostics = diagnostics.as_deref().unwrap();
    assert!(diagnostics.contains(&format!("Container {GROUP} ({REPO}:v1.1.0-crash): Terminated (Error), exit code 1, 3 restarts")), "{diagnostics}");
    assert!(diagnostics.contains("Warning BackOff: Back-off restarting failed container (×3)"), "{diagnostics}");
}

#[tokio::test]
async fn azure_aci_a_provisioning_that_hangs_times_out() {
    let arm = arm(Provisioning::Hangs).await;
    let target = AciTarget::new(&config(&arm, "300ms"), &vars()).unwrap();

    let deployed = target.deploy(&deploy_request("v1.1.0-slow")).await.unwrap();
    let err = target.wait_rollout(&backend(), &deployed).await.unwrap_err();

    let TargetError::Timeout { what, after, diagnostics } = &err else { panic!("expected a timeout, got {err:?}") };
    assert_eq!(what, &format!("provisioning of container group {GROUP} with {REPO}:v1.1.0-slow"));
    assert_eq!(after, "300ms");
    assert!(diagnostics.as_deref().unwrap().contains("Container group provisioning state: Creating"), "{diagnostics:?}");
}

#[tokio::test]
async fn azure_aci_rollback_puts_the_previous_image_back_and_waits() {
    let arm = arm(Provisioning::Succeeds).await;
    let target = AciTarget::new(&config(&arm, "10s"), &vars()).unwrap();
    let previous = target.current(&backend(), REPO).await.unwrap().unwrap();
    target.deploy(&deploy_request("v1.1.0")).await.unwrap();

    let request = RollbackRequest { deployment_id: 9, env: "production".into(), service: backend(), image: REPO.into(), from_version: "v1.1.0".into(), to: previous.clone() };
    let rolled_back = target.rollback(&request).await.unwrap();

    assert_eq!(rolled_back.running, previous);
    let puts = arm.puts();
    assert_eq!(puts.len(), 2);
    assert_eq!(puts[1]["properties"]["containers"][0]["properties"]["image"], format!("{REPO}:v1.0.0"));
    assert_eq!(arm.group(GROUP)["properties"]["provisioningState"], "Succeeded");
}

#[tokio::test]
async fn azure_aci_a_managed_identity_token_comes_from_imds_with_the_metadata_header() {
    let arm = arm(Provisioning::Succeeds).await;
    let mut config = config(&arm, "10s");
    config.client_secret = None;
    config.client_id = None;
    let target = AciTarget::new(&config, &vars()).unwrap();

    assert_eq!(target.current(&backend(), REPO).await.unwrap().unwrap().version, "v1.0.0");
    assert_eq!(arm.tokens_issued(), 1);
}

#[tokio::test]
async fn azure_aci_a_token_arm_no_longer_accepts_is_replaced_once() {
    let arm = arm(Provisioning::Succeeds).await;
    let target = AciTarget::new(&config(&arm, "10s"), &vars()).unwrap();
    target.current(&backend(), REPO).await.unwrap();
    arm.revoke_token();

    assert_eq!(target.current(&backend(), REPO).await.unwrap().unwrap().version, "v1.0.0");
    assert_eq!(arm.tokens_issued(), 2);
}

#[tokio::test]
async fn azure_aci_refused_client_credentials_are_a_readable_failure_without_the_secret() {
    let arm = ArmDouble::start("another-secret-value", vec![group(GROUP, &format!("{REPO}:v1.0.0"))], Provisioning::Succeeds).await;
    let target = AciTarget::new(&config(&arm, "10s"), &vars()).unwrap();

    let err = target.deploy(&deploy_request("v1.1.0")).await.unwrap_err();

    let text = format!("{err} {:?}", err.diagnostics());
    assert!(matches!(err, TargetError::Failed { .. }), "{err:?}");
    assert!(text.contains("Azure refused the client credentials of client-1"), "{text}");
    assert!(text.contains("(HTTP 401): invalid_client: AADSTS7000215: Invalid client secret provided."), "{text}");
    assert!(!text.contains(CLIENT_SECRET), "{text}");
    assert!(arm.puts().is_empty());
}

#[tokio::test]
async fn azure_aci_a_missing_group_or_secure_value_is_a_readable_failure() {
    let arm = arm(Provisioning::Succeeds).await;
    let mut wrong = config(&arm, "10s");
    wrong.container_groups.insert("backend".into(), "invoice-me-backnd".into());
    let err = AciTarget::new(&wrong, &vars()).unwrap().current(&backend(), REPO).await.unwrap_err();
    assert!(
        err.to_string().starts_with(&format!("container group invoice-me-backnd not found in resource group {RESOURCE_GROUP} of subscription {SUBSCRIPTION}")),
        "{err}"
    );

    let mut no_secure = config(&arm, "10s");
    no_secure.secure_environment.clear();
    let err = AciTarget::new(&no_secure, &vars()).unwrap().deploy(&deploy_request("v1.1.0")).await.unwrap_err();
    assert!(err.to_string().contains(&format!("supply secure variable JWT_SECRET of container {GROUP} (target.secure_environment.{GROUP}.JWT_SECRET)")), "{err}");
    assert!(arm.puts().is_empty(), "nothing is PUT that would lose a secret");
}

#[tokio::test]
async fn azure_aci_logs_come_from_the_containers_logs_api_since_the_instant() {
    let arm = arm(Provisioning::Succeeds).await;
    let target = AciTarget::new(&config(&arm, "10s"), &vars()).unwrap();
    let since = chrono::DateTime::parse_from_rfc3339("2024-11-09T12:00:05Z").unwrap().timestamp_millis();
    arm.set_logs(
        GROUP,
        GROUP,
        &[
            ("2024-11-09T12:00:00.100000000Z", "Starting InvoiceMeApplication"),
            ("2024-11-09T12:00:06.200000000Z", "Started in 5.9 seconds"),
            ("2024-11-09T12:00:07.300000000Z", "ERROR org.hibernate: could not execute statement"),
        ],
    );
    let query = deploybot::targets::LogQuery { since_ms: since, limit: 100 };
    let lines = target.logs(&backend(), REPO, &query).await.unwrap();
    assert_eq!(lines, vec!["Started in 5.9 seconds", "ERROR org.hibernate: could not execute statement"], "the timestamps decide, and are stripped");
    let last = target.logs(&backend(), REPO, &deploybot::targets::LogQuery { since_ms: 0, limit: 1 }).await.unwrap();
    assert_eq!(last, vec!["ERROR org.hibernate: could not execute statement"]);

    let mut missing = config(&arm, "10s");
    missing.containers = BTreeMap::from([("backend".to_string(), "sidecar".to_string())]);
    let err = AciTarget::new(&missing, &vars()).unwrap().logs(&backend(), REPO, &query).await.unwrap_err();
    assert!(err.to_string().contains("sidecar"), "{err}");
}
