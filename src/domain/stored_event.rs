//! An event as the log holds it, and the one way to fold it into a credential's state: decode
//! its payload by its type and schema version, then `apply` it. Appending (loading the touched
//! credentials), rebuilding the view, the replica and every replay fold through
//! `LoggedEvent::apply_to`: a `StoredEvent` lends one, and so does a row that holds only what
//! folding needs (a rebuild reads no more of each row than that).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::apply::apply;
use super::chain::{chain_hash, ChainLink, Hash};
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
    /// The payload's JSON text, as stored: folding decodes it straight into the event, without
    /// building a `serde_json::Value` on the way.
    #[serde(with = "json_text")]
    pub payload: String,
    #[serde(with = "json_text")]
    pub metadata: String,
    /// Written with exactly six fractional digits, as the chain hashes it, so that the text of
    /// an export is what a verifier hashes.
    #[serde(with = "super::event::micros")]
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

/// What folding an event needs of its row of the log.
#[derive(Debug, Clone, Copy)]
pub struct LoggedEvent<'a> {
    pub position: i64,
    pub stream_id: Uuid,
    pub stream_version: i32,
    pub event_type: &'a str,
    pub schema_version: i32,
    pub recorded_at: DateTime<Utc>,
    /// The payload's JSON text.
    pub payload: &'a str,
}

impl LoggedEvent<'_> {
    /// The event, decoded straight from its JSON text by its type and schema version.
    pub fn decode(&self) -> Result<Event, UnreadableEvent> {
        Event::decode_text(self.event_type, self.schema_version, self.payload)
            .map_err(|error| UnreadableEvent { position: self.position, reason: error.to_string() })
    }

    /// The state of this event's credential after it, from its state before (`None` before its
    /// first event).
    pub fn apply_to(&self, previous: Option<&Credential>) -> Result<Credential, UnreadableEvent> {
        let event = self.decode()?;
        apply(previous, self.stream_id, self.stream_version, self.recorded_at, &event)
            .map_err(|error| UnreadableEvent { position: self.position, reason: error.to_string() })
    }
}

