//! `/history` in the runbook's template and `/stats` (the four DORA keys), computed from
//! stored deployments. Pure functions over rows the store has read.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::{from_millis, Deployment, DeploymentKind, DeploymentState, HistoryEntry, Millis};

pub(super) fn entry(
    d: &Deployment,
    approvers: Vec<String>,
    rollbacks: &[Deployment],
    previous_version: Option<String>,
    tz: chrono_tz::Tz,
) -> HistoryEntry {
    let local = |ms: Millis| from_millis(ms).with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string();
    let rollback = match (d.kind, d.state) {
        (DeploymentKind::Rollback, _) => Some(match (d.rollback_of, &d.resolution) {
            (Some(of), Some(how)) => format!("this is a rollback of #{of}; {how}"),
            (Some(of), None) => format!("this is a rollback of #{of}"),
            (None, Some(how)) => format!("this is a rollback; {how}"),
            (None, None) => "this is a rollback".to_string(),
        }),
        (_, DeploymentState::RolledBack) => Some(format!(
            "automatic, to {}",
            previous_version.clone().unwrap_or_else(|| "the previous version".into())
        )),
        (_, DeploymentState::RollbackFailed) => Some(match &d.resolution {
            Some(how) => format!("automatic rollback FAILED; {how}"),
            None => "automatic rollback FAILED, needs a human".into(),
        }),
        _ => rollbacks
            .iter()
            .find(|r| r.state == DeploymentState::Succeeded)
            .map(|r| format!("rolled back by #{} ({}) to {}", r.id, r.requested_by_name, r.version)),
    };
    let mut issues = d.issues.clone().filter(|s| !s.is_empty());
    if let (Some(how), false) = (&d.resolution, d.state == DeploymentState::RollbackFailed || d.kind == DeploymentKind::Rollback) {
        // A roll-forward, or an interrupted deployment a person closed: said with the issues.
        if !issues.as_deref().is_some_and(|i| i.contains(how.as_str())) {
            issues = Some(match issues {
                Some(i) => format!("{i}; {how}"),
                None => how.clone(),
            });
        }
    }
    if issues.is_none() && !matches!(d.state, DeploymentState::Succeeded) {
        issues = d.error.clone().or_else(|| Some(format!("ended {}", d.state)));
    }
    HistoryEntry {
        id: d.id,
        env: d.env.clone(),
        kind: d.kind.as_str().to_string(),
        version: d.version.clone(),
        state: d.state.as_str().to_string(),
        started_at: d.started_at.map(local).unwrap_or_default(),
        finished_at: d.finished_at.map(local),
        deployed_by: d.requested_by_name.clone(),
        approvers,
        duration_seconds: d.duration_ms().map(|ms| (ms + 500) / 1000),
        hotfix: d.hotfix_reason.clone(),
        issues,
        rollback,
        migrations: None,
        images: None,
    }
}

/// `15 minutes`, `1 hour 5 minutes`, `40 seconds`.
pub fn human_duration(seconds: i64) -> String {
    let plural = |n: i64, unit: &str| if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") };
    if seconds < 60 {
        return plural(seconds.max(0), "second");
    }
    let minutes = (seconds + 30) / 60;
    if minutes < 60 {
        return plural(minutes, "minute");
    }
    let (h, m) = (minutes / 60, minutes % 60);
    if m == 0 {
        plural(h, "hour")
    } else {
        format!("{} {}", plural(h, "hour"), plural(m, "minute"))
    }
}

