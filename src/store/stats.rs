//! `/stats` from the per-day rollups that triggers keep (migration `0008_stats_rollup`, generated
//! by `migrations/gen/0008_stats_rollup.py`): a window is its whole UTC days, read from
//! `stats_days` and the duration histograms, plus the part of its first day, read from rows.
//! Whatever the window, that is a few hundred rollup rows and at most a day of deployments
//! (issue 10: a year of a million deployments in milliseconds instead of seconds).
//!
//! The median is exact: the minute histogram finds the minute that holds the middle ranks, the
//! second histogram of that minute finds their second, and when an even count's two middle
//! durations fall in different seconds, their milliseconds come from the
//! `deployments_success_duration` index.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use sqlx::Row;

use super::history::{self, RowFacts, Stats, StatsCounts, StatsInput};
use super::{deployment_from_row, Dialect, Store, DEPLOYMENT_COLUMNS};
use crate::model::Millis;

pub(super) const DAY_MS: i64 = 86_400_000;

/// The whole days of a window from the rollup: `$1` scope, `$2` first whole day.
const ROLLUP_SQL: &str = "SELECT CAST(COALESCE(SUM(changes), 0) AS BIGINT), CAST(COALESCE(SUM(succeeded), 0) AS BIGINT), \
       CAST(COALESCE(SUM(failed), 0) AS BIGINT), CAST(COALESCE(SUM(completed), 0) AS BIGINT), \
       CAST(COALESCE(SUM(rollbacks), 0) AS BIGINT), CAST(COALESCE(SUM(restore_ms), 0) AS BIGINT), \
       CAST(COALESCE(SUM(restores), 0) AS BIGINT) \
     FROM stats_days WHERE scope = $1 AND day >= $2";

/// Successful changes by minute of duration: `$1` scope, `$2` first whole day.
const MINUTES_SQL: &str = "SELECT minute, CAST(SUM(n) AS BIGINT) FROM stats_duration_minutes WHERE scope = $1 AND day >= $2 GROUP BY minute";

/// One minute's successful changes by second: `$1` scope, `$2` minute, `$3` first whole day.
const SECONDS_SQL: &str = "SELECT secs, CAST(SUM(n) AS BIGINT) FROM stats_durations WHERE scope = $1 AND minute = $2 AND day >= $3 GROUP BY secs";

/// The rows of the window's first, partial day: `$1` since, `$2` its end, `$3` the environment.
fn partial_day_sql(by_env: bool) -> String {
    let env_filter = if by_env { " AND env = $3" } else { "" };
    format!(
        "SELECT kind, state, started_at, failed_at, finished_at, undone, restored_at FROM deployments \
         WHERE finished_at >= $1 AND finished_at < $2 AND started_at IS NOT NULL{env_filter}"
    )
}

/// The scope of the rollups: an environment, or `*` for all of them.
fn scope(env: Option<&str>) -> String {
    env.unwrap_or("*").to_string()
}

/// The longest (`MAX`) or shortest (`MIN`) successful change of the window within one second of
/// durations: the top or bottom of that second's range of `deployments_success_duration`. SQLite
/// is told the index (`INDEXED BY`): without `ANALYZE` statistics it prefers the window's range of
/// `deployments_finished`, a year of rows instead of one second's.
fn duration_edge_sql(dialect: Dialect, edge: &str, by_env: bool) -> String {
    let indexed = match dialect {
        Dialect::Sqlite => " INDEXED BY deployments_success_duration",
        Dialect::Postgres => "",
    };
    let env_filter = if by_env { " AND env = $4" } else { "" };
    format!(
        "SELECT {edge}(finished_at - started_at) FROM deployments{indexed} WHERE kind = 'deploy' AND state = 'succeeded' \
         AND (finished_at - started_at) >= $1 AND (finished_at - started_at) < $2 AND finished_at >= $3{env_filter}"
    )
}

/// Which ranks (0-based, in duration order) the median is made of.
fn middle_ranks(n: i64) -> (i64, i64) {
    ((n - 1) / 2, n / 2)
}

/// The bucket that holds rank `k` in `buckets` (ascending), and the rank within it.
fn bucket_of(buckets: &BTreeMap<i64, i64>, k: i64) -> Option<(i64, i64)> {
    let mut before = 0;
    for (&b, &n) in buckets {
        if k < before + n {
            return Some((b, k - before));
        }
        before += n;
    }
    None
}

