//! A synthetic history written through the schema, for the scale benchmark (`benches/scale.rs`)
//! and its small-N smoke test: one deployment every `spacing_ms`, most of them successful, with
//! the deployment_services, deployment_steps and approvals rows the pipeline writes. Rows go in
//! with multi-row INSERTs in one transaction, so a million take minutes, not hours.

use anyhow::{bail, Context, Result};
use sqlx::{Executor, Row};

use super::{Dialect, Store};
use crate::model::Millis;

/// What to seed.
#[derive(Debug, Clone)]
pub struct SeedSpec {
    pub deployments: usize,
    /// When the last deployment was created; the first is `deployments × spacing_ms` earlier.
    pub end: Millis,
    pub spacing_ms: i64,
    /// Deployments go round-robin over these; approvals are recorded for `production`.
    pub envs: Vec<String>,
    pub services: Vec<String>,
    pub seed: u64,
}

/// What was seeded, by outcome, for the benchmark's report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeedReport {
    pub deployments: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub rolled_back: usize,
    pub rollback_failed: usize,
    pub cancelled: usize,
    pub rollbacks: usize,
    pub services: usize,
    pub steps: usize,
    pub approvals: usize,
}

/// splitmix64: deterministic, so two runs seed the same history.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const PHASES: [&str; 7] = ["preflight", "backup", "migrations", "deploy", "verify", "monitor", "record"];

struct DeploymentRow {
    id: i64,
    env: String,
    kind: &'static str,
    version: String,
    services: Vec<String>,
    state: &'static str,
    rollback_of: Option<i64>,
    approvals_required: i64,
    error: Option<String>,
    created_at: Millis,
    started_at: Millis,
    failed_at: Option<Millis>,
    finished_at: Millis,
}

struct StepRow {
    deployment_id: i64,
    seq: i64,
    name: &'static str,
    state: &'static str,
    detail: Option<String>,
    started_at: Millis,
    finished_at: Millis,
}

struct ServiceRow {
    deployment_id: i64,
    service: String,
    from_version: Option<String>,
    to_version: String,
    state: &'static str,
    updated_at: Millis,
}

/// Rows per INSERT statement: under SQLite's and PostgreSQL's limits on bound parameters.
const BATCH: usize = 400;

