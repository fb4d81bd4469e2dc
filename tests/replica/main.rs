//! The compact in-memory replica against the credential view it mirrors, at scale: after a random
//! history of 100,000 commands across twenty servers, every replica answers every key lookup and
//! every server's list exactly as the view does, whichever way it got there: fed by its own
//! writer's commits, following the log, or loaded from the view.
//!
//! A test binary of its own: its half minute of both cores runs beside no other test.

use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, Utc};
use credential_ledger::app::provision::provision_server;
use credential_ledger::app::replica::{Replica, ReplicaCredential};
use credential_ledger::app::writer::Writer;
use credential_ledger::domain::{
    Actor, ApiKey, Caller, Command, Credential, CredentialName, CredentialType, EventMetadata, ExpiresAt, GracePeriod,
    KeyMaterial, Outcome, ServerName,
};
use credential_ledger_test_support::backend::{view_of, TestDb};
use futures::future::join_all;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

const COMMANDS: usize = 100_000;
/// Commands sent to the writer at once: its group commit takes them in batches.
const ROUND: usize = 500;
const SERVERS: usize = 20;
/// Pages of a size that divides no server's count, so the last page of each is partial.
const PAGE: usize = 97;

fn random_command(rng: &mut impl Rng, servers: &[Uuid], credentials: &[(Uuid, Uuid)]) -> (Command, Actor) {
    let (server_uuid, credential_uuid) = credentials[rng.gen_range(0..credentials.len())];
    let key = || KeyMaterial::from(&ApiKey::generate(&mut rand::thread_rng()));
    match rng.gen_range(0..10) {
        0..=5 => {
            // Some expire while the history runs, without their lock being recorded (no
            // scheduler runs here): the replica must refuse them from the instant itself.
            let expires_at = rng.gen_bool(0.3).then(|| {
                let at = Utc::now() + Duration::milliseconds(rng.gen_range(5..20_000));
                ExpiresAt::at(at, Utc::now()).expect("a future instant")
            });
            let command = Command::Create {
                server_uuid: servers[rng.gen_range(0..servers.len())],
                credential_uuid: Uuid::new_v4(),
                name: CredentialName::parse(&format!("Credential {}", rng.gen::<u32>())).expect("a name"),
                credential_type: if rng.gen_bool(0.5) { CredentialType::Api } else { CredentialType::Smtp },
                hold: rng.gen_bool(0.05),
                key: key(),
                expires_at,
            };
            (command, Actor::Cli)
        }
        6 | 7 => {
            let grace = GracePeriod::from_seconds(if rng.gen_bool(0.5) { 0 } else { rng.gen_range(1..30) })
                .expect("a grace period");
            let new_credential_uuid = Uuid::new_v4();
            (
                Command::Regenerate { server_uuid, credential_uuid, new_credential_uuid, new_key: key(), grace },
                Actor::Cli,
            )
        }
        8 => (Command::Revoke { server_uuid, credential_uuid }, Actor::Cli),
        _ => (Command::LockDue { server_uuid, credential_uuid }, Actor::Deadline),
    }
}

/// What the view says a key may do at `now`, asked of `replica`.
fn assert_answers_as_the_view(replica: &Replica, view: &[Credential], servers: &[Uuid], how: &str) {
    let now = Utc::now();
    for credential in view {
        let usable = !credential.held_at(now);
        let other_type = match credential.credential_type {
            CredentialType::Api => CredentialType::Smtp,
            CredentialType::Smtp => CredentialType::Api,
        };
        assert_eq!(
            replica.usable(&credential.key_hash, credential.credential_type, now),
            usable.then(|| ReplicaCredential::from(credential.clone())),
            "{how}: the key of {} ({credential:?})",
            credential.uuid
        );
        assert_eq!(
            replica.usable(&credential.key_hash, other_type, now),
            None,
            "{how}: {} as the other type",
            credential.uuid
        );
        let caller = Caller { credential_uuid: credential.uuid, server_uuid: credential.server_uuid };
        assert_eq!(
            replica.authenticate(&credential.key_hash, now),
            (usable && credential.credential_type == CredentialType::Api).then_some(caller),
            "{how}: authentication with the key of {}",
            credential.uuid
        );
    }
    for _ in 0..1000 {
        let never_issued = ApiKey::generate(&mut rand::thread_rng()).hash();
        assert_eq!(replica.authenticate(&never_issued, now), None, "{how}: a key never issued");
    }
    for server in servers {
        let of_server: Vec<ReplicaCredential> = view
            .iter()
            .filter(|credential| credential.server_uuid == *server)
            .map(|credential| ReplicaCredential::from(credential.clone()))
            .collect();
        let listed = replica.list(*server);
        assert_eq!(listed, of_server, "{how}: the list of server {server}");
        assert_eq!(replica.credential_count(*server), of_server.len(), "{how}: the count of server {server}");
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = replica.list_page(*server, after, PAGE);
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            paged.extend(page);
        }
        assert_eq!(paged, listed, "{how}: the pages of server {server}");
    }
    let pending = view.iter().filter(|credential| credential.pending_deadline().is_some()).count();
    assert_eq!(replica.pending_deadlines(), pending, "{how}: the deadlines still to be recorded");
    assert!(replica.list(Uuid::new_v4()).is_empty(), "{how}: a server with no credentials");
}

