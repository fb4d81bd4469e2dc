//! Webhook endpoints of the caller's server, and the record of every delivery attempt.

use axum::extract::State;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::envelope::{success_envelope, Success};
use super::error::ApiError;
use super::error::{CommonErrors, ErrorEnvelope};
use super::extract::JsonBody;
use super::AppState;
use crate::domain::{Caller, DeliveryStatus, EventFilter, WebhookSecret, WebhookUrl};
use crate::store::{AttemptListing, Requeue, WebhookEndpoint};
use crate::webhooks::{check_destination, DestinationRefused};

const MAX_DESCRIPTION_CHARS: usize = 1024;
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointRequest {
    /// Where to POST: an http or https URL that resolves to a public address.
    #[schema(example = "https://hooks.example.com/credential-ledger")]
    url: String,
    /// Default `["CredentialLocked"]`, the one event offered.
    #[schema(example = json!(["CredentialLocked"]))]
    events: Option<Vec<String>>,
    #[schema(example = "billing")]
    description: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListEndpointsRequest {}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteEndpointRequest {
    #[schema(example = "0b5bb9c2-3f3c-4a8e-9a53-a3a0e4e6c1d2", format = Uuid)]
    uuid: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesRequest {
    /// Only this endpoint's.
    #[schema(format = Uuid)]
    uuid: Option<String>,
    /// `pending`, `retrying`, `delivered` or `failed`.
    #[schema(example = "failed", pattern = "^(pending|retrying|delivered|failed)$")]
    status: Option<String>,
    /// 1 to 1000, default 100.
    #[schema(example = 100, minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "super::extract::json_optional_integer")]
    limit: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// A `delivery_id` from `deliveries`.
    #[schema(example = 1)]
    #[serde(deserialize_with = "super::extract::json_integer")]
    id: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    #[schema(inline)]
    endpoint: WebhookEndpoint,
    /// Shown once: verify signatures with it.
    secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedEndpoint {
    uuid: Uuid,
    deleted: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RetriedDelivery {
    id: i64,
    #[schema(value_type = String, example = "retrying")]
    status: DeliveryStatus,
}

success_envelope!(EndpointAnswer, CreatedEndpoint);
success_envelope!(EndpointListAnswer, Vec<WebhookEndpoint>);
success_envelope!(DeletedAnswer, DeletedEndpoint);
success_envelope!(AttemptListAnswer, Vec<AttemptListing>);
success_envelope!(RetriedAnswer, RetriedDelivery);

/// Register a webhook endpoint; its signing secret (Standard Webhooks `whsec_…`) is in this answer only.
///
/// The URL must be `http` or `https` and resolve to a public address (private, loopback and
/// link-local ones are refused unless the operator allows them). The endpoint receives every
/// `CredentialLocked` of this server from now on.
#[utoipa::path(post, path = "/api/v1/webhooks/create", operation_id = "createWebhookEndpoint", tag = "webhooks", request_body = CreateEndpointRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The endpoint and its secret", body = EndpointAnswer),
        CommonErrors,
    ))]
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<CreateEndpointRequest>,
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

/// The server's webhook endpoints, oldest first (without secrets).
///
/// Deleted endpoints are left out; an endpoint that answered `410 Gone` is listed with
/// `disabled_at` and `disabled_reason`. The body may be omitted.
#[utoipa::path(post, path = "/api/v1/webhooks/list", operation_id = "listWebhookEndpoints", tag = "webhooks", request_body = Option<ListEndpointsRequest>,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The endpoints", body = EndpointListAnswer),
        CommonErrors,
    ))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(ListEndpointsRequest {}): JsonBody<ListEndpointsRequest>,
) -> Result<Success<Vec<WebhookEndpoint>>, ApiError> {
    Ok(Success(app.store.list_webhook_endpoints(caller.server_uuid).await?))
}

/// Delete a webhook endpoint: no more deliveries to it; its history stays.
///
/// Deliveries still owed to it are marked `failed`. `webhooks/deliveries` keeps listing its
/// attempts by its uuid.
#[utoipa::path(post, path = "/api/v1/webhooks/delete", operation_id = "deleteWebhookEndpoint", tag = "webhooks", request_body = DeleteEndpointRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Deleted", body = DeletedAnswer),
        (status = 404, description = "Not found on this server", body = ErrorEnvelope),
        CommonErrors,
    ))]
