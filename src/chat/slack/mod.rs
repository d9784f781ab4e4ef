//! Slack: the Web API client (slack-morphism) behind [`ChatPlatform`], the two ways Slack
//! delivers commands and reactions (Socket Mode in [`socket`], the Events API over HTTP in
//! [`http`]), and the translation of Slack's payloads into [`ChatEvent`]s ([`inbound`]).
//!
//! *Invariant*: Slack's JSON and slack-morphism's types stay in this folder. Inbound work is
//! stored with its payload before it is acknowledged (`processed_events`, which also
//! deduplicates Slack's retries) and handled from there in a spawned task, so neither the
//! pipeline, the store's later writes nor Slack's API can delay an acknowledgement, and a crash
//! between the acknowledgement and the handling loses nothing (pending events are handled at start).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_trait::async_trait;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use super::{ChatError, ChatPlatform, OutMessage};
use crate::config::SlackConfig;
use crate::secrets::Secret;

pub mod http;
pub mod inbound;
pub mod socket;

type Client = SlackClient<SlackClientHyperConnector<HttpsConnector<HttpConnector>>>;

/// How long a user group's members are trusted before `usergroups.users.list` is asked again.
const GROUP_TTL: Duration = Duration::from_secs(300);
/// Display names change rarely; an hour keeps `users.info` calls to one per person per hour.
const NAME_TTL: Duration = Duration::from_secs(3600);
/// A Web API call that takes longer is treated as a dropped connection (the outbox retries).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Slack's limit for one section block's text.
const SECTION_MAX: usize = 3000;
/// The `event_type` of the metadata every new message carries: its outbox key, by which a post
/// whose answer was lost is found again (`find_post`).
const METADATA_EVENT: &str = "deploybot_message";
/// How many of a channel's latest messages `find_post` reads (one `conversations.history`
/// page): the post it looks for is at most a few retries old.
const FIND_LOOKBACK: u16 = 100;

type Members = Arc<HashSet<String>>;

pub struct SlackPlatform {
    client: Client,
    bot_token: SlackApiToken,
    groups: Mutex<HashMap<String, (Instant, Members)>>,
    names: Mutex<HashMap<String, (Instant, String)>>,
}

/// The secrets a Slack deployment needs, resolved from the environment at start.
pub struct SlackSecrets {
    pub bot_token: Secret,
    pub app_token: Option<Secret>,
    pub signing_secret: Option<Secret>,
}

impl SlackSecrets {
    /// Resolves the tokens the configured mode needs; the error names the missing variable.
    pub fn resolve(config: &SlackConfig, vars: &crate::secrets::Vars) -> Result<SlackSecrets> {
        let get = |key: &str, r: &crate::secrets::SecretRef| r.resolve_in(vars).map_err(|e| anyhow::anyhow!("[chat.slack] {key}: {e}"));
        let bot_token = get("bot_token", &config.bot_token)?;
        let app_token = match (&config.mode, &config.app_token) {
            (crate::config::SlackMode::Socket, Some(r)) => Some(get("app_token", r)?),
            (crate::config::SlackMode::Socket, None) => anyhow::bail!("[chat.slack] app_token is required in socket mode"),
            (_, Some(r)) => r.resolve_in(vars).ok(),
            (_, None) => None,
        };
        let signing_secret = match (&config.mode, &config.signing_secret) {
            (crate::config::SlackMode::Events, Some(r)) => Some(get("signing_secret", r)?),
            (crate::config::SlackMode::Events, None) => anyhow::bail!("[chat.slack] signing_secret is required in events mode"),
            (_, Some(r)) => r.resolve_in(vars).ok(),
            (_, None) => None,
        };
        Ok(SlackSecrets { bot_token, app_token, signing_secret })
    }
}

impl SlackPlatform {
    /// A client for `api_url` (plain HTTP is allowed, for local doubles of Slack).
    pub fn new(api_url: &str, bot_token: &Secret) -> Result<SlackPlatform> {
        // Two TLS backends are linked (ring here, aws-lc-rs through the AWS SDK), so rustls cannot
        // pick one by itself; the Web API client and the Socket Mode WebSocket use ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .context("no TLS root certificates found on this machine")?
            .https_or_http()
            .enable_http1()
            .build();
        let connector = SlackClientHyperConnector::with_connector(connector).with_slack_api_url(api_url.trim_end_matches('/'));
        Ok(SlackPlatform {
            client: SlackClient::new(connector),
            bot_token: SlackApiToken::new(bot_token.expose().to_string().into()),
            groups: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
        })
    }

