//! `credential-ledger events tail`: what a downstream developer runs to watch the bus.

use std::io::Write;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{json, Map, Value};

use super::{connect, BusError, BusSettings};

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
        let properties = &delivery.properties;
        let headers: Map<String, Value> = properties
            .headers()
            .as_ref()
            .map(|table| table.inner().iter().map(|(key, value)| (key.to_string(), amqp_to_json(value))).collect())
            .unwrap_or_default();
        let body = serde_json::from_slice::<Value>(&delivery.data)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&delivery.data).into_owned()));
        let line = json!({
            "routing_key": delivery.routing_key.as_str(),
            "message_id": properties.message_id().as_ref().map(|id| id.as_str()),
            "type": properties.kind().as_ref().map(|kind| kind.as_str()),
            "timestamp": properties.timestamp(),
            "headers": headers,
            "redelivered": delivery.redelivered,
            "body": body,
        });
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (`| head`) ends the tail quietly.
        if writeln!(stdout, "{line}").and_then(|()| stdout.flush()).is_err() {
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
