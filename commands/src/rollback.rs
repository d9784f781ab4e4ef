//! `/rollback <env> …`: go back to the previous successful version.

use crate::args::Args;
use crate::catalog::Catalog;
use crate::newtypes::{EnvName, ServiceName, Version};
use crate::spec::{Param, Shape, Spec, Value};
use crate::Command;

pub(crate) const SPEC: Spec = Spec {
    name: "rollback",
    summary: "Roll an environment back to its previous successful version",
    params: &[
        Param {
            name: "env",
            shape: Shape::Required,
            value: Value::Text("<env>"),
            about: "Environment (name or alias) to roll back",
        },
        Param {
            name: "to",
            shape: Shape::Flag,
            value: Value::Text("<version>"),
            about: "Roll back to this version instead of the previous successful one",
        },
        Param {
            name: "with-db",
            shape: Shape::Flag,
            value: Value::Switch,
            about: "Also restore the database backup taken before the deployment (needs approval)",
        },
        Param {
            name: "services",
            shape: Shape::Flag,
            value: Value::Services,
            about: "Only these services, comma-separated (default: all)",
        },
    ],
    details: "Redeploys the version that last succeeded on the environment (or the one given with --to), \
then runs the health checks and smoke tests again and reports them.

--with-db also restores the database backup taken before the deployment being rolled back; it always \
needs approval. --services limits the rollback to some services.",
    examples: &[
        "/rollback production",
        "/rollback prod --to v1.0.0",
        "/rollback production --with-db",
        "/rollback staging --services frontend",
    ],
};

/// A requested rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackArgs {
    pub env: EnvName,
    /// `None` means the previous successful version.
    pub to: Option<Version>,
    pub with_db: bool,
    /// `None` means every service of the environment.
    pub services: Option<Vec<ServiceName>>,
}

pub(crate) fn parse(catalog: &Catalog, mut args: Args) -> Result<Command, String> {
    let Some(env) = args.next_positional() else {
        return Err("missing <env>: which environment should be rolled back?".into());
    };
    let env = catalog.resolve_env(env.text())?;
    let to = args
        .value("to")
        .map(|token| token.text().parse::<Version>())
        .transpose()?;
    let with_db = args.switch("with-db");
    let services = args.services(catalog, "services")?;
    Ok(Command::Rollback(RollbackArgs {
        env,
        to,
        with_db,
        services,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{check_err, env, parse_ok, service, version};

    fn rollback(line: &str) -> RollbackArgs {
        match parse_ok(line) {
            Command::Rollback(args) => args,
            other => panic!("{line} parsed as {other:?}"),
        }
    }

    fn plain(e: &str) -> RollbackArgs {
        RollbackArgs {
            env: env(e),
            to: None,
            with_db: false,
            services: None,
        }
    }

    #[test]
    fn an_environment_alone_rolls_back_to_the_previous_version() {
        assert_eq!(rollback("/rollback production"), plain("production"));
        assert_eq!(rollback("/rollback prod"), plain("production"));
    }

    #[test]
    fn every_flag_is_read() {
        assert_eq!(
            rollback("/rollback prod --to v1.0.0 --with-db --services backend"),
            RollbackArgs {
                to: Some(version("v1.0.0")),
                with_db: true,
                services: Some(vec![service("backend")]),
                ..plain("production")
            }
        );
        assert_eq!(
            rollback("/rollback stg --to=v1.2.3-rc.1").to,
            Some(version("v1.2.3-rc.1"))
        );
    }

    #[test]
    fn bad_rollbacks_say_exactly_what_is_wrong() {
        for (line, message) in [
            (
                "/rollback",
                "missing <env>: which environment should be rolled back?",
            ),
            ("/rollback prod --to", "--to needs a value: --to <version>"),
            (
                "/rollback prod --to --with-db",
                "--to needs a value: --to <version>",
            ),
            (
                "/rollback prod --to 1.0.0",
                r#"malformed version "1.0.0" — did you mean v1.0.0? versions are tags like v1.0.0 or v1.2.3-rc.1"#,
            ),
            (
                "/rollback prod --withdb",
                "unknown flag --withdb for /rollback (did you mean --with-db?)",
            ),
            (
                "/rollback prod v1.0.0",
                r#"unexpected extra argument "v1.0.0""#,
            ),
            (
                "/rollback qa",
                r#"unknown environment "qa" — known environments: development (dev), staging (stg), production (prod)"#,
            ),
        ] {
            check_err(
                line,
                message,
                "/rollback <env> [--to <version>] [--with-db] [--services a,b]",
            );
        }
    }
}
