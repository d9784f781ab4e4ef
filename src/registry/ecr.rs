//! Amazon ECR's `GetAuthorizationToken` through the AWS SDK: the one AWS call of the registry
//! module (its types stay here). The token is base64 `AWS:<password>`, valid for 12 hours, for the
//! registry at `proxyEndpoint`.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use base64::Engine as _;
use chrono::{DateTime, Utc};

use super::auth::RegistryConfig;
use super::RegistryError;
use crate::secrets::{Secret, Vars};

pub(super) struct Token {
    pub username: String,
    pub password: Secret,
    pub expires_at: DateTime<Utc>,
    pub host: String,
}

pub(super) async fn authorization_token(config: &RegistryConfig, vars: &Vars) -> Result<Token, RegistryError> {
    let endpoint = config.endpoint_url.as_deref().unwrap_or("ECR");
    let fail = |problem: String| RegistryError::Credentials { registry: crate::secrets::display_url(endpoint), problem };
    let region = config.region.clone().unwrap_or_else(|| "us-east-1".into());
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region))
        .timeout_config(TimeoutConfig::builder().connect_timeout(Duration::from_secs(5)).operation_attempt_timeout(Duration::from_secs(20)).build());
    if let Some((id, secret, token)) = vars.explicit_aws_keys() {
        let credentials = aws_sdk_ecr::config::Credentials::new(id, secret.expose(), token.map(|t| t.expose().to_string()), None, "deploybot-vars");
        loader = loader.credentials_provider(credentials);
    }
    let shared = loader.load().await;
    let mut ecr = aws_sdk_ecr::config::Builder::from(&shared);
    if let Some(url) = &config.endpoint_url {
        ecr = ecr.endpoint_url(url);
    }
    let client = aws_sdk_ecr::Client::from_conf(ecr.build());
    let mut request = client.get_authorization_token();
    if let Some(id) = &config.registry_id {
        #[allow(deprecated)] // registryIds is deprecated by AWS but still honoured, and the only way to name another account
        {
            request = request.registry_ids(id);
        }
    }
    let answer = request.send().await.map_err(|e| fail(format!("GetAuthorizationToken failed: {}", aws_sdk_ecr::error::DisplayErrorContext(&e))))?;
    let data = answer.authorization_data().first().ok_or_else(|| fail("GetAuthorizationToken returned no authorization data".into()))?;
    let encoded = data.authorization_token().ok_or_else(|| fail("GetAuthorizationToken returned no token".into()))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|e| fail(format!("the ECR token is not base64 ({e})")))?;
    let decoded = String::from_utf8(decoded).map_err(|_| fail("the ECR token is not text".into()))?;
    let (username, password) = decoded.split_once(':').ok_or_else(|| fail("the ECR token is not user:password".into()))?;
    let password = Secret::from_value(password.to_string());
    let expires_at = data
        .expires_at()
        .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or_else(|| Utc::now() + chrono::Duration::hours(12));
    let host = data
        .proxy_endpoint()
        .map(|p| p.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/').to_string())
        .unwrap_or_default();
    Ok(Token { username: username.to_string(), password, expires_at, host })
}
