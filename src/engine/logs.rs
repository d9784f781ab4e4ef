//! `/logs <env> <service>` and the logs the watch counts: read from the environment's target,
//! redacted, filtered, capped.

use std::sync::LazyLock;

use anyhow::Result;
use deploybot_commands::LogsArgs;
use regex::Regex;

use super::access::Role;
use super::{Engine, Reply};
use crate::chat::UserRef;
use crate::config::Environment;
use crate::targets::{LogQuery, LOG_FETCH_MAX_LINES};

/// The most characters of log text in one reply (Slack shows about 4 000 in a message).
pub(crate) const REPLY_LOG_CHARS: usize = 3_000;
/// A shown line is cut to this many characters.
pub(crate) const SHOWN_LINE_CHARS: usize = 300;
/// How long a target has to answer for logs.
const LOGS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What counts as an error line in the summary.
static ERROR_LINE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)(\berror\b|\bfatal\b|exception|\bpanic)").expect("a valid regex"));

impl Engine {
    pub(crate) async fn logs_command(&self, user: &UserRef, args: LogsArgs) -> Result<Reply> {
        let env = self.env(&args.env)?;
        if let Some(refusal) = self.authorize(user, &format!("read the logs of {}", env.name), env, None, &[Role::Deployer]).await? {
            return Ok(refusal);
        }
        if !env.services.contains(&args.service) {
            return Ok(Reply(format!(
                "⚠️ {} is not deployed in {} (services there: {}).",
                args.service,
                env.name,
                env.services.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        let grep = match args.grep.as_deref().map(Regex::new).transpose() {
            Ok(g) => g,
            Err(e) => return Ok(Reply(format!("⚠️ --grep \"{}\" is not a valid regular expression: {}", args.grep.unwrap_or_default(), first_line_of(&e.to_string())))),
        };
        let since_ms = self.now_ms() - args.since_secs as i64 * 1000;
        let lines = match self.read_logs(env, args.service.as_str(), since_ms, LOG_FETCH_MAX_LINES).await {
            Ok(lines) => lines,
            Err(why) => return Ok(Reply(format!("⚠️ Could not read the logs of {} in {}: {why}", args.service, env.name))),
        };
        let since = humantime::format_duration(std::time::Duration::from_secs(args.since_secs));
        Ok(Reply(render_logs(&format!("{} in {}, last {since}", args.service, env.name), &lines, grep.as_ref(), args.grep.as_deref(), args.tail as usize)))
    }

    /// `service`'s log lines in `env` since `since_ms` (at most `limit`, the latest), secrets
    /// masked; `Err` says why not, for a person to read.
    pub(crate) async fn read_logs(&self, env: &Environment, service: &str, since_ms: i64, limit: usize) -> Result<Vec<String>, String> {
        let target = self.targets.get(&env.name).ok_or_else(|| format!("{} has no deploy target", env.name))?;
        let service = deploybot_commands::ServiceName::new(service).map_err(|e| e.to_string())?;
        let query = LogQuery { since_ms, limit };
        match tokio::time::timeout(LOGS_TIMEOUT, target.logs(&service, &self.image_of(service.as_str()), &query)).await {
            Ok(Ok(lines)) => Ok(lines.iter().map(|l| crate::secrets::redact(l)).collect()),
            Ok(Err(e)) => Err(crate::secrets::redact(&e.to_string())),
            Err(_) => Err(format!("the {} target did not answer within {} s", target.kind(), LOGS_TIMEOUT.as_secs())),
        }
    }
}

fn first_line_of(s: &str) -> String {
    s.lines().filter(|l| !l.trim().is_empty()).map(str::trim).collect::<Vec<_>>().join(" ")
}

/// The reply: a summary line, then the last `tail` matching lines in a code block, cut to
/// [`REPLY_LOG_CHARS`] (the earliest shown lines go first).
pub(crate) fn render_logs(what: &str, lines: &[String], grep: Option<&Regex>, pattern: Option<&str>, tail: usize) -> String {
    let matching: Vec<&String> = lines.iter().filter(|l| grep.is_none_or(|g| g.is_match(l))).collect();
    let errors = matching.iter().filter(|l| ERROR_LINE.is_match(l)).count();
    let mut shown: Vec<String> = matching[matching.len().saturating_sub(tail)..].iter().map(|l| cut(l, SHOWN_LINE_CHARS)).collect();
    let mut dropped = 0;
    while shown.iter().map(|l| l.len() + 1).sum::<usize>() > REPLY_LOG_CHARS && !shown.is_empty() {
        shown.remove(0);
        dropped += 1;
    }
    let matched = match pattern {
        Some(p) => format!(", {} matching `{p}`", matching.len()),
        None => String::new(),
    };
    let mut text = format!(
        "📜 Logs of {what}: {} line{}{matched}, {errors} error line{}",
        lines.len(),
        if lines.len() == 1 { "" } else { "s" },
        if errors == 1 { "" } else { "s" },
    );
    if lines.len() >= LOG_FETCH_MAX_LINES {
        text.push_str(&format!(" (only the latest {LOG_FETCH_MAX_LINES} lines were read)"));
    }
    if shown.is_empty() {
        text.push_str(if matching.is_empty() { ". Nothing to show." } else { "." });
        return text;
    }
    text.push_str(&format!("; the last {}", shown.len()));
    if dropped > 0 {
        text.push_str(&format!(" ({dropped} more cut to fit)"));
    }
    text.push_str(&format!(":\n```\n{}\n```", shown.join("\n")));
    text
}

pub(crate) fn cut(line: &str, max: usize) -> String {
    match line.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_lines_matches_and_errors_and_the_text_is_capped() {
        let lines: Vec<String> = (0..1000).map(|i| if i % 10 == 0 { format!("{i} ERROR boom {}", "x".repeat(400)) } else { format!("{i} INFO ok") }).collect();
        let grep = Regex::new("ERROR").unwrap();
        let text = render_logs("backend in staging, last 10m", &lines, Some(&grep), Some("ERROR"), 50);
        assert!(text.starts_with("📜 Logs of backend in staging, last 10m: 1000 lines, 100 matching `ERROR`, 100 error lines; the last "), "{text}");
        assert!(text.contains("more cut to fit"), "{text}");
        assert!(text.len() < REPLY_LOG_CHARS + 300, "{}", text.len());
        assert!(text.contains("990 ERROR boom"), "the latest line is shown: {text}");
        assert!(!text.contains("INFO"), "{text}");
        let none = render_logs("x", &lines, Some(&Regex::new("nomatch").unwrap()), Some("nomatch"), 5);
        assert!(none.ends_with("0 matching `nomatch`, 0 error lines. Nothing to show."), "{none}");
    }
}
