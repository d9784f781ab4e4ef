//! Health checks and smoke tests: pipeline step 6, `/verify <env>`, the check after every rollback and the
//! periodic health probe.
//!
//! A [`VerifyConfig`] (the `[environments.X.verify]` table) is compiled once per run into checks with parsed
//! methods, durations, JSON paths and templates; [`VerifyConfig::validate`] reports that compilation's
//! problems without doing I/O, and [`run`] reports a check that fails to compile as failed, never panicking.
//!
//! Templates: `{version}`, `{env}`, `{run_id}` and the names earlier checks `capture`d; `${ENV_VAR}` is read
//! from the process environment when the run starts. Any other brace is literal text, so JSON in a raw
//! `body` needs no escaping.
//!
//! *Invariant*: values read from `${ENV}` references and captured values (tokens, ids) never appear in a
//! report, an error or a log line: templates are shown with their placeholders, and every detail string
//! passes through the run's redactor, which masks each such value with `•••`. Captured values shorter than
//! four characters (a small integer id, say) are not masked: they cannot be credentials, and masking them
//! would mangle every number in the report.
//!
//! *Invariant*: this module knows nothing of the rest of the bot; the caller passes the config, the
//! [`Vars`] and a `reqwest::Client`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value};

/// What a masked secret looks like in any text this module produces.
pub const REDACTED: &str = "•••";
/// Retries after the first attempt, unless a check says otherwise.
pub const DEFAULT_RETRIES: u32 = 3;
const MAX_RETRIES: u32 = 20;
const BODY_LIMIT: usize = 1024 * 1024;
const SNIPPET_CHARS: usize = 200;

/// The values of the built-in placeholders for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vars {
    pub version: String,
    pub env: String,
    /// Unique per run (e.g. the deployment id), so smoke data of different runs does not collide.
    pub run_id: String,
    /// The commit the version's tag names, when known (`{sha}` in checklist items).
    pub sha: Option<String>,
}

impl Vars {
    pub fn new(
        version: impl Into<String>,
        env: impl Into<String>,
        run_id: impl Into<String>,
    ) -> Self {
        Self {
            version: version.into(),
            env: env.into(),
            run_id: run_id.into(),
            sha: None,
        }
    }

    /// With `{sha}` known.
    pub fn with_sha(mut self, sha: Option<String>) -> Self {
        self.sha = sha;
        self
    }

    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "version" => Some(&self.version),
            "env" => Some(&self.env),
            "run_id" => Some(&self.run_id),
            "sha" => self.sha.as_deref(),
            _ => None,
        }
    }
}

const BUILTINS: [&str; 4] = ["version", "env", "run_id", "sha"];

mod config;
mod ecr_scan;
mod json_path;
mod judge;
mod report;
mod runner;
mod security;
mod template;

pub use config::{CheckConfig, VerifyConfig};
pub use report::{CheckKind, CheckOutcome, VerifyReport};
pub use runner::{run, run_checklist, run_health_only, run_in, run_security};
pub use security::SecurityConfig;

#[allow(unused_imports)]
use self::{config::*, json_path::*, judge::*, report::*, runner::*, security::*, template::*};

#[cfg(test)]
mod tests;
