//! `/help [command]`: usage of one command, or an overview of all of them.

use crate::args::Args;
use crate::catalog::Catalog;
use crate::spec::{Param, Shape, Spec, Value};
use crate::{Command, CommandName};

pub(crate) const SPEC: Spec = Spec {
    name: "help",
    summary: "Show how to use deploybot's commands",
    params: &[Param {
        name: "command",
        shape: Shape::Optional,
        value: Value::Command,
        about: "The command to explain (default: list them all)",
    }],
    details: "Without an argument, lists every command with a one-line summary. With a command \
name (with or without its slash), shows its usage, what it does and examples. Any command also \
accepts --help.",
    examples: &["/help", "/help deploy", "/help /rollback"],
};

pub(crate) fn parse(_catalog: &Catalog, mut args: Args) -> Result<Command, String> {
    let topic = args
        .next_positional()
        .map(|topic| topic.text().parse::<CommandName>())
        .transpose()?;
    Ok(Command::Help { topic })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{check_err, parse_ok};

    #[test]
    fn the_topic_is_a_command_with_or_without_its_slash() {
        assert_eq!(parse_ok("/help"), Command::Help { topic: None });
        assert_eq!(
            parse_ok("/help deploy"),
            Command::Help {
                topic: Some(CommandName::Deploy)
            }
        );
        assert_eq!(
            parse_ok("/help /Rollback"),
            Command::Help {
                topic: Some(CommandName::Rollback)
            }
        );
    }

    #[test]
    fn bad_help_topics_say_exactly_what_is_wrong() {
        for (line, message) in [
            (
                "/help deplyo",
                "unknown command /deplyo (did you mean /deploy?)",
            ),
            (
                "/help deploy rollback",
                r#"unexpected extra argument "rollback""#,
            ),
        ] {
            check_err(line, message, "/help [command]");
        }
    }
}
