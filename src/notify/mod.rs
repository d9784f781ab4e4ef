//! Telling everyone after (and while) a deployment runs: `[[notify]]` entries — email over SMTP,
//! an Atlassian Statuspage incident, a signed webhook — and the history commit of
//! `[bot] history_repo`. What to send is rendered when the deployment reaches a state and stored
//! (`store::notify`); `engine::notify` delivers it, retried, once.
//!
//! *Invariant*: SMTP, Statuspage and git details stay in this folder; the engine sees a
//! [`Delivery`] outcome.

use serde::{Deserialize, Serialize};

pub mod config;
pub mod email;
pub mod history_git;
pub mod statuspage;
pub mod webhook;

pub use config::{NotifyConfig, NOTIFY_EVENTS};

/// What every notifier is given about a deployment: its record, rendered when the state was
/// reached (and redacted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: i64,
    /// The state reached: `running`, `succeeded`, `rolled_back`, …
    pub event: String,
    pub env: String,
    pub kind: String,
    pub version: String,
    pub state: String,
    pub requested_by: String,
    pub approvers: Vec<String>,
    pub hotfix: Option<String>,
    pub services: Vec<ServiceRecord>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_seconds: Option<i64>,
    /// One line per pipeline step: `verify: succeeded — 3 health checks passed`.
    pub checks: Vec<String>,
    pub issues: Option<String>,
    pub rollback: Option<String>,
    pub error: Option<String>,
    /// The runbook's history entry for it (Markdown), once it has ended.
    pub history: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub service: String,
    pub from: Option<String>,
    pub to: String,
    pub state: String,
}

impl Record {
    /// `production v1.0.0: succeeded (#42)`.
    pub fn headline(&self) -> String {
        let what = if self.kind == "rollback" { format!("rollback to {}", self.version) } else { self.version.clone() };
        format!("{} {what}: {} (#{})", self.env, self.event.replace('_', " "), self.id)
    }

    /// The plain-text summary: the runbook's history template, then the checks.
    pub fn summary_text(&self) -> String {
        let mut out = format!("Deployment #{} — {}\n\n", self.id, self.headline());
        match &self.history {
            Some(h) => out.push_str(h.trim_start_matches("# Deployment History\n").trim()),
            None => {
                out.push_str(&format!("- **Environment:** {}\n- **Version:** {}\n- **Deployed by:** {}\n", self.env, self.version, self.requested_by));
                if !self.approvers.is_empty() {
                    out.push_str(&format!("- **Approved by:** {}\n", self.approvers.join(", ")));
                }
                out.push_str(&format!("- **State:** {}", self.state.replace('_', " ")));
            }
        }
        out.push_str("\n\nServices:\n");
        for s in &self.services {
            out.push_str(&format!("- {}: {} → {} ({})\n", s.service, s.from.as_deref().unwrap_or("nothing"), s.to, s.state));
        }
        if !self.checks.is_empty() {
            out.push_str("\nSteps and checks:\n");
            for c in &self.checks {
                out.push_str(&format!("- {c}\n"));
            }
        }
        if let Some(e) = &self.error {
            out.push_str(&format!("\nWhat went wrong: {e}\n"));
        }
        out
    }
}

/// How a delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Accepted; with what later deliveries need (a Statuspage incident id).
    Done(Option<String>),
    /// Worth trying again later (a refusal that may pass, the receiver unreachable).
    Retry(String),
    /// Will never be accepted as it is (a 4xx, a bad address): given up at once.
    Refused(String),
}
