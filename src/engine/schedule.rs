//! Scheduled work: the per-environment health probe (`[environments.X.monitor] probe`) and the
//! weekly `/stats` digest (`[alerts] digest_channel`). Scheduled deployments are started by the
//! job runner and approval expiry by the ticker in `app::spawn_loops`.
//!
//! Schedules live in the store (`schedules`), claimed with a lease, so with several replicas each
//! run fires once. At start every replica (re)writes each schedule with its next cron instant
//! after now: a run missed while no replica was up is not caught up.
//!
//! Consecutive probe failures are counted by the replica that runs the probes: with several
//! replicas the count restarts on whichever replica claims the next run, so an alert can take
//! longer than `failures` runs to fire; it never fires early.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::{watch, Mutex};

use super::watch::PROBE_ACTOR;
use super::{drift, render, Engine, Live};
use crate::chat::outbox::Draft;
use crate::config::Environment;
use crate::model::{DeploymentState, Millis};
use crate::monitor::alertmanager::span;
use crate::store::{AlertRecord, Schedule};

const PROBE: &str = "probe";
/// The name of the drift probe's alerts.
const DRIFT_ALERT: &str = "drift";
const DIGEST: &str = "digest";
const LEASE_MS: i64 = 60_000;

#[derive(Debug, Clone, Default)]
struct ProbeState {
    failures: u32,
    first_failure: Millis,
    /// The outbox key of the alert posted for this run of failures.
    alert: Option<String>,
}

/// Runs due schedules; one per replica.
pub struct Scheduler {
    engine: Arc<Engine>,
    probes: Mutex<HashMap<String, ProbeState>>,
}

/// The key of an environment's probe schedule.
pub fn probe_key(env: &str) -> String {
    format!("{PROBE}:{env}")
}

impl Scheduler {
    pub fn new(engine: Arc<Engine>) -> Arc<Scheduler> {
        Arc::new(Scheduler { engine, probes: Mutex::new(HashMap::new()) })
    }

    /// Writes every configured schedule with its next run after now.
    pub async fn register(&self) -> Result<()> {
        let e = &self.engine;
        let now = e.now();
        let mut wanted = Vec::new();
        for env in e.config.environments.values() {
            if let Some(probe) = env.monitor.as_ref().and_then(|m| m.probe.as_ref()) {
                wanted.push((PROBE, probe_key(env.name.as_str()), Some(env.name.to_string()), probe.schedule.clone()));
            }
        }
        if e.config.alerts.digest_channel.is_some() {
            wanted.push((DIGEST, DIGEST.to_string(), None, e.config.alerts.digest_schedule.clone()));
        }
        for (kind, key, env, cron) in wanted {
            let expr = crate::policy::parse_cron(&cron).map_err(anyhow::Error::msg)?;
            let Some(next) = expr.next_after(e.tz(), now) else { continue };
            let schedule = Schedule { id: 0, kind: kind.into(), key, env, deployment_id: None, cron: Some(cron), next_run_at: next.timestamp_millis(), enabled: true };
            e.store.put_schedule(&schedule, now.timestamp_millis()).await?;
        }
        Ok(())
    }

    /// Runs every schedule that is due now; how many ran.
    pub async fn tick(&self) -> Result<usize> {
        let e = &self.engine;
        let mut ran = 0;
        while let Some(s) = e.store.claim_schedule(&e.owner, e.now_ms(), LEASE_MS).await? {
            let next = match self.fire(&s).await {
                Ok(next) => next,
                Err(err) => {
                    tracing::warn!(schedule = %s.key, error = format!("{err:#}"), "a scheduled run failed; it runs again at its next time");
                    self.next_run(&s)
                }
            };
            e.store.finish_schedule(s.id, next, e.now_ms()).await?;
            ran += 1;
        }
        Ok(ran)
    }

