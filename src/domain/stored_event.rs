//! An event as the log holds it, and the one way to fold it into a credential's state: decode
//! its payload by its type and schema version, then `apply` it. Appending (loading the touched
//! credentials), rebuilding the view, the replica and every replay fold through here.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::apply::apply;
use super::chain::ChainLink;
use super::credential::Credential;
use super::event::{Actor, Event};

/// One row of the log: the event as stored, its place, and its chain link. Serialised, it is an
/// event record of an export (the hashes as hex).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredEvent {
    pub position: i64,
    pub stream_id: Uuid,
    pub stream_version: i32,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub server_uuid: Uuid,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
    #[serde(with = "hex_bytes")]
    pub prev_hash: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub hash: Vec<u8>,
}

/// A stored event that cannot be folded: the log holds something this build cannot read, or
/// something `apply` refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("position {position}: {reason}")]
pub struct UnreadableEvent {
    pub position: i64,
    pub reason: String,
}

impl StoredEvent {
    pub fn decode(&self) -> Result<Event, UnreadableEvent> {
        Event::decode(&self.event_type, self.schema_version, &self.payload).map_err(|error| self.unreadable(error))
    }

    /// The state of this event's credential after it, from its state before (`None` before its
    /// first event).
    pub fn apply_to(&self, previous: Option<&Credential>) -> Result<Credential, UnreadableEvent> {
        let event = self.decode()?;
        apply(previous, self.stream_id, self.stream_version, self.recorded_at, &event)
            .map_err(|error| self.unreadable(error))
    }

    /// Everything about this event that its hash covers.
    pub fn chain_link(&self) -> ChainLink<'_> {
        ChainLink {
            position: self.position,
            stream_id: self.stream_id,
            stream_version: self.stream_version,
            event_id: self.event_id,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            server_uuid: self.server_uuid,
            payload: &self.payload,
            metadata: &self.metadata,
            recorded_at: self.recorded_at,
        }
    }

    /// Who caused the event, as its metadata records it.
    pub fn actor(&self) -> Option<Actor> {
        self.metadata.get("actor").and_then(|actor| Actor::deserialize(actor).ok())
    }

    fn unreadable(&self, reason: impl std::fmt::Display) -> UnreadableEvent {
        UnreadableEvent { position: self.position, reason: reason.to_string() }
    }
}

/// Bytes as lowercase hex text, the way exports write hashes.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        hex::decode(text.as_ref()).map_err(|_| serde::de::Error::custom("not hex"))
    }
}
