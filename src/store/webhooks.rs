//! Webhook endpoints, deliveries and attempts as every backend stores them: the rows the API,
//! the dispatcher and the workers exchange with the store.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::DeliveryStatus;

// Delivery states are text in every backend (`webhook_deliveries.status`, `webhook_attempts.outcome`,
// both CHECKed against the four names), written with `DeliveryStatus::as_str` and read back here,
// once for whichever backend decodes text.
impl<DB: sqlx::Database> sqlx::Type<DB> for DeliveryStatus
where
    str: sqlx::Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <str as sqlx::Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <str as sqlx::Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for DeliveryStatus
where
    &'r str: sqlx::Decode<'r, DB>,
{
    fn decode(value: <DB as sqlx::Database>::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(DeliveryStatus::parse(<&'r str as sqlx::Decode<'r, DB>>::decode(value)?)?)
    }
}

/// An endpoint as its owner sees it (the secret is shown once, at creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WebhookEndpoint {
    pub uuid: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
}

/// Where and how to send: what the worker needs of an endpoint.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EndpointTarget {
    pub uuid: Uuid,
    pub url: String,
    pub secret: String,
}

/// A delivery ready for an attempt.
#[derive(Debug, Clone)]
pub struct DeliveryTarget {
    pub id: i64,
    pub webhook_id: String,
    pub payload: String,
    pub endpoint: EndpointTarget,
    /// The number of this attempt (1 for the first).
    pub attempt: i32,
}

/// The credential facts a webhook body carries.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LockedCredential {
    pub id: i64,
    pub uuid: Uuid,
    pub name: String,
    pub credential_type: String,
    pub hold: bool,
    pub server_uuid: Uuid,
    pub server_name: String,
}

/// One attempt, as `webhooks/deliveries` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttemptListing {
    pub delivery_id: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub webhook_id: String,
    pub endpoint_uuid: Uuid,
    pub attempt: i32,
    pub response_status: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
    pub attempted_at: DateTime<Utc>,
    /// When the next attempt is due, if this one scheduled another.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// What this attempt left the delivery as.
    #[schema(value_type = String, example = "delivered")]
    pub outcome: DeliveryStatus,
    /// The delivery's state now.
    #[schema(value_type = String, example = "delivered")]
    pub delivery_status: DeliveryStatus,
}

/// What an attempt found.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub attempted_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub response_status: Option<i32>,
    pub error: Option<String>,
    pub outcome: DeliveryStatus,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

pub enum Requeue {
    Requeued,
    NotFailed,
    NotFound,
    /// Its endpoint answered 410 or was deleted: no attempt would ever be made.
    EndpointClosed,
}

/// A delivery the dispatcher opens: due at once, held by nobody, so any worker may claim it.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub server_uuid: Uuid,
    pub endpoint_uuid: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub webhook_id: String,
    pub payload: String,
}
