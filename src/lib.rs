//! credential-ledger: an event-sourced ledger of API and SMTP credentials.
//!
//! `domain` is the pure core; `store` (PostgreSQL), `http` (axum), `bus` (RabbitMQ) and
//! `writer` (group commit) are the adapters around it; `startup` wires them; `cli` is the binary's front door.

pub mod audit;
pub mod bus;
pub mod cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod provision;
pub mod replica;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod usage;
pub mod webhooks;
pub mod writer;
