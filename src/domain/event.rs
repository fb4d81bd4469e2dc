//! The events of the ledger: the only facts it records. Adding a variant or a schema version
//! is the way to change what is recorded; stored events stay readable forever.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::credential::{CredentialName, CredentialType};
use super::key::KeyHash;

pub const CREDENTIAL_CREATED: &str = "CredentialCreated";
pub const CREDENTIAL_LOCKED: &str = "CredentialLocked";
pub const CREDENTIAL_REPLACED: &str = "CredentialReplaced";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    CredentialCreated(CredentialCreated),
    /// A rotation with a grace period: the old credential keeps working until `locks_at`.
    CredentialReplaced(CredentialReplaced),
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
    /// When the key stops working by itself. Only schema version 2 carries it: a credential
    /// without one is written as version 1, byte for byte as before.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "micros_opt")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// The credential was replaced by a rotation with a grace period: its key keeps working until
/// `locks_at`, when a deadline lock records that it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialReplaced {
    pub replaced_by: Uuid,
    #[serde(with = "micros")]
    pub locks_at: DateTime<Utc>,
}

/// A credential was put on hold: it no longer authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialLocked {
    pub reason: LockReason,
    /// The credential that replaces this one, when it was locked by a rotation.
    pub replaced_by: Option<Uuid>,
    /// The deadline this lock records, when a deadline (not a request) locked the credential:
    /// schema version 2. Its `recorded_at` is when the lock was appended, never before this.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "micros_opt")]
    pub deadline: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockReason {
    Revoked,
    Rotated,
    Expired,
}

#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    #[error("unknown event type {event_type:?} (schema version {schema_version})")]
    UnknownType { event_type: String, schema_version: i32 },
    #[error("{event_type} payload does not match schema version {schema_version}: {source}")]
    Payload { event_type: String, schema_version: i32, source: serde_json::Error },
}

