//! The embedded ledger against a real SQLite file (no server needed).

use futures::future::join_all;
use sqlx::Executor;

use super::temp::TempLedger;
use super::*;
use crate::app::provision::provision_server;
use crate::app::replica::Replica;
use crate::app::writer::Writer;
use crate::audit::{export_records, Verifier};
use crate::domain::{
    handle, Actor, ApiKey, Command, CredentialName, CredentialType, EventMetadata, GracePeriod, KeyMaterial, Outcome,
    ServerName,
};
use crate::store::{NewEvent, Store};

fn cli() -> EventMetadata {
    EventMetadata { actor: Actor::Cli, request_id: None, source_ip: None }
}

#[tokio::test]
async fn every_statement_prepares() {
    let ledger = TempLedger::new();
    let store = ledger.store().await;
    let mut connection = store.pool.acquire().await.unwrap();
    for statement in sql::ALL {
        connection.prepare(statement).await.unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
}

/// The same commands as on PostgreSQL give a chain `verify` accepts, and a rebuild gives back
/// the view the appends kept.
#[tokio::test]
async fn a_ledger_on_sqlite_verifies_and_rebuilds_to_its_live_view() {
    let ledger = TempLedger::new();
    let store = Store::Sqlite(ledger.store().await);
    let name = ServerName::parse("Acme").unwrap();
    let server = provision_server(&store, &name, CredentialName::parse("First").unwrap()).await.unwrap();
    let replica = Replica::load(store.clone()).await.unwrap();
    let (writer, _task) = Writer::spawn(store.clone(), replica.clone());
    let mut created = Vec::new();
    for n in 0..5 {
        let command = Command::Create {
            server_uuid: server.server_uuid,
            credential_uuid: Uuid::new_v4(),
            name: CredentialName::parse(&format!("Key {n}")).unwrap(),
            credential_type: CredentialType::Api,
            hold: false,
            key: KeyMaterial::from(&ApiKey::generate(&mut rand::thread_rng())),
            expires_at: None,
        };
        let Outcome::Created(credential) = writer.execute(command, cli()).await.unwrap() else { panic!() };
        created.push(credential);
    }
    let revoke = Command::Revoke { server_uuid: server.server_uuid, credential_uuid: created[0].uuid };
    writer.execute(revoke, cli()).await.unwrap();
    let rotate = Command::Regenerate {
        server_uuid: server.server_uuid,
        credential_uuid: created[1].uuid,
        new_credential_uuid: Uuid::new_v4(),
        new_key: KeyMaterial::from(&ApiKey::generate(&mut rand::thread_rng())),
        grace: GracePeriod::NONE,
    };
    writer.execute(rotate, cli()).await.unwrap();
    assert_eq!(store.head_position().await.unwrap(), 1 + 5 + 1 + 2);

    let mut verifier = Verifier::new(None);
    export_records(&store, None, |record| Ok(verifier.push(&record)?)).await.unwrap();
    let head = verifier.finish().unwrap();
    assert_eq!((head.position, head.events), (9, 9));

    let view = |store: Store| async move {
        let mut credentials = Vec::new();
        store.view_snapshot(|_| {}, |credential| credentials.push(credential)).await.unwrap();
        credentials.sort_by_key(|credential| credential.id);
        credentials
    };
    let live = view(store.clone()).await;
    assert_eq!(live.len(), 7);
    assert!(live[1].hold && live[2].hold, "the revoked and the rotated credential are held");
    let report = store.rebuild_projections().await.unwrap();
    assert_eq!((report.events, report.credentials, report.position), (9, 7, 9));
    assert_eq!(view(store.clone()).await, live);
    let fresh = Replica::load(store).await.unwrap();
    assert_eq!(
        fresh.authenticate(&server.key.hash(), chrono::Utc::now()).map(|caller| caller.credential_uuid),
        Some(server.credential.uuid)
    );
}

#[tokio::test]
async fn the_log_refuses_updates_and_deletes() {
    let ledger = TempLedger::new();
    let store = ledger.store().await;
    let name = ServerName::parse("Acme").unwrap();
    provision_server(&Store::Sqlite(store.clone()), &name, CredentialName::parse("First").unwrap()).await.unwrap();
    for statement in ["UPDATE events SET event_type = 'Forged'", "DELETE FROM events"] {
        let error = sqlx::query(statement).execute(&store.writer).await.unwrap_err();
        assert!(error.to_string().contains("the event log is append-only"), "{statement}: {error}");
    }
    assert_eq!(store.head_position().await.unwrap(), 1);
    assert_eq!(store.events_after(0, 10).await.unwrap().len(), 1);
}

/// Two handles on one file, as two processes would have: of fifty concurrent rotations of one
/// credential, exactly one is appended, and positions stay gap-free.
#[tokio::test]
async fn of_fifty_concurrent_rotations_across_two_handles_exactly_one_wins() {
    let ledger = TempLedger::new();
    let first = Store::Sqlite(ledger.store().await);
    let second = Store::Sqlite(ledger.store().await);
    let name = ServerName::parse("Acme").unwrap();
    let server = provision_server(&first, &name, CredentialName::parse("First").unwrap()).await.unwrap();
    let target = server.credential.uuid;
    let rotations = (0..50).map(|n| {
        let store = if n % 2 == 0 { first.clone() } else { second.clone() };
        async move {
            let command = Command::Regenerate {
                server_uuid: server.server_uuid,
                credential_uuid: target,
                new_credential_uuid: Uuid::new_v4(),
                new_key: KeyMaterial::from(&ApiKey::generate(&mut rand::thread_rng())),
                grace: GracePeriod::NONE,
            };
            let metadata = cli();
            let appended = store
                .append(None, &[target], |ledger, now| match handle(ledger, &command, &Actor::Cli, now) {
                    Ok(handled) => Decision {
                        servers: Vec::new(),
                        events: handled
                            .events
                            .into_iter()
                            .map(|pending| NewEvent { pending, metadata: &metadata })
                            .collect(),
                        value: true,
                    },
                    Err(_) => Decision { servers: Vec::new(), events: Vec::new(), value: false },
                })
                .await
                .unwrap();
            appended.value
        }
    });
    let won = join_all(rotations).await.into_iter().filter(|won| *won).count();
    assert_eq!(won, 1);
    let events = first.events_after(0, 100).await.unwrap();
    let positions: Vec<i64> = events.iter().map(|event| event.position).collect();
    assert_eq!(positions, [1, 2, 3], "the provision, then one rotation's two events");
}

/// Each refusal is one clear error, and leaves the file as it found it.
#[tokio::test]
async fn files_that_are_not_ledgers_are_refused_untouched() {
    let not_sqlite = TempLedger::new();
    std::fs::write(&not_sqlite.path, b"a text file, not a database").unwrap();
    let refused = SqliteStore::open(&not_sqlite.settings()).await.unwrap_err();
    assert!(matches!(refused, StoreError::NotALedger(_)), "{refused}");
    assert_eq!(std::fs::read(&not_sqlite.path).unwrap(), b"a text file, not a database");

    let foreign = TempLedger::new();
    {
        use sqlx::ConnectOptions;
        let options = SqliteConnectOptions::from_str(&foreign.settings().url).unwrap().create_if_missing(true);
        let mut connection = options.connect().await.unwrap();
        sqlx::query("CREATE TABLE notes (body TEXT)").execute(&mut connection).await.unwrap();
    }
    let before = std::fs::read(&foreign.path).unwrap();
    let refused = SqliteStore::open(&foreign.settings()).await.unwrap_err();
    assert!(matches!(refused, StoreError::ForeignDatabase { application_id: 0, .. }), "{refused}");
    assert_eq!(std::fs::read(&foreign.path).unwrap(), before, "not a byte changed");

    let unwritable = DatabaseSettings::new("sqlite:///proc/credential-ledger/nowhere/ledger.db");
    let refused = SqliteStore::open(&unwritable).await.unwrap_err();
    assert!(matches!(refused, StoreError::CannotOpen { .. }), "{refused}");

    let refused = Store::open(&DatabaseSettings::new("mysql://admin:hunter2@127.0.0.1/ledger")).await.unwrap_err();
    assert!(matches!(&refused, StoreError::UnsupportedUrl(scheme) if scheme == "mysql"), "{refused}");
    assert!(!refused.to_string().contains("hunter2"), "the URL's password is not repeated: {refused}");
}

/// A new file becomes a ledger, marked as one; reopened, it is recognised.
#[tokio::test]
async fn a_new_ledger_is_marked_and_recognised() {
    let ledger = TempLedger::new();
    drop(ledger.store().await);
    let header = std::fs::read(&ledger.path).unwrap();
    assert_eq!(&header[68..72], b"CLDG");
    let reopened = ledger.store().await;
    assert_eq!(reopened.head_position().await.unwrap(), 0);
}

#[tokio::test]
async fn a_ledger_from_a_newer_build_is_refused() {
    let ledger = TempLedger::new();
    let store = ledger.store().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999, 'from the future', 1, x'00', 0)",
    )
    .execute(&store.writer)
    .await
    .unwrap();
    let refused = Store::Sqlite(store).prepare().await.unwrap_err();
    assert!(matches!(refused, StoreError::NewerSchema(999)), "{refused}");
}

/// Commits reach the file itself within moments: the background checkpointer copies the
/// write-ahead log (the writer's own checkpoint waits for 16,384 pages).
#[tokio::test]
async fn the_background_checkpointer_moves_commits_into_the_file() {
    let ledger = TempLedger::new();
    let store = ledger.store().await;
    let size = || std::fs::metadata(&ledger.path).unwrap().len();
    tokio::time::sleep(CHECKPOINT_INTERVAL * 3).await;
    let before = size();
    let store = Store::Sqlite(store);
    for n in 0..50 {
        let name = ServerName::parse(&format!("Server {n}")).unwrap();
        provision_server(&store, &name, CredentialName::parse("First").unwrap()).await.unwrap();
    }
    let started = std::time::Instant::now();
    while size() <= before {
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "the file stays at {before} bytes");
        tokio::time::sleep(CHECKPOINT_INTERVAL).await;
    }
}
