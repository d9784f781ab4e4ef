//! The docker target against the real Docker Engine of this machine: images of the static stand-in
//! built in memory, a container made as `docker compose up` would, then deploys and rollbacks.
//! `DEPLOYBOT_SKIP_DOCKER=1` skips them where no engine runs.

#[path = "support/docker.rs"]
mod docker_support;

use std::time::Instant;

use bollard::models::{ContainerInspectResponse, RestartPolicyNameEnum};
use bollard::query_parameters::InspectContainerOptions;
use deploybot::targets::docker::{DockerConfig, DockerTarget, PREVIOUS_SUFFIX};
use deploybot::targets::{DeployRequest, DeployTarget, Deployed, RollbackRequest, Running, TargetError};
use deploybot_commands::ServiceName;
use docker_support::{app_version, free_port, Scope, APP_PORT};

fn backend() -> ServiceName {
    ServiceName::new("backend").unwrap()
}

fn target(scope: &Scope) -> DockerTarget {
    let config: DockerConfig = toml::from_str(&format!(
        "project = \"{}\"\nrollout_timeout = \"30s\"\nstop_timeout = \"5s\"\nsettle = \"1500ms\"",
        scope.name
    ))
    .unwrap();
    DockerTarget::new(&config).unwrap()
}

fn deploy_request(scope: &Scope, version: &str, previous: Option<Running>) -> DeployRequest {
    DeployRequest { deployment_id: 7, env: "staging".into(), service: backend(), image: scope.repository(), version: version.into(), digest: None, previous }
}

fn rollback_request(scope: &Scope, from: &str, to: Running) -> RollbackRequest {
    RollbackRequest { deployment_id: 8, env: "staging".into(), service: backend(), image: scope.repository(), from_version: from.into(), to }
}

async fn inspect(scope: &Scope, name: &str) -> Option<ContainerInspectResponse> {
    scope.docker.inspect_container(name, None::<InspectContainerOptions>).await.ok()
}

/// A scope with images v1.0.0 and `next`, and the backend container running v1.0.0: (scope, container, port).
async fn running_v1(case: &str, next: &[(&str, bool)], healthcheck: bool) -> Option<(Scope, String, u16)> {
    let scope = Scope::new(case).await?;
    let started = Instant::now();
    let v1 = scope.build_image("v1.0.0", "v1.0.0", healthcheck).await;
    for (version, health) in next {
        scope.build_image(version, version, *health).await;
    }
    let network = scope.network().await;
    let port = free_port();
    let name = scope.compose_up("backend", &format!("{}:v1.0.0", scope.repository()), &network, port).await;
    assert_eq!(app_version(port).await.unwrap(), "v1.0.0");
    assert!(inspect(&scope, &name).await.unwrap().image.as_deref() == Some(v1.as_str()));
    eprintln!("{case}: images and container ready in {:.1?}", started.elapsed());
    Some((scope, name, port))
}

#[tokio::test]
async fn deploying_a_new_version_replaces_the_container_keeping_its_config() {
    let Some((scope, name, port)) = running_v1("deploy", &[("v1.1.0", false)], false).await else { return };
    let target = target(&scope);
    let before = inspect(&scope, &name).await.unwrap();
    let previous = target.current(&backend(), &scope.repository()).await.unwrap();

    let deployed = target.deploy(&deploy_request(&scope, "v1.1.0", previous)).await.unwrap();
    assert!(inspect(&scope, &format!("{name}{PREVIOUS_SUFFIX}")).await.is_some(), "the old container is kept until the rollout is confirmed");
    target.wait_rollout(&backend(), &deployed).await.unwrap();

    assert_eq!(app_version(port).await.unwrap(), "v1.1.0", "the new version answers on the same host port");
    assert!(inspect(&scope, &format!("{name}{PREVIOUS_SUFFIX}")).await.is_none(), "the old container is removed after the rollout");
    let after = inspect(&scope, &name).await.unwrap();
    assert_ne!(after.id, before.id);
    assert_eq!(after.name.as_deref(), Some(format!("/{name}").as_str()));
    assert_eq!(deployed.running, Running { version: "v1.1.0".into(), reference: after.image.clone() });
    let config = after.config.unwrap();
    let env = config.env.unwrap();
    for kept in ["DB_URL=postgres://db:5432/invoiceme", "STANDIN_PASSWORD=compose-pass", "APP_VERSION=v1.1.0"] {
        assert!(env.contains(&kept.to_string()), "{kept} missing from {env:?}");
    }
    assert!(!env.contains(&"APP_VERSION=v1.0.0".to_string()), "the old image's ENV must not override the new one: {env:?}");
    let labels = config.labels.unwrap();
    for (key, value) in [
        ("team", "billing"),
        ("com.docker.compose.project", scope.name.as_str()),
        ("com.docker.compose.service", "backend"),
        ("deploybot.version", "v1.1.0"),
        ("deploybot.deployment", "7"),
    ] {
        assert_eq!(labels.get(key).map(String::as_str), Some(value), "label {key}");
    }
    let host = after.host_config.unwrap();
    assert_eq!(host.restart_policy.and_then(|p| p.name), Some(RestartPolicyNameEnum::UNLESS_STOPPED));
    let binding = &host.port_bindings.unwrap()[APP_PORT].clone().unwrap()[0];
    assert_eq!((binding.host_ip.as_deref(), binding.host_port.clone()), (Some("127.0.0.1"), Some(port.to_string())));
    let networks = after.network_settings.unwrap().networks.unwrap();
    let network = &networks[&format!("{}_default", scope.name)];
    assert!(network.aliases.as_ref().unwrap().contains(&"backend".to_string()), "{:?}", network.aliases);
    assert_eq!(target.current(&backend(), &scope.repository()).await.unwrap(), Some(deployed.running));
}

