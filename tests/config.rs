//! The operator's TOML file: the shipped one loads, every mistake in a broken one is reported with
//! its key path and line, and secrets never show in anything the bot prints about its config.

use std::path::Path;
use std::process::Command;

use chrono::{DateTime, Utc};
use deploybot::config::{Config, ConfigProblem};

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploybot.toml");
const BIN: &str = env!("CARGO_BIN_EXE_deploybot");

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
}

fn problems(text: &str) -> Vec<ConfigProblem> {
    match Config::parse(text) {
        Ok(_) => panic!("expected problems, the config loaded:\n{text}"),
        Err(p) => p,
    }
}

fn show(problems: &[ConfigProblem]) -> String {
    problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
}

/// Runs `deploybot --config FILE <args>` with `envs` set; (exit code, stdout, stderr).
fn deploybot(config: &Path, args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("DEPLOYBOT_CONFIG")
        // Only what the test gives: another test of this process may have set them.
        .env_remove("DEPLOYBOT_TEST_SLACK_BOT")
        .env_remove("DEPLOYBOT_TEST_SLACK_APP")
        .env_remove("DEPLOYBOT_TEST_DB_PASSWORD")
        .envs(envs.iter().copied())
        .current_dir(dir.path())
        .output()
        .expect("the deploybot binary runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A small valid config; cases below add one mistake each.
const BASE: &str = r#"
[bot]
database_url = "sqlite://deploybot.db"
timezone = "America/New_York"

[services.backend]
image = "registry.example.com/invoice-me-backend"

[services.frontend]
image = "registry.example.com/invoice-me-frontend"

[environments.staging]
channel = "C0STAGING"
aliases = ["stg"]
target = { kind = "command", deploy = ["./deploy.sh", "{service}", "{version}"], rollback = ["./deploy.sh", "{service}", "{previous}"] }

[environments.production]
channel = "C0PROD"
aliases = ["prod"]
requires = ["staging"]
target = { kind = "command", deploy = ["./deploy.sh", "{service}", "{version}"] }

[environments.production.window]
timezone = "America/New_York"
allow = [ { days = "tue-wed", hours = "10:00-14:00" } ]
"#;

// ------------------------------------------------------------------------------------ the shipped file

#[test]
fn the_shipped_deploybot_toml_loads_and_encodes_the_runbook() {
    let config = Config::load(Path::new(SHIPPED)).unwrap_or_else(|e| panic!("{e}"));
    let envs: Vec<&str> = config.environments.keys().map(|e| e.as_str()).collect();
    assert_eq!(envs, ["development", "production", "staging"]);
    assert_eq!(config.bot_timezone, chrono_tz::America::New_York);
    assert_eq!((config.reactions.approve.as_str(), config.reactions.reject.as_str(), config.reactions.rollback.as_str()), ("white_check_mark", "x", "rewind"));

    let prod = config.environments.values().find(|e| e.name.as_str() == "production").unwrap();
    assert_eq!(prod.target.kind(), "ecs");
    assert_eq!(prod.requires.iter().map(|e| e.as_str()).collect::<Vec<_>>(), ["staging"], "the promotion rule");
    assert_eq!(prod.services.iter().map(|s| s.as_str()).collect::<Vec<_>>(), ["backend", "frontend"], "backend before frontend");
    let approvals = prod.approvals.as_ref().expect("production needs approval");
    assert_eq!((approvals.required, approvals.self_approval, approvals.expires_after.as_secs()), (1, false, 1800));
    assert_eq!(approvals.approvers, ["U0CAROL", "group:S0DEVOPS"]);
    assert_eq!(prod.hotfix.approvals, 2);
    assert!(prod.backup.is_some() && prod.migrations.is_some() && prod.monitor.is_some(), "backup, Flyway and monitoring are configured");
    assert!(prod.policy.check(at("2026-12-01T10:00:00-05:00"), false).allowed, "Tuesday 10:00 is open");
    assert!(!prod.policy.check(at("2026-12-04T11:00:00-05:00"), false).allowed, "Friday is closed");
    assert!(!prod.policy.check(at("2026-12-29T11:00:00-05:00"), false).allowed, "month-end is closed");

    let parsed = deploybot_commands::parse(&config.catalog(), "/window prod").expect("prod is an alias");
    assert!(matches!(parsed, deploybot_commands::Command::Window { env: Some(ref e) } if e.as_str() == "production"), "{parsed:?}");
    assert!(config.required_secrets().is_empty(), "the console platform needs no secret");
}

// ------------------------------------------------------------------------------------ every mistake

/// Nine kinds of mistake over several tables; the line of each is the number on the left.
const BROKEN: &str = r#"[bot]
database_url = "sqlite://deploybot.db"
timezone = "Mars/Olympus_Mons"
colour = "blue"

[chat]
platform = "slack"

[chat.slack]
mode = "socket"
bot_token = "xoxb-1111-inline-secret"
app_token = "${SLACK_APP_TOKEN}"

[chat.discord]
token = "${DISCORD_TOKEN}"
api_url = "discord dot com"

[reactions]
approve = "thumbs up!"

[services.backend]
image = "registry.example.com/invoice-me-backend"

[environments.staging]
channel = "C0STAGING"
services = ["backend", "fronted"]
target = { kind = "command", deploy = ["./deploy.sh", "{service}", "{version}"], timeout = "5 fortnights" }

[environments.production]
channel = "C0PROD"
requires = ["stagging"]
target = { kind = "command", deploy = ["./deploy.sh", "{service}", "{version}"] }

[environments.production.window]
timezone = "America/New_York"
allow = [ { days = "tue-wed", hours = "10:00-14:00" } ]
freeze = [ { start = "0 18 32 12 *", end = "0 8 4 1 *", reason = "year-end freeze" } ]

[environments.production.approvals]
required = 1
approvers = ["U0CAROL"]
expires_after = "thirty minutes"
deadline = "never"
"#;

/// (key path, line, part of the message) of every mistake in [`BROKEN`].
const BROKEN_PROBLEMS: &[(&str, usize, &str)] = &[
    ("bot.timezone", 3, "unknown timezone \"Mars/Olympus_Mons\""),
    ("bot.colour", 4, "unknown field `colour`"),
    ("chat.slack.bot_token", 11, "secrets are never inline"),
    ("chat.discord.api_url", 16, "invalid URL \"discord dot com\""),
    ("reactions.approve", 19, "invalid emoji name \"thumbs up!\""),
    ("environments.staging.services[1]", 26, "unknown service \"fronted\""),
    ("environments.staging.target.timeout", 27, "invalid duration \"5 fortnights\""),
    ("environments.production.requires[0]", 31, "unknown environment \"stagging\""),
    ("environments.production.window.freeze[0].start", 37, "day of month 32 out of range"),
    ("environments.production.approvals.expires_after", 42, "invalid duration \"thirty minutes\""),
    ("environments.production.approvals.deadline", 43, "unknown field `deadline`"),
];

#[test]
fn a_config_with_many_mistakes_reports_every_one_with_its_key_path_and_line() {
    let found = problems(BROKEN);
    let mut missing = Vec::new();
    for (path, line, message) in BROKEN_PROBLEMS {
        let hit = found.iter().any(|p| p.path == *path && p.line == Some(*line) && p.message.contains(message));
        if !hit {
            missing.push(format!("  {path} (line {line}): …{message}…"));
        }
    }
    assert!(missing.is_empty(), "not reported:\n{}\nreported:\n{}", missing.join("\n"), show(&found));
    let expected: Vec<&str> = BROKEN_PROBLEMS.iter().map(|(p, _, _)| *p).collect();
    let extra: Vec<&ConfigProblem> = found.iter().filter(|p| !expected.contains(&p.path.as_str())).collect();
    assert!(extra.is_empty(), "problems that are not mistakes in the file (follow-on noise):\n{extra:?}");
    assert_eq!(found.len(), BROKEN_PROBLEMS.len(), "each mistake once:\n{}", show(&found));
    for p in &found {
        assert!(!p.message.contains('\n'), "one line per problem: {p:?}");
        assert!(!p.message.contains("xoxb-1111-inline-secret"), "an inline secret is not echoed: {p:?}");
    }
}

#[test]
fn a_mistake_in_a_table_does_not_hide_the_others_in_it() {
    let text = r#"[services.backend]
image = "registry.example.com/backend:v1"
colour = "red"

[environments.staging]
chanel = "typo"
channel = "C0STAGING"
requires = ["qa"]
services = ["worker"]
target = { kind = "command", deploy = ["./deploy.sh", "{service}", "{version}"], timeout = "soon", retries = 3 }

[environments.staging.window]
timezone = "Moon/Base"
allow = [ { days = "mon-frx", hours = "25:00-26:00" } ]
holidays = ["13-45"]
freeze = [ { start = "bad", end = "0 8 * * *" } ]
month_end_days = 99

[environments.staging.approvals]
required = 2
approvers = "U0CAROL"
expires_after = "later"
quorum = 2
"#;
    let expected: &[(&str, usize)] = &[
        ("services.backend.image", 2),
        ("services.backend.colour", 3),
        ("environments.staging.chanel", 6),
        ("environments.staging.requires[0]", 8),
        ("environments.staging.services[0]", 9),
        ("environments.staging.target.retries", 10),
        ("environments.staging.target.timeout", 10),
        ("environments.staging.window.timezone", 13),
        ("environments.staging.window.allow[0].days", 14),
        ("environments.staging.window.allow[0].hours", 14),
        ("environments.staging.window.holidays[0]", 15),
        ("environments.staging.window.freeze[0].start", 16),
        ("environments.staging.window.month_end_days", 17),
        // Not also "nobody may approve": that only follows from the wrong value.
        ("environments.staging.approvals.approvers", 21),
        ("environments.staging.approvals.expires_after", 22),
        ("environments.staging.approvals.quorum", 23),
    ];
    let found = problems(text);
    let got: Vec<(&str, usize)> = found.iter().map(|p| (p.path.as_str(), p.line.unwrap_or(0))).collect();
    assert_eq!(got, expected, "in file order, each once:\n{}", show(&found));
}

#[test]
fn loading_a_broken_file_names_the_file_and_counts_the_problems() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "broken.toml", BROKEN);
    let err = Config::load(&path).expect_err("the file is broken");
    let text = err.to_string();
    assert!(text.starts_with(&format!("{} problem(s) in {}:\n", BROKEN_PROBLEMS.len(), path.display())), "{text}");
    assert!(text.contains("  - bot.timezone (line 3): unknown timezone \"Mars/Olympus_Mons\""), "{text}");
    assert!(text.contains("  - environments.production.approvals.expires_after (line 42): invalid duration"), "{text}");

    let missing = dir.path().join("nope.toml");
    let err = Config::load(&missing).expect_err("no such file").to_string();
    assert!(err.contains("cannot read the file"), "{err}");
}

