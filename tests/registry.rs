//! The preflight image check against a real registry (Debian's docker-registry on 127.0.0.1,
//! started by scripts/services/registry.sh) holding an image the test builds and pushes through
//! the Docker Engine; and the bearer-token flow against a registry double.

#[path = "support/docker.rs"]
mod docker;
#[path = "support/services.rs"]
mod services;

use std::sync::{Arc, Mutex};

use bollard::auth::DockerCredentials;
use bollard::query_parameters::{BuildImageOptions, PushImageOptions, RemoveImageOptions};
use chrono::Utc;
use deploybot::app;
use deploybot::chat::console;
use deploybot::config::Config;
use deploybot::engine::clock::ShiftedClock;
use deploybot::registry::{Credentials, ImageRef, Registry, RegistryAuth, RegistryConfig, RegistryError};
use deploybot::secrets::Vars;
use futures_util::StreamExt as _;

/// Builds a tiny `FROM scratch` image as `reference` and pushes it; untags it locally after.
async fn push_image(engine: &bollard::Docker, reference: &str) {
    push_image_as(engine, reference, None).await
}

/// [`push_image`] with credentials for the registry.
async fn push_image_as(engine: &bollard::Docker, reference: &str, credentials: Option<&Credentials>) {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in [("Dockerfile", format!("FROM scratch\nCOPY hello.txt /hello.txt\nLABEL {}=1\n", docker::TEST_LABEL)), ("hello.txt", reference.to_string())] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, data.as_bytes()).unwrap();
    }
    let context = tar.into_inner().unwrap();
    let options = BuildImageOptions { t: Some(reference.to_string()), rm: true, forcerm: true, ..Default::default() };
    let mut build = engine.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(item) = build.next().await {
        let info = item.unwrap_or_else(|e| panic!("building {reference}: {e}"));
        if let Some(error) = info.error.or(info.error_detail.and_then(|d| d.message)) {
            panic!("building {reference}: {error}");
        }
    }
    let (name, tag) = reference.rsplit_once(':').unwrap();
    let credentials = credentials.map_or_else(DockerCredentials::default, |c| DockerCredentials {
        username: Some(c.username.clone()),
        password: Some(c.password.expose().to_string()),
        serveraddress: Some(name.split('/').next().unwrap().to_string()),
        ..Default::default()
    });
    let mut push = engine.push_image(name, Some(PushImageOptions { tag: Some(tag.to_string()), ..Default::default() }), Some(credentials));
    while let Some(item) = push.next().await {
        let info = item.unwrap_or_else(|e| panic!("pushing {reference}: {e}"));
        if let Some(error) = info.error.or(info.error_detail.and_then(|d| d.message)) {
            panic!("pushing {reference}: {error}");
        }
    }
    let _ = engine.remove_image(reference, Some(RemoveImageOptions { force: true, noprune: false }), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_tag_passes_the_preflight_and_a_missing_one_is_refused_at_once() {
    let Some(registry) = services::registry() else { return };
    let Some(engine) = docker::engine().await else { return };
    let repository = format!("{registry}/{}/invoice-me-backend", services::unique("deploybot-test"));
    push_image(&engine, &format!("{repository}:v1.0.0")).await;

    let client = Registry::new(reqwest::Client::new());
    assert!(client.manifest_exists(&ImageRef::parse(&repository, "v1.0.0")).await.unwrap());
    assert!(!client.manifest_exists(&ImageRef::parse(&repository, "v9.9.9")).await.unwrap());

    // Through the engine: `check_images = true` on the environment.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let config = Config::parse(&format!(
        r#"[bot]
database_url = "sqlite://{d}/deploybot.db"
[chat]
platform = "console"
[chat.console]
user = "alice"
[services.backend]
image = "{repository}"
[environments.staging]
channel = "C0STAGING"
check_images = true
target = {{ kind = "command", deploy = ["true"] }}
[environments.dev]
channel = "C0DEV"
target = {{ kind = "command", deploy = ["true"] }}
"#
    ))
    .unwrap_or_else(|p| panic!("{p:?}"));
    let app = app::build_console_app(config, Arc::new(ShiftedClock::at(Utc::now())), None).await.unwrap();
    let say = |seq: u64, line: &str| {
        let event = console::parse_line(line, "alice", "console", seq).unwrap().unwrap();
        let engine = app.engine.clone();
        async move { engine.handle(event).await.unwrap().map(|r| r.0).unwrap_or_default() }
    };
    let refused = say(1, "/deploy v9.9.9 staging").await;
    assert!(refused.contains(&format!("{repository}:v9.9.9 does not exist in the registry: was it built and pushed?")), "{refused}");
    assert!(app.engine.store.deployments(None, &[], 5).await.unwrap().is_empty(), "nothing was requested");
    let accepted = say(2, "/deploy v1.0.0 staging").await;
    assert!(accepted.starts_with("👍"), "{accepted}");
    let unchecked = say(3, "/deploy v9.9.9 dev").await;
    assert!(unchecked.starts_with("👍"), "dev does not check images: {unchecked}");
}

