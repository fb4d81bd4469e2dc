//! The credentials API, exactly as the seed document shows it.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::envelope::{success_envelope, Success};
use super::error::ApiError;
use super::error::{CommonErrors, ErrorEnvelope};
use super::extract::{JsonBody, RequestContext};
use super::large_reads::{LargeRead, LARGE_LIST};
use super::list_json;
use super::AppState;
use crate::app::replica::ReplicaCredential;
use crate::audit::Replay;
use crate::domain::Caller;
use crate::domain::{
    ApiKey, Command, Credential, CredentialName, CredentialType, ExpiresAt, GracePeriod, KeyMaterial, Outcome,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    /// The view as it stood at this instant (RFC 3339), rebuilt from the log.
    #[schema(format = DateTime)]
    as_of: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// Human-readable name: 1 to 255 characters after trimming, at least one of them visible; no
    /// control characters, no bidirectional embedding, override or isolate controls, and no
    /// credential key.
    #[schema(
        example = "Production API",
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*[^\s\u0000-\u001f\u007f-\u009f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8][^\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*$"
    )]
    name: String,
    /// `SMTP` (the default) or `API`; only API credentials call this API.
    #[serde(rename = "type")]
    #[schema(value_type = Option<TypeName>, example = "API")]
    credential_type: Option<String>,
    /// Create in the held state (it will not authenticate).
    #[schema(example = false)]
    hold: Option<bool>,
    /// When the key stops working by itself (RFC 3339 with an offset; in the future, at most
    /// 10 years out). At that instant the credential is locked with reason `expired`.
    #[schema(value_type = Option<String>, format = DateTime, example = "2027-06-30T00:00:00Z")]
    expires_at: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UuidRequest {
    /// The credential's uuid.
    #[schema(example = "0b5bb9c2-3f3c-4a8e-9a53-a3a0e4e6c1d2", format = Uuid)]
    uuid: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegenerateRequest {
    /// The credential's uuid.
    #[schema(example = "0b5bb9c2-3f3c-4a8e-9a53-a3a0e4e6c1d2", format = Uuid)]
    uuid: String,
    /// Seconds the old key keeps working after the rotation commits (0 to 2592000, 30 days).
    /// 0, the default, holds it at once.
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 2592000, default = 0, example = 3600)]
    grace_period: Option<serde_json::Value>,
}

// The document's name for a credential's type. Requests read it as a string, so that a wrong
// one gets 422 `invalid_type` rather than a parse error.
/// `SMTP` (checked by mail relays) or `API` (calls this API).
#[derive(ToSchema)]
#[schema(as = CredentialType)]
#[allow(dead_code, clippy::upper_case_acronyms)]
enum TypeName {
    SMTP,
    API,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ListedCredential<'a> {
    id: i64,
    uuid: Uuid,
    name: &'a str,
    #[serde(rename = "type")]
    #[schema(value_type = TypeName)]
    credential_type: &'a str,
    hold: bool,
    /// RFC 3339 UTC, to the second; null if never used.
    #[schema(format = DateTime)]
    last_used_at: Option<String>,
    /// The credential's deadline (its expiry, or the end of a rotation's grace period), pending
    /// or passed, in RFC 3339 UTC to the microsecond; null when it has none, or when a revoke
    /// or an immediate rotation ended it first.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// The credential that replaced this one in a rotation with a grace period (its key works
    /// until `expires_at`); null otherwise.
    replaced_by: Option<Uuid>,
}

// Answers are written by `list_json`, which its tests hold to this shape byte for byte; this
// type declares the shape to the document and to those tests.
#[cfg(test)]
impl<'a> ListedCredential<'a> {
    /// The credential as it stands at instant `at`: past its deadline it is held, whether or
    /// not the deadline's lock has been appended yet, as authentication sees it.
    pub(super) fn new(
        credential: &'a ReplicaCredential,
        last_used_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> Self {
        ListedCredential {
            id: credential.id,
            uuid: credential.uuid,
            name: credential.name.as_str(),
            credential_type: credential.credential_type.as_str(),
            hold: credential.held_at(at),
            last_used_at: last_used_at.map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true)),
            expires_at: credential.expires_at.map(deadline_text),
            replaced_by: credential.replaced_by,
        }
    }
}

