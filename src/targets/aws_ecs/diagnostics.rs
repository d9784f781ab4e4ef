//! The text a failed ECS rollout is explained with: the stopped tasks of the revision (stopped
//! reason, each container's exit code and reason) and the service's latest events.

use std::fmt::Write as _;

use aws_sdk_ecs::primitives::DateTimeFormat;
use aws_sdk_ecs::types::{ServiceEvent, Task};

use super::taskdef::short;

/// How many stopped tasks and service events a diagnosis shows.
pub(super) const MAX_TASKS: usize = 5;
pub(super) const MAX_EVENTS: usize = 5;

pub(super) fn render(arn: &str, stopped: &[Task], events: &[ServiceEvent]) -> String {
    let mut out = String::new();
    if stopped.is_empty() {
        let _ = writeln!(out, "No stopped tasks of {}.", short(arn));
    } else {
        let _ = writeln!(out, "Stopped tasks of {}:", short(arn));
        for task in stopped.iter().take(MAX_TASKS) {
            let id = task.task_arn().and_then(|a| a.rsplit('/').next()).unwrap_or("?");
            let _ = write!(out, "- task {id}: {}", task.stopped_reason().unwrap_or("no stopped reason"));
            if let Some(code) = task.stop_code() {
                let _ = write!(out, " ({})", code.as_str());
            }
            out.push('\n');
            for c in task.containers() {
                let name = c.name().unwrap_or("?");
                match c.exit_code() {
                    Some(code) => {
                        let _ = write!(out, "  container {name}: exit code {code}");
                    }
                    None => {
                        let _ = write!(out, "  container {name}: {}", c.last_status().unwrap_or("no exit code"));
                    }
                }
                if let Some(reason) = c.reason() {
                    let _ = write!(out, " ({reason})");
                }
                out.push('\n');
            }
        }
    }
    if !events.is_empty() {
        out.push_str("Latest service events:\n");
        for e in events.iter().take(MAX_EVENTS) {
            let at = e.created_at().and_then(|t| t.fmt(DateTimeFormat::DateTime).ok()).unwrap_or_default();
            let _ = writeln!(out, "- {at} {}", e.message().unwrap_or(""));
        }
    }
    out.trim_end().to_string()
}
