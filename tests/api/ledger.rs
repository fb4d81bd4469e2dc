//! The log itself: immutability, the hash chain, and rebuilding the view from it.

use credential_ledger::domain::{chain_hash, ChainLink, GENESIS_HASH};
use rand::{rngs::StdRng, Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{spawn_app, wait_until, TestApp};
use credential_ledger_test_support::backend::{Raw, TestDb};

async fn the_log_rejects_update_delete_and_truncate(db: TestDb) {
    let app = spawn_app(&db).await;
    let head = app.log_head().await;
    let statements: &[&str] = match app.raw {
        Raw::Postgres(_) => &[
            "UPDATE events SET payload = '{}'::jsonb",
            "UPDATE events SET recorded_at = now() WHERE position = 1",
            "DELETE FROM events",
            "DELETE FROM events WHERE position = 1",
            "TRUNCATE events",
        ],
        // SQLite has no TRUNCATE: its DELETE without WHERE is the same, and fires the trigger.
        Raw::Sqlite(_) => &[
            "UPDATE events SET payload = '{}'",
            "UPDATE events SET recorded_at = '2000-01-01T00:00:00.000000Z' WHERE position = 1",
            "DELETE FROM events",
            "DELETE FROM events WHERE position = 1",
        ],
    };
    for statement in statements {
        let error = app.raw.execute(statement).await.expect_err(statement);
        assert!(error.to_string().contains("append-only"), "{statement}: {error}");
    }
    assert_eq!(app.log_head().await, head);
}

/// Recomputes the chain from the stored events, as an auditor would.
pub(crate) async fn assert_chain_is_intact(app: &TestApp) {
    let events = app.events().await;
    let mut prev = GENESIS_HASH;
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.position, i as i64 + 1, "gap-free positions");
        assert_eq!(event.prev_hash, prev.to_vec(), "prev_hash links position {}", event.position);
        let payload: Value = serde_json::from_str(&event.payload).unwrap();
        let metadata: Value = serde_json::from_str(&event.metadata).unwrap();
        let link = ChainLink {
            position: event.position,
            stream_id: event.stream_id,
            stream_version: event.stream_version,
            event_id: event.event_id,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            server_uuid: event.server_uuid,
            payload: &payload,
            metadata: &metadata,
            recorded_at: event.recorded_at,
        };
        prev = chain_hash(&prev, &link);
        assert_eq!(event.hash, prev.to_vec(), "hash of position {}", event.position);
    }
    assert_eq!(app.log_head().await, (events.len() as i64, prev.to_vec()));
}

async fn every_append_extends_a_verifiable_hash_chain(db: TestDb) {
    let app = spawn_app(&db).await;
    let created = app.create_api_key(&app.tenant.key, "Chained").await;
    app.regenerate(&app.tenant.key, created["uuid"].as_str().unwrap()).await;
    app.create(&app.tenant.key, json!({"name": "Ünïcödé ✓ \"quoted\""})).await;
    app.revoke(&app.tenant.key, &app.tenant.credential_uuid.to_string()).await;
    assert_chain_is_intact(&app).await;
}

/// Random command sequences over several servers; after each, dropping the view and replaying
/// the log gives back the view row for row.
async fn a_rebuilt_view_equals_the_live_one_for_random_histories(db: TestDb) {
    let app = spawn_app(&db).await;
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
        let report = app.store.rebuild_projections().await.unwrap();
        assert_eq!(app.view().await, live, "seed {seed}, round {round}");
        assert_eq!(report.credentials as usize, live.len());
    }
    assert_chain_is_intact(&app).await;
}

async fn a_changed_projection_schema_is_rebuilt_at_start(db: TestDb) {
    let app = spawn_app(&db).await;
    app.create(&app.tenant.key, json!({"name": "Survives"})).await;
    let live = app.view().await;
    // Pretend the view was built from another version of projections/credentials.sql.
    let forged = match app.raw {
        Raw::Postgres(_) => "UPDATE projection_versions SET checksum = '\\x00'",
        Raw::Sqlite(_) => "UPDATE projection_versions SET checksum = x'00'",
    };
    app.raw.execute(forged).await.unwrap();
    app.raw.execute("DELETE FROM credentials").await.unwrap();
    db.store().await;
    assert_eq!(app.view().await, live);
}

/// A rebuild while two instances write (so that both the one-statement append and the locked
/// retry run): the writes wait for it instead of failing, and nothing is lost.
async fn a_rebuild_during_writes_neither_fails_them_nor_loses_them(db: TestDb) {
    let app = spawn_app(&db).await;
    let other = spawn_app(&db).await;
    let creates = futures::future::join_all((0..200).map(|i| {
        let instance = if i % 2 == 0 { &app } else { &other };
        instance.create(&app.tenant.key, json!({"name": format!("During rebuild {i}")}))
    }));
    let rebuilds = async {
        let mut reports = Vec::new();
        for _ in 0..3 {
            reports.push(app.store.rebuild_projections().await);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        reports
    };
    let (answers, reports) = tokio::join!(creates, rebuilds);
    assert!(answers.iter().all(|answer| answer.status == StatusCode::OK), "every create commits");
    assert!(reports.iter().all(Result::is_ok), "every rebuild commits: {reports:?}");
    assert_eq!(app.list(&app.tenant.key).await.data().as_array().unwrap().len(), 201);
    let live = app.view().await;
    app.store.rebuild_projections().await.unwrap();
    assert_eq!(app.view().await, live);
}

/// An instance that starts while a rebuild has dropped the view loads the rebuilt view, not an
/// empty one: its keys work, and a revoke made elsewhere afterwards reaches it without errors.
async fn an_instance_started_during_a_rebuild_serves_every_key(db: TestDb) {
    let first = spawn_app(&db).await;
    let extra = first.create_api_key(&first.tenant.key, "Existing").await;
    // A reader holding the view makes the rebuild wait right after it locked the chain head,
    // with the old view dropped but not yet replaced: the window a start-up can fall into.
    let Raw::Postgres(pool) = db.raw().await else { unreachable!("lock waits are PostgreSQL's") };
    let mut reader = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM credentials LIMIT 1").execute(&mut *reader).await.unwrap();
    let start = async {
        wait_for_lock_waiters(&pool, 1).await;
        let release = async {
            // The starting instance queues behind the rebuild too, then the reader lets go.
            wait_for_lock_waiters(&pool, 2).await;
            reader.commit().await.unwrap();
        };
        tokio::join!(spawn_app(&db), release).0
    };
    let (rebuilt, second) = tokio::join!(first.store.rebuild_projections(), start);
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

credential_ledger_test_support::on_both_backends!(
    the_log_rejects_update_delete_and_truncate,
    every_append_extends_a_verifiable_hash_chain,
    a_rebuilt_view_equals_the_live_one_for_random_histories,
    a_changed_projection_schema_is_rebuilt_at_start,
    a_rebuild_during_writes_neither_fails_them_nor_loses_them,
);

// A reader's lock on the view holding a rebuild: PostgreSQL's locks. On SQLite a rebuild is one
// write transaction, and a starting instance's snapshot sees the view before or after it.
credential_ledger_test_support::on_postgres!(an_instance_started_during_a_rebuild_serves_every_key);
