//! Engine-free tests of the docker driver's rules; `tests/docker_target.rs` runs it against a real engine.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerConfig, ContainerInspectResponse, ContainerState, ContainerStateStatusEnum, EndpointSettings, Health, HealthConfig,
    HealthStatusEnum, HealthcheckResult, HostConfig, ImageConfig, MountPoint, MountPointTypeEnum, NetworkSettings, PortBinding,
};

use super::diagnostics::describe;
use super::spec::{replacement, repository_of, tag_of};
use super::DockerConfig;

const OLD_ID: &str = "0123456789abcdef0123456789abcdef";

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn image_config() -> ImageConfig {
    ImageConfig {
        env: Some(strings(&["PATH=/usr/bin", "APP_VERSION=v1.0.0"])),
        entrypoint: Some(strings(&["/invoiceme-standin", "--listen", "0.0.0.0:8080"])),
        cmd: None,
        labels: Some(map(&[("org.opencontainers.image.version", "v1.0.0")])),
        exposed_ports: Some(HashMap::from([("8080/tcp".to_string(), HashMap::new())])),
        healthcheck: Some(HealthConfig { test: Some(strings(&["CMD", "/check"])), ..Default::default() }),
        working_dir: Some("/".into()),
        ..Default::default()
    }
}

/// A container as the engine reports it: the image's defaults merged with what its creator set.
fn old_container() -> ContainerInspectResponse {
    ContainerInspectResponse {
        id: Some(OLD_ID.into()),
        image: Some("sha256:aaaa".into()),
        config: Some(ContainerConfig {
            hostname: Some(OLD_ID[..12].into()),
            image: Some("your-registry/backend:v1.0.0".into()),
            env: Some(strings(&["PATH=/usr/bin", "APP_VERSION=v1.0.0", "DB_URL=postgres://db/invoiceme"])),
            entrypoint: Some(strings(&["/invoiceme-standin", "--listen", "0.0.0.0:8080"])),
            labels: Some(map(&[
                ("org.opencontainers.image.version", "v1.0.0"),
                ("com.docker.compose.project", "invoiceme"),
                ("com.docker.compose.service", "backend"),
                ("deploybot.version", "v1.0.0"),
            ])),
            exposed_ports: Some(HashMap::from([("8080/tcp".to_string(), HashMap::new()), ("9090/tcp".to_string(), HashMap::new())])),
            healthcheck: Some(HealthConfig { test: Some(strings(&["CMD", "/check"])), ..Default::default() }),
            working_dir: Some("/".into()),
            mac_address: Some("02:42:ac:11:00:02".into()),
            ..Default::default()
        }),
        host_config: Some(HostConfig {
            network_mode: Some("invoiceme_default".into()),
            binds: Some(strings(&["/srv/uploads:/uploads:ro"])),
            port_bindings: Some(HashMap::from([
                ("8080/tcp".to_string(), Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(String::new()) }])),
                ("9090/tcp".to_string(), Some(vec![PortBinding { host_ip: None, host_port: Some("9090".into()) }])),
            ])),
            ..Default::default()
        }),
        network_settings: Some(NetworkSettings {
            ports: Some(HashMap::from([
                ("8080/tcp".to_string(), Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some("49153".into()) }])),
                ("9090/tcp".to_string(), Some(vec![PortBinding { host_ip: Some("0.0.0.0".into()), host_port: Some("9090".into()) }])),
            ])),
            networks: Some(HashMap::from([
                (
                    "invoiceme_default".to_string(),
                    EndpointSettings {
                        aliases: Some(strings(&["backend", &OLD_ID[..12]])),
                        network_id: Some("net1".into()),
                        ip_address: Some("172.18.0.2".into()),
                        ..Default::default()
                    },
                ),
                ("monitoring".to_string(), EndpointSettings { aliases: Some(strings(&["api"])), ..Default::default() }),
            ])),
            ..Default::default()
        }),
        mounts: Some(vec![
            MountPoint { typ: Some(MountPointTypeEnum::BIND), source: Some("/srv/uploads".into()), destination: Some("/uploads".into()), ..Default::default() },
            MountPoint { typ: Some(MountPointTypeEnum::VOLUME), name: Some("f00dcafe".into()), destination: Some("/data".into()), rw: Some(true), ..Default::default() },
        ]),
        ..Default::default()
    }
}

