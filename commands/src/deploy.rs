//! `/deploy <version> <env> …`: request a deployment.

use chrono::{DateTime, FixedOffset};

use crate::args::Args;
use crate::catalog::Catalog;
use crate::newtypes::{EnvName, ServiceName, Version};
use crate::spec::{Param, Shape, Spec, Value};
use crate::Command;

pub(crate) const SPEC: Spec = Spec {
    name: "deploy",
    summary: "Request a deployment of a version to an environment",
    params: &[
        Param {
            name: "version",
            shape: Shape::Required,
            value: Value::Text("<version>"),
            about: "Release tag to deploy, e.g. v1.0.0 or v1.2.3-rc.1",
        },
        Param {
            name: "env",
            shape: Shape::Required,
            value: Value::Text("<env>"),
            about: "Environment (name or alias), e.g. staging or prod",
        },
        Param {
            name: "services",
            shape: Shape::Flag,
            value: Value::Services,
            about: "Only these services, comma-separated (default: all)",
        },
        Param {
            name: "hotfix",
            shape: Shape::Flag,
            value: Value::Reason,
            about: "Deploy as a hotfix outside the window, with this reason",
        },
        Param {
            name: "dry-run",
            shape: Shape::Flag,
            value: Value::Switch,
            about: "Run the preflight checks only; change nothing",
        },
        Param {
            name: "at",
            shape: Shape::Flag,
            value: Value::Text("next-window|<RFC3339>"),
            about: "Schedule it: next-window, or an instant like 2026-12-01T10:00:00-05:00",
        },
    ],
    details: "Checks the environment's deployment window, lock, promotion rule and checklist, asks for \
approval when the environment needs it, then runs the runbook: backup, migrations, deploy, verify, monitor.

--services limits the deployment to some services. --hotfix deploys outside the window (not during a \
freeze that forbids hotfixes); the reason is recorded in history. --dry-run only runs the preflight checks. \
--at next-window queues the deployment until the window opens; --at with an RFC 3339 instant schedules it.",
    examples: &[
        "/deploy v1.0.0 staging",
        "/deploy v1.2.3-rc.1 prod --services backend",
        "/deploy v1.0.1 production --hotfix \"db pool leak\"",
        "/deploy v1.1.0 production --dry-run",
        "/deploy v1.1.0 production --at next-window",
        "/deploy v1.1.0 production --at 2026-12-01T10:00:00-05:00",
    ],
};

/// A requested deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployArgs {
    pub version: Version,
    pub env: EnvName,
    /// `None` means every service of the environment.
    pub services: Option<Vec<ServiceName>>,
    /// The hotfix reason, when this is a hotfix.
    pub hotfix: Option<String>,
    pub dry_run: bool,
    /// When to start, if not now.
    pub at: Option<At>,
}

/// When a scheduled deployment starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// When the environment's deployment window next opens.
    NextWindow,
    Instant(DateTime<FixedOffset>),
}

pub(crate) fn parse(catalog: &Catalog, mut args: Args) -> Result<Command, String> {
    let Some(version) = args.next_positional() else {
        return Err("missing <version> and <env>: what should be deployed, and where? e.g. /deploy v1.0.0 staging".into());
    };
    let version: Version = version.text().parse()?;
    let Some(env) = args.next_positional() else {
        return Err(format!(
            "missing <env>: which environment should {version} go to?"
        ));
    };
    let env = catalog.resolve_env(env.text())?;
    let services = args.services(catalog, "services")?;
    let hotfix = args.reason("hotfix")?;
    let dry_run = args.switch("dry-run");
    let at = args
        .value("at")
        .map(|token| parse_at(token.text()))
        .transpose()?;
    if dry_run && at.is_some() {
        return Err(
            "--dry-run and --at cannot be combined: a dry run checks now and changes nothing"
                .into(),
        );
    }
    Ok(Command::Deploy(DeployArgs {
        version,
        env,
        services,
        hotfix,
        dry_run,
        at,
    }))
}

