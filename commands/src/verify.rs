//! `/verify <env>`: run the health checks and smoke tests now.

use crate::args::Args;
use crate::catalog::Catalog;
use crate::spec::{Param, Shape, Spec, Value};
use crate::Command;

pub(crate) const SPEC: Spec = Spec {
    name: "verify",
    summary: "Run an environment's health checks and smoke tests now",
    params: &[Param {
        name: "env",
        shape: Shape::Required,
        value: Value::Text("<env>"),
        about: "Environment (name or alias) to verify",
    }],
    details:
        "Runs the same health checks and smoke tests as the verify step of a deployment, against \
what is running now, and reports each result.",
    examples: &["/verify production", "/verify stg"],
};

pub(crate) fn parse(catalog: &Catalog, mut args: Args) -> Result<Command, String> {
    let Some(env) = args.next_positional() else {
        return Err("missing <env>: which environment should be verified?".into());
    };
    Ok(Command::Verify {
        env: catalog.resolve_env(env.text())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{check_err, env, parse_ok};

    #[test]
    fn an_environment_or_alias_is_verified() {
        assert_eq!(
            parse_ok("/verify production"),
            Command::Verify {
                env: env("production")
            }
        );
        assert_eq!(
            parse_ok("/verify stg"),
            Command::Verify {
                env: env("staging")
            }
        );
    }

    #[test]
    fn bad_verifies_say_exactly_what_is_wrong() {
        for (line, message) in [
            (
                "/verify",
                "missing <env>: which environment should be verified?",
            ),
            ("/verify prod stg", r#"unexpected extra argument "stg""#),
            (
                "/verify prod --all",
                "unknown flag --all for /verify, which takes no flags",
            ),
            (
                "/verify prodd",
                r#"unknown environment "prodd" (did you mean prod?) — known environments: development (dev), staging (stg), production (prod)"#,
            ),
        ] {
            check_err(line, message, "/verify <env>");
        }
    }
}