async fn after_a_random_history_of_100000_commands_every_replica_answers_as_the_view(db: TestDb) {
    let store = db.store().await;
    let mut servers = Vec::new();
    let mut credentials = Vec::new();
    for index in 0..SERVERS {
        let name = ServerName::parse(&format!("Server {index}")).unwrap();
        let provisioned = provision_server(&store, &name, CredentialName::parse("First").unwrap()).await.unwrap();
        servers.push(provisioned.server_uuid);
        credentials.push((provisioned.server_uuid, provisioned.credential.uuid));
    }
    let following = Replica::load(store.clone()).await.unwrap();
    let written = Replica::load(store.clone()).await.unwrap();
    let (writer, _task) = Writer::spawn(store.clone(), written.clone());
    let writer = Arc::new(writer);
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261207);
    let mut accepted = 0;
    for round in 0..COMMANDS / ROUND {
        let commands: Vec<_> = (0..ROUND).map(|_| random_command(&mut rng, &servers, &credentials)).collect();
        let outcomes = join_all(commands.into_iter().map(|(command, actor)| {
            let writer = writer.clone();
            async move { writer.execute(command, EventMetadata { actor, request_id: None, source_ip: None }).await }
        }))
        .await;
        for outcome in outcomes {
            match outcome {
                Ok(Outcome::Created(created)) => credentials.push((created.server_uuid, created.uuid)),
                Ok(Outcome::Rotated { new, .. }) => credentials.push((new.server_uuid, new.uuid)),
                Ok(_) => {}
                // Revoking a held credential, rotating one twice: refused, appending nothing.
                Err(_) => continue,
            }
            accepted += 1;
        }
        if round % 7 == 0 {
            following.sync(Instant::now()).await.unwrap();
        }
    }
    following.sync(Instant::now()).await.unwrap();
    written.sync(Instant::now()).await.unwrap();
    let view = view_of(&store).await;
    assert!(accepted > COMMANDS / 2, "most commands appended something ({accepted})");
    assert!(view.len() > COMMANDS / 2, "{} credentials", view.len());
    let now = Utc::now();
    assert!(view.iter().any(|credential| credential.hold), "some are held");
    assert!(view.iter().any(|credential| credential.replaced_by.is_some()), "some are in a grace rotation");
    assert!(
        view.iter().any(|credential| !credential.hold && credential.expires_at.is_some_and(|at| at <= now)),
        "some are past their deadline with no lock recorded"
    );
    assert!(
        view.iter().any(|credential| credential.pending_deadline().is_some_and(|at| at > now)),
        "some deadlines are ahead"
    );

    assert_answers_as_the_view(&written, &view, &servers, "fed by its writer");
    assert_answers_as_the_view(&following, &view, &servers, "following the log");
    let loaded = Replica::load(store.clone()).await.unwrap();
    assert_answers_as_the_view(&loaded, &view, &servers, "loaded from the view");
}

fn create(server_uuid: Uuid, name: &str) -> (Command, ApiKey) {
    let key = ApiKey::generate(&mut rand::thread_rng());
    let command = Command::Create {
        server_uuid,
        credential_uuid: Uuid::new_v4(),
        name: CredentialName::parse(name).unwrap(),
        credential_type: CredentialType::Api,
        hold: false,
        key: KeyMaterial::from(&key),
        expires_at: None,
    };
    (command, key)
}

fn cli() -> EventMetadata {
    EventMetadata { actor: Actor::Cli, request_id: None, source_ip: None }
}

