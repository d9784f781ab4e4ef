//! For `deploybot demo`, which installs nothing: a stand-in for Prometheus that answers one
//! PromQL query on `GET /api/v1/query` — an environment's 5xx ratio — computed the way
//! Prometheus would (`rate()` of Micrometer's `http_server_requests_seconds_count` over a short
//! window), from the stand-in app's own `/actuator/prometheus`, which it scrapes every half
//! second. Any other query is refused with Prometheus' own error shape. The watch talks to it
//! through the same client and code as to a real Prometheus.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

/// The one query the source answers for `env`, with the window it computes over.
pub fn error_ratio_query(env: &str, window_secs: u64) -> String {
    format!(
        "sum(rate(http_server_requests_seconds_count{{env=\"{env}\",status=~\"5..\"}}[{window_secs}s])) / sum(rate(http_server_requests_seconds_count{{env=\"{env}\"}}[{window_secs}s]))"
    )
}

struct Inner {
    query: String,
    window: Duration,
    /// (when, all requests, 5xx responses), oldest first; cleared when the counters reset.
    samples: Mutex<VecDeque<(Instant, f64, f64)>>,
}

/// Sums the request counters of a Prometheus text exposition: (all, 5xx).
pub fn request_counts(text: &str) -> (f64, f64) {
    let mut all = 0.0;
    let mut errors = 0.0;
    for line in text.lines().filter(|l| l.starts_with("http_server_requests_seconds_count{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let Ok(v) = value.parse::<f64>() else { continue };
        all += v;
        if labels.contains("status=\"5") {
            errors += v;
        }
    }
    (all, errors)
}

/// Starts the source on `listener`, scraping `scrape_url`; it runs until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, env: &str, scrape_url: String, window: Duration) -> tokio::task::JoinHandle<()> {
    let inner = Arc::new(Inner { query: error_ratio_query(env, window.as_secs().max(1)), window, samples: Mutex::new(VecDeque::new()) });
    let scraper = {
        let inner = inner.clone();
        async move {
            let http = reqwest::Client::new();
            loop {
                if let Ok(text) = async { http.get(&scrape_url).timeout(Duration::from_secs(2)).send().await?.text().await }.await {
                    let (all, errors) = request_counts(&text);
                    let mut samples = inner.samples.lock().unwrap_or_else(|p| p.into_inner());
                    if samples.back().is_some_and(|(_, a, _)| all < *a) {
                        samples.clear(); // a new process: counters start again, as Prometheus' rate() handles.
                    }
                    samples.push_back((Instant::now(), all, errors));
                    while samples.front().is_some_and(|(t, _, _)| t.elapsed() > inner.window + Duration::from_secs(1)) {
                        samples.pop_front();
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let router = Router::new().route("/api/v1/query", get(query)).with_state(inner);
    tokio::spawn(async move {
        tokio::select! {
            _ = scraper => {}
            _ = axum::serve(listener, router) => {}
        }
    })
}

#[derive(serde::Deserialize)]
struct Params {
    query: String,
}

async fn query(State(inner): State<Arc<Inner>>, Query(p): Query<Params>) -> Json<Value> {
    let normal = |s: &str| s.split_whitespace().collect::<String>();
    if normal(&p.query) != normal(&inner.query) {
        return Json(json!({"status": "error", "errorType": "bad_data", "error": format!("this demo source answers only {}", inner.query)}));
    }
    let samples = inner.samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let in_window: Vec<_> = samples.iter().filter(|(t, _, _)| t.elapsed() <= inner.window).collect();
    let result = match (in_window.first(), in_window.last()) {
        (Some(first), Some(last)) if last.1 > first.1 => vec![json!({"metric": {}, "value": [now, ((last.2 - first.2) / (last.1 - first.1)).to_string()]})],
        (Some(_), Some(_)) => vec![json!({"metric": {}, "value": [now, "NaN"]})],
        _ => vec![],
    };
    Json(json!({"status": "success", "data": {"resultType": "vector", "result": result}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_counters_are_summed_by_status_class() {
        let text = "# TYPE http_server_requests_seconds histogram\n\
            http_server_requests_seconds_bucket{error=\"none\",status=\"200\",uri=\"/\",le=\"+Inf\"} 8.0\n\
            http_server_requests_seconds_count{error=\"none\",exception=\"none\",method=\"GET\",outcome=\"SUCCESS\",status=\"200\",uri=\"/\"} 8.0\n\
            http_server_requests_seconds_count{error=\"none\",exception=\"none\",method=\"GET\",outcome=\"SERVER_ERROR\",status=\"500\",uri=\"/\"} 2.0\n\
            http_server_requests_seconds_count{error=\"none\",exception=\"none\",method=\"GET\",outcome=\"CLIENT_ERROR\",status=\"404\",uri=\"NOT_FOUND\"} 1.0\n";
        assert_eq!(request_counts(text), (11.0, 2.0));
    }
}
