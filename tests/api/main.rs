//! HTTP and storage integration tests, against the real PostgreSQL on this machine.
//! Each `#[sqlx::test]` gets a fresh, migrated database. Set `TEST_LOG=1` to see the logs.

mod audit;
mod bad_input;
mod binary;
mod concurrency;
mod credentials;
#[path = "../support/app.rs"]
mod helpers;
mod ledger;
mod operations;
mod secrets;
