//! The Docker Registry HTTP API v2 questions the bot asks (`HEAD /v2/<name>/manifests/<tag>`:
//! does `image:tag` exist, and what is its digest), with the authentication a registry asks for
//! through `401` + `WWW-Authenticate`: basic auth, or the bearer-token flow
//! (`Bearer realm=…,service=…,scope=…`), with the credentials of `[registry]` ([`auth`]) when they
//! are for that registry and anonymously otherwise. The same credentials go to the Docker Engine
//! for pulls and pushes ([`RegistryAuth::credentials_for`]).

pub mod auth;
mod ecr;

pub use auth::{Credentials, RegistryAuth, RegistryConfig, RegistryKind};

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::StatusCode;

/// The manifest types a registry may hold for a tag: OCI and Docker, single image or index.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.v1+prettyjws";

const DOCKER_HUB: &str = "registry-1.docker.io";
const TIMEOUT: Duration = Duration::from_secs(15);

/// An image reference split the way `docker pull` splits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]` of the registry.
    pub registry: String,
    /// The repository inside it, e.g. `library/postgres`.
    pub repository: String,
    pub tag: String,
}

impl ImageRef {
    /// `image` is a repository without tag (the config's `image`); the registry is its first path
    /// part when that has a `.` or `:` or is `localhost`, Docker Hub otherwise.
    pub fn parse(image: &str, tag: &str) -> ImageRef {
        let (registry, repository) = match image.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => (first.to_string(), rest.to_string()),
            _ => (DOCKER_HUB.to_string(), image.to_string()),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') { format!("library/{repository}") } else { repository };
        ImageRef { registry, repository, tag: tag.to_string() }
    }

    /// Loopback registries speak plain HTTP (as the Docker Engine allows them to); others HTTPS.
    fn base_url(&self) -> String {
        let host = self.registry.rsplit_once(':').map_or(self.registry.as_str(), |(h, _)| h);
        let plain = host == "localhost" || host == "[::1]" || host.starts_with("127.");
        format!("{}://{}", if plain { "http" } else { "https" }, self.registry)
    }

    pub fn manifest_url(&self) -> String {
        format!("{}/v2/{}/manifests/{}", self.base_url(), self.repository, self.tag)
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.registry, self.repository, self.tag)
    }
}

/// Why the registry could not say.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("the registry {registry} cannot be reached: {cause}")]
    Unreachable { registry: String, cause: String },
    #[error("the registry {registry} asks for credentials ({challenge}) and [registry] has none for it: set kind, url, username and password")]
    NeedsCredentials { registry: String, challenge: String },
    #[error("the registry {registry} refused the credentials of {username} (HTTP {status}): check [registry] username and password")]
    CredentialsRefused { registry: String, username: String, status: u16 },
    #[error("cannot get credentials for the registry {registry}: {problem}")]
    Credentials { registry: String, problem: String },
    #[error("the registry's token service refused: {0}")]
    Token(String),
    #[error("the registry {registry} denied access to {repository} (HTTP {status}): the repository does not exist or is private")]
    Denied { registry: String, repository: String, status: u16 },
    #[error("the registry {registry} answered HTTP {status} for {what}")]
    Unexpected { registry: String, what: String, status: u16 },
}

/// Asks registries whether images exist, with `[registry]`'s credentials where they apply.
#[derive(Clone, Debug)]
pub struct Registry {
    http: reqwest::Client,
    auth: Option<Arc<RegistryAuth>>,
}

/// What the registry says about a tag that exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// `Docker-Content-Digest`, when the registry sends it (`sha256:…`).
    pub digest: Option<String>,
}

impl Registry {
    /// Anonymous access only.
    pub fn new(http: reqwest::Client) -> Registry {
        Registry { http, auth: None }
    }

    pub fn with_auth(http: reqwest::Client, auth: Option<Arc<RegistryAuth>>) -> Registry {
        Registry { http, auth }
    }

