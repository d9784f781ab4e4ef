//! Prometheus text exposition with Micrometer's names, so the bot's PromQL rules run unchanged against the
//! stand-in and a real Spring Boot service.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use crate::lock;
use crate::text::{prom_label, prom_number};

/// Upper bounds (seconds) of the latency histogram; `+Inf` is implied. Dense around the runbook's 1000 ms P95
/// threshold so that `histogram_quantile` lands on the right side of it.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesKey {
    method: String,
    outcome: &'static str,
    status: u16,
    uri: String,
}

#[derive(Debug, Default)]
struct Histogram {
    count: u64,
    sum: f64,
    max: f64,
    /// Non-cumulative counts per bucket of `BUCKETS`; cumulated when rendered.
    buckets: [u64; BUCKETS.len()],
}

#[derive(Debug, Default)]
pub(crate) struct RequestMetrics {
    series: Mutex<BTreeMap<SeriesKey, Histogram>>,
}

/// Gauges that come from the state rather than from request counting.
pub(crate) struct Gauges<'a> {
    pub version: &'a str,
    pub process_cpu: f64,
    pub system_cpu: f64,
    /// Fraction of each heap pool's max that is used.
    pub heap_used_ratio: f64,
    pub pool_active: u64,
    pub pool_pending: u64,
    pub uptime: Duration,
    pub start_unix: f64,
    pub ready_after: Duration,
}

/// Heap pools of the Parallel collector, whose maxima are all positive, so
/// `sum(jvm_memory_used_bytes{area="heap"}) / sum(jvm_memory_max_bytes{area="heap"})` is the heap usage.
const HEAP_POOLS: [(&str, f64); 3] = [
    ("PS Eden Space", 128.0 * 1024.0 * 1024.0),
    ("PS Survivor Space", 16.0 * 1024.0 * 1024.0),
    ("PS Old Gen", 368.0 * 1024.0 * 1024.0),
];
const NONHEAP_POOLS: [(&str, f64, f64); 2] = [
    ("Metaspace", 92.0 * 1024.0 * 1024.0, -1.0),
    ("CodeCache", 24.0 * 1024.0 * 1024.0, 240.0 * 1024.0 * 1024.0),
];
pub(crate) const POOL_MAX: u64 = 10;
const POOL: &str = "HikariPool-1";
const MAIN_CLASS: &str = "com.invoiceme.InvoiceMeApplication";

/// Spring's `outcome` tag.
fn outcome(status: u16) -> &'static str {
    match status {
        100..=199 => "INFORMATIONAL",
        200..=299 => "SUCCESS",
        300..=399 => "REDIRECTION",
        400..=499 => "CLIENT_ERROR",
        500..=599 => "SERVER_ERROR",
        _ => "UNKNOWN",
    }
}

impl RequestMetrics {
    pub(crate) fn record(&self, method: &str, uri: &str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let key = SeriesKey {
            method: method.to_owned(),
            outcome: outcome(status),
            status,
            uri: uri.to_owned(),
        };
        let mut series = lock(&self.series);
        let histogram = series.entry(key).or_default();
        histogram.count += 1;
        histogram.sum += seconds;
        histogram.max = histogram.max.max(seconds);
        if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            histogram.buckets[bucket] += 1;
        }
    }

    pub(crate) fn render(&self, gauges: &Gauges<'_>) -> String {
        let mut out = String::with_capacity(8 * 1024);
        self.render_requests(&mut out);
        render_gauges(&mut out, gauges);
        out
    }

    fn render_requests(&self, out: &mut String) {
        let series = lock(&self.series);
        let labels = |key: &SeriesKey| {
            format!(
                "error=\"none\",exception=\"none\",method=\"{}\",outcome=\"{}\",status=\"{}\",uri=\"{}\"",
                prom_label(&key.method),
                key.outcome,
                key.status,
                prom_label(&key.uri)
            )
        };
        out.push_str(
            "# HELP http_server_requests_seconds Duration of HTTP server request handling\n",
        );
        out.push_str("# TYPE http_server_requests_seconds histogram\n");
        for (key, histogram) in series.iter() {
            let labels = labels(key);
            let mut cumulative = 0;
            for (bound, count) in BUCKETS.iter().zip(histogram.buckets) {
                cumulative += count;
                let _ = writeln!(
                    out,
                    "http_server_requests_seconds_bucket{{{labels},le=\"{}\"}} {}",
                    prom_number(*bound),
                    prom_number(cumulative as f64)
                );
            }
            let count = prom_number(histogram.count as f64);
            let _ = writeln!(
                out,
                "http_server_requests_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "http_server_requests_seconds_count{{{labels}}} {count}"
            );
            let _ = writeln!(
                out,
                "http_server_requests_seconds_sum{{{labels}}} {}",
                prom_number(histogram.sum)
            );
        }
        out.push_str(
            "# HELP http_server_requests_seconds_max Duration of HTTP server request handling\n",
        );
        out.push_str("# TYPE http_server_requests_seconds_max gauge\n");
        for (key, histogram) in series.iter() {
            let _ = writeln!(
                out,
                "http_server_requests_seconds_max{{{}}} {}",
                labels(key),
                prom_number(histogram.max)
            );
        }
    }
}