    /// `apps.connections.open`: a fresh Socket Mode WebSocket URL.
    #[tracing::instrument(skip_all)]
    pub async fn open_socket(&self, app_token: &Secret) -> Result<String, ChatError> {
        let token = SlackApiToken::new(app_token.expose().to_string().into());
        let session = self.client.open_session(&token);
        let res = call(session.apps_connections_open(&SlackApiAppsConnectionOpenRequest::new())).await?;
        Ok(res.url.0.to_string())
    }

    fn content(msg: &OutMessage) -> SlackMessageContent {
        let blocks: Vec<SlackBlock> = sections(&msg.text)
            .into_iter()
            .map(|text| SlackSectionBlock::new().with_text(SlackBlockText::MarkDown(SlackBlockMarkDownText::new(text))).into())
            .collect();
        SlackMessageContent::new().with_text(msg.text.clone()).with_blocks(blocks)
    }

    async fn post_message(&self, key: &str, channel: &str, thread: Option<&str>, msg: &OutMessage) -> Result<String, ChatError> {
        let metadata = SlackMessageMetadata { event_type: METADATA_EVENT.into(), event_payload: Some(HashMap::from([("key".to_string(), key.to_string())])) };
        let mut req = SlackApiChatPostMessageRequest::new(channel.into(), Self::content(msg).with_metadata(metadata));
        if let Some(ts) = thread {
            req = req.with_thread_ts(ts.into());
        }
        let session = self.client.open_session(&self.bot_token);
        let res = call(session.chat_post_message(&req)).await?;
        Ok(res.ts.0)
    }

    async fn group_members(&self, group: &str) -> Result<Arc<HashSet<String>>, ChatError> {
        let cached = self.groups.lock().ok().and_then(|g| g.get(group).cloned());
        if let Some((at, members)) = &cached {
            if at.elapsed() < GROUP_TTL {
                return Ok(members.clone());
            }
        }
        let session = self.client.open_session(&self.bot_token);
        match call(session.usergroups_users_list(&SlackApiUserGroupsUsersListRequest::new(group.into()))).await {
            Ok(res) => {
                let members: Arc<HashSet<String>> = Arc::new(res.users.into_iter().map(|u| u.0).collect());
                if let Ok(mut g) = self.groups.lock() {
                    g.insert(group.to_string(), (Instant::now(), members.clone()));
                }
                Ok(members)
            }
            // A stale answer beats none while Slack is unreachable.
            Err(e) => match cached {
                Some((_, members)) => {
                    tracing::warn!(error = %e, group, "could not refresh a user group; using the cached members");
                    Ok(members)
                }
                None => Err(e),
            },
        }
    }
}

/// Splits a text into section-sized pieces at line boundaries (Slack allows 50 blocks).
fn sections(text: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    for line in text.split('\n') {
        let mut line = line.to_string();
        while line.chars().count() > SECTION_MAX {
            let cut: String = line.chars().take(SECTION_MAX).collect();
            line = line.chars().skip(SECTION_MAX).collect();
            out.push(cut);
            out.push(String::new());
        }
        let last = out.last_mut().expect("never empty");
        if last.chars().count() + line.chars().count() + 1 > SECTION_MAX {
            out.push(line);
        } else {
            if !last.is_empty() {
                last.push('\n');
            }
            last.push_str(&line);
        }
    }
    out.retain(|s| !s.trim().is_empty());
    if out.is_empty() {
        out.push(" ".into());
    }
    out.truncate(50);
    out
}

/// Runs one Web API call with a deadline and maps Slack's failures onto [`ChatError`].
async fn call<T>(fut: impl std::future::Future<Output = ClientResult<T>>) -> Result<T, ChatError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Err(_) => Err(ChatError::Unavailable(format!("Slack did not answer within {}s", CALL_TIMEOUT.as_secs()))),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(map_error(e)),
    }
}

fn map_error(e: SlackClientError) -> ChatError {
    let text = crate::secrets::redact(&e.to_string());
    match e {
        SlackClientError::RateLimitError(r) => ChatError::RateLimited { retry_after_secs: r.retry_after.map_or(1, |d| d.as_secs().max(1)) },
        SlackClientError::HttpError(h) if h.status_code.is_server_error() => ChatError::Unavailable(text),
        SlackClientError::HttpError(_) => ChatError::Refused(text),
        SlackClientError::ApiError(a) if a.code == "ratelimited" => ChatError::RateLimited { retry_after_secs: 1 },
        SlackClientError::ApiError(a) if matches!(a.code.as_str(), "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout") => {
            ChatError::Unavailable(text)
        }
        SlackClientError::ApiError(_) => ChatError::Refused(text),
        _ => ChatError::Unavailable(text),
    }
}

