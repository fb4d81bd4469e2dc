//! HTTP and storage integration tests, against the real PostgreSQL on this machine.
//! Each `#[sqlx::test]` gets a fresh, migrated database. Set `TEST_LOG=1` to see the logs.

mod audit;
mod bad_input;
mod binary;
mod concurrency;
mod credentials;
mod edge;
mod faults;
#[path = "../support/app.rs"]
mod helpers;
mod ledger;
#[path = "../support/load.rs"]
mod load;
mod operations;
#[path = "../support/proxy.rs"]
mod proxy;
mod secrets;
mod tenants;