pub async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<DeleteEndpointRequest>,
) -> Result<Success<DeletedEndpoint>, ApiError> {
    let uuid = parse_uuid(&request.uuid)?;
    if !app.store.delete_webhook_endpoint(caller.server_uuid, uuid).await? {
        return Err(ApiError::NotFound { code: "webhook_not_found", what: "webhook endpoint" });
    }
    Ok(Success(DeletedEndpoint { uuid, deleted: true }))
}

/// Every webhook attempt for the server, newest first.
///
/// Optionally only one endpoint's (`uuid`, deleted ones included), and only deliveries whose
/// current status is `status`. Each row is one attempt, with its delivery's status now.
#[utoipa::path(post, path = "/api/v1/webhooks/deliveries", operation_id = "listWebhookDeliveries", tag = "webhooks", request_body = Option<DeliveriesRequest>,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The attempts", body = AttemptListAnswer),
        (status = 404, description = "`webhook_not_found`: `uuid` is not an endpoint of this server (deleted ones \
            count)", body = ErrorEnvelope),
        CommonErrors,
    ))]
pub async fn deliveries(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<DeliveriesRequest>,
) -> Result<Success<Vec<AttemptListing>>, ApiError> {
    let endpoint = request.uuid.as_deref().map(parse_uuid).transpose()?;
    let status = request.status.as_deref().map(DeliveryStatus::parse).transpose();
    let status = status.map_err(|error| invalid("invalid_status", error))?;
    let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(invalid("invalid_limit", "limit must be between 1 and 1000"));
    }
    // An empty list would read as "nothing delivered yet" to a client with a wrong uuid.
    if let Some(endpoint) = endpoint {
        if !app.store.webhook_endpoint_exists(caller.server_uuid, endpoint).await? {
            return Err(ApiError::NotFound { code: "webhook_not_found", what: "webhook endpoint" });
        }
    }
    Ok(Success(app.store.list_webhook_attempts(caller.server_uuid, endpoint, status, limit).await?))
}

/// One more attempt of a failed delivery.
///
/// Committed here, made by a webhook worker at once (in-process delivery) or within its sweep
/// interval. Only a `failed` delivery to an endpoint that is neither disabled nor deleted can be
/// retried.
#[utoipa::path(post, path = "/api/v1/webhooks/retry", operation_id = "retryWebhookDelivery", tag = "webhooks", request_body = RetryRequest,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Queued", body = RetriedAnswer),
        (status = 404, description = "Not found on this server", body = ErrorEnvelope),
        (status = 409, description = "The delivery has not failed (`delivery_not_failed`), or its endpoint answered \
            410 or was deleted (`webhook_endpoint_closed`)", body = ErrorEnvelope),
        CommonErrors,
    ))]
pub async fn retry(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<RetryRequest>,
) -> Result<Success<RetriedDelivery>, ApiError> {
    // One write, no broker: the attempt is due in the database, where a worker's sweep (or the
    // in-process worker, woken here) finds it, so no crash can leave it committed and lost.
    match app.store.requeue_webhook_delivery(caller.server_uuid, request.id).await? {
        Requeue::NotFound => Err(ApiError::NotFound { code: "delivery_not_found", what: "delivery" }),
        Requeue::NotFailed => {
            Err(ApiError::Conflict { code: "delivery_not_failed", message: "only a failed delivery is retried" })
        }
        Requeue::EndpointClosed => Err(ApiError::Conflict {
            code: "webhook_endpoint_closed",
            message: "the delivery's endpoint answered 410 Gone or was deleted: nothing would be sent",
        }),
        Requeue::Requeued => {
            app.delivery_wake.notify_one();
            Ok(Success(RetriedDelivery { id: request.id, status: DeliveryStatus::Retrying }))
        }
    }
}

fn parse_uuid(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| invalid("invalid_uuid", "uuid must be a UUID"))
}

fn invalid(code: &'static str, error: impl std::fmt::Display) -> ApiError {
    ApiError::InvalidValue { code, message: error.to_string() }
}
