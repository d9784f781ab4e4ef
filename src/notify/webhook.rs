//! `kind = "webhook"`: the deployment record as JSON, POSTed and signed with HMAC-SHA256.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::config::WebhookConfig;
use super::{Delivery, Record};

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Deploybot-Signature";
/// The header carrying the notification's key: the same for a retry, so a receiver can drop a
/// delivery it has seen.
pub const DELIVERY_HEADER: &str = "X-Deploybot-Delivery";

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!("sha256={}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

pub async fn send(config: &WebhookConfig, vars: &crate::secrets::Vars, http: &reqwest::Client, key: &str, record: &Record) -> Delivery {
    let body = match serde_json::to_vec(record) {
        Ok(b) => b,
        Err(e) => return Delivery::Refused(format!("cannot encode the record: {e}")),
    };
    let mut request = http
        .post(&config.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Deploybot-Event", &record.event)
        .header(DELIVERY_HEADER, key)
        .timeout(std::time::Duration::from_secs(30));
    if let Some(secret) = &config.secret {
        match secret.resolve_in(vars) {
            Ok(s) => request = request.header(SIGNATURE_HEADER, signature(s.expose().as_bytes(), &body)),
            Err(e) => return Delivery::Retry(format!("webhook secret: {e}")),
        }
    }
    let shown = crate::secrets::display_url(&config.url);
    match request.body(body).send().await {
        Ok(r) if r.status().is_success() => Delivery::Done(None),
        Ok(r) => {
            let status = r.status();
            let text: String = r.text().await.unwrap_or_default().chars().take(200).collect();
            let why = format!("{shown} answered HTTP {}: {}", status.as_u16(), text.trim());
            if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS || status == reqwest::StatusCode::REQUEST_TIMEOUT {
                Delivery::Retry(why)
            } else {
                Delivery::Refused(why)
            }
        }
        Err(e) => Delivery::Retry(format!("cannot reach {shown}: {}", crate::targets::docker::chain(&e))),
    }
}
