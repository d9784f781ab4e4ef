//! Preflight image check: `image:version` must exist for each service before approval is asked,
//! and where a `/release` recorded its digest, the tag must still point at it ("tag moved since
//! release"). The existence check is opt-in per environment (`check_images = true`), so that
//! environments without a registry (the demo, command targets) need none; the digest check runs
//! whenever a release recorded a digest for the version (the registry is then known to be in use).

use anyhow::Result;

use super::Engine;
use crate::config::Environment;
use crate::registry::{short_digest, ImageRef};

impl Engine {
    /// Why `version` cannot be deployed to `env` because an image is missing or its tag moved.
    #[tracing::instrument(skip_all, fields(env = %env.name, version = %version))]
    pub(crate) async fn image_refusal(&self, env: &Environment, version: &str) -> Result<Option<String>> {
        let registry = self.registry();
        let mut missing = Vec::new();
        let mut moved = Vec::new();
        let mut unknown = Vec::new();
        // One read for every service (most versions were not released through the bot).
        let mut released_digests = self.store.released_digests(version).await?;
        for service in &env.services {
            let image = self.image_of(service.as_str());
            if image.is_empty() {
                continue;
            }
            let released = released_digests.remove(service.as_str());
            if !env.base.check_images && released.is_none() {
                continue;
            }
            let reference = ImageRef::parse(&image, version);
            match (registry.manifest(&reference).await, released) {
                (Ok(None), _) => missing.push(format!("{image}:{version}")),
                (Ok(Some(m)), Some(released)) if m.digest.as_deref() != Some(released.as_str()) => moved.push(format!(
                    "{image}:{version} now points at {}, not at {} as released",
                    m.digest.as_deref().map_or_else(|| "an image without a digest".to_string(), short_digest),
                    short_digest(&released)
                )),
                (Ok(Some(_)), _) => {}
                (Err(e), _) => unknown.push(format!("{image}:{version}: {e}")),
            }
        }
        if !moved.is_empty() {
            return Ok(Some(format!(
                "🚫 Tag moved since release: {}. Someone pushed over the released image; release a new version instead. Nothing was requested.",
                moved.join("; ")
            )));
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

    /// The digest `/release` recorded for `service` at `version`, if any.
    pub(crate) async fn released_digest(&self, version: &str, service: &str) -> Result<Option<String>> {
        self.store.released_digest(version, service).await
    }
}
