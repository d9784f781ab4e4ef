//! Pipeline step 3 (database backup), the `restore` step of a `--with-db` rollback, and
//! `/rollback --with-db` itself (restore the exact pre-deploy backup, after approval). The dump,
//! upload and restore themselves live in `crate::backup`.

use std::sync::Arc;

use anyhow::Result;
use deploybot_commands::RollbackArgs;

use super::pipeline::{internal, Stop};
use super::{render, request_event, Engine, Reply};
use crate::backup::{self, BackupError, Settings};
use crate::chat::UserRef;
use crate::config::Environment;
use crate::model::*;
use crate::secrets::redact;
use crate::store::BackupRecord;

fn failed(step: &str, what: &str, e: impl std::fmt::Display) -> Stop {
    Stop::Failed { step: step.into(), reason: redact(&format!("{what}: {e}")), diagnostics: None }
}

impl Engine {
    /// The `backup` phase of a deployment: dump, check, upload, record. A failure stops the
    /// deployment before anything changed.
    pub(crate) async fn backup_phase(&self, d: &Deployment, env: &Environment, seq: i64) -> Result<(), Stop> {
        let Some(config) = env.backup.clone() else { return Ok(()) };
        self.optional_step(d, env, seq, "backup", true, |_| async move {
            let settings = Settings::from_config(env.name.as_str(), &config, &self.config.vars).map_err(|e| failed("backup", "backup failed", e))?;
            let taken = backup::take(&settings, self.now()).await.map_err(|e| failed("backup", "backup failed, nothing was changed", e))?;
            let record = BackupRecord {
                deployment_id: d.id,
                env: d.env.clone(),
                local_path: taken.local_path.as_ref().map(|p| p.display().to_string()),
                remote_uri: taken.remote_uri.clone(),
                size_bytes: taken.size_bytes as i64,
                created_at: taken.taken_at.timestamp_millis(),
            };
            self.store.record_backup(&record).await.map_err(internal)?;
            Ok(taken.describe())
        })
        .await
    }

    /// The `restore` step of a `--with-db` rollback: the backup taken before the deployment being
    /// undone goes back into the database, in one transaction.
    pub(crate) async fn restore_phase(&self, d: &Deployment, env: &Environment, seq: i64) -> Result<(), Stop> {
        self.optional_step(d, env, seq, "restore", true, |_| async move {
            let fail = |e: &dyn std::fmt::Display| failed("restore", "database restore failed, the database is unchanged", e);
            let of = d.rollback_of.ok_or_else(|| fail(&"this rollback names no deployment to undo"))?;
            let config = env.backup.clone().ok_or_else(|| fail(&format!("{} has no [backup] configured", env.name)))?;
            let record = self.store.backup_for(of).await.map_err(internal)?.ok_or_else(|| fail(&format!("no backup is recorded for #{of}")))?;
            let settings = Settings::from_config(env.name.as_str(), &config, &self.config.vars).map_err(|e| fail(&e))?;
            let path = backup::local_copy(&settings, record.local_path.as_deref(), record.remote_uri.as_deref()).await.map_err(|e| fail(&e))?;
            let before = backup::restore(&settings, &path).await.map_err(|e| fail(&e))?;
            let mut detail = format!(
                "restored {} (taken {} before #{of})",
                path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(),
                render::local_time(record.created_at, self.tz())
            );
            for line in before.lines() {
                detail.push_str(&format!("\n{line}"));
            }
            Ok(detail)
        })
        .await
    }

