//! Image builds and pushes through the Docker Engine (bollard): the context directory sent as a
//! tar, the Dockerfile inside it, OCI labels and build arguments; the push with the registry's
//! credentials. Bollard's types stay in this file (and in `targets/docker/`).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::query_parameters::{BuildImageOptions, PushImageOptions, RemoveImageOptions};
use bollard::Docker;
use futures_util::StreamExt as _;

use crate::registry::Credentials;
use crate::secrets::redact;

/// Lines of build output kept for a failure message.
const OUTPUT_LINES: usize = 15;
const REQUEST_TIMEOUT_SECS: u64 = 600;

/// A connected Docker Engine.
pub struct Engine {
    docker: Docker,
    endpoint: String,
    timeout: Duration,
}

impl Engine {
    /// Connects and checks that the engine answers; the error names where it was looked for.
    pub async fn connect(host: Option<&str>, timeout: Duration) -> Result<Engine, String> {
        let endpoint = host
            .map(str::to_string)
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        let unreachable = |e: &dyn std::fmt::Display| format!("the Docker Engine is not reachable at {endpoint}: {e}");
        let docker = match host {
            None => Docker::connect_with_defaults(),
            Some(h) if h.starts_with("unix://") => Docker::connect_with_unix(h, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION),
            Some(h) => Docker::connect_with_http(h, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION),
        }
        .map_err(|e| unreachable(&e))?;
        let docker = match tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version()).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Err(unreachable(&e)),
            Err(_) => return Err(unreachable(&"no answer within 10s")),
        };
        Ok(Engine { docker, endpoint, timeout })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Builds `reference` from `context` with `dockerfile` (relative to it); the image id.
    pub async fn build(
        &self,
        context: &Path,
        dockerfile: &str,
        reference: &str,
        labels: &HashMap<String, String>,
        args: &HashMap<String, String>,
    ) -> Result<String, String> {
        if !context.is_dir() {
            return Err(format!("the build context {} is not a directory at this commit", context.display()));
        }
        if !context.join(dockerfile).is_file() {
            return Err(format!("there is no Dockerfile at {} in the build context", dockerfile));
        }
        let tar = tar_directory(context).map_err(|e| format!("cannot read the build context {}: {e}", context.display()))?;
        let options = BuildImageOptions {
            dockerfile: dockerfile.to_string(),
            t: Some(reference.to_string()),
            rm: true,
            forcerm: true,
            labels: Some(labels.clone()),
            buildargs: (!args.is_empty()).then(|| args.clone()),
            ..Default::default()
        };
        let run = async {
            let mut stream = self.docker.build_image(options, None, Some(bollard::body_full(tar.into())));
            let mut tail: Vec<String> = Vec::new();
            let mut id = None;
            while let Some(item) = stream.next().await {
                let info = item.map_err(|e| redact(&format!("the Docker Engine at {} failed the build: {e}", self.endpoint)))?;
                if let Some(text) = &info.stream {
                    for line in text.lines().filter(|l| !l.trim().is_empty()) {
                        tail.push(line.to_string());
                        if tail.len() > OUTPUT_LINES {
                            tail.remove(0);
                        }
                    }
                }
                if let Some(error) = info.error_detail.and_then(|d| d.message).or(info.error) {
                    return Err(redact(&format!("{}\n{}", error.trim(), tail.join("\n"))));
                }
                if let Some(aux) = info.aux.and_then(|a| a.id) {
                    id = Some(aux);
                }
            }
            Ok(id.unwrap_or_else(|| reference.to_string()))
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(format!("the image build took longer than {}", humantime::format_duration(self.timeout))),
        }
    }

    /// Pushes `reference` (`repository:tag`) with `credentials` when there are some; a push the
    /// registry did not refuse (a dropped upload) is tried once more.
    pub async fn push(&self, reference: &str, credentials: Option<&Credentials>) -> Result<(), String> {
        match self.push_once(reference, credentials).await {
            Err(e) if !is_refusal(&e) => {
                tracing::warn!(image = reference, error = e, "the push failed; trying once more");
                tokio::time::sleep(Duration::from_secs(2)).await;
                self.push_once(reference, credentials).await
            }
            other => other,
        }
    }

    async fn push_once(&self, reference: &str, credentials: Option<&Credentials>) -> Result<(), String> {
        let (repository, tag) = reference.rsplit_once(':').filter(|(r, _)| !r.is_empty()).ok_or_else(|| format!("\"{reference}\" has no tag"))?;
        let server = crate::registry::ImageRef::parse(repository, tag).registry;
        let credentials = credentials.map_or_else(DockerCredentials::default, |c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.expose().to_string()),
            serveraddress: Some(server),
            ..Default::default()
        });
        let options = PushImageOptions { tag: Some(tag.to_string()), ..Default::default() };
        let run = async {
            let mut stream = self.docker.push_image(repository, Some(options), Some(credentials));
            while let Some(item) = stream.next().await {
                let info = item.map_err(|e| redact(&format!("the Docker Engine at {} failed the push: {e}", self.endpoint)))?;
                if let Some(error) = info.error_detail.and_then(|d| d.message).or(info.error) {
                    return Err(redact(error.trim()));
                }
            }
            Ok(())
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(format!("the push took longer than {}", humantime::format_duration(self.timeout))),
        }
    }

    /// Removes the local tag (best effort).
    pub async fn untag(&self, reference: &str) {
        let _ = self.docker.remove_image(reference, Some(RemoveImageOptions { force: false, noprune: false }), None).await;
    }
}

/// Whether a push error is the registry saying no (credentials, permissions), not a transient failure.
fn is_refusal(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    ["unauthorized", "denied", "authentication required", "forbidden", "took longer"].iter().any(|w| e.contains(w))
}

/// The directory as an uncompressed tar, paths relative to it; symlinks stay links.
fn tar_directory(dir: &Path) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.append_dir_all(".", dir)?;
    builder.into_inner()
}
