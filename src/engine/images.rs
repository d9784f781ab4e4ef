//! Preflight image check: `image:version` must exist for each service before approval is asked.
//! Opt-in per environment (`check_images = true`), so that environments without a registry
//! (the demo, command targets) need none.

use anyhow::Result;

use super::Engine;
use crate::config::Environment;
use crate::registry::ImageRef;

impl Engine {
    /// Why `version` cannot be deployed to `env` because an image is missing, if it cannot.
    #[tracing::instrument(skip_all, fields(env = %env.name, version = %version))]
    pub(crate) async fn image_refusal(&self, env: &Environment, version: &str) -> Result<Option<String>> {
        if !env.base.check_images {
            return Ok(None);
        }
        let registry = self.registry();
        let mut missing = Vec::new();
        let mut unknown = Vec::new();
        for service in &env.services {
            let image = self.image_of(service.as_str());
            if image.is_empty() {
                continue;
            }
            let reference = ImageRef::parse(&image, version);
            match registry.manifest_exists(&reference).await {
                Ok(true) => {}
                Ok(false) => missing.push(format!("{image}:{version}")),
                Err(e) => unknown.push(format!("{image}:{version}: {e}")),
            }
        }
        if !missing.is_empty() {
            let (them, does) = if missing.len() == 1 { ("it", "does") } else { ("they", "do") };
            return Ok(Some(format!("🚫 {} {does} not exist in the registry: was {them} built and pushed? Nothing was requested.", missing.join(", "))));
        }
        if !unknown.is_empty() {
            return Ok(Some(format!(
                "🚫 Cannot confirm that the images exist, so nothing was requested:\n{}\nFix the registry access, or set check_images = false for {}.",
                unknown.join("\n"),
                env.name
            )));
        }
        Ok(None)
    }
}
