//! The engine's account of a container, worded for a failure message: state, exit code, OOM kill,
//! health check output and the last log lines.

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};

/// Log lines put in a failure's diagnostics.
pub(super) const LOG_LINES: usize = 20;

/// One line per fact, then the last log lines (`logs`, already fetched).
pub(super) fn describe(name: &str, container: &ContainerInspectResponse, logs: &str) -> String {
    let mut lines = Vec::new();
    let image = container.config.as_ref().and_then(|c| c.image.as_deref()).unwrap_or("?");
    let id = container.image.as_deref().map(short_id).unwrap_or_default();
    lines.push(format!("container {name}: image {image} ({id})"));
    if let Some(state) = &container.state {
        let status = state.status.map_or("unknown".to_string(), |s| s.to_string());
        let mut facts = vec![format!("state {status}")];
        if matches!(state.status, Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD | ContainerStateStatusEnum::RESTARTING)) {
            facts.push(format!("exit code {}", state.exit_code.unwrap_or_default()));
        }
        facts.push(format!("OOMKilled {}", state.oom_killed.unwrap_or(false)));
        if let Some(restarts) = container.restart_count.filter(|r| *r > 0) {
            facts.push(format!("restarted {restarts} times"));
        }
        lines.push(facts.join(", "));
        if let Some(error) = state.error.as_deref().filter(|e| !e.is_empty()) {
            lines.push(format!("engine error: {error}"));
        }
        if let Some(health) = &state.health {
            if let Some(status) = health.status.filter(|s| !matches!(s, HealthStatusEnum::EMPTY | HealthStatusEnum::NONE)) {
                let mut line = format!("health {status}");
                if let Some(streak) = health.failing_streak.filter(|s| *s > 0) {
                    line.push_str(&format!(" (failing streak {streak})"));
                }
                if let Some(last) = last_health_output(container) {
                    line.push_str(&format!("; last check: {last}"));
                }
                lines.push(line);
            }
        }
    }
    let logs = logs.trim_end();
    if logs.is_empty() {
        lines.push("no log output".into());
    } else {
        lines.push(format!("last {LOG_LINES} log lines:"));
        lines.push(logs.to_string());
    }
    lines.join("\n")
}

/// The last health check's exit code and output, on one line.
pub(super) fn last_health_output(container: &ContainerInspectResponse) -> Option<String> {
    let log = container.state.as_ref()?.health.as_ref()?.log.as_ref()?;
    let last = log.last()?;
    let output = last.output.as_deref().unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ");
    Some(format!("exit {}: {output}", last.exit_code.unwrap_or_default()))
}

/// `sha256:0123456789ab`: enough to tell images apart in a message.
pub(super) fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    format!("sha256:{}", hex.get(..12).unwrap_or(hex))
}
