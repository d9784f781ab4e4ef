//! `/lock <env> "reason"`: hold an environment so that nothing deploys there.

use crate::args::{reason, Args};
use crate::catalog::Catalog;
use crate::spec::{Param, Shape, Spec, Value};
use crate::Command;

pub(crate) const SPEC: Spec = Spec {
    name: "lock",
    summary: "Hold an environment so that no deployment starts there",
    params: &[
        Param {
            name: "env",
            shape: Shape::Required,
            value: Value::Text("<env>"),
            about: "Environment (name or alias) to hold",
        },
        Param {
            name: "reason",
            shape: Shape::Required,
            value: Value::Reason,
            about: "Why it is held; shown to anyone who tries to deploy there",
        },
    ],
    details:
        "Deployments to a locked environment are refused with the lock's reason until someone \
runs /unlock. The reason is one quoted string, or a single word.",
    examples: &[
        "/lock production \"investigating a billing incident\"",
        "/lock stg demo",
    ],
};

pub(crate) fn parse(catalog: &Catalog, mut args: Args) -> Result<Command, String> {
    let Some(env) = args.next_positional() else {
        return Err(
            "missing <env> and \"reason\": which environment should be held, and why?".into(),
        );
    };
    let env = catalog.resolve_env(env.text())?;
    let Some(why) = args.next_positional() else {
        return Err(format!(
            "missing \"reason\": why lock {env}? e.g. /lock {env} \"database migration\""
        ));
    };
    Ok(Command::Lock {
        reason: reason("lock", &why)?,
        env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{check_err, env, parse_ok};

    #[test]
    fn an_environment_is_locked_with_a_reason() {
        assert_eq!(
            parse_ok("/lock prod \"billing incident\""),
            Command::Lock {
                env: env("production"),
                reason: "billing incident".into()
            }
        );
        assert_eq!(
            parse_ok("/lock prod “billing incident”"),
            Command::Lock {
                env: env("production"),
                reason: "billing incident".into()
            }
        );
        assert_eq!(
            parse_ok("/lock stg demo"),
            Command::Lock {
                env: env("staging"),
                reason: "demo".into()
            }
        );
    }

    #[test]
    fn bad_locks_say_exactly_what_is_wrong() {
        for (line, message) in [
            ("/lock", "missing <env> and \"reason\": which environment should be held, and why?"),
            ("/lock prod", "missing \"reason\": why lock production? e.g. /lock production \"database migration\""),
            ("/lock prod billing incident", r#"the lock reason must be quoted: /lock prod "billing incident""#),
            ("/lock prod \"  \"", "the lock reason must not be empty"),
            ("/lock prod \"billing\" incident", r#"unexpected extra argument "incident""#),
            ("/lock prod \"billing incident", "unterminated quote: \"billing incident is missing its closing quote"),
        ] {
            check_err(line, message, "/lock <env> \"reason\"");
        }
    }
}
