//! The bot's own overhead per deployment: from the approving reaction to `succeeded`, with
//! `command` targets that do nothing (`true`), no configured waits, on the embedded SQLite store.
//! Run with `cargo bench --bench pipeline`; prints the median and the 90th percentile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deploybot::chat::console::parse_line;
use deploybot::config::Config;
use deploybot::engine::clock::SystemClock;
use deploybot::model::DeploymentState;

const RUNS: usize = 40;

fn config(dir: &std::path::Path) -> String {
    format!(
        r#"[bot]
database_url = "sqlite://{}/bench.db"

[chat.console]
user = "alice"

[services.backend]
image = "bench/backend"
order = 1

[services.frontend]
image = "bench/frontend"
order = 2

[environments.production]
channel = "C0PROD"
approvals = {{ required = 1, approvers = ["carol"] }}
target = {{ kind = "command", deploy = ["true"], rollback = ["true"], timeout = "10s" }}
"#,
        dir.display()
    )
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config::parse(&config(dir.path())).expect("bench config");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut samples = rt.block_on(async {
        let app = deploybot::app::build_console_app(config, Arc::new(SystemClock), None).await.expect("app");
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let _loops = deploybot::app::spawn_loops(&app.engine, shutdown);
        let engine = app.engine;
        let mut samples = Vec::with_capacity(RUNS);
        let mut seq = 0u64;
        for i in 0..RUNS {
            seq += 1;
            let ev = parse_line(&format!("/deploy v1.0.{i} production"), "alice", "console", seq).unwrap().unwrap();
            engine.handle(ev).await.expect("deploy");
            let id = engine.store.deployments(None, &[], 1).await.unwrap()[0].id;
            seq += 1;
            let approve = parse_line(&format!("@carol :white_check_mark: #{id}"), "alice", "console", seq).unwrap().unwrap();
            let start = Instant::now();
            engine.handle(approve).await.expect("approve");
            loop {
                let d = engine.store.deployment(id).await.unwrap().unwrap();
                if d.state == DeploymentState::Succeeded {
                    break;
                }
                if d.state.is_terminal() {
                    let steps = engine.store.steps(id).await.unwrap();
                    panic!("deployment #{id} ended {}: {:?}; steps: {steps:#?}", d.state, d.error);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            samples.push(start.elapsed());
        }
        samples
    });
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "pipeline overhead, approval → succeeded, 2 services, command targets doing nothing, SQLite: {RUNS} runs, median {:.1} ms, p90 {:.1} ms, min {:.1} ms, max {:.1} ms",
        ms(samples[RUNS / 2]),
        ms(samples[RUNS * 9 / 10]),
        ms(samples[0]),
        ms(samples[RUNS - 1])
    );
}
