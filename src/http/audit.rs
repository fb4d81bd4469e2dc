//! The ledger's history, for auditors: a credential's events, and a server's events in order.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::envelope::{success_envelope, Success};
use super::error::ApiError;
use super::error::{CommonErrors, ErrorEnvelope};
use super::extract::JsonBody;
use super::AppState;
use crate::domain::{Caller, StoredEvent};

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryRequest {
    #[schema(example = "0b5bb9c2-3f3c-4a8e-9a53-a3a0e4e6c1d2", format = Uuid)]
    uuid: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsRequest {
    /// Events after this position (default 0).
    #[schema(example = 0, minimum = 0)]
    #[serde(default, deserialize_with = "super::extract::json_optional_integer")]
    after_position: Option<i64>,
    /// At most this many (1 to 1000, default 100).
    #[schema(example = 100, minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "super::extract::json_optional_integer")]
    limit: Option<i64>,
}

/// An event as auditors see it: the data and who caused it (never a key).
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditedEvent {
    position: i64,
    event_id: Uuid,
    #[serde(rename = "type")]
    event_type: String,
    stream_id: Uuid,
    stream_version: i32,
    schema_version: i32,
    #[schema(format = DateTime)]
    recorded_at: String,
    /// The event's payload.
    #[schema(value_type = Object)]
    data: serde_json::Value,
    /// `{"kind": "credential", "uuid": …}`, `{"kind": "cli"}`, or `{"kind": "deadline"}` for the lock
    /// the service records when a deadline passes.
    #[schema(value_type = Object)]
    actor: serde_json::Value,
    #[schema(value_type = Option<String>)]
    request_id: serde_json::Value,
    /// The address the request came from (a proxy's, behind one); null for the CLI and the
    /// deadline scheduler.
    #[schema(value_type = Option<String>)]
    source_ip: serde_json::Value,
    /// The event's link in the hash chain (64 hex digits): `verify --expect-head POSITION:HASH`
    /// proves later that the chain still holds it.
    hash: String,
}

impl From<StoredEvent> for AuditedEvent {
    fn from(event: StoredEvent) -> Self {
        // The log's payloads and metadata are jsonb: their text always parses.
        let mut metadata = event.metadata_json().unwrap_or_default();
        let data = event.payload_json().unwrap_or_default();
        AuditedEvent {
            position: event.position,
            event_id: event.event_id,
            event_type: event.event_type,
            stream_id: event.stream_id,
            stream_version: event.stream_version,
            schema_version: event.schema_version,
            recorded_at: event.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            actor: metadata["actor"].take(),
            request_id: metadata["request_id"].take(),
            source_ip: metadata["source_ip"].take(),
            hash: hex::encode(&event.hash),
            data,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    events: Vec<AuditedEvent>,
    next_after_position: i64,
    has_more: bool,
}

/// The server's latest link in the hash chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChainLink {
    position: i64,
    /// 64 hex digits.
    hash: String,
    #[schema(format = DateTime)]
    recorded_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChainHeadRequest {}

success_envelope!(ChainLinkAnswer, ChainLink);
success_envelope!(HistoryAnswer, Vec<AuditedEvent>);
success_envelope!(EventPageAnswer, EventPage);

/// Every event of one credential, in order, with who caused it.
///
/// Each event carries its log position, type, payload, `recorded_at` and metadata: the actor (an
/// API key's credential, the CLI, or the deadline scheduler), the client's address and the
/// request id. Held and rotated-away credentials keep their history.
#[utoipa::path(post, path = "/api/v1/credentials/history", operation_id = "credentialHistory", tag = "audit", request_body = HistoryRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The credential's events", body = HistoryAnswer),
        (status = 404, description = "Not found on this server", body = ErrorEnvelope),
        CommonErrors,
    ))]
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

/// The server's events in log order, a page at a time.
///
/// `after_position` continues from the last position of the previous page; `limit` is 1–1000
/// (100 by default). Other servers' events are never listed.
#[utoipa::path(post, path = "/api/v1/events/list", operation_id = "listEvents", tag = "audit", request_body = Option<EventsRequest>,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "A page of events", body = EventPageAnswer),
        CommonErrors,
    ))]
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

/// The server's latest link in the hash chain: the position and hash of its last event.
///
/// Record it, and `credential-ledger verify --expect-head POSITION:HASH` proves later that the
/// ledger still holds this history unchanged: every event up to that position, any server's, is
/// covered by the hash. The body may be omitted.
#[utoipa::path(post, path = "/api/v1/events/head", operation_id = "chainHead", tag = "audit", request_body = Option<ChainHeadRequest>,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The server's latest chain link", body = ChainLinkAnswer),
        CommonErrors,
    ))]
pub async fn chain_head(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(ChainHeadRequest {}): JsonBody<ChainHeadRequest>,
) -> Result<Success<ChainLink>, ApiError> {
    // A server exists from its first event on: it always has one.
    let event = app
        .store
        .server_latest_event(caller.server_uuid)
        .await?
        .ok_or_else(|| ApiError::Internal("an authenticated server has no event".into()))?;
    Ok(Success(ChainLink {
        position: event.position,
        hash: hex::encode(&event.hash),
        recorded_at: event.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    }))
}
