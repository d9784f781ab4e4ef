//! The durable job runner: claims ready deployments (leases, so each runs on one replica),
//! walks them through the runbook's steps, rolls back on failure, and resumes after a crash.
//!
//! Every step's start and outcome are written before they are announced. After a restart a
//! job found executing is resumed from the step it was in when that step is safe to repeat
//! (preflight, deploy, verify, monitor, record, rollback); otherwise (migrations, backup) it is
//! marked `interrupted`, keeps the lock, and the channel is told what a human must decide.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use deploybot_commands::{EnvName, ServiceName};
use tokio::sync::watch;

use super::render;
use super::Engine;
use crate::config::Environment;
use crate::model::*;
use crate::store::Patch;
use crate::targets::{DeployRequest, Deployed, RollbackRequest, Running, TargetError};

/// The steps of a deployment, in order.
const PHASES: [&str; 7] = ["preflight", "backup", "migrations", "deploy", "verify", "monitor", "record"];

/// Steps that may not simply run again after a crash.
const UNSAFE_TO_REPEAT: [&str; 3] = ["migrations", "backup", "restore"];

/// Why a pipeline stopped early.
pub(crate) enum Stop {
    /// A step failed; `changed` says whether services may have changed.
    Failed { step: String, reason: String, diagnostics: Option<String> },
    Cancelled { by: String },
    /// The store is unreachable: the job stops where it is, its lease lapses, and it resumes from
    /// its step when the store is back (nothing is rolled back because of an outage).
    Paused(anyhow::Error),
}

/// Jobs claimed per write when several are ready at once.
const CLAIM_BATCH: i64 = 16;

