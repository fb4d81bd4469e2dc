//! The events of the ledger: the only facts it records. Adding a variant or a schema version
//! is the way to change what is recorded; stored events stay readable forever.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::credential::{CredentialName, CredentialType};
use super::key::KeyHash;

pub const CREDENTIAL_CREATED: &str = "CredentialCreated";
pub const CREDENTIAL_LOCKED: &str = "CredentialLocked";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    CredentialCreated(CredentialCreated),
    CredentialLocked(CredentialLocked),
}

/// A credential came into being. It carries the key's hash and display prefix, never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialCreated {
    pub credential_id: i64,
    pub server_uuid: Uuid,
    pub name: CredentialName,
    #[serde(rename = "type")]
    pub credential_type: CredentialType,
    pub hold: bool,
    pub key_hash: KeyHash,
    pub key_prefix: String,
    /// The credential this one replaces, when it was made by a rotation.
    pub replaces: Option<Uuid>,
}

/// A credential was put on hold: it no longer authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialLocked {
    pub reason: LockReason,
    /// The credential that replaces this one, when it was locked by a rotation.
    pub replaced_by: Option<Uuid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockReason {
    Revoked,
    Rotated,
}

#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    #[error("unknown event type {event_type:?} (schema version {schema_version})")]
    UnknownType { event_type: String, schema_version: i32 },
    #[error("{event_type} payload does not match schema version {schema_version}: {source}")]
    Payload { event_type: String, schema_version: i32, source: serde_json::Error },
}

impl Event {
    /// The schema version every event is written with today.
    pub const SCHEMA_VERSION: i32 = 1;

    pub fn event_type(&self) -> &'static str {
        match self {
            Event::CredentialCreated(_) => CREDENTIAL_CREATED,
            Event::CredentialLocked(_) => CREDENTIAL_LOCKED,
        }
    }

    pub fn payload(&self) -> serde_json::Value {
        let encoded = match self {
            Event::CredentialCreated(created) => serde_json::to_value(created),
            Event::CredentialLocked(locked) => serde_json::to_value(locked),
        };
        // Plain structs of strings, numbers and booleans always serialise.
        encoded.unwrap_or(serde_json::Value::Null)
    }

    /// Reads a stored event back. Future schema versions upcast older payloads here.
    pub fn decode(
        event_type: &str,
        schema_version: i32,
        payload: &serde_json::Value,
    ) -> Result<Event, EventDecodeError> {
        Event::decode_from(event_type, schema_version, payload)
    }

    /// `decode`, straight from the payload's JSON text.
    pub fn decode_text(event_type: &str, schema_version: i32, payload: &str) -> Result<Event, EventDecodeError> {
        Event::decode_from(event_type, schema_version, &mut serde_json::Deserializer::from_str(payload))
    }

    fn decode_from<'de>(
        event_type: &str,
        schema_version: i32,
        payload: impl serde::Deserializer<'de, Error = serde_json::Error>,
    ) -> Result<Event, EventDecodeError> {
        let wrap = |source| EventDecodeError::Payload { event_type: event_type.to_owned(), schema_version, source };
        match (event_type, schema_version) {
            (CREDENTIAL_CREATED, 1) => {
                CredentialCreated::deserialize(payload).map(Event::CredentialCreated).map_err(wrap)
            }
            (CREDENTIAL_LOCKED, 1) => CredentialLocked::deserialize(payload).map(Event::CredentialLocked).map_err(wrap),
            _ => Err(EventDecodeError::UnknownType { event_type: event_type.to_owned(), schema_version }),
        }
    }
}

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// An API call authenticated by this credential.
    Credential { uuid: Uuid },
    /// An operator at the command line.
    Cli,
}

impl Actor {
    /// The credential that acted, if a credential did.
    pub fn credential_uuid(&self) -> Option<Uuid> {
        match self {
            Actor::Credential { uuid } => Some(*uuid),
            Actor::Cli => None,
        }
    }
}

/// Context recorded with every event, for auditors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    pub actor: Actor,
    pub request_id: Option<String>,
    pub source_ip: Option<String>,
}

/// An event decided but not yet given its place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    pub stream_id: Uuid,
    pub stream_version: i32,
    pub server_uuid: Uuid,
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_their_stored_form() {
        let events = [
            Event::CredentialCreated(CredentialCreated {
                credential_id: 7,
                server_uuid: Uuid::from_u128(1),
                name: CredentialName::parse("Production API").unwrap(),
                credential_type: CredentialType::Api,
                hold: false,
                key_hash: KeyHash([9; 32]),
                key_prefix: "vml_AbCd".into(),
                replaces: Some(Uuid::from_u128(2)),
            }),
            Event::CredentialLocked(CredentialLocked {
                reason: LockReason::Rotated,
                replaced_by: Some(Uuid::from_u128(3)),
            }),
        ];
        for event in events {
            let decoded = Event::decode(event.event_type(), Event::SCHEMA_VERSION, &event.payload()).unwrap();
            assert_eq!(decoded, event);
        }
    }

    #[test]
    fn stored_payloads_keep_their_documented_field_names() {
        let locked = Event::CredentialLocked(CredentialLocked { reason: LockReason::Revoked, replaced_by: None });
        assert_eq!(locked.payload(), serde_json::json!({"reason": "revoked", "replaced_by": null}));
    }

    #[test]
    fn unknown_types_and_versions_are_reported_not_guessed() {
        assert!(matches!(
            Event::decode("CredentialCreated", 99, &serde_json::json!({})),
            Err(EventDecodeError::UnknownType { .. })
        ));
        assert!(matches!(
            Event::decode("CredentialLocked", 1, &serde_json::json!({"reason": "lost"})),
            Err(EventDecodeError::Payload { .. })
        ));
    }
}