/// The name a replica gives the server's first credential, whose view row the test changed: the
/// view's when the replica loaded the view, the log's when it started from its snapshot.
fn first_name(replica: &Replica, server_uuid: Uuid) -> String {
    replica.list(server_uuid)[0].name.clone()
}

/// A replica starts from its snapshot file when the log holds the event the snapshot names, and
/// catches up with what was appended since; a snapshot changed by a byte, or of another ledger,
/// is set aside and the view is loaded.
async fn a_replica_starts_from_its_snapshot_only_when_the_log_vouches_for_it(db: TestDb) {
    let store = db.store().await;
    let server = provision_server(&store, &ServerName::parse("Acme").unwrap(), CredentialName::parse("First").unwrap())
        .await
        .unwrap();
    let replica = Replica::load(store.clone()).await.unwrap();
    let (writer, _task) = Writer::spawn(store.clone(), replica.clone());
    let mut keys = Vec::new();
    for index in 0..20 {
        let (command, key) = create(server.server_uuid, &format!("Credential {index}"));
        let Outcome::Created(created) = writer.execute(command, cli()).await.unwrap() else { panic!("a create") };
        keys.push((created.uuid, key));
    }
    let directory = std::env::temp_dir().join(format!("credential-ledger-snapshot-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("ledger.replica");
    replica.write_snapshot(path.clone()).await.unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "readable by its owner only");
    }

    // After the snapshot, another instance revokes one key and creates another.
    let other = Replica::load(store.clone()).await.unwrap();
    let (other_writer, _other_task) = Writer::spawn(store.clone(), other.clone());
    let (revoked_uuid, revoked_key) = &keys[3];
    other_writer
        .execute(Command::Revoke { server_uuid: server.server_uuid, credential_uuid: *revoked_uuid }, cli())
        .await
        .unwrap();
    let (command, new_key) = create(server.server_uuid, "Created after the snapshot");
    other_writer.execute(command, cli()).await.unwrap();
    // Only the view can say otherwise than the log: which one a replica answers from shows.
    let raw = db.raw().await;
    assert_eq!(raw.execute("UPDATE credentials SET name = 'Not from the log' WHERE id = 1").await.unwrap(), 1);

    let started = Replica::load_with_snapshot(store.clone(), Some(&path)).await.unwrap();
    assert_eq!(first_name(&started, server.server_uuid), "First", "started from the snapshot");
    let now = Utc::now();
    assert_eq!(started.authenticate(&revoked_key.hash(), now), None, "the revoke made since the snapshot is in it");
    assert!(started.authenticate(&new_key.hash(), now).is_some(), "and the create");
    assert!(started.authenticate(&keys[4].1.hash(), now).is_some());
    assert_eq!(started.credential_count(server.server_uuid), 22);
    assert_eq!(started.position(), other.position());

    let torn = directory.join("torn.replica");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&torn, &bytes).unwrap();
    let from_view = Replica::load_with_snapshot(store.clone(), Some(&torn)).await.unwrap();
    assert_eq!(first_name(&from_view, server.server_uuid), "Not from the log", "a changed byte: the view");
    assert_eq!(from_view.authenticate(&revoked_key.hash(), now), None);

    let elsewhere_db = if db.is_postgres() { TestDb::postgres().await.unwrap() } else { TestDb::sqlite().await };
    let elsewhere = elsewhere_db.store().await;
    for name in ["Other", "Another"] {
        provision_server(&elsewhere, &ServerName::parse(name).unwrap(), CredentialName::parse("First").unwrap())
            .await
            .unwrap();
    }
    let foreign = directory.join("foreign.replica");
    Replica::load(elsewhere).await.unwrap().write_snapshot(foreign.clone()).await.unwrap();
    let from_view = Replica::load_with_snapshot(store.clone(), Some(&foreign)).await.unwrap();
    assert_eq!(first_name(&from_view, server.server_uuid), "Not from the log", "another ledger's: the view");

    let missing = Replica::load_with_snapshot(store.clone(), Some(&directory.join("missing.replica"))).await.unwrap();
    assert_eq!(first_name(&missing, server.server_uuid), "Not from the log", "none: the view");
    std::fs::remove_dir_all(&directory).unwrap();
}

credential_ledger_test_support::on_both_backends!(
    after_a_random_history_of_100000_commands_every_replica_answers_as_the_view,
    a_replica_starts_from_its_snapshot_only_when_the_log_vouches_for_it,
);
