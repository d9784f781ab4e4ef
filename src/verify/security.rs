//! Security checks (`[[environments.X.verify.security]]`): run in preflight against what runs now and
//! again in verify after the deployment. Each kind makes its own requests, with its own client (no
//! redirects followed, TLS details kept, a private CA when `ca_file` says so):
//!
//! - `tls`: the certificate is valid for the host (rustls verifies chain, name and dates) and does not
//!   expire within `min_days`;
//! - `https_redirect`: the `http://` URL answers a redirect to an `https://` one;
//! - `headers`: every header in `require` is in the response;
//! - `cors`: a CORS preflight from `disallowed_origin` is not allowed;
//! - `auth_required`: a request without credentials gets 401 or 403;
//! - `rate_limit`: of `requests` quick requests, at least one gets 429;
//! - `image_scan`: the ECR scan of `repository`:`tag` has no finding at or above `severity`.
//!
//! URLs and header values are templates like the HTTP checks' (`{version}`, `{env}`, `${VAR}`).

use super::*;

const KINDS: [&str; 7] = ["tls", "https_redirect", "headers", "cors", "auth_required", "rate_limit", "image_scan"];
const DEFAULT_MIN_DAYS: u32 = 14;
const DEFAULT_REQUESTS: u32 = 50;
const MAX_REQUESTS: u32 = 1000;

/// One `[[environments.X.verify.security]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// `tls`, `https_redirect`, `headers`, `cors`, `auth_required` or `rate_limit`.
    pub kind: String,
    /// Shown in reports; defaults to the kind and the URL.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    /// `tls`: the certificate must stay valid at least this many more days (default 14).
    #[serde(default)]
    pub min_days: Option<u32>,
    /// `headers`: response headers that must be present.
    #[serde(default)]
    pub require: Vec<String>,
    /// `cors`: an origin whose preflight must not be allowed.
    #[serde(default)]
    pub disallowed_origin: Option<String>,
    /// `rate_limit`: how many quick requests to send (default 50).
    #[serde(default)]
    pub requests: Option<u32>,
    /// `auth_required`, `rate_limit`, `cors` (the method asked for): default GET.
    #[serde(default)]
    pub method: Option<String>,
    /// Extra request headers (templates).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A PEM file of a private CA to trust besides the public roots (overrides `[bot] ca_file`).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Limit for one request; default the verify table's `timeout`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// `image_scan`: the ECR repository (`invoice-me-backend`).
    #[serde(default)]
    pub repository: Option<String>,
    /// `image_scan`: the image tag, a template (default `{version}`).
    #[serde(default)]
    pub tag: Option<String>,
    /// `image_scan`: findings at this severity or above fail (`CRITICAL`, `HIGH` (default), `MEDIUM`, `LOW`, `INFORMATIONAL`).
    #[serde(default)]
    pub severity: Option<String>,
    /// `image_scan`: the AWS region (default `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// `image_scan`: another ECR endpoint (emulators and tests).
    #[serde(default)]
    pub endpoint_url: Option<String>,
}

