//! Database backups, as the runbook takes them: `pg_dump` into `backup_<env>_<YYYYMMDD_HHMMSS>.sql`,
//! checked, uploaded to S3, old local copies pruned; and the way back: the exact dump fetched
//! (downloaded when the local copy is gone), compared with the live database, restored with `psql`.
//!
//! The engine's pipeline step and `/rollback --with-db` live in `engine/backup.rs`; this module
//! knows nothing of deployments.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use tokio::io::AsyncBufReadExt as _;

use crate::config::BackupConfig;
use crate::secrets::Secret;

mod pg;
pub mod s3;

pub use pg::dump_row_counts;
pub use s3::S3Location;

/// The last line of a complete plain-format dump.
const COMPLETE_MARKER: &str = "-- PostgreSQL database dump complete";

/// Why a backup or a restore did not happen; each message names the cause and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Config(String),
    #[error("{program} was not found: install the PostgreSQL client tools (postgresql-client) or set its path in [backup]")]
    ToolMissing { program: String },
    #[error("{program} exited with {status}: {stderr}")]
    ToolFailed { program: String, status: String, stderr: String },
    #[error("{program} did not finish within {after}")]
    Timeout { program: String, after: String },
    #[error("pg_dump wrote nothing to {0}")]
    Empty(String),
    #[error("{0} is incomplete: it lacks pg_dump's closing line")]
    Incomplete(String),
    #[error("cannot {action} {uri}: {cause}")]
    S3 { action: &'static str, uri: String, cause: String },
    #[error("{0}")]
    Io(String),
}

/// What a backup needs, resolved from the environment's `[backup]` section.
#[derive(Clone, Debug)]
pub struct Settings {
    pub env: String,
    pub database_url: Secret,
    /// `s3://bucket/prefix/`.
    pub s3: Option<String>,
    pub s3_region: String,
    pub s3_endpoint_url: Option<String>,
    pub dir: PathBuf,
    pub keep_local: Duration,
    pub timeout: Duration,
    pub pg_dump: String,
    pub psql: String,
    /// Where the S3 client's explicit AWS keys come from, if anywhere (see `Vars::explicit_aws_keys`).
    pub vars: crate::secrets::Vars,
}

impl Settings {
    /// Reads the database URL's secret; the error names the missing variable.
    pub fn from_config(env: &str, c: &BackupConfig, vars: &crate::secrets::Vars) -> Result<Settings, BackupError> {
        let database_url = c.database_url.resolve_in(vars).map_err(|e| BackupError::Config(format!("no database to back up: {e}")))?;
        let duration = |what: &str, s: &str| crate::config::parse_duration(s).map_err(|e| BackupError::Config(format!("backup {what} \"{s}\": {e}")));
        Ok(Settings {
            env: env.to_string(),
            database_url,
            s3: c.s3.clone(),
            s3_region: c.s3_region.clone(),
            s3_endpoint_url: c.s3_endpoint_url.clone(),
            dir: PathBuf::from(&c.dir),
            keep_local: duration("keep_local", &c.keep_local)?,
            timeout: duration("timeout", &c.timeout)?,
            pg_dump: c.pg_dump.clone(),
            psql: c.psql_program(),
            vars: vars.clone(),
        })
    }

    async fn s3(&self) -> Result<Option<S3Location>, BackupError> {
        match &self.s3 {
            Some(uri) => Ok(Some(S3Location::new(uri, &self.s3_region, self.s3_endpoint_url.as_deref(), &self.vars).await?)),
            None => Ok(None),
        }
    }
}

/// A dump that was taken.
#[derive(Clone, Debug, PartialEq)]
pub struct Backup {
    pub file_name: String,
    /// `None` when retention removed it right after the upload (`keep_local = "0s"`).
    pub local_path: Option<PathBuf>,
    pub remote_uri: Option<String>,
    pub size_bytes: u64,
    pub taken_at: DateTime<Utc>,
}

impl Backup {
    /// `backup 1.2 MB → s3://backups/invoiceme/backup_…sql`.
    pub fn describe(&self) -> String {
        let place = match (&self.remote_uri, &self.local_path) {
            (Some(uri), _) => uri.clone(),
            (None, Some(path)) => format!("{} (not uploaded: no s3 configured)", path.display()),
            (None, None) => self.file_name.clone(),
        };
        format!("backup {} → {place}", human_size(self.size_bytes))
    }
}

