//! `kind = "statuspage"`: Atlassian Statuspage's REST API (`/v1/pages/{page_id}/incidents`, an
//! `Authorization: OAuth <token>` header). A deployment that starts running opens a maintenance
//! (`status = "in_progress"`, scheduled for the window it may take) on the configured components;
//! when it ends the maintenance is completed with the outcome — or, when it ended badly
//! (rolled back, rollback failed, failed), an incident is opened as well so the page shows it.

use serde_json::{json, Value};

use super::config::StatuspageConfig;
use super::{Delivery, Record};

fn incidents_url(config: &StatuspageConfig) -> String {
    format!("{}/pages/{}/incidents", config.api_url.trim_end_matches('/'), config.page_id)
}

/// The body that opens the maintenance for `record` (which started running at `now`).
pub fn maintenance_body(config: &StatuspageConfig, record: &Record, now: chrono::DateTime<chrono::Utc>, window: std::time::Duration) -> Value {
    let until = now + chrono::Duration::from_std(window).unwrap_or(chrono::Duration::hours(1));
    json!({ "incident": {
        "name": format!("Deployment of {} to {}", record.version, record.env),
        "status": "in_progress",
        "impact_override": "maintenance",
        "scheduled_for": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "scheduled_until": until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "scheduled_auto_completed": false,
        "body": format!("deploybot is deploying {} to {} (#{}, requested by {}).", record.version, record.env, record.id, record.requested_by),
        "component_ids": config.component_ids,
        "deliver_notifications": true,
    }})
}

/// The body that completes the maintenance with the outcome.
pub fn completion_body(record: &Record) -> Value {
    json!({ "incident": {
        "status": "completed",
        "body": format!("Deployment #{} of {} to {} ended: {}.", record.id, record.version, record.env, record.event.replace('_', " ")),
    }})
}

/// For an outcome that hurt (rolled back, rollback failed, failed): the incident to open.
pub fn incident_body(config: &StatuspageConfig, record: &Record) -> Option<Value> {
    let (status, impact) = match record.event.as_str() {
        "rolled_back" => ("resolved", "minor"),
        "failed" => ("monitoring", "minor"),
        "rollback_failed" => ("identified", "major"),
        _ => return None,
    };
    let components: serde_json::Map<String, Value> = config
        .component_ids
        .iter()
        .map(|c| (c.clone(), json!(if status == "resolved" { "operational" } else { "degraded_performance" })))
        .collect();
    Some(json!({ "incident": {
        "name": format!("{} {} {}", record.env, record.version, record.event.replace('_', " ")),
        "status": status,
        "impact_override": impact,
        "body": format!("Deployment #{} of {} to {} {}. {}", record.id, record.version, record.env, record.event.replace('_', " "), record.error.as_deref().unwrap_or("")).trim().to_string(),
        "component_ids": config.component_ids,
        "components": components,
    }}))
}

/// One call; `Ok(answer)` for a 2xx.
async fn call(http: &reqwest::Client, token: &str, method: reqwest::Method, url: &str, body: &Value) -> Result<Value, Delivery> {
    let response = http
        .request(method.clone(), url)
        .header(reqwest::header::AUTHORIZATION, format!("OAuth {token}"))
        .json(body)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| Delivery::Retry(format!("cannot reach Statuspage at {}: {}", crate::secrets::display_url(url), crate::targets::docker::chain(&e))))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if status.is_success() {
        return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
    }
    let why = format!("Statuspage answered {method} {} with HTTP {}: {}", crate::secrets::display_url(url), status.as_u16(), text.chars().take(300).collect::<String>().trim());
    Err(if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS { Delivery::Retry(why) } else { Delivery::Refused(why) })
}

/// Opens the maintenance; the incident id is the result later rows need.
pub async fn open(config: &StatuspageConfig, token: &str, http: &reqwest::Client, record: &Record, now: chrono::DateTime<chrono::Utc>) -> Delivery {
    let window = crate::config::parse_duration(&config.window).unwrap_or(std::time::Duration::from_secs(3600));
    match call(http, token, reqwest::Method::POST, &incidents_url(config), &maintenance_body(config, record, now, window)).await {
        Ok(answer) => match answer["id"].as_str() {
            Some(id) => Delivery::Done(Some(id.to_string())),
            None => Delivery::Refused("Statuspage created the maintenance but its answer has no id".into()),
        },
        Err(d) => d,
    }
}

/// Completes the maintenance `incident` (when one was opened) and opens an incident for an
/// outcome that hurt.
pub async fn close(config: &StatuspageConfig, token: &str, http: &reqwest::Client, record: &Record, incident: Option<&str>) -> Delivery {
    if let Some(id) = incident {
        let url = format!("{}/{id}", incidents_url(config));
        if let Err(d) = call(http, token, reqwest::Method::PATCH, &url, &completion_body(record)).await {
            return d;
        }
    }
    match incident_body(config, record) {
        Some(body) => match call(http, token, reqwest::Method::POST, &incidents_url(config), &body).await {
            Ok(answer) => Delivery::Done(answer["id"].as_str().map(str::to_string)),
            Err(d) => d,
        },
        None => Delivery::Done(None),
    }
}
