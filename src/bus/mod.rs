//! RabbitMQ adapter: the message contract (docs/events.md), the topology on the broker, the
//! relay that publishes the log, and `events tail`.

mod relay;
mod tail;
mod topology;

use chrono::SecondsFormat;
use lapin::options::ConfirmSelectOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde::Serialize;
use uuid::Uuid;

pub use relay::{
    Relay, RelaySettings, RelayStatus, RelayStatusSnapshot, DEFAULT_RELAY_BATCH_SIZE, DEFAULT_RELAY_MAX_BACKOFF,
    DEFAULT_RELAY_POLL_INTERVAL, DEFAULT_RELAY_STANDBY_INTERVAL,
};
pub use tail::{tail, tail_log};
pub use topology::{
    declare_exchange, declare_work_queue, matches, routing_key, Topology, CREATED_ROUTING_KEY, LOCKED_ROUTING_KEY,
};

use crate::domain::StoredEvent;

pub const DEFAULT_EXCHANGE: &str = "credential-ledger.events";
const PERSISTENT: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker connection is closed")]
    Disconnected,
    #[error("the broker refused {0} (nack)")]
    Nacked(String),
    #[error("the broker did not confirm {0} in time")]
    Unconfirmed(String),
}

/// Where the bus is, when there is one (`AMQP_URL` has no default). The URL may hold a
/// password: it is never logged.
#[derive(Clone)]
pub struct BusSettings {
    pub url: String,
    pub exchange: String,
}

impl std::fmt::Debug for BusSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusSettings").field("exchange", &self.exchange).finish_non_exhaustive()
    }
}

/// Connects and declares the exchange: durable, topic.
pub async fn connect(settings: &BusSettings) -> Result<(Connection, Channel), BusError> {
    let connection = Connection::connect(&settings.url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    declare_exchange(&channel, &settings.exchange).await?;
    Ok((connection, channel))
}

/// Connects with publisher confirms on.
pub async fn connect_publisher(settings: &BusSettings) -> Result<(Connection, Channel), BusError> {
    let (connection, channel) = connect(settings).await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok((connection, channel))
}

/// The body of every message: the event, minus what only auditors need (metadata, hashes).
#[derive(Debug, Serialize)]
pub struct MessageBody<'a> {
    pub event_id: Uuid,
    pub position: i64,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    /// The version of `data`'s shape for this type (docs/events.md).
    pub schema_version: i32,
    pub stream_id: Uuid,
    pub stream_version: i32,
    pub server_uuid: Uuid,
    pub recorded_at: String,
    pub data: &'a serde_json::Value,
}

/// An event as a message: routing key, body and properties.
pub struct OutgoingMessage {
    pub routing_key: String,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

pub fn encode(event: &StoredEvent) -> OutgoingMessage {
    // The log's payloads are jsonb: their text always parses.
    let data = event.payload_json().unwrap_or_default();
    let body = MessageBody {
        event_id: event.event_id,
        position: event.position,
        event_type: &event.event_type,
        schema_version: event.schema_version,
        stream_id: event.stream_id,
        stream_version: event.stream_version,
        server_uuid: event.server_uuid,
        recorded_at: event.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        data: &data,
    };
    let mut headers = FieldTable::default();
    headers.insert("position".into(), AMQPValue::LongLongInt(event.position));
    headers.insert("schema_version".into(), AMQPValue::LongInt(event.schema_version));
    headers.insert("server_uuid".into(), AMQPValue::LongString(LongString::from(event.server_uuid.to_string())));
    let properties = BasicProperties::default()
        .with_message_id(ShortString::from(event.event_id.to_string()))
        .with_type(ShortString::from(event.event_type.clone()))
        .with_content_type("application/json".into())
        .with_delivery_mode(PERSISTENT)
        .with_timestamp(event.recorded_at.timestamp().max(0) as u64)
        .with_app_id("credential-ledger".into())
        .with_headers(headers);
    OutgoingMessage {
        routing_key: routing_key(&event.event_type),
        // A struct of strings, numbers and JSON always serialises.
        body: serde_json::to_vec(&body).unwrap_or_default(),
        properties,
    }
}
