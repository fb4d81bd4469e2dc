//! Rotation with a grace period and expiring keys: a key is refused from its deadline exactly,
//! on every instance, whether or not its lock is in the log yet; the lock is appended once, by
//! whichever instance gets there first, within a second of the deadline.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, wait_until, TestApp, REGENERATE};
use crate::load::assert_view_equals_a_rebuild;
use credential_ledger::domain::StoredEvent;
use credential_ledger_test_support::backend::TestDb;

fn instant(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap_or_else(|| panic!("an instant: {value}")).parse().unwrap()
}

async fn sleep_until(at: DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

/// The locks recorded on `stream`, in order.
async fn locks_of(app: &TestApp, stream: &str) -> Vec<StoredEvent> {
    app.events()
        .await
        .into_iter()
        .filter(|event| event.stream_id.to_string() == stream && event.event_type == "CredentialLocked")
        .collect()
}

async fn regenerate_with_grace(app: &TestApp, key: &str, uuid: &str, grace: u32) -> Value {
    let answer = app.post(REGENERATE, Some(key), &json!({"uuid": uuid, "grace_period": grace})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.data().clone()
}

/// Both instances answer for the old key before the deadline and refuse it from the deadline
/// on; one `rotated` lock carrying the deadline lands within a second, and never a second one.
async fn a_grace_rotation_keeps_the_old_key_working_until_its_deadline_on_every_instance(db: TestDb) {
    let first = spawn_app(&db).await;
    let second = spawn_app(&db).await;
    let old = first.create_api_key(&first.tenant.key, "Rotating").await;
    let (old_uuid, old_key) = (old["uuid"].as_str().unwrap(), old["key"].as_str().unwrap());

    let before = Utc::now();
    let rotated = regenerate_with_grace(&first, &first.tenant.key, old_uuid, 2).await;
    let deadline = instant(&rotated["old_expires_at"]);
    let expected = before + chrono::Duration::seconds(2);
    assert!(deadline >= expected && deadline < Utc::now() + chrono::Duration::seconds(2), "{deadline}");
    let new_key = rotated["key"].as_str().unwrap();

    // Both keys work on both instances during the grace period.
    for app in [&first, &second] {
        assert_eq!(app.list(old_key).await.status, StatusCode::OK);
        let listed = app.list(new_key).await;
        let row = listed.data().as_array().unwrap().iter().find(|row| row["uuid"] == old_uuid).unwrap().clone();
        assert_eq!((row["hold"].clone(), instant(&row["expires_at"])), (json!(false), deadline));
        assert_eq!(row["replaced_by"], rotated["new_uuid"], "the list names the replacement");
    }
    // Again just before the deadline, and then from it on: refused everywhere, at once.
    sleep_until(deadline - chrono::Duration::milliseconds(300)).await;
    for app in [&first, &second] {
        assert_eq!(app.list(old_key).await.status, StatusCode::OK, "before the deadline");
    }
    sleep_until(deadline).await;
    for app in [&first, &second] {
        assert_eq!(app.list(old_key).await.error_code(), "invalid_api_key", "from the deadline on");
        let listed = app.list(new_key).await;
        let row = listed.data().as_array().unwrap().iter().find(|row| row["uuid"] == old_uuid).unwrap().clone();
        assert_eq!(row["hold"], true, "list agrees with authentication at the deadline");
    }

    let locks = wait_until("the deadline's lock", Duration::from_secs(3), || async {
        let locks = locks_of(&first, old_uuid).await;
        (!locks.is_empty()).then_some(locks)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(locks_of(&first, old_uuid).await.len(), 1, "two schedulers, one lock");
    let lock = &locks[0];
    assert_eq!(lock.schema_version, 2);
    let payload: Value = serde_json::from_str(&lock.payload).unwrap();
    assert_eq!(payload["reason"], "rotated");
    assert_eq!(payload["replaced_by"], rotated["new_uuid"]);
    assert_eq!(instant(&payload["deadline"]), deadline);
    assert_eq!(lock.actor(), Some(credential_ledger::domain::Actor::Deadline));
    let lateness = lock.recorded_at - deadline;
    assert!(lateness >= chrono::Duration::zero() && lateness < chrono::Duration::seconds(1), "late by {lateness}");

    let (verified, report) = first.verify().await;
    assert!(verified, "{report}");
    assert_view_equals_a_rebuild(&first.store).await;
}

/// An expiry given at creation: shown by `create` and `list`, enforced at its instant, locked
/// with reason `expired`; `as_of` shows the credential held from the deadline, not from the
/// lock.
async fn an_expiring_key_stops_at_its_instant_and_as_of_shows_it_held_from_there(db: TestDb) {
    let app = spawn_app(&db).await;
    let expires_at = (Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339_opts(SecondsFormat::Micros, true);
    let created =
        app.create(&app.tenant.key, json!({"name": "Temporary", "type": "API", "expires_at": expires_at})).await;
    let data = created.data().clone();
    assert_eq!(data["expires_at"], expires_at);
    let (uuid, key) = (data["uuid"].as_str().unwrap(), data["key"].as_str().unwrap());
    let deadline = instant(&data["expires_at"]);
    assert_eq!(app.list(key).await.status, StatusCode::OK);

    let locks = wait_until("the expiry's lock", Duration::from_secs(4), || async {
        let locks = locks_of(&app, uuid).await;
        (!locks.is_empty()).then_some(locks)
    })
    .await;
    assert_eq!(app.list(key).await.error_code(), "invalid_api_key");
    let payload: Value = serde_json::from_str(&locks[0].payload).unwrap();
    assert_eq!((payload["reason"].clone(), instant(&payload["deadline"])), (json!("expired"), deadline));

    let as_of = |at: DateTime<Utc>| {
        let app = &app;
        async move {
            let body = json!({"as_of": at.to_rfc3339_opts(SecondsFormat::Micros, true)});
            let answer = app.post(crate::helpers::LIST, Some(&app.tenant.key), &body).await;
            answer.data().as_array().unwrap().iter().find(|row| row["uuid"] == uuid).unwrap().clone()
        }
    };
    let just_before = as_of(deadline - chrono::Duration::microseconds(1)).await;
    assert_eq!((just_before["hold"].clone(), instant(&just_before["expires_at"])), (json!(false), deadline));
    // At the deadline its lock was not recorded yet: it was held all the same.
    assert!(locks[0].recorded_at > deadline);
    let at_deadline = as_of(deadline).await;
    assert_eq!(at_deadline["hold"], true);
    let (verified, report) = app.verify().await;
    assert!(verified, "{report}");
}

/// Revoked during its grace period: one `revoked` lock at once, and nothing at the deadline.
async fn a_revoke_during_the_grace_period_is_the_only_lock(db: TestDb) {
    let app = spawn_app(&db).await;
    let old = app.create_api_key(&app.tenant.key, "Rotating").await;
    let old_uuid = old["uuid"].as_str().unwrap();
    let rotated = regenerate_with_grace(&app, &app.tenant.key, old_uuid, 1).await;
    let revoked = app.revoke(&app.tenant.key, old_uuid).await;
    assert_eq!(revoked.data()["hold"], true);
    sleep_until(instant(&rotated["old_expires_at"]) + chrono::Duration::milliseconds(1500)).await;
    let locks = locks_of(&app, old_uuid).await;
    assert_eq!(locks.len(), 1);
    assert_eq!(serde_json::from_str::<Value>(&locks[0].payload).unwrap()["reason"], "revoked");
    let listed = app.list(&app.tenant.key).await;
    let row = listed.data().as_array().unwrap().iter().find(|row| row["uuid"] == old_uuid).unwrap().clone();
    assert_eq!((row["hold"].clone(), row["expires_at"].clone()), (json!(true), Value::Null));
    assert_eq!(row["replaced_by"], rotated["new_uuid"], "the revoke does not undo the rotation");
    let (verified, report) = app.verify().await;
    assert!(verified, "{report}");
}

/// Fifty rotations of one credential at once, each with a grace period: one wins, the others
/// are told it was replaced already, and one lock follows at the deadline.
async fn of_concurrent_grace_rotations_one_wins(db: TestDb) {
    let app = spawn_app(&db).await;
    let old = app.create_api_key(&app.tenant.key, "Contended").await;
    let old_uuid = old["uuid"].as_str().unwrap();
    let body = json!({"uuid": old_uuid, "grace_period": 1});
    let answers = futures::future::join_all((0..50).map(|_| app.post(REGENERATE, Some(&app.tenant.key), &body))).await;
    let won: Vec<_> = answers.iter().filter(|answer| answer.status == StatusCode::OK).collect();
    assert_eq!(won.len(), 1);
    for lost in answers.iter().filter(|answer| answer.status != StatusCode::OK) {
        assert_eq!((lost.status, lost.error_code()), (StatusCode::CONFLICT, "credential_replaced"));
    }
    wait_until("the deadline's lock", Duration::from_secs(4), || async {
        (locks_of(&app, old_uuid).await.len() == 1).then_some(())
    })
    .await;
    let rotations = app.events().await.into_iter().filter(|event| event.event_type == "CredentialReplaced").count();
    assert_eq!(rotations, 1);
}

/// Without `grace_period` (or with 0), a rotation is written exactly as before deadlines
/// existed: a version 1 creation and a version 1 `rotated` lock in the same commit.
async fn a_rotation_without_grace_is_written_as_before(db: TestDb) {
    let app = spawn_app(&db).await;
    let old = app.create_api_key(&app.tenant.key, "Rotating").await;
    let old_uuid = old["uuid"].as_str().unwrap();
    let rotated = regenerate_with_grace(&app, &app.tenant.key, old_uuid, 0).await;
    assert_eq!(rotated["old_expires_at"], Value::Null);
    let listed = app.list(&app.tenant.key).await;
    let row = listed.data().as_array().unwrap().iter().find(|row| row["uuid"] == old_uuid).unwrap().clone();
    assert_eq!((row["hold"].clone(), row["replaced_by"].clone()), (json!(true), Value::Null));
    let events = app.events().await;
    let last: Vec<(&str, i32)> =
        events[events.len() - 2..].iter().map(|event| (event.event_type.as_str(), event.schema_version)).collect();
    assert_eq!(last, [("CredentialCreated", 1), ("CredentialLocked", 1)]);
    assert_eq!(events[events.len() - 1].recorded_at, events[events.len() - 2].recorded_at);
}

/// An instance stopped across a deadline: the next one to start records the lock, once, with
/// the deadline it enforces and the time it was recorded.
async fn a_deadline_that_passed_while_no_instance_ran_is_recorded_at_the_next_start(db: TestDb) {
    let mut app = spawn_app(&db).await;
    let old = app.create_api_key(&app.tenant.key, "Rotating").await;
    let old_uuid = old["uuid"].as_str().unwrap().to_owned();
    let rotated = regenerate_with_grace(&app, &app.tenant.key, &old_uuid, 1).await;
    let deadline = instant(&rotated["old_expires_at"]);
    app.stop().await;
    sleep_until(deadline + chrono::Duration::milliseconds(500)).await;
    let restarted_at = Utc::now();
    let app = spawn_app(&db).await;
    let locks = wait_until("the overdue lock", Duration::from_secs(3), || async {
        let locks = locks_of(&app, &old_uuid).await;
        (!locks.is_empty()).then_some(locks)
    })
    .await;
    assert_eq!(locks.len(), 1);
    assert!(locks[0].recorded_at >= restarted_at);
    let payload: Value = serde_json::from_str(&locks[0].payload).unwrap();
    assert_eq!(instant(&payload["deadline"]), deadline);
}

/// Random histories with deadlines, through a writer of the test's own beside the service's
/// scheduler: creates with and without expiries a few milliseconds out, rotations with and
/// without grace, revokes and deadline locks, interleaved with short waits. Whatever happened,
/// the view the appends kept equals a rebuild, an offline replay of the export, and a freshly
/// loaded replica, and the chain verifies.
async fn random_histories_with_deadlines_rebuild_and_replay_to_the_live_view(db: TestDb) {
    use credential_ledger::app::replica::{Replica, ReplicaCredential};
    use credential_ledger::app::writer::Writer;
    use credential_ledger::audit::{export_records, Replay, Verifier};
    use credential_ledger::domain::{
        Actor, ApiKey, Command, CredentialName, CredentialType, EventMetadata, ExpiresAt, GracePeriod, KeyMaterial,
        Outcome,
    };
    use rand::{Rng, SeedableRng};

    let app = spawn_app(&db).await;
    let store = app.store.clone();
    let (writer, _task) = Writer::spawn(store.clone(), Replica::load(store.clone()).await.unwrap());
    let server_uuid = app.tenant.server_uuid;
    let metadata = |actor| EventMetadata { actor, request_id: None, source_ip: None };
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261203);
    let mut credentials: Vec<uuid::Uuid> = vec![app.tenant.credential_uuid];
    for step in 0..120 {
        let target = credentials[rng.gen_range(0..credentials.len())];
        let key = || KeyMaterial::from(&ApiKey::generate(&mut rand::thread_rng()));
        let (command, actor) = match rng.gen_range(0..5) {
            0 | 1 => {
                let expires_at = rng.gen_bool(0.6).then(|| {
                    let at = Utc::now() + chrono::Duration::milliseconds(rng.gen_range(5..60));
                    ExpiresAt::at(at, Utc::now()).unwrap()
                });
                let command = Command::Create {
                    server_uuid,
                    credential_uuid: uuid::Uuid::new_v4(),
                    name: CredentialName::parse(&format!("Step {step}")).unwrap(),
                    credential_type: if rng.gen_bool(0.5) { CredentialType::Api } else { CredentialType::Smtp },
                    hold: rng.gen_bool(0.1),
                    key: key(),
                    expires_at,
                };
                (command, Actor::Cli)
            }
            2 => {
                let grace = GracePeriod::from_seconds(if rng.gen_bool(0.5) { 0 } else { 1 }).unwrap();
                let new_credential_uuid = uuid::Uuid::new_v4();
                let command = Command::Regenerate {
                    server_uuid,
                    credential_uuid: target,
                    new_credential_uuid,
                    new_key: key(),
                    grace,
                };
                (command, Actor::Cli)
            }
            3 => (Command::Revoke { server_uuid, credential_uuid: target }, Actor::Cli),
            _ => (Command::LockDue { server_uuid, credential_uuid: target }, Actor::Deadline),
        };
        match writer.execute(command, metadata(actor)).await {
            Ok(Outcome::Created(created)) => credentials.push(created.uuid),
            Ok(Outcome::Rotated { new, .. }) => credentials.push(new.uuid),
            Ok(_) | Err(_) => {}
        }
        if rng.gen_bool(0.2) {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(1..15))).await;
        }
    }
    // Past every expiry and grace period: the scheduler records what is left.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    wait_until("every deadline's lock", Duration::from_secs(5), || async {
        let pending = app.view().await.into_iter().filter(|c| c.pending_deadline().is_some()).count();
        (pending == 0).then_some(())
    })
    .await;

    let live = app.view().await;
    assert!(live.iter().any(|c| c.expires_at.is_some() && c.hold), "some deadlines were locked");
    let mut verifier = Verifier::new(None);
    let mut replay = Replay::new(None, None);
    export_records(&store, None, |record| {
        if let credential_ledger::audit::ExportRecord::Event(event) = &record {
            replay.push(event).unwrap();
        }
        Ok(verifier.push(&record)?)
    })
    .await
    .unwrap();
    verifier.finish().expect("the chain and its rules verify");
    assert_eq!(replay.finish(), live, "an offline replay equals the live view");
    let replica = Replica::load(store.clone()).await.unwrap();
    let listed: Vec<_> = replica.list(server_uuid);
    let of_server: Vec<ReplicaCredential> =
        live.iter().filter(|c| c.server_uuid == server_uuid).cloned().map(ReplicaCredential::from).collect();
    assert_eq!(listed, of_server, "a freshly loaded replica equals the view");
    assert_view_equals_a_rebuild(&store).await;
}

credential_ledger_test_support::on_both_backends!(
    random_histories_with_deadlines_rebuild_and_replay_to_the_live_view,
    a_grace_rotation_keeps_the_old_key_working_until_its_deadline_on_every_instance,
    an_expiring_key_stops_at_its_instant_and_as_of_shows_it_held_from_there,
    a_revoke_during_the_grace_period_is_the_only_lock,
    of_concurrent_grace_rotations_one_wins,
    a_rotation_without_grace_is_written_as_before,
    a_deadline_that_passed_while_no_instance_ran_is_recorded_at_the_next_start,
);
