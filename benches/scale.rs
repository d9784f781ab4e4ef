//! A year of a busy organisation (issue 10): seeds 1 M deployments — one a minute over ~2 years,
//! 80 % succeeded, with failures, automatic rollbacks and `/rollback` jobs, and the services,
//! steps and approvals rows the pipeline writes — into SQLite and into PostgreSQL, then times,
//! as users call them, the medians over several runs of:
//!
//! - `deploybot history --env production --limit 20` (the whole process),
//! - `deploybot stats --days 30` and `--days 365` (the whole process; also its peak RSS),
//! - `GET /metrics` against a running `deploybot run`.
//!
//! Then the fleet run: 500 environments deploying at once through one `deploybot run`, on
//! command targets that take a second (`sleep 1`): each deployment's time from request to
//! success against one deployment alone, and the bot's peak RSS.
//!
//! Run with `cargo bench --bench scale`. Settings (environment):
//! - `SCALE_ONLY`: `stores` or `fleet` to run one part;
//! - `SCALE_FLEET_ENVS` (default 500);
//! - `SCALE_DEPLOYMENTS` (default 1000000), `SCALE_RUNS` (default 7);
//! - `SCALE_DIR`: keep the SQLite store there and reuse it when it already holds that many
//!   deployments (seeding a million takes minutes); default a temporary directory;
//! - `DEPLOYBOT_TEST_PG_URL`: a PostgreSQL server (`source scripts/services/postgres.sh &&
//!   postgres_start`); the benchmark seeds (or reuses) a database `deploybot_scale_<N>` there.
//!   Without it the benchmark stops, unless `DEPLOYBOT_SKIP_PG=1` asks for SQLite only.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deploybot::store::{SeedSpec, Store};

const ENVS: [&str; 3] = ["production", "staging", "development"];
const MINUTE: i64 = 60_000;

fn setting(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn config(database_url: &str, port: u16) -> String {
    let mut out = format!(
        "[bot]\ndatabase_url = \"{database_url}\"\nlisten = \"127.0.0.1:{port}\"\n\n[chat.console]\nuser = \"alice\"\n\n\
         [services.backend]\nimage = \"bench/backend\"\norder = 1\n\n[services.frontend]\nimage = \"bench/frontend\"\norder = 2\n\n\
         [services.worker]\nimage = \"bench/worker\"\norder = 3\n"
    );
    for env in ENVS {
        out.push_str(&format!(
            "\n[environments.{env}]\nchannel = \"C0{}\"\ntarget = {{ kind = \"command\", deploy = [\"true\"], rollback = [\"true\"], timeout = \"10s\" }}\n",
            env.to_uppercase()
        ));
    }
    out
}

/// Seeds the store unless it already holds `n` deployments; returns whether it seeded.
async fn seed(url: &str, n: usize) -> bool {
    let store = Store::connect(url).await.unwrap_or_else(|e| panic!("cannot open {url}: {e:#}"));
    let have = store.deployments(None, &[], 1).await.expect("read the store").first().map_or(0, |d| d.id);
    if have as usize == n {
        store.close().await;
        return false;
    }
    assert_eq!(have, 0, "{url} holds another history ({have} deployments); remove it or choose another SCALE_DIR");
    let started = Instant::now();
    let spec = SeedSpec {
        deployments: n,
        end: chrono::Utc::now().timestamp_millis(),
        spacing_ms: MINUTE,
        envs: ENVS.iter().map(|e| e.to_string()).collect(),
        services: vec!["backend".into(), "frontend".into(), "worker".into()],
        seed: 10,
    };
    let report = store.seed_history(&spec).await.unwrap_or_else(|e| panic!("seeding {url}: {e:#}"));
    store.analyze().await.expect("analyze");
    eprintln!("  seeded in {:.0} s: {report:?}", started.elapsed().as_secs_f64());
    store.close().await;
    true
}

/// Runs the CLI once; returns its wall time and peak RSS (KiB).
fn run_cli(bin: &Path, config: &Path, args: &[&str]) -> (Duration, i64) {
    let started = Instant::now();
    let child = Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start deploybot");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not yet waited for; status and usage are valid out-pointers.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    assert_eq!(waited, pid, "wait4");
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let mut err = String::new();
        let _ = child.stderr.map(|mut s| s.read_to_string(&mut err));
        panic!("deploybot {args:?} failed ({status}): {err}");
    }
    (elapsed, usage.ru_maxrss)
}

