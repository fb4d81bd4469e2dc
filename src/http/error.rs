//! The one mapping from everything that can go wrong to an HTTP status and a stable code.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::writer::WriteError;
use crate::domain::{DomainError, KEY_PREFIX};
use crate::store::StoreError;

/// Every error the API answers with. `code` is part of the public contract; messages are for
/// humans and may change.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    InvalidParameters(String),
    #[error("{message}")]
    InvalidValue { code: &'static str, message: String },
    #[error("the X-Server-API-Key header is missing")]
    MissingApiKey,
    #[error("the API key is not valid")]
    InvalidApiKey,
    #[error("the X-Relay-Secret header is missing or wrong")]
    RelaySecret,
    #[error("no credential with that uuid")]
    CredentialNotFound,
    #[error("no {what} with that identifier")]
    NotFound { code: &'static str, what: &'static str },
    #[error("{message}")]
    Conflict { code: &'static str, message: &'static str },
    #[error("the credential is held and cannot be regenerated")]
    CredentialHeld,
    #[error("a credential with that uuid already exists")]
    CredentialExists,
    #[error("no such endpoint")]
    RouteNotFound,
    #[error("this endpoint does not accept that method")]
    MethodNotAllowed,
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body must be JSON, sent with Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("too many failed authentications from this address; retry later")]
    TooManyFailedAuthentications { retry_after: std::time::Duration },
    #[error("this server already has as many large reads (big lists, as_of) running as it may; retry shortly")]
    ServerBusy,
    #[error("the request took too long and was abandoned")]
    Timeout,
    #[error("the service is at capacity, try again")]
    Overloaded,
    #[error("the service is temporarily unavailable, try again")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

/// `"error"`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErrorStatus {
    Error,
}

/// Every error answer: `{"status": "error", "data": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    status: ErrorStatus,
    data: ErrorData,
}

