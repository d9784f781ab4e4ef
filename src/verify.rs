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

// ---------------------------------------------------------------------------------------------------------
// Configuration

/// `[environments.X.verify]`: health checks, then smoke tests, each retried with exponential backoff.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    #[serde(default)]
    pub health: Vec<CheckConfig>,
    #[serde(default)]
    pub smoke: Vec<CheckConfig>,
    /// Retries after a failed first attempt (so `3` means up to 4 attempts).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait before the first retry; doubles for each further retry, up to `max_backoff`.
    #[serde(default = "default_backoff")]
    pub backoff: String,
    #[serde(default = "default_max_backoff")]
    pub max_backoff: String,
    /// Limit for one attempt: connecting, sending and reading the whole response.
    #[serde(default = "default_timeout")]
    pub timeout: String,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            health: Vec::new(),
            smoke: Vec::new(),
            retries: default_retries(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
            timeout: default_timeout(),
        }
    }
}

fn default_retries() -> u32 {
    DEFAULT_RETRIES
}
fn default_backoff() -> String {
    "1s".to_owned()
}
fn default_max_backoff() -> String {
    "30s".to_owned()
}
fn default_timeout() -> String {
    "10s".to_owned()
}
fn default_status() -> u16 {
    200
}

/// One HTTP check: a request, what its response must look like, and what to capture from it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Shown in reports; defaults to the method and URL.
    #[serde(default)]
    pub name: Option<String>,
    /// Default `GET`.
    #[serde(default)]
    pub method: Option<String>,
    pub url: String,
    /// Header values are templates (`Authorization = "Bearer {token}"`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON body (string leaves are templates); sets `Content-Type: application/json`.
    #[serde(default)]
    pub json: Option<Value>,
    /// A raw body template, the alternative to `json`.
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default = "default_status")]
    pub expect_status: u16,
    /// Subset match: each key is a dotted path (`components.db.status`, `items[0].id`) whose value must
    /// equal the given one; a table value matches as a subset of the object found there.
    #[serde(default)]
    pub expect_json: Option<Map<String, Value>>,
    /// The response (or the value at `expect_json_path`) is an array with an element matching these fields.
    #[serde(default)]
    pub expect_json_contains: Option<Map<String, Value>>,
    /// Where the array for `expect_json_contains` is (`content` for a Spring page); default the whole body.
    #[serde(default)]
    pub expect_json_path: Option<String>,
    #[serde(default)]
    pub expect_body_contains: Option<String>,
    /// Name -> JSON path in the response; later checks use the value as `{name}`.
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
    /// Overrides [`VerifyConfig::retries`].
    #[serde(default)]
    pub retries: Option<u32>,
    /// Overrides [`VerifyConfig::timeout`].
    #[serde(default)]
    pub timeout: Option<String>,
}

/// The values of the built-in placeholders for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vars {
    pub version: String,
    pub env: String,
    /// Unique per run (e.g. the deployment id), so smoke data of different runs does not collide.
    pub run_id: String,
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
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "version" => Some(&self.version),
            "env" => Some(&self.env),
            "run_id" => Some(&self.run_id),
            _ => None,
        }
    }
}

const BUILTINS: [&str; 3] = ["version", "env", "run_id"];

// ---------------------------------------------------------------------------------------------------------
// Report

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    Health,
    Smoke,
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckKind::Health => "health",
            CheckKind::Smoke => "smoke",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    pub name: String,
    pub kind: CheckKind,
    pub ok: bool,
    /// Not run because of an earlier failure (`ok` is false).
    pub skipped: bool,
    pub attempts: u32,
    /// Status of the last response, if any arrived.
    pub status: Option<u16>,
    pub elapsed: Duration,
    /// Why it failed or was skipped, or what it saw when it passed; secrets masked.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VerifyReport {
    pub checks: Vec<CheckOutcome>,
    /// Every check passed (true when there are none).
    pub ok: bool,
    pub elapsed: Duration,
}

impl VerifyReport {
    /// One line for the progress message: "6/6 checks passed in 1.2s", or the first failure.
    pub fn summary(&self) -> String {
        if self.checks.is_empty() {
            return "no checks configured".to_owned();
        }
        let Some(first) = self.checks.iter().find(|check| !check.ok && !check.skipped) else {
            let passed = self.checks.iter().filter(|check| check.ok).count();
            return format!(
                "{passed}/{} checks passed in {}",
                self.checks.len(),
                human(self.elapsed)
            );
        };
        let mut line = if first.attempts > 1 {
            format!(
                "{} check '{}' failed after {} attempts: {}",
                first.kind, first.name, first.attempts, first.detail
            )
        } else {
            format!(
                "{} check '{}' failed: {}",
                first.kind, first.name, first.detail
            )
        };
        let failed = self
            .checks
            .iter()
            .filter(|check| !check.ok && !check.skipped)
            .count()
            - 1;
        let skipped = self.checks.iter().filter(|check| check.skipped).count();
        let more: Vec<String> = [(failed, "more failed"), (skipped, "skipped")]
            .into_iter()
            .filter(|(count, _)| *count > 0)
            .map(|(count, what)| format!("{count} {what}"))
            .collect();
        if !more.is_empty() {
            line.push_str(&format!(" ({})", more.join(", ")));
        }
        line
    }

    /// One line per check, for the deployment's thread.
    pub fn details(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            let (mark, what) = if check.ok {
                (
                    "✅",
                    format!("{} in {}", check.detail, human(check.elapsed)),
                )
            } else if check.skipped {
                ("⏭️", check.detail.clone())
            } else if check.attempts > 1 {
                (
                    "❌",
                    format!(
                        "failed after {} attempts in {}: {}",
                        check.attempts,
                        human(check.elapsed),
                        check.detail
                    ),
                )
            } else {
                ("❌", format!("failed: {}", check.detail))
            };
            out.push_str(&format!("{mark} {} '{}': {what}\n", check.kind, check.name));
        }
        out.push_str(&self.summary());
        out
    }

    /// The checks that did not pass, skipped ones included.
    pub fn failures(&self) -> impl Iterator<Item = &CheckOutcome> {
        self.checks.iter().filter(|check| !check.ok)
    }
}

/// `340ms`, `1.2s`, `2s`, `1m 5s`.
fn human(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        format!("{millis}ms")
    } else if millis < 60_000 {
        let tenths = (millis + 50) / 100;
        if tenths % 10 == 0 {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        }
    } else {
        let secs = duration.as_secs();
        format!("{}m {}s", secs / 60, secs % 60)
    }
}

// ---------------------------------------------------------------------------------------------------------
// Templates and JSON paths

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Var(String),
    Env(String),
}

/// A string with `{name}` and `${ENV}` placeholders.
#[derive(Debug, Clone, Default, PartialEq)]
struct Template(Vec<Part>);

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_env_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Why a template could not be rendered at run time.
#[derive(Debug, Clone, PartialEq)]
enum Missing {
    Env(String),
    Capture(String),
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Env(name) => write!(f, "environment variable {name} is not set"),
            Missing::Capture(name) => write!(f, "{{{name}}} was not captured"),
        }
    }
}

impl Template {
    fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(ch) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("${") {
                let Some(end) = after.find('}') else {
                    return Err(format!("`${{` without a closing `}}` in {text:?}"));
                };
                let name = &after[..end];
                if !is_env_name(name) {
                    return Err(format!(
                        "`${{{name}}}` is not an environment variable reference (NAME in capitals, digits and _)"
                    ));
                }
                parts.push(Part::Text(std::mem::take(&mut literal)));
                parts.push(Part::Env(name.to_owned()));
                rest = &after[end + 1..];
                continue;
            }
            if let Some(after) = rest.strip_prefix('{') {
                if let Some(end) = after.find('}') {
                    let name = &after[..end];
                    if is_identifier(name) {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                        parts.push(Part::Var(name.to_owned()));
                        rest = &after[end + 1..];
                        continue;
                    }
                }
            }
            literal.push(ch);
            rest = &rest[ch.len_utf8()..];
        }
        parts.push(Part::Text(literal));
        parts.retain(|part| !matches!(part, Part::Text(text) if text.is_empty()));
        Ok(Template(parts))
    }

    fn vars(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|part| match part {
            Part::Var(name) => Some(name.as_str()),
            _ => None,
        })
    }

    fn envs(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|part| match part {
            Part::Env(name) => Some(name.as_str()),
            _ => None,
        })
    }

    fn render(&self, scope: &Scope<'_>) -> Result<String, Missing> {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(name) => match scope
                    .vars
                    .get(name)
                    .or_else(|| scope.captured.get(name).map(String::as_str))
                {
                    Some(value) => out.push_str(value),
                    None => return Err(Missing::Capture(name.clone())),
                },
                Part::Env(name) => match scope.env.get(name).and_then(Option::as_deref) {
                    Some(value) => out.push_str(value),
                    None => return Err(Missing::Env(name.clone())),
                },
            }
        }
        Ok(out)
    }

    /// For names and logs: built-ins substituted, captures and environment references left as written.
    fn display(&self, vars: Option<&Vars>) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(name) => match vars.and_then(|vars| vars.get(name)) {
                    Some(value) => out.push_str(value),
                    None => out.push_str(&format!("{{{name}}}")),
                },
                Part::Env(name) => out.push_str(&format!("${{{name}}}")),
            }
        }
        out
    }

    /// With every placeholder replaced by a harmless dummy, for validation without a run.
    fn dummy(&self) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(_) | Part::Env(_) => out.push_str("placeholder"),
            }
        }
        out
    }
}

