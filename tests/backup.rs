//! The backup module against real components: `pg_dump` and `psql` on a seeded PostgreSQL
//! database, uploads to and downloads from S3 on moto; and its failures, each with its cause.

#[path = "support/services.rs"]
mod services;

use std::path::Path;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use deploybot::backup::{self, BackupError, Settings};
use deploybot::secrets::Secret;
use services::Database;

fn settings(database_url: &str, dir: &Path, s3: Option<String>, endpoint: Option<String>) -> Settings {
    Settings {
        env: "staging".into(),
        database_url: Secret::from_value(database_url.to_string()),
        s3,
        s3_region: "us-east-1".into(),
        s3_endpoint_url: endpoint,
        dir: dir.to_path_buf(),
        keep_local: Duration::from_secs(7 * 86400),
        timeout: Duration::from_secs(60),
        pg_dump: "pg_dump".into(),
        psql: "psql".into(),
        vars: deploybot::secrets::Vars::from_pairs(services::MOTO_KEYS),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_database_is_dumped_to_s3_and_restored_after_changes() {
    let (Some(pg), Some(moto)) = (services::postgres(), services::moto()) else { return };
    let db = Database::create(&pg).await;
    db.seed().await;
    let bucket = services::bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let s = settings(&db.url, dir.path(), Some(format!("s3://{bucket}/invoiceme/")), Some(moto.clone()));
    let at = Utc.with_ymd_and_hms(2026, 11, 10, 15, 4, 5).unwrap();

    let taken = backup::take(&s, at).await.unwrap_or_else(|e| panic!("backup failed: {e}"));
    assert_eq!(taken.file_name, "backup_staging_20261110_150405.sql");
    assert_eq!(taken.remote_uri.as_deref(), Some(format!("s3://{bucket}/invoiceme/backup_staging_20261110_150405.sql").as_str()));
    let local = taken.local_path.clone().expect("kept locally for 7 days");
    let bytes = std::fs::read(&local).unwrap();
    assert_eq!(bytes.len() as u64, taken.size_bytes);
    let uploaded = services::object(&moto, &bucket, "invoiceme/backup_staging_20261110_150405.sql").await.expect("the dump is in the bucket");
    assert_eq!(uploaded, bytes, "the uploaded object is the dump");
    assert!(taken.describe().starts_with("backup ") && taken.describe().contains(&format!("→ s3://{bucket}/invoiceme/backup_staging_")), "{}", taken.describe());
    let counts = backup::dump_row_counts(&String::from_utf8_lossy(&bytes));
    assert_eq!(counts.get("public.customers"), Some(&3), "{counts:?}");
    assert_eq!(counts.get("public.invoices"), Some(&2), "{counts:?}");

    // Writes after the backup, including a table a migration might have added.
    db.execute(
        "INSERT INTO customers (name) VALUES ('Dan'), ('Eve');
         DELETE FROM invoices WHERE id = 2;
         CREATE TABLE audit (id INT); INSERT INTO audit VALUES (1);",
    )
    .await;
    let compared = backup::compare(&s, &local).await.unwrap();
    assert_eq!(compared.changed, vec![("public.customers".to_string(), 5, 3), ("public.invoices".to_string(), 1, 2)]);
    assert_eq!(compared.created_since, vec!["public.audit".to_string()]);

    // The local copy is gone: the dump comes back from S3, and the database is as it was.
    std::fs::remove_file(&local).unwrap();
    let fetched = backup::local_copy(&s, Some(&local.display().to_string()), taken.remote_uri.as_deref()).await.unwrap();
    assert_eq!(std::fs::read(&fetched).unwrap(), bytes);
    backup::restore(&s, &fetched).await.unwrap_or_else(|e| panic!("restore failed: {e}"));
    assert_eq!(db.count("customers").await, 3);
    assert_eq!(db.count("invoices").await, 2);
    assert_eq!(db.tables().await, vec!["customers".to_string(), "invoices".to_string()], "the table created since the backup is gone");
    let mut conn = db.connect().await;
    let (name, email): (String, String) = sqlx::query_as("SELECT name, email FROM customers WHERE id = 3").fetch_one(&mut conn).await.unwrap();
    assert_eq!((name.as_str(), email.as_str()), ("Chloé", "tab\there"));
    let next: i32 = sqlx::query_scalar("INSERT INTO customers (name) VALUES ('Fay') RETURNING id").fetch_one(&mut conn).await.unwrap();
    assert_eq!(next, 4, "the sequence is back where the backup left it");
    assert!(backup::compare(&s, &fetched).await.unwrap().changed.iter().all(|(t, _, _)| t == "public.customers"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_dumps_past_their_retention_are_removed_and_zero_keeps_only_the_upload() {
    let (Some(pg), Some(moto)) = (services::postgres(), services::moto()) else { return };
    let db = Database::create(&pg).await;
    db.seed().await;
    let bucket = services::bucket(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("backup_staging_20261101_090000.sql");
    let recent = dir.path().join("backup_staging_20261110_090000.sql");
    let other_env = dir.path().join("backup_production_20261101_090000.sql");
    for f in [&old, &recent, &other_env] {
        std::fs::write(f, "-- old dump\n").unwrap();
    }
    let mut s = settings(&db.url, dir.path(), Some(format!("s3://{bucket}/invoiceme/")), Some(moto.clone()));
    s.keep_local = Duration::from_secs(2 * 86400);
    let at = Utc.with_ymd_and_hms(2026, 11, 10, 15, 0, 0).unwrap();
    let taken = backup::take(&s, at).await.unwrap();
    assert!(taken.local_path.as_ref().is_some_and(|p| p.exists()));
    assert!(!old.exists(), "a dump 9 days old is past a 2-day retention");
    assert!(recent.exists() && other_env.exists(), "recent dumps and other environments' are kept");

    s.keep_local = Duration::ZERO;
    let taken = backup::take(&s, at + chrono::Duration::seconds(1)).await.unwrap();
    assert_eq!(taken.local_path, None, "keep_local = 0s removes the local file once uploaded");
    assert!(services::object(&moto, &bucket, &format!("invoiceme/{}", taken.file_name)).await.is_some());

    // Without S3 the local file is the only copy: it stays whatever the retention.
    let s = settings(&db.url, dir.path(), None, None);
    let s = Settings { keep_local: Duration::ZERO, ..s };
    let taken = backup::take(&s, at + chrono::Duration::seconds(2)).await.unwrap();
    assert!(taken.local_path.as_ref().is_some_and(|p| p.exists()) && taken.remote_uri.is_none());
    assert!(taken.describe().contains("not uploaded"), "{}", taken.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_pg_dump_fails_the_backup_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings("postgres://app:pw@127.0.0.1:1/invoiceme", dir.path(), None, None);
    s.pg_dump = "/nonexistent".into();
    let err = backup::take(&s, Utc::now()).await.unwrap_err();
    assert!(matches!(err, BackupError::ToolMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent was not found"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no partial file is left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_database_url_fails_with_pg_dumps_reason_and_never_the_password() {
    let Some(pg) = services::postgres() else { return };
    let mut url = url::Url::parse(&pg).unwrap();
    url.set_password(Some("hunter2-not-shown")).unwrap();
    url.set_path("/no_such_database");
    let dir = tempfile::tempdir().unwrap();
    let s = settings(url.as_str(), dir.path(), None, None);
    let err = backup::take(&s, Utc::now()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, BackupError::ToolFailed { .. }), "{err:?}");
    assert!(text.contains("pg_dump exited with status 1") && text.contains("no_such_database"), "{text}");
    assert!(!text.contains("hunter2-not-shown"), "{text}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the failed dump's file is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_s3_fails_the_backup_with_the_cause() {
    let Some(pg) = services::postgres() else { return };
    let db = Database::create(&pg).await;
    db.seed().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let s = settings(&db.url, dir.path(), Some("s3://backups/invoiceme/".into()), Some(format!("http://127.0.0.1:{closed}")));
    let err = backup::take(&s, Utc::now()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, BackupError::S3 { .. }), "{err:?}");
    assert!(text.starts_with("cannot upload to s3://backups/invoiceme/backup_staging_"), "{text}");
    assert!(text.to_lowercase().contains("connect") || text.contains("dispatch"), "the cause is named: {text}");
}
