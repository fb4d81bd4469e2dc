//! Moving a ledger (`export --backup`, `import`) and watching one without RabbitMQ
//! (`events tail` on the log itself), through the binary as an operator runs them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{ledger_binary, spawn_app, ChildGuard, TestApp};
use credential_ledger_test_support::backend::{skip_without_postgres, TestDb};

/// The binary on `database_url`, with no RabbitMQ configured whatever the environment says.
fn ledger(args: &[&str], database_url: &str) -> Command {
    let mut command = Command::new(ledger_binary());
    command.args(args).env("DATABASE_URL", database_url).env("RUST_LOG", "warn").env_remove("AMQP_URL");
    command
}

fn run(args: &[&str], database_url: &str) -> Output {
    ledger(args, database_url).output().expect("the binary runs")
}

fn stdout_json(output: &Output) -> Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

/// A directory of its own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("credential-ledger-portability-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Keys a move must keep working, or keep refused.
struct History {
    live_keys: Vec<String>,
    dead_keys: Vec<String>,
}

/// Two tenants, a rotation and a revocation on `app`; deadlines too: a grace rotation whose
/// lock is recorded, one still in its grace period, and a key with an expiry an hour out.
async fn some_history(app: &TestApp) -> History {
    let key = app.tenant.key.clone();
    let rotated = app.create_api_key(&key, "To rotate").await;
    let rotation = app.regenerate(&key, rotated["uuid"].as_str().unwrap()).await;
    assert_eq!(rotation.status, StatusCode::OK, "{}", rotation.body);
    let revoked = app.create_api_key(&key, "To revoke").await;
    assert_eq!(app.revoke(&key, revoked["uuid"].as_str().unwrap()).await.status, StatusCode::OK);
    let other = app.new_tenant("Globex").await;

    let ended = app.create_api_key(&key, "Grace ended").await;
    let in_grace = app.create_api_key(&key, "In grace").await;
    let mut grace_keys = Vec::new();
    for (credential, seconds) in [(&ended, 1), (&in_grace, 3600)] {
        let body = serde_json::json!({"uuid": credential["uuid"], "grace_period": seconds});
        let answer = app.post(crate::helpers::REGENERATE, Some(&key), &body).await;
        grace_keys.push(answer.data()["key"].as_str().unwrap().to_owned());
    }
    let expiry = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let expiring = app.create(&key, serde_json::json!({"name": "Expiring", "type": "API", "expires_at": expiry})).await;
    let ended_uuid = ended["uuid"].as_str().unwrap().parse::<uuid::Uuid>().unwrap();
    crate::helpers::wait_until("the ended grace period's lock", std::time::Duration::from_secs(5), || async {
        let events = app.events().await;
        events.iter().any(|event| event.stream_id == ended_uuid && event.schema_version == 2).then_some(())
    })
    .await;
    History {
        live_keys: vec![
            key,
            rotation.data()["key"].as_str().unwrap().to_owned(),
            other.key,
            in_grace["key"].as_str().unwrap().to_owned(),
            expiring.data()["key"].as_str().unwrap().to_owned(),
        ]
        .into_iter()
        .chain(grace_keys)
        .collect(),
        dead_keys: vec![
            rotated["key"].as_str().unwrap().to_owned(),
            revoked["key"].as_str().unwrap().to_owned(),
            ended["key"].as_str().unwrap().to_owned(),
        ],
    }
}

