//! The post-deploy watch, without I/O: readings in, findings out, and the timed loop that asks
//! a [`Source`] for readings every interval and hands findings to a [`Sink`].
//!
//! A rule *fires* when `for` consecutive readings breach its threshold; it fires once per
//! episode and re-arms when a reading is back on the right side. A reading that could not be
//! taken (no data, Prometheus unreachable) is a failed evaluation: it is reported, counted in
//! the summary, and never counts as healthy.

use std::time::Duration;

use async_trait::async_trait;

use super::rules::{RuleAction, RuleConfig};

/// One evaluation of one rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// The value, and what explains it when the rule is a health rule (the failing check).
    Value { value: f64, detail: Option<String> },
    /// Why there is no value.
    Unavailable(String),
}

impl Reading {
    pub fn value(value: f64) -> Reading {
        Reading::Value { value, detail: None }
    }
}

/// Something the engine must tell the channel about.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// `for` consecutive breaches.
    Fired { rule: usize, value: f64, consecutive: u32, action: RuleAction, detail: Option<String> },
    /// The first failed evaluation of a rule since its last good one.
    Unavailable { rule: usize, reason: String },
}

#[derive(Debug, Clone, Default, PartialEq)]
struct RuleState {
    consecutive: u32,
    fired: bool,
    unavailable: bool,
    max: Option<f64>,
    evaluations: u32,
    failed: u32,
    alerts: u32,
}

/// The state of every rule of one watch.
#[derive(Debug, Clone)]
pub struct Evaluator {
    rules: Vec<RuleConfig>,
    states: Vec<RuleState>,
}

/// Whether `value` is on the wrong side of the rule's threshold. A health rule's value is 1 when
/// the health checks failed and 0 when they passed.
pub fn breaches(rule: &RuleConfig, value: f64) -> bool {
    if rule.health {
        return value > 0.0;
    }
    match (rule.above, rule.below) {
        (Some(above), _) => value > above,
        (None, Some(below)) => value < below,
        (None, None) => false,
    }
}

/// A value shown in a rule's unit: `percent` (0.012 → 1.2%), `ms`, `seconds` or `number`.
pub fn format_value(unit: Option<&str>, value: f64) -> String {
    if !value.is_finite() {
        return if value > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    match unit {
        Some("percent") => format!("{}%", trim(value * 100.0, 2)),
        Some("ms") if value.abs() >= 10.0 => format!("{} ms", value.round()),
        Some("ms") => format!("{} ms", trim(value, 1)),
        Some("seconds") => format!("{} s", trim(value, 2)),
        Some("lines") => format!("{} line{}", trim(value, 0), if value == 1.0 { "" } else { "s" }),
        _ => trim(value, 2),
    }
}

fn trim(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text };
    if text == "-0" {
        "0".into()
    } else {
        text
    }
}

/// "> 1%", "< 5 ms", "> 2 consecutive failures".
pub fn threshold_text(rule: &RuleConfig) -> String {
    if rule.health {
        return format!("> {} consecutive failures", rule.for_evaluations.saturating_sub(1));
    }
    let unit = rule.unit.as_deref();
    match (rule.above, rule.below) {
        (Some(a), _) => format!("> {}", format_value(unit, a)),
        (None, Some(b)) => format!("< {}", format_value(unit, b)),
        (None, None) => "no threshold".into(),
    }
}

impl Evaluator {
    pub fn new(rules: Vec<RuleConfig>) -> Evaluator {
        let states = vec![RuleState::default(); rules.len()];
        Evaluator { rules, states }
    }

    pub fn rules(&self) -> &[RuleConfig] {
        &self.rules
    }

