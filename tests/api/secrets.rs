//! A key is shown once and stored only as a hash.

use std::process::Command;

use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{database_url, spawn_app, wait_until};

#[sqlx::test]
async fn a_full_dump_of_the_database_contains_no_key(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let mut keys = vec![app.tenant.key.clone()];
    let created = app.create_api_key(&app.tenant.key, "Dumped").await;
    keys.push(created["key"].as_str().unwrap().to_owned());
    let smtp = app.create(&app.tenant.key, json!({"name": "SMTP"})).await;
    keys.push(smtp.data()["key"].as_str().unwrap().to_owned());
    let rotated = app.regenerate(&app.tenant.key, created["uuid"].as_str().unwrap()).await;
    keys.push(rotated.data()["key"].as_str().unwrap().to_owned());
    app.list(&keys[3]).await;
    app.revoke(&keys[3], smtp.data()["uuid"].as_str().unwrap()).await;
    // Usage is flushed in the background: the dump must hold it too.
    wait_until("usage to be flushed", std::time::Duration::from_secs(5), || async {
        let flushed: i64 = sqlx::query_scalar("SELECT count(*) FROM credential_usage").fetch_one(&pool).await.unwrap();
        (flushed > 0).then_some(())
    })
    .await;

    let url = database_url(&pool).await;
    let dump = Command::new("pg_dump").arg("--dbname").arg(&url).output().expect("pg_dump runs");
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("CredentialLocked"), "the dump holds the log");
    for key in &keys {
        // Neither the key nor its secret part, in any table.
        assert!(!dump.contains(&key[4..]), "a key is in the dump");
        let key_hash = credential_ledger::domain::ApiKey::parse(key).unwrap().hash().to_hex();
        assert!(dump.contains(&key_hash), "keys are stored as their SHA-256");
    }
}
