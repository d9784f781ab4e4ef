//! History, `/stats` and `/metrics` at scale (issue 10), on SQLite and on PostgreSQL: the
//! database computes `/stats` exactly as the row-by-row computation did, `/metrics` counts follow
//! every state change, and the queries search indexes instead of scanning the history. The
//! timed runs are `benches/scale.py`; the last test runs it on a small history, untimed.

mod support;

use deploybot::model::*;
use deploybot::store::{Patch, SeedSpec, Stats, StatsInput};
use support::db::{request, stores, TestDb, DAY, HOUR, MINUTE, TUE_1_DEC_2026_10AM_NY as T0};

/// xorshift64*: reproducible random histories without another dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// `/stats` as it was computed before issue 10 (every failure compared with every row of the
/// history): the reference the database's computation must equal. `all` is every finished row.
fn reference_stats(rows: &[StatsInput], all: &[StatsInput], days: u32) -> Stats {
    let changes: Vec<&StatsInput> = rows.iter().filter(|r| r.deployment.kind == DeploymentKind::Deploy).collect();
    let failed_change = |r: &StatsInput| {
        r.rolled_back_later
            || matches!(r.deployment.state, DeploymentState::Failed | DeploymentState::RolledBack | DeploymentState::RollbackFailed | DeploymentState::Interrupted)
    };
    let succeeded = changes.iter().filter(|r| r.deployment.state == DeploymentState::Succeeded && !r.rolled_back_later).count();
    let failed = changes.iter().filter(|r| failed_change(r)).count();
    let completed = changes.iter().filter(|r| r.deployment.state != DeploymentState::Cancelled).count();
    let mut restores = Vec::new();
    for r in changes.iter().filter(|r| failed_change(r)) {
        let d = &r.deployment;
        let detected = d.failed_at.or(d.finished_at).unwrap_or(d.created_at);
        let restored = if d.state == DeploymentState::RolledBack {
            d.finished_at
        } else {
            all.iter()
                .map(|o| &o.deployment)
                .filter(|o| o.env == d.env && o.id != d.id && o.state == DeploymentState::Succeeded && o.finished_at.is_some_and(|f| f >= detected))
                .filter_map(|o| o.finished_at)
                .min()
        };
        if let Some(end) = restored {
            restores.push((end - detected).max(0));
        }
    }
    let mut durations: Vec<i64> =
        changes.iter().filter(|r| r.deployment.state == DeploymentState::Succeeded).filter_map(|r| r.deployment.duration_ms()).collect();
    durations.sort_unstable();
    let median = (!durations.is_empty()).then(|| {
        let n = durations.len();
        if n % 2 == 1 {
            durations[n / 2]
        } else {
            (durations[n / 2 - 1] + durations[n / 2]) / 2
        }
    });
    Stats {
        days,
        deployments: changes.len(),
        succeeded,
        failed,
        rollbacks: rows.iter().filter(|r| r.deployment.kind == DeploymentKind::Rollback).count(),
        per_week: if days == 0 { 0.0 } else { succeeded as f64 * 7.0 / days as f64 },
        change_failure_rate: (completed > 0).then(|| failed as f64 / completed as f64),
        mean_time_to_restore_seconds: (!restores.is_empty()).then(|| restores.iter().sum::<i64>() / restores.len() as i64 / 1000),
        median_duration_seconds: median.map(|ms| ms / 1000),
    }
}

const ENVS: [&str; 3] = ["production", "staging", "development"];

