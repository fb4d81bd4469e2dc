//! Extractors: where raw requests become typed values, or a precise error.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::error::{redact_keys, ApiError};
use super::AppState;
use crate::domain::{ApiKey, Caller, EventMetadata};
use crate::metrics::{metrics, ReasonLabels};

pub const API_KEY_HEADER: &str = "x-server-api-key";
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Request bodies above this are refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_REQUEST_ID_CHARS: usize = 128;

/// A JSON request body, decoded into `T` (whose fields are checked: unknown ones are refused).
/// It must be a JSON object; an empty body is read as `{}`, so `list` can be called bare. `null`
/// is refused like any other non-object: the document says "an object, or no body", and a lenient
/// reading would accept what the contract refuses.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let mut content_types = request.headers().get_all(header::CONTENT_TYPE).iter();
        let declared_json = content_types.next().map(|value| is_json(value.as_bytes()));
        // Two Content-Type headers leave the body's type to whoever reads it: refused, not guessed.
        if content_types.next().is_some() {
            return Err(ApiError::UnsupportedMediaType);
        }
        if declared_json == Some(false) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let body = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES }
            } else {
                ApiError::InvalidParameters("the request body could not be read".into())
            }
        })?;
        let body: &[u8] = match declared_json {
            None if !body.is_empty() => return Err(ApiError::UnsupportedMediaType),
            _ if body.is_empty() => b"{}",
            _ => &body,
        };
        // serde also reads a struct from an array of its fields; the API takes objects only.
        if matches!(body.trim_ascii_start().first(), Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f')) {
            return Err(ApiError::InvalidParameters("the request body must be a JSON object".into()));
        }
        let mut decoder = serde_json::Deserializer::from_slice(body);
        let value = serde_path_to_error::deserialize(&mut decoder).map_err(describe_error)?;
        decoder.end().map_err(|error| ApiError::MalformedJson(error.to_string()))?;
        Ok(JsonBody(value))
    }
}

fn is_json(content_type: &[u8]) -> bool {
    let Ok(content_type) = std::str::from_utf8(content_type) else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn describe_error(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path().to_string();
    let inner = error.into_inner();
    match inner.classify() {
        serde_json::error::Category::Data => {
            let text = inner.to_string();
            let text = text.rsplit_once(" at line ").map_or(text.as_str(), |(reason, _)| reason);
            // serde's "invalid type: string \"…\", expected …" quotes the client's value; a value
            // may be a secret, so only the expectation is kept.
            let reason = match text.split_once(", expected ") {
                Some((found, expected)) if found.starts_with("invalid ") => {
                    format!("expected {expected}")
                }
                _ => text.to_owned(),
            };
            let message = if path == "." { reason } else { format!("`{path}`: {reason}") };
            ApiError::InvalidParameters(message)
        }
        _ => ApiError::MalformedJson(inner.to_string()),
    }
}

/// The authenticated caller: a non-held API credential, from the `X-Server-API-Key` header.
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let arrived = std::time::Instant::now();
        let address = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
        if let Some(wait) = address.and_then(|address| state.auth_guard.refused(address)) {
            return Err(refused("rate_limited", ApiError::TooManyFailedAuthentications { retry_after: wait }));
        }
        let mut headers = parts.headers.get_all(API_KEY_HEADER).iter();
        let header = headers.next().filter(|value| !value.is_empty());
        let header = header.ok_or_else(|| refused("missing", ApiError::MissingApiKey))?;
        let failed = |reason| {
            if let Some(address) = address {
                state.auth_guard.record_failure(address);
            }
            refused(reason, ApiError::InvalidApiKey)
        };
        // Proxies and frameworks disagree on which of two keys counts: none does.
        if headers.next().is_some() {
            return Err(failed("ambiguous"));
        }
        // A malformed key or a bad checksum is refused without a database round trip.
        let Some(key) = header.to_str().ok().and_then(|text| ApiKey::parse(text).ok()) else {
            return Err(failed("malformed"));
        };
        // Everything committed before this request is in the replica once it is in sync.
        state.replica.sync(arrived).await?;
        // Read after the barrier: a key is refused from its deadline exactly, erring late.
        let now = chrono::Utc::now();
        let Some(caller) = state.replica.authenticate(&key.hash(), now) else {
            return Err(failed("unknown"));
        };
        state.usage.record(caller.credential_uuid, now);
        tracing::Span::current().record("caller", tracing::field::display(caller.credential_uuid));
        Ok(caller)
    }
}

fn refused(reason: &'static str, error: ApiError) -> ApiError {
    metrics().auth_failures.get_or_create(&ReasonLabels { reason }).inc();
    error
}

/// Who asked and from where, for the metadata of the events a request appends.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: Option<String>,
    pub source_ip: Option<String>,
}

impl RequestContext {
    pub fn metadata(&self, caller: &Caller) -> EventMetadata {
        EventMetadata { actor: caller.actor(), request_id: self.request_id.clone(), source_ip: self.source_ip.clone() }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let request_id = parts
            .headers
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(|id| redact_keys(&id.chars().take(MAX_REQUEST_ID_CHARS).collect::<String>()));
        let source_ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip().to_string());
        Ok(RequestContext { request_id, source_ip })
    }
}

/// JSON Schema counts `3.0` as an integer, serde does not: integer fields accept both (and
/// nothing else), so that what the OpenAPI document promises is what the service accepts.
pub fn json_integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    integral(&serde_json::Number::deserialize(deserializer)?)
}

pub fn json_optional_integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Option::<serde_json::Number>::deserialize(deserializer)?.as_ref().map(integral).transpose()
}

fn integral<E: serde::de::Error>(number: &serde_json::Number) -> Result<i64, E> {
    number
        .as_i64()
        .or_else(|| {
            number.as_f64().filter(|value| value.fract() == 0.0 && value.abs() < 9.0e18).map(|value| value as i64)
        })
        .ok_or_else(|| E::custom("expected an integer"))
}