fn scrape(port: u16) -> (Duration, String) {
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to deploybot run");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").expect("send");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read /metrics");
    (started.elapsed(), body)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Row {
    store: &'static str,
    measure: &'static str,
    median: Duration,
    max: Duration,
    target_ms: f64,
    rss_kib: Option<i64>,
}

fn measure_store(name: &'static str, url: &str, bin: &Path, dir: &Path, runs: usize, rows: &mut Vec<Row>) {
    let port = free_port();
    let config_path = dir.join(format!("{name}.toml"));
    std::fs::write(&config_path, config(url, port)).expect("write the config");
    // One untimed run each first, so the file cache is warm as on a server that runs them.
    let cases: [(&'static str, &[&str], f64); 3] = [
        ("history --env production --limit 20", &["history", "--env", "production", "--limit", "20"], 50.0),
        ("stats --days 30", &["stats", "--days", "30"], 100.0),
        ("stats --days 365", &["stats", "--days", "365"], 100.0),
    ];
    for (measure, args, target_ms) in cases {
        run_cli(bin, &config_path, args);
        let mut times = Vec::new();
        let mut rss = 0;
        for _ in 0..runs {
            let (t, r) = run_cli(bin, &config_path, args);
            times.push(t);
            rss = rss.max(r);
        }
        let max = *times.iter().max().expect("runs");
        rows.push(Row { store: name, measure, median: median(times), max, target_ms, rss_kib: Some(rss) });
    }

    let mut bot = Command::new(bin)
        .arg("--config")
        .arg(&config_path)
        .args(["run", "--chat", "console"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start deploybot run");
    let ready = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(ready.elapsed() < Duration::from_secs(60), "deploybot run did not listen on {port} within a minute");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, first) = scrape(port);
    assert!(first.contains("deploybot_deployments{outcome=\"succeeded\"}"), "/metrics without the deployment gauges:\n{first}");
    let times: Vec<Duration> = (0..runs.max(5) * 3).map(|_| scrape(port).0).collect();
    let max = *times.iter().max().expect("scrapes");
    rows.push(Row { store: name, measure: "GET /metrics", median: median(times), max, target_ms: 50.0, rss_kib: None });
    // SAFETY: sends SIGINT to the bot we started, which shuts down as on Ctrl-C.
    unsafe { libc::kill(bot.id() as libc::pid_t, libc::SIGINT) };
    let _ = bot.wait();
}

fn fleet_config(database_url: &str, port: u16, envs: usize) -> String {
    let mut out = format!(
        "[bot]\ndatabase_url = \"{database_url}\"\nlisten = \"127.0.0.1:{port}\"\n\n[chat.console]\nuser = \"alice\"\n\n\
         [services.app]\nimage = \"bench/app\"\norder = 1\n"
    );
    for i in 0..envs {
        out.push_str(&format!(
            "\n[environments.env{i:03}]\nchannel = \"C0ENV{i:03}\"\ntarget = {{ kind = \"command\", deploy = [\"sleep\", \"1\"], rollback = [\"true\"], timeout = \"60s\" }}\n"
        ));
    }
    out
}

fn proc_status_kib(pid: u32, field: &str) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0)))
        .unwrap_or(0)
}

