//! credential-ledger: an event-sourced ledger of API and SMTP credentials.
//!
//! Three layers, inside out:
//! - `domain`: the pure core (credentials, keys, events, `decide`, `apply`, the hash chain);
//! - `app`: the application services that run it (the writer, the in-memory replica, usage,
//!   provisioning) and `audit` (export, verification, replay);
//! - the adapters: `store` (PostgreSQL), `http` (axum), `bus` (RabbitMQ) and `webhooks`.
//!
//! Wiring sits beside them: `config` (flags and environment), `startup` (the running service),
//! `telemetry` (logs), `metrics`, and `cli`, the binary's front door.

pub mod app;
pub mod audit;
pub mod bus;
pub mod cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod progress;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod webhooks;