impl Engine {
    /// Runs jobs until `shutdown` turns true.
    pub async fn run_jobs(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if self.store.dialect() == crate::store::Dialect::Sqlite {
            // One replica by construction: whatever was executing belonged to our previous life.
            if let Ok(n) = self.store.clear_leases().await {
                if n > 0 {
                    tracing::warn!(jobs = n, "found jobs left running by a previous process; resuming them");
                }
            }
            if let Ok(n) = self.store.release_event_leases().await {
                if n > 0 {
                    tracing::warn!(events = n, "found chat events accepted but not handled by a previous process; handling them");
                }
            }
        }
        loop {
            if *shutdown.borrow() {
                break;
            }
            let claimed = match self.store.claim_jobs(&self.owner, self.now_ms(), self.lease_ms, CLAIM_BATCH).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "cannot claim jobs from the store");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                tokio::select! {
                    _ = self.woken() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => {}
                }
            }
            for d in claimed {
                let engine = self.clone();
                tokio::spawn(async move { engine.execute(d).await });
            }
        }
    }

    /// Claims and runs one ready job to its end; false when none was ready. For tests and the demo.
    pub async fn run_next_job(self: &Arc<Self>) -> Result<bool> {
        match self.store.claim_job(&self.owner, self.now_ms(), self.lease_ms).await? {
            Some(d) => {
                self.clone().execute(d).await;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Runs a claimed job while this replica holds its lease. The lease is renewed every third of
    /// its length; when a renewal finds it taken, or none succeeds before it lapses (the store
    /// unreachable or paused), the job stops at once: its future, and with it any in-flight target
    /// call, is dropped, and nothing more is written. The replica that claims it next resumes it
    /// from the store.
    #[tracing::instrument(skip_all, fields(deployment = d.id, env = %d.env, version = %d.version))]
    async fn execute(self: Arc<Self>, d: Deployment) {
        let lease = Duration::from_millis(self.lease_ms.max(300) as u64);
        // The lease as this replica last confirmed it, on the engine's clock (the one the store's
        // `lease_until` is written with), from the instant before the confirming write was sent.
        let claimed_at = d.lease_until.map(|t| t - self.lease_ms).unwrap_or_else(|| self.now_ms());
        let (valid_tx, valid_rx) = watch::channel(claimed_at + self.lease_ms);
        let renew = {
            let engine = self.clone();
            let id = d.id;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    let asked = engine.now_ms();
                    match engine.store.renew_lease(id, &engine.owner, asked, engine.lease_ms).await {
                        Ok(true) => {
                            let _ = valid_tx.send(asked + engine.lease_ms);
                        }
                        Ok(false) => {
                            // Either the job released its lease itself (it ended, or went back to
                            // waiting) and is finishing up, or another replica took it.
                            let taken = match engine.store.deployment(id).await {
                                Ok(Some(now)) => now.lease_owner.is_some_and(|o| o != engine.owner),
                                _ => true,
                            };
                            if taken {
                                tracing::error!("the job's lease was taken by another replica; stopping it now");
                                let _ = valid_tx.send(i64::MIN);
                            } else {
                                let _ = valid_tx.send(i64::MAX);
                            }
                            break;
                        }
                        Err(e) => tracing::warn!(error = format!("{e:#}"), "could not renew the job's lease; the job stops if it lapses"),
                    }
                }
            })
        };
        let lapsed = {
            let engine = self.clone();
            async move {
                let mut valid_rx = valid_rx;
                loop {
                    if engine.now_ms() >= *valid_rx.borrow_and_update() {
                        return;
                    }
                    if *valid_rx.borrow() == i64::MAX {
                        // Released by the job itself: nothing left to watch.
                        return std::future::pending::<()>().await;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(lease / 10) => {}
                        changed = valid_rx.changed() => if changed.is_err() { return },
                    }
                }
            }
        };
        let inner: std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + '_>> = Box::pin(self.execute_inner(d.clone()));
        tokio::select! {
            result = inner => {
                if let Err(e) = result {
                    tracing::error!(error = format!("{e:#}"), "the job stopped on an unexpected error; it resumes when its lease lapses");
                    let _ = self.store.add_issue(d.id, &format!("job error: {}", crate::secrets::redact(&format!("{e:#}"))), self.now_ms()).await;
                }
            }
            _ = lapsed => tracing::error!("the job's lease lapsed; stopped it without writing anything more (another replica resumes it)"),
        }
        renew.abort();
    }

    async fn execute_inner(self: &Arc<Self>, d: Deployment) -> Result<()> {
        let Some(env) = EnvName::new(&d.env).ok().and_then(|e| self.config.env(&e)).cloned() else {
            let patch = Patch { error: Some(format!("environment {} is no longer configured", d.env)), finished_at: Some(self.now_ms()), release_lease: true, ..Patch::default() };
            self.store.transition(d.id, &[d.state], DeploymentState::Failed, &patch, "deploybot", self.now_ms()).await?;
            return Ok(());
        };
        match d.state {
            DeploymentState::Queued | DeploymentState::Scheduled => self.start(d, &env).await,
            s if s.is_executing() => self.resume(d, &env).await,
            _ => Ok(()),
        }
    }

    /// Re-checks everything, then starts the pipeline.
    async fn start(self: &Arc<Self>, d: Deployment, env: &Environment) -> Result<()> {
        let now = self.now();
        let from = [d.state];
        if d.kind == DeploymentKind::Deploy {
            let decision = env.policy.check(now, d.hotfix_reason.is_some());
            if !decision.allowed {
                let next = env.policy.next_window(now).map(|t| t.timestamp_millis());
                self.store.release_deployment_lock(&d.env, d.id, self.now_ms()).await?;
                let patch = Patch { scheduled_for: next, release_lease: true, ..Patch::default() };
                self.store.transition(d.id, &from, DeploymentState::Scheduled, &patch, "deploybot", self.now_ms()).await?;
                self.thread(&d, &format!("rescheduled:{}", self.now_ms()), &format!("⏸️ The window closed before {} could start ({}). It will start when the window opens: {}.", d.short_id(), decision.reason, next.map(|t| render::local_time(t, self.tz())).unwrap_or_else(|| "never in the next 400 days".into()))).await?;
                return self.announce(d.id).await;
            }
        }
        // A scheduled job takes the environment now; a hotfix rolling forward takes it over from a
        // failed rollback.
        let lock = Lock { env: d.env.clone(), kind: LockKind::Deployment, holder: d.requested_by.clone(), reason: format!("{} {}", d.short_id(), d.version), deployment_id: Some(d.id), created_at: self.now_ms() };
        // Most jobs took the environment when they were requested: a read says so, no write.
        let taken = match self.store.lock(&d.env).await? {
            Some(held) if held.deployment_id == Some(d.id) => Ok(()),
            _ => self.store.try_lock(&lock).await?,
        };
        match taken {
            Ok(()) => {}
            Err(held) if held.deployment_id == Some(d.id) => {}
            Err(held) => match self.stuck_holder(&held).await? {
                Some(failed) if d.kind == DeploymentKind::Deploy && d.hotfix_reason.is_some() && self.supersede(&failed, &d, &lock).await? => {}
                _ => {
                    let retry = self.now_ms() + 60_000;
                    let patch = Patch { scheduled_for: Some(retry), release_lease: true, ..Patch::default() };
                    self.store.transition(d.id, &from, DeploymentState::Scheduled, &patch, "deploybot", self.now_ms()).await?;
                    self.thread(&d, "waiting-for-lock", &format!("⏸️ {} is due but {} is locked ({}); retrying every minute.", d.short_id(), d.env, held.reason)).await?;
                    return self.announce(d.id).await;
                }
            },
        }
        // Approval again, under the current config.
        if d.approvals_required > 0 {
            let tally = self.tally(&d).await?;
            if tally.outcome != crate::approval::Outcome::Approved {
                let expires = env.approvals.as_ref().map(|a| self.now_ms() + a.expires_after.as_millis() as i64);
                let patch = Patch { approval_expires_at: expires, release_lease: true, ..Patch::default() };
                self.store.transition(d.id, &from, DeploymentState::AwaitingApproval, &patch, "deploybot", self.now_ms()).await?;
                self.thread(&d, &format!("reapproval:{}", self.now_ms()), &format!("🔐 The approvals of {} no longer hold under the current config ({}); it needs approval again.", d.short_id(), tally.render())).await?;
                self.post_approval(d.id).await?;
                return self.announce(d.id).await;
            }
        }
        let patch = Patch { started_at: Some(self.now_ms()), ..Patch::default() };
        if !self.store.transition(d.id, &from, DeploymentState::Running, &patch, "deploybot", self.now_ms()).await? {
            return Ok(());
        }
        self.announce_soon(d.id);
        self.notify_state(d.id).await;
        // run_from reads the deployment afresh before its first phase.
        self.run_from(d, env, 0).await
    }

    /// Picks up a job found executing after a restart.
    async fn resume(self: &Arc<Self>, d: Deployment, env: &Environment) -> Result<()> {
        let steps = self.store.steps(d.id).await?;
        let now = self.now_ms();
        for s in steps.iter().filter(|s| s.state == StepState::Running) {
            self.store.finish_step(s.id, StepState::Interrupted, Some("the bot stopped while this step ran"), now).await?;
        }
        let step = d.current_step.clone().unwrap_or_else(|| "preflight".into());
        tracing::warn!(step = %step, state = %d.state, "resuming a job after a restart");
        if d.state == DeploymentState::RollingBack {
            self.thread(&d, &format!("resumed:{now}"), &format!("♻️ The bot restarted while rolling back {}; it is rolling back again (safe to repeat).", d.short_id())).await?;
            let reason = d.error.clone().unwrap_or_else(|| "the deployment failed".into());
            return self.roll_back(d, env, &reason, false).await;
        }
        if UNSAFE_TO_REPEAT.contains(&step.as_str()) {
            let patch = Patch { error: Some(format!("interrupted during {step} by a restart")), release_lease: true, ..Patch::default() };
            self.store.transition(d.id, &[d.state], DeploymentState::Interrupted, &patch, "deploybot", now).await?;
            self.thread(&d, "interrupted", &format!(
                "⚠️ The bot restarted while {} was in its *{step}* step, which is not safe to run twice. {} stays locked. A person must decide: check the step's effect (e.g. `flyway_schema_history`), fix what is needed, then `/resolve {} \"what was done\"` (an approver) to record it and release {}, or `/cancel {}` to close it.",
                d.short_id(), d.env, d.short_id(), d.env, d.short_id()
            )).await?;
            return self.announce(d.id).await;
        }
        self.thread(&d, &format!("resumed:{now}"), &format!("♻️ The bot restarted during {}'s *{step}* step; resuming from that step (safe to repeat).", d.short_id())).await?;
        let index = match d.kind {
            DeploymentKind::Rollback if step == "rollback" => PHASES.iter().position(|p| *p == "deploy").unwrap_or(0),
            _ => PHASES.iter().position(|p| *p == step).unwrap_or(0),
        };
        self.run_from(d, env, index).await
    }

    async fn run_from(self: &Arc<Self>, d: Deployment, env: &Environment, start: usize) -> Result<()> {
        for (i, phase) in PHASES.iter().enumerate().skip(start) {
            let seq = i as i64 + 1;
            if phase_is_noop(phase, &d, env) {
                continue;
            }
            let d = self.store.deployment(d.id).await?.context("deployment vanished")?;
            if d.lease_owner.as_deref() != Some(&self.owner) {
                tracing::warn!("lost the job's lease; another replica owns it now");
                return Ok(());
            }
            if let Some(by) = d.cancel_requested_by.clone() {
                return self.stop(d, env, Stop::Cancelled { by }).await;
            }
            let outcome = match *phase {
                "preflight" => self.preflight(&d, env, seq).await,
                "backup" => self.backup_phase(&d, env, seq).await,
                // A `--with-db` rollback restores the pre-deploy backup where a deploy migrates.
                "migrations" if d.kind == DeploymentKind::Rollback && d.with_db => self.restore_phase(&d, env, seq).await,
                "migrations" => self.migrations(&d, env, seq).await,
                "deploy" => self.deploy_services(&d, env, seq).await,
                "verify" => self.verify_step(&d, env, seq, "verify").await,
                "monitor" => self.watch_phase(&d, env, seq).await,
                _ => return self.record(d, env, seq).await,
            };
            match outcome {
                Ok(()) => {}
                Err(Stop::Paused(e)) => return Err(e.context(format!("paused in {phase}: the store is unavailable"))),
                Err(stop) => return self.stop(d, env, stop).await,
            }
        }
        Ok(())
    }

    pub(crate) async fn begin_step(&self, d: &Deployment, seq: i64, name: &str) -> Result<Step> {
        let step = self.store.start_step(d.id, seq, name, self.now_ms()).await?;
        self.announce_soon(d.id);
        Ok(step)
    }

    pub(crate) async fn end_step(&self, d: &Deployment, step: &Step, state: StepState, detail: &str) -> Result<()> {
        crate::monitor::metrics::global().step(&step.name, state.as_str(), self.now_ms() - step.started_at);
        self.store.finish_step(step.id, state, (!detail.is_empty()).then_some(detail), self.now_ms()).await?;
        self.announce_soon(d.id);
        Ok(())
    }

    pub(crate) async fn optional_step<F, Fut>(&self, d: &Deployment, env: &Environment, seq: i64, name: &str, configured: bool, body: F) -> Result<(), Stop>
    where
        F: FnOnce(Step) -> Fut,
        Fut: std::future::Future<Output = Result<String, Stop>>,
    {
        if !configured {
            return Ok(());
        }
        if !env.step_enabled(name) {
            self.store.skip_step(d.id, seq, name, "disabled in this environment (skip_steps)", self.now_ms()).await.map_err(internal)?;
            return Ok(());
        }
        let step = self.begin_step(d, seq, name).await.map_err(internal)?;
        match body(step.clone()).await {
            Ok(detail) => self.end_step(d, &step, StepState::Succeeded, &detail).await.map_err(internal),
            Err(stop) => {
                if let Stop::Failed { reason, diagnostics, .. } = &stop {
                    let detail = match diagnostics {
                        Some(diag) => format!("{reason}\n{diag}"),
                        None => reason.clone(),
                    };
                    self.end_step(d, &step, StepState::Failed, &detail).await.map_err(internal)?;
                }
                Err(stop)
            }
        }
    }

    async fn preflight(&self, d: &Deployment, env: &Environment, seq: i64) -> Result<(), Stop> {
        // The checklist again (time has passed since the request), before anything changes. A
        // rollback is never held back by it: it goes back to what ran before.
        if d.kind == DeploymentKind::Deploy && crate::checklist::has_automatic_items(env) {
            let step = self.begin_step(d, seq, "checklist").await.map_err(internal)?;
            let results = crate::checklist::evaluate(env, &self.config.vars, &self.http, &d.version).await;
            let state = if results.refusal().is_some() { StepState::Failed } else { StepState::Succeeded };
            self.end_step(d, &step, state, &results.lines()).await.map_err(internal)?;
            if let Some(item) = results.refusal() {
                let reason = format!("required checklist item '{}' failed: {}", item.name, render::first_line(&item.detail));
                return Err(Stop::Failed { step: "checklist".into(), reason, diagnostics: None });
            }
        }
        let step = self.begin_step(d, seq, "preflight").await.map_err(internal)?;
        let result = self.preflight_inner(d, env).await;
        match result {
            Ok(detail) => self.end_step(d, &step, StepState::Succeeded, &detail).await.map_err(internal),
            Err(reason) => {
                self.end_step(d, &step, StepState::Failed, &reason).await.map_err(internal)?;
                Err(Stop::Failed { step: "preflight".into(), reason, diagnostics: None })
            }
        }
    }

    /// Records what runs before (exactly, for rollback) and what each service will become.
    async fn preflight_inner(&self, d: &Deployment, env: &Environment) -> Result<String, String> {
        if d.kind == DeploymentKind::Deploy {
            for r in &env.requires {
                if !self.store.version_succeeded_on(r.as_str(), &d.version).await.map_err(|e| e.to_string())? {
                    return Err(format!("{} has not succeeded on {r} (promotion rule)", d.version));
                }
            }
        }
        let target = self.targets.get(&env.name).ok_or_else(|| format!("the {} target is not available", env.target.kind()))?;
        let recorded = self.store.service_versions(&d.env).await.map_err(|e| e.to_string())?;
        let existing = self.store.deployment_services(d.id).await.map_err(|e| e.to_string())?;
        let rolled_back = match d.rollback_of {
            Some(of) => self.store.deployment_services(of).await.map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        let mut lines = Vec::new();
        for name in &d.services {
            // A repeated preflight keeps what the first one recorded as "before".
            if let Some(s) = existing.iter().find(|s| &s.service == name) {
                lines.push(format!("{name}: {} → {}", s.from_version.as_deref().unwrap_or("(none)"), s.to_version));
                continue;
            }
            let service = ServiceName::new(name).map_err(|e| e.to_string())?;
            let image = self.image_of(name);
            let current = match target.current(&service, &image).await {
                Ok(Some(r)) => Some(r),
                Ok(None) => recorded.iter().find(|r| &r.service == name).map(|r| Running { version: r.version.clone(), reference: r.reference.clone() }),
                Err(e) => return Err(format!("cannot read what runs for {name}: {e}")),
            };
            // Rolling back to the version a deployment replaced: use its exact reference; to an older
            // version (`--to`): the one its last successful deployment recorded. Without either the
            // target builds one from what runs now, as a deploy of that version would.
            let replaced = rolled_back.iter().find(|s| &s.service == name && s.from_version.as_deref() == Some(d.version.as_str())).and_then(|s| s.from_ref.clone());
            let to_ref = match replaced {
                Some(r) => Some(r),
                None if d.kind == DeploymentKind::Rollback => self.store.recorded_ref(&d.env, name, &d.version).await.map_err(|e| e.to_string())?,
                None => None,
            };
            let record = DeploymentService {
                deployment_id: d.id,
                service: name.clone(),
                from_version: current.as_ref().map(|c| c.version.clone()),
                from_ref: current.as_ref().and_then(|c| c.reference.clone()),
                to_version: d.version.clone(),
                to_ref,
                state: "pending".into(),
            };
            self.store.put_deployment_service(&record, self.now_ms()).await.map_err(|e| e.to_string())?;
            lines.push(format!("{name}: {} → {}", record.from_version.as_deref().unwrap_or("(none)"), d.version));
        }
        Ok(lines.join("\n"))
    }

    pub(crate) fn image_of(&self, service: &str) -> String {
        self.config.services.iter().find(|(k, _)| k.as_str() == service).map(|(_, c)| c.image.clone()).unwrap_or_default()
    }

    async fn migrations(&self, d: &Deployment, env: &Environment, seq: i64) -> Result<(), Stop> {
        if d.kind == DeploymentKind::Rollback {
            return Ok(());
        }
        let Some(m) = env.migrations.clone() else { return Ok(()) };
        self.optional_step(d, env, seq, "migrations", true, |_| async move {
            let timeout = crate::config::parse_duration(&m.timeout).unwrap_or(Duration::from_secs(900));
            // The `env` table's references (`FLYWAY_URL = "${PROD_FLYWAY_URL}"`) are read now and reach the
            // command only through its environment; their values are secrets, redacted from the step's output.
            let env = m
                .expanded_env(&self.config.vars)
                .map_err(|e| Stop::Failed { step: "migrations".into(), reason: format!("cannot build the migration command: {e}"), diagnostics: None })?;
            match crate::targets::command::run_argv(&m.command, m.workdir.as_deref(), &env, timeout).await {
                Ok(output) => Ok(match applied_migrations(&output) {
                    Some(summary) => format!("{summary}\n{output}"),
                    None => output,
                }),
                Err(e) => Err(Stop::Failed { step: "migrations".into(), reason: format!("migrations failed: {e}"), diagnostics: e.diagnostics().map(str::to_string) }),
            }
        })
        .await
    }

    async fn deploy_services(&self, d: &Deployment, env: &Environment, seq: i64) -> Result<(), Stop> {
        let name = if d.kind == DeploymentKind::Rollback { "rollback" } else { "deploy" };
        let step = self.begin_step(d, seq, name).await.map_err(internal)?;
        let target = self.targets.get(&env.name).cloned().ok_or_else(|| internal(anyhow::anyhow!("target missing")))?;
        let mut detail = Vec::new();
        for record in self.ordered_services(d, env).await.map_err(internal)? {
            let fresh = self.store.deployment(d.id).await.map_err(internal)?.ok_or_else(|| internal(anyhow::anyhow!("deployment vanished")))?;
            if let Some(by) = fresh.cancel_requested_by {
                self.end_step(d, &step, StepState::Failed, &format!("cancelled by {by} before {}", record.service)).await.map_err(internal)?;
                return Err(Stop::Cancelled { by });
            }
            if record.state == "deployed" && record.to_version == d.version {
                detail.push(format!("{}: already on {}", record.service, d.version));
                continue;
            }
            let service = ServiceName::new(&record.service).map_err(|e| internal(anyhow::anyhow!(e)))?;
            let image = self.image_of(&record.service);
            let mut marked = record.clone();
            marked.state = "deploying".into();
            self.store.put_deployment_service(&marked, self.now_ms()).await.map_err(internal)?;
            let previous = record.from_version.clone().map(|v| Running { version: v, reference: record.from_ref.clone() });
            let result: Result<Deployed, TargetError> = match d.kind {
                DeploymentKind::Deploy => {
                    let digest = self.released_digest(&d.version, service.as_str()).await.map_err(internal)?;
                    let req = DeployRequest { deployment_id: d.id, env: d.env.clone(), service: service.clone(), image: image.clone(), version: d.version.clone(), digest, previous };
                    match target.deploy(&req).await {
                        Ok(deployed) => target.wait_rollout(&service, &deployed).await.map(|_| deployed),
                        Err(e) => Err(e),
                    }
                }
                DeploymentKind::Rollback => {
                    let req = RollbackRequest {
                        deployment_id: d.id,
                        env: d.env.clone(),
                        service: service.clone(),
                        image: image.clone(),
                        from_version: record.from_version.clone().unwrap_or_default(),
                        to: Running { version: d.version.clone(), reference: record.to_ref.clone() },
                    };
                    target.rollback(&req).await
                }
            };
            match result {
                Ok(deployed) => {
                    marked.state = "deployed".into();
                    marked.to_ref = deployed.running.reference.clone();
                    self.store.put_deployment_service(&marked, self.now_ms()).await.map_err(internal)?;
                    detail.push(format!("{}: {} → {}{}", record.service, record.from_version.as_deref().unwrap_or("(none)"), d.version, indent_detail(&deployed.detail)));
                    self.announce_soon(d.id);
                }
                Err(e) => {
                    let diagnostics = match e.diagnostics() {
                        Some(diag) => Some(diag.to_string()),
                        None => target.diagnostics(&service).await,
                    };
                    let reason = format!("{} {}: {e}", name, record.service);
                    let full = match &diagnostics {
                        Some(diag) => format!("{reason}\n{diag}"),
                        None => reason.clone(),
                    };
                    self.end_step(d, &step, StepState::Failed, &full).await.map_err(internal)?;
                    return Err(Stop::Failed { step: name.into(), reason, diagnostics });
                }
            }
        }
        self.end_step(d, &step, StepState::Succeeded, &detail.join("\n")).await.map_err(internal)
    }

    async fn ordered_services(&self, d: &Deployment, env: &Environment) -> Result<Vec<DeploymentService>> {
        let records = self.store.deployment_services(d.id).await?;
        let mut ordered = Vec::new();
        for s in &env.services {
            if let Some(r) = records.iter().find(|r| r.service == s.as_str()) {
                ordered.push(r.clone());
            }
        }
        Ok(ordered)
    }

    async fn verify_step(&self, d: &Deployment, env: &Environment, seq: i64, name: &str) -> Result<(), Stop> {
        if env.verify.health.is_empty() && env.verify.smoke.is_empty() && env.verify.security.is_empty() {
            return Ok(());
        }
        if !env.step_enabled("verify") {
            self.store.skip_step(d.id, seq, name, "disabled in this environment (skip_steps)", self.now_ms()).await.map_err(internal)?;
            return Ok(());
        }
        self.store.transition(d.id, &[DeploymentState::Running, DeploymentState::Verifying], DeploymentState::Verifying, &Patch::default(), "deploybot", self.now_ms()).await.map_err(internal)?;
        let step = self.begin_step(d, seq, name).await.map_err(internal)?;
        let report = crate::verify::run_in(&env.verify, &crate::verify::Vars::new(d.version.clone(), d.env.clone(), format!("{}-{}", d.id, step.attempt)), &self.http, &self.config.vars).await;
        if report.ok {
            self.end_step(d, &step, StepState::Succeeded, &report.summary()).await.map_err(internal)?;
            Ok(())
        } else {
            self.end_step(d, &step, StepState::Failed, &format!("{}\n{}", report.summary(), report.details())).await.map_err(internal)?;
            Err(Stop::Failed { step: name.into(), reason: report.summary(), diagnostics: Some(report.details()) })
        }
    }

    async fn record(&self, d: Deployment, env: &Environment, seq: i64) -> Result<()> {
        let step = self.begin_step(&d, seq, "record").await?;
        let now = self.now_ms();
        for s in self.store.deployment_services(d.id).await? {
            self.store
                .set_service_version(&ServiceVersion { env: d.env.clone(), service: s.service.clone(), version: s.to_version.clone(), reference: s.to_ref.clone(), deployment_id: Some(d.id), updated_at: now })
                .await?;
        }
        self.end_step(&d, &step, StepState::Succeeded, "history recorded").await?;
        let patch = Patch { finished_at: Some(self.now_ms()), release_lease: true, release_lock: true, ..Patch::default() };
        let executing = [DeploymentState::Running, DeploymentState::Verifying, DeploymentState::Monitoring];
        self.store.transition(d.id, &executing, DeploymentState::Succeeded, &patch, "deploybot", self.now_ms()).await?;
        self.announce(d.id).await?;
        let d = self.store.deployment(d.id).await?.context("deployment vanished")?;
        let took = d.duration_ms().map(render::seconds).unwrap_or_default();
        let summary = match d.kind {
            DeploymentKind::Deploy => format!("✅ {} {} is live on {} ({took}). Deployed by {}.", d.short_id(), d.version, env.name, render::mention(&d.requested_by)),
            DeploymentKind::Rollback => format!("⏪ {} {} is back on {} ({took}); health checks and smoke tests passed. Team notified; consider a post-mortem.", d.short_id(), env.name, d.version),
        };
        self.thread(&d, "summary", &summary).await?;
        self.ended(d.id).await;
        Ok(())
    }

    /// Stops a pipeline that failed or was cancelled: rolls back what changed, then closes it.
    async fn stop(&self, d: Deployment, env: &Environment, stop: Stop) -> Result<()> {
        let (reason, cancelled_by) = match stop {
            Stop::Paused(e) => return Err(e),
            Stop::Cancelled { by } => (format!("cancelled by {by}"), Some(by)),
            Stop::Failed { step, reason, diagnostics } => {
                let mut text = format!("❌ *{step}* failed for {}: {reason}", d.short_id());
                if let Some(diag) = diagnostics.filter(|d| !d.trim().is_empty()) {
                    text.push_str(&format!("\n```\n{}\n```", diag.trim()));
                }
                self.thread(&d, &format!("failure:{step}:{}", self.now_ms()), &text).await?;
                (format!("{step} failed: {reason}"), None)
            }
        };
        let now = self.now_ms();
        self.store.add_issue(d.id, &reason, now).await?;
        let changed: Vec<DeploymentService> = self.store.deployment_services(d.id).await?.into_iter().filter(|s| s.state == "deployed" || s.state == "deploying").collect();
        if changed.is_empty() {
            let state = if cancelled_by.is_some() { DeploymentState::Cancelled } else { DeploymentState::Failed };
            let patch = Patch { failed_at: cancelled_by.is_none().then_some(now), finished_at: Some(now), error: Some(reason.clone()), release_lease: true, release_lock: true, ..Patch::default() };
            let executing = [DeploymentState::Running, DeploymentState::Verifying, DeploymentState::Monitoring];
            self.store.transition(d.id, &executing, state, &patch, "deploybot", now).await?;
            self.thread(&d, "closed", &format!("{} {} ended {}: nothing was changed in {}, so there is nothing to roll back.", state.emoji(), d.short_id(), state, d.env)).await?;
            self.ended(d.id).await;
            return self.announce(d.id).await;
        }
        let executing = [DeploymentState::Running, DeploymentState::Verifying, DeploymentState::Monitoring];
        if d.kind == DeploymentKind::Rollback {
            // Undoing a rollback would re-deploy the version it was rolling away from: never.
            let patch = Patch { failed_at: Some(now), finished_at: Some(now), error: Some(reason.clone()), release_lease: true, ..Patch::default() };
            self.store.transition(d.id, &executing, DeploymentState::RollbackFailed, &patch, "deploybot", now).await?;
            let d = self.store.deployment(d.id).await?.context("deployment vanished")?;
            let why = format!("🚨 *Rollback {} {}* ({reason}). It is not undone: that would put back what it was rolling away from.", d.short_id(), if cancelled_by.is_some() { "cancelled part-way" } else { "FAILED" });
            let note = self.rollback_failed_note(&d, env, &why).await;
            self.thread(&d, "rollback-failed", &note).await?;
            self.ended(d.id).await;
            return self.announce(d.id).await;
        }
        let patch = Patch { failed_at: cancelled_by.is_none().then_some(now), error: Some(reason.clone()), ..Patch::default() };
        self.store.transition(d.id, &executing, DeploymentState::RollingBack, &patch, "deploybot", now).await?;
        let d = self.store.deployment(d.id).await?.context("deployment vanished")?;
        self.roll_back(d, env, &reason, cancelled_by.is_some()).await
    }

    /// Puts every changed service back on exactly what ran before, verifies, and closes the job.
    async fn roll_back(&self, d: Deployment, env: &Environment, reason: &str, cancelled: bool) -> Result<()> {
        self.announce(d.id).await?;
        let target = self.targets.get(&env.name).cloned().context("target missing")?;
        let step = self.store.start_step(d.id, 8, "rollback", self.now_ms()).await?;
        self.announce(d.id).await?;
        let mut changed: Vec<DeploymentService> = self.store.deployment_services(d.id).await?.into_iter().filter(|s| s.state != "pending" && s.state != "rolled_back").collect();
        changed.reverse();
        let mut problems = Vec::new();
        let mut done = Vec::new();
        // A service that ran nothing before (a first deployment) has nothing to go back to: it
        // stays on what was deployed, and that is said, not counted as a failed rollback.
        let mut left = Vec::new();
        for s in &changed {
            let Some(prev) = s.from_version.clone() else {
                left.push(format!("{}: nothing ran before {}, so it stays on it", s.service, s.to_version));
                continue;
            };
            let Ok(service) = ServiceName::new(&s.service) else { continue };
            let req = RollbackRequest {
                deployment_id: d.id,
                env: d.env.clone(),
                service: service.clone(),
                image: self.image_of(&s.service),
                from_version: s.to_version.clone(),
                to: Running { version: prev.clone(), reference: s.from_ref.clone() },
            };
            match target.rollback(&req).await {
                Ok(_) => {
                    let mut r = s.clone();
                    r.state = "rolled_back".into();
                    self.store.put_deployment_service(&r, self.now_ms()).await?;
                    done.push(format!("{}: {} → {prev}", s.service, s.to_version));
                }
                Err(e) => {
                    let diag = e.diagnostics().map(|d| format!("\n{d}")).unwrap_or_default();
                    problems.push(format!("{}: {e}{diag}", s.service));
                }
            }
        }
        let detail = [done.join("\n"), left.join("\n"), problems.join("\n")].iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>().join("\n");
        let now = self.now_ms();
        if !problems.is_empty() {
            self.store.finish_step(step.id, StepState::Failed, Some(&detail), now).await?;
            let patch = Patch { finished_at: Some(now), error: Some(format!("{reason}; rollback failed: {}", problems.join("; "))), release_lease: true, ..Patch::default() };
            self.store.transition(d.id, &[DeploymentState::RollingBack], DeploymentState::RollbackFailed, &patch, "deploybot", now).await?;
            let why = format!("🚨 *Rollback FAILED* for {} in {}: {}", d.short_id(), d.env, problems.join("; "));
            let note = self.rollback_failed_note(&d, env, &why).await;
            self.thread(&d, "rollback-failed", &note).await?;
            self.ended(d.id).await;
            return self.announce(d.id).await;
        }
        if done.is_empty() {
            // Nothing could be rolled back: the deployment failed, and the next one is the way forward.
            self.store.finish_step(step.id, StepState::Skipped, Some(&detail), now).await?;
            let state = if cancelled { DeploymentState::Cancelled } else { DeploymentState::Failed };
            let patch = Patch { finished_at: Some(now), release_lease: true, release_lock: true, ..Patch::default() };
            self.store.transition(d.id, &[DeploymentState::RollingBack], state, &patch, "deploybot", now).await?;
            let runs = self.what_runs_now(&d, env).await;
            self.thread(&d, "closed", &format!(
                "{} {} ended {state}: nothing ran in {} before it, so there is nothing to roll back.\nWhat runs now:\n{runs}\n{} is released: the next deployment is the way forward (`/deploy <version> {}`).",
                state.emoji(), d.short_id(), d.env, d.env, d.env
            )).await?;
            self.ended(d.id).await;
            return self.announce(d.id).await;
        }
        self.store.finish_step(step.id, StepState::Succeeded, Some(&detail), now).await?;
        self.announce(d.id).await?;
        // The runbook's rollback checklist: health checks and smoke tests passing, team notified.
        let verified = self.verify_step(&d, env, 9, "verify after rollback").await;
        let now = self.now_ms();
        let (state, note) = match (&verified, cancelled) {
            (Ok(()), true) => (DeploymentState::Cancelled, "cancelled; what it changed was rolled back and verified"),
            (Ok(()), false) => (DeploymentState::RolledBack, "rolled back; health checks and smoke tests pass again"),
            (Err(_), _) => (DeploymentState::RollbackFailed, "rolled back, but verification still fails"),
        };
        let release = state != DeploymentState::RollbackFailed;
        let patch = Patch { finished_at: Some(now), release_lease: true, release_lock: release, ..Patch::default() };
        let from = [DeploymentState::RollingBack, DeploymentState::Verifying];
        self.store.transition(d.id, &from, state, &patch, "deploybot", now).await?;
        let text = format!("{} {} {note} ({}).", state.emoji(), d.short_id(), detail.replace('\n', ", "));
        let text = if release { text } else { self.rollback_failed_note(&d, env, &text).await };
        self.thread(&d, "rolled-back", &text).await?;
        self.ended(d.id).await;
        self.announce(d.id).await
    }

    /// What a `rollback_failed` deployment's thread says: why, what runs now per service, and the
    /// two ways out.
    pub(crate) async fn rollback_failed_note(&self, d: &Deployment, env: &Environment, why: &str) -> String {
        let runs = self.what_runs_now(d, env).await;
        format!(
            "{why}\nWhat runs now:\n{runs}\n{env_name} stays locked until a person decides. Two ways out:\n\
             • fix it by hand, then `/resolve {id} \"what was done\"` (an approver of {env_name}) to record it and release {env_name};\n\
             • roll forward: `/deploy <version> {env_name} --hotfix \"reason\"`, which takes over {env_name} and closes {id} as superseded.",
            env_name = env.name,
            id = d.short_id(),
        )
    }

    /// One line per service of the deployment: what the target reports running, or, where it
    /// cannot tell, what this deployment's record says it left there.
    pub(crate) async fn what_runs_now(&self, d: &Deployment, env: &Environment) -> String {
        let records = self.store.deployment_services(d.id).await.unwrap_or_default();
        let target = self.targets.get(&env.name).cloned();
        let mut lines = Vec::new();
        for name in &d.services {
            let record = records.iter().find(|r| &r.service == name);
            let left = record.and_then(|r| match r.state.as_str() {
                "deployed" | "deploying" => Some(format!("{} (as this deployment left it", r.to_version)),
                "rolled_back" => r.from_version.as_ref().map(|v| format!("{v} (rolled back to it")),
                _ => r.from_version.as_ref().map(|v| format!("{v} (untouched")),
            });
            let live = match (&target, ServiceName::new(name)) {
                (Some(t), Ok(service)) => match tokio::time::timeout(Duration::from_secs(15), t.current(&service, &self.image_of(name))).await {
                    Ok(Ok(Some(r))) => Ok(r.version),
                    Ok(Ok(None)) => Err("the target does not report versions".to_string()),
                    Ok(Err(e)) => Err(format!("the target says: {e}")),
                    Err(_) => Err("the target did not answer within 15 s".to_string()),
                },
                _ => Err("no target".to_string()),
            };
            lines.push(match (live, left) {
                (Ok(v), _) => format!("  • {name}: {v}"),
                (Err(why), Some(left)) => format!("  • {name}: {left}; {why})"),
                (Err(why), None) => format!("  • {name}: unknown ({why})"),
            });
        }
        lines.join("\n")
    }

    /// A deployment ended (or its record changed after): the history file is rewritten and the
    /// notifications of its state (and the history commit) are written for the notifier.
    pub(crate) async fn ended(&self, id: i64) {
        self.write_history_file().await;
        self.notify_state(id).await;
    }

    /// Rewrites the optional Markdown history file (the runbook's `docs/deployment/history.md`).
    pub(crate) async fn write_history_file(&self) {
        let Some(path) = self.config.bot.history_file.clone() else { return };
        let entries = match self.store.history(None, 200, self.tz()).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "could not read history for the history file");
                return;
            }
        };
        let text = crate::store::render_history_markdown(&entries);
        let path = std::path::PathBuf::from(path);
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = tokio::fs::create_dir_all(dir).await;
        }
        if let Err(e) = tokio::fs::write(&path, text).await {
            tracing::warn!(error = %e, path = %path.display(), "could not write the history file");
        }
    }
}

