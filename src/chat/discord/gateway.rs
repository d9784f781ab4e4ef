//! The gateway: a WebSocket (`GET /gateway/bot` says where) speaking Discord's protocol —
//! HELLO, IDENTIFY with the least intents that work (`GUILD_MESSAGE_REACTIONS`; interactions
//! need none), heartbeats with their ACKs (a missing ACK is a dead connection), dispatches with
//! their sequence numbers, RECONNECT, INVALID_SESSION — resuming the session after a drop so that
//! Discord replays what was missed, and identifying again when the session cannot be resumed.
//!
//! Nothing is lost across a drop: a dispatch counts as seen (its sequence number is what the bot
//! heartbeats and resumes from) only once its event is in the store; when the store cannot take
//! it, the connection is closed and resumed from the last recorded event, so Discord sends it
//! again. A replayed event is recognised by its id (session and sequence number).
//!
//! serenity's shard runner would own the connection and hand events over after the fact; this
//! loop is small enough to keep recording-before-advancing under our control (as Slack's Socket
//! Mode loop does), on the WebSocket stack the bot already uses.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use serenity::model::gateway::GatewayIntents;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::inbound::{self, Interaction};
use super::DiscordPlatform;
use crate::engine::Engine;
use crate::secrets::Secret;

const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// HELLO must come this soon after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(20);

/// Opcodes.
const DISPATCH: u64 = 0;
const HEARTBEAT: u64 = 1;
const IDENTIFY: u64 = 2;
const RESUME: u64 = 6;
const RECONNECT: u64 = 7;
const INVALID_SESSION: u64 = 9;
const HELLO: u64 = 10;
const HEARTBEAT_ACK: u64 = 11;

/// The intents the bot asks for: reactions in guild channels. Interactions arrive whatever the
/// intents; nothing privileged is needed.
pub fn intents() -> GatewayIntents {
    GatewayIntents::GUILD_MESSAGE_REACTIONS
}

/// A session that can be resumed.
#[derive(Debug, Clone, Default)]
struct Session {
    id: Option<String>,
    resume_url: Option<String>,
    /// The last sequence number whose dispatch was handled (recorded, or not for us).
    seq: Option<u64>,
}

/// Why one connection ended.
#[derive(Debug)]
enum Ended {
    /// Reconnect now and resume (RECONNECT, a resumable INVALID_SESSION).
    Resume,
    /// Reconnect after a short wait and identify anew (the session is gone).
    Identify,
    Dropped(String),
    /// The token or the intents are refused: retrying at full speed would not help.
    Fatal(String),
    Shutdown,
}

/// Runs the gateway until `shutdown` turns true.
pub fn spawn(engine: Arc<Engine>, discord: Arc<DiscordPlatform>, token: Secret, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut session = Session::default();
        let mut backoff = BACKOFF_FIRST;
        let mut gateway: Option<String> = None;
        loop {
            let url = match (&session.id, &session.resume_url, &gateway) {
                (Some(_), Some(resume), _) => Ok(resume.clone()),
                (_, _, Some(url)) => Ok(url.clone()),
                _ => discord.gateway_url().await.inspect(|u| gateway = Some(u.clone())),
            };
            let ended = match url {
                Ok(url) => connection(&engine, &discord, &token, &with_query(&url), &mut session, &mut shutdown).await,
                Err(e) => Ended::Dropped(format!("GET /gateway/bot failed: {e}")),
            };
            let wait = match ended {
                Ended::Shutdown => break,
                Ended::Resume => {
                    backoff = BACKOFF_FIRST;
                    continue;
                }
                Ended::Identify => {
                    session = Session::default();
                    // Discord asks for 1–5 s before identifying again.
                    Duration::from_millis(1000 + jitter_ms(4000))
                }
                Ended::Dropped(why) => {
                    tracing::warn!(reason = %crate::secrets::redact(&why), retry_in_ms = backoff.as_millis() as u64, "the Discord gateway connection dropped; reconnecting");
                    let w = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    w
                }
                Ended::Fatal(why) => {
                    tracing::error!(reason = %crate::secrets::redact(&why), "Discord refused the gateway connection; check [chat.discord] token and the bot's intents in the Developer Portal");
                    session = Session::default();
                    gateway = None;
                    backoff = BACKOFF_MAX;
                    BACKOFF_MAX
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopped(&mut shutdown) => break,
            }
        }
    })
}

fn with_query(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.contains('?') {
        format!("{url}&v=10&encoding=json")
    } else {
        format!("{url}/?v=10&encoding=json")
    }
}

