//! Application services: the use cases that run the domain against the store, between the
//! adapters that call them (HTTP, CLI) and the ones they call (PostgreSQL).
//!
//! - `writer`: one task per process turns concurrent commands into group commits.
//! - `replica`: the in-memory copy of the credential view that authentication and `list` read.
//! - `deadlines`: records the lock of each credential whose expiry or grace period has passed.
//! - `usage`: `last_used_at`, coalesced in memory and flushed.
//! - `provision`: a new server (tenant) and its first API credential.

pub mod deadlines;
pub mod provision;
pub mod replica;
pub mod usage;
pub mod writer;
