use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, wait_until, LIST, REGENERATE, REVOKE};
use credential_ledger_test_support::backend::TestDb;

fn keys_of(object: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = object.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

async fn list_shows_the_servers_credentials_shaped_as_the_seed(db: TestDb) {
    let app = spawn_app(&db).await;
    let key = app.tenant.key.clone();
    app.create(&key, json!({"name": "Production API", "type": "API"})).await;
    app.create(&key, json!({"name": "SMTP Relay"})).await;

    let answer = app.list(&key).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(keys_of(&answer.body), ["data", "status"]);
    let listed = answer.data().as_array().unwrap();
    assert_eq!(listed.len(), 3);
    for item in listed {
        assert_eq!(keys_of(item), ["expires_at", "hold", "id", "last_used_at", "name", "replaced_by", "type", "uuid"]);
        assert_eq!((&item["expires_at"], &item["replaced_by"]), (&Value::Null, &Value::Null));
    }
    let ids: Vec<i64> = listed.iter().map(|item| item["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "ascending ids: {ids:?}");
    assert_eq!(listed[1]["name"], "Production API");
    assert_eq!(listed[1]["type"], "API");
    assert_eq!(listed[2]["name"], "SMTP Relay");
    assert_eq!(listed[2]["type"], "SMTP");
    assert_eq!(listed[2]["hold"], false);
    assert_eq!(listed[2]["last_used_at"], Value::Null);
}

async fn list_accepts_a_bare_post_without_body(db: TestDb) {
    let app = spawn_app(&db).await;
    let response = app
        .client
        .post(format!("{}{LIST}", app.address))
        .header("X-Server-API-Key", &app.tenant.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn last_used_at_follows_successful_authentications(db: TestDb) {
    let app = spawn_app(&db).await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    app.list(&app.tenant.key).await;
    let answer = app.list(&app.tenant.key).await;
    let own = &answer.data()[0];
    let used: chrono::DateTime<chrono::Utc> = own["last_used_at"].as_str().unwrap().parse().unwrap();
    assert!(used >= before.trunc_subsecs_floor(), "{used} vs {before}");
    assert!(own["last_used_at"].as_str().unwrap().ends_with('Z'));

    // It is flushed to the usage table without any request writing it.
    let epoch = chrono::DateTime::UNIX_EPOCH;
    wait_until("last_used_at to reach the usage table", Duration::from_secs(5), || async {
        let flushed = app.store.usage_since(epoch).await.unwrap();
        flushed.into_iter().find(|(uuid, _)| *uuid == app.tenant.credential_uuid)
    })
    .await;
    // It is not an event.
    assert_eq!(app.event_types().await.len(), 1);
}

trait FloorSeconds {
    fn trunc_subsecs_floor(self) -> Self;
}

impl FloorSeconds for chrono::DateTime<chrono::Utc> {
    fn trunc_subsecs_floor(self) -> Self {
        chrono::SubsecRound::trunc_subsecs(self, 0)
    }
}

async fn create_answers_as_the_seed_and_applies_defaults(db: TestDb) {
    let app = spawn_app(&db).await;
    let answer = app.create(&app.tenant.key, json!({"name": "  New API Key  ", "type": "API"})).await;
    assert_eq!(answer.status, StatusCode::OK);
    let data = answer.data();
    assert_eq!(keys_of(data), ["hold", "id", "key", "name", "type", "uuid"]);
    assert_eq!(data["name"], "New API Key");
    assert_eq!(data["type"], "API");
    assert_eq!(data["hold"], false);
    assert_eq!(data["id"], 2);
    let key = data["key"].as_str().unwrap();
    assert!(key.starts_with("vml_") && key.len() == 42, "{key}");
    // The new key authenticates at once.
    assert_eq!(app.list(key).await.status, StatusCode::OK);

    let smtp = app.create(&app.tenant.key, json!({"name": "Relay"})).await;
    assert_eq!(smtp.data()["type"], "SMTP");
    assert_eq!(smtp.data()["hold"], false);
    let held = app.create(&app.tenant.key, json!({"name": "Spare", "type": "API", "hold": true})).await;
    assert_eq!(held.data()["hold"], true);
    let listed = app.list(&app.tenant.key).await;
    assert_eq!(listed.data()[3]["hold"], true, "held credentials are listed");
    // A credential created held does not authenticate.
    let held_key = held.data()["key"].as_str().unwrap();
    assert_eq!(app.list(held_key).await.error_code(), "invalid_api_key");
}

async fn regenerate_rotates_in_one_step(db: TestDb) {
    let app = spawn_app(&db).await;
    let old = app.create_api_key(&app.tenant.key, "Rotating").await;
    let old_uuid = old["uuid"].as_str().unwrap();
    let old_key = old["key"].as_str().unwrap();

    let answer = app.regenerate(&app.tenant.key, old_uuid).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let data = answer.data();
    assert_eq!(keys_of(data), ["key", "new_id", "new_uuid", "old_expires_at", "old_id", "old_uuid"]);
    assert_eq!(data["old_expires_at"], Value::Null, "without a grace period the old key stops at once");
    assert_eq!(data["old_id"], old["id"]);
    assert_eq!(data["old_uuid"], old["uuid"]);
    assert_eq!(data["new_id"], 3);
    let new_key = data["key"].as_str().unwrap();
    assert_ne!(new_key, old_key);

    assert_eq!(app.list(old_key).await.error_code(), "invalid_api_key", "the rotated-away key is refused");
    let listed = app.list(new_key).await;
    let rows = listed.data().as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["hold"], true);
    assert_eq!((rows[2]["name"].as_str(), rows[2]["type"].as_str()), (Some("Rotating"), Some("API")));
    assert_eq!(rows[2]["uuid"], data["new_uuid"]);

    let events = app.event_types().await;
    let tail: Vec<&str> = events[2..].iter().map(|(event_type, _)| event_type.as_str()).collect();
    assert_eq!(tail, ["CredentialCreated", "CredentialLocked"]);
    assert_eq!(events[3].1.to_string(), old_uuid);

    let again = app.regenerate(&app.tenant.key, old_uuid).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error_code(), "credential_held");
    assert_eq!(app.event_types().await.len(), 4, "a refused rotation appends nothing");
}

async fn revoke_holds_once_and_is_idempotent(db: TestDb) {
    let app = spawn_app(&db).await;
    let target = app.create_api_key(&app.tenant.key, "Doomed").await;
    let uuid = target["uuid"].as_str().unwrap();

    let first = app.revoke(&app.tenant.key, uuid).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.data(), &json!({"id": target["id"], "uuid": uuid, "hold": true}));
    assert_eq!(app.list(target["key"].as_str().unwrap()).await.error_code(), "invalid_api_key");
    let head = app.log_head().await;

    let second = app.revoke(&app.tenant.key, uuid).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.data(), first.data());
    assert_eq!(app.log_head().await, head, "revoking a held credential appends nothing");
}

async fn a_credential_can_revoke_itself_and_is_refused_from_then_on(db: TestDb) {
    let app = spawn_app(&db).await;
    let key = app.tenant.key.clone();
    let answer = app.revoke(&key, &app.tenant.credential_uuid.to_string()).await;
    assert_eq!(answer.status, StatusCode::OK);
    for path in [LIST, REGENERATE, REVOKE] {
        let refused = app.post(path, Some(&key), &json!({"uuid": app.tenant.credential_uuid})).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{path}");
    }
}

async fn smtp_keys_do_not_authenticate(db: TestDb) {
    let app = spawn_app(&db).await;
    let smtp = app.create(&app.tenant.key, json!({"name": "Relay", "type": "SMTP"})).await;
    let smtp_key = smtp.data()["key"].as_str().unwrap();
    let answer = app.list(smtp_key).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.error_code(), "invalid_api_key");
}

