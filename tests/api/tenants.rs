//! One tenant cannot starve the others: large answers stream, each server has a bounded share
//! of the expensive reads, and a server's credentials are capped.

use std::time::Duration;

use credential_ledger::startup::Settings;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{spawn_app, spawn_app_with, test_settings, wait_until, LIST};
use credential_ledger_test_support::backend::TestDb;

async fn a_large_list_streams_every_credential_in_order(db: TestDb) {
    let app = spawn_app(&db).await;
    app.seed_credentials(&app.tenant, 12_000).await;
    let response = app
        .client
        .post(format!("{}{LIST}", app.address))
        .header("X-Server-API-Key", &app.tenant.key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.content_length().is_none(), "a large answer is streamed, not built whole first");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "success");
    let ids: Vec<i64> = body["data"].as_array().unwrap().iter().map(|c| c["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, (1..=12_001).collect::<Vec<_>>());
    assert_eq!(body["data"][0]["last_used_at"].as_str().map(str::len), Some(20), "usage is listed too");

    let now = chrono::Utc::now().to_rfc3339();
    let as_of = app.post(LIST, Some(&app.tenant.key), &json!({ "as_of": now })).await;
    let replayed = as_of.data().as_array().unwrap();
    assert_eq!(replayed.len(), 12_001);
    assert_eq!(replayed[12_000]["name"], body["data"][12_000]["name"]);
}

/// While a client holds one large answer open (reading nothing), the same server's next large
/// read gets 429 `server_busy` at once, and another server's calls are untouched.
async fn each_server_gets_a_bounded_share_of_large_reads(db: TestDb) {
    let settings = Settings { max_large_reads_per_server: 1, ..test_settings() };
    let app = spawn_app_with(&db, settings).await;
    let other = app.new_tenant("Quiet neighbour").await;
    // Far more than socket buffers hold, so the held answer cannot finish behind the reader's back.
    app.seed_credentials(&app.tenant, 60_000).await;

    let address = app.address.trim_start_matches("http://").to_owned();
    let mut reader = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "POST {LIST} HTTP/1.1\r\nHost: {address}\r\nX-Server-API-Key: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\n\r\n{{}}",
        app.tenant.key
    );
    reader.write_all(request.as_bytes()).await.unwrap();
    let mut first = [0u8; 12];
    reader.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    let busy = app.list(&app.tenant.key).await;
    assert_eq!((busy.status, busy.error_code()), (StatusCode::TOO_MANY_REQUESTS, "server_busy"));
    let small = app.create(&app.tenant.key, json!({"name": "a write still goes through"})).await;
    assert_eq!(small.status, StatusCode::OK);
    let neighbour = app.list(&other.key).await;
    assert_eq!(neighbour.status, StatusCode::OK);

    drop(reader);
    wait_until("the share to come back when the reader leaves", Duration::from_secs(10), || async {
        (app.list(&app.tenant.key).await.status == StatusCode::OK).then_some(())
    })
    .await;
}

async fn creates_stop_at_the_servers_credential_limit_and_rotation_goes_on(db: TestDb) {
    let settings = Settings { max_credentials_per_server: 3, ..test_settings() };
    let app = spawn_app_with(&db, settings).await;
    let second = app.create_api_key(&app.tenant.key, "Second").await;
    app.create_api_key(&app.tenant.key, "Third").await;
    let head = app.log_head().await;
    let refused = app.create(&app.tenant.key, json!({"name": "Fourth"})).await;
    assert_eq!((refused.status, refused.error_code()), (StatusCode::CONFLICT, "credential_limit_reached"));
    assert_eq!(app.log_head().await, head, "nothing is written");
    let rotated = app.regenerate(&app.tenant.key, second["uuid"].as_str().unwrap()).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let other = app.new_tenant("Other").await;
    assert_eq!(app.create(&other.key, json!({"name": "theirs"})).await.status, StatusCode::OK, "per server");
}

credential_ledger_test_support::on_both_backends!(
    a_large_list_streams_every_credential_in_order,
    each_server_gets_a_bounded_share_of_large_reads,
    creates_stop_at_the_servers_credential_limit_and_rotation_goes_on,
);
