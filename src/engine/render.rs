//! The texts the engine posts, built from stored records only (so any replica, after any
//! restart, renders the same message).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::model::{from_millis, Deployment, DeploymentKind, DeploymentService, DeploymentState, Step, StepState};

pub fn mention(user_id: &str) -> String {
    format!("<@{user_id}>")
}

pub fn local_time(ms: i64, tz: Tz) -> String {
    from_millis(ms).with_timezone(&tz).format("%a %-d %b %H:%M %Z").to_string()
}

pub fn seconds(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m {:02}s", (s / 60.0) as i64, (s % 60.0) as i64)
    }
}

fn title(d: &Deployment) -> String {
    let what = match d.kind {
        DeploymentKind::Deploy => format!("{} → {}", d.version, d.env),
        DeploymentKind::Rollback => format!("rollback of {} to {}", d.env, d.version),
    };
    let hotfix = d.hotfix_reason.as_ref().map(|r| format!(" 🩹 hotfix: {r}")).unwrap_or_default();
    format!("{} *{} {}*{}", d.state.emoji(), d.short_id(), what, hotfix)
}

fn state_line(d: &Deployment, tz: Tz) -> String {
    match d.state {
        DeploymentState::AwaitingApproval => "waiting for approval".into(),
        DeploymentState::Scheduled => match d.scheduled_for {
            Some(t) => format!("scheduled for {}", local_time(t, tz)),
            None => "scheduled".into(),
        },
        DeploymentState::Queued | DeploymentState::Approved => "queued".into(),
        DeploymentState::Succeeded => match d.duration_ms() {
            Some(ms) => format!("succeeded in {}", seconds(ms)),
            None => "succeeded".into(),
        },
        DeploymentState::RolledBack => "failed and rolled back".into(),
        DeploymentState::RollbackFailed if d.resolution.is_some() => "ROLLBACK FAILED — closed".into(),
        DeploymentState::RollbackFailed => "ROLLBACK FAILED — the environment stays locked until a person decides: `/resolve` or a `--hotfix` roll-forward".into(),
        other => other.as_str().replace('_', " "),
    }
}

/// The one progress message per deployment, edited in place.
pub fn progress(d: &Deployment, steps: &[Step], services: &[DeploymentService], approvers: &[String], tz: Tz) -> String {
    let mut out = format!("{} — {}\n", title(d), state_line(d, tz));
    let mut who = format!("requested by {}", mention(&d.requested_by));
    if !approvers.is_empty() {
        who.push_str(&format!(", approved by {}", approvers.iter().map(|a| format!("@{a}")).collect::<Vec<_>>().join(", ")));
    }
    out.push_str(&who);
    if !services.is_empty() {
        let moves: Vec<String> = services
            .iter()
            .map(|s| format!("{} {} → {}", s.service, s.from_version.as_deref().unwrap_or("(none)"), s.to_version))
            .collect();
        out.push_str(&format!("\n{}", moves.join(" · ")));
    }
    // The latest attempt of each step, in order of first appearance.
    let mut latest: Vec<&Step> = Vec::new();
    for s in steps {
        match latest.iter_mut().find(|l| l.name == s.name) {
            Some(l) => *l = s,
            None => latest.push(s),
        }
    }
    for s in latest {
        let icon = match s.state {
            StepState::Running => "⏳",
            StepState::Succeeded => "✅",
            StepState::Failed => "❌",
            StepState::Skipped => "⏭️",
            StepState::Interrupted => "⚠️",
        };
        let took = s.finished_at.map(|f| format!(" ({})", seconds(f - s.started_at))).unwrap_or_default();
        let note = match s.state {
            StepState::Skipped => s.detail.as_deref().map(|d| format!(" — {}", first_line(d))).unwrap_or_default(),
            StepState::Failed => s.detail.as_deref().map(|d| format!(" — {}", first_line(d))).unwrap_or_default(),
            _ => String::new(),
        };
        out.push_str(&format!("\n{icon} {}{took}{note}", s.name));
        if s.name == "checklist" {
            for line in s.detail.as_deref().unwrap_or_default().lines() {
                out.push_str(&format!("\n    {line}"));
            }
        }
    }
    if let Some(e) = &d.error {
        if d.state.is_terminal() || d.state == DeploymentState::Interrupted {
            out.push_str(&format!("\n*Why:* {}", first_line(e)));
        }
    }
    if let Some(how) = &d.resolution {
        out.push_str(&format!("\n*Closed:* {how}"));
    }
    out
}

pub fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// What the approval message lists: the bot's checklist lines (one per item) and the manual items.
pub struct Checklist<'a> {
    pub checked: Option<&'a str>,
    pub manual: &'a [String],
}

/// The approval request: what, who asked, the checklist, the votes.
pub fn approval(d: &Deployment, votes: &str, checklist: Checklist<'_>, approve: &str, reject: &str, expires: Option<DateTime<Utc>>, tz: Tz) -> String {
    let Checklist { checked, manual: manual_checklist } = checklist;
    let mut out = format!(
        "🔐 *Approval needed for {} {} → {}* (requested by {})",
        d.short_id(),
        d.version,
        d.env,
        mention(&d.requested_by)
    );
    if let Some(h) = &d.hotfix_reason {
        out.push_str(&format!("\n🩹 Hotfix: {h}"));
    }
    if d.with_db {
        out.push_str(&format!("\n⚠️ Rollback of #{} WITH DATABASE RESTORE: writes since its backup are lost (see the thread).", d.rollback_of.unwrap_or_default()));
    }
    if let Some(lines) = checked.filter(|l| !l.trim().is_empty()) {
        out.push_str("\n*Checklist (checked by the bot):*");
        for line in lines.lines() {
            out.push_str(&format!("\n{line}"));
        }
    }
    if !manual_checklist.is_empty() {
        out.push_str("\nBy approving you confirm:");
        for item in manual_checklist {
            out.push_str(&format!("\n• {item}"));
        }
    }
    out.push_str(&format!("\nReact with :{approve}: to approve or :{reject}: to reject."));
    if let Some(e) = expires {
        out.push_str(&format!(" Expires {}.", local_time(e.timestamp_millis(), tz)));
    }
    out.push_str(&format!("\n*Votes:* {votes}"));
    out
}
