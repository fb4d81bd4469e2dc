//! `credential-ledger events tail`: what a downstream developer runs to watch the events. With
//! RabbitMQ, a temporary queue on the exchange (`tail`); without it, the log itself (`tail_log`),
//! with the same lines and the same binding keys.

use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use serde_json::{json, Map, Value};
use sqlx::postgres::PgListener;

use super::topology::matches;
use super::{connect, encode, BusError, BusSettings};
use crate::store::{Store, StoreError, EVENTS_CHANNEL};

/// How often the log is read for new events when nothing wakes the tail: SQLite's appends come
/// from other processes, which cannot notify this one.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// PostgreSQL notifies every append; reading the log this often as well covers a lost listener.
const NOTIFIED_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Events read at once.
const PAGE: i64 = 500;

/// Binds a temporary queue to the exchange with `binding_key` and prints every message as one
/// JSON line on standard output, until the connection ends or `limit` messages were printed.
pub async fn tail(settings: &BusSettings, binding_key: &str, limit: Option<u64>) -> Result<(), BusError> {
    let (_connection, channel) = connect(settings).await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.name().clone(),
            settings.exchange.as_str().into(),
            binding_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut consumer = channel
        .basic_consume(queue.name().clone(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    tracing::info!(exchange = %settings.exchange, binding_key, "tailing");
    let mut printed = 0u64;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let line =
            message_line(delivery.routing_key.as_str(), &delivery.properties, delivery.redelivered, &delivery.data);
        if !print(&line) {
            break;
        }
        delivery.ack(BasicAckOptions::default()).await?;
        printed += 1;
        if limit.is_some_and(|limit| printed >= limit) {
            break;
        }
    }
    Ok(())
}

/// Follows the log itself, without a broker: every event after `after` (the head when `None`,
/// like a queue bound just now) whose routing key `binding_key` matches, as the line the broker
/// tail prints for its message. PostgreSQL wakes it on each append's notification; SQLite is
/// read every 200 ms.
pub async fn tail_log(
    store: &Store,
    binding_key: &str,
    after: Option<i64>,
    limit: Option<u64>,
) -> Result<(), StoreError> {
    let mut listener = match store.postgres() {
        Some(postgres) => {
            // Listening before reading the head: no append falls between the two.
            let mut listener = PgListener::connect_with(postgres.pool()).await?;
            listener.listen(EVENTS_CHANNEL).await?;
            Some(listener)
        }
        None => None,
    };
    let mut position = match after {
        Some(after) => after,
        None => store.head_position().await?,
    };
    tracing::info!(binding_key, position, "tailing the log");
    let mut printed = 0u64;
    loop {
        let events = store.events_after(position, PAGE).await?;
        for event in &events {
            position = event.position;
            let message = encode(event);
            if !matches(binding_key, &message.routing_key) {
                continue;
            }
            // Read from the log, never handed out before: nothing is redelivered.
            if !print(&message_line(&message.routing_key, &message.properties, false, &message.body)) {
                return Ok(());
            }
            printed += 1;
            if limit.is_some_and(|limit| printed >= limit) {
                return Ok(());
            }
        }
        if events.len() as i64 == PAGE {
            continue;
        }
        match &mut listener {
            Some(listener) => {
                tokio::select! {
                    notification = listener.recv() => { notification?; }
                    _ = tokio::time::sleep(NOTIFIED_POLL_INTERVAL) => {}
                }
            }
            None => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// One line of either tail: the message as RabbitMQ delivers it.
fn message_line(routing_key: &str, properties: &BasicProperties, redelivered: bool, data: &[u8]) -> Value {
    let headers: Map<String, Value> = properties
        .headers()
        .as_ref()
        .map(|table| table.inner().iter().map(|(key, value)| (key.to_string(), amqp_to_json(value))).collect())
        .unwrap_or_default();
    let body = serde_json::from_slice::<Value>(data)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into_owned()));
    json!({
        "routing_key": routing_key,
        "message_id": properties.message_id().as_ref().map(|id| id.as_str()),
        "type": properties.kind().as_ref().map(|kind| kind.as_str()),
        "timestamp": properties.timestamp(),
        "headers": headers,
        "redelivered": redelivered,
        "body": body,
    })
}

/// Writes one line on standard output; false once nobody reads it (a closed pipe, `| head`),
/// which ends the tail quietly.
fn print(line: &Value) -> bool {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").and_then(|()| stdout.flush()).is_ok()
}

fn amqp_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::LongLongInt(number) => json!(number),
        AMQPValue::LongInt(number) => json!(number),
        AMQPValue::LongString(text) => json!(String::from_utf8_lossy(text.as_bytes())),
        AMQPValue::ShortString(text) => json!(text.as_str()),
        AMQPValue::Boolean(flag) => json!(flag),
        other => json!(format!("{other:?}")),
    }
}
