//! The release's git work through the real `git` binary: a bare clone of `[release] repo` kept in
//! the bot's release directory, refs resolved there, the annotated tag made there and pushed to the
//! repository, the release notes read from its log, and a clean worktree at the tag for the build.
//!
//! No secret is ever in an argument; git never prompts (`GIT_TERMINAL_PROMPT=0`): a repository that
//! needs credentials gets them from the operator's git setup (SSH keys, a credential helper).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

/// How long one git command may take (a clone or fetch of a large repository included).
const GIT_TIMEOUT: Duration = Duration::from_secs(600);

/// One commit of the release notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub sha: String,
    pub subject: String,
    pub author: String,
}

/// The bot's bare clone of the release repository.
#[derive(Debug, Clone)]
pub struct Repo {
    /// The bare clone.
    pub dir: PathBuf,
    /// The repository as configured (shown in messages).
    pub origin: String,
}

async fn git(cwd: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Result<String, String> {
    run(cwd, args, env, GIT_TIMEOUT, 6).await
}

/// Runs `git args` (in `cwd`, with `env` added), never prompting, in the C locale (its messages
/// are read), within `timeout`: Ok(stdout without trailing whitespace), or Err(`git <command>
/// failed: ` and the last `stderr_lines` lines of its stderr), redacted. Shared by `/release`
/// and the history commit (`notify::history_git`).
pub(crate) async fn run(cwd: Option<&Path>, args: &[&str], env: &[(&str, &str)], timeout: Duration, stderr_lines: usize) -> Result<String, String> {
    let mut cmd = Command::new("git");
    if let Some(dir) = cwd {
        cmd.arg("-C").arg(dir);
    }
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let shown = format!("git {}", args.first().copied().unwrap_or_default());
    let output = match tokio::time::timeout(timeout, cmd.output()).await {
        Err(_) => return Err(format!("{shown} took longer than {}", humantime::format_duration(timeout))),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Err("git is not installed on the bot's machine".into()),
        Ok(Err(e)) => return Err(format!("cannot run {shown}: {e}")),
        Ok(Ok(o)) => o,
    };
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim_end().to_string())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.trim_end().lines().collect();
        let tail = lines[lines.len().saturating_sub(stderr_lines)..].join("\n");
        Err(crate::secrets::redact(&format!("{shown} failed: {tail}")))
    }
}

impl Repo {
    /// The clone at `dir` as it is, without fetching.
    pub fn open(dir: &Path, origin: &str) -> Repo {
        Repo { dir: dir.to_path_buf(), origin: origin.to_string() }
    }

    /// Clones `origin` (bare) into `dir` the first time, fetches its branches and tags after.
    pub async fn sync(origin: &str, dir: &Path) -> Result<Repo, String> {
        let repo = Repo { dir: dir.to_path_buf(), origin: origin.to_string() };
        if !dir.join("HEAD").exists() {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            let target = dir.display().to_string();
            git(None, &["clone", "--bare", "--quiet", "--", origin, &target], &[])
                .await
                .map_err(|e| format!("cannot clone the release repository {}: {e}", crate::secrets::display_url(origin)))?;
        }
        // Branches as the repository has them now, and its tags (a tag moved there is taken as it is).
        git(Some(dir), &["fetch", "--quiet", "--prune", "--force", "origin", "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"], &[])
            .await
            .map_err(|e| format!("cannot fetch the release repository {}: {e}", crate::secrets::display_url(origin)))?;
        Ok(repo)
    }

    /// The commit `reference` (a branch, a tag or a commit) names.
    pub async fn resolve(&self, reference: &str) -> Result<String, String> {
        let unknown = || format!("unknown ref \"{reference}\": no branch, tag or commit of that name in {}", crate::secrets::display_url(&self.origin));
        if reference.starts_with('-') || reference.contains("..") {
            return Err(unknown());
        }
        for candidate in [format!("refs/heads/{reference}^{{commit}}"), format!("refs/tags/{reference}^{{commit}}"), format!("{reference}^{{commit}}")] {
            if let Ok(sha) = git(Some(&self.dir), &["rev-parse", "--verify", "--quiet", "--end-of-options", &candidate], &[]).await {
                return Ok(sha);
            }
        }
        Err(unknown())
    }

