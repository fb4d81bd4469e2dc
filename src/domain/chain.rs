//! The hash chain that makes the log tamper-evident:
//! `hash = sha256(prev_hash ‖ canonical bytes of the event)`.
//!
//! The canonical bytes are JSON with object keys sorted and no insignificant white space, built
//! here rather than by whatever map order a JSON library or `jsonb` happens to use, so that an
//! auditor can recompute them from an export in any language.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub type Hash = [u8; 32];

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: Hash = [0; 32];

/// Everything about an event that the chain protects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink<'a> {
    pub position: i64,
    pub stream_id: Uuid,
    pub stream_version: i32,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub schema_version: i32,
    pub server_uuid: Uuid,
    pub payload: &'a Value,
    pub metadata: &'a Value,
    pub recorded_at: DateTime<Utc>,
}

impl ChainLink<'_> {
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let document = serde_json::json!({
            "event_id": self.event_id,
            "event_type": self.event_type,
            "metadata": self.metadata,
            "payload": self.payload,
            "position": self.position,
            "recorded_at": self.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            "schema_version": self.schema_version,
            "server_uuid": self.server_uuid,
            "stream_id": self.stream_id,
            "stream_version": self.stream_version,
        });
        canonical_json(&document).into_bytes()
    }
}

pub fn chain_hash(prev_hash: &Hash, link: &ChainLink<'_>) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(link.canonical_bytes());
    hasher.finalize().into()
}

/// JSON text with every object's keys in byte order and no white space.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn link<'a>(payload: &'a Value, metadata: &'a Value) -> ChainLink<'a> {
        ChainLink {
            position: 1,
            stream_id: Uuid::from_u128(1),
            stream_version: 1,
            event_id: Uuid::from_u128(2),
            event_type: "CredentialLocked",
            schema_version: 1,
            server_uuid: Uuid::from_u128(3),
            payload,
            metadata,
            recorded_at: Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap(),
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let value = json!({"b": 1, "a": {"z": [true, null, "x"], "y": "\"q\""}});
        assert_eq!(canonical_json(&value), r#"{"a":{"y":"\"q\"","z":[true,null,"x"]},"b":1}"#);
    }

    #[test]
    fn the_hash_covers_every_field_and_the_previous_hash() {
        let payload = json!({"reason": "revoked", "replaced_by": null});
        let metadata = json!({"actor": {"kind": "cli"}});
        let base = chain_hash(&GENESIS_HASH, &link(&payload, &metadata));
        assert_ne!(chain_hash(&[1; 32], &link(&payload, &metadata)), base);
        let other_payload = json!({"reason": "rotated", "replaced_by": null});
        assert_ne!(chain_hash(&GENESIS_HASH, &link(&other_payload, &metadata)), base);
        let mut moved = link(&payload, &metadata);
        moved.position = 2;
        assert_ne!(chain_hash(&GENESIS_HASH, &moved), base);
        let mut later = link(&payload, &metadata);
        later.recorded_at += chrono::Duration::microseconds(1);
        assert_ne!(chain_hash(&GENESIS_HASH, &later), base);
    }

    #[test]
    fn canonical_bytes_are_stable() {
        let payload = json!({"replaced_by": null, "reason": "revoked"});
        let metadata = json!({});
        let text = String::from_utf8(link(&payload, &metadata).canonical_bytes()).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"event_id":"00000000-0000-0000-0000-000000000002","event_type":"CredentialLocked","#,
                r#""metadata":{},"payload":{"reason":"revoked","replaced_by":null},"position":1,"#,
                r#""recorded_at":"2026-11-30T12:00:00.000000Z","schema_version":1,"#,
                r#""server_uuid":"00000000-0000-0000-0000-000000000003","#,
                r#""stream_id":"00000000-0000-0000-0000-000000000001","stream_version":1}"#
            )
        );
    }
}
