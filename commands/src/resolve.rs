//! `/resolve <deployment-id> "what was done"`: close a deployment that a human had to finish.

use crate::args::Args;
use crate::catalog::Catalog;
use crate::newtypes::DeploymentId;
use crate::spec::{Param, Shape, Spec, Value};
use crate::Command;

pub(crate) const SPEC: Spec = Spec {
    name: "resolve",
    summary: "Close a failed rollback or an interrupted deployment after fixing things by hand",
    params: &[
        Param {
            name: "deployment-id",
            shape: Shape::Required,
            value: Value::Id,
            about: "The rollback_failed or interrupted deployment, e.g. 42 for #42",
        },
        Param {
            name: "note",
            shape: Shape::Required,
            value: Value::Reason,
            about: "What was done by hand; it goes into the history entry",
        },
    ],
    details: "When a rollback fails, or the bot was interrupted in a step that is not safe to \
repeat, the environment stays held until a person has checked and fixed what runs. /resolve \
records what they did in the deployment's history, closes it and releases the environment. \
Approvers of the environment may resolve (deployers where it has no approvers). The other way \
out of a failed rollback is rolling forward: /deploy <version> <env> --hotfix \"reason\".",
    examples: &[
        "/resolve #42 \"restarted v1.0.0 by hand; health checks pass\"",
        "/resolve 42 \"restored the schema from the 10:02 backup\"",
    ],
};

pub(crate) fn parse(_catalog: &Catalog, mut args: Args) -> Result<Command, String> {
    let Some(id) = args.next_positional() else {
        return Err(
            "missing <deployment-id> and \"note\": which deployment is resolved, and how? e.g. /resolve #42 \"restarted v1.0.0 by hand\""
                .into(),
        );
    };
    let id = id.text().parse::<DeploymentId>()?;
    let Some(note) = args.next_positional() else {
        return Err(format!(
            "missing \"note\": say what was done to fix {id}, e.g. /resolve {id} \"restarted v1.0.0 by hand\""
        ));
    };
    let note = note.text().trim();
    if note.is_empty() {
        return Err(format!("the note must not be empty: say what was done to fix {id}"));
    }
    Ok(Command::Resolve { id, note: note.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{check_err, parse_ok};

    #[test]
    fn a_deployment_is_resolved_with_a_note() {
        assert_eq!(
            parse_ok("/resolve #42 \"restarted by hand\""),
            Command::Resolve {
                id: DeploymentId::new(42),
                note: "restarted by hand".into()
            }
        );
        assert_eq!(
            parse_ok("/resolve 7 fixed"),
            Command::Resolve {
                id: DeploymentId::new(7),
                note: "fixed".into()
            }
        );
    }

    #[test]
    fn bad_resolves_say_exactly_what_is_wrong() {
        for (line, message) in [
            (
                "/resolve",
                "missing <deployment-id> and \"note\": which deployment is resolved, and how? e.g. /resolve #42 \"restarted v1.0.0 by hand\"",
            ),
            (
                "/resolve #42",
                "missing \"note\": say what was done to fix #42, e.g. /resolve #42 \"restarted v1.0.0 by hand\"",
            ),
            ("/resolve prod fixed", r#"malformed deployment id "prod" — ids look like #42"#),
            ("/resolve #42 \"  \"", "the note must not be empty: say what was done to fix #42"),
            ("/resolve #42 fixed it", r#"the note must be quoted: /resolve #42 "fixed it""#),
        ] {
            check_err(line, message, "/resolve <deployment-id> \"note\"");
        }
    }
}
