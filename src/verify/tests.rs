use super::*;
use deploybot_standin::{spawn, Spawned, StandinConfig};

fn vars() -> Vars {
    Vars::new("v1.0.0", "staging", "run42")
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn parse(toml_text: &str) -> VerifyConfig {
    match toml::from_str(toml_text) {
        Ok(config) => config,
        Err(e) => panic!("config does not parse: {e}\n{toml_text}"),
    }
}

async fn standin(version: &str) -> Spawned {
    standin_with(StandinConfig::new(version)).await
}

async fn standin_with(config: StandinConfig) -> Spawned {
    spawn(config).await.expect("bind a loopback port")
}

/// The runbook's health checks and smoke tests against `base`, with a short backoff.
fn runbook(base: &str, password: &str) -> String {
    format!(
        r#"
retries = 2
backoff = "20ms"
timeout = "5s"

[[health]]
name = "backend health"
url = "{base}/api/actuator/health"
expect_status = 200
expect_json = {{ status = "UP" }}

[[health]]
name = "database"
url = "{base}/api/actuator/health/db"
expect_json = {{ status = "UP", "details.database" = "PostgreSQL" }}

[[health]]
name = "frontend"
url = "{base}/"
expect_body_contains = "{{version}}"

[[smoke]]
name = "login returns a JWT"
method = "POST"
url = "{base}/api/auth/login"
json = {{ username = "test@example.com", password = "{password}" }}
expect_status = 200
capture = {{ token = "token" }}

[[smoke]]
name = "create customer"
method = "POST"
url = "{base}/api/customers"
headers = {{ Authorization = "Bearer {{token}}" }}
json = {{ name = "Smoke {{run_id}}", email = "smoke-{{run_id}}@example.com" }}
expect_status = 201
capture = {{ customer_id = "id" }}

[[smoke]]
name = "list customers contains it"
url = "{base}/api/customers"
headers = {{ Authorization = "Bearer {{token}}" }}
expect_status = 200
expect_json_contains = {{ id = "{{customer_id}}", name = "Smoke {{run_id}}" }}
"#
    )
}

fn single_health(url: &str, extra: &str) -> VerifyConfig {
    parse(&format!(
        "retries = 0\nbackoff = \"10ms\"\n[[health]]\nname = \"backend health\"\nurl = \"{url}\"\nexpect_json = {{ status = \"UP\" }}\n{extra}"
    ))
}

#[tokio::test]
async fn the_runbook_checks_pass_against_a_healthy_app() {
    let app = standin("v1.0.0").await;
    let config = parse(&runbook(&app.url(""), "testpass"));
    assert_eq!(config.validate(), Vec::<(String, String)>::new());
    let report = run(&config, &vars(), &client()).await;
    assert!(report.ok, "{}", report.details());
    assert_eq!(report.checks.len(), 6);
    assert!(
        report.summary().starts_with("6/6 checks passed in "),
        "{}",
        report.summary()
    );
    assert!(report.checks.iter().all(|check| check.attempts == 1));
    assert_eq!(report.checks[4].status, Some(201));
    let customers = app.state.customers();
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0].name, "Smoke run42");
    assert_eq!(customers[0].email, "smoke-run42@example.com");
}

#[tokio::test]
async fn a_broken_build_fails_health_with_the_status_and_the_body() {
    let app = standin("v1.1.0-broken").await;
    let report = run(
        &parse(&runbook(&app.url(""), "testpass")),
        &vars(),
        &client(),
    )
    .await;
    assert!(!report.ok);
    let health = &report.checks[0];
    assert_eq!(health.status, Some(503));
    assert_eq!(health.attempts, 3);
    assert!(
        health
            .detail
            .starts_with("expected status 200, got 503 — body: {"),
        "{}",
        health.detail
    );
    assert!(
        health.detail.contains(r#""status":"DOWN""#),
        "{}",
        health.detail
    );
    assert!(
        report.summary().starts_with("health check 'backend health' failed after 3 attempts: expected status 200, got 503"),
        "{}",
        report.summary()
    );
    let smoke: Vec<&CheckOutcome> = report
        .checks
        .iter()
        .filter(|c| c.kind == CheckKind::Smoke)
        .collect();
    assert_eq!(smoke.len(), 3);
    assert!(smoke
        .iter()
        .all(|c| c.skipped && c.detail == "skipped: health checks failed"));
    assert!(
        report
            .details()
            .contains("⏭️ smoke 'create customer': skipped"),
        "{}",
        report.details()
    );
}

#[tokio::test]
async fn an_html_answer_is_reported_as_not_json() {
    let app = standin("v1.1.0-html").await;
    let report = run(
        &single_health(&app.url("/api/actuator/health"), ""),
        &vars(),
        &client(),
    )
    .await;
    let detail = &report.checks[0].detail;
    assert!(
        detail.starts_with("expected JSON but got text/html — body: <!doctype html>"),
        "{detail}"
    );
    assert!(detail.chars().count() < 260, "{detail}");
}

#[tokio::test]
async fn a_refused_connection_names_the_host_and_port() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let report = run(
        &single_health(&format!("http://{addr}/api/actuator/health"), ""),
        &vars(),
        &client(),
    )
    .await;
    assert_eq!(
        report.checks[0].detail,
        format!("connection refused by {addr}")
    );
    assert_eq!(report.checks[0].status, None);
    assert!(!report.ok);
}

