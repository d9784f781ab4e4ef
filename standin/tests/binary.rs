//! The `invoiceme-standin` binary as a process: start-up line, SIGTERM, `-crash`, bad arguments.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_invoiceme-standin");

fn start(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .env_remove("STANDIN_LISTEN")
        .env_remove("APP_VERSION")
        .env_remove("STANDIN_PASSWORD")
        .env_remove("STANDIN_SLOW_MS")
        .env_remove("STANDIN_ERROR_RATE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the stand-in binary")
}

fn wait_with_deadline(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            panic!("the stand-in did not exit within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn it_logs_where_it_listens_serves_and_stops_cleanly_on_sigterm() {
    let mut child = start(&["--listen", "127.0.0.1:0", "--version", "v2.3.4"]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let address = first
        .trim()
        .strip_prefix("invoiceme-standin v2.3.4 listening on ")
        .unwrap_or_else(|| panic!("{first}"));

    let version: serde_json::Value = reqwest::get(format!("http://{address}/api/version"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version["version"], "v2.3.4");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_with_deadline(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("GET /api/version 200"), "access log: {rest}");
    assert!(rest.contains("received SIGTERM"), "{rest}");
}

#[test]
fn a_crash_build_logs_a_fatal_error_and_exits_with_3() {
    let mut child = start(&["--listen", "127.0.0.1:0", "--version", "v9.9.9-crash"]);
    let status = wait_with_deadline(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(3));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("Application run failed"), "{stderr}");
}

#[test]
fn a_bad_argument_exits_with_2_and_the_usage() {
    let mut child = start(&["--port", "80"]);
    let status = wait_with_deadline(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("unknown argument \"--port\"") && stderr.contains("usage:"),
        "{stderr}"
    );
}

#[test]
fn environment_fallbacks_apply_when_flags_are_absent() {
    let mut child = Command::new(BIN)
        .env("STANDIN_LISTEN", "127.0.0.1:0")
        .env("APP_VERSION", "v5.0.0-crash")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_with_deadline(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(3));
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(
        stdout.starts_with("invoiceme-standin v5.0.0-crash listening on 127.0.0.1:"),
        "{stdout}"
    );
}

#[test]
fn an_invalid_error_rate_in_the_environment_is_refused() {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .env("STANDIN_ERROR_RATE", "lots")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_with_deadline(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("STANDIN_ERROR_RATE"), "{stderr}");
}
