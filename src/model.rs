//! Domain records shared by the engine, the store and the chat renderers.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};

/// The lifecycle of PRODUCT.md section 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeploymentState {
    Requested,
    Denied,
    AwaitingApproval,
    Rejected,
    Expired,
    Approved,
    Queued,
    Scheduled,
    Running,
    Verifying,
    Monitoring,
    Succeeded,
    Failed,
    RollingBack,
    RolledBack,
    RollbackFailed,
    Cancelled,
    Interrupted,
}

impl DeploymentState {
    pub const ALL: [DeploymentState; 18] = [
        DeploymentState::Requested,
        DeploymentState::Denied,
        DeploymentState::AwaitingApproval,
        DeploymentState::Rejected,
        DeploymentState::Expired,
        DeploymentState::Approved,
        DeploymentState::Queued,
        DeploymentState::Scheduled,
        DeploymentState::Running,
        DeploymentState::Verifying,
        DeploymentState::Monitoring,
        DeploymentState::Succeeded,
        DeploymentState::Failed,
        DeploymentState::RollingBack,
        DeploymentState::RolledBack,
        DeploymentState::RollbackFailed,
        DeploymentState::Cancelled,
        DeploymentState::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Requested => "requested",
            DeploymentState::Denied => "denied",
            DeploymentState::AwaitingApproval => "awaiting_approval",
            DeploymentState::Rejected => "rejected",
            DeploymentState::Expired => "expired",
            DeploymentState::Approved => "approved",
            DeploymentState::Queued => "queued",
            DeploymentState::Scheduled => "scheduled",
            DeploymentState::Running => "running",
            DeploymentState::Verifying => "verifying",
            DeploymentState::Monitoring => "monitoring",
            DeploymentState::Succeeded => "succeeded",
            DeploymentState::Failed => "failed",
            DeploymentState::RollingBack => "rolling_back",
            DeploymentState::RolledBack => "rolled_back",
            DeploymentState::RollbackFailed => "rollback_failed",
            DeploymentState::Cancelled => "cancelled",
            DeploymentState::Interrupted => "interrupted",
        }
    }

    /// No further transition happens by itself.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            DeploymentState::Denied
                | DeploymentState::Rejected
                | DeploymentState::Expired
                | DeploymentState::Succeeded
                | DeploymentState::Failed
                | DeploymentState::RolledBack
                | DeploymentState::RollbackFailed
                | DeploymentState::Cancelled
        )
    }

    /// A job is doing something to the environment.
    pub fn is_executing(self) -> bool {
        matches!(
            self,
            DeploymentState::Running | DeploymentState::Verifying | DeploymentState::Monitoring | DeploymentState::RollingBack
        )
    }

    /// Counts as "in flight" for the one-deployment-per-environment rule.
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            DeploymentState::Requested
                | DeploymentState::AwaitingApproval
                | DeploymentState::Approved
                | DeploymentState::Queued
                | DeploymentState::Running
                | DeploymentState::Verifying
                | DeploymentState::Monitoring
                | DeploymentState::RollingBack
                | DeploymentState::Interrupted
        )
    }

    pub fn emoji(self) -> &'static str {
        match self {
            DeploymentState::Succeeded => "✅",
            DeploymentState::Failed | DeploymentState::RollbackFailed => "❌",
            DeploymentState::RolledBack => "⏪",
            DeploymentState::Denied | DeploymentState::Rejected | DeploymentState::Expired | DeploymentState::Cancelled => "🚫",
            DeploymentState::Interrupted => "⚠️",
            DeploymentState::AwaitingApproval | DeploymentState::Requested => "⏳",
            DeploymentState::Scheduled | DeploymentState::Queued | DeploymentState::Approved => "🕒",
            _ => "🚀",
        }
    }
}

impl fmt::Display for DeploymentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeploymentState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DeploymentState::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown deployment state \"{s}\""))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentKind {
    Deploy,
    Rollback,
}

impl DeploymentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentKind::Deploy => "deploy",
            DeploymentKind::Rollback => "rollback",
        }
    }
}

impl FromStr for DeploymentKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "deploy" => Ok(DeploymentKind::Deploy),
            "rollback" => Ok(DeploymentKind::Rollback),
            _ => Err(format!("unknown deployment kind \"{s}\"")),
        }
    }
}

/// Milliseconds since the Unix epoch, as stored.
pub type Millis = i64;

