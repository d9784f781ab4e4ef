//! `[bot] history_repo`: the Markdown history file committed and pushed after a deployment ends.
//! Each delivery clones the branch afresh (shallow) into a temporary directory, writes the file,
//! commits with a message naming the deployment, and pushes; a push rejected because the remote
//! moved is retried on top of it (`pull --rebase`), a few times, before the delivery is retried.
//! Runs the `git` binary, with no prompt and no dependence on the user's git config.

use std::path::Path;
use std::time::Duration;

use super::Delivery;

/// How many times one delivery rebases and pushes again after a rejected push.
const PUSH_ATTEMPTS: u32 = 4;
const GIT_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the file goes in the repository: `history_file` when it is a relative path, else the
/// runbook's `docs/deployment/history.md`.
pub fn path_in_repo(history_file: Option<&str>) -> String {
    match history_file {
        Some(p) if Path::new(p).is_relative() && !p.split('/').any(|c| c == "..") => p.to_string(),
        _ => "docs/deployment/history.md".to_string(),
    }
}

/// Commits `markdown` as `file` on `branch` of `repo` with `message`, and pushes it.
pub async fn commit_and_push(repo: &str, branch: &str, file: &str, markdown: &str, message: &str) -> Delivery {
    let dir = match tempfile_dir() {
        Ok(d) => d,
        Err(e) => return Delivery::Retry(format!("cannot make a working directory: {e}")),
    };
    let result = run_in(&dir, repo, branch, file, markdown, message).await;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    result
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("deploybot-history-{}-{}", std::process::id(), SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn run_in(dir: &Path, repo: &str, branch: &str, file: &str, markdown: &str, message: &str) -> Delivery {
    let shown = crate::secrets::display_url(repo);
    let work = dir.join("repo");
    let work_s = work.display().to_string();
    // The branch as it is on the remote; a repository (or branch) without commits starts empty.
    match git(dir, &["clone", "--quiet", "--depth", "1", "--branch", branch, "--", repo, &work_s]).await {
        Ok(_) => {}
        Err(clone_error) => {
            let _ = tokio::fs::remove_dir_all(&work).await;
            match git(dir, &["ls-remote", "--", repo]).await {
                Ok(refs) if !refs.contains(&format!("refs/heads/{branch}")) => {
                    if let Err(e) = git(dir, &["init", "--quiet", &work_s]).await {
                        return Delivery::Retry(e);
                    }
                    if let Err(e) = git(&work, &["checkout", "--quiet", "-b", branch]).await {
                        return Delivery::Retry(e);
                    }
                    if let Err(e) = git(&work, &["remote", "add", "origin", repo]).await {
                        return Delivery::Retry(e);
                    }
                }
                Ok(_) => return Delivery::Retry(format!("cannot clone branch {branch} of {shown}: {clone_error}")),
                Err(e) => return Delivery::Retry(format!("cannot reach the history repository {shown}: {e}")),
            }
        }
    }
    let target = work.join(file);
    for attempt in 1..=PUSH_ATTEMPTS {
        // (Again after a reset onto the remote, which may not have the directory.)
        if let Some(parent) = target.parent() {
            if let Err(e) = tokio::fs::create_dir_all(parent).await {
                return Delivery::Retry(format!("cannot create {}: {e}", parent.display()));
            }
        }
        if let Err(e) = tokio::fs::write(&target, markdown).await {
            return Delivery::Retry(format!("cannot write {file}: {e}"));
        }
        if let Err(e) = git(&work, &["add", "--", file]).await {
            return Delivery::Retry(e);
        }
        let changed = git(&work, &["status", "--porcelain", "--", file]).await.map(|s| !s.trim().is_empty()).unwrap_or(true);
        if changed {
            if let Err(e) = git(&work, &["commit", "--quiet", "-m", message]).await {
                return Delivery::Retry(e);
            }
        } else if attempt == 1 {
            return Delivery::Done(Some("unchanged".into()));
        }
        match git(&work, &["push", "--quiet", "origin", &format!("HEAD:refs/heads/{branch}")]).await {
            Ok(_) => {
                let sha = git(&work, &["rev-parse", "HEAD"]).await.unwrap_or_default();
                return Delivery::Done(Some(sha.trim().to_string()));
            }
            Err(e) if rejected(&e) && attempt < PUSH_ATTEMPTS => {
                tracing::info!(attempt, repo = %shown, "the history push was rejected (the remote moved); rebasing on top of it");
                // Ours is the whole file: take the remote's history and write the file again.
                if let Err(e) = git(&work, &["fetch", "--quiet", "origin", branch]).await {
                    return Delivery::Retry(e);
                }
                if let Err(e) = git(&work, &["reset", "--quiet", "--hard", "FETCH_HEAD"]).await {
                    return Delivery::Retry(e);
                }
            }
            Err(e) => return Delivery::Retry(format!("pushing the history to {shown} ({branch}) failed: {e}")),
        }
    }
    Delivery::Retry(format!("the push to {shown} was rejected {PUSH_ATTEMPTS} times: the branch keeps moving"))
}

/// The remote moved under the push (another commit landed first), as opposed to a refusal.
fn rejected(error: &str) -> bool {
    ["non-fast-forward", "fetch first", "failed to update ref", "cannot lock ref", "stale info"].iter().any(|m| error.contains(m))
}

/// Runs `git args` in `dir` as deploybot (its own identity, no signing, no hooks), with the
/// whole of stderr in an error: [`rejected`] reads it.
async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    const CONFIG: [(&str, &str); 9] = [
        ("GIT_CONFIG_COUNT", "4"),
        ("GIT_CONFIG_KEY_0", "user.name"),
        ("GIT_CONFIG_VALUE_0", "deploybot"),
        ("GIT_CONFIG_KEY_1", "user.email"),
        ("GIT_CONFIG_VALUE_1", "deploybot@localhost"),
        ("GIT_CONFIG_KEY_2", "commit.gpgsign"),
        ("GIT_CONFIG_VALUE_2", "false"),
        ("GIT_CONFIG_KEY_3", "core.hooksPath"),
        ("GIT_CONFIG_VALUE_3", "/dev/null"),
    ];
    crate::release::git::run(Some(dir), args, &CONFIG, GIT_TIMEOUT, usize::MAX).await
}
