//! Webhook endpoints of the caller's server, and the record of every delivery attempt.

use axum::extract::State;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::JsonBody;
use super::{AppState, Success};
use crate::domain::{EventFilter, WebhookSecret, WebhookUrl};
use crate::store::{AttemptListing, Caller, Requeue, WebhookEndpoint};
use crate::webhooks::{check_destination, enqueue_attempt, DestinationRefused};

const MAX_DESCRIPTION_CHARS: usize = 1024;
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;
const DELIVERY_STATUSES: [&str; 4] = ["pending", "retrying", "delivered", "failed"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    url: String,
    events: Option<Vec<String>>,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    uuid: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesRequest {
    uuid: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    id: i64,
}

#[derive(Debug, Serialize)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    endpoint: WebhookEndpoint,
    /// Shown once: verify signatures with it.
    secret: String,
}

#[derive(Debug, Serialize)]
pub struct DeletedEndpoint {
    uuid: Uuid,
    deleted: bool,
}

#[derive(Debug, Serialize)]
pub struct RetriedDelivery {
    id: i64,
    status: &'static str,
}

/// `POST /api/v1/webhooks/create`: registers an endpoint; its signing secret is in this answer.
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<CreateRequest>,
) -> Result<Success<CreatedEndpoint>, ApiError> {
    let url = WebhookUrl::parse(&request.url).map_err(|error| invalid("invalid_url", error))?;
    let events = EventFilter::parse(request.events.as_deref()).map_err(|error| invalid("invalid_events", error))?;
    let description = request.description.as_deref().map(str::trim).filter(|text| !text.is_empty());
    if description.is_some_and(|text| text.chars().count() > MAX_DESCRIPTION_CHARS || text.contains('\0')) {
        return Err(invalid("invalid_description", "description must be at most 1024 characters, without NUL"));
    }
    check_destination(&url, app.webhooks.allow_private).await.map_err(|refused| match refused {
        DestinationRefused::Internal => invalid("url_not_allowed", refused),
        DestinationRefused::Unresolvable => invalid("invalid_url", refused),
    })?;
    let secret = WebhookSecret::generate(&mut OsRng);
    let endpoint = app
        .store
        .create_webhook_endpoint(caller.server_uuid, url.as_str(), events.names(), description, secret.expose_secret())
        .await?;
    tracing::Span::current().record("credential_uuid", tracing::field::display(endpoint.uuid));
    Ok(Success(CreatedEndpoint { endpoint, secret: secret.expose_secret().to_owned() }))
}

/// `POST /api/v1/webhooks/list`: the caller's server's endpoints, oldest first.
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(ListRequest {}): JsonBody<ListRequest>,
) -> Result<Success<Vec<WebhookEndpoint>>, ApiError> {
    Ok(Success(app.store.list_webhook_endpoints(caller.server_uuid).await?))
}

/// `POST /api/v1/webhooks/delete`: no more deliveries to that endpoint; its history stays.
pub async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<DeleteRequest>,
) -> Result<Success<DeletedEndpoint>, ApiError> {
    let uuid = parse_uuid(&request.uuid)?;
    if !app.store.delete_webhook_endpoint(caller.server_uuid, uuid).await? {
        return Err(ApiError::NotFound { code: "webhook_not_found", what: "webhook endpoint" });
    }
    Ok(Success(DeletedEndpoint { uuid, deleted: true }))
}

/// `POST /api/v1/webhooks/deliveries`: every attempt for the caller's server, newest first.
pub async fn deliveries(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<DeliveriesRequest>,
) -> Result<Success<Vec<AttemptListing>>, ApiError> {
    let endpoint = request.uuid.as_deref().map(parse_uuid).transpose()?;
    let status = request.status.as_deref();
    if status.is_some_and(|status| !DELIVERY_STATUSES.contains(&status)) {
        return Err(invalid("invalid_status", "status must be one of pending, retrying, delivered, failed"));
    }
    let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(invalid("invalid_limit", "limit must be between 1 and 1000"));
    }
    Ok(Success(app.store.list_webhook_attempts(caller.server_uuid, endpoint, status, limit).await?))
}

/// `POST /api/v1/webhooks/retry`: one more attempt of a failed delivery, queued now.
pub async fn retry(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<RetryRequest>,
) -> Result<Success<RetriedDelivery>, ApiError> {
    match app.store.requeue_webhook_delivery(caller.server_uuid, request.id).await? {
        Requeue::NotFound => return Err(ApiError::NotFound { code: "delivery_not_found", what: "delivery" }),
        Requeue::NotFailed => {
            return Err(ApiError::Conflict {
                code: "delivery_not_failed",
                message: "only a failed delivery is retried",
            })
        }
        Requeue::Requeued => {}
    }
    if let Err(error) = enqueue_attempt(&app.webhooks, request.id).await {
        app.store.fail_webhook_delivery(request.id).await?;
        return Err(ApiError::Unavailable(format!("the retry could not be queued: {error}")));
    }
    Ok(Success(RetriedDelivery { id: request.id, status: "retrying" }))
}

fn parse_uuid(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| invalid("invalid_uuid", "uuid must be a UUID"))
}

fn invalid(code: &'static str, error: impl std::fmt::Display) -> ApiError {
    ApiError::InvalidValue { code, message: error.to_string() }
}