/// A JSON value whose string leaves are templates.
#[derive(Debug, Clone, PartialEq)]
enum JsonTemplate {
    Text(Template),
    Literal(Value),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

impl JsonTemplate {
    /// Compiles `value`; a string that fails to parse is reported with its path under `at`.
    fn compile(value: &Value, at: &str, errors: &mut Vec<(String, String)>) -> Self {
        match value {
            Value::String(text) => match Template::parse(text) {
                Ok(template) => JsonTemplate::Text(template),
                Err(message) => {
                    errors.push((at.to_owned(), message));
                    JsonTemplate::Literal(value.clone())
                }
            },
            Value::Array(items) => JsonTemplate::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| Self::compile(item, &format!("{at}[{i}]"), errors))
                    .collect(),
            ),
            Value::Object(fields) => JsonTemplate::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), Self::compile(v, &format!("{at}.{k}"), errors)))
                    .collect(),
            ),
            other => JsonTemplate::Literal(other.clone()),
        }
    }

    fn templates(&self) -> Vec<&Template> {
        match self {
            JsonTemplate::Text(template) => vec![template],
            JsonTemplate::Literal(_) => Vec::new(),
            JsonTemplate::Array(items) => items.iter().flat_map(Self::templates).collect(),
            JsonTemplate::Object(fields) => {
                fields.iter().flat_map(|(_, v)| v.templates()).collect()
            }
        }
    }

    fn render(&self, scope: &Scope<'_>) -> Result<Value, Missing> {
        Ok(match self {
            JsonTemplate::Text(template) => Value::String(template.render(scope)?),
            JsonTemplate::Literal(value) => value.clone(),
            JsonTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| item.render(scope))
                    .collect::<Result<_, _>>()?,
            ),
            JsonTemplate::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.render(scope)?)))
                    .collect::<Result<_, Missing>>()?,
            ),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// A dotted path with `[n]` indexes: `token`, `components.db.status`, `content[0].id`, `[2]`.
#[derive(Debug, Clone, PartialEq)]
struct JsonPath {
    text: String,
    segments: Vec<Segment>,
}

impl JsonPath {
    fn parse(text: &str) -> Result<Self, String> {
        let invalid = |why: &str| format!("JSON path `{text}` {why} (write it like `items[0].id`)");
        if text.trim().is_empty() {
            return Err("JSON path is empty".to_owned());
        }
        let mut segments = Vec::new();
        for piece in text.split('.') {
            if piece.is_empty() {
                return Err(invalid("has an empty segment"));
            }
            let (key, mut indexes) = piece.split_at(piece.find('[').unwrap_or(piece.len()));
            if key.contains(']') {
                return Err(invalid("has a `]` without `[`"));
            }
            if !key.is_empty() {
                segments.push(Segment::Key(key.to_owned()));
            }
            while let Some(inside) = indexes.strip_prefix('[') {
                let Some(close) = inside.find(']') else {
                    return Err(invalid("has a `[` without `]`"));
                };
                let index = inside[..close]
                    .parse::<usize>()
                    .map_err(|_| invalid("has an index that is not a number"))?;
                segments.push(Segment::Index(index));
                indexes = &inside[close + 1..];
            }
            if !indexes.is_empty() {
                return Err(invalid("has text after `]`"));
            }
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    fn lookup<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        self.segments
            .iter()
            .try_fold(value, |value, segment| match segment {
                Segment::Key(key) => value.get(key.as_str()),
                Segment::Index(index) => value.get(*index),
            })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Compilation: what `validate` reports and `run` executes

#[derive(Debug, Clone)]
enum Body {
    Json(JsonTemplate),
    Raw(Template),
}

/// `expect_json_contains`: an array (the body, or the value at `at`) must hold an element with `fields`.
#[derive(Debug, Clone)]
struct Contains<T> {
    at: Option<JsonPath>,
    fields: Vec<(JsonPath, T)>,
}

#[derive(Debug, Clone)]
struct Check {
    kind: CheckKind,
    /// `health[0]`, `smoke[2]`.
    key: String,
    name: String,
    method: Method,
    url: Template,
    headers: Vec<(HeaderName, Template)>,
    body: Option<Body>,
    expect_status: u16,
    expect_json: Vec<(JsonPath, JsonTemplate)>,
    expect_contains: Option<Contains<JsonTemplate>>,
    expect_body: Option<Template>,
    captures: Vec<(String, JsonPath)>,
    retries: u32,
    timeout: Duration,
}

impl Check {
    fn templates(&self) -> Vec<&Template> {
        let mut all = vec![&self.url];
        all.extend(self.headers.iter().map(|(_, value)| value));
        match &self.body {
            Some(Body::Json(json)) => all.extend(json.templates()),
            Some(Body::Raw(raw)) => all.push(raw),
            None => {}
        }
        all.extend(
            self.expect_json
                .iter()
                .flat_map(|(_, expected)| expected.templates()),
        );
        if let Some(Contains { fields, .. }) = &self.expect_contains {
            all.extend(fields.iter().flat_map(|(_, expected)| expected.templates()));
        }
        all.extend(self.expect_body.iter());
        all
    }

    fn needs_json(&self) -> bool {
        !self.expect_json.is_empty() || self.expect_contains.is_some() || !self.captures.is_empty()
    }
}

struct Compiled {
    /// Per check: the compiled check, or the messages that kept it from compiling.
    checks: Vec<(CheckKind, String, Result<Check, Vec<String>>)>,
    backoff: Duration,
    max_backoff: Duration,
    errors: Vec<(String, String)>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}); use forms like 500ms, 10s, 1m"))
}

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

fn compile(config: &VerifyConfig) -> Compiled {
    let mut errors = Vec::new();
    let mut duration = |key: &str, text: &str, default: Duration| match parse_duration(text) {
        Ok(duration) => duration,
        Err(message) => {
            errors.push((key.to_owned(), message));
            default
        }
    };
    let backoff = duration("backoff", &config.backoff, Duration::from_secs(1));
    let max_backoff = duration("max_backoff", &config.max_backoff, Duration::from_secs(30));
    let timeout = duration("timeout", &config.timeout, Duration::from_secs(10));
    if max_backoff < backoff {
        errors.push((
            "max_backoff".to_owned(),
            format!("must be at least backoff ({})", config.backoff),
        ));
    }
    if timeout.is_zero() {
        errors.push(("timeout".to_owned(), "must be more than 0s".to_owned()));
    }
    if config.retries > MAX_RETRIES {
        errors.push(("retries".to_owned(), format!("at most {MAX_RETRIES}")));
    }

    // Capture names in scope so far, with the check (`smoke[0]`) that captures each.
    let mut captured_by: BTreeMap<String, String> = BTreeMap::new();
    let all_captures: Vec<(String, String)> = [
        (CheckKind::Health, &config.health),
        (CheckKind::Smoke, &config.smoke),
    ]
    .into_iter()
    .flat_map(|(kind, checks)| {
        checks.iter().enumerate().flat_map(move |(i, check)| {
            check
                .capture
                .keys()
                .map(move |name| (name.clone(), format!("{kind}[{i}]")))
        })
    })
    .collect();

    let mut checks = Vec::new();
    for (kind, list) in [
        (CheckKind::Health, &config.health),
        (CheckKind::Smoke, &config.smoke),
    ] {
        for (i, check) in list.iter().enumerate() {
            let key = format!("{kind}[{i}]");
            let mut problems = Vec::new();
            let compiled = compile_check(check, kind, &key, config, timeout, &mut problems);
            for name in compiled.templates().into_iter().flat_map(Template::vars) {
                if BUILTINS.contains(&name) || captured_by.contains_key(name) {
                    continue;
                }
                let message = match all_captures.iter().find(|(captured, _)| captured == name) {
                    Some((_, by)) if *by == key => format!(
                        "{{{name}}} is captured by this check itself; only later checks can use it"
                    ),
                    Some((_, by)) => {
                        format!("{{{name}}} is captured by {by}, which runs after this check")
                    }
                    None => {
                        let known: Vec<&str> = BUILTINS
                            .iter()
                            .copied()
                            .chain(captured_by.keys().map(String::as_str))
                            .collect();
                        format!(
                            "unknown placeholder {{{name}}} (known here: {})",
                            known.join(", ")
                        )
                    }
                };
                problems.push((key.clone(), message));
            }
            for name in check.capture.keys() {
                captured_by.insert(name.clone(), key.clone());
            }
            let mut seen = HashSet::new();
            problems.retain(|problem| seen.insert(problem.clone()));
            let outcome = if problems.is_empty() {
                Ok(compiled)
            } else {
                Err(problems
                    .iter()
                    .map(|(path, message)| format!("{path}: {message}"))
                    .collect())
            };
            errors.extend(problems);
            let name = check.name.clone().unwrap_or_else(|| default_name(check));
            checks.push((kind, name, outcome));
        }
    }
    Compiled {
        checks,
        backoff,
        max_backoff,
        errors,
    }
}

fn default_name(check: &CheckConfig) -> String {
    let method = check
        .method
        .as_deref()
        .unwrap_or("GET")
        .to_ascii_uppercase();
    let url = crate::secrets::display_url(&check.url);
    let url = url.trim_start_matches("https://").trim_start_matches("http://");
    format!("{method} {url}")
}

/// Compiles one check, pushing `(path, message)` problems; the check is only run when there are none.
fn compile_check(
    check: &CheckConfig,
    kind: CheckKind,
    key: &str,
    config: &VerifyConfig,
    default_timeout: Duration,
    problems: &mut Vec<(String, String)>,
) -> Check {
    let mut problem =
        |field: &str, message: String| problems.push((format!("{key}.{field}"), message));
    let template = |field: &str, text: &str, problem: &mut dyn FnMut(&str, String)| {
        match Template::parse(text) {
            Ok(template) => Some(template),
            Err(message) => {
                problem(field, message);
                None
            }
        }
    };

    if check
        .name
        .as_deref()
        .is_some_and(|name| name.trim().is_empty())
    {
        problem("name", "must not be empty".to_owned());
    }
    let method_text = check
        .method
        .as_deref()
        .unwrap_or("GET")
        .trim()
        .to_ascii_uppercase();
    let method = if METHODS.contains(&method_text.as_str()) {
        Method::from_bytes(method_text.as_bytes()).ok()
    } else {
        None
    };
    if method.is_none() {
        problem(
            "method",
            format!(
                "{method_text:?} is not an HTTP method ({})",
                METHODS.join(", ")
            ),
        );
    }

    let url = template("url", &check.url, &mut problem);
    if let Some(url) = &url {
        match url::Url::parse(&url.dummy()) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {}
            Ok(parsed) => problem(
                "url",
                format!(
                    "must be an http:// or https:// URL with a host, not {}:",
                    parsed.scheme()
                ),
            ),
            Err(e) => problem(
                "url",
                format!("{:?} is not a valid URL ({e})", url.display(None)),
            ),
        }
    }

