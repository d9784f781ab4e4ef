//! `pg_dump` and `psql` as child processes. The database URL is given to the child without its
//! password, which travels in `PGPASSWORD`: it never appears in an argument list, a log line or
//! a message.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::process::Command;

use super::BackupError;
use crate::secrets::{redact, Secret};

/// How much of a failing tool's stderr a message carries.
const STDERR_LINES: usize = 8;

/// A connection split into what may be shown (the URL without password) and the password.
struct Connection {
    url: String,
    password: Option<Secret>,
}

fn connection(database_url: &Secret) -> Result<Connection, BackupError> {
    let mut url = url::Url::parse(database_url.expose()).map_err(|e| BackupError::Config(format!("the database URL is not a valid postgres:// URL ({e})")))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(BackupError::Config(format!("the database URL must start with postgres:// (it starts with {}://)", url.scheme())));
    }
    let password = url.password().map(|p| {
        let decoded = percent_decode(p);
        Secret::from_value(decoded)
    });
    let _ = url.set_password(None);
    Ok(Connection { url: url.to_string(), password })
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("p={}", s.replace('+', "%2B")).as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_else(|| s.to_string())
}

fn command(program: &str, conn: &Connection) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("PGCONNECT_TIMEOUT", "10").kill_on_drop(true).stdin(Stdio::null());
    match &conn.password {
        Some(p) => cmd.env("PGPASSWORD", p.expose()),
        None => cmd.env_remove("PGPASSWORD"),
    };
    cmd
}

fn spawn_error(program: &str, e: std::io::Error) -> BackupError {
    if e.kind() == std::io::ErrorKind::NotFound {
        BackupError::ToolMissing { program: program.to_string() }
    } else {
        BackupError::Io(format!("cannot run {program}: {e}"))
    }
}

fn tail(stderr: &[u8]) -> String {
    let text = redact(&String::from_utf8_lossy(stderr));
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(STDERR_LINES)..].join("\n")
}

fn status_text(status: std::process::ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("status {code}"),
        None => status.to_string(),
    }
}

/// Runs `cmd` to its end within `timeout`, with stdout going where `cmd` says; its stderr.
async fn finish(mut cmd: Command, program: &str, timeout: Duration) -> Result<(std::process::ExitStatus, Vec<u8>), BackupError> {
    cmd.stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| spawn_error(program, e))?;
    let mut stderr = child.stderr.take();
    let read_stderr = async {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf).await;
        }
        buf
    };
    let run = async { tokio::join!(child.wait(), read_stderr) };
    match tokio::time::timeout(timeout, run).await {
        Ok((Ok(status), err)) => Ok((status, err)),
        Ok((Err(e), _)) => Err(BackupError::Io(format!("waiting for {program}: {e}"))),
        Err(_) => Err(BackupError::Timeout { program: program.to_string(), after: humantime::format_duration(timeout).to_string() }),
    }
}

/// `pg_dump` of the whole database, as plain SQL that drops and recreates each object
/// (`--clean --if-exists`), into `path`.
#[tracing::instrument(skip_all, fields(path = %path.display()))]
pub async fn dump(program: &str, database_url: &Secret, path: &Path, timeout: Duration) -> Result<(), BackupError> {
    let conn = connection(database_url)?;
    let file = std::fs::File::create(path).map_err(|e| BackupError::Io(format!("cannot create {}: {e}", path.display())))?;
    let mut cmd = command(program, &conn);
    cmd.args(["--clean", "--if-exists", "--no-owner", "--no-privileges", "--format=plain", "--dbname"]).arg(&conn.url).stdout(Stdio::from(file));
    let (status, stderr) = finish(cmd, program, timeout).await?;
    if !status.success() {
        return Err(BackupError::ToolFailed { program: program.to_string(), status: status_text(status), stderr: tail(&stderr) });
    }
    Ok(())
}

