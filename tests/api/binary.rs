//! The `credential-ledger` binary itself, run as a user would.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{run_ledger, spawn_app, ChildGuard};
use credential_ledger_test_support::backend::TestDb;

async fn server_create_prints_one_json_object_with_a_working_key(db: TestDb) {
    let app = spawn_app(&db).await;
    let output = run_ledger(&["server", "create", "--name", "Initech"], db.url());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed["server"]["name"], "Initech");
    let credential = &printed["credential"];
    let mut fields: Vec<&String> = credential.as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(fields, ["hold", "id", "key", "name", "type", "uuid"]);
    assert_eq!(credential["type"], "API");
    assert_eq!(credential["hold"], false);

    let key = credential["key"].as_str().unwrap();
    let listed = app.list(key).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.data()[0]["uuid"], credential["uuid"]);
    let metadata: Value = serde_json::from_str(&app.events().await.last().unwrap().metadata).unwrap();
    assert_eq!(metadata["actor"]["kind"], "cli");
}

async fn server_create_refuses_a_blank_name_and_writes_nothing(db: TestDb) {
    let app = spawn_app(&db).await;
    let head = app.log_head().await;
    let output = run_ledger(&["server", "create", "--name", "   "], db.url());
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert_eq!(app.log_head().await, head);
}

async fn projections_rebuild_leaves_the_same_view(db: TestDb) {
    let app = spawn_app(&db).await;
    let made = app.create_api_key(&app.tenant.key, "To rotate").await;
    app.regenerate(&app.tenant.key, made["uuid"].as_str().unwrap()).await;
    let live = app.view().await;
    let output = run_ledger(&["projections", "rebuild"], db.url());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["events"], 4);
    assert_eq!(report["credentials"], 3);
    assert_eq!(app.view().await, live);
}