    /// The commit the tag points at, if it exists.
    pub async fn tag_commit(&self, tag: &str) -> Result<Option<String>, String> {
        match git(Some(&self.dir), &["rev-parse", "--verify", "--quiet", &format!("refs/tags/{tag}^{{commit}}")], &[]).await {
            Ok(sha) => Ok(Some(sha)),
            Err(_) => Ok(None),
        }
    }

    /// Creates the annotated tag `tag` on `commit`, with `tagger` as its tagger.
    pub async fn create_tag(&self, tag: &str, commit: &str, tagger_name: &str, tagger_email: &str, message: &str) -> Result<(), String> {
        git(
            Some(&self.dir),
            &["tag", "--annotate", "--message", message, "--", tag, commit],
            &[("GIT_COMMITTER_NAME", tagger_name), ("GIT_COMMITTER_EMAIL", tagger_email), ("GIT_AUTHOR_NAME", tagger_name), ("GIT_AUTHOR_EMAIL", tagger_email)],
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot create the tag {tag}: {e}"))
    }

    /// Removes the local tag (a release that failed before pushing it).
    pub async fn delete_tag(&self, tag: &str) -> Result<(), String> {
        git(Some(&self.dir), &["tag", "--delete", "--", tag], &[]).await.map(|_| ())
    }

    /// Pushes the tag to the repository; refuses to move a tag that exists there.
    pub async fn push_tag(&self, tag: &str) -> Result<(), String> {
        git(Some(&self.dir), &["push", "--quiet", "origin", &format!("refs/tags/{tag}:refs/tags/{tag}")], &[])
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot push the tag {tag} to {}: {e}", crate::secrets::display_url(&self.origin)))
    }

    /// The newest tag that looks like a version (`v1.2.3…`), reachable from `commit` and other than
    /// `except`: the previous release.
    pub async fn previous_tag(&self, commit: &str, except: &str) -> Result<Option<String>, String> {
        let out = git(Some(&self.dir), &["tag", "--merged", commit, "--sort=-v:refname", "--list", "v*"], &[]).await?;
        Ok(out.lines().map(str::trim).find(|t| *t != except && t.parse::<deploybot_commands::Version>().is_ok()).map(str::to_string))
    }

    /// Commits in `to` and not in `from` (everything reachable from `to` when `from` is `None`),
    /// newest first, at most `limit`.
    pub async fn log(&self, from: Option<&str>, to: &str, limit: usize) -> Result<Vec<Commit>, String> {
        let range = match from {
            Some(f) => format!("{f}..{to}"),
            None => to.to_string(),
        };
        let max = format!("--max-count={limit}");
        let out = git(Some(&self.dir), &["log", "--no-merges", &max, "--format=%H%x1f%s%x1f%an", &range, "--"], &[]).await?;
        Ok(out
            .lines()
            .filter_map(|line| {
                let mut parts = line.split('\u{1f}');
                Some(Commit { sha: parts.next()?.to_string(), subject: parts.next()?.to_string(), author: parts.next().unwrap_or_default().to_string() })
            })
            .collect())
    }

    /// The paths of the files under `folder` (recursively) in `commit`'s tree; empty when the
    /// folder is not there.
    pub async fn files_under(&self, commit: &str, folder: &str) -> Result<Vec<String>, String> {
        let spec = format!("{}/", folder.trim_end_matches('/'));
        let out = git(Some(&self.dir), &["ls-tree", "-r", "--name-only", commit, "--", &spec], &[]).await?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// A clean checkout of `reference` at `path` (a detached worktree of the bare clone).
    pub async fn worktree(&self, path: &Path, reference: &str) -> Result<Worktree, String> {
        let _ = self.prune_worktrees().await;
        if path.exists() {
            let _ = std::fs::remove_dir_all(path);
        }
        let shown = path.display().to_string();
        git(Some(&self.dir), &["worktree", "add", "--detach", "--force", "--quiet", &shown, reference], &[])
            .await
            .map_err(|e| format!("cannot check out {reference}: {e}"))?;
        Ok(Worktree { repo: self.dir.clone(), path: path.to_path_buf() })
    }

    async fn prune_worktrees(&self) -> Result<String, String> {
        git(Some(&self.dir), &["worktree", "prune"], &[]).await
    }
}

/// A checkout removed when dropped.
#[derive(Debug)]
pub struct Worktree {
    repo: PathBuf,
    pub path: PathBuf,
}

impl Drop for Worktree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        let _ = std::process::Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(["worktree", "prune"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}
