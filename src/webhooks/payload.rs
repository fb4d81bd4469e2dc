//! What a webhook carries: the event as the bus message has it, and the body built from it and
//! the view. The broker's worker and the in-process dispatcher build the same bytes.

use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::StoredEvent;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("credential {0} is not in the view yet")]
    NotProjected(Uuid),
    #[error("could not encode the body: {0}")]
    Encode(#[from] serde_json::Error),
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

/// The body of a `CredentialLocked` webhook. Its fields are declared in alphabetical order, the
/// order the body has always been written in, so that its bytes stay the same.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CredentialLockedWebhook)]
pub struct WebhookBody {
    data: LockedData,
    /// When the lock was recorded (RFC 3339 UTC, to the microsecond).
    #[schema(value_type = String, format = DateTime)]
    timestamp: String,
    /// Always `CredentialLocked`.
    #[serde(rename = "type")]
    #[schema(example = "CredentialLocked")]
    event_type: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct LockedData {
    credential: LockedCredentialBody,
    /// The deadline a scheduled lock records (RFC 3339 UTC, to the microsecond): the key was
    /// refused from it on, and `timestamp - deadline` is how late the lock was recorded. Null for
    /// a lock a request made (a revoke, a rotation without grace period).
    #[schema(value_type = Option<String>, format = DateTime)]
    deadline: serde_json::Value,
    /// `revoked`, `rotated` or `expired`.
    #[schema(value_type = String, example = "rotated")]
    reason: serde_json::Value,
    /// The credential that replaced this one, for `rotated`.
    replaced_by: Option<Replacement>,
    server: ServerBody,
}

#[derive(Debug, Serialize, ToSchema)]
struct LockedCredentialBody {
    hold: bool,
    id: i64,
    name: String,
    /// `API` or `SMTP`.
    #[serde(rename = "type")]
    credential_type: String,
    uuid: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
struct Replacement {
    id: i64,
    uuid: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
struct ServerBody {
    name: String,
    uuid: Uuid,
}

/// The webhook body: the credential as the view has it, why it was locked, what replaced it.
pub async fn payload(store: &Store, event: &EventMessage) -> Result<String, PayloadError> {
    let credential =
        store.locked_credential(event.stream_id).await?.ok_or(PayloadError::NotProjected(event.stream_id))?;
    let replaced_by = match event.data["replaced_by"].as_str().map(Uuid::parse_str) {
        Some(Ok(uuid)) => {
            let replacement = store.locked_credential(uuid).await?.ok_or(PayloadError::NotProjected(uuid))?;
            Some(Replacement { id: replacement.id, uuid: replacement.uuid })
        }
        _ => None,
    };
    let body = WebhookBody {
        data: LockedData {
            credential: LockedCredentialBody {
                hold: credential.hold,
                id: credential.id,
                name: credential.name,
                credential_type: credential.credential_type,
                uuid: credential.uuid,
            },
            deadline: event.data["deadline"].clone(),
            reason: event.data["reason"].clone(),
            replaced_by,
            server: ServerBody { name: credential.server_name, uuid: credential.server_uuid },
        },
        timestamp: event.recorded_at.clone(),
        event_type: event.event_type.clone(),
    };
    Ok(serde_json::to_string(&body)?)
}
