//! The log itself: immutability, the hash chain, and rebuilding the view from it.

use credential_ledger::domain::{chain_hash, ChainLink, GENESIS_HASH};
use credential_ledger::store::rebuild_projections;
use rand::{rngs::StdRng, Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{spawn_app, wait_until, TestApp};

#[sqlx::test]
async fn the_log_rejects_update_delete_and_truncate(pool: PgPool) {
    let app = spawn_app(pool).await;
    let head = app.log_head().await;
    for statement in [
        "UPDATE events SET payload = '{}'::jsonb",
        "UPDATE events SET recorded_at = now() WHERE position = 1",
        "DELETE FROM events",
        "DELETE FROM events WHERE position = 1",
        "TRUNCATE events",
    ] {
        let error = sqlx::query(statement).execute(&app.pool).await.expect_err(statement);
        assert!(error.to_string().contains("append-only"), "{statement}: {error}");
    }
    assert_eq!(app.log_head().await, head);
}

type EventRow =
    (i64, Uuid, i32, Uuid, String, i32, Uuid, Value, Value, chrono::DateTime<chrono::Utc>, Vec<u8>, Vec<u8>);

/// Recomputes the chain from the stored rows, as an auditor would.
pub(crate) async fn assert_chain_is_intact(app: &TestApp) {
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT position, stream_id, stream_version, event_id, event_type, schema_version, server_uuid,
                payload, metadata, recorded_at, prev_hash, hash FROM events ORDER BY position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut prev = GENESIS_HASH;
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.0, i as i64 + 1, "gap-free positions");
        assert_eq!(row.10, prev.to_vec(), "prev_hash links position {}", row.0);
        let link = ChainLink {
            position: row.0,
            stream_id: row.1,
            stream_version: row.2,
            event_id: row.3,
            event_type: &row.4,
            schema_version: row.5,
            server_uuid: row.6,
            payload: &row.7,
            metadata: &row.8,
            recorded_at: row.9,
        };
        prev = chain_hash(&prev, &link);
        assert_eq!(row.11, prev.to_vec(), "hash of position {}", row.0);
    }
    assert_eq!(app.log_head().await, (rows.len() as i64, prev.to_vec()));
}

#[sqlx::test]
async fn every_append_extends_a_verifiable_hash_chain(pool: PgPool) {
    let app = spawn_app(pool).await;
    let created = app.create_api_key(&app.tenant.key, "Chained").await;
    app.regenerate(&app.tenant.key, created["uuid"].as_str().unwrap()).await;
    app.create(&app.tenant.key, json!({"name": "Ünïcödé ✓ \"quoted\""})).await;
    app.revoke(&app.tenant.key, &app.tenant.credential_uuid.to_string()).await;
    assert_chain_is_intact(&app).await;
}

