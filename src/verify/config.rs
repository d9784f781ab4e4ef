//! `[environments.X.verify]` as written, and its compilation into checks ready to run: what
//! [`VerifyConfig::validate`] reports and the runner executes.

use super::*;

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
    /// `[[environments.X.verify.security]]`: run in preflight against what runs now, and after the smoke
    /// tests in verify.
    #[serde(default)]
    pub security: Vec<SecurityConfig>,
    /// The environment's automatic checklist items (`[[environments.X.checklist.checks]]`), set by the
    /// checklist, never read from this table: they share its retries, backoff and timeout.
    #[serde(skip)]
    pub checklist: Vec<CheckConfig>,
    /// `[bot] ca_file`: the private CA of every check that names none.
    #[serde(skip)]
    pub default_ca_file: Option<String>,
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
            security: Vec::new(),
            checklist: Vec::new(),
            default_ca_file: None,
            retries: default_retries(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
            timeout: default_timeout(),
        }
    }
}

pub(super) fn default_retries() -> u32 {
    DEFAULT_RETRIES
}
pub(super) fn default_backoff() -> String {
    "1s".to_owned()
}
pub(super) fn default_max_backoff() -> String {
    "30s".to_owned()
}
pub(super) fn default_timeout() -> String {
    "10s".to_owned()
}
pub(super) fn default_status() -> u16 {
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
    /// Response headers that must be present; each value must appear in the header's value (case
    /// insensitive), `""` only asks for the header.
    #[serde(default)]
    pub expect_headers: BTreeMap<String, String>,
    /// Checklist items only: a failure refuses the deployment (`true`, the default) or is only shown.
    #[serde(default)]
    pub required: Option<bool>,
    /// A PEM file of a private CA to trust besides the public roots (overrides `[bot] ca_file`).
    #[serde(default)]
    pub ca_file: Option<String>,
}

/// The values of the built-in placeholders for one run.

// ---------------------------------------------------------------------------------------------------------
// Compilation: what `validate` reports and `run` executes

#[derive(Debug, Clone)]
pub(super) enum Body {
    Json(JsonTemplate),
    Raw(Template),
}

/// `expect_json_contains`: an array (the body, or the value at `at`) must hold an element with `fields`.
#[derive(Debug, Clone)]
pub(super) struct Contains<T> {
    pub(super) at: Option<JsonPath>,
    pub(super) fields: Vec<(JsonPath, T)>,
}

#[derive(Debug, Clone)]
pub(super) struct Check {
    pub(super) kind: CheckKind,
    /// `health[0]`, `smoke[2]`.
    pub(super) key: String,
    pub(super) name: String,
    pub(super) method: Method,
    pub(super) url: Template,
    pub(super) headers: Vec<(HeaderName, Template)>,
    pub(super) body: Option<Body>,
    pub(super) expect_status: u16,
    pub(super) expect_json: Vec<(JsonPath, JsonTemplate)>,
    pub(super) expect_contains: Option<Contains<JsonTemplate>>,
    pub(super) expect_body: Option<Template>,
    pub(super) captures: Vec<(String, JsonPath)>,
    pub(super) expect_headers: Vec<(HeaderName, String)>,
    pub(super) ca_file: Option<String>,
    pub(super) retries: u32,
    pub(super) timeout: Duration,
}

impl Check {
    pub(super) fn templates(&self) -> Vec<&Template> {
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

    pub(super) fn needs_json(&self) -> bool {
        !self.expect_json.is_empty() || self.expect_contains.is_some() || !self.captures.is_empty()
    }
}

pub(super) struct Compiled {
    /// Per check: the compiled check, or the messages that kept it from compiling.
    pub(super) checks: Vec<(CheckKind, String, Result<Check, Vec<String>>)>,
    pub(super) backoff: Duration,
    pub(super) max_backoff: Duration,
    pub(super) errors: Vec<(String, String)>,
}

pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}); use forms like 500ms, 10s, 1m"))
}

pub(super) const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

pub(super) fn compile(config: &VerifyConfig) -> Compiled {
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
    let all_captures: Vec<(String, String)> = config
        .lists()
        .into_iter()
    .flat_map(|(kind, checks)| {
        checks.iter().enumerate().flat_map(move |(i, check)| {
            check
                .capture
                .keys()
                .map(move |name| (name.clone(), format!("{}[{i}]", kind.key())))
        })
    })
    .collect();

    let mut checks = Vec::new();
    for (kind, list) in config.lists() {
        for (i, check) in list.iter().enumerate() {
            let key = format!("{}[{i}]", kind.key());
            let mut problems = Vec::new();
            let compiled = compile_check(check, kind, &key, config, timeout, &mut problems);
            for name in compiled.templates().into_iter().flat_map(Template::vars) {
                // `{sha}` is known to checklist items only (from the checklist's repo).
                let builtins = if kind == CheckKind::Checklist { &BUILTINS[..] } else { &BUILTINS[..3] };
                if builtins.contains(&name) || captured_by.contains_key(name) {
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
                        let known: Vec<&str> = builtins
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

pub(super) fn default_name(check: &CheckConfig) -> String {
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
pub(super) fn compile_check(
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
    let mut expect_headers = Vec::new();
    for (name, value) in &check.expect_headers {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) => expect_headers.push((header, value.clone())),
            Err(_) => problem(&format!("expect_headers.{name}"), format!("{name:?} is not a valid header name")),
        }
    }
    if check.ca_file.as_deref().is_some_and(|f| f.trim().is_empty()) {
        problem("ca_file", "must not be empty".to_owned());
    }
    if check.required.is_some() && kind != CheckKind::Checklist {
        problem("required", "only means something on a checklist item ([[environments.X.checklist.checks]])".to_owned());
    }
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
        expect_headers,
        ca_file: check.ca_file.clone().or_else(|| config.default_ca_file.clone()),
        retries,
        timeout,
    }
}

impl CheckConfig {
    /// Whether any of its templates uses the placeholder `{name}`.
    pub fn uses(&self, name: &str) -> bool {
        fn strings<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
            match value {
                Value::String(s) => out.push(s),
                Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
                Value::Object(fields) => fields.values().for_each(|v| strings(v, out)),
                _ => {}
            }
        }
        let mut texts: Vec<&str> = vec![&self.url];
        texts.extend(self.headers.values().map(String::as_str));
        texts.extend(self.body.as_deref());
        texts.extend(self.expect_body_contains.as_deref());
        for value in self.json.iter().chain(self.expect_json.iter().flat_map(|m| m.values())).chain(self.expect_json_contains.iter().flat_map(|m| m.values())) {
            strings(value, &mut texts);
        }
        texts.iter().filter_map(|t| Template::parse(t).ok()).any(|t| t.vars().any(|v| v == name))
    }
}

impl VerifyConfig {
    /// Every problem with this config, as (sub-path such as `smoke[1].url`, message); empty when it is
    /// runnable. Does no I/O: `${ENV}` values are read only by [`run`].
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = compile(self).errors;
        for (i, check) in self.security.iter().enumerate() {
            errors.extend(check.validate().into_iter().map(|(path, message)| (format!("security[{i}].{path}"), message)));
        }
        errors
    }

    /// The HTTP check lists in the order they run.
    pub(super) fn lists(&self) -> [(CheckKind, &Vec<CheckConfig>); 3] {
        [(CheckKind::Health, &self.health), (CheckKind::Smoke, &self.smoke), (CheckKind::Checklist, &self.checklist)]
    }
}