impl SecurityConfig {
    /// How reports name it: `name`, or the kind and the URL without credentials.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None if self.kind == "image_scan" => format!("image_scan {}:{}", self.repository.as_deref().unwrap_or_default(), self.tag.as_deref().unwrap_or("{version}")),
            None => format!("{} {}", self.kind, crate::secrets::display_url(self.url.as_deref().unwrap_or_default())),
        }
    }

    /// Problems as (field, message); empty when it can run. No I/O.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, message: String| problems.push((field.to_owned(), message));
        let kind = self.kind.as_str();
        if !KINDS.contains(&kind) {
            problem("kind", format!("unknown security check kind {:?} (one of {})", self.kind, KINDS.join(", ")));
            return problems;
        }
        if kind == "image_scan" {
            if self.repository.as_deref().is_none_or(|r| r.trim().is_empty()) {
                problem("repository", "an image_scan check needs the ECR repository, e.g. \"invoice-me-backend\"".to_owned());
            }
            if let Some(severity) = &self.severity {
                if !ecr_scan::SEVERITIES.contains(&severity.as_str()) {
                    problem("severity", format!("{severity:?} is not an ECR severity ({})", ecr_scan::SEVERITIES.join(", ")));
                }
            }
            if let Some(tag) = &self.tag {
                if let Err(message) = Template::parse(tag) {
                    problem("tag", message);
                }
            }
            if let Some(url) = &self.endpoint_url {
                if url::Url::parse(url).is_err() {
                    problem("endpoint_url", format!("{url:?} is not a URL"));
                }
            }
        }
        let image_keys = self.repository.is_some() || self.tag.is_some() || self.severity.is_some() || self.region.is_some() || self.endpoint_url.is_some();
        if image_keys && kind != "image_scan" {
            problem("repository", "repository, tag, severity, region and endpoint_url only mean something with kind = \"image_scan\"".to_owned());
        }
        match self.url.as_deref() {
            None if kind == "image_scan" => {}
            Some(_) if kind == "image_scan" => problem("url", "an image_scan check reads ECR, not a URL: set repository (and tag)".to_owned()),
            None => problem("url", format!("a {kind} check needs url")),
            Some(url) => match Template::parse(url) {
                Err(message) => problem("url", message),
                Ok(template) => {
                    for name in template.vars() {
                        if !["version", "env", "sha"].contains(&name) {
                            problem("url", format!("unknown placeholder {{{name}}} (known here: version, env, sha)"));
                        }
                    }
                    match url::Url::parse(&template.dummy()) {
                        Ok(parsed) if !parsed.has_host() => problem("url", "must have a host".to_owned()),
                        Ok(parsed) => match (kind, parsed.scheme()) {
                            ("tls", "https") | ("https_redirect", "http") => {}
                            ("tls", other) => problem("url", format!("a tls check needs an https:// URL, not {other}:")),
                            ("https_redirect", other) => problem("url", format!("an https_redirect check needs the http:// URL that should redirect, not {other}:")),
                            (_, "http" | "https") => {}
                            (_, other) => problem("url", format!("must be an http:// or https:// URL, not {other}:")),
                        },
                        Err(e) => problem("url", format!("{url:?} is not a valid URL ({e})")),
                    }
                }
            },
        }
        let only = |field: &str, set: bool, kinds: &[&str], problem: &mut dyn FnMut(&str, String)| {
            if set && !kinds.contains(&kind) {
                problem(field, format!("only means something with kind = {}", kinds.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(" or ")));
            }
        };
        only("min_days", self.min_days.is_some(), &["tls"], &mut problem);
        only("require", !self.require.is_empty(), &["headers"], &mut problem);
        only("disallowed_origin", self.disallowed_origin.is_some(), &["cors"], &mut problem);
        only("requests", self.requests.is_some(), &["rate_limit"], &mut problem);
        only("method", self.method.is_some(), &["auth_required", "rate_limit", "cors"], &mut problem);
        if kind == "headers" && self.require.is_empty() {
            problem("require", "list the headers the response must have, e.g. [\"Strict-Transport-Security\"]".to_owned());
        }
        for (i, name) in self.require.iter().enumerate() {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                problem(&format!("require[{i}]"), format!("{name:?} is not a valid header name"));
            }
        }
        if kind == "cors" {
            match self.disallowed_origin.as_deref() {
                None => problem("disallowed_origin", "a cors check needs the origin that must be refused, e.g. \"https://evil.example\"".to_owned()),
                Some(origin) => match url::Url::parse(origin) {
                    Ok(u) if u.has_host() && matches!(u.scheme(), "http" | "https") && u.path() == "/" && !origin.ends_with('/') => {}
                    _ => problem("disallowed_origin", format!("{origin:?} is not an origin (scheme://host[:port], no path)")),
                },
            }
        }
        if let Some(n) = self.requests {
            if n == 0 || n > MAX_REQUESTS {
                problem("requests", format!("must be from 1 to {MAX_REQUESTS}"));
            }
        }
        if let Some(method) = &self.method {
            if !METHODS.contains(&method.trim().to_ascii_uppercase().as_str()) {
                problem("method", format!("{method:?} is not an HTTP method ({})", METHODS.join(", ")));
            }
        }
        for (name, value) in &self.headers {
            let field = format!("headers.{name}");
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                problem(&field, format!("{name:?} is not a valid header name"));
            }
            if let Err(message) = Template::parse(value) {
                problem(&field, message);
            }
        }
        if let Some(timeout) = &self.timeout {
            match parse_duration(timeout) {
                Ok(t) if t.is_zero() => problem("timeout", "must be more than 0s".to_owned()),
                Ok(_) => {}
                Err(message) => problem("timeout", message),
            }
        }
        if self.ca_file.as_deref().is_some_and(|f| f.trim().is_empty()) {
            problem("ca_file", "must not be empty".to_owned());
        }
        problems
    }

    /// The `${VAR}`s it reads.
    pub(super) fn envs(&self) -> Vec<String> {
        let mut out = Vec::new();
        for text in self.url.iter().chain(self.headers.values()) {
            if let Ok(template) = Template::parse(text) {
                out.extend(template.envs().map(str::to_owned));
            }
        }
        out
    }
}

