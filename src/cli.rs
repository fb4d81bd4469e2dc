//! The subcommands of the `credential-ledger` binary.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::app::provision::provision_server;
use crate::audit::{self, ExpectedHead, ExportRecord, Replay, Verifier};
use crate::bus::BusSettings;
use crate::bus::{self, Relay};
use crate::config::{
    CliCommand, DatabaseArgs, EventsCommand, OpsArgs, ProjectionsCommand, RelayArgs, ServeArgs, ServerCommand,
    TailArgs, WebhookWorkerArgs,
};
use crate::domain::{CredentialName, ServerName};
use crate::http::{role_router, RelayHandle};
use crate::progress;
use crate::startup::{shutdown_signal, Application};
use crate::store::Store;
use crate::webhooks::{DeliveryMode, Dispatcher, WebhookWorker};

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
            let spinner = progress::spinner("rebuilding the projections");
            let report = store.rebuild_projections().await;
            spinner.finish_and_clear();
            let report = report?;
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
        CliCommand::Export { server, output, backup, database } => export(server, output, backup, database).await,
        CliCommand::Import { file, expect_head, database } => import(&file, expect_head, database).await,
        CliCommand::Verify { file, expect_head, database } => verify(file, expect_head, database).await,
        CliCommand::Replay { file, as_of, server } => replay(&file, as_of, server),
        CliCommand::Events(EventsCommand::Tail(args)) => tail(args).await,
    }
}

async fn relay(args: RelayArgs) -> anyhow::Result<()> {
    let Some(bus) = args.bus.settings() else { anyhow::bail!("nothing to relay to: set AMQP_URL") };
    args.database.check_broker(&args.bus)?;
    let store = Store::open(&args.database.settings()).await.context("opening the ledger")?;
    store.prepare().await?;
    let postgres = store.postgres().context("AMQP_URL needs a postgres:// DATABASE_URL")?;
    let stop = CancellationToken::new();
    let exchange = bus.exchange.clone();
    let relay = Relay::new(postgres.pool().clone(), args.relay.settings(bus));
    let handle = RelayHandle { exchange, status: relay.status() };
    let ops = serve_ops(&args.ops, role_router("relay", store.clone(), Some(handle), OPS_TIMEOUT), &stop).await?;
    tokio::spawn(crate::metrics::probe_wake_delay(stop.clone()));
    let relay = tokio::spawn(relay.run(stop.clone()));
    shutdown_signal().await;
    stop.cancel();
    relay.await?;
    if let Some(ops) = ops {
        ops.await?;
    }
    Ok(())
}

/// With a RabbitMQ URL, a queue on the exchange; without one, the log itself.
async fn tail(args: TailArgs) -> anyhow::Result<()> {
    match &args.amqp_url {
        Some(url) => {
            if args.from_position.is_some() {
                anyhow::bail!(
                    "--from-position reads the log, and a RabbitMQ queue holds only what is published after it \
                     is bound: leave AMQP_URL unset to tail the log"
                );
            }
            let settings = BusSettings { url: url.clone(), exchange: args.amqp_exchange.clone() };
            bus::tail(&settings, &args.binding_key, args.limit).await?;
        }
        None => {
            let settings = args.database.settings();
            // Watching must not create a ledger where there was none.
            if let Some(path) = ledger_file(&settings.url).filter(|path| !path.exists()) {
                anyhow::bail!("there is no ledger at {}", path.display());
            }
            let store = Store::open(&settings).await.context("opening the ledger")?;
            let after = args.from_position.map(|position| position.max(1) - 1);
            bus::tail_log(&store, &args.binding_key, after, args.limit).await?;
        }
    }
    Ok(())
}

