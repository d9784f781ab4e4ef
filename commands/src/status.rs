//! `/status [env]`: what is running where, what is in flight, locks and scheduled deploys.

use crate::args::Args;
use crate::catalog::Catalog;
use crate::spec::{Param, Shape, Spec, Value};
use crate::Command;

pub(crate) const SPEC: Spec = Spec {
    name: "status",
    summary: "Show what runs where, deployments in flight, locks and scheduled deploys",
    params: &[Param {
        name: "env",
        shape: Shape::Optional,
        value: Value::Text("<env>"),
        about: "Only this environment (default: all)",
    }],
    details: "Shows, per environment, the version of each service that is running, any deployment \
in flight or awaiting approval, the lock if there is one, and queued or scheduled deployments.",
    examples: &["/status", "/status prod"],
};

pub(crate) fn parse(catalog: &Catalog, mut args: Args) -> Result<Command, String> {
    let env = args
        .next_positional()
        .map(|env| catalog.resolve_env(env.text()))
        .transpose()?;
    Ok(Command::Status { env })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{check_err, env, parse_ok};

    #[test]
    fn the_environment_is_optional() {
        assert_eq!(parse_ok("/status"), Command::Status { env: None });
        assert_eq!(
            parse_ok("/status prod"),
            Command::Status {
                env: Some(env("production"))
            }
        );
    }

    #[test]
    fn bad_statuses_say_exactly_what_is_wrong() {
        for (line, message) in [
            ("/status prod stg", r#"unexpected extra argument "stg""#),
            (
                "/status prod stg dev",
                r#"unexpected extra arguments "stg dev""#,
            ),
            (
                "/status --limit 3",
                "unknown flag --limit for /status (--limit is a flag of /history)",
            ),
        ] {
            check_err(line, message, "/status [env]");
        }
    }
}