impl Store {
    /// `/stats` over the deployments finished since `since` (in `env` when given).
    pub async fn stats(&self, env: Option<&str>, since: Millis, days: u32) -> Result<Stats> {
        let first_whole_day = since.div_euclid(DAY_MS) + 1;
        let scope = scope(env);
        let mut c = StatsCounts::default();

        // The whole days, from the rollup.
        let row = sqlx::query(ROLLUP_SQL)
            .bind(&scope)
            .bind(first_whole_day)
            .fetch_one(self.db())
            .await
            .context("failed to read the /stats rollup")?;
        let n = |i: usize| -> Result<i64> { Ok(row.try_get::<i64, _>(i)?) };
        c.changes = n(0)?.max(0) as usize;
        c.succeeded = n(1)?.max(0) as usize;
        c.failed = n(2)?.max(0) as usize;
        c.completed = n(3)?.max(0) as usize;
        c.rollbacks = n(4)?.max(0) as usize;
        c.restore_total_ms = n(5)?;
        c.restores = n(6)?.max(0) as usize;

        // The first, partial day, from its rows.
        let mut partial = Vec::new();
        for facts in self.partial_day(env, since, first_whole_day * DAY_MS).await? {
            facts.add_to(&mut c, &mut partial);
        }
        c.median_ms = self.median(env, &scope, since, first_whole_day, &partial).await?;
        Ok(Stats::from_counts(days, &c))
    }

