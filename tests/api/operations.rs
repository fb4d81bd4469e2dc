//! The operational surface: readiness, metrics, the OpenAPI document, /docs, and the limits.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use credential_ledger::http::Limits;
use credential_ledger::startup::Settings;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{answer, spawn_app, spawn_app_with, test_settings, CREATE, LIST};
use credential_ledger_test_support::backend::TestDb;

async fn readyz_reports_migrations_and_the_relay_state(db: TestDb) {
    let app = spawn_app(&db).await;
    let response = app.client.get(format!("{}/readyz", app.address)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let ready = answer(response).await;
    let data = ready.data();
    assert_eq!(data["database"], "up");
    assert_eq!(data["ledger"], if db.is_postgres() { "postgresql" } else { "sqlite" });
    assert_eq!(data["migrations_applied"], data["migrations_expected"]);
    assert!(data["migrations_expected"].as_i64().unwrap() >= 1);
    assert_eq!(data["relay"], Value::Null, "no relay runs in this process");
}

async fn metrics_count_requests_and_refused_authentications(db: TestDb) {
    let app = spawn_app(&db).await;
    app.create(&app.tenant.key, json!({"name": "Counted"})).await;
    app.list("vml_not-a-key").await;
    for invented in ["M369518948", "M369518949"] {
        let method = reqwest::Method::from_bytes(invented.as_bytes()).unwrap();
        app.client.request(method, format!("{}/api/v1/credentials/list", app.address)).send().await.unwrap();
    }
    // What Prometheus sends: OpenMetrics.
    let response = app
        .client
        .get(format!("{}/metrics", app.address))
        .header("accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = response.text().await.unwrap();
    assert!(text.contains("# TYPE credential_ledger_http_requests counter\n"));
    for expected in [
        r#"credential_ledger_http_requests_total{route="/api/v1/credentials/create",method="POST",status="200"}"#,
        r#"credential_ledger_auth_failures_total{reason="malformed"}"#,
        "credential_ledger_write_batch_size_count",
        "credential_ledger_append_duration_seconds_bucket",
        "credential_ledger_http_request_duration_seconds_bucket",
        // Past the 10 s request timeout.
        r#"le="13.1072""#,
        r#"method="other""#,
        "credential_ledger_log_head_position",
        "credential_ledger_relay_lag_events",
        r#"credential_ledger_build_info{version=""#,
        "credential_ledger_database_connections ",
        "credential_ledger_database_connections_idle ",
        "credential_ledger_relay_leader 0",
        "credential_ledger_database_acquire_wait_seconds_count",
        "credential_ledger_relay_delay_seconds_bucket",
        "credential_ledger_runtime_wake_delay_seconds_bucket",
        "credential_ledger_webhook_attempt_duration_seconds_bucket",
        "# EOF",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    assert!(!text.contains(&app.tenant.key[4..]));
    assert!(!text.contains("M36951894"), "an invented method has no series of its own");

    // What promtool and curl get: the classic text format, whose counter families carry `_total`.
    let response = app.client.get(format!("{}/metrics", app.address)).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    assert_eq!(response.headers()["vary"], "accept", "a cache keeps the two formats apart");
    let classic = response.text().await.unwrap();
    assert!(classic.contains("# TYPE credential_ledger_http_requests_total counter\n"), "{classic}");
    assert!(classic.contains(r#"credential_ledger_auth_failures_total{reason="malformed"}"#));
    assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
}

async fn the_openapi_document_describes_every_endpoint_with_its_errors(db: TestDb) {
    let app = spawn_app(&db).await;
    let document: Value =
        app.client.get(format!("{}/api/v1/openapi.json", app.address)).send().await.unwrap().json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["components"]["securitySchemes"]["api_key"]["name"], "X-Server-API-Key");
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/api/v1/credentials/list",
        "/api/v1/credentials/create",
        "/api/v1/credentials/regenerate",
        "/api/v1/credentials/revoke",
        "/api/v1/credentials/history",
        "/api/v1/events/list",
        "/api/v1/webhooks/create",
        "/api/v1/webhooks/list",
        "/api/v1/webhooks/delete",
        "/api/v1/webhooks/deliveries",
        "/api/v1/webhooks/retry",
    ] {
        let operation = &paths[path]["post"];
        for status in ["200", "400", "401", "405", "413", "415", "422", "429", "500", "503"] {
            assert!(operation["responses"][status].is_object(), "{path} documents no {status}");
        }
        assert_eq!(operation["security"], json!([{"api_key": []}]), "{path}");
        assert!(operation["description"].as_str().is_some_and(|text| !text.is_empty()), "{path} has no description");
    }
    assert!(document["components"]["responses"]["NotFound"]["description"].as_str().unwrap().contains("not_found"));
    // Optional bodies in the form client generators handle: not required, the object's schema.
    for path in
        ["/api/v1/credentials/list", "/api/v1/events/list", "/api/v1/webhooks/list", "/api/v1/webhooks/deliveries"]
    {
        let body = &paths[path]["post"]["requestBody"];
        assert_ne!(body["required"], true, "{path}");
        assert!(body["content"]["application/json"]["schema"]["$ref"].is_string(), "{path}: {body}");
    }
    // What an endpoint receives, in the document's `webhooks` section, its schema resolvable.
    let hook = &document["webhooks"]["CredentialLocked"]["post"];
    let schema = hook["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str().unwrap();
    let name = schema.strip_prefix("#/components/schemas/").unwrap();
    let properties = &document["components"]["schemas"][name]["properties"];
    assert!(properties["data"].is_object() && properties["timestamp"].is_object(), "{properties}");
}

/// The console and /docs (the same page, at its API reference) are self-contained: their script
/// and styles come from this origin, as files, under a policy that refuses inline script and
/// every other origin.
async fn the_console_is_served_self_contained_under_a_strict_policy(db: TestDb) {
    let app = spawn_app(&db).await;
    let get = |path: &'static str| app.client.get(format!("{}{path}", app.address)).send();
    for path in ["/console", "/docs"] {
        let page = get(path).await.unwrap();
        assert_eq!(page.status(), StatusCode::OK, "{path}");
        assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{path}");
        let policy = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(policy.contains("script-src 'self'") && policy.contains("default-src 'none'"), "{policy}");
        assert!(!policy.contains("unsafe-inline") && !policy.contains("http"), "{policy}");
        let html = page.text().await.unwrap();
        assert!(html.contains(r#"<script type="module" src="/console/app.js">"#), "{html}");
        assert_eq!(html.matches("<script").count(), 1, "no inline script: {html}");
        assert!(!html.contains("style=") && !html.contains("<style"), "no inline style: {html}");
        assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "nothing is loaded from elsewhere");
    }
    let script = get("/console/app.js").await.unwrap();
    assert!(script.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    let script = script.text().await.unwrap();
    assert!(script.contains("/api/v1/openapi.json"), "the reference is built from the served document");
    for forbidden in ["innerHTML", "localStorage", "sessionStorage", "document.cookie", "eval("] {
        assert!(!script.contains(forbidden), "the console's script uses {forbidden}");
    }
    let styles = get("/console/app.css").await.unwrap();
    assert!(styles.headers()["content-type"].to_str().unwrap().starts_with("text/css"));
    assert!(!styles.text().await.unwrap().contains("@import"), "nothing is loaded from elsewhere");
}

async fn an_address_that_keeps_failing_authentication_gets_429_before_any_lookup(db: TestDb) {
    let app = spawn_app_with(&db, Settings { auth_failures_per_minute: 3, ..test_settings() }).await;
    let guessed = credential_ledger::domain::ApiKey::generate(&mut rand::rngs::OsRng);
    // Three failures are allowed; the fourth is one too many and blocks the address.
    for _ in 0..4 {
        assert_eq!(app.list(guessed.expose_secret()).await.status, StatusCode::UNAUTHORIZED);
    }
    let response = app
        .client
        .post(format!("{}{LIST}", app.address))
        .header("X-Server-API-Key", guessed.expose_secret())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(answer(response).await.error_code(), "too_many_failed_authentications");
    // Blocked means blocked: even a valid key from that address waits.
    assert_eq!(app.list(&app.tenant.key).await.status, StatusCode::TOO_MANY_REQUESTS);

    // Another address is not affected.
    let elsewhere =
        reqwest::Client::builder().local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    let response = elsewhere
        .post(format!("{}{LIST}", app.address))
        .header("X-Server-API-Key", &app.tenant.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn a_request_over_its_time_limit_gets_503_request_timeout(db: TestDb) {
    let limits = Limits {
        request_timeout: Duration::from_millis(200),
        max_concurrent_requests: 64,
        header_read_timeout: Duration::from_secs(30),
    };
    let app = spawn_app_with(&db, Settings { limits, ..test_settings() }).await;
    // A body that is promised and held back: the request is still running at its limit however
    // fast the service is (a limit of a nanosecond raced the timer's millisecond grain, and a
    // quick create won).
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap();
    let head = format!(
        "POST {CREATE} HTTP/1.1\r\nHost: ledger\r\nX-Server-API-Key: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 16\r\n\r\n",
        app.tenant.key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    // Up to the end of the error envelope, or the connection's.
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 1024];
        while !answer.ends_with(b"}}") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(count) => answer.extend_from_slice(&buffer[..count]),
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "no answer within 10 s: {answer}");
    assert!(started.elapsed() >= Duration::from_millis(150), "answered before its limit: {answer}");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    let listed = app.list(&app.tenant.key).await;
    assert_eq!(listed.data().as_array().unwrap().len(), 1, "nothing was created: {}", listed.body);
}

async fn requests_beyond_the_concurrency_cap_are_shed_with_503_overloaded(db: TestDb) {
    let limits = Limits {
        request_timeout: Duration::from_secs(10),
        max_concurrent_requests: 1,
        header_read_timeout: Duration::from_secs(30),
    };
    let app = spawn_app_with(&db, Settings { limits, ..test_settings() }).await;
    let bodies: Vec<Value> = (0..20).map(|i| json!({"name": format!("burst {i}")})).collect();
    let answers =
        futures::future::join_all(bodies.iter().map(|body| app.post(CREATE, Some(&app.tenant.key), body))).await;
    let shed = answers.iter().filter(|a| a.status == StatusCode::SERVICE_UNAVAILABLE).count();
    assert!(shed > 0, "with room for one request at a time, a burst of 20 sheds some");
    for answer in &answers {
        match answer.status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => assert_eq!(answer.error_code(), "overloaded"),
            other => panic!("unexpected {other}: {}", answer.body),
        }
    }
}

credential_ledger_test_support::on_both_backends!(
    readyz_reports_migrations_and_the_relay_state,
    metrics_count_requests_and_refused_authentications,
    the_openapi_document_describes_every_endpoint_with_its_errors,
    the_console_is_served_self_contained_under_a_strict_policy,
    an_address_that_keeps_failing_authentication_gets_429_before_any_lookup,
    a_request_over_its_time_limit_gets_503_request_timeout,
    requests_beyond_the_concurrency_cap_are_shed_with_503_overloaded,
);
