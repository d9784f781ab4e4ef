//! The stand-in in-process on port 0, driven over real HTTP.

use std::time::{Duration, Instant};

use deploybot_standin::{spawn, Spawned, StandinConfig, SMOKE_PASSWORD, SMOKE_USERNAME};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

async fn app(version: &str) -> Spawned {
    spawn(StandinConfig::new(version))
        .await
        .expect("bind a loopback port")
}

async fn app_with(config: StandinConfig) -> Spawned {
    spawn(config).await.expect("bind a loopback port")
}

fn client() -> Client {
    Client::new()
}

async fn get(app: &Spawned, path: &str) -> reqwest::Response {
    client().get(app.url(path)).send().await.expect("request")
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn login(app: &Spawned, password: &str) -> reqwest::Response {
    client()
        .post(app.url("/api/auth/login"))
        .json(&json!({ "username": SMOKE_USERNAME, "password": password }))
        .send()
        .await
        .expect("request")
}

async fn token(app: &Spawned) -> String {
    let body: Value = login(app, SMOKE_PASSWORD).await.json().await.expect("json");
    body["token"].as_str().expect("token").to_owned()
}

async fn create_customer(app: &Spawned, token: &str, body: Value) -> reqwest::Response {
    client()
        .post(app.url("/api/customers"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request")
}

async fn metrics(app: &Spawned) -> String {
    let response = get(app, "/actuator/prometheus").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(content_type(&response).starts_with("text/plain; version=0.0.4"));
    response.text().await.expect("text")
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn requests(metric: &str, method: &str, status: u16, uri: &str) -> String {
    let outcome = match status {
        200..=299 => "SUCCESS",
        400..=499 => "CLIENT_ERROR",
        _ => "SERVER_ERROR",
    };
    format!(
        "http_server_requests_seconds_{metric}{{error=\"none\",exception=\"none\",method=\"{method}\",outcome=\"{outcome}\",status=\"{status}\",uri=\"{uri}\"}}"
    )
}

#[tokio::test]
async fn health_reports_up_with_its_components() {
    let app = app("v1.0.0").await;
    let response = get(&app, "/api/actuator/health").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(content_type(&response).contains("json"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"status":"UP","components":{"db":{"status":"UP"},"diskSpace":{"status":"UP"}}})
    );
}

#[tokio::test]
async fn database_health_names_postgres() {
    let app = app("v1.0.0").await;
    let response = get(&app, "/api/actuator/health/db").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"status":"UP","details":{"database":"PostgreSQL","validationQuery":"isValid()"}})
    );
}

