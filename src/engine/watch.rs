//! Pipeline step 7: the post-deploy watch window (PRODUCT.md section 7).
//!
//! The rules are evaluated every `interval` for `watch` by [`crate::monitor::watch::run`]; this
//! file supplies the readings (Prometheus instant queries, the health checks) and turns findings
//! into messages: an alert threaded under the deployment's message (purpose `alert`, so the
//! rollback emoji works on it), a note for every rule that could not be evaluated, and a summary.
//! A `rollback` rule that fires fails the step, and the pipeline rolls back.

use async_trait::async_trait;

use super::pipeline::{internal, Stop};
use super::{render, Engine};
use crate::chat::outbox::Draft;
use crate::config::Environment;
use crate::model::{Deployment, DeploymentKind, DeploymentState, Millis, StepState};
use crate::monitor::alertmanager::span;
use crate::monitor::prometheus::Prometheus;
use crate::monitor::rules::{RuleAction, RuleConfig};
use crate::monitor::watch::{self as w, format_value, threshold_text, Evaluator, Finding, Plan, Reading};
use crate::store::{AlertRecord, Patch};

/// Who asks a watching deployment to roll back when the health probe fails (see schedule.rs).
pub(crate) const PROBE_ACTOR: &str = "deploybot health probe";

enum WatchStop {
    Rollback { reason: String, diagnostics: Option<String> },
    Cancelled { by: String },
    LostLease,
    Internal(anyhow::Error),
}

impl Engine {
    /// The `monitor` phase of a deployment.
    pub(crate) async fn watch_phase(&self, d: &Deployment, env: &Environment, seq: i64) -> Result<(), Stop> {
        let Some(m) = env.monitor.as_ref() else { return Ok(()) };
        if m.rules.is_empty() && m.log_patterns.is_empty() {
            return Ok(());
        }
        let skip = if !env.step_enabled("monitor") {
            Some("disabled in this environment (skip_steps)")
        } else if d.kind == DeploymentKind::Rollback {
            Some("a rollback is verified, not watched; the health probe keeps watching the environment")
        } else {
            None
        };
        if let Some(why) = skip {
            self.store.skip_step(d.id, seq, "monitor", why, self.now_ms()).await.map_err(internal)?;
            return self.announce(d.id).await.map_err(internal);
        }
        let parse = |s: &str| crate::config::parse_duration(s).map_err(|e| internal(anyhow::anyhow!(e)));
        let plan = Plan { watch: parse(&m.watch)?, interval: parse(&m.interval)? };
        let executing = [DeploymentState::Running, DeploymentState::Verifying, DeploymentState::Monitoring];
        self.store.transition(d.id, &executing, DeploymentState::Monitoring, &Patch::default(), "deploybot", self.now_ms()).await.map_err(internal)?;
        let step = self.begin_step(d, seq, "monitor").await.map_err(internal)?;
        let all_rules: Vec<RuleConfig> = m.rules.iter().cloned().chain(m.log_patterns.iter().map(|p| p.rule())).collect();
        let rules: Vec<String> = all_rules.iter().map(|r| format!("{} {}", r.name, threshold_text(r))).collect();
        let watch_text = span(plan.watch.as_millis() as i64);
        self.thread(d, &format!("watch-start:{}", step.attempt), &format!("👀 Watching {} for {watch_text} after {} {}: {}.", d.env, d.short_id(), d.version, rules.join(", ")))
            .await
            .map_err(internal)?;

        let source = WatchSource {
            engine: self,
            env,
            d,
            prometheus: m.prometheus_url.as_deref().map(|u| Prometheus::from_config(u, m.prometheus_auth.as_ref(), &self.config.vars, self.http.clone())),
            logs: (!m.log_patterns.is_empty()).then(|| std::sync::Mutex::new(LogRound { since: self.now_ms(), lines: Ok(Vec::new()) })),
        };
        let sink = WatchSink { engine: self, env, d, started: self.now_ms() };
        let mut evaluator = Evaluator::new(all_rules);
        // Type-erased: the job runner's future holds every step's, and this one is deep.
        let watching: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), WatchStop>> + Send + '_>> = Box::pin(w::run(plan, &mut evaluator, &source, &sink));
        let outcome = watching.await;
        match outcome {
            Ok(()) => {
                let text = if evaluator.clean() {
                    format!("{watch_text} clean: {}", evaluator.summary())
                } else {
                    format!("{watch_text} watched, not clean: {}", evaluator.summary())
                };
                self.end_step(d, &step, StepState::Succeeded, &text).await.map_err(internal)?;
                let mark = if evaluator.clean() { "✅" } else { "⚠️" };
                self.thread(d, &format!("watch-summary:{}", step.attempt), &format!("{mark} {} watch: {text}.", d.short_id())).await.map_err(internal)?;
                Ok(())
            }
            Err(WatchStop::Rollback { reason, diagnostics }) => {
                self.end_step(d, &step, StepState::Failed, &format!("{reason}; {}", evaluator.summary())).await.map_err(internal)?;
                Err(Stop::Failed { step: "monitor".into(), reason, diagnostics })
            }
            Err(WatchStop::Cancelled { by }) => {
                self.end_step(d, &step, StepState::Failed, &format!("cancelled by {by}")).await.map_err(internal)?;
                Err(Stop::Cancelled { by })
            }
            // `run_from` sees the lost lease before the next step and leaves the job to its owner.
            Err(WatchStop::LostLease) => Ok(()),
            Err(WatchStop::Internal(e)) => Err(internal(e)),
        }
    }
}