/// Waits until the `count` deployments of `version` ended; returns each one's request-to-success time.
async fn wait_for(store: &Store, version: &str, count: usize, limit: Duration) -> Vec<Duration> {
    let started = Instant::now();
    loop {
        let all = store.deployments(None, &[], 100_000).await.expect("read the fleet store");
        let ours: Vec<_> = all.iter().filter(|d| d.version == version).collect();
        if ours.len() == count && ours.iter().all(|d| d.state.is_terminal()) {
            let failed: Vec<String> = ours.iter().filter(|d| d.state != deploybot::model::DeploymentState::Succeeded).map(|d| format!("#{} {} {:?}", d.id, d.state, d.error)).collect();
            assert!(failed.is_empty(), "fleet deployments did not succeed: {failed:?}");
            return ours.iter().map(|d| Duration::from_millis((d.finished_at.unwrap_or(d.updated_at) - d.created_at).max(0) as u64)).collect();
        }
        assert!(started.elapsed() < limit, "{} of {count} deployments of {version} ended within {limit:?}", ours.iter().filter(|d| d.state.is_terminal()).count());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn fleet(bin: &Path, dir: &Path, envs: usize, rt: &tokio::runtime::Runtime) {
    let db = dir.join("fleet.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let url = format!("sqlite://{}", db.display());
    let port = free_port();
    let config_path = dir.join("fleet.toml");
    std::fs::write(&config_path, fleet_config(&url, port, envs)).expect("write the fleet config");
    let mut bot = Command::new(bin)
        .arg("--config")
        .arg(&config_path)
        .args(["run", "--chat", "console"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start deploybot run");
    let ready = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(ready.elapsed() < Duration::from_secs(60), "deploybot run did not listen on {port} within a minute");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stdin = bot.stdin.take().expect("the bot's stdin");
    let (single, times, peak, rss) = rt.block_on(async {
        let store = Store::connect(&url).await.expect("open the fleet store");
        // One deployment alone, three times: the baseline.
        let mut single = Vec::new();
        for round in 0..3 {
            writeln!(stdin, "/deploy v0.0.{round} env000").expect("send /deploy");
            single.extend(wait_for(&store, &format!("v0.0.{round}"), 1, Duration::from_secs(60)).await);
        }
        let sent = Instant::now();
        for i in 0..envs {
            writeln!(stdin, "/deploy v1.0.0 env{i:03}").expect("send /deploy");
        }
        stdin.flush().expect("flush");
        let times = wait_for(&store, "v1.0.0", envs, Duration::from_secs(600)).await;
        eprintln!("  fleet: {envs} deployments ended {:.1} s after the first request", sent.elapsed().as_secs_f64());
        store.close().await;
        (single, times, proc_status_kib(bot.id(), "VmHWM:"), proc_status_kib(bot.id(), "VmRSS:"))
    });
    drop(stdin);
    // SAFETY: sends SIGINT to the bot we started, which shuts down as on Ctrl-C.
    unsafe { libc::kill(bot.id() as libc::pid_t, libc::SIGINT) };
    let _ = bot.wait();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let base = median(single.clone());
    let mut sorted = times.clone();
    sorted.sort();
    let pct = |p: usize| sorted[(sorted.len() * p / 100).min(sorted.len() - 1)];
    let target = Duration::from_secs(1);
    let overhead = |d: Duration| d.saturating_sub(target);
    println!("\nfleet: {envs} environments deploying at once, command target `sleep 1`, SQLite");
    println!("| measure | one alone (median of 3) | {envs} at once: p50 | p90 | max |");
    println!("|---|---|---|---|---|");
    println!("| request → succeeded | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |", ms(base), ms(pct(50)), ms(pct(90)), ms(*sorted.last().expect("times")));
    println!(
        "| overhead (minus the 1 s target) | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
        ms(overhead(base)),
        ms(overhead(pct(50))),
        ms(overhead(pct(90))),
        ms(overhead(*sorted.last().expect("times")))
    );
    let ratio = ms(overhead(pct(50))) / ms(overhead(base)).max(1.0);
    println!("overhead p50 / alone: {ratio:.2} (target ≤ 2); bot peak RSS {:.1} MB, at the end {:.1} MB (target < 100 MB)", peak as f64 / 1024.0, rss as f64 / 1024.0);
}

fn main() {
    let only = std::env::var("SCALE_ONLY").unwrap_or_default();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_deploybot"));
    if only == "fleet" {
        let tmp = tempfile::tempdir().expect("temp dir");
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        fleet(&bin, tmp.path(), setting("SCALE_FLEET_ENVS", 500), &rt);
        return;
    }
    let n = setting("SCALE_DEPLOYMENTS", 1_000_000);
    let runs = setting("SCALE_RUNS", 7).max(1);
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = std::env::var("SCALE_DIR").map(PathBuf::from).unwrap_or_else(|_| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("SCALE_DIR");
    let pg = match (std::env::var("DEPLOYBOT_TEST_PG_URL"), std::env::var("DEPLOYBOT_SKIP_PG").as_deref()) {
        (Ok(url), _) => Some(url),
        (Err(_), Ok("1")) => None,
        (Err(_), _) => panic!("DEPLOYBOT_TEST_PG_URL is not set: `source scripts/services/postgres.sh && postgres_start`, or DEPLOYBOT_SKIP_PG=1 for SQLite only"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut stores: Vec<(&'static str, String)> = vec![("sqlite", format!("sqlite://{}/scale-{n}.db", dir.display()))];
    if let Some(admin) = pg {
        let database = format!("deploybot_scale_{n}");
        rt.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::postgres::PgConnection::connect(&admin).await.expect("connect to PostgreSQL");
            let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1").bind(&database).fetch_optional(&mut conn).await.expect("pg_database");
            if exists.is_none() {
                sqlx::query(&format!("CREATE DATABASE \"{database}\"")).execute(&mut conn).await.expect("create the database");
            }
        });
        let mut url = url::Url::parse(&admin).expect("DEPLOYBOT_TEST_PG_URL is a URL");
        url.set_path(&database);
        stores.push(("postgres", url.to_string()));
    }
    let mut rows = Vec::new();
    for (name, url) in &stores {
        eprintln!("{name}: {n} deployments");
        rt.block_on(seed(url, n));
        rt.block_on(async {
            let store = Store::connect(url).await.expect("open");
            let since = chrono::Utc::now().timestamp_millis() - 30 * 24 * 60 * MINUTE;
            for (query, plan) in store.query_plans("production", since).await.expect("plans") {
                eprintln!("  plan of {query}:\n    {}", plan.replace('\n', "\n    "));
            }
            store.close().await;
        });
        measure_store(name, url, &bin, &dir, runs, &mut rows);
    }
    println!("\nscale: {n} deployments, medians of {runs} runs (whole processes; /metrics: {} scrapes of a running bot)", runs.max(5) * 3);
    println!("| store | measure | median | max | target | peak RSS |");
    println!("|---|---|---|---|---|---|");
    let mut missed = Vec::new();
    for r in &rows {
        let ms = r.median.as_secs_f64() * 1000.0;
        let ok = ms < r.target_ms;
        if !ok {
            missed.push(format!("{} {}", r.store, r.measure));
        }
        println!(
            "| {} | `{}` | {:.1} ms | {:.1} ms | < {:.0} ms {} | {} |",
            r.store,
            r.measure,
            ms,
            r.max.as_secs_f64() * 1000.0,
            r.target_ms,
            if ok { "✓" } else { "✗" },
            r.rss_kib.map_or("".to_string(), |k| format!("{:.1} MB", k as f64 / 1024.0))
        );
    }
    if missed.is_empty() {
        println!("every target met");
    } else {
        println!("targets missed: {}", missed.join(", "));
    }
    if only != "stores" {
        fleet(&bin, &dir, setting("SCALE_FLEET_ENVS", 500), &rt);
    }
}
