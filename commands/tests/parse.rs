//! The command language through its public entry points, as the chat adapters use it.

use chrono::DateTime;
use deploybot_commands::{
    help_text, parse, parse_parts, quote, At, Catalog, Command, CommandName, DeployArgs,
    DeploymentId, EnvName, RollbackArgs, ServiceName, UsageError, Version,
};

fn env(name: &str) -> EnvName {
    EnvName::new(name).expect("valid environment name")
}

fn service(name: &str) -> ServiceName {
    ServiceName::new(name).expect("valid service name")
}

fn version(tag: &str) -> Version {
    tag.parse().expect("valid version")
}

/// The runbook's environments and services, as the config loader would build them.
fn runbook() -> Catalog {
    Catalog::new(
        vec![
            (env("development"), vec!["dev".into()]),
            (env("staging"), vec!["stg".into()]),
            (env("production"), vec!["prod".into()]),
        ],
        vec![service("backend"), service("frontend")],
    )
}

fn ok(line: &str) -> Command {
    parse(&runbook(), line).unwrap_or_else(|e| panic!("{line:?} did not parse:\n{e}"))
}

fn err(line: &str) -> UsageError {
    match parse(&runbook(), line) {
        Ok(command) => panic!("{line:?} parsed as {command:?}"),
        Err(e) => e,
    }
}

