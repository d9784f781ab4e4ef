//! `/unlock <env>`: release an environment held by `/lock`.

use crate::args::Args;
use crate::catalog::Catalog;
use crate::spec::{Param, Shape, Spec, Value};
use crate::Command;

pub(crate) const SPEC: Spec = Spec {
    name: "unlock",
    summary: "Release an environment held with /lock",
    params: &[Param {
        name: "env",
        shape: Shape::Required,
        value: Value::Text("<env>"),
        about: "Environment (name or alias) to release",
    }],
    details: "Removes the environment's lock so that deployments may start there again.",
    examples: &["/unlock production"],
};

pub(crate) fn parse(catalog: &Catalog, mut args: Args) -> Result<Command, String> {
    let Some(env) = args.next_positional() else {
        return Err("missing <env>: which environment should be unlocked?".into());
    };
    Ok(Command::Unlock {
        env: catalog.resolve_env(env.text())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{check_err, env, parse_ok};

    #[test]
    fn an_environment_or_alias_is_unlocked() {
        assert_eq!(
            parse_ok("/unlock prod"),
            Command::Unlock {
                env: env("production")
            }
        );
    }

    #[test]
    fn bad_unlocks_say_exactly_what_is_wrong() {
        for (line, message) in [
            (
                "/unlock",
                "missing <env>: which environment should be unlocked?",
            ),
            (
                "/unlock prod \"done\"",
                r#"unexpected extra argument "done""#,
            ),
        ] {
            check_err(line, message, "/unlock <env>");
        }
    }
}
