//! The services the backup and registry tests run against, each started by its script in
//! `scripts/services/` (which `scripts/test.sh` and `.ci/run` source):
//!
//! - PostgreSQL: `DEPLOYBOT_TEST_PG_URL` (skip with `DEPLOYBOT_SKIP_PG=1`);
//! - moto (S3): `DEPLOYBOT_TEST_MOTO_URL` (skip with `DEPLOYBOT_SKIP_MOTO=1`);
//! - docker-registry: `DEPLOYBOT_TEST_REGISTRY` and, with htpasswd basic auth,
//!   `DEPLOYBOT_TEST_REGISTRY_AUTH` (skip with `DEPLOYBOT_SKIP_REGISTRY=1`).
//!
//! Without its variable a test fails and says how to start the service, unless skipped explicitly.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;

fn service(var: &str, skip: &str, script: &str, what: &str) -> Option<String> {
    if std::env::var(skip).is_ok_and(|v| v == "1") {
        eprintln!("skipped: {skip}=1, so this test does not use {what}");
        return None;
    }
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => panic!(
            "{var} is not set: start {what} with `source scripts/services/{script}.sh && {script}_start` (or run `bash scripts/test.sh`), or set {skip}=1 to skip these tests"
        ),
    }
}

/// The PostgreSQL cluster's admin URL.
pub fn postgres() -> Option<String> {
    service("DEPLOYBOT_TEST_PG_URL", "DEPLOYBOT_SKIP_PG", "postgres", "PostgreSQL")
}

/// moto's base URL. The AWS keys moto accepts are given to the code under test explicitly
/// ([`MOTO_KEYS`] in its `Vars`), never through this process's environment.
pub fn moto() -> Option<String> {
    service("DEPLOYBOT_TEST_MOTO_URL", "DEPLOYBOT_SKIP_MOTO", "moto", "moto (the AWS emulator)")
}

/// moto's dummy AWS keys, as `Vars` entries.
pub const MOTO_KEYS: [(&str, &str); 2] = [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")];

/// The registry's `host:port`.
pub fn registry() -> Option<String> {
    service("DEPLOYBOT_TEST_REGISTRY", "DEPLOYBOT_SKIP_REGISTRY", "registry", "a Docker registry")
}

/// The htpasswd registry's `host:port` (its user and password are in DEPLOYBOT_TEST_REGISTRY_USER
/// and DEPLOYBOT_TEST_REGISTRY_PASSWORD).
pub fn registry_auth() -> Option<String> {
    service("DEPLOYBOT_TEST_REGISTRY_AUTH", "DEPLOYBOT_SKIP_REGISTRY", "registry", "the Docker registry with basic auth")
}

/// A name unique to this process and call, for databases, buckets and repositories.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// A database of its own on the cluster, dropped with the value.
pub struct Database {
    pub url: String,
    admin: String,
    name: String,
}

impl Database {
    pub async fn create(admin: &str) -> Database {
        let name = unique("backup_test").replace('-', "_");
        let mut conn = sqlx::postgres::PgConnection::connect(admin).await.unwrap_or_else(|e| panic!("cannot connect to {admin}: {e}"));
        sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await.expect("create a test database");
        let _ = conn.close().await;
        let mut url = url::Url::parse(admin).expect("the cluster URL");
        url.set_path(&format!("/{name}"));
        Database { url: url.to_string(), admin: admin.to_string(), name }
    }

    pub async fn connect(&self) -> sqlx::postgres::PgConnection {
        sqlx::postgres::PgConnection::connect(&self.url).await.unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url))
    }

    pub async fn execute(&self, sql: &str) {
        let mut conn = self.connect().await;
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.close().await;
    }

    pub async fn count(&self, table: &str) -> i64 {
        let mut conn = self.connect().await;
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(&mut conn).await.unwrap_or_else(|e| panic!("count {table}: {e}"));
        let _ = conn.close().await;
        n
    }

    pub async fn tables(&self) -> Vec<String> {
        let mut conn = self.connect().await;
        let t: Vec<String> = sqlx::query_scalar("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1")
            .fetch_all(&mut conn)
            .await
            .expect("list tables");
        let _ = conn.close().await;
        t
    }

    /// Customers and invoices, as InvoiceMe keeps them.
    pub async fn seed(&self) {
        self.execute(
            "CREATE TABLE customers (id SERIAL PRIMARY KEY, name TEXT NOT NULL, email TEXT);
             CREATE TABLE invoices (id SERIAL PRIMARY KEY, customer_id INT REFERENCES customers(id), amount_cents BIGINT NOT NULL);
             INSERT INTO customers (name, email) VALUES ('Ada', 'ada@example.com'), ('Bob', 'bob@example.com'), ('Chloé', E'tab\\there');
             INSERT INTO invoices (customer_id, amount_cents) VALUES (1, 12000), (2, 990);",
        )
        .await;
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::postgres::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// A bucket of its own on moto (path-style `PUT /<bucket>`; moto does not check signatures).
pub async fn bucket(moto: &str) -> String {
    let name = unique("backups");
    let response = reqwest::Client::new().put(format!("{moto}/{name}")).send().await.expect("moto answers");
    assert!(response.status().is_success(), "creating bucket {name} on moto: {}", response.status());
    name
}

/// The bytes of an object on moto, or `None` when there is none (read with a signed request:
/// moto keeps objects private).
pub async fn object(moto: &str, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let keys = aws_sdk_s3::config::Credentials::new(MOTO_KEYS[0].1, MOTO_KEYS[1].1, None, None, "moto");
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(keys)
        .load()
        .await;
    let config = aws_sdk_s3::config::Builder::from(&shared).endpoint_url(moto).force_path_style(true).build();
    let client = aws_sdk_s3::Client::from_conf(config);
    let object = client.get_object().bucket(bucket).key(key).send().await.ok()?;
    Some(object.body.collect().await.expect("the object's body").into_bytes().to_vec())
}