#[test]
fn the_replacement_keeps_what_the_creator_set_and_leaves_image_defaults_to_the_new_image() {
    let r = replacement(&old_container(), Some(&image_config()), "your-registry/backend:v1.1.0", &[("deploybot.version", "v1.1.0".into())]);
    let body = r.body;

    assert_eq!(body.image.as_deref(), Some("your-registry/backend:v1.1.0"));
    assert_eq!(body.env, Some(strings(&["DB_URL=postgres://db/invoiceme"])), "APP_VERSION must come from the new image");
    assert_eq!(body.entrypoint, None);
    assert_eq!(body.cmd, None);
    assert_eq!(body.healthcheck, None, "the new image's health check applies");
    assert_eq!(body.working_dir, None);
    assert_eq!(body.hostname, None, "the old container's id is not a hostname to keep");
    assert_eq!(body.mac_address, None);
    let mut exposed: Vec<String> = body.exposed_ports.unwrap().into_keys().collect();
    exposed.sort();
    assert_eq!(exposed, strings(&["8080/tcp", "9090/tcp"]), "published ports stay exposed");
    let labels: BTreeMap<_, _> = body.labels.unwrap().into_iter().collect();
    assert_eq!(
        labels,
        [("com.docker.compose.project", "invoiceme"), ("com.docker.compose.service", "backend"), ("deploybot.version", "v1.1.0")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    );
}

#[test]
fn settings_the_creator_changed_survive_the_replacement() {
    let mut old = old_container();
    let config = old.config.as_mut().unwrap();
    config.cmd = Some(strings(&["--version", "pinned"]));
    config.healthcheck = Some(HealthConfig { test: Some(strings(&["NONE"])), ..Default::default() });
    config.entrypoint = Some(strings(&["/other"]));

    let body = replacement(&old, Some(&image_config()), "img:v2", &[]).body;

    assert_eq!(body.entrypoint, Some(strings(&["/other"])));
    assert_eq!(body.cmd, Some(strings(&["--version", "pinned"])));
    assert_eq!(body.healthcheck.and_then(|h| h.test), Some(strings(&["NONE"])));
}

#[test]
fn without_the_old_image_the_config_is_copied_whole() {
    let body = replacement(&old_container(), None, "img:v2", &[]).body;

    assert_eq!(body.env.map(|e| e.len()), Some(3));
    assert!(body.healthcheck.is_some());
}

#[test]
fn a_random_host_port_is_pinned_to_the_one_in_use_and_a_fixed_one_kept() {
    let host = replacement(&old_container(), Some(&image_config()), "img:v2", &[]).body.host_config.unwrap();
    let ports = host.port_bindings.unwrap();

    assert_eq!(ports["8080/tcp"], Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some("49153".into()) }]));
    assert_eq!(ports["9090/tcp"], Some(vec![PortBinding { host_ip: None, host_port: Some("9090".into()) }]));
}

#[test]
fn binds_are_kept_and_anonymous_volumes_handed_over_by_name() {
    let host = replacement(&old_container(), Some(&image_config()), "img:v2", &[]).body.host_config.unwrap();

    assert_eq!(host.binds, Some(strings(&["/srv/uploads:/uploads:ro", "f00dcafe:/data"])));
}

#[test]
fn the_replacement_is_created_on_its_network_and_joins_the_others_after() {
    let r = replacement(&old_container(), Some(&image_config()), "img:v2", &[]);

    let created_on = r.body.networking_config.unwrap().endpoints_config.unwrap();
    assert_eq!(created_on.keys().collect::<Vec<_>>(), vec!["invoiceme_default"]);
    let endpoint = &created_on["invoiceme_default"];
    assert_eq!(endpoint.aliases, Some(strings(&["backend"])), "the old container's id is not an alias to keep");
    assert_eq!(endpoint.ip_address, None);
    assert_eq!(endpoint.network_id, None);
    assert_eq!(r.extra_networks.iter().map(|(n, e)| (n.as_str(), e.aliases.clone())).collect::<Vec<_>>(), vec![("monitoring", Some(strings(&["api"])))]);
    assert_eq!(r.body.host_config.unwrap().network_mode.as_deref(), Some("invoiceme_default"));
}