/// The errors any authenticated call may answer with, as the OpenAPI document lists them.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Only described, never built: `ApiError` is what answers.
pub enum CommonErrors {
    #[response(status = 400, description = "Malformed JSON or parameters")]
    BadRequest(ErrorEnvelope),
    #[response(status = 401, description = "Missing or invalid key")]
    Unauthorized(ErrorEnvelope),
    #[response(status = 413, description = "Body over 64 KiB")]
    PayloadTooLarge(ErrorEnvelope),
    #[response(status = 415, description = "Body not JSON")]
    UnsupportedMediaType(ErrorEnvelope),
    #[response(status = 422, description = "A value out of range")]
    InvalidValue(ErrorEnvelope),
    #[response(
        status = 429,
        description = "Too many failed authentications from this address, or too many large reads of this server at once"
    )]
    TooManyRequests(ErrorEnvelope),
    #[response(status = 405, description = "`method_not_allowed`: this path answers `POST` only")]
    MethodNotAllowed(ErrorEnvelope),
    #[response(status = 500, description = "`internal_error`: a fault of the service, logged with the request id")]
    Internal(ErrorEnvelope),
    #[response(status = 503, description = "Temporarily unavailable")]
    Unavailable(ErrorEnvelope),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorData {
    /// Stable, machine-readable: `invalid_api_key`, `credential_not_found`, `invalid_name`, …
    #[schema(example = "invalid_api_key")]
    code: String,
    /// For humans; may change; never contains a key.
    #[schema(example = "the API key is not valid")]
    message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) | ApiError::InvalidParameters(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidValue { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::MissingApiKey | ApiError::InvalidApiKey => StatusCode::UNAUTHORIZED,
            ApiError::RelaySecret => StatusCode::FORBIDDEN,
            ApiError::CredentialNotFound | ApiError::NotFound { .. } | ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::CredentialHeld | ApiError::CredentialExists | ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyFailedAuthentications { .. } | ApiError::ServerBusy => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout | ApiError::Overloaded | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::InvalidParameters(_) => "invalid_parameters",
            ApiError::InvalidValue { code, .. } => code,
            ApiError::MissingApiKey => "missing_api_key",
            ApiError::InvalidApiKey => "invalid_api_key",
            ApiError::RelaySecret => "invalid_relay_secret",
            ApiError::CredentialNotFound => "credential_not_found",
            ApiError::NotFound { code, .. } | ApiError::Conflict { code, .. } => code,
            ApiError::CredentialHeld => "credential_held",
            ApiError::CredentialExists => "credential_exists",
            ApiError::RouteNotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::TooManyFailedAuthentications { .. } => "too_many_failed_authentications",
            ApiError::ServerBusy => "server_busy",
            ApiError::Timeout => "request_timeout",
            ApiError::Overloaded => "overloaded",
            ApiError::Unavailable(_) => "service_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// What the client is told. Causes of 5xx stay in the logs.
    fn public_message(&self) -> String {
        redact_keys(&self.to_string())
    }
}

/// Why a request was answered with an error, carried on the response to the line that logs it,
/// so that every request is one line, its cause included.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: &'static str,
    /// What went wrong inside, for a 5xx: redacted, never shown to the client.
    pub cause: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let cause = match &self {
            ApiError::Unavailable(cause) | ApiError::Internal(cause) => Some(redact_keys(cause)),
            _ => None,
        };
        let refusal = Refusal { code: self.code(), cause };
        let body = ErrorEnvelope {
            status: ErrorStatus::Error,
            data: ErrorData { code: self.code().to_owned(), message: self.public_message() },
        };
        let retry_after = match &self {
            ApiError::TooManyFailedAuthentications { retry_after } => Some(retry_after.as_secs().max(1)),
            ApiError::ServerBusy => Some(1),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => None,
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // The rest of an oversized body is not read, so the connection cannot carry another
        // request: saying so keeps a client from sending its next one down a closing connection.
        if matches!(self, ApiError::PayloadTooLarge { .. }) {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response.extensions_mut().insert(refusal);
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::CredentialNotFound => ApiError::CredentialNotFound,
            DomainError::CredentialHeld => ApiError::CredentialHeld,
            DomainError::CredentialExists => ApiError::CredentialExists,
            DomainError::CredentialReplaced => ApiError::Conflict {
                code: "credential_replaced",
                message: "the credential was already replaced and is in its grace period; rotate its replacement \
                          instead",
            },
            DomainError::ExpiryNotInFuture => {
                ApiError::InvalidValue { code: "invalid_expires_at", message: error.to_string() }
            }
            DomainError::ActorNotAuthorized => ApiError::InvalidApiKey,
            DomainError::Inconsistent(reason) => ApiError::Internal(reason),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Database(_)
            | StoreError::Migrate(_)
            | StoreError::Unavailable(_)
            | StoreError::Unsupported(_) => ApiError::Unavailable(error.to_string()),
            // Found when the ledger is opened, before any request is served.
            StoreError::UnsupportedUrl(_)
            | StoreError::CannotOpen { .. }
            | StoreError::NotALedger(_)
            | StoreError::ForeignDatabase { .. }
            | StoreError::NewerSchema(_) => ApiError::Internal(error.to_string()),
            // Only `import` answers this, never a request.
            StoreError::NotEmpty(_) => ApiError::Internal(error.to_string()),
            StoreError::Corrupt { .. } | StoreError::InconsistentView { .. } => ApiError::Internal(error.to_string()),
            // A write may have committed: the answer must say "unknown", not "retry".
            StoreError::TimedOut(_) => ApiError::Timeout,
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::Rejected(refused) => refused.into(),
            WriteError::Unavailable(cause) if matches!(*cause, StoreError::TimedOut(_)) => ApiError::Timeout,
            WriteError::Unavailable(_) | WriteError::Stopped => ApiError::Unavailable(error.to_string()),
        }
    }
}

/// Replaces anything shaped like a key with a placeholder, so that a key a client put in the
/// wrong place is never echoed or logged.
pub fn redact_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(KEY_PREFIX) {
        out.push_str(&rest[..start]);
        out.push_str(KEY_PREFIX);
        out.push_str("[redacted]");
        let after = &rest[start + KEY_PREFIX.len()..];
        let secret_len = after.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(after.len());
        rest = &after[secret_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_redacted_wherever_they_appear() {
        assert_eq!(redact_keys("unknown field `vml_abcDEF123`, expected"), "unknown field `vml_[redacted]`, expected");
        assert_eq!(redact_keys("vml_x vml_y"), "vml_[redacted] vml_[redacted]");
        assert_eq!(redact_keys("nothing here"), "nothing here");
    }
}
