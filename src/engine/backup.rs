//! Pipeline step 3 (database backup) and `/rollback --with-db` (restore the exact pre-deploy
//! backup, after approval). The dump and upload themselves live in `crate::backup`.

use std::sync::Arc;

use anyhow::Result;
use deploybot_commands::RollbackArgs;

use super::pipeline::Stop;
use super::{Engine, Reply};
use crate::chat::UserRef;
use crate::config::Environment;
use crate::model::Deployment;

impl Engine {
    /// The `backup` phase of a deployment.
    pub(crate) async fn backup_phase(&self, d: &Deployment, env: &Environment, seq: i64) -> Result<(), Stop> {
        self.optional_step(d, env, seq, "backup", env.backup.is_some(), |_| async {
            Err(Stop::Failed {
                step: "backup".into(),
                reason: "the backup step (pg_dump to S3) is configured but not available in this build; remove [backup] or add \"backup\" to skip_steps".into(),
                diagnostics: None,
            })
        })
        .await
    }

    /// `/rollback <env> --with-db`.
    pub(crate) async fn rollback_with_db_request(self: &Arc<Self>, user: &UserRef, channel: &str, args: RollbackArgs, env: &Environment) -> Result<Reply> {
        let _ = (user, channel, args, env);
        Ok(Reply("⚠️ `--with-db` restores the pre-deploy database backup, and this build has no backup step yet: nothing was changed. Roll back the services without it, or restore the backup by hand.".into()))
    }
}
