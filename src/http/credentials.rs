//! The credentials API, exactly as the seed document shows it.

use axum::extract::State;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{JsonBody, RequestContext};
use super::{AppState, Success};
use crate::audit::Replay;
use crate::domain::{ApiKey, Command, Credential, CredentialName, CredentialType, KeyMaterial, Outcome};
use crate::store::Caller;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    /// The view as it stood at this instant (RFC 3339), rebuilt from the log.
    as_of: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    name: String,
    #[serde(rename = "type")]
    credential_type: Option<String>,
    hold: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UuidRequest {
    uuid: String,
}

#[derive(Debug, Serialize)]
pub struct ListedCredential {
    id: i64,
    uuid: Uuid,
    name: String,
    #[serde(rename = "type")]
    credential_type: String,
    hold: bool,
    last_used_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CreatedCredential {
    id: i64,
    uuid: Uuid,
    name: String,
    #[serde(rename = "type")]
    credential_type: CredentialType,
    hold: bool,
    key: String,
}

#[derive(Debug, Serialize)]
pub struct RegeneratedCredential {
    old_id: i64,
    old_uuid: Uuid,
    new_id: i64,
    new_uuid: Uuid,
    key: String,
}

#[derive(Debug, Serialize)]
pub struct RevokedCredential {
    id: i64,
    uuid: Uuid,
    hold: bool,
}

/// `POST /api/v1/credentials/list`: every credential of the caller's server, by ascending id.
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<ListRequest>,
) -> Result<Success<Vec<ListedCredential>>, ApiError> {
    if let Some(as_of) = request.as_of {
        return list_as_of(&app, caller, &as_of).await.map(Success);
    }
    let rows = app.store.list_credentials(caller.server_uuid).await?;
    let listed = rows
        .into_iter()
        .map(|row| {
            // A use not flushed yet is newer than what the table holds.
            let last_used_at = row.last_used_at.max(app.usage.pending(row.uuid));
            ListedCredential {
                id: row.id,
                uuid: row.uuid,
                name: row.name,
                credential_type: row.credential_type,
                hold: row.hold,
                last_used_at: last_used_at.map(rfc3339),
            }
        })
        .collect();
    Ok(Success(listed))
}

/// The caller's credentials as they stood at `as_of`, folded from the log with the same
/// `apply` as the live view. `last_used_at` is operational data, not history: it is null here.
async fn list_as_of(app: &AppState, caller: Caller, as_of: &str) -> Result<Vec<ListedCredential>, ApiError> {
    let as_of = DateTime::parse_from_rfc3339(as_of).map_err(|_| ApiError::InvalidValue {
        code: "invalid_as_of",
        message: "as_of must be an RFC 3339 date-time such as 2026-11-30T12:00:00Z".into(),
    })?;
    let mut replay = Replay::new(None, None);
    for event in app.store.server_events_until(caller.server_uuid, as_of.with_timezone(&Utc)).await? {
        replay
            .apply(
                event.position,
                event.stream_id,
                event.stream_version,
                event.recorded_at,
                &event.event_type,
                event.schema_version,
                event.payload,
            )
            .map_err(|error| ApiError::Internal(error.to_string()))?;
    }
    Ok(replay
        .finish()
        .into_iter()
        .map(|credential| ListedCredential {
            id: credential.id,
            uuid: credential.uuid,
            name: credential.name.as_str().to_owned(),
            credential_type: credential.credential_type.as_str().to_owned(),
            hold: credential.hold,
            last_used_at: None,
        })
        .collect())
}

/// `POST /api/v1/credentials/create`: a new credential; its key is in this answer and nowhere else.
pub async fn create(
    State(app): State<AppState>,
    context: RequestContext,
    caller: Caller,
    JsonBody(request): JsonBody<CreateRequest>,
) -> Result<Success<CreatedCredential>, ApiError> {
    let name = CredentialName::parse(&request.name).map_err(|error| invalid("invalid_name", error))?;
    let credential_type = match request.credential_type.as_deref() {
        None => CredentialType::default(),
        Some(raw) => CredentialType::parse(raw).map_err(|error| invalid("invalid_type", error))?,
    };
    let key = ApiKey::generate(&mut OsRng);
    let command = Command::Create {
        server_uuid: caller.server_uuid,
        credential_uuid: Uuid::new_v4(),
        name,
        credential_type,
        hold: request.hold.unwrap_or(false),
        key: KeyMaterial::from(&key),
    };
    let Outcome::Created(credential) = app.writer.execute(command, context.metadata(&caller)).await? else {
        return Err(unexpected_outcome());
    };
    record_credential(&credential);
    Ok(Success(CreatedCredential {
        id: credential.id,
        uuid: credential.uuid,
        name: credential.name.as_str().to_owned(),
        credential_type: credential.credential_type,
        hold: credential.hold,
        key: key.expose_secret().to_owned(),
    }))
}

/// `POST /api/v1/credentials/regenerate`: rotation. A replacement with the same name and type,
/// and the old credential held, in one transaction.
pub async fn regenerate(
    State(app): State<AppState>,
    context: RequestContext,
    caller: Caller,
    JsonBody(request): JsonBody<UuidRequest>,
) -> Result<Success<RegeneratedCredential>, ApiError> {
    let credential_uuid = parse_uuid(&request.uuid)?;
    let key = ApiKey::generate(&mut OsRng);
    let command = Command::Regenerate {
        server_uuid: caller.server_uuid,
        credential_uuid,
        new_credential_uuid: Uuid::new_v4(),
        new_key: KeyMaterial::from(&key),
    };
    let Outcome::Rotated { old, new } = app.writer.execute(command, context.metadata(&caller)).await? else {
        return Err(unexpected_outcome());
    };
    record_credential(&old);
    Ok(Success(RegeneratedCredential {
        old_id: old.id,
        old_uuid: old.uuid,
        new_id: new.id,
        new_uuid: new.uuid,
        key: key.expose_secret().to_owned(),
    }))
}

/// `POST /api/v1/credentials/revoke`: holds the credential. Revoking a held one changes nothing
/// and answers the same.
pub async fn revoke(
    State(app): State<AppState>,
    context: RequestContext,
    caller: Caller,
    JsonBody(request): JsonBody<UuidRequest>,
) -> Result<Success<RevokedCredential>, ApiError> {
    let credential_uuid = parse_uuid(&request.uuid)?;
    let command = Command::Revoke { server_uuid: caller.server_uuid, credential_uuid };
    let Outcome::Revoked(credential) = app.writer.execute(command, context.metadata(&caller)).await? else {
        return Err(unexpected_outcome());
    };
    record_credential(&credential);
    Ok(Success(RevokedCredential { id: credential.id, uuid: credential.uuid, hold: credential.hold }))
}

fn parse_uuid(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| ApiError::InvalidValue {
        code: "invalid_uuid",
        message: "uuid must be a UUID such as 0b5bb9c2-3f3c-4a8e-9a53-a3a0e4e6c1d2".into(),
    })
}

fn invalid(code: &'static str, error: impl std::fmt::Display) -> ApiError {
    ApiError::InvalidValue { code, message: error.to_string() }
}

fn unexpected_outcome() -> ApiError {
    ApiError::Internal("the writer answered a command with another command's outcome".into())
}

fn record_credential(credential: &Credential) {
    tracing::Span::current().record("credential_uuid", tracing::field::display(credential.uuid));
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}
