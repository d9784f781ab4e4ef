//! A client for the one question the preflight asks a registry: does `image:tag` exist?
//! Docker Registry HTTP API v2 (`HEAD /v2/<name>/manifests/<tag>`), with the bearer-token flow
//! a registry asks for through `401` + `WWW-Authenticate: Bearer realm=…,service=…,scope=…`.
//!
//! Anonymous only: a registry that wants a password (`Basic`) is reported as such.

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
    #[error("the registry {registry} asks for credentials ({challenge}), and deploybot checks images anonymously")]
    NeedsCredentials { registry: String, challenge: String },
    #[error("the registry's token service refused: {0}")]
    Token(String),
    #[error("the registry {registry} denied access to {repository} (HTTP {status}): the repository does not exist or is private")]
    Denied { registry: String, repository: String, status: u16 },
    #[error("the registry {registry} answered HTTP {status} for {what}")]
    Unexpected { registry: String, what: String, status: u16 },
}

/// Asks registries whether images exist.
#[derive(Clone, Debug)]
pub struct Registry {
    http: reqwest::Client,
}

impl Registry {
    pub fn new(http: reqwest::Client) -> Registry {
        Registry { http }
    }

    /// `Ok(true)` when the tag's manifest exists, `Ok(false)` when the registry says 404.
    #[tracing::instrument(skip(self), fields(image = %image))]
    pub async fn manifest_exists(&self, image: &ImageRef) -> Result<bool, RegistryError> {
        let url = image.manifest_url();
        let first = self.head(&url, image, None).await?;
        let response = if first.status() == StatusCode::UNAUTHORIZED {
            let challenge = first.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let token = self.token(image, &challenge).await?;
            self.head(&url, image, Some(&token)).await?
        } else {
            first
        };
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                Err(RegistryError::Denied { registry: image.registry.clone(), repository: image.repository.clone(), status: s.as_u16() })
            }
            s => Err(RegistryError::Unexpected { registry: image.registry.clone(), what: image.to_string(), status: s.as_u16() }),
        }
    }

    async fn head(&self, url: &str, image: &ImageRef, token: Option<&str>) -> Result<reqwest::Response, RegistryError> {
        let mut request = self.http.head(url).header(ACCEPT, MANIFEST_TYPES).timeout(TIMEOUT);
        if let Some(t) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        request.send().await.map_err(|e| RegistryError::Unreachable { registry: image.registry.clone(), cause: error_chain(&e) })
    }

    /// The bearer-token flow: `GET realm?service=…&scope=…`, answered with `{"token": …}` or
    /// `{"access_token": …}`.
    async fn token(&self, image: &ImageRef, challenge: &str) -> Result<String, RegistryError> {
        let Some(params) = challenge.strip_prefix("Bearer ").or_else(|| challenge.strip_prefix("bearer ")).map(parse_challenge) else {
            let scheme = challenge.split_whitespace().next().unwrap_or("no WWW-Authenticate header").to_string();
            return Err(RegistryError::NeedsCredentials { registry: image.registry.clone(), challenge: scheme });
        };
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
        let response = self
            .http
            .get(url.clone())
            .timeout(TIMEOUT)
            .send()
            .await
            .map_err(|e| RegistryError::Token(format!("{}: {}", crate::secrets::display_url(url.as_str()), error_chain(&e.without_url()))))?;
        let status = response.status();
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
