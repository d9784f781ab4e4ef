//! The bot's own metrics, served as Prometheus text on `GET /metrics`.
//!
//! Counters live in one process-wide registry (the engine increments them in one line where
//! things happen); what the store already knows (deployments by outcome, the queue) is read
//! from it at scrape time, so those numbers agree across replicas and survive restarts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;

use crate::chat::{ChatError, ChatPlatform, OutMessage};

/// Upper bounds (seconds) of the step-duration histogram.
const STEP_BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; STEP_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
pub struct Registry {
    commands: Mutex<BTreeMap<String, u64>>,
    steps: Mutex<BTreeMap<(String, String), Histogram>>,
    chat_calls: AtomicU64,
    chat_errors: Mutex<BTreeMap<&'static str, u64>>,
    alerts_received: AtomicU64,
    /// The last chat call's outcome: `None` when it worked.
    chat_failing: Mutex<Option<String>>,
}

/// The process-wide registry.
pub fn global() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    /// A slash command arrived (`deploy`, `rollback`, …).
    pub fn command(&self, name: &str) {
        let name = name.trim_start_matches('/').to_ascii_lowercase();
        *lock(&self.commands).entry(name).or_default() += 1;
    }

    /// A pipeline step ended after `millis`.
    pub fn step(&self, name: &str, outcome: &str, millis: i64) {
        let seconds = millis.max(0) as f64 / 1000.0;
        let mut steps = lock(&self.steps);
        let h = steps.entry((name.to_string(), outcome.to_string())).or_default();
        h.count += 1;
        h.sum += seconds;
        if let Some(i) = STEP_BUCKETS.iter().position(|b| seconds <= *b) {
            h.buckets[i] += 1;
        }
    }

    pub fn alert_received(&self) {
        self.alerts_received.fetch_add(1, Ordering::Relaxed);
    }

    fn chat_result<T>(&self, result: &Result<T, ChatError>) {
        self.chat_calls.fetch_add(1, Ordering::Relaxed);
        let mut failing = lock(&self.chat_failing);
        match result {
            Ok(_) => *failing = None,
            Err(e) => {
                let kind = match e {
                    ChatError::RateLimited { .. } => "rate_limited",
                    ChatError::Unavailable(_) => "unavailable",
                    ChatError::Refused(_) => "refused",
                };
                *lock(&self.chat_errors).entry(kind).or_default() += 1;
                // Being rate limited is being connected.
                if !matches!(e, ChatError::RateLimited { .. }) {
                    *failing = Some(e.to_string());
                }
            }
        }
    }

    /// Why the chat platform is not reachable, judged by the last call; `None` when it is.
    pub fn chat_failing(&self) -> Option<String> {
        lock(&self.chat_failing).clone()
    }

    /// The counters, in Prometheus text; `gauges` are the values read from the store.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP deploybot_commands_received_total Slash commands received, by command.\n# TYPE deploybot_commands_received_total counter\n");
        for (name, n) in lock(&self.commands).iter() {
            let _ = writeln!(out, "deploybot_commands_received_total{{command=\"{}\"}} {n}", label(name));
        }
        out.push_str("# HELP deploybot_deployments Deployments recorded in the store, by outcome (state).\n# TYPE deploybot_deployments gauge\n");
        for (state, n) in &gauges.deployments {
            let _ = writeln!(out, "deploybot_deployments{{outcome=\"{}\"}} {n}", label(state));
        }
        out.push_str("# HELP deploybot_step_duration_seconds Duration of pipeline steps, by step and outcome.\n# TYPE deploybot_step_duration_seconds histogram\n");
        for ((step, outcome), h) in lock(&self.steps).iter() {
            let labels = format!("step=\"{}\",outcome=\"{}\"", label(step), label(outcome));
            let mut cumulative = 0;
            for (bound, n) in STEP_BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(out, "deploybot_step_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
            }
            let _ = writeln!(out, "deploybot_step_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "deploybot_step_duration_seconds_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(out, "deploybot_step_duration_seconds_count{{{labels}}} {}", h.count);
        }
        out.push_str("# HELP deploybot_chat_api_calls_total Calls to the chat platform's API.\n# TYPE deploybot_chat_api_calls_total counter\n");
        let _ = writeln!(out, "deploybot_chat_api_calls_total {}", self.chat_calls.load(Ordering::Relaxed));
        out.push_str("# HELP deploybot_chat_api_errors_total Failed calls to the chat platform's API, by kind.\n# TYPE deploybot_chat_api_errors_total counter\n");
        let errors = lock(&self.chat_errors).clone();
        for kind in ["rate_limited", "unavailable", "refused"] {
            let _ = writeln!(out, "deploybot_chat_api_errors_total{{kind=\"{kind}\"}} {}", errors.get(kind).copied().unwrap_or(0));
        }
        out.push_str("# HELP deploybot_alerts_received_total Alerts received from Alertmanager.\n# TYPE deploybot_alerts_received_total counter\n");
        let _ = writeln!(out, "deploybot_alerts_received_total {}", self.alerts_received.load(Ordering::Relaxed));
        out.push_str("# HELP deploybot_queue_depth Deployments waiting to run, by state.\n# TYPE deploybot_queue_depth gauge\n");
        for (state, n) in &gauges.queue {
            let _ = writeln!(out, "deploybot_queue_depth{{state=\"{}\"}} {n}", label(state));
        }
        out.push_str("# HELP deploybot_outbox_pending Chat messages written but not delivered yet.\n# TYPE deploybot_outbox_pending gauge\n");
        let _ = writeln!(out, "deploybot_outbox_pending {}", gauges.outbox_pending);
        out
    }
}

