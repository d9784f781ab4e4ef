use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use deploybot_commands::ServiceName;

use super::config::render;
use super::process::{Tail, OUTPUT_TAIL_BYTES};
use super::{CommandConfig, CommandTarget};
use crate::secrets::Vars;
use crate::targets::{DeployRequest, DeployTarget, RollbackRequest, Running, TargetError};

fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn config(deploy: &[&str]) -> CommandConfig {
    CommandConfig {
        deploy: deploy.iter().map(|s| s.to_string()).collect(),
        rollback: None,
        current: None,
        logs: None,
        timeout: "10s".into(),
        workdir: None,
        env: BTreeMap::new(),
    }
}

fn backend() -> ServiceName {
    ServiceName::new("backend").unwrap()
}

fn request(version: &str, previous: Option<&str>) -> DeployRequest {
    DeployRequest {
        deployment_id: 42,
        env: "staging".into(),
        service: backend(),
        image: "your-registry/invoice-me-backend".into(),
        version: version.into(),
        digest: None,
        previous: previous.map(|v| Running { version: v.into(), reference: None }),
    }
}

fn rollback_request(from: &str, to: &str) -> RollbackRequest {
    RollbackRequest {
        deployment_id: 43,
        env: "staging".into(),
        service: backend(),
        image: "your-registry/invoice-me-backend".into(),
        from_version: from.into(),
        to: Running { version: to.into(), reference: None },
    }
}

/// Alive means present in /proc and not a zombie.
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
        .map(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

#[tokio::test]
async fn a_successful_command_reports_the_version_and_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = script(dir.path(), "deploy.sh", "echo \"deploying $1 $2\"\necho warning >&2");
    let target = CommandTarget::new(&config(&[&deploy, "{service}", "{version}"]), &Vars::process()).unwrap();

    let deployed = target.deploy(&request("v1.1.0", Some("v1.0.0"))).await.unwrap();

    assert_eq!(deployed.running, Running { version: "v1.1.0".into(), reference: None });
    assert_eq!(deployed.detail, "deploying backend v1.1.0\nwarning");
    target.wait_rollout(&backend(), &deployed).await.unwrap();
}

#[tokio::test]
async fn a_failing_command_reports_its_exit_status_and_last_output() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = script(dir.path(), "deploy.sh", "for i in $(seq 1 100); do echo \"line $i\"; done\necho 'image not found' >&2\nexit 3");
    let target = CommandTarget::new(&config(&[&deploy]), &Vars::process()).unwrap();

    let err = target.deploy(&request("v1.1.0", None)).await.unwrap_err();

    assert!(matches!(err, TargetError::Failed { .. }), "{err:?}");
    assert_eq!(err.to_string(), "deploy command exited with status 3");
    let diagnostics = err.diagnostics().unwrap();
    assert!(diagnostics.ends_with("line 100\nimage not found"), "{diagnostics}");
    assert!(!diagnostics.contains("line 50\n"), "only the last lines: {diagnostics}");
    assert_eq!(target.diagnostics(&backend()).await.as_deref(), Some(diagnostics));
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_with_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = script(
        dir.path(),
        "deploy.sh",
        "sleep 30 &\necho $! > \"$1/child.pid\"\necho $$ > \"$1/script.pid\"\necho 'waiting for the rollout'\nwait",
    );
    let mut cfg = config(&[&deploy, &dir.path().display().to_string()]);
    cfg.timeout = "500ms".into();
    let target = CommandTarget::new(&cfg, &Vars::process()).unwrap();

    let started = Instant::now();
    let err = target.deploy(&request("v1.1.0", None)).await.unwrap_err();

    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    match &err {
        TargetError::Timeout { what, after, diagnostics } => {
            assert_eq!(what, "deploy command for backend");
            assert_eq!(after, "500ms");
            assert_eq!(diagnostics.as_deref(), Some("waiting for the rollout"));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(err.to_string(), "deploy command for backend timed out after 500ms");
    let script_pid = std::fs::read_to_string(dir.path().join("script.pid")).unwrap();
    let child_pid = std::fs::read_to_string(dir.path().join("child.pid")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while (alive(&script_pid) || alive(&child_pid)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(&script_pid), "the script survived its timeout");
    assert!(!alive(&child_pid), "the script's child survived the timeout");
}

#[tokio::test]
async fn a_child_left_running_does_not_hold_up_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = script(dir.path(), "deploy.sh", "sleep 10 &\necho started in the background");
    let target = CommandTarget::new(&config(&[&deploy]), &Vars::process()).unwrap();

    let started = Instant::now();
    let deployed = target.deploy(&request("v1.1.0", None)).await.unwrap();

    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(deployed.detail, "started in the background");
}

#[tokio::test]
async fn placeholders_are_substituted_per_argument_without_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = script(dir.path(), "deploy.sh", "for a in \"$@\"; do echo \"[$a]\"; done");
    let target = CommandTarget::new(&config(&[&deploy, "{service}", "--tag={version}", "{previous}", "{env}", "{image}:{version}", "${HOME}", "a b;c"]), &Vars::process()).unwrap();

    let deployed = target.deploy(&request("v1.1.0$(touch /tmp/x)", Some("v1.0.0"))).await.unwrap();

    assert_eq!(
        deployed.detail,
        "[backend]\n[--tag=v1.1.0$(touch /tmp/x)]\n[v1.0.0]\n[staging]\n[your-registry/invoice-me-backend:v1.1.0$(touch /tmp/x)]\n[${HOME}]\n[a b;c]"
    );
}