    let mut headers = Vec::new();
    for (name, value) in &check.headers {
        let field = format!("headers.{name}");
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            problem(&field, format!("{name:?} is not a valid header name"));
            continue;
        };
        if let Some(value) = template(&field, value, &mut problem) {
            if HeaderValue::from_str(&value.dummy()).is_err() {
                problem(&field, "is not a valid header value".to_owned());
            }
            headers.push((header, value));
        }
    }

    let mut json_errors = Vec::new();
    let body = match (&check.json, &check.body) {
        (Some(_), Some(_)) => {
            problem("body", "set either json or body, not both".to_owned());
            None
        }
        (Some(json), None) => Some(Body::Json(JsonTemplate::compile(
            json,
            &format!("{key}.json"),
            &mut json_errors,
        ))),
        (None, Some(raw)) => template("body", raw, &mut problem).map(Body::Raw),
        (None, None) => None,
    };

    if !(100..=599).contains(&check.expect_status) {
        problem(
            "expect_status",
            format!("{} is not an HTTP status (100 to 599)", check.expect_status),
        );
    }

    let mut expectations =
        |field: &str, fields: &Map<String, Value>, problem: &mut dyn FnMut(&str, String)| {
            let mut out = Vec::new();
            for (path, expected) in fields {
                let at = format!("{field}.{path}");
                match JsonPath::parse(path) {
                    Ok(parsed) => out.push((
                        parsed,
                        JsonTemplate::compile(expected, &format!("{key}.{at}"), &mut json_errors),
                    )),
                    Err(message) => problem(&at, message),
                }
            }
            out
        };
    let expect_json = check
        .expect_json
        .as_ref()
        .map(|f| expectations("expect_json", f, &mut problem))
        .unwrap_or_default();
    let expect_contains =
        match &check.expect_json_contains {
            Some(fields) if fields.is_empty() => {
                problem(
                    "expect_json_contains",
                    "list at least one field the element must have".to_owned(),
                );
                None
            }
            Some(fields) => {
                let at = check.expect_json_path.as_deref().and_then(|path| {
                    match JsonPath::parse(path) {
                        Ok(path) => Some(path),
                        Err(message) => {
                            problem("expect_json_path", message);
                            None
                        }
                    }
                });
                Some(Contains {
                    at,
                    fields: expectations("expect_json_contains", fields, &mut problem),
                })
            }
            None => {
                if check.expect_json_path.is_some() {
                    problem(
                        "expect_json_path",
                        "only means something with expect_json_contains".to_owned(),
                    );
                }
                None
            }
        };
    let expect_body = match check.expect_body_contains.as_deref() {
        Some("") => {
            problem("expect_body_contains", "must not be empty".to_owned());
            None
        }
        Some(text) => template("expect_body_contains", text, &mut problem),
        None => None,
    };

    let mut captures = Vec::new();
    for (name, path) in &check.capture {
        let field = format!("capture.{name}");
        if !is_identifier(name) {
            problem(
                &field,
                format!("{name:?} is not a usable name (letters, digits and _)"),
            );
        } else if BUILTINS.contains(&name.as_str()) {
            problem(
                &field,
                format!("{{{name}}} is built in and cannot be captured"),
            );
        }
        match JsonPath::parse(path) {
            Ok(path) => captures.push((name.clone(), path)),
            Err(message) => problem(&field, message),
        }
    }

    let retries = check.retries.unwrap_or(config.retries);
    if check.retries.is_some_and(|retries| retries > MAX_RETRIES) {
        problem("retries", format!("at most {MAX_RETRIES}"));
    }
    let timeout = match check.timeout.as_deref().map(parse_duration) {
        None => default_timeout,
        Some(Ok(timeout)) if timeout.is_zero() => {
            problem("timeout", "must be more than 0s".to_owned());
            default_timeout
        }
        Some(Ok(timeout)) => timeout,
        Some(Err(message)) => {
            problem("timeout", message);
            default_timeout
        }
    };
    problems.append(&mut json_errors);

    Check {
        kind,
        key: key.to_owned(),
        name: check.name.clone().unwrap_or_else(|| default_name(check)),
        method: method.unwrap_or(Method::GET),
        url: url.unwrap_or_default(),
        headers,
        body,
        expect_status: check.expect_status,
        expect_json,
        expect_contains,
        expect_body,
        captures,
        retries,
        timeout,
    }
}

impl VerifyConfig {
    /// Every problem with this config, as (sub-path such as `smoke[1].url`, message); empty when it is
    /// runnable. Does no I/O: `${ENV}` values are read only by [`run`].
    pub fn validate(&self) -> Vec<(String, String)> {
        compile(self).errors
    }
}

// ---------------------------------------------------------------------------------------------------------
// Running

/// Values known while a run goes on.
struct Scope<'a> {
    vars: &'a Vars,
    env: HashMap<String, Option<String>>,
    captured: HashMap<String, String>,
}