struct WatchSource<'a> {
    engine: &'a Engine,
    env: &'a Environment,
    d: &'a Deployment,
    prometheus: Option<Prometheus>,
    /// With log patterns: the current interval's log lines of the deployment's services.
    logs: Option<std::sync::Mutex<LogRound>>,
}

/// The log lines of one interval of the watch, read once for all the patterns.
struct LogRound {
    /// Where the next interval starts.
    since: Millis,
    /// `[service] line`s, or why they could not be read.
    lines: Result<Vec<String>, String>,
}

/// Sample lines shown with a log-pattern alert.
const LOG_SAMPLES: usize = 5;

#[async_trait]
impl w::Source for WatchSource<'_> {
    async fn round(&self) {
        let Some(logs) = &self.logs else { return };
        let since = logs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).since;
        let until = self.engine.now_ms();
        let mut lines = Vec::new();
        let mut failures = Vec::new();
        for service in &self.d.services {
            match self.engine.read_logs(self.env, service, since, crate::targets::LOG_FETCH_MAX_LINES).await {
                Ok(read) => lines.extend(read.into_iter().map(|l| format!("[{service}] {l}"))),
                Err(why) => failures.push(format!("{service}: {why}")),
            }
        }
        let mut round = logs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        round.since = until;
        round.lines = if failures.is_empty() { Ok(lines) } else { Err(format!("the logs could not be read ({})", failures.join("; "))) };
    }

    async fn read(&self, rule: &RuleConfig) -> Reading {
        if let Some(pattern) = &rule.log_pattern {
            let Some(logs) = &self.logs else { return Reading::Unavailable("no log round was read".into()) };
            let regex = match regex::Regex::new(pattern) {
                Ok(r) => r,
                Err(e) => return Reading::Unavailable(format!("\"{pattern}\" is not a valid regular expression: {e}")),
            };
            let round = logs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let lines = match &round.lines {
                Ok(lines) => lines,
                Err(why) => return Reading::Unavailable(why.clone()),
            };
            let matching: Vec<&String> = lines.iter().filter(|l| regex.is_match(l)).collect();
            let detail = (!matching.is_empty()).then(|| {
                let samples: Vec<String> = matching.iter().take(LOG_SAMPLES).map(|l| super::logs::cut(l, super::logs::SHOWN_LINE_CHARS)).collect();
                format!("Sample lines ({} of {}):\n```\n{}\n```", samples.len(), matching.len(), samples.join("\n"))
            });
            return Reading::Value { value: matching.len() as f64, detail };
        }
        if rule.health {
            if self.env.verify.health.is_empty() {
                return Reading::Unavailable("no health checks are configured for this environment".into());
            }
            let vars = crate::verify::Vars::new(self.d.version.clone(), self.d.env.clone(), format!("{}-watch", self.d.id));
            let report = crate::verify::run_health_only(&self.env.verify, &vars, &self.engine.http).await;
            return if report.ok { Reading::value(0.0) } else { Reading::Value { value: 1.0, detail: Some(report.summary()) } };
        }
        let (Some(prometheus), Some(query)) = (&self.prometheus, &rule.query) else {
            return Reading::Unavailable("prometheus_url is not set".into());
        };
        match prometheus.query(query).await {
            Ok(value) => Reading::value(value),
            Err(e) => Reading::Unavailable(e.to_string()),
        }
    }
}

struct WatchSink<'a> {
    engine: &'a Engine,
    env: &'a Environment,
    d: &'a Deployment,
    started: Millis,
}

