//! Prometheus' HTTP API, the one call the watch needs: an instant query (`GET /api/v1/query`).
//!
//! A query answers with a number, or with why it could not: no data (an empty vector, `NaN`),
//! a refused query, an unreachable server. The caller reports those; nothing here turns them
//! into "healthy".

use std::time::Duration;

use serde::Deserialize;

use super::rules::PrometheusAuth;
use crate::secrets::Secret;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("no data: the query returned no sample")]
    NoData,
    #[error("no data: the query returned NaN (no traffic in its window?)")]
    NotANumber,
    #[error("Prometheus refused the query: {0}")]
    Refused(String),
    #[error("Prometheus is unreachable at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Prometheus sent an answer that is not a query result: {0}")]
    Malformed(String),
    #[error("cannot authenticate to Prometheus: {0}")]
    Credentials(String),
}

#[derive(Debug, Clone)]
pub struct Prometheus {
    base: String,
    /// `base` as it may be shown: without credentials.
    shown: String,
    /// Why the configured credentials could not be read, reported by every query.
    auth: Result<Option<Credentials>, String>,
    http: reqwest::Client,
}

/// Prometheus credentials, read from the environment.
#[derive(Debug, Clone)]
pub enum Credentials {
    Bearer(Secret),
    Basic { username: Secret, password: Secret },
}

