//! Alertmanager's webhook payload (version 4) and how one alert reads in the channel.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// The body Alertmanager POSTs to a webhook receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    pub version: String,
    #[serde(default)]
    pub group_key: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub external_url: String,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: DateTime<Utc>,
    /// `0001-01-01T00:00:00Z` while firing.
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    #[error("not an Alertmanager webhook payload: {0}")]
    Invalid(String),
    #[error("webhook payload version {0} is not supported (version 4 is)")]
    Version(String),
}

/// Parses a webhook body; only version 4 is accepted.
pub fn parse(body: &[u8]) -> Result<Payload, PayloadError> {
    let payload: Payload = serde_json::from_slice(body).map_err(|e| PayloadError::Invalid(e.to_string()))?;
    if payload.version != "4" {
        return Err(PayloadError::Version(payload.version));
    }
    Ok(payload)
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map(String::as_str).unwrap_or("alert")
    }

    pub fn resolved(&self) -> bool {
        self.status == "resolved"
    }

    /// The end of a resolved alert (Alertmanager sends year 1 while it fires).
    pub fn ended(&self) -> Option<DateTime<Utc>> {
        self.ends_at.filter(|t| self.resolved() && t.timestamp() > 0)
    }

    /// One firing episode of an alert: Alertmanager keeps the fingerprint for a label set and
    /// `startsAt` for as long as it fires, so a later re-fire is a new message.
    pub fn episode_key(&self) -> String {
        format!("alertmanager:{}:{}", self.fingerprint, self.starts_at.timestamp_millis())
    }

    /// The annotation that says what is wrong: `summary`, else `description`, else `message`.
    pub fn summary(&self) -> Option<&str> {
        ["summary", "description", "message"].iter().find_map(|k| self.annotations.get(*k).map(String::as_str)).filter(|s| !s.trim().is_empty())
    }
}

/// "4 min", "2 h 5 min", "40 s".
pub fn span(ms: i64) -> String {
    let s = (ms.max(0) + 500) / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 if (s % 3600) / 60 == 0 => format!("{} h", s / 3600),
        3600..=86_399 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRING: &str = r#"{
      "version": "4", "groupKey": "{}:{alertname=\"HighErrorRate\"}", "truncatedAlerts": 0, "status": "firing",
      "receiver": "deploybot", "groupLabels": {"alertname": "HighErrorRate"}, "commonLabels": {"alertname": "HighErrorRate", "env": "staging"},
      "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093",
      "alerts": [{
        "status": "firing", "labels": {"alertname": "HighErrorRate", "env": "staging", "severity": "page"},
        "annotations": {"summary": "5xx ratio above 1%"},
        "startsAt": "2026-12-01T15:09:00.123Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=x", "fingerprint": "c3f9b0a2d1e4f567"
      }]
    }"#;

    #[test]
    fn a_version_4_payload_is_read_alert_by_alert() {
        let p = parse(FIRING.as_bytes()).unwrap();
        assert_eq!(p.alerts.len(), 1);
        let a = &p.alerts[0];
        assert_eq!(a.name(), "HighErrorRate");
        assert_eq!(a.labels["env"], "staging");
        assert_eq!(a.summary(), Some("5xx ratio above 1%"));
        assert!(!a.resolved());
        assert_eq!(a.ended(), None, "year 1 means still firing");
        assert_eq!(a.episode_key(), "alertmanager:c3f9b0a2d1e4f567:1796137740123");
    }

    #[test]
    fn a_resolved_alert_keeps_its_episode_key() {
        let resolved = FIRING.replacen("\"status\": \"firing\", \"labels\"", "\"status\": \"resolved\", \"labels\"", 1).replace("0001-01-01T00:00:00Z", "2026-12-01T15:13:00Z");
        let p = parse(resolved.as_bytes()).unwrap();
        let a = &p.alerts[0];
        assert!(a.resolved());
        assert_eq!(a.ended().map(|t| t.to_rfc3339()), Some("2026-12-01T15:13:00+00:00".into()));
        assert_eq!(a.episode_key(), parse(FIRING.as_bytes()).unwrap().alerts[0].episode_key());
    }

    #[test]
    fn other_versions_and_other_bodies_are_refused() {
        assert_eq!(parse(FIRING.replace("\"version\": \"4\"", "\"version\": \"3\"").as_bytes()).err(), Some(PayloadError::Version("3".into())));
        assert!(matches!(parse(b"{}"), Err(PayloadError::Invalid(_))));
        assert!(matches!(parse(b"not json"), Err(PayloadError::Invalid(_))));
    }

    #[test]
    fn spans_read_naturally() {
        for (ms, text) in [(0, "0 s"), (40_000, "40 s"), (240_000, "4 min"), (7_200_000, "2 h"), (7_500_000, "2 h 5 min"), (90_000_000, "1 d 1 h")] {
            assert_eq!(span(ms), text);
        }
    }
}