impl Store {
    /// Seeds an empty store with a synthetic history (see the module documentation).
    pub async fn seed_history(&self, spec: &SeedSpec) -> Result<SeedReport> {
        if spec.envs.is_empty() || spec.services.is_empty() || spec.spacing_ms <= 0 {
            bail!("a seed needs at least one environment, one service and a positive spacing");
        }
        let existing: i64 = sqlx::query("SELECT COUNT(*) FROM deployments").fetch_one(self.db()).await?.try_get(0)?;
        if existing > 0 {
            bail!("the store already has {existing} deployments; seed an empty one");
        }
        let mut rng = Rng(spec.seed);
        let mut report = SeedReport::default();
        let first = spec.end - spec.deployments as i64 * spec.spacing_ms;
        // A deployment ends before the next one in its environment starts, as the environment
        // lock makes it.
        let max_duration = (spec.spacing_ms * spec.envs.len() as i64 - 2_000).max(2_000);
        let mut last_deploy: std::collections::HashMap<String, (i64, String)> = std::collections::HashMap::new();
        let mut tx = self.begin().await?;
        let (mut deployments, mut steps, mut services, mut approvals) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..spec.deployments {
            let id = i as i64 + 1;
            let env = spec.envs[i % spec.envs.len()].clone();
            let created_at = first + i as i64 * spec.spacing_ms;
            let started_at = created_at + 1_000;
            let duration = (max_duration / 4 + rng.below(max_duration as u64 * 3 / 4) as i64).min(max_duration);
            let finished_at = started_at + duration;
            let roll = rng.below(1000);
            let previous = last_deploy.get(&env).cloned();
            let (kind, state) = match roll {
                0..=799 => ("deploy", "succeeded"),
                800..=889 => ("deploy", "failed"),
                890..=939 => ("deploy", "rolled_back"),
                940..=949 => ("deploy", "rollback_failed"),
                950..=969 => ("deploy", "cancelled"),
                _ if previous.is_some() => ("rollback", "succeeded"),
                _ => ("deploy", "succeeded"),
            };
            let version = match (kind, &previous) {
                ("rollback", Some((_, v))) => v.clone(),
                _ => format!("v{}.{}.{}", 1 + i / 100_000, (i / 1000) % 100, i % 1000),
            };
            let rollback_of = if kind == "rollback" { previous.as_ref().map(|(id, _)| *id) } else { None };
            let failed_at = matches!(state, "failed" | "rolled_back" | "rollback_failed").then_some(started_at + duration / 2);
            let chosen: Vec<String> = {
                let n = 1 + rng.below(spec.services.len().min(3) as u64) as usize;
                let start = rng.below(spec.services.len() as u64) as usize;
                (0..n).map(|k| spec.services[(start + k) % spec.services.len()].clone()).collect()
            };
            let production = env == "production";
            // The phases as the pipeline records them: the failing one ends it.
            let fails_at = match state {
                "failed" => Some(if rng.below(2) == 0 { "deploy" } else { "verify" }),
                "rolled_back" | "rollback_failed" => Some("verify"),
                "cancelled" => Some("migrations"),
                _ => None,
            };
            let phase_ms = duration / (PHASES.len() as i64 + 1);
            for (k, name) in PHASES.iter().enumerate() {
                let (s, f) = (started_at + k as i64 * phase_ms, started_at + (k as i64 + 1) * phase_ms);
                let (step_state, detail) = match (*name, fails_at) {
                    (n, Some(at)) if n == at && state == "cancelled" => ("interrupted", Some("cancelled by Alice".to_string())),
                    (n, Some(at)) if n == at => ("failed", Some(format!("{n} failed: exit status 1"))),
                    ("backup", _) if !production => ("skipped", Some("disabled in this environment (skip_steps)".to_string())),
                    ("migrations", _) if rng.below(10) == 0 => ("succeeded", Some(format!("Migrations: applied 1 ({:04}_change)", i % 10_000))),
                    _ => ("succeeded", None),
                };
                steps.push(StepRow { deployment_id: id, seq: k as i64 + 1, name, state: step_state, detail, started_at: s, finished_at: f });
                if Some(*name) == fails_at {
                    break;
                }
            }
            if matches!(state, "rolled_back" | "rollback_failed") {
                let ok = state == "rolled_back";
                steps.push(StepRow {
                    deployment_id: id,
                    seq: 8,
                    name: "rollback",
                    state: if ok { "succeeded" } else { "failed" },
                    detail: (!ok).then(|| "rollback failed: exit status 1".to_string()),
                    started_at: finished_at - phase_ms,
                    finished_at,
                });
            }
            for service in &chosen {
                let from_version = previous.as_ref().map(|(_, v)| v.clone());
                let service_state = match state {
                    "succeeded" => "deployed",
                    "rolled_back" => "rolled_back",
                    "cancelled" => "pending",
                    _ => "failed",
                };
                services.push(ServiceRow { deployment_id: id, service: service.clone(), from_version, to_version: version.clone(), state: service_state, updated_at: finished_at });
            }
            if production {
                approvals.push((id, created_at + 30_000));
            }
            let error = match state {
                "failed" => Some(format!("{} failed: exit status 1", fails_at.unwrap_or("deploy"))),
                "rolled_back" => Some("verify failed: smoke test returned 503; rolled back".to_string()),
                "rollback_failed" => Some("verify failed, and the rollback failed too".to_string()),
                _ => None,
            };
            if kind == "deploy" && state == "succeeded" {
                last_deploy.insert(env.clone(), (id, version.clone()));
            }
            report.deployments += 1;
            match (kind, state) {
                ("rollback", _) => report.rollbacks += 1,
                (_, "succeeded") => report.succeeded += 1,
                (_, "failed") => report.failed += 1,
                (_, "rolled_back") => report.rolled_back += 1,
                (_, "rollback_failed") => report.rollback_failed += 1,
                _ => report.cancelled += 1,
            }
            deployments.push(DeploymentRow {
                id,
                env,
                kind,
                version,
                services: chosen,
                state,
                rollback_of,
                approvals_required: production as i64,
                error,
                created_at,
                started_at,
                failed_at,
                finished_at,
            });
            if deployments.len() >= BATCH {
                report.steps += steps.len();
                report.services += services.len();
                report.approvals += approvals.len();
                flush(&mut tx, &mut deployments, &mut steps, &mut services, &mut approvals).await?;
            }
        }
        report.steps += steps.len();
        report.services += services.len();
        report.approvals += approvals.len();
        flush(&mut tx, &mut deployments, &mut steps, &mut services, &mut approvals).await?;
        if self.dialect == Dialect::Postgres {
            // The ids were given explicitly: the sequences must continue after them.
            tx.execute("SELECT setval(pg_get_serial_sequence('deployments', 'id'), (SELECT MAX(id) FROM deployments))").await?;
        }
        tx.commit().await.context("failed to commit the seeded history")?;
        Ok(report)
    }