#[test]
fn a_toml_syntax_error_gives_its_line() {
    let cases: &[(&str, usize)] = &[
        ("[bot]\ntimezone = \"UTC\"\nlisten = \"127.0.0.1:3000\n\n[services.backend]\nimage = \"x/y\"\n", 3),
        ("[bot]\ntimezone = \"UTC\"\n\n[services.backend\nimage = \"x/y\"\n", 4),
        ("[services.backend]\nimage = \"x/y\"\nimage = \"x/z\"\n", 3),
        ("[environments.staging]\nchannel = \"C0\"\ntarget = { kind = \"command\", deploy = [\"a\" \"b\"] }\n", 3),
    ];
    for (text, line) in cases {
        let found = problems(text);
        assert_eq!(found.len(), 1, "{text}\n{}", show(&found));
        assert_eq!((found[0].path.as_str(), found[0].line), ("(syntax)", Some(*line)), "{text}\n{}", show(&found));
        assert!(!found[0].message.is_empty());
    }
}

#[test]
fn each_mistake_alone_is_reported_at_its_key_path() {
    // (what to change in BASE, the key path, part of the message)
    let cases: &[(&str, &str, &str, &str)] = &[
        ("timezone = \"America/New_York\"\nallow", "timezone = \"Europe/Atlantis\"\nallow", "environments.production.window.timezone", "Europe/Atlantis"),
        ("hours = \"10:00-14:00\"", "hours = \"14:00-10:00\"", "environments.production.window.allow[0].hours", "14:00-10:00"),
        ("days = \"tue-wed\"", "days = \"tue-wod\"", "environments.production.window.allow[0].days", "wod"),
        ("timezone = \"America/New_York\"\n\n[services", "timezone = \"America/New_York\"\nlisten = \"localhost\"\n\n[services", "bot.listen", "socket address"),
        ("[services.backend]\nimage = \"registry.example.com/invoice-me-backend\"", "[services.backend]\nimage = \"registry.example.com/invoice-me-backend:v1.0.0\"", "services.backend.image", "tag"),
        ("aliases = [\"prod\"]", "aliases = [\"stg\"]", "environments.staging.aliases", "alias \"stg\" is already used by environment production"),
        ("requires = [\"staging\"]", "requires = [\"staging\"]\nskip_steps = [\"smoke\"]", "environments.production.skip_steps[0]", "unknown step \"smoke\""),
        ("requires = [\"staging\"]", "requires = [\"staging\"]\ndeployers = [\"not an id!\"]", "environments.production.deployers[0]", "not a user id"),
        ("aliases = [\"stg\"]\n", "aliases = [\"stg\"]\nrequires = [\"production\"]\n", "environments.production.requires", "loops back"),
        ("[bot]\n", "[bots]\n", "bots", "unknown section `bots`"),
        ("[bot]\n", "[bot]\nlog_format = \"xml\"\n", "bot.log_format", "unknown log format \"xml\""),
        ("[bot]\n", "[reactions]\napprove = \"x\"\n\n[bot]\n", "reactions.reject", "must differ"),
        ("[bot]\n", "[chat]\nplatform = \"discord\"\n\n[bot]\n", "chat.discord", "no [chat.discord] table"),
        ("[bot]\n", "[chat]\nplatform = \"irc\"\n\n[bot]\n", "chat.platform", "irc"),
        ("[bot]\n", "[chat]\nplatform = \"discord\"\n\n[chat.discord]\ntoken = \"${DISCORD_TOKEN}\"\n\n[bot]\n", "chat.discord.application_id", "application id is needed"),
        ("[bot]\n", "[chat.discord]\ntoken = \"${DISCORD_TOKEN}\"\napplication_id = \"my-bot\"\n\n[bot]\n", "chat.discord.application_id", "not a Discord id"),
        ("[bot]\n", "[chat.discord]\nmode = \"interactions\"\ntoken = \"${DISCORD_TOKEN}\"\napplication_id = \"123\"\n\n[bot]\n", "chat.discord.public_key", "interactions mode needs"),
        ("[bot]\n", "[chat.discord]\ntoken = \"${DISCORD_TOKEN}\"\napplication_id = \"123\"\nguild_id = \"main\"\n\n[bot]\n", "chat.discord.guild_id", "not a Discord id"),
        ("[bot]\n", "[chat.discord]\nmode = \"webhooks\"\ntoken = \"${DISCORD_TOKEN}\"\n\n[bot]\n", "chat.discord.mode", "webhooks"),
        ("requires = [\"staging\"]", "requires = [\"staging\"]\ndeployers = [\"role:ops team\"]", "environments.production.deployers[0]", "role:<id>"),
        ("[bot]\n", "[chat.slack]\nmode = \"events\"\nbot_token = \"${SLACK_BOT_TOKEN}\"\n\n[bot]\n", "chat.slack.signing_secret", "events mode needs"),
        ("[bot]\n", "[chat.slack]\nbot_token = \"${SLACK_BOT_TOKEN}\"\napp_token = \"${SLACK_APP_TOKEN}\"\napi_url = \"ftp://slack.com/api\"\n\n[bot]\n", "chat.slack.api_url", "unsupported URL scheme \"ftp\""),
        ("sqlite://deploybot.db", "mysql://db/deploybot", "bot.database_url", "unsupported database URL"),
        ("sqlite://deploybot.db", "postgres://deploybot:hunter2-inline@db.internal/deploybot", "bot.database_url", "never inline"),
        (
            "requires = [\"staging\"]",
            "requires = [\"staging\"]\n\n[environments.production.approvals]\nrequired = 2\napprovers = []",
            "environments.production.approvals.approvers",
            "nobody may approve",
        ),
        (
            "allow = [ { days = \"tue-wed\", hours = \"10:00-14:00\" } ]",
            "allow = [ { days = \"tue-wed\", hours = \"10:00-14:00\" } ]\nholidays = [\"2026-02-30\"]",
            "environments.production.window.holidays[0]",
            "2026-02-30",
        ),
        (
            "allow = [ { days = \"tue-wed\", hours = \"10:00-14:00\" } ]",
            "allow = [ { days = \"tue-wed\", hours = \"10:00-14:00\" } ]\nfreeze = [ { start = \"0 18 20 12 *\", end = \"0 8 4 13 *\" } ]",
            "environments.production.window.freeze[0].end",
            "",
        ),        (
            "target = { kind = \"command\", deploy = [\"./deploy.sh\", \"{service}\", \"{version}\"] }",
            "target = { kind = \"command\", deploy = [\"./deploy.sh\", \"--token=${DEPLOY_TOKEN}\", \"{version}\"] }",
            "environments.production.target.deploy[1]",
            "env = { DEPLOY_TOKEN = \"${DEPLOY_TOKEN}\" }",
        ),
        (
            "rollback = [\"./deploy.sh\", \"{service}\", \"{previous}\"]",
            "rollback = [\"./deploy.sh\", \"{service}\", \"${ROLLBACK_KEY}\"]",
            "environments.staging.target.rollback[2]",
            "pass it in the environment instead",
        ),
        (
            "allow = [ { days = \"tue-wed\", hours = \"10:00-14:00\" } ]",
            "allow = [ { days = \"tue-wed\", hours = \"10:00-14:00\" } ]\n\n[environments.production.migrations]\ncommand = [\"mvn\", \"flyway:migrate\", \"-Dflyway.url=${PROD_FLYWAY_URL}\"]",
            "environments.production.migrations.command[2]",
            "env = { PROD_FLYWAY_URL = \"${PROD_FLYWAY_URL}\" }",
        ),
        (
            "allow = [ { days = \"tue-wed\", hours = \"10:00-14:00\" } ]",
            "allow = [ { days = \"tue-wed\", hours = \"10:00-14:00\" } ]\n\n[environments.production.migrations]\ncommand = [\"mvn\", \"flyway:migrate\"]\nenv = { FLYWAY_URL = \"${lower}\" }",
            "environments.production.migrations.env.FLYWAY_URL",
            "not an environment variable reference",
        ),
        ("[bot]\n", "[alerts]\nwebhook_token = \"inline-token\"\n\n[bot]\n", "alerts.webhook_token", "never inline"),
        (
            "allow = [ { days = \"tue-wed\", hours = \"10:00-14:00\" } ]",
            "allow = [ { days = \"tue-wed\", hours = \"10:00-14:00\" } ]\n\n[environments.production.monitor]\nprometheus_url = \"https://admin:pw-prom-inline@prom.internal\"",
            "environments.production.monitor.prometheus_url",
            "carries credentials: give the URL without them and put them in prometheus_auth",
        ),
        (
            "allow = [ { days = \"tue-wed\", hours = \"10:00-14:00\" } ]",
            "allow = [ { days = \"tue-wed\", hours = \"10:00-14:00\" } ]\n\n[environments.production.monitor]\nprometheus_url = \"https://prom.internal\"\nprometheus_auth = { token = \"${PROM_TOKEN}\", username = \"${PROM_USER}\" }",
            "environments.production.monitor.prometheus_auth",
            "either token",
        ),
    ];
    assert!(Config::parse(BASE).is_ok(), "the base is valid: {:?}", Config::parse(BASE).err());
    let mut failures = Vec::new();
    for (from, to, path, message) in cases {
        assert_eq!(BASE.matches(from).count(), 1, "the case's anchor {from:?} is not unique in BASE");
        let text = BASE.replacen(from, to, 1);
        match Config::parse(&text) {
            Ok(_) => failures.push(format!("{path}: the config loaded")),
            Err(found) => {
                if !found.iter().any(|p| p.path == *path && p.message.contains(message) && p.line.is_some()) {
                    failures.push(format!("{path}: …{message}… with a line not reported; got\n{}", show(&found)));
                }
                if found.iter().any(|p| p.message.contains("hunter2-inline") || p.message.contains("pw-prom-inline")) {
                    failures.push(format!("{path}: the inline password is echoed: {}", show(&found)));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn secrets_for_command_steps_go_through_their_env_table_and_prometheus_auth() {
    let text = BASE.replacen(
        "allow = [ { days = \"tue-wed\", hours = \"10:00-14:00\" } ]",
        "allow = [ { days = \"tue-wed\", hours = \"10:00-14:00\" } ]\n\n[environments.production.migrations]\ncommand = [\"mvn\", \"flyway:migrate\"]\nenv = { FLYWAY_URL = \"${PROD_FLYWAY_URL}\", FLYWAY_PASSWORD = \"${PROD_FLYWAY_PASSWORD}\" }\n\n[environments.production.monitor]\nprometheus_url = \"https://prom.internal\"\nprometheus_auth = { username = \"${PROM_USER}\", password = \"${PROM_PASSWORD}\" }",
        1,
    );
    let config = Config::parse(&text).unwrap_or_else(|p| panic!("{}", show(&p)));
    let prod = config.environments.values().find(|e| e.name.as_str() == "production").unwrap();
    let migrations = prod.migrations.as_ref().unwrap();
    let vars = deploybot::secrets::Vars::from_pairs([("PROD_FLYWAY_URL", "jdbc:postgresql://db/app"), ("PROD_FLYWAY_PASSWORD", "pw-flyway-2209")]);
    assert_eq!(
        migrations.expanded_env(&vars).unwrap(),
        [("FLYWAY_PASSWORD".to_string(), "pw-flyway-2209".to_string()), ("FLYWAY_URL".to_string(), "jdbc:postgresql://db/app".to_string())]
    );
    let missing = migrations.expanded_env(&deploybot::secrets::Vars::from_pairs([("PROD_FLYWAY_URL", "x")])).unwrap_err();
    assert_eq!(missing, "env.FLYWAY_PASSWORD: environment variable PROD_FLYWAY_PASSWORD is not set");
}

#[test]
fn check_config_warns_when_the_listener_is_reachable_from_other_machines_without_a_webhook_token() {
    let dir = tempfile::tempdir().unwrap();
    let warning = "warning: bot.listen: 0.0.0.0:3000 is reachable from other machines and [alerts] has no webhook_token";
    let open = write(dir.path(), "open.toml", &BASE.replacen("[bot]\n", "[bot]\nlisten = \"0.0.0.0:3000\"\n", 1));
    let (code, out, err) = deploybot(&open, &["check-config"], &[]);
    assert_eq!(code, 0, "a warning does not fail the check: {out}{err}");
    assert!(err.contains(warning), "{err}");
    let guarded = write(dir.path(), "guarded.toml", &BASE.replacen("[bot]\n", "[alerts]\nwebhook_token = \"${DEPLOYBOT_TEST_AM}\"\n\n[bot]\nlisten = \"0.0.0.0:3000\"\n", 1));
    let (code, out, err) = deploybot(&guarded, &["check-config"], &[("DEPLOYBOT_TEST_AM", "am-token-for-check-config")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains("warning"), "{err}");
    let (code, _, err) = deploybot(&guarded, &["check-config"], &[]);
    assert_eq!(code, 1, "a configured token's variable must be set: {err}");
    assert!(err.contains("alerts.webhook_token: environment variable DEPLOYBOT_TEST_AM is not set"), "{err}");
    let (code, _, err) = deploybot(&write(dir.path(), "local.toml", BASE), &["check-config"], &[]);
    assert_eq!(code, 0);
    assert!(!err.contains("warning"), "loopback needs no token: {err}");
}

#[test]
fn a_database_url_may_come_whole_or_in_part_from_the_environment() {
    for url in ["${DATABASE_URL}", "postgres://deploybot:${PGPASSWORD}@db.internal/deploybot", "sqlite://${STATE_DIR}/deploybot.db"] {
        let text = BASE.replacen("sqlite://deploybot.db", url, 1);
        if let Err(found) = Config::parse(&text) {
            panic!("{url} is refused:\n{}", show(&found));
        }
    }
}

// ------------------------------------------------------------------------------------ secrets

const SLACK_BOT: &str = "xoxb-SENTINEL-bot-9f3a7c";
const SLACK_APP: &str = "xapp-SENTINEL-app-51d0e2";
const DB_PASSWORD: &str = "pw-SENTINEL-db-77ab13";

fn slack_config(extra: &str) -> String {
    format!(
        "{BASE}\n[chat]\nplatform = \"slack\"\n\n[chat.slack]\nbot_token = \"${{DEPLOYBOT_TEST_SLACK_BOT}}\"\napp_token = \"${{DEPLOYBOT_TEST_SLACK_APP}}\"\n{extra}"
    )
    .replacen("sqlite://deploybot.db", "postgres://deploybot:${DEPLOYBOT_TEST_DB_PASSWORD}@127.0.0.1:9/deploybot", 1)
}

fn secret_envs() -> [(&'static str, &'static str); 3] {
    [("DEPLOYBOT_TEST_SLACK_BOT", SLACK_BOT), ("DEPLOYBOT_TEST_SLACK_APP", SLACK_APP), ("DEPLOYBOT_TEST_DB_PASSWORD", DB_PASSWORD)]
}

fn assert_no_secret(what: &str, text: &str) {
    for s in [SLACK_BOT, SLACK_APP, DB_PASSWORD] {
        assert!(!text.contains(s), "{what} shows the secret {s}:\n{text}");
        // Part of a secret is a leak too.
        assert!(!text.contains(&s[..14]), "{what} shows part of the secret {s}:\n{text}");
    }
}

#[test]
fn check_config_resolves_secrets_without_ever_printing_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "slack.toml", &slack_config(""));
    let (code, out, err) = deploybot(&path, &["check-config"], &secret_envs());
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("config OK") && out.contains("chat Slack"), "{out}");
    assert_no_secret("check-config", &format!("{out}{err}"));

    // The same file without the variables: each missing one is named, no value is guessed at.
    let (code, out, err) = deploybot(&path, &["check-config"], &[]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("chat.slack.bot_token: environment variable DEPLOYBOT_TEST_SLACK_BOT is not set"), "{err}");
    assert!(err.contains("chat.slack.app_token: environment variable DEPLOYBOT_TEST_SLACK_APP is not set"), "{err}");
}

#[test]
fn a_broken_config_that_references_secrets_never_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let broken = slack_config("api_url = \"not a url ${DEPLOYBOT_TEST_SLACK_BOT}\"\n").replacen("timezone = \"America/New_York\"", "timezone = \"Nowhere/${DEPLOYBOT_TEST_SLACK_APP}\"", 1);
    let path = write(dir.path(), "broken.toml", &broken);
    let (code, out, err) = deploybot(&path, &["check-config"], &secret_envs());
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("chat.slack.api_url") && err.contains("bot.timezone"), "{err}");
    assert_no_secret("check-config on a broken file", &format!("{out}{err}"));

    // Written inline by mistake: refused, and not echoed back.
    let inline = slack_config("").replacen("${DEPLOYBOT_TEST_SLACK_BOT}", SLACK_BOT, 1);
    let path = write(dir.path(), "inline.toml", &inline);
    let (code, out, err) = deploybot(&path, &["check-config"], &secret_envs());
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("chat.slack.bot_token") && err.contains("never inline"), "{err}");
    assert_no_secret("check-config on an inline secret", &format!("{out}{err}"));
}

