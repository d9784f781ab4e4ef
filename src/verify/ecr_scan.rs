//! The `image_scan` security check: an image's ECR scan findings through the AWS SDK. AWS types
//! stay in this file.

use std::time::Duration;

use aws_sdk_ecr::config::timeout::TimeoutConfig;
use aws_sdk_ecr::config::Region;
use aws_sdk_ecr::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_ecr::types::{ImageIdentifier, ScanStatus};

/// Severities from the most severe down, as ECR names them.
pub(super) const SEVERITIES: [&str; 5] = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL"];

/// Where the image is and what counts as a finding that fails the check.
pub(super) struct Scan<'a> {
    pub repository: &'a str,
    pub tag: &'a str,
    /// `CRITICAL`, `HIGH`, … : findings at this severity or above fail.
    pub severity: &'a str,
    pub region: &'a str,
    pub endpoint_url: Option<&'a str>,
}

/// `Ok(what it saw)` when no finding is at or above the severity, else `Err(why)`; one line each.
pub(super) async fn check(scan: &Scan<'_>, vars: &crate::secrets::Vars, timeout: Duration) -> Result<String, String> {
    let image = format!("{}:{}", scan.repository, scan.tag);
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new(scan.region.to_string()))
        .timeout_config(TimeoutConfig::builder().connect_timeout(Duration::from_secs(5)).operation_timeout(timeout).build());
    if let Some((id, secret, token)) = vars.explicit_aws_keys() {
        loader = loader.credentials_provider(aws_sdk_ecr::config::Credentials::new(id, secret.expose(), token.map(|t| t.expose().to_string()), None, "deploybot-vars"));
    }
    let shared = loader.load().await;
    let mut config = aws_sdk_ecr::config::Builder::from(&shared);
    if let Some(url) = scan.endpoint_url {
        config = config.endpoint_url(url);
    }
    let client = aws_sdk_ecr::Client::from_conf(config.build());
    let answer = client
        .describe_image_scan_findings()
        .repository_name(scan.repository)
        .image_id(ImageIdentifier::builder().image_tag(scan.tag).build())
        .send()
        .await
        .map_err(|e| match e.as_service_error().and_then(|s| s.code()) {
            Some("ScanNotFoundException") => format!("{image} has no scan findings: it was never scanned (turn on scan on push, or `aws ecr start-image-scan`)"),
            Some("ImageNotFoundException") => format!("{image} is not in ECR"),
            Some("RepositoryNotFoundException") => format!("ECR has no repository {}", scan.repository),
            _ => format!("cannot read the scan findings of {image}: {}", crate::secrets::redact(&DisplayErrorContext(&e).to_string())),
        })?;
    let status = answer.image_scan_status().and_then(|s| s.status());
    match status {
        Some(ScanStatus::Complete) | None => {}
        Some(other) => {
            let why = answer.image_scan_status().and_then(|s| s.description()).unwrap_or_default();
            return Err(format!("the scan of {image} is {} ({why}), not complete", other.as_str().to_ascii_lowercase()));
        }
    }
    let findings = answer.image_scan_findings();
    let counts: Vec<(String, i32)> = findings
        .and_then(|f| f.finding_severity_counts())
        .map(|m| {
            let mut v: Vec<(String, i32)> = m.iter().map(|(k, n)| (k.as_str().to_string(), *n)).collect();
            v.sort_by_key(|(k, _)| SEVERITIES.iter().position(|s| s == k).unwrap_or(SEVERITIES.len()));
            v
        })
        .unwrap_or_default();
    let limit = SEVERITIES.iter().position(|s| *s == scan.severity).unwrap_or(1);
    let at_or_above = |severity: &str| SEVERITIES.iter().position(|s| *s == severity).is_some_and(|p| p <= limit);
    let bad: i32 = counts.iter().filter(|(k, _)| at_or_above(k)).map(|(_, n)| n).sum();
    let shown = if counts.is_empty() { "none".to_string() } else { counts.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ") };
    if bad == 0 {
        return Ok(format!("no findings at or above {} in {image} (findings: {shown})", scan.severity));
    }
    let names: Vec<&str> = findings
        .map(|f| f.findings())
        .unwrap_or_default()
        .iter()
        .filter(|f| f.severity().is_some_and(|s| at_or_above(s.as_str())))
        .filter_map(|f| f.name())
        .take(3)
        .collect();
    Err(format!(
        "{bad} finding{} at or above {} in {image} ({shown}){}",
        if bad == 1 { "" } else { "s" },
        scan.severity,
        if names.is_empty() { String::new() } else { format!(": {}", names.join(", ")) }
    ))
}
