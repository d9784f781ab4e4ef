//! deploybot's chat command language: what users may type, what it means, and how it is
//! explained and registered on each platform.
//!
//! The crate is pure: no I/O, no clock, no network. Given the operator's [`Catalog`] of
//! environments and services, [`parse`] (a whole line) or [`parse_parts`] (Slack's
//! command + text) turns input into a typed [`Command`] or a [`UsageError`] that names the
//! mistake and carries the command's usage line.
//!
//! Layout:
//! - `tokenize`: words, quoted strings (including Slack's smart quotes), [`quote`] for adapters.
//! - `newtypes`: [`Version`], [`EnvName`], [`ServiceName`], [`DeploymentId`], validated once.
//! - `catalog`: [`Catalog`], resolving aliases to canonical environment names.
//! - `spec` and `args`: a command's declarative definition and the shared flag scanner it drives.
//! - one file per command (`deploy.rs`, `rollback.rs`, … `help.rs`): its definition (parameters,
//!   summary, help, examples), its grammar and its typed result.
//! - `manifest`: the Slack app manifest and the Discord command registration, generated from the
//!   same definitions (checked in under `commands/manifests/`).
//!
//! *Invariant*: every usage line, help page and manifest entry is derived from the command's
//! `Spec`; nothing about a command is written twice.

mod args;
mod cancel;
mod catalog;
mod deploy;
mod help;
mod history;
mod lock;
mod logs;
pub mod manifest;
mod newtypes;
mod release;
mod resolve;
mod rollback;
mod spec;
mod stats;
mod status;
mod text;
pub mod tokenize;
mod unlock;
mod verify;
mod window;

use std::fmt;
use std::str::FromStr;

pub use catalog::Catalog;
pub use deploy::{At, DeployArgs};
pub use history::DEFAULT_LIMIT as DEFAULT_HISTORY_LIMIT;
pub use logs::LogsArgs;
pub use manifest::{discord_commands_json, discord_text, slack_manifest_yaml, DiscordOption};
pub use newtypes::{DeploymentId, EnvName, ServiceName, Version};
pub use release::ReleaseArgs;
pub use rollback::RollbackArgs;
pub use stats::DEFAULT_DAYS as DEFAULT_STATS_DAYS;
pub use tokenize::quote;

use args::Args;
use spec::Spec;

/// A well-formed command, with every name resolved against the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Deploy(DeployArgs),
    Rollback(RollbackArgs),
    Verify { env: EnvName },
    Status { env: Option<EnvName> },
    History { env: Option<EnvName>, limit: u32 },
    Stats { env: Option<EnvName>, days: u32 },
    Window { env: Option<EnvName> },
    Lock { env: EnvName, reason: String },
    Unlock { env: EnvName },
    Cancel { id: DeploymentId },
    Resolve { id: DeploymentId, note: String },
    Release(ReleaseArgs),
    Logs(LogsArgs),
    Help { topic: Option<CommandName> },
}

impl Command {
    pub fn name(&self) -> CommandName {
        match self {
            Command::Deploy(_) => CommandName::Deploy,
            Command::Rollback(_) => CommandName::Rollback,
            Command::Verify { .. } => CommandName::Verify,
            Command::Status { .. } => CommandName::Status,
            Command::History { .. } => CommandName::History,
            Command::Stats { .. } => CommandName::Stats,
            Command::Window { .. } => CommandName::Window,
            Command::Lock { .. } => CommandName::Lock,
            Command::Unlock { .. } => CommandName::Unlock,
            Command::Cancel { .. } => CommandName::Cancel,
            Command::Resolve { .. } => CommandName::Resolve,
            Command::Release(_) => CommandName::Release,
            Command::Logs(_) => CommandName::Logs,
            Command::Help { .. } => CommandName::Help,
        }
    }
}

/// The chat commands, in the order help lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CommandName {
    Deploy,
    Rollback,
    Verify,
    Status,
    History,
    Stats,
    Window,
    Lock,
    Unlock,
    Cancel,
    Resolve,
    Release,
    Logs,
    Help,
}

const ALL: [CommandName; 14] = [
    CommandName::Deploy,
    CommandName::Rollback,
    CommandName::Verify,
    CommandName::Status,
    CommandName::History,
    CommandName::Stats,
    CommandName::Window,
    CommandName::Lock,
    CommandName::Unlock,
    CommandName::Cancel,
    CommandName::Resolve,
    CommandName::Release,
    CommandName::Logs,
    CommandName::Help,
];