/// Runs one security check; never panics, every failure is one line.
pub(super) async fn run_security_check(check: &SecurityConfig, index: usize, scope: &Scope<'_>, default_timeout: Duration, default_ca_file: Option<&str>) -> CheckOutcome {
    let started = Instant::now();
    let outcome = |ok: bool, attempts: u32, status: Option<u16>, detail: String| CheckOutcome {
        name: check.display_name(),
        kind: CheckKind::Security,
        ok,
        skipped: false,
        attempts,
        status,
        elapsed: started.elapsed(),
        detail,
    };
    let problems = check.validate();
    if !problems.is_empty() {
        let text: Vec<String> = problems.iter().map(|(field, message)| format!("security[{index}].{field}: {message}")).collect();
        return outcome(false, 0, None, format!("invalid configuration: {}", text.join("; ")));
    }
    if check.kind == "image_scan" {
        let tag = match Template::parse(check.tag.as_deref().unwrap_or("{version}")).map_err(|e| e.to_string()).and_then(|t| t.render(scope).map_err(|m| m.to_string())) {
            Ok(tag) => tag,
            Err(detail) => return outcome(false, 0, None, detail),
        };
        let scan = ecr_scan::Scan {
            repository: check.repository.as_deref().unwrap_or_default(),
            tag: &tag,
            severity: check.severity.as_deref().unwrap_or("HIGH"),
            region: check.region.as_deref().unwrap_or("us-east-1"),
            endpoint_url: check.endpoint_url.as_deref(),
        };
        let timeout = check.timeout.as_deref().and_then(|t| parse_duration(t).ok()).unwrap_or(default_timeout);
        return match ecr_scan::check(&scan, scope.aws, timeout).await {
            Ok(detail) => outcome(true, 1, None, detail),
            Err(detail) => outcome(false, 1, None, detail),
        };
    }
    match run_kind(check, scope, default_timeout, check.ca_file.as_deref().or(default_ca_file)).await {
        Ok((attempts, status, detail)) => outcome(true, attempts, status, detail),
        Err((attempts, status, detail)) => outcome(false, attempts, status, detail),
    }
}

type Found = (u32, Option<u16>, String);

