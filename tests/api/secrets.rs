//! A key is shown once and stored only as a hash.

use std::process::Command;

use serde_json::json;

use crate::helpers::{spawn_app, wait_until};
use credential_ledger_test_support::backend::TestDb;

async fn a_full_dump_of_the_database_contains_no_key(db: TestDb) {
    let app = spawn_app(&db).await;
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
        let flushed = app.store.usage_since(chrono::DateTime::UNIX_EPOCH).await.unwrap();
        (!flushed.is_empty()).then_some(())
    })
    .await;

    let dump = dump(&db);
    assert!(contains(&dump, b"CredentialLocked"), "the dump holds the log");
    for key in &keys {
        // Neither the key nor its secret part, in any table.
        assert!(!contains(&dump, &key.as_bytes()[4..]), "a key is in the dump");
        let key_hash = credential_ledger::domain::ApiKey::parse(key).unwrap().hash();
        let stored = if db.is_postgres() { key_hash.to_hex().into_bytes() } else { key_hash.0.to_vec() };
        assert!(contains(&dump, &stored), "keys are stored as their SHA-256");
    }
}

/// Everything the database holds: PostgreSQL's `pg_dump`; on SQLite, the bytes of the file and
/// of its write-ahead log, free pages and all.
fn dump(db: &TestDb) -> Vec<u8> {
    if db.is_postgres() {
        let dump = Command::new("pg_dump").arg("--dbname").arg(db.url()).output().expect("pg_dump runs");
        assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
        return dump.stdout;
    }
    let path = db.url().trim_start_matches("sqlite://");
    let mut bytes = std::fs::read(path).expect("the ledger file");
    bytes.extend(std::fs::read(format!("{path}-wal")).unwrap_or_default());
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

credential_ledger_test_support::on_both_backends!(a_full_dump_of_the_database_contains_no_key,);
