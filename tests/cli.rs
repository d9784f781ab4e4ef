//! The real binary, run in a temporary directory: `check-config`, `policy check`, `history`,
//! `commands export`. Exit codes: 0 success, 1 failure, 2 bad argument.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use deploybot::model::{DeploymentState, VoteKind, Vote};
use deploybot::store::{Patch, Store};
use support::db::{request, sqlite_url, MINUTE, TUE_1_DEC_2026_10AM_NY as T0};

const BIN: &str = env!("CARGO_BIN_EXE_deploybot");
const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploybot.toml");
const MANIFESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/commands/manifests");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `deploybot --config CONFIG <args>` in `cwd`.
fn run_in(cwd: &Path, config: &Path, args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("DEPLOYBOT_CONFIG")
        .env("NO_COLOR", "1")
        .current_dir(cwd)
        .output()
        .expect("the deploybot binary runs");
    Run { code: out.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&out.stdout).into_owned(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

fn run(config: &Path, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    run_in(dir.path(), config, args)
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

// ------------------------------------------------------------------------------------ check-config

#[test]
fn check_config_accepts_the_shipped_file_and_summarises_it() {
    let r = run(Path::new(SHIPPED), &["check-config"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("config OK: 2 service(s), 3 environment(s); chat Console; store sqlite://deploybot.db\n"), "{r:?}");
    for line in [
        "  development (C0DEV): command target, services [backend, frontend], no approval, window: always open",
        "  production (C0PROD): ecs target, services [backend, frontend], 1 approval(s), window: Tue–Wed 10:00–14:00 America/New_York",
        "  staging (C0STAGING): docker target",
    ] {
        assert!(r.stdout.contains(line), "missing {line:?}\n{r:?}");
    }
    assert!(r.stdout.contains(", requires [staging]"), "{r:?}");
}

const BROKEN: &str = r#"[bot]
timezone = "America/Old_York"
listen = "everywhere"

[reactions]
rollback = ":rewind it:"

[services.backend]
image = "registry.example.com/backend"

[environments.staging]
channel = "C0STAGING"
target = { kind = "command", deploy = ["./deploy.sh", "{service}", "{version}"], timeout = "soon" }
verbose = true

[environments.production]
channel = "C0PROD"
requires = ["qa"]
services = ["backend", "worker"]
target = { kind = "command", deploy = ["./deploy.sh", "{service}", "{version}"] }

[environments.production.window]
timezone = "America/New_York"
freeze = [ { start = "0 25 * * *", end = "0 8 * * *" } ]
"#;

#[test]
fn check_config_exits_1_and_lists_every_problem_of_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, BROKEN).unwrap();
    let r = run(&path, &["check-config"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.is_empty(), "nothing on stdout: {r:?}");
    let expected = [
        ("bot.timezone", 2, "America/Old_York"),
        ("bot.listen", 3, "everywhere"),
        ("reactions.rollback", 6, "invalid emoji name"),
        ("environments.staging.target.timeout", 13, "invalid duration \"soon\""),
        ("environments.staging.verbose", 14, "unknown field `verbose`"),
        ("environments.production.requires[0]", 18, "unknown environment \"qa\""),
        ("environments.production.services[1]", 19, "unknown service \"worker\""),
        ("environments.production.window.freeze[0].start", 24, "hour 25"),
    ];
    assert!(r.stderr.starts_with(&format!("{} problem(s) in {}:\n", expected.len(), path.display())), "{r:?}");
    for (key, line, message) in expected {
        let found = r.stderr.lines().any(|l| l.starts_with(&format!("  - {key} (line {line}): ")) && l.contains(message));
        assert!(found, "{key} (line {line}): …{message}… is not reported\n{r:?}");
    }
    assert_eq!(r.stderr.lines().filter(|l| l.starts_with("  - ")).count(), expected.len(), "each problem once\n{r:?}");
}

#[test]
fn check_config_on_a_missing_file_exits_1_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(&dir.path().join("absent.toml"), &["check-config"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("absent.toml") && r.stderr.contains("cannot read the file"), "{r:?}");
}

// ------------------------------------------------------------------------------------ policy check

fn policy(args: &[&str]) -> (Run, Option<serde_json::Map<String, serde_json::Value>>) {
    let mut all = vec!["policy", "check"];
    all.extend_from_slice(args);
    let r = run(Path::new(SHIPPED), &all);
    let json = if r.code == 0 {
        assert_eq!(r.stdout.lines().count(), 1, "exactly one line of output: {r:?}");
        match serde_json::from_str::<serde_json::Value>(r.stdout.trim()) {
            Ok(serde_json::Value::Object(map)) => Some(map),
            other => panic!("not one JSON object ({other:?}): {r:?}"),
        }
    } else {
        None
    };
    (r, json)
}

#[test]
fn policy_check_answers_the_runbook_production_window() {
    // (--at, hotfix, allowed, next_window, part of the reason)
    let cases: &[(&str, bool, bool, &str, &str)] = &[
        ("2026-12-01T10:00:00-05:00", false, true, "2026-12-01T10:00:00-05:00", "inside the deployment window (Tue–Wed 10:00–14:00 America/New_York)"),
        ("2026-12-01T09:59:59-05:00", false, false, "2026-12-01T10:00:00-05:00", "outside the deployment window (Tue–Wed 10:00–14:00 America/New_York)"),
        ("2026-12-01T13:59:59-05:00", false, true, "2026-12-01T13:59:59-05:00", "inside the deployment window"),
        ("2026-12-01T14:00:00-05:00", false, false, "2026-12-02T10:00:00-05:00", "outside the deployment window"),
        ("2026-12-02T12:30:00-05:00", false, true, "2026-12-02T12:30:00-05:00", "inside the deployment window"),
        // An open instant is its own next window, to the fraction of a second, never before it.
        ("2026-12-01T10:00:00.750-05:00", false, true, "2026-12-01T10:00:00.750-05:00", "inside the deployment window"),
        ("2026-12-01T09:59:59.999-05:00", false, false, "2026-12-01T10:00:00-05:00", "outside the deployment window"),
        // Friday, then the weekend: next Tuesday.
        ("2026-12-04T11:00:00-05:00", false, false, "2026-12-08T10:00:00-05:00", "outside the deployment window"),
        ("2026-12-05T11:00:00-05:00", false, false, "2026-12-08T10:00:00-05:00", "outside the deployment window"),
        ("2026-12-06T23:59:59-05:00", false, false, "2026-12-08T10:00:00-05:00", "outside the deployment window"),
        // The same instant written in UTC is judged on New York's clock.
        ("2026-12-01T15:00:00Z", false, true, "2026-12-01T10:00:00-05:00", "inside the deployment window"),
        // Month-end Tuesdays: the last 3 days are closed even inside the hours.
        ("2026-06-30T11:00:00-04:00", false, false, "2026-07-01T10:00:00-04:00", "month-end: the last 3 days of the month are closed"),
        ("2026-09-29T11:00:00-04:00", false, false, "2026-10-06T10:00:00-04:00", "month-end"),
        // 29–31 Dec are month-end and 1 Jan a holiday: the first window of 2027 is Tue 5 Jan.
        ("2026-12-29T11:00:00-05:00", false, false, "2027-01-05T10:00:00-05:00", "month-end"),
        // A yearly holiday (07-04) on a Tuesday.
        ("2028-07-04T11:00:00-04:00", false, false, "2028-07-05T10:00:00-04:00", "2028-07-04 is a holiday"),
        // DST starts Sun 8 Mar 2026: 14:00Z is 09:00 EST the week before and 10:00 EDT the week after.
        ("2026-03-03T14:00:00Z", false, false, "2026-03-03T10:00:00-05:00", "outside the deployment window"),
        ("2026-03-10T14:00:00Z", false, true, "2026-03-10T10:00:00-04:00", "inside the deployment window"),
        ("2026-03-06T12:00:00-05:00", false, false, "2026-03-10T10:00:00-04:00", "outside the deployment window"),
        // DST ends Sun 1 Nov 2026: 14:00Z is 10:00 EDT before and 09:00 EST after.
        ("2026-10-27T14:00:00Z", false, true, "2026-10-27T10:00:00-04:00", "inside the deployment window"),
        ("2026-11-03T14:00:00Z", false, false, "2026-11-03T10:00:00-05:00", "outside the deployment window"),
        // A hotfix may go any time; next_window is still the next normal window.
        ("2026-12-04T11:00:00-05:00", true, true, "2026-12-08T10:00:00-05:00", "hotfix allowed outside the deployment window"),
        ("2026-12-29T11:00:00-05:00", true, true, "2027-01-05T10:00:00-05:00", "hotfix allowed during month-end"),
    ];
    let mut failures = Vec::new();
    for &(at, hotfix, allowed, next, reason) in cases {
        let mut args = vec!["--env", "prod", "--at", at];
        if hotfix {
            args.push("--hotfix");
        }
        let (r, json) = policy(&args);
        let Some(json) = json else {
            failures.push(format!("{at}: {r:?}"));
            continue;
        };
        let mut keys: Vec<&str> = json.keys().map(String::as_str).collect();
        keys.sort_unstable();
        if keys != ["allowed", "next_window", "reason"] {
            failures.push(format!("{at}: keys {keys:?}"));
        }
        let got = (json["allowed"].as_bool(), json["next_window"].as_str(), json["reason"].as_str().unwrap_or(""));
        if got.0 != Some(allowed) || got.1 != Some(next) || !got.2.contains(reason) {
            failures.push(format!("{at} hotfix={hotfix}: expected ({allowed}, {next}, …{reason}…), got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn policy_check_on_an_environment_without_a_window_is_always_open() {
    let (r, json) = policy(&["--env", "stg", "--at", "2026-12-05T03:00:00Z"]);
    let json = json.unwrap_or_else(|| panic!("{r:?}"));
    assert_eq!(json["allowed"], serde_json::json!(true), "{r:?}");
    assert_eq!(json["next_window"], serde_json::json!("2026-12-05T03:00:00Z"), "{r:?}");
    assert_eq!(json["reason"], serde_json::json!("no deployment window: always open"), "{r:?}");
}

#[test]
fn policy_check_exits_2_on_a_bad_argument() {
    let cases: &[(&[&str], &str)] = &[
        (&["--env", "nope", "--at", "2026-12-01T10:00:00-05:00"], "unknown environment \"nope\""),
        (&["--env", "prod", "--at", "garbage"], "--at \"garbage\" is not an RFC 3339 instant"),
        (&["--env", "prod", "--at", "2026-12-01 10:00"], "RFC 3339"),
        (&["--env", "prod", "--at", "2026-13-01T10:00:00Z"], "RFC 3339"),
        (&["--at", "2026-12-01T10:00:00-05:00"], "--env"),
    ];
    for (args, message) in cases {
        let (r, _) = policy(args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stdout.is_empty(), "{args:?}: no JSON on a bad argument: {r:?}");
        assert!(r.stderr.contains(message), "{args:?}: expected …{message}…: {r:?}");
    }
}

// ------------------------------------------------------------------------------------ history

/// A directory with a config whose store is `x.db` in it, and command targets.
struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
    url: String,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir.path().join("x.db"));
    let config = dir.path().join("deploybot.toml");
    std::fs::write(
        &config,
        format!(
            r#"[bot]
database_url = "{url}"
timezone = "America/New_York"

[services.backend]
image = "registry.example.com/invoice-me-backend"
order = 1

[services.frontend]
image = "registry.example.com/invoice-me-frontend"
order = 2

[environments.staging]
channel = "C0STAGING"
aliases = ["stg"]
target = {{ kind = "command", deploy = ["./deploy.sh", "{{service}}", "{{version}}"], rollback = ["./deploy.sh", "{{service}}", "{{previous}}"] }}

[environments.production]
channel = "C0PROD"
aliases = ["prod"]
requires = ["staging"]
target = {{ kind = "command", deploy = ["./deploy.sh", "{{service}}", "{{version}}"] }}
"#
        ),
    )
    .unwrap();
    Site { dir, config, url }
}

impl Site {
    fn run(&self, args: &[&str]) -> Run {
        run_in(self.dir.path(), &self.config, args)
    }
}

/// Records a deployment by `by` that ran `minutes` from `started` and ended in `state`.
async fn seed(store: &Store, env: &str, version: &str, by: &str, started: i64, minutes: i64, state: DeploymentState) -> i64 {
    let mut req = request(env, version, DeploymentState::Queued);
    req.requested_by_name = by.into();
    let d = store.create_deployment(&req, started - MINUTE).await.unwrap();
    let patch = Patch { started_at: Some(started), finished_at: Some(started + minutes * MINUTE), ..Patch::default() };
    assert!(store.transition(d.id, &[DeploymentState::Queued], state, &patch, "deploybot", started + minutes * MINUTE).await.unwrap());
    d.id
}

#[tokio::test]
async fn history_of_an_empty_store_is_an_empty_json_list() {
    let site = site();
    let r = site.run(&["history", "--env", "staging", "--format", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.trim(), "[]", "{r:?}");
    let r = site.run(&["history"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "# Deployment History\n\nNo deployments yet.\n"), "{r:?}");
}

#[tokio::test]
async fn history_prints_seeded_deployments_as_markdown_and_json() {
    let site = site();
    let store = Store::connect(&site.url).await.unwrap();
    let first = seed(&store, "staging", "v1.0.0", "John Doe", T0, 15, DeploymentState::Succeeded).await;
    store.add_vote(&Vote { deployment_id: first, user_id: "U0CAROL".into(), user_name: "Carol".into(), vote: VoteKind::Approve, created_at: T0 - 2 * MINUTE }).await.unwrap();
    let second = seed(&store, "staging", "v1.1.0", "Jane Smith", T0 + 24 * 60 * MINUTE, 20, DeploymentState::Failed).await;
    store.add_issue(second, "Database migration took longer than expected", T0 + 24 * 60 * MINUTE).await.unwrap();
    let prod = seed(&store, "production", "v1.0.0", "John Doe", T0 + 2 * 24 * 60 * MINUTE, 12, DeploymentState::Succeeded).await;
    store.close().await;

    let r = site.run(&["history", "--env", "stg"]);
    assert_eq!(r.code, 0, "{r:?}");
    let expected = format!(
        "# Deployment History\n\
         \n## v1.1.0 - 2026-12-02\n\
         - **Environment:** staging (#{second})\n\
         - **Deployed by:** Jane Smith\n\
         - **Duration:** 20 minutes\n\
         - **Outcome:** failed\n\
         - **Issues:** Database migration took longer than expected\n\
         - **Rollback:** N/A\n\
         \n## v1.0.0 - 2026-12-01\n\
         - **Environment:** staging (#{first})\n\
         - **Deployed by:** John Doe\n\
         - **Approved by:** Carol\n\
         - **Duration:** 15 minutes\n\
         - **Outcome:** succeeded\n\
         - **Issues:** None\n\
         - **Rollback:** N/A\n"
    );
    assert_eq!(r.stdout, expected, "{r:?}");

    let r = site.run(&["history", "--env", "staging", "--format", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    assert_eq!(
        json,
        serde_json::json!([
            {
                "id": second, "env": "staging", "kind": "deploy", "version": "v1.1.0", "state": "failed",
                "started_at": "2026-12-02 10:00 EST", "finished_at": "2026-12-02 10:20 EST",
                "deployed_by": "Jane Smith", "approvers": [], "duration_seconds": 1200, "hotfix": null,
                "issues": "Database migration took longer than expected", "rollback": null
            },
            {
                "id": first, "env": "staging", "kind": "deploy", "version": "v1.0.0", "state": "succeeded",
                "started_at": "2026-12-01 10:00 EST", "finished_at": "2026-12-01 10:15 EST",
                "deployed_by": "John Doe", "approvers": ["Carol"], "duration_seconds": 900, "hotfix": null,
                "issues": null, "rollback": null
            }
        ]),
        "{r:?}"
    );

    let r = site.run(&["history", "--format", "json", "--limit", "1"]);
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    assert_eq!(json.as_array().map(|a| a.iter().map(|e| e["id"].as_i64()).collect::<Vec<_>>()), Some(vec![Some(prod)]), "all environments, newest first, one: {r:?}");
    let r = site.run(&["history"]);
    assert!(r.stdout.contains("- **Environment:** production (") && r.stdout.contains("- **Environment:** staging ("), "{r:?}");
}

#[tokio::test]
async fn history_exits_2_on_a_bad_argument() {
    let site = site();
    for (args, message) in [
        (&["history", "--env", "nope"][..], "unknown environment \"nope\""),
        (&["history", "--limit", "0"][..], "--limit"),
        (&["history", "--format", "xml"][..], "xml"),
    ] {
        let r = site.run(args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.contains(message), "{args:?}: …{message}…: {r:?}");
        assert!(r.stdout.is_empty(), "{args:?}: {r:?}");
    }
}

// ------------------------------------------------------------------------------------ commands export

#[test]
fn commands_export_writes_both_manifests_as_committed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out").join("manifests");
    let r = run_in(dir.path(), Path::new(SHIPPED), &["commands", "export", "--dir", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    for name in ["slack-app.yml", "discord-commands.json"] {
        let written = std::fs::read_to_string(out.join(name)).unwrap_or_else(|e| panic!("{name} not written: {e}\n{r:?}"));
        let committed = std::fs::read_to_string(Path::new(MANIFESTS).join(name)).unwrap();
        assert!(written == committed, "{name} differs from commands/manifests/{name}; run `deploybot commands export` and commit");
        assert!(r.stdout.contains(&format!("wrote {}", out.join(name).display())), "{r:?}");
    }
    let mut files: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, ["discord-commands.json", "slack-app.yml"]);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("discord-commands.json")).unwrap()).expect("valid JSON");
    assert!(json.as_array().is_some_and(|a| a.iter().any(|c| c["name"] == "deploy")), "the Discord registration has /deploy");
}

// ------------------------------------------------------------------------------------ stats

#[tokio::test]
async fn stats_prints_the_four_keys_of_recent_deployments() {
    let site = site();
    let store = Store::connect(&site.url).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    seed(&store, "staging", "v1.0.0", "John Doe", now - 2 * 24 * 60 * MINUTE, 15, DeploymentState::Succeeded).await;
    seed(&store, "staging", "v1.1.0", "John Doe", now - 24 * 60 * MINUTE, 5, DeploymentState::Failed).await;
    seed(&store, "staging", "v0.1.0", "John Doe", now - 90 * 24 * 60 * MINUTE, 5, DeploymentState::Failed).await;
    store.close().await;
    let r = site.run(&["stats", "--env", "stg", "--days", "7"]);
    assert_eq!(r.code, 0, "{r:?}");
    for line in [
        "Deployment stats for staging, last 7 days:",
        "• Deployment frequency: 1 successful deployment(s), 1.0 per week",
        "• Change failure rate: 50% (1 of 2 changes failed or were rolled back)",
        "• Median deployment duration: 15 minutes",
        "• Rollbacks requested: 0",
    ] {
        assert!(r.stdout.contains(line), "missing {line:?}: {r:?}");
    }
}

#[test]
fn stats_exits_2_on_a_bad_argument() {
    let site = site();
    for (args, message) in [(&["stats", "--days", "0"][..], "--days"), (&["stats", "--days", "4000000000"][..], "--days"), (&["stats", "--env", "qa"][..], "unknown environment \"qa\"")] {
        let r = site.run(args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.contains(message) && !r.stderr.contains("panicked"), "{args:?}: {r:?}");
    }
}

// ------------------------------------------------------------------------------------ store outage

/// A PostgreSQL store at `port` whose password comes from the child's environment.
fn unreachable_store_config(dir: &Path, port: u16) -> PathBuf {
    let config = dir.join("deploybot.toml");
    std::fs::write(
        &config,
        format!(
            r#"[bot]
database_url = "postgres://deploybot:${{DEPLOYBOT_TEST_CLI_DB_PASSWORD}}@127.0.0.1:{port}/deploybot"

[services.backend]
image = "registry.example.com/invoice-me-backend"

[environments.staging]
channel = "C0STAGING"
target = {{ kind = "command", deploy = ["./deploy.sh", "{{service}}", "{{version}}"] }}
"#
        ),
    )
    .unwrap();
    config
}

/// Runs a store command against `port` and returns its outcome and how long it took.
fn run_against_store(port: u16, args: &[&str]) -> (Run, std::time::Duration) {
    let dir = tempfile::tempdir().unwrap();
    let config = unreachable_store_config(dir.path(), port);
    let started = std::time::Instant::now();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(args)
        .env_remove("DEPLOYBOT_CONFIG")
        .env("DEPLOYBOT_TEST_CLI_DB_PASSWORD", "pw-cli-outage-5150")
        .current_dir(dir.path())
        .output()
        .expect("the deploybot binary runs");
    let took = started.elapsed();
    (Run { code: out.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&out.stdout).into_owned(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() }, took)
}

fn assert_store_unreachable(port: u16, r: &Run, took: std::time::Duration, args: &[&str]) {
    assert_eq!(r.code, 1, "{args:?}: {r:?}");
    // The connect timeout is 2 s; the bound leaves room for a loaded machine and stays far below the bot's 10 s.
    assert!(took < std::time::Duration::from_secs(6), "{args:?} took {took:?}: {r:?}");
    let store = format!("postgres://127.0.0.1:{port}/deploybot");
    assert!(r.stderr.contains(&format!("cannot open the store at {store} (no connection within 2s)")), "{args:?}: {r:?}");
    assert!(!r.stderr.contains("pw-cli-outage-5150") && !r.stderr.contains("deploybot:") && !r.stderr.contains("panicked"), "{args:?}: {r:?}");
}

#[test]
fn history_stats_and_migrate_say_the_store_is_unreachable_within_seconds_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for args in [&["history"][..], &["stats"][..], &["migrate"][..]] {
        let (r, took) = run_against_store(port, args);
        assert_store_unreachable(port, &r, took, args);
    }
}

#[test]
fn a_store_that_accepts_connections_but_never_answers_fails_the_command_after_the_connect_timeout() {
    // The kernel completes the TCP handshake for the backlog; nothing ever answers PostgreSQL's startup message.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let (r, took) = run_against_store(port, &["history"]);
    assert_store_unreachable(port, &r, took, &["history"]);
    assert!(took >= std::time::Duration::from_millis(1900), "it waited for the 2 s timeout, not less: {took:?}");
    drop(silent);
}

// ------------------------------------------------------------------------------------ deploy-local.sh

#[test]
fn the_shipped_development_deploy_script_records_the_version_and_refuses_bad_arguments() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/deploy-local.sh");
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| Command::new("sh").arg(script).args(args).current_dir(dir.path()).env("DEPLOY_LOCAL_STATE_DIR", dir.path().join("state")).output().unwrap();
    let out = run(&["backend", "v1.2.3"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(dir.path().join("state/backend.version")).unwrap(), "v1.2.3\n");
    let out = run(&["backend", "v1.2.2"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(dir.path().join("state/backend.version")).unwrap(), "v1.2.2\n", "a rollback overwrites it");
    let out = run(&["backend"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"), "{out:?}");
}