async fn export(
    server: Option<Uuid>,
    output: Option<PathBuf>,
    backup: bool,
    database: DatabaseArgs,
) -> anyhow::Result<()> {
    if backup && server.is_some() {
        anyhow::bail!("--backup exports the whole ledger: it cannot be combined with --server");
    }
    let settings = database.settings();
    if let Some(path) = ledger_file(&settings.url).filter(|path| !path.exists()) {
        anyhow::bail!("there is no ledger at {}", path.display());
    }
    let store = Store::open(&settings).await.context("opening the ledger")?;
    store.prepare().await?;
    // Checked before the output file is created: a mistyped uuid must not leave a slice of
    // nothing but chain links that looks like an answer.
    if let Some(server) = server {
        if !store.backup_servers().await?.iter().any(|known| known.uuid == server) {
            anyhow::bail!("no server {server} in this ledger");
        }
    }
    let mut out: Box<dyn Write> = match &output {
        Some(path) => {
            Box::new(BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?))
        }
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let mut records = 0u64;
    let mut head = None;
    let bar = progress::bar(u64::try_from(store.head_position().await?).unwrap_or(0), "exporting", "events");
    let sink = |record: ExportRecord| {
        head = record.last_position().or(head);
        if let Some(position) = record.last_position() {
            bar.set_position(u64::try_from(position).unwrap_or(0));
        }
        serde_json::to_writer(&mut out, &record)?;
        out.write_all(b"\n")?;
        records += 1;
        Ok(())
    };
    match backup {
        true => audit::export_backup(&store, sink).await?,
        false => audit::export_records(&store, server, sink).await?,
    }
    out.flush()?;
    bar.finish_and_clear();
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
            async {
                let settings = database.settings();
                // Checking must not create a ledger where there was none.
                if let Some(path) = ledger_file(&settings.url).filter(|path| !path.exists()) {
                    anyhow::bail!("there is no ledger at {}", path.display());
                }
                let store = Store::open(&settings).await.context("opening the ledger")?;
                audit::export_records(&store, None, |record| Ok(verifier.push(&record)?)).await.map_err(|error| {
                    match error {
                        audit::ExportError::Verification(failure) => anyhow::Error::from(failure),
                        other => anyhow::Error::from(other),
                    }
                })
            }
            .await
        }
    };
    let not_covered = verifier.not_covered();
    let outcome = checked.and_then(|()| verifier.finish().map_err(anyhow::Error::from));
    match outcome {
        Ok(head) => {
            let mut report = json!({"verified": true, "head": head});
            // A backup's servers and endpoints: read, and said to be outside the chain.
            if !not_covered.is_empty() {
                report["not_covered_by_the_chain"] = json!(not_covered);
            }
            println!("{report}");
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
            Err(other) => Err(other.context(CouldNotCheck)),
        },
    }
}

/// `verify` could not check: its file or its database could not be read. The process exits with
/// 3, apart from a check that ran and failed (1) and from arguments clap refused (2).
#[derive(Debug, thiserror::Error)]
#[error("could not check the ledger")]
pub struct CouldNotCheck;

fn replay(file: &Path, as_of: Option<chrono::DateTime<chrono::Utc>>, server: Option<Uuid>) -> anyhow::Result<()> {
    let mut replay = Replay::new(as_of, server);
    let mut not_covered = audit::NotCovered::default();
    read_export(file, |record| {
        if let ExportRecord::Event(event) = &record {
            replay.push(event)?;
        }
        not_covered.count(&record);
        Ok(())
    })?;
    if !not_covered.is_empty() {
        tracing::info!(
            servers = not_covered.servers,
            webhook_endpoints = not_covered.webhook_endpoints,
            "skipped the backup's records that the chain does not cover"
        );
    }
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
                // At `--as-of`, a deadline that had passed holds the credential, as `list`
                // shows it; without it, the fold as recorded (a pending deadline stays pending).
                "hold": as_of.map_or(credential.hold, |as_of| credential.held_at(as_of)),
                "expires_at": credential.expires_at.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
                "replaced_by": credential.replaced_by,
            })
        })
        .collect();
    println!("{}", serde_json::Value::Array(view));
    Ok(())
}

