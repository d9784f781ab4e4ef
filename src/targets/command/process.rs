//! Runs one argv without a shell: output captured (a bounded tail), a deadline, and the whole
//! process group killed when the deadline passes or the caller gives up (the future is dropped),
//! so a deploy script's own children do not outlive it.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How much output is kept: the end of it, where the error usually is.
pub(super) const OUTPUT_TAIL_BYTES: usize = 8 * 1024;

/// How long output is still read after the program exited, for children that keep the pipes open.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

pub(super) struct Finished {
    pub status: ExitStatus,
    /// stdout and stderr interleaved as they arrived.
    pub output: String,
    pub stdout: String,
}

pub(super) enum RunError {
    /// The program could not be started; the message names it.
    Spawn(String),
    TimedOut { output: String },
}

/// The last `cap` bytes of a stream, cut to whole lines when something was dropped.
pub(super) struct Tail {
    buf: Vec<u8>,
    truncated: bool,
    cap: usize,
}

impl Default for Tail {
    fn default() -> Tail {
        Tail::with_cap(OUTPUT_TAIL_BYTES)
    }
}

/// Marks the start of a tail whose beginning was dropped.
pub(super) const CUT_MARK: &str = "[… earlier output cut]";

impl Tail {
    pub(super) fn with_cap(cap: usize) -> Tail {
        Tail { buf: Vec::new(), truncated: false, cap }
    }

    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > self.cap {
            let excess = self.buf.len() - self.cap;
            self.buf.drain(..excess);
            self.truncated = true;
        }
    }

    pub(super) fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.buf);
        if !self.truncated {
            return text.into_owned();
        }
        let whole_lines = text.find('\n').map_or(&text[..], |i| &text[i + 1..]);
        format!("{CUT_MARK}\n{whole_lines}")
    }
}

/// Kills the process group on drop unless the program finished on its own.
struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // SAFETY: killpg has no memory-safety preconditions; the group id is our child's pid,
            // which cannot be reused while we have not reaped it.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `argv` in its own process group with `env` added to the inherited environment.
pub(super) async fn run(argv: &[String], env: &[(String, String)], workdir: Option<&Path>, timeout: Duration) -> Result<Finished, RunError> {
    run_capped(argv, env, workdir, timeout, OUTPUT_TAIL_BYTES).await
}

/// [`run`], keeping the last `stdout_cap` bytes of stdout (a `logs` command prints more than a deploy).
pub(super) async fn run_capped(argv: &[String], env: &[(String, String)], workdir: Option<&Path>, timeout: Duration, stdout_cap: usize) -> Result<Finished, RunError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(RunError::Spawn("the command is empty".into()));
    };
    let program_path = resolve(program, workdir);
    let mut command = tokio::process::Command::new(&program_path);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if let Some(dir) = workdir {
        command.current_dir(dir);
    }
    let mut child = command.spawn().map_err(|e| RunError::Spawn(spawn_error(program, &program_path, workdir, &e)))?;
    let mut guard = GroupGuard { pgid: child.id().and_then(|id| i32::try_from(id).ok()) };

    let output = Arc::new(Mutex::new(Tail::default()));
    let stdout = Arc::new(Mutex::new(Tail::with_cap(stdout_cap)));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(spawn_reader(out, vec![output.clone(), stdout.clone()]));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(spawn_reader(err, vec![output.clone()]));
    }

    let deadline = Instant::now() + timeout;
    let status = match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(Ok(status)) => {
            guard.disarm();
            Some(status)
        }
        Ok(Err(e)) => return Err(RunError::Spawn(format!("waiting for \"{program}\" failed: {e}"))),
        Err(_) => {
            guard.kill();
            let _ = child.wait().await;
            None
        }
    };
    drain(readers).await;
    let text = |tail: &Arc<Mutex<Tail>>| tail.lock().unwrap_or_else(PoisonError::into_inner).text();
    match status {
        Some(status) => Ok(Finished { status, output: text(&output), stdout: text(&stdout) }),
        None => Err(RunError::TimedOut { output: text(&output) }),
    }
}

/// A relative path with a slash is taken relative to `workdir`, whatever the platform does.
fn resolve(program: &str, workdir: Option<&Path>) -> PathBuf {
    match workdir {
        Some(dir) if program.contains('/') && Path::new(program).is_relative() => dir.join(program),
        _ => PathBuf::from(program),
    }
}

fn spawn_error(program: &str, path: &Path, workdir: Option<&Path>, e: &io::Error) -> String {
    let place = match (program.contains('/'), workdir) {
        (false, _) => " on PATH".to_string(),
        (true, Some(dir)) if Path::new(program).is_relative() => format!(" in {}", dir.display()),
        _ => String::new(),
    };
    match e.kind() {
        io::ErrorKind::NotFound if workdir.is_some_and(|d| !d.is_dir()) => {
            format!("the working directory {} does not exist", workdir.map(Path::display).map(|d| d.to_string()).unwrap_or_default())
        }
        io::ErrorKind::NotFound => format!("program \"{program}\" not found{place}"),
        io::ErrorKind::PermissionDenied => format!("program \"{}\" is not executable (permission denied)", path.display()),
        _ => format!("cannot start \"{program}\": {e}"),
    }
}

fn spawn_reader<R: AsyncRead + Unpin + Send + 'static>(mut from: R, into: Vec<Arc<Mutex<Tail>>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    for tail in &into {
                        tail.lock().unwrap_or_else(PoisonError::into_inner).push(&buf[..n]);
                    }
                }
            }
        }
    })
}

/// Waits briefly for the readers; a grandchild that kept a pipe open does not hold us up.
async fn drain(readers: Vec<JoinHandle<()>>) {
    let deadline = Instant::now() + DRAIN_GRACE;
    for mut reader in readers {
        if tokio::time::timeout_at(deadline, &mut reader).await.is_err() {
            reader.abort();
        }
    }
}