#[tokio::test]
async fn a_version_that_crashes_at_start_fails_the_rollout_and_rollback_restores_the_previous_container() {
    let Some((scope, name, port)) = running_v1("crash", &[("v1.1.0-crash", false)], false).await else { return };
    let target = target(&scope);
    let original = inspect(&scope, &name).await.unwrap();
    let previous = target.current(&backend(), &scope.repository()).await.unwrap().unwrap();

    let deployed = target.deploy(&deploy_request(&scope, "v1.1.0-crash", Some(previous.clone()))).await.unwrap();
    let err = target.wait_rollout(&backend(), &deployed).await.unwrap_err();

    assert!(matches!(err, TargetError::Failed { .. }), "{err:?}");
    assert!(err.to_string().contains("status 3"), "{err}");
    let diagnostics = err.diagnostics().unwrap();
    assert!(diagnostics.contains("exit code 3"), "{diagnostics}");
    assert!(diagnostics.contains("Application run failed"), "the crash's log line: {diagnostics}");
    assert!(target.diagnostics(&backend()).await.unwrap().contains("Application run failed"));

    let rolled_back = target.rollback(&rollback_request(&scope, "v1.1.0-crash", previous.clone())).await.unwrap();

    assert_eq!(rolled_back.running, previous);
    assert_eq!(app_version(port).await.unwrap(), "v1.0.0");
    let restored = inspect(&scope, &name).await.unwrap();
    assert_eq!(restored.id, original.id, "the very container that ran before is back");
    assert!(inspect(&scope, &format!("{name}{PREVIOUS_SUFFIX}")).await.is_none());
}

#[tokio::test]
async fn an_image_that_does_not_exist_fails_without_touching_the_running_container() {
    let Some((scope, name, port)) = running_v1("missing", &[], false).await else { return };
    let target = target(&scope);
    let before = inspect(&scope, &name).await.unwrap();
    // A registry on a closed loopback port: the pull is refused at once, with no network involved.
    let mut request = deploy_request(&scope, "v9.9.9", None);
    request.image = format!("127.0.0.1:9/{}", scope.repository());

    let err = target.deploy(&request).await.unwrap_err();

    let expected = format!("image {}:v9.9.9 is not available: not found locally and the pull failed: ", request.image);
    assert!(err.to_string().starts_with(&expected), "{err}");
    let after = inspect(&scope, &name).await.unwrap();
    assert_eq!(after.id, before.id);
    assert_eq!(after.state.and_then(|s| s.running), Some(true));
    assert_eq!(app_version(port).await.unwrap(), "v1.0.0");
}