async fn servers_never_see_each_others_credentials(db: TestDb) {
    let app = spawn_app(&db).await;
    let other = app.new_tenant("Other Corp").await;
    assert_ne!(other.server_uuid, app.tenant.server_uuid);
    let theirs = app.create_api_key(&other.key, "Theirs").await;
    let their_uuid = theirs["uuid"].as_str().unwrap();
    let head = app.log_head().await;

    let mine = app.list(&app.tenant.key).await;
    assert_eq!(mine.data().as_array().unwrap().len(), 1);
    assert!(!mine.body.to_string().contains(their_uuid));

    for answer in [app.regenerate(&app.tenant.key, their_uuid).await, app.revoke(&app.tenant.key, their_uuid).await] {
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert_eq!(answer.error_code(), "credential_not_found");
    }
    assert_eq!(app.log_head().await, head);
    assert_eq!(app.list(theirs["key"].as_str().unwrap()).await.status, StatusCode::OK, "untouched");
}

async fn health_follows_the_database(db: TestDb) {
    let app = spawn_app(&db).await;
    let response = app.client.get(format!("{}/healthz", app.address)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    app.store.close().await;
    let response = app.client.get(format!("{}/healthz", app.address)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Liveness is the process's, not the database's: an outage restarts nothing.
    let live = app.client.get(format!("{}/livez", app.address)).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(crate::helpers::answer(live).await.data()["live"], true);
    assert_eq!(response.headers()["retry-after"], "1");
    let answer = crate::helpers::answer(response).await;
    assert_eq!(answer.error_code(), "service_unavailable");
    let listed = app.list(&app.tenant.key).await;
    assert_eq!((listed.status, listed.error_code()), (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"));
    let created = app.create(&app.tenant.key, json!({"name": "x"})).await;
    assert_eq!(created.status, StatusCode::SERVICE_UNAVAILABLE);
}

async fn request_ids_are_echoed_and_recorded_with_the_actor(db: TestDb) {
    let app = spawn_app(&db).await;
    let response = app
        .client
        .post(format!("{}{}", app.address, crate::helpers::CREATE))
        .header("X-Server-API-Key", &app.tenant.key)
        .header("X-Request-Id", "req-123")
        .json(&json!({"name": "Traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-123");
    let events = app.events().await;
    let metadata: Value = serde_json::from_str(&events.last().unwrap().metadata).unwrap();
    assert_eq!(metadata["request_id"], "req-123");
    assert_eq!(metadata["actor"], json!({"kind": "credential", "uuid": app.tenant.credential_uuid}));
    assert_eq!(metadata["source_ip"], "127.0.0.1");

    let generated = app.list(&app.tenant.key).await;
    assert_eq!(generated.status, StatusCode::OK);
    let response = app.client.get(format!("{}/healthz", app.address)).send().await.unwrap();
    let id = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "a request id is generated when none is sent: {id}");

    // A key pasted into the request id is echoed redacted, as it is recorded and logged.
    let pasted = format!("oops-{}-end", app.tenant.key);
    let response = app
        .client
        .post(format!("{}{}", app.address, crate::helpers::LIST))
        .header("X-Server-API-Key", &app.tenant.key)
        .header("X-Request-Id", &pasted)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "oops-vml_[redacted]-end");
}

async fn a_change_on_one_instance_is_seen_by_the_next_request_on_another(db: TestDb) {
    let first = spawn_app(&db).await;
    let second = spawn_app(&db).await;
    let key = first.tenant.key.clone();
    let made = first.create_api_key(&key, "Shared").await;
    let made_key = made["key"].as_str().unwrap();
    // Created on the first instance, usable at once on the second.
    assert_eq!(second.list(made_key).await.status, StatusCode::OK);
    let listed = second.list(&key).await;
    assert!(listed.body.to_string().contains(made["uuid"].as_str().unwrap()));
    // Revoked on the first, refused at once by the second.
    assert_eq!(first.revoke(&key, made["uuid"].as_str().unwrap()).await.status, StatusCode::OK);
    let refused = second.list(made_key).await;
    assert_eq!((refused.status, refused.error_code()), (StatusCode::UNAUTHORIZED, "invalid_api_key"));
    let rotated = second.regenerate(&key, &first.tenant.credential_uuid.to_string()).await;
    assert_eq!(rotated.status, StatusCode::OK);
    assert_eq!(first.list(&key).await.status, StatusCode::UNAUTHORIZED, "rotated away on the other instance");
}

credential_ledger_test_support::on_both_backends!(
    list_shows_the_servers_credentials_shaped_as_the_seed,
    list_accepts_a_bare_post_without_body,
    last_used_at_follows_successful_authentications,
    create_answers_as_the_seed_and_applies_defaults,
    regenerate_rotates_in_one_step,
    revoke_holds_once_and_is_idempotent,
    a_credential_can_revoke_itself_and_is_refused_from_then_on,
    smtp_keys_do_not_authenticate,
    servers_never_see_each_others_credentials,
    health_follows_the_database,
    request_ids_are_echoed_and_recorded_with_the_actor,
    a_change_on_one_instance_is_seen_by_the_next_request_on_another,
);