    /// `Ok(true)` when the tag's manifest exists, `Ok(false)` when the registry says 404.
    pub async fn manifest_exists(&self, image: &ImageRef) -> Result<bool, RegistryError> {
        Ok(self.manifest(image).await?.is_some())
    }

    /// The tag's manifest (its digest), `None` when the registry says 404.
    #[tracing::instrument(skip(self), fields(image = %image))]
    pub async fn manifest(&self, image: &ImageRef) -> Result<Option<Manifest>, RegistryError> {
        let url = image.manifest_url();
        let first = self.head(&url, image, None).await?;
        let response = if first.status() == StatusCode::UNAUTHORIZED {
            let challenge = first.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let (authorization, username) = self.authorization(image, &challenge).await?;
            let again = self.head(&url, image, Some(&authorization)).await?;
            if let (StatusCode::UNAUTHORIZED, Some(username)) = (again.status(), username) {
                return Err(RegistryError::CredentialsRefused { registry: image.registry.clone(), username, status: 401 });
            }
            again
        } else {
            first
        };
        match response.status() {
            s if s.is_success() => {
                let digest = response.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
                Ok(Some(Manifest { digest }))
            }
            StatusCode::NOT_FOUND => Ok(None),
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                Err(RegistryError::Denied { registry: image.registry.clone(), repository: image.repository.clone(), status: s.as_u16() })
            }
            s => Err(RegistryError::Unexpected { registry: image.registry.clone(), what: image.to_string(), status: s.as_u16() }),
        }
    }

    async fn credentials(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        match &self.auth {
            Some(auth) => auth.credentials_for(registry).await,
            None => Ok(None),
        }
    }

    /// The `Authorization` header answering `challenge`, and the user it carries credentials of.
    async fn authorization(&self, image: &ImageRef, challenge: &str) -> Result<(String, Option<String>), RegistryError> {
        let scheme = challenge.split_whitespace().next().unwrap_or_default().to_ascii_lowercase();
        let credentials = self.credentials(&image.registry).await?;
        match (scheme.as_str(), credentials) {
            ("bearer", credentials) => {
                let params = parse_challenge(challenge.split_once(' ').map_or("", |(_, p)| p));
                let username = credentials.as_ref().map(|c| c.username.clone());
                Ok((format!("Bearer {}", self.token(image, challenge, &params, credentials.as_ref()).await?), username))
            }
            ("basic", Some(c)) => {
                use base64::Engine as _;
                let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password.expose()));
                Ok((format!("Basic {encoded}"), Some(c.username)))
            }
            _ => Err(RegistryError::NeedsCredentials {
                registry: image.registry.clone(),
                challenge: challenge.split_whitespace().next().unwrap_or("no WWW-Authenticate header").to_string(),
            }),
        }
    }

    async fn head(&self, url: &str, image: &ImageRef, authorization: Option<&str>) -> Result<reqwest::Response, RegistryError> {
        let mut request = self.http.head(url).header(ACCEPT, MANIFEST_TYPES).timeout(TIMEOUT);
        if let Some(a) = authorization {
            request = request.header(AUTHORIZATION, a);
        }
        request.send().await.map_err(|e| RegistryError::Unreachable { registry: image.registry.clone(), cause: error_chain(&e) })
    }

    /// The bearer-token flow: `GET realm?service=…&scope=…` (with basic auth when there are
    /// credentials), answered with `{"token": …}` or `{"access_token": …}`.
    async fn token(&self, image: &ImageRef, challenge: &str, params: &[(String, String)], credentials: Option<&Credentials>) -> Result<String, RegistryError> {
        let realm = params.iter().find(|(k, _)| k == "realm").map(|(_, v)| v.clone()).ok_or_else(|| RegistryError::Token(format!("the challenge names no realm: {challenge}")))?;
        let mut url = url::Url::parse(&realm).map_err(|e| RegistryError::Token(format!("realm \"{}\" is not a URL ({e})", crate::secrets::display_url(&realm))))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some((_, service)) = params.iter().find(|(k, _)| k == "service") {
                q.append_pair("service", service);
            }
            let scope = params.iter().find(|(k, _)| k == "scope").map(|(_, v)| v.clone()).unwrap_or_else(|| format!("repository:{}:pull", image.repository));
            q.append_pair("scope", &scope);
        }
        // The realm comes from the registry: shown without any credentials it carries.
        let shown = crate::secrets::display_url(&realm);
        let mut request = self.http.get(url.clone()).timeout(TIMEOUT);
        if let Some(c) = credentials {
            request = request.basic_auth(&c.username, Some(c.password.expose()));
        }
        let response = request
            .send()
            .await
            .map_err(|e| RegistryError::Token(format!("{}: {}", crate::secrets::display_url(url.as_str()), error_chain(&e.without_url()))))?;
        let status = response.status();
        if let (Some(c), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) = (credentials, status) {
            return Err(RegistryError::CredentialsRefused { registry: image.registry.clone(), username: c.username.clone(), status: status.as_u16() });
        }
        if !status.is_success() {
            return Err(RegistryError::Token(format!("{shown} answered HTTP {}", status.as_u16())));
        }
        let body: serde_json::Value = response.json().await.map_err(|e| RegistryError::Token(format!("{shown} answered something that is not JSON ({})", e.without_url())))?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| RegistryError::Token(format!("{shown} answered without a token")))
    }
}

