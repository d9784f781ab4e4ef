//! The replacement container, computed from what the engine says about the one it replaces.
//! Pure: no engine calls, so every rule here is tested without Docker.
//!
//! A container's inspected config mixes what its creator set (Compose file, `docker run` flags) with
//! what its image provided (`ENV`, `CMD`, `HEALTHCHECK`, labels…). Copied as is, the old image's
//! defaults would override the new image's (`APP_VERSION=v1.0.0` would survive the upgrade), so
//! everything equal to the old image's default is left out and the new image provides it again.

use std::collections::HashMap;

use bollard::models::{
    ContainerConfig, ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HostConfig, ImageConfig, MountPointTypeEnum,
    NetworkingConfig,
};

/// A network's name and the container's settings on it.
pub(super) type Endpoint = (String, EndpointSettings);

pub(super) struct Replacement {
    pub body: ContainerCreateBody,
    /// Networks joined after creation: before API 1.44 the engine takes one network at creation.
    pub extra_networks: Vec<Endpoint>,
}

/// The container to create in place of `old`, running `image`, with `labels` set on top of the old ones.
/// `old_image` is the old image's config; without it the old config is copied whole.
pub(super) fn replacement(old: &ContainerInspectResponse, old_image: Option<&ImageConfig>, image: &str, labels: &[(&str, String)]) -> Replacement {
    let config = old.config.clone().unwrap_or_default();
    let defaults = old_image.cloned().unwrap_or_default();
    let short_id = old.id.as_deref().map(|id| id.get(..12).unwrap_or(id)).unwrap_or_default();

    let mut body = own_config(config, &defaults, short_id);
    body.image = Some(image.to_string());
    let body_labels = body.labels.get_or_insert_with(HashMap::new);
    for (key, value) in labels {
        body_labels.insert((*key).to_string(), value.clone());
    }

    let mut host = old.host_config.clone().unwrap_or_default();
    pin_random_ports(&mut host, old);
    keep_anonymous_volumes(&mut host, old);

    let (primary, extra_networks) = networks(old, host.network_mode.as_deref(), short_id);
    body.networking_config = primary.map(|(name, endpoint)| NetworkingConfig { endpoints_config: Some(HashMap::from([(name, endpoint)])) });
    body.host_config = Some(host);
    Replacement { body, extra_networks }
}

/// The creator's part of `config`: whatever differs from the image's defaults.
fn own_config(config: ContainerConfig, image: &ImageConfig, short_id: &str) -> ContainerCreateBody {
    let same_entrypoint = config.entrypoint == image.entrypoint;
    let differs = |value: Option<String>, default: &Option<String>| value.filter(|v| Some(v) != default.as_ref());
    ContainerCreateBody {
        hostname: config.hostname.filter(|h| h != short_id && !h.is_empty()),
        domainname: config.domainname,
        user: differs(config.user, &image.user),
        attach_stdin: config.attach_stdin,
        attach_stdout: config.attach_stdout,
        attach_stderr: config.attach_stderr,
        // Kept whole: before API 1.44 a published port must be exposed, whoever exposed it.
        exposed_ports: config.exposed_ports,
        tty: config.tty,
        open_stdin: config.open_stdin,
        stdin_once: config.stdin_once,
        env: config.env.map(|env| env.into_iter().filter(|e| !image.env.as_ref().is_some_and(|d| d.contains(e))).collect()),
        // With the entrypoint the image's, a command equal to the image's is the image's too.
        cmd: config.cmd.filter(|cmd| !(same_entrypoint && Some(cmd) == image.cmd.as_ref())),
        healthcheck: config.healthcheck.filter(|h| Some(h) != image.healthcheck.as_ref()),
        args_escaped: None,
        image: None,
        volumes: without_keys(config.volumes, image.volumes.as_ref()),
        working_dir: differs(config.working_dir, &image.working_dir),
        entrypoint: config.entrypoint.filter(|_| !same_entrypoint),
        network_disabled: config.network_disabled,
        mac_address: None,
        on_build: None,
        labels: config.labels.map(|labels| {
            labels.into_iter().filter(|(k, v)| image.labels.as_ref().and_then(|d| d.get(k)) != Some(v)).collect()
        }),
        stop_signal: differs(config.stop_signal, &image.stop_signal),
        stop_timeout: config.stop_timeout,
        shell: config.shell.filter(|s| Some(s) != image.shell.as_ref()),
        host_config: None,
        networking_config: None,
    }
}