/// Takes a backup at `now`: dump, checks, upload, local retention.
#[tracing::instrument(skip_all, fields(env = %settings.env))]
pub async fn take(settings: &Settings, now: DateTime<Utc>) -> Result<Backup, BackupError> {
    tokio::fs::create_dir_all(&settings.dir).await.map_err(|e| BackupError::Io(format!("cannot create the backup directory {}: {e}", settings.dir.display())))?;
    let stamp = now.format("%Y%m%d_%H%M%S");
    let mut file_name = format!("backup_{}_{stamp}.sql", settings.env);
    for n in 2.. {
        if !settings.dir.join(&file_name).exists() {
            break;
        }
        file_name = format!("backup_{}_{stamp}_{n}.sql", settings.env);
    }
    let path = settings.dir.join(&file_name);
    if let Err(e) = pg::dump(&settings.pg_dump, &settings.database_url, &path, settings.timeout).await {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(e);
    }
    let size_bytes = tokio::fs::metadata(&path).await.map(|m| m.len()).unwrap_or(0);
    let checked = if size_bytes == 0 {
        Err(BackupError::Empty(path.display().to_string()))
    } else if !ends_with_marker(&path).await {
        Err(BackupError::Incomplete(path.display().to_string()))
    } else {
        Ok(())
    };
    if let Err(e) = checked {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(e);
    }
    let remote_uri = match settings.s3().await? {
        Some(s3) => Some(tokio::time::timeout(settings.timeout, s3.upload(&path, &file_name)).await.map_err(|_| BackupError::Timeout {
            program: "the S3 upload".into(),
            after: humantime::format_duration(settings.timeout).to_string(),
        })??),
        None => None,
    };
    // Without an upload the local file is the only copy: retention never removes it.
    let keep = remote_uri.is_none().then_some(path.as_path());
    prune(&settings.dir, &settings.env, settings.keep_local, now, keep).await;
    let local_path = path.exists().then_some(path);
    Ok(Backup { file_name, local_path, remote_uri, size_bytes, taken_at: now })
}

async fn ends_with_marker(path: &Path) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    let Ok(mut f) = tokio::fs::File::open(path).await else { return false };
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(std::io::SeekFrom::Start(len.saturating_sub(256))).await;
    let mut tail = String::new();
    let _ = f.read_to_string(&mut tail).await;
    tail.contains(COMPLETE_MARKER)
}

/// Removes this environment's dumps older than `keep` (by the time in their name), except `except`.
async fn prune(dir: &Path, env: &str, keep: Duration, now: DateTime<Utc>, except: Option<&Path>) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else { return };
    let prefix = format!("backup_{env}_");
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(stamp) = name.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".sql")).and_then(|r| r.get(..15)) else { continue };
        let Ok(taken) = NaiveDateTime::parse_from_str(stamp, "%Y%m%d_%H%M%S") else { continue };
        let age = now.signed_duration_since(taken.and_utc());
        let path = entry.path();
        if except == Some(path.as_path()) || age.to_std().unwrap_or_default() < keep {
            continue;
        }
        match tokio::fs::remove_file(&path).await {
            Ok(()) => tracing::info!(path = %path.display(), "removed a local backup past its retention"),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not remove an old local backup"),
        }
    }
}

/// A local copy of the dump: the file itself, or downloaded from `remote_uri` when it is gone.
#[tracing::instrument(skip_all, fields(env = %settings.env))]
pub async fn local_copy(settings: &Settings, local_path: Option<&str>, remote_uri: Option<&str>) -> Result<PathBuf, BackupError> {
    if let Some(path) = local_path.map(PathBuf::from).filter(|p| p.is_file()) {
        return Ok(path);
    }
    let Some(uri) = remote_uri else {
        return Err(BackupError::Io(format!("the dump {} is gone and was never uploaded", local_path.unwrap_or("(no local file)"))));
    };
    let s3 = settings.s3().await?.ok_or_else(|| BackupError::Config(format!("the dump is at {uri} but no [backup] s3 is configured to fetch it")))?;
    let name = uri.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("backup.sql");
    tokio::fs::create_dir_all(&settings.dir).await.map_err(|e| BackupError::Io(format!("cannot create the backup directory {}: {e}", settings.dir.display())))?;
    let path = settings.dir.join(name);
    tokio::time::timeout(settings.timeout, s3.download(uri, &path))
        .await
        .map_err(|_| BackupError::Timeout { program: "the S3 download".into(), after: humantime::format_duration(settings.timeout).to_string() })??;
    Ok(path)
}

