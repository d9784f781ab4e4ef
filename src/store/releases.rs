//! `/release` records: the release row and the image digest of each service.

use std::collections::HashMap;

use anyhow::Result;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::Store;
use crate::model::Millis;

/// The error of a release whose process died before it ended (its heartbeat lapsed).
pub const ABANDONED: &str = "abandoned: the process running it stopped before it ended (no heartbeat)";

/// One release attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub id: i64,
    pub version: String,
    pub ref_name: String,
    pub commit_sha: Option<String>,
    /// `running`, `succeeded` or `failed`.
    pub state: String,
    pub requested_by: String,
    pub requested_by_name: String,
    pub channel: String,
    pub error: Option<String>,
    pub notes: Option<String>,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
}

/// The image a release built and pushed for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseImage {
    pub service: String,
    /// `<image>:<version>`.
    pub image: String,
    /// `sha256:…`, as the registry reports it.
    pub digest: String,
    pub build_ms: i64,
    pub push_ms: i64,
}

const COLUMNS: &str = "id, version, ref_name, commit_sha, state, requested_by, requested_by_name, channel, error, notes, started_at, finished_at";

fn release_from_row(r: &AnyRow) -> Result<Release> {
    Ok(Release {
        id: r.try_get("id")?,
        version: r.try_get("version")?,
        ref_name: r.try_get("ref_name")?,
        commit_sha: r.try_get("commit_sha")?,
        state: r.try_get("state")?,
        requested_by: r.try_get("requested_by")?,
        requested_by_name: r.try_get("requested_by_name")?,
        channel: r.try_get("channel")?,
        error: r.try_get("error")?,
        notes: r.try_get("notes")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

impl Store {
    /// Starts a release of `version`: `Ok(Ok(id))`, or `Ok(Err(release))` with the release of that
    /// version that is running or has succeeded (a unique index makes this hold between replicas).
    /// `alive_ms`: how long the release counts as alive without a [`Store::release_alive`].
    #[allow(clippy::too_many_arguments)]
    pub async fn start_release(
        &self,
        version: &str,
        ref_name: &str,
        requested_by: &str,
        requested_by_name: &str,
        channel: &str,
        now: Millis,
        alive_ms: i64,
    ) -> Result<Result<i64, Release>> {
        // A release whose process died (no heartbeat) no longer holds its version.
        sqlx::query(
            "UPDATE releases SET state = 'failed', finished_at = $1, \
             error = $3 WHERE version = $2 AND state = 'running' AND alive_until < $1",
        )
        .bind(now)
        .bind(version)
        .bind(ABANDONED)
        .execute(self.db())
        .await?;
        if let Some(existing) = self.live_release(version).await? {
            return Ok(Err(existing));
        }
        let inserted = sqlx::query(
            "INSERT INTO releases (version, ref_name, state, requested_by, requested_by_name, channel, started_at, alive_until) \
             VALUES ($1, $2, 'running', $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(version)
        .bind(ref_name)
        .bind(requested_by)
        .bind(requested_by_name)
        .bind(channel)
        .bind(now)
        .bind(now + alive_ms)
        .fetch_one(self.db())
        .await;
        match inserted {
            Ok(row) => Ok(Ok(row.try_get(0)?)),
            // Another replica started the same version between the read and the insert.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => match self.live_release(version).await? {
                Some(existing) => Ok(Err(existing)),
                None => Err(sqlx::Error::Database(e).into()),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// The release of `version` that is running or has succeeded.
    pub async fn live_release(&self, version: &str) -> Result<Option<Release>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM releases WHERE version = $1 AND state <> 'failed'"))
            .bind(version)
            .fetch_optional(self.db())
            .await?;
        row.as_ref().map(release_from_row).transpose()
    }

    /// Releases still `running` whose heartbeat lapsed before `now`: their process died.
    pub async fn abandoned_releases(&self, now: Millis) -> Result<Vec<Release>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM releases WHERE state = 'running' AND alive_until < $1 ORDER BY id")).bind(now).fetch_all(self.db()).await?;
        rows.iter().map(release_from_row).collect()
    }

    pub async fn release(&self, id: i64) -> Result<Option<Release>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM releases WHERE id = $1")).bind(id).fetch_optional(self.db()).await?;
        row.as_ref().map(release_from_row).transpose()
    }

    /// Releases, newest first.
    pub async fn releases(&self, limit: i64) -> Result<Vec<Release>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM releases ORDER BY id DESC LIMIT $1")).bind(limit).fetch_all(self.db()).await?;
        rows.iter().map(release_from_row).collect()
    }

    /// The process running release `id` is alive until `until`.
    pub async fn release_alive(&self, id: i64, until: Millis) -> Result<()> {
        sqlx::query("UPDATE releases SET alive_until = $1 WHERE id = $2 AND state = 'running'").bind(until).bind(id).execute(self.db()).await?;
        Ok(())
    }

    /// Records the commit a running release resolved its ref to.
    pub async fn set_release_commit(&self, id: i64, commit: &str) -> Result<()> {
        sqlx::query("UPDATE releases SET commit_sha = $1 WHERE id = $2 AND state = 'running'").bind(commit).bind(id).execute(self.db()).await?;
        Ok(())
    }

    /// Ends a running release as succeeded, with its images and notes, in one transaction.
    pub async fn succeed_release(&self, id: i64, images: &[ReleaseImage], notes: &str, now: Millis) -> Result<bool> {
        let mut tx = self.begin().await?;
        let moved = sqlx::query("UPDATE releases SET state = 'succeeded', notes = $1, finished_at = $2 WHERE id = $3 AND state = 'running'")
            .bind(notes)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        for i in images {
            sqlx::query("INSERT INTO release_images (release_id, service, image, digest, build_ms, push_ms) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(id)
                .bind(&i.service)
                .bind(&i.image)
                .bind(&i.digest)
                .bind(i.build_ms)
                .bind(i.push_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Ends a running release as failed, with why.
    pub async fn fail_release(&self, id: i64, error: &str, now: Millis) -> Result<bool> {
        let moved = sqlx::query("UPDATE releases SET state = 'failed', error = $1, finished_at = $2 WHERE id = $3 AND state = 'running'")
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(self.db())
            .await?
            .rows_affected();
        Ok(moved == 1)
    }

    pub async fn release_images(&self, id: i64) -> Result<Vec<ReleaseImage>> {
        let rows = sqlx::query("SELECT service, image, digest, build_ms, push_ms FROM release_images WHERE release_id = $1 ORDER BY service")
            .bind(id)
            .fetch_all(self.db())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ReleaseImage {
                    service: r.try_get("service")?,
                    image: r.try_get("image")?,
                    digest: r.try_get("digest")?,
                    build_ms: r.try_get("build_ms")?,
                    push_ms: r.try_get("push_ms")?,
                })
            })
            .collect()
    }

    /// The succeeded release of `version`'s digests, shortened, for `/history`.
    pub(super) async fn released_images_lines(&self, versions: &[&str]) -> Result<HashMap<String, String>> {
        if versions.is_empty() {
            return Ok(HashMap::new());
        }
        let list = super::placeholders(versions.len());
        let sql = format!(
            "SELECT r.version, i.service, i.digest FROM releases r JOIN release_images i ON i.release_id = r.id \
             WHERE r.version IN ({list}) AND r.state = 'succeeded' ORDER BY r.version, i.service"
        );
        let mut q = sqlx::query(&sql);
        for v in versions {
            q = q.bind(v.to_string());
        }
        let mut out: HashMap<String, String> = HashMap::new();
        for r in q.fetch_all(self.db()).await? {
            let part = format!("{} {}", r.try_get::<String, _>(1)?, crate::registry::short_digest(&r.try_get::<String, _>(2)?));
            let line = out.entry(r.try_get(0)?).or_default();
            if !line.is_empty() {
                line.push_str(", ");
            }
            line.push_str(&part);
        }
        Ok(out)
    }

    /// The digests the succeeded release of `version` recorded, by service (none: not released).
    pub async fn released_digests(&self, version: &str) -> Result<HashMap<String, String>> {
        let rows = sqlx::query(
            "SELECT i.service, i.digest FROM releases r JOIN release_images i ON i.release_id = r.id \
             WHERE r.version = $1 AND r.state = 'succeeded'",
        )
        .bind(version)
        .fetch_all(self.db())
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// The digest the succeeded release of `version` recorded for `service`, if any.
    pub async fn released_digest(&self, version: &str, service: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT i.digest FROM releases r JOIN release_images i ON i.release_id = r.id \
             WHERE r.version = $1 AND r.state = 'succeeded' AND i.service = $2",
        )
        .bind(version)
        .bind(service)
        .fetch_optional(self.db())
        .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }
}
