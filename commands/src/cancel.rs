//! `/cancel <deployment-id>`: cancel a request, a scheduled deploy, or a running job.

use crate::args::Args;
use crate::catalog::Catalog;
use crate::newtypes::DeploymentId;
use crate::spec::{Param, Shape, Spec, Value};
use crate::Command;

pub(crate) const SPEC: Spec = Spec {
    name: "cancel",
    summary: "Cancel a deployment request, a scheduled deployment, or a running one at its next safe point",
    params: &[Param {
        name: "deployment-id",
        shape: Shape::Required,
        value: Value::Id,
        about: "The deployment's id, e.g. 42 for #42",
    }],
    details: "Cancels a deployment that awaits approval, is queued or scheduled, or is running; a \
running deployment stops at its next safe point.",
    examples: &["/cancel #42", "/cancel 42"],
};

pub(crate) fn parse(_catalog: &Catalog, mut args: Args) -> Result<Command, String> {
    let Some(id) = args.next_positional() else {
        return Err(
            "missing <deployment-id>: which deployment should be cancelled? e.g. /cancel #42"
                .into(),
        );
    };
    Ok(Command::Cancel {
        id: id.text().parse::<DeploymentId>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{check_err, parse_ok};

    #[test]
    fn an_id_is_read_with_or_without_its_hash() {
        assert_eq!(
            parse_ok("/cancel #42"),
            Command::Cancel {
                id: DeploymentId::new(42)
            }
        );
        assert_eq!(
            parse_ok("/cancel 42"),
            Command::Cancel {
                id: DeploymentId::new(42)
            }
        );
    }

    #[test]
    fn bad_cancels_say_exactly_what_is_wrong() {
        for (line, message) in [
            (
                "/cancel",
                "missing <deployment-id>: which deployment should be cancelled? e.g. /cancel #42",
            ),
            (
                "/cancel prod",
                r#"malformed deployment id "prod" — ids look like #42"#,
            ),
            ("/cancel #0", "there is no deployment #0 — ids start at #1"),
            ("/cancel #42 #43", r##"unexpected extra argument "#43""##),
        ] {
            check_err(line, message, "/cancel <deployment-id>");
        }
    }
}