/// What cannot be opened stops the binary with one line on standard error and exit code 1,
/// before anything is created (no server needed).
#[test]
fn a_ledger_that_cannot_be_opened_is_one_line_and_exit_code_one() {
    let directory = std::env::temp_dir().join(format!("credential-ledger-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&directory).unwrap();
    let not_sqlite = directory.join("notes.txt");
    std::fs::write(&not_sqlite, "not a database").unwrap();
    let cases = [
        ("mysql://admin:hunter2@127.0.0.1/ledger".to_owned(), "unsupported scheme \"mysql\""),
        (format!("sqlite://{}", not_sqlite.display()), "is not a SQLite database"),
        ("sqlite:///proc/credential-ledger/nowhere/ledger.db".to_owned(), "cannot open the ledger at"),
        // Port 1 on loopback: nothing listens there.
        ("postgres://postgres@127.0.0.1:1/ledger".to_owned(), "Connection refused"),
    ];
    for (url, expected) in cases {
        let output = run_ledger(&["migrate"], &url);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{url}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{url}: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(expected), "{url}: {stderr}");
        assert!(!stderr.contains("hunter2"));
        assert_eq!(stderr.matches(expected).count(), 1, "each cause is said once: {stderr}");
    }
    assert_eq!(std::fs::read_to_string(&not_sqlite).unwrap(), "not a database");
    assert_eq!(std::fs::read_dir(&directory).unwrap().count(), 1, "nothing was created beside it");
    std::fs::remove_dir_all(&directory).unwrap();
}

/// Reading commands do not create a ledger where there is none: `verify` cannot check (exit 3)
/// and `export` fails (exit 1), each with one line, and no file appears.
#[test]
fn verify_and_export_of_a_missing_ledger_create_nothing() {
    let directory = std::env::temp_dir().join(format!("credential-ledger-missing-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&directory).unwrap();
    let url = format!("sqlite://{}", directory.join("ledger.db").display());
    for (args, code) in [(&["verify"][..], 3), (&["export"][..], 1)] {
        let output = run_ledger(args, &url);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains("there is no ledger at"), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(output.stdout.is_empty());
    }
    assert_eq!(std::fs::read_dir(&directory).unwrap().count(), 0, "nothing was created");
    std::fs::remove_dir_all(&directory).unwrap();
}

/// RabbitMQ needs PostgreSQL, and the relay needs RabbitMQ: each refusal is one line and exit 1,
/// before anything is opened or created (a broker on a closed port: nothing may try to reach it,
/// and its password is never repeated).
#[test]
fn rabbitmq_on_an_embedded_ledger_and_a_relay_without_a_broker_are_refused() {
    let path = std::env::temp_dir().join(format!("credential-ledger-serve-{}.db", uuid::Uuid::new_v4()));
    let url = format!("sqlite://{}", path.display());
    let broker = ["--amqp-url", "amqp://guest:hunter2@127.0.0.1:1/%2f"];
    for (args, expected) in [
        (
            &[&["serve", "--listen-addr", "127.0.0.1:0"][..], &broker[..]].concat(),
            "AMQP_URL needs a postgres:// DATABASE_URL",
        ),
        (&[&["webhook-worker"][..], &broker[..]].concat(), "AMQP_URL needs a postgres:// DATABASE_URL"),
        (&vec!["relay"], "nothing to relay to: set AMQP_URL"),
    ] {
        let output = run_ledger(args, &url);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
        let left: Vec<&str> = ["", "-wal", "-shm"]
            .into_iter()
            .filter(|suffix| std::path::Path::new(&format!("{}{suffix}", path.display())).exists())
            .collect();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        assert!(left.is_empty(), "{args:?} created {left:?}");
    }
}

/// Logs written to a file or a pipe carry no terminal colour codes.
async fn logs_to_a_file_have_no_colour_codes(db: TestDb) {
    let output = std::process::Command::new(crate::helpers::ledger_binary())
        .arg("migrate")
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "info")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("database is up to date"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "no escape sequences: {stderr:?}");
}

/// The long runs draw progress on a terminal only: to a pipe, `export`, `import` and
/// `projections rebuild` write their own lines and nothing else (no bar, no carriage return).
async fn long_runs_draw_no_progress_into_a_pipe(db: TestDb) {
    let app = spawn_app(&db).await;
    app.create_api_key(&app.tenant.key, "Exported").await;
    let directory = std::env::temp_dir().join(format!("credential-ledger-progress-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&directory).unwrap();
    let backup = directory.join("backup.jsonl");
    let target = format!("sqlite://{}", directory.join("imported.db").display());
    let runs: [(&[&str], &str); 3] = [
        (&["export", "--backup", "--output", backup.to_str().unwrap()], db.url()),
        (&["import", "--file", backup.to_str().unwrap()], &target),
        (&["projections", "rebuild"], db.url()),
    ];
    for (args, url) in runs {
        let output = run_ledger(args, url);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{args:?}: {stderr}");
        assert!(!stderr.contains('\r') && !stderr.contains('\u{1b}') && !stderr.contains("=>"), "{args:?}: {stderr:?}");
    }
    // At a terminal (util-linux's `script` gives the run one), the same export draws its bar.
    let command = format!(
        "{} export --output {}",
        crate::helpers::ledger_binary().display(),
        directory.join("again.jsonl").display()
    );
    let at_terminal = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("DATABASE_URL", db.url())
        .output();
    let at_terminal = at_terminal.expect("script runs");
    assert!(at_terminal.status.success());
    assert!(String::from_utf8_lossy(&at_terminal.stdout).contains("exporting ["), "a terminal sees the progress");
    std::fs::remove_dir_all(&directory).unwrap();
}

credential_ledger_test_support::on_both_backends!(
    logs_to_a_file_have_no_colour_codes,
    long_runs_draw_no_progress_into_a_pipe,
    server_create_prints_one_json_object_with_a_working_key,
    server_create_refuses_a_blank_name_and_writes_nothing,
    projections_rebuild_leaves_the_same_view,
);

/// Two `serve` processes on one ledger, on either backend: a key made on one works at once on
/// the other, and a key revoked on one is refused at once by the other. On SQLite the file's
/// locks, not a process's memory, keep them in step, so a second instance is allowed.
async fn two_processes_on_one_ledger_agree_on_every_key(db: TestDb) {
    let provisioned = run_ledger(&["server", "create", "--name", "Shared"], db.url());
    assert!(provisioned.status.success(), "{}", String::from_utf8_lossy(&provisioned.stderr));
    let key =
        serde_json::from_slice::<Value>(&provisioned.stdout).unwrap()["credential"]["key"].as_str().unwrap().to_owned();
    let (first, _first) = serve_process(db.url()).await;
    let (second, _second) = serve_process(db.url()).await;
    let client = reqwest::Client::new();
    let call = |base: &str, path: &str, key: &str, body: Value| {
        let request = client.post(format!("{base}/api/v1/credentials/{path}")).header("X-Server-API-Key", key);
        async move { crate::helpers::answer(request.json(&body).send().await.unwrap()).await }
    };
    let made = call(&first, "create", &key, serde_json::json!({"name": "Made on the first", "type": "API"})).await;
    let made_key = made.data()["key"].as_str().unwrap().to_owned();
    assert_eq!(call(&second, "list", &made_key, serde_json::json!({})).await.status, StatusCode::OK);
    let uuid = made.data()["uuid"].clone();
    assert_eq!(call(&second, "revoke", &key, serde_json::json!({ "uuid": uuid })).await.status, StatusCode::OK);
    let refused = call(&first, "list", &made_key, serde_json::json!({})).await;
    assert_eq!((refused.status, refused.error_code()), (StatusCode::UNAUTHORIZED, "invalid_api_key"));
    let (verified, report) = crate::helpers::verify_database(db.url());
    assert!(verified, "{report}");
}

/// `serve` on `database_url` on a free port, ready: its base URL and the process.
async fn serve_process(database_url: &str) -> (String, ChildGuard) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = std::process::Command::new(crate::helpers::ledger_binary())
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("NO_RELAY", "true")
        .env("NO_WEBHOOKS", "true")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve starts");
    let base = format!("http://127.0.0.1:{port}");
    let guard = ChildGuard(child);
    crate::helpers::wait_until("serve to become ready", std::time::Duration::from_secs(30), || async {
        let ready = reqwest::get(format!("{base}/readyz")).await;
        ready.is_ok_and(|response| response.status().is_success()).then_some(())
    })
    .await;
    (base, guard)
}

credential_ledger_test_support::on_both_backends!(two_processes_on_one_ledger_agree_on_every_key);

/// A webhook worker (a process that serves no API) answers its probes and metrics on
/// `OPS_ADDR`: live, ready while its database answers, and metrics in the classic text format.
async fn a_webhook_worker_answers_its_probes_on_ops_addr(db: TestDb) {
    let migrated = run_ledger(&["migrate"], db.url());
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _worker = ChildGuard(
        std::process::Command::new(crate::helpers::ledger_binary())
            .arg("webhook-worker")
            .env("DATABASE_URL", db.url())
            .env("OPS_ADDR", format!("127.0.0.1:{port}"))
            .env_remove("AMQP_URL")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the worker starts"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let ready = crate::helpers::wait_until("the worker's /readyz", std::time::Duration::from_secs(30), || async {
        let answer = reqwest::get(format!("{base}/readyz")).await.ok()?;
        answer.status().is_success().then_some(answer)
    })
    .await;
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["data"]["role"], "webhook-worker");
    assert_eq!(ready["data"]["database"], "up");
    let live = reqwest::get(format!("{base}/livez")).await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let exposition = metrics.text().await.unwrap();
    assert!(exposition.contains("credential_ledger_webhook_attempt_duration_seconds_count 0"), "{exposition}");
    let unknown = reqwest::get(format!("{base}/api/v1/credentials/list")).await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND, "the worker serves no API");
}

credential_ledger_test_support::on_both_backends!(a_webhook_worker_answers_its_probes_on_ops_addr);
