//! `deploybot demo`: the runbook walked through on the embedded default (SQLite, console chat,
//! `command` targets that start the stand-in InvoiceMe app as real local processes), printing
//! the chat transcript. Also the hidden `deploybot standin …` helper those targets call.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{Datelike, TimeZone, Utc, Weekday};
use tokio::sync::watch;

use crate::app;
use crate::chat::console;
use crate::config::Config;
use crate::engine::clock::ShiftedClock;
use crate::model::DeploymentState;

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn demo_config(dir: &Path, exe: &Path, staging: (u16, u16), prod: (u16, u16)) -> String {
    let d = dir.display();
    let x = exe.display();
    let env = |name: &str, channel: &str, alias: &str, (be, fe): (u16, u16), extra: &str| {
        format!(
            r#"
[environments.{name}]
channel = "{channel}"
aliases = ["{alias}"]
checklist = ["Deployment window scheduled and communicated", "Rollback plan prepared"]
{extra}
target = {{ kind = "command", deploy = ["{x}", "standin", "start", "--dir", "{d}", "--env", "{name}", "--service", "{{service}}", "--version", "{{version}}", "--ports", "backend={be},frontend={fe}"], rollback = ["{x}", "standin", "start", "--dir", "{d}", "--env", "{name}", "--service", "{{service}}", "--version", "{{previous}}", "--ports", "backend={be},frontend={fe}"], current = ["{x}", "standin", "current", "--service", "{{service}}", "--ports", "backend={be},frontend={fe}"], logs = ["{x}", "standin", "logs", "--dir", "{d}", "--env", "{name}", "--service", "{{service}}", "--tail", "{{tail}}"], timeout = "30s" }}

[environments.{name}.verify]
retries = 2
backoff = "200ms"
timeout = "3s"

[[environments.{name}.verify.health]]
name = "backend health"
url = "http://127.0.0.1:{be}/api/actuator/health"
expect_json = {{ status = "UP" }}

[[environments.{name}.verify.health]]
name = "database connection"
url = "http://127.0.0.1:{be}/api/actuator/health/db"
expect_json = {{ status = "UP" }}

[[environments.{name}.verify.health]]
name = "frontend"
url = "http://127.0.0.1:{fe}/"

[[environments.{name}.verify.smoke]]
name = "login returns a JWT"
method = "POST"
url = "http://127.0.0.1:{be}/api/auth/login"
json = {{ username = "test@example.com", password = "testpass" }}
capture = {{ token = "token" }}

[[environments.{name}.verify.smoke]]
name = "create customer returns 201"
method = "POST"
url = "http://127.0.0.1:{be}/api/customers"
headers = {{ Authorization = "Bearer {{token}}" }}
json = {{ name = "Demo {{run_id}}", email = "demo+{{run_id}}@example.com" }}
expect_status = 201
capture = {{ customer_id = "id" }}

[[environments.{name}.verify.smoke]]
name = "list customers contains it"
url = "http://127.0.0.1:{be}/api/customers"
headers = {{ Authorization = "Bearer {{token}}" }}
expect_json_contains = {{ id = "{{customer_id}}" }}
"#
        )
    };
    let prod_extra = r#"requires = ["staging"]
window = { timezone = "America/New_York", allow = [ { days = "tue-wed", hours = "10:00-14:00" } ], month_end_days = 3, holidays = ["2026-12-25", "2027-01-01", "07-04"] }
approvals = { required = 1, approvers = ["carol", "group:S0DEVOPS"], expires_after = "30m" }"#;
    format!(
        r#"[bot]
database_url = "sqlite://{d}/deploybot.db"
listen = "127.0.0.1:3000"
timezone = "America/New_York"
history_file = "{d}/history.md"

[chat]
platform = "console"

[chat.console]
user = "alice"
groups = {{ S0DEVOPS = ["dan"] }}

[services.backend]
image = "invoiceme/invoice-me-backend"
order = 1

[services.frontend]
image = "invoiceme/invoice-me-frontend"
order = 2
{}{}"#,
        env("staging", "C0STAGING", "stg", staging, ""),
        env("production", "C0PROD", "prod", prod, prod_extra)
    )
}