/// Masks secret values in text.
#[derive(Default)]
struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    fn add(&mut self, value: &str) {
        // Also the form the value takes inside a JSON string, where a response may echo it.
        let escaped = serde_json::to_string(value).unwrap_or_default();
        let escaped = escaped.trim_matches('"');
        for form in [value, escaped] {
            if !form.is_empty() && !self.secrets.iter().any(|known| known == form) {
                self.secrets.push(form.to_owned());
            }
        }
        self.secrets
            .sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    }

    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }
}

/// Which checks a run includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scopes {
    All,
    HealthOnly,
}

/// Runs the health checks, then (if they all passed) the smoke tests in order.
#[tracing::instrument(skip_all, fields(env = %vars.env, version = %vars.version, run_id = %vars.run_id))]
pub async fn run(config: &VerifyConfig, vars: &Vars, client: &reqwest::Client) -> VerifyReport {
    run_selected(config, vars, client, Scopes::All, &|name| {
        std::env::var(name).ok()
    })
    .await
}

/// Runs the health checks only: the periodic probe and the `failed health checks` monitoring rule.
#[tracing::instrument(skip_all, fields(env = %vars.env, version = %vars.version, run_id = %vars.run_id))]
pub async fn run_health_only(
    config: &VerifyConfig,
    vars: &Vars,
    client: &reqwest::Client,
) -> VerifyReport {
    run_selected(config, vars, client, Scopes::HealthOnly, &|name| {
        std::env::var(name).ok()
    })
    .await
}

async fn run_selected(
    config: &VerifyConfig,
    vars: &Vars,
    client: &reqwest::Client,
    scopes: Scopes,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> VerifyReport {
    let started = Instant::now();
    let compiled = compile(config);
    let backoff = Backoff {
        first: compiled.backoff,
        max: compiled.max_backoff.max(compiled.backoff),
    };
    let selected: Vec<_> = compiled
        .checks
        .iter()
        .filter(|(kind, _, _)| scopes == Scopes::All || *kind == CheckKind::Health)
        .collect();

    let mut redactor = Redactor::default();
    let mut scope = Scope {
        vars,
        env: HashMap::new(),
        captured: HashMap::new(),
    };
    for (_, _, check) in &selected {
        for name in check
            .iter()
            .flat_map(Check::templates)
            .flat_map(Template::envs)
        {
            let value = env(name).filter(|value| !value.is_empty());
            if let Some(value) = &value {
                redactor.add(value);
            }
            scope.env.insert(name.to_owned(), value);
        }
    }

    // Capture name -> name of the check that (last) captures it, to explain skips.
    let mut producers: HashMap<String, String> = HashMap::new();
    let mut outcomes = Vec::new();
    for (kind, name, check) in selected {
        let outcome = match check {
            Err(problems) => CheckOutcome {
                name: name.clone(),
                kind: *kind,
                ok: false,
                skipped: false,
                attempts: 0,
                status: None,
                elapsed: Duration::ZERO,
                detail: redactor.scrub(&format!("invalid configuration: {}", problems.join("; "))),
            },
            Ok(check) => {
                let health_failed = outcomes
                    .iter()
                    .any(|o: &CheckOutcome| o.kind == CheckKind::Health && !o.ok);
                let missing = check
                    .templates()
                    .into_iter()
                    .flat_map(Template::vars)
                    .find(|var| vars.get(var).is_none() && !scope.captured.contains_key(*var))
                    .map(str::to_owned);
                if *kind == CheckKind::Smoke && health_failed {
                    skipped(check, "skipped: health checks failed".to_owned())
                } else if let Some(var) = missing {
                    let by = producers
                        .get(&var)
                        .map_or_else(|| "an earlier check".to_owned(), |by| format!("'{by}'"));
                    skipped(
                        check,
                        format!("skipped: needs {{{var}}} from {by}, which did not capture it"),
                    )
                } else {
                    run_check(check, &mut scope, &mut redactor, client, &backoff).await
                }
            }
        };
        if let Ok(check) = check {
            for (capture, _) in &check.captures {
                producers.insert(capture.clone(), check.name.clone());
            }
        }
        outcomes.push(outcome);
    }

    let report = VerifyReport {
        ok: outcomes.iter().all(|o| o.ok),
        checks: outcomes,
        elapsed: started.elapsed(),
    };
    if report.ok {
        tracing::info!(summary = %report.summary(), "Verification passed");
    } else {
        tracing::warn!(summary = %report.summary(), "Verification failed");
    }
    report
}

fn skipped(check: &Check, detail: String) -> CheckOutcome {
    CheckOutcome {
        name: check.name.clone(),
        kind: check.kind,
        ok: false,
        skipped: true,
        attempts: 0,
        status: None,
        elapsed: Duration::ZERO,
        detail,
    }
}

struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    /// Wait after the `failed`-th failed attempt: first, 2×first, 4×first... capped.
    fn after(&self, failed: u32) -> Duration {
        let factor = 1u32 << failed.saturating_sub(1).min(16);
        self.first.saturating_mul(factor).min(self.max)
    }
}

/// A request ready to send, rendered once per check.
struct Request {
    method: Method,
    url: url::Url,
    /// `host:port`, for messages.
    target: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<RenderedBody>,
}

enum RenderedBody {
    Json(Value),
    Raw(String),
}

/// What one attempt found.
struct Attempt {
    ok: bool,
    status: Option<u16>,
    detail: String,
    captured: Vec<(String, String)>,
}

impl Attempt {
    fn failed(status: Option<u16>, detail: String) -> Self {
        Self {
            ok: false,
            status,
            detail,
            captured: Vec::new(),
        }
    }
}

#[tracing::instrument(skip_all, fields(check = %check.name, at = %check.key))]
async fn run_check(
    check: &Check,
    scope: &mut Scope<'_>,
    redactor: &mut Redactor,
    client: &reqwest::Client,
    backoff: &Backoff,
) -> CheckOutcome {
    let started = Instant::now();
    let outcome = |ok: bool, attempts: u32, status: Option<u16>, detail: String| CheckOutcome {
        name: check.name.clone(),
        kind: check.kind,
        ok,
        skipped: false,
        attempts,
        status,
        elapsed: started.elapsed(),
        detail,
    };
    let request = match render_request(check, scope) {
        Ok(request) => request,
        Err(detail) => return outcome(false, 0, None, redactor.scrub(&detail)),
    };
    let expected = match render_expectations(check, scope) {
        Ok(expected) => expected,
        Err(missing) => return outcome(false, 0, None, redactor.scrub(&missing.to_string())),
    };

    let attempts = check.retries.saturating_add(1);
    let mut last = Attempt::failed(None, String::new());
    for number in 1..=attempts {
        last = attempt(check, &request, &expected, client).await;
        for (_, value) in &last.captured {
            if value.chars().count() >= 4 {
                redactor.add(value);
            }
        }
        let detail = redactor.scrub(&last.detail);
        if last.ok {
            tracing::info!(attempt = number, status = ?last.status, "Verification check passed");
            for (name, value) in std::mem::take(&mut last.captured) {
                scope.captured.insert(name, value);
            }
            return outcome(true, number, last.status, detail);
        }
        if number < attempts {
            let wait = backoff.after(number);
            tracing::warn!(attempt = number, of = attempts, %detail, retry_in = %human(wait), "Verification check attempt failed; retrying");
            tokio::time::sleep(wait).await;
        } else {
            tracing::warn!(attempt = number, %detail, "Verification check failed on its last attempt");
        }
    }
    outcome(false, attempts, last.status, redactor.scrub(&last.detail))
}

fn render_request(check: &Check, scope: &Scope<'_>) -> Result<Request, String> {
    let shown = crate::secrets::display_url(&check.url.display(Some(scope.vars)));
    let url = check
        .url
        .render(scope)
        .map_err(|missing| missing.to_string())?;
    let url = url::Url::parse(&url)
        .map_err(|e| format!("URL {shown:?} is not valid after substitution ({e})"))?;
    let host = url.host_str().unwrap_or_default();
    let target = match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let mut headers = Vec::new();
    for (name, value) in &check.headers {
        let rendered = value.render(scope).map_err(|missing| missing.to_string())?;
        let value = HeaderValue::from_str(&rendered).map_err(|_| {
            format!(
                "header {name}: {:?} is not a valid header value after substitution",
                value.display(Some(scope.vars))
            )
        })?;
        headers.push((name.clone(), value));
    }
    let body = match &check.body {
        Some(Body::Json(json)) => Some(RenderedBody::Json(
            json.render(scope).map_err(|missing| missing.to_string())?,
        )),
        Some(Body::Raw(raw)) => Some(RenderedBody::Raw(
            raw.render(scope).map_err(|missing| missing.to_string())?,
        )),
        None => None,
    };
    Ok(Request {
        method: check.method.clone(),
        url,
        target,
        headers,
        body,
    })
}

