//! Discord's REST API (v10) over reqwest, with Discord's rate limits honoured: the
//! `X-RateLimit-*` headers of each answer are kept per bucket (a call waits while its bucket is
//! empty), a 429 waits its `retry_after` (every call waits when it is global), and 5xx answers
//! are retried.
//!
//! Why not serenity's `Http`: it reaches a base URL other than discord.com only through its
//! `proxy` setting, which it ignores while its own rate limiter is on; with the limiter off, its
//! error for a 429 keeps neither the `retry_after` of the body nor the `X-RateLimit-*` headers.
//! So the calls are made here, with the limits handled as Discord documents them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::chat::ChatError;
use crate::secrets::Secret;

/// A call that takes longer is treated as a dropped connection.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a call waits for an empty bucket or a 429 by itself; a longer wait is returned
/// to the caller as [`ChatError::RateLimited`].
const MAX_INLINE_WAIT: Duration = Duration::from_secs(15);

/// Retries of a call answered 429 or 5xx before its error is returned.
#[derive(Debug, Clone, Copy)]
pub enum Retry {
    /// None: the outbox retries (and holds every delivery while a rate limit lasts).
    Never,
    /// A few, waiting each `retry_after` (or a short backoff after a 5xx).
    Some(u32),
}

#[derive(Default)]
struct Limits {
    /// Route key → the bucket Discord said it belongs to.
    route_bucket: HashMap<String, String>,
    /// Bucket (or route key) plus major parameter → remaining calls and when the bucket resets.
    buckets: HashMap<String, (u64, Instant)>,
    /// A global rate limit: no call before this.
    global_until: Option<Instant>,
}

pub struct Rest {
    client: reqwest::Client,
    /// `{api_url}/api/v10`.
    base: String,
    token: Secret,
    limits: Mutex<Limits>,
}

