//! Telling everyone (issue 14): `[[notify]]` email through a real SMTP server (aiosmtpd with
//! STARTTLS and AUTH), a Statuspage double that refuses what the published API would not accept,
//! a webhook receiver checking the signature, and the history committed to a real bare git
//! repository, including a push that loses a race and a server that refuses.
//!
//! The engine runs on SQLite with the console chat and a `command` target: `deploy.sh` exits 1
//! for a version containing `broken`, so that deployment rolls back.
//! Needs DEPLOYBOT_TEST_SMTP_PYTHON (scripts/services/smtp.sh) and git (scripts/services/git.sh);
//! DEPLOYBOT_SKIP_SMTP=1 / DEPLOYBOT_SKIP_GIT=1 skip explicitly.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use deploybot::app::{self, App};
use deploybot::chat::console;
use deploybot::engine::clock::SystemClock;
use deploybot::model::{Deployment, DeploymentState};
use serde_json::{json, Value};

const SMTP_USER: &str = "deploybot-mailer";
const SMTP_PASSWORD: &str = "smtp-pass-4f9a2c";
const STATUSPAGE_TOKEN: &str = "sp-token-77ab31";
const WEBHOOK_SECRET: &str = "whsec-0c1d2e3f";
const PAGE: &str = "abc123";

const DEPLOY_SH: &str = r#"#!/bin/sh
dir=$(dirname "$0")
case "$3" in *broken*) echo "image $3 crashed at start" >&2; exit 1;; esac
echo "$3" > "$dir/$1-$2.version"
"#;

fn smtp_python() -> Option<String> {
    match std::env::var("DEPLOYBOT_TEST_SMTP_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var("DEPLOYBOT_SKIP_SMTP").as_deref() == Ok("1") => {
            eprintln!("skipped: DEPLOYBOT_SKIP_SMTP=1 and no DEPLOYBOT_TEST_SMTP_PYTHON");
            None
        }
        _ => panic!("this test needs an SMTP server: run `source scripts/services/smtp.sh && smtp_start` (bash scripts/test.sh does it), or set DEPLOYBOT_SKIP_SMTP=1 to skip"),
    }
}

fn git_available() -> bool {
    if Command::new("git").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    if std::env::var("DEPLOYBOT_SKIP_GIT").as_deref() == Ok("1") {
        eprintln!("skipped: DEPLOYBOT_SKIP_GIT=1 and git is not installed");
        return false;
    }
    panic!("this test needs git: run `source scripts/services/git.sh && git_start`, or set DEPLOYBOT_SKIP_GIT=1 to skip")
}

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).current_dir(dir).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ------------------------------------------------------------------------------------- SMTP

/// aiosmtpd on a free port with STARTTLS (a leaf certificate for 127.0.0.1 signed by a CA made
/// here; the bot trusts the CA through `ca_file`) and AUTH. Killed on drop.
struct Smtp {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Smtp {
    fn start(python: &str, dir: &Path) -> Smtp {
        let dir = dir.join("smtp");
        std::fs::create_dir_all(&dir).unwrap();
        let ssl = |args: &[&str]| run(&dir, "openssl", args);
        ssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=deploybot test CA"]);
        ssl(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
        std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").unwrap();
        ssl(&["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf"]);
        let port = support::bot::free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_server.py");
        let mut child = Command::new(python)
            .args([script, &port.to_string(), &dir.display().to_string(), "server.pem", "server.key", SMTP_USER, SMTP_PASSWORD])
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut ready).unwrap();
        assert_eq!(ready.trim(), "ready", "the SMTP server did not start");
        Smtp { port, dir, child }
    }