    /// Takes one reading of rule `index`.
    pub fn observe(&mut self, index: usize, reading: Reading) -> Option<Finding> {
        let rule = &self.rules[index];
        let state = &mut self.states[index];
        state.evaluations += 1;
        match reading {
            Reading::Unavailable(reason) => {
                state.failed += 1;
                // The breach streak needs consecutive readings: a gap breaks it.
                state.consecutive = 0;
                if state.unavailable {
                    return None;
                }
                state.unavailable = true;
                Some(Finding::Unavailable { rule: index, reason })
            }
            Reading::Value { value, detail } => {
                state.unavailable = false;
                state.max = Some(state.max.map_or(value, |m| m.max(value)));
                if !breaches(rule, value) {
                    state.consecutive = 0;
                    state.fired = false;
                    return None;
                }
                state.consecutive += 1;
                if state.fired || state.consecutive < rule.for_evaluations {
                    return None;
                }
                state.fired = true;
                state.alerts += 1;
                Some(Finding::Fired { rule: index, value, consecutive: state.consecutive, action: rule.action, detail })
            }
        }
    }

    /// Whether any rule fired or could not be evaluated at some point.
    pub fn clean(&self) -> bool {
        self.states.iter().all(|s| s.alerts == 0 && s.failed == 0)
    }

    /// "error rate max 0.2%, P95 max 340 ms, failed health checks: none"; failed evaluations and
    /// alerts are named.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .rules
            .iter()
            .zip(&self.states)
            .map(|(rule, s)| {
                let mut text = if rule.health {
                    match s.max {
                        Some(m) if m > 0.0 => format!("{}: some failed", rule.name),
                        Some(_) => format!("{}: none", rule.name),
                        None => format!("{}: not evaluated", rule.name),
                    }
                } else {
                    match s.max {
                        Some(m) => format!("{} max {}", rule.name, format_value(rule.unit.as_deref(), m)),
                        None => format!("{}: no data", rule.name),
                    }
                };
                if s.failed > 0 {
                    text.push_str(&format!(" ({}/{} evaluations failed)", s.failed, s.evaluations));
                }
                if s.alerts > 0 {
                    text.push_str(&format!(" — alerted {}×", s.alerts));
                }
                text
            })
            .collect();
        parts.join(", ")
    }
}

/// Where readings come from.
#[async_trait]
pub trait Source: Send + Sync {
    /// Called at the start of every round, before its readings (the log watch reads the
    /// interval's logs once here, for all its patterns).
    async fn round(&self) {}
    async fn read(&self, rule: &RuleConfig) -> Reading;
}

/// Who hears about findings; `Err` stops the watch (a rollback rule fired, the job was cancelled).
#[async_trait]
pub trait Sink: Send + Sync {
    type Stop: Send;
    async fn finding(&self, evaluator: &Evaluator, finding: &Finding) -> Result<(), Self::Stop>;
    /// Asked before every round of evaluations.
    async fn keep_going(&self) -> Result<(), Self::Stop>;
}

/// How long, and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub watch: Duration,
    pub interval: Duration,
}

impl Plan {
    /// Rounds of evaluation: at interval, 2×interval, … up to the end of the watch (at least one),
    /// so the new version has had one interval of traffic when it is first judged.
    pub fn rounds(&self) -> u32 {
        if self.interval.is_zero() {
            return 1;
        }
        let n = self.watch.as_millis() / self.interval.as_millis();
        n.clamp(1, u32::MAX as u128) as u32
    }
}