#[async_trait]
impl ChatPlatform for SlackPlatform {
    fn name(&self) -> &'static str {
        "slack"
    }

    /// Slack allows about one `chat.update` per second per channel.
    fn edit_interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    #[tracing::instrument(skip(self, msg))]
    async fn post(&self, key: &str, channel: &str, msg: &OutMessage) -> Result<String, ChatError> {
        self.post_message(key, channel, None, msg).await
    }

    /// The channel's latest messages (`conversations.history`, which needs the `channels:history`
    /// scope, `groups:history` in private channels), searched for the metadata `post` gave the
    /// message. Thread replies are not searched.
    #[tracing::instrument(skip(self))]
    async fn find_post(&self, key: &str, channel: &str) -> Result<Option<String>, ChatError> {
        let req = SlackApiConversationsHistoryRequest::new().with_channel(channel.into()).with_limit(FIND_LOOKBACK).with_include_all_metadata(true);
        let session = self.client.open_session(&self.bot_token);
        let res = call(session.conversations_history(&req)).await?;
        let ours = |m: &SlackHistoryMessage| {
            m.content.metadata.as_ref().is_some_and(|md| md.event_type == METADATA_EVENT && md.event_payload.as_ref().and_then(|p| p.get("key")).is_some_and(|k| k == key))
        };
        Ok(res.messages.iter().find(|m| ours(m)).map(|m| m.origin.ts.0.clone()))
    }

    #[tracing::instrument(skip(self, msg))]
    async fn edit(&self, channel: &str, id: &str, msg: &OutMessage) -> Result<(), ChatError> {
        let req = SlackApiChatUpdateRequest::new(channel.into(), Self::content(msg), id.into());
        let session = self.client.open_session(&self.bot_token);
        call(session.chat_update(&req)).await.map(|_| ())
    }

    #[tracing::instrument(skip(self, msg))]
    async fn reply(&self, key: &str, channel: &str, thread: &str, msg: &OutMessage) -> Result<String, ChatError> {
        self.post_message(key, channel, Some(thread), msg).await
    }

    #[tracing::instrument(skip(self, msg))]
    async fn ephemeral(&self, channel: &str, user: &str, msg: &OutMessage) -> Result<(), ChatError> {
        let req = SlackApiChatPostEphemeralRequest::new(channel.into(), user.into(), Self::content(msg));
        let session = self.client.open_session(&self.bot_token);
        call(session.chat_post_ephemeral(&req)).await.map(|_| ())
    }

    #[tracing::instrument(skip(self))]
    async fn in_group(&self, user: &str, group: &str) -> Result<bool, ChatError> {
        Ok(self.group_members(group).await?.contains(user))
    }

    #[tracing::instrument(skip(self))]
    async fn user_name(&self, user: &str) -> Option<String> {
        if let Some((at, name)) = self.names.lock().ok().and_then(|n| n.get(user).cloned()) {
            if at.elapsed() < NAME_TTL {
                return Some(name);
            }
        }
        let session = self.client.open_session(&self.bot_token);
        match call(session.users_info(&SlackApiUsersInfoRequest::new(user.into()))).await {
            Ok(res) => {
                let u = res.user;
                let profile = u.profile.as_ref();
                let name = [profile.and_then(|p| p.display_name.clone()), u.name.clone(), profile.and_then(|p| p.real_name.clone()), u.real_name.clone()]
                    .into_iter()
                    .flatten()
                    .find(|n| !n.trim().is_empty())?;
                if let Ok(mut n) = self.names.lock() {
                    n.insert(user.to_string(), (Instant::now(), name.clone()));
                }
                Some(name)
            }
            Err(e) => {
                tracing::warn!(error = %e, user, "could not look up a Slack user's name");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sections;

    #[test]
    fn a_long_message_is_split_into_sections_at_line_boundaries() {
        let line = "x".repeat(1000);
        let text = vec![line.clone(); 7].join("\n");
        let parts = sections(&text);
        assert_eq!(parts.len(), 4, "two 1000-character lines and a newline fit in one section, three do not");
        assert!(parts.iter().all(|p| p.chars().count() <= 3000));
        assert_eq!(parts.join("\n"), text);
    }

    #[test]
    fn a_single_overlong_line_is_cut() {
        let parts = sections(&"y".repeat(7000));
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![3000, 3000, 1000]);
    }
}