fn gauge(out: &mut String, name: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {}", prom_number(*value));
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {}", prom_number(*value));
        }
    }
}

fn render_gauges(out: &mut String, g: &Gauges<'_>) {
    let none = String::new;
    gauge(
        out,
        "process_cpu_usage",
        "The \"recent cpu usage\" for the Java Virtual Machine process",
        &[(none(), g.process_cpu)],
    );
    gauge(
        out,
        "system_cpu_usage",
        "The \"recent cpu usage\" of the system the application is running in",
        &[(none(), g.system_cpu)],
    );
    gauge(
        out,
        "system_cpu_count",
        "The number of processors available to the Java virtual machine",
        &[(none(), 2.0)],
    );

    let heap = |id: &str| format!("area=\"heap\",id=\"{id}\"");
    let nonheap = |id: &str| format!("area=\"nonheap\",id=\"{id}\"");
    let used: Vec<(String, f64)> = HEAP_POOLS
        .iter()
        .map(|(id, max)| (heap(id), (max * g.heap_used_ratio).round()))
        .chain(
            NONHEAP_POOLS
                .iter()
                .map(|(id, used, _)| (nonheap(id), *used)),
        )
        .collect();
    let max: Vec<(String, f64)> = HEAP_POOLS
        .iter()
        .map(|(id, max)| (heap(id), *max))
        .chain(NONHEAP_POOLS.iter().map(|(id, _, max)| (nonheap(id), *max)))
        .collect();
    gauge(
        out,
        "jvm_memory_used_bytes",
        "The amount of used memory",
        &used,
    );
    gauge(
        out,
        "jvm_memory_max_bytes",
        "The maximum amount of memory in bytes that can be used for memory management",
        &max,
    );

    let pool = || format!("pool=\"{POOL}\"");
    let active = g.pool_active.min(POOL_MAX);
    gauge(
        out,
        "hikaricp_connections_active",
        "Active connections",
        &[(pool(), active as f64)],
    );
    gauge(
        out,
        "hikaricp_connections_idle",
        "Idle connections",
        &[(pool(), (POOL_MAX - active) as f64)],
    );
    gauge(
        out,
        "hikaricp_connections_pending",
        "Pending threads",
        &[(pool(), g.pool_pending as f64)],
    );
    gauge(
        out,
        "hikaricp_connections",
        "Total connections",
        &[(pool(), POOL_MAX as f64)],
    );
    gauge(
        out,
        "hikaricp_connections_max",
        "Max connections",
        &[(pool(), POOL_MAX as f64)],
    );
    gauge(
        out,
        "hikaricp_connections_min",
        "Min connections",
        &[(pool(), POOL_MAX as f64)],
    );

    let main_class = || format!("main_application_class=\"{MAIN_CLASS}\"");
    gauge(
        out,
        "application_ready_time_seconds",
        "Time taken for the application to be ready to service requests",
        &[(main_class(), g.ready_after.as_secs_f64())],
    );
    gauge(
        out,
        "process_uptime_seconds",
        "The uptime of the Java virtual machine",
        &[(none(), g.uptime.as_secs_f64())],
    );
    gauge(
        out,
        "process_start_time_seconds",
        "Start time of the process since unix epoch",
        &[(none(), g.start_unix)],
    );
    gauge(
        out,
        "app_info",
        "Build information of the running application",
        &[(format!("version=\"{}\"", prom_label(g.version)), 1.0)],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_the_count() {
        let metrics = RequestMetrics::default();
        metrics.record("GET", "/", 200, Duration::from_millis(3));
        metrics.record("GET", "/", 200, Duration::from_millis(1200));
        metrics.record("GET", "/", 200, Duration::from_secs(20));
        let mut out = String::new();
        metrics.render_requests(&mut out);
        let series = "error=\"none\",exception=\"none\",method=\"GET\",outcome=\"SUCCESS\",status=\"200\",uri=\"/\"";
        for (le, count) in [
            ("0.005", "1.0"),
            ("1.0", "1.0"),
            ("1.5", "2.0"),
            ("10.0", "2.0"),
            ("+Inf", "3.0"),
        ] {
            let line =
                format!("http_server_requests_seconds_bucket{{{series},le=\"{le}\"}} {count}\n");
            assert!(out.contains(&line), "missing {line} in\n{out}");
        }
        assert!(out.contains(&format!(
            "http_server_requests_seconds_count{{{series}}} 3.0\n"
        )));
        assert!(out.contains(&format!(
            "http_server_requests_seconds_max{{{series}}} 20.0\n"
        )));
    }

    #[test]
    fn outcome_follows_the_status_class() {
        for (status, expected) in [
            (101, "INFORMATIONAL"),
            (201, "SUCCESS"),
            (302, "REDIRECTION"),
            (401, "CLIENT_ERROR"),
            (503, "SERVER_ERROR"),
        ] {
            assert_eq!(outcome(status), expected);
        }
    }
}