    /// `/rollback <env> --with-db`: always needs approval; what will be lost is posted first.
    pub(crate) async fn rollback_with_db_request(self: &Arc<Self>, user: &UserRef, channel: &str, args: RollbackArgs, env: &Environment) -> Result<Reply> {
        let nothing = "Nothing was changed.";
        let Some(config) = env.backup.clone() else {
            return Ok(Reply(format!("⚠️ {} has no [backup] configured, so there is no database backup to restore. {nothing} Roll back the services with `/rollback {}`.", env.name, env.name)));
        };
        let Some(approvals) = env.approvals.clone().filter(|a| !a.approvers.is_empty()) else {
            return Ok(Reply(format!(
                "🚫 `--with-db` always needs approval, and {} has no approvers configured ([environments.{}.approvals]). {nothing}",
                env.name, env.name
            )));
        };
        let Some(last) = self.last_successful_deploy(env).await? else {
            return Ok(Reply(format!("⚠️ Nothing to roll back in {}: no successful deployment is recorded.", env.name)));
        };
        let Some(record) = self.store.backup_for(last.id).await? else {
            return Ok(Reply(format!("⚠️ No backup is recorded for {} ({}): its backup step did not run, so there is no exact pre-deploy database to restore. {nothing}", last.short_id(), last.version)));
        };
        let (to, services) = match self.rollback_target(env, &last, &args).await? {
            Ok(target) => target,
            Err(reply) => return Ok(reply),
        };
        let settings = match Settings::from_config(env.name.as_str(), &config, &self.config.vars) {
            Ok(s) => s,
            Err(e) => return Ok(Reply(format!("⚠️ Cannot prepare the restore: {}. {nothing}", redact(&e.to_string())))),
        };
        let loss = self.loss_report(&settings, &record, &last, env).await;

        let now = self.now_ms();
        let required = approvals.required.max(1) as i64;
        let new = NewDeployment {
            env: env.name.to_string(),
            kind: DeploymentKind::Rollback,
            version: to.clone(),
            services,
            state: DeploymentState::AwaitingApproval,
            requested_by: user.id.clone(),
            requested_by_name: user.name.clone(),
            channel: channel.to_string(),
            hotfix_reason: None,
            scheduled_for: None,
            rollback_of: Some(last.id),
            with_db: true,
            approvals_required: required,
            approval_expires_at: Some(now + approvals.expires_after.as_millis() as i64),
            request_event: request_event(),
        };
        let d = match self.create_holding_lock(env, &new, format!("rollback to {to} with database restore"), now).await? {
            Ok(d) => d,
            Err(reply) => return Ok(reply),
        };
        self.announce(d.id).await?;
        self.thread(&d, "with-db-loss", &loss).await?;
        self.post_approval(d.id).await?;
        Ok(Reply(format!(
            "⏪ {} will roll {} back to {to} and restore the database to the backup taken before {} — after {required} approval(s) in the environment's channel, where what will be lost is posted.",
            d.short_id(),
            env.name,
            last.short_id()
        )))
    }

    /// What a restore of `record` would lose: the backup's age and the tables whose row counts differ.
    async fn loss_report(&self, settings: &Settings, record: &BackupRecord, last: &Deployment, env: &Environment) -> String {
        let age = render::seconds((self.now_ms() - record.created_at).max(0));
        let place = record.remote_uri.clone().or_else(|| record.local_path.clone()).unwrap_or_default();
        let mut text = format!(
            "⚠️ *Database restore*: the database of {} goes back to the backup taken before {} ({}) at {} ({age} ago, {}, {place}). \
             *Everything written since then is lost.*",
            env.name,
            last.short_id(),
            last.version,
            render::local_time(record.created_at, self.tz()),
            backup::human_size(record.size_bytes.max(0) as u64)
        );
        let compared: Result<backup::Comparison, BackupError> = async {
            let path = backup::local_copy(settings, record.local_path.as_deref(), record.remote_uri.as_deref()).await?;
            backup::compare(settings, &path).await
        }
        .await;
        match compared {
            Ok(c) if c.lines().is_empty() => text.push_str("\nRow counts match the backup (rows may still have been updated since)."),
            Ok(c) => {
                text.push_str("\nTables that differ now:");
                for line in c.lines() {
                    text.push_str(&format!("\n• {line}"));
                }
            }
            Err(e) => text.push_str(&format!("\nThe row counts could not be compared: {}", redact(&e.to_string()))),
        }
        if env.step_enabled("backup") {
            text.push_str("\nA backup of the database as it is now is taken first, so the lost writes can be recovered by hand.");
        }
        text
    }
}