fn jitter_ms(max: u64) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    u64::from(nanos) % max.max(1)
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(ws: &mut Ws, payload: Value) -> Result<(), String> {
    ws.send(Message::text(payload.to_string())).await.map_err(|e| format!("could not send to the gateway: {e}"))
}

/// Closes with a code other than 1000/1001, which keeps the session resumable.
async fn close_resumable(ws: &mut Ws) {
    let _ = ws.close(Some(CloseFrame { code: CloseCode::Library(4900), reason: "reconnecting".into() })).await;
}

#[tracing::instrument(skip_all)]
async fn connection(engine: &Arc<Engine>, discord: &Arc<DiscordPlatform>, token: &Secret, url: &str, session: &mut Session, shutdown: &mut watch::Receiver<bool>) -> Ended {
    let mut ws = match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => ws,
        Err(e) => return Ended::Dropped(format!("could not open the gateway WebSocket: {e}")),
    };
    // HELLO first.
    let interval = match tokio::time::timeout(HELLO_TIMEOUT, next_payload(&mut ws)).await {
        Ok(Ok(p)) if p["op"].as_u64() == Some(HELLO) => match p["d"]["heartbeat_interval"].as_u64() {
            Some(ms) if ms > 0 => Duration::from_millis(ms),
            _ => return Ended::Dropped("HELLO without a heartbeat_interval".into()),
        },
        Ok(Ok(p)) => return Ended::Dropped(format!("expected HELLO, got op {}", p["op"])),
        Ok(Err(ended)) => return ended,
        Err(_) => return Ended::Dropped("no HELLO from the gateway".into()),
    };
    let hello = match (&session.id, session.seq) {
        (Some(id), Some(seq)) => json!({ "op": RESUME, "d": { "token": token.expose(), "session_id": id, "seq": seq } }),
        _ => {
            *session = Session::default();
            json!({ "op": IDENTIFY, "d": {
                "token": token.expose(),
                "intents": intents().bits(),
                "properties": { "os": std::env::consts::OS, "browser": "deploybot", "device": "deploybot" },
            } })
        }
    };
    let resuming = session.id.is_some();
    if let Err(e) = send(&mut ws, hello).await {
        return Ended::Dropped(e);
    }
    // The first heartbeat after interval × jitter, then every interval.
    let mut next_beat = tokio::time::Instant::now() + Duration::from_millis(jitter_ms(interval.as_millis() as u64));
    let mut acked = true;
    loop {
        let payload = tokio::select! {
            p = next_payload(&mut ws) => p,
            _ = tokio::time::sleep_until(next_beat) => {
                if !acked {
                    close_resumable(&mut ws).await;
                    return Ended::Dropped("no heartbeat ACK since the last heartbeat".into());
                }
                acked = false;
                if let Err(e) = send(&mut ws, json!({ "op": HEARTBEAT, "d": session.seq })).await {
                    return Ended::Dropped(e);
                }
                next_beat += interval;
                continue;
            }
            _ = stopped(shutdown) => {
                let _ = ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "shutting down".into() })).await;
                return Ended::Shutdown;
            }
        };
        let p = match payload {
            Ok(p) => p,
            Err(ended) => return ended,
        };
        match p["op"].as_u64() {
            Some(DISPATCH) => {
                let seq = p["s"].as_u64();
                let kind = p["t"].as_str().unwrap_or_default();
                match dispatch(engine, discord, session, kind, seq, &p["d"]).await {
                    Ok(()) => {
                        if seq.is_some() {
                            session.seq = seq;
                        }
                    }
                    Err(why) => {
                        // Not recorded: resume from the last recorded event, so Discord sends it again.
                        close_resumable(&mut ws).await;
                        return Ended::Dropped(why);
                    }
                }
                if kind == "READY" || kind == "RESUMED" {
                    tracing::info!(resumed = kind == "RESUMED", "connected to the Discord gateway");
                }
            }
            Some(HEARTBEAT) => {
                if let Err(e) = send(&mut ws, json!({ "op": HEARTBEAT, "d": session.seq })).await {
                    return Ended::Dropped(e);
                }
            }
            Some(HEARTBEAT_ACK) => acked = true,
            Some(RECONNECT) => {
                tracing::info!("Discord asked for a new gateway connection; resuming");
                close_resumable(&mut ws).await;
                return Ended::Resume;
            }
            Some(INVALID_SESSION) => {
                let resumable = p["d"].as_bool() == Some(true);
                tracing::info!(resumable, was_resuming = resuming, "Discord invalidated the gateway session");
                close_resumable(&mut ws).await;
                return if resumable { Ended::Resume } else { Ended::Identify };
            }
            _ => {}
        }
    }
}