/// A deadline as answers show it: to the microsecond, as the log keeps it (whole seconds would
/// round it).
fn deadline_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedCredential {
    id: i64,
    uuid: Uuid,
    name: String,
    #[serde(rename = "type")]
    #[schema(value_type = TypeName, example = "API")]
    credential_type: CredentialType,
    hold: bool,
    /// The key: shown in this answer and nowhere else, ever.
    #[schema(example = "vml_KSPQ5MrceAa5aKK1kO8w6PQygCVj5lpG4RTst0")]
    key: String,
    /// The expiry, when the request gave one (RFC 3339 UTC, to the microsecond).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegeneratedCredential {
    old_id: i64,
    old_uuid: Uuid,
    new_id: i64,
    new_uuid: Uuid,
    key: String,
    /// When the old key stops working (commit time + grace period, RFC 3339 UTC to the
    /// microsecond); null when it stopped with this rotation.
    #[schema(format = DateTime)]
    old_expires_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedCredential {
    id: i64,
    uuid: Uuid,
    hold: bool,
}

success_envelope!(CredentialListAnswer, Vec<ListedCredential<'static>>);
success_envelope!(CreatedAnswer, CreatedCredential);
success_envelope!(RegeneratedAnswer, RegeneratedCredential);
success_envelope!(RevokedAnswer, RevokedCredential);

/// List all credentials for the authenticated server.
///
/// Ascending `id`; held credentials are listed with `hold: true`. With `as_of`, the view as it
/// stood at that instant, rebuilt from the log (`last_used_at` is then null).
#[utoipa::path(post, path = "/api/v1/credentials/list", operation_id = "listCredentials", tag = "credentials", request_body = Option<ListRequest>,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The credentials", body = CredentialListAnswer),
        CommonErrors,
    ))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<ListRequest>,
) -> Result<Response, ApiError> {
    if let Some(as_of) = request.as_of {
        let as_of = parse_as_of(&as_of)?;
        let share = app.large_reads.begin(caller.server_uuid).ok_or(ApiError::ServerBusy)?;
        let mut credentials = credentials_as_of(&app, caller, as_of).await?.into_iter().map(ReplicaCredential::from);
        let pages = move || credentials.by_ref().take(STREAMED_CHUNK).collect();
        return Ok(streamed_list(pages, |page| vec![None; page.len()], as_of, share));
    }
    // After the read barrier, like authentication: the list agrees with it at every instant.
    let now = Utc::now();
    // Authentication brought the replica up to date with everything committed before this
    // request.
    if app.replica.credential_count(caller.server_uuid) > LARGE_LIST {
        let share = app.large_reads.begin(caller.server_uuid).ok_or(ApiError::ServerBusy)?;
        let (server_uuid, replica, usage) = (caller.server_uuid, app.replica.clone(), app.clone());
        let mut after = None;
        // Page by page, each as the replica stands when it is written (never older than this
        // request): memory stays at one page, however large the server.
        let pages = move || {
            let page = replica.list_page(server_uuid, after, STREAMED_CHUNK);
            after = page.last().map(|credential| credential.id).or(after);
            page
        };
        let last_used =
            move |page: &[ReplicaCredential]| usage.usage.last_used_each(page.iter().map(|credential| credential.uuid));
        return Ok(streamed_list(pages, last_used, now, share));
    }
    let credentials = app.replica.list(caller.server_uuid);
    let last_used = app.usage.last_used_each(credentials.iter().map(|credential| credential.uuid));
    let body = list_json::answer(&credentials, &last_used, now);
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

/// Credentials per chunk of a streamed answer.
const STREAMED_CHUNK: usize = 512;

/// Where a streamed answer stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Streamed {
    Opening,
    AfterFirst,
    Closed,
}

/// A large answer, streamed in chunks as the client reads it: `next_page` gives the next
/// credentials (none at the end), so memory stays at one chunk however many credentials there
/// are, and the task yields between chunks, so other requests go on. The server's large-read
/// share is held until the last chunk is sent (or the client leaves).
fn streamed_list(
    mut next_page: impl FnMut() -> Vec<ReplicaCredential> + Send + 'static,
    last_used: impl Fn(&[ReplicaCredential]) -> Vec<Option<DateTime<Utc>>> + Send + 'static,
    at: DateTime<Utc>,
    share: LargeRead,
) -> Response {
    let chunks = futures::stream::unfold(Streamed::Opening, move |state| {
        let chunk = (state != Streamed::Closed).then(|| {
            let page = next_page();
            let mut body = Vec::with_capacity(page.len() * list_json::CREDENTIAL_BYTES + list_json::OPENING.len());
            if state == Streamed::Opening {
                body.extend_from_slice(list_json::OPENING);
            }
            list_json::write_page(&mut body, &page, &last_used(&page), at, state == Streamed::AfterFirst);
            let next = if page.is_empty() {
                body.extend_from_slice(list_json::CLOSING);
                Streamed::Closed
            } else {
                Streamed::AfterFirst
            };
            (axum::body::Bytes::from(body), next)
        });
        let _held = &share;
        let item = chunk.map(|(body, next)| (Ok::<_, std::io::Error>(body), next));
        async move {
            // A client that reads as fast as we write would otherwise keep this worker thread
            // for the whole answer: other servers' requests get their turn between chunks.
            tokio::task::yield_now().await;
            item
        }
    });
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], Body::from_stream(chunks)).into_response()
}