/// The check's expectations with their templates rendered.
struct Expected {
    json: Vec<(JsonPath, Value)>,
    contains: Option<Contains<Value>>,
    body: Option<String>,
}

fn render_expectations(check: &Check, scope: &Scope<'_>) -> Result<Expected, Missing> {
    let render_all =
        |fields: &[(JsonPath, JsonTemplate)]| -> Result<Vec<(JsonPath, Value)>, Missing> {
            fields
                .iter()
                .map(|(path, expected)| Ok((path.clone(), expected.render(scope)?)))
                .collect()
        };
    Ok(Expected {
        json: render_all(&check.expect_json)?,
        contains: match &check.expect_contains {
            Some(Contains { at, fields }) => Some(Contains {
                at: at.clone(),
                fields: render_all(fields)?,
            }),
            None => None,
        },
        body: check
            .expect_body
            .as_ref()
            .map(|body| body.render(scope))
            .transpose()?,
    })
}

async fn attempt(
    check: &Check,
    request: &Request,
    expected: &Expected,
    client: &reqwest::Client,
) -> Attempt {
    let mut builder = client.request(request.method.clone(), request.url.clone());
    for (name, value) in &request.headers {
        builder = builder.header(name.clone(), value.clone());
    }
    builder = match &request.body {
        Some(RenderedBody::Json(json)) => builder.json(json),
        Some(RenderedBody::Raw(raw)) => builder.body(raw.clone()),
        None => builder,
    };
    let exchange = async {
        let mut response = builder.send().await?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| {
                value
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            });
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            body.extend_from_slice(&chunk);
            if body.len() >= BODY_LIMIT {
                body.truncate(BODY_LIMIT);
                break;
            }
        }
        Ok::<_, reqwest::Error>((status, content_type, body))
    };
    match tokio::time::timeout(check.timeout, exchange).await {
        Err(_) => Attempt::failed(
            None,
            format!(
                "timed out after {} waiting for {}",
                human(check.timeout),
                request.target
            ),
        ),
        Ok(Err(error)) => Attempt::failed(None, describe_error(&error, &request.target)),
        Ok(Ok((status, content_type, body))) => {
            judge(check, expected, status, content_type.as_deref(), &body)
        }
    }
}

/// A transport error in words, naming the host and port but never the URL (its query may hold a secret).
fn describe_error(error: &reqwest::Error, target: &str) -> String {
    let mut causes = Vec::new();
    let mut refused = false;
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        let text = cause.to_string();
        if !text.is_empty() && !causes.contains(&text) {
            causes.push(text);
        }
        source = cause.source();
    }
    let cause = causes
        .last()
        .cloned()
        .unwrap_or_else(|| "no further detail".to_owned());
    let chain = causes.join(": ").to_ascii_lowercase();
    if refused || chain.contains("connection refused") {
        format!("connection refused by {target}")
    } else if error.is_timeout() {
        format!("timed out waiting for {target}")
    } else if chain.contains("dns error") || chain.contains("failed to lookup address") {
        format!("could not resolve the host of {target}: {cause}")
    } else if ["tls", "certificate", "handshake", "corrupt message", "ssl"]
        .iter()
        .any(|word| chain.contains(word))
    {
        format!("TLS error talking to {target}: {cause}")
    } else if error.is_connect() {
        format!("could not connect to {target}: {cause}")
    } else if error.is_redirect() {
        format!("too many redirects from {target}")
    } else if error.is_body() || error.is_decode() {
        format!("failed reading the response from {target}: {cause}")
    } else {
        format!("request to {target} failed: {cause}")
    }
}

/// Keys whose string values are masked when a JSON body is quoted, known secrets or not.
const SENSITIVE_KEYS: [&str; 7] = [
    "token",
    "password",
    "passwd",
    "secret",
    "apikey",
    "credential",
    "authorization",
];

fn is_sensitive(key: &str) -> bool {
    let key: String = key
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    SENSITIVE_KEYS.iter().any(|word| key.contains(word)) && !key.ends_with("type")
}

fn mask_sensitive(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                if field.is_string() && is_sensitive(key) {
                    *field = Value::String(REDACTED.to_owned());
                } else {
                    mask_sensitive(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_sensitive),
        _ => {}
    }
}

/// A response body for a message: JSON with token-, password- and secret-like fields masked (a failing
/// login's fresh token is no known secret), then cut to one line.
fn quote_body(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(mut json) => {
            mask_sensitive(&mut json);
            snippet(&json.to_string())
        }
        Err(_) => snippet(body),
    }
}

