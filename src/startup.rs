//! Wiring: the running service is the HTTP API, the writer, the usage flusher, and webhook
//! delivery: with RabbitMQ, the relay and the webhook worker; without, the dispatcher and the
//! worker on the database queue.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::replica::Replica;
use crate::app::usage::UsageRecorder;
use crate::app::writer::Writer;
use crate::bus::{Relay, RelaySettings};
use crate::http::{
    relay_router, router, App, AppState, AuthGuard, LargeReads, Limits, RelayAuth, RelayHandle, RelaySecret,
};
use crate::store::Store;
use crate::webhooks::{DeliveryMode, Dispatcher, WebhookSettings, WebhookWorker};

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen_addr: SocketAddr,
    pub usage_flush_interval: Duration,
    /// How often the deadline scheduler polls for deadlines other instances committed.
    pub deadline_poll_interval: Duration,
    /// Run the relay in this process, with these settings (RabbitMQ only).
    pub relay: Option<RelaySettings>,
    /// Webhook settings: the API needs them (destination checks) even when the worker runs
    /// elsewhere.
    pub webhooks: WebhookSettings,
    pub run_webhook_worker: bool,
    pub limits: Limits,
    /// Failed authentications allowed per client address and minute before it gets 429s.
    pub auth_failures_per_minute: u32,
    /// Large reads (lists of over ten thousand credentials, `as_of`) one server may run at once.
    pub max_large_reads_per_server: usize,
    /// `create` is refused once a server holds this many credentials.
    pub max_credentials_per_server: usize,
    /// How long the service's own queries may take before their connection is replaced.
    pub query_timeout: Duration,
    /// After SIGTERM, how long draining may take before the process gives up and exits.
    pub shutdown_timeout: Duration,
    /// The mail relays' listener, when it is on.
    pub relay_auth: Option<RelayAuthSettings>,
    /// The replica's snapshot file, read at start and written at shutdown, if any.
    pub replica_snapshot: Option<std::path::PathBuf>,
}

/// The mail relays' listener (`RELAY_AUTH_ADDR`, `RELAY_AUTH_SECRET`, `SMTP_UPSTREAM`).
#[derive(Debug, Clone)]
pub struct RelayAuthSettings {
    pub addr: SocketAddr,
    pub secret: RelaySecret,
    pub smtp_upstream: Option<SocketAddr>,
}

// The service's defaults, each written once: `serve`'s flags default to them (config.rs).
pub const DEFAULT_LISTEN_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
pub const DEFAULT_USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_DEADLINE_POLL_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;
/// The default of `HTTP_HEADER_READ_TIMEOUT_MS`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_AUTH_FAILURES_PER_MINUTE: u32 = 60;
pub const DEFAULT_MAX_LARGE_READS_PER_SERVER: usize = 2;
pub const DEFAULT_MAX_CREDENTIALS_PER_SERVER: usize = 1_000_000;
/// The default of `SHUTDOWN_TIMEOUT_MS`: the request timeout plus the query timeout, with room.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// The embedded ledger's file, in the data directory (the working directory by default).
pub const DEFAULT_LEDGER_FILE: &str = "credential-ledger.db";

/// What `serve` runs with no flags: in-process webhook delivery (no broker, so no relay).
impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen_addr: DEFAULT_LISTEN_ADDR,
            usage_flush_interval: DEFAULT_USAGE_FLUSH_INTERVAL,
            deadline_poll_interval: DEFAULT_DEADLINE_POLL_INTERVAL,
            relay: None,
            webhooks: WebhookSettings::new(None),
            run_webhook_worker: true,
            limits: Limits {
                request_timeout: DEFAULT_REQUEST_TIMEOUT,
                max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
                header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            },
            auth_failures_per_minute: DEFAULT_AUTH_FAILURES_PER_MINUTE,
            max_large_reads_per_server: DEFAULT_MAX_LARGE_READS_PER_SERVER,
            max_credentials_per_server: DEFAULT_MAX_CREDENTIALS_PER_SERVER,
            query_timeout: crate::store::DEFAULT_QUERY_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            relay_auth: None,
            // Beside the embedded ledger that `serve` opens with no flags.
            replica_snapshot: Some(format!("{DEFAULT_LEDGER_FILE}.replica").into()),
        }
    }
}