/// Staging's post-deploy watch in the demo: the runbook's error-rate rule, plus a sustained
/// breach that rolls back, against the in-process Prometheus stand-in.
fn demo_monitor(source_port: u16) -> String {
    let query = crate::monitor::demo_source::error_ratio_query("staging", DEMO_RATE_WINDOW.as_secs());
    format!(
        r#"
[environments.staging.monitor]
prometheus_url = "http://127.0.0.1:{source_port}"
watch = "5s"
interval = "1s"

[[environments.staging.monitor.rules]]
name = "error rate"
query = '{query}'
above = 0.01
unit = "percent"
hint = "investigate immediately"

[[environments.staging.monitor.rules]]
name = "sustained error rate"
query = '{query}'
above = 0.05
for = 2
unit = "percent"
action = "rollback"
"#
    )
}

const DEMO_RATE_WINDOW: Duration = Duration::from_secs(4);

/// A Tuesday 10:05 in New York when the production window is open, and the Friday 17:00 before it.
fn demo_instants(config: &Config) -> Result<(chrono::DateTime<Utc>, chrono::DateTime<Utc>)> {
    let tz = chrono_tz::America::New_York;
    let prod = config.environments.values().find(|e| e.name.as_str() == "production").context("demo config has production")?;
    let today = Utc::now().with_timezone(&tz).date_naive();
    for offset in 0..120 {
        let day = today + chrono::Duration::days(offset);
        if day.weekday() != Weekday::Tue {
            continue;
        }
        let Some(tuesday) = tz.with_ymd_and_hms(day.year(), day.month(), day.day(), 10, 5, 0).single() else { continue };
        let tuesday = tuesday.with_timezone(&Utc);
        if prod.policy.check(tuesday, false).allowed {
            let friday = tuesday - chrono::Duration::days(4) + chrono::Duration::hours(7) - chrono::Duration::minutes(5);
            return Ok((friday, tuesday));
        }
    }
    anyhow::bail!("no open production window found in the next 120 days")
}

