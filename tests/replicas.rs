//! Several replicas, proven: three processes of the real bot on one PostgreSQL database, behind
//! a round-robin "load balancer" (this test), all on the Events API of a Slack of our own
//! (tests/support/slack.rs). A thousand signed slash commands for fifty environments go to them
//! while one replica is SIGKILLed mid-deployment and started again; then, once everything has
//! settled, every accepted request must have had exactly one effect, no environment may have run
//! two deployments at once, every deployment must have ended, no message may have been posted
//! twice (save one post Slack answered in the moment before the kill, ARCHITECTURE.md's known
//! gap: the victim died before recording it), and every replica must tell the same history.
//!
//! The deploy command (`deploy.sh`) takes 0.2–0.5 s and records each run; `mkdir` of
//! `<env>.running` is atomic, so a second run in the same environment while one is in progress
//! writes `OVERLAP` to `overlap.log`.
//!
//! Needs PostgreSQL: `DEPLOYBOT_TEST_PG_URL` (`source scripts/services/postgres.sh &&
//! postgres_start`); fails without it unless `DEPLOYBOT_SKIP_PG=1`.

mod support;
#[path = "support/slack.rs"]
mod slack_support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploybot::model::{Deployment, DeploymentState};
use slack_support::{Call, FakeSlack};
use support::bot::{free_port, BotProcess};
use support::db;

const REPLICAS: usize = 3;
/// How long before the SIGKILL a post may have been answered and still not recorded by the victim.
const KILL_WINDOW: Duration = Duration::from_secs(3);
const ENVIRONMENTS: usize = 50;
const REQUESTS: usize = 1000;
/// One request every 40 ms: each environment gets one about every 2 s, so most deployments run
/// and some meet an environment still held (refused by the lock, which is a correct outcome).
const PACE: Duration = Duration::from_millis(40);
/// The replica killed, and when: after this many requests, while it holds a running job, and
/// the moment it has acknowledged the first of a burst of this many requests sent to it at once
/// (so that some are acknowledged but not yet handled when it dies).
const VICTIM: usize = 1;
const KILL_AFTER: usize = 400;
const BURST: usize = 6;
/// The victim is down while this many more requests are sent (the balancer skips it).
const DOWN_FOR: usize = 50;
/// The job lease of `Engine` (src/engine/mod.rs): a dead replica's jobs are taken over after it.
const LEASE: Duration = Duration::from_secs(30);
/// Every deployment must have ended this long after the last request: the lease, plus the
/// deployments still queued then (each environment's last few, 0.2–0.5 s each and their
/// messages), with room for a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(LEASE.as_secs() + 120);

const BOT_TOKEN_VAR: &str = "DEPLOYBOT_REPLICAS_SLACK_BOT_TOKEN";
const SIGNING_VAR: &str = "DEPLOYBOT_REPLICAS_SLACK_SIGNING_SECRET";

const DEPLOY_SH: &str = r#"#!/bin/sh
# deploy.sh <env> <service> <version>
dir=$(dirname "$0")
env=$1 version=$3
# $PPID: the bot process that runs this deployment.
echo "start $env $version $PPID" >> "$dir/runs.log"
if ! mkdir "$dir/$env.running" 2>/dev/null; then
  echo "OVERLAP $env $version" >> "$dir/overlap.log"
fi
sleep 0.$(( $$ % 4 + 2 ))
echo "end $env $version" >> "$dir/runs.log"
rmdir "$dir/$env.running" 2>/dev/null
echo "deployed $version"
"#;

fn env_name(k: usize) -> String {
    format!("e{k:02}")
}

fn channel(k: usize) -> String {
    format!("C0E{k:02}")
}

