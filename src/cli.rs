//! The subcommands of the `credential-ledger` binary.

use anyhow::Context;
use serde_json::json;

use tokio_util::sync::CancellationToken;

use crate::bus::{self, Relay};
use crate::config::{
    CliCommand, EventsCommand, ProjectionsCommand, RelayArgs, ServeArgs, ServerCommand, WebhookWorkerArgs,
};
use crate::domain::{CredentialName, ServerName};
use crate::provision::provision_server;
use crate::startup::{shutdown_signal, Application, Settings};
use crate::store::{self, Store};
use crate::webhooks::WebhookWorker;

pub async fn run(command: CliCommand) -> anyhow::Result<()> {
    match command {
        CliCommand::Serve(args) => serve(args).await,
        CliCommand::Migrate(database) => {
            let pool = store::connect(&database.settings()).await?;
            store::prepare(&pool).await?;
            tracing::info!("database is up to date");
            Ok(())
        }
        CliCommand::Server(ServerCommand::Create { name, credential_name, database }) => {
            let name = ServerName::parse(&name).context("--name")?;
            let credential_name = CredentialName::parse(&credential_name).context("--credential-name")?;
            let pool = store::connect(&database.settings()).await?;
            store::prepare(&pool).await?;
            let provisioned = provision_server(&Store::new(pool), &name, credential_name).await?;
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
            let pool = store::connect(&database.settings()).await?;
            store::prepare(&pool).await?;
            let started = std::time::Instant::now();
            let report = store::rebuild_projections(&pool).await?;
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
        CliCommand::Events(EventsCommand::Tail { bus, binding_key, limit }) => {
            bus::tail(&bus.settings(), &binding_key, limit).await?;
            Ok(())
        }
    }
}

async fn relay(args: RelayArgs) -> anyhow::Result<()> {
    let pool = store::connect(&args.database.settings()).await.context("connecting to PostgreSQL")?;
    store::prepare(&pool).await?;
    let stop = CancellationToken::new();
    let relay = tokio::spawn(Relay::new(pool, args.settings()).run(stop.clone()));
    shutdown_signal().await;
    stop.cancel();
    relay.await?;
    Ok(())
}

async fn webhook_worker(args: WebhookWorkerArgs) -> anyhow::Result<()> {
    let pool = store::connect(&args.database.settings()).await.context("connecting to PostgreSQL")?;
    store::prepare(&pool).await?;
    let worker = WebhookWorker::new(Store::new(pool), args.webhooks.settings(&args.bus))?;
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    shutdown_signal().await;
    stop.cancel();
    running.await?;
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let pool = store::connect(&args.relay.database.settings()).await.context("connecting to PostgreSQL")?;
    let settings = Settings {
        listen_addr: args.listen_addr,
        usage_flush_interval: std::time::Duration::from_millis(args.usage_flush_interval_ms),
        relay: (!args.no_relay).then(|| args.relay.settings()),
        webhooks: args.webhooks.settings(&args.relay.bus),
        run_webhook_worker: !args.no_webhooks,
    };
    let application = Application::build(pool, settings).await?;
    tracing::info!(address = %application.local_addr()?, "serving");
    application.run_until(shutdown_signal()).await
}