async fn run_kind(check: &SecurityConfig, scope: &Scope<'_>, default_timeout: Duration, ca_file: Option<&str>) -> Result<Found, Found> {
    let fail = |detail: String| (0u32, None, detail);
    let render = |text: &str| -> Result<String, Found> {
        let template = Template::parse(text).map_err(fail)?;
        template.render(scope).map_err(|missing| fail(missing.to_string()))
    };
    let url_text = render(check.url.as_deref().unwrap_or_default())?;
    let url = url::Url::parse(&url_text).map_err(|e| fail(format!("URL is not valid after substitution ({e})")))?;
    let host = url.host_str().unwrap_or_default().to_owned();
    let target = match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.clone(),
    };
    let timeout = check.timeout.as_deref().and_then(|t| parse_duration(t).ok()).unwrap_or(default_timeout);
    let builder = reqwest::Client::builder().user_agent("deploybot").redirect(reqwest::redirect::Policy::none()).timeout(timeout).tls_info(true);
    let client = match ca_file {
        Some(file) => client_trusting(file, builder).map_err(fail)?,
        None => builder.build().map_err(|e| fail(format!("cannot build an HTTP client: {e}")))?,
    };
    let method = check
        .method
        .as_deref()
        .map(|m| Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()).unwrap_or(Method::GET))
        .unwrap_or(Method::GET);
    let mut extra = Vec::new();
    for (name, value) in &check.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| fail(format!("{name:?} is not a valid header name")))?;
        let value = HeaderValue::from_str(&render(value)?).map_err(|_| fail(format!("header {name} is not a valid header value after substitution")))?;
        extra.push((name, value));
    }
    let send = |method: Method, headers: Vec<(HeaderName, HeaderValue)>| {
        let mut request = client.request(method, url.clone());
        for (name, value) in extra.iter().cloned().chain(headers) {
            request = request.header(name, value);
        }
        let target = target.clone();
        async move { request.send().await.map_err(|e| (1u32, None, transport_error(&e, &target))) }
    };

    match check.kind.as_str() {
        "tls" => {
            let response = send(Method::GET, Vec::new()).await?;
            let status = Some(response.status().as_u16());
            let der = response
                .extensions()
                .get::<reqwest::tls::TlsInfo>()
                .and_then(|info| info.peer_certificate())
                .ok_or((1, status, format!("{target} presented no certificate")))?;
            let not_after = certificate_not_after(der).ok_or((1, status, format!("could not read the expiry of {target}'s certificate")))?;
            let left = not_after - chrono::Utc::now();
            let min_days = check.min_days.unwrap_or(DEFAULT_MIN_DAYS);
            let when = not_after.format("%Y-%m-%d");
            if left < chrono::Duration::days(min_days.into()) {
                Err((1, status, format!("the certificate of {host} expires {when} (in {} days), within min_days {min_days}", left.num_days())))
            } else {
                Ok((1, status, format!("the certificate of {host} is valid until {when} ({} days)", left.num_days())))
            }
        }
        "https_redirect" => {
            let response = send(Method::GET, Vec::new()).await?;
            let status = response.status().as_u16();
            let location = response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
            match (response.status().is_redirection(), location) {
                (true, Some(location)) if location.starts_with("https://") => Ok((1, Some(status), format!("{status} to {}", crate::secrets::display_url(&location)))),
                (true, Some(location)) => Err((1, Some(status), format!("redirects to {}, not to https://", crate::secrets::display_url(&location)))),
                (true, None) => Err((1, Some(status), format!("answered {status} without a Location header"))),
                (false, _) => Err((1, Some(status), format!("answered {status} over plain HTTP instead of redirecting to https://"))),
            }
        }
        "headers" => {
            let response = send(Method::GET, Vec::new()).await?;
            let status = response.status().as_u16();
            let wanted: Vec<(HeaderName, String)> = check.require.iter().filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok()).map(|name| (name, String::new())).collect();
            match header_mismatch(&wanted, response.headers()) {
                Some(problem) => Err((1, Some(status), problem)),
                None => Ok((1, Some(status), format!("{} present", check.require.join(", ")))),
            }
        }
        "cors" => {
            let origin = check.disallowed_origin.clone().unwrap_or_default();
            let asked = check.method.as_deref().unwrap_or("GET").trim().to_ascii_uppercase();
            let headers = vec![
                (reqwest::header::ORIGIN, HeaderValue::from_str(&origin).map_err(|_| fail(format!("{origin:?} is not a valid Origin header")))?),
                (reqwest::header::ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_str(&asked).unwrap_or(HeaderValue::from_static("GET"))),
            ];
            let response = send(Method::OPTIONS, headers).await?;
            let status = response.status().as_u16();
            let allowed = response.headers().get(reqwest::header::ACCESS_CONTROL_ALLOW_ORIGIN).map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned());
            match allowed {
                Some(value) if value == "*" || value.eq_ignore_ascii_case(&origin) => {
                    Err((1, Some(status), format!("a CORS preflight from {origin} was allowed (status {status}, Access-Control-Allow-Origin: {value})")))
                }
                Some(value) => Ok((1, Some(status), format!("a CORS preflight from {origin} was refused (status {status}, allowed origin {value})"))),
                None => Ok((1, Some(status), format!("a CORS preflight from {origin} was refused (status {status}, no Access-Control-Allow-Origin)"))),
            }
        }
        "auth_required" => {
            let response = send(method.clone(), Vec::new()).await?;
            let status = response.status().as_u16();
            if status == 401 || status == 403 {
                Ok((1, Some(status), format!("{status} without credentials")))
            } else {
                let body = response.text().await.unwrap_or_default();
                Err((1, Some(status), format!("{method} answered {status} without credentials, expected 401 or 403 — body: {}", quote_body(&body))))
            }
        }
        "rate_limit" => {
            let total = check.requests.unwrap_or(DEFAULT_REQUESTS);
            let mut seen: BTreeMap<u16, u32> = BTreeMap::new();
            let began = Instant::now();
            for number in 1..=total {
                let response = send(method.clone(), Vec::new()).await.map_err(|(_, _, detail)| (number, None, format!("request {number} of {total}: {detail}")))?;
                let status = response.status().as_u16();
                if status == 429 {
                    return Ok((number, Some(429), format!("429 after {number} of {total} requests")));
                }
                *seen.entry(status).or_default() += 1;
            }
            let statuses: Vec<String> = seen.iter().map(|(status, n)| format!("{status} ×{n}")).collect();
            Err((total, seen.keys().last().copied(), format!("none of {total} requests in {} was answered 429 ({}): no rate limit observed", human(began.elapsed()), statuses.join(", "))))
        }
        other => Err(fail(format!("unknown security check kind {other:?}"))),
    }
}

