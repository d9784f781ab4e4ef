//! `mode = "interactions"`: `POST /discord/interactions` on the bot's listener. Every request's
//! Ed25519 signature (`X-Signature-Ed25519` over `X-Signature-Timestamp` + body, with the
//! application's public key, through serenity's `Verifier`) is checked before anything else,
//! and the timestamp must be within 5 minutes (serenity does not check it); a request that fails
//! gets a bare 401. `PING` is answered `PONG`; a command is recorded, then answered with a
//! deferred private response (well within Discord's 3 s), and the engine's answer replaces it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serenity::interactions_endpoint::Verifier;

use super::inbound::{self, Interaction};
use super::DiscordPlatform;
use crate::config::{DiscordMode, Platform};
use crate::engine::Engine;

/// How far a request's timestamp may be from now.
const MAX_SKEW_SECS: i64 = 300;

#[derive(Clone)]
struct Discord {
    engine: Arc<Engine>,
    discord: Arc<DiscordPlatform>,
    verifier: Arc<Verifier>,
}

/// The route, when the bot runs on Discord in interactions mode with a valid public key.
pub fn routes(engine: &Arc<Engine>, discord: &Arc<DiscordPlatform>, public_key: Option<&str>) -> Router {
    let on = matches!((&engine.config.chat.platform, &engine.config.chat.discord), (Platform::Discord, Some(d)) if d.mode == DiscordMode::Interactions);
    let Some(key) = public_key.filter(|_| on) else { return Router::new() };
    let Some(bytes) = hex32(key) else {
        tracing::error!("[chat.discord] public_key is not 64 hex characters; /discord/interactions refuses every request");
        return Router::new();
    };
    let verifier = match Verifier::try_new(bytes) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "[chat.discord] public_key is not a valid Ed25519 key; /discord/interactions refuses every request");
            return Router::new();
        }
    };
    let state = Discord { engine: engine.clone(), discord: discord.clone(), verifier: Arc::new(verifier) };
    Router::new().route("/discord/interactions", post(interactions)).with_state(state)
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn unauthorized(why: &str) -> Response {
    (StatusCode::UNAUTHORIZED, format!("{why}\n")).into_response()
}

impl Discord {
    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), Box<Response>> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(signature), Some(timestamp)) = (header("x-signature-ed25519"), header("x-signature-timestamp")) else {
            return Err(Box::new(unauthorized("missing X-Signature-Ed25519 or X-Signature-Timestamp")));
        };
        if self.verifier.verify(signature, timestamp, body).is_err() {
            tracing::warn!("a request to /discord/interactions failed signature verification");
            return Err(Box::new(unauthorized("invalid request signature")));
        }
        let fresh = timestamp.parse::<i64>().is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() <= MAX_SKEW_SECS);
        if !fresh {
            tracing::warn!(timestamp, "a signed request to /discord/interactions is not recent; refused as a replay");
            return Err(Box::new(unauthorized("request timestamp too old")));
        }
        Ok(())
    }
}

async fn interactions(State(d): State<Discord>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = d.verify(&headers, &body) {
        return *r;
    }
    let payload: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("not an interaction: {e}\n")).into_response(),
    };
    match inbound::interaction(&d.discord, &payload) {
        Err(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
        Ok(Interaction::Ping) => Json(serde_json::json!({ "type": 1 })).into_response(),
        Ok(Interaction::Other(kind)) => {
            tracing::info!(kind, "an interaction type deploybot does not use was acknowledged");
            Json(serde_json::json!({ "type": 6 })).into_response()
        }
        Ok(Interaction::Command { event, id, token }) => {
            d.discord.remember_interaction(&id, &token).await;
            match crate::chat::accept(&d.engine, event).await {
                Ok(_) => Json(inbound::deferred_response()).into_response(),
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "a Discord command could not be recorded");
                    Json(inbound::message_response(super::TRY_AGAIN)).into_response()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hex32;

    #[test]
    fn public_keys_are_64_hex_characters() {
        assert_eq!(hex32(&"0a".repeat(32)), Some([10u8; 32]));
        assert_eq!(hex32("abc"), None);
        assert_eq!(hex32(&"zz".repeat(32)), None);
    }
}
