//! Helpers for bench/run.py, against a running service's database and bus.
//!
//! - `seed DATABASE_URL SERVER_NAME COUNT [EXPIRES_IN_MS]`: a server with COUNT credentials,
//!   appended through the store in large batches (the same decide/append/project path as the
//!   writer); prints the key. With EXPIRES_IN_MS, every seeded credential expires, spread over
//!   the one second that starts EXPIRES_IN_MS after the seeding began.
//! - `deadlines DATABASE_URL SERVER_UUID COUNT TIMEOUT_S`: waits until COUNT deadline locks of
//!   that server are in the log, then prints from the log itself how late they were recorded
//!   (`recorded_at - deadline`), how long after the last deadline the last lock came, and how
//!   many credentials were locked more than once (there must be none).
//! - `key`: prints a well-formed key that was never issued.
//! - `lag BASE_URL KEY AMQP_URL EXCHANGE COUNT`: revokes COUNT credentials one after another and
//!   measures revoke → bus message and revoke → webhook received; prints JSON with percentiles.
//!   With `-` for AMQP_URL (in-process delivery, no broker), the webhook alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use credential_ledger::app::provision::provision_server;
use credential_ledger::domain::{
    handle, Actor, ApiKey, Command, CredentialName, CredentialType, EventMetadata, ExpiresAt, KeyMaterial, ServerName,
    CREDENTIAL_LOCKED,
};
use credential_ledger::store::{DatabaseSettings, Decision, NewEvent, Store};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{json, Value};
use tokio::sync::Notify;
use uuid::Uuid;

const SEED_BATCH: usize = 2000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("seed") => {
            let expires_in = args.get(4).map(|ms| ms.parse().map(Duration::from_millis)).transpose()?;
            seed(&args[1], &args[2], args[3].parse()?, expires_in).await
        }
        Some("deadlines") => deadlines(&args[1], args[2].parse()?, args[3].parse()?, args[4].parse()?).await,
        Some("key") => {
            println!("{}", ApiKey::generate(&mut rand::rngs::OsRng).expose_secret());
            Ok(())
        }
        Some("lag") => lag(&args[1], &args[2], &args[3], &args[4], args[5].parse()?).await,
        _ => anyhow::bail!("usage: bench_tool seed|lag …"),
    }
}

async fn seed(database_url: &str, server_name: &str, count: usize, expires_in: Option<Duration>) -> anyhow::Result<()> {
    let started = chrono::Utc::now();
    let settings = DatabaseSettings {
        url: database_url.to_owned(),
        max_connections: 4,
        acquire_timeout: Duration::from_secs(30),
        query_timeout: Duration::from_secs(300),
    };
    let store = Store::open(&settings).await?;
    store.prepare().await?;
    let first = provision_server(
        &store,
        &ServerName::parse(server_name).map_err(anyhow::Error::msg)?,
        CredentialName::parse("Bench key").map_err(anyhow::Error::msg)?,
    )
    .await
    .map_err(|error| anyhow::anyhow!("{error}"))?;
    let metadata = EventMetadata { actor: Actor::Cli, request_id: None, source_ip: None };
    // A CSPRNG seeded from the OS, as the service's own keys: `OsRng` makes a system call per
    // character of a key.
    let mut rng = rand::thread_rng();
    let mut remaining = count.saturating_sub(1);
    let mut head = None;
    while remaining > 0 {
        let batch = remaining.min(SEED_BATCH);
        let mut commands = Vec::with_capacity(batch);
        for i in 0..batch {
            let key = ApiKey::generate(&mut rng);
            commands.push(Command::Create {
                server_uuid: first.server_uuid,
                credential_uuid: Uuid::new_v4(),
                name: CredentialName::parse(&format!("Seeded {}", remaining - i)).map_err(anyhow::Error::msg)?,
                credential_type: if i % 2 == 0 { CredentialType::Api } else { CredentialType::Smtp },
                hold: false,
                key: KeyMaterial::from(&key),
                expires_at: match expires_in {
                    Some(expires_in) => {
                        let seeded = (count - remaining + i) as i64;
                        let spread = chrono::Duration::microseconds(seeded * 1_000_000 / count as i64);
                        let at = started + chrono::Duration::from_std(expires_in)? + spread;
                        Some(ExpiresAt::at(at, chrono::Utc::now()).map_err(anyhow::Error::msg)?)
                    }
                    None => None,
                },
            });
        }
        let appended = store
            .append(head.take(), &[], |ledger, now| {
                let mut events = Vec::with_capacity(batch);
                for command in &commands {
                    if let Ok(handled) = handle(ledger, command, &metadata.actor, now) {
                        events.extend(
                            handled.events.into_iter().map(|pending| NewEvent { pending, metadata: &metadata }),
                        );
                    }
                }
                Decision { servers: Vec::new(), events, value: () }
            })
            .await?;
        head = Some(appended.head);
        remaining -= batch;
    }
    println!("{}", json!({"server_uuid": first.server_uuid, "key": first.key.expose_secret()}));
    Ok(())
}

