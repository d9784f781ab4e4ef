//! The monitoring routes of the one HTTP listener: `POST /alerts/alertmanager`, `GET /metrics`,
//! and what `GET /healthz` reports.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::metrics::{self, Gauges};
use crate::config::Config;
use crate::engine::Engine;
use crate::secrets::Secret;
use crate::model::DeploymentState;

pub fn routes(engine: &Arc<Engine>) -> Router {
    let webhook = Webhook { engine: engine.clone(), token: webhook_token(&engine.config) };
    Router::new()
        .route("/alerts/alertmanager", post(alertmanager))
        .with_state(Arc::new(webhook))
        .merge(Router::new().route("/metrics", get(metrics_text)).with_state(engine.clone()))
}

struct Webhook {
    engine: Arc<Engine>,
    token: WebhookToken,
}

enum WebhookToken {
    /// No `webhook_token`: the listener's reach is the only guard (check-config warns off loopback).
    Open,
    Required(Secret),
    /// Configured but its variable is unset: every call is refused rather than let through.
    Unreadable,
}

fn webhook_token(config: &Config) -> WebhookToken {
    match &config.alerts.webhook_token {
        None => WebhookToken::Open,
        Some(r) => match r.resolve_in(&config.vars) {
            Ok(secret) => WebhookToken::Required(secret),
            Err(e) => {
                tracing::error!(error = %e, "[alerts] webhook_token cannot be read, so every Alertmanager webhook call is refused");
                WebhookToken::Unreadable
            }
        },
    }
}

impl Webhook {
    /// Whether the request carries `Authorization: Bearer <webhook_token>`.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let expected = match &self.token {
            WebhookToken::Open => return true,
            WebhookToken::Unreadable => return false,
            WebhookToken::Required(secret) => secret.expose().as_bytes(),
        };
        let presented = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        presented.is_some_and(|token| crate::secrets::same_secret(token.as_bytes(), expected))
    }
}

/// Alertmanager retries a webhook that failed; an alert for an environment we do not know would
/// fail forever, so it is answered 200 and reported in the body and the log. A body that is not
/// a version-4 payload is a 400 (Alertmanager does not retry 4xx); a store failure is a 500,
/// which it retries. Without the configured token the answer is a bare 401 that says nothing of
/// what was expected.
async fn alertmanager(State(webhook): State<Arc<Webhook>>, headers: HeaderMap, body: Bytes) -> Response {
    if !webhook.authorized(&headers) {
        tracing::warn!("refused an Alertmanager webhook call without the configured bearer token");
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "unauthorized\n").into_response();
    }
    let engine = &webhook.engine;
    let payload = match super::alertmanager::parse(&body) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "refused an Alertmanager webhook call");
            return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
    };
    match engine.receive_alertmanager(&payload).await {
        Ok(received) => Json(received).into_response(),
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "could not record Alertmanager's alerts; Alertmanager will retry");
            (StatusCode::INTERNAL_SERVER_ERROR, "could not record the alerts; retry").into_response()
        }
    }
}

const OUTCOMES: [DeploymentState; 9] = [
    DeploymentState::Succeeded,
    DeploymentState::Failed,
    DeploymentState::RolledBack,
    DeploymentState::RollbackFailed,
    DeploymentState::Cancelled,
    DeploymentState::Denied,
    DeploymentState::Rejected,
    DeploymentState::Expired,
    DeploymentState::Interrupted,
];
const WAITING: [DeploymentState; 3] = [DeploymentState::Queued, DeploymentState::Scheduled, DeploymentState::AwaitingApproval];

async fn metrics_text(State(engine): State<Arc<Engine>>) -> Response {
    let gauges = async {
        let counts = engine.store.deployment_counts().await?;
        let count = |states: &[DeploymentState]| -> Vec<(String, usize)> {
            states.iter().map(|s| (s.as_str().to_string(), counts.get(s.as_str()).copied().unwrap_or(0).max(0) as usize)).collect()
        };
        let pending = engine.store.outbox_pending().await?.max(0) as usize;
        anyhow::Ok(Gauges { deployments: count(&OUTCOMES), queue: count(&WAITING), outbox_pending: pending })
    }
    .await;
    let gauges = gauges.unwrap_or_else(|e| {
        tracing::warn!(error = format!("{e:#}"), "could not read the store for /metrics; store-backed values are left out");
        Gauges::default()
    });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics::global().render(&gauges)).into_response()
}

/// `/healthz`: 200 when the store answers and the chat platform's last call worked, else 503,
/// with one line saying which.
pub async fn health(engine: &Engine) -> (StatusCode, String) {
    let store = engine.store.ping().await.map_err(|e| format!("store unreachable: {e}"));
    let chat = match metrics::global().chat_failing() {
        None => Ok(format!("chat {} connected", engine.chat.name())),
        Some(e) => Err(format!("chat {} not connected: {e}", engine.chat.name())),
    };
    match (store, chat) {
        (Ok(()), Ok(chat)) => (StatusCode::OK, format!("ok: store reachable, {chat}\n")),
        (store, chat) => {
            let store = store.map(|_| "store reachable".to_string()).unwrap_or_else(|e| e);
            let chat = chat.unwrap_or_else(|e| e);
            (StatusCode::SERVICE_UNAVAILABLE, format!("unavailable: {store}, {chat}\n"))
        }
    }
}
