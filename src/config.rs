//! Command line and environment: every flag can also be set by the environment variable named
//! beside it.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::bus::{
    BusSettings, RelaySettings, DEFAULT_EXCHANGE, DEFAULT_RELAY_BATCH_SIZE, DEFAULT_RELAY_MAX_BACKOFF,
    DEFAULT_RELAY_POLL_INTERVAL,
};
use crate::http::{Limits, RelaySecret};
use crate::startup::{
    RelayAuthSettings, Settings, DEFAULT_AUTH_FAILURES_PER_MINUTE, DEFAULT_DEADLINE_POLL_INTERVAL,
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_LISTEN_ADDR, DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_MAX_CREDENTIALS_PER_SERVER, DEFAULT_MAX_LARGE_READS_PER_SERVER, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_USAGE_FLUSH_INTERVAL,
};
use crate::store::{DatabaseSettings, DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_QUERY_TIMEOUT};
use crate::webhooks::{
    parse_schedule, WebhookSettings, DEFAULT_RETRY_SCHEDULE, DEFAULT_SWEEP_INTERVAL, DEFAULT_WEBHOOK_PREFETCH,
    DEFAULT_WEBHOOK_TIMEOUT,
};

pub use crate::startup::DEFAULT_LEDGER_FILE;
/// With neither `DATABASE_URL` nor `DATA_DIR`: the embedded ledger in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://credential-ledger.db";