/// Random command sequences over several servers; after each, dropping the view and replaying
/// the log gives back the view row for row.
#[sqlx::test]
async fn a_rebuilt_view_equals_the_live_one_for_random_histories(pool: PgPool) {
    let app = spawn_app(pool).await;
    let seed: u64 = std::env::var("REBUILD_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tenants = vec![app.tenant.clone(), app.new_tenant("Second").await];
    let mut known: Vec<(usize, String)> = vec![(0, app.tenant.credential_uuid.to_string())];

    for round in 0..4 {
        for _ in 0..rng.gen_range(10..40) {
            let owner = rng.gen_range(0..tenants.len());
            let key = tenants[owner].key.clone();
            let target = known[rng.gen_range(0..known.len())].1.clone();
            match rng.gen_range(0..10) {
                0..=4 => {
                    let kind = if rng.gen_bool(0.5) { "API" } else { "SMTP" };
                    let answer = app
                        .create(
                            &key,
                            json!({"name": format!("r{round} \\ ✓"), "type": kind, "hold": rng.gen_bool(0.2)}),
                        )
                        .await;
                    known.push((owner, answer.data()["uuid"].as_str().unwrap().to_owned()));
                }
                5..=7 => {
                    let answer = app.regenerate(&key, &target).await;
                    assert!(matches!(answer.status, StatusCode::OK | StatusCode::CONFLICT | StatusCode::NOT_FOUND));
                    if answer.status == StatusCode::OK {
                        let new_uuid = answer.data()["new_uuid"].as_str().unwrap().to_owned();
                        // A tenant that rotated its own key goes on with the new one.
                        if tenants[owner].credential_uuid.to_string() == target {
                            tenants[owner].credential_uuid = new_uuid.parse().unwrap();
                            tenants[owner].key = answer.data()["key"].as_str().unwrap().to_owned();
                        }
                        known.push((owner, new_uuid));
                    }
                }
                // Never revoke a tenant's own key: the history must be able to go on.
                _ if tenants.iter().any(|t| t.credential_uuid.to_string() == target) => {}
                _ => {
                    let answer = app.revoke(&key, &target).await;
                    assert!(matches!(answer.status, StatusCode::OK | StatusCode::NOT_FOUND));
                }
            }
        }
        if round == 1 {
            tenants.push(app.new_tenant("Third").await);
        }
        let live = app.view().await;
        let report = rebuild_projections(&app.pool).await.unwrap();
        assert_eq!(app.view().await, live, "seed {seed}, round {round}");
        assert_eq!(report.credentials as usize, live.len());
    }
    assert_chain_is_intact(&app).await;
}

#[sqlx::test]
async fn a_changed_projection_schema_is_rebuilt_at_start(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    app.create(&app.tenant.key, json!({"name": "Survives"})).await;
    let live = app.view().await;
    // Pretend the view was built from another version of projections/credentials.sql.
    sqlx::query("UPDATE projection_versions SET checksum = '\\x00'").execute(&pool).await.unwrap();
    sqlx::query("DELETE FROM credentials").execute(&pool).await.unwrap();
    credential_ledger::store::prepare(&pool).await.unwrap();
    assert_eq!(app.view().await, live);
}

/// A rebuild while two instances write (so that both the one-statement append and the locked
/// retry run): the writes wait for it instead of failing, and nothing is lost.
#[sqlx::test]
async fn a_rebuild_during_writes_neither_fails_them_nor_loses_them(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    let other = spawn_app(pool).await;
    let creates = futures::future::join_all((0..200).map(|i| {
        let instance = if i % 2 == 0 { &app } else { &other };
        instance.create(&app.tenant.key, json!({"name": format!("During rebuild {i}")}))
    }));
    let rebuilds = async {
        let mut reports = Vec::new();
        for _ in 0..3 {
            reports.push(rebuild_projections(&app.pool).await);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        reports
    };
    let (answers, reports) = tokio::join!(creates, rebuilds);
    assert!(answers.iter().all(|answer| answer.status == StatusCode::OK), "every create commits");
    assert!(reports.iter().all(Result::is_ok), "every rebuild commits: {reports:?}");
    assert_eq!(app.list(&app.tenant.key).await.data().as_array().unwrap().len(), 201);
    let live = app.view().await;
    rebuild_projections(&app.pool).await.unwrap();
    assert_eq!(app.view().await, live);
}

/// An instance that starts while a rebuild has dropped the view loads the rebuilt view, not an
/// empty one: its keys work, and a revoke made elsewhere afterwards reaches it without errors.
#[sqlx::test]
async fn an_instance_started_during_a_rebuild_serves_every_key(pool: PgPool) {
    let first = spawn_app(pool.clone()).await;
    let extra = first.create_api_key(&first.tenant.key, "Existing").await;
    // A reader holding the view makes the rebuild wait right after it locked the chain head,
    // with the old view dropped but not yet replaced: the window a start-up can fall into.
    let mut reader = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM credentials LIMIT 1").execute(&mut *reader).await.unwrap();
    let start = async {
        wait_for_lock_waiters(&pool, 1).await;
        let release = async {
            // The starting instance queues behind the rebuild too, then the reader lets go.
            wait_for_lock_waiters(&pool, 2).await;
            reader.commit().await.unwrap();
        };
        tokio::join!(spawn_app(pool.clone()), release).0
    };
    let (rebuilt, second) = tokio::join!(rebuild_projections(&first.pool), start);
    rebuilt.unwrap();

    let listed = second.list(&first.tenant.key).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(listed.data().as_array().unwrap().len(), 2);
    first.revoke(&first.tenant.key, extra["uuid"].as_str().unwrap()).await.data();
    let listed = second.list(&first.tenant.key).await;
    assert_eq!(listed.data()[1]["hold"], true, "{}", listed.body);
    assert_eq!(second.list(extra["key"].as_str().unwrap()).await.error_code(), "invalid_api_key");
    let ready = second.client.get(format!("{}/readyz", second.address)).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

/// Waits until at least `count` sessions of this test database wait for a lock.
async fn wait_for_lock_waiters(pool: &PgPool, count: i64) {
    wait_until(&format!("{count} sessions waiting for a lock"), std::time::Duration::from_secs(10), || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        (waiting >= count).then_some(())
    })
    .await
}