#[tokio::test]
async fn login_with_the_smoke_user_returns_a_jwt_looking_bearer_token() {
    let app = app("v1.0.0").await;
    let response = login(&app, SMOKE_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["tokenType"], "Bearer");
    assert_eq!(body["expiresIn"], 3600);
    let token = body["token"].as_str().unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    assert!(parts.iter().all(|part| !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')));
    assert!(
        token.starts_with("eyJ"),
        "a JSON header starts with eyJ: {token}"
    );
}

#[tokio::test]
async fn login_with_a_wrong_password_is_a_401_json_error() {
    let app = app("v1.0.0").await;
    let response = login(&app, "wrong").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 401);
    assert_eq!(body["message"], "Bad credentials");
}

#[tokio::test]
async fn login_also_accepts_the_configured_extra_password() {
    let app = app_with(StandinConfig {
        extra_password: Some("s3cret".into()),
        ..StandinConfig::new("v1.0.0")
    })
    .await;
    assert_eq!(login(&app, "s3cret").await.status(), StatusCode::OK);
    assert_eq!(login(&app, SMOKE_PASSWORD).await.status(), StatusCode::OK);
    assert_eq!(
        login(&app, "s3cret!").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn login_without_credentials_is_a_400() {
    let app = app("v1.0.0").await;
    let response = client()
        .post(app.url("/api/auth/login"))
        .json(&json!({"username": SMOKE_USERNAME}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = client()
        .post(app.url("/api/auth/login"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn customers_need_a_token_the_app_issued() {
    let app = app("v1.0.0").await;
    let anonymous = client()
        .get(app.url("/api/customers"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let forged = client()
        .get(app.url("/api/customers"))
        .bearer_auth("eyJ.forged.token")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    let response = create_customer(
        &app,
        "eyJ.forged.token",
        json!({"name":"A","email":"a@example.com"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(app.state.customers().is_empty());
}

#[tokio::test]
async fn a_created_customer_is_returned_with_201_and_then_listed() {
    let app = app("v1.0.0").await;
    let token = token(&app).await;
    let response = create_customer(
        &app,
        &token,
        json!({"name":"Smoke 42","email":"smoke-42@example.com"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["name"], "Smoke 42");
    assert_eq!(created["email"], "smoke-42@example.com");
    let id = created["id"].as_str().unwrap();
    assert_eq!(id.len(), 36, "uuid-ish: {id}");
    assert!(created["createdAt"].as_str().unwrap().ends_with('Z'));

    let listed: Value = client()
        .get(app.url("/api/customers"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!([created]));
}

#[tokio::test]
async fn a_customer_without_name_or_valid_email_is_a_400() {
    let app = app("v1.0.0").await;
    let token = token(&app).await;
    for body in [
        json!({"email":"a@example.com"}),
        json!({"name":"  ","email":"a@example.com"}),
        json!({"name":"A"}),
        json!({"name":"A","email":"nope"}),
    ] {
        let response = create_customer(&app, &token, body.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["message"].as_str().unwrap().contains("must"),
            "{error}"
        );
    }
    assert!(app.state.customers().is_empty());
}

#[tokio::test]
async fn the_frontend_and_the_version_endpoint_name_the_version() {
    let app = app("v1.4.2").await;
    let page = get(&app, "/").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(content_type(&page).starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("v1.4.2"));
    let version: Value = get(&app, "/api/version").await.json().await.unwrap();
    assert_eq!(version, json!({"version":"v1.4.2"}));
}

#[tokio::test]
async fn an_unknown_path_is_a_json_404() {
    let app = app("v1.0.0").await;
    let response = get(&app, "/api/invoices/7").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["path"], "/api/invoices/7");
}

#[tokio::test]
async fn every_request_served_is_counted_by_route_and_status() {
    let app = app("v1.0.0").await;
    for _ in 0..3 {
        get(&app, "/api/actuator/health").await;
    }
    get(&app, "/api/customers").await; // 401
    get(&app, "/nowhere").await; // 404
    let text = metrics(&app).await;
    assert_eq!(
        sample(
            &text,
            &requests("count", "GET", 200, "/api/actuator/health")
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            &requests("bucket", "GET", 200, "/api/actuator/health").replace('}', ",le=\"+Inf\"}")
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, &requests("count", "GET", 401, "/api/customers")),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, &requests("count", "GET", 404, "NOT_FOUND")),
        Some(1.0)
    );
    assert!(sample(&text, &requests("sum", "GET", 200, "/api/actuator/health")).is_some());

    // The scrape itself is counted once it has been answered, as in Spring.
    let again = metrics(&app).await;
    assert_eq!(
        sample(
            &again,
            &requests("count", "GET", 200, "/actuator/prometheus")
        ),
        Some(1.0)
    );
    let same_on_api_path = get(&app, "/api/actuator/prometheus")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        sample(
            &same_on_api_path,
            &requests("count", "GET", 200, "/actuator/prometheus")
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn metrics_expose_the_gauges_the_monitoring_rules_read() {
    let app = app("v1.0.0").await;
    let text = metrics(&app).await;
    assert_eq!(sample(&text, "app_info{version=\"v1.0.0\"}"), Some(1.0));
    assert!(sample(&text, "process_cpu_usage").unwrap() < 0.8);
    assert!(sample(&text, "system_cpu_usage").is_some());
    assert!(heap_ratio(&text) < 0.85);
    assert_eq!(
        sample(&text, "hikaricp_connections_active{pool=\"HikariPool-1\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "hikaricp_connections_max{pool=\"HikariPool-1\"}"),
        Some(10.0)
    );
    assert_eq!(
        sample(&text, "hikaricp_connections{pool=\"HikariPool-1\"}"),
        Some(10.0)
    );
    assert!(sample(&text, "application_ready_time_seconds{main_application_class=\"com.invoiceme.InvoiceMeApplication\"}").is_some());
    assert!(text.contains("# TYPE http_server_requests_seconds histogram"));
}

/// `sum(jvm_memory_used_bytes{area="heap"}) / sum(jvm_memory_max_bytes{area="heap"})`
fn heap_ratio(text: &str) -> f64 {
    let sum = |metric: &str| -> f64 {
        text.lines()
            .filter(|line| line.starts_with(&format!("{metric}{{area=\"heap\"")))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    sum("jvm_memory_used_bytes") / sum("jvm_memory_max_bytes")
}

#[tokio::test]
async fn a_broken_build_reports_down_with_503_and_cannot_log_in() {
    let app = app("v1.1.0-broken").await;
    let health = get(&app, "/api/actuator/health").await;
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "DOWN");
    assert_eq!(body["components"]["db"]["status"], "DOWN");
    let db = get(&app, "/api/actuator/health/db").await;
    assert_eq!(db.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(db.json::<Value>().await.unwrap()["status"], "DOWN");
    assert_eq!(
        login(&app, SMOKE_PASSWORD).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let text = metrics(&app).await;
    assert_eq!(
        sample(
            &text,
            &requests("count", "GET", 503, "/api/actuator/health")
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_slow_build_delays_every_response_and_it_shows_in_the_histogram() {
    let app = app_with(StandinConfig {
        slow: Duration::from_millis(300),
        ..StandinConfig::new("v1.1.0-slow")
    })
    .await;
    let started = Instant::now();
    assert_eq!(
        get(&app, "/api/actuator/health").await.status(),
        StatusCode::OK
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    let text = metrics(&app).await;
    let bucket = |le: &str| {
        sample(
            &text,
            &requests("bucket", "GET", 200, "/api/actuator/health")
                .replace('}', &format!(",le=\"{le}\"}}")),
        )
    };
    assert_eq!(bucket("0.25"), Some(0.0));
    assert_eq!(bucket("0.5"), Some(1.0));
    assert!(sample(&text, &requests("sum", "GET", 200, "/api/actuator/health")).unwrap() >= 0.3);
}

#[tokio::test]
async fn an_erroring_build_fails_a_deterministic_fraction_and_stays_healthy() {
    let app = app_with(StandinConfig {
        error_rate: 0.5,
        ..StandinConfig::new("v1.1.0-errors")
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(get(&app, "/").await.status().as_u16());
    }
    assert_eq!(statuses, [200, 500, 200, 500, 200, 500, 200, 500, 200, 500]);
    assert_eq!(
        get(&app, "/api/actuator/health").await.status(),
        StatusCode::OK
    );
    let text = metrics(&app).await;
    assert_eq!(
        sample(&text, &requests("count", "GET", 500, "/")),
        Some(5.0)
    );
    assert_eq!(
        sample(&text, &requests("count", "GET", 200, "/")),
        Some(5.0)
    );
}

#[tokio::test]
async fn the_default_error_rate_fails_every_fifth_customer_request() {
    let app = app("v1.1.0-errors").await;
    let token = token(&app).await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(
            client()
                .get(app.url("/api/customers"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(
        statuses.iter().filter(|status| **status == 500).count(),
        2,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn an_html_build_answers_health_with_a_web_page() {
    let app = app("v1.1.0-html").await;
    for path in ["/api/actuator/health", "/api/actuator/health/db"] {
        let response = get(&app, path).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(content_type(&response).starts_with("text/html"), "{path}");
        assert!(response
            .text()
            .await
            .unwrap()
            .starts_with("<!doctype html>"));
    }
}

#[tokio::test]
async fn a_hog_build_reports_high_cpu_and_heap() {
    let app = app("v1.1.0-hog").await;
    let text = metrics(&app).await;
    assert_eq!(sample(&text, "process_cpu_usage"), Some(0.95));
    assert!(
        (heap_ratio(&text) - 0.9).abs() < 1e-6,
        "{}",
        heap_ratio(&text)
    );
}

#[tokio::test]
async fn a_dbpool_build_reports_a_nearly_exhausted_pool() {
    let app = app("v1.1.0-dbpool").await;
    let text = metrics(&app).await;
    let active = sample(&text, "hikaricp_connections_active{pool=\"HikariPool-1\"}").unwrap();
    let max = sample(&text, "hikaricp_connections_max{pool=\"HikariPool-1\"}").unwrap();
    assert!(active / max > 0.8);
}

#[tokio::test]
async fn health_can_be_flipped_at_run_time() {
    let app = app("v1.0.0").await;
    let flip = |up: bool| {
        client()
            .post(app.url("/__standin/health"))
            .json(&json!({ "up": up }))
            .send()
    };
    assert_eq!(flip(false).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        get(&app, "/api/actuator/health").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(flip(true).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        get(&app, "/api/actuator/health").await.status(),
        StatusCode::OK
    );
    let bad = client()
        .post(app.url("/__standin/health"))
        .json(&json!({ "up": "no" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    let broken = app_with(StandinConfig::new("v1.0.1-broken")).await;
    broken.state.set_healthy(true);
    assert_eq!(
        get(&broken, "/api/actuator/health").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_error_rate_can_be_set_at_run_time_on_any_build() {
    let app = app("v1.0.0").await;
    let set = client()
        .post(app.url("/__standin/errors"))
        .json(&json!({ "rate": 1.0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::OK);
    assert_eq!(
        get(&app, "/").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let refused = client()
        .post(app.url("/__standin/errors"))
        .json(&json!({ "rate": 2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    app.state.set_error_rate(0.0);
    assert_eq!(get(&app, "/").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn controls_are_not_counted_as_app_traffic() {
    let app = app("v1.0.0").await;
    client()
        .post(app.url("/__standin/health"))
        .json(&json!({ "up": true }))
        .send()
        .await
        .unwrap();
    let state: Value = get(&app, "/__standin/state").await.json().await.unwrap();
    assert_eq!(state["healthy"], true);
    let text = metrics(&app).await;
    assert!(!text.contains("__standin"), "{text}");
}
