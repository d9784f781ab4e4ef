//! Whatever is typed, parsing answers with a command or a well-formed usage error.

use deploybot_commands::tokenize::tokenize;
use deploybot_commands::{
    parse, parse_parts, quote, Catalog, Command, CommandName, EnvName, ServiceName, UsageError,
    Version,
};
use proptest::prelude::*;

fn runbook() -> Catalog {
    let env = |n: &str| EnvName::new(n).expect("valid environment name");
    let service = |n: &str| ServiceName::new(n).expect("valid service name");
    Catalog::new(
        vec![
            (env("staging"), vec!["stg".into()]),
            (env("production"), vec!["prod".into()]),
        ],
        vec![service("backend"), service("frontend")],
    )
}

/// A usage error is one line of message plus a usage line, shown as `message\nUsage: usage`.
fn well_formed(input: &str, error: &UsageError) -> Result<(), TestCaseError> {
    prop_assert!(!error.message().is_empty(), "empty message for {input:?}");
    prop_assert!(
        !error.message().contains('\n'),
        "multi-line message for {input:?}: {error}"
    );
    prop_assert!(!error.usage().is_empty());
    prop_assert_eq!(
        error.to_string(),
        format!("{}\nUsage: {}", error.message(), error.usage())
    );
    if !input.contains('.') {
        prop_assert!(
            !error.message().ends_with('.'),
            "trailing period for {input:?}: {error}"
        );
    }
    Ok(())
}

fn command_names() -> impl Strategy<Value = CommandName> {
    prop::sample::select(CommandName::all().to_vec())
}

/// Words that reach deep into the grammar: flags, values, quotes of every kind.
fn vocabulary() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "v1.0.0",
        "1.0.0",
        "v1.2.3-rc.1",
        "prod",
        "production",
        "stg",
        "qa",
        "--services",
        "backend,frontend",
        "backend,",
        "frontend",
        "--hotfix",
        "\"db pool leak\"",
        "“db",
        "leak”",
        "‘x’",
        "don’t",
        "--dry-run",
        "--at",
        "next-window",
        "2026-12-01T10:00:00-05:00",
        "--to",
        "--with-db",
        "--limit",
        "--days",
        "5",
        "0",
        "-5",
        "#42",
        "42",
        "#0",
        "=",
        "--limit=7",
        "--hotfix=",
        "--x",
        "-h",
        "—dry-run",
        "\"",
        "\\\"",
        "\"\"",
        ",,",
        "deploy",
        "/deploy",
        "--",
        "-",
    ])
    .prop_map(String::from)
}

fn sentence() -> impl Strategy<Value = String> {
    prop::collection::vec(vocabulary(), 0..8).prop_map(|words| words.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn any_line_parses_or_fails_cleanly(line in any::<String>()) {
        if let Err(e) = parse(&runbook(), &line) {
            well_formed(&line, &e)?;
        }
        if let Err(e) = parse(&Catalog::empty(), &line) {
            well_formed(&line, &e)?;
        }
    }

    #[test]
    fn any_text_after_any_command_parses_or_fails_cleanly(command in command_names(), text in any::<String>()) {
        let line = format!("{command} {text}");
        match parse(&runbook(), &line) {
            Ok(parsed) => {
                let is_help = matches!(parsed, Command::Help { .. });
                prop_assert!(parsed.name() == command || is_help, "{line:?} gave {parsed:?}");
            }
            Err(e) => {
                well_formed(&line, &e)?;
                prop_assert_eq!(e.command(), Some(command));
            }
        }
        prop_assert_eq!(parse(&runbook(), &line), parse_parts(&runbook(), &command.to_string(), &text));
    }

    #[test]
    fn grammar_shaped_text_parses_or_fails_cleanly(command in command_names(), text in sentence()) {
        let line = format!("{command} {text}");
        match parse(&runbook(), &line) {
            Ok(parsed) => {
                let is_help = matches!(parsed, Command::Help { .. });
                prop_assert!(parsed.name() == command || is_help, "{line:?} gave {parsed:?}");
            }
            Err(e) => well_formed(&line, &e)?,
        }
    }

    #[test]
    fn quoted_values_come_back_unchanged(value in any::<String>()) {
        let tokens = tokenize(&quote(&value));
        let texts: Option<Vec<String>> = tokens.ok().map(|t| t.iter().map(|t| t.text().to_string()).collect());
        prop_assert_eq!(texts, Some(vec![value]));
    }

    #[test]
    fn any_quoted_hotfix_reason_is_kept(reason in any::<String>().prop_filter("blank", |r| !r.trim().is_empty())) {
        let text = format!("v1.0.0 prod --hotfix {}", quote(&reason));
        match parse_parts(&runbook(), "/deploy", &text) {
            Ok(Command::Deploy(args)) => prop_assert_eq!(args.hotfix.as_deref(), Some(reason.trim())),
            other => prop_assert!(false, "{text:?} gave {other:?}"),
        }
    }

    #[test]
    fn well_formed_versions_round_trip(
        major in 0u32..1000, minor in 0u32..1000, patch in 0u32..1000,
        pre in proptest::option::of("[0-9A-Za-z-]{1,8}(\\.[0-9A-Za-z-]{1,8}){0,3}"),
    ) {
        let tag = match &pre {
            Some(pre) => format!("v{major}.{minor}.{patch}-{pre}"),
            None => format!("v{major}.{minor}.{patch}"),
        };
        let version: Version = tag.parse().map_err(TestCaseError::fail)?;
        prop_assert_eq!(version.as_str(), tag.as_str());
        prop_assert_eq!(version.is_prerelease(), pre.is_some());
    }
}