/// Restores `dump` with `psql` in one transaction (all or nothing), after dropping the tables
/// `extra_tables` (created since the dump, so that the database is exactly what was dumped).
#[tracing::instrument(skip_all, fields(path = %dump.display()))]
pub async fn restore(program: &str, database_url: &Secret, dump: &Path, extra_tables: &[String], timeout: Duration) -> Result<String, BackupError> {
    let conn = connection(database_url)?;
    let mut cmd = command(program, &conn);
    cmd.args(["--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1", "--single-transaction", "--dbname"]).arg(&conn.url);
    for t in extra_tables {
        cmd.arg("-c").arg(format!("DROP TABLE IF EXISTS {} CASCADE;", quote_table(t)));
    }
    cmd.arg("-f").arg(dump).stdout(Stdio::null());
    let (status, stderr) = finish(cmd, program, timeout).await?;
    if !status.success() {
        return Err(BackupError::ToolFailed { program: program.to_string(), status: status_text(status), stderr: tail(&stderr) });
    }
    Ok(tail(&stderr))
}

/// `schema.table` → `"schema"."table"`.
fn quote_table(t: &str) -> String {
    t.split('.').map(|p| format!("\"{}\"", p.replace('"', "\"\""))).collect::<Vec<_>>().join(".")
}

/// Exact row counts of every table of the database, by `schema.table`.
#[tracing::instrument(skip_all)]
pub async fn row_counts(program: &str, database_url: &Secret, timeout: Duration) -> Result<BTreeMap<String, i64>, BackupError> {
    const QUERY: &str = "SELECT table_schema || '.' || table_name, \
        (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', table_schema, table_name), false, true, '')))[1]::text \
        FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1";
    let conn = connection(database_url)?;
    let mut cmd = command(program, &conn);
    cmd.args(["--no-psqlrc", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", QUERY, "--dbname"]).arg(&conn.url);
    let output = match tokio::time::timeout(timeout, cmd.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(spawn_error(program, e)),
        Err(_) => return Err(BackupError::Timeout { program: program.to_string(), after: humantime::format_duration(timeout).to_string() }),
    };
    if !output.status.success() {
        return Err(BackupError::ToolFailed { program: program.to_string(), status: status_text(output.status), stderr: tail(&output.stderr) });
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let (table, n) = l.split_once('\t')?;
            Some((table.to_string(), n.trim().parse().ok()?))
        })
        .collect())
}

/// Row counts of the tables in a plain-SQL dump (the lines of each `COPY … FROM stdin;` block).
pub fn dump_row_counts(dump: &str) -> BTreeMap<String, i64> {
    let mut counter = CopyCounter::default();
    dump.lines().for_each(|l| counter.line(l));
    counter.counts
}

/// Counts the rows of each `COPY` block of a dump read line by line.
#[derive(Default)]
pub(super) struct CopyCounter {
    current: Option<(String, i64)>,
    pub(super) counts: BTreeMap<String, i64>,
}

impl CopyCounter {
    pub(super) fn line(&mut self, line: &str) {
        match &mut self.current {
            Some((table, n)) => {
                if line == "\\." {
                    self.counts.insert(std::mem::take(table), *n);
                    self.current = None;
                } else {
                    *n += 1;
                }
            }
            None => {
                if let Some(rest) = line.strip_prefix("COPY ").filter(|_| line.ends_with("FROM stdin;")) {
                    let name = rest.split([' ', '(']).next().unwrap_or_default().replace('"', "");
                    self.current = Some((name, 0));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rows_of_each_copy_block_are_counted() {
        let dump = "SET x = 1;\nCOPY public.customers (id, name) FROM stdin;\n1\tAda\n2\tBob\n\\.\n\nCOPY \"public\".\"Empty\" (id) FROM stdin;\n\\.\n";
        let counts = dump_row_counts(dump);
        assert_eq!(counts.get("public.customers"), Some(&2));
        assert_eq!(counts.get("public.Empty"), Some(&0));
    }

    #[test]
    fn the_password_leaves_the_url_and_travels_apart() {
        let secret = Secret::from_value("postgres://app:s%40cret-pw@db.example:5432/invoiceme?sslmode=require".into());
        let conn = connection(&secret).unwrap();
        assert_eq!(conn.url, "postgres://app@db.example:5432/invoiceme?sslmode=require");
        assert_eq!(conn.password.unwrap().expose(), "s@cret-pw");
        assert!(connection(&Secret::from_value("mysql://x@y/z".into())).is_err());
    }

    #[test]
    fn a_table_name_is_quoted_per_part() {
        assert_eq!(quote_table("public.invoices"), "\"public\".\"invoices\"");
    }
}