#[tokio::test]
async fn current_reports_the_version_and_the_image_id() {
    let Some((scope, name, _port)) = running_v1("current", &[], false).await else { return };
    let target = target(&scope);
    let image_id = inspect(&scope, &name).await.unwrap().image.unwrap();

    let running = target.current(&backend(), &scope.repository()).await.unwrap();

    assert_eq!(running, Some(Running { version: "v1.0.0".into(), reference: Some(image_id) }));
    assert!(target.current(&ServiceName::new("frontend").unwrap(), "x").await.unwrap().is_none(), "no container, no version");
    let err = target.deploy(&DeployRequest { service: ServiceName::new("frontend").unwrap(), ..deploy_request(&scope, "v1.0.0", None) }).await.unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn a_manual_rollback_after_a_successful_deploy_recreates_the_previous_image() {
    let Some((scope, name, port)) = running_v1("manual", &[("v1.1.0", false)], false).await else { return };
    let target = target(&scope);
    let previous = target.current(&backend(), &scope.repository()).await.unwrap().unwrap();
    let deployed = target.deploy(&deploy_request(&scope, "v1.1.0", Some(previous.clone()))).await.unwrap();
    target.wait_rollout(&backend(), &deployed).await.unwrap();
    // The tag moves on meanwhile: the rollback must restore the image that ran, not what v1.0.0 means now.
    scope.build_image("v1.0.0", "v1.0.0-retagged", false).await;

    let rolled_back = target.rollback(&rollback_request(&scope, "v1.1.0", previous.clone())).await.unwrap();

    assert_eq!(rolled_back.running, previous);
    assert_eq!(app_version(port).await.unwrap(), "v1.0.0");
    let after = inspect(&scope, &name).await.unwrap();
    assert_eq!(after.image, previous.reference);
    assert_eq!(after.config.unwrap().labels.unwrap()["deploybot.deployment"], "8");
    assert!(inspect(&scope, &format!("{name}{PREVIOUS_SUFFIX}")).await.is_none());
    assert_eq!(target.current(&backend(), &scope.repository()).await.unwrap(), Some(previous));
}

#[tokio::test]
async fn a_health_check_must_pass_before_a_rollout_counts() {
    let Some((scope, name, port)) = running_v1("health", &[("v1.1.0-broken", true), ("v1.2.0", true)], true).await else { return };
    let target = target(&scope);
    let previous = target.current(&backend(), &scope.repository()).await.unwrap().unwrap();

    let broken = target.deploy(&deploy_request(&scope, "v1.1.0-broken", Some(previous.clone()))).await.unwrap();
    let err = target.wait_rollout(&backend(), &broken).await.unwrap_err();
    assert!(err.to_string().contains("is unhealthy"), "{err}");
    assert!(err.diagnostics().unwrap().contains("health unhealthy"), "{:?}", err.diagnostics());
    target.rollback(&rollback_request(&scope, "v1.1.0-broken", previous.clone())).await.unwrap();
    assert_eq!(app_version(port).await.unwrap(), "v1.0.0");

    let healthy = target.deploy(&deploy_request(&scope, "v1.2.0", Some(previous))).await.unwrap();
    target.wait_rollout(&backend(), &healthy).await.unwrap();

    let state = inspect(&scope, &name).await.unwrap().state.unwrap();
    assert_eq!(state.health.and_then(|h| h.status).map(|s| s.to_string()), Some("healthy".to_string()));
    assert_eq!(app_version(port).await.unwrap(), "v1.2.0");
}

#[tokio::test]
async fn an_engine_that_does_not_answer_is_reported_unreachable() {
    let config: DockerConfig = toml::from_str("host = \"unix:///nonexistent/docker.sock\"").unwrap();
    let target = DockerTarget::new(&config).unwrap();

    let err = target.current(&backend(), "x").await.unwrap_err();

    assert!(matches!(err, TargetError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("cannot reach the Docker Engine at unix:///nonexistent/docker.sock"), "{err}");
    let deployed = Deployed { running: Running { version: "v1".into(), reference: None }, detail: String::new() };
    assert!(matches!(target.wait_rollout(&backend(), &deployed).await, Err(TargetError::Unreachable { .. })));
}

#[path = "support/services.rs"]
mod services;

/// A released image: pushed to the htpasswd registry, gone from the engine, deployed by its digest
/// with `[registry]`'s credentials (and refused without them).
#[tokio::test]
async fn a_released_image_is_pulled_by_its_digest_with_the_registry_credentials() {
    use std::sync::Arc;
    let Some(registry) = services::registry_auth() else { return };
    let (user, password) = (std::env::var("DEPLOYBOT_TEST_REGISTRY_USER").unwrap(), std::env::var("DEPLOYBOT_TEST_REGISTRY_PASSWORD").unwrap());
    let Some((scope, _name, port)) = running_v1("pull-digest", &[("v2.0.0", false)], false).await else { return };
    let remote = format!("{registry}/{}", scope.repository());
    let credentials = deploybot::registry::Credentials { username: user.clone(), password: deploybot::secrets::Secret::from_value(password.clone()) };
    let engine = deploybot::release::image::Engine::connect(None, std::time::Duration::from_secs(120)).await.unwrap();
    scope
        .docker
        .tag_image(&format!("{}:v2.0.0", scope.repository()), Some(bollard::query_parameters::TagImageOptions { repo: Some(remote.clone()), tag: Some("v2.0.0".into()) }))
        .await
        .unwrap();
    engine.push(&format!("{remote}:v2.0.0"), Some(&credentials)).await.unwrap();
    let auth = |password: &str| {
        let config: deploybot::registry::RegistryConfig = toml::from_str(&format!("kind = \"basic\"\nurl = \"http://{registry}\"\nusername = \"{user}\"\npassword = \"${{P}}\"")).unwrap();
        Some(Arc::new(deploybot::registry::RegistryAuth::new(config, deploybot::secrets::Vars::from_pairs([("P", password)]))))
    };
    let digest = deploybot::registry::Registry::with_auth(reqwest::Client::new(), auth(&password))
        .manifest(&deploybot::registry::ImageRef::parse(&remote, "v2.0.0"))
        .await
        .unwrap()
        .and_then(|m| m.digest)
        .expect("the pushed image's digest");
    // Not on the engine any more: the deploy must pull it.
    engine.untag(&format!("{remote}:v2.0.0")).await;
    let request = DeployRequest { image: remote.clone(), digest: Some(digest.clone()), ..deploy_request(&scope, "v2.0.0", None) };
    assert_eq!(request.reference(), format!("{remote}:v2.0.0@{digest}"));

    let refused = target(&scope).with_registry(auth("not-the-password")).deploy(&request).await.unwrap_err();
    assert!(refused.to_string().contains(&format!("the registry {registry} refused the credentials of {user}")) || refused.to_string().contains("unauthorized"), "{refused}");
    assert_eq!(app_version(port).await.unwrap(), "v1.0.0", "a refused pull leaves the running container alone");

    let target = target(&scope).with_registry(auth(&password));
    let deployed = target.deploy(&request).await.unwrap();
    target.wait_rollout(&backend(), &deployed).await.unwrap();
    assert_eq!(app_version(port).await.unwrap(), "v2.0.0", "the released image answers");
    let image = scope.docker.inspect_image(&format!("{remote}@{digest}")).await.unwrap();
    assert_eq!(deployed.running.reference, image.id, "the container runs exactly the released digest");
    let _ = scope.docker.remove_image(&format!("{remote}@{digest}"), Some(bollard::query_parameters::RemoveImageOptions { force: true, noprune: false }), None).await;
}

#[tokio::test]
async fn logs_are_the_containers_output_since_the_instant_latest_last() {
    let Some((scope, _name, port)) = running_v1("logs", &[], false).await else { return };
    let target = target(&scope);
    let start = chrono::Utc::now().timestamp_millis() - 120_000;
    let query = |since_ms, limit| deploybot::targets::LogQuery { since_ms, limit };

    let lines = target.logs(&backend(), &scope.repository(), &query(start, 100)).await.unwrap();
    assert!(lines.iter().any(|l| l.contains("invoiceme-standin v1.0.0 listening on")), "{lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("20") && l.contains('T') && l.contains("Z listening")), "the engine's timestamps are stripped: {lines:?}");

    // Lines written after an instant are the only ones read from it.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let after = chrono::Utc::now().timestamp_millis();
    let http = reqwest::Client::new();
    for path in ["/api/actuator/health", "/api/does-not-exist"] {
        http.get(format!("http://127.0.0.1:{port}{path}")).send().await.unwrap();
    }
    let mut recent = Vec::new();
    for _ in 0..50 {
        recent = target.logs(&backend(), &scope.repository(), &query(after, 100)).await.unwrap();
        if recent.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(recent.iter().any(|l| l.contains("GET /api/actuator/health 200")) && recent.iter().any(|l| l.contains("GET /api/does-not-exist 404")), "{recent:?}");
    assert!(!recent.iter().any(|l| l.contains("listening on")), "older lines are left out: {recent:?}");
    let last = target.logs(&backend(), &scope.repository(), &query(start, 1)).await.unwrap();
    assert_eq!(last.len(), 1, "{last:?}");
    assert!(last[0].contains("GET /api/does-not-exist 404"), "the latest line: {last:?}");

    let none = target.logs(&ServiceName::new("frontend").unwrap(), "x", &query(start, 10)).await.unwrap_err();
    assert!(none.to_string().contains("there is no container") && none.to_string().contains("frontend"), "{none}");
}