    /// The messages received so far, in order.
    fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in 1.. {
            match std::fs::read_to_string(self.dir.join(format!("{n}.eml"))) {
                Ok(m) => out.push(m),
                Err(_) => break,
            }
        }
        out
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------------------- Statuspage

/// Atlassian Statuspage's incidents API as published: `Authorization: OAuth <key>`, a body with
/// one `incident` object whose fields and statuses are the documented ones; a maintenance needs
/// `scheduled_for` before `scheduled_until`; PATCH of an unknown incident is 404. Anything else
/// is refused with 400/401/404/422 as the real API answers.
#[derive(Clone, Default)]
struct Statuspage {
    incidents: Arc<Mutex<Vec<Value>>>,
    requests: Arc<Mutex<Vec<(String, Value)>>>,
}

const INCIDENT_FIELDS: [&str; 16] = [
    "name", "status", "impact_override", "scheduled_for", "scheduled_until", "scheduled_remind_prior", "scheduled_auto_in_progress",
    "scheduled_auto_completed", "metadata", "deliver_notifications", "auto_transition_deliver_notifications_at_end",
    "auto_transition_to_maintenance_state", "auto_transition_to_operational_state", "backfill_date", "body", "components",
];
const REALTIME: [&str; 4] = ["investigating", "identified", "monitoring", "resolved"];
const MAINTENANCE: [&str; 4] = ["scheduled", "in_progress", "verifying", "completed"];

fn sp_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The incident object of a valid body, or the refusal (status, message).
fn check_incident(body: &Value, creating: bool) -> Result<&serde_json::Map<String, Value>, (StatusCode, String)> {
    let Some(incident) = body.get("incident").and_then(Value::as_object) else {
        return Err((StatusCode::BAD_REQUEST, "incident is missing".to_string()));
    };
    for key in incident.keys() {
        if !INCIDENT_FIELDS.contains(&key.as_str()) && key != "component_ids" {
            return Err((StatusCode::UNPROCESSABLE_ENTITY, format!("unknown parameter incident[{key}]")));
        }
    }
    if creating && incident.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err((StatusCode::UNPROCESSABLE_ENTITY, "name can't be blank".to_string()));
    }
    if let Some(status) = incident.get("status") {
        let s = status.as_str().unwrap_or_default();
        if !REALTIME.contains(&s) && !MAINTENANCE.contains(&s) {
            return Err((StatusCode::UNPROCESSABLE_ENTITY, format!("status {s} is not included in the list")));
        }
        if creating && MAINTENANCE.contains(&s) {
            let at = |k: &str| incident.get(k).and_then(Value::as_str).and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            match (at("scheduled_for"), at("scheduled_until")) {
                (Some(a), Some(b)) if a < b => {}
                _ => return Err((StatusCode::UNPROCESSABLE_ENTITY, "a maintenance needs scheduled_for before scheduled_until (ISO 8601)".to_string())),
            }
        }
    }
    if let Some(impact) = incident.get("impact_override") {
        if !["none", "maintenance", "minor", "major", "critical"].contains(&impact.as_str().unwrap_or_default()) {
            return Err((StatusCode::UNPROCESSABLE_ENTITY, "impact_override is not included in the list".to_string()));
        }
    }
    if let Some(components) = incident.get("components") {
        let allowed = ["operational", "under_maintenance", "degraded_performance", "partial_outage", "major_outage"];
        if !components.as_object().is_some_and(|c| c.values().all(|v| allowed.contains(&v.as_str().unwrap_or_default()))) {
            return Err((StatusCode::UNPROCESSABLE_ENTITY, "components must map component ids to a component status".to_string()));
        }
    }
    Ok(incident)
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("OAuth {STATUSPAGE_TOKEN}"))
}

async fn sp_create(State(sp): State<Statuspage>, UrlPath(page): UrlPath<String>, headers: HeaderMap, body: Json<Value>) -> Response {
    sp.requests.lock().unwrap().push(("POST".into(), body.0.clone()));
    if !authorized(&headers) {
        return sp_error(StatusCode::UNAUTHORIZED, "Could not authenticate");
    }
    if page != PAGE {
        return sp_error(StatusCode::NOT_FOUND, "page not found");
    }
    let incident = match check_incident(&body.0, true) {
        Ok(i) => i.clone(),
        Err((status, message)) => return sp_error(status, &message),
    };
    let mut incidents = sp.incidents.lock().unwrap();
    let mut stored = Value::Object(incident);
    stored["id"] = json!(format!("inc{}", incidents.len() + 1));
    incidents.push(stored.clone());
    (StatusCode::CREATED, Json(stored)).into_response()
}