    async fn partial_day(&self, env: Option<&str>, since: Millis, until: Millis) -> Result<Vec<RowFacts>> {
        let sql = partial_day_sql(env.is_some());
        let mut q = sqlx::query(&sql).bind(since).bind(until);
        if let Some(e) = env {
            q = q.bind(e.to_string());
        }
        let rows = q.fetch_all(self.db()).await.context("failed to read the first day of the /stats window")?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get(0)?;
                let state: String = r.try_get(1)?;
                Ok(RowFacts {
                    kind: kind.parse().map_err(anyhow::Error::msg)?,
                    state: state.parse().map_err(anyhow::Error::msg)?,
                    started_at: r.try_get(2)?,
                    failed_at: r.try_get(3)?,
                    finished_at: r.try_get(4)?,
                    undone: r.try_get::<i64, _>(5)? != 0,
                    restored_at: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// The exact median duration of the window's successful changes (see the module docs).
    async fn median(&self, env: Option<&str>, scope: &str, since: Millis, first_whole_day: i64, partial: &[i64]) -> Result<Option<i64>> {
        let mut minutes: BTreeMap<i64, i64> = BTreeMap::new();
        for r in sqlx::query(MINUTES_SQL)
            .bind(scope)
            .bind(first_whole_day)
            .fetch_all(self.db())
            .await
            .context("failed to read the /stats duration histogram")?
        {
            *minutes.entry(r.try_get(0)?).or_default() += r.try_get::<i64, _>(1)?;
        }
        for ms in partial {
            *minutes.entry(ms / 60_000).or_default() += 1;
        }
        minutes.retain(|_, n| *n > 0);
        let total: i64 = minutes.values().sum();
        if total == 0 {
            return Ok(None);
        }
        let (lo, hi) = middle_ranks(total);
        let mut seconds_of: BTreeMap<i64, BTreeMap<i64, i64>> = BTreeMap::new();
        let (m_lo, r_lo) = bucket_of(&minutes, lo).context("the duration histogram is shorter than its count")?;
        let (m_hi, r_hi) = bucket_of(&minutes, hi).context("the duration histogram is shorter than its count")?;
        for m in [m_lo, m_hi] {
            if seconds_of.contains_key(&m) {
                continue;
            }
            let mut secs: BTreeMap<i64, i64> = BTreeMap::new();
            for r in sqlx::query(SECONDS_SQL)
                .bind(scope)
                .bind(m)
                .bind(first_whole_day)
                .fetch_all(self.db())
                .await
                .context("failed to read the /stats duration histogram")?
            {
                *secs.entry(r.try_get(0)?).or_default() += r.try_get::<i64, _>(1)?;
            }
            for ms in partial.iter().filter(|ms| *ms / 60_000 == m) {
                *secs.entry(ms / 1000).or_default() += 1;
            }
            secs.retain(|_, n| *n > 0);
            seconds_of.insert(m, secs);
        }
        let (s_lo, _) = bucket_of(&seconds_of[&m_lo], r_lo).context("the duration histograms disagree")?;
        let (s_hi, _) = bucket_of(&seconds_of[&m_hi], r_hi).context("the duration histograms disagree")?;
        if s_lo == s_hi {
            // Both middle durations (or the one) are within this second: so is their mean.
            return Ok(Some(s_lo * 1000));
        }
        // The last duration of the lower second and the first of the upper one, to the millisecond.
        let a = self.duration_edge(env, since, s_lo, "MAX").await?;
        let b = self.duration_edge(env, since, s_hi, "MIN").await?;
        Ok(history::median_of_sorted(&[a, b]))
    }

    async fn duration_edge(&self, env: Option<&str>, since: Millis, second: i64, edge: &str) -> Result<i64> {
        let sql = duration_edge_sql(self.dialect, edge, env.is_some());
        let mut q = sqlx::query(&sql).bind(second * 1000).bind(second * 1000 + 1000).bind(since);
        if let Some(e) = env {
            q = q.bind(e.to_string());
        }
        let v: Option<i64> = q.fetch_one(self.db()).await.context("failed to read a median duration")?.try_get(0)?;
        v.context("the duration histogram names a second no deployment has")
    }

    /// Deployments finished since `since`, for [`Stats::compute`]: the reference the rollups are
    /// checked against. Whether a later `/rollback` undid each one and when the next success
    /// restored it are worked out here from the rows, not read from the columns the triggers keep.
    pub async fn stats_input(&self, env: Option<&str>, since: Millis) -> Result<Vec<StatsInput>> {
        let env_filter = if env.is_some() { " AND env = $2" } else { "" };
        let sql = format!(
            "SELECT {DEPLOYMENT_COLUMNS}, \
               CASE WHEN EXISTS (SELECT 1 FROM deployments r WHERE r.rollback_of = d.id AND r.env = d.env \
                                 AND r.started_at IS NOT NULL AND r.finished_at IS NOT NULL) THEN 1 ELSE 0 END AS later, \
               (SELECT MIN(s.finished_at) FROM deployments s WHERE s.env = d.env AND s.id <> d.id AND s.state = 'succeeded' \
                 AND s.started_at IS NOT NULL AND s.finished_at >= COALESCE(d.failed_at, d.finished_at)) AS next_success \
             FROM deployments d WHERE finished_at IS NOT NULL AND started_at IS NOT NULL AND finished_at >= $1{env_filter} \
             ORDER BY finished_at"
        );
        let mut q = sqlx::query(&sql).bind(since);
        if let Some(e) = env {
            q = q.bind(e.to_string());
        }
        q.fetch_all(self.db())
            .await?
            .iter()
            .map(|r| {
                Ok(StatsInput {
                    deployment: deployment_from_row(r)?,
                    rolled_back_later: r.try_get::<i64, _>("later")? != 0,
                    next_success_at: r.try_get("next_success")?,
                })
            })
            .collect()
    }

    /// The database's plans of the queries behind `/stats` (see [`Store::query_plans`]).
    pub(super) fn stats_queries(dialect: Dialect, env: &str, since: Millis) -> Vec<(&'static str, String, Vec<super::Param>)> {
        use super::Param::{Int, Text};
        let day = since.div_euclid(DAY_MS) + 1;
        vec![
            ("stats: rollup", ROLLUP_SQL.into(), vec![Text(env.into()), Int(day)]),
            ("stats: first day", partial_day_sql(true), vec![Int(since), Int(day * DAY_MS), Text(env.into())]),
            ("stats: median minute", MINUTES_SQL.into(), vec![Text(env.into()), Int(day)]),
            ("stats: median second", SECONDS_SQL.into(), vec![Text(env.into()), Int(1), Int(day)]),
            ("stats: median milliseconds", duration_edge_sql(dialect, "MAX", true), vec![Int(60_000), Int(61_000), Int(since), Text(env.into())]),
        ]
    }
}