#[tokio::test]
async fn the_command_gets_deploybot_variables_and_the_configured_env() {
    let vars = Vars::from_pairs([("DEPLOYBOT_TEST_CMD_REGION", "eu-west-1")]);
    let dir = tempfile::tempdir().unwrap();
    let deploy = script(
        dir.path(),
        "deploy.sh",
        "echo \"$DEPLOYBOT_SERVICE $DEPLOYBOT_VERSION $DEPLOYBOT_PREVIOUS $DEPLOYBOT_ENV $DEPLOYBOT_IMAGE #$DEPLOYBOT_DEPLOYMENT_ID\"\necho \"region=$REGION in $(pwd)\"",
    );
    let mut cfg = config(&[&deploy]);
    cfg.env.insert("REGION".into(), "aws:${DEPLOYBOT_TEST_CMD_REGION}".into());
    cfg.workdir = Some(dir.path().display().to_string());
    let target = CommandTarget::new(&cfg, &vars).unwrap();

    let deployed = target.deploy(&request("v1.1.0", Some("v1.0.0"))).await.unwrap();

    let workdir = dir.path().canonicalize().unwrap();
    assert_eq!(
        deployed.detail,
        format!("backend v1.1.0 v1.0.0 staging your-registry/invoice-me-backend #42\nregion=aws:••• in {}", workdir.display()),
        "a value read from a ${{VAR}} reference is a secret, so it reaches the command but not the detail"
    );
}

#[tokio::test]
async fn a_relative_program_is_found_in_the_workdir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    script(&dir.path().join("scripts"), "deploy.sh", "echo ok");
    let mut cfg = config(&["./scripts/deploy.sh"]);
    cfg.workdir = Some(dir.path().display().to_string());

    let deployed = CommandTarget::new(&cfg, &Vars::process()).unwrap().deploy(&request("v1.1.0", None)).await.unwrap();

    assert_eq!(deployed.detail, "ok");
}

#[tokio::test]
async fn secrets_are_redacted_from_output_and_errors() {
    let vars = Vars::from_pairs([("DEPLOYBOT_TEST_CMD_TOKEN", "tok-3f9a8c7e1d")]);
    let dir = tempfile::tempdir().unwrap();
    let deploy = script(dir.path(), "deploy.sh", "echo \"using $TOKEN\"\n[ \"$1\" = fail ] && exit 1\nexit 0");
    let mut cfg = config(&[&deploy, "{version}"]);
    cfg.env.insert("TOKEN".into(), "${DEPLOYBOT_TEST_CMD_TOKEN}".into());
    let target = CommandTarget::new(&cfg, &vars).unwrap();

    let deployed = target.deploy(&request("ok", None)).await.unwrap();
    let err = target.deploy(&request("fail", None)).await.unwrap_err();

    assert_eq!(deployed.detail, "using •••");
    assert_eq!(err.diagnostics(), Some("using •••"));
    assert_eq!(target.diagnostics(&backend()).await.as_deref(), Some("using •••"));
}

#[tokio::test]
async fn an_unset_variable_in_env_fails_the_run_with_its_name_before_the_command_starts() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let deploy = script(dir.path(), "deploy.sh", &format!("touch {}", ran.display()));
    let mut cfg = config(&[&deploy]);
    cfg.env.insert("TOKEN".into(), "${DEPLOYBOT_TEST_CMD_SURELY_UNSET}".into());
    let target = CommandTarget::new(&cfg, &Vars::from_pairs([("DEPLOYBOT_TEST_CMD_OTHER", "x")])).unwrap();

    let err = target.deploy(&request("v1.1.0", None)).await.unwrap_err().to_string();

    assert_eq!(err, "cannot run the deploy command for backend: target.env.TOKEN: environment variable DEPLOYBOT_TEST_CMD_SURELY_UNSET is not set");
    assert!(!ran.exists(), "the command did not start");
}