async fn deadlines(database_url: &str, server_uuid: Uuid, count: usize, timeout_s: u64) -> anyhow::Result<()> {
    let settings = DatabaseSettings {
        url: database_url.to_owned(),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(30),
        query_timeout: Duration::from_secs(60),
    };
    let store = Store::open(&settings).await?;
    let started = Instant::now();
    let mut position = 0;
    // (recorded_at, deadline) of each deadline lock, and the locks per credential.
    let mut locks = Vec::new();
    let mut per_credential: HashMap<Uuid, usize> = HashMap::new();
    while locks.len() < count {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(timeout_s), "{} of {count} locked", locks.len());
        let events = store.events_after(position, 5000).await?;
        if events.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        for event in &events {
            position = event.position;
            if event.server_uuid != server_uuid || event.event_type != CREDENTIAL_LOCKED {
                continue;
            }
            *per_credential.entry(event.stream_id).or_default() += 1;
            let payload: Value = serde_json::from_str(&event.payload)?;
            if let Some(deadline) = payload["deadline"].as_str() {
                let deadline: chrono::DateTime<chrono::Utc> = deadline.parse()?;
                locks.push((event.recorded_at, deadline));
            }
        }
    }
    let mut lateness: Vec<f64> = locks
        .iter()
        .map(|(recorded, deadline)| (*recorded - *deadline).num_microseconds().unwrap_or(0) as f64 / 1e3)
        .collect();
    lateness.sort_by(f64::total_cmp);
    let last_deadline = locks.iter().map(|(_, deadline)| *deadline).max();
    let last_lock = locks.iter().map(|(recorded, _)| *recorded).max();
    let all_locked_after_ms = match (last_deadline, last_lock) {
        (Some(deadline), Some(lock)) => (lock - deadline).num_microseconds().unwrap_or(0) as f64 / 1e3,
        _ => f64::NAN,
    };
    println!(
        "{}",
        json!({
            "locks": locks.len(),
            "locked_twice": per_credential.values().filter(|locks| **locks > 1).count(),
            "lateness_ms": {"p50": percentile(&lateness, 0.5), "p99": percentile(&lateness, 0.99),
                            "max": lateness.last().copied().unwrap_or(f64::NAN)},
            "all_locked_after_last_deadline_ms": all_locked_after_ms,
        })
    );
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn lag(base_url: &str, key: &str, amqp_url: &str, exchange: &str, count: usize) -> anyhow::Result<()> {
    // The webhook receiver: remembers when each credential's webhook arrived.
    let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let notify = Arc::new(Notify::new());
    let app = {
        let (arrived, notify) = (arrived.clone(), notify.clone());
        Router::new().route(
            "/hook",
            post(move |body: Bytes| async move {
                let now = Instant::now();
                if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                    if let Some(uuid) = value["data"]["credential"]["uuid"].as_str() {
                        arrived.lock().unwrap().insert(uuid.to_owned(), now);
                        notify.notify_waiters();
                    }
                }
                "ok"
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::new();
    let call = |path: &str, body: Value| {
        client.post(format!("{base_url}/api/v1/{path}")).header("X-Server-API-Key", key).json(&body).send()
    };
    let registered: Value = call("webhooks/create", json!({ "url": hook_url })).await?.json().await?;
    anyhow::ensure!(registered["status"] == "success", "webhook registration failed: {registered}");

    let mut consumer = match amqp_url {
        "-" => None,
        url => Some(bus_consumer(url, exchange).await?),
    };

    // From sending the revoke (its own latency included), and from its answer (the commit is
    // acknowledged: what the relay and the worker add). A message may beat the answer: below 0.
    let mut bus_ms = Vec::with_capacity(count);
    let mut hook_ms = Vec::with_capacity(count);
    let mut bus_after_ack_ms = Vec::with_capacity(count);
    let mut hook_after_ack_ms = Vec::with_capacity(count);
    for i in 0..count {
        let created: Value = call("credentials/create", json!({"name": format!("lag {i}")})).await?.json().await?;
        let uuid = created["data"]["uuid"].as_str().unwrap_or_default().to_owned();
        let started = Instant::now();
        let revoked = call("credentials/revoke", json!({ "uuid": uuid })).await?;
        anyhow::ensure!(revoked.status().is_success(), "revoke failed");
        let acknowledged = started.elapsed().as_secs_f64() * 1000.0;
        while let Some((_, consumer)) = consumer.as_mut() {
            let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("the bus consumer ended"))??;
            let body: Value = serde_json::from_slice(&delivery.data)?;
            if body["stream_id"] == uuid.as_str() {
                let at = started.elapsed().as_secs_f64() * 1000.0;
                bus_ms.push(at);
                bus_after_ack_ms.push(at - acknowledged);
                break;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let waiting = notify.notified();
            if let Some(at) = arrived.lock().unwrap().get(&uuid) {
                let at = (*at - started).as_secs_f64() * 1000.0;
                hook_ms.push(at);
                hook_after_ack_ms.push(at - acknowledged);
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "no webhook for {uuid}");
            let _ = tokio::time::timeout(Duration::from_millis(100), waiting).await;
        }
    }
    for figures in [&mut bus_ms, &mut hook_ms, &mut bus_after_ack_ms, &mut hook_after_ack_ms] {
        figures.sort_by(f64::total_cmp);
    }
    // No broker: the bus figures are absent (null), not zero.
    let figure = |sorted: &[f64], p: f64| (!sorted.is_empty()).then(|| percentile(sorted, p));
    println!(
        "{}",
        json!({
            "count": count,
            "bus_p50_ms": figure(&bus_ms, 0.5), "bus_p99_ms": figure(&bus_ms, 0.99),
            "webhook_p50_ms": percentile(&hook_ms, 0.5), "webhook_p99_ms": percentile(&hook_ms, 0.99),
            "bus_after_ack_p50_ms": figure(&bus_after_ack_ms, 0.5),
            "bus_after_ack_p99_ms": figure(&bus_after_ack_ms, 0.99),
            "webhook_after_ack_p50_ms": percentile(&hook_after_ack_ms, 0.5),
            "webhook_after_ack_p99_ms": percentile(&hook_after_ack_ms, 0.99),
        })
    );
    Ok(())
}

/// An exclusive queue on `exchange` bound to every lock.
/// The connection comes back with it: the consumer lasts as long as the caller keeps both.
async fn bus_consumer(amqp_url: &str, exchange: &str) -> anyhow::Result<(lapin::Connection, lapin::Consumer)> {
    let connection = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let queue = channel
        .queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await?;
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            "credential.locked".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    Ok((connection, consumer))
}
