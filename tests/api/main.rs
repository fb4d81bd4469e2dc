//! HTTP and storage integration tests, against the real PostgreSQL on this machine.
//! Each `#[sqlx::test]` gets a fresh, migrated database. Set `TEST_LOG=1` to see the logs.

mod audit;
mod bad_input;
mod binary;
mod concurrency;
mod credentials;
mod edge;
mod faults;
use credential_ledger_test_support::app as helpers;
mod ledger;
use credential_ledger_test_support::load;
mod operations;
use credential_ledger_test_support::proxy;
mod secrets;
mod tenants;