/// A successful answer.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Rest {
    pub fn new(api_url: &str, token: &Secret) -> anyhow::Result<Rest> {
        let client = reqwest::Client::builder().timeout(CALL_TIMEOUT).user_agent(concat!("DiscordBot (deploybot, ", env!("CARGO_PKG_VERSION"), ")")).build()?;
        Ok(Rest { client, base: format!("{}/api/v10", api_url.trim_end_matches('/')), token: token.clone(), limits: Mutex::default() })
    }

    /// `METHOD path` with the ids that do not select a rate-limit bucket replaced, and the major
    /// parameter (channel, guild, webhook or interaction) that does.
    fn route(method: &Method, path: &str) -> (String, String) {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let major = match segments.as_slice() {
            ["channels" | "guilds", id, ..] => format!("{}/{id}", segments[0]),
            ["webhooks" | "interactions", id, token, ..] => format!("{}/{id}/{token}", segments[0]),
            _ => String::new(),
        };
        let keep = if major.is_empty() { 0 } else { major.matches('/').count() + 1 };
        let mut key = String::new();
        for (i, s) in segments.iter().enumerate() {
            key.push('/');
            let is_id = s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty();
            // Reactions share one bucket whatever the emoji.
            let after_reactions = i > 0 && segments[i - 1] == "reactions";
            if i >= keep && (is_id || after_reactions) {
                key.push_str("{id}");
            } else if i < keep && i > 0 {
                key.push_str("{major}");
            } else {
                key.push_str(s);
            }
        }
        (format!("{method} {key}"), major)
    }

    fn bucket_key(&self, route: &str, major: &str) -> String {
        let limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = limits.route_bucket.get(route).cloned().unwrap_or_else(|| route.to_string());
        format!("{bucket}|{major}")
    }

    /// How long a call on this bucket must wait now.
    fn wait_for(&self, bucket: &str) -> Option<Duration> {
        let limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let global = limits.global_until.filter(|t| *t > now).map(|t| t - now);
        let local = limits.buckets.get(bucket).filter(|(remaining, reset)| *remaining == 0 && *reset > now).map(|(_, reset)| *reset - now);
        global.max(local)
    }

    fn learn(&self, route: &str, major: &str, headers: &reqwest::header::HeaderMap) {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = header("x-ratelimit-bucket") {
            limits.route_bucket.insert(route.to_string(), bucket);
        }
        let bucket = limits.route_bucket.get(route).cloned().unwrap_or_else(|| route.to_string());
        let remaining = header("x-ratelimit-remaining").and_then(|v| v.parse::<u64>().ok());
        let reset_after = header("x-ratelimit-reset-after").and_then(|v| v.parse::<f64>().ok()).filter(|s| s.is_finite() && *s >= 0.0);
        if let (Some(remaining), Some(after)) = (remaining, reset_after) {
            limits.buckets.insert(format!("{bucket}|{major}"), (remaining, Instant::now() + Duration::from_secs_f64(after)));
        }
    }

    /// One call: waits for its bucket, sends, learns the limits from the answer, and retries a
    /// 429 or a 5xx as `retry` allows. The token never appears in an error.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>, retry: Retry) -> Result<Answer, ChatError> {
        let (route, major) = Self::route(&method, path);
        let mut attempt = 0u32;
        let allowed = match retry {
            Retry::Never => 0,
            Retry::Some(n) => n,
        };
        loop {
            let bucket = self.bucket_key(&route, &major);
            if let Some(wait) = self.wait_for(&bucket) {
                if wait > MAX_INLINE_WAIT {
                    return Err(ChatError::RateLimited { retry_after_secs: wait.as_secs_f64().ceil() as u64 });
                }
                tracing::debug!(route, wait_ms = wait.as_millis() as u64, "waiting for a Discord rate-limit bucket");
                tokio::time::sleep(wait).await;
            }
            let mut req = self.client.request(method.clone(), format!("{}{path}", self.base)).header("authorization", format!("Bot {}", self.token.expose()));
            if let Some(body) = body {
                req = req.json(body);
            }
            let res = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let text = crate::secrets::redact(&e.without_url().to_string());
                    if attempt < allowed {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                        continue;
                    }
                    return Err(ChatError::Unavailable(format!("{method} {route}: {text}")));
                }
            };
            let status = res.status();
            let headers = res.headers().clone();
            self.learn(&route, &major, &headers);
            let text = res.text().await.unwrap_or_default();
            let body: Value = if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text.clone())) };
            if status.is_success() {
                return Ok(Answer { status, body });
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let retry_after = body["retry_after"]
                    .as_f64()
                    .or_else(|| headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<f64>().ok()))
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .unwrap_or(1.0);
                let wait = Duration::from_secs_f64(retry_after);
                let global = body["global"].as_bool() == Some(true) || headers.get("x-ratelimit-global").is_some();
                {
                    let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
                    if global {
                        limits.global_until = Some(Instant::now() + wait);
                    } else {
                        let key = self.bucket_key_locked(&limits, &route, &major);
                        limits.buckets.insert(key, (0, Instant::now() + wait));
                    }
                }
                tracing::warn!(route, retry_after, global, "Discord is rate limiting");
                if attempt < allowed && wait <= MAX_INLINE_WAIT {
                    attempt += 1;
                    continue;
                }
                return Err(ChatError::RateLimited { retry_after_secs: retry_after.ceil().max(1.0) as u64 });
            }
            let what = format!("{method} {route}: HTTP {} {}", status.as_u16(), crate::secrets::redact(&short(&text)));
            if status.is_server_error() {
                if attempt < allowed {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                    continue;
                }
                return Err(ChatError::Unavailable(what));
            }
            return Err(ChatError::Refused(what));
        }
    }

    fn bucket_key_locked(&self, limits: &Limits, route: &str, major: &str) -> String {
        let bucket = limits.route_bucket.get(route).cloned().unwrap_or_else(|| route.to_string());
        format!("{bucket}|{major}")
    }
}

/// Discord's JSON error `code` (e.g. 160004, "a thread has already been created"), when the
/// refusal carries one.
pub fn error_code(e: &ChatError) -> Option<u64> {
    let ChatError::Refused(text) = e else { return None };
    let start = text.find('{')?;
    serde_json::from_str::<Value>(&text[start..]).ok()?["code"].as_u64()
}

fn short(text: &str) -> String {
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_keep_the_major_parameter_and_drop_the_others() {
        let (route, major) = Rest::route(&Method::PATCH, "/channels/111/messages/222");
        assert_eq!(route, "PATCH /channels/{major}/messages/{id}");
        assert_eq!(major, "channels/111");
        let (route, _) = Rest::route(&Method::PUT, "/channels/111/messages/222/reactions/%E2%9C%85/@me");
        assert_eq!(route, "PUT /channels/{major}/messages/{id}/reactions/{id}/@me");
        let (route, major) = Rest::route(&Method::PATCH, "/webhooks/9/tok-en/messages/@original");
        assert_eq!((route.as_str(), major.as_str()), ("PATCH /webhooks/{major}/{major}/messages/@original", "webhooks/9/tok-en"));
        let (route, major) = Rest::route(&Method::PUT, "/applications/5/guilds/6/commands");
        assert_eq!((route.as_str(), major.as_str()), ("PUT /applications/{id}/guilds/{id}/commands", ""));
    }

    #[test]
    fn a_refusal_code_is_read_from_the_error_text() {
        let e = ChatError::Refused(r#"POST /x: HTTP 400 {"message": "A thread has already been created for this message", "code": 160004}"#.into());
        assert_eq!(error_code(&e), Some(160004));
        assert_eq!(error_code(&ChatError::Unavailable("x".into())), None);
    }
}