#[test]
fn a_store_that_cannot_be_reached_is_reported_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "slack.toml", &slack_config(""));
    // In parallel: each waits for the store's connect timeout.
    std::thread::scope(|scope| {
        for args in [&["history"][..], &["migrate"][..], &["stats"][..]] {
            let path = &path;
            scope.spawn(move || {
                let (code, out, err) = deploybot(path, args, &secret_envs());
                assert_eq!(code, 1, "{args:?}: stdout:\n{out}\nstderr:\n{err}");
                assert!(err.contains("127.0.0.1:9"), "{args:?}: the error says which store: {err}");
                assert_no_secret(&format!("{args:?}"), &format!("{out}{err}"));
            });
        }
    });
}

#[test]
fn a_loaded_config_prints_references_not_values() {
    let mut config = Config::parse(&slack_config("")).unwrap_or_else(|p| panic!("{}", show(&p)));
    config.vars = deploybot::secrets::Vars::from_pairs(secret_envs());
    assert_no_secret("the config's Debug", &format!("{config:?}"));
    assert_no_secret("the config's summary", &config.summary());
    for (key, secret) in config.required_secrets() {
        let value = secret.resolve_in(&config.vars).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_no_secret(&key, &format!("{value} {value:?} {secret:?}"));
        assert!([SLACK_BOT, SLACK_APP].contains(&value.expose()), "{key} resolves to its variable");
        assert_eq!(deploybot::secrets::redact(&format!("Bearer {}", value.expose())), "Bearer •••");
    }
}