#[test]
fn a_container_on_the_default_bridge_or_the_host_network_gets_no_endpoints() {
    let mut old = old_container();
    old.host_config.as_mut().unwrap().network_mode = Some("host".into());
    let r = replacement(&old, None, "img:v2", &[]);
    assert!(r.body.networking_config.is_none() && r.extra_networks.is_empty());

    old.host_config.as_mut().unwrap().network_mode = Some("bridge".into());
    old.network_settings.as_mut().unwrap().networks = Some(HashMap::from([("bridge".to_string(), EndpointSettings::default())]));
    let r = replacement(&old, None, "img:v2", &[]);
    assert!(r.body.networking_config.is_none() && r.extra_networks.is_empty());
}

#[test]
fn image_references_split_into_repository_and_tag() {
    fn check(reference: &str, repository: &str, tag: Option<&str>) {
        assert_eq!(tag_of(reference), tag, "{reference}");
        assert_eq!(repository_of(reference), repository, "{reference}");
    }
    check("your-registry/invoice-me-backend:v1.0.0", "your-registry/invoice-me-backend", Some("v1.0.0"));
    check("registry:5000/app:v1.2.3-rc.1", "registry:5000/app", Some("v1.2.3-rc.1"));
    check("registry:5000/app", "registry:5000/app", None);
    check("app:v1@sha256:abcd", "app", Some("v1"));
    check("app@sha256:abcd", "app", None);
    check("sha256:0123abcd", "sha256:0123abcd", None);
    check("postgres", "postgres", None);
}

#[test]
fn container_names_follow_compose_unless_configured() {
    let config: DockerConfig = toml::from_str("project = \"invoiceme\"\ncontainers = { frontend = \"web\" }").unwrap();
    let name = |s: &str| config.container_name(&deploybot_commands::ServiceName::new(s).unwrap());
    assert_eq!(name("backend"), "invoiceme-backend-1");
    assert_eq!(name("frontend"), "web");
}

#[test]
fn the_docker_config_is_checked_without_touching_an_engine() {
    let config: DockerConfig =
        toml::from_str("host = \"https://docker:2376\"\nsettle = \"soon\"\ncontainers = { backend = \"/bad name\" }").unwrap();
    let services = BTreeMap::from([(deploybot_commands::ServiceName::new("backend").unwrap(), toml::from_str("image = \"x\"").unwrap())]);

    let problems: Vec<String> = config.validate(&services).into_iter().map(|(p, _)| p).collect();

    assert_eq!(problems, vec!["settle", "host", "containers.backend"]);
    assert!(toml::from_str::<DockerConfig>("settle_time = \"1s\"").is_err(), "unknown keys are refused");
}

#[test]
fn a_description_gives_the_exit_code_health_and_last_logs() {
    let mut c = old_container();
    c.restart_count = Some(2);
    c.state = Some(ContainerState {
        status: Some(ContainerStateStatusEnum::EXITED),
        exit_code: Some(3),
        oom_killed: Some(false),
        health: Some(Health {
            status: Some(HealthStatusEnum::UNHEALTHY),
            failing_streak: Some(3),
            log: Some(vec![HealthcheckResult { exit_code: Some(1), output: Some("503\nDOWN\n".into()), ..Default::default() }]),
        }),
        ..Default::default()
    });

    let text = describe("invoiceme-backend-1", &c, "starting\nApplication run failed\n");

    assert_eq!(
        text,
        "container invoiceme-backend-1: image your-registry/backend:v1.0.0 (sha256:aaaa)\n\
         state exited, exit code 3, OOMKilled false, restarted 2 times\n\
         health unhealthy (failing streak 3); last check: exit 1: 503 DOWN\n\
         last 20 log lines:\n\
         starting\n\
         Application run failed"
    );
}
