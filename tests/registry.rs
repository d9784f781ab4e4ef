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
use deploybot::registry::{ImageRef, Registry, RegistryError};
use futures_util::StreamExt as _;

/// Builds a tiny `FROM scratch` image as `reference` and pushes it; untags it locally after.
async fn push_image(engine: &bollard::Docker, reference: &str) {
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
    let mut push = engine.push_image(name, Some(PushImageOptions { tag: Some(tag.to_string()), ..Default::default() }), Some(DockerCredentials::default()));
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
    async fn token(State(s): State<S>, Query(q): Query<std::collections::HashMap<String, String>>) -> axum::response::Response {
        s.asked.lock().unwrap().push(format!("service={} scope={}", q.get("service").cloned().unwrap_or_default(), q.get("scope").cloned().unwrap_or_default()));
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