#[test]
fn a_discord_config_with_role_deployers_and_references_loads() {
    let text = BASE.replacen(
        "[bot]\n",
        "[chat]\nplatform = \"discord\"\n\n[chat.discord]\nmode = \"interactions\"\ntoken = \"${DISCORD_TOKEN}\"\napplication_id = \"${DISCORD_APPLICATION_ID}\"\npublic_key = \"${DISCORD_PUBLIC_KEY}\"\nguild_id = \"987654321098765432\"\n\n[bot]\n",
        1,
    );
    let text = text.replacen("requires = [\"staging\"]", "requires = [\"staging\"]\ndeployers = [\"role:1400000000000000001\", \"1300000000000000001\"]", 1);
    let config = Config::parse(&text).unwrap_or_else(|p| panic!("{}", show(&p)));
    let discord = config.chat.discord.expect("the [chat.discord] table");
    assert_eq!(discord.mode, deploybot::config::DiscordMode::Interactions);
    assert_eq!(discord.guild_id.as_deref(), Some("987654321098765432"));
}

#[test]
fn run_on_discord_stops_at_start_naming_a_missing_variable_or_a_bad_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = BASE.replacen(
        "[bot]\n",
        "[chat]\nplatform = \"discord\"\n\n[chat.discord]\nmode = \"interactions\"\ntoken = \"${DEPLOYBOT_TEST_DISCORD_TOKEN_CLI}\"\napplication_id = \"123456789012345678\"\npublic_key = \"${DEPLOYBOT_TEST_DISCORD_KEY_CLI}\"\n\n[bot]\n",
        1,
    );
    let config = write(dir.path(), "deploybot.toml", &text);
    let (code, _, err) = deploybot(&config, &["run"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("DEPLOYBOT_TEST_DISCORD_TOKEN_CLI"), "names the variable: {err}");
    let (code, _, err) = deploybot(&config, &["run"], &[("DEPLOYBOT_TEST_DISCORD_TOKEN_CLI", "bot-token-value-cli"), ("DEPLOYBOT_TEST_DISCORD_KEY_CLI", "not-a-key")]);
    assert_ne!(code, 0);
    assert!(err.contains("public_key") && err.contains("64 hex"), "{err}");
    assert!(!err.contains("bot-token-value-cli"), "the token never printed: {err}");
}
