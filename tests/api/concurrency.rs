use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, verify_database, wait_until, Answer};
use crate::ledger::assert_chain_is_intact;
use credential_ledger_test_support::backend::TestDb;

async fn of_fifty_concurrent_rotations_of_one_credential_exactly_one_wins(db: TestDb) {
    let app = spawn_app(&db).await;
    let target = app.create_api_key(&app.tenant.key, "Contended").await;
    let uuid = target["uuid"].as_str().unwrap().to_owned();

    let answers = join_all((0..50).map(|_| app.regenerate(&app.tenant.key, &uuid))).await;
    let won = answers.iter().filter(|answer| answer.status == StatusCode::OK).count();
    let conflicts = answers
        .iter()
        .filter(|answer| answer.status == StatusCode::CONFLICT && answer.error_code() == "credential_held")
        .count();
    assert_eq!((won, conflicts), (1, 49));

    let payloads: Vec<(String, Value)> = app
        .events()
        .await
        .into_iter()
        .map(|event| (event.event_type, serde_json::from_str(&event.payload).unwrap()))
        .collect();
    let rotations =
        payloads.iter().filter(|(kind, payload)| kind == "CredentialLocked" && payload["reason"] == "rotated").count();
    assert_eq!(rotations, 1);
    let created = payloads.iter().filter(|(_, payload)| payload["replaces"] == uuid.as_str()).count();
    assert_eq!(created, 1);
}

async fn concurrent_creates_share_commits_and_get_distinct_gap_free_ids(db: TestDb) {
    let app = spawn_app(&db).await;
    let answers =
        join_all((0..100).map(|i| app.create(&app.tenant.key, json!({"name": format!("Parallel {i}")})))).await;
    assert_eq!(sorted_ids(&answers), (2..=101).collect::<Vec<_>>());
    let positions: Vec<i64> = app.events().await.iter().map(|event| event.position).collect();
    assert_eq!(positions, (1..=101).collect::<Vec<_>>(), "positions are gap-free");
    assert_eq!(app.list(&app.tenant.key).await.data().as_array().unwrap().len(), 101);
}

/// Two instances writing at once: each appends where it last left the log, finds the other got
/// there first, and decides again under the head's lock. Nothing is refused, lost or duplicated.
async fn two_instances_writing_at_once_interleave_without_gaps(db: TestDb) {
    let first = spawn_app(&db).await;
    let second = spawn_app(&db).await;
    let key = first.tenant.key.clone();
    let creates = (0..120).map(|i| {
        let (instance, key) = (if i % 2 == 0 { &first } else { &second }, key.clone());
        async move { instance.create(&key, json!({"name": format!("Interleaved {i}")})).await }
    });
    let answers = join_all(creates).await;
    assert!(answers.iter().all(|answer| answer.status == StatusCode::OK), "every create commits");
    // The second instance's own tenant took id 2.
    assert_eq!(sorted_ids(&answers), (3..=122).collect::<Vec<_>>());
    for instance in [&first, &second] {
        assert_eq!(instance.list(&key).await.data().as_array().unwrap().len(), 121, "both see every create");
    }
    let live = first.view().await;
    first.store.rebuild_projections().await.unwrap();
    assert_eq!(first.view().await, live, "the view is the fold of the log");
    // Gap-free positions 1..=122, each event chained to the one before.
    assert_chain_is_intact(&first).await;
    assert_eq!(first.log_head().await.0, 122);
}

/// A key revoked while its own creates wait in batches writes nothing after its lock, on either
/// instance: the caller is authorised at the log position where its events go, not only when
/// its request arrived.
async fn a_key_revoked_under_its_own_write_storm_writes_nothing_after_its_lock(db: TestDb) {
    let first = spawn_app(&db).await;
    let second = spawn_app(&db).await;
    let victim = first.create_api_key(&first.tenant.key, "Victim").await;
    let (victim_key, victim_uuid) = (victim["key"].as_str().unwrap(), victim["uuid"].as_str().unwrap());
    let (stop, answered) = (AtomicBool::new(false), AtomicUsize::new(0));
    let storm = (0..48).map(|worker| {
        let (instance, stop, answered) = (if worker % 2 == 0 { &first } else { &second }, &stop, &answered);
        async move {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let name = format!("Storm {worker}-{}", answers.len());
                answers.push(instance.create(victim_key, json!({"name": name, "type": "API"})).await);
                answered.fetch_add(1, Ordering::Relaxed);
            }
            answers
        }
    });
    // The revoke lands in the storm, and the storm goes on after it: a round of answers on each side.
    let answers_past = |count: usize| {
        let answered = &answered;
        wait_until("the storm's answers", Duration::from_secs(30), move || {
            std::future::ready((answered.load(Ordering::Relaxed) >= count).then_some(()))
        })
    };
    let revoke = async {
        answers_past(48).await;
        let answer = first.revoke(&first.tenant.key, victim_uuid).await;
        answers_past(answered.load(Ordering::Relaxed) + 96).await;
        stop.store(true, Ordering::Relaxed);
        answer
    };
    let (answers, revoked) = tokio::join!(join_all(storm), revoke);
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    let answers: Vec<Answer> = answers.into_iter().flatten().collect();
    let created: Vec<&str> = answers
        .iter()
        .filter(|answer| answer.status == StatusCode::OK)
        .map(|answer| answer.data()["uuid"].as_str().unwrap())
        .collect();
    let refused = answers.iter().filter(|answer| answer.status == StatusCode::UNAUTHORIZED).count();
    assert!(!created.is_empty() && refused > 0, "the storm ran across the revoke: {} created", created.len());
    assert!(
        answers.iter().all(|answer| answer.status == StatusCode::OK || answer.error_code() == "invalid_api_key"),
        "only successes and 401s"
    );

    let log = first.events().await;
    let lock = log
        .iter()
        .find(|event| event.stream_id.to_string() == victim_uuid && event.event_type == "CredentialLocked")
        .expect("the victim's lock")
        .position;
    let by_victim: Vec<i64> = log
        .iter()
        .filter(|event| {
            let metadata: Value = serde_json::from_str(&event.metadata).unwrap();
            metadata["actor"]["uuid"] == victim_uuid
        })
        .map(|event| event.position)
        .collect();
    let after_lock: Vec<&i64> = by_victim.iter().filter(|position| **position > lock).collect();
    assert_eq!(after_lock, Vec::<&i64>::new(), "events by the victim after its lock at {lock}");
    assert_eq!(by_victim.len(), created.len(), "every acknowledged create is in the log, and nothing else");
    let (ok, report) = verify_database(db.url());
    assert!(ok, "{report}");
}

fn sorted_ids(answers: &[Answer]) -> Vec<i64> {
    let mut ids: Vec<i64> = answers.iter().map(|answer| answer.data()["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    ids
}

credential_ledger_test_support::on_both_backends!(
    of_fifty_concurrent_rotations_of_one_credential_exactly_one_wins,
    concurrent_creates_share_commits_and_get_distinct_gap_free_ids,
    two_instances_writing_at_once_interleave_without_gaps,
    a_key_revoked_under_its_own_write_storm_writes_nothing_after_its_lock,
);
