//! `/logs <env> <service> [--since 10m] [--grep PATTERN] [--tail N]`: a service's recent logs.

use crate::args::Args;
use crate::catalog::Catalog;
use crate::newtypes::{EnvName, ServiceName};
use crate::spec::{Param, Shape, Spec, Value};
use crate::text::echo;
use crate::Command;

/// How far back `/logs` reads without `--since`, in seconds.
pub const DEFAULT_SINCE_SECS: u64 = 600;
/// How many lines `/logs` shows without `--tail`.
pub const DEFAULT_TAIL: u32 = 50;
/// The most `--since` may ask for: one week.
const MAX_SINCE_SECS: u64 = 7 * 24 * 3600;

pub(crate) const SPEC: Spec = Spec {
    name: "logs",
    summary: "Show a service's recent logs, capped and redacted",
    params: &[
        Param {
            name: "env",
            shape: Shape::Required,
            value: Value::Text("<env>"),
            about: "Environment (name or alias)",
        },
        Param {
            name: "service",
            shape: Shape::Required,
            value: Value::Text("<service>"),
            about: "Service whose logs to show",
        },
        Param {
            name: "since",
            shape: Shape::Flag,
            value: Value::Text("10m"),
            about: "How far back: 30s, 10m, 2h or 1d, up to 7d (default 10m)",
        },
        Param {
            name: "grep",
            shape: Shape::Flag,
            value: Value::Text("PATTERN"),
            about: "Only lines matching this regular expression",
        },
        Param {
            name: "tail",
            shape: Shape::Flag,
            value: Value::Number {
                placeholder: "N",
                min: 1,
                max: 500,
            },
            about: "At most the last N lines, 1 to 500 (default 50)",
        },
    ],
    details: "Reads the service's logs from the environment's deploy target (Docker, CloudWatch Logs \
for ECS, the Azure Container Instances logs API, or the target's configured logs command), keeps \
the lines that match --grep, and shows the last --tail of them with a summary (lines read, \
matching, errors). Secrets are masked and long output is cut. Only the environment's deployers \
may read its logs.",
    examples: &[
        "/logs production backend",
        "/logs prod backend --since 1h --grep \"SQLException|NullPointerException\"",
        "/logs staging frontend --tail 20",
    ],
};

/// A request for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsArgs {
    pub env: EnvName,
    pub service: ServiceName,
    /// How far back, in seconds.
    pub since_secs: u64,
    /// A regular expression, checked by whoever runs it.
    pub grep: Option<String>,
    pub tail: u32,
}

pub(crate) fn parse(catalog: &Catalog, mut args: Args) -> Result<Command, String> {
    let Some(env) = args.next_positional() else {
        return Err("missing <env>: whose logs?".into());
    };
    let env = catalog.resolve_env(env.text())?;
    let Some(service) = args.next_positional() else {
        return Err("missing <service>: which service's logs?".into());
    };
    let service = catalog.resolve_service(service.text())?;
    let since_secs = match args.value("since") {
        None => DEFAULT_SINCE_SECS,
        Some(token) => parse_since(token.text())?,
    };
    let grep = match args.value("grep") {
        None => None,
        Some(token) if token.text().is_empty() => {
            return Err("--grep needs a pattern: --grep PATTERN".into())
        }
        Some(token) => Some(token.text().to_string()),
    };
    let tail = args.number("tail", DEFAULT_TAIL)?;
    Ok(Command::Logs(LogsArgs {
        env,
        service,
        since_secs,
        grep,
        tail,
    }))
}

/// `30s`, `10m`, `2h`, `1d` → seconds (at least 1 s, at most 7 days).
fn parse_since(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "--since must be a duration such as 30s, 10m, 2h or 1d, got {}",
            echo(text)
        )
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(unit_secs).ok_or_else(bad)?;
    if secs == 0 {
        return Err(format!("--since must be longer than 0, got {}", echo(text)));
    }
    if secs > MAX_SINCE_SECS {
        return Err(format!(
            "--since may go back at most 7d, got {}",
            echo(text)
        ));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{check_err, env, parse_ok, service};

    fn logs(line: &str) -> LogsArgs {
        match parse_ok(line) {
            Command::Logs(args) => args,
            other => panic!("{line} parsed as {other:?}"),
        }
    }

    #[test]
    fn defaults_and_flags_are_read() {
        assert_eq!(
            logs("/logs prod backend"),
            LogsArgs {
                env: env("production"),
                service: service("backend"),
                since_secs: 600,
                grep: None,
                tail: 50
            }
        );
        assert_eq!(
            logs("/logs stg frontend --since 2h --grep \"SQLException|NPE\" --tail 5"),
            LogsArgs {
                env: env("staging"),
                service: service("frontend"),
                since_secs: 7200,
                grep: Some("SQLException|NPE".into()),
                tail: 5
            }
        );
        assert_eq!(logs("/logs prod backend --since 30s").since_secs, 30);
        assert_eq!(logs("/logs prod backend --since 7d").since_secs, 604_800);
    }

    #[test]
    fn bad_logs_requests_say_exactly_what_is_wrong() {
        let usage =
            "/logs <env> <service> [--since 10m] [--grep PATTERN] [--tail N]";
        for (line, message) in [
            ("/logs", "missing <env>: whose logs?"),
            ("/logs prod", "missing <service>: which service's logs?"),
            (
                "/logs prod backend --since 10",
                r#"--since must be a duration such as 30s, 10m, 2h or 1d, got "10""#,
            ),
            (
                "/logs prod backend --since 5w",
                r#"--since must be a duration such as 30s, 10m, 2h or 1d, got "5w""#,
            ),
            (
                "/logs prod backend --since 0m",
                r#"--since must be longer than 0, got "0m""#,
            ),
            (
                "/logs prod backend --since 8d",
                r#"--since may go back at most 7d, got "8d""#,
            ),
            (
                "/logs prod backend --tail 0",
                r#"--tail must be a number from 1 to 500, got "0""#,
            ),
            (
                "/logs prod backend --grep \"\"",
                "--grep needs a pattern: --grep PATTERN",
            ),
        ] {
            check_err(line, message, usage);
        }
    }
}