/// The first line of the migrations step's detail, from what Flyway reports: `Migrations: applied
/// 2 (1 - create customers, 2 - add invoices)`, or `Migrations: none needed`.
pub(crate) fn applied_migrations(output: &str) -> Option<String> {
    let mut versions = Vec::new();
    let mut count = None;
    for line in output.lines() {
        let line = line.trim();
        if let Some(rest) = line.split_once("Migrating schema ").map(|(_, r)| r) {
            if let Some((_, version)) = rest.split_once(" to version ") {
                versions.push(version.trim().trim_matches('"').to_string());
            }
        } else if let Some(rest) = line.split_once("Successfully applied ").map(|(_, r)| r) {
            count = rest.split_whitespace().next().and_then(|n| n.parse::<u32>().ok());
        } else if line.contains("No migration necessary") {
            count = count.or(Some(0));
        }
    }
    match (count, versions.is_empty()) {
        (Some(0), true) => Some("Migrations: none needed (schema up to date)".into()),
        (_, false) => Some(format!("Migrations: applied {} ({})", count.unwrap_or(versions.len() as u32), versions.join(", "))),
        (Some(n), true) => Some(format!("Migrations: applied {n}")),
        (None, true) => None,
    }
}

/// Whether `phase` has nothing to do in `env` for `d` (not configured there), so that the loop
/// need not read the deployment before it: the next phase that does something reads it and
/// checks the lease and a cancel request. Conservative: when unsure, the phase runs.
fn phase_is_noop(phase: &str, d: &Deployment, env: &Environment) -> bool {
    match phase {
        "backup" => env.backup.is_none(),
        "migrations" => !(d.kind == DeploymentKind::Rollback && d.with_db) && env.migrations.is_none(),
        "verify" => env.verify.health.is_empty() && env.verify.smoke.is_empty() && env.verify.security.is_empty(),
        "monitor" => env.monitor.as_ref().is_none_or(|m| m.rules.is_empty() && m.log_patterns.is_empty()),
        _ => false,
    }
}