impl Event {
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::CredentialCreated(_) => CREDENTIAL_CREATED,
            Event::CredentialReplaced(_) => CREDENTIAL_REPLACED,
            Event::CredentialLocked(_) => CREDENTIAL_LOCKED,
        }
    }

    /// The schema version this event is written with: 2 for the shapes that carry a deadline,
    /// so that every event written before deadlines existed keeps its version and its bytes.
    pub fn schema_version(&self) -> i32 {
        match self {
            Event::CredentialCreated(CredentialCreated { expires_at: Some(_), .. })
            | Event::CredentialLocked(CredentialLocked { deadline: Some(_), .. }) => 2,
            _ => 1,
        }
    }

    pub fn payload(&self) -> serde_json::Value {
        let encoded = match self {
            Event::CredentialCreated(created) => serde_json::to_value(created),
            Event::CredentialReplaced(replaced) => serde_json::to_value(replaced),
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
        let event = match (event_type, schema_version) {
            (CREDENTIAL_CREATED, 1 | 2) => CredentialCreated::deserialize(payload).map(Event::CredentialCreated),
            (CREDENTIAL_REPLACED, 1) => CredentialReplaced::deserialize(payload).map(Event::CredentialReplaced),
            (CREDENTIAL_LOCKED, 1 | 2) => CredentialLocked::deserialize(payload).map(Event::CredentialLocked),
            _ => return Err(EventDecodeError::UnknownType { event_type: event_type.to_owned(), schema_version }),
        }
        .map_err(wrap)?;
        // Each version has exactly its own fields: a deadline in a version 1 payload, or a
        // version 2 payload without one, was not written by this service.
        if event.schema_version() != schema_version {
            let field = if event_type == CREDENTIAL_CREATED { "expires_at" } else { "deadline" };
            let presence = if schema_version == 1 { "has" } else { "lacks" };
            return Err(wrap(serde::de::Error::custom(format!("the payload {presence} `{field}`"))));
        }
        Ok(event)
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
    /// A deadline that fell due: the service itself, recording a lock that was already in
    /// force. It may append nothing else.
    Deadline,
}

impl Actor {
    /// The credential that acted, if a credential did.
    pub fn credential_uuid(&self) -> Option<Uuid> {
        match self {
            Actor::Credential { uuid } => Some(*uuid),
            Actor::Cli | Actor::Deadline => None,
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

/// Instants in payloads: RFC 3339 in UTC with exactly six fractional digits, the log's
/// precision, so that a payload's text (and the hash over it) never depends on the library.
pub(crate) mod micros {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(deserializer)
    }
}

mod micros_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => super::micros::serialize(at, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<DateTime<Utc>>::deserialize(deserializer)
    }
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
                expires_at: None,
            }),
            Event::CredentialCreated(CredentialCreated {
                credential_id: 8,
                server_uuid: Uuid::from_u128(1),
                name: CredentialName::parse("Expiring").unwrap(),
                credential_type: CredentialType::Smtp,
                hold: false,
                key_hash: KeyHash([8; 32]),
                key_prefix: "vml_EfGh".into(),
                replaces: None,
                expires_at: Some(instant()),
            }),
            Event::CredentialReplaced(CredentialReplaced { replaced_by: Uuid::from_u128(3), locks_at: instant() }),
            Event::CredentialLocked(CredentialLocked {
                reason: LockReason::Rotated,
                replaced_by: Some(Uuid::from_u128(3)),
                deadline: None,
            }),
            Event::CredentialLocked(CredentialLocked {
                reason: LockReason::Expired,
                replaced_by: None,
                deadline: Some(instant()),
            }),
        ];
        for event in events {
            let decoded = Event::decode(event.event_type(), event.schema_version(), &event.payload()).unwrap();
            assert_eq!(decoded, event);
            let text = event.payload().to_string();
            assert_eq!(Event::decode_text(event.event_type(), event.schema_version(), &text).unwrap(), event);
        }
    }

    fn instant() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-03T10:00:00.000250Z").unwrap().to_utc()
    }

    #[test]
    fn events_without_a_deadline_are_written_exactly_as_before_deadlines_existed() {
        let created = Event::CredentialCreated(CredentialCreated {
            credential_id: 1,
            server_uuid: Uuid::from_u128(1),
            name: CredentialName::parse("a").unwrap(),
            credential_type: CredentialType::Api,
            hold: false,
            key_hash: KeyHash([0; 32]),
            key_prefix: "vml_AbCd".into(),
            replaces: None,
            expires_at: None,
        });
        assert_eq!(created.schema_version(), 1);
        assert_eq!(
            crate::domain::canonical_json(&created.payload()),
            format!(
                r#"{{"credential_id":1,"hold":false,"key_hash":"{}","key_prefix":"vml_AbCd","name":"a","replaces":null,"server_uuid":"00000000-0000-0000-0000-000000000001","type":"API"}}"#,
                "0".repeat(64)
            )
        );
        let locked = Event::CredentialLocked(CredentialLocked {
            reason: LockReason::Rotated,
            replaced_by: Some(Uuid::from_u128(2)),
            deadline: None,
        });
        assert_eq!(locked.schema_version(), 1);
        assert_eq!(
            crate::domain::canonical_json(&locked.payload()),
            r#"{"reason":"rotated","replaced_by":"00000000-0000-0000-0000-000000000002"}"#
        );
    }

    #[test]
    fn deadlines_are_written_to_the_microsecond_in_utc() {
        let locked = Event::CredentialLocked(CredentialLocked {
            reason: LockReason::Expired,
            replaced_by: None,
            deadline: Some(instant()),
        });
        assert_eq!(locked.schema_version(), 2);
        assert_eq!(
            locked.payload(),
            serde_json::json!({"reason": "expired", "replaced_by": null, "deadline": "2026-12-03T10:00:00.000250Z"})
        );
        let replaced =
            Event::CredentialReplaced(CredentialReplaced { replaced_by: Uuid::from_u128(3), locks_at: instant() });
        assert_eq!(replaced.payload()["locks_at"], "2026-12-03T10:00:00.000250Z");
    }

    #[test]
    fn each_version_has_exactly_its_own_fields() {
        let v1 = serde_json::json!({"reason": "revoked", "replaced_by": null});
        let v2 = serde_json::json!({"reason": "expired", "replaced_by": null, "deadline": "2026-12-03T10:00:00Z"});
        assert!(Event::decode(CREDENTIAL_LOCKED, 1, &v1).is_ok());
        assert!(Event::decode(CREDENTIAL_LOCKED, 2, &v2).is_ok());
        assert!(matches!(Event::decode(CREDENTIAL_LOCKED, 2, &v1), Err(EventDecodeError::Payload { .. })));
        assert!(matches!(Event::decode(CREDENTIAL_LOCKED, 1, &v2), Err(EventDecodeError::Payload { .. })));
        assert!(matches!(
            Event::decode(CREDENTIAL_REPLACED, 2, &serde_json::json!({})),
            Err(EventDecodeError::UnknownType { .. })
        ));
        assert!(matches!(
            Event::decode(CREDENTIAL_REPLACED, 1, &serde_json::json!({"replaced_by": Uuid::nil()})),
            Err(EventDecodeError::Payload { .. })
        ));
    }

    #[test]
    fn stored_payloads_keep_their_documented_field_names() {
        let locked = Event::CredentialLocked(CredentialLocked {
            reason: LockReason::Revoked,
            replaced_by: None,
            deadline: None,
        });
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
