//! Prometheus' HTTP API, the one call the watch needs: an instant query (`GET /api/v1/query`).
//!
//! A query answers with a number, or with why it could not: no data (an empty vector, `NaN`),
//! a refused query, an unreachable server. The caller reports those; nothing here turns them
//! into "healthy".

use std::time::Duration;

use serde::Deserialize;

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
}

#[derive(Debug, Clone)]
pub struct Prometheus {
    base: String,
    http: reqwest::Client,
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
    pub fn new(base: &str, http: reqwest::Client) -> Prometheus {
        Prometheus { base: base.trim_end_matches('/').to_string(), http }
    }

    /// The value of the first sample of an instant query.
    #[tracing::instrument(skip(self), fields(prometheus = %self.base))]
    pub async fn query(&self, promql: &str) -> Result<f64, QueryError> {
        let url = format!("{}/api/v1/query", self.base);
        let unreachable = |e: reqwest::Error| QueryError::Unreachable { url: self.base.clone(), reason: without_url(e) };
        let response = self.http.get(&url).query(&[("query", promql)]).timeout(Duration::from_secs(10)).send().await.map_err(unreachable)?;
        let status = response.status();
        let body = response.text().await.map_err(unreachable)?;
        parse_answer(&body).map_err(|e| match e {
            QueryError::Malformed(_) if !status.is_success() => QueryError::Refused(format!("HTTP {status}: {}", body.chars().take(200).collect::<String>())),
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
