//! The pieces the black-box tests of the whole bot share: a free port, a config parsed with its
//! problems spelled out, a production window that is open, and the real `deploybot` binary as a
//! child process (secrets through its environment, stderr kept in a file, SIGKILL on demand).
#![allow(dead_code)]

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, TimeZone, Utc, Weekday};
use deploybot::config::Config;

/// The `command` target's deploy script of the chat end-to-end tests: records each deploy in
/// `deploy.log` and `<env>-<service>.version`; while a file `sleep` exists, it first writes
/// `sleeping` and sleeps that many seconds.
pub const DEPLOY_SH: &str = r#"#!/bin/sh
set -e
dir=$(dirname "$0")
env=$1 service=$2 version=$3
if [ -f "$dir/sleep" ]; then echo "$env $service $version" > "$dir/sleeping"; sleep "$(cat "$dir/sleep")"; fi
echo "$env $service $version" >> "$dir/deploy.log"
echo "$version" > "$dir/$env-$service.version"
echo "deployed $service $version"
"#;

/// A port nothing listens on right now (the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `text` as a config; panics with every problem when it is not one.
pub fn parse_config(text: &str) -> Config {
    Config::parse(text).unwrap_or_else(|problems| panic!("test config: {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")))
}

/// A Tuesday 10:05 in New York at which the environment `env`'s window is open.
pub fn open_tuesday(config: &Config, env: &str) -> DateTime<Utc> {
    let tz = chrono_tz::America::New_York;
    let policy = &config.environments.values().find(|e| e.name.as_str() == env).unwrap_or_else(|| panic!("no environment {env} in the test config")).policy;
    let today = Utc::now().with_timezone(&tz).date_naive();
    (0..120)
        .map(|o| today + chrono::Duration::days(o))
        .filter(|d| d.weekday() == Weekday::Tue)
        .filter_map(|d| tz.with_ymd_and_hms(d.year(), d.month(), d.day(), 10, 5, 0).single())
        .map(|t| t.with_timezone(&Utc))
        .find(|t| policy.check(*t, false).allowed)
        .unwrap_or_else(|| panic!("no open window for {env} in the next 120 days"))
}

/// `deploybot --config <config> run` as a child process; SIGKILLed when dropped.
pub struct BotProcess {
    child: Child,
    /// Where its stderr goes (appended, so a restarted bot adds to the same file).
    pub stderr: PathBuf,
    /// Its stdout, line by line (the console transcript when the chat is the console).
    pub lines: Receiver<String>,
}

impl BotProcess {
    /// Starts the bot with `env` added to its environment (the way secrets reach it: never argv,
    /// never this process's environment).
    pub fn start(config: &Path, env: &[(String, String)], stderr: &Path) -> BotProcess {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(stderr).unwrap_or_else(|e| panic!("cannot open {}: {e}", stderr.display()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_deploybot"))
            .arg("--config")
            .arg(config)
            .arg("run")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", env!("CARGO_BIN_EXE_deploybot")));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        BotProcess { child, stderr: stderr.to_path_buf(), lines }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Types a line on its stdin (the console chat).
    pub fn type_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("the bot's stdin");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for a stdout line containing `needle`; panics with the bot's stderr after `timeout`.
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains(needle) => return line,
                _ => assert!(Instant::now() < deadline, "the bot never printed {needle:?}; stderr:\n{}", self.stderr_text()),
            }
        }
    }

    /// SIGKILL (no shutdown path runs), then reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it has exited (its status then).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until `GET {base}/healthz` answers 200; panics with the bot's stderr when it exits
    /// or `timeout` passes first.
    pub async fn wait_healthy(&mut self, base: &str, timeout: Duration) {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                panic!("the bot at {base} exited ({status}) before it was healthy; stderr:\n{}", self.stderr_text());
            }
            if let Ok(res) = http.get(format!("{base}/healthz")).send().await {
                if res.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the bot at {base} was not healthy after {timeout:?}; stderr:\n{}", self.stderr_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for BotProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