async fn sp_update(State(sp): State<Statuspage>, UrlPath((page, id)): UrlPath<(String, String)>, headers: HeaderMap, body: Json<Value>) -> Response {
    sp.requests.lock().unwrap().push((format!("PATCH {id}"), body.0.clone()));
    if !authorized(&headers) {
        return sp_error(StatusCode::UNAUTHORIZED, "Could not authenticate");
    }
    let incident = match check_incident(&body.0, false) {
        Ok(i) => i.clone(),
        Err((status, message)) => return sp_error(status, &message),
    };
    let mut incidents = sp.incidents.lock().unwrap();
    let Some(stored) = incidents.iter_mut().find(|i| i["id"] == json!(id)).filter(|_| page == PAGE) else {
        return sp_error(StatusCode::NOT_FOUND, "incident not found");
    };
    for (k, v) in incident {
        stored[k] = v;
    }
    Json(stored.clone()).into_response()
}

async fn start_statuspage() -> (Statuspage, u16) {
    let sp = Statuspage::default();
    let router = axum::Router::new()
        .route("/v1/pages/{page}/incidents", axum::routing::post(sp_create))
        .route("/v1/pages/{page}/incidents/{id}", axum::routing::patch(sp_update))
        .with_state(sp.clone());
    (sp, serve(router).await)
}

async fn serve(router: axum::Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    port
}

// ---------------------------------------------------------------------------------- webhook

/// One webhook call: its headers and body.
type HookCall = (HashMap<String, String>, Vec<u8>);

#[derive(Clone, Default)]
struct Hooks(Arc<Mutex<Vec<HookCall>>>);

async fn hook(State(hooks): State<Hooks>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let headers = headers.iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string())).collect();
    hooks.0.lock().unwrap().push((headers, body.to_vec()));
    StatusCode::NO_CONTENT
}

// ---------------------------------------------------------------------------------- harness

struct Harness {
    dir: tempfile::TempDir,
    app: App,
    seq: AtomicU64,
}

fn config_text(d: &Path, smtp: u16, sp: u16, wh: u16) -> String {
    let d = d.display();
    format!(
        r#"[bot]
database_url = "sqlite://{d}/deploybot.db"
listen = "127.0.0.1:0"
timezone = "America/New_York"
history_file = "{d}/history.md"
history_repo = "{d}/history.git"
history_branch = "main"

[chat]
platform = "console"

[chat.console]
user = "alice"

[services.backend]
image = "invoiceme/backend"

[environments.staging]
channel = "C0STAGING"
deployers = ["alice"]
target = {{ kind = "command", deploy = ["sh", "{d}/deploy.sh", "{{env}}", "{{service}}", "{{version}}"], timeout = "20s" }}

[environments.production]
channel = "C0PROD"
deployers = ["alice"]
target = {{ kind = "command", deploy = ["sh", "{d}/deploy.sh", "{{env}}", "{{service}}", "{{version}}"], timeout = "20s" }}

[[notify]]
kind = "email"
on = ["succeeded", "rolled_back", "rollback_failed"]
envs = ["staging"]
smtp = "smtp://127.0.0.1:{smtp}"
username = "${{SMTP_USER}}"
password = "${{SMTP_PASSWORD}}"
from = "deploybot@example.com"
to = ["team@example.com", "devops@example.com"]
ca_file = "{d}/smtp/ca.pem"

[[notify]]
kind = "statuspage"
api_url = "http://127.0.0.1:{sp}/v1"
page_id = "{PAGE}"
token = "${{STATUSPAGE_TOKEN}}"
component_ids = ["cmp-api"]
on = ["running", "succeeded", "rolled_back", "rollback_failed"]

[[notify]]
kind = "webhook"
url = "http://127.0.0.1:{wh}/deploys"
secret = "${{WEBHOOK_SECRET}}"
on = ["succeeded", "rolled_back"]
"#
    )
}

