//! `kind = "email"`: the deployment summary (the runbook's history template) over SMTP, with
//! STARTTLS (required when credentials are configured, so they never cross in clear) and the
//! credentials from `${VAR}`s.

use lettre::message::{header::ContentType, Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::config::EmailConfig;
use super::{Delivery, Record};

/// The message for `record`; its Message-ID is made from the notification key, so a retry that
/// reaches the inbox twice is recognisable as the same message.
pub fn message(config: &EmailConfig, key: &str, record: &Record) -> Result<Message, String> {
    let from: Mailbox = config.from.parse().map_err(|e| format!("from \"{}\": {e}", config.from))?;
    let domain = config.from.rsplit('@').next().unwrap_or("deploybot");
    let mut builder = Message::builder()
        .from(from)
        .subject(format!("[deploybot] {}", record.headline()))
        .message_id(Some(format!("<deploybot.{}@{domain}>", key.replace(':', "."))))
        .header(ContentType::TEXT_PLAIN);
    for to in &config.to {
        builder = builder.to(to.parse().map_err(|e| format!("to \"{to}\": {e}"))?);
    }
    builder.body(record.summary_text()).map_err(|e| format!("cannot build the message: {e}"))
}

/// Sends one message. A permanent SMTP refusal (5xx) is [`Delivery::Refused`], anything else
/// (4xx, the server unreachable, TLS failing) is worth a retry.
pub async fn send(config: &EmailConfig, vars: &crate::secrets::Vars, key: &str, record: &Record) -> Delivery {
    let message = match message(config, key, record) {
        Ok(m) => m,
        Err(e) => return Delivery::Refused(e),
    };
    let transport = match transport(config, vars) {
        Ok(t) => t,
        Err(e) => return Delivery::Retry(e),
    };
    let server = crate::secrets::display_url(&config.smtp);
    match transport.send(message).await {
        Ok(_) => Delivery::Done(None),
        Err(e) if e.is_permanent() => Delivery::Refused(format!("the SMTP server {server} refused the message: {}", chain(&e))),
        Err(e) => Delivery::Retry(format!("sending through {server} failed: {}", chain(&e))),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    crate::secrets::redact(&crate::targets::docker::chain(e))
}

fn transport(config: &EmailConfig, vars: &crate::secrets::Vars) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let url = url::Url::parse(&config.smtp).map_err(|e| format!("smtp: {e}"))?;
    let host = url.host_str().ok_or("smtp: no host")?.to_string();
    let wrapper = url.scheme() == "smtps";
    let port = url.port().unwrap_or(if wrapper { 465 } else { 587 });
    let mut tls = TlsParameters::builder(host.clone());
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("ca_file {path}: {e}"))?;
        tls = tls.add_root_certificate(Certificate::from_pem(&pem).map_err(|e| format!("ca_file {path}: {e}"))?);
    }
    let tls = tls.build_rustls().map_err(|e| format!("TLS for {host}: {e}"))?;
    let credentials = match (&config.username, &config.password) {
        (Some(u), Some(p)) => Some(Credentials::new(u.resolve_in(vars)?.expose().to_string(), p.resolve_in(vars)?.expose().to_string())),
        _ => None,
    };
    let required = match config.starttls.as_deref() {
        Some("opportunistic") => false,
        Some(_) => true,
        None => credentials.is_some(),
    };
    let mode = if wrapper {
        Tls::Wrapper(tls)
    } else if required {
        Tls::Required(tls)
    } else {
        Tls::Opportunistic(tls)
    };
    let timeout = crate::config::parse_duration(&config.timeout).unwrap_or(std::time::Duration::from_secs(30));
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).port(port).tls(mode).timeout(Some(timeout));
    if let Some(c) = credentials {
        builder = builder.credentials(c);
    }
    Ok(builder.build())
}