pub struct Application {
    listener: TcpListener,
    /// The mail relays' listener and its checks, when it is on.
    relay_auth: Option<(TcpListener, RelayAuth)>,
    state: AppState,
    writer_task: JoinHandle<()>,
    /// Records passed deadlines; it holds a handle on the writer, so it stops before it.
    deadlines: JoinHandle<()>,
    stop_deadlines: CancellationToken,
    flusher: JoinHandle<()>,
    stop_flusher: CancellationToken,
    relay: Option<JoinHandle<()>>,
    stop_background: CancellationToken,
    webhook_worker: Option<JoinHandle<()>>,
    dispatcher: Option<JoinHandle<()>>,
    limits: Limits,
    shutdown_timeout: Duration,
    replica: std::sync::Arc<Replica>,
    replica_snapshot: Option<std::path::PathBuf>,
}

impl Application {
    /// Prepares the schema, starts the background tasks and binds the listener.
    pub async fn build(store: Store, settings: Settings) -> anyhow::Result<Application> {
        // RabbitMQ's side (the relay's advisory lock, the sweep's SKIP LOCKED) is PostgreSQL's.
        if store.postgres().is_none() && (settings.relay.is_some() || settings.webhooks.bus.is_some()) {
            anyhow::bail!("AMQP_URL needs a postgres:// DATABASE_URL");
        }
        let mode = settings.webhooks.delivery_mode();
        tracing::info!(
            database = store.backend(),
            delivery = mode.as_str(),
            relay = settings.relay.is_some(),
            webhook_worker = settings.run_webhook_worker,
            "starting"
        );
        store.prepare().await?;
        let store = store.with_query_timeout(settings.query_timeout);
        let replica = Replica::load_with_snapshot(store.clone(), settings.replica_snapshot.as_deref()).await?;
        let (writer, writer_task) = Writer::spawn(store.clone(), replica.clone());
        let stop_deadlines = CancellationToken::new();
        let deadlines = crate::app::deadlines::spawn(
            store.clone(),
            replica.clone(),
            writer.clone(),
            settings.deadline_poll_interval,
            stop_deadlines.clone(),
        );
        let usage = UsageRecorder::default();
        let stop_flusher = CancellationToken::new();
        let flusher = usage.spawn_flusher(store.clone(), settings.usage_flush_interval, stop_flusher.clone());
        let stop_background = CancellationToken::new();
        tokio::spawn(crate::metrics::probe_wake_delay(stop_background.clone()));
        let (relay, relay_handle) = match settings.relay {
            Some(relay_settings) => {
                let exchange = relay_settings.bus.exchange.clone();
                let postgres = store.postgres().ok_or_else(|| anyhow::anyhow!("the relay needs PostgreSQL"))?;
                let relay = Relay::new(postgres.pool().clone(), relay_settings);
                let handle = RelayHandle { exchange, status: relay.status() };
                (Some(tokio::spawn(relay.run(stop_background.clone()))), Some(handle))
            }
            None => (None, None),
        };
        // What falls due in this process wakes its worker at once (the dispatcher's deliveries,
        // `webhooks/retry`); the rest is found by time.
        let delivery_wake = std::sync::Arc::new(tokio::sync::Notify::new());
        let (webhook_worker, dispatcher) = if settings.run_webhook_worker {
            let worker = WebhookWorker::new(store.clone(), settings.webhooks.clone(), delivery_wake.clone())?;
            let worker = tokio::spawn(worker.run(stop_background.clone()));
            let dispatcher = (mode == DeliveryMode::InProcess).then(|| {
                let dispatcher =
                    Dispatcher::new(store.clone(), delivery_wake.clone(), settings.webhooks.sweep_interval);
                tokio::spawn(dispatcher.run(stop_background.clone()))
            });
            (Some(worker), dispatcher)
        } else {
            (None, None)
        };
        let listener = TcpListener::bind(settings.listen_addr).await?;
        let relay_auth = match &settings.relay_auth {
            Some(relay) => {
                let listener = TcpListener::bind(relay.addr).await?;
                tracing::info!(address = %listener.local_addr()?, "mail relays' listener");
                let checks = RelayAuth::new(&relay.secret, relay.smtp_upstream, settings.auth_failures_per_minute);
                Some((listener, checks))
            }
            None => None,
        };
        let state = std::sync::Arc::new(App {
            store,
            replica: replica.clone(),
            writer,
            usage,
            relay: relay_handle,
            webhooks: settings.webhooks,
            auth_guard: AuthGuard::new(settings.auth_failures_per_minute),
            large_reads: LargeReads::new(settings.max_large_reads_per_server),
            max_credentials_per_server: settings.max_credentials_per_server,
            webhook_worker: webhook_worker.is_some(),
            delivery_wake,
            health_timeout: Duration::from_secs(2),
        });
        Ok(Application {
            listener,
            relay_auth,
            state,
            writer_task,
            deadlines,
            stop_deadlines,
            flusher,
            stop_flusher,
            relay,
            stop_background,
            webhook_worker,
            dispatcher,
            limits: settings.limits,
            shutdown_timeout: settings.shutdown_timeout,
            replica,
            replica_snapshot: settings.replica_snapshot,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The relays' listener's address, when it is on.
    pub fn relay_auth_addr(&self) -> Option<SocketAddr> {
        self.relay_auth.as_ref().and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests, drains the writer,
    /// flushes `last_used_at` and stops the relay: all within the shutdown timeout, after which
    /// it gives up with an error (whatever was acknowledged is committed already).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (signalled, on_signal) = tokio::sync::oneshot::channel();
        let shutdown = async move {
            shutdown.await;
            let _ = signalled.send(());
        };
        let grace = self.shutdown_timeout;
        let deadline = async move {
            match on_signal.await {
                Ok(()) => tokio::time::sleep(grace).await,
                // The server ended without a signal: nothing to bound.
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            stopped = self.serve_and_drain(shutdown) => stopped,
            () = deadline => {
                tracing::error!(timeout_ms = grace.as_millis() as u64, "shutdown did not finish in time: giving up");
                anyhow::bail!("shutdown did not finish within {grace:?}")
            }
        }
    }

    async fn serve_and_drain(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let header_read_timeout = self.limits.header_read_timeout;
        // Both listeners stop together, at the signal.
        let stop_serving = CancellationToken::new();
        let signal = stop_serving.clone();
        tokio::spawn(async move {
            shutdown.await;
            signal.cancel();
        });
        let relays = self.relay_auth.map(|(listener, checks)| {
            let router = relay_router(self.state.clone(), checks);
            tokio::spawn(crate::http::serve(
                listener,
                router,
                header_read_timeout,
                stop_serving.clone().cancelled_owned(),
            ))
        });
        let api = router(self.state, self.limits);
        crate::http::serve(self.listener, api, header_read_timeout, stop_serving.cancelled_owned()).await;
        if let Some(relays) = relays {
            relays.await?;
        }
        // A deadline that passes from here on is recorded by the next instance to run: its key
        // is refused from the deadline all the same.
        self.stop_deadlines.cancel();
        self.deadlines.await?;
        // The last handle on the writer went with the router: the writer ends once it is drained.
        self.writer_task.await?;
        self.stop_flusher.cancel();
        self.flusher.await?;
        // Nothing writes from here on: the next start reads this instead of the whole view.
        if let Some(path) = self.replica_snapshot {
            if let Err(error) = self.replica.write_snapshot(path).await {
                tracing::warn!(error = %error, "the replica's snapshot is not written: the next start loads the view");
            }
        }
        // Whatever is committed and not yet published stays in the log for the next leader.
        self.stop_background.cancel();
        for task in [self.relay, self.dispatcher, self.webhook_worker].into_iter().flatten() {
            task.await?;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