impl Harness {
    async fn new(smtp_python: &str, token: &str) -> (Harness, Smtp, Statuspage, Hooks) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("deploy.sh"), DEPLOY_SH).unwrap();
        run(dir.path(), "git", &["init", "--quiet", "--bare", "--initial-branch=main", "history.git"]);
        let smtp = Smtp::start(smtp_python, dir.path());
        let (sp, sp_port) = start_statuspage().await;
        let hooks = Hooks::default();
        let wh_port = serve(axum::Router::new().route("/deploys", axum::routing::post(hook)).with_state(hooks.clone())).await;
        let mut config = support::bot::parse_config(&config_text(dir.path(), smtp.port, sp_port, wh_port));
        config.vars = deploybot::secrets::Vars::from_pairs([("SMTP_USER", SMTP_USER), ("SMTP_PASSWORD", SMTP_PASSWORD), ("STATUSPAGE_TOKEN", token), ("WEBHOOK_SECRET", WEBHOOK_SECRET)]);
        let app = app::build_console_app(config, Arc::new(SystemClock), None).await.unwrap();
        (Harness { dir, app, seq: AtomicU64::new(0) }, smtp, sp, hooks)
    }

    async fn say(&self, line: &str) -> String {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let event = console::parse_line(line, "alice", "console", seq).unwrap().unwrap();
        self.app.engine.handle(event).await.unwrap().map(|r| r.0).unwrap_or_default()
    }

    /// `/deploy version env`, run to its end, and its notifications delivered (or given up).
    async fn deploy(&self, version: &str, env: &str) -> Deployment {
        let reply = self.say(&format!("/deploy {version} {env}")).await;
        assert!(reply.starts_with("👍"), "{version} not accepted: {reply}");
        while self.app.engine.run_next_job().await.unwrap() {}
        assert!(self.app.engine.drain_notifications(Duration::from_secs(60)).await.unwrap(), "notifications still pending after 60 s");
        self.app.engine.store.deployments(None, &[], 1).await.unwrap().remove(0)
    }

    async fn thread(&self, id: i64) -> String {
        let messages = self.app.engine.store.outbox_messages_of(id).await.unwrap();
        messages.iter().map(|m| serde_json::from_str::<Value>(&m.body).unwrap()["text"].as_str().unwrap_or_default().to_string()).collect::<Vec<_>>().join("\n---\n")
    }

    fn bare(&self) -> PathBuf {
        self.dir.path().join("history.git")
    }

    /// `git log` of the bare repository's main: subjects, newest first.
    fn commits(&self) -> Vec<String> {
        run(&self.bare(), "git", &["log", "--format=%s", "main"]).lines().map(str::to_string).collect()
    }

    fn history_in_repo(&self) -> String {
        run(&self.bare(), "git", &["show", "main:docs/deployment/history.md"])
    }
}