/// The body in one line, at most [`SNIPPET_CHARS`] characters.
fn snippet(body: &str) -> String {
    let flat = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.is_empty() {
        return "(empty)".to_owned();
    }
    match flat.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

/// A JSON value for a message, shortened.
fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn is_json_type(content_type: &str) -> bool {
    content_type == "application/json" || content_type.ends_with("+json")
}

fn judge(
    check: &Check,
    expected: &Expected,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Attempt {
    let text = String::from_utf8_lossy(body);
    if status != check.expect_status {
        return Attempt::failed(
            Some(status),
            format!(
                "expected status {}, got {status} — body: {}",
                check.expect_status,
                quote_body(&text)
            ),
        );
    }
    let fail = |detail: String| Attempt::failed(Some(status), detail);
    if let Some(needle) = &expected.body {
        if !text.contains(needle.as_str()) {
            return fail(format!(
                "response body did not contain {needle:?} — body: {}",
                quote_body(&text)
            ));
        }
    }
    let mut captured = Vec::new();
    if check.needs_json() {
        let json: Value = match serde_json::from_slice(body) {
            Ok(json) => json,
            Err(error) => {
                return fail(match content_type {
                    Some(kind) if !is_json_type(kind) => {
                        format!("expected JSON but got {kind} — body: {}", quote_body(&text))
                    }
                    None => format!(
                        "expected JSON but got a response without Content-Type — body: {}",
                        quote_body(&text)
                    ),
                    Some(_) => format!(
                        "response is not valid JSON ({error}) — body: {}",
                        quote_body(&text)
                    ),
                });
            }
        };
        for (path, wanted) in &expected.json {
            if let Some(mismatch) = first_mismatch(&path.text, wanted, path.lookup(&json)) {
                return fail(format!("{mismatch} — body: {}", quote_body(&text)));
            }
        }
        if let Some(Contains { at, fields }) = &expected.contains {
            let (where_, found) = match at {
                Some(path) => (format!("`{}`", path.text), path.lookup(&json)),
                None => ("the response".to_owned(), Some(&json)),
            };
            let Some(Value::Array(items)) = found else {
                let got =
                    found.map_or_else(|| "nothing".to_owned(), |value| kind_of(value).to_owned());
                return fail(format!(
                    "expected a JSON array at {where_}, got {got} — body: {}",
                    quote_body(&text)
                ));
            };
            let matches = |item: &Value| {
                fields.iter().all(|(path, wanted)| {
                    first_mismatch(&path.text, wanted, path.lookup(item)).is_none()
                })
            };
            if !items.iter().any(matches) {
                let wanted: Vec<String> = fields
                    .iter()
                    .map(|(path, value)| format!("{} = {}", path.text, short(value)))
                    .collect();
                return fail(format!(
                    "array at {where_} ({} element{}) did not contain an element with {}",
                    items.len(),
                    if items.len() == 1 { "" } else { "s" },
                    wanted.join(" and ")
                ));
            }
        }
        for (name, path) in &check.captures {
            match path.lookup(&json) {
                None | Some(Value::Null) => {
                    return fail(format!(
                        "could not capture {{{name}}}: JSON field `{}` is missing — body: {}",
                        path.text,
                        quote_body(&text)
                    ));
                }
                Some(Value::String(value)) => captured.push((name.clone(), value.clone())),
                Some(other) => captured.push((name.clone(), other.to_string())),
            }
        }
    }
    let mut detail = format!("status {status}");
    if !captured.is_empty() {
        let names: Vec<&str> = captured.iter().map(|(name, _)| name.as_str()).collect();
        detail.push_str(&format!(", captured {}", names.join(", ")));
    }
    Attempt {
        ok: true,
        status: Some(status),
        detail,
        captured,
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Scalars compare equal when they are the same JSON, or when one is a string that reads as the other
/// (templates always render strings, while ids may come back as numbers).
fn scalars_equal(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Number(a), Value::Number(b)) => a == b || a.as_f64() == b.as_f64(),
        (Value::String(text), other @ (Value::Number(_) | Value::Bool(_)))
        | (other @ (Value::Number(_) | Value::Bool(_)), Value::String(text)) => {
            let rendered = other.to_string();
            rendered == *text
        }
        _ => expected == actual,
    }
}

/// Why `actual` (found at `path`) does not match `expected` as a subset, or `None` when it does.
fn first_mismatch(path: &str, expected: &Value, actual: Option<&Value>) -> Option<String> {
    let Some(actual) = actual else {
        return Some(format!("JSON field `{path}` is missing"));
    };
    match expected {
        Value::Object(fields) => {
            let Value::Object(_) = actual else {
                return Some(format!(
                    "JSON field `{path}` was {}, expected an object",
                    short(actual)
                ));
            };
            fields.iter().find_map(|(key, wanted)| {
                first_mismatch(&format!("{path}.{key}"), wanted, actual.get(key))
            })
        }
        Value::Array(items) => {
            let Value::Array(found) = actual else {
                return Some(format!(
                    "JSON field `{path}` was {}, expected an array",
                    short(actual)
                ));
            };
            if found.len() != items.len() {
                return Some(format!(
                    "JSON field `{path}` has {} elements, expected {}",
                    found.len(),
                    items.len()
                ));
            }
            items.iter().enumerate().find_map(|(i, wanted)| {
                first_mismatch(&format!("{path}[{i}]"), wanted, found.get(i))
            })
        }
        scalar if scalars_equal(scalar, actual) => None,
        scalar => Some(format!(
            "JSON field `{path}` was {}, expected {}",
            short(actual),
            short(scalar)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploybot_standin::{spawn, Spawned, StandinConfig};

    fn vars() -> Vars {
        Vars::new("v1.0.0", "staging", "run42")
    }

    fn client() -> reqwest::Client {
        reqwest::Client::new()
    }

    fn parse(toml_text: &str) -> VerifyConfig {
        match toml::from_str(toml_text) {
            Ok(config) => config,
            Err(e) => panic!("config does not parse: {e}\n{toml_text}"),
        }
    }

    async fn standin(version: &str) -> Spawned {
        standin_with(StandinConfig::new(version)).await
    }

    async fn standin_with(config: StandinConfig) -> Spawned {
        spawn(config).await.expect("bind a loopback port")
    }

    /// The runbook's health checks and smoke tests against `base`, with a short backoff.
    fn runbook(base: &str, password: &str) -> String {
        format!(
            r#"
retries = 2
backoff = "20ms"
timeout = "5s"

[[health]]
name = "backend health"
url = "{base}/api/actuator/health"
expect_status = 200
expect_json = {{ status = "UP" }}

[[health]]
name = "database"
url = "{base}/api/actuator/health/db"
expect_json = {{ status = "UP", "details.database" = "PostgreSQL" }}

[[health]]
name = "frontend"
url = "{base}/"
expect_body_contains = "{{version}}"

[[smoke]]
name = "login returns a JWT"
method = "POST"
url = "{base}/api/auth/login"
json = {{ username = "test@example.com", password = "{password}" }}
expect_status = 200
capture = {{ token = "token" }}

[[smoke]]
name = "create customer"
method = "POST"
url = "{base}/api/customers"
headers = {{ Authorization = "Bearer {{token}}" }}
json = {{ name = "Smoke {{run_id}}", email = "smoke-{{run_id}}@example.com" }}
expect_status = 201
capture = {{ customer_id = "id" }}

[[smoke]]
name = "list customers contains it"
url = "{base}/api/customers"
headers = {{ Authorization = "Bearer {{token}}" }}
expect_status = 200
expect_json_contains = {{ id = "{{customer_id}}", name = "Smoke {{run_id}}" }}
"#
        )
    }

    fn single_health(url: &str, extra: &str) -> VerifyConfig {
        parse(&format!(
            "retries = 0\nbackoff = \"10ms\"\n[[health]]\nname = \"backend health\"\nurl = \"{url}\"\nexpect_json = {{ status = \"UP\" }}\n{extra}"
        ))
    }

    #[tokio::test]
    async fn the_runbook_checks_pass_against_a_healthy_app() {
        let app = standin("v1.0.0").await;
        let config = parse(&runbook(&app.url(""), "testpass"));
        assert_eq!(config.validate(), Vec::<(String, String)>::new());
        let report = run(&config, &vars(), &client()).await;
        assert!(report.ok, "{}", report.details());
        assert_eq!(report.checks.len(), 6);
        assert!(
            report.summary().starts_with("6/6 checks passed in "),
            "{}",
            report.summary()
        );
        assert!(report.checks.iter().all(|check| check.attempts == 1));
        assert_eq!(report.checks[4].status, Some(201));
        let customers = app.state.customers();
        assert_eq!(customers.len(), 1);
        assert_eq!(customers[0].name, "Smoke run42");
        assert_eq!(customers[0].email, "smoke-run42@example.com");
    }

    #[tokio::test]
    async fn a_broken_build_fails_health_with_the_status_and_the_body() {
        let app = standin("v1.1.0-broken").await;
        let report = run(
            &parse(&runbook(&app.url(""), "testpass")),
            &vars(),
            &client(),
        )
        .await;
        assert!(!report.ok);
        let health = &report.checks[0];
        assert_eq!(health.status, Some(503));
        assert_eq!(health.attempts, 3);
        assert!(
            health
                .detail
                .starts_with("expected status 200, got 503 — body: {"),
            "{}",
            health.detail
        );
        assert!(
            health.detail.contains(r#""status":"DOWN""#),
            "{}",
            health.detail
        );
        assert!(
            report.summary().starts_with("health check 'backend health' failed after 3 attempts: expected status 200, got 503"),
            "{}",
            report.summary()
        );
        let smoke: Vec<&CheckOutcome> = report
            .checks
            .iter()
            .filter(|c| c.kind == CheckKind::Smoke)
            .collect();
        assert_eq!(smoke.len(), 3);
        assert!(smoke
            .iter()
            .all(|c| c.skipped && c.detail == "skipped: health checks failed"));
        assert!(
            report
                .details()
                .contains("⏭️ smoke 'create customer': skipped"),
            "{}",
            report.details()
        );
    }

    #[tokio::test]
    async fn an_html_answer_is_reported_as_not_json() {
        let app = standin("v1.1.0-html").await;
        let report = run(
            &single_health(&app.url("/api/actuator/health"), ""),
            &vars(),
            &client(),
        )
        .await;
        let detail = &report.checks[0].detail;
        assert!(
            detail.starts_with("expected JSON but got text/html — body: <!doctype html>"),
            "{detail}"
        );
        assert!(detail.chars().count() < 260, "{detail}");
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_host_and_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let report = run(
            &single_health(&format!("http://{addr}/api/actuator/health"), ""),
            &vars(),
            &client(),
        )
        .await;
        assert_eq!(
            report.checks[0].detail,
            format!("connection refused by {addr}")
        );
        assert_eq!(report.checks[0].status, None);
        assert!(!report.ok);
    }

    #[tokio::test]
    async fn a_slow_app_times_out_after_the_per_check_timeout() {
        let app = standin_with(StandinConfig {
            slow: Duration::from_secs(3),
            ..StandinConfig::new("v1.1.0-slow")
        })
        .await;
        let config = single_health(&app.url("/api/actuator/health"), "timeout = \"200ms\"");
        let started = Instant::now();
        let report = run(&config, &vars(), &client()).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            report.checks[0].detail,
            format!("timed out after 200ms waiting for {}", app.addr)
        );
    }

    #[tokio::test]
    async fn https_to_a_plain_http_port_is_a_tls_error() {
        let app = standin("v1.0.0").await;
        let report = run(
            &single_health(&format!("https://{}/api/actuator/health", app.addr), ""),
            &vars(),
            &client(),
        )
        .await;
        let detail = &report.checks[0].detail;
        assert!(
            detail.starts_with(&format!("TLS error talking to {}: ", app.addr)),
            "{detail}"
        );
    }

    #[tokio::test]
    async fn retries_recover_when_health_comes_back_up() {
        let app = standin("v1.0.0").await;
        app.state.set_healthy(false);
        let config = parse(&format!(
            "retries = 8\nbackoff = \"50ms\"\nmax_backoff = \"100ms\"\n[[health]]\nurl = \"{}\"\nexpect_json = {{ status = \"UP\" }}",
            app.url("/api/actuator/health")
        ));
        let state = app.state.clone();
        let flip = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            state.set_healthy(true);
        });
        let report = run(&config, &vars(), &client()).await;
        flip.await.unwrap();
        assert!(report.ok, "{}", report.details());
        assert!(report.checks[0].attempts > 1, "{:?}", report.checks[0]);
        assert_eq!(report.checks[0].status, Some(200));
    }

    #[tokio::test]
    async fn a_json_field_with_the_wrong_value_is_named() {
        let app = standin("v1.0.0").await;
        app.state.set_healthy(false);
        let config = single_health(&app.url("/api/actuator/health"), "expect_status = 503");
        let report = run(&config, &vars(), &client()).await;
        assert!(
            report.checks[0]
                .detail
                .starts_with(r#"JSON field `status` was "DOWN", expected "UP" — body: "#),
            "{}",
            report.checks[0].detail
        );
    }

    #[tokio::test]
    async fn nested_expectations_match_as_a_subset() {
        let app = standin("v1.0.0").await;
        let config = parse(&format!(
            "[[health]]\nurl = \"{}\"\nexpect_json = {{ components = {{ db = {{ status = \"UP\" }} }}, \"components.diskSpace.status\" = \"UP\" }}",
            app.url("/api/actuator/health")
        ));
        let report = run(&config, &vars(), &client()).await;
        assert!(report.ok, "{}", report.details());
    }

    #[tokio::test]
    async fn a_missing_element_is_reported_with_the_fields_looked_for() {
        let app = standin("v1.0.0").await;
        let base = app.url("");
        let config = parse(&format!(
            r#"
retries = 0
[[smoke]]
name = "login"
method = "POST"
url = "{base}/api/auth/login"
json = {{ username = "test@example.com", password = "testpass" }}
capture = {{ token = "token" }}
[[smoke]]
name = "list"
url = "{base}/api/customers"
headers = {{ Authorization = "Bearer {{token}}" }}
expect_json_contains = {{ name = "Nobody {{run_id}}" }}
"#
        ));
        let report = run(&config, &vars(), &client()).await;
        assert_eq!(
            report.checks[1].detail,
            r#"array at the response (0 elements) did not contain an element with name = "Nobody run42""#
        );
    }

    #[tokio::test]
    async fn a_failed_capture_skips_the_checks_that_need_it() {
        let app = standin("v1.0.0").await;
        let report = run(
            &parse(&runbook(&app.url(""), "wrong-password")),
            &vars(),
            &client(),
        )
        .await;
        assert!(!report.ok);
        let [_, _, _, login, create, list] = &report.checks[..] else {
            panic!("{report:?}")
        };
        assert!(!login.ok && !login.skipped);
        assert_eq!(login.status, Some(401));
        assert!(create.skipped && list.skipped);
        assert_eq!(
            create.detail,
            "skipped: needs {token} from 'login returns a JWT', which did not capture it"
        );
        assert_eq!(create.attempts, 0);
        assert!(app.state.customers().is_empty());
        assert!(
            report.summary().ends_with("(2 skipped)"),
            "{}",
            report.summary()
        );
    }

    #[tokio::test]
    async fn secrets_from_the_environment_and_captured_tokens_never_appear_in_the_report() {
        const VAR: &str = "DEPLOYBOT_VERIFY_TEST_SMOKE_PASSWORD";
        let password = "correct-horse-battery-staple";
        let app = standin_with(StandinConfig {
            extra_password: Some(password.into()),
            ..StandinConfig::new("v1.0.0")
        })
        .await;
        let base = app.url("");
        let mut config = parse(&runbook(&base, &format!("${{{VAR}}}")));
        // A check that fails and quotes a body holding the token, and one whose URL carries the password.
        config.smoke.push(
            parse(&format!(
                r#"
[[smoke]]
name = "echo the token"
method = "POST"
url = "{base}/api/auth/login?key=${{{VAR}}}"
json = {{ username = "test@example.com", password = "${{{VAR}}}" }}
expect_status = 418
"#
            ))
            .smoke
            .remove(0),
        );
        config.smoke.push(parse(&format!(
            "[[smoke]]\nname = \"reflect\"\nurl = \"http://127.0.0.1:1/{{token}}?p=${{{VAR}}}\"\nretries = 0\n"
        )).smoke.remove(0));
        // The variable is given explicitly, as the process environment would give it.
        let env = |name: &str| (name == VAR).then(|| password.to_string());
        let report = run_selected(&config, &vars(), &client(), Scopes::All, &env).await;
        assert!(
            report.checks[..6].iter().all(|check| check.ok),
            "{}",
            report.details()
        );

        let text = format!("{}\n{}\n{report:?}", report.summary(), report.details());
        assert!(!text.contains(password), "{text}");
        let echo = &report.checks[6];
        assert!(
            echo.detail
                .starts_with("expected status 418, got 200 — body: "),
            "{}",
            echo.detail
        );
        assert!(
            echo.detail.contains(&format!("\"token\":\"{REDACTED}\"")),
            "{}",
            echo.detail
        );
        assert!(
            !report.checks[7].detail.contains("eyJ"),
            "{}",
            report.checks[7].detail
        );
        assert!(
            !text.contains("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."),
            "a token leaked: {text}"
        );
    }

    #[tokio::test]
    async fn an_unset_environment_variable_fails_the_check_by_name_without_a_request() {
        let app = standin("v1.0.0").await;
        let config = parse(&runbook(
            &app.url(""),
            "${DEPLOYBOT_VERIFY_TEST_SURELY_UNSET}",
        ));
        let report = run(&config, &vars(), &client()).await;
        let login = &report.checks[3];
        assert_eq!(
            login.detail,
            "environment variable DEPLOYBOT_VERIFY_TEST_SURELY_UNSET is not set"
        );
        assert_eq!(login.attempts, 0);
    }

    #[tokio::test]
    async fn health_only_runs_no_smoke_test() {
        let app = standin("v1.0.0").await;
        let report = run_health_only(
            &parse(&runbook(&app.url(""), "testpass")),
            &vars(),
            &client(),
        )
        .await;
        assert!(report.ok);
        assert_eq!(report.checks.len(), 3);
        assert!(report
            .checks
            .iter()
            .all(|check| check.kind == CheckKind::Health));
        assert!(app.state.customers().is_empty());
    }

    #[tokio::test]
    async fn an_invalid_check_fails_at_run_time_instead_of_panicking() {
        let config = parse("[[health]]\nurl = \"http://127.0.0.1:1/{nope}\"\nmethod = \"FETCH\"");
        let report = run(&config, &vars(), &client()).await;
        assert!(!report.ok);
        assert!(
            report.checks[0]
                .detail
                .starts_with("invalid configuration: health[0].method: "),
            "{}",
            report.checks[0].detail
        );
        assert_eq!(report.checks[0].attempts, 0);
    }

    #[test]
    fn the_runbook_example_parses_and_validates() {
        let config = parse(&runbook("http://127.0.0.1:8080", "${SMOKE_PASSWORD}"));
        assert_eq!(config.validate(), Vec::<(String, String)>::new());
        assert_eq!(config.health.len(), 3);
        assert_eq!(
            config.smoke[0].capture.get("token").map(String::as_str),
            Some("token")
        );
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let error =
            toml::from_str::<VerifyConfig>("[[health]]\nurl = \"http://x\"\nexpect_stauts = 200")
                .unwrap_err();
        assert!(
            error.to_string().contains("unknown field `expect_stauts`"),
            "{error}"
        );
    }

    #[test]
    fn defaults_are_three_retries_a_one_second_backoff_and_a_ten_second_timeout() {
        let config = parse("[[health]]\nurl = \"http://x/\"");
        assert_eq!(
            (
                config.retries,
                config.backoff.as_str(),
                config.timeout.as_str()
            ),
            (3, "1s", "10s")
        );
        assert_eq!(config.health[0].expect_status, 200);
        assert_eq!(VerifyConfig::default(), parse(""));
    }

    fn problems(toml_text: &str) -> Vec<(String, String)> {
        parse(toml_text).validate()
    }

    fn check_problem(toml_text: &str, path: &str, message_part: &str) {
        let found = problems(toml_text);
        assert!(
            found
                .iter()
                .any(|(p, m)| p == path && m.contains(message_part)),
            "expected {path}: …{message_part}… in {found:?}"
        );
    }

    #[test]
    fn validation_names_each_problem_by_its_path() {
        check_problem(
            "[[smoke]]\nurl = \"not a url {run_id}\"",
            "smoke[0].url",
            "is not a valid URL",
        );
        check_problem(
            "[[smoke]]\nurl = \"ftp://host/x\"",
            "smoke[0].url",
            "http:// or https://",
        );
        check_problem(
            "[[health]]\nurl = \"http://x/\"\nmethod = \"FETCH\"",
            "health[0].method",
            "\"FETCH\" is not an HTTP method",
        );
        check_problem(
            "[[health]]\nurl = \"http://x/\"\nexpect_status = 42",
            "health[0].expect_status",
            "42 is not an HTTP status",
        );
        check_problem("timeout = \"ten seconds\"", "timeout", "invalid duration");
        check_problem(
            "backoff = \"5s\"\nmax_backoff = \"1s\"",
            "max_backoff",
            "at least backoff",
        );
        check_problem(
            "[[smoke]]\nurl = \"http://x/\"\ntimeout = \"0s\"",
            "smoke[0].timeout",
            "more than 0s",
        );
        check_problem(
            "[[smoke]]\nurl = \"http://x/\"\nretries = 100",
            "smoke[0].retries",
            "at most 20",
        );
        check_problem(
            "[[smoke]]\nurl = \"http://x/\"\nbody = \"a\"\njson = { a = 1 }",
            "smoke[0].body",
            "either json or body",
        );
        check_problem(
            "[[smoke]]\nurl = \"http://x/\"\ncapture = { t = \"items[x]\" }",
            "smoke[0].capture.t",
            "index that is not a number",
        );
        check_problem(
            "[[smoke]]\nurl = \"http://x/\"\ncapture = { version = \"v\" }",
            "smoke[0].capture.version",
            "built in",
        );
        check_problem(
            "[[smoke]]\nurl = \"http://x/\"\nexpect_json = { \"a..b\" = 1 }",
            "smoke[0].expect_json.a..b",
            "empty segment",
        );
        check_problem(
            "[[smoke]]\nurl = \"http://x/\"\nheaders = { \"Bad Header\" = \"v\" }",
            "smoke[0].headers.Bad Header",
            "not a valid header name",
        );
        check_problem(
            "[[smoke]]\nurl = \"http://x/\"\nexpect_json_path = \"content\"",
            "smoke[0].expect_json_path",
            "expect_json_contains",
        );
        check_problem(
            "[[smoke]]\nurl = \"http://x/\"\njson = { p = \"${lower}\" }",
            "smoke[0].json.p",
            "not an environment variable reference",
        );
    }

    #[test]
    fn placeholders_must_be_known_and_captured_before_use() {
        check_problem(
            "[[smoke]]\nurl = \"http://x/{nope}\"",
            "smoke[0]",
            "unknown placeholder {nope} (known here: version, env, run_id)",
        );
        let used_before = "[[smoke]]\nurl = \"http://x/{customer_id}\"\n[[smoke]]\nurl = \"http://x/\"\ncapture = { customer_id = \"id\" }";
        check_problem(
            used_before,
            "smoke[0]",
            "{customer_id} is captured by smoke[1], which runs after this check",
        );
        check_problem(
            "[[smoke]]\nurl = \"http://x/{token}\"\ncapture = { token = \"token\" }",
            "smoke[0]",
            "captured by this check itself",
        );
        check_problem(
            "[[health]]\nurl = \"http://x/{token}\"\n[[smoke]]\nurl = \"http://x/\"\ncapture = { token = \"t\" }",
            "health[0]",
            "captured by smoke[0], which runs after this check",
        );
        assert!(problems("[[health]]\nurl = \"http://x/\"\ncapture = { a = \"a\" }\n[[smoke]]\nurl = \"http://x/{a}/{env}\"").is_empty());
    }

    #[test]
    fn every_problem_of_a_check_is_reported_at_once() {
        let found = problems(
            "[[health]]\nurl = \"http://x/{nope}\"\nmethod = \"FETCH\"\nexpect_status = 1",
        );
        let paths: Vec<&str> = found.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(
            paths,
            ["health[0].method", "health[0].expect_status", "health[0]"],
            "{found:?}"
        );
    }

    #[test]
    fn templates_keep_non_placeholder_braces_literal() {
        let template = Template::parse(r#"{"a":{token}} ${PW} {not a var} {}"#).unwrap();
        assert_eq!(
            template.display(None),
            r#"{"a":{token}} ${PW} {not a var} {}"#
        );
        assert_eq!(template.vars().collect::<Vec<_>>(), ["token"]);
        assert_eq!(template.envs().collect::<Vec<_>>(), ["PW"]);
        assert!(Template::parse("${unterminated").is_err());
        assert_eq!(
            Template::parse("v={version}")
                .unwrap()
                .display(Some(&vars())),
            "v=v1.0.0"
        );
    }

    #[test]
    fn json_paths_read_keys_and_indexes() {
        let value = serde_json::json!({"content": [{"id": 7}, {"id": 8, "tags": ["a", "b"]}]});
        for (path, expected) in [
            ("content[1].id", Some(serde_json::json!(8))),
            ("content[1].tags[1]", Some(serde_json::json!("b"))),
            ("content[2].id", None),
            ("missing", None),
        ] {
            assert_eq!(
                JsonPath::parse(path).unwrap().lookup(&value).cloned(),
                expected,
                "{path}"
            );
        }
        assert_eq!(
            JsonPath::parse("[0]")
                .unwrap()
                .lookup(&serde_json::json!([1])),
            Some(&serde_json::json!(1))
        );
        for bad in ["", "a.", "a[", "a]", "a[1]b"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mismatches_name_the_first_differing_field() {
        use serde_json::json;
        let actual = json!({"status": "UP", "n": 5, "items": [1, 2]});
        for (expected, result) in [
            (json!({"status": "UP"}), None),
            (json!({"n": "5"}), None),
            (json!({"n": 5.0}), None),
            (
                json!({"status": "DOWN"}),
                Some("JSON field `$.status` was \"UP\", expected \"DOWN\""),
            ),
            (json!({"gone": 1}), Some("JSON field `$.gone` is missing")),
            (
                json!({"items": [1]}),
                Some("JSON field `$.items` has 2 elements, expected 1"),
            ),
            (
                json!({"status": {"a": 1}}),
                Some("JSON field `$.status` was \"UP\", expected an object"),
            ),
        ] {
            assert_eq!(
                first_mismatch("$", &expected, Some(&actual)).as_deref(),
                result,
                "{expected}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let backoff = Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(5),
        };
        let waits: Vec<u64> = (1..=5).map(|n| backoff.after(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        assert_eq!(
            Backoff {
                first: Duration::from_secs(1),
                max: Duration::MAX
            }
            .after(u32::MAX),
            Duration::from_secs(65536)
        );
    }

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        for (millis, text) in [
            (340, "340ms"),
            (1200, "1.2s"),
            (2000, "2s"),
            (1960, "2s"),
            (65_000, "1m 5s"),
        ] {
            assert_eq!(human(Duration::from_millis(millis)), text);
        }
    }

    #[test]
    fn the_redactor_masks_the_longest_secret_first_and_its_json_form() {
        let mut redactor = Redactor::default();
        redactor.add("abc");
        redactor.add("abcdef");
        redactor.add("pa\"ss");
        assert_eq!(redactor.scrub("abcdef abc x"), "••• ••• x");
        assert_eq!(redactor.scrub(r#"{"p":"pa\"ss"}"#), r#"{"p":"•••"}"#);
    }

    #[test]
    fn quoted_json_bodies_mask_token_and_password_fields() {
        let body = r#"{"token":"eyJ.abc.def","tokenType":"Bearer","user":{"password":"pw","name":"Ann"},"access_token":"x"}"#;
        assert_eq!(
            quote_body(body),
            r#"{"access_token":"•••","token":"•••","tokenType":"Bearer","user":{"name":"Ann","password":"•••"}}"#
        );
        assert_eq!(quote_body("token=abc"), "token=abc");
    }

    #[test]
    fn a_run_can_be_spawned_on_another_task() {
        fn assert_send<T: Send>(_: &T) {}
        let (config, vars, client) = (VerifyConfig::default(), vars(), client());
        let future = run(&config, &vars, &client);
        assert_send(&future);
        assert_send(&run_health_only(&config, &vars, &client));
    }

    #[test]
    fn a_long_body_is_cut_to_one_line_of_200_characters() {
        let cut = snippet(&format!("line one\n\n   {}", "x".repeat(500)));
        assert!(cut.starts_with("line one xxx"));
        assert_eq!(cut.chars().count(), SNIPPET_CHARS + 1);
        assert_eq!(snippet("  "), "(empty)");
    }
}