/// Adds `n` random deployments: any kind and end state, times on a coarse grid so that ends
/// and detections tie, some detected after they ended, some still in flight, rollbacks of
/// earlier ones (in their environment or not).
async fn add_random_history(db: &TestDb, rng: &mut Rng, n: usize, ids: &mut Vec<i64>) {
    use DeploymentState::*;
    const ENDS: [DeploymentState; 8] = [Succeeded, Succeeded, Succeeded, Failed, RolledBack, RollbackFailed, Interrupted, Cancelled];
    for _ in 0..n {
        let env = ENVS[rng.below(ENVS.len() as u64) as usize];
        let mut req = request(env, &format!("v1.0.{}", rng.below(50)), Queued);
        if !ids.is_empty() && rng.below(4) == 0 {
            req.kind = DeploymentKind::Rollback;
            req.rollback_of = Some(ids[rng.below(ids.len() as u64) as usize]);
        }
        let started = T0 - rng.below(40) as i64 * DAY / 2 + rng.below(6) as i64 * 10 * MINUTE;
        let created = db.create_deployment(&req, started - MINUTE).await.unwrap();
        ids.push(created.id);
        let state = ENDS[rng.below(ENDS.len() as u64) as usize];
        let finished = started + rng.below(5) as i64 * 10 * MINUTE;
        let failed_at = match rng.below(4) {
            0 => None,
            1 => Some(finished + 10 * MINUTE), // detected after the job ended
            _ => Some(started + rng.below(3) as i64 * 10 * MINUTE),
        };
        let in_flight = rng.below(10) == 0;
        let patch = Patch {
            started_at: Some(started),
            finished_at: (!in_flight).then_some(finished),
            failed_at,
            release_lease: true,
            ..Patch::default()
        };
        let to = if in_flight { Running } else { state };
        assert!(db.transition(created.id, &DeploymentState::ALL, to, &patch, "deploybot", finished).await.unwrap(), "{}", db.name);
    }
}