/// The runbook's "Deployment History Template".
pub fn render_history_markdown(entries: &[HistoryEntry]) -> String {
    let mut out = String::from("# Deployment History\n");
    if entries.is_empty() {
        out.push_str("\nNo deployments yet.\n");
    }
    for e in entries {
        let date = e.started_at.split(' ').next().unwrap_or_default();
        let title = if e.kind == "rollback" { format!("{} (rollback)", e.version) } else { e.version.clone() };
        out.push_str(&format!("\n## {title} - {date}\n"));
        out.push_str(&format!("- **Environment:** {} (#{})\n", e.env, e.id));
        out.push_str(&format!("- **Deployed by:** {}\n", e.deployed_by));
        if !e.approvers.is_empty() {
            out.push_str(&format!("- **Approved by:** {}\n", e.approvers.join(", ")));
        }
        out.push_str(&format!("- **Duration:** {}\n", e.duration_seconds.map(human_duration).unwrap_or_else(|| "unknown".into())));
        out.push_str(&format!("- **Outcome:** {}\n", e.state));
        if let Some(h) = &e.hotfix {
            out.push_str(&format!("- **Hotfix:** {h}\n"));
        }
        out.push_str(&format!("- **Issues:** {}\n", e.issues.as_deref().unwrap_or("None")));
        if let Some(m) = &e.migrations {
            out.push_str(&format!("- **Migrations:** {m}\n"));
        }
        if let Some(i) = &e.images {
            out.push_str(&format!("- **Images:** {i}\n"));
        }
        out.push_str(&format!("- **Rollback:** {}\n", e.rollback.as_deref().unwrap_or("N/A")));
    }
    out
}

/// A finished deployment, whether a later `/rollback` in its environment undid it, and when the
/// first success in its environment ended at or after its detection (its restore, if it failed).
#[derive(Debug, Clone)]
pub struct StatsInput {
    pub deployment: Deployment,
    pub rolled_back_later: bool,
    pub next_success_at: Option<Millis>,
}

impl StatsInput {
    /// Fills `next_success_at` from these rows alone, for rows that are the whole history (the
    /// store works it out from every row: [`super::Store::stats_input`]).
    pub fn pair_restores(rows: &mut [StatsInput]) {
        let mut successes: std::collections::HashMap<String, Vec<(Millis, i64)>> = std::collections::HashMap::new();
        for r in rows.iter() {
            let d = &r.deployment;
            if let (DeploymentState::Succeeded, Some(f), Some(_)) = (d.state, d.finished_at, d.started_at) {
                successes.entry(d.env.clone()).or_default().push((f, d.id));
            }
        }
        successes.values_mut().for_each(|v| v.sort_unstable());
        for r in rows.iter_mut() {
            let d = &r.deployment;
            let detected = d.failed_at.or(d.finished_at).unwrap_or(d.created_at);
            r.next_success_at = successes.get(&d.env).and_then(|v| {
                let from = v.partition_point(|(f, _)| *f < detected);
                v[from..].iter().take(2).find(|(_, id)| *id != d.id).map(|(f, _)| *f)
            });
        }
    }
}

/// The four keys of `/stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub days: u32,
    pub deployments: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub rollbacks: usize,
    pub per_week: f64,
    /// Failed changes / all changes, 0..1; None without changes.
    pub change_failure_rate: Option<f64>,
    pub mean_time_to_restore_seconds: Option<i64>,
    pub median_duration_seconds: Option<i64>,
}

/// What `/stats` is made of before the arithmetic: the store computes these in SQL
/// ([`super::Store::stats`]), [`Stats::compute`] from rows; [`Stats::from_counts`] does the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsCounts {
    /// Deployments of kind `deploy` (changes).
    pub changes: usize,
    /// Changes that succeeded and were not undone by a later `/rollback`.
    pub succeeded: usize,
    /// Changes that failed, rolled back, or were undone by a later `/rollback`.
    pub failed: usize,
    /// Changes that were not cancelled.
    pub completed: usize,
    pub rollbacks: usize,
    /// Sum and number of the failed changes' times to restore (those restored).
    pub restore_total_ms: i64,
    pub restores: usize,
    /// Median duration of the successful changes (undone or not).
    pub median_ms: Option<i64>,
}

impl Stats {
    /// Deployments of kind `deploy` count as changes; a change failed when its pipeline failed,
    /// rolled back, or a later `/rollback` in its environment undid it. Time to restore runs from
    /// when the failure was detected to the end of the rollback that restored service (the job's
    /// own, or the next successful deployment or rollback in that environment, wherever it falls).
    pub fn compute(rows: &[StatsInput], days: u32, now: DateTime<Utc>) -> Stats {
        let _ = now;
        let mut counts = StatsCounts::default();
        let mut durations = Vec::new();
        for r in rows {
            let d = &r.deployment;
            let facts = RowFacts {
                kind: d.kind,
                state: d.state,
                started_at: d.started_at.unwrap_or(d.created_at),
                failed_at: d.failed_at,
                finished_at: d.finished_at.unwrap_or(d.created_at),
                undone: r.rolled_back_later,
                restored_at: r.next_success_at,
            };
            facts.add_to(&mut counts, &mut durations);
        }
        durations.sort_unstable();
        counts.median_ms = median_of_sorted(&durations);
        Stats::from_counts(days, &counts)
    }