#[derive(Debug, Parser)]
#[command(name = "credential-ledger", version, about = "An event-sourced ledger of API and SMTP credentials")]
pub struct Cli {
    /// Log line format, on standard error.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once, at start-up: the size of `serve`'s arguments costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Create the database if needed, apply migrations and projections, and serve the API.
    Serve(ServeArgs),
    /// Create the database if needed and apply migrations and projections, then exit.
    Migrate(DatabaseArgs),
    /// Manage servers (tenants).
    #[command(subcommand)]
    Server(ServerCommand),
    /// Manage read models built from the event log.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Publish the event log to RabbitMQ and nothing else (for deployments that split roles;
    /// needs AMQP_URL).
    Relay(RelayArgs),
    /// Watch the event bus.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Deliver webhooks and nothing else (for deployments that split roles): from RabbitMQ with
    /// AMQP_URL, else following the log (as `serve` does without AMQP_URL).
    WebhookWorker(WebhookWorkerArgs),
    /// Write the ledger as JSON Lines, with every event's chain link.
    Export {
        /// Only this server's events; other servers' appear as chain links without content.
        #[arg(long)]
        server: Option<uuid::Uuid>,
        /// The file to write (standard output without it).
        #[arg(long)]
        output: Option<std::path::PathBuf>,
        /// A backup to `import` elsewhere: the servers and webhook endpoints too, before the
        /// events, with the endpoints' signing secrets. Keep it as secret as the database.
        #[arg(long)]
        backup: bool,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Load an `export --backup` into an empty ledger, after verifying the whole file.
    Import {
        /// The export to load.
        #[arg(long)]
        file: std::path::PathBuf,
        /// A head recorded earlier, `POSITION:HASH`, that the file must reach.
        #[arg(long)]
        expect_head: Option<crate::audit::ExpectedHead>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Recompute the hash chain, from the database or (offline) from an export file.
    Verify {
        /// Verify this export instead of the database; needs no database.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// A head recorded earlier, `POSITION:HASH`, that must still be in the chain.
        #[arg(long)]
        expect_head: Option<crate::audit::ExpectedHead>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Print the credential view rebuilt from an export file, offline.
    Replay {
        /// The export to replay (JSON Lines, as `export` writes it; a backup's server and
        /// endpoint records are skipped).
        #[arg(long)]
        file: std::path::PathBuf,
        /// The view as it stood at this instant (RFC 3339).
        #[arg(long)]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
        /// Only this server's credentials.
        #[arg(long)]
        server: Option<uuid::Uuid>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct WebhookWorkerArgs {
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
}

/// The wait before each webhook retry, e.g. `5s,5m,30m,2h,5h,10h`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

fn retry_schedule(text: &str) -> Result<RetrySchedule, String> {
    parse_schedule(text).map(RetrySchedule)
}

#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Delays between attempts; after the last one a delivery is failed.
    #[arg(long, env = "WEBHOOK_RETRY_SCHEDULE", default_value = DEFAULT_RETRY_SCHEDULE, value_parser = retry_schedule)]
    pub webhook_retry_schedule: RetrySchedule,
    /// How long an endpoint has to answer.
    #[arg(long, env = "WEBHOOK_TIMEOUT_MS", default_value_t = DEFAULT_WEBHOOK_TIMEOUT.as_millis() as u64)]
    pub webhook_timeout_ms: u64,
    /// Allow loopback and private destinations: for local development and tests only.
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// How many messages a worker holds unacknowledged (and delivers concurrently).
    #[arg(long, env = "WEBHOOK_PREFETCH", default_value_t = DEFAULT_WEBHOOK_PREFETCH)]
    pub webhook_prefetch: u16,
    /// How often a worker looks for due attempts that no message carries (retries asked for
    /// through the API, attempts whose message or worker was lost) and queues them.
    #[arg(long, env = "WEBHOOK_SWEEP_INTERVAL_MS", default_value_t = DEFAULT_SWEEP_INTERVAL.as_millis() as u64)]
    pub webhook_sweep_interval_ms: u64,
}

impl WebhookArgs {
    pub fn settings(&self, bus: &BusArgs) -> WebhookSettings {
        WebhookSettings {
            retry_schedule: self.webhook_retry_schedule.0.clone(),
            timeout: Duration::from_millis(self.webhook_timeout_ms),
            allow_private: self.webhook_allow_private,
            prefetch: self.webhook_prefetch.max(1),
            sweep_interval: Duration::from_millis(self.webhook_sweep_interval_ms.max(1)),
            ..WebhookSettings::new(bus.settings())
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print each event as one JSON line, as RabbitMQ delivers it: from a temporary queue bound to
    /// the exchange when a RabbitMQ URL is given, otherwise read from the log itself.
    Tail(TailArgs),
}

/// `events tail`'s own settings. The RabbitMQ URL has no default here: without one, the tail
/// follows the log in the database instead of a queue.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// RabbitMQ URL (it may carry a password; it is never logged). Unset: read the log.
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,
    /// The durable topic exchange every event is published to.
    #[arg(long, env = "AMQP_EXCHANGE", default_value = DEFAULT_EXCHANGE)]
    pub amqp_exchange: String,
    /// Binding key: `#` for everything, `credential.locked` for locks only.
    #[arg(long, default_value = "#")]
    pub binding_key: String,
    /// Stop after this many messages.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Start at this position of the log instead of its head (only without RabbitMQ: a queue
    /// holds only what is published after it is bound).
    #[arg(long)]
    pub from_position: Option<i64>,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Clone, Args)]
pub struct BusArgs {
    /// RabbitMQ URL (it may carry a password; it is never logged). Unset: no broker, and webhooks
    /// are delivered in-process from the database (which must then be the only way they are).
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,
    /// The durable topic exchange every event is published to.
    #[arg(long, env = "AMQP_EXCHANGE", default_value = DEFAULT_EXCHANGE)]
    pub amqp_exchange: String,
}

impl BusArgs {
    /// The broker, if `AMQP_URL` names one.
    pub fn settings(&self) -> Option<BusSettings> {
        let url = self.amqp_url.clone()?;
        Some(BusSettings { url, exchange: self.amqp_exchange.clone() })
    }
}

#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub relay: RelayOptions,
}

/// Where a process that serves no API answers `/livez`, `/readyz` and `/metrics`.
#[derive(Debug, Clone, Args)]
pub struct OpsArgs {
    /// Serve `/livez`, `/readyz` and `/metrics` on this address (none without it).
    #[arg(long, env = "OPS_ADDR")]
    pub ops_addr: Option<std::net::SocketAddr>,
}

/// How the relay publishes, wherever it runs (its own process, or inside `serve`).
#[derive(Debug, Clone, Args)]
pub struct RelayOptions {
    /// The most events published between two checkpoints.
    #[arg(long, env = "RELAY_BATCH_SIZE", default_value_t = DEFAULT_RELAY_BATCH_SIZE)]
    pub relay_batch_size: i64,
    /// How often the log is read when no notification arrives (a safety net: commits notify).
    #[arg(long, env = "RELAY_POLL_INTERVAL_MS", default_value_t = DEFAULT_RELAY_POLL_INTERVAL.as_millis() as u64)]
    pub relay_poll_interval_ms: u64,
    /// The longest wait between reconnection attempts.
    #[arg(long, env = "RELAY_MAX_BACKOFF_MS", default_value_t = DEFAULT_RELAY_MAX_BACKOFF.as_millis() as u64)]
    pub relay_max_backoff_ms: u64,
    /// Do not declare the webhook workers' queue (only where no webhook worker ever runs:
    /// otherwise events published before a worker first starts get no webhook).
    #[arg(long, env = "RELAY_NO_WEBHOOK_QUEUE")]
    pub relay_no_webhook_queue: bool,
}

impl RelayOptions {
    pub fn settings(&self, bus: BusSettings) -> RelaySettings {
        RelaySettings {
            batch_size: self.relay_batch_size.max(1),
            poll_interval: Duration::from_millis(self.relay_poll_interval_ms),
            max_backoff: Duration::from_millis(self.relay_max_backoff_ms),
            declare_webhook_queue: !self.relay_no_webhook_queue,
            ..RelaySettings::new(bus)
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Provision a server and its first API credential; prints one JSON object with the key.
    Create {
        /// The server's name.
        #[arg(long)]
        name: String,
        /// The name of the first credential.
        #[arg(long, default_value = "Initial API key")]
        credential_name: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Drop the credential view and rebuild it by replaying the whole log.
    Rebuild(DatabaseArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// The ledger: `postgres://…` (the database is created if it does not exist) or
    /// `sqlite://PATH`. Unset: the embedded ledger, `credential-ledger.db` in --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, conflicts_with = "data_dir")]
    pub database_url: Option<String>,
    /// Where the embedded ledger's file goes when no DATABASE_URL is given [default: the working directory].
    #[arg(long, env = "DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// Size of the connection pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub database_max_connections: u32,
    /// How long a request waits for a pooled connection before failing with 503.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_MS", default_value_t = DEFAULT_ACQUIRE_TIMEOUT.as_millis() as u64)]
    pub database_acquire_timeout_ms: u64,
    /// How long the service's queries (appends, the read barrier, health checks) may take;
    /// a connection that does not answer in time is closed and replaced.
    #[arg(long, env = "DATABASE_QUERY_TIMEOUT_MS", default_value_t = DEFAULT_QUERY_TIMEOUT.as_millis() as u64)]
    pub database_query_timeout_ms: u64,
}

impl DatabaseArgs {
    /// The URL of the ledger these arguments name.
    pub fn url(&self) -> String {
        match (&self.database_url, &self.data_dir) {
            (Some(url), _) => url.clone(),
            (None, Some(dir)) => format!("sqlite://{}", dir.join(DEFAULT_LEDGER_FILE).display()),
            (None, None) => DEFAULT_DATABASE_URL.to_owned(),
        }
    }

    /// Refuses, before anything is opened or created, a broker for a ledger that is not on
    /// PostgreSQL: the relay's lock and the broker's sweep are PostgreSQL's.
    pub fn check_broker(&self, bus: &BusArgs) -> anyhow::Result<()> {
        let url = self.url();
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        if bus.amqp_url.is_some() && !matches!(scheme, "postgres" | "postgresql") {
            anyhow::bail!("AMQP_URL needs a postgres:// DATABASE_URL");
        }
        Ok(())
    }

    pub fn settings(&self) -> DatabaseSettings {
        DatabaseSettings {
            url: self.url(),
            max_connections: self.database_max_connections,
            acquire_timeout: Duration::from_millis(self.database_acquire_timeout_ms),
            query_timeout: Duration::from_millis(self.database_query_timeout_ms.max(1)),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub relay: RelayOptions,
    /// Do not run the relay in this process (there is none without AMQP_URL).
    #[arg(long, env = "NO_RELAY")]
    pub no_relay: bool,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
    /// Do not run the webhook worker in this process.
    #[arg(long, env = "NO_WEBHOOKS")]
    pub no_webhooks: bool,
    /// Address the HTTP API listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value_t = DEFAULT_LISTEN_ADDR)]
    pub listen_addr: SocketAddr,
    /// How often coalesced `last_used_at` updates are written.
    #[arg(long, env = "USAGE_FLUSH_INTERVAL_MS", default_value_t = DEFAULT_USAGE_FLUSH_INTERVAL.as_millis() as u64)]
    pub usage_flush_interval_ms: u64,
    /// How often the deadline scheduler looks for deadlines other instances committed (its
    /// own wake it at once).
    #[arg(long, env = "DEADLINE_POLL_INTERVAL_MS", default_value_t = DEFAULT_DEADLINE_POLL_INTERVAL.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub deadline_poll_interval_ms: u64,
    /// A request still running after this is abandoned with 503 `request_timeout`.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = DEFAULT_REQUEST_TIMEOUT.as_millis() as u64)]
    pub request_timeout_ms: u64,
    /// How long a client may take to send a request's headers; also how long an idle
    /// keep-alive connection is kept (behind a load balancer, set it above the balancer's own
    /// idle timeout).
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT_MS", default_value_t = DEFAULT_HEADER_READ_TIMEOUT.as_millis() as u64)]
    pub http_header_read_timeout_ms: u64,
    /// Requests handled at once; beyond, 503 `overloaded`.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = DEFAULT_MAX_CONCURRENT_REQUESTS)]
    pub max_concurrent_requests: usize,
    /// Failed authentications allowed per client address and minute; beyond, 429.
    #[arg(long, env = "AUTH_FAILURES_PER_MINUTE", default_value_t = DEFAULT_AUTH_FAILURES_PER_MINUTE)]
    pub auth_failures_per_minute: u32,
    /// Large reads (lists of over ten thousand credentials, any `as_of`) one server may run at
    /// once; beyond, 429 `server_busy`.
    #[arg(long, env = "MAX_LARGE_READS_PER_SERVER", default_value_t = DEFAULT_MAX_LARGE_READS_PER_SERVER)]
    pub max_large_reads_per_server: usize,
    /// `create` is refused (409 `credential_limit_reached`) once a server holds this many
    /// credentials, held ones included.
    #[arg(long, env = "MAX_CREDENTIALS_PER_SERVER", default_value_t = DEFAULT_MAX_CREDENTIALS_PER_SERVER)]
    pub max_credentials_per_server: usize,
    /// After SIGTERM, how long draining may take before the process exits with an error.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_MS", default_value_t = DEFAULT_SHUTDOWN_TIMEOUT.as_millis() as u64)]
    pub shutdown_timeout_ms: u64,
    /// Address of the mail relays' listener (nginx's `auth_http` at `GET /auth/smtp`, and
    /// `POST /v1/credentials/verify`); off when unset. Keep it off the public network.
    #[arg(long, env = "RELAY_AUTH_ADDR", requires = "relay_auth_secret")]
    pub relay_auth_addr: Option<SocketAddr>,
    /// The secret every call to the relays' listener carries in `X-Relay-Secret` (at least 16
    /// characters); required with `RELAY_AUTH_ADDR`.
    #[arg(long, env = "RELAY_AUTH_SECRET", hide_env_values = true, value_parser = RelaySecretParser)]
    pub relay_auth_secret: Option<RelaySecret>,
    /// Where nginx sends a client whose SMTP login succeeded: `IP:PORT` (nginx takes no names).
    #[arg(long, env = "SMTP_UPSTREAM")]
    pub smtp_upstream: Option<SocketAddr>,
    /// The in-memory replica's snapshot file: written at shutdown and read at start-up, so that a
    /// large ledger starts in seconds instead of loading the view row by row. `none` turns it
    /// off. [default: beside an embedded ledger's file, `<file>.replica`; none on PostgreSQL]
    #[arg(long, env = "REPLICA_SNAPSHOT")]
    pub replica_snapshot: Option<String>,
}

/// Parses `RELAY_AUTH_SECRET` with an error that does not quote the value (clap's own errors
/// repeat what was given, and a rejected secret is still somebody's secret).
#[derive(Clone)]
struct RelaySecretParser;

impl clap::builder::TypedValueParser for RelaySecretParser {
    type Value = RelaySecret;

    fn parse_ref(
        &self,
        _command: &clap::Command,
        _argument: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<RelaySecret, clap::Error> {
        let refused = |kind, reason: &str| clap::Error::raw(kind, format!("{reason}\n"));
        let text = value
            .to_str()
            .ok_or_else(|| refused(clap::error::ErrorKind::InvalidUtf8, "RELAY_AUTH_SECRET must be UTF-8"))?;
        RelaySecret::parse(text).map_err(|reason| refused(clap::error::ErrorKind::ValueValidation, &reason))
    }
}

impl ServeArgs {
    /// The running service's settings (its database settings are `self.database.settings()`).
    pub fn settings(&self) -> Settings {
        Settings {
            listen_addr: self.listen_addr,
            usage_flush_interval: Duration::from_millis(self.usage_flush_interval_ms),
            deadline_poll_interval: Duration::from_millis(self.deadline_poll_interval_ms),
            relay: self.bus.settings().filter(|_| !self.no_relay).map(|bus| self.relay.settings(bus)),
            webhooks: self.webhooks.settings(&self.bus),
            run_webhook_worker: !self.no_webhooks,
            limits: Limits {
                request_timeout: Duration::from_millis(self.request_timeout_ms),
                max_concurrent_requests: self.max_concurrent_requests.max(1),
                header_read_timeout: Duration::from_millis(self.http_header_read_timeout_ms.max(1)),
            },
            auth_failures_per_minute: self.auth_failures_per_minute,
            max_large_reads_per_server: self.max_large_reads_per_server,
            max_credentials_per_server: self.max_credentials_per_server,
            query_timeout: self.database.settings().query_timeout,
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            relay_auth: self
                .relay_auth_addr
                .zip(self.relay_auth_secret.clone())
                .map(|(addr, secret)| RelayAuthSettings { addr, secret, smtp_upstream: self.smtp_upstream }),
            replica_snapshot: self.replica_snapshot(),
        }
    }

    fn replica_snapshot(&self) -> Option<std::path::PathBuf> {
        match self.replica_snapshot.as_deref() {
            Some("none" | "") => None,
            Some(path) => Some(path.into()),
            None => {
                let url = self.database.url();
                let file = url.strip_prefix("sqlite://")?.split('?').next()?;
                (!file.is_empty() && !file.starts_with(':')).then(|| format!("{file}.replica").into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> CliCommand {
        Cli::try_parse_from(args).unwrap().command
    }

    /// With no URL the ledger is the embedded one: in the working directory, or in the data
    /// directory; a URL names any ledger, and both at once are refused.
    #[test]
    fn no_database_url_means_the_embedded_ledger_in_the_data_directory() {
        let args = |database_url: Option<&str>, data_dir: Option<&str>| DatabaseArgs {
            database_url: database_url.map(str::to_owned),
            data_dir: data_dir.map(std::path::PathBuf::from),
            database_max_connections: DEFAULT_MAX_CONNECTIONS,
            database_acquire_timeout_ms: 1,
            database_query_timeout_ms: 1,
        };
        assert_eq!(args(None, None).url(), "sqlite://credential-ledger.db");
        assert_eq!(args(None, Some("/srv/ledger")).url(), "sqlite:///srv/ledger/credential-ledger.db");
        assert_eq!(args(Some("postgres://db/ledger"), None).url(), "postgres://db/ledger");
        let both = Cli::try_parse_from([
            "credential-ledger",
            "migrate",
            "--database-url",
            "postgres://db/ledger",
            "--data-dir",
            "/srv/ledger",
        ]);
        assert!(both.is_err(), "a URL and a data directory at once are refused");
    }

    /// The relays' listener is off unless given an address, and never on without a secret of at
    /// least 16 characters; the secret is not shown by `Debug`.
    #[test]
    fn the_relays_listener_needs_a_long_enough_secret() {
        let serve = |extra: &[&str]| {
            let args = [&["credential-ledger", "serve"][..], extra].concat();
            Cli::try_parse_from(args).map(|cli| match cli.command {
                CliCommand::Serve(serve) => serve.settings(),
                _ => panic!("serve"),
            })
        };
        assert!(serve(&[]).unwrap().relay_auth.is_none());
        let without_secret = serve(&["--relay-auth-addr", "127.0.0.1:8081"]);
        assert!(without_secret.is_err_and(|error| error.to_string().contains("--relay-auth-secret")));
        let short = serve(&["--relay-auth-addr", "127.0.0.1:8081", "--relay-auth-secret", "too-short"]);
        let short = short.unwrap_err().to_string();
        assert!(short.contains("at least 16 characters") && !short.contains("too-short"), "{short}");
        let secret = "a-relay-secret-long-enough";
        let on = serve(&["--relay-auth-addr", "127.0.0.1:8081", "--relay-auth-secret", secret]).unwrap();
        let relay = on.relay_auth.clone().expect("on");
        assert_eq!((relay.addr.port(), relay.smtp_upstream), (8081, None));
        assert!(!format!("{on:?}").contains(secret));
    }

    /// The replica's snapshot goes beside an embedded ledger's file unless told otherwise; on
    /// PostgreSQL there is none unless a path is given.
    #[test]
    fn the_replica_snapshot_goes_beside_an_embedded_ledger() {
        let snapshot = |extra: &[&str]| {
            let args = [&["credential-ledger", "serve"][..], extra].concat();
            let CliCommand::Serve(serve) = Cli::try_parse_from(args).unwrap().command else { panic!("serve") };
            serve.settings().replica_snapshot
        };
        assert_eq!(snapshot(&[]), Some("credential-ledger.db.replica".into()));
        assert_eq!(
            snapshot(&["--data-dir", "/var/lib/ledger"]),
            Some("/var/lib/ledger/credential-ledger.db.replica".into())
        );
        assert_eq!(snapshot(&["--database-url", "sqlite:///srv/l.db?mode=rwc"]), Some("/srv/l.db.replica".into()));
        assert_eq!(snapshot(&["--database-url", "postgres://db/ledger"]), None);
        assert_eq!(
            snapshot(&["--database-url", "postgres://db/ledger", "--replica-snapshot", "/srv/r"]),
            Some("/srv/r".into())
        );
        assert_eq!(snapshot(&["--replica-snapshot", "none"]), None);
    }

    /// Each default is written once: what a flag defaults to is what the settings default to.
    /// (Compared through `Debug`: the settings hold no secrets there, and carry no `PartialEq`.)
    #[test]
    fn the_command_line_defaults_are_the_settings_defaults() {
        let CliCommand::Serve(serve) = parse(&["credential-ledger", "serve"]) else { panic!("serve") };
        assert_eq!(format!("{:?}", serve.settings()), format!("{:?}", Settings::default()));
        assert_eq!(
            format!("{:?}", serve.database.settings()),
            format!("{:?}", DatabaseSettings::new(DEFAULT_DATABASE_URL))
        );

        let CliCommand::Relay(relay) = parse(&["credential-ledger", "relay"]) else { panic!("relay") };
        assert!(relay.bus.settings().is_none(), "no broker unless AMQP_URL names one");
        let broker = BusSettings { url: "amqp://127.0.0.1:5672/%2f".into(), exchange: DEFAULT_EXCHANGE.into() };
        assert_eq!(format!("{:?}", relay.relay.settings(broker.clone())), format!("{:?}", RelaySettings::new(broker)));
        let CliCommand::WebhookWorker(worker) = parse(&["credential-ledger", "webhook-worker"]) else {
            panic!("worker")
        };
        assert_eq!(format!("{:?}", worker.webhooks.settings(&worker.bus)), format!("{:?}", WebhookSettings::new(None)));
    }
}
