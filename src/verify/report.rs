//! What a run found: one outcome per check, the one-line summary and the thread's details.

use super::*;

// ---------------------------------------------------------------------------------------------------------
// Report

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    Health,
    Smoke,
    /// An automatic checklist item (`[[environments.X.checklist.checks]]`).
    Checklist,
    /// A security check (`[[environments.X.verify.security]]`).
    Security,
}

impl CheckKind {
    /// The list a check's key (`smoke[2]`, `checks[0]`) names.
    pub(super) fn key(self) -> &'static str {
        match self {
            CheckKind::Health => "health",
            CheckKind::Smoke => "smoke",
            CheckKind::Checklist => "checks",
            CheckKind::Security => "security",
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckKind::Health => "health",
            CheckKind::Smoke => "smoke",
            CheckKind::Checklist => "checklist",
            CheckKind::Security => "security",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    pub name: String,
    pub kind: CheckKind,
    pub ok: bool,
    /// Not run because of an earlier failure (`ok` is false).
    pub skipped: bool,
    pub attempts: u32,
    /// Status of the last response, if any arrived.
    pub status: Option<u16>,
    pub elapsed: Duration,
    /// Why it failed or was skipped, or what it saw when it passed; secrets masked.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VerifyReport {
    pub checks: Vec<CheckOutcome>,
    /// Every check passed (true when there are none).
    pub ok: bool,
    pub elapsed: Duration,
}

impl VerifyReport {
    /// One line for the progress message: "6/6 checks passed in 1.2s", or the first failure.
    pub fn summary(&self) -> String {
        if self.checks.is_empty() {
            return "no checks configured".to_owned();
        }
        let Some(first) = self.checks.iter().find(|check| !check.ok && !check.skipped) else {
            let passed = self.checks.iter().filter(|check| check.ok).count();
            return format!(
                "{passed}/{} checks passed in {}",
                self.checks.len(),
                human(self.elapsed)
            );
        };
        let mut line = if first.attempts > 1 {
            format!(
                "{} check '{}' failed after {} attempts: {}",
                first.kind, first.name, first.attempts, first.detail
            )
        } else {
            format!(
                "{} check '{}' failed: {}",
                first.kind, first.name, first.detail
            )
        };
        let failed = self
            .checks
            .iter()
            .filter(|check| !check.ok && !check.skipped)
            .count()
            - 1;
        let skipped = self.checks.iter().filter(|check| check.skipped).count();
        let more: Vec<String> = [(failed, "more failed"), (skipped, "skipped")]
            .into_iter()
            .filter(|(count, _)| *count > 0)
            .map(|(count, what)| format!("{count} {what}"))
            .collect();
        if !more.is_empty() {
            line.push_str(&format!(" ({})", more.join(", ")));
        }
        line
    }

    /// One line per check, for the deployment's thread.
    pub fn details(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            let (mark, what) = if check.ok {
                (
                    "✅",
                    format!("{} in {}", check.detail, human(check.elapsed)),
                )
            } else if check.skipped {
                ("⏭️", check.detail.clone())
            } else if check.attempts > 1 {
                (
                    "❌",
                    format!(
                        "failed after {} attempts in {}: {}",
                        check.attempts,
                        human(check.elapsed),
                        check.detail
                    ),
                )
            } else {
                ("❌", format!("failed: {}", check.detail))
            };
            out.push_str(&format!("{mark} {} '{}': {what}\n", check.kind, check.name));
        }
        out.push_str(&self.summary());
        out
    }

    /// The checks that did not pass, skipped ones included.
    pub fn failures(&self) -> impl Iterator<Item = &CheckOutcome> {
        self.checks.iter().filter(|check| !check.ok)
    }
}

/// `340ms`, `1.2s`, `2s`, `1m 5s`.
pub(super) fn human(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        format!("{millis}ms")
    } else if millis < 60_000 {
        let tenths = (millis + 50) / 100;
        if tenths % 10 == 0 {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        }
    } else {
        let secs = duration.as_secs();
        format!("{}m {}s", secs / 60, secs % 60)
    }
}
