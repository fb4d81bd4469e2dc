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

credential_ledger_test_support::on_both_backends!(
    after_a_random_history_of_100000_commands_every_replica_answers_as_the_view
);
