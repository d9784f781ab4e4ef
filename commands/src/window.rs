//! `/window [env]`: whether the deployment window is open now, and when it next opens.

use crate::args::Args;
use crate::catalog::Catalog;
use crate::spec::{Param, Shape, Spec, Value};
use crate::Command;

pub(crate) const SPEC: Spec = Spec {
    name: "window",
    summary: "Tell whether the deployment window is open now and when it next opens",
    params: &[Param {
        name: "env",
        shape: Shape::Optional,
        value: Value::Text("<env>"),
        about: "Only this environment (default: all)",
    }],
    details: "Evaluates the environment's window policy (allowed days and hours, holidays, month-end \
days, freezes) in its own time zone, says whether a normal deployment may start now and, if not, why \
and when the window next opens. Hotfixes may deploy outside the window unless a freeze forbids them.",
    examples: &["/window", "/window production"],
};

pub(crate) fn parse(catalog: &Catalog, mut args: Args) -> Result<Command, String> {
    let env = args
        .next_positional()
        .map(|env| catalog.resolve_env(env.text()))
        .transpose()?;
    Ok(Command::Window { env })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{check_err, env, parse_ok};

    #[test]
    fn the_environment_is_optional() {
        assert_eq!(parse_ok("/window"), Command::Window { env: None });
        assert_eq!(
            parse_ok("/window PROD"),
            Command::Window {
                env: Some(env("production"))
            }
        );
    }

    #[test]
    fn bad_windows_say_exactly_what_is_wrong() {
        for (line, message) in [
            ("/window prod now", r#"unexpected extra argument "now""#),
            (
                "/window --at next-window",
                "unknown flag --at for /window (--at is a flag of /deploy)",
            ),
        ] {
            check_err(line, message, "/window [env]");
        }
    }
}