/// The next JSON payload; a close or an error ends the connection (how depends on the code).
async fn next_payload(ws: &mut Ws) -> Result<Value, Ended> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match serde_json::from_str::<Value>(&t) {
                Ok(v) => return Ok(v),
                Err(e) => tracing::warn!(error = %e, "an unreadable gateway message was ignored"),
            },
            Some(Ok(Message::Close(frame))) => {
                let code = frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(1005);
                let reason = frame.as_ref().map(|f| f.reason.to_string()).unwrap_or_default();
                return Err(match code {
                    // Authentication failed, invalid shard, sharding required, invalid API version,
                    // invalid or disallowed intents: the same request would fail again.
                    4004 | 4010..=4014 => Ended::Fatal(format!("gateway closed with {code} {reason}")),
                    // Invalid sequence, session timed out: identify anew.
                    4007 | 4009 => Ended::Identify,
                    _ => Ended::Dropped(format!("gateway closed with {code} {reason}")),
                });
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(Ended::Dropped(e.to_string())),
            None => return Err(Ended::Dropped("the gateway closed the connection".into())),
        }
    }
}

/// Handles one dispatch; `Err` when its event could not be recorded (the caller resumes to get
/// it again).
async fn dispatch(engine: &Arc<Engine>, discord: &Arc<DiscordPlatform>, session: &mut Session, kind: &str, seq: Option<u64>, d: &Value) -> Result<(), String> {
    match kind {
        "READY" => {
            session.id = d["session_id"].as_str().map(str::to_string);
            session.resume_url = d["resume_gateway_url"].as_str().map(str::to_string);
            if let Some(id) = d["user"]["id"].as_str() {
                discord.set_bot_user(id);
            }
            Ok(())
        }
        "MESSAGE_REACTION_ADD" | "MESSAGE_REACTION_REMOVE" => {
            let event_id = format!("discord-gateway:{}:{}", session.id.as_deref().unwrap_or("none"), seq.unwrap_or_default());
            let Some(event) = inbound::reaction(discord, kind, d, event_id) else { return Ok(()) };
            crate::chat::accept(engine, event).await.map(|_| ()).map_err(|e| format!("a reaction could not be recorded: {e:#}"))
        }
        "INTERACTION_CREATE" => {
            match inbound::interaction(discord, d) {
                Ok(Interaction::Command { event, id, token }) => {
                    // The token first: whoever handles the command (after a crash, the next
                    // process) can answer it.
                    discord.remember_interaction(&id, &token).await;
                    let accepted = engine.accept(&event).await;
                    match accepted {
                        Ok(fresh) => {
                            // The deferred answer first (Discord's 3 s), then the work, whose
                            // private answer replaces it.
                            let (engine, discord) = (engine.clone(), discord.clone());
                            tokio::spawn(async move {
                                if let Err(e) = discord.defer_interaction(&id, &token).await {
                                    tracing::warn!(error = %e, "could not acknowledge a Discord command in time");
                                }
                                if fresh {
                                    if let Err(e) = engine.process(event).await {
                                        tracing::error!(error = format!("{e:#}"), "a Discord command could not be handled");
                                    }
                                }
                            });
                        }
                        // Discord does not send an interaction twice: say so now, and move on.
                        Err(e) => {
                            tracing::error!(error = format!("{e:#}"), "a Discord command could not be recorded");
                            let discord = discord.clone();
                            tokio::spawn(async move {
                                let body = inbound::message_response(super::TRY_AGAIN);
                                let path = format!("/interactions/{id}/{token}/callback");
                                if let Err(e) = discord.rest().call(reqwest::Method::POST, &path, Some(&body), super::rest::Retry::Some(1)).await {
                                    tracing::warn!(error = %e, "could not tell the person their command was not recorded");
                                }
                            });
                        }
                    }
                }
                Ok(_) => {}
                Err(why) => tracing::warn!(why, "an unreadable interaction was ignored"),
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_url_gets_the_version_and_encoding() {
        assert_eq!(with_query("wss://gateway.discord.gg"), "wss://gateway.discord.gg/?v=10&encoding=json");
        assert_eq!(with_query("ws://127.0.0.1:5/gw/"), "ws://127.0.0.1:5/gw/?v=10&encoding=json");
        assert_eq!(with_query("ws://h/?a=b"), "ws://h/?a=b&v=10&encoding=json");
    }

    #[test]
    fn only_the_reactions_intent_is_asked_for() {
        assert_eq!(intents().bits(), 1 << 10);
    }
}
