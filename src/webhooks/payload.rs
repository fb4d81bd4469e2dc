//! What a webhook carries: the event as the bus message has it, and the body built from it and
//! the view. The broker's worker and the in-process dispatcher build the same bytes.

use chrono::SecondsFormat;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::domain::StoredEvent;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("credential {0} is not in the view yet")]
    NotProjected(Uuid),
}

/// The part of a bus message a webhook needs (docs/events.md).
#[derive(Debug, Clone, Deserialize)]
pub struct EventMessage {
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub stream_id: Uuid,
    pub server_uuid: Uuid,
    pub recorded_at: String,
    pub data: serde_json::Value,
}

impl From<&StoredEvent> for EventMessage {
    /// The same fields `bus::encode` publishes, read from the log.
    fn from(event: &StoredEvent) -> Self {
        EventMessage {
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            stream_id: event.stream_id,
            server_uuid: event.server_uuid,
            recorded_at: event.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            // The log's payloads are JSON: their text always parses.
            data: event.payload_json().unwrap_or_default(),
        }
    }
}

impl EventMessage {
    /// The `webhook-id` of every delivery of this event: one per event, so receivers can
    /// deduplicate across attempts and endpoints.
    pub fn webhook_id(&self) -> String {
        format!("msg_{}", self.event_id.simple())
    }
}

/// The webhook body: the credential as the view has it, why it was locked, what replaced it.
pub async fn payload(store: &Store, event: &EventMessage) -> Result<String, PayloadError> {
    let credential =
        store.locked_credential(event.stream_id).await?.ok_or(PayloadError::NotProjected(event.stream_id))?;
    let replaced_by = match event.data["replaced_by"].as_str().map(Uuid::parse_str) {
        Some(Ok(uuid)) => {
            let replacement = store.locked_credential(uuid).await?.ok_or(PayloadError::NotProjected(uuid))?;
            json!({"id": replacement.id, "uuid": replacement.uuid})
        }
        _ => serde_json::Value::Null,
    };
    let body = json!({
        "type": event.event_type,
        "timestamp": event.recorded_at,
        "data": {
            "credential": {
                "id": credential.id,
                "uuid": credential.uuid,
                "name": credential.name,
                "type": credential.credential_type,
                "hold": credential.hold,
            },
            "reason": event.data["reason"],
            "replaced_by": replaced_by,
            // The deadline a scheduled lock records (`timestamp - deadline` is its lateness);
            // null for a lock a request made.
            "deadline": event.data["deadline"],
            "server": {"uuid": credential.server_uuid, "name": credential.server_name},
        },
    });
    Ok(body.to_string())
}