#[tokio::test]
async fn a_slow_app_times_out_after_the_per_check_timeout() {
    let app = standin_with(StandinConfig {
        slow: Duration::from_secs(3),
        ..StandinConfig::new("v1.1.0-slow")
    })
    .await;
    let config = single_health(&app.url("/api/actuator/health"), "timeout = \"200ms\"");
    let started = Instant::now();
    let report = run(&config, &vars(), &client()).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        report.checks[0].detail,
        format!("timed out after 200ms waiting for {}", app.addr)
    );
}

#[tokio::test]
async fn https_to_a_plain_http_port_is_a_tls_error() {
    let app = standin("v1.0.0").await;
    let report = run(
        &single_health(&format!("https://{}/api/actuator/health", app.addr), ""),
        &vars(),
        &client(),
    )
    .await;
    let detail = &report.checks[0].detail;
    assert!(
        detail.starts_with(&format!("TLS error talking to {}: ", app.addr)),
        "{detail}"
    );
}

#[tokio::test]
async fn retries_recover_when_health_comes_back_up() {
    let app = standin("v1.0.0").await;
    app.state.set_healthy(false);
    let config = parse(&format!(
        "retries = 8\nbackoff = \"50ms\"\nmax_backoff = \"100ms\"\n[[health]]\nurl = \"{}\"\nexpect_json = {{ status = \"UP\" }}",
        app.url("/api/actuator/health")
    ));
    let state = app.state.clone();
    let flip = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(250)).await;
        state.set_healthy(true);
    });
    let report = run(&config, &vars(), &client()).await;
    flip.await.unwrap();
    assert!(report.ok, "{}", report.details());
    assert!(report.checks[0].attempts > 1, "{:?}", report.checks[0]);
    assert_eq!(report.checks[0].status, Some(200));
}

