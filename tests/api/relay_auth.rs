//! The mail relays' listener: nginx's `auth_http` (`GET /auth/smtp`) and `POST
//! /v1/credentials/verify`, called as nginx and a relay call them, on both backends. (The chain
//! through a real nginx is in tests/e2e.)

use std::time::Duration;

use credential_ledger::http::RelaySecret;
use credential_ledger::startup::{RelayAuthSettings, Settings};
use credential_ledger_test_support::backend::TestDb;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, test_settings, wait_until, TestApp};

const SECRET: &str = "relay-secret-for-the-tests";
const UPSTREAM: &str = "127.0.0.1:2525";

fn relay_settings(failures_per_minute: u32) -> Settings {
    Settings {
        relay_auth: Some(RelayAuthSettings {
            addr: "127.0.0.1:0".parse().unwrap(),
            secret: RelaySecret::parse(SECRET).unwrap(),
            smtp_upstream: Some(UPSTREAM.parse().unwrap()),
        }),
        auth_failures_per_minute: failures_per_minute,
        ..test_settings()
    }
}

/// What nginx's mail proxy sends for one login, and the `Auth-*` headers of the answer.
struct Login {
    status: StatusCode,
    auth_status: String,
    server: Option<String>,
    port: Option<String>,
    wait: Option<u64>,
}