impl CommandName {
    pub fn all() -> &'static [CommandName] {
        &ALL
    }

    /// The name without its slash: `deploy`.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// One line, no trailing period: `Request a deployment of a version to an environment`.
    pub fn summary(self) -> &'static str {
        self.spec().summary
    }

    /// The arguments part of the usage line: `<env> [--to <version>] [--with-db] [--services a,b]`.
    pub fn arguments(self) -> String {
        self.spec().arguments()
    }

    /// `/rollback <env> [--to <version>] [--with-db] [--services a,b]`
    pub fn usage(self) -> String {
        self.spec().usage()
    }

    /// Complete example lines, each of which parses.
    pub fn examples(self) -> &'static [&'static str] {
        self.spec().examples
    }

    /// The multi-line help page: summary, usage, description, arguments and examples.
    pub fn help(self) -> String {
        let spec = self.spec();
        let mut page = format!(
            "/{} — {}\nUsage: {}\n\n{}\n",
            spec.name,
            spec.summary,
            spec.usage(),
            spec.details
        );
        let rows: Vec<(String, &str)> = spec
            .params
            .iter()
            .map(|p| match p.shape {
                spec::Shape::Flag => (
                    format!("--{} {}", p.name, p.placeholder())
                        .trim_end()
                        .to_string(),
                    p.about,
                ),
                _ => (p.usage(), p.about),
            })
            .collect();
        if !rows.is_empty() {
            let width = rows
                .iter()
                .map(|(form, _)| form.chars().count())
                .max()
                .unwrap_or(0);
            page.push_str("\nArguments:\n");
            for (form, about) in rows {
                page.push_str(&format!("  {form:<width$}  {about}\n"));
            }
        }
        page.push_str("\nExamples:\n");
        for example in spec.examples {
            page.push_str(&format!("  {example}\n"));
        }
        page
    }

    pub(crate) fn spec(self) -> &'static Spec {
        match self {
            CommandName::Deploy => &deploy::SPEC,
            CommandName::Rollback => &rollback::SPEC,
            CommandName::Verify => &verify::SPEC,
            CommandName::Status => &status::SPEC,
            CommandName::History => &history::SPEC,
            CommandName::Stats => &stats::SPEC,
            CommandName::Window => &window::SPEC,
            CommandName::Lock => &lock::SPEC,
            CommandName::Unlock => &unlock::SPEC,
            CommandName::Cancel => &cancel::SPEC,
            CommandName::Resolve => &resolve::SPEC,
            CommandName::Release => &release::SPEC,
            CommandName::Logs => &logs::SPEC,
            CommandName::Help => &help::SPEC,
        }
    }

    fn parser(self) -> fn(&Catalog, Args) -> Result<Command, String> {
        match self {
            CommandName::Deploy => deploy::parse,
            CommandName::Rollback => rollback::parse,
            CommandName::Verify => verify::parse,
            CommandName::Status => status::parse,
            CommandName::History => history::parse,
            CommandName::Stats => stats::parse,
            CommandName::Window => window::parse,
            CommandName::Lock => lock::parse,
            CommandName::Unlock => unlock::parse,
            CommandName::Cancel => cancel::parse,
            CommandName::Resolve => resolve::parse,
            CommandName::Release => release::parse,
            CommandName::Logs => logs::parse,
            CommandName::Help => help::parse,
        }
    }
}

/// Accepts `deploy` or `/deploy`, in any case.
impl FromStr for CommandName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bare = s.strip_prefix('/').unwrap_or(s);
        if bare.is_empty() {
            return Err("no command given — type /help to see the commands".into());
        }
        if let Some(name) = ALL.iter().find(|c| c.name().eq_ignore_ascii_case(bare)) {
            return Ok(*name);
        }
        let shown = text::shorten(bare);
        match text::closest(bare, ALL.iter().map(|c| c.name())) {
            Some(near) => Err(format!("unknown command /{shown} (did you mean /{near}?)")),
            None => Err(format!("unknown command /{shown}")),
        }
    }
}

impl fmt::Display for CommandName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.name())
    }
}

/// Why a line is not a command: one specific sentence, and the usage line to fix it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    message: String,
    usage: String,
    command: Option<CommandName>,
}

impl UsageError {
    fn for_command(command: CommandName, message: String) -> Self {
        UsageError {
            message,
            usage: command.usage(),
            command: Some(command),
        }
    }

