//! A consumer on the real RabbitMQ, on an exchange of the test's own.

use std::time::Duration;

use credential_ledger::bus::{BusSettings, RelaySettings};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use serde_json::Value;

/// The top-level fields of every message body, sorted (docs/events.md).
pub const MESSAGE_BODY_FIELDS: [&str; 9] = [
    "data",
    "event_id",
    "position",
    "recorded_at",
    "schema_version",
    "server_uuid",
    "stream_id",
    "stream_version",
    "type",
];

/// A message as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Received {
    pub routing_key: String,
    pub message_id: String,
    pub kind: String,
    pub content_type: String,
    pub persistent: bool,
    pub timestamp: Option<u64>,
    pub position_header: Option<i64>,
    pub server_uuid_header: Option<String>,
    pub schema_version_header: Option<i32>,
    pub body: Value,
    /// When this consumer took it in.
    pub received_at: std::time::SystemTime,
    pub raw: String,
}

impl Received {
    pub fn position(&self) -> i64 {
        self.body["position"].as_i64().expect("a position")
    }
}

pub struct TestBus {
    pub exchange: String,
    pub queue: String,
    durable: bool,
    connection: Connection,
    channel: Channel,
    consumer: Consumer,
}

/// The broker the RabbitMQ suites run against (`on_postgres_and_rabbitmq!` checks it is set).
pub fn amqp_url() -> String {
    std::env::var(crate::backend::TEST_AMQP_URL).expect("TEST_AMQP_URL names the test broker")
}

impl TestBus {
    /// A fresh exchange and an exclusive queue bound to all of it.
    pub async fn new() -> TestBus {
        let exchange = format!("test.credential-ledger.{}", uuid::Uuid::new_v4());
        Self::open(exchange.clone(), format!("{exchange}.all"), false).await
    }

    /// A fresh exchange and a durable queue, which survives a broker restart.
    pub async fn durable() -> TestBus {
        let exchange = format!("test.credential-ledger.{}", uuid::Uuid::new_v4());
        Self::open(exchange.clone(), format!("{exchange}.durable"), true).await
    }

    /// Consumes the same queue again over a new connection (after the broker came back).
    pub async fn reconnect(self) -> TestBus {
        let TestBus { exchange, queue, durable, .. } = self;
        Self::open(exchange, queue, durable).await
    }

    async fn open(exchange: String, queue: String, durable: bool) -> TestBus {
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.expect("RabbitMQ");
        let channel = connection.create_channel().await.unwrap();
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let options = if durable {
            QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() }
        } else {
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() }
        };
        channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await.unwrap();
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let consumer = channel
            .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .unwrap();
        TestBus { exchange, queue, durable, connection, channel, consumer }
    }

    pub fn settings(&self) -> BusSettings {
        BusSettings { url: amqp_url(), exchange: self.exchange.clone() }
    }

    /// Relay settings for tests: a slow poll (so that only notifications make it fast) and quick
    /// reconnection.
    pub fn relay_settings(&self) -> RelaySettings {
        RelaySettings {
            poll_interval: Duration::from_secs(30),
            standby_interval: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            // Bus tests run no webhook worker; the webhook tests turn this on.
            declare_webhook_queue: false,
            ..RelaySettings::new(self.settings())
        }
    }

    pub async fn next(&mut self, wait: Duration) -> Option<Received> {
        let delivery = tokio::time::timeout(wait, self.consumer.next()).await.ok()??.ok()?;
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        let properties = &delivery.properties;
        let header = |name: &str| properties.headers().as_ref().and_then(|headers| headers.inner().get(name).cloned());
        let raw = String::from_utf8(delivery.data.clone()).unwrap();
        Some(Received {
            routing_key: delivery.routing_key.to_string(),
            message_id: properties.message_id().as_ref().map(|id| id.to_string()).unwrap_or_default(),
            kind: properties.kind().as_ref().map(|kind| kind.to_string()).unwrap_or_default(),
            content_type: properties.content_type().as_ref().map(|ct| ct.to_string()).unwrap_or_default(),
            persistent: *properties.delivery_mode() == Some(2),
            timestamp: *properties.timestamp(),
            position_header: match header("position") {
                Some(AMQPValue::LongLongInt(position)) => Some(position),
                _ => None,
            },
            server_uuid_header: match header("server_uuid") {
                Some(AMQPValue::LongString(text)) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
                _ => None,
            },
            schema_version_header: match header("schema_version") {
                Some(AMQPValue::LongInt(version)) => Some(version),
                _ => None,
            },
            body: serde_json::from_str(&raw).expect("a JSON body"),
            raw,
            received_at: std::time::SystemTime::now(),
        })
    }

    /// The next `count` messages, waiting at most `wait` for each.
    pub async fn take(&mut self, count: usize, wait: Duration) -> Vec<Received> {
        let mut received = Vec::with_capacity(count);
        while received.len() < count {
            match self.next(wait).await {
                Some(message) => received.push(message),
                None => panic!("only {} of {count} messages arrived: {received:#?}", received.len()),
            }
        }
        received
    }

    /// Every message until none arrives for `quiet`.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Received> {
        let mut received = Vec::new();
        while let Some(message) = self.next(quiet).await {
            received.push(message);
        }
        received
    }

    /// Deletes queues the service declared on this test's exchange.
    pub async fn delete_queues(&self, queues: &[String]) {
        for queue in queues {
            let _ = self.channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
        }
    }

    /// Drops every message waiting in `queue` (as a broker that lost them would); how many.
    pub async fn purge(&self, queue: &str) -> u32 {
        self.channel.queue_purge(queue.into(), QueuePurgeOptions::default()).await.unwrap()
    }

    /// How many messages wait in `queue`.
    pub async fn depth(&self, queue: &str) -> u32 {
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let declared = self.channel.queue_declare(queue.into(), options, FieldTable::default()).await.unwrap();
        declared.message_count()
    }

    pub async fn delete(self) {
        let _ = self.channel.queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default()).await;
        let _ = self.channel.exchange_delete(self.exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
        let _ = self.connection.close(200, "done".into()).await;
    }
}

/// Positions in first-seen order, after dropping repeats of a `message_id`: what a consumer that
/// deduplicates sees.
pub fn deduplicated_positions(messages: &[Received]) -> Vec<i64> {
    let mut seen = std::collections::HashSet::new();
    messages.iter().filter(|message| seen.insert(message.message_id.clone())).map(Received::position).collect()
}