fn parse_at(text: &str) -> Result<At, String> {
    if text.eq_ignore_ascii_case("next-window") {
        return Ok(At::NextWindow);
    }
    DateTime::parse_from_rfc3339(text).map(At::Instant).map_err(|_| {
        format!(
            "--at must be next-window or an RFC 3339 instant like 2026-12-01T10:00:00-05:00, got {}",
            crate::text::echo(text)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{check_err, env, parse_ok, service, version};

    fn deploy(line: &str) -> DeployArgs {
        match parse_ok(line) {
            Command::Deploy(args) => args,
            other => panic!("{line} parsed as {other:?}"),
        }
    }

    fn plain(v: &str, e: &str) -> DeployArgs {
        DeployArgs {
            version: version(v),
            env: env(e),
            services: None,
            hotfix: None,
            dry_run: false,
            at: None,
        }
    }

    #[test]
    fn a_version_and_an_environment_request_a_deployment() {
        assert_eq!(deploy("/deploy v1.0.0 staging"), plain("v1.0.0", "staging"));
        assert_eq!(
            deploy("/deploy v1.2.3-rc.1 prod"),
            plain("v1.2.3-rc.1", "production")
        );
    }

    #[test]
    fn every_flag_is_read() {
        assert_eq!(
            deploy("/deploy v1.0.1 prod --services backend,frontend --hotfix \"db pool leak\" --at next-window"),
            DeployArgs {
                services: Some(vec![service("backend"), service("frontend")]),
                hotfix: Some("db pool leak".into()),
                at: Some(At::NextWindow),
                ..plain("v1.0.1", "production")
            }
        );
        assert_eq!(
            deploy("/deploy v1.0.0 staging --dry-run"),
            DeployArgs {
                dry_run: true,
                ..plain("v1.0.0", "staging")
            }
        );
    }

    #[test]
    fn flags_may_come_first_and_use_equals() {
        assert_eq!(
            deploy("/deploy --hotfix=\"db leak\" --services=backend v1.0.0 prod"),
            DeployArgs {
                services: Some(vec![service("backend")]),
                hotfix: Some("db leak".into()),
                ..plain("v1.0.0", "production")
            }
        );
    }

    #[test]
    fn a_one_word_reason_needs_no_quotes() {
        assert_eq!(
            deploy("/deploy v1.0.0 prod --hotfix CVE-2026-1")
                .hotfix
                .as_deref(),
            Some("CVE-2026-1")
        );
    }

    #[test]
    fn at_takes_an_rfc3339_instant_with_its_offset() {
        let at = deploy("/deploy v1.0.0 prod --at 2026-12-01T10:00:00-05:00").at;
        let expected = DateTime::parse_from_rfc3339("2026-12-01T15:00:00Z")
            .ok()
            .map(At::Instant);
        assert_eq!(at, expected);
        let Some(At::Instant(instant)) = at else {
            panic!("no instant")
        };
        assert_eq!(instant.offset().local_minus_utc(), -5 * 3600);
    }

    #[test]
    fn services_may_be_listed_with_spaces_after_commas() {
        assert_eq!(
            deploy("/deploy v1.0.0 prod --services backend, frontend").services,
            Some(vec![service("backend"), service("frontend")])
        );
    }

    #[test]
    fn bad_deploys_say_exactly_what_is_wrong() {
        for (line, message) in [
            ("/deploy", "missing <version> and <env>: what should be deployed, and where? e.g. /deploy v1.0.0 staging"),
            ("/deploy v1.0.0", "missing <env>: which environment should v1.0.0 go to?"),
            ("/deploy 1.0 prod", r#"malformed version "1.0" — versions are tags like v1.0.0 or v1.2.3-rc.1"#),
            ("/deploy v1.0.0 prod --hotfx x", "unknown flag --hotfx for /deploy (did you mean --hotfix?)"),
            ("/deploy v1.0.0 prod --hotfix db pool leak", r#"the hotfix reason must be quoted: --hotfix "db pool leak""#),
            ("/deploy --hotfix db pool leak v1.0.0 prod", r#"the hotfix reason must be quoted: --hotfix "db pool leak""#),
            ("/deploy v1.0.0 prod --hotfix \"\"", "the hotfix reason must not be empty"),
            ("/deploy v1.0.0 prod --hotfix", "--hotfix needs a value: --hotfix \"reason\""),
            ("/deploy v1.0.0 prod --hotfix --dry-run", "--hotfix needs a value: --hotfix \"reason\""),
            (
                "/deploy v1.0.0 prod --at tomorrow",
                r#"--at must be next-window or an RFC 3339 instant like 2026-12-01T10:00:00-05:00, got "tomorrow""#,
            ),
            (
                "/deploy v1.0.0 prod --at 2026-12-01T10:00:00",
                r#"--at must be next-window or an RFC 3339 instant like 2026-12-01T10:00:00-05:00, got "2026-12-01T10:00:00""#,
            ),
            ("/deploy v1.0.0 prod --dry-run --at next-window", "--dry-run and --at cannot be combined: a dry run checks now and changes nothing"),
            ("/deploy v1.0.0 prod --dry-run=yes", "--dry-run takes no value"),
            ("/deploy v1.0.0 prod --dry-run --dry-run", "--dry-run given twice"),
            ("/deploy v1.0.0 prod --services backend --services frontend", "--services given twice"),
            ("/deploy v1.0.0 prod --services backend,backend", "backend is listed twice in --services"),
            ("/deploy v1.0.0 prod --services api", r#"unknown service "api" — known services: backend, frontend"#),
            ("/deploy v1.0.0 prod --services backend,,frontend", r#"--services has an empty entry in "backend,,frontend" — list services as a,b"#),
            ("/deploy v1.0.0 prod --services \"\"", "--services needs at least one service: --services a,b"),
            ("/deploy v1.0.0 prod staging", r#"unexpected extra argument "staging""#),
            ("/deploy v1.0.0 prod --with-db", "unknown flag --with-db for /deploy (--with-db is a flag of /rollback)"),
            ("/deploy v1.0.0 prod --zzz", "unknown flag --zzz for /deploy — its flags are --services, --hotfix, --dry-run and --at"),
        ] {
            check_err(line, message, "/deploy <version> <env> [--services a,b] [--hotfix \"reason\"] [--dry-run] [--at next-window|<RFC3339>]");
        }
    }
}
