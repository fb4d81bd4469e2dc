//! The embedded ledger's write ceiling for the benchmarks: the naive version of one write on
//! SQLite, as bench/pgbench_write.sql is PostgreSQL's. Each of CONNECTIONS tasks runs one
//! transaction per command (`BEGIN IMMEDIATE`, insert the event, upsert the view row, commit)
//! on a file in WAL mode with `synchronous=FULL`, the durability the ledger itself uses.
//! `cargo run --release --example sqlite_ceiling -- PATH SECONDS CONNECTIONS` prints
//! `{"rps": …, "p50": …}` (transactions per second, mean milliseconds per transaction).

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Connection;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().map_or("target/bench/ceiling.db", String::as_str);
    let seconds: u64 = args.get(1).map_or(Ok(10), |s| s.parse())?;
    let connections: u32 = args.get(2).map_or(Ok(64), |s| s.parse())?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(30));
    let pool = SqlitePoolOptions::new().max_connections(connections).connect_with(options).await?;
    sqlx::query(
        "CREATE TABLE bench_events (position INTEGER PRIMARY KEY, stream_id BLOB NOT NULL, event_type TEXT NOT NULL,
                                    payload TEXT NOT NULL, recorded_at TEXT NOT NULL)",
    )
    .execute(&pool)
    .await?;
    sqlx::query("CREATE TABLE bench_view (uuid BLOB PRIMARY KEY, name TEXT NOT NULL, hold INTEGER NOT NULL)")
        .execute(&pool)
        .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let (done, busy_micros) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (pool, stop, done, busy_micros) = (pool.clone(), stop.clone(), done.clone(), busy_micros.clone());
        tasks.push(tokio::spawn(async move {
            let mut connection = pool.acquire().await?;
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                let n: u32 = rand::random();
                let name = format!("bench {n}");
                let mut tx = connection.begin_with("BEGIN IMMEDIATE").await?;
                sqlx::query(
                    "INSERT INTO bench_events (stream_id, event_type, payload, recorded_at)
                     VALUES (?1, 'CredentialCreated', json_object('name', ?2, 'type', 'API'), ?3)",
                )
                .bind(uuid::Uuid::new_v4())
                .bind(&name)
                .bind(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO bench_view (uuid, name, hold) VALUES (?1, ?2, 0)
                     ON CONFLICT (uuid) DO UPDATE SET hold = excluded.hold",
                )
                .bind(uuid::Uuid::new_v4())
                .bind(&name)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                done.fetch_add(1, Ordering::Relaxed);
                busy_micros.fetch_add(began.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
            Ok::<_, sqlx::Error>(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let transactions = done.load(Ordering::Relaxed) as f64;
    let mean_ms = busy_micros.load(Ordering::Relaxed) as f64 / 1000.0 / transactions.max(1.0);
    println!("{}", serde_json::json!({"rps": transactions / elapsed, "p50": mean_ms}));
    pool.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    Ok(())
}