/// What the double's token endpoint was asked.
type Asked = Arc<Mutex<Vec<String>>>;

/// A registry that wants a bearer token from its own token endpoint (or, with `basic`, a password).
async fn registry_double(basic: bool) -> (String, Asked) {
    use axum::extract::{Path, Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let asked: Asked = Arc::default();
    #[derive(Clone)]
    struct S {
        addr: String,
        asked: Asked,
        basic: bool,
    }
    async fn manifest(State(s): State<S>, Path((repo, tag)): Path<(String, String)>, headers: HeaderMap) -> axum::response::Response {
        let accepts_oci = headers.get("accept").and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("application/vnd.oci.image.index.v1+json"));
        let authorized = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer good-token");
        if !authorized {
            let challenge = if s.basic {
                "Basic realm=\"registry\"".to_string()
            } else {
                format!("Bearer realm=\"http://{}/token\",service=\"double-registry\",scope=\"repository:acme/{repo}:pull\"", s.addr)
            };
            return (StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)]).into_response();
        }
        match (accepts_oci, tag.as_str()) {
            (true, "v1.0.0") => (StatusCode::OK, [("docker-content-digest", "sha256:abc")]).into_response(),
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }
    async fn token(State(s): State<S>, Query(q): Query<std::collections::HashMap<String, String>>, headers: HeaderMap) -> axum::response::Response {
        // With credentials, only alice's password gets a token (base64 of "alice:s3cret-pass").
        let who = match headers.get("authorization").and_then(|v| v.to_str().ok()) {
            None => String::new(),
            Some("Basic YWxpY2U6czNjcmV0LXBhc3M=") => "alice: ".to_string(),
            Some(_) => return StatusCode::UNAUTHORIZED.into_response(),
        };
        s.asked.lock().unwrap().push(format!("{who}service={} scope={}", q.get("service").cloned().unwrap_or_default(), q.get("scope").cloned().unwrap_or_default()));
        axum::Json(serde_json::json!({ "token": "good-token", "expires_in": 300 })).into_response()
    }
    let router = axum::Router::new()
        .route("/v2/acme/{repo}/manifests/{tag}", axum::routing::head(manifest))
        .route("/token", axum::routing::get(token))
        .with_state(S { addr: addr.clone(), asked: asked.clone(), basic });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_asking_for_a_bearer_token_gets_one_from_its_realm_and_the_check_is_retried() {
    let (addr, asked) = registry_double(false).await;
    let client = Registry::new(reqwest::Client::new());
    assert!(client.manifest_exists(&ImageRef::parse(&format!("{addr}/acme/invoice-me-backend"), "v1.0.0")).await.unwrap());
    assert!(!client.manifest_exists(&ImageRef::parse(&format!("{addr}/acme/invoice-me-backend"), "v9.9.9")).await.unwrap());
    assert_eq!(asked.lock().unwrap().clone(), vec!["service=double-registry scope=repository:acme/invoice-me-backend:pull".to_string(); 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_wants_a_password_and_one_that_is_down_are_reported_as_such() {
    let (addr, _) = registry_double(true).await;
    let client = Registry::new(reqwest::Client::new());
    let err = client.manifest_exists(&ImageRef::parse(&format!("{addr}/acme/app"), "v1.0.0")).await.unwrap_err();
    assert!(matches!(err, RegistryError::NeedsCredentials { .. }), "{err}");
    assert!(err.to_string().contains("asks for credentials (Basic)"), "{err}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = client.manifest_exists(&ImageRef::parse(&format!("127.0.0.1:{closed}/acme/app"), "v1.0.0")).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }) && err.to_string().contains("cannot be reached"), "{err}");
}

/// `[registry]` as a test writes it, with its `${VAR}`s given in `vars`.
fn registry_auth(toml: &str, vars: &[(&str, &str)]) -> Arc<RegistryAuth> {
    let config: RegistryConfig = toml::from_str(toml).unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    Arc::new(RegistryAuth::new(config, Vars::from_pairs(vars.iter().copied())))
}

/// The htpasswd registry of scripts/services/registry.sh, its user and password.
fn auth_registry() -> Option<(String, String, String)> {
    let addr = services::registry_auth()?;
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: registry.sh sets it with DEPLOYBOT_TEST_REGISTRY_AUTH"));
    Some((addr, var("DEPLOYBOT_TEST_REGISTRY_USER"), var("DEPLOYBOT_TEST_REGISTRY_PASSWORD")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_credentials_reach_an_htpasswd_registry_and_wrong_ones_are_named() {
    let Some((addr, user, password)) = auth_registry() else { return };
    let Some(engine) = docker::engine().await else { return };
    let repository = format!("{addr}/{}/backend", services::unique("deploybot-test"));
    let good = registry_auth(
        &format!("kind = \"basic\"\nurl = \"http://{addr}\"\nusername = \"${{REG_USER}}\"\npassword = \"${{REG_PASSWORD}}\""),
        &[("REG_USER", &user), ("REG_PASSWORD", &password)],
    );
    // The engine pushes with the credentials the module hands out.
    let credentials = good.credentials_for(&addr).await.unwrap().expect("credentials for the configured registry");
    assert_eq!(credentials.username, user);
    push_image_as(&engine, &format!("{repository}:v1.0.0"), Some(&credentials)).await;

    let client = Registry::with_auth(reqwest::Client::new(), Some(good.clone()));
    let manifest = client.manifest(&ImageRef::parse(&repository, "v1.0.0")).await.unwrap().expect("the pushed tag");
    assert!(manifest.digest.as_deref().is_some_and(|d| d.starts_with("sha256:") && d.len() == 71), "{manifest:?}");
    assert!(client.manifest(&ImageRef::parse(&repository, "v9.9.9")).await.unwrap().is_none());

    let wrong = registry_auth(
        &format!("kind = \"basic\"\nurl = \"http://{addr}\"\nusername = \"{user}\"\npassword = \"${{REG_PASSWORD}}\""),
        &[("REG_PASSWORD", "not-the-password")],
    );
    let err = Registry::with_auth(reqwest::Client::new(), Some(wrong)).manifest(&ImageRef::parse(&repository, "v1.0.0")).await.unwrap_err();
    assert!(matches!(err, RegistryError::CredentialsRefused { .. }), "{err}");
    assert_eq!(err.to_string(), format!("the registry {addr} refused the credentials of {user} (HTTP 401): check [registry] username and password"));
    assert!(!err.to_string().contains("not-the-password"));

    let unset = registry_auth(&format!("kind = \"basic\"\nurl = \"http://{addr}\"\nusername = \"{user}\"\npassword = \"${{REG_PASSWORD}}\""), &[]);
    let err = Registry::with_auth(reqwest::Client::new(), Some(unset)).manifest(&ImageRef::parse(&repository, "v1.0.0")).await.unwrap_err();
    assert_eq!(err.to_string(), format!("cannot get credentials for the registry {addr}: environment variable REG_PASSWORD is not set"));

    // Credentials for another registry are not sent here: anonymous, and told so.
    let elsewhere = registry_auth("kind = \"basic\"\nurl = \"https://registry.example.com\"\nusername = \"u\"\npassword = \"${P}\"", &[("P", "pw-elsewhere")]);
    let err = Registry::with_auth(reqwest::Client::new(), Some(elsewhere)).manifest(&ImageRef::parse(&repository, "v1.0.0")).await.unwrap_err();
    assert!(err.to_string().contains("asks for credentials (Basic) and [registry] has none for it"), "{err}");

    // Through the engine's preflight: `[registry]` in the config, `check_images = true`.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let mut config = Config::parse(&format!(
        r#"[bot]
database_url = "sqlite://{d}/deploybot.db"
[chat.console]
user = "alice"
[registry]
kind = "basic"
url = "http://{addr}"
username = "${{REG_USER}}"
password = "${{REG_PASSWORD}}"
[services.backend]
image = "{repository}"
[environments.staging]
channel = "C0STAGING"
check_images = true
target = {{ kind = "command", deploy = ["true"] }}
"#
    ))
    .unwrap_or_else(|p| panic!("{p:?}"));
    config.vars = Vars::from_pairs([("REG_USER", user.as_str()), ("REG_PASSWORD", password.as_str())]);
    let app = app::build_console_app(config, Arc::new(ShiftedClock::at(Utc::now())), None).await.unwrap();
    let say = |seq: u64, line: &str| {
        let event = console::parse_line(line, "alice", "console", seq).unwrap().unwrap();
        let engine = app.engine.clone();
        async move { engine.handle(event).await.unwrap().map(|r| r.0).unwrap_or_default() }
    };
    let refused = say(1, "/deploy v9.9.9 staging").await;
    assert!(refused.contains(&format!("{repository}:v9.9.9 does not exist in the registry")), "{refused}");
    let accepted = say(2, "/deploy v1.0.0 staging").await;
    assert!(accepted.starts_with("👍"), "{accepted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_flow_carries_the_configured_credentials_and_a_refusal_names_the_user() {
    let (addr, asked) = registry_double(false).await;
    let image = ImageRef::parse(&format!("{addr}/acme/invoice-me-backend"), "v1.0.0");
    let auth = |password: &str| {
        registry_auth(&format!("kind = \"bearer\"\nurl = \"http://{addr}\"\nusername = \"alice\"\npassword = \"${{REG_PASSWORD}}\""), &[("REG_PASSWORD", password)])
    };
    assert!(Registry::with_auth(reqwest::Client::new(), Some(auth("s3cret-pass"))).manifest_exists(&image).await.unwrap());
    assert_eq!(asked.lock().unwrap().clone(), vec!["alice: service=double-registry scope=repository:acme/invoice-me-backend:pull".to_string()]);
    let err = Registry::with_auth(reqwest::Client::new(), Some(auth("wrong-pass"))).manifest_exists(&image).await.unwrap_err();
    assert_eq!(err.to_string(), format!("the registry {addr} refused the credentials of alice (HTTP 401): check [registry] username and password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_credentials_come_from_get_authorization_token_and_are_kept_until_near_expiry() {
    let Some(moto) = services::moto() else { return };
    let vars: Vec<(&str, &str)> = services::MOTO_KEYS.to_vec();
    let auth = registry_auth(&format!("kind = \"ecr\"\nregion = \"us-east-1\"\nendpoint_url = \"{moto}\""), &vars);
    // Time is given explicitly: moto's tokens expire at a fixed instant (2015-01-01), real ECR's
    // twelve hours after the call; either way the test starts well before it.
    let early = chrono::DateTime::parse_from_rfc3339("2000-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
    let (host, expires_at, username) = auth.ecr_token_info_at(early).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(username, "AWS");
    assert!(host.contains(".dkr.ecr.us-east-1.amazonaws.com"), "{host}");
    assert!(expires_at > early, "{expires_at}");
    assert!(auth.applies_to(&host));
    assert_eq!(auth.ecr_fetches(), 1);
    // Kept while it is valid for longer than the margin...
    let (_, same_expiry, _) = auth.ecr_token_info_at(expires_at - chrono::Duration::hours(1)).await.unwrap();
    assert_eq!(same_expiry, expires_at);
    assert_eq!(auth.ecr_fetches(), 1);
    // ...and fetched again once it expires within the refresh margin.
    auth.ecr_token_info_at(expires_at - chrono::Duration::minutes(5)).await.unwrap();
    assert_eq!(auth.ecr_fetches(), 2);
    // What pulls and pushes get: user AWS and the token's password, masked when printed.
    let credentials = auth.credentials_for(&host).await.unwrap().expect("credentials for the ECR registry");
    assert_eq!(credentials.username, "AWS");
    assert!(!credentials.password.expose().is_empty());
    assert_eq!(format!("{:?}", credentials.password), "•••", "the password prints as a mask");

    // An endpoint that does not answer: the error names the call.
    let refused = registry_auth("kind = \"ecr\"\nregion = \"us-east-1\"\nendpoint_url = \"http://127.0.0.1:9\"", &vars);
    let err = refused.credentials(&host).await.unwrap_err();
    assert!(err.to_string().starts_with("cannot get credentials for the registry http://127.0.0.1:9: GetAuthorizationToken failed"), "{err}");
}
