//! Malformed and hostile requests: each gets its status and stable code, nothing is appended,
//! no key is echoed, and the service keeps answering.

use credential_ledger::domain::ApiKey;
use reqwest::{Method, StatusCode};

use crate::helpers::{answer, spawn_app, CREATE, LIST, REGENERATE, REVOKE};
use credential_ledger_test_support::backend::TestDb;

enum Key {
    Valid,
    Absent,
    Raw(String),
}

struct Case {
    name: &'static str,
    method: Method,
    path: &'static str,
    key: Key,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    /// Sent after the key and Content-Type, so that a name here can be sent twice.
    extra_headers: Vec<(&'static str, String)>,
    status: StatusCode,
    code: &'static str,
}

fn post(name: &'static str, path: &'static str, body: &str, status: StatusCode, code: &'static str) -> Case {
    Case {
        name,
        method: Method::POST,
        path,
        key: Key::Valid,
        content_type: Some("application/json"),
        body: body.as_bytes().to_vec(),
        extra_headers: Vec::new(),
        status,
        code,
    }
}

fn with_key(key: Key, mut case: Case) -> Case {
    case.key = key;
    case
}

fn with_content_type(content_type: Option<&'static str>, mut case: Case) -> Case {
    case.content_type = content_type;
    case
}

fn with_header(name: &'static str, value: &str, mut case: Case) -> Case {
    case.extra_headers.push((name, value.to_owned()));
    case
}

fn cases(valid_key: &str) -> Vec<Case> {
    use StatusCode as S;
    let mut flipped = valid_key.to_owned();
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'A' { 'B' } else { 'A' });
    let never_issued = ApiKey::generate(&mut rand::rngs::OsRng).expose_secret().to_owned();
    let long_name = format!(r#"{{"name": "{}"}}"#, "n".repeat(256));
    // Checked before the credential is looked up: the nil uuid is never reached.
    let grace = |value: &str| format!(r#"{{"uuid": "00000000-0000-0000-0000-000000000000", "grace_period": {value}}}"#);
    let expiry = |value: &str| format!(r#"{{"name": "a", "expires_at": {value}}}"#);
    let rfc3339 = |at: chrono::DateTime<chrono::Utc>| format!(r#""{}""#, at.to_rfc3339());
    let past = rfc3339(chrono::Utc::now() - chrono::Duration::seconds(1));
    let too_far = rfc3339(chrono::Utc::now() + chrono::Duration::days(3653) + chrono::Duration::seconds(1));
    let huge = format!(r#"{{"name": "{}"}}"#, "x".repeat(70 * 1024));
    let deep = format!(r#"{{"name": {}"a"{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
    let mut invalid_utf8 = br#"{"name": ""#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe]);
    invalid_utf8.extend_from_slice(br#""}"#);
    let misplaced_key = format!(r#"{{"name": "a", "{valid_key}": true}}"#);
    let key_as_hold = format!(r#"{{"name": "a", "hold": "{valid_key}"}}"#);
    let key_as_name = format!(r#"{{"name": "backup of {valid_key}"}}"#);

    vec![
        with_key(Key::Absent, post("no key", LIST, "{}", S::UNAUTHORIZED, "missing_api_key")),
        with_key(Key::Raw(String::new()), post("empty key", LIST, "{}", S::UNAUTHORIZED, "missing_api_key")),
        with_key(Key::Raw("not-a-key".into()), post("garbage key", LIST, "{}", S::UNAUTHORIZED, "invalid_api_key")),
        with_key(Key::Raw(flipped), post("checksum mismatch", LIST, "{}", S::UNAUTHORIZED, "invalid_api_key")),
        with_key(Key::Raw(never_issued), post("never issued", LIST, "{}", S::UNAUTHORIZED, "invalid_api_key")),
        with_key(
            Key::Raw(format!("{valid_key}0")),
            post("key too long", LIST, "{}", S::UNAUTHORIZED, "invalid_api_key"),
        ),
        with_key(
            Key::Raw(valid_key.replacen("vml_", "VML_", 1)),
            post("prefix case", LIST, "{}", S::UNAUTHORIZED, "invalid_api_key"),
        ),
        with_key(Key::Absent, post("no key on create", CREATE, r#"{"name":"a"}"#, S::UNAUTHORIZED, "missing_api_key")),
        with_key(
            Key::Raw("vml_abc123def456ghi789jkl".into()),
            post("seed example key", REVOKE, r#"{"uuid":"x"}"#, S::UNAUTHORIZED, "invalid_api_key"),
        ),
        post("unclosed object", CREATE, "{", S::BAD_REQUEST, "malformed_json"),
        post("not json", CREATE, "name=a", S::BAD_REQUEST, "malformed_json"),
        post("trailing characters", CREATE, r#"{"name":"a"} x"#, S::BAD_REQUEST, "malformed_json"),
        // Typed decoding stops at the first `[` where a string belongs: the depth costs nothing.
        post("nesting bomb", CREATE, &deep, S::BAD_REQUEST, "invalid_parameters"),
        post("nesting bomb, untyped", CREATE, &deep.replace("\"name\"", "\"x\""), S::BAD_REQUEST, "invalid_parameters"),
        Case { body: invalid_utf8, ..post("invalid utf-8", CREATE, "", S::BAD_REQUEST, "malformed_json") },
        post("name is a number", CREATE, r#"{"name": 5}"#, S::BAD_REQUEST, "invalid_parameters"),
        post("name missing", CREATE, "{}", S::BAD_REQUEST, "invalid_parameters"),
        post("name null", CREATE, r#"{"name": null}"#, S::BAD_REQUEST, "invalid_parameters"),
        post("unknown field", CREATE, r#"{"name": "a", "colour": "red"}"#, S::BAD_REQUEST, "invalid_parameters"),
        post("duplicate field", CREATE, r#"{"name": "a", "name": "b"}"#, S::BAD_REQUEST, "invalid_parameters"),
        post("hold is a string", CREATE, r#"{"name": "a", "hold": "yes"}"#, S::BAD_REQUEST, "invalid_parameters"),
        post("type is a number", CREATE, r#"{"name": "a", "type": 1}"#, S::BAD_REQUEST, "invalid_parameters"),
        post("body is an array", CREATE, "[]", S::BAD_REQUEST, "invalid_parameters"),
        post("body is a string", CREATE, r#""name""#, S::BAD_REQUEST, "invalid_parameters"),
        post("body is null", CREATE, "null", S::BAD_REQUEST, "invalid_parameters"),
        post("list body is an array", LIST, "[null, null]", S::BAD_REQUEST, "invalid_parameters"),
        // "An object, or no body": `null` is neither.
        post("list body is null", LIST, "null", S::BAD_REQUEST, "invalid_parameters"),
        post("key in a field name", CREATE, &misplaced_key, S::BAD_REQUEST, "invalid_parameters"),
        post("key as a value", CREATE, &key_as_hold, S::BAD_REQUEST, "invalid_parameters"),
        post("list with parameters", LIST, r#"{"page": 2}"#, S::BAD_REQUEST, "invalid_parameters"),
        post("empty name", CREATE, r#"{"name": ""}"#, S::UNPROCESSABLE_ENTITY, "invalid_name"),
        post("blank name", CREATE, r#"{"name": "   "}"#, S::UNPROCESSABLE_ENTITY, "invalid_name"),
        post("name too long", CREATE, &long_name, S::UNPROCESSABLE_ENTITY, "invalid_name"),
        post("NUL in name", CREATE, r#"{"name": "a\u0000b"}"#, S::UNPROCESSABLE_ENTITY, "invalid_name"),
        post("zero-width name", CREATE, r#"{"name": "\u200b\u200d"}"#, S::UNPROCESSABLE_ENTITY, "invalid_name"),
        post("byte order mark as name", CREATE, r#"{"name": "\ufeff"}"#, S::UNPROCESSABLE_ENTITY, "invalid_name"),
        post("bidi override in name", CREATE, r#"{"name": "a\u202eb"}"#, S::UNPROCESSABLE_ENTITY, "invalid_name"),
        post("bidi isolate in name", CREATE, r#"{"name": "\u2067a"}"#, S::UNPROCESSABLE_ENTITY, "invalid_name"),
        post("a key in the name", CREATE, &key_as_name, S::UNPROCESSABLE_ENTITY, "invalid_name"),
        with_header(
            "X-Server-API-Key",
            valid_key,
            post("the key twice", LIST, "{}", S::UNAUTHORIZED, "invalid_api_key"),
        ),
        with_header(
            "X-Server-API-Key",
            "vml_other",
            post("two different keys", LIST, "{}", S::UNAUTHORIZED, "invalid_api_key"),
        ),
        with_header(
            "Content-Type",
            "text/plain",
            post("two content types", CREATE, r#"{"name":"a"}"#, S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ),
        with_header(
            "Content-Type",
            "application/json",
            post("content type twice", CREATE, r#"{"name":"a"}"#, S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ),
        post("lower-case type", CREATE, r#"{"name": "a", "type": "api"}"#, S::UNPROCESSABLE_ENTITY, "invalid_type"),
        post("unknown type", CREATE, r#"{"name": "a", "type": "WEBHOOK"}"#, S::UNPROCESSABLE_ENTITY, "invalid_type"),
        with_content_type(
            Some("text/plain"),
            post("text/plain", CREATE, r#"{"name":"a"}"#, S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ),
        with_content_type(
            None,
            post("no content type", CREATE, r#"{"name":"a"}"#, S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ),
        with_content_type(
            Some("application/x-www-form-urlencoded"),
            post("form body", CREATE, "name=a", S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ),
        post("body over 64 KiB", CREATE, &huge, S::PAYLOAD_TOO_LARGE, "payload_too_large"),
        post("negative grace", REGENERATE, &grace("-1"), S::UNPROCESSABLE_ENTITY, "invalid_grace_period"),
        post("fractional grace", REGENERATE, &grace("1.5"), S::UNPROCESSABLE_ENTITY, "invalid_grace_period"),
        post(
            "grace over 30 days, as a float",
            REGENERATE,
            &grace("2.6e6"),
            S::UNPROCESSABLE_ENTITY,
            "invalid_grace_period",
        ),
        post("grace as a string", REGENERATE, &grace(r#""10""#), S::UNPROCESSABLE_ENTITY, "invalid_grace_period"),
        post("grace as a boolean", REGENERATE, &grace("true"), S::UNPROCESSABLE_ENTITY, "invalid_grace_period"),
        post("grace over 30 days", REGENERATE, &grace("2592001"), S::UNPROCESSABLE_ENTITY, "invalid_grace_period"),
        post("expiry in the past", CREATE, &expiry(&past), S::UNPROCESSABLE_ENTITY, "invalid_expires_at"),
        post("expiry in words", CREATE, &expiry(r#""tomorrow""#), S::UNPROCESSABLE_ENTITY, "invalid_expires_at"),
        post(
            "expiry without offset",
            CREATE,
            &expiry(r#""2030-01-01T00:00:00""#),
            S::UNPROCESSABLE_ENTITY,
            "invalid_expires_at",
        ),
        post("expiry past 10 years", CREATE, &expiry(&too_far), S::UNPROCESSABLE_ENTITY, "invalid_expires_at"),
        post("expiry as a number", CREATE, &expiry("5"), S::UNPROCESSABLE_ENTITY, "invalid_expires_at"),
        post("seed-style uuid", REGENERATE, r#"{"uuid": "abc-123-def"}"#, S::UNPROCESSABLE_ENTITY, "invalid_uuid"),
        post("empty uuid", REVOKE, r#"{"uuid": ""}"#, S::UNPROCESSABLE_ENTITY, "invalid_uuid"),
        post("uuid is a number", REGENERATE, r#"{"uuid": 12}"#, S::BAD_REQUEST, "invalid_parameters"),
        post("uuid missing", REVOKE, "{}", S::BAD_REQUEST, "invalid_parameters"),
        post(
            "unknown uuid",
            REVOKE,
            r#"{"uuid": "6f1c9a0e-2b7d-4e55-9a3c-0d4b8e1f2a35"}"#,
            S::NOT_FOUND,
            "credential_not_found",
        ),
        post(
            "nil uuid",
            REGENERATE,
            r#"{"uuid": "00000000-0000-0000-0000-000000000000"}"#,
            S::NOT_FOUND,
            "credential_not_found",
        ),
        Case {
            method: Method::GET,
            ..post("GET on a POST route", LIST, "", S::METHOD_NOT_ALLOWED, "method_not_allowed")
        },
        post("unknown route", "/api/v1/credentials/delete", "{}", S::NOT_FOUND, "not_found"),
        post("unknown version", "/api/v2/credentials/list", "{}", S::NOT_FOUND, "not_found"),
    ]
}

async fn every_bad_request_gets_its_status_and_code_and_changes_nothing(db: TestDb) {
    let app = spawn_app(&db).await;
    let head_before = app.log_head().await;
    let view_before = app.view().await;
    let cases = cases(&app.tenant.key);
    assert!(cases.len() >= 30);

    let mut failures = Vec::new();
    for case in cases {
        let mut request = app.client.request(case.method.clone(), format!("{}{}", app.address, case.path));
        match &case.key {
            Key::Valid => request = request.header("X-Server-API-Key", &app.tenant.key),
            Key::Raw(raw) => request = request.header("X-Server-API-Key", raw),
            Key::Absent => {}
        }
        if let Some(content_type) = case.content_type {
            request = request.header("Content-Type", content_type);
        }
        for (name, value) in &case.extra_headers {
            request = request.header(*name, value);
        }
        let response = request.body(case.body.clone()).send().await.expect("the service answers");
        if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
            // The body was not read: the connection is not reused for the next case.
            assert_eq!(response.headers().get("connection").map(|value| value.as_bytes()), Some(&b"close"[..]));
        }
        let got = answer(response).await;
        let code = got.body["data"]["code"].as_str().unwrap_or("<none>").to_owned();
        let message = got.body["data"]["message"].as_str().unwrap_or_default().to_owned();
        if got.status != case.status || code != case.code || got.body["status"] != "error" {
            failures.push(format!(
                "{}: expected {} {}, got {} {}",
                case.name, case.status, case.code, got.status, got.body
            ));
        }
        if message.is_empty() {
            failures.push(format!("{}: no message", case.name));
        }
        if message.contains(&app.tenant.key[4..]) {
            failures.push(format!("{}: the message echoes the key: {message}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    assert_eq!(app.log_head().await, head_before, "no bad request appended anything");
    assert_eq!(app.view().await, view_before);
    assert_eq!(app.list(&app.tenant.key).await.status, StatusCode::OK, "the service still answers");
}

async fn a_wrong_type_names_the_field_and_the_expectation(db: TestDb) {
    let app = spawn_app(&db).await;
    let answer = app.create(&app.tenant.key, serde_json::json!({"name": "a", "hold": "maybe"})).await;
    let message = answer.body["data"]["message"].as_str().unwrap();
    assert!(message.contains("hold") && message.contains("boolean"), "{message}");
    assert!(!message.contains("maybe"), "values are not echoed: {message}");
}

credential_ledger_test_support::on_both_backends!(
    every_bad_request_gets_its_status_and_code_and_changes_nothing,
    a_wrong_type_names_the_field_and_the_expectation,
);
