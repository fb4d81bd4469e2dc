//! The databases tests run on: each test gets a ledger of its own, on the embedded backend
//! (a SQLite file in a fresh directory) and, when `TEST_DATABASE_URL` names a PostgreSQL server,
//! on a fresh database there too. Suites that hold for both backends are written once and run on
//! each with `on_both_backends!`; PostgreSQL-only ones use `on_postgres!`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use credential_ledger::domain::Credential;
use credential_ledger::store::{DatabaseSettings, Store};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};
use uuid::Uuid;

/// The variable that names the PostgreSQL server the PostgreSQL suites create their databases on.
pub const TEST_DATABASE_URL: &str = "TEST_DATABASE_URL";
/// The variable that names the RabbitMQ broker the RabbitMQ suites declare their exchanges on.
pub const TEST_AMQP_URL: &str = "TEST_AMQP_URL";

/// Says once per test binary, on the terminal (libtest captures only the `print!` family, not a
/// direct write), that some tests did not run and how to run them.
pub fn skip(what: &str) {
    static SAID: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let mut said = SAID.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if said.insert(what.to_owned()) {
        let _ = writeln!(std::io::stderr(), "skipped: {what}");
    }
}

pub fn skip_without_postgres() {
    skip(
        "the PostgreSQL tests: set TEST_DATABASE_URL (e.g. TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres) to run them",
    );
}

/// Whether `TEST_AMQP_URL` names a RabbitMQ broker for the RabbitMQ suites.
pub fn rabbitmq_configured() -> bool {
    std::env::var(TEST_AMQP_URL).is_ok_and(|url| !url.is_empty())
}

pub fn skip_without_rabbitmq() {
    skip(
        "the RabbitMQ tests: set TEST_AMQP_URL and TEST_DATABASE_URL (e.g. TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f) to run them",
    );
}

/// One test's own ledger database. Dropping it deletes the database.
pub struct TestDb {
    url: String,
    place: Place,
}

enum Place {
    Sqlite { dir: PathBuf },
    Postgres { server_url: String, name: String },
}

impl TestDb {
    /// A ledger file in a directory of its own under the system's temporary directory.
    pub async fn sqlite() -> TestDb {
        let dir = std::env::temp_dir().join(format!("credential-ledger-test-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let url = format!("sqlite://{}", dir.join("ledger.db").display());
        TestDb { url, place: Place::Sqlite { dir } }
    }

    /// A fresh database on the server `TEST_DATABASE_URL` names, or `None` when it names none.
    pub async fn postgres() -> Option<TestDb> {
        let server_url = std::env::var(TEST_DATABASE_URL).ok().filter(|url| !url.is_empty())?;
        let name = format!("test_ledger_{}", Uuid::new_v4().simple());
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&server_url)
            .await
            .unwrap_or_else(|error| panic!("TEST_DATABASE_URL is set, but its server cannot be reached: {error}"));
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.expect("a test database");
        admin.close().await;
        let url = with_database(&server_url, &name);
        Some(TestDb { url, place: Place::Postgres { server_url, name } })
    }

    /// The URL the service and the binary are given (`DATABASE_URL`).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.place, Place::Postgres { .. })
    }

    /// The ledger, opened and migrated as `serve` does.
    pub async fn store(&self) -> Store {
        let store = Store::open(&DatabaseSettings::new(&self.url)).await.expect("the test ledger opens");
        store.prepare().await.expect("the test ledger's schema");
        store
    }

    /// A pool of the test's own on the PostgreSQL database (the test runs on PostgreSQL only).
    pub async fn pg_pool(&self) -> PgPool {
        match self.raw().await {
            Raw::Postgres(pool) => pool,
            Raw::Sqlite(_) => panic!("a PostgreSQL-only test ran on SQLite"),
        }
    }

    /// A connection pool of the test's own, for what the service must not do itself: reading
    /// its tables directly, tampering with them.
    pub async fn raw(&self) -> Raw {
        match &self.place {
            Place::Postgres { .. } => Raw::Postgres(
                PgPoolOptions::new().max_connections(4).connect(&self.url).await.expect("the test database"),
            ),
            Place::Sqlite { .. } => {
                let options: SqliteConnectOptions = self.url.parse().expect("a SQLite URL");
                Raw::Sqlite(SqlitePoolOptions::new().max_connections(4).connect_with(options).await.expect("the file"))
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.place {
            Place::Sqlite { dir } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            // Dropping is async and this is not: a thread of its own with a runtime of its own,
            // which works whether or not the test's runtime is still there.
            Place::Postgres { server_url, name } => {
                let (server_url, name) = (server_url.clone(), name.clone());
                let dropped = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                    runtime.block_on(async {
                        let admin = PgPoolOptions::new().max_connections(1).connect(&server_url).await?;
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await?;
                        admin.close().await;
                        Ok::<_, sqlx::Error>(())
                    })?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                });
                let _ = dropped.join();
            }
        }
    }
}

