use std::collections::BTreeMap;

use deploybot_commands::ServiceName;
use serde::Deserialize;

use crate::config::ServiceConfig;
use crate::targets::{check_duration, check_service_keys, check_url};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// Engine address (`unix:///var/run/docker.sock`, `tcp://127.0.0.1:2375`); the local default when absent.
    #[serde(default)]
    pub host: Option<String>,
    /// Compose project the containers belong to (`com.docker.compose.project` label).
    #[serde(default = "default_project")]
    pub project: String,
    /// Container name per service; `<project>-<service>-1` (Compose's naming) when absent.
    #[serde(default)]
    pub containers: BTreeMap<String, String>,
    #[serde(default = "default_rollout_timeout")]
    pub rollout_timeout: String,
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: String,
    /// How long a container without a health check must keep running to count as rolled out
    /// (one that crashes at start is caught in this time).
    #[serde(default = "default_settle")]
    pub settle: String,
}

fn default_project() -> String {
    "invoiceme".into()
}
fn default_rollout_timeout() -> String {
    "2m".into()
}
fn default_stop_timeout() -> String {
    "10s".into()
}
fn default_settle() -> String {
    "5s".into()
}

impl DockerConfig {
    pub fn validate(&self, services: &BTreeMap<ServiceName, ServiceConfig>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(host) = &self.host {
            check_url("host", host, &mut out);
        }
        if self.project.is_empty() || !self.project.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
            out.push(("project".into(), format!("\"{}\" is not a Compose project name (lowercase letters, digits, - and _)", self.project)));
        }
        check_service_keys("containers", &self.containers, services, &mut out);
        check_duration("rollout_timeout", &self.rollout_timeout, &mut out);
        check_duration("stop_timeout", &self.stop_timeout, &mut out);
        check_duration("settle", &self.settle, &mut out);
        if let Some(host) = &self.host {
            if host.starts_with("https://") {
                out.push(("host".into(), format!("\"{host}\": TLS to the Docker Engine is not built in; use unix://, tcp:// or http://")));
            }
        }
        for (service, name) in &self.containers {
            if !valid_container_name(name) {
                out.push((format!("containers.{service}"), format!("\"{name}\" is not a container name (letters, digits, _ . -, starting with a letter or digit)")));
            }
        }
        out
    }

    /// The container that runs `service`.
    pub fn container_name(&self, service: &ServiceName) -> String {
        self.containers.get(service.as_str()).cloned().unwrap_or_else(|| format!("{}-{}-1", self.project, service))
    }
}

/// Docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn valid_container_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) && name.len() > 1 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}
