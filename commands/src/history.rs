//! `/history [env] [--limit N]`: recent deployments.

use crate::args::Args;
use crate::catalog::Catalog;
use crate::spec::{Param, Shape, Spec, Value};
use crate::Command;

/// How many deployments `/history` shows without `--limit`.
pub const DEFAULT_LIMIT: u32 = 10;

pub(crate) const SPEC: Spec = Spec {
    name: "history",
    summary: "List recent deployments with version, date, who deployed and approved, duration and outcome",
    params: &[
        Param {
            name: "env",
            shape: Shape::Optional,
            value: Value::Text("<env>"),
            about: "Only this environment (default: all)",
        },
        Param {
            name: "limit",
            shape: Shape::Flag,
            value: Value::Number { placeholder: "N", min: 1, max: 100 },
            about: "How many deployments to show, 1 to 100 (default 10)",
        },
    ],
    details: "Lists the most recent deployments, newest first, in the runbook's history template: \
version, date, deployed by, approvers, duration, issues and rollback.",
    examples: &["/history", "/history production --limit 25"],
};

pub(crate) fn parse(catalog: &Catalog, mut args: Args) -> Result<Command, String> {
    let env = args
        .next_positional()
        .map(|env| catalog.resolve_env(env.text()))
        .transpose()?;
    let limit = args.number("limit", DEFAULT_LIMIT)?;
    Ok(Command::History { env, limit })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{check_err, env, parse_ok};

    #[test]
    fn the_environment_and_limit_are_optional() {
        assert_eq!(
            parse_ok("/history"),
            Command::History {
                env: None,
                limit: 10
            }
        );
        assert_eq!(
            parse_ok("/history prod"),
            Command::History {
                env: Some(env("production")),
                limit: 10
            }
        );
        assert_eq!(
            parse_ok("/history --limit 100"),
            Command::History {
                env: None,
                limit: 100
            }
        );
        assert_eq!(
            parse_ok("/history --limit=1 stg"),
            Command::History {
                env: Some(env("staging")),
                limit: 1
            }
        );
    }

    #[test]
    fn the_limit_must_be_between_1_and_100() {
        for (line, message) in [
            (
                "/history --limit abc",
                r#"--limit must be a number from 1 to 100, got "abc""#,
            ),
            (
                "/history --limit 0",
                r#"--limit must be a number from 1 to 100, got "0""#,
            ),
            (
                "/history --limit 101",
                r#"--limit must be a number from 1 to 100, got "101""#,
            ),
            (
                "/history --limit -5",
                r#"--limit must be a number from 1 to 100, got "-5""#,
            ),
            (
                "/history --limit 99999999999",
                r#"--limit must be a number from 1 to 100, got "99999999999""#,
            ),
            ("/history --limit", "--limit needs a value: --limit N"),
            (
                "/history --lmit 5",
                "unknown flag --lmit for /history (did you mean --limit?)",
            ),
            ("/history prod 5", r#"unexpected extra argument "5""#),
        ] {
            check_err(line, message, "/history [env] [--limit N]");
        }
    }
}