    /// Refreshes the planner's statistics (`ANALYZE`; on PostgreSQL also `VACUUM`, so index-only
    /// scans need not visit the table), as a database that has run for a while has them.
    pub async fn analyze(&self) -> Result<()> {
        let sql = match self.dialect {
            Dialect::Sqlite => "ANALYZE",
            Dialect::Postgres => "VACUUM ANALYZE",
        };
        self.db().execute(sql).await?;
        Ok(())
    }
}

fn placeholders(rows: usize, cols: usize) -> String {
    let mut out = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        out.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            if c > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!("${}", r * cols + c + 1));
        }
        out.push(')');
    }
    out
}

async fn flush(
    tx: &mut super::WriteTx<'_>,
    deployments: &mut Vec<DeploymentRow>,
    steps: &mut Vec<StepRow>,
    services: &mut Vec<ServiceRow>,
    approvals: &mut Vec<(i64, Millis)>,
) -> Result<()> {
    for chunk in deployments.chunks(BATCH) {
        let sql = format!(
            "INSERT INTO deployments (id, env, kind, version, services, state, requested_by, requested_by_name, channel, rollback_of, \
             approvals_required, error, rev, created_at, started_at, failed_at, finished_at, updated_at) VALUES {}",
            placeholders(chunk.len(), 18)
        );
        let mut q = sqlx::query(&sql);
        for d in chunk {
            q = q
                .bind(d.id)
                .bind(d.env.clone())
                .bind(d.kind)
                .bind(d.version.clone())
                .bind(serde_json::to_string(&d.services)?)
                .bind(d.state)
                .bind("U0ALICE")
                .bind("Alice")
                .bind(format!("C0{}", d.env.to_uppercase()))
                .bind(d.rollback_of)
                .bind(d.approvals_required)
                .bind(d.error.clone())
                .bind(3_i64)
                .bind(d.created_at)
                .bind(d.started_at)
                .bind(d.failed_at)
                .bind(d.finished_at)
                .bind(d.finished_at);
        }
        q.execute(&mut **tx).await.context("failed to seed deployments")?;
    }
    for chunk in steps.chunks(BATCH) {
        let sql = format!(
            "INSERT INTO deployment_steps (deployment_id, seq, name, attempt, state, detail, started_at, finished_at) VALUES {}",
            placeholders(chunk.len(), 8)
        );
        let mut q = sqlx::query(&sql);
        for s in chunk {
            q = q.bind(s.deployment_id).bind(s.seq).bind(s.name).bind(1_i64).bind(s.state).bind(s.detail.clone()).bind(s.started_at).bind(s.finished_at);
        }
        q.execute(&mut **tx).await.context("failed to seed deployment steps")?;
    }
    for chunk in services.chunks(BATCH) {
        let sql = format!(
            "INSERT INTO deployment_services (deployment_id, service, from_version, from_ref, to_version, to_ref, state, updated_at) VALUES {}",
            placeholders(chunk.len(), 8)
        );
        let mut q = sqlx::query(&sql);
        for s in chunk {
            q = q
                .bind(s.deployment_id)
                .bind(s.service.clone())
                .bind(s.from_version.clone())
                .bind(s.from_version.as_ref().map(|v| format!("image:{}:{v}", s.service)))
                .bind(s.to_version.clone())
                .bind(format!("image:{}:{}", s.service, s.to_version))
                .bind(s.state)
                .bind(s.updated_at);
        }
        q.execute(&mut **tx).await.context("failed to seed deployment services")?;
    }
    for chunk in approvals.chunks(BATCH) {
        let sql = format!("INSERT INTO approvals (deployment_id, user_id, user_name, vote, created_at) VALUES {}", placeholders(chunk.len(), 5));
        let mut q = sqlx::query(&sql);
        for (id, at) in chunk {
            q = q.bind(*id).bind("U0CAROL").bind("Carol").bind("approve").bind(*at);
        }
        q.execute(&mut **tx).await.context("failed to seed approvals")?;
    }
    deployments.clear();
    steps.clear();
    services.clear();
    approvals.clear();
    Ok(())
}