/// A transport error in words; for TLS, what was wrong with the certificate.
fn transport_error(error: &reqwest::Error, target: &str) -> String {
    let mut chain = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        chain.push_str(&format!("{cause:?} {cause} "));
        source = cause.source();
    }
    let host = target.rsplit_once(':').map_or(target, |(host, _)| host);
    if chain.contains("Expired") {
        format!("the certificate of {target} has expired")
    } else if chain.contains("NotValidForName") {
        format!("the certificate of {target} is not valid for {host}")
    } else if chain.contains("NotValidYet") {
        format!("the certificate of {target} is not valid yet")
    } else if chain.contains("UnknownIssuer") {
        format!("the certificate of {target} is not signed by a trusted CA (set ca_file for a private CA)")
    } else {
        describe_error(error, target)
    }
}

/// `notAfter` of a DER X.509 certificate: Certificate → TBSCertificate → Validity, read by hand.
pub(super) fn certificate_not_after(der: &[u8]) -> Option<chrono::DateTime<chrono::Utc>> {
    /// One TLV at the start of `input`: (tag, contents, rest).
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let length = if first < 0x80 {
            first as usize
        } else {
            let bytes = (first & 0x7f) as usize;
            if bytes == 0 || bytes > 4 || rest.len() < bytes {
                return None;
            }
            let (len, after) = rest.split_at(bytes);
            rest = after;
            len.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize)
        };
        if rest.len() < length {
            return None;
        }
        let (contents, rest) = rest.split_at(length);
        Some((tag, contents, rest))
    }
    let (0x30, certificate, _) = tlv(der)? else { return None };
    let (0x30, tbs, _) = tlv(certificate)? else { return None };
    let mut rest = tbs;
    // [0] version (optional), serialNumber, signature, issuer, then validity.
    let (tag, _, after) = tlv(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..3 {
        rest = tlv(rest)?.2;
    }
    let (0x30, validity, _) = tlv(rest)? else { return None };
    let (_, _, after_not_before) = tlv(validity)?;
    let (tag, time, _) = tlv(after_not_before)?;
    let text = std::str::from_utf8(time).ok()?;
    let full = match tag {
        // UTCTime: YYMMDDHHMMSSZ, years 50–99 are 19xx.
        0x17 => {
            let year: u32 = text.get(..2)?.parse().ok()?;
            format!("{}{text}", if year >= 50 { "19" } else { "20" })
        }
        0x18 => text.to_owned(),
        _ => return None,
    };
    let naive = chrono::NaiveDateTime::parse_from_str(full.trim_end_matches('Z'), "%Y%m%d%H%M%S").ok()?;
    Some(naive.and_utc())
}