    fn unknown_command(message: String) -> Self {
        let names: Vec<String> = ALL.iter().map(CommandName::to_string).collect();
        UsageError {
            message,
            usage: names.join(", "),
            command: None,
        }
    }

    /// What is wrong, in one line without a trailing period.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The command's usage line, or the list of commands when the command itself is unknown.
    pub fn usage(&self) -> &str {
        &self.usage
    }

    /// The command concerned, when it was recognised.
    pub fn command(&self) -> Option<CommandName> {
        self.command
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\nUsage: {}", self.message, self.usage)
    }
}

impl std::error::Error for UsageError {}

/// Parses a whole line as typed: `/deploy v1.0.0 prod --hotfix "db pool leak"`.
///
/// The leading slash is optional, so a console can accept `deploy v1.0.0 prod` too.
pub fn parse(catalog: &Catalog, line: &str) -> Result<Command, UsageError> {
    let line = line.trim_start();
    let (command, text) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    parse_parts(catalog, command, text)
}

/// Parses a command and its text given separately, as Slack sends them (`/deploy`, `v1.0.0 prod`).
///
/// Any command followed by `--help` (or `-h`) anywhere in its text asks for its help page.
pub fn parse_parts(catalog: &Catalog, command: &str, text: &str) -> Result<Command, UsageError> {
    let name: CommandName = command
        .trim()
        .parse()
        .map_err(UsageError::unknown_command)?;
    let fail = |message: String| UsageError::for_command(name, message);
    let tokens = tokenize::tokenize(text).map_err(|e| fail(e.to_string()))?;
    if tokens
        .iter()
        .any(|t| matches!(t.as_flag(), Some("help" | "h")))
    {
        return Ok(Command::Help { topic: Some(name) });
    }
    let args = Args::scan(name.spec(), tokens).map_err(fail)?;
    name.parser()(catalog, args).map_err(fail)
}