    /// Registers the schedules, then runs them until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = self.register().await {
            tracing::error!(error = format!("{e:#}"), "could not write the schedules to the store; probes and the digest will not run");
        }
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = format!("{e:#}"), "could not run the schedules");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => break,
            }
        }
    }

    fn next_run(&self, s: &Schedule) -> Option<Millis> {
        let expr = crate::policy::parse_cron(s.cron.as_deref()?).ok()?;
        expr.next_after(self.engine.tz(), self.engine.now()).map(|t| t.timestamp_millis())
    }

    /// Runs one schedule; its next run, or `None` when it is no longer configured.
    async fn fire(&self, s: &Schedule) -> Result<Option<Millis>> {
        let e = &self.engine;
        match s.kind.as_str() {
            PROBE => {
                let env = s.env.as_deref().and_then(|n| e.config.environments.values().find(|env| env.name.as_str() == n));
                let Some((env, probe)) = env.and_then(|env| Some((env, env.monitor.as_ref()?.probe.as_ref()?))) else {
                    tracing::info!(schedule = %s.key, "the probe is no longer configured; its schedule is disabled");
                    return Ok(None);
                };
                // Drift first: a failed health probe does not keep it from being looked at.
                if probe.drift {
                    self.drift(env).await?;
                }
                self.probe(env, probe.failures, s.cron.as_deref().unwrap_or_default()).await?;
            }
            DIGEST => {
                let Some(channel) = e.config.alerts.digest_channel.clone() else { return Ok(None) };
                self.digest(&channel).await?;
            }
            other => {
                tracing::warn!(schedule = %s.key, kind = other, "unknown schedule kind; disabled");
                return Ok(None);
            }
        }
        Ok(self.next_run(s))
    }

    /// One health probe of `env`: alerts after `threshold` consecutive failures, rolls back a
    /// deployment still in its watch window, and edits the alert when health returns.
    #[tracing::instrument(skip_all, fields(env = %env.name))]
    async fn probe(&self, env: &Environment, threshold: u32, schedule: &str) -> Result<()> {
        let e = &self.engine;
        let name = env.name.to_string();
        let version = e.store.service_versions(&name).await?.first().map(|v| v.version.clone()).unwrap_or_default();
        let vars = crate::verify::Vars::new(version, name.clone(), format!("probe-{}", e.now_ms()));
        let report = crate::verify::run_health_only(&env.verify, &vars, &e.http).await;
        let now = e.now_ms();
        let mut probes = self.probes.lock().await;
        let state = probes.entry(name.clone()).or_default();
        if report.ok {
            if let Some(key) = state.alert.take() {
                let text = format!("✅ Health probe: {name} is healthy again after {} failed probes ({}).", state.failures, span(now - state.first_failure));
                self.probe_alert(env, &key, "resolved", state.first_failure, None, &text).await?;
            }
            *state = ProbeState::default();
            return Ok(());
        }
        if state.failures == 0 {
            state.first_failure = now;
        }
        state.failures += 1;
        tracing::warn!(failures = state.failures, threshold, summary = %report.summary(), "the scheduled health probe failed");
        if state.failures < threshold {
            return Ok(());
        }
        let latest = e.latest_deployment(&name).await?;
        let mut text = format!("🩺 Health probe: {name} failed {} consecutive probes (`{schedule}`; alert after {threshold}): {}", state.failures, report.summary());
        match &latest {
            Some(d) if d.state == DeploymentState::Monitoring => {
                if state.alert.is_none() {
                    e.store.request_cancel(d.id, PROBE_ACTOR, now).await?;
                }
                text.push_str(&format!("\n{} {} by {} is still in its watch window: rolling it back.", d.short_id(), d.version, render::mention(&d.requested_by)));
            }
            Some(d) => text.push_str(&format!(
                "\nLatest deployment: {} {} by {}, {} ago. React with :{}: to roll {name} back.",
                d.short_id(),
                d.version,
                render::mention(&d.requested_by),
                span(now - d.finished_at.or(d.started_at).unwrap_or(d.created_at)),
                e.config.reactions.rollback
            )),
            None => text.push_str(&format!("\nNo deployment of {name} is recorded.")),
        }
        let key = state.alert.get_or_insert_with(|| format!("probe:{name}:{now}")).clone();
        self.probe_alert(env, &key, "firing", state.first_failure, latest.map(|d| d.id), &text).await
    }

    /// The drift probe (`probe = { …, drift = true }`): asks each service's target what runs and
    /// alerts while that differs from what deploybot recorded; the alert is edited as the drift
    /// changes and resolved once they agree. Skipped while a deployment is in flight there (what
    /// runs is meant to change then), and a service whose target cannot be asked neither raises
    /// nor resolves anything. The open alert is found in the store, so whichever replica runs the
    /// next probe carries it on.
    #[tracing::instrument(skip_all, fields(env = %env.name))]
    async fn drift(&self, env: &Environment) -> Result<()> {
        let e = &self.engine;
        let name = env.name.to_string();
        let in_flight: Vec<DeploymentState> = DeploymentState::ALL.into_iter().filter(|s| s.is_in_flight()).collect();
        if !e.store.deployments(Some(&name), &in_flight, 1).await?.is_empty() {
            return Ok(());
        }
        let recorded = e.store.service_versions(&name).await?;
        let live = e.live_versions(env).await;
        let mut drifted = Vec::new();
        let mut unknown = Vec::new();
        for (service, live) in env.services.iter().zip(&live) {
            let recorded = recorded.iter().find(|r| r.service == service.as_str());
            match live {
                Live::Unknown(why) => unknown.push(format!("{service} ({why})")),
                _ => {
                    if let Some(what) = drift(env.target.kind(), recorded.map(|r| r.version.as_str()), live) {
                        drifted.push(format!("{service}: {what}"));
                    }
                }
            }
        }
        let open = e.store.firing_alert(&name, DRIFT_ALERT).await?;
        let now = e.now_ms();
        if drifted.is_empty() {
            if let Some((key, since)) = open.filter(|_| unknown.is_empty()) {
                let text = format!("✅ Drift in {name} is gone: every service runs what deploybot recorded (drift seen for {}).", span(now - since));
                self.alert(env, &key, DRIFT_ALERT, "resolved", since, None, &text).await?;
            } else if !unknown.is_empty() {
                tracing::info!(services = unknown.join(", "), "the drift probe could not ask the target what runs");
            }
            return Ok(());
        }
        tracing::warn!(drift = drifted.join("; "), "what runs differs from what deploybot recorded");
        let latest = e.latest_deployment(&name).await?;
        let mut text = format!("🔀 Drift in {name}: what runs differs from what deploybot recorded.\n  {}", drifted.join("\n  "));
        if !unknown.is_empty() {
            text.push_str(&format!("\n  Not asked: {}.", unknown.join(", ")));
        }
        match &latest {
            Some(d) => text.push_str(&format!(
                "\nSomeone changed it outside deploybot since {} {} by {}. `/deploy {} {name}` puts back what was recorded; `/status {name}` shows it again.",
                d.short_id(),
                d.version,
                render::mention(&d.requested_by),
                d.version
            )),
            None => text.push_str(&format!("\nNo deployment of {name} is recorded: deploy through deploybot to record what runs.")),
        }
        let (key, since) = open.unwrap_or_else(|| (format!("drift:{name}:{now}"), now));
        self.alert(env, &key, DRIFT_ALERT, "firing", since, latest.map(|d| d.id), &text).await
    }

    async fn probe_alert(&self, env: &Environment, key: &str, status: &str, starts_at: Millis, deployment_id: Option<i64>, text: &str) -> Result<()> {
        self.alert(env, key, "health probe", status, starts_at, deployment_id, text).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn alert(&self, env: &Environment, key: &str, name: &str, status: &str, starts_at: Millis, deployment_id: Option<i64>, text: &str) -> Result<()> {
        let e = &self.engine;
        let now = e.now_ms();
        let record = AlertRecord {
            fingerprint: key.to_string(),
            env: Some(env.name.to_string()),
            deployment_id,
            name: name.into(),
            status: status.into(),
            source: PROBE.into(),
            labels: serde_json::json!({ "env": env.name.as_str() }).to_string(),
            annotations: serde_json::json!({ "text": text }).to_string(),
            starts_at,
            ends_at: (status == "resolved").then_some(now),
        };
        let (id, _) = e.store.upsert_alert(&record, now).await?;
        e.outbox
            .send(Draft { key, channel: &env.base.channel, thread_key: None, deployment_id, alert_id: Some(id), purpose: "alert", text })
            .await
    }

    /// The weekly digest: `/stats` over the last 7 days, to the configured channel.
    async fn digest(&self, channel: &str) -> Result<()> {
        let e = &self.engine;
        let now = e.now();
        let stats = e.store.stats(None, (now - chrono::Duration::days(7)).timestamp_millis(), 7).await?;
        let text = format!("📊 Weekly deployment digest\n{}", stats.render("all environments"));
        e.outbox
            .send(Draft { key: &format!("digest:{}", now.timestamp_millis()), channel, thread_key: None, deployment_id: None, alert_id: None, purpose: "digest", text: &text })
            .await
    }
}
