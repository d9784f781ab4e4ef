//! Real Prometheus and Alertmanager for the monitoring tests: Debian's binaries
//! (`scripts/services/prometheus.sh` installs them and exports their paths), started on free
//! 127.0.0.1 ports with configs written here, killed when the handle drops.
//!
//! Without the binaries a test fails and says how to get them, unless
//! `DEPLOYBOT_SKIP_PROMETHEUS=1` asks to skip explicitly.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PROMETHEUS_VAR: &str = "DEPLOYBOT_TEST_PROMETHEUS_BIN";
pub const ALERTMANAGER_VAR: &str = "DEPLOYBOT_TEST_ALERTMANAGER_BIN";
pub const SKIP_VAR: &str = "DEPLOYBOT_SKIP_PROMETHEUS";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The binary named by `var`, or on the PATH; `None` only when skipping explicitly.
fn binary(var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var).map(PathBuf::from).filter(|p| p.exists()) {
        return Some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for n in names {
            if dir.join(n).is_file() {
                return Some(dir.join(n));
            }
        }
    }
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        eprintln!("skipped: {SKIP_VAR}=1 and {} is not installed", names[0]);
        return None;
    }
    panic!(
        "{} is not installed and {var} is not set, so this monitoring test cannot run. Install it with \
         `source scripts/services/prometheus.sh && prometheus_start` (Debian's prometheus and prometheus-alertmanager \
         packages), or set {SKIP_VAR}=1 to skip explicitly",
        names[0]
    )
}

/// A server process killed on drop, with its log for failure messages.
pub struct Server {
    pub url: String,
    child: Child,
    log: PathBuf,
}

impl Server {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(bin: &Path, args: &[String], log: PathBuf, port: u16) -> Server {
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(bin).args(args).stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    Server { url: format!("http://127.0.0.1:{port}"), child, log }
}

async fn wait_ready(server: &Server, what: &str) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{}/-/ready", server.url)).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{what} did not become ready in 60s; its log:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Alertmanager posting every alert to `webhook`, grouped by alert and sent without delay,
/// resolved notifications included. `None` when skipping explicitly.
pub async fn alertmanager(dir: &Path, webhook: &str) -> Option<Server> {
    alertmanager_with_token(dir, webhook, None).await
}

/// [`alertmanager`], sending `Authorization: Bearer <token>` through the receiver's
/// `http_config.authorization` when a token is given.
pub async fn alertmanager_with_token(dir: &Path, webhook: &str, token: Option<&str>) -> Option<Server> {
    let bin = binary(ALERTMANAGER_VAR, &["prometheus-alertmanager", "alertmanager"])?;
    let port = free_port();
    let auth = token.map_or(String::new(), |t| format!("        http_config:\n          authorization:\n            type: Bearer\n            credentials: \"{t}\"\n"));
    let config = format!(
        "route:\n  receiver: deploybot\n  group_by: [alertname, env]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: deploybot\n    webhook_configs:\n      - url: \"{webhook}\"\n        send_resolved: true\n{auth}"
    );
    let path = dir.join("alertmanager.yml");
    std::fs::write(&path, config).unwrap();
    std::fs::create_dir_all(dir.join("am-data")).unwrap();
    let args = vec![
        format!("--config.file={}", path.display()),
        format!("--storage.path={}", dir.join("am-data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--cluster.listen-address=".to_string(),
    ];
    let server = spawn(&bin, &args, dir.join("alertmanager.log"), port);
    wait_ready(&server, "Alertmanager").await;
    Some(server)
}

/// Prometheus scraping `targets` (`(env, host:port)`, each labelled `env`) every 500 ms, with
/// `rules` (a rule file's `groups:` body) evaluated every 500 ms and sent to `alertmanager`.
/// Returns once the first scrape of every target has landed. `None` when skipping explicitly.
pub async fn prometheus(dir: &Path, targets: &[(&str, String)], rules: Option<&str>, alertmanager: Option<&str>) -> Option<Server> {
    let bin = binary(PROMETHEUS_VAR, &["prometheus"])?;
    let port = free_port();
    let mut config = String::from("global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\nscrape_configs:\n");
    for (env, target) in targets {
        config.push_str(&format!(
            "  - job_name: standin-{env}\n    metrics_path: /actuator/prometheus\n    static_configs:\n      - targets: [\"{target}\"]\n        labels:\n          env: {env}\n"
        ));
    }
    if let Some(rules) = rules {
        let path = dir.join("rules.yml");
        std::fs::write(&path, rules).unwrap();
        config.push_str(&format!("rule_files:\n  - {}\n", path.display()));
    }
    if let Some(am) = alertmanager {
        let host = am.trim_start_matches("http://");
        config.push_str(&format!("alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"{host}\"]\n"));
    }
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    let args = vec![
        format!("--config.file={}", path.display()),
        format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--rules.alert.resend-delay=500ms".to_string(),
        "--log.level=warn".to_string(),
    ];
    let server = spawn(&bin, &args, dir.join("prometheus.log"), port);
    wait_ready(&server, "Prometheus").await;
    for (env, _) in targets {
        wait_for(&server, &format!("up{{env=\"{env}\"}}"), |_| true, "the first scrape").await;
    }
    Some(server)
}

/// Polls an instant query until its first sample satisfies `ok`; panics after 60 s.
pub async fn wait_for(server: &Server, query: &str, ok: impl Fn(f64) -> bool, what: &str) -> f64 {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer: Option<serde_json::Value> = async { http.get(format!("{}/api/v1/query", server.url)).query(&[("query", query)]).send().await.ok()?.json().await.ok() }.await;
        let value = answer.as_ref().and_then(|a| a["data"]["result"][0]["value"][1].as_str()).and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value.filter(|v| ok(*v)) {
            return v;
        }
        assert!(Instant::now() < deadline, "waited 60s for {what} ({query}); last answer {answer:?}; Prometheus log:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
