//! End-to-end tests of the runbook's checklists checked by the bot: automatic items against a CI
//! API stand-in (an in-process HTTP server answering like GitHub's commit status API), built-in
//! items, and security checks against the real stand-in app, which the `command` target starts
//! as a process (`deploybot standin start`, as in the demo) with the version deployed:
//! `-insecure` versions are the security regression.

mod support;

#[path = "support/services.rs"]
mod services;

#[path = "support/prom.rs"]
mod prom;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deploybot::app::{self, App};
use deploybot::chat::console::{self, Shown};
use deploybot::engine::clock::ShiftedClock;
use deploybot::model::{DeploymentState, StepState};
use support::bot::{free_port, open_tuesday, parse_config};
use support::db;

/// A CI system's commit status API: `success` for most tags, `failure` for `v1.2.0`, an HTML login
/// page for `v1.3.0` (a proxy in front of the API), and no answer for 30 s for `v1.4.0`.
async fn ci_api() -> std::net::SocketAddr {
    use axum::extract::Path as UrlPath;
    use axum::http::{header, StatusCode};
    use axum::response::{IntoResponse, Response};
    async fn status(UrlPath(reference): UrlPath<String>) -> Response {
        match reference.as_str() {
            "v1.2.0" => axum::Json(serde_json::json!({ "state": "failure", "total_count": 3 })).into_response(),
            "v1.3.0" => (StatusCode::OK, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], "<html><body>Sign in to continue</body></html>").into_response(),
            "v1.4.0" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                StatusCode::GATEWAY_TIMEOUT.into_response()
            }
            _ => axum::Json(serde_json::json!({ "state": "success", "total_count": 3 })).into_response(),
        }
    }
    async fn pulls() -> Response {
        // No merged pull request mentions the release: the optional review item fails.
        axum::Json(serde_json::json!([])).into_response()
    }
    let router = axum::Router::new()
        .route("/repos/acme/invoice-me/commits/{reference}/status", axum::routing::get(status))
        .route("/repos/acme/invoice-me/pulls", axum::routing::get(pulls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

fn config_text(dir: &Path, database_url: &str, ci: std::net::SocketAddr, backend: u16, check_timeout: &str) -> String {
    let d = dir.display();
    let x = env!("CARGO_BIN_EXE_deploybot");
    let start = |version: &str| format!(r#"["{x}", "standin", "start", "--dir", "{d}", "--env", "{{env}}", "--service", "{{service}}", "--version", "{version}", "--ports", "backend={backend}"]"#);
    let env = |name: &str, channel: &str, extra: &str| {
        format!(
            r#"
[environments.{name}]
channel = "{channel}"
{extra}
target = {{ kind = "command", deploy = {deploy}, rollback = {rollback}, timeout = "30s" }}

[environments.{name}.checklist]
manual = ["Deployment window scheduled and communicated", "Rollback plan prepared"]
security = "optional"

[[environments.{name}.checklist.checks]]
name = "CI passed for this tag"
url = "http://{ci}/repos/acme/invoice-me/commits/{{version}}/status"
headers = {{ Authorization = "Bearer ${{DEPLOYBOT_TEST_CI_TOKEN}}" }}
expect_json = {{ state = "success" }}
timeout = "{check_timeout}"

[[environments.{name}.checklist.checks]]
name = "release pull request reviewed and merged"
url = "http://{ci}/repos/acme/invoice-me/pulls?state=closed&head=release/{{version}}"
expect_json_contains = {{ merged = true }}
required = false

[environments.{name}.verify]
retries = 1
backoff = "100ms"
timeout = "5s"

[[environments.{name}.verify.health]]
name = "backend health"
url = "http://127.0.0.1:{backend}/api/actuator/health"
expect_json = {{ status = "UP" }}

[[environments.{name}.verify.smoke]]
name = "login returns a JWT"
method = "POST"
url = "http://127.0.0.1:{backend}/api/auth/login"
json = {{ username = "test@example.com", password = "${{SMOKE_TEST_PASSWORD}}" }}
capture = {{ token = "token" }}

[[environments.{name}.verify.security]]
kind = "headers"
url = "http://127.0.0.1:{backend}/"
require = ["Strict-Transport-Security", "X-Content-Type-Options", "Content-Security-Policy"]

[[environments.{name}.verify.security]]
kind = "cors"
url = "http://127.0.0.1:{backend}/api/customers"
disallowed_origin = "https://evil.example"

[[environments.{name}.verify.security]]
kind = "auth_required"
url = "http://127.0.0.1:{backend}/api/customers"

[[environments.{name}.verify.security]]
kind = "rate_limit"
method = "POST"
url = "http://127.0.0.1:{backend}/api/auth/login"
requests = 30

[[environments.{name}.verify.security]]
kind = "https_redirect"
url = "http://127.0.0.1:{backend}/http/"
"#,
            deploy = start("{version}"),
            rollback = start("{previous}"),
        )
    };
    format!(
        r#"[bot]
database_url = "{database_url}"
listen = "127.0.0.1:{listen}"
timezone = "America/New_York"

[chat]
platform = "console"

[chat.console]
user = "alice"

[services.backend]
image = "invoiceme/invoice-me-backend"
{}{}"#,
        env("staging", "C0STAGING", ""),
        env("production", "C0PROD", r#"approvals = { required = 1, approvers = ["carol"], expires_after = "30m" }"#),
        listen = free_port(),
    )
}

struct Harness {
    dir: tempfile::TempDir,
    _db: db::TestDb,
    app: App,
    seq: AtomicU64,
    backend: u16,
}

impl Drop for Harness {
    /// Stops the stand-in processes the target started (their pid files are in the tempdir).
    fn drop(&mut self) {
        for pidfile in std::fs::read_dir(self.dir.path()).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "pid")) {
            if let Some(pid) = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
                // SAFETY: SIGKILL to a stand-in process this test's target started.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

const VARS: [(&str, &str); 2] = [("SMOKE_TEST_PASSWORD", "testpass"), ("DEPLOYBOT_TEST_CI_TOKEN", "ci-token-0b5e1d")];

impl Harness {
    async fn new() -> Harness {
        Harness::with(&VARS, "5s").await
    }

    async fn with(vars: &[(&str, &str)], check_timeout: &str) -> Harness {
        let db = db::sqlite().await;
        let dir = tempfile::tempdir().unwrap();
        let ci = ci_api().await;
        let backend = free_port();
        let mut config = parse_config(&config_text(dir.path(), &db.url, ci, backend, check_timeout));
        config.vars = deploybot::secrets::Vars::from_pairs(vars.iter().copied());
        let tuesday = open_tuesday(&config, "production");
        let clock = Arc::new(ShiftedClock::at(tuesday));
        let app = app::build_console_app(config, clock, None).await.unwrap();
        Harness { dir, _db: db, app, seq: AtomicU64::new(0), backend }
    }

    async fn say(&self, line: &str) -> String {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let event = console::parse_line(line, "alice", "console", seq).unwrap().unwrap();
        let reply = self.app.engine.handle(event).await.unwrap().map(|r| r.0).unwrap_or_default();
        self.app.engine.outbox.drain().await.unwrap();
        reply
    }

    async fn run_jobs(&self) {
        while self.app.engine.run_next_job().await.unwrap() {}
        self.app.engine.outbox.drain().await.unwrap();
    }

    async fn latest(&self) -> deploybot::model::Deployment {
        self.app.engine.store.deployments(None, &[], 1).await.unwrap().into_iter().next().expect("a deployment")
    }

    async fn steps(&self, id: i64) -> Vec<deploybot::model::Step> {
        self.app.engine.store.steps(id).await.unwrap()
    }

    fn pidfile(&self, env: &str) -> PathBuf {
        self.dir.path().join(format!("{env}-backend.pid"))
    }

    fn transcript(&self) -> Vec<Shown> {
        self.app.console.transcript()
    }

    /// The last text shown whose text contains `needle`.
    fn last_shown(&self, needle: &str) -> String {
        self.transcript().into_iter().rev().map(|s| s.text().to_string()).find(|t| t.contains(needle)).unwrap_or_else(|| panic!("nothing shown contains {needle:?}: {:#?}", self.transcript()))
    }

    async fn running_version(&self) -> String {
        let body: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{}/api/version", self.backend)).await.unwrap().json().await.unwrap();
        body["version"].as_str().unwrap_or_default().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_required_item_refuses_the_deployment_before_anything_changes() {
    let h = Harness::new().await;
    let reply = h.say("/deploy v1.2.0 staging").await;
    assert!(reply.starts_with("🚫"), "{reply}");
    assert!(
        reply.contains("refused before anything changed: required checklist item 'CI passed for this tag' failed: JSON field `state` was \"failure\", expected \"success\""),
        "{reply}"
    );
    assert!(reply.contains("⚠️ release pull request reviewed and merged (optional) —"), "{reply}");
    assert!(!reply.contains("ci-token-0b5e1d"), "the CI token never shows: {reply}");
    let d = h.latest().await;
    assert_eq!(d.state, DeploymentState::Denied);
    let steps = h.steps(d.id).await;
    assert_eq!(steps.iter().map(|s| (s.name.as_str(), s.state)).collect::<Vec<_>>(), vec![("checklist", StepState::Failed)], "nothing but the checklist ran");
    assert!(!h.pidfile("staging").exists(), "the target never ran");
    assert!(h.app.engine.store.lock("staging").await.unwrap().is_none(), "the environment is not held");
    h.run_jobs().await;
    assert!(!h.pidfile("staging").exists(), "no job was queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_message_shows_each_item_with_its_result_and_the_progress_message_keeps_them() {
    let h = Harness::new().await;
    let reply = h.say("/deploy v1.0.0 production").await;
    assert!(reply.starts_with("👍"), "{reply}");
    let approval = h.last_shown("🔐 *Approval needed");
    for line in [
        "*Checklist (checked by the bot):*",
        "✅ environment variables configured — DEPLOYBOT_TEST_CI_TOKEN, SMOKE_TEST_PASSWORD set",
        "✅ CI passed for this tag — status 200",
        "⚠️ release pull request reviewed and merged (optional) — array at the response (0 elements) did not contain an element with merged = true",
        "By approving you confirm:\n• Deployment window scheduled and communicated\n• Rollback plan prepared",
    ] {
        assert!(approval.contains(line), "approval message lacks {line:?}:\n{approval}");
    }
    // Nothing runs yet, so the security checks against what runs now fail (connection refused):
    // optional here, shown to the approvers.
    assert!(approval.contains("⚠️ security: headers http://127.0.0.1:"), "{approval}");
    assert!(approval.contains("connection refused"), "{approval}");

    let id = h.latest().await.id;
    h.say(&format!("@carol :white_check_mark: #{id}")).await;
    h.run_jobs().await;
    let d = h.app.engine.store.deployment(id).await.unwrap().unwrap();
    assert_eq!(d.state, DeploymentState::Succeeded, "{:?}", d.error);
    let checklist_runs = h.steps(id).await.into_iter().filter(|s| s.name == "checklist").count();
    assert_eq!(checklist_runs, 2, "checked at the request and again in preflight");
    let progress = h.last_shown(&format!("#{id} v1.0.0 → production*"));
    assert!(progress.contains("✅ checklist"), "{progress}");
    assert!(progress.contains("    ✅ CI passed for this tag — status 200"), "{progress}");
    assert!(progress.contains("    ⚠️ security: headers http://127.0.0.1:"), "nothing ran before the first deployment: {progress}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_security_regression_is_caught_by_verify_and_rolled_back() {
    let h = Harness::new().await;
    assert!(h.say("/deploy v1.0.0 staging").await.starts_with("👍"));
    h.run_jobs().await;
    let first = h.latest().await;
    assert_eq!(first.state, DeploymentState::Succeeded, "{:?}", first.error);
    let verify = h.steps(first.id).await.into_iter().find(|s| s.name == "verify").expect("a verify step");
    assert!(verify.detail.as_deref().unwrap_or_default().starts_with("7/7 checks passed"), "{:?}", verify.detail);

    let reply = h.say("/deploy v1.1.0-insecure staging").await;
    assert!(reply.starts_with("👍"), "what runs now (v1.0.0) passes the security checks: {reply}");
    h.run_jobs().await;
    let d = h.latest().await;
    assert_eq!(d.state, DeploymentState::RolledBack, "{:?}", d.error);
    let error = d.error.clone().unwrap_or_default();
    assert!(error.contains("security check 'headers http://127.0.0.1:"), "{error}");
    assert!(error.contains("response headers missing: strict-transport-security, x-content-type-options, content-security-policy (4 more failed)"), "{error}");
    let detail = h.steps(d.id).await.into_iter().find(|s| s.name == "verify").and_then(|s| s.detail).unwrap_or_default();
    for line in ["✅ health 'backend health'", "✅ smoke 'login returns a JWT'", "❌ security 'cors http://127.0.0.1:", "❌ security 'https_redirect http://127.0.0.1:"] {
        assert!(detail.contains(line), "verify detail lacks {line:?}:\n{detail}");
    }
    assert_eq!(h.running_version().await, "v1.0.0", "rolled back to what ran before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_security_check_names_what_it_found_on_an_insecure_build() {
    let h = Harness::new().await;
    assert!(h.say("/deploy v1.0.0 staging").await.starts_with("👍"));
    h.run_jobs().await;
    // What runs now is secure: each security check passes in preflight.
    let reply = h.say("/deploy v1.1.0-insecure staging --dry-run").await;
    for line in [
        "✅ security: headers http://127.0.0.1:",
        "✅ security: cors http://127.0.0.1:",
        "✅ security: auth_required http://127.0.0.1:",
        "✅ security: rate_limit http://127.0.0.1:",
        "✅ security: https_redirect http://127.0.0.1:",
    ] {
        assert!(reply.contains(line), "dry run lacks {line:?}:\n{reply}");
    }
    // Put the insecure build in place by hand (as a deploy outside the bot would) and look again.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_deploybot"))
        .args(["standin", "start", "--dir", &h.dir.path().display().to_string(), "--env", "staging", "--service", "backend", "--version", "v1.1.0-insecure", "--ports", &format!("backend={}", h.backend)])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let reply = h.say("/deploy v1.1.0 staging --dry-run").await;
    for line in [
        "⚠️ security: headers http://127.0.0.1:",
        "response headers missing: strict-transport-security, x-content-type-options, content-security-policy",
        "a CORS preflight from https://evil.example was allowed (status 204, Access-Control-Allow-Origin: *)",
        "GET answered 200 without credentials, expected 401 or 403",
        "none of 30 requests",
        "was answered 429 (400 ×30): no rate limit observed",
        "answered 200 over plain HTTP instead of redirecting to https://",
    ] {
        assert!(reply.contains(line), "dry run lacks {line:?}:\n{reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_variable_is_named_before_anything_changes() {
    let h = Harness::with(&[("DEPLOYBOT_TEST_CI_TOKEN", "ci-token-0b5e1d")], "5s").await;
    let reply = h.say("/deploy v1.0.0 staging").await;
    assert!(
        reply.contains("required checklist item 'environment variables configured' failed: SMOKE_TEST_PASSWORD is not set (needed by environments.staging.verify.smoke[0].json.password)"),
        "{reply}"
    );
    assert_eq!(h.latest().await.state, DeploymentState::Denied);
    assert!(!h.pidfile("staging").exists(), "the target never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ci_api_answering_html_is_one_specific_line() {
    let h = Harness::new().await;
    let reply = h.say("/deploy v1.3.0 staging").await;
    assert!(
        reply.contains("required checklist item 'CI passed for this tag' failed: expected JSON but got text/html — body: <html><body>Sign in to continue</body></html>"),
        "{reply}"
    );
    assert!(!h.pidfile("staging").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_url_that_times_out_is_one_specific_line() {
    let h = Harness::with(&VARS, "1s").await;
    let reply = h.say("/deploy v1.4.0 staging").await;
    assert!(reply.contains("required checklist item 'CI passed for this tag' failed: timed out after 1s waiting for 127.0.0.1:"), "{reply}");
    assert!(!h.pidfile("staging").exists());
}

#[test]
fn an_unknown_template_variable_is_a_config_error_naming_the_item() {
    let text = r#"
[bot]
database_url = "sqlite::memory:"
[chat]
platform = "console"
[services.backend]
image = "x/backend"
[environments.staging]
channel = "C0STAGING"
target = { kind = "command", deploy = ["true"] }
[[environments.staging.checklist.checks]]
name = "CI passed"
url = "https://ci.example/status/{tag}"
[[environments.staging.checklist.checks]]
name = "by commit"
url = "https://ci.example/commits/{sha}"
[[environments.staging.verify.security]]
kind = "cors"
url = "https://api.example/"
[[environments.staging.verify.security]]
kind = "tls"
url = "http://api.example/"
"#;
    let problems: Vec<String> = deploybot::config::Config::parse(text).expect_err("refused").iter().map(|p| p.to_string()).collect();
    let all = problems.join("\n");
    for (path, message) in [
        ("environments.staging.checklist.checks[0] ", "unknown placeholder {tag} (known here: version, env, run_id, sha)"),
        ("environments.staging.checklist.repo ", "a check uses {sha}: set repo to the git repository whose tags name the commits"),
        ("environments.staging.verify.security[0].disallowed_origin ", "a cors check needs the origin that must be refused"),
        ("environments.staging.verify.security[1].url ", "a tls check needs an https:// URL, not http:"),
    ] {
        assert!(problems.iter().any(|p| p.starts_with(path) && p.contains(message)), "lacks {path}: {message:?}:\n{all}");
    }
}

#[test]
fn check_config_for_an_environment_names_each_unset_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deploybot.toml");
    std::fs::write(
        &path,
        r#"
[bot]
database_url = "sqlite::memory:"
[chat]
platform = "console"
[services.backend]
image = "x/backend"
[environments.staging]
channel = "C0STAGING"
target = { kind = "command", deploy = ["true"] }
[[environments.staging.verify.smoke]]
url = "http://127.0.0.1:9/login"
json = { password = "${DEPLOYBOT_TEST_SURELY_UNSET_SMOKE_PASSWORD}" }
"#,
    )
    .unwrap();
    let run = |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_deploybot")).arg("--config").arg(&path).args(args).env_remove("DEPLOYBOT_TEST_SURELY_UNSET_SMOKE_PASSWORD").output().unwrap();
    let out = run(&["check-config"]);
    assert!(out.status.success(), "without --env the file is valid: {}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["check-config", "--env", "staging"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("environments.staging.verify.smoke[0].json.password: environment variable DEPLOYBOT_TEST_SURELY_UNSET_SMOKE_PASSWORD is not set"), "{stderr}");
    let out = run(&["check-config", "--env", "nowhere"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown environment \"nowhere\""));
}

/// The built-in items against real services: moto's S3 (a bucket that exists and one that does
/// not) and a real Prometheus (a query with data, one without, and a Prometheus that is not there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_items_check_the_backup_destination_and_monitoring_against_real_services() {
    let Some(moto) = services::moto() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(prometheus) = prom::prometheus(dir.path(), &[], None, None).await else { return };
    let bucket = services::bucket(&moto).await;
    let closed = free_port();
    let env = |name: &str, bucket: &str, prometheus: &str| {
        format!(
            r#"
[environments.{name}]
channel = "C0{name}"
target = {{ kind = "command", deploy = ["true"] }}

[environments.{name}.backup]
database_url = "${{DEPLOYBOT_TEST_BACKUP_DB}}"
s3 = "s3://{bucket}/invoiceme/"
s3_endpoint_url = "{moto}"

[environments.{name}.monitor]
prometheus_url = "{prometheus}"

[[environments.{name}.monitor.rules]]
name = "always one"
query = "vector(1)"
above = 2

[[environments.{name}.monitor.rules]]
name = "error rate"
query = "sum(rate(deploybot_test_no_such_metric_total[5m]))"
above = 0.01

[environments.{name}.checklist]
monitoring = "required"
backup = "required"
"#
        )
    };
    let text = format!(
        "[bot]\ndatabase_url = \"sqlite::memory:\"\n[chat]\nplatform = \"console\"\n[services.backend]\nimage = \"x/backend\"\n{}{}",
        env("staging", &bucket, &prometheus.url),
        env("production", "no-such-bucket-deploybot", &format!("http://127.0.0.1:{closed}"))
    );
    let mut config = parse_config(&text);
    config.vars = deploybot::secrets::Vars::from_pairs(services::MOTO_KEYS.into_iter().chain([("DEPLOYBOT_TEST_BACKUP_DB", "postgres://db.invalid/app")]));
    let http = reqwest::Client::new();
    let of = |name: &str| config.environments.values().find(|e| e.name.as_str() == name).unwrap().clone();

    let staging = deploybot::checklist::evaluate(&of("staging"), &config.vars, &http, "v1.0.0").await;
    let lines = staging.lines();
    assert!(lines.contains(&format!("✅ backup destination writable — s3://{bucket}/invoiceme/ is writable")), "{lines}");
    assert!(services::object(&moto, &bucket, "invoiceme/.deploybot-write-check").await.is_none(), "the test object is deleted again");
    assert!(lines.contains("❌ monitoring configured — rule 'error rate': no data: the query returned no sample"), "{lines}");
    assert_eq!(staging.refusal().map(|i| i.name.as_str()), Some("monitoring configured"));

    let production = deploybot::checklist::evaluate(&of("production"), &config.vars, &http, "v1.0.0").await;
    let lines = production.lines();
    assert!(lines.contains("❌ backup destination writable — cannot write a test object to s3://no-such-bucket-deploybot/invoiceme/.deploybot-write-check: "), "{lines}");
    assert!(lines.contains("NoSuchBucket"), "{lines}");
    assert!(lines.contains(&format!("❌ monitoring configured — rule 'always one': Prometheus is unreachable at http://127.0.0.1:{closed}")), "{lines}");
}

/// `image_scan` reads ECR's scan findings through the AWS SDK, here from moto: an image with only
/// low findings, one with moto's default HIGH finding, and one never scanned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_scan_reads_the_findings_from_ecr() {
    let Some(moto) = services::moto() else { return };
    let repository = services::unique("invoice-me-backend");
    let credentials = aws_sdk_ecr::config::Credentials::new("testing", "testing", None, None, "test");
    let conf = aws_sdk_ecr::config::Builder::new()
        .behavior_version(aws_sdk_ecr::config::BehaviorVersion::latest())
        .region(aws_sdk_ecr::config::Region::new("us-east-1"))
        .credentials_provider(credentials)
        .endpoint_url(&moto)
        .build();
    let ecr = aws_sdk_ecr::Client::from_conf(conf);
    ecr.create_repository().repository_name(&repository).send().await.unwrap();
    for (i, tag) in ["v1.0.0", "v1.1.0", "v1.2.0"].into_iter().enumerate() {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": { "mediaType": "application/vnd.docker.container.image.v1+json", "size": 7, "digest": format!("sha256:{}", format!("{i}").repeat(64)) },
            "layers": []
        });
        ecr.put_image().repository_name(&repository).image_tag(tag).image_manifest(manifest.to_string()).send().await.unwrap();
        if tag != "v1.2.0" {
            ecr.start_image_scan().repository_name(&repository).image_id(aws_sdk_ecr::types::ImageIdentifier::builder().image_tag(tag).build()).send().await.unwrap();
        }
    }
    // v1.0.0's scan found two low findings only (moto's API for configuring a scan's result).
    let low = serde_json::json!({
        "results": [{
            "registryId": "123456789012",
            "repositoryName": repository,
            "imageId": { "imageTag": "v1.0.0" },
            "imageScanStatus": { "status": "COMPLETE", "description": "The scan was completed successfully." },
            "imageScanFindings": { "findings": [], "findingSeverityCounts": { "LOW": 2 } }
        }],
        "region": "us-east-1"
    });
    let answer = reqwest::Client::new().post(format!("{moto}/moto-api/static/ecr/scan-finding-results")).json(&low).send().await.unwrap();
    assert!(answer.status().is_success(), "moto took the scan result: {}", answer.status());

    let config: deploybot::verify::VerifyConfig = toml::from_str(&format!(
        r#"
[[security]]
kind = "image_scan"
repository = "{repository}"
endpoint_url = "{moto}"
[[security]]
kind = "image_scan"
repository = "{repository}"
severity = "CRITICAL"
endpoint_url = "{moto}"
"#
    ))
    .unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    let keys = deploybot::secrets::Vars::from_pairs(services::MOTO_KEYS);
    let http = reqwest::Client::new();
    let scan = |version: &'static str| {
        let (config, keys, http) = (config.clone(), keys.clone(), http.clone());
        async move { deploybot::verify::run_security(&config, &deploybot::verify::Vars::new(version, "production", "test"), &http, &keys).await }
    };
    let report = scan("v1.0.0").await;
    assert!(report.ok, "{}", report.details());
    assert_eq!(report.checks[0].detail, format!("no findings at or above HIGH in {repository}:v1.0.0 (findings: LOW 2)"));

    let report = scan("v1.1.0").await;
    assert_eq!(report.checks[0].detail, format!("1 finding at or above HIGH in {repository}:v1.1.0 (HIGH 1): CVE-9999-9999"));
    assert!(!report.checks[0].ok);
    assert!(report.checks[1].ok, "a HIGH finding is under CRITICAL: {}", report.details());

    let report = scan("v1.2.0").await;
    assert_eq!(report.checks[0].detail, format!("{repository}:v1.2.0 has no scan findings: it was never scanned (turn on scan on push, or `aws ecr start-image-scan`)"));
    let report = scan("v9.9.9").await;
    assert_eq!(report.checks[0].detail, format!("{repository}:v9.9.9 is not in ECR"));
}