fn config_text(dir: &Path, database_url: &str, api_url: &str, listen: u16) -> String {
    let d = dir.display();
    let mut text = format!(
        r#"[bot]
database_url = "{database_url}"
listen = "127.0.0.1:{listen}"
timezone = "UTC"

[chat]
platform = "slack"

[chat.slack]
mode = "events"
bot_token = "${{{BOT_TOKEN_VAR}}}"
signing_secret = "${{{SIGNING_VAR}}}"
api_url = "{api_url}"

[services.app]
image = "example/app"
"#
    );
    for k in 0..ENVIRONMENTS {
        text += &format!(
            r#"
[environments.{}]
channel = "{}"
target = {{ kind = "command", deploy = ["sh", "{d}/deploy.sh", "{{env}}", "{{service}}", "{{version}}"], timeout = "20s" }}
"#,
            env_name(k),
            channel(k)
        );
    }
    text
}

/// One replica: its config file (its own listen port) and, while it runs, its process.
struct Replica {
    config: PathBuf,
    base: String,
    stderr: PathBuf,
    process: Option<BotProcess>,
    /// Every process it has been, in order.
    pids: Vec<u32>,
}

impl Replica {
    async fn start(&mut self, secrets: &[(String, String)]) {
        let mut process = BotProcess::start(&self.config, secrets, &self.stderr);
        process.wait_healthy(&self.base, Duration::from_secs(60)).await;
        self.pids.push(process.pid());
        self.process = Some(process);
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Ask {
    Deploy { version: String },
    Status,
}

/// One slash command and what the replicas answered.
#[derive(Debug, Clone)]
struct Request {
    i: usize,
    env: String,
    user: String,
    ask: Ask,
    /// The replica that answered (after the balancer skipped a dead one).
    replica: Option<usize>,
    status: Option<u16>,
    body: String,
}

impl Request {
    /// Acknowledged with an empty 2xx: recorded, to be acted on. (A 2xx with a text is the bot
    /// saying it could not record the command.)
    fn accepted(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s)) && self.body.trim().is_empty()
    }
}

fn plan() -> Vec<Request> {
    (0..REQUESTS)
        .map(|i| {
            // Consecutive requests go to different environments; every tenth asks /status.
            let k = (i * 7) % ENVIRONMENTS;
            let ask = if i % 10 == 9 { Ask::Status } else { Ask::Deploy { version: format!("v1.{i}.0") } };
            Request { i, env: env_name(k), user: format!("U0REQ{i:04}"), ask, replica: None, status: None, body: String::new() }
        })
        .collect()
}

/// Posts the request, signed, to replica `first`, or the next one up when a replica refuses the
/// connection (it never saw the request), as a load balancer would.
async fn send(http: &reqwest::Client, bases: &[String], signing: &str, mut r: Request, first: usize) -> Request {
    let k: usize = r.env[1..].parse().unwrap();
    let (command, text) = match &r.ask {
        Ask::Deploy { version } => ("/deploy", format!("{version} {}", r.env)),
        Ask::Status => ("/status", r.env.clone()),
    };
    let fields = slack_support::slash_command(command, &text, &r.user, &r.user.to_lowercase(), &channel(k), r.i as u64 + 1);
    let body = slack_support::form_body(&fields);
    for hop in 0..bases.len() {
        let replica = (first + hop) % bases.len();
        let (ts, sig) = slack_support::sign(signing, chrono::Utc::now().timestamp(), &body);
        let res = http
            .post(format!("{}/slack/commands", bases[replica]))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts)
            .header("x-slack-signature", sig)
            .body(body.clone())
            .send()
            .await;
        match res {
            Ok(res) => {
                r.replica = Some(replica);
                r.status = Some(res.status().as_u16());
                r.body = res.text().await.unwrap_or_default();
                return r;
            }
            Err(e) if e.is_connect() => continue,
            Err(e) => {
                // Sent, but the replica died before it answered: not accepted.
                r.replica = Some(replica);
                r.body = format!("no answer: {e}");
                return r;
            }
        }
    }
    r.body = "no replica accepted the connection".into();
    r
}

fn ephemeral_calls<'a>(calls: &'a [Call], user: &str) -> Vec<&'a Call> {
    calls.iter().filter(|c| c.method == "chat.postEphemeral" && c.ok() && c.arg("user") == Some(user)).collect()
}

