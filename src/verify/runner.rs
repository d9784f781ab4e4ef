//! The HTTP runner: renders each check's request, sends it with retries and backoff, and
//! redacts what it reports.

use super::*;

// ---------------------------------------------------------------------------------------------------------
// Running

/// Values known while a run goes on.
pub(super) struct Scope<'a> {
    pub(super) vars: &'a Vars,
    pub(super) env: HashMap<String, Option<String>>,
    pub(super) captured: HashMap<String, String>,
    /// Where AWS keys given explicitly are read (the `image_scan` check).
    pub(super) aws: &'a crate::secrets::Vars,
}

/// Masks secret values in text.
#[derive(Default)]
pub(super) struct Redactor {
    pub(super) secrets: Vec<String>,
}

impl Redactor {
    pub(super) fn add(&mut self, value: &str) {
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

    pub(super) fn scrub(&self, text: &str) -> String {
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
pub(super) enum Scopes {
    /// Health checks, smoke tests, then security checks.
    All,
    HealthOnly,
    Checklist,
    Security,
}

impl Scopes {
    fn includes(self, kind: CheckKind) -> bool {
        match self {
            Scopes::All => matches!(kind, CheckKind::Health | CheckKind::Smoke),
            Scopes::HealthOnly => kind == CheckKind::Health,
            Scopes::Checklist => kind == CheckKind::Checklist,
            Scopes::Security => false,
        }
    }
}

/// As [`run`], reading `${VAR}` references from `env` (the config's [`crate::secrets::Vars`]).
#[tracing::instrument(skip_all, fields(env = %vars.env, version = %vars.version, run_id = %vars.run_id))]
pub async fn run_in(config: &VerifyConfig, vars: &Vars, client: &reqwest::Client, env: &crate::secrets::Vars) -> VerifyReport {
    run_selected(config, vars, client, Scopes::All, &|name| env.get(name), env).await
}

/// The automatic checklist items `checks`, each run (with the retries, backoff and timeout of
/// `settings`) whatever the others found; one outcome per item, in order.
#[tracing::instrument(skip_all, fields(env = %vars.env, version = %vars.version))]
pub async fn run_checklist(checks: &[CheckConfig], settings: &VerifyConfig, vars: &Vars, client: &reqwest::Client, env: &crate::secrets::Vars) -> VerifyReport {
    let config = VerifyConfig { health: Vec::new(), smoke: Vec::new(), security: Vec::new(), checklist: checks.to_vec(), ..settings.clone() };
    run_selected(&config, vars, client, Scopes::Checklist, &|name| env.get(name), env).await
}

/// The security checks only: preflight, against what runs now.
#[tracing::instrument(skip_all, fields(env = %vars.env, version = %vars.version))]
pub async fn run_security(config: &VerifyConfig, vars: &Vars, client: &reqwest::Client, env: &crate::secrets::Vars) -> VerifyReport {
    run_selected(config, vars, client, Scopes::Security, &|name| env.get(name), env).await
}

/// Runs the health checks, then (if they all passed) the smoke tests in order.
#[tracing::instrument(skip_all, fields(env = %vars.env, version = %vars.version, run_id = %vars.run_id))]
pub async fn run(config: &VerifyConfig, vars: &Vars, client: &reqwest::Client) -> VerifyReport {
    run_selected(config, vars, client, Scopes::All, &|name| {
        std::env::var(name).ok()
    }, &crate::secrets::Vars::process())
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
    }, &crate::secrets::Vars::process())
    .await
}

pub(super) async fn run_selected(
    config: &VerifyConfig,
    vars: &Vars,
    client: &reqwest::Client,
    scopes: Scopes,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    aws: &crate::secrets::Vars,
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
        .filter(|(kind, _, _)| scopes.includes(*kind))
        .collect();

    let mut redactor = Redactor::default();
    let mut scope = Scope {
        vars,
        env: HashMap::new(),
        captured: HashMap::new(),
        aws,
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

    if matches!(scopes, Scopes::All | Scopes::Security) {
        for name in config.security.iter().flat_map(SecurityConfig::envs) {
            let value = env(&name).filter(|value| !value.is_empty());
            if let Some(value) = &value {
                redactor.add(value);
            }
            scope.env.insert(name, value);
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
                } else if missing.as_deref() == Some("sha") {
                    skipped(
                        check,
                        format!("skipped: needs {{sha}}, the commit of {}, which is not known (set checklist.repo to the git repository the tag is in)", vars.version),
                    )
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
    if matches!(scopes, Scopes::All | Scopes::Security) && !config.security.is_empty() {
        let health_failed = outcomes.iter().any(|o| o.kind == CheckKind::Health && !o.ok);
        for (i, check) in config.security.iter().enumerate() {
            let outcome = if health_failed {
                CheckOutcome {
                    name: check.display_name(),
                    kind: CheckKind::Security,
                    ok: false,
                    skipped: true,
                    attempts: 0,
                    status: None,
                    elapsed: Duration::ZERO,
                    detail: "skipped: health checks failed".to_owned(),
                }
            } else {
                run_security_check(check, i, &scope, compiled_timeout(config), config.default_ca_file.as_deref()).await
            };
            outcomes.push(CheckOutcome { detail: redactor.scrub(&outcome.detail), ..outcome });
        }
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

pub(super) fn skipped(check: &Check, detail: String) -> CheckOutcome {
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

pub(super) struct Backoff {
    pub(super) first: Duration,
    pub(super) max: Duration,
}

impl Backoff {
    /// Wait after the `failed`-th failed attempt: first, 2×first, 4×first... capped.
    pub(super) fn after(&self, failed: u32) -> Duration {
        let factor = 1u32 << failed.saturating_sub(1).min(16);
        self.first.saturating_mul(factor).min(self.max)
    }
}

/// A request ready to send, rendered once per check.
pub(super) struct Request {
    pub(super) method: Method,
    pub(super) url: url::Url,
    /// `host:port`, for messages.
    pub(super) target: String,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    pub(super) body: Option<RenderedBody>,
}

pub(super) enum RenderedBody {
    Json(Value),
    Raw(String),
}

/// What one attempt found.
pub(super) struct Attempt {
    pub(super) ok: bool,
    pub(super) status: Option<u16>,
    pub(super) detail: String,
    pub(super) captured: Vec<(String, String)>,
}

impl Attempt {
    pub(super) fn failed(status: Option<u16>, detail: String) -> Self {
        Self {
            ok: false,
            status,
            detail,
            captured: Vec::new(),
        }
    }
}

#[tracing::instrument(skip_all, fields(check = %check.name, at = %check.key))]
pub(super) async fn run_check(
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

    // A check that trusts a private CA gets a client of its own.
    let own_client;
    let client = match &check.ca_file {
        None => client,
        Some(file) => match client_trusting(file, reqwest::Client::builder().user_agent("deploybot")) {
            Ok(c) => {
                own_client = c;
                &own_client
            }
            Err(detail) => return outcome(false, 0, None, detail),
        },
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

pub(super) fn render_request(check: &Check, scope: &Scope<'_>) -> Result<Request, String> {
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
pub(super) struct Expected {
    pub(super) json: Vec<(JsonPath, Value)>,
    pub(super) contains: Option<Contains<Value>>,
    pub(super) body: Option<String>,
}

pub(super) fn render_expectations(check: &Check, scope: &Scope<'_>) -> Result<Expected, Missing> {
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

pub(super) async fn attempt(
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
        let headers = response.headers().clone();
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
        Ok::<_, reqwest::Error>((status, content_type, headers, body))
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
        Ok(Ok((status, content_type, headers, body))) => {
            judge(check, expected, status, content_type.as_deref(), &headers, &body)
        }
    }
}

/// A transport error in words, naming the host and port but never the URL (its query may hold a secret).
/// A client from `builder` that also trusts the CA certificates in the PEM file `file`.
pub(super) fn client_trusting(file: &str, mut builder: reqwest::ClientBuilder) -> Result<reqwest::Client, String> {
    let pem = std::fs::read(file).map_err(|e| format!("cannot read ca_file {file}: {e}"))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("ca_file {file} holds no usable PEM certificate ({e})"))?;
    if certificates.is_empty() {
        return Err(format!("ca_file {file} holds no PEM certificate"));
    }
    for certificate in certificates {
        builder = builder.add_root_certificate(certificate);
    }
    builder.build().map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// The run's default timeout for one attempt (`timeout`), 10 s when it does not parse.
fn compiled_timeout(config: &VerifyConfig) -> Duration {
    parse_duration(&config.timeout).ok().filter(|t| !t.is_zero()).unwrap_or(Duration::from_secs(10))
}

pub(super) fn describe_error(error: &reqwest::Error, target: &str) -> String {
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
