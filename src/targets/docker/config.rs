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
        out
    }

    pub fn container_name(&self, service: &ServiceName) -> String {
        self.containers.get(service.as_str()).cloned().unwrap_or_else(|| format!("{}-{}-1", self.project, service))
    }
}
