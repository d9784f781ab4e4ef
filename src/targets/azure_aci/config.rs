use std::collections::BTreeMap;

use deploybot_commands::ServiceName;
use serde::Deserialize;

use crate::config::ServiceConfig;
use crate::secrets::SecretRef;
use crate::targets::{check_duration, check_service_keys, check_url};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AciConfig {
    pub subscription_id: String,
    pub resource_group: String,
    /// Our service -> container group name.
    pub container_groups: BTreeMap<String, String>,
    /// Our service -> container name in its group; the group's only container when absent.
    #[serde(default)]
    pub containers: BTreeMap<String, String>,
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    /// Client-credentials secret; managed identity is used when absent.
    #[serde(default)]
    pub client_secret: Option<SecretRef>,
    #[serde(default = "default_arm")]
    pub management_url: String,
    #[serde(default = "default_login")]
    pub login_url: String,
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Where the managed-identity token endpoint (IMDS) is; overridable for tests.
    #[serde(default = "default_identity")]
    pub identity_url: String,
    #[serde(default = "default_rollout_timeout")]
    pub rollout_timeout: String,
    #[serde(default = "default_poll")]
    pub poll_interval: String,
    /// Container name -> variable -> `${ENV}`: values of secure environment variables, which ARM
    /// never returns and so must be supplied again with every PUT of the group.
    #[serde(default)]
    pub secure_environment: BTreeMap<String, BTreeMap<String, SecretRef>>,
    /// Registry server -> `${ENV}`: passwords of the group's image registry credentials, which
    /// ARM never returns either.
    #[serde(default)]
    pub registry_passwords: BTreeMap<String, SecretRef>,
}

fn default_arm() -> String {
    "https://management.azure.com".into()
}
fn default_login() -> String {
    "https://login.microsoftonline.com".into()
}
fn default_api_version() -> String {
    "2023-05-01".into()
}
fn default_identity() -> String {
    "http://169.254.169.254".into()
}
fn default_poll() -> String {
    "5s".into()
}
fn default_rollout_timeout() -> String {
    "10m".into()
}

impl AciConfig {
    pub fn validate(&self, services: &BTreeMap<ServiceName, ServiceConfig>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.subscription_id.trim().is_empty() {
            out.push(("subscription_id".into(), "empty subscription id".into()));
        }
        if self.resource_group.trim().is_empty() {
            out.push(("resource_group".into(), "empty resource group".into()));
        }
        if self.client_secret.is_some() && (self.tenant_id.is_none() || self.client_id.is_none()) {
            out.push(("client_secret".into(), "client credentials need tenant_id and client_id too".into()));
        }
        check_service_keys("container_groups", &self.container_groups, services, &mut out);
        check_service_keys("containers", &self.containers, services, &mut out);
        check_url("management_url", &self.management_url, &mut out);
        check_url("login_url", &self.login_url, &mut out);
        check_url("identity_url", &self.identity_url, &mut out);
        check_duration("rollout_timeout", &self.rollout_timeout, &mut out);
        check_duration("poll_interval", &self.poll_interval, &mut out);
        if self.container_groups.is_empty() {
            out.push(("container_groups".into(), "map each service to its container group, e.g. { backend = \"invoice-me-backend\" }".into()));
        }
        out
    }
}