/// How the live database differs from a dump, table by table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Comparison {
    /// `(table, rows now, rows in the dump)` for tables whose counts differ.
    pub changed: Vec<(String, i64, i64)>,
    /// Tables that exist now but not in the dump (created since): a restore drops them.
    pub created_since: Vec<String>,
    /// Tables in the dump that no longer exist: a restore recreates them.
    pub dropped_since: Vec<String>,
}

impl Comparison {
    /// Lines for a chat message; empty when the row counts match.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .changed
            .iter()
            .map(|(t, now, then)| {
                let diff = now - then;
                format!("{t}: {now} rows now, {then} in the backup ({}{diff})", if diff > 0 { "+" } else { "" })
            })
            .collect();
        out.extend(self.created_since.iter().map(|t| format!("{t}: created since the backup, will be dropped")));
        out.extend(self.dropped_since.iter().map(|t| format!("{t}: dropped since the backup, will be recreated")));
        out
    }
}

/// Row counts of the live database against those of the dump at `path`.
pub async fn compare(settings: &Settings, path: &Path) -> Result<Comparison, BackupError> {
    let then = dump_counts(path).await?;
    let now = pg::row_counts(&settings.psql, &settings.database_url, settings.timeout).await?;
    Ok(diff(&now, &then))
}

fn diff(now: &BTreeMap<String, i64>, then: &BTreeMap<String, i64>) -> Comparison {
    let mut c = Comparison::default();
    for (table, n) in now {
        match then.get(table) {
            Some(m) if m != n => c.changed.push((table.clone(), *n, *m)),
            Some(_) => {}
            None => c.created_since.push(table.clone()),
        }
    }
    c.dropped_since = then.keys().filter(|t| !now.contains_key(*t)).cloned().collect();
    c
}

async fn dump_counts(path: &Path) -> Result<BTreeMap<String, i64>, BackupError> {
    let file = tokio::fs::File::open(path).await.map_err(|e| BackupError::Io(format!("cannot read {}: {e}", path.display())))?;
    let mut lines = tokio::io::BufReader::new(file).lines();
    let mut counter = pg::CopyCounter::default();
    while let Some(line) = lines.next_line().await.map_err(|e| BackupError::Io(format!("cannot read {}: {e}", path.display())))? {
        counter.line(&line);
    }
    Ok(counter.counts)
}

/// Restores the dump at `path` in one transaction; tables created since the dump are dropped
/// first so that the database is exactly what was dumped.
#[tracing::instrument(skip_all, fields(env = %settings.env, path = %path.display()))]
pub async fn restore(settings: &Settings, path: &Path) -> Result<Comparison, BackupError> {
    let before = compare(settings, path).await?;
    pg::restore(&settings.psql, &settings.database_url, path, &before.created_since, settings.timeout).await?;
    Ok(before)
}

/// `1.2 MB`, `340 kB`, `512 B` (decimal units, as `ls -h` users read them).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_ls() {
        for (bytes, expected) in [(0, "0 B"), (999, "999 B"), (1_234, "1.2 kB"), (1_200_000, "1.2 MB"), (340_000, "340 kB"), (5_000_000_000, "5.0 GB")] {
            assert_eq!(human_size(bytes), expected, "{bytes}");
        }
    }

    #[test]
    fn the_comparison_names_changed_created_and_dropped_tables() {
        let now = BTreeMap::from([("public.a".to_string(), 5), ("public.b".to_string(), 2), ("public.new".to_string(), 1)]);
        let then = BTreeMap::from([("public.a".to_string(), 3), ("public.b".to_string(), 2), ("public.old".to_string(), 4)]);
        let c = diff(&now, &then);
        assert_eq!(c.changed, vec![("public.a".to_string(), 5, 3)]);
        assert_eq!(c.created_since, vec!["public.new".to_string()]);
        assert_eq!(c.dropped_since, vec!["public.old".to_string()]);
        assert_eq!(c.lines()[0], "public.a: 5 rows now, 3 in the backup (+2)");
    }
}