#[async_trait]
impl w::Sink for WatchSink<'_> {
    type Stop = WatchStop;

    async fn finding(&self, evaluator: &Evaluator, finding: &Finding) -> Result<(), WatchStop> {
        let (e, d) = (self.engine, self.d);
        match finding {
            Finding::Unavailable { rule, reason } => {
                let rule = &evaluator.rules()[*rule];
                let text = format!("⚠️ {} watch: *{}* could not be evaluated: {reason}. Counted as a failed evaluation, not as healthy.", d.short_id(), rule.name);
                e.thread(d, &format!("watch-unavailable:{}:{}", rule.name, e.now_ms()), &text).await.map_err(WatchStop::Internal)
            }
            Finding::Fired { rule, value, consecutive, action, detail } => {
                let rule = &evaluator.rules()[*rule];
                self.post_alert(rule, *value, *consecutive, detail.as_deref()).await.map_err(WatchStop::Internal)?;
                match action {
                    RuleAction::Alert => Ok(()),
                    RuleAction::Rollback => {
                        let shown = if rule.health {
                            format!("{consecutive} consecutive failed health checks")
                        } else if rule.log_pattern.is_some() {
                            format!("{} matching {} in one interval", format_value(rule.unit.as_deref(), *value), rule.name)
                        } else {
                            format!("{} at {}", rule.name, format_value(rule.unit.as_deref(), *value))
                        };
                        Err(WatchStop::Rollback { reason: format!("{shown} (threshold {}, rule action rollback)", threshold_text(rule)), diagnostics: detail.clone() })
                    }
                }
            }
        }
    }

    async fn keep_going(&self) -> Result<(), WatchStop> {
        let d = self.engine.store.deployment(self.d.id).await.map_err(WatchStop::Internal)?.ok_or_else(|| WatchStop::Internal(anyhow::anyhow!("deployment vanished")))?;
        if d.lease_owner.as_deref() != Some(&self.engine.owner) {
            return Err(WatchStop::LostLease);
        }
        match d.cancel_requested_by {
            Some(by) if by == PROBE_ACTOR => Err(WatchStop::Rollback { reason: "the scheduled health probe failed repeatedly during the watch".into(), diagnostics: None }),
            Some(by) => Err(WatchStop::Cancelled { by }),
            None => Ok(()),
        }
    }
}

impl WatchSink<'_> {
    /// Posts a breach of `rule` as an alert in the deployment's thread; returns the alert's id.
    async fn post_alert(&self, rule: &RuleConfig, value: f64, consecutive: u32, detail: Option<&str>) -> anyhow::Result<i64> {
        let (e, d, env, since) = (self.engine, self.d, self.env, self.started);
        let now = e.now_ms();
        let shown = if rule.health { format!("{consecutive} consecutive failures") } else { format_value(rule.unit.as_deref(), value) };
        let record = AlertRecord {
            fingerprint: format!("watch:{}:{}:{now}", d.id, rule.name),
            env: Some(d.env.clone()),
            deployment_id: Some(d.id),
            name: rule.name.clone(),
            status: "firing".into(),
            source: "watch".into(),
            labels: serde_json::json!({ "rule": rule.name, "env": d.env }).to_string(),
            annotations: serde_json::json!({ "value": shown, "threshold": threshold_text(rule), "detail": detail }).to_string(),
            starts_at: now,
            ends_at: None,
        };
        let (id, _) = e.store.upsert_alert(&record, now).await?;
        let mut text = format!(
            "🚨 *{}* on {}: {shown} (threshold {}), {} into the watch of {} {} by {}.",
            rule.name,
            env.name,
            threshold_text(rule),
            span(now - since),
            d.short_id(),
            d.version,
            render::mention(&d.requested_by)
        );
        if let Some(hint) = &rule.hint {
            text.push_str(&format!(" Runbook: {hint}."));
        }
        if let Some(detail) = detail {
            text.push_str(&format!("\n{detail}"));
        }
        match rule.action {
            RuleAction::Rollback => text.push_str(&format!("\n⏪ Rule action is rollback: rolling {} back automatically.", env.name)),
            RuleAction::Alert => text.push_str(&format!("\nReact with :{}: to roll {} back.", e.config.reactions.rollback, env.name)),
        }
        let channel = e.channel_of(d);
        e.outbox
            .send(Draft {
                key: &format!("deployment:{}:alert:{id}", d.id),
                channel: &channel,
                thread_key: Some(&crate::store::progress_key(d.id)),
                deployment_id: Some(d.id),
                alert_id: Some(id),
                purpose: "alert",
                text: &text,
            })
            .await?;
        tracing::warn!(deployment = d.id, rule = %rule.name, value = %shown, "a monitoring rule fired during the watch");
        Ok(id)
    }
}
