//! The subcommands of the `credential-ledger` binary.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::app::provision::provision_server;
use crate::audit::{self, ExpectedHead, ExportRecord, Replay, Verifier};
use crate::bus::{self, Relay};
use crate::config::{
    CliCommand, DatabaseArgs, EventsCommand, ProjectionsCommand, RelayArgs, ServeArgs, ServerCommand, WebhookWorkerArgs,
};
use crate::domain::{CredentialName, ServerName};
use crate::startup::{shutdown_signal, Application};
use crate::store::Store;
use crate::webhooks::WebhookWorker;

pub async fn run(command: CliCommand) -> anyhow::Result<()> {
    match command {
        CliCommand::Serve(args) => serve(args).await,
        CliCommand::Migrate(database) => {
            Store::open(&database.settings()).await?.prepare().await?;
            tracing::info!("database is up to date");
            Ok(())
        }
        CliCommand::Server(ServerCommand::Create { name, credential_name, database }) => {
            let name = ServerName::parse(&name).context("--name")?;
            let credential_name = CredentialName::parse(&credential_name).context("--credential-name")?;
            let store = Store::open(&database.settings()).await?;
            store.prepare().await?;
            let provisioned = provision_server(&store, &name, credential_name).await?;
            let credential = &provisioned.credential;
            let answer = json!({
                "server": {"uuid": provisioned.server_uuid, "name": name.as_str()},
                "credential": {
                    "id": credential.id,
                    "uuid": credential.uuid,
                    "name": credential.name.as_str(),
                    "type": credential.credential_type,
                    "hold": credential.hold,
                    "key": provisioned.key.expose_secret(),
                },
            });
            println!("{answer}");
            Ok(())
        }
        CliCommand::Projections(ProjectionsCommand::Rebuild(database)) => {
            let store = Store::open(&database.settings()).await?;
            store.prepare().await?;
            let started = std::time::Instant::now();
            let report = store.rebuild_projections().await?;
            let elapsed = started.elapsed();
            println!(
                "{}",
                json!({
                    "events": report.events,
                    "credentials": report.credentials,
                    "position": report.position,
                    "seconds": elapsed.as_secs_f64(),
                })
            );
            Ok(())
        }
        CliCommand::Relay(args) => relay(args).await,
        CliCommand::WebhookWorker(args) => webhook_worker(args).await,
        CliCommand::Export { server, output, database } => export(server, output, database).await,
        CliCommand::Verify { file, expect_head, database } => verify(file, expect_head, database).await,
        CliCommand::Replay { file, as_of, server } => replay(&file, as_of, server),
        CliCommand::Events(EventsCommand::Tail { bus, binding_key, limit }) => {
            bus::tail(&bus.settings(), &binding_key, limit).await?;
            Ok(())
        }
    }
}

async fn relay(args: RelayArgs) -> anyhow::Result<()> {
    let store = Store::open(&args.database.settings()).await.context("opening the ledger")?;
    store.prepare().await?;
    let postgres = store.postgres().context("the relay to RabbitMQ needs PostgreSQL")?;
    let stop = CancellationToken::new();
    let relay = tokio::spawn(Relay::new(postgres.pool().clone(), args.relay.settings(&args.bus)).run(stop.clone()));
    shutdown_signal().await;
    stop.cancel();
    relay.await?;
    Ok(())
}

async fn export(server: Option<Uuid>, output: Option<PathBuf>, database: DatabaseArgs) -> anyhow::Result<()> {
    let store = Store::open(&database.settings()).await.context("opening the ledger")?;
    store.prepare().await?;
    let mut out: Box<dyn Write> = match &output {
        Some(path) => {
            Box::new(BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?))
        }
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let mut records = 0u64;
    let mut head = None;
    audit::export_records(&store, server, |record| {
        head = Some(record.last_position());
        serde_json::to_writer(&mut out, &record)?;
        out.write_all(b"\n")?;
        records += 1;
        Ok(())
    })
    .await?;
    out.flush()?;
    tracing::info!(records, head = head.unwrap_or(0), "exported");
    Ok(())
}

async fn verify(
    file: Option<PathBuf>,
    expect_head: Option<ExpectedHead>,
    database: DatabaseArgs,
) -> anyhow::Result<()> {
    let mut verifier = Verifier::new(expect_head);
    let checked = match &file {
        Some(path) => read_export(path, |record| verifier.push(&record).map_err(anyhow::Error::from)),
        None => {
            let store = Store::open(&database.settings()).await.context("opening the ledger")?;
            audit::export_records(&store, None, |record| Ok(verifier.push(&record)?)).await.map_err(|error| match error
            {
                audit::ExportError::Verification(failure) => anyhow::Error::from(failure),
                other => anyhow::Error::from(other),
            })
        }
    };
    let outcome = checked.and_then(|()| verifier.finish().map_err(anyhow::Error::from));
    match outcome {
        Ok(head) => {
            println!("{}", json!({"verified": true, "head": head}));
            Ok(())
        }
        Err(error) => match error.downcast::<audit::Failure>() {
            Ok(failure) => {
                println!(
                    "{}",
                    json!({"verified": false, "first_bad_position": failure.position, "problem": failure.problem})
                );
                Err(anyhow::anyhow!("verification failed at {failure}"))
            }
            Err(other) => Err(other),
        },
    }
}

fn replay(file: &Path, as_of: Option<chrono::DateTime<chrono::Utc>>, server: Option<Uuid>) -> anyhow::Result<()> {
    let mut replay = Replay::new(as_of, server);
    read_export(file, |record| {
        if let ExportRecord::Event(event) = record {
            replay.push(&event)?;
        }
        Ok(())
    })?;
    let view: Vec<_> = replay
        .finish()
        .into_iter()
        .map(|credential| {
            json!({
                "id": credential.id,
                "uuid": credential.uuid,
                "server_uuid": credential.server_uuid,
                "name": credential.name.as_str(),
                "type": credential.credential_type,
                "hold": credential.hold,
            })
        })
        .collect();
    println!("{}", serde_json::Value::Array(view));
    Ok(())
}

/// Feeds each record of an export file to `each`, naming the line of anything unreadable.
fn read_export(path: &Path, mut each: impl FnMut(ExportRecord) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading line {}", number + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: ExportRecord =
            serde_json::from_str(&line).with_context(|| format!("line {} is not an export record", number + 1))?;
        each(record)?;
    }
    Ok(())
}

async fn webhook_worker(args: WebhookWorkerArgs) -> anyhow::Result<()> {
    let store = Store::open(&args.database.settings()).await.context("opening the ledger")?;
    store.prepare().await?;
    let worker = WebhookWorker::new(store, args.webhooks.settings(&args.bus))?;
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    shutdown_signal().await;
    stop.cancel();
    running.await?;
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let store = Store::open(&args.database.settings()).await.context("opening the ledger")?;
    let ledger = store.backend();
    let application = Application::build(store, args.settings()).await?;
    tracing::info!(address = %application.local_addr()?, ledger, "serving");
    application.run_until(shutdown_signal()).await
}
