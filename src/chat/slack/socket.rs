//! Socket Mode: `apps.connections.open` with the app-level token, then a WebSocket on which
//! Slack pushes envelopes. Each command or event is stored with its payload, then acknowledged,
//! and handled in a spawned task (see [`inbound::accept`]); when it cannot be stored a command is
//! acknowledged with "try again" and an event is left unacknowledged for Slack to redeliver. A
//! `disconnect` message or a dropped socket opens a new connection, with backoff while Slack is
//! unreachable.
//!
//! slack-morphism's own Socket Mode listener acknowledges only after its callback returns and
//! owns reconnection; this loop is small enough to keep both under our control.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::inbound::{self, Delivery};
use super::SlackPlatform;
use crate::engine::Engine;
use crate::secrets::Secret;

const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    envelope_id: Option<String>,
    #[serde(default)]
    payload: serde_json::Value,
    #[serde(default)]
    reason: Option<String>,
}

/// Why one connection ended.
enum Ended {
    /// Slack asked us to reconnect (or said hello first, so Slack is reachable): no backoff.
    Refresh,
    Dropped(String),
    Shutdown,
}

/// Runs Socket Mode until `shutdown` turns true.
pub fn spawn(engine: Arc<Engine>, slack: Arc<SlackPlatform>, app_token: Secret, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let ended = match slack.open_socket(&app_token).await {
                Ok(url) => connection(&engine, &url, &mut shutdown).await,
                Err(e) => Ended::Dropped(format!("apps.connections.open failed: {e}")),
            };
            match ended {
                Ended::Shutdown => break,
                Ended::Refresh => {
                    backoff = BACKOFF_FIRST;
                    continue;
                }
                Ended::Dropped(why) => {
                    tracing::warn!(reason = %crate::secrets::redact(&why), retry_in_ms = backoff.as_millis() as u64, "the Slack Socket Mode connection dropped; reconnecting");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped(&mut shutdown) => break,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    })
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

#[tracing::instrument(skip_all)]
async fn connection(engine: &Arc<Engine>, url: &str, shutdown: &mut watch::Receiver<bool>) -> Ended {
    let mut ws = match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => ws,
        Err(e) => return Ended::Dropped(format!("could not open the WebSocket: {e}")),
    };
    let mut greeted = false;
    loop {
        let frame = tokio::select! {
            f = ws.next() => f,
            _ = stopped(shutdown) => {
                let _ = ws.close(None).await;
                return Ended::Shutdown;
            }
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t.to_string(),
            Some(Ok(Message::Close(_))) | None => {
                return if greeted { Ended::Refresh } else { Ended::Dropped("the socket closed before hello".into()) };
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Ended::Dropped(e.to_string()),
        };
        let envelope: Envelope = match serde_json::from_str(&text) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "an unreadable Socket Mode message was ignored");
                continue;
            }
        };
        // Recorded first, acknowledged after: an envelope Slack was told we have is in the store.
        let ack = match envelope.kind.as_str() {
            "slash_commands" | "events_api" => record(engine, &envelope).await,
            _ => Ack::Plain,
        };
        if let (Some(id), false) = (&envelope.envelope_id, ack == Ack::None) {
            let mut body = serde_json::json!({ "envelope_id": id });
            if ack == Ack::TryAgain {
                body["payload"] = serde_json::json!({ "response_type": "ephemeral", "text": TRY_AGAIN });
            }
            if let Err(e) = ws.send(Message::text(body.to_string())).await {
                return Ended::Dropped(format!("could not acknowledge an envelope: {e}"));
            }
        }
        match envelope.kind.as_str() {
            "hello" => {
                greeted = true;
                tracing::info!("connected to Slack in Socket Mode");
            }
            "disconnect" => {
                tracing::info!(reason = envelope.reason.as_deref().unwrap_or("unknown"), "Slack asked for a new Socket Mode connection");
                let _ = ws.close(None).await;
                return Ended::Refresh;
            }
            // Interactions (buttons) are not used yet: acknowledged above, nothing else to do.
            _ => {}
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Ack {
    /// Acknowledge.
    Plain,
    /// Acknowledge, telling the person the command was not recorded.
    TryAgain,
    /// Do not acknowledge: Slack redelivers the event later.
    None,
}

const TRY_AGAIN: &str = "⚠️ deploybot could not record this command (its database is unreachable); nothing was done. Try again in a minute.";

/// Stores a command or event envelope (and hands it to the engine) before it is acknowledged.
async fn record(engine: &Arc<Engine>, envelope: &Envelope) -> Ack {
    let event = match envelope.kind.as_str() {
        "slash_commands" => {
            let fields: HashMap<String, String> = match envelope.payload.as_object() {
                Some(o) => o.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect(),
                None => HashMap::new(),
            };
            inbound::command_event(&fields)
        }
        _ => match serde_json::to_vec(&envelope.payload).map(|b| inbound::events_body(&b)) {
            Ok(Ok(Delivery::Event(event))) => Some(event),
            Ok(Ok(_)) => None,
            Ok(Err(e)) | Err(e) => {
                tracing::warn!(error = %e, "an unreadable Events API payload was ignored");
                None
            }
        },
    };
    let Some(event) = event else { return Ack::Plain };
    let is_command = matches!(event, crate::chat::ChatEvent::Command { .. });
    match inbound::accept(engine, event).await {
        Ok(_) => Ack::Plain,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "a Slack envelope could not be recorded");
            if is_command {
                Ack::TryAgain
            } else {
                Ack::None
            }
        }
    }
}
