//! Pipeline step 7: the post-deploy watch window (PRODUCT.md section 7).

use super::pipeline::{internal, Stop};
use super::Engine;
use crate::config::Environment;
use crate::model::Deployment;

impl Engine {
    /// The `monitor` phase of a deployment.
    pub(crate) async fn watch_phase(&self, d: &Deployment, env: &Environment, seq: i64) -> Result<(), Stop> {
        let Some(m) = env.monitor.as_ref() else { return Ok(()) };
        if m.rules.is_empty() {
            return Ok(());
        }
        let why = if env.step_enabled("monitor") {
            "the post-deploy metric watch is not available in this build; watch the dashboards by hand"
        } else {
            "disabled in this environment (skip_steps)"
        };
        self.store.skip_step(d.id, seq, "monitor", why, self.now_ms()).await.map_err(internal)?;
        self.announce(d.id).await.map_err(internal)
    }
}
