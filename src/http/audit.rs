//! The ledger's history, for auditors: a credential's events, and a server's events in order.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::JsonBody;
use super::{AppState, Success};
use crate::store::{Caller, ServerEvent};

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRequest {
    uuid: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsRequest {
    after_position: Option<i64>,
    limit: Option<i64>,
}

/// An event as auditors see it: the data and who caused it (never a key).
#[derive(Debug, Serialize)]
pub struct AuditedEvent {
    position: i64,
    event_id: Uuid,
    #[serde(rename = "type")]
    event_type: String,
    stream_id: Uuid,
    stream_version: i32,
    schema_version: i32,
    recorded_at: String,
    data: serde_json::Value,
    actor: serde_json::Value,
    request_id: serde_json::Value,
}

impl From<ServerEvent> for AuditedEvent {
    fn from(event: ServerEvent) -> Self {
        AuditedEvent {
            position: event.position,
            event_id: event.event_id,
            event_type: event.event_type,
            stream_id: event.stream_id,
            stream_version: event.stream_version,
            schema_version: event.schema_version,
            recorded_at: event.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            actor: event.metadata["actor"].clone(),
            request_id: event.metadata["request_id"].clone(),
            data: event.payload,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EventPage {
    events: Vec<AuditedEvent>,
    next_after_position: i64,
    has_more: bool,
}

/// `POST /api/v1/credentials/history`: every event of one credential, in order.
pub async fn history(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<HistoryRequest>,
) -> Result<Success<Vec<AuditedEvent>>, ApiError> {
    let uuid = Uuid::try_parse(&request.uuid)
        .map_err(|_| ApiError::InvalidValue { code: "invalid_uuid", message: "uuid must be a UUID".into() })?;
    let events = app.store.credential_history(caller.server_uuid, uuid).await?;
    if events.is_empty() {
        return Err(ApiError::CredentialNotFound);
    }
    tracing::Span::current().record("credential_uuid", tracing::field::display(uuid));
    Ok(Success(events.into_iter().map(AuditedEvent::from).collect()))
}

/// `POST /api/v1/events/list`: the caller's server's events in log order, a page at a time.
pub async fn list_events(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<EventsRequest>,
) -> Result<Success<EventPage>, ApiError> {
    let after_position = request.after_position.unwrap_or(0);
    if after_position < 0 {
        return Err(ApiError::InvalidValue {
            code: "invalid_after_position",
            message: "after_position must be 0 or more".into(),
        });
    }
    let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidValue {
            code: "invalid_limit",
            message: "limit must be between 1 and 1000".into(),
        });
    }
    let mut events = app.store.server_events(caller.server_uuid, after_position, limit + 1).await?;
    let has_more = events.len() as i64 > limit;
    events.truncate(limit as usize);
    let next_after_position = events.last().map_or(after_position, |event| event.position);
    Ok(Success(EventPage {
        events: events.into_iter().map(AuditedEvent::from).collect(),
        next_after_position,
        has_more,
    }))
}