/// A digest as chat shows it: `sha256:` and its first 12 hex digits.
pub fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((algo, hex)) => format!("{algo}:{}", &hex[..hex.len().min(12)]),
        None => digest[..digest.len().min(12)].to_string(),
    }
}

/// `realm="https://auth.docker.io/token",service="registry.docker.io"` → pairs. Values may
/// hold commas inside their quotes (scopes with several actions).
fn parse_challenge(params: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else { break };
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.find('"') {
                Some(end) => (quoted[..end].to_string(), &quoted[end + 1..]),
                None => (quoted.to_string(), ""),
            },
            None => match after.find(',') {
                Some(end) => (after[..end].trim().to_string(), &after[end..]),
                None => (after.trim().to_string(), ""),
            },
        };
        out.push((key, value));
        rest = next.trim_start_matches([',', ' ']);
    }
    out
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_split_like_docker_pull() {
        let check = |image: &str, registry: &str, repository: &str| {
            let r = ImageRef::parse(image, "v1.0.0");
            assert_eq!((r.registry.as_str(), r.repository.as_str()), (registry, repository), "{image}");
        };
        check("postgres", DOCKER_HUB, "library/postgres");
        check("your-registry/invoice-me-backend", DOCKER_HUB, "your-registry/invoice-me-backend");
        check("ghcr.io/acme/invoice-me-backend", "ghcr.io", "acme/invoice-me-backend");
        check("127.0.0.1:5000/invoiceme/backend", "127.0.0.1:5000", "invoiceme/backend");
        check("localhost/backend", "localhost", "backend");
        assert_eq!(ImageRef::parse("127.0.0.1:5000/a/b", "v2").manifest_url(), "http://127.0.0.1:5000/v2/a/b/manifests/v2");
        assert_eq!(ImageRef::parse("ghcr.io/a/b", "v2").manifest_url(), "https://ghcr.io/v2/a/b/manifests/v2");
    }

    #[test]
    fn a_bearer_challenge_gives_its_parameters() {
        let p = parse_challenge(r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#);
        assert_eq!(
            p,
            vec![
                ("realm".to_string(), "https://auth.docker.io/token".to_string()),
                ("service".to_string(), "registry.docker.io".to_string()),
                ("scope".to_string(), "repository:a/b:pull,push".to_string())
            ]
        );
    }
}