#[tokio::test]
async fn stats_computed_by_the_database_equal_the_row_by_row_computation_on_random_histories() {
    for db in stores().await {
        let mut rng = Rng(0x5EED_0001);
        let mut ids = Vec::new();
        let mut compared = 0;
        for round in 0..8 {
            add_random_history(&db, &mut rng, 12, &mut ids).await;
            let all = db.stats_input(None, Millis::MIN).await.unwrap();
            for env in [None, Some("production"), Some("staging"), Some("development")] {
                for days in [1_u32, 7, 30] {
                    let since = T0 + DAY - days as i64 * DAY;
                    let rows = db.stats_input(env, since).await.unwrap();
                    let expected = reference_stats(&rows, &all, days);
                    assert_eq!(Stats::compute(&rows, days, from_millis(T0)), expected, "{}: round {round}, {env:?}, {days} days: the sweep", db.name);
                    let got = db.stats(env, since, days).await.unwrap_or_else(|e| panic!("{}: stats: {e:#}", db.name));
                    assert_eq!(got, expected, "{}: round {round}, {env:?}, {days} days: in SQL", db.name);
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 8 * 4 * 3, "{}", db.name);
        // The histories exercised what the pairing has to get right.
        let rows = db.stats_input(None, T0 - 30 * DAY).await.unwrap();
        let all = db.stats_input(None, Millis::MIN).await.unwrap();
        let stats = reference_stats(&rows, &all, 30);
        assert!(stats.failed > 5 && stats.mean_time_to_restore_seconds.is_some() && stats.rollbacks > 3, "{}: {stats:?}", db.name);
        assert!(rows.iter().any(|r| r.rolled_back_later && r.deployment.state == DeploymentState::Succeeded), "{}: a success undone later", db.name);
    }
}

#[tokio::test]
async fn stats_in_the_database_count_a_later_rollback_and_restore_from_the_next_success() {
    for db in stores().await {
        let ran = |env: &'static str, state: DeploymentState, started: Millis, minutes: i64, rollback_of: Option<i64>| {
            let db = &db;
            async move {
                let mut req = request(env, "v1.0.0", DeploymentState::Queued);
                if rollback_of.is_some() {
                    req.kind = DeploymentKind::Rollback;
                    req.rollback_of = rollback_of;
                }
                let d = db.create_deployment(&req, started).await.unwrap();
                let failed_at = matches!(state, DeploymentState::Failed | DeploymentState::RolledBack).then_some(started + MINUTE);
                let patch = Patch { started_at: Some(started), finished_at: Some(started + minutes * MINUTE), failed_at, ..Patch::default() };
                assert!(db.transition(d.id, &DeploymentState::ALL, state, &patch, "deploybot", started).await.unwrap());
                d.id
            }
        };
        use DeploymentState::*;
        ran("production", Failed, T0, 4, None).await; // detected T0+1m
        ran("staging", Succeeded, T0 + 5 * MINUTE, 1, None).await; // another environment
        let good = ran("production", Succeeded, T0 + 51 * MINUTE, 10, None).await; // ends T0+61m: restores after 60m
        ran("production", RolledBack, T0 + 2 * HOUR, 7, None).await; // restored by its own rollback after 6m
        ran("production", Succeeded, T0 + 3 * HOUR, 2, Some(good)).await; // a rollback undoing `good`
        let stats = db.stats(Some("production"), T0 - DAY, 7).await.unwrap();
        assert_eq!((stats.deployments, stats.succeeded, stats.failed, stats.rollbacks), (3, 0, 3, 1), "{}: {stats:?}", db.name);
        assert_eq!(stats.change_failure_rate, Some(1.0), "{}", db.name);
        // 60m, 6m, and `good` (detected at its end, T0+61m) restored by the rollback at T0+182m: 121m.
        assert_eq!(stats.mean_time_to_restore_seconds, Some((60 + 6 + 121) * 60 / 3), "{}", db.name);
        assert_eq!(stats.median_duration_seconds, Some(600), "{}: the one successful change, undone or not", db.name);
        assert_eq!(db.stats(Some("production"), T0 + DAY, 7).await.unwrap().deployments, 0, "{}: nothing in the window", db.name);
    }
}

#[tokio::test]
async fn metrics_counts_follow_every_state_change() {
    for db in stores().await {
        let mut rng = Rng(0x5EED_0002);
        let mut ids = Vec::new();
        add_random_history(&db, &mut rng, 30, &mut ids).await;
        // Moves that keep the state and moves back and forth.
        let d = db.create_deployment(&request("staging", "v9.9.9", DeploymentState::AwaitingApproval), T0).await.unwrap();
        for to in [DeploymentState::AwaitingApproval, DeploymentState::Queued, DeploymentState::Running, DeploymentState::Queued, DeploymentState::Running] {
            assert!(db.transition(d.id, &DeploymentState::ALL, to, &Patch::default(), "deploybot", T0).await.unwrap());
        }
        let all = db.deployments(None, &[], 10_000).await.unwrap();
        let counts = db.deployment_counts().await.unwrap();
        for state in DeploymentState::ALL {
            let expected = all.iter().filter(|x| x.state == state).count() as i64;
            assert_eq!(counts.get(state.as_str()).copied().unwrap_or(0), expected, "{}: {state}", db.name);
        }
        assert_eq!(counts.values().sum::<i64>(), all.len() as i64, "{}: no state counted that is not there", db.name);
    }
}

/// The plan lines that read the whole deployments table (or a whole index of it).
fn full_scans(dialect: &str, plan: &str) -> Vec<String> {
    plan.lines()
        .filter(|l| match dialect {
            // `SCAN w`, `SCAN ev`… are the window's own intermediate results.
            "sqlite" => l.contains("SCAN deployments") || l.contains("SCAN d ") || l.ends_with("SCAN d"),
            _ => l.contains("Seq Scan on deployments"),
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn a_seeded_history_is_read_through_indexes_with_the_same_numbers() {
    for db in stores().await {
        let end = T0;
        let spec = SeedSpec {
            deployments: 2_000,
            end,
            // 2 000 deployments over two years, as 1 M are one a minute.
            spacing_ms: 8 * HOUR,
            envs: ENVS.iter().map(|e| e.to_string()).collect(),
            services: vec!["backend".into(), "frontend".into(), "worker".into()],
            seed: 7,
        };
        let report = db.seed_history(&spec).await.unwrap_or_else(|e| panic!("{}: seed: {e:#}", db.name));
        assert_eq!(report.deployments, 2_000, "{}", db.name);
        assert!(report.succeeded > 1_400 && report.failed > 60 && report.rolled_back > 30 && report.rollbacks > 20, "{}: {report:?}", db.name);
        assert!(report.steps > 5 * 2_000 && report.services >= 2_000 && report.approvals > 600, "{}: {report:?}", db.name);
        assert!(db.seed_history(&spec).await.is_err(), "{}: a second seed into a full store is refused", db.name);
        db.analyze().await.unwrap();

        // The plans: every read of deployments is an index search.
        let plans = db.query_plans("production", end - 30 * DAY).await.unwrap();
        assert_eq!(plans.len(), 9, "{}", db.name);
        for (name, plan) in &plans {
            assert!(full_scans(db.name, plan).is_empty(), "{}: {name} scans the history:\n{plan}", db.name);
            if ["stats: rollup", "stats: median minute", "stats: median second"].contains(name) {
                // The rollups alone: however long the window, no deployment row is read.
                assert!(!plan.contains("deployments"), "{}: {name} reads deployments:\n{plan}", db.name);
            } else {
                assert!(plan.contains("deployments_"), "{}: {name} uses none of the indexes:\n{plan}", db.name);
            }
        }
        let claim = &plans.iter().find(|(name, _)| *name == "claim_job").expect("the claim's plan").1;
        assert!(claim.contains("deployments_claimable") || claim.contains("deployments_state"), "{}: the claim searches the live jobs by state:\n{claim}", db.name);

        // The numbers: the database's /stats equal the computation over the rows.
        let all = db.stats_input(None, Millis::MIN).await.unwrap();
        for (env, days) in [(Some("production"), 30_u32), (None, 30), (Some("production"), 365), (None, 365)] {
            let since = end - days as i64 * DAY;
            let rows = db.stats_input(env, since).await.unwrap();
            let got = db.stats(env, since, days).await.unwrap();
            assert_eq!(got, reference_stats(&rows, &all, days), "{}: {env:?}, {days} days", db.name);
            assert!(got.deployments > 0 && got.mean_time_to_restore_seconds.is_some(), "{}: {got:?}", db.name);
        }

        // History: the newest 20 of production, with what the pipeline wrote for them.
        let h = db.history(Some("production"), 20, chrono_tz::UTC).await.unwrap();
        assert_eq!(h.len(), 20, "{}", db.name);
        assert!(h.iter().all(|e| e.env == "production"), "{}", db.name);
        assert!(h.windows(2).all(|w| w[0].finished_at >= w[1].finished_at), "{}: newest first", db.name);
        assert!(h.iter().all(|e| e.approvers == ["Carol"]), "{}: production's approvals", db.name);
        let longer = db.history(Some("production"), 200, chrono_tz::UTC).await.unwrap();
        assert!(longer.iter().any(|e| e.rollback.as_deref().is_some_and(|r| r.starts_with("automatic, to v"))), "{}: a rolled back one names what it went back to", db.name);
        assert!(longer.iter().any(|e| e.rollback.as_deref().is_some_and(|r| r.starts_with("rolled back by #"))), "{}: one undone by a /rollback says by which", db.name);

        // /metrics: the kept counts equal the seeded outcomes.
        let counts = db.deployment_counts().await.unwrap();
        assert_eq!(counts.get("succeeded").copied(), Some((report.succeeded + report.rollbacks) as i64), "{}", db.name);
        assert_eq!(counts.get("failed").copied(), Some(report.failed as i64), "{}", db.name);
        assert_eq!(counts.get("rolled_back").copied(), Some(report.rolled_back as i64), "{}", db.name);
        assert_eq!(counts.values().sum::<i64>(), 2_000, "{}", db.name);

        // New requests still get fresh ids after the explicit ones.
        let d = db.create_deployment(&request("staging", "v2.0.0", DeploymentState::Queued), end).await.unwrap();
        assert_eq!(d.id, 2_001, "{}", db.name);
    }
}

/// `benches/scale.py` on 2 000 deployments and 5 environments with this build's binary: its
/// seeding goes through the schema the migrations make, and every command it times answers.
/// Untimed: the figures are the README's, measured at 1 M.
#[test]
fn the_scale_benchmark_runs_on_a_small_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/scale.py"))
        .env("DEPLOYBOT_BIN", env!("CARGO_BIN_EXE_deploybot"))
        .env("SCALE_DEPLOYMENTS", "2000")
        .env("SCALE_RUNS", "1")
        .env("FLEET_ENVS", "5")
        .env("SCALE_DIR", dir.path());
    if support::db::pg_admin_url().is_none() {
        cmd.env("SCALE_STORES", "sqlite");
    }
    let out = cmd.output().expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "benches/scale.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in ["| sqlite | `history --env production --limit 20` |", "| sqlite | `stats --days 365` |", "| sqlite | `GET /metrics` |", "fleet: 5 environments"] {
        assert!(stdout.contains(line), "no {line:?} in\n{stdout}");
    }
    if support::db::pg_admin_url().is_some() {
        assert!(stdout.contains("| postgres | `stats --days 30` |"), "{stdout}");
    }
}