/// Runs a watch to its end (or until the sink stops it) on tokio's clock, so a test under
/// `tokio::time::pause()` runs a 15-minute watch in no time.
pub async fn run<S: Source, K: Sink>(plan: Plan, evaluator: &mut Evaluator, source: &S, sink: &K) -> Result<(), K::Stop> {
    let start = tokio::time::Instant::now();
    let every = plan.interval.max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval_at(start + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..plan.rounds() {
        ticks.tick().await;
        sink.keep_going().await?;
        source.round().await;
        for index in 0..evaluator.rules().len() {
            let reading = source.read(&evaluator.rules()[index]).await;
            if let Some(finding) = evaluator.observe(index, reading) {
                sink.finding(evaluator, &finding).await?;
            }
        }
    }
    tokio::time::sleep_until(start + plan.watch).await;
    sink.keep_going().await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn rule(name: &str, above: f64, for_evaluations: u32, action: RuleAction, unit: &str) -> RuleConfig {
        RuleConfig {
            name: name.into(),
            query: Some(format!("{name}_query")),
            health: false,
            above: Some(above),
            below: None,
            for_evaluations,
            action,
            hint: None,
            unit: Some(unit.into()),
            log_pattern: None,
        }
    }

    fn health(for_evaluations: u32) -> RuleConfig {
        RuleConfig { name: "failed health checks".into(), query: None, health: true, above: None, below: None, for_evaluations, action: RuleAction::Rollback, hint: None, unit: None, log_pattern: None }
    }

    #[test]
    fn values_are_shown_in_the_rules_unit() {
        let check = |unit: Option<&str>, value: f64, expected: &str| assert_eq!(format_value(unit, value), expected);
        check(Some("percent"), 0.002, "0.2%");
        check(Some("percent"), 0.01, "1%");
        check(Some("percent"), 0.2, "20%");
        check(Some("percent"), 0.123456, "12.35%");
        check(Some("percent"), 0.0, "0%");
        check(Some("ms"), 340.4, "340 ms");
        check(Some("ms"), 1000.0, "1000 ms");
        check(Some("ms"), 2.26, "2.3 ms");
        check(Some("seconds"), 1.25, "1.25 s");
        check(Some("number"), 3.0, "3");
        check(None, 0.5, "0.5");
        check(Some("ms"), f64::INFINITY, "+Inf");
    }

    #[test]
    fn thresholds_read_like_the_runbook() {
        assert_eq!(threshold_text(&rule("error rate", 0.01, 1, RuleAction::Alert, "percent")), "> 1%");
        assert_eq!(threshold_text(&rule("P95", 1000.0, 1, RuleAction::Alert, "ms")), "> 1000 ms");
        assert_eq!(threshold_text(&health(3)), "> 2 consecutive failures");
        let mut below = rule("throughput", 0.0, 1, RuleAction::Alert, "number");
        below.above = None;
        below.below = Some(5.0);
        assert_eq!(threshold_text(&below), "< 5");
        assert!(breaches(&below, 4.0) && !breaches(&below, 5.0));
    }

    #[test]
    fn a_rule_fires_after_for_consecutive_breaches_once_per_episode() {
        let mut e = Evaluator::new(vec![rule("error rate", 0.01, 2, RuleAction::Alert, "percent")]);
        let fired = |f: Option<Finding>| matches!(f, Some(Finding::Fired { .. }));
        assert!(!fired(e.observe(0, Reading::value(0.05))), "one breach is not enough with for = 2");
        assert!(!fired(e.observe(0, Reading::value(0.001))), "a good reading breaks the streak");
        assert!(!fired(e.observe(0, Reading::value(0.05))));
        assert!(fired(e.observe(0, Reading::value(0.2))), "second consecutive breach fires");
        assert!(!fired(e.observe(0, Reading::value(0.3))), "fires once per episode");
        assert!(!fired(e.observe(0, Reading::value(0.0))));
        assert!(!fired(e.observe(0, Reading::value(0.02))));
        assert!(fired(e.observe(0, Reading::value(0.02))), "re-armed after recovering");
        assert!(!e.clean());
        assert_eq!(e.summary(), "error rate max 30% — alerted 2×");
    }

    #[test]
    fn no_data_is_a_failed_evaluation_reported_once_and_never_clean() {
        let mut e = Evaluator::new(vec![rule("P95", 1000.0, 2, RuleAction::Alert, "ms")]);
        assert_eq!(e.observe(0, Reading::Unavailable("no data".into())), Some(Finding::Unavailable { rule: 0, reason: "no data".into() }));
        assert_eq!(e.observe(0, Reading::Unavailable("no data".into())), None, "reported once per gap");
        assert_eq!(e.observe(0, Reading::value(1500.0)), None);
        assert_eq!(e.observe(0, Reading::Unavailable("unreachable".into())), Some(Finding::Unavailable { rule: 0, reason: "unreachable".into() }));
        assert_eq!(e.observe(0, Reading::value(1500.0)), None, "a gap breaks the streak");
        assert!(matches!(e.observe(0, Reading::value(1500.0)), Some(Finding::Fired { consecutive: 2, .. })));
        assert!(!e.clean());
        assert_eq!(e.summary(), "P95 max 1500 ms (3/6 evaluations failed) — alerted 1×");
        let mut never = Evaluator::new(vec![rule("P95", 1000.0, 1, RuleAction::Alert, "ms")]);
        never.observe(0, Reading::Unavailable("no data".into()));
        assert!(!never.clean());
        assert_eq!(never.summary(), "P95: no data (1/1 evaluations failed)");
    }

    #[test]
    fn the_health_rule_counts_consecutive_failed_checks() {
        let mut e = Evaluator::new(vec![health(3)]);
        let fail = || Reading::Value { value: 1.0, detail: Some("backend health: 503".into()) };
        assert_eq!(e.observe(0, fail()), None);
        assert_eq!(e.observe(0, fail()), None);
        assert_eq!(e.observe(0, fail()), Some(Finding::Fired { rule: 0, value: 1.0, consecutive: 3, action: RuleAction::Rollback, detail: Some("backend health: 503".into()) }));
        let mut ok = Evaluator::new(vec![health(3)]);
        ok.observe(0, Reading::value(0.0));
        assert!(ok.clean());
        assert_eq!(ok.summary(), "failed health checks: none");
    }

    #[test]
    fn rounds_cover_the_watch() {
        let plan = |w: u64, i: u64| Plan { watch: Duration::from_millis(w), interval: Duration::from_millis(i) }.rounds();
        assert_eq!(plan(15 * 60_000, 60_000), 15);
        assert_eq!(plan(3000, 500), 6);
        assert_eq!(plan(1000, 300), 3);
        assert_eq!(plan(1000, 1000), 1);
        assert_eq!(plan(1000, 0), 1);
    }

    struct Scripted(Mutex<Vec<Reading>>);

    #[async_trait]
    impl Source for Scripted {
        async fn read(&self, _: &RuleConfig) -> Reading {
            let mut left = self.0.lock().unwrap();
            if left.is_empty() {
                Reading::value(0.0)
            } else {
                left.remove(0)
            }
        }
    }

    struct Recorder(Mutex<Vec<(Duration, Finding)>>, tokio::time::Instant);

    #[async_trait]
    impl Sink for Recorder {
        type Stop = String;
        async fn finding(&self, _: &Evaluator, f: &Finding) -> Result<(), String> {
            self.0.lock().unwrap().push((self.1.elapsed(), f.clone()));
            match f {
                Finding::Fired { action: RuleAction::Rollback, .. } => Err("rollback".into()),
                _ => Ok(()),
            }
        }
        async fn keep_going(&self) -> Result<(), String> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_fifteen_minute_watch_evaluates_every_minute_and_ends_on_time() {
        let start = tokio::time::Instant::now();
        let mut e = Evaluator::new(vec![rule("error rate", 0.01, 1, RuleAction::Alert, "percent")]);
        let source = Scripted(Mutex::new(vec![Reading::value(0.0), Reading::value(0.002), Reading::value(0.5)]));
        let sink = Recorder(Mutex::new(Vec::new()), start);
        let plan = Plan { watch: Duration::from_secs(900), interval: Duration::from_secs(60) };
        assert_eq!(run(plan, &mut e, &source, &sink).await, Ok(()));
        assert_eq!(start.elapsed(), Duration::from_secs(900));
        let seen = sink.0.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, Duration::from_secs(180), "the third reading, three minutes in");
        assert_eq!(e.summary(), "error rate max 50% — alerted 1×");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rollback_rule_stops_the_watch_when_it_fires() {
        let start = tokio::time::Instant::now();
        let mut e = Evaluator::new(vec![health(3)]);
        let source = Scripted(Mutex::new(vec![Reading::value(1.0); 5]));
        let sink = Recorder(Mutex::new(Vec::new()), start);
        let plan = Plan { watch: Duration::from_secs(900), interval: Duration::from_secs(60) };
        assert_eq!(run(plan, &mut e, &source, &sink).await, Err("rollback".to_string()));
        assert_eq!(start.elapsed(), Duration::from_secs(180), "stopped at the third failed check");
    }
}
