//! `[release]` and `[services.X.build]`: what `/release` tags, builds and pushes.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[release]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseConfig {
    /// The repository: a local path, or a clone URL (`git@…`, `https://…`, `file://…`).
    pub repo: String,
    /// Who may `/release`: user ids, `group:…`, `"*"`. Default: the deployers of the first
    /// environment in promotion order.
    #[serde(default)]
    pub releasers: Option<Vec<String>>,
    /// The ref released when `/release` names none.
    #[serde(default = "default_ref")]
    pub default_ref: String,
    /// Where the bot keeps its clone of the repository and the build worktrees.
    #[serde(default = "default_dir")]
    pub dir: String,
    /// The Docker Engine that builds the images (default: `DOCKER_HOST`, else the local socket).
    #[serde(default)]
    pub docker_host: Option<String>,
    /// How long one image build or push may take.
    #[serde(default = "default_image_timeout")]
    pub image_timeout: String,
}

fn default_ref() -> String {
    "main".into()
}
fn default_dir() -> String {
    "release-work".into()
}
fn default_image_timeout() -> String {
    "30m".into()
}

/// `[services.X.build]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// The image's build context, relative to the repository root.
    #[serde(default = "default_context")]
    pub context: String,
    /// The Dockerfile, relative to the context.
    #[serde(default = "default_dockerfile")]
    pub dockerfile: String,
    /// Build steps run in the context directory before the image build, each an argv
    /// (`[["mvn", "-B", "package"]]`; a shell only when you write one: `["sh", "-c", "npm ci && npm run build"]`).
    #[serde(default)]
    pub commands: Vec<Vec<String>>,
    /// The build steps' extra environment; `${VAR}`s are read when they run (secrets go here).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How long each build step may take.
    #[serde(default = "default_step_timeout")]
    pub timeout: String,
    /// Docker build arguments (`--build-arg`); not for secrets (they stay in the image's history).
    #[serde(default)]
    pub args: BTreeMap<String, String>,
}

fn default_context() -> String {
    ".".into()
}
fn default_dockerfile() -> String {
    "Dockerfile".into()
}
fn default_step_timeout() -> String {
    "15m".into()
}

impl BuildConfig {
    /// Problems as (key, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (key, path) in [("context", &self.context), ("dockerfile", &self.dockerfile)] {
            if std::path::Path::new(path).is_absolute() || path.split('/').any(|p| p == "..") {
                out.push((key.to_string(), format!("\"{path}\" must be a relative path inside the repository")));
            }
        }
        for (i, argv) in self.commands.iter().enumerate() {
            if argv.is_empty() {
                out.push((format!("commands[{i}]"), "empty command: e.g. [\"mvn\", \"-B\", \"package\"]".into()));
            }
            for (p, m) in crate::targets::command::secret_references_in_argv(&format!("commands[{i}]"), argv) {
                out.push((p, m));
            }
        }
        out.extend(crate::targets::command::validate_env_table(&self.env));
        if let Err(e) = crate::config::parse_duration(&self.timeout) {
            out.push(("timeout".into(), e));
        }
        for (k, v) in &self.args {
            if v.contains("${") {
                out.push((format!("args.{k}"), "build arguments stay in the image's history: never put a ${VAR} secret here".into()));
            }
        }
        out
    }
}

impl ReleaseConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.repo.trim().is_empty() {
            out.push(("repo".into(), "empty repo: a local path or a clone URL".into()));
        }
        if self.default_ref.trim().is_empty() || self.default_ref.starts_with('-') {
            out.push(("default_ref".into(), format!("\"{}\" is not a branch or commit", self.default_ref)));
        }
        if let Err(e) = crate::config::parse_duration(&self.image_timeout) {
            out.push(("image_timeout".into(), e));
        }
        out
    }
}