async fn smtp_login(app: &TestApp, secret: Option<&str>, password: &str, client_ip: &str) -> Login {
    let relay = app.relay_address.as_ref().expect("the relays' listener is on");
    let mut request = app
        .client
        .get(format!("{relay}/auth/smtp"))
        .header("Auth-Method", "plain")
        .header("Auth-User", "anyone")
        .header("Auth-Pass", password)
        .header("Auth-Protocol", "smtp")
        .header("Auth-Login-Attempt", "1")
        .header("Client-IP", client_ip);
    if let Some(secret) = secret {
        request = request.header("X-Relay-Secret", secret);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| response.headers().get(name).map(|value| value.to_str().unwrap().to_owned());
    Login {
        status: response.status(),
        auth_status: header("auth-status").unwrap_or_default(),
        server: header("auth-server"),
        port: header("auth-port"),
        wait: header("auth-wait").map(|wait| wait.parse().unwrap()),
    }
}

async fn verify(app: &TestApp, key: &str, credential_type: &str) -> (StatusCode, Value) {
    let relay = app.relay_address.as_ref().expect("the relays' listener is on");
    let response = app
        .client
        .post(format!("{relay}/v1/credentials/verify"))
        .header("X-Relay-Secret", SECRET)
        .json(&json!({"key": key, "type": credential_type}))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn smtp_key(app: &TestApp, name: &str) -> Value {
    let answer = app.create(&app.tenant.key, json!({"name": name, "type": "SMTP"})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.data().clone()
}

fn key(credential: &Value) -> &str {
    credential["key"].as_str().unwrap()
}

fn assert_refused(login: &Login, what: &str) {
    assert_eq!(login.auth_status, "Invalid login or password", "{what}");
    assert!(login.wait.is_some_and(|wait| wait >= 1), "{what}: nginx is told to make the client wait");
    assert_eq!((login.server.as_deref(), login.port.as_deref()), (None, None), "{what}");
}

/// A live SMTP key logs in and is sent to the upstream; the same key once revoked, the old key of
/// a rotation, a held key, an API key, a malformed key and another server's revoked key do not.
async fn smtp_logins_follow_the_ledger(db: TestDb) {
    let app = spawn_app_with(&db, relay_settings(10_000)).await;
    let live = smtp_key(&app, "SMTP Relay").await;
    let login = smtp_login(&app, Some(SECRET), key(&live), "192.0.2.10").await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(login.auth_status, "OK");
    assert_eq!((login.server.as_deref(), login.port.as_deref()), (Some("127.0.0.1"), Some("2525")));
    assert_eq!(login.wait, None);

    let rotated = smtp_key(&app, "Rotated").await;
    let rotation = app.regenerate(&app.tenant.key, rotated["uuid"].as_str().unwrap()).await;
    let replacement = rotation.data()["key"].as_str().unwrap().to_owned();
    assert_refused(&smtp_login(&app, Some(SECRET), key(&rotated), "192.0.2.10").await, "the old key of a rotation");
    assert_eq!(smtp_login(&app, Some(SECRET), &replacement, "192.0.2.10").await.auth_status, "OK");

    let api = app.create_api_key(&app.tenant.key, "An API key").await;
    assert_refused(&smtp_login(&app, Some(SECRET), key(&api), "192.0.2.10").await, "an API key");
    assert_refused(&smtp_login(&app, Some(SECRET), "vml_not-a-key", "192.0.2.10").await, "a malformed key");
    assert_refused(&smtp_login(&app, Some(SECRET), "", "192.0.2.10").await, "no password");

    let other = app.new_tenant("Other").await;
    let theirs = app.create(&other.key, json!({"name": "Theirs", "type": "SMTP"})).await;
    let theirs = theirs.data().clone();
    assert_eq!(smtp_login(&app, Some(SECRET), key(&theirs), "192.0.2.10").await.auth_status, "OK");
    app.revoke(&other.key, theirs["uuid"].as_str().unwrap()).await;
    assert_refused(&smtp_login(&app, Some(SECRET), key(&theirs), "192.0.2.10").await, "another server's revoked key");

    app.revoke(&app.tenant.key, live["uuid"].as_str().unwrap()).await;
    assert_refused(&smtp_login(&app, Some(SECRET), key(&live), "192.0.2.10").await, "a revoked key");
}

/// Without the shared secret nothing is answered, not even for a live key; the API's listener
/// does not serve the relays' routes.
async fn relay_calls_without_the_secret_are_refused(db: TestDb) {
    let app = spawn_app_with(&db, relay_settings(10_000)).await;
    let live = smtp_key(&app, "SMTP Relay").await;
    for secret in [None, Some("not-the-relay-secret"), Some("")] {
        let login = smtp_login(&app, secret, key(&live), "192.0.2.10").await;
        assert_eq!(login.status, StatusCode::FORBIDDEN, "{secret:?}");
        assert_eq!((login.auth_status.as_str(), login.server), ("", None), "{secret:?}: no Auth-* answer");
    }
    let relay = app.relay_address.as_ref().unwrap();
    let twice = app
        .client
        .get(format!("{relay}/auth/smtp"))
        .header("X-Relay-Secret", SECRET)
        .header("X-Relay-Secret", SECRET)
        .header("Auth-Pass", key(&live))
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), StatusCode::FORBIDDEN, "two secrets are not one");
    let body: Value = twice.json().await.unwrap();
    assert_eq!(body["data"]["code"], "invalid_relay_secret");
    assert!(!body.to_string().contains(SECRET));
    let metrics = app.client.get(format!("{}/metrics", app.address)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"credential_ledger_relay_auth_failures_total{reason="relay_secret"}"#), "{metrics}");
    let on_the_api = app.client.get(format!("{}/auth/smtp", app.address)).send().await.unwrap();
    assert_eq!(on_the_api.status(), StatusCode::NOT_FOUND);
    // Without the listener configured there is none.
    let plain = spawn_app_with(&db, test_settings()).await;
    assert!(plain.relay_address.is_none());
}

/// A login updates `last_used_at` as an API call does; a check appends nothing to the log.
async fn an_smtp_login_moves_last_used_at_and_appends_no_event(db: TestDb) {
    let app = spawn_app_with(&db, relay_settings(10_000)).await;
    let live = smtp_key(&app, "SMTP Relay").await;
    let uuid = live["uuid"].as_str().unwrap().to_owned();
    let events_before = app.events().await.len();
    let before = chrono::Utc::now();
    assert_eq!(smtp_login(&app, Some(SECRET), key(&live), "192.0.2.10").await.auth_status, "OK");
    let used = wait_until("last_used_at of the SMTP credential", Duration::from_secs(5), || async {
        let listed = app.list(&app.tenant.key).await;
        let row = listed.data().as_array().unwrap().iter().find(|row| row["uuid"] == uuid.as_str()).cloned();
        row.and_then(|row| row["last_used_at"].as_str().map(str::to_owned))
    })
    .await;
    let used = chrono::DateTime::parse_from_rfc3339(&used).unwrap();
    assert!(used >= before - chrono::Duration::seconds(1), "{used} is the login's time");
    assert_eq!(app.events().await.len(), events_before, "a check is not an event");
}

/// Past the failure quota, a client address is refused before its key is looked at (a live key
/// too), with a longer wait; other addresses are not.
async fn failed_logins_from_one_address_are_slowed_down(db: TestDb) {
    let app = spawn_app_with(&db, relay_settings(10)).await;
    let live = smtp_key(&app, "SMTP Relay").await;
    let mut answers = Vec::new();
    for _ in 0..20 {
        let guess = smtp_login(&app, Some(SECRET), "vml_guessing", "198.51.100.7").await;
        assert_eq!(guess.server, None);
        answers.push((guess.auth_status, guess.wait.unwrap_or_default()));
    }
    assert!(answers[..10].iter().all(|(status, wait)| status == "Invalid login or password" && *wait == 1));
    let (status, wait) = &answers[19];
    assert_eq!(status, "Too many failed logins, try again later");
    assert!(*wait > 1, "the wait grows: {answers:?}");
    let blocked = smtp_login(&app, Some(SECRET), key(&live), "198.51.100.7").await;
    assert_eq!(blocked.auth_status, "Too many failed logins, try again later");
    assert!(blocked.wait.is_some_and(|wait| wait >= 1));
    assert_eq!(blocked.server, None);
    assert_eq!(smtp_login(&app, Some(SECRET), key(&live), "198.51.100.8").await.auth_status, "OK");
}

/// `verify` answers a live key of the type asked for with its credential and server, and
/// anything else with `valid: false` and nothing more.
async fn verify_answers_for_live_keys_of_the_type_asked(db: TestDb) {
    let app = spawn_app_with(&db, relay_settings(10_000)).await;
    let live = smtp_key(&app, "SMTP Relay").await;
    let (status, answer) = verify(&app, key(&live), "SMTP").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        answer,
        json!({
            "valid": true,
            "credential": {"uuid": live["uuid"], "name": "SMTP Relay", "type": "SMTP"},
            "server": {"uuid": app.tenant.server_uuid, "name": "Acme Mail"},
        })
    );
    assert_eq!(verify(&app, key(&live), "API").await.1, json!({"valid": false}));
    assert_eq!(verify(&app, &app.tenant.key, "API").await.1["valid"], true);
    assert_eq!(verify(&app, "vml_nope", "SMTP").await.1, json!({"valid": false}));
    app.revoke(&app.tenant.key, live["uuid"].as_str().unwrap()).await;
    assert_eq!(verify(&app, key(&live), "SMTP").await.1, json!({"valid": false}));

    let relay = app.relay_address.as_ref().unwrap();
    let bad = app
        .client
        .post(format!("{relay}/v1/credentials/verify"))
        .header("X-Relay-Secret", SECRET)
        .json(&json!({"key": key(&live), "type": "SMTP", "extra": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let bad: Value = bad.json().await.unwrap();
    assert!(!bad.to_string().contains(key(&live)), "the key is not echoed: {bad}");
}

/// Without `SMTP_UPSTREAM` a good key has nowhere to go: a temporary failure, not a refusal, and
/// no upstream named.
async fn a_login_with_nowhere_to_relay_is_a_temporary_failure(db: TestDb) {
    let mut settings = relay_settings(10_000);
    if let Some(relay) = settings.relay_auth.as_mut() {
        relay.smtp_upstream = None;
    }
    let app = spawn_app_with(&db, settings).await;
    let live = smtp_key(&app, "SMTP Relay").await;
    let login = smtp_login(&app, Some(SECRET), key(&live), "192.0.2.10").await;
    assert_eq!(login.auth_status, "Temporary server problem, try again later");
    assert_eq!((login.server, login.port, login.wait), (None, None, Some(1)));
    assert_refused(&smtp_login(&app, Some(SECRET), "vml_nope", "192.0.2.10").await, "a bad key is still refused");
}

/// Two instances on one ledger: a revoke through one refuses the next login through the other.
async fn a_revoke_on_one_instance_refuses_the_next_login_on_the_other(db: TestDb) {
    let first = spawn_app_with(&db, relay_settings(10_000)).await;
    let mut second = spawn_app_with(&db, relay_settings(10_000)).await;
    second.tenant = first.tenant.clone();
    let live = smtp_key(&first, "SMTP Relay").await;
    assert_eq!(smtp_login(&second, Some(SECRET), key(&live), "192.0.2.10").await.auth_status, "OK");
    first.revoke(&first.tenant.key, live["uuid"].as_str().unwrap()).await;
    assert_refused(&smtp_login(&second, Some(SECRET), key(&live), "192.0.2.10").await, "revoked on the other instance");
}

/// An SMTP key in a rotation's grace period logs in until the deadline and not from it, before
/// any lock is recorded; so does a key with an expiry.
async fn smtp_logins_stop_at_a_deadline(db: TestDb) {
    let app = spawn_app_with(&db, relay_settings(10_000)).await;
    let rotated = smtp_key(&app, "Rotated").await;
    let body = json!({"uuid": rotated["uuid"], "grace_period": 2});
    let rotation = app.post(crate::helpers::REGENERATE, Some(&app.tenant.key), &body).await;
    let deadline: chrono::DateTime<chrono::Utc> = rotation.data()["old_expires_at"].as_str().unwrap().parse().unwrap();
    let expiring = app
        .create(&app.tenant.key, json!({"name": "Expiring", "type": "SMTP", "expires_at": deadline.to_rfc3339()}))
        .await;
    let expiring = expiring.data().clone();
    for credential in [&rotated, &expiring] {
        assert_eq!(smtp_login(&app, Some(SECRET), key(credential), "192.0.2.10").await.auth_status, "OK");
        assert_eq!(verify(&app, key(credential), "SMTP").await.1["valid"], true);
    }
    if let Ok(wait) = (deadline - chrono::Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
    for credential in [&rotated, &expiring] {
        assert_refused(&smtp_login(&app, Some(SECRET), key(credential), "192.0.2.10").await, "past its deadline");
        assert_eq!(verify(&app, key(credential), "SMTP").await.1, json!({"valid": false}));
    }
}

credential_ledger_test_support::on_both_backends!(
    smtp_logins_stop_at_a_deadline,
    smtp_logins_follow_the_ledger,
    relay_calls_without_the_secret_are_refused,
    an_smtp_login_moves_last_used_at_and_appends_no_event,
    failed_logins_from_one_address_are_slowed_down,
    verify_answers_for_live_keys_of_the_type_asked,
    a_revoke_on_one_instance_refuses_the_next_login_on_the_other,
    a_login_with_nowhere_to_relay_is_a_temporary_failure,
);