impl Credentials {
    fn resolve(auth: &PrometheusAuth, vars: &crate::secrets::Vars) -> Result<Credentials, String> {
        let resolve = |key: &str, r: &crate::secrets::SecretRef| r.resolve_in(vars).map_err(|e| format!("prometheus_auth.{key}: {e}"));
        match (&auth.token, &auth.username, &auth.password) {
            (Some(token), _, _) => Ok(Credentials::Bearer(resolve("token", token)?)),
            (None, Some(user), Some(password)) => Ok(Credentials::Basic { username: resolve("username", user)?, password: resolve("password", password)? }),
            _ => Err("prometheus_auth needs a token, or a username and a password".into()),
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<VectorSample>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct VectorSample {
    value: (f64, String),
}

impl Prometheus {
    pub fn new(base: &str, credentials: Option<Credentials>, http: reqwest::Client) -> Prometheus {
        Prometheus::with(base, Ok(credentials), http)
    }

    /// The client of a `[environments.X.monitor]` table: `prometheus_auth`'s variables are read now.
    pub fn from_config(base: &str, auth: Option<&PrometheusAuth>, vars: &crate::secrets::Vars, http: reqwest::Client) -> Prometheus {
        Prometheus::with(base, auth.map(|a| Credentials::resolve(a, vars)).transpose(), http)
    }

    fn with(base: &str, auth: Result<Option<Credentials>, String>, http: reqwest::Client) -> Prometheus {
        let base = base.trim_end_matches('/').to_string();
        Prometheus { shown: crate::secrets::display_url(&base), base, auth, http }
    }

    /// The value of the first sample of an instant query.
    #[tracing::instrument(skip(self), fields(prometheus = %self.shown))]
    pub async fn query(&self, promql: &str) -> Result<f64, QueryError> {
        let url = format!("{}/api/v1/query", self.base);
        let unreachable = |e: reqwest::Error| QueryError::Unreachable { url: self.shown.clone(), reason: without_url(e) };
        let mut request = self.http.get(&url).query(&[("query", promql)]).timeout(Duration::from_secs(10));
        request = match &self.auth {
            Err(e) => return Err(QueryError::Credentials(e.clone())),
            Ok(None) => request,
            Ok(Some(Credentials::Bearer(token))) => request.bearer_auth(token.expose()),
            Ok(Some(Credentials::Basic { username, password })) => request.basic_auth(username.expose(), Some(password.expose())),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let body = response.text().await.map_err(unreachable)?;
        parse_answer(&body).map_err(|e| match e {
            QueryError::Malformed(_) if !status.is_success() => {
                QueryError::Refused(format!("HTTP {status}: {}", crate::secrets::redact(&body.chars().take(200).collect::<String>())))
            }
            other => other,
        })
    }
}

/// The error and its causes ("error sending request: connection refused"), without the URL.
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// Reads the body of `/api/v1/query`.
pub fn parse_answer(body: &str) -> Result<f64, QueryError> {
    let envelope: Envelope = serde_json::from_str(body).map_err(|e| QueryError::Malformed(e.to_string()))?;
    if envelope.status != "success" {
        let kind = envelope.error_type.unwrap_or_else(|| "error".into());
        return Err(QueryError::Refused(format!("{kind}: {}", envelope.error.unwrap_or_default())));
    }
    let text = match envelope.data {
        Some(Data::Vector(samples)) => samples.into_iter().next().map(|s| s.value.1).ok_or(QueryError::NoData)?,
        Some(Data::Scalar((_, v))) => v,
        Some(Data::Matrix(_)) => return Err(QueryError::Refused("a range vector is not an instant value; wrap it in a function such as rate()".into())),
        Some(Data::String(_)) | None => return Err(QueryError::Malformed("no vector or scalar in the answer".into())),
    };
    let value: f64 = text.parse().map_err(|_| QueryError::Malformed(format!("sample value \"{text}\" is not a number")))?;
    if value.is_nan() {
        return Err(QueryError::NotANumber);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    /// A Prometheus query endpoint that answers 0.5 only to `expected` in `Authorization`.
    async fn guarded_prometheus(expected: &'static str) -> String {
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::get(move |headers: HeaderMap| async move {
                if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected) {
                    (axum::http::StatusCode::OK, r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.5"]}]}}"#)
                } else {
                    (axum::http::StatusCode::UNAUTHORIZED, "Unauthorized")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_query_sends_the_configured_bearer_or_basic_credentials() {
        let http = reqwest::Client::new();
        let base = guarded_prometheus("Bearer prom-tok-8812").await;
        let bearer = Credentials::Bearer(Secret::from_value("prom-tok-8812".into()));
        assert_eq!(Prometheus::new(&base, Some(bearer), http.clone()).query("up").await, Ok(0.5));
        let refused = Prometheus::new(&base, None, http.clone()).query("up").await.unwrap_err();
        assert!(matches!(&refused, QueryError::Refused(r) if r.contains("401")), "{refused:?}");

        // base64("prom:pw-basic-77") = cHJvbTpwdy1iYXNpYy03Nw==
        let base = guarded_prometheus("Basic cHJvbTpwdy1iYXNpYy03Nw==").await;
        let basic = Credentials::Basic { username: Secret::from_value("prom".into()), password: Secret::from_value("pw-basic-77".into()) };
        assert_eq!(Prometheus::new(&base, Some(basic), http).query("up").await, Ok(0.5));
    }

    #[tokio::test]
    async fn an_unreachable_prometheus_is_named_without_the_credentials_of_its_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let prometheus = Prometheus::new(&format!("http://admin:pw-in-url-31@127.0.0.1:{port}/"), None, reqwest::Client::new());
        let e = prometheus.query("up").await.unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with(&format!("Prometheus is unreachable at http://127.0.0.1:{port}:")), "{text}");
        assert!(!text.contains("pw-in-url-31") && !text.contains("admin"), "{text}");
    }

    #[test]
    fn credentials_whose_variable_is_unset_are_reported_by_each_query() {
        let auth: PrometheusAuth = toml::from_str(r#"token = "${DEPLOYBOT_TEST_SURELY_UNSET_PROM_TOKEN}""#).unwrap();
        let prometheus = Prometheus::from_config("http://127.0.0.1:9", Some(&auth), &crate::secrets::Vars::from_pairs([("OTHER", "x")]), reqwest::Client::new());
        let e = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(prometheus.query("up")).unwrap_err();
        assert_eq!(e.to_string(), "cannot authenticate to Prometheus: prometheus_auth.token: environment variable DEPLOYBOT_TEST_SURELY_UNSET_PROM_TOKEN is not set");
    }

    #[test]
    fn answers_are_read_as_the_first_sample_or_as_why_there_is_none() {
        let check = |body: &str, expected: Result<f64, QueryError>| assert_eq!(parse_answer(body), expected, "{body}");
        check(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"0.2"]},{"metric":{"a":"b"},"value":[1,"9"]}]}}"#, Ok(0.2));
        check(r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"1"]}}"#, Ok(1.0));
        check(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#, Err(QueryError::NoData));
        check(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#, Err(QueryError::NotANumber));
        check(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"+Inf"]}]}}"#, Ok(f64::INFINITY));
        check(r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#, Err(QueryError::Refused("bad_data: parse error at char 5".into())));
        assert!(matches!(parse_answer("<html>"), Err(QueryError::Malformed(_))));
        assert!(matches!(parse_answer(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#), Err(QueryError::Refused(_))));
    }
}
