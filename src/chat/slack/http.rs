//! The Events API over HTTP: `POST /slack/commands`, `/slack/events`, `/slack/interactions` on
//! the bot's listener. Every request's signature is checked (v0 HMAC-SHA256 over
//! `v0:{timestamp}:{body}`, constant-time, timestamp within 5 minutes) before anything else;
//! the answer is sent as soon as the event is recorded.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use slack_morphism::prelude::SlackSigningSecret;
use slack_morphism::signature_verifier::SlackEventSignatureVerifier;

use super::inbound::{self, Delivery};
use crate::config::Platform;
use crate::engine::Engine;

#[derive(Clone)]
struct Slack {
    engine: Arc<Engine>,
    verifier: SlackEventSignatureVerifier,
}

/// The Slack routes, when the bot runs on Slack with a signing secret; otherwise none.
pub fn routes(engine: &Arc<Engine>) -> Router {
    let secret = match (&engine.config.chat.platform, &engine.config.chat.slack) {
        (Platform::Slack, Some(slack)) => slack.signing_secret.as_ref().and_then(|s| s.resolve_in(&engine.config.vars).ok()),
        _ => None,
    };
    let Some(secret) = secret else { return Router::new() };
    let state = Slack { engine: engine.clone(), verifier: SlackEventSignatureVerifier::new(&SlackSigningSecret::new(secret.expose().to_string())) };
    Router::new()
        .route("/slack/commands", post(commands))
        .route("/slack/events", post(events))
        .route("/slack/interactions", post(interactions))
        .with_state(state)
}

fn unauthorized(why: &str) -> Response {
    (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response()
}

impl Slack {
    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), Box<Response>> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(signature), Some(timestamp)) = (header(SlackEventSignatureVerifier::SLACK_SIGNED_HASH_HEADER), header(SlackEventSignatureVerifier::SLACK_SIGNED_TIMESTAMP)) else {
            return Err(Box::new(unauthorized("missing X-Slack-Signature or X-Slack-Request-Timestamp")));
        };
        let Ok(body) = std::str::from_utf8(body) else { return Err(Box::new(unauthorized("the body is not UTF-8"))) };
        self.verifier.verify(signature, body, timestamp).map_err(|e| {
            tracing::warn!(error = %e, "a request to the Slack endpoints failed signature verification");
            Box::new(unauthorized("invalid or expired Slack signature"))
        })
    }
}

async fn commands(State(slack): State<Slack>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = slack.verify(&headers, &body) {
        return *r;
    }
    let fields: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let Some(event) = inbound::command_event(&fields) else {
        return (StatusCode::BAD_REQUEST, "not a slash command\n").into_response();
    };
    match inbound::accept(&slack.engine, event).await {
        // An empty 200 acknowledges without a visible message; the engine answers privately.
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "a slash command could not be recorded");
            Json(serde_json::json!({ "response_type": "ephemeral", "text": "⚠️ deploybot could not record this command (its database is unreachable); nothing was done. Try again in a minute." })).into_response()
        }
    }
}

async fn events(State(slack): State<Slack>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = slack.verify(&headers, &body) {
        return *r;
    }
    let delivery = match inbound::events_body(&body) {
        Ok(d) => d,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("not an Events API body: {e}\n")).into_response(),
    };
    match delivery {
        Delivery::Challenge(challenge) => Json(serde_json::json!({ "challenge": challenge })).into_response(),
        Delivery::Ignored => StatusCode::OK.into_response(),
        Delivery::Event(event) => match inbound::accept(&slack.engine, event).await {
            Ok(_) => StatusCode::OK.into_response(),
            // Not acknowledged: Slack retries, and the retry is recorded once the store is back.
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "a Slack event could not be recorded");
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            }
        },
    }
}

/// Buttons and shortcuts are not used yet; interactions are verified and acknowledged.
async fn interactions(State(slack): State<Slack>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = slack.verify(&headers, &body) {
        return *r;
    }
    StatusCode::OK.into_response()
}