/// `server_url` with its database replaced by `name` (query parameters kept).
fn with_database(server_url: &str, name: &str) -> String {
    let (base, query) = server_url.split_once('?').map_or((server_url, None), |(base, query)| (base, Some(query)));
    let after_scheme = base.find("://").map_or(0, |at| at + 3);
    let server = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

/// Direct access to a test ledger's tables. The statements that differ between the engines are
/// written per engine where a test uses them; these are the ones that read the same on both.
#[derive(Clone)]
pub enum Raw {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Raw {
    /// The chain head as stored: what must not move when a request is refused.
    pub async fn head(&self) -> (i64, Vec<u8>) {
        const HEAD: &str = "SELECT position, hash FROM chain_head";
        match self {
            Raw::Postgres(pool) => sqlx::query_as(HEAD).fetch_one(pool).await,
            Raw::Sqlite(pool) => sqlx::query_as(HEAD).fetch_one(pool).await,
        }
        .expect("the chain head")
    }

    /// Runs `statement`, as the test's own superuser-like connection.
    pub async fn execute(&self, statement: &str) -> Result<u64, sqlx::Error> {
        match self {
            Raw::Postgres(pool) => sqlx::query(statement).execute(pool).await.map(|done| done.rows_affected()),
            Raw::Sqlite(pool) => sqlx::query(statement).execute(pool).await.map(|done| done.rows_affected()),
        }
    }

    /// Runs `statements` in one transaction with the log's append-only triggers off, as an
    /// attacker with write access to the database would: what `verify` must then find.
    pub async fn tamper(&self, statements: &[&str]) {
        match self {
            Raw::Postgres(pool) => {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query("ALTER TABLE events DISABLE TRIGGER events_are_immutable").execute(&mut *tx).await.unwrap();
                for statement in statements {
                    sqlx::query(statement).execute(&mut *tx).await.unwrap();
                }
                sqlx::query("ALTER TABLE events ENABLE TRIGGER events_are_immutable").execute(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
            }
            Raw::Sqlite(pool) => {
                // Takes the write lock at once: a deferred transaction that reads first cannot
                // wait for the service's own writes (the usage flusher, the dispatcher) to end.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
                let triggers: Vec<(String, String)> = sqlx::query_as(
                    "SELECT name, sql FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = 'events'",
                )
                .fetch_all(&mut *tx)
                .await
                .unwrap();
                for (name, _) in &triggers {
                    sqlx::query(&format!("DROP TRIGGER {name}")).execute(&mut *tx).await.unwrap();
                }
                for statement in statements {
                    sqlx::query(statement).execute(&mut *tx).await.unwrap();
                }
                for (_, sql) in &triggers {
                    sqlx::query(sql).execute(&mut *tx).await.unwrap();
                }
                tx.commit().await.unwrap();
            }
        }
    }
}

/// The whole credential view, in id order, as the service stores it.
pub async fn view_of(store: &Store) -> Vec<Credential> {
    let mut view = Vec::new();
    store.view_snapshot(|_| {}, |credential| view.push(credential)).await.expect("the view");
    view.sort_by_key(|credential| credential.id);
    view
}

/// Runs each named `async fn(TestDb)` as two tests, `<name>::sqlite` and `<name>::postgres`; the
/// second says it was skipped when `TEST_DATABASE_URL` is not set. Attributes before a name (an
/// `#[ignore]`) go on both.
#[macro_export]
macro_rules! on_both_backends {
    ($($(#[$meta:meta])* $test:ident),+ $(,)?) => {$(
        mod $test {
            $(#[$meta])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$test($crate::backend::TestDb::sqlite().await).await
            }

            $(#[$meta])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                match $crate::backend::TestDb::postgres().await {
                    Some(db) => super::$test(db).await,
                    None => $crate::backend::skip_without_postgres(),
                }
            }
        }
    )+};
}

/// Runs each named `async fn(TestDb)` on PostgreSQL only (what only PostgreSQL has: its lock
/// waits, its sessions, a proxy in front of its port), or says it was skipped.
#[macro_export]
macro_rules! on_postgres {
    ($($(#[$meta:meta])* $test:ident),+ $(,)?) => {$(
        mod $test {
            $(#[$meta])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                match $crate::backend::TestDb::postgres().await {
                    Some(db) => super::$test(db).await,
                    None => $crate::backend::skip_without_postgres(),
                }
            }
        }
    )+};
}

/// Runs each named `async fn(TestDb)` on PostgreSQL with RabbitMQ (`TEST_AMQP_URL`): the relay,
/// the bus and the broker's webhook workers. Says it was skipped when either is missing.
#[macro_export]
macro_rules! on_postgres_and_rabbitmq {
    ($($(#[$meta:meta])* $test:ident),+ $(,)?) => {$(
        mod $test {
            $(#[$meta])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_rabbitmq() {
                if !$crate::backend::rabbitmq_configured() {
                    return $crate::backend::skip_without_rabbitmq();
                }
                match $crate::backend::TestDb::postgres().await {
                    Some(db) => super::$test(db).await,
                    None => $crate::backend::skip_without_rabbitmq(),
                }
            }
        }
    )+};
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn a_server_url_gets_the_test_database_in_place_of_its_own() {
        assert_eq!(with_database("postgres://u@h:5432/postgres", "t1"), "postgres://u@h:5432/t1");
        assert_eq!(with_database("postgres://u@h:5432", "t1"), "postgres://u@h:5432/t1");
        assert_eq!(with_database("postgres://u@h/db?sslmode=disable", "t1"), "postgres://u@h/t1?sslmode=disable");
    }
}