fn signature(body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_is_told_by_email_statuspage_webhook_and_committed_to_the_history_repo_once() {
    let Some(python) = smtp_python() else { return };
    if !git_available() {
        return;
    }
    let (h, smtp, sp, hooks) = Harness::new(&python, STATUSPAGE_TOKEN).await;

    let first = h.deploy("v1.0.0", "staging").await;
    assert_eq!(first.state, DeploymentState::Succeeded, "{:?}", first.error);

    // Email: over STARTTLS, authenticated, the runbook's history template; no secret in it.
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    for needle in [
        "X-Was-TLS: yes",
        "X-Authenticated: True",
        "X-Envelope-To: team@example.com,devops@example.com",
        &format!("Subject: [deploybot] staging v1.0.0: succeeded (#{})", first.id),
        "## v1.0.0 - ",
        "- **Deployed by:** alice",
        "- **Outcome:** succeeded",
        "- backend: nothing =E2=86=92 v1.0.0 (deployed)",
        "deploy: succeeded",
    ] {
        assert!(mail.contains(needle), "{needle:?} missing from the email:\n{mail}");
    }
    assert!(!mail.contains(SMTP_PASSWORD) && !mail.contains(STATUSPAGE_TOKEN));

    // Statuspage: a maintenance while it ran, completed when it ended.
    let incidents = sp.incidents.lock().unwrap().clone();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!((incidents[0]["status"].as_str(), incidents[0]["impact_override"].as_str()), (Some("completed"), Some("maintenance")), "{incidents:?}");
    assert_eq!(incidents[0]["component_ids"], json!(["cmp-api"]));
    let requests: Vec<String> = sp.requests.lock().unwrap().iter().map(|(m, _)| m.clone()).collect();
    assert_eq!(requests, vec!["POST".to_string(), "PATCH inc1".to_string()]);

    // Webhook: the record, signed.
    let calls = hooks.0.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    let (headers, body) = &calls[0];
    assert_eq!(headers["x-deploybot-signature"], signature(body), "a valid HMAC-SHA256 of the body");
    assert_eq!(headers["x-deploybot-event"], "succeeded");
    let record: Value = serde_json::from_slice(body).unwrap();
    assert_eq!((record["id"].as_i64(), record["env"].as_str(), record["version"].as_str(), record["event"].as_str()), (Some(first.id), Some("staging"), Some("v1.0.0"), Some("succeeded")));

    // The history file, committed and pushed with a message naming the deployment.
    assert_eq!(h.commits(), vec![format!("deploybot: #{} staging v1.0.0 succeeded", first.id)]);
    assert!(h.history_in_repo().contains("## v1.0.0 - "), "{}", h.history_in_repo());

    // A broken version rolls back: everyone is told, and the page shows an incident.
    let second = h.deploy("v1.1.0-broken", "staging").await;
    assert_eq!(second.state, DeploymentState::RolledBack, "{:?}", second.error);
    let mails = smtp.messages();
    assert_eq!(mails.len(), 2);
    assert!(mails[1].contains(&format!("staging v1.1.0-broken: rolled back (#{})", second.id)) && mails[1].contains("- **Rollback:** automatic, to v1.0.0"), "{}", mails[1]);
    let incidents = sp.incidents.lock().unwrap().clone();
    assert_eq!(incidents.len(), 3, "maintenance 1, maintenance 2 and the incident: {incidents:?}");
    assert_eq!(incidents[1]["status"], json!("completed"));
    assert_eq!((incidents[2]["status"].as_str(), incidents[2]["impact_override"].as_str()), (Some("resolved"), Some("minor")), "{incidents:?}");
    assert_eq!(hooks.0.lock().unwrap().len(), 2);
    assert_eq!(h.commits()[0], format!("deploybot: #{} staging v1.1.0-broken rolled back", second.id));
    assert!(h.history_in_repo().contains("## v1.1.0-broken - "));

    // envs = ["staging"]: production deployments send no email; the others still go.
    let prod = h.deploy("v1.0.0", "production").await;
    assert_eq!(prod.state, DeploymentState::Succeeded);
    assert_eq!(smtp.messages().len(), 2, "no email for production");
    assert_eq!(hooks.0.lock().unwrap().len(), 3);

    // Never twice: the state reached again (a handler run again) writes nothing new.
    let before = (smtp.messages().len(), hooks.0.lock().unwrap().len(), sp.requests.lock().unwrap().len(), h.commits().len());
    h.app.engine.notify_state(first.id).await;
    assert!(h.app.engine.drain_notifications(Duration::from_secs(10)).await.unwrap());
    let after = (smtp.messages().len(), hooks.0.lock().unwrap().len(), sp.requests.lock().unwrap().len(), h.commits().len());
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_retried_then_reported_and_a_lost_push_race_is_retried_on_top_of_the_remote() {
    let Some(python) = smtp_python() else { return };
    if !git_available() {
        return;
    }
    // Statuspage refuses the token: never accepted, reported at once.
    let (h, smtp, sp, _hooks) = Harness::new(&python, "wrong-token-value").await;
    std::fs::write(smtp.dir.join("refuse"), "").unwrap();
    // Someone else's commit lands on main between the bot's clone and its push, once.
    std::fs::write(h.dir.path().join("race-once"), "").unwrap();
    let hook = h.bare().join("hooks/pre-receive");
    std::fs::write(
        &hook,
        r#"#!/bin/sh
cat >/dev/null
if [ -f "$GIT_DIR/../race-once" ]; then
  rm "$GIT_DIR/../race-once"
  unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
  export GIT_AUTHOR_NAME=carol GIT_AUTHOR_EMAIL=carol@example.com GIT_COMMITTER_NAME=carol GIT_COMMITTER_EMAIL=carol@example.com
  tree=$(printf '100644 blob %s\tREADME.md\n' "$(echo 'notes' | git hash-object -w --stdin)" | git mktree)
  old=$(git rev-parse -q --verify refs/heads/main)
  new=$(git commit-tree "$tree" ${old:+-p "$old"} -m "carol: README")
  git update-ref refs/heads/main "$new"
fi
exit 0
"#,
    )
    .unwrap();
    run(h.dir.path(), "chmod", &["+x", &hook.display().to_string()]);

    let started = std::time::Instant::now();
    let d = h.deploy("v1.0.0", "staging").await;
    assert_eq!(d.state, DeploymentState::Succeeded, "a notification never holds a deployment back: {:?}", d.error);

    // SMTP said 451 to each of the 5 attempts (0.5 + 1 + 2 + 4 s of backoff), then the thread was told.
    let rows = h.app.engine.store.notifications_of(d.id).await.unwrap();
    let email = rows.iter().find(|r| r.kind == "email").unwrap();
    assert_eq!((email.state.as_str(), email.attempts), ("failed", 5), "{email:?}");
    assert!(started.elapsed() >= Duration::from_millis(7_500), "backed off between attempts: {:?}", started.elapsed());
    assert!(smtp.messages().is_empty());
    let thread = h.thread(d.id).await;
    assert!(thread.contains("⚠️ The email notification to team@example.com, devops@example.com about") && thread.contains("could not be delivered after 5 attempts") && thread.contains("451"), "{thread}");
    assert!(thread.contains("The Statuspage update of page abc123") && thread.contains("at the first attempt") && thread.contains("HTTP 401"), "{thread}");
    assert!(!thread.contains("wrong-token-value") && !thread.contains(SMTP_PASSWORD), "{thread}");
    assert!(sp.incidents.lock().unwrap().is_empty());

    // The push lost the race, was redone on top of carol's commit, and both are there.
    assert_eq!(h.commits(), vec![format!("deploybot: #{} staging v1.0.0 succeeded", d.id), "carol: README".to_string()]);
    assert!(h.history_in_repo().contains("## v1.0.0 - "));
    let history = rows.iter().find(|r| r.kind == "history_repo").unwrap();
    assert_eq!((history.state.as_str(), history.attempts), ("delivered", 0), "{history:?}");

    // A server that rejects every push: retried, then reported in the thread.
    std::fs::write(&hook, "#!/bin/sh\necho 'main is protected' >&2\nexit 1\n").unwrap();
    let next = h.deploy("v1.0.1", "staging").await;
    assert_eq!(next.state, DeploymentState::Succeeded);
    let thread = h.thread(next.id).await;
    assert!(thread.contains("The history commit to") && thread.contains("after 5 attempts") && thread.contains("main is protected"), "{thread}");
}

#[test]
fn check_config_names_bad_notify_entries() {
    let text = r#"
[services.backend]
image = "x/backend"
[environments.staging]
channel = "C1"
target = { kind = "command", deploy = ["true"] }
[[notify]]
kind = "email"
on = ["succeeded", "deployed"]
envs = ["prod"]
smtp = "http://mail.example.com"
username = "${SMTP_USER}"
from = "not-an-address"
to = []
[[notify]]
kind = "statuspage"
page_id = "p"
token = "plain-text-token"
on = ["running"]
[[notify]]
kind = "pager"
on = ["failed"]
"#;
    let problems = deploybot::config::Config::parse(text).expect_err("refused");
    let shown: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect();
    for needle in [
        "notify[0].on[1]: unknown state \"deployed\"",
        "notify[0].envs[0]: unknown environment \"prod\" (known: staging)",
        "notify[0].smtp: \"http://mail.example.com\" is not an SMTP URL",
        "notify[0].password: give both username and password, or neither",
        "notify[0].from: \"not-an-address\" is not an email address",
        "notify[0].to: no recipients",
        "notify[1]: secrets are never inline",
        "notify[2].kind: unknown variant `pager`",
    ] {
        assert!(shown.iter().any(|s| s.starts_with(needle) || s.contains(needle)), "{needle:?} not in {shown:#?}");
    }
}

/// The notifications table on both stores: a key written once, each row claimed by one of several
/// concurrent deliverers, retries due later, a claim that lapses taken over, delivered rows never again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notifications_are_written_once_and_claimed_by_one_deliverer_on_both_stores() {
    use deploybot::store::NewNotification;
    const T0: i64 = 1_800_000_000_000;
    for db in support::db::stores().await {
        let row = |i: usize| NewNotification { key: format!("7:{i}:succeeded"), deployment_id: 7, notifier: i.to_string(), kind: "webhook".into(), event: "succeeded".into(), payload: "{}".into() };
        for i in 0..30 {
            assert!(db.store.notify_put(&row(i), T0).await.unwrap(), "{}", db.name);
        }
        assert!(!db.store.notify_put(&row(0), T0).await.unwrap(), "{}: a key is written once", db.name);
        let barrier = Arc::new(tokio::sync::Barrier::new(6));
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let (store, barrier) = (db.store.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let mut mine = Vec::new();
                    loop {
                        let batch = store.notify_claim(&format!("replica-{i}"), T0, 60_000, 2).await.unwrap();
                        if batch.is_empty() {
                            return mine;
                        }
                        mine.extend(batch.into_iter().map(|n| n.key));
                    }
                })
            })
            .collect();
        let mut claimed = Vec::new();
        for t in tasks {
            claimed.extend(t.await.unwrap());
        }
        claimed.sort();
        let mut written: Vec<String> = (0..30).map(|i| row(i).key).collect();
        written.sort();
        assert_eq!(claimed, written, "{}: every notification claimed exactly once", db.name);

        let first = db.store.notification(&row(0).key).await.unwrap().unwrap();
        assert!(!db.store.notify_mark_delivered(first.id, "someone-else", None, T0).await.unwrap(), "{}: only the claimer records a delivery", db.name);
        // A claim that lapses is taken over; a failed delivery is due again at its retry time.
        let again = db.store.notify_claim("replica-9", T0 + 61_000, 60_000, 100).await.unwrap();
        assert_eq!(again.len(), 30, "{}: lapsed claims are taken over", db.name);
        db.store.notify_mark_failed(first.id, "HTTP 503", Some(T0 + 70_000), T0 + 61_000).await.unwrap();
        for n in again.iter().skip(1) {
            assert!(db.store.notify_mark_delivered(n.id, "replica-9", Some("ok"), T0 + 61_000).await.unwrap());
        }
        assert!(db.store.notify_claim("r", T0 + 65_000, 60_000, 100).await.unwrap().is_empty(), "{}: not due yet, and delivered rows never again", db.name);
        let retried = db.store.notify_claim("r", T0 + 70_000, 60_000, 100).await.unwrap();
        assert_eq!((retried.len(), retried[0].attempts, retried[0].last_error.as_deref()), (1, 1, Some("HTTP 503")), "{}", db.name);
        db.store.notify_mark_failed(retried[0].id, "HTTP 503", None, T0 + 70_000).await.unwrap();
        assert_eq!(db.store.notifications_pending().await.unwrap(), 0, "{}: given up", db.name);
        assert_eq!(db.store.notification(&row(0).key).await.unwrap().unwrap().state, "failed");
    }
}
