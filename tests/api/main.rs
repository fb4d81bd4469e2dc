//! HTTP and storage integration tests, each on a ledger of its own: on the embedded backend (a
//! SQLite file), and on a fresh PostgreSQL database when `TEST_DATABASE_URL` names a server
//! (`on_both_backends!`; `on_postgres!` for what only PostgreSQL has). Set `TEST_LOG=1` to see
//! the logs.

mod audit;
mod bad_input;
mod binary;
mod concurrency;
mod credentials;
mod deadlines;
mod edge;
mod faults;
use credential_ledger_test_support::app as helpers;
mod ledger;
use credential_ledger_test_support::load;
mod operations;
mod portability;
mod relay_auth;
use credential_ledger_test_support::proxy;
mod secrets;
mod tenants;