pub(crate) fn internal(e: anyhow::Error) -> Stop {
    if crate::store::is_unavailable(&e) {
        return Stop::Paused(e);
    }
    Stop::Failed { step: "internal".into(), reason: format!("{e:#}"), diagnostics: None }
}

fn indent_detail(detail: &str) -> String {
    let d = detail.trim();
    if d.is_empty() {
        String::new()
    } else {
        format!("\n  {}", d.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n  "))
    }
}

#[cfg(test)]
mod tests {
    use super::applied_migrations;

    #[test]
    fn flyway_output_names_the_migrations_it_applied() {
        let output = "Flyway Community Edition 9.22.3 by Redgate\nSuccessfully validated 2 migrations (execution time 00:00.011s)\n\
            Migrating schema \"public\" to version \"1 - create customers\"\nMigrating schema \"public\" to version \"2 - add invoices\"\n\
            Successfully applied 2 migrations to schema \"public\", now at version v2 (execution time 00:00.040s)";
        assert_eq!(applied_migrations(output).as_deref(), Some("Migrations: applied 2 (1 - create customers, 2 - add invoices)"));
        assert_eq!(applied_migrations("Migrating schema public to version 3 - add index\nSuccessfully applied 1 migration").as_deref(), Some("Migrations: applied 1 (3 - add index)"));
        assert_eq!(applied_migrations("Schema \"public\" is up to date. No migration necessary.").as_deref(), Some("Migrations: none needed (schema up to date)"));
        assert_eq!(applied_migrations("done"), None);
    }
}