fn without_keys<V>(map: Option<HashMap<String, V>>, defaults: Option<&HashMap<String, V>>) -> Option<HashMap<String, V>> {
    map.map(|m| m.into_iter().filter(|(k, _)| !defaults.is_some_and(|d| d.contains_key(k))).collect())
}

/// A binding with no host port got a random one; the replacement keeps the port the old container
/// had, so whatever points at it (a proxy, a health check) still reaches the service.
fn pin_random_ports(host: &mut HostConfig, old: &ContainerInspectResponse) {
    let actual = old.network_settings.as_ref().and_then(|n| n.ports.as_ref());
    let (Some(bindings), Some(actual)) = (host.port_bindings.as_mut(), actual) else { return };
    for (port, wanted) in bindings.iter_mut() {
        let Some(wanted) = wanted.as_mut() else { continue };
        let Some(Some(assigned)) = actual.get(port) else { continue };
        for binding in wanted.iter_mut() {
            if binding.host_port.as_deref().is_some_and(|p| !p.is_empty() && p != "0") {
                continue;
            }
            let ip = binding.host_ip.clone().unwrap_or_default();
            let same_ip = |a: &&bollard::models::PortBinding| {
                let a_ip = a.host_ip.as_deref().unwrap_or_default();
                a_ip == ip || (ip.is_empty() && a_ip == "0.0.0.0")
            };
            if let Some(found) = assigned.iter().find(same_ip) {
                binding.host_port.clone_from(&found.host_port);
            }
        }
    }
}

/// Anonymous volumes (an image `VOLUME` or a Compose `volumes: [/data]`) are handed to the
/// replacement by name, as Compose does, instead of starting it on an empty one.
fn keep_anonymous_volumes(host: &mut HostConfig, old: &ContainerInspectResponse) {
    let Some(mounts) = &old.mounts else { return };
    let mut covered: Vec<String> = host.binds.iter().flatten().filter_map(|b| b.split(':').nth(1).map(str::to_string)).collect();
    covered.extend(host.mounts.iter().flatten().filter_map(|m| m.target.clone()));
    for mount in mounts {
        let (Some(MountPointTypeEnum::VOLUME), Some(name), Some(dest)) = (&mount.typ, &mount.name, &mount.destination) else { continue };
        if covered.contains(dest) {
            continue;
        }
        let mode = if mount.rw == Some(false) { ":ro" } else { "" };
        host.binds.get_or_insert_with(Vec::new).push(format!("{name}:{dest}{mode}"));
    }
}

/// The network to create the container on (its `NetworkMode`, when user-defined) and the others it joined.
fn networks(old: &ContainerInspectResponse, mode: Option<&str>, short_id: &str) -> (Option<Endpoint>, Vec<Endpoint>) {
    let builtin = |name: &str| matches!(name, "" | "default" | "bridge" | "host" | "none") || name.starts_with("container:");
    let Some(joined) = old.network_settings.as_ref().and_then(|n| n.networks.as_ref()) else { return (None, Vec::new()) };
    if mode.is_some_and(|m| m == "host" || m == "none" || m.starts_with("container:")) {
        return (None, Vec::new());
    }
    let mut names: Vec<&String> = joined.keys().filter(|n| !builtin(n)).collect();
    names.sort();
    let endpoint = |name: &str| {
        let e = &joined[name];
        EndpointSettings {
            ipam_config: e.ipam_config.clone(),
            links: e.links.clone(),
            aliases: e.aliases.as_ref().map(|a| a.iter().filter(|alias| alias.as_str() != short_id).cloned().collect()),
            driver_opts: e.driver_opts.clone(),
            ..Default::default()
        }
    };
    let primary = mode.filter(|m| !builtin(m) && joined.contains_key(*m)).map(|m| (m.to_string(), endpoint(m)));
    let extra = names
        .into_iter()
        .filter(|n| primary.as_ref().is_none_or(|(p, _)| p != *n))
        .map(|n| (n.clone(), endpoint(n)))
        .collect();
    (primary, extra)
}

/// The tag of an image reference (`registry:5000/app:v1.0.0@sha256:…` → `v1.0.0`); `None` for an id or a digest only.
pub(crate) fn tag_of(reference: &str) -> Option<&str> {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    if reference.starts_with("sha256:") {
        return None;
    }
    last.split_once(':').map(|(_, tag)| tag).filter(|t| !t.is_empty())
}

/// The repository of an image reference, without tag or digest.
pub(crate) fn repository_of(reference: &str) -> &str {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    match tag_of(without_digest) {
        Some(tag) => &without_digest[..without_digest.len() - tag.len() - 1],
        None => without_digest,
    }
}