#[tokio::test]
async fn a_json_field_with_the_wrong_value_is_named() {
    let app = standin("v1.0.0").await;
    app.state.set_healthy(false);
    let config = single_health(&app.url("/api/actuator/health"), "expect_status = 503");
    let report = run(&config, &vars(), &client()).await;
    assert!(
        report.checks[0]
            .detail
            .starts_with(r#"JSON field `status` was "DOWN", expected "UP" — body: "#),
        "{}",
        report.checks[0].detail
    );
}

#[tokio::test]
async fn nested_expectations_match_as_a_subset() {
    let app = standin("v1.0.0").await;
    let config = parse(&format!(
        "[[health]]\nurl = \"{}\"\nexpect_json = {{ components = {{ db = {{ status = \"UP\" }} }}, \"components.diskSpace.status\" = \"UP\" }}",
        app.url("/api/actuator/health")
    ));
    let report = run(&config, &vars(), &client()).await;
    assert!(report.ok, "{}", report.details());
}

#[tokio::test]
async fn a_missing_element_is_reported_with_the_fields_looked_for() {
    let app = standin("v1.0.0").await;
    let base = app.url("");
    let config = parse(&format!(
        r#"
retries = 0
[[smoke]]
name = "login"
method = "POST"
url = "{base}/api/auth/login"
json = {{ username = "test@example.com", password = "testpass" }}
capture = {{ token = "token" }}
[[smoke]]
name = "list"
url = "{base}/api/customers"
headers = {{ Authorization = "Bearer {{token}}" }}
expect_json_contains = {{ name = "Nobody {{run_id}}" }}
"#
    ));
    let report = run(&config, &vars(), &client()).await;
    assert_eq!(
        report.checks[1].detail,
        r#"array at the response (0 elements) did not contain an element with name = "Nobody run42""#
    );
}

#[tokio::test]
async fn a_failed_capture_skips_the_checks_that_need_it() {
    let app = standin("v1.0.0").await;
    let report = run(
        &parse(&runbook(&app.url(""), "wrong-password")),
        &vars(),
        &client(),
    )
    .await;
    assert!(!report.ok);
    let [_, _, _, login, create, list] = &report.checks[..] else {
        panic!("{report:?}")
    };
    assert!(!login.ok && !login.skipped);
    assert_eq!(login.status, Some(401));
    assert!(create.skipped && list.skipped);
    assert_eq!(
        create.detail,
        "skipped: needs {token} from 'login returns a JWT', which did not capture it"
    );
    assert_eq!(create.attempts, 0);
    assert!(app.state.customers().is_empty());
    assert!(
        report.summary().ends_with("(2 skipped)"),
        "{}",
        report.summary()
    );
}

#[tokio::test]
async fn secrets_from_the_environment_and_captured_tokens_never_appear_in_the_report() {
    const VAR: &str = "DEPLOYBOT_VERIFY_TEST_SMOKE_PASSWORD";
    let password = "correct-horse-battery-staple";
    let app = standin_with(StandinConfig {
        extra_password: Some(password.into()),
        ..StandinConfig::new("v1.0.0")
    })
    .await;
    let base = app.url("");
    let mut config = parse(&runbook(&base, &format!("${{{VAR}}}")));
    // A check that fails and quotes a body holding the token, and one whose URL carries the password.
    config.smoke.push(
        parse(&format!(
            r#"
[[smoke]]
name = "echo the token"
method = "POST"
url = "{base}/api/auth/login?key=${{{VAR}}}"
json = {{ username = "test@example.com", password = "${{{VAR}}}" }}
expect_status = 418
"#
        ))
        .smoke
        .remove(0),
    );
    config.smoke.push(parse(&format!(
        "[[smoke]]\nname = \"reflect\"\nurl = \"http://127.0.0.1:1/{{token}}?p=${{{VAR}}}\"\nretries = 0\n"
    )).smoke.remove(0));
    // The variable is given explicitly, as the process environment would give it.
    let env = |name: &str| (name == VAR).then(|| password.to_string());
    let report = run_selected(&config, &vars(), &client(), Scopes::All, &env, &crate::secrets::Vars::process()).await;
    assert!(
        report.checks[..6].iter().all(|check| check.ok),
        "{}",
        report.details()
    );

    let text = format!("{}\n{}\n{report:?}", report.summary(), report.details());
    assert!(!text.contains(password), "{text}");
    let echo = &report.checks[6];
    assert!(
        echo.detail
            .starts_with("expected status 418, got 200 — body: "),
        "{}",
        echo.detail
    );
    assert!(
        echo.detail.contains(&format!("\"token\":\"{REDACTED}\"")),
        "{}",
        echo.detail
    );
    assert!(
        !report.checks[7].detail.contains("eyJ"),
        "{}",
        report.checks[7].detail
    );
    assert!(
        !text.contains("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."),
        "a token leaked: {text}"
    );
}

#[tokio::test]
async fn an_unset_environment_variable_fails_the_check_by_name_without_a_request() {
    let app = standin("v1.0.0").await;
    let config = parse(&runbook(
        &app.url(""),
        "${DEPLOYBOT_VERIFY_TEST_SURELY_UNSET}",
    ));
    let report = run(&config, &vars(), &client()).await;
    let login = &report.checks[3];
    assert_eq!(
        login.detail,
        "environment variable DEPLOYBOT_VERIFY_TEST_SURELY_UNSET is not set"
    );
    assert_eq!(login.attempts, 0);
}

#[tokio::test]
async fn health_only_runs_no_smoke_test() {
    let app = standin("v1.0.0").await;
    let report = run_health_only(
        &parse(&runbook(&app.url(""), "testpass")),
        &vars(),
        &client(),
    )
    .await;
    assert!(report.ok);
    assert_eq!(report.checks.len(), 3);
    assert!(report
        .checks
        .iter()
        .all(|check| check.kind == CheckKind::Health));
    assert!(app.state.customers().is_empty());
}

#[tokio::test]
async fn an_invalid_check_fails_at_run_time_instead_of_panicking() {
    let config = parse("[[health]]\nurl = \"http://127.0.0.1:1/{nope}\"\nmethod = \"FETCH\"");
    let report = run(&config, &vars(), &client()).await;
    assert!(!report.ok);
    assert!(
        report.checks[0]
            .detail
            .starts_with("invalid configuration: health[0].method: "),
        "{}",
        report.checks[0].detail
    );
    assert_eq!(report.checks[0].attempts, 0);
}

#[test]
fn the_runbook_example_parses_and_validates() {
    let config = parse(&runbook("http://127.0.0.1:8080", "${SMOKE_PASSWORD}"));
    assert_eq!(config.validate(), Vec::<(String, String)>::new());
    assert_eq!(config.health.len(), 3);
    assert_eq!(
        config.smoke[0].capture.get("token").map(String::as_str),
        Some("token")
    );
}

#[test]
fn an_unknown_key_is_refused() {
    let error =
        toml::from_str::<VerifyConfig>("[[health]]\nurl = \"http://x\"\nexpect_stauts = 200")
            .unwrap_err();
    assert!(
        error.to_string().contains("unknown field `expect_stauts`"),
        "{error}"
    );
}

#[test]
fn defaults_are_three_retries_a_one_second_backoff_and_a_ten_second_timeout() {
    let config = parse("[[health]]\nurl = \"http://x/\"");
    assert_eq!(
        (
            config.retries,
            config.backoff.as_str(),
            config.timeout.as_str()
        ),
        (3, "1s", "10s")
    );
    assert_eq!(config.health[0].expect_status, 200);
    assert_eq!(VerifyConfig::default(), parse(""));
}

fn problems(toml_text: &str) -> Vec<(String, String)> {
    parse(toml_text).validate()
}

fn check_problem(toml_text: &str, path: &str, message_part: &str) {
    let found = problems(toml_text);
    assert!(
        found
            .iter()
            .any(|(p, m)| p == path && m.contains(message_part)),
        "expected {path}: …{message_part}… in {found:?}"
    );
}

#[test]
fn validation_names_each_problem_by_its_path() {
    check_problem(
        "[[smoke]]\nurl = \"not a url {run_id}\"",
        "smoke[0].url",
        "is not a valid URL",
    );
    check_problem(
        "[[smoke]]\nurl = \"ftp://host/x\"",
        "smoke[0].url",
        "http:// or https://",
    );
    check_problem(
        "[[health]]\nurl = \"http://x/\"\nmethod = \"FETCH\"",
        "health[0].method",
        "\"FETCH\" is not an HTTP method",
    );
    check_problem(
        "[[health]]\nurl = \"http://x/\"\nexpect_status = 42",
        "health[0].expect_status",
        "42 is not an HTTP status",
    );
    check_problem("timeout = \"ten seconds\"", "timeout", "invalid duration");
    check_problem(
        "backoff = \"5s\"\nmax_backoff = \"1s\"",
        "max_backoff",
        "at least backoff",
    );
    check_problem(
        "[[smoke]]\nurl = \"http://x/\"\ntimeout = \"0s\"",
        "smoke[0].timeout",
        "more than 0s",
    );
    check_problem(
        "[[smoke]]\nurl = \"http://x/\"\nretries = 100",
        "smoke[0].retries",
        "at most 20",
    );
    check_problem(
        "[[smoke]]\nurl = \"http://x/\"\nbody = \"a\"\njson = { a = 1 }",
        "smoke[0].body",
        "either json or body",
    );
    check_problem(
        "[[smoke]]\nurl = \"http://x/\"\ncapture = { t = \"items[x]\" }",
        "smoke[0].capture.t",
        "index that is not a number",
    );
    check_problem(
        "[[smoke]]\nurl = \"http://x/\"\ncapture = { version = \"v\" }",
        "smoke[0].capture.version",
        "built in",
    );
    check_problem(
        "[[smoke]]\nurl = \"http://x/\"\nexpect_json = { \"a..b\" = 1 }",
        "smoke[0].expect_json.a..b",
        "empty segment",
    );
    check_problem(
        "[[smoke]]\nurl = \"http://x/\"\nheaders = { \"Bad Header\" = \"v\" }",
        "smoke[0].headers.Bad Header",
        "not a valid header name",
    );
    check_problem(
        "[[smoke]]\nurl = \"http://x/\"\nexpect_json_path = \"content\"",
        "smoke[0].expect_json_path",
        "expect_json_contains",
    );
    check_problem(
        "[[smoke]]\nurl = \"http://x/\"\njson = { p = \"${lower}\" }",
        "smoke[0].json.p",
        "not an environment variable reference",
    );
}

#[test]
fn placeholders_must_be_known_and_captured_before_use() {
    check_problem(
        "[[smoke]]\nurl = \"http://x/{nope}\"",
        "smoke[0]",
        "unknown placeholder {nope} (known here: version, env, run_id)",
    );
    let used_before = "[[smoke]]\nurl = \"http://x/{customer_id}\"\n[[smoke]]\nurl = \"http://x/\"\ncapture = { customer_id = \"id\" }";
    check_problem(
        used_before,
        "smoke[0]",
        "{customer_id} is captured by smoke[1], which runs after this check",
    );
    check_problem(
        "[[smoke]]\nurl = \"http://x/{token}\"\ncapture = { token = \"token\" }",
        "smoke[0]",
        "captured by this check itself",
    );
    check_problem(
        "[[health]]\nurl = \"http://x/{token}\"\n[[smoke]]\nurl = \"http://x/\"\ncapture = { token = \"t\" }",
        "health[0]",
        "captured by smoke[0], which runs after this check",
    );
    assert!(problems("[[health]]\nurl = \"http://x/\"\ncapture = { a = \"a\" }\n[[smoke]]\nurl = \"http://x/{a}/{env}\"").is_empty());
}

#[test]
fn every_problem_of_a_check_is_reported_at_once() {
    let found = problems(
        "[[health]]\nurl = \"http://x/{nope}\"\nmethod = \"FETCH\"\nexpect_status = 1",
    );
    let paths: Vec<&str> = found.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(
        paths,
        ["health[0].method", "health[0].expect_status", "health[0]"],
        "{found:?}"
    );
}

#[test]
fn templates_keep_non_placeholder_braces_literal() {
    let template = Template::parse(r#"{"a":{token}} ${PW} {not a var} {}"#).unwrap();
    assert_eq!(
        template.display(None),
        r#"{"a":{token}} ${PW} {not a var} {}"#
    );
    assert_eq!(template.vars().collect::<Vec<_>>(), ["token"]);
    assert_eq!(template.envs().collect::<Vec<_>>(), ["PW"]);
    assert!(Template::parse("${unterminated").is_err());
    assert_eq!(
        Template::parse("v={version}")
            .unwrap()
            .display(Some(&vars())),
        "v=v1.0.0"
    );
}

#[test]
fn json_paths_read_keys_and_indexes() {
    let value = serde_json::json!({"content": [{"id": 7}, {"id": 8, "tags": ["a", "b"]}]});
    for (path, expected) in [
        ("content[1].id", Some(serde_json::json!(8))),
        ("content[1].tags[1]", Some(serde_json::json!("b"))),
        ("content[2].id", None),
        ("missing", None),
    ] {
        assert_eq!(
            JsonPath::parse(path).unwrap().lookup(&value).cloned(),
            expected,
            "{path}"
        );
    }
    assert_eq!(
        JsonPath::parse("[0]")
            .unwrap()
            .lookup(&serde_json::json!([1])),
        Some(&serde_json::json!(1))
    );
    for bad in ["", "a.", "a[", "a]", "a[1]b"] {
        assert!(JsonPath::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn mismatches_name_the_first_differing_field() {
    use serde_json::json;
    let actual = json!({"status": "UP", "n": 5, "items": [1, 2]});
    for (expected, result) in [
        (json!({"status": "UP"}), None),
        (json!({"n": "5"}), None),
        (json!({"n": 5.0}), None),
        (
            json!({"status": "DOWN"}),
            Some("JSON field `$.status` was \"UP\", expected \"DOWN\""),
        ),
        (json!({"gone": 1}), Some("JSON field `$.gone` is missing")),
        (
            json!({"items": [1]}),
            Some("JSON field `$.items` has 2 elements, expected 1"),
        ),
        (
            json!({"status": {"a": 1}}),
            Some("JSON field `$.status` was \"UP\", expected an object"),
        ),
    ] {
        assert_eq!(
            first_mismatch("$", &expected, Some(&actual)).as_deref(),
            result,
            "{expected}"
        );
    }
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let backoff = Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(5),
    };
    let waits: Vec<u64> = (1..=5).map(|n| backoff.after(n).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 5, 5]);
    assert_eq!(
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::MAX
        }
        .after(u32::MAX),
        Duration::from_secs(65536)
    );
}

#[test]
fn durations_read_like_a_person_wrote_them() {
    for (millis, text) in [
        (340, "340ms"),
        (1200, "1.2s"),
        (2000, "2s"),
        (1960, "2s"),
        (65_000, "1m 5s"),
    ] {
        assert_eq!(human(Duration::from_millis(millis)), text);
    }
}

#[test]
fn the_redactor_masks_the_longest_secret_first_and_its_json_form() {
    let mut redactor = Redactor::default();
    redactor.add("abc");
    redactor.add("abcdef");
    redactor.add("pa\"ss");
    assert_eq!(redactor.scrub("abcdef abc x"), "••• ••• x");
    assert_eq!(redactor.scrub(r#"{"p":"pa\"ss"}"#), r#"{"p":"•••"}"#);
}

#[test]
fn quoted_json_bodies_mask_token_and_password_fields() {
    let body = r#"{"token":"eyJ.abc.def","tokenType":"Bearer","user":{"password":"pw","name":"Ann"},"access_token":"x"}"#;
    assert_eq!(
        quote_body(body),
        r#"{"access_token":"•••","token":"•••","tokenType":"Bearer","user":{"name":"Ann","password":"•••"}}"#
    );
    assert_eq!(quote_body("token=abc"), "token=abc");
}

#[test]
fn a_run_can_be_spawned_on_another_task() {
    fn assert_send<T: Send>(_: &T) {}
    let (config, vars, client) = (VerifyConfig::default(), vars(), client());
    let future = run(&config, &vars, &client);
    assert_send(&future);
    assert_send(&run_health_only(&config, &vars, &client));
}

#[test]
fn a_long_body_is_cut_to_one_line_of_200_characters() {
    let cut = snippet(&format!("line one\n\n   {}", "x".repeat(500)));
    assert!(cut.starts_with("line one xxx"));
    assert_eq!(cut.chars().count(), SNIPPET_CHARS + 1);
    assert_eq!(snippet("  "), "(empty)");
}

// ---------------------------------------------------------------------------------------------------------
// expect_headers and security checks

fn secrets() -> crate::secrets::Vars {
    crate::secrets::Vars::from_pairs([("API_TOKEN", "tok-4f1b9c")])
}

#[tokio::test]
async fn expect_headers_name_a_missing_header_and_a_value_that_does_not_match() {
    let secure = standin("v1.0.0").await;
    let insecure = standin("v1.0.0-insecure").await;
    let config = |base: &str| {
        parse(&format!(
            r#"
retries = 0
[[health]]
name = "headers"
url = "{base}/api/actuator/health"
expect_headers = {{ X-Content-Type-Options = "nosniff", Strict-Transport-Security = "max-age=" }}
[[health]]
name = "frame options"
url = "{base}/api/actuator/health"
expect_headers = {{ X-Frame-Options = "sameorigin" }}
"#,
            base = base.trim_end_matches('/')
        ))
    };
    let report = run_in(&config(&secure.url("")), &vars(), &client(), &secrets()).await;
    assert!(report.checks[0].ok, "{}", report.details());
    assert_eq!(report.checks[1].detail, "response header x-frame-options was \"DENY\", expected it to contain \"sameorigin\"");
    let report = run_in(&config(&insecure.url("")), &vars(), &client(), &secrets()).await;
    assert_eq!(report.checks[0].detail, "response headers missing: strict-transport-security, x-content-type-options");
}

#[tokio::test]
async fn security_checks_pass_on_a_hardened_app_and_each_names_its_finding_on_an_insecure_one() {
    let config = |base: &str| {
        parse(&format!(
            r#"
[[security]]
kind = "headers"
url = "{base}/"
require = ["Strict-Transport-Security", "Content-Security-Policy"]
headers = {{ Authorization = "Bearer ${{API_TOKEN}}" }}
[[security]]
kind = "cors"
url = "{base}/api/customers"
disallowed_origin = "https://evil.example"
[[security]]
kind = "auth_required"
url = "{base}/api/customers"
[[security]]
kind = "rate_limit"
method = "POST"
url = "{base}/api/auth/login"
requests = 20
[[security]]
kind = "https_redirect"
url = "{base}/http/login"
"#
        ))
    };
    let secure = standin("v1.0.0").await;
    let report = run_security(&config(secure.url("").trim_end_matches('/')), &vars(), &client(), &secrets()).await;
    assert!(report.ok, "{}", report.details());
    let details: Vec<&str> = report.checks.iter().map(|c| c.detail.as_str()).collect();
    assert_eq!(details[0], "Strict-Transport-Security, Content-Security-Policy present");
    assert_eq!(details[1], "a CORS preflight from https://evil.example was refused (status 403, no Access-Control-Allow-Origin)");
    assert_eq!(details[2], "401 without credentials");
    assert_eq!(details[3], "429 after 11 of 20 requests");
    assert_eq!(details[4], format!("308 to https://{}/login", secure.addr));

    let insecure = standin("v1.0.0-insecure").await;
    let report = run_security(&config(insecure.url("").trim_end_matches('/')), &vars(), &client(), &secrets()).await;
    assert!(report.checks.iter().all(|c| !c.ok && c.kind == CheckKind::Security), "{}", report.details());
    let details: Vec<&str> = report.checks.iter().map(|c| c.detail.as_str()).collect();
    assert_eq!(details[0], "response headers missing: strict-transport-security, content-security-policy");
    assert_eq!(details[1], "a CORS preflight from https://evil.example was allowed (status 204, Access-Control-Allow-Origin: *)");
    assert!(details[2].starts_with("GET answered 200 without credentials, expected 401 or 403 — body: ["), "{}", details[2]);
    assert!(details[3].starts_with("none of 20 requests in ") && details[3].ends_with("was answered 429 (400 ×20): no rate limit observed"), "{}", details[3]);
    assert_eq!(details[4], "answered 200 over plain HTTP instead of redirecting to https://");
    assert!(report.summary().starts_with("security check 'headers http://127.0.0.1:"), "{}", report.summary());
}

#[tokio::test]
async fn a_security_check_against_nothing_is_one_line_and_an_unset_variable_is_named() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = parse(&format!(
        r#"
[[security]]
kind = "auth_required"
url = "http://127.0.0.1:{port}/api/customers"
[[security]]
kind = "headers"
url = "http://127.0.0.1:{port}/"
require = ["Strict-Transport-Security"]
headers = {{ X-Api-Key = "${{DEPLOYBOT_TEST_UNSET_KEY}}" }}
"#
    ));
    let report = run_security(&config, &vars(), &client(), &secrets()).await;
    assert_eq!(report.checks[0].detail, format!("connection refused by 127.0.0.1:{port}"));
    assert_eq!(report.checks[1].detail, "environment variable DEPLOYBOT_TEST_UNSET_KEY is not set");
}

#[test]
fn security_entries_are_validated_with_their_paths() {
    let config = parse(
        r#"
[[security]]
kind = "tsl"
url = "https://api.example/"
[[security]]
kind = "image_scan"
[[security]]
kind = "headers"
url = "https://api.example/"
min_days = 3
[[security]]
kind = "rate_limit"
url = "https://api.example/login"
requests = 0
[[security]]
kind = "https_redirect"
url = "https://api.example/"
"#,
    );
    let problems = config.validate();
    let expected = [
        ("security[0].kind", "unknown security check kind \"tsl\" (one of tls, https_redirect, headers, cors, auth_required, rate_limit, image_scan)"),
        ("security[1].repository", "an image_scan check needs the ECR repository, e.g. \"invoice-me-backend\""),
        ("security[2].min_days", "only means something with kind = \"tls\""),
        ("security[2].require", "list the headers the response must have, e.g. [\"Strict-Transport-Security\"]"),
        ("security[3].requests", "must be from 1 to 1000"),
        ("security[4].url", "an https_redirect check needs the http:// URL that should redirect, not https:"),
    ];
    for (path, message) in expected {
        assert!(problems.iter().any(|(p, m)| p == path && m == message), "lacks {path}: {message} in {problems:?}");
    }
    assert_eq!(problems.len(), expected.len(), "{problems:?}");
}

/// A TLS listener on 127.0.0.1 presenting `chain` (leaf first), answering every request with 200.
async fn tls_server(chain: Vec<rustls::pki_types::CertificateDer<'static>>, key: Vec<u8>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A failed handshake (the client refusing the certificate) just ends the connection.
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut buffer = [0u8; 4096];
                let _ = tls.read(&mut buffer).await;
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

/// A test CA (its PEM) and a leaf for `host` valid until `days` from today (negative: expired).
fn certificates(host: &str, days: i64) -> (String, rustls::pki_types::CertificateDer<'static>, rustls::pki_types::CertificateDer<'static>, Vec<u8>) {
    use chrono::Datelike;
    let ymd = |offset: i64| {
        let d = chrono::Utc::now().date_naive() + chrono::Duration::days(offset);
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "deploybot test CA");
    ca.not_before = ymd(-400);
    ca.not_after = ymd(800);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap();
    leaf.not_before = ymd(-365);
    leaf.not_after = ymd(days);
    let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), leaf.der().clone(), ca.der().clone(), key.serialize_der())
}

#[tokio::test]
async fn tls_checks_see_a_valid_an_expiring_an_expired_and_a_wrong_host_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    for (host, days) in [("localhost", 365), ("localhost", 3), ("localhost", -2), ("wrong.example", 365)] {
        let (ca_pem, leaf, ca, key) = certificates(host, days);
        let ca_file = dir.path().join(format!("ca-{}.pem", cases.len()));
        std::fs::write(&ca_file, ca_pem).unwrap();
        let port = tls_server(vec![leaf.clone(), ca], key).await;
        assert_eq!(
            certificate_not_after(&leaf).map(|t| t.date_naive()),
            Some(chrono::Utc::now().date_naive() + chrono::Duration::days(days)),
            "notAfter read from the DER"
        );
        cases.push((port, ca_file));
    }
    let entries: String = cases
        .iter()
        .map(|(port, ca_file)| format!("[[security]]\nkind = \"tls\"\nurl = \"https://localhost:{port}/\"\nmin_days = 14\nca_file = \"{}\"\n", ca_file.display()))
        .collect();
    // The first server again, without its CA: a private CA nobody trusts.
    let untrusted = format!("[[security]]\nkind = \"tls\"\nurl = \"https://localhost:{}/\"\n", cases[0].0);
    let config = parse(&format!("{entries}{untrusted}"));
    let report = run_security(&config, &vars(), &client(), &secrets()).await;
    let details: Vec<(bool, &str)> = report.checks.iter().map(|c| (c.ok, c.detail.as_str())).collect();
    assert!(details[0].0 && details[0].1.starts_with("the certificate of localhost is valid until "), "{details:?}");
    assert!(!details[1].0 && details[1].1.starts_with("the certificate of localhost expires ") && details[1].1.ends_with("within min_days 14"), "{details:?}");
    assert_eq!(details[2], (false, format!("the certificate of localhost:{} has expired", cases[2].0).as_str()));
    assert_eq!(details[3], (false, format!("the certificate of localhost:{} is not valid for localhost", cases[3].0).as_str()));
    assert_eq!(details[4], (false, format!("the certificate of localhost:{} is not signed by a trusted CA (set ca_file for a private CA)", cases[0].0).as_str()));
}

#[tokio::test]
async fn http_checks_trust_a_private_ca_from_their_ca_file_or_the_bots() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, leaf, ca, key) = certificates("localhost", 365);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let port = tls_server(vec![leaf, ca], key).await;
    let check = |extra: &str| format!("[[health]]\nname = \"tls health\"\nurl = \"https://localhost:{port}/\"\nexpect_body_contains = \"ok\"\n{extra}\n");
    let config = parse(&format!("retries = 0\n{}", check(&format!("ca_file = \"{}\"", ca_file.display()))));
    let report = run_in(&config, &vars(), &client(), &secrets()).await;
    assert!(report.ok, "{}", report.details());

    let mut config = parse(&format!("retries = 0\n{}", check("")));
    let report = run_in(&config, &vars(), &client(), &secrets()).await;
    assert!(report.checks[0].detail.starts_with(&format!("TLS error talking to localhost:{port}: ")), "{}", report.details());
    // `[bot] ca_file` reaches every environment's checks as their default.
    let parsed = crate::config::Config::parse(&format!(
        "[bot]\ndatabase_url = \"sqlite::memory:\"\nca_file = \"{}\"\n[chat]\nplatform = \"console\"\n[services.backend]\nimage = \"x/backend\"\n[environments.staging]\nchannel = \"C0STAGING\"\ntarget = {{ kind = \"command\", deploy = [\"true\"] }}\n",
        ca_file.display()
    ))
    .unwrap_or_else(|p| panic!("{p:?}"));
    let staging = parsed.environments.values().next().unwrap();
    assert_eq!(staging.verify.default_ca_file.as_deref(), Some(ca_file.to_str().unwrap()));
    config.default_ca_file = staging.verify.default_ca_file.clone();
    let report = run_in(&config, &vars(), &client(), &secrets()).await;
    assert!(report.ok, "{}", report.details());

    let config = parse(&format!("retries = 0\n{}", check("ca_file = \"/nonexistent/ca.pem\"")));
    let report = run_in(&config, &vars(), &client(), &secrets()).await;
    assert!(report.checks[0].detail.starts_with("cannot read ca_file /nonexistent/ca.pem: "), "{}", report.details());
}
