//! Auditors: history, paging, as-of views, export, offline verification and tampering.

use std::path::{Path, PathBuf};

use rand::{rngs::StdRng, Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};

use credential_ledger::domain::{chain_hash, ChainLink, GENESIS_HASH};

use crate::helpers::{run_ledger, spawn_app, TestApp};
use credential_ledger_test_support::backend::{Raw, TestDb};

async fn history(app: &TestApp, key: &str, uuid: &str) -> crate::helpers::Answer {
    app.post("/api/v1/credentials/history", Some(key), &json!({ "uuid": uuid })).await
}

async fn history_lists_a_credentials_events_in_order_with_their_actors(db: TestDb) {
    let app = spawn_app(&db).await;
    let first_key = app.tenant.key.clone();
    let second = app.create_api_key(&first_key, "Second operator").await;
    let second_key = second["key"].as_str().unwrap().to_owned();
    let rotated = app.create_api_key(&first_key, "Rotated").await;
    let rotation = app.regenerate(&second_key, rotated["uuid"].as_str().unwrap()).await;
    let replacement = rotation.data()["new_uuid"].as_str().unwrap().to_owned();
    let response = app
        .client
        .post(format!("{}/api/v1/credentials/revoke", app.address))
        .header("X-Server-API-Key", &first_key)
        .header("X-Request-Id", "audit-revoke-1")
        .json(&json!({ "uuid": replacement }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let rotated_history = history(&app, &first_key, rotated["uuid"].as_str().unwrap()).await;
    let events = rotated_history.data().as_array().unwrap();
    let summary: Vec<(&str, i64)> =
        events.iter().map(|e| (e["type"].as_str().unwrap(), e["stream_version"].as_i64().unwrap())).collect();
    assert_eq!(summary, [("CredentialCreated", 1), ("CredentialLocked", 2)]);
    assert!(events[0]["position"].as_i64() < events[1]["position"].as_i64());
    assert_eq!(events[0]["actor"], json!({"kind": "credential", "uuid": app.tenant.credential_uuid}));
    assert_eq!(events[1]["actor"], json!({"kind": "credential", "uuid": second["uuid"]}));
    assert_eq!(events[1]["data"], json!({"reason": "rotated", "replaced_by": replacement}));
    assert!(events[0]["data"].get("key").is_none() && !rotated_history.body.to_string().contains(&second_key[4..]));

    let replacement_history = history(&app, &first_key, &replacement).await;
    let events = replacement_history.data().as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["data"]["replaces"], rotated["uuid"]);
    assert_eq!(events[1]["data"]["reason"], "revoked");
    assert_eq!(events[1]["request_id"], "audit-revoke-1");
    assert!(events[0]["request_id"].is_string());
    assert_eq!(events[1]["source_ip"], "127.0.0.1");
    assert_eq!(events[1]["hash"].as_str().unwrap().len(), 64);

    let provisioned = history(&app, &first_key, &app.tenant.credential_uuid.to_string()).await;
    assert_eq!(provisioned.data()[0]["actor"], json!({"kind": "cli"}));
    assert_eq!(provisioned.data()[0]["source_ip"], Value::Null, "the CLI has no address");

    let other = app.new_tenant("Other").await;
    let foreign = history(&app, &other.key, rotated["uuid"].as_str().unwrap()).await;
    assert_eq!((foreign.status, foreign.error_code()), (StatusCode::NOT_FOUND, "credential_not_found"));
    let malformed = history(&app, &first_key, "abc").await;
    assert_eq!((malformed.status, malformed.error_code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_uuid"));
}

async fn paging_through_events_returns_each_of_the_servers_events_once_in_order(db: TestDb) {
    let app = spawn_app(&db).await;
    let other = app.new_tenant("Other").await;
    for i in 0..7 {
        app.create(&app.tenant.key, json!({ "name": format!("mine {i}") })).await;
        app.create(&other.key, json!({ "name": format!("theirs {i}") })).await;
    }
    let made = app.create_api_key(&app.tenant.key, "rotated").await;
    app.regenerate(&app.tenant.key, made["uuid"].as_str().unwrap()).await;

    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page =
            app.post("/api/v1/events/list", Some(&app.tenant.key), &json!({"after_position": after, "limit": 3})).await;
        let data = page.data();
        let events = data["events"].as_array().unwrap();
        assert!(events.len() <= 3);
        seen.extend(events.iter().cloned());
        after = data["next_after_position"].as_i64().unwrap();
        if !data["has_more"].as_bool().unwrap() {
            break;
        }
    }
    let expected: Vec<i64> = app
        .events()
        .await
        .iter()
        .filter(|event| event.server_uuid == app.tenant.server_uuid)
        .map(|event| event.position)
        .collect();
    let positions: Vec<i64> = seen.iter().map(|event| event["position"].as_i64().unwrap()).collect();
    assert_eq!(positions, expected, "every event of the server, once, in order");
    assert_eq!(positions.len(), 1 + 7 + 1 + 2);
    assert!(!seen.iter().any(|event| event.to_string().contains("theirs")), "none of another server's");

    let beyond = app.post("/api/v1/events/list", Some(&app.tenant.key), &json!({"after_position": after})).await;
    assert_eq!(beyond.data(), &json!({"events": [], "next_after_position": after, "has_more": false}));
    for bad in [json!({"limit": 0}), json!({"limit": 1001}), json!({"after_position": -1})] {
        let answer = app.post("/api/v1/events/list", Some(&app.tenant.key), &bad).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
}

/// The live view without the operational `last_used_at`.
fn without_usage(listed: &Value) -> Vec<Value> {
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let mut row = row.clone();
            row.as_object_mut().unwrap().remove("last_used_at");
            row
        })
        .collect()
}

async fn the_view_as_of_any_event_equals_the_live_view_right_after_it(db: TestDb) {
    let app = spawn_app(&db).await;
    let seed: u64 = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    let key = app.tenant.key.clone();
    let mut uuids = vec![app.tenant.credential_uuid.to_string()];
    let mut snapshots = Vec::new();
    for step in 0..30 {
        let target = uuids[rng.gen_range(0..uuids.len())].clone();
        match rng.gen_range(0..3) {
            0 => {
                let made = app.create(&key, json!({"name": format!("step {step}"), "hold": rng.gen_bool(0.2)})).await;
                uuids.push(made.data()["uuid"].as_str().unwrap().to_owned());
            }
            1 if target != app.tenant.credential_uuid.to_string() => {
                let answer = app.regenerate(&key, &target).await;
                if answer.status == StatusCode::OK {
                    uuids.push(answer.data()["new_uuid"].as_str().unwrap().to_owned());
                }
            }
            _ if target != app.tenant.credential_uuid.to_string() => {
                app.revoke(&key, &target).await;
            }
            _ => continue,
        }
        let at = app.events().await.iter().map(|event| event.recorded_at).max().unwrap();
        snapshots.push((at, without_usage(app.list(&key).await.data())));
    }
    for (at, live) in snapshots {
        let as_of = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let past = app.post("/api/v1/credentials/list", Some(&key), &json!({ "as_of": as_of })).await;
        assert_eq!(without_usage(past.data()), live, "seed {seed}, as of {as_of}");
        assert!(past.data().as_array().unwrap().iter().all(|row| row["last_used_at"].is_null()));
    }
    let before = app.post("/api/v1/credentials/list", Some(&key), &json!({"as_of": "2000-01-01T00:00:00Z"})).await;
    assert_eq!(before.data(), &json!([]));
    let bad = app.post("/api/v1/credentials/list", Some(&key), &json!({"as_of": "yesterday"})).await;
    assert_eq!((bad.status, bad.error_code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_as_of"));
}

/// A small ledger of two servers: six events or more, positions 1.. in order.
async fn some_history(app: &TestApp) -> crate::helpers::Tenant {
    let other = app.new_tenant("Other").await;
    let rotated = app.create_api_key(&app.tenant.key, "Rotated").await;
    app.create(&other.key, json!({"name": "Theirs"})).await;
    app.regenerate(&app.tenant.key, rotated["uuid"].as_str().unwrap()).await;
    let revoked = app.create(&app.tenant.key, json!({"name": "Revoked"})).await;
    app.revoke(&app.tenant.key, revoked.data()["uuid"].as_str().unwrap()).await;
    other
}

fn verify(args: &[&str], url: &str) -> (bool, Value) {
    let output = run_ledger(&[&["verify"], args].concat(), url);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("{stdout} {:?}", output.stderr));
    // 0 verified, 1 checked and failed (3 is for what could not be read).
    let expected = if report["verified"] == true { 0 } else { 1 };
    assert_eq!(output.status.code(), Some(expected), "{report}");
    (output.status.success(), report)
}

/// A file or a database that cannot be read is not a failed check: exit code 3, no report.
#[test]
fn verify_that_cannot_read_its_input_exits_3() {
    let missing = std::env::temp_dir().join(format!("credential-ledger-missing-{}.jsonl", uuid::Uuid::new_v4()));
    for (args, url, expected) in [
        (vec!["--file", missing.to_str().unwrap()], "sqlite:///tmp/unused.db", "could not check the ledger"),
        (vec![], "postgres://postgres@127.0.0.1:1/ledger", "Connection refused"),
    ] {
        let output = run_ledger(&[&["verify"], args.as_slice()].concat(), url);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{stderr}");
        assert!(output.stdout.is_empty(), "no verdict is printed");
        assert!(stderr.starts_with("error: could not check the ledger") && stderr.contains(expected), "{stderr}");
    }
}

async fn head(app: &TestApp) -> (i64, String) {
    let (position, hash) = app.log_head().await;
    (position, hex::encode(hash))
}

const SWAP_3_AND_4: [&str; 3] = [
    "UPDATE events SET position = 1000000 WHERE position = 3",
    "UPDATE events SET position = 3 WHERE position = 4",
    "UPDATE events SET position = 4 WHERE position = 1000000",
];

async fn an_untouched_ledger_verifies_and_reports_its_head(db: TestDb) {
    let app = spawn_app(&db).await;
    some_history(&app).await;
    let url = db.url().to_owned();
    let (position, hash) = head(&app).await;
    let (ok, report) = verify(&["--expect-head", &format!("{position}:{hash}")], &url);
    assert!(ok, "{report}");
    assert_eq!(report["head"]["position"], position);
    assert_eq!(report["head"]["hash"], hash);
    // A head recorded earlier is still in the chain after more appends.
    app.create(&app.tenant.key, json!({"name": "later"})).await;
    let (ok, report) = verify(&["--expect-head", &format!("{position}:{hash}")], &url);
    assert!(ok, "{report}");
    assert_eq!(report["head"]["position"], position + 1);
}

/// `events/head` is the server's latest link, the last event it lists; another server's later
/// events do not move it, and `verify --expect-head` accepts it.
async fn the_chain_head_of_a_server_is_its_last_event_and_verify_accepts_it(db: TestDb) {
    let app = spawn_app(&db).await;
    app.create(&app.tenant.key, json!({"name": "Mine"})).await;
    let other = app.new_tenant("Other").await;
    app.create(&other.key, json!({"name": "Theirs"})).await;
    let answer = app.post("/api/v1/events/head", Some(&app.tenant.key), &json!({})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let link = answer.data().clone();
    let listed = app.post("/api/v1/events/list", Some(&app.tenant.key), &json!({"limit": 1000})).await;
    let last = listed.data()["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&link["position"], &link["hash"], &link["recorded_at"]),
        (&last["position"], &last["hash"], &last["recorded_at"])
    );
    assert!(link["position"].as_i64().unwrap() < app.log_head().await.0, "another server appended after it");
    let expect = format!("{}:{}", link["position"], link["hash"].as_str().unwrap());
    let (ok, report) = verify(&["--expect-head", &expect], db.url());
    assert!(ok, "{report}");
}

async fn a_changed_payload_is_found_at_its_position(db: TestDb) {
    let app = spawn_app(&db).await;
    some_history(&app).await;
    let rename = match app.raw {
        Raw::Postgres(_) => "UPDATE events SET payload = jsonb_set(payload, '{name}', '\"Evil\"') WHERE position = 3",
        Raw::Sqlite(_) => "UPDATE events SET payload = json_set(payload, '$.name', 'Evil') WHERE position = 3",
    };
    app.raw.tamper(&[rename]).await;
    let (ok, report) = verify(&[], db.url());
    assert!(!ok);
    assert_eq!(report["first_bad_position"], 3, "{report}");
    assert!(report["problem"].as_str().unwrap().contains("changed"), "{report}");
}

async fn a_deleted_event_is_found_at_its_position(db: TestDb) {
    let app = spawn_app(&db).await;
    some_history(&app).await;
    app.raw.tamper(&["DELETE FROM events WHERE position = 3"]).await;
    let (ok, report) = verify(&[], db.url());
    assert!(!ok);
    assert_eq!(report["first_bad_position"], 3, "{report}");
}

async fn two_swapped_events_are_found_at_the_first_of_them(db: TestDb) {
    let app = spawn_app(&db).await;
    some_history(&app).await;
    app.raw.tamper(&SWAP_3_AND_4).await;
    let (ok, report) = verify(&[], db.url());
    assert!(!ok);
    assert_eq!(report["first_bad_position"], 3, "{report}");
}

async fn a_truncated_tail_is_found_against_a_recorded_head(db: TestDb) {
    let app = spawn_app(&db).await;
    some_history(&app).await;
    let (position, hash) = head(&app).await;
    // Position 6 ends the rotation begun at 5: a prefix a commit could have left.
    app.raw.tamper(&["DELETE FROM events WHERE position > 6"]).await;
    let url = db.url().to_owned();
    let (ok, _) = verify(&[], &url);
    assert!(ok, "a consistent prefix verifies by itself: only a recorded head shows what is missing");
    let (ok, report) = verify(&["--expect-head", &format!("{position}:{hash}")], &url);
    assert!(!ok);
    assert_eq!(report["first_bad_position"], 7, "{report}");
    assert!(report["problem"].as_str().unwrap().contains("truncated"), "{report}");
}

fn export(url: &str, dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let output = run_ledger(&[&["export", "--output", path.to_str().unwrap()], extra].concat(), url);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    path
}

fn rewrite(path: &Path, name: &str, edit: impl FnOnce(&mut Vec<String>)) -> PathBuf {
    let mut lines: Vec<String> = std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect();
    edit(&mut lines);
    let tampered = path.with_file_name(name);
    std::fs::write(&tampered, lines.join("\n") + "\n").unwrap();
    tampered
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("credential-ledger-audit-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn an_export_verifies_offline_and_every_tampering_of_it_is_found(db: TestDb) {
    let app = spawn_app(&db).await;
    some_history(&app).await;
    let url = db.url().to_owned();
    let dir = scratch_dir();
    let file = export(&url, &dir, "ledger.jsonl", &[]);
    let (position, hash) = head(&app).await;
    let expect = format!("{position}:{hash}");
    // Offline: a database URL that leads nowhere must not matter.
    let offline = "postgres://nobody@127.0.0.1:1/none";
    let (ok, report) = verify(&["--file", file.to_str().unwrap(), "--expect-head", &expect], offline);
    assert!(ok, "{report}");
    assert_eq!(report["head"]["position"], position);

    let changed = rewrite(&file, "changed.jsonl", |lines| {
        lines[2] = lines[2].replace("\"Rotated\"", "\"Evil\"");
    });
    let deleted = rewrite(&file, "deleted.jsonl", |lines| {
        lines.remove(2);
    });
    let swapped = rewrite(&file, "swapped.jsonl", |lines| {
        let (third, fourth) = (lines[2].clone(), lines[3].clone());
        let third: Value = serde_json::from_str(&third).unwrap();
        let mut fourth: Value = serde_json::from_str(&fourth).unwrap();
        let mut third = third;
        // Swap their places in the log, keeping each position where it was.
        std::mem::swap(&mut third["position"], &mut fourth["position"]);
        lines[2] = fourth.to_string();
        lines[3] = third.to_string();
    });
    let truncated = rewrite(&file, "truncated.jsonl", |lines| lines.truncate(5));
    for (tampered, bad_position, args) in [
        (&changed, 3, vec![]),
        (&deleted, 3, vec![]),
        (&swapped, 3, vec![]),
        (&truncated, 6, vec!["--expect-head", expect.as_str()]),
    ] {
        let (ok, report) = verify(&[&["--file", tampered.to_str().unwrap()], args.as_slice()].concat(), offline);
        assert!(!ok, "{}: {report}", tampered.display());
        assert_eq!(report["first_bad_position"], bad_position, "{}: {report}", tampered.display());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Recomputes every `prev_hash` and `hash` of an export's lines, as a forger who rewrote the
/// whole chain would: only the ledger's own rules can then tell what is wrong.
fn rechain(lines: &mut [String]) {
    let mut prev = GENESIS_HASH;
    for line in lines.iter_mut() {
        let mut record: Value = serde_json::from_str(line).unwrap();
        let field = |name: &str| record[name].as_str().unwrap().parse::<uuid::Uuid>().unwrap();
        let link = ChainLink {
            position: record["position"].as_i64().unwrap(),
            stream_id: field("stream_id"),
            stream_version: record["stream_version"].as_i64().unwrap() as i32,
            event_id: field("event_id"),
            event_type: record["event_type"].as_str().unwrap(),
            schema_version: record["schema_version"].as_i64().unwrap() as i32,
            server_uuid: field("server_uuid"),
            payload: &record["payload"],
            metadata: &record["metadata"],
            recorded_at: record["recorded_at"].as_str().unwrap().parse().unwrap(),
        };
        let hash = chain_hash(&prev, &link);
        record["prev_hash"] = json!(hex::encode(prev));
        record["hash"] = json!(hex::encode(hash));
        prev = hash;
        *line = record.to_string();
    }
}

/// Sequences `decide` never produces are refused even with every hash recomputed to match.
async fn verify_refuses_histories_the_service_could_not_have_written(db: TestDb) {
    let app = spawn_app(&db).await;
    let other = some_history(&app).await;
    let url = db.url().to_owned();
    let dir = scratch_dir();
    let file = export(&url, &dir, "ledger.jsonl", &[]);
    let lines: Vec<Value> =
        std::fs::read_to_string(&file).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    // Position 6 locks the rotated API credential; position 8 revokes "Revoked".
    let rotated_uuid = lines[5]["stream_id"].clone();
    let forged = |name: &str, edit: &dyn Fn(&mut Vec<String>)| {
        rewrite(&file, name, |lines| {
            edit(lines);
            rechain(lines);
        })
    };
    let edit_line = |lines: &mut Vec<String>, index: usize, change: &dyn Fn(&mut Value)| {
        let mut record: Value = serde_json::from_str(&lines[index]).unwrap();
        change(&mut record);
        lines[index] = record.to_string();
    };
    let second_lock = forged("second-lock.jsonl", &|lines| {
        let mut again: Value = serde_json::from_str(&lines[7]).unwrap();
        again["position"] = json!(9);
        again["stream_version"] = json!(3);
        again["event_id"] = json!(uuid::Uuid::new_v4());
        lines.push(again.to_string());
    });
    let other_server = other.server_uuid.to_string();
    let moved_lock = forged("moved-lock.jsonl", &|lines| {
        edit_line(lines, 7, &|record| record["server_uuid"] = json!(other_server));
    });
    let after_own_lock = forged("after-own-lock.jsonl", &|lines| {
        let mut created: Value = serde_json::from_str(&lines[6]).unwrap();
        let last: Value = serde_json::from_str(&lines[7]).unwrap();
        created["recorded_at"] = last["recorded_at"].clone();
        created["position"] = json!(9);
        created["stream_id"] = json!(uuid::Uuid::new_v4());
        created["event_id"] = json!(uuid::Uuid::new_v4());
        created["payload"]["credential_id"] = json!(7);
        created["metadata"]["actor"] = json!({"kind": "credential", "uuid": rotated_uuid});
        lines.push(created.to_string());
    });
    let offline = "postgres://nobody@127.0.0.1:1/none";
    let (ok, report) = verify(&["--file", forged("rechained.jsonl", &|_| {}).to_str().unwrap()], offline);
    assert!(ok, "rechaining alone changes nothing: {report}");
    for (forgery, position, problem) in [
        (&second_lock, 9, "locked again"),
        (&moved_lock, 8, "server_uuid"),
        (&after_own_lock, 9, "not a live API credential"),
    ] {
        let (ok, report) = verify(&["--file", forgery.to_str().unwrap()], offline);
        assert!(!ok, "{}: {report}", forgery.display());
        assert_eq!(report["first_bad_position"], position, "{}: {report}", forgery.display());
        assert!(report["problem"].as_str().unwrap().contains(problem), "{}: {report}", forgery.display());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

fn replay(file: &Path, extra: &[&str]) -> Vec<Value> {
    let output = run_ledger(&[&["replay", "--file", file.to_str().unwrap()], extra].concat(), "postgres://nowhere");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let view: Value = serde_json::from_slice(&output.stdout).unwrap();
    view.as_array().unwrap().clone()
}

fn live_view(listed: &Value) -> Vec<Value> {
    without_usage(listed)
}

async fn a_replayed_export_gives_the_live_view_and_a_one_server_slice_verifies_against_the_chain(db: TestDb) {
    let app = spawn_app(&db).await;
    let other = some_history(&app).await;
    let url = db.url().to_owned();
    let dir = scratch_dir();
    let whole = export(&url, &dir, "ledger.jsonl", &[]);
    let mine = live_view(app.list(&app.tenant.key).await.data());
    let theirs = live_view(app.list(&other.key).await.data());
    let strip_server = |rows: Vec<Value>| -> Vec<Value> {
        rows.into_iter()
            .map(|mut row| {
                row.as_object_mut().unwrap().remove("server_uuid");
                row
            })
            .collect()
    };
    let server = app.tenant.server_uuid.to_string();
    assert_eq!(strip_server(replay(&whole, &["--server", &server])), mine);
    assert_eq!(strip_server(replay(&whole, &["--server", &other.server_uuid.to_string()])), theirs);
    assert_eq!(replay(&whole, &[]).len(), mine.len() + theirs.len());
    let first_event_time = app.events().await[0].recorded_at;
    let as_of = first_event_time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    assert_eq!(replay(&whole, &["--as-of", &as_of]).len(), 1, "as of the first event, one credential");

    // A server the ledger does not know is an error, and no file is written.
    let unknown = dir.join("unknown.jsonl");
    let refused = run_ledger(
        &["export", "--output", unknown.to_str().unwrap(), "--server", "6f1c9a0e-2b7d-4e55-9a3c-0d4b8e1f2a35"],
        &url,
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no server 6f1c9a0e-2b7d-4e55-9a3c-0d4b8e1f2a35"));
    assert!(!unknown.exists(), "nothing is written for an unknown server");

    // One server's slice: its events in full, the others' as chain links only.
    let slice = export(&url, &dir, "mine.jsonl", &["--server", &server]);
    let text = std::fs::read_to_string(&slice).unwrap();
    assert!(text.contains("\"record\":\"gap\""));
    // Every instant as the chain hashes it: six fractional digits, always.
    for line in text.lines().filter(|line| line.contains("\"record\":\"event\"")) {
        let recorded_at = serde_json::from_str::<Value>(line).unwrap()["recorded_at"].as_str().unwrap().to_owned();
        assert!(recorded_at.len() == 27 && recorded_at.ends_with('Z'), "{recorded_at}");
    }
    assert!(!text.contains("Theirs"), "another server's data is not in the slice");
    let (position, hash) = head(&app).await;
    let (ok, report) =
        verify(&["--file", slice.to_str().unwrap(), "--expect-head", &format!("{position}:{hash}")], &url);
    assert!(ok, "{report}");
    assert!(report["head"]["linked_only"].as_u64().unwrap() > 0);
    assert_eq!(strip_server(replay(&slice, &[])), mine);
    let forged = rewrite(&slice, "forged.jsonl", |lines| {
        let index = lines.iter().position(|line| line.contains("\"Revoked\"")).unwrap();
        lines[index] = lines[index].replace("\"Revoked\"", "\"Innocent\"");
    });
    let (ok, _) = verify(&["--file", forged.to_str().unwrap()], &url);
    assert!(!ok, "a changed event of the slice is found");
    std::fs::remove_dir_all(dir).unwrap();
}

credential_ledger_test_support::on_both_backends!(
    history_lists_a_credentials_events_in_order_with_their_actors,
    paging_through_events_returns_each_of_the_servers_events_once_in_order,
    the_view_as_of_any_event_equals_the_live_view_right_after_it,
    an_untouched_ledger_verifies_and_reports_its_head,
    the_chain_head_of_a_server_is_its_last_event_and_verify_accepts_it,
    a_changed_payload_is_found_at_its_position,
    a_deleted_event_is_found_at_its_position,
    two_swapped_events_are_found_at_the_first_of_them,
    a_truncated_tail_is_found_against_a_recorded_head,
    an_export_verifies_offline_and_every_tampering_of_it_is_found,
    verify_refuses_histories_the_service_could_not_have_written,
    a_replayed_export_gives_the_live_view_and_a_one_server_slice_verifies_against_the_chain,
);