fn parse_as_of(as_of: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(as_of).map(|as_of| as_of.with_timezone(&Utc)).map_err(|_| ApiError::InvalidValue {
        code: "invalid_as_of",
        message: "as_of must be an RFC 3339 date-time such as 2026-11-30T12:00:00Z".into(),
    })
}

/// The caller's credentials as they stood at `as_of`, folded from the log as it streams in
/// with the same `apply` as the live view: memory grows with the server's credentials, not with
/// its log. `last_used_at` is operational data, not history: it is null here.
async fn credentials_as_of(app: &AppState, caller: Caller, as_of: DateTime<Utc>) -> Result<Vec<Credential>, ApiError> {
    let mut replay = Replay::new(None, None);
    app.store.fold_server_events_until(caller.server_uuid, as_of, |event| Ok(replay.push(&event)?)).await?;
    Ok(replay.finish())
}

/// Create a new credential.
///
/// Its key is in this answer and nowhere else, ever.
#[utoipa::path(post, path = "/api/v1/credentials/create", operation_id = "createCredential", tag = "credentials", request_body = CreateRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The new credential and its key", body = CreatedAnswer),
        CommonErrors,
    ))]
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
    let expires_at = match &request.expires_at {
        None | Some(serde_json::Value::Null) => None,
        Some(raw) => Some(ExpiresAt::parse(raw, Utc::now()).map_err(|error| invalid("invalid_expires_at", error))?),
    };
    // Checked against this instance's replica after the read barrier: creates in flight at the
    // same moment can pass the limit by their number, which is all a guard on memory needs.
    if app.replica.credential_count(caller.server_uuid) >= app.max_credentials_per_server {
        return Err(ApiError::Conflict {
            code: "credential_limit_reached",
            message:
                "the server holds as many credentials as it may (held ones count too): revoked credentials cannot \
                      be deleted, so ask the operator to raise MAX_CREDENTIALS_PER_SERVER",
        });
    }
    // ThreadRng is a CSPRNG seeded from the OS: asking the kernel for each of a key's
    // characters cost a system call apiece.
    let key = ApiKey::generate(&mut rand::thread_rng());
    let command = Command::Create {
        server_uuid: caller.server_uuid,
        credential_uuid: Uuid::new_v4(),
        name,
        credential_type,
        hold: request.hold.unwrap_or(false),
        key: KeyMaterial::from(&key),
        expires_at,
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
        expires_at: credential.expires_at.map(deadline_text),
    }))
}

/// Create a new credential and retire the old one (key rotation).
///
/// A replacement with the same name and type. Without `grace_period`, the old credential is held
/// in the same transaction. With one, the old key keeps working until `old_expires_at` and is
/// then locked with reason `rotated`, so that clients can move to the new key without downtime.
/// Triggers a CredentialLocked webhook for the old credential when it is locked.
#[utoipa::path(post, path = "/api/v1/credentials/regenerate", operation_id = "regenerateCredential", tag = "credentials", request_body = RegenerateRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The old and the new credential, and the new key", body = RegeneratedAnswer),
        (status = 404, description = "No such credential on this server", body = ErrorEnvelope),
        (status = 409, description = "The credential is held (`credential_held`), or already replaced and in its \
            grace period (`credential_replaced`)", body = ErrorEnvelope),
        CommonErrors,
    ))]
pub async fn regenerate(
    State(app): State<AppState>,
    context: RequestContext,
    caller: Caller,
    JsonBody(request): JsonBody<RegenerateRequest>,
) -> Result<Success<RegeneratedCredential>, ApiError> {
    let credential_uuid = parse_uuid(&request.uuid)?;
    let grace = match &request.grace_period {
        None | Some(serde_json::Value::Null) => GracePeriod::NONE,
        Some(raw) => GracePeriod::parse(raw).map_err(|error| invalid("invalid_grace_period", error))?,
    };
    let key = ApiKey::generate(&mut rand::thread_rng());
    let command = Command::Regenerate {
        server_uuid: caller.server_uuid,
        credential_uuid,
        new_credential_uuid: Uuid::new_v4(),
        new_key: KeyMaterial::from(&key),
        grace,
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
        old_expires_at: old.expires_at.map(deadline_text),
    }))
}

/// Mark a credential as held (revoked).
///
/// Held credentials cannot be used for authentication. Revoking a held one changes nothing and
/// answers the same. Triggers a CredentialLocked webhook.
#[utoipa::path(post, path = "/api/v1/credentials/revoke", operation_id = "revokeCredential", tag = "credentials", request_body = UuidRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The credential, held", body = RevokedAnswer),
        (status = 404, description = "No such credential on this server", body = ErrorEnvelope),
        CommonErrors,
    ))]
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
    // A credential past its deadline is held even before its deadline's lock is recorded.
    let hold = credential.held_at(Utc::now());
    Ok(Success(RevokedCredential { id: credential.id, uuid: credential.uuid, hold }))
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