    pub fn from_counts(days: u32, c: &StatsCounts) -> Stats {
        Stats {
            days,
            deployments: c.changes,
            succeeded: c.succeeded,
            failed: c.failed,
            rollbacks: c.rollbacks,
            per_week: if days == 0 { 0.0 } else { c.succeeded as f64 * 7.0 / days as f64 },
            change_failure_rate: (c.completed > 0).then(|| c.failed as f64 / c.completed as f64),
            mean_time_to_restore_seconds: (c.restores > 0).then(|| c.restore_total_ms / c.restores as i64 / 1000),
            median_duration_seconds: c.median_ms.map(|ms| ms / 1000),
        }
    }

    pub fn render(&self, scope: &str) -> String {
        let pct = |r: Option<f64>| r.map(|r| format!("{:.0}%", r * 100.0)).unwrap_or_else(|| "n/a (no deployments)".into());
        let dur = |s: Option<i64>| s.map(human_duration).unwrap_or_else(|| "n/a".into());
        format!(
            "Deployment stats for {scope}, last {} days:\n\
             • Deployment frequency: {} successful deployment(s), {:.1} per week\n\
             • Change failure rate: {} ({} of {} changes failed or were rolled back)\n\
             • Mean time to restore: {}\n\
             • Median deployment duration: {}\n\
             • Rollbacks requested: {}",
            self.days,
            self.succeeded,
            self.per_week,
            pct(self.change_failure_rate),
            self.failed,
            self.deployments,
            dur(self.mean_time_to_restore_seconds),
            dur(self.median_duration_seconds),
            self.rollbacks
        )
    }
}

/// One row's part of `/stats`, as the rollup triggers count it: the same rules in Rust for the
/// window's first partial day ([`super::Store::stats`]) and for [`Stats::compute`].
#[derive(Debug, Clone, Copy)]
pub(super) struct RowFacts {
    pub kind: DeploymentKind,
    pub state: DeploymentState,
    pub started_at: Millis,
    pub failed_at: Option<Millis>,
    pub finished_at: Millis,
    pub undone: bool,
    pub restored_at: Option<Millis>,
}

impl RowFacts {
    pub(super) fn add_to(&self, c: &mut StatsCounts, durations: &mut Vec<i64>) {
        use DeploymentState::*;
        if self.kind == DeploymentKind::Rollback {
            c.rollbacks += 1;
            return;
        }
        if self.kind != DeploymentKind::Deploy {
            return;
        }
        c.changes += 1;
        let failed_state = matches!(self.state, Failed | RolledBack | RollbackFailed | Interrupted);
        if self.state == Succeeded && !self.undone {
            c.succeeded += 1;
        }
        if self.undone || failed_state {
            c.failed += 1;
        }
        if self.state != Cancelled {
            c.completed += 1;
        }
        let detected = self.failed_at.unwrap_or(self.finished_at);
        if self.state == RolledBack {
            c.restore_total_ms += (self.finished_at - detected).max(0);
            c.restores += 1;
        } else if self.undone || failed_state {
            if let Some(end) = self.restored_at {
                c.restore_total_ms += (end - detected).max(0);
                c.restores += 1;
            }
        }
        if self.state == Succeeded {
            durations.push(self.finished_at - self.started_at);
        }
    }
}

/// The median of sorted values; of an even count, the mean of the middle two (integer division).
pub(super) fn median_of_sorted(sorted: &[i64]) -> Option<i64> {
    let n = sorted.len();
    (n > 0).then(|| if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_the_runbook() {
        for (secs, text) in [(0, "0 seconds"), (1, "1 second"), (59, "59 seconds"), (60, "1 minute"), (900, "15 minutes"), (3600, "1 hour"), (3900, "1 hour 5 minutes")] {
            assert_eq!(human_duration(secs), text, "{secs}s");
        }
    }
}