/// `deploybot demo`.
pub async fn run() -> Result<()> {
    let dir = tempfile_dir()?;
    let exe = std::env::current_exe().context("cannot find the deploybot executable")?;
    let staging_ports = (free_port()?, free_port()?);
    let source = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let source_port = source.local_addr()?.port();
    let text = demo_config(&dir, &exe, staging_ports, (free_port()?, free_port()?)) + &demo_monitor(source_port);
    // Metrics for the watch without installing Prometheus (see monitor::demo_source), and users.
    let metrics = crate::monitor::demo_source::serve(source, "staging", format!("http://127.0.0.1:{}/actuator/prometheus", staging_ports.0), DEMO_RATE_WINDOW).await;
    let users = simulated_users(staging_ports.0);
    let config_path = dir.join("deploybot.toml");
    std::fs::write(&config_path, &text)?;
    let config = Config::parse(&text).map_err(|p| anyhow::anyhow!("demo config: {}", p.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")))?;
    let (friday, tuesday) = demo_instants(&config)?;
    let clock = Arc::new(ShiftedClock::at(friday));
    let tz = config.bot_timezone;
    println!("deploybot demo — the InvoiceMe runbook on the embedded default (SQLite, console chat, local stand-in app)");
    println!("config and database: {}\n", dir.display());
    let app = app::build_console_app(config, clock.clone(), Some(Box::new(std::io::stdout()))).await?;
    let (stop, shutdown) = watch::channel(false);
    let loops = app::spawn_loops(&app.engine, shutdown);
    let engine = app.engine.clone();
    let mut seq = 0;
    let mut say = |line: &str| {
        seq += 1;
        let who = line.strip_prefix('@').and_then(|l| l.split_whitespace().next()).unwrap_or("alice").to_string();
        let what = line.strip_prefix(&format!("@{who} ")).unwrap_or(line).to_string();
        println!("\n{who}> {what}");
        console::parse_line(line, "alice", "console", seq)
    };
    let now_text = |c: &ShiftedClock| {
        use crate::engine::Clock;
        c.now().with_timezone(&tz).format("%A %-d %B %Y, %H:%M %Z").to_string()
    };

    println!("── It is {}: someone wants to ship to production at the end of the week.", now_text(&clock));
    for line in ["/window prod", "/deploy v1.0.0 prod"] {
        if let Some(ev) = say(line).map_err(anyhow::Error::msg)? {
            act(&engine, ev).await?;
        }
    }

    clock.set(tuesday);
    println!("\n── It is {}: the production window is open.", now_text(&clock));
    let staged = submit(&engine, say("/deploy v1.0.0 staging").map_err(anyhow::Error::msg)?).await?;
    wait_until(&engine, staged, |s| s.is_terminal()).await?;

    let prod = submit(&engine, say("/deploy v1.0.0 prod").map_err(anyhow::Error::msg)?).await?;
    wait_until(&engine, prod, |s| s == DeploymentState::AwaitingApproval).await?;
    for line in [format!("@bob :white_check_mark: #{prod}"), format!("@carol :white_check_mark: #{prod}")] {
        if let Some(ev) = say(&line).map_err(anyhow::Error::msg)? {
            act(&engine, ev).await?;
        }
    }
    wait_until(&engine, prod, |s| s.is_terminal()).await?;

    println!("\n── A build that passed CI but is broken at run time goes to staging: verification fails and the bot rolls back by itself.");
    let broken = submit(&engine, say("/deploy v1.1.0-broken staging").map_err(anyhow::Error::msg)?).await?;
    wait_until(&engine, broken, |s| s.is_terminal()).await?;

    println!("\n── A build that passes every check but fails one user request in five: the post-deploy watch sees the 5xx ratio in the metrics, alerts, and rolls back by itself.");
    let erroring = submit(&engine, say("/deploy v1.2.0-errors staging").map_err(anyhow::Error::msg)?).await?;
    wait_until(&engine, erroring, |s| s.is_terminal()).await?;
    users.abort();
    metrics.abort();

    println!("\n── Someone restarts the staging backend by hand on v1.0.1: /status asks each target what runs and shows the drift; /logs reads the service's log.");
    standin_start(StartArgs {
        dir: dir.clone(),
        env: "staging".into(),
        service: "backend".into(),
        version: "v1.0.1".into(),
        ports: format!("backend={},frontend={}", staging_ports.0, staging_ports.1),
    })
    .await?;
    for line in ["/status", "/logs staging backend --tail 4", "/history prod", "/history staging --limit 2", "/stats"] {
        if let Some(ev) = say(line).map_err(anyhow::Error::msg)? {
            act(&engine, ev).await?;
        }
    }

    let _ = stop.send(true);
    for t in loops {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    engine.store.close().await;
    stop_all(&dir);
    println!("\nDemo finished. The Markdown history is in {}/history.md", dir.display());
    Ok(())
}

/// Requests to the staging backend's `/` every 50 ms, as users would make; they give the error
/// ratio something to measure.
fn simulated_users(backend: u16) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        loop {
            let _ = http.get(format!("http://127.0.0.1:{backend}/")).timeout(Duration::from_secs(2)).send().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// Handles a typed line and shows what it said in the channels before the next line.
async fn act(engine: &Arc<crate::engine::Engine>, event: crate::chat::ChatEvent) -> Result<()> {
    engine.handle(event).await?;
    engine.outbox.drain().await
}

async fn submit(engine: &Arc<crate::engine::Engine>, event: Option<crate::chat::ChatEvent>) -> Result<i64> {
    let event = event.context("the demo typed an empty line")?;
    act(engine, event).await?;
    let latest = engine.store.deployments(None, &[], 1).await?;
    latest.first().map(|d| d.id).context("the request created no deployment")
}

async fn wait_until(engine: &Arc<crate::engine::Engine>, id: i64, done: impl Fn(DeploymentState) -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let d = engine.store.deployment(id).await?.context("deployment vanished")?;
        if done(d.state) {
            // The job announces its end just after the state changes; its last messages reach
            // the console before the next line is typed.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return engine.outbox.drain().await;
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("deployment #{id} is still {} after 2 minutes", d.state);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("deploybot-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

// ---------------------------------------------------------------------------------------------
// `deploybot standin start|serve|stop`: what the demo's command targets run.

/// Arguments of `deploybot standin start`.
#[derive(Debug, clap::Args)]
pub struct StartArgs {
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long)]
    pub env: String,
    #[arg(long)]
    pub service: String,
    #[arg(long)]
    pub version: String,
    /// `backend=PORT,frontend=PORT`
    #[arg(long)]
    pub ports: String,
}

fn pidfile(dir: &Path, env: &str, service: &str) -> PathBuf {
    dir.join(format!("{env}-{service}.pid"))
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn stop_pid(pid: i32) {
    // SAFETY: sending SIGTERM to a process (group) we started has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    for _ in 0..50 {
        if !alive(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

fn stop_all(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "pid") {
                if let Some(pid) = std::fs::read_to_string(e.path()).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
                    stop_pid(pid);
                }
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Replaces the running stand-in of `env`/`service` with `version` and waits until it answers.
pub async fn standin_start(a: StartArgs) -> Result<()> {
    let port = a
        .ports
        .split(',')
        .find_map(|p| p.split_once('=').filter(|(s, _)| *s == a.service).and_then(|(_, port)| port.parse::<u16>().ok()))
        .with_context(|| format!("no port for {} in --ports {}", a.service, a.ports))?;
    std::fs::create_dir_all(&a.dir)?;
    let pidfile = pidfile(&a.dir, &a.env, &a.service);
    if let Some(pid) = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
        println!("stopping the running {} {} (pid {pid})", a.env, a.service);
        stop_pid(pid);
    }
    let log_path = a.dir.join(format!("{}-{}.log", a.env, a.service));
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe);
    child
        .args(["standin", "serve", "--port", &port.to_string(), "--version", &a.version])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut child, 0);
    let mut child = child.spawn().context("cannot start the stand-in")?;
    std::fs::write(&pidfile, child.id().to_string())?;
    println!("started {} {} {} on 127.0.0.1:{port} (pid {})", a.env, a.service, a.version, child.id());
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/version");
    for _ in 0..100 {
        if let Some(status) = child.try_wait()? {
            let _ = std::fs::remove_file(&pidfile);
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            anyhow::bail!("{} {} exited at start with {status}; last log lines:\n{}", a.service, a.version, tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        if let Ok(r) = client.get(&url).send().await {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                if v["version"] == a.version.as_str() {
                    println!("{} answers as {}", a.service, a.version);
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{} {} did not answer on 127.0.0.1:{port} within 10s", a.service, a.version)
}

fn port_of(service: &str, ports: &str) -> Result<u16> {
    ports
        .split(',')
        .find_map(|p| p.split_once('=').filter(|(s, _)| *s == service).and_then(|(_, port)| port.parse::<u16>().ok()))
        .with_context(|| format!("no port for {service} in --ports {ports}"))
}

/// Prints the version the stand-in of `service` answers with; nothing when none runs.
pub async fn standin_current(service: &str, ports: &str) -> Result<()> {
    let port = port_of(service, ports)?;
    let url = format!("http://127.0.0.1:{port}/api/version");
    if let Ok(r) = reqwest::Client::new().get(&url).timeout(Duration::from_secs(5)).send().await {
        let v: serde_json::Value = r.json().await.context("the stand-in answered /api/version with something that is not JSON")?;
        if let Some(version) = v["version"].as_str() {
            println!("{version}");
        }
    }
    Ok(())
}

/// Prints the last `tail` lines of the stand-in log of `env`/`service`.
pub fn standin_logs(dir: &Path, env: &str, service: &str, tail: usize) -> Result<()> {
    let log = std::fs::read_to_string(dir.join(format!("{env}-{service}.log"))).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    for line in &lines[lines.len().saturating_sub(tail)..] {
        println!("{line}");
    }
    Ok(())
}

/// Serves the stand-in in this process until SIGTERM.
pub async fn standin_serve(port: u16, version: &str) -> Result<()> {
    let config = deploybot_standin::StandinConfig::from_env(version.to_string()).map_err(anyhow::Error::msg)?;
    if config.behaviour().crash {
        eprintln!("ERROR 1 --- [main] o.s.boot.SpringApplication : Application run failed: Unable to open JDBC Connection [Connection to db:5432 refused]");
        std::process::exit(3);
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    println!("invoiceme stand-in {version} listening on 127.0.0.1:{port}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    deploybot_standin::serve(listener, config, async move {
        term.recv().await;
    })
    .await?;
    Ok(())
}