fn ephemerals_to(calls: &[Call], user: &str) -> Vec<String> {
    ephemeral_calls(calls, user).into_iter().map(|c| c.text().to_string()).collect()
}

/// The posted (not threaded) progress message of a deployment.
fn progress_posts<'a>(calls: &'a [Call], d: &Deployment) -> Vec<&'a Call> {
    let title = format!("#{} {} → {}*", d.id, d.version, d.env);
    calls.iter().filter(|c| c.method == "chat.postMessage" && c.ok() && c.arg("thread_ts").is_none() && c.text().contains(&title)).collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_one_postgres_survive_a_sigkill_under_a_thousand_requests() {
    let Some(database) = db::postgres().await else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("deploy.sh"), DEPLOY_SH).unwrap();
    let salt = format!("{}-{}", std::process::id(), chrono::Utc::now().timestamp_micros());
    let (bot_token, signing) = (format!("xoxb-replicas-{salt}"), format!("replicas-signing-{salt}"));
    let secrets = vec![(BOT_TOKEN_VAR.to_string(), bot_token.clone()), (SIGNING_VAR.to_string(), signing.clone())];
    let slack = FakeSlack::start(&bot_token, "xapp-unused").await;
    let requests = plan();
    for r in &requests {
        slack.add_user(&r.user, &r.user.to_lowercase());
    }

    let mut replicas: Vec<Replica> = (0..REPLICAS)
        .map(|n| {
            let port = free_port();
            let config = dir.path().join(format!("replica-{n}.toml"));
            std::fs::write(&config, config_text(dir.path(), &database.url, &slack.api_url, port)).unwrap();
            Replica { config, base: format!("http://127.0.0.1:{port}"), stderr: dir.path().join(format!("replica-{n}.stderr")), process: None, pids: Vec::new() }
        })
        .collect();
    for replica in &mut replicas {
        replica.start(&secrets).await;
    }
    let bases: Arc<Vec<String>> = Arc::new(replicas.iter().map(|r| r.base.clone()).collect());
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();

    // ------------------------------------------------------------------ the run
    let started = Instant::now();
    let mut pace = tokio::time::interval(PACE);
    let mut in_flight = Vec::new();
    let mut killed_holding = None;
    let mut killed_at = None;
    let mut burst = Vec::new();
    for r in requests.iter().cloned() {
        if (KILL_AFTER + 1..KILL_AFTER + BURST).contains(&r.i) {
            continue; // sent with the burst
        }
        pace.tick().await;
        if r.i == KILL_AFTER {
            // Mid-deployment: wait (a little) until the victim runs a job. Its owner id is
            // learnt from a deployment its process ran (the script logs its parent).
            let pid = replicas[VICTIM].process.as_ref().unwrap().pid().to_string();
            let deadline = Instant::now() + Duration::from_secs(10);
            let held = loop {
                let ran: Vec<String> = read(&dir.path().join("runs.log")).lines().filter_map(|l| l.strip_prefix("start ")).filter(|l| l.split(' ').nth(2) == Some(pid.as_str())).filter_map(|l| l.split(' ').nth(1).map(str::to_string)).collect();
                let all = database.deployments(None, &[], 5000).await.unwrap();
                let owner = all.iter().filter(|d| ran.contains(&d.version)).find_map(|d| d.lease_owner.clone());
                let held: Vec<i64> = all.iter().filter(|d| d.state == DeploymentState::Running && owner.is_some() && d.lease_owner == owner).map(|d| d.id).collect();
                if !held.is_empty() || Instant::now() > deadline {
                    break held;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            killed_holding = Some(held);
            // Then a burst to the victim, and SIGKILL as soon as it acknowledges one.
            let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
            for r in requests[KILL_AFTER..KILL_AFTER + BURST].iter().cloned() {
                let (http, bases, signing, done) = (http.clone(), bases.clone(), signing.clone(), done_tx.clone());
                burst.push(r.i);
                in_flight.push(tokio::spawn(async move {
                    let r = send(&http, &bases, &signing, r, VICTIM).await;
                    let _ = done.send(r.accepted());
                    r
                }));
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while let Ok(Some(accepted)) = tokio::time::timeout_at(deadline, done_rx.recv()).await {
                if accepted {
                    break;
                }
            }
            killed_at = Some(Instant::now());
            replicas[VICTIM].process.as_mut().unwrap().kill();
            continue;
        }
        if r.i == KILL_AFTER + DOWN_FOR {
            let old = replicas[VICTIM].process.take();
            drop(old);
            replicas[VICTIM].start(&secrets).await;
        }
        let (http, bases, signing) = (http.clone(), bases.clone(), signing.clone());
        let first = r.i % REPLICAS;
        in_flight.push(tokio::spawn(async move { send(&http, &bases, &signing, r, first).await }));
    }
    let mut sent = Vec::new();
    for t in in_flight {
        sent.push(t.await.unwrap());
    }
    let send_time = started.elapsed();
    let killed_holding = killed_holding.unwrap();
    let killed_at = killed_at.unwrap();
    // ARCHITECTURE.md's known gap: a thread reply or a private reply Slack accepted just before
    // the victim died, not yet recorded, is sent again by the replica that delivers it next (a
    // channel's post is found by its metadata instead). A copy is put down to it only when Slack
    // answered it in the moment before the kill.
    let in_kill_window = |c: &Call| c.at <= killed_at && killed_at.duration_since(c.at) < KILL_WINDOW;
    assert!(!killed_holding.is_empty(), "the victim never ran a job in 10 s before the kill; nothing was proven about a kill mid-deployment");

    // ------------------------------------------------------------------ settling
    // Settled: every accepted request answered (an event the killed replica acknowledged is
    // handled by another once its lease lapses), every deployment ended, no environment held,
    // no message pending. Replies are read first, so the deployments they announce are in the
    // snapshot. Past the bound the checks below say what is missing.
    let accepted: Vec<&Request> = sent.iter().filter(|r| r.accepted()).collect();
    let settle_start = Instant::now();
    let mut problems = Vec::new();
    let (deployments, calls) = loop {
        let calls = slack.calls();
        let unanswered = accepted.iter().filter(|r| ephemerals_to(&calls, &r.user).is_empty()).count();
        let all = database.deployments(None, &[], 5000).await.unwrap();
        let open: Vec<&Deployment> = all.iter().filter(|d| !d.state.is_terminal()).collect();
        let mut locked = Vec::new();
        for k in 0..ENVIRONMENTS {
            if let Some(lock) = database.lock(&env_name(k)).await.unwrap() {
                let holder = match lock.deployment_id {
                    Some(id) => database.deployment(id).await.unwrap().map(|d| format!("#{} is {}, finished {:?}, error {:?}", d.id, d.state, d.finished_at, d.error)),
                    None => None,
                };
                locked.push(format!("{}: {} ({})", lock.env, lock.reason, holder.unwrap_or_else(|| "no deployment".into())));
            }
        }
        let far = chrono::Utc::now().timestamp_millis() + 3_600_000;
        let undelivered = database.outbox_due(far, 100).await.unwrap();
        if unanswered == 0 && open.is_empty() && locked.is_empty() && undelivered.is_empty() {
            // The calls again: what was delivered while the store was read (a channel's posts held
            // back by the killed replica's lapsed claim go out together) is in them too.
            break (all, slack.calls());
        }
        if settle_start.elapsed() > SETTLE {
            let stderr: Vec<String> = replicas.iter().map(|r| format!("--- {}\n{}", r.base, read(&r.stderr).lines().rev().take(20).collect::<Vec<_>>().join("\n"))).collect();
            problems.push(format!(
                "not settled {SETTLE:?} after the last request: {unanswered} accepted requests unanswered, {} deployments not ended ({:?}), locks held: {locked:?}, {} messages undelivered; the replicas' last log lines:\n{}",
                open.len(),
                open.iter().map(|d| format!("#{} {} {} {:?}", d.id, d.env, d.state, d.lease_owner)).collect::<Vec<_>>(),
                undelivered.len(),
                stderr.join("\n")
            ));
            break (all, calls);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let settle_time = settle_start.elapsed();

    // ------------------------------------------------------------------ figures
    let by_version: HashMap<&str, Vec<&Deployment>> = deployments.iter().fold(HashMap::new(), |mut m, d| {
        m.entry(d.version.as_str()).or_default().push(d);
        m
    });
    let count = |s: DeploymentState| deployments.iter().filter(|d| d.state == s).count();
    let runs = read(&dir.path().join("runs.log"));
    let ran_by = |pid: u32| runs.lines().filter(|l| l.starts_with("start ") && l.split(' ').nth(3) == Some(pid.to_string().as_str())).count();
    let per_process: Vec<String> = replicas.iter().enumerate().flat_map(|(n, r)| r.pids.iter().enumerate().map(move |(life, pid)| (n, life, *pid))).map(|(n, life, pid)| format!("replica {n}{}: {}", if life > 0 { " (restarted)" } else { "" }, ran_by(pid))).collect();
    let burst_acked = sent.iter().filter(|r| burst.contains(&r.i) && r.accepted() && r.replica == Some(VICTIM)).count();
    let refused_by_lock = accepted.iter().filter(|r| matches!(&r.ask, Ask::Deploy { version } if !by_version.contains_key(version.as_str()))).count();
    let rerouted = sent.iter().filter(|r| !burst.contains(&r.i) && r.replica.is_some_and(|n| n != r.i % REPLICAS)).count();
    let figures = format!(
        "replicas: {REPLICAS} on one PostgreSQL; requests: {} sent in {:.1}s ({} /deploy, {} /status), {} accepted, {} not ({} re-routed by the balancer while a replica was down); \
         kills: 1 SIGKILL of replica {VICTIM} holding {} running job(s), right after it acknowledged {burst_acked} of a burst of {BURST} requests, restarted after {DOWN_FOR} more requests; \
         deployments: {} rows ({} succeeded, {} cancelled by the lock, {} other), {} requests refused by the lock before a row; deploy commands run per process: {}; settled {:.1}s after the last request",
        sent.len(),
        send_time.as_secs_f64(),
        sent.iter().filter(|r| r.ask != Ask::Status).count(),
        sent.iter().filter(|r| r.ask == Ask::Status).count(),
        accepted.len(),
        sent.len() - accepted.len(),
        rerouted,
        killed_holding.len(),
        deployments.len(),
        count(DeploymentState::Succeeded),
        count(DeploymentState::Cancelled),
        deployments.len() - count(DeploymentState::Succeeded) - count(DeploymentState::Cancelled),
        refused_by_lock,
        per_process.join(", "),
        settle_time.as_secs_f64(),
    );
    eprintln!("{figures}");

    // ------------------------------------------------------------------ each accepted request → exactly one effect
    // The first copies put down to the kill, by when or ts, and what they were: the victim's
    // deliverer has one call in flight, so at most one (a post or a private reply).
    let mut lost_to_the_kill: BTreeMap<String, String> = BTreeMap::new();
    for r in &accepted {
        let copies = ephemeral_calls(&calls, &r.user);
        let mut replies: Vec<String> = copies.iter().map(|c| c.text().to_string()).collect();
        if copies.len() == 2 && copies[0].text() == copies[1].text() && in_kill_window(copies[0]) {
            lost_to_the_kill.insert(format!("{:?} before the kill", killed_at.duration_since(copies[0].at)), format!("the reply to request {}", r.i));
            replies.remove(0);
        }
        if replies.len() != 1 {
            // When each copy was answered, against the kill, to tell the known gap from another.
            let when: Vec<String> = copies.iter().map(|c| if c.at <= killed_at { format!("{:?} before the kill", killed_at.duration_since(c.at)) } else { format!("{:?} after the kill", c.at.duration_since(killed_at)) }).collect();
            problems.push(format!("request {} ({:?} {} via replica {:?}) got {} replies, answered {when:?}: {replies:?}", r.i, r.ask, r.env, r.replica, replies.len()));
        }
        if let Ask::Deploy { version } = &r.ask {
            match by_version.get(version.as_str()).map(Vec::as_slice) {
                Some([d]) => {
                    if d.env != r.env || d.requested_by != r.user {
                        problems.push(format!("request {} for {version} → {} by {} made #{} {} by {}", r.i, r.env, r.user, d.id, d.env, d.requested_by));
                    }
                }
                Some(many) => problems.push(format!("request {} ({version} → {}) made {} deployments: {:?}", r.i, r.env, many.len(), many.iter().map(|d| d.id).collect::<Vec<_>>())),
                // No row: only a refusal by the lock (checked before anything is written) is a correct outcome.
                None if replies.len() == 1 && replies[0].starts_with('🔒') => {}
                None => problems.push(format!("request {} ({version} → {} via replica {:?}) was accepted but made no deployment and no refusal: replies {replies:?}", r.i, r.env, r.replica)),
            }
        }
    }
    for d in &deployments {
        if !sent.iter().any(|r| r.ask == Ask::Deploy { version: d.version.clone() }) {
            problems.push(format!("#{} {} → {} matches no request", d.id, d.version, d.env));
        }
    }

    // ------------------------------------------------------------------ every deployment ended, and well
    for d in &deployments {
        let fine = match d.state {
            DeploymentState::Succeeded => d.started_at.is_some() && d.finished_at.is_some(),
            DeploymentState::Cancelled => d.started_at.is_none() && d.error.as_deref().is_some_and(|e| e.contains("environment locked")),
            _ => false,
        };
        if !fine {
            problems.push(format!("#{} {} → {} ended {} (started {:?}, finished {:?}, error {:?})", d.id, d.version, d.env, d.state, d.started_at, d.finished_at, d.error));
        }
    }

    // ------------------------------------------------------------------ never two deployments at once in one environment
    let overlaps = read(&dir.path().join("overlap.log"));
    if !overlaps.is_empty() {
        problems.push(format!("deploy commands overlapped in one environment:\n{overlaps}"));
    }
    let (starts, ends) = (runs.lines().filter(|l| l.starts_with("start ")).count(), runs.lines().filter(|l| l.starts_with("end ")).count());
    if starts != ends {
        problems.push(format!("{starts} deploy commands started but {ends} ended"));
    }
    let mut per_env: BTreeMap<&str, Vec<&Deployment>> = BTreeMap::new();
    for d in deployments.iter().filter(|d| d.started_at.is_some()) {
        per_env.entry(d.env.as_str()).or_default().push(d);
    }
    for (env, ds) in &mut per_env {
        ds.sort_by_key(|d| d.started_at);
        for w in ds.windows(2) {
            if w[0].finished_at.is_none_or(|f| f > w[1].started_at.unwrap_or_default()) {
                problems.push(format!("{env}: #{} ran {:?}..{:?} and #{} started at {:?}", w[0].id, w[0].started_at, w[0].finished_at, w[1].id, w[1].started_at));
            }
        }
    }
    let resumed: Vec<&Deployment> = deployments.iter().filter(|d| killed_holding.contains(&d.id)).collect();
    for d in &resumed {
        let deploy_runs = runs.lines().filter(|l| l.starts_with(&format!("start {} {} ", d.env, d.version))).count();
        if d.state != DeploymentState::Succeeded || deploy_runs == 0 {
            problems.push(format!("#{} (running on the killed replica) ended {} after {deploy_runs} deploy runs", d.id, d.state));
        }
    }

    // ------------------------------------------------------------------ every message posted once
    let refusals = slack.refusals();
    if !refusals.is_empty() {
        problems.push(format!("Slack would have refused {} calls: {:?}", refusals.len(), refusals.iter().take(5).map(|c| (&c.method, &c.error)).collect::<Vec<_>>()));
    }
    let failed_edits = calls.iter().filter(|c| c.method == "chat.update" && !c.ok()).count();
    if failed_edits > 0 {
        problems.push(format!("{failed_edits} chat.update calls failed"));
    }
    for d in &deployments {
        let posts = progress_posts(&calls, d);
        let expected = usize::from(d.started_at.is_some());
        if posts.len() > 1 || posts.len() < expected {
            problems.push(format!("#{} {} → {} ({}): its progress message was posted {} times", d.id, d.version, d.env, d.state, posts.len()));
        }
        // Its last edit shows how it ended.
        for post in posts {
            let shown = post.ts.as_deref().and_then(|ts| slack.message_text(ts)).unwrap_or_default();
            if !shown.contains(d.state.as_str()) {
                // What the store holds for it, and every edit Slack was sent, to tell a lost edit from a stale one.
                let stored = database.outbox_message(&deploybot::store::progress_key(d.id)).await.ok().flatten();
                let stored = stored.map(|m| format!("rev {} {} delivered at {:?}: {}", m.rev, m.state, m.delivered_at, m.body.lines().next().unwrap_or_default())).unwrap_or_default();
                let first = |c: &Call| c.text().lines().next().unwrap_or_default().to_string();
                let edits: Vec<String> = calls.iter().filter(|c| c.method == "chat.update" && c.arg("ts") == post.ts.as_deref()).map(|c| format!("{:?} {} {}", c.at.duration_since(post.at), c.status, first(c))).collect();
                problems.push(format!(
                    "#{} {} → {} is {} but its progress message shows: {}\n  stored: {stored}\n  edits sent: {edits:#?}",
                    d.id,
                    d.version,
                    d.env,
                    d.state,
                    shown.lines().next().unwrap_or_default()
                ));
            }
        }
    }
    let posts: Vec<&Call> = calls.iter().filter(|c| c.method == "chat.postMessage" && c.ok()).collect();
    // (channel, thread, text) → its copies.
    type Where<'a> = (Option<&'a str>, Option<&'a str>, &'a str);
    let mut seen: HashMap<Where, Vec<&Call>> = HashMap::new();
    for c in &posts {
        seen.entry((c.arg("channel"), c.arg("thread_ts"), c.text())).or_default().push(c);
    }
    for ((channel, thread, text), copies) in seen.iter().filter(|(_, copies)| copies.len() > 1) {
        let first = text.lines().next().unwrap_or_default();
        // A channel's post the victim made is found by the next deliverer (by its metadata) and
        // never repeated; a thread reply or a private reply cannot be looked up.
        if copies.len() == 2 && thread.is_some() && in_kill_window(copies[0]) {
            lost_to_the_kill.entry(copies[0].ts.clone().unwrap_or_default()).or_insert_with(|| format!("{first:?}"));
        } else {
            problems.push(format!("posted {} times in {channel:?} (thread {thread:?}): {first}", copies.len()));
        }
    }
    if lost_to_the_kill.len() > 1 {
        problems.push(format!("more posts were repeated after the kill than one call in flight explains: {:?}", lost_to_the_kill.values().collect::<Vec<_>>()));
    }
    eprintln!("posted again after the kill (the known gap of a post accepted but not recorded): {:?}", lost_to_the_kill.values().collect::<Vec<_>>());

    // ------------------------------------------------------------------ the same history from every replica
    let mut replies = Vec::new();
    for (n, base) in bases.iter().enumerate() {
        for k in [0, 17, 33] {
            let user = format!("U0HIST{n}{k:02}");
            let fields = slack_support::slash_command("/history", &format!("{} --limit 100", env_name(k)), &user, "historian", &channel(k), 100_000 + (n * 100 + k) as u64);
            let body = slack_support::form_body(&fields);
            let (ts, sig) = slack_support::sign(&signing, chrono::Utc::now().timestamp(), &body);
            let res = http.post(format!("{base}/slack/commands")).header("x-slack-request-timestamp", ts).header("x-slack-signature", sig).body(body).send().await.unwrap();
            assert!(res.status().is_success(), "/history on {base}: {}", res.status());
            replies.push((n, k, user));
        }
    }
    let history_deadline = Instant::now() + Duration::from_secs(20);
    let calls = slack.wait_until("the /history replies", history_deadline.saturating_duration_since(Instant::now()), |calls| replies.iter().all(|(_, _, u)| !ephemerals_to(calls, u).is_empty())).await;
    for k in [0, 17, 33] {
        let texts: Vec<(usize, String)> = replies.iter().filter(|(_, kk, _)| *kk == k).map(|(n, _, u)| (*n, ephemerals_to(&calls, u).join("\n"))).collect();
        let ids: Vec<i64> = deployments.iter().filter(|d| d.env == env_name(k) && d.started_at.is_some()).map(|d| d.id).collect();
        for (n, text) in &texts {
            if text != &texts[0].1 {
                problems.push(format!("/history {} differs between replica {} and replica {n}:\n{}\n---\n{text}", env_name(k), texts[0].0, texts[0].1));
            }
            let missing: Vec<&i64> = ids.iter().filter(|id| !text.contains(&format!("#{id}"))).collect();
            if !missing.is_empty() && ids.len() <= 100 {
                problems.push(format!("/history {} on replica {n} lacks {missing:?}", env_name(k)));
            }
        }
    }
    let cli: Vec<String> = replicas
        .iter()
        .map(|r| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_deploybot"))
                .arg("--config")
                .arg(&r.config)
                .args(["history", "--limit", "1000", "--format", "json"])
                .envs(secrets.iter().map(|(k, v)| (k, v)))
                .output()
                .unwrap();
            assert!(out.status.success(), "history with {}: {}", r.config.display(), String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        })
        .collect();
    if cli.iter().any(|h| h != &cli[0]) {
        problems.push("`deploybot history` differs between the replicas' configs".into());
    }
    let listed: serde_json::Value = serde_json::from_str(&cli[0]).unwrap_or_else(|e| panic!("history --format json: {e}\n{}", cli[0]));
    let listed = listed.as_array().map_or(0, Vec::len);
    // History lists the deployments that ran; a request the lock refused after its row was written never did.
    let ran = deployments.iter().filter(|d| d.started_at.is_some() && d.finished_at.is_some()).count();
    if listed != ran {
        problems.push(format!("`deploybot history` lists {listed} deployments; the store has {ran} that ran"));
    }

    for replica in &mut replicas {
        if let Some(p) = replica.process.as_mut() {
            if let Some(status) = p.exited() {
                problems.push(format!("replica {} exited ({status}) during the run", replica.base));
            }
        }
    }
    if !problems.is_empty() {
        // Kept for a look: the configs, each replica's log, the deploy commands' record.
        let kept = dir.keep();
        let errors: Vec<String> = replicas
            .iter()
            .map(|r| {
                let log = regex::Regex::new("\x1b\\[[0-9;]*m").unwrap().replace_all(&read(&r.stderr), "").into_owned();
                let mut by_message: BTreeMap<String, usize> = BTreeMap::new();
                for line in log.lines().filter(|l| l.contains("ERROR")) {
                    let message = line.split_once("ERROR").map_or(line, |(_, m)| m).trim();
                    let message = message.split_once(": ").map_or(message, |(_, m)| m);
                    let message = message.split(" deployment=").next().unwrap_or(message);
                    *by_message.entry(message.chars().take(90).collect()).or_default() += 1;
                }
                format!("{}: {by_message:?}", r.stderr.file_name().unwrap_or_default().to_string_lossy())
            })
            .collect();
        panic!("{figures}\nerrors logged: {}\n(files kept in {})\n{} problems:\n{}", errors.join("; "), kept.display(), problems.len(), problems.join("\n"));
    }
}
