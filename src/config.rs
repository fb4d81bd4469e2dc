//! Command line and environment: every flag can also be set by the environment variable named
//! beside it.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::store::DatabaseSettings;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/credential_ledger";

#[derive(Debug, Parser)]
#[command(
    name = "credential-ledger",
    version,
    about = "An event-sourced ledger of API and SMTP credentials"
)]
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
    /// PostgreSQL connection URL; the database is created if it does not exist.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    /// Size of the connection pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
    /// How long a request waits for a pooled connection before failing with 503.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_MS", default_value_t = 3000)]
    pub database_acquire_timeout_ms: u64,
}

impl DatabaseArgs {
    pub fn settings(&self) -> DatabaseSettings {
        DatabaseSettings {
            url: self.database_url.clone(),
            max_connections: self.database_max_connections,
            acquire_timeout: Duration::from_millis(self.database_acquire_timeout_ms),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Address the HTTP API listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,
    /// How often coalesced `last_used_at` updates are written.
    #[arg(long, env = "USAGE_FLUSH_INTERVAL_MS", default_value_t = 1000)]
    pub usage_flush_interval_ms: u64,
}