/// The help page of one command, or the overview of all of them.
pub fn help_text(topic: Option<CommandName>) -> String {
    if let Some(topic) = topic {
        return topic.help();
    }
    let width = ALL.iter().map(|c| c.name().len() + 1).max().unwrap_or(0);
    let mut text = String::from("deploybot commands:\n");
    for command in ALL {
        text.push_str(&format!(
            "  {:<width$}  {}\n",
            command.to_string(),
            command.summary()
        ));
    }
    text.push_str("\nType /help <command> for its usage and examples, e.g. /help deploy\n");
    text
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub fn env(name: &str) -> EnvName {
        EnvName::new(name).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn service(name: &str) -> ServiceName {
        ServiceName::new(name).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn version(tag: &str) -> Version {
        tag.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The runbook's environments and services.
    pub fn catalog() -> Catalog {
        Catalog::new(
            vec![
                (env("development"), vec!["dev".into()]),
                (env("staging"), vec!["stg".into()]),
                (env("production"), vec!["prod".into()]),
            ],
            vec![service("backend"), service("frontend")],
        )
    }

    pub fn parse_ok(line: &str) -> Command {
        parse(&catalog(), line).unwrap_or_else(|e| panic!("{line:?} did not parse:\n{e}"))
    }

    /// `line` fails with exactly `message`, followed by `usage`.
    pub fn check_err(line: &str, message: &str, usage: &str) {
        match parse(&catalog(), line) {
            Ok(command) => panic!("{line:?} parsed as {command:?}, expected: {message}"),
            Err(e) => {
                assert_eq!(e.message(), message, "message for {line:?}");
                assert_eq!(e.usage(), usage, "usage for {line:?}");
                assert_eq!(e.to_string(), format!("{message}\nUsage: {usage}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn the_usage_lines_are_those_of_the_product_spec() {
        for (command, usage) in [
            (
                CommandName::Deploy,
                "/deploy <version> <env> [--services a,b] [--hotfix \"reason\"] [--dry-run] [--at next-window|<RFC3339>]",
            ),
            (CommandName::Rollback, "/rollback <env> [--to <version>] [--with-db] [--services a,b]"),
            (CommandName::Verify, "/verify <env>"),
            (CommandName::Status, "/status [env]"),
            (CommandName::History, "/history [env] [--limit N]"),
            (CommandName::Stats, "/stats [env] [--days N]"),
            (CommandName::Window, "/window [env]"),
            (CommandName::Lock, "/lock <env> \"reason\""),
            (CommandName::Unlock, "/unlock <env>"),
            (CommandName::Cancel, "/cancel <deployment-id>"),
            (CommandName::Resolve, "/resolve <deployment-id> \"note\""),
            (CommandName::Release, "/release <version> [--ref <branch|sha>] [--dry-run]"),
            (CommandName::Help, "/help [command]"),
        ] {
            assert_eq!(command.usage(), usage);
        }
    }

    #[test]
    fn every_example_in_the_help_parses_as_its_command() {
        for command in CommandName::all() {
            for example in command.examples() {
                assert_eq!(parse_ok(example).name(), *command, "{example}");
            }
        }
    }

    #[test]
    fn summaries_are_one_short_line_without_a_period() {
        for command in CommandName::all() {
            let summary = command.summary();
            assert!(
                summary.len() <= 100 && !summary.contains('\n') && !summary.ends_with('.'),
                "{summary}"
            );
        }
    }

    #[test]
    fn command_names_round_trip() {
        for command in CommandName::all() {
            assert_eq!(command.to_string().parse::<CommandName>(), Ok(*command));
            assert_eq!(command.name().parse::<CommandName>(), Ok(*command));
        }
    }

    #[test]
    fn an_unknown_command_suggests_the_nearest_and_lists_them_all() {
        let err = parse(&catalog(), "/deplyo v1.0.0 prod").err();
        let err = err.unwrap_or_else(|| panic!("/deplyo parsed"));
        assert_eq!(
            err.message(),
            "unknown command /deplyo (did you mean /deploy?)"
        );
        assert_eq!(
            err.usage(),
            "/deploy, /rollback, /verify, /status, /history, /stats, /window, /lock, /unlock, /cancel, /resolve, /release, /logs, /help"
        );
        assert_eq!(err.command(), None);
        assert!(parse(&catalog(), "/frobnicate")
            .is_err_and(|e| e.message() == "unknown command /frobnicate"));
    }

    #[test]
    fn an_empty_line_points_to_help() {
        for line in ["", "   ", "/"] {
            let err = parse(&catalog(), line)
                .err()
                .map(|e| e.message().to_string());
            assert!(err.is_some_and(|m| m.contains("/help")), "{line:?}");
        }
    }

    #[test]
    fn the_slash_and_case_of_the_command_do_not_matter() {
        assert_eq!(parse_ok("deploy v1.0.0 prod").name(), CommandName::Deploy);
        assert_eq!(parse_ok("/DEPLOY v1.0.0 prod").name(), CommandName::Deploy);
    }

    #[test]
    fn parts_parse_like_the_whole_line() {
        let whole = parse(&catalog(), "/deploy v1.0.0 prod --hotfix \"db pool leak\"");
        let parts = parse_parts(
            &catalog(),
            "/deploy",
            "v1.0.0 prod --hotfix \"db pool leak\"",
        );
        assert_eq!(whole, parts);
        assert!(whole.is_ok());
    }

    #[test]
    fn help_flag_on_any_command_asks_for_its_help() {
        for command in CommandName::all() {
            assert_eq!(
                parse_ok(&format!("{command} --help")),
                Command::Help {
                    topic: Some(*command)
                }
            );
        }
        assert_eq!(
            parse_ok("/deploy v1.0.0 -h"),
            Command::Help {
                topic: Some(CommandName::Deploy)
            }
        );
    }

    #[test]
    fn help_pages_show_usage_arguments_and_examples() {
        let page = help_text(Some(CommandName::History));
        assert_eq!(
            page,
            "/history — List recent deployments with version, date, who deployed and approved, duration and outcome\n\
             Usage: /history [env] [--limit N]\n\
             \n\
             Lists the most recent deployments, newest first, in the runbook's history template: version, date, \
             deployed by, approvers, duration, issues and rollback.\n\
             \n\
             Arguments:\n\
             \x20 [env]      Only this environment (default: all)\n\
             \x20 --limit N  How many deployments to show, 1 to 100 (default 10)\n\
             \n\
             Examples:\n\
             \x20 /history\n\
             \x20 /history production --limit 25\n"
        );
    }

    #[test]
    fn the_overview_lists_every_command() {
        let overview = help_text(None);
        for command in CommandName::all() {
            assert!(overview.contains(&format!("{command} ")), "{command}");
            assert!(overview.contains(command.summary()));
        }
    }
}