#[tokio::test]
async fn a_missing_or_unexecutable_program_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.sh").display().to_string();
    let err = CommandTarget::new(&config(&[&missing]), &Vars::process()).unwrap().deploy(&request("v1", None)).await.unwrap_err();
    assert_eq!(err.to_string(), format!("cannot run the deploy command for backend: program \"{missing}\" not found"));

    let err = CommandTarget::new(&config(&["deploybot-no-such-program"]), &Vars::process()).unwrap().deploy(&request("v1", None)).await.unwrap_err();
    assert_eq!(err.to_string(), "cannot run the deploy command for backend: program \"deploybot-no-such-program\" not found on PATH");

    let plain = dir.path().join("plain.sh");
    std::fs::write(&plain, "echo hi").unwrap();
    let plain = plain.display().to_string();
    let err = CommandTarget::new(&config(&[&plain]), &Vars::process()).unwrap().deploy(&request("v1", None)).await.unwrap_err();
    assert!(err.to_string().contains("is not executable"), "{err}");
}

#[tokio::test]
async fn rollback_runs_the_deploy_template_with_the_version_put_back() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = script(dir.path(), "deploy.sh", "echo \"$*|$DEPLOYBOT_OPERATION|$DEPLOYBOT_ROLLBACK_FROM\"");
    let target = CommandTarget::new(&config(&[&deploy, "{service}", "{version}", "{previous}"]), &Vars::process()).unwrap();

    let deployed = target.rollback(&rollback_request("v1.1.0", "v1.0.0")).await.unwrap();

    assert_eq!(deployed.running.version, "v1.0.0");
    assert_eq!(deployed.detail, "backend v1.0.0 v1.0.0|rollback|v1.1.0");
}

#[tokio::test]
async fn rollback_prefers_the_rollback_template() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = script(dir.path(), "deploy.sh", "echo deploy; exit 1");
    let rollback = script(dir.path(), "rollback.sh", "echo \"rollback $*\"");
    let mut cfg = config(&[&deploy]);
    cfg.rollback = Some(vec![rollback, "{service}".into(), "{previous}".into()]);

    let deployed = CommandTarget::new(&cfg, &Vars::process()).unwrap().rollback(&rollback_request("v1.1.0", "v1.0.0")).await.unwrap();

    assert_eq!(deployed.detail, "rollback backend v1.0.0");
}

#[tokio::test]
async fn current_reports_the_last_line_the_current_command_prints() {
    let dir = tempfile::tempdir().unwrap();
    let current = script(dir.path(), "current.sh", "echo \"looking up $1\" >&2\necho 'checking'\necho \"  v1.0.0  \"\necho");
    let mut cfg = config(&["/bin/true"]);
    assert_eq!(CommandTarget::new(&cfg, &Vars::process()).unwrap().current(&backend(), "img").await.unwrap(), None);

    cfg.current = Some(vec![current, "{service}".into()]);
    let running = CommandTarget::new(&cfg, &Vars::process()).unwrap().current(&backend(), "img").await.unwrap();

    assert_eq!(running, Some(Running { version: "v1.0.0".into(), reference: None }));
}

#[test]
fn templates_are_checked_for_placeholders_commands_and_env_names() {
    let mut cfg = config(&["./deploy.sh", "{service}", "{tag}"]);
    cfg.current = Some(vec!["./current.sh".into(), "{version}".into()]);
    cfg.rollback = Some(vec![]);
    cfg.timeout = "0s".into();
    cfg.env.insert("A=B".into(), "x".into());
    cfg.env.insert("TOKEN".into(), "${lower}".into());

    let problems: Vec<String> = cfg.validate().into_iter().map(|(path, msg)| format!("{path}: {msg}")).collect();

    assert_eq!(
        problems,
        vec![
            "timeout: must be longer than zero",
            "deploy[2]: unknown placeholder {tag} (known here: {service}, {version}, {previous}, {env}, {image}, {digest})",
            "rollback: empty command: give the program and its arguments as a list",
            "current[1]: unknown placeholder {version} (known here: {service}, {image})",
            "env.A=B: not a valid environment variable name",
            "env.TOKEN: \"${lower}\" is not an environment variable reference (NAME in capitals)",
        ]
    );
    assert!(config(&["./deploy.sh", "{service}", "{version}"]).validate().is_empty());
}

#[test]
fn render_replaces_known_placeholders_only() {
    fn check(template: &str, expected: &str) {
        let value = |name: &str| match name {
            "service" => Some("backend"),
            "version" => Some("v1.0.0"),
            _ => None,
        };
        assert_eq!(render(template, value), expected, "{template}");
    }
    check("{service}", "backend");
    check("--image=x:{version}-{service}", "--image=x:v1.0.0-backend");
    check("${HOME}/{service}", "${HOME}/backend");
    check("{unknown} {", "{unknown} {");
    check("}{service}{", "}backend{");
    check("", "");
}

#[test]
fn the_output_tail_keeps_whole_last_lines() {
    let mut tail = Tail::default();
    tail.push(b"short\n");
    assert_eq!(tail.text(), "short\n");
    for i in 0..2000 {
        tail.push(format!("line {i}\n").as_bytes());
    }
    let text = tail.text();
    assert!(text.starts_with("[… earlier output cut]\nline "), "{}", &text[..60]);
    assert!(text.ends_with("line 1999\n"));
    assert!(text.len() <= OUTPUT_TAIL_BYTES + 40);
}