fn backup(url: &str, file: &Path) {
    let output = run(&["export", "--backup", "--output", file.to_str().unwrap()], url);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

fn head_of(report: &Value) -> String {
    format!("{}:{}", report["head"]["position"], report["head"]["hash"].as_str().unwrap())
}

/// A ledger with history, backed up and imported into `target`: the same head (and the same
/// plain export, byte for byte), and every key as it was, against a service on the target.
async fn a_backup_moves_with_its_head_and_keys(target: TestDb) {
    let source = TestDb::sqlite().await;
    let mut app = spawn_app(&source).await;
    let history = some_history(&app).await;
    app.stop().await;
    let scratch = Scratch::new();
    let file = scratch.path("backup.jsonl");
    backup(source.url(), &file);
    let verified = stdout_json(&run(&["verify"], source.url()));

    // The backup itself verifies offline, and says what the chain does not cover.
    let offline = stdout_json(&run(&["verify", "--file", file.to_str().unwrap()], source.url()));
    assert_eq!(offline["head"], verified["head"]);
    assert_eq!(offline["not_covered_by_the_chain"]["servers"], 2, "{offline}");
    // A plain export stays what it was: no records, no secrets.
    let plain = run(&["export"], source.url());
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("\"record\":\"server\""));

    let imported = stdout_json(&run(&["import", "--file", file.to_str().unwrap()], target.url()));
    assert_eq!(imported["imported"], true);
    assert_eq!(imported["head"], verified["head"], "{imported}");
    assert_eq!(imported["servers"], 2);
    let expect_head = head_of(&verified);
    let on_target = stdout_json(&run(&["verify", "--expect-head", &expect_head], target.url()));
    assert_eq!(on_target["head"], verified["head"]);
    assert_eq!(run(&["export"], target.url()).stdout, plain.stdout, "the log moved byte for byte");

    let target_app = spawn_app(&target).await;
    for key in &history.live_keys {
        assert_eq!(target_app.list(key).await.status, StatusCode::OK, "a live key works after the move");
    }
    for key in &history.dead_keys {
        assert_eq!(target_app.list(key).await.status, StatusCode::UNAUTHORIZED, "a locked key stays refused");
    }
    let servers = target.store().await.backup_servers().await.unwrap();
    let mut names: Vec<&str> = servers.iter().map(|server| server.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["Acme Mail", "Acme Mail", "Globex"], "the two moved, and the target's own test tenant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_moves_from_sqlite_to_sqlite_with_its_head_and_keys() {
    a_backup_moves_with_its_head_and_keys(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_moves_from_sqlite_to_postgres_with_its_head_and_keys() {
    match TestDb::postgres().await {
        Some(target) => a_backup_moves_with_its_head_and_keys(target).await,
        None => skip_without_postgres(),
    }
}

/// `path` with one line changed by `edit`.
fn rewrite(path: &Path, to: &Path, edit: impl FnOnce(&mut Vec<String>)) {
    let mut lines: Vec<String> = std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect();
    edit(&mut lines);
    std::fs::write(to, lines.join("\n") + "\n").unwrap();
}

/// The import of `file` into a new ledger file: refused in one line, exit code 1, and the
/// file it would have created is not there, nor SQLite's files beside it.
fn assert_refused_and_nothing_left(file: &Path, expected: &str) {
    let target = Scratch::new();
    let url = format!("sqlite://{}", target.path("ledger.db").display());
    let output = run(&["import", "--file", file.to_str().unwrap()], &url);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}: {stderr}", file.display());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(expected) && stderr.contains("nothing was written"), "{expected}: {stderr}");
    assert!(!stderr.contains("whsec_"));
    assert!(output.stdout.is_empty());
    assert_eq!(target.files(), Vec::<String>::new(), "{}: no file left behind", file.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_truncated_or_plain_export_is_refused_and_leaves_no_file() {
    let source = TestDb::sqlite().await;
    let mut app = spawn_app(&source).await;
    some_history(&app).await;
    app.stop().await;
    let scratch = Scratch::new();
    let file = scratch.path("backup.jsonl");
    backup(source.url(), &file);

    let tampered = scratch.path("tampered.jsonl");
    rewrite(&file, &tampered, |lines| {
        let at = lines.iter().position(|line| line.contains("\"position\":3,")).unwrap();
        lines[at] = lines[at].replace("To rotate", "To steal");
    });
    assert_refused_and_nothing_left(&tampered, "position 3");

    let truncated = scratch.path("truncated.jsonl");
    rewrite(&file, &truncated, |lines| {
        let last = lines.pop().unwrap();
        lines.push(last[..last.len() / 2].to_owned());
    });
    assert_refused_and_nothing_left(&truncated, "is not an export record");

    let plain = scratch.path("plain.jsonl");
    let output = run(&["export", "--output", plain.to_str().unwrap()], source.url());
    assert!(output.status.success());
    assert_refused_and_nothing_left(&plain, "not a --backup export");

    let output = run(&["export", "--backup", "--server", &app.tenant.server_uuid.to_string()], source.url());
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot be combined with --server"));
}

/// A ledger that holds anything is refused as a target, and keeps its head.
async fn a_target_that_is_not_empty_is_refused(target: TestDb) {
    let source = TestDb::sqlite().await;
    let mut app = spawn_app(&source).await;
    app.stop().await;
    let scratch = Scratch::new();
    let file = scratch.path("backup.jsonl");
    backup(source.url(), &file);
    let made = run(&["server", "create", "--name", "Already here"], target.url());
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let before = stdout_json(&run(&["verify"], target.url()));

    let output = run(&["import", "--file", file.to_str().unwrap()], target.url());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not empty"), "{stderr}");
    assert_eq!(stdout_json(&run(&["verify"], target.url()))["head"], before["head"]);
    assert_eq!(target.store().await.backup_servers().await.unwrap().len(), 1);
}

credential_ledger_test_support::on_both_backends!(a_target_that_is_not_empty_is_refused);

/// Reads `count` lines from a running tail, or fails after a while.
fn read_lines(child: &mut ChildGuard, count: usize) -> Vec<Value> {
    let stdout = child.0.stdout.take().expect("a piped stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    (0..count)
        .map(|n| {
            let line = receiver
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("line {} of {count} from events tail", n + 1));
            serde_json::from_str(&line).expect("a JSON line")
        })
        .collect()
}

/// `events tail` without RabbitMQ follows the log: started before a revoke and a rotation, it
/// prints their events as the broker tail prints messages, and `--binding-key` filters them as
/// a topic exchange would.
async fn events_tail_follows_the_log_without_rabbitmq(db: TestDb) {
    let app = spawn_app(&db).await;
    let from = (app.log_head().await.0 + 1).to_string();
    let tail = |binding: &str, limit: &str| {
        let args = ["events", "tail", "--from-position", &from, "--binding-key", binding, "--limit", limit];
        ChildGuard(ledger(&args, db.url()).stdout(Stdio::piped()).spawn().expect("events tail starts"))
    };
    let mut everything_tail = tail("#", "3");
    let mut locks_tail = tail("*.locked", "2");
    // Running before the events exist: they reach the tails by polling or notification.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let key = app.tenant.key.clone();
    let revoked = app.create_api_key(&key, "To revoke").await;
    let rotated = app.create_api_key(&key, "To rotate").await;
    app.revoke(&key, revoked["uuid"].as_str().unwrap()).await;
    let rotation = app.regenerate(&key, rotated["uuid"].as_str().unwrap()).await;

    let lines = read_lines(&mut everything_tail, 3);
    let routing: Vec<&str> = lines.iter().map(|line| line["routing_key"].as_str().unwrap()).collect();
    assert_eq!(routing, ["credential.created", "credential.created", "credential.locked"]);
    let locks = read_lines(&mut locks_tail, 2);
    let reasons: Vec<&str> = locks.iter().map(|line| line["body"]["data"]["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["revoked", "rotated"]);
    assert_eq!(locks[0]["body"]["stream_id"], revoked["uuid"]);
    assert_eq!(locks[1]["body"]["data"]["replaced_by"], rotation.data()["new_uuid"]);

    let events = app.events().await;
    for line in lines.iter().chain(&locks) {
        let position = line["body"]["position"].as_i64().unwrap();
        let event = events.iter().find(|event| event.position == position).unwrap();
        let mut fields: Vec<&String> = line.as_object().unwrap().keys().collect();
        fields.sort();
        assert_eq!(fields, ["body", "headers", "message_id", "redelivered", "routing_key", "timestamp", "type"]);
        assert_eq!(line["message_id"], event.event_id.to_string());
        assert_eq!(line["type"], event.event_type);
        assert_eq!(line["timestamp"], event.recorded_at.timestamp());
        assert_eq!(line["redelivered"], false);
        assert_eq!(line["headers"]["position"], position);
        assert_eq!(line["headers"]["server_uuid"], app.tenant.server_uuid.to_string());
        assert_eq!(line["headers"]["schema_version"], event.schema_version);
        assert_eq!(line["body"]["schema_version"], event.schema_version);
        let mut body: Vec<&String> = line["body"].as_object().unwrap().keys().collect();
        body.sort();
        assert_eq!(body, credential_ledger_test_support::bus::MESSAGE_BODY_FIELDS);
    }
    for mut child in [everything_tail, locks_tail] {
        let status = child.0.wait().unwrap();
        assert!(status.success(), "events tail stops by itself after --limit");
    }
}

credential_ledger_test_support::on_both_backends!(events_tail_follows_the_log_without_rabbitmq);

/// PostgreSQL to PostgreSQL and to a new SQLite file, with a webhook endpoint: its secret moves
/// too, and only in the backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_endpoints_move_with_their_secrets() {
    let (Some(source), Some(target)) = (TestDb::postgres().await, TestDb::postgres().await) else {
        return skip_without_postgres();
    };
    let mut settings = crate::helpers::test_settings();
    settings.webhooks.allow_private = true;
    let mut app = crate::helpers::spawn_app_with(&source, settings).await;
    let body = serde_json::json!({"url": "http://127.0.0.1:9/hook", "description": "billing"});
    let created = app.post("/api/v1/webhooks/create", Some(&app.tenant.key.clone()), &body).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let secret = created.data()["secret"].as_str().unwrap().to_owned();
    some_history(&app).await;
    app.stop().await;
    let scratch = Scratch::new();
    let file = scratch.path("backup.jsonl");
    backup(source.url(), &file);
    assert!(std::fs::read_to_string(&file).unwrap().contains(&secret));
    assert!(!String::from_utf8_lossy(&run(&["export"], source.url()).stdout).contains(&secret));

    let embedded = Scratch::new();
    let embedded_url = format!("sqlite://{}", embedded.path("ledger.db").display());
    let into_sqlite = stdout_json(&run(&["import", "--file", file.to_str().unwrap()], &embedded_url));
    assert_eq!(into_sqlite["webhook_endpoints"], 1);
    let settings = credential_ledger::store::DatabaseSettings::new(&embedded_url);
    let embedded_store = credential_ledger::store::Store::open(&settings).await.unwrap();
    let on_sqlite = embedded_store.backup_endpoints().await.unwrap();
    embedded_store.close().await;
    assert_eq!(on_sqlite, source.store().await.backup_endpoints().await.unwrap());

    let imported = stdout_json(&run(&["import", "--file", file.to_str().unwrap()], target.url()));
    assert_eq!(imported["webhook_endpoints"], 1);
    let moved = target.store().await.backup_endpoints().await.unwrap();
    assert_eq!(moved, source.store().await.backup_endpoints().await.unwrap());
    assert_eq!(moved[0].secret, secret);
    assert_eq!(stdout_json(&run(&["verify"], target.url()))["head"], imported["head"]);
}
