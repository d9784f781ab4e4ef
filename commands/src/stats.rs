//! `/stats [env] [--days N]`: delivery metrics.

use crate::args::Args;
use crate::catalog::Catalog;
use crate::spec::{Param, Shape, Spec, Value};
use crate::Command;

/// The period `/stats` covers without `--days`.
pub const DEFAULT_DAYS: u32 = 30;

pub(crate) const SPEC: Spec = Spec {
    name: "stats",
    summary: "Show deployment frequency, change failure rate, time to restore and median duration",
    params: &[
        Param {
            name: "env",
            shape: Shape::Optional,
            value: Value::Text("<env>"),
            about: "Only this environment (default: all)",
        },
        Param {
            name: "days",
            shape: Shape::Flag,
            value: Value::Number {
                placeholder: "N",
                min: 1,
                max: 3650,
            },
            about: "Period to cover in days, 1 to 3650 (default 30)",
        },
    ],
    details:
        "Computes, over the period: deployment frequency, change failure rate (deployments that \
failed or were rolled back), mean time to restore, and median deployment duration.",
    examples: &["/stats", "/stats production --days 90"],
};

pub(crate) fn parse(catalog: &Catalog, mut args: Args) -> Result<Command, String> {
    let env = args
        .next_positional()
        .map(|env| catalog.resolve_env(env.text()))
        .transpose()?;
    let days = args.number("days", DEFAULT_DAYS)?;
    Ok(Command::Stats { env, days })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{check_err, env, parse_ok};

    #[test]
    fn the_environment_and_period_are_optional() {
        assert_eq!(
            parse_ok("/stats"),
            Command::Stats {
                env: None,
                days: 30
            }
        );
        assert_eq!(
            parse_ok("/stats prod --days 3650"),
            Command::Stats {
                env: Some(env("production")),
                days: 3650
            }
        );
    }

    #[test]
    fn the_period_must_be_between_1_and_3650_days() {
        for (line, message) in [
            (
                "/stats --days 0",
                r#"--days must be a number from 1 to 3650, got "0""#,
            ),
            (
                "/stats --days 3651",
                r#"--days must be a number from 1 to 3650, got "3651""#,
            ),
            (
                "/stats --days week",
                r#"--days must be a number from 1 to 3650, got "week""#,
            ),
            (
                "/stats --day 7",
                "unknown flag --day for /stats (did you mean --days?)",
            ),
        ] {
            check_err(line, message, "/stats [env] [--days N]");
        }
    }
}