fn deploy(v: &str, e: &str) -> DeployArgs {
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
fn every_command_has_a_happy_path() {
    let instant = DateTime::parse_from_rfc3339("2026-12-01T10:00:00-05:00").expect("valid instant");
    for (line, expected) in [
        (
            "/deploy v1.0.0 prod",
            Command::Deploy(deploy("v1.0.0", "production")),
        ),
        (
            "/deploy v1.2.3-rc.1 staging --services frontend --dry-run",
            Command::Deploy(DeployArgs {
                services: Some(vec![service("frontend")]),
                dry_run: true,
                ..deploy("v1.2.3-rc.1", "staging")
            }),
        ),
        (
            "/deploy v1.0.0 prod --at 2026-12-01T10:00:00-05:00",
            Command::Deploy(DeployArgs {
                at: Some(At::Instant(instant)),
                ..deploy("v1.0.0", "production")
            }),
        ),
        (
            "/rollback prod --to v1.0.0 --with-db",
            Command::Rollback(RollbackArgs {
                env: env("production"),
                to: Some(version("v1.0.0")),
                with_db: true,
                services: None,
            }),
        ),
        (
            "/verify dev",
            Command::Verify {
                env: env("development"),
            },
        ),
        ("/status", Command::Status { env: None }),
        (
            "/status stg",
            Command::Status {
                env: Some(env("staging")),
            },
        ),
        (
            "/history prod --limit 5",
            Command::History {
                env: Some(env("production")),
                limit: 5,
            },
        ),
        (
            "/history",
            Command::History {
                env: None,
                limit: 10,
            },
        ),
        ("/stats --days 7", Command::Stats { env: None, days: 7 }),
        (
            "/stats",
            Command::Stats {
                env: None,
                days: 30,
            },
        ),
        (
            "/window prod",
            Command::Window {
                env: Some(env("production")),
            },
        ),
        (
            "/lock prod \"migrating the ledger\"",
            Command::Lock {
                env: env("production"),
                reason: "migrating the ledger".into(),
            },
        ),
        (
            "/unlock prod",
            Command::Unlock {
                env: env("production"),
            },
        ),
        (
            "/cancel #42",
            Command::Cancel {
                id: DeploymentId::new(42),
            },
        ),
        (
            "/cancel 42",
            Command::Cancel {
                id: DeploymentId::new(42),
            },
        ),
        ("/help", Command::Help { topic: None }),
        (
            "/help /deploy",
            Command::Help {
                topic: Some(CommandName::Deploy),
            },
        ),
    ] {
        assert_eq!(ok(line), expected, "{line}");
    }
}

#[test]
fn aliases_resolve_to_the_canonical_environment() {
    for (typed, canonical) in [
        ("prod", "production"),
        ("production", "production"),
        ("stg", "staging"),
        ("dev", "development"),
    ] {
        assert_eq!(
            ok(&format!("/verify {typed}")),
            Command::Verify {
                env: env(canonical)
            }
        );
    }
}

#[test]
fn an_unknown_environment_is_named_and_the_known_ones_listed() {
    let e = err("/deploy v1.0.0 qa");
    assert_eq!(
        e.message(),
        r#"unknown environment "qa" — known environments: development (dev), staging (stg), production (prod)"#
    );
    assert_eq!(e.command(), Some(CommandName::Deploy));
}

#[test]
fn an_empty_catalog_accepts_any_well_formed_names() {
    let parsed = parse(
        &Catalog::empty(),
        "/deploy v1.0.0 qa-2 --services api,worker",
    );
    assert_eq!(
        parsed,
        Ok(Command::Deploy(DeployArgs {
            services: Some(vec![service("api"), service("worker")]),
            ..deploy("v1.0.0", "qa-2")
        }))
    );
}

#[test]
fn slack_smart_quotes_group_a_reason() {
    for line in [
        "/deploy v1.0.1 prod --hotfix “db pool leak”",
        "/deploy v1.0.1 prod --hotfix ‘db pool leak’",
        "/deploy v1.0.1 prod --hotfix \"db pool leak\"",
        "/deploy v1.0.1 prod --hotfix=“db pool leak”",
    ] {
        let Command::Deploy(args) = ok(line) else {
            panic!("{line} is not a deploy")
        };
        assert_eq!(args.hotfix.as_deref(), Some("db pool leak"), "{line}");
    }
}

#[test]
fn flags_typed_with_a_chat_clients_long_dash_still_count() {
    let Command::Deploy(args) = ok("/deploy v1.0.0 prod —dry-run") else {
        panic!("not a deploy")
    };
    assert!(args.dry_run);
}

#[test]
fn a_reason_with_spaces_must_be_quoted() {
    assert_eq!(
        err("/deploy v1.0.1 prod --hotfix db pool leak").message(),
        r#"the hotfix reason must be quoted: --hotfix "db pool leak""#
    );
    assert_eq!(
        err("/lock prod db pool leak").message(),
        r#"the lock reason must be quoted: /lock prod "db pool leak""#
    );
}

#[test]
fn every_bad_input_gets_a_specific_message_and_the_usage_line() {
    let deploy_usage = "/deploy <version> <env> [--services a,b] [--hotfix \"reason\"] [--dry-run] [--at next-window|<RFC3339>]";
    for (line, message, usage) in [
        ("/deploy v1.0.0 prod --hotfx \"x\"", "unknown flag --hotfx for /deploy (did you mean --hotfix?)", deploy_usage),
        ("/deploy 1.0 prod", r#"malformed version "1.0" — versions are tags like v1.0.0 or v1.2.3-rc.1"#, deploy_usage),
        ("/deploy v1.0.0", "missing <env>: which environment should v1.0.0 go to?", deploy_usage),
        ("/deploy v1.0.0 prod --hotfix db pool leak", r#"the hotfix reason must be quoted: --hotfix "db pool leak""#, deploy_usage),
        (
            "/deploy v1.0.0 prod --at soon",
            r#"--at must be next-window or an RFC 3339 instant like 2026-12-01T10:00:00-05:00, got "soon""#,
            deploy_usage,
        ),
        ("/deploy v1.0.0 prod extra", r#"unexpected extra argument "extra""#, deploy_usage),
        ("/deploy v1.0.0 prod --dry-run --dry-run", "--dry-run given twice", deploy_usage),
        ("/deploy v1.0.0 prod --hotfix \"db pool leak", "unterminated quote: \"db pool leak is missing its closing quote", deploy_usage),
        ("/rollback prod --to", "--to needs a value: --to <version>", "/rollback <env> [--to <version>] [--with-db] [--services a,b]"),
        ("/history --limit abc", r#"--limit must be a number from 1 to 100, got "abc""#, "/history [env] [--limit N]"),
        ("/stats --days 0", r#"--days must be a number from 1 to 3650, got "0""#, "/stats [env] [--days N]"),
        ("/cancel forty-two", r#"malformed deployment id "forty-two" — ids look like #42"#, "/cancel <deployment-id>"),
        ("/lock prod", "missing \"reason\": why lock production? e.g. /lock production \"database migration\"", "/lock <env> \"reason\""),
        ("/unlock", "missing <env>: which environment should be unlocked?", "/unlock <env>"),
        ("/help deplyo", "unknown command /deplyo (did you mean /deploy?)", "/help [command]"),
        (
            "/deplyo v1.0.0 prod",
            "unknown command /deplyo (did you mean /deploy?)",
            "/deploy, /rollback, /verify, /status, /history, /stats, /window, /lock, /unlock, /cancel, /resolve, /release, /logs, /help",
        ),
    ] {
        let e = err(line);
        assert_eq!(e.message(), message, "message for {line}");
        assert_eq!(e.usage(), usage, "usage for {line}");
        assert_eq!(e.to_string(), format!("{message}\nUsage: {usage}"));
        assert!(!e.message().ends_with('.'), "{line}");
    }
}

#[test]
fn usage_errors_are_std_errors() {
    let e: Box<dyn std::error::Error> = Box::new(err("/verify"));
    assert!(e.to_string().starts_with("missing <env>"));
}

#[test]
fn slack_parts_parse_like_a_typed_line() {
    assert_eq!(
        parse_parts(&runbook(), "/deploy", "v1.0.0 prod"),
        Ok(Command::Deploy(deploy("v1.0.0", "production")))
    );
    assert_eq!(
        parse_parts(&runbook(), "/status", ""),
        Ok(Command::Status { env: None })
    );
    assert_eq!(
        parse_parts(&runbook(), "deploy", "  v1.0.0   prod  "),
        Ok(Command::Deploy(deploy("v1.0.0", "production")))
    );
}

#[test]
fn text_rebuilt_from_discord_options_parses() {
    let reason = r#"the "pool" leaks \ badly"#;
    let text = format!(
        "v1.0.0 prod --hotfix {} --services {}",
        quote(reason),
        quote("backend,frontend")
    );
    let Ok(Command::Deploy(args)) = parse_parts(&runbook(), "/deploy", &text) else {
        panic!("{text} did not parse")
    };
    assert_eq!(args.hotfix.as_deref(), Some(reason));
    assert_eq!(
        args.services,
        Some(vec![service("backend"), service("frontend")])
    );
    assert_eq!(
        parse_parts(&runbook(), "/lock", &format!("prod {}", quote("x"))),
        Ok(Command::Lock {
            env: env("production"),
            reason: "x".into()
        })
    );
    assert_eq!(
        parse_parts(&runbook(), "/cancel", "42"),
        Ok(Command::Cancel {
            id: DeploymentId::new(42)
        })
    );
}

#[test]
fn help_covers_every_command() {
    let overview = help_text(None);
    for command in CommandName::all() {
        assert!(overview.contains(&command.to_string()));
        let page = help_text(Some(*command));
        assert!(
            page.contains(&format!("Usage: {}", command.usage())),
            "{command}"
        );
        assert!(page.contains("Examples:"), "{command}");
    }
}

#[test]
fn newtypes_display_as_users_type_them() {
    assert_eq!(DeploymentId::new(42).to_string(), "#42");
    assert_eq!(version("v1.2.3-rc.1").to_string(), "v1.2.3-rc.1");
    assert!(version("v1.2.3-rc.1").is_prerelease());
    assert_eq!(env("production").as_str(), "production");
    assert!("1.0.0"
        .parse::<Version>()
        .is_err_and(|e| e.contains("v1.0.0")));
}