/// Verifies the whole file first, then opens the ledger (creating it if it does not exist) and
/// writes it there in one transaction. A failure leaves nothing behind: not a row, and not the
/// SQLite file if this command created it.
async fn import(file: &Path, expect_head: Option<ExpectedHead>, database: DatabaseArgs) -> anyhow::Result<()> {
    let size = std::fs::metadata(file).map_or(0, |metadata| metadata.len());
    let bar = progress::bar(size, "verifying", "bytes");
    let verified = audit::read_import(file, expect_head, |read| bar.inc(read));
    bar.finish_and_clear();
    let verified = verified.map_err(|error| anyhow::anyhow!("import refused: {error}; nothing was written"))?;
    let settings = database.settings();
    let created = ledger_file(&settings.url).filter(|path| !path.exists());
    let written = async {
        let store = Store::open(&settings).await.context("opening the ledger")?;
        let spinner = progress::spinner("writing the ledger");
        let imported = async {
            store.prepare().await?;
            store.import(verified.batch()).await
        }
        .await;
        spinner.finish_and_clear();
        store.close().await;
        imported.map_err(|error| anyhow::anyhow!("import refused: {error}; nothing was written"))
    }
    .await;
    let imported = match written {
        Ok(imported) => imported,
        Err(error) => {
            if let Some(path) = &created {
                remove_ledger_file(path);
            }
            return Err(error);
        }
    };
    if imported.position != verified.head.position || imported.events != verified.head.events {
        // The store wrote what it was given in one transaction that committed: this would be a bug.
        anyhow::bail!(
            "the imported ledger ends at position {} with {} events, the file at position {} with {}",
            imported.position,
            imported.events,
            verified.head.position,
            verified.head.events
        );
    }
    println!(
        "{}",
        json!({
            "imported": true,
            "head": verified.head,
            "servers": verified.servers.len(),
            "webhook_endpoints": verified.endpoints.len(),
            "credentials": imported.credentials,
        })
    );
    Ok(())
}

/// The file of an embedded ledger's URL; none for PostgreSQL.
fn ledger_file(url: &str) -> Option<PathBuf> {
    use std::str::FromStr;
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok().filter(|_| url.starts_with("sqlite:"))?;
    Some(options.get_filename().to_path_buf())
}

/// Removes a ledger file this command created, with SQLite's files beside it.
fn remove_ledger_file(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(&name) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(file = %Path::new(&name).display(), %error, "could not remove"),
        }
    }
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
    let settings = args.webhooks.settings(&args.bus);
    args.database.check_broker(&args.bus)?;
    let store = Store::open(&args.database.settings()).await.context("opening the ledger")?;
    store.prepare().await?;
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let stop = CancellationToken::new();
    // Without a broker, this process also follows the log (as `serve` would).
    let dispatcher = (settings.delivery_mode() == DeliveryMode::InProcess)
        .then(|| tokio::spawn(Dispatcher::new(store.clone(), wake.clone(), settings.sweep_interval).run(stop.clone())));
    tracing::info!(database = store.backend(), delivery = settings.delivery_mode().as_str(), "webhook worker starting");
    let ops = serve_ops(&args.ops, role_router("webhook-worker", store.clone(), None, OPS_TIMEOUT), &stop).await?;
    let worker = WebhookWorker::new(store, settings, wake)?;
    let running = tokio::spawn(worker.run(stop.clone()));
    shutdown_signal().await;
    stop.cancel();
    running.await?;
    if let Some(ops) = ops {
        ops.await?;
    }
    if let Some(dispatcher) = dispatcher {
        dispatcher.await?;
    }
    Ok(())
}

/// How long `/readyz` and `/metrics` of a role process wait for the database.
const OPS_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves a role process's probes and metrics on `OPS_ADDR`, if one is set, until `stop`.
async fn serve_ops(
    ops: &OpsArgs,
    router: axum::Router,
    stop: &CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(address) = ops.ops_addr else { return Ok(None) };
    let listener =
        tokio::net::TcpListener::bind(address).await.with_context(|| format!("listening on OPS_ADDR {address}"))?;
    tracing::info!(address = %listener.local_addr()?, "serving /livez, /readyz and /metrics");
    let stop = stop.clone();
    Ok(Some(tokio::spawn(async move {
        crate::http::serve(listener, router, OPS_TIMEOUT, async move { stop.cancelled().await }).await
    })))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    args.database.check_broker(&args.bus)?;
    let store = Store::open(&args.database.settings()).await.context("opening the ledger")?;
    let ledger = store.backend();
    let application = Application::build(store, args.settings()).await?;
    tracing::info!(address = %application.local_addr()?, ledger, "serving");
    application.run_until(shutdown_signal()).await
}
