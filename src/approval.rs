//! Votes, vetoes and expiry (PRODUCT.md section 5), as pure functions.
//!
//! Group membership needs the chat platform, so the caller resolves it first and passes the
//! answer in; nothing here does I/O or reads the clock.

use crate::model::{Millis, Vote, VoteKind};

/// Who may approve, as configured (`U0CAROL`, `group:S0DEVOPS`, `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub required: u32,
    pub approvers: Vec<String>,
    pub self_approval: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligibility {
    Eligible,
    NotAnApprover,
    Requester,
}

/// The id of a `group:<id>` or `role:<id>` entry of an approver or deployer list.
pub fn group_id(entry: &str) -> Option<&str> {
    entry.strip_prefix("group:").or_else(|| entry.strip_prefix("role:"))
}

impl Rule {
    /// The `group:` (Slack user group) and `role:` (Discord role) ids a user must be checked
    /// against when not listed by id.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.approvers.iter().filter_map(|a| group_id(a))
    }

    pub fn lists_user(&self, user: &str) -> bool {
        self.approvers.iter().any(|a| a == "*" || a == user)
    }

    /// `in_group` says whether the user belongs to one of [`Rule::groups`].
    pub fn eligibility(&self, user: &str, requester: &str, in_group: bool) -> Eligibility {
        if user == requester && !self.self_approval {
            Eligibility::Requester
        } else if self.lists_user(user) || in_group {
            Eligibility::Eligible
        } else {
            Eligibility::NotAnApprover
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Approved,
    Rejected { by: String },
    Expired,
}

/// The count of a request's valid votes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub required: u32,
    /// Display names of the approvers whose vote counts, in voting order.
    pub approved_by: Vec<String>,
    pub outcome: Outcome,
}

/// Counts votes. `eligible` decides for each voter (already resolved for groups); a single
/// eligible reject vetoes; the request expires at `expires_at` unless already decided.
pub fn tally(required: u32, votes: &[Vote], eligible: impl Fn(&str) -> bool, expires_at: Option<Millis>, now: Millis) -> Tally {
    let valid: Vec<&Vote> = votes.iter().filter(|v| eligible(&v.user_id)).collect();
    let mut approved_by: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for v in valid.iter().filter(|v| v.vote == VoteKind::Approve) {
        if seen.insert(v.user_id.clone()) {
            approved_by.push(v.user_name.clone());
        }
    }
    let outcome = if let Some(r) = valid.iter().find(|v| v.vote == VoteKind::Reject) {
        Outcome::Rejected { by: r.user_name.clone() }
    } else if approved_by.len() as u32 >= required {
        Outcome::Approved
    } else if expires_at.is_some_and(|e| now >= e) {
        Outcome::Expired
    } else {
        Outcome::Pending
    };
    Tally { required, approved_by, outcome }
}

impl Tally {
    /// `1/2 — @carol`, `approved by @carol, @dan`, `rejected by @erin`, `expired`.
    pub fn render(&self) -> String {
        let names = |v: &[String]| v.iter().map(|n| format!("@{n}")).collect::<Vec<_>>().join(", ");
        match &self.outcome {
            Outcome::Pending if self.approved_by.is_empty() => format!("0/{} — waiting for approvers", self.required),
            Outcome::Pending => format!("{}/{} — {}", self.approved_by.len(), self.required, names(&self.approved_by)),
            Outcome::Approved => format!("approved by {}", names(&self.approved_by)),
            Outcome::Rejected { by } => format!("rejected by @{by}"),
            Outcome::Expired => format!("expired with {}/{} approvals", self.approved_by.len(), self.required),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(user: &str, kind: VoteKind, at: Millis) -> Vote {
        Vote { deployment_id: 1, user_id: user.into(), user_name: user.to_lowercase(), vote: kind, created_at: at }
    }

    fn rule() -> Rule {
        Rule { required: 2, approvers: vec!["U0CAROL".into(), "U0DAN".into(), "group:S0OPS".into()], self_approval: false }
    }

    #[test]
    fn the_requesters_reaction_never_counts_without_self_approval() {
        assert_eq!(rule().eligibility("U0CAROL", "U0CAROL", false), Eligibility::Requester);
        let mut r = rule();
        r.self_approval = true;
        assert_eq!(r.eligibility("U0CAROL", "U0CAROL", false), Eligibility::Eligible);
    }

    #[test]
    fn listed_users_and_group_members_are_eligible_others_are_not() {
        let r = rule();
        assert_eq!(r.eligibility("U0DAN", "U0ALICE", false), Eligibility::Eligible);
        assert_eq!(r.eligibility("U0ERIN", "U0ALICE", true), Eligibility::Eligible);
        assert_eq!(r.eligibility("U0ERIN", "U0ALICE", false), Eligibility::NotAnApprover);
        assert_eq!(r.groups().collect::<Vec<_>>(), vec!["S0OPS"]);
        let anyone = Rule { required: 1, approvers: vec!["*".into()], self_approval: false };
        assert_eq!(anyone.eligibility("U0X", "U0ALICE", false), Eligibility::Eligible);
    }

    #[test]
    fn votes_count_up_to_the_requirement_and_render_progress() {
        let eligible = |u: &str| u != "U0MALLORY";
        let one = tally(2, &[vote("U0CAROL", VoteKind::Approve, 1), vote("U0MALLORY", VoteKind::Approve, 2)], eligible, Some(100), 5);
        assert_eq!(one.outcome, Outcome::Pending);
        assert_eq!(one.render(), "1/2 — @u0carol");
        let two = tally(2, &[vote("U0CAROL", VoteKind::Approve, 1), vote("U0DAN", VoteKind::Approve, 2)], eligible, Some(100), 5);
        assert_eq!(two.outcome, Outcome::Approved);
        assert_eq!(two.render(), "approved by @u0carol, @u0dan");
    }

    #[test]
    fn one_reject_by_an_approver_vetoes_but_an_outsiders_does_not() {
        let eligible = |u: &str| u != "U0MALLORY";
        let vetoed = tally(1, &[vote("U0CAROL", VoteKind::Approve, 1), vote("U0ERIN", VoteKind::Reject, 2)], eligible, None, 5);
        assert_eq!(vetoed.outcome, Outcome::Rejected { by: "u0erin".into() });
        assert_eq!(vetoed.render(), "rejected by @u0erin");
        let ignored = tally(1, &[vote("U0MALLORY", VoteKind::Reject, 1)], eligible, None, 5);
        assert_eq!(ignored.outcome, Outcome::Pending);
    }

    #[test]
    fn an_undecided_request_expires_at_its_deadline_not_before() {
        let eligible = |_: &str| true;
        assert_eq!(tally(1, &[], eligible, Some(100), 99).outcome, Outcome::Pending);
        assert_eq!(tally(1, &[], eligible, Some(100), 100).outcome, Outcome::Expired);
        assert_eq!(tally(1, &[vote("U0CAROL", VoteKind::Approve, 1)], eligible, Some(100), 200).outcome, Outcome::Approved);
    }
}
