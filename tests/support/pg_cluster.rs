//! A PostgreSQL cluster of a test's own, which the test may stop and start under a running bot
//! (the shared cluster of `scripts/services/postgres.sh` serves every other test, so it is never
//! stopped). Uses the binaries that script installs; fails loudly without them.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
}

fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql").map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).collect()).unwrap_or_default();
    found.sort();
    found.pop().expect("PostgreSQL's binaries are not under /usr/lib/postgresql/*/bin: run `bash scripts/test.sh` (it installs them)")
}

/// Runs `cmd` as the cluster's owner: PostgreSQL refuses to run as root.
fn as_owner(cmd: &str) {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    let status = if root { Command::new("su").args(["postgres", "-s", "/bin/sh", "-c", cmd]).status() } else { Command::new("sh").args(["-c", cmd]).status() };
    assert!(status.is_ok_and(|s| s.success()), "failed: {cmd}");
}

impl Cluster {
    pub fn start() -> Cluster {
        let bin = pg_bin();
        let dir = tempfile::Builder::new().prefix("deploybot-own-pg").tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0")) {
            assert!(Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status().unwrap().success());
        }
        as_owner(&format!("'{}' -D '{}/data' -A trust -U postgres --no-sync -E UTF8 >/dev/null", bin.join("initdb").display(), dir.path().display()));
        let cluster = Cluster { bin, dir, port };
        cluster.resume();
        cluster
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stops the server (fast shutdown: clients are disconnected).
    pub fn stop(&self) {
        as_owner(&format!("'{}' -D '{}' -m fast -w stop >/dev/null", self.bin.join("pg_ctl").display(), self.data().display()));
    }

    /// Starts it again on the same port.
    pub fn resume(&self) {
        let dir: &Path = self.dir.path();
        as_owner(&format!(
            "'{}' -D '{}' -l '{}/log' -w -t 60 -o \"-c listen_addresses=127.0.0.1 -p {} -c fsync=off -c unix_socket_directories='{}'\" start >/dev/null",
            self.bin.join("pg_ctl").display(),
            self.data().display(),
            dir.display(),
            self.port,
            dir.display()
        ));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .args(["-c", &format!("su postgres -s /bin/sh -c \"'{}' -D '{}' -m immediate stop\" >/dev/null 2>&1 || '{}' -D '{}' -m immediate stop >/dev/null 2>&1", self.bin.join("pg_ctl").display(), self.data().display(), self.bin.join("pg_ctl").display(), self.data().display())])
            .status();
    }
}