impl StoredEvent {
    pub fn logged(&self) -> LoggedEvent<'_> {
        LoggedEvent {
            position: self.position,
            stream_id: self.stream_id,
            stream_version: self.stream_version,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            recorded_at: self.recorded_at,
            payload: &self.payload,
        }
    }

    /// This event's hash, recomputed from everything it covers, chained to `prev_hash`.
    pub fn chain_hash(&self, prev_hash: &Hash) -> Result<Hash, UnreadableEvent> {
        let link = ChainLink {
            position: self.position,
            stream_id: self.stream_id,
            stream_version: self.stream_version,
            event_id: self.event_id,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            server_uuid: self.server_uuid,
            payload: &self.payload_json()?,
            metadata: &self.metadata_json()?,
            recorded_at: self.recorded_at,
        };
        Ok(chain_hash(prev_hash, &link))
    }

    pub fn payload_json(&self) -> Result<serde_json::Value, UnreadableEvent> {
        serde_json::from_str(&self.payload).map_err(|error| self.unreadable(format!("payload: {error}")))
    }

    pub fn metadata_json(&self) -> Result<serde_json::Value, UnreadableEvent> {
        serde_json::from_str(&self.metadata).map_err(|error| self.unreadable(format!("metadata: {error}")))
    }

    /// Who caused the event, as its metadata records it.
    pub fn actor(&self) -> Option<Actor> {
        #[derive(Deserialize)]
        struct Recorded {
            actor: Actor,
        }
        serde_json::from_str::<Recorded>(&self.metadata).ok().map(|recorded| recorded.actor)
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

/// JSON text written out as the JSON it holds (compact, keys sorted), and read back from any
/// JSON value: an export holds the payload as JSON, not as a string.
mod json_text {
    use serde::de::{self, MapAccess, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
        value.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        Ok(Distinct::deserialize(deserializer)?.0.to_string())
    }

    /// A JSON value whose objects name each key once, at any depth. A key given twice is
    /// refused rather than resolved to its last value: a reader that takes the first one, or
    /// reads the text, would otherwise see a value the chain does not cover.
    struct Distinct(serde_json::Value);

    impl<'de> Deserialize<'de> for Distinct {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(DistinctVisitor)
        }
    }

    struct DistinctVisitor;

    impl<'de> Visitor<'de> for DistinctVisitor {
        type Value = Distinct;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("a JSON value")
        }

        fn visit_bool<E: de::Error>(self, value: bool) -> Result<Distinct, E> {
            Ok(Distinct(Value::Bool(value)))
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<Distinct, E> {
            Ok(Distinct(Value::from(value)))
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<Distinct, E> {
            Ok(Distinct(Value::from(value)))
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<Distinct, E> {
            serde_json::Number::from_f64(value)
                .map(|number| Distinct(Value::Number(number)))
                .ok_or_else(|| E::custom("not a finite number"))
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<Distinct, E> {
            Ok(Distinct(Value::String(value.to_owned())))
        }

        fn visit_string<E: de::Error>(self, value: String) -> Result<Distinct, E> {
            Ok(Distinct(Value::String(value)))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Distinct, E> {
            Ok(Distinct(Value::Null))
        }

        fn visit_none<E: de::Error>(self) -> Result<Distinct, E> {
            Ok(Distinct(Value::Null))
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Distinct, D::Error> {
            Distinct::deserialize(deserializer)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Distinct, A::Error> {
            let mut array = Vec::with_capacity(items.size_hint().unwrap_or(0));
            while let Some(Distinct(item)) = items.next_element()? {
                array.push(item);
            }
            Ok(Distinct(Value::Array(array)))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Distinct, A::Error> {
            let mut object = serde_json::Map::new();
            while let Some(key) = entries.next_key::<String>()? {
                if object.contains_key(&key) {
                    return Err(de::Error::custom(format!("the key {key:?} is given twice")));
                }
                let Distinct(value) = entries.next_value()?;
                object.insert(key, value);
            }
            Ok(Distinct(Value::Object(object)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An export writes `recorded_at` as the chain hashes it, even on a whole second, so that a
    /// verifier can hash the text as written.
    #[test]
    fn an_exported_instant_always_has_six_fractional_digits() {
        let event = StoredEvent {
            position: 1,
            stream_id: Uuid::from_u128(1),
            stream_version: 1,
            event_id: Uuid::from_u128(2),
            event_type: "CredentialLocked".into(),
            schema_version: 1,
            server_uuid: Uuid::from_u128(3),
            payload: r#"{"reason":"revoked","replaced_by":null}"#.into(),
            metadata: r#"{"actor":{"kind":"cli"}}"#.into(),
            recorded_at: DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z").unwrap().to_utc(),
            prev_hash: vec![0; 32],
            hash: vec![1; 32],
        };
        let written = serde_json::to_value(&event).unwrap();
        assert_eq!(written["recorded_at"], "2026-12-03T10:00:00.000000Z");
        let read: StoredEvent = serde_json::from_value(written).unwrap();
        assert_eq!(read, event);
    }

    #[test]
    fn a_key_given_twice_in_a_payload_or_its_metadata_is_refused_at_any_depth() {
        let line = |payload: &str, metadata: &str| {
            format!(
                r#"{{"position":1,"stream_id":"00000000-0000-0000-0000-000000000001","stream_version":1,"event_id":"00000000-0000-0000-0000-000000000002","event_type":"CredentialLocked","schema_version":1,"server_uuid":"00000000-0000-0000-0000-000000000003","payload":{payload},"metadata":{metadata},"recorded_at":"2026-12-03T10:00:00.000000Z","prev_hash":"{zero}","hash":"{zero}"}}"#,
                zero = "00".repeat(32)
            )
        };
        let fine = line(r#"{"reason":"revoked","replaced_by":null}"#, r#"{"actor":{"kind":"cli"},"tags":[1,2.5,"x"]}"#);
        let read: StoredEvent = serde_json::from_str(&fine).unwrap();
        assert_eq!(read.payload, r#"{"reason":"revoked","replaced_by":null}"#);
        for (payload, metadata) in [
            (r#"{"reason":"revoked","reason":"rotated"}"#, r#"{"actor":{"kind":"cli"}}"#),
            (r#"{"reason":"revoked"}"#, r#"{"actor":{"kind":"cli","kind":"deadline"}}"#),
            (r#"{"list":[{"a":1,"a":2}]}"#, r#"{}"#),
        ] {
            let error = serde_json::from_str::<StoredEvent>(&line(payload, metadata)).unwrap_err();
            assert!(error.to_string().contains("is given twice"), "{error}");
        }
    }
}