/// Values read from the store at scrape time.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    pub deployments: Vec<(String, usize)>,
    pub queue: Vec<(String, usize)>,
    pub outbox_pending: usize,
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A chat platform whose every call is counted (and whose last outcome `/healthz` reports).
pub struct MeteredChat {
    inner: Arc<dyn ChatPlatform>,
}

impl MeteredChat {
    pub fn wrap(inner: Arc<dyn ChatPlatform>) -> Arc<dyn ChatPlatform> {
        Arc::new(MeteredChat { inner })
    }
}

#[async_trait]
impl ChatPlatform for MeteredChat {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn post(&self, key: &str, channel: &str, msg: &OutMessage) -> Result<String, ChatError> {
        let r = self.inner.post(key, channel, msg).await;
        global().chat_result(&r);
        r
    }
    async fn edit(&self, channel: &str, id: &str, msg: &OutMessage) -> Result<(), ChatError> {
        let r = self.inner.edit(channel, id, msg).await;
        global().chat_result(&r);
        r
    }
    async fn reply(&self, key: &str, channel: &str, thread: &str, msg: &OutMessage) -> Result<String, ChatError> {
        let r = self.inner.reply(key, channel, thread, msg).await;
        global().chat_result(&r);
        r
    }
    async fn find_post(&self, key: &str, channel: &str) -> Result<Option<String>, ChatError> {
        let r = self.inner.find_post(key, channel).await;
        global().chat_result(&r);
        r
    }
    async fn ephemeral(&self, channel: &str, user: &str, msg: &OutMessage) -> Result<(), ChatError> {
        let r = self.inner.ephemeral(channel, user, msg).await;
        global().chat_result(&r);
        r
    }
    async fn private_reply(&self, key: &str, channel: &str, user: &str, msg: &OutMessage) -> Result<(), ChatError> {
        let r = self.inner.private_reply(key, channel, user, msg).await;
        global().chat_result(&r);
        r
    }
    async fn decorate(&self, id: &str, purpose: &str, msg: &OutMessage) {
        self.inner.decorate(id, purpose, msg).await
    }
    async fn in_group(&self, user: &str, group: &str) -> Result<bool, ChatError> {
        let r = self.inner.in_group(user, group).await;
        global().chat_result(&r);
        r
    }
    async fn user_name(&self, user: &str) -> Option<String> {
        self.inner.user_name(user).await
    }
    fn edit_interval(&self) -> std::time::Duration {
        self.inner.edit_interval()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_has_every_family_with_help_and_type() {
        let r = Registry::default();
        r.command("/deploy");
        r.command("deploy");
        r.step("verify", "succeeded", 1200);
        r.chat_result::<()>(&Err(ChatError::Unavailable("down".into())));
        let text = r.render(&Gauges { deployments: vec![("succeeded".into(), 3)], queue: vec![("queued".into(), 1)], outbox_pending: 2 });
        for line in [
            "deploybot_commands_received_total{command=\"deploy\"} 2",
            "deploybot_deployments{outcome=\"succeeded\"} 3",
            "deploybot_step_duration_seconds_bucket{step=\"verify\",outcome=\"succeeded\",le=\"1\"} 0",
            "deploybot_step_duration_seconds_bucket{step=\"verify\",outcome=\"succeeded\",le=\"5\"} 1",
            "deploybot_step_duration_seconds_count{step=\"verify\",outcome=\"succeeded\"} 1",
            "deploybot_chat_api_errors_total{kind=\"unavailable\"} 1",
            "deploybot_queue_depth{state=\"queued\"} 1",
            "deploybot_outbox_pending 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert_eq!(r.chat_failing().as_deref(), Some("the chat platform is unavailable: down"));
        r.chat_result(&Ok(()));
        assert_eq!(r.chat_failing(), None);
    }
}