pub fn to_millis(t: DateTime<Utc>) -> Millis {
    t.timestamp_millis()
}

pub fn from_millis(ms: Millis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub id: i64,
    pub env: String,
    pub kind: DeploymentKind,
    pub version: String,
    pub services: Vec<String>,
    pub state: DeploymentState,
    pub requested_by: String,
    pub requested_by_name: String,
    pub channel: String,
    pub hotfix_reason: Option<String>,
    pub scheduled_for: Option<Millis>,
    pub rollback_of: Option<i64>,
    pub with_db: bool,
    pub approvals_required: i64,
    pub approval_expires_at: Option<Millis>,
    pub current_step: Option<String>,
    pub cancel_requested_by: Option<String>,
    pub issues: Option<String>,
    pub error: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<Millis>,
    pub rev: i64,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub failed_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub updated_at: Millis,
    /// The inbound chat event that created it: re-handling that event never creates another.
    pub request_event: Option<String>,
    /// How a human closed it (`/resolve`) or the roll-forward that superseded it.
    pub resolution: Option<String>,
}

impl Deployment {
    /// `#42`, as every reply about a deployment shows it.
    pub fn short_id(&self) -> String {
        format!("#{}", self.id)
    }

    pub fn duration_ms(&self) -> Option<i64> {
        Some(self.finished_at? - self.started_at?)
    }
}

/// What a new request carries.
#[derive(Debug, Clone)]
pub struct NewDeployment {
    pub env: String,
    pub kind: DeploymentKind,
    pub version: String,
    pub services: Vec<String>,
    pub state: DeploymentState,
    pub requested_by: String,
    pub requested_by_name: String,
    pub channel: String,
    pub hotfix_reason: Option<String>,
    pub scheduled_for: Option<Millis>,
    pub rollback_of: Option<i64>,
    pub with_db: bool,
    pub approvals_required: i64,
    pub approval_expires_at: Option<Millis>,
    /// The inbound chat event being handled (see [`Deployment::request_event`]).
    pub request_event: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    Running,
    Succeeded,
    Failed,
    Skipped,
    Interrupted,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Running => "running",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
            StepState::Interrupted => "interrupted",
        }
    }
}

impl FromStr for StepState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "running" => StepState::Running,
            "succeeded" => StepState::Succeeded,
            "failed" => StepState::Failed,
            "skipped" => StepState::Skipped,
            "interrupted" => StepState::Interrupted,
            _ => return Err(format!("unknown step state \"{s}\"")),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: i64,
    pub deployment_id: i64,
    pub seq: i64,
    pub name: String,
    pub attempt: i64,
    pub state: StepState,
    pub detail: Option<String>,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteKind {
    Approve,
    Reject,
}

impl VoteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VoteKind::Approve => "approve",
            VoteKind::Reject => "reject",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vote {
    pub deployment_id: i64,
    pub user_id: String,
    pub user_name: String,
    pub vote: VoteKind,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Lock {
    pub env: String,
    pub kind: LockKind,
    pub holder: String,
    pub reason: String,
    pub deployment_id: Option<i64>,
    pub created_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Manual,
    Deployment,
}

impl LockKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LockKind::Manual => "manual",
            LockKind::Deployment => "deployment",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentService {
    pub deployment_id: i64,
    pub service: String,
    pub from_version: Option<String>,
    pub from_ref: Option<String>,
    pub to_version: String,
    pub to_ref: Option<String>,
    pub state: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceVersion {
    pub env: String,
    pub service: String,
    pub version: String,
    pub reference: Option<String>,
    pub deployment_id: Option<i64>,
    pub updated_at: Millis,
}

/// One row of `/history`, in the runbook's template.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HistoryEntry {
    pub id: i64,
    pub env: String,
    pub kind: String,
    pub version: String,
    pub state: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub deployed_by: String,
    pub approvers: Vec<String>,
    pub duration_seconds: Option<i64>,
    pub hotfix: Option<String>,
    pub issues: Option<String>,
    pub rollback: Option<String>,
    /// What the migration tool reported it applied ("applied 2 (1 - create customers, …)");
    /// absent from JSON when the deployment ran no migration step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrations: Option<String>,
    /// The digests `/release` recorded for the version, shortened ("backend sha256:0123456789ab, …");
    /// absent from JSON when the version was not released by the bot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<String>,
}
