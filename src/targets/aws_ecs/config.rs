use std::collections::BTreeMap;

use deploybot_commands::ServiceName;
use serde::Deserialize;

use crate::config::ServiceConfig;
use crate::targets::{check_duration, check_service_keys, check_url};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcsConfig {
    pub cluster: String,
    pub region: String,
    /// Emulators and tests; the AWS default endpoint when absent.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Our service -> ECS service name.
    pub services: BTreeMap<String, String>,
    /// Our service -> container name inside the task definition; the one container whose image
    /// matches the service's repository when absent.
    #[serde(default)]
    pub containers: BTreeMap<String, String>,
    #[serde(default = "default_rollout_timeout")]
    pub rollout_timeout: String,
    #[serde(default = "default_poll")]
    pub poll_interval: String,
}

fn default_rollout_timeout() -> String {
    "15m".into()
}
fn default_poll() -> String {
    "5s".into()
}

impl EcsConfig {
    pub fn validate(&self, services: &BTreeMap<ServiceName, ServiceConfig>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.cluster.trim().is_empty() {
            out.push(("cluster".into(), "empty cluster name".into()));
        }
        let region_ok = !self.region.is_empty()
            && self.region.split('-').count() >= 3
            && self.region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !region_ok {
            out.push(("region".into(), format!("\"{}\" is not an AWS region like us-east-1", self.region)));
        }
        if let Some(u) = &self.endpoint_url {
            check_url("endpoint_url", u, &mut out);
        }
        if self.services.is_empty() {
            out.push(("services".into(), "map each service to its ECS service, e.g. { backend = \"invoice-me-backend\" }".into()));
        }
        check_service_keys("services", &self.services, services, &mut out);
        check_service_keys("containers", &self.containers, services, &mut out);
        check_duration("rollout_timeout", &self.rollout_timeout, &mut out);
        check_duration("poll_interval", &self.poll_interval, &mut out);
        out
    }
}
