//! Webhook endpoints, deliveries and attempts.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use sqlx::{Decode, Postgres, Transaction, Type};
use uuid::Uuid;

use super::{PgStore, StoreError};
use crate::domain::DeliveryStatus;

// Delivery states are text in the database (`webhook_deliveries.status`, `webhook_attempts.outcome`,
// both CHECKed against the four names), written with `DeliveryStatus::as_str` and read back here.
impl Type<Postgres> for DeliveryStatus {
    fn type_info() -> PgTypeInfo {
        <&str as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <&str as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for DeliveryStatus {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(DeliveryStatus::parse(<&str as Decode<Postgres>>::decode(value)?)?)
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
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
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
}

/// An attempt a sweep hands to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueAttempt {
    pub delivery_id: i64,
    /// The number of the attempt due.
    pub attempt: i32,
}

/// Attempts due, their deliveries locked until they are handed over.
pub struct DueAttempts {
    transaction: Transaction<'static, Postgres>,
    pub attempts: Vec<DueAttempt>,
}

impl DueAttempts {
    /// Marks these attempts handed over (their messages are on the work queue), due now, and
    /// lets go of their deliveries.
    pub async fn hand_over(mut self) -> Result<(), StoreError> {
        let ids: Vec<i64> = self.attempts.iter().map(|attempt| attempt.delivery_id).collect();
        sqlx::query!(
            r#"UPDATE webhook_deliveries SET next_attempt_at = now(), handed_over_at = now(), updated_at = now()
                WHERE id = ANY($1)"#,
            &ids,
        )
        .execute(&mut *self.transaction)
        .await?;
        self.transaction.commit().await?;
        Ok(())
    }
}

impl PgStore {
    pub async fn create_webhook_endpoint(
        &self,
        server_uuid: Uuid,
        url: &str,
        events: &[String],
        description: Option<&str>,
        secret: &str,
    ) -> Result<WebhookEndpoint, StoreError> {
        let endpoint = sqlx::query_as!(
            WebhookEndpoint,
            r#"INSERT INTO webhook_endpoints (uuid, server_uuid, url, events, description, secret)
               VALUES ($1, $2, $3, $4, $5, $6)
               RETURNING uuid, url, events, description, created_at, disabled_at, disabled_reason"#,
            Uuid::new_v4(),
            server_uuid,
            url,
            events,
            description,
            secret,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(endpoint)
    }

    pub async fn list_webhook_endpoints(&self, server_uuid: Uuid) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let endpoints = sqlx::query_as!(
            WebhookEndpoint,
            r#"SELECT uuid, url, events, description, created_at, disabled_at, disabled_reason
                 FROM webhook_endpoints WHERE server_uuid = $1 AND deleted_at IS NULL
                ORDER BY created_at, uuid"#,
            server_uuid,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(endpoints)
    }

    /// Deletes an endpoint of `server_uuid`; false when it has none with that uuid.
    pub async fn delete_webhook_endpoint(&self, server_uuid: Uuid, uuid: Uuid) -> Result<bool, StoreError> {
        let deleted = sqlx::query!(
            r#"UPDATE webhook_endpoints SET deleted_at = now()
                WHERE uuid = $1 AND server_uuid = $2 AND deleted_at IS NULL"#,
            uuid,
            server_uuid,
        )
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected() == 1)
    }

    /// The live endpoints of a server that subscribe to `event_type`.
    pub async fn subscribed_endpoints(
        &self,
        server_uuid: Uuid,
        event_type: &str,
    ) -> Result<Vec<EndpointTarget>, StoreError> {
        let endpoints = sqlx::query_as!(
            EndpointTarget,
            r#"SELECT uuid, url, secret FROM webhook_endpoints
                WHERE server_uuid = $1 AND $2 = ANY(events) AND deleted_at IS NULL AND disabled_at IS NULL
                ORDER BY created_at, uuid"#,
            server_uuid,
            event_type,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(endpoints)
    }

    pub async fn disable_webhook_endpoint(&self, uuid: Uuid, reason: &str) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE webhook_endpoints SET disabled_at = now(), disabled_reason = $2 WHERE uuid = $1 AND disabled_at IS NULL",
            uuid,
            reason,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The delivery of an event to an endpoint, created on first sight; its id either way. Its
    /// first attempt is due at once, held by the worker that opens it.
    pub async fn open_webhook_delivery(
        &self,
        server_uuid: Uuid,
        endpoint_uuid: Uuid,
        event_id: Uuid,
        event_type: &str,
        webhook_id: &str,
        payload: &str,
    ) -> Result<i64, StoreError> {
        let id = sqlx::query_scalar!(
            r#"INSERT INTO webhook_deliveries (server_uuid, endpoint_uuid, event_id, event_type, webhook_id, payload, status,
                                               next_attempt_at, handed_over_at)
               VALUES ($1, $2, $3, $4, $5, $6, 'pending', now(), now())
               ON CONFLICT (event_id, endpoint_uuid) DO UPDATE SET updated_at = webhook_deliveries.updated_at
               RETURNING id"#,
            server_uuid,
            endpoint_uuid,
            event_id,
            event_type,
            webhook_id,
            payload,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    /// Claims the next attempt of a delivery that is still due one, with its live endpoint: the
    /// attempt is counted, and held for `lease` (the attempt's time limit), after which a sweep
    /// may presume it lost. With `attempt`, only if that is the number of the next attempt, so
    /// that a second message for one attempt claims nothing.
    /// None when the delivery was delivered or failed meanwhile, its endpoint is gone or
    /// disabled, or the attempt asked for was claimed already.
    pub async fn claim_webhook_attempt(
        &self,
        delivery_id: i64,
        attempt: Option<i32>,
        lease: Duration,
    ) -> Result<Option<DeliveryTarget>, StoreError> {
        let row = sqlx::query!(
            r#"UPDATE webhook_deliveries d
                  SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $3),
                      handed_over_at = now(), updated_at = now()
                 FROM webhook_endpoints e
                WHERE d.id = $1 AND d.status IN ('pending', 'retrying') AND ($2::int4 IS NULL OR d.attempts + 1 = $2)
                  AND e.uuid = d.endpoint_uuid AND e.deleted_at IS NULL AND e.disabled_at IS NULL
            RETURNING d.id, d.webhook_id, d.payload, d.attempts, e.uuid AS endpoint_uuid, e.url, e.secret"#,
            delivery_id,
            attempt,
            lease.as_secs_f64(),
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| DeliveryTarget {
            id: row.id,
            webhook_id: row.webhook_id,
            payload: row.payload,
            attempt: row.attempts,
            endpoint: EndpointTarget { uuid: row.endpoint_uuid, url: row.url, secret: row.secret },
        }))
    }

    /// Records an attempt and what it left the delivery as, together. An attempt overtaken by a
    /// later claim (it was presumed lost) is recorded, but leaves the delivery to the later one.
    /// A retry is on its queue before this runs: the next attempt is handed over.
    pub async fn record_webhook_attempt(
        &self,
        delivery: &DeliveryTarget,
        record: &AttemptRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            r#"INSERT INTO webhook_attempts (delivery_id, attempt, attempted_at, duration_ms, response_status, error,
                                             outcome, next_attempt_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"#,
            delivery.id,
            delivery.attempt,
            record.attempted_at,
            record.duration_ms,
            record.response_status,
            record.error,
            record.outcome.as_str(),
            record.next_attempt_at,
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            r#"UPDATE webhook_deliveries SET status = $2, next_attempt_at = $3, handed_over_at = now(), updated_at = now()
                WHERE id = $1 AND attempts = $4"#,
            delivery.id,
            record.outcome.as_str(),
            record.next_attempt_at,
            delivery.attempt,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Puts a failed delivery of `server_uuid` back in line for one more attempt, in one write:
    /// the attempt is due now and nobody holds it, so the workers' next sweep queues it.
    pub async fn requeue_webhook_delivery(&self, server_uuid: Uuid, delivery_id: i64) -> Result<Requeue, StoreError> {
        let status = sqlx::query_scalar!(
            r#"SELECT status AS "status: DeliveryStatus" FROM webhook_deliveries
                WHERE id = $1 AND server_uuid = $2 FOR UPDATE"#,
            delivery_id,
            server_uuid,
        );
        let mut tx = self.pool.begin().await?;
        let Some(status) = status.fetch_optional(&mut *tx).await? else {
            return Ok(Requeue::NotFound);
        };
        if status != DeliveryStatus::Failed {
            return Ok(Requeue::NotFailed);
        }
        sqlx::query!(
            r#"UPDATE webhook_deliveries
                  SET status = 'retrying', next_attempt_at = now(), handed_over_at = NULL, updated_at = now()
                WHERE id = $1"#,
            delivery_id,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Requeue::Requeued)
    }

    /// Up to `limit` attempts that are due and that no message carries, oldest due first, of
    /// live endpoints: those nobody holds (a retry asked for through the API), and those handed
    /// over and still not made `presumed_lost_after` past their due time (their message or
    /// their worker was lost). Their deliveries stay locked until [`DueAttempts::hand_over`]
    /// (other sweeps skip them), or are let go if it is dropped.
    pub async fn due_webhook_attempts(
        &self,
        presumed_lost_after: Duration,
        limit: i64,
    ) -> Result<DueAttempts, StoreError> {
        let mut transaction = self.pool.begin().await?;
        let attempts = sqlx::query_as!(
            DueAttempt,
            r#"SELECT d.id AS delivery_id, d.attempts + 1 AS "attempt!"
                 FROM webhook_deliveries d JOIN webhook_endpoints e ON e.uuid = d.endpoint_uuid
                WHERE d.status IN ('pending', 'retrying') AND d.next_attempt_at <= now()
                  AND (d.handed_over_at IS NULL OR d.next_attempt_at < now() - make_interval(secs => $1))
                  AND e.deleted_at IS NULL AND e.disabled_at IS NULL
                ORDER BY d.next_attempt_at
                LIMIT $2
                  FOR UPDATE OF d SKIP LOCKED"#,
            presumed_lost_after.as_secs_f64(),
            limit,
        )
        .fetch_all(&mut *transaction)
        .await?;
        Ok(DueAttempts { transaction, attempts })
    }

    pub async fn list_webhook_attempts(
        &self,
        server_uuid: Uuid,
        endpoint_uuid: Option<Uuid>,
        status: Option<DeliveryStatus>,
        limit: i64,
    ) -> Result<Vec<AttemptListing>, StoreError> {
        let attempts = sqlx::query_as!(
            AttemptListing,
            r#"SELECT d.id AS delivery_id, d.event_id, d.event_type, d.webhook_id, d.endpoint_uuid, a.attempt,
                      a.response_status, a.error, a.duration_ms, a.attempted_at, a.next_attempt_at,
                      a.outcome AS "outcome: DeliveryStatus", d.status AS "delivery_status: DeliveryStatus"
                 FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
                WHERE d.server_uuid = $1
                  AND ($2::uuid IS NULL OR d.endpoint_uuid = $2)
                  AND ($3::text IS NULL OR d.status = $3)
                ORDER BY a.id DESC
                LIMIT $4"#,
            server_uuid,
            endpoint_uuid,
            status.map(DeliveryStatus::as_str),
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(attempts)
    }

    /// The credential (as the view has it now) and its server, for a webhook body.
    pub async fn locked_credential(&self, uuid: Uuid) -> Result<Option<LockedCredential>, StoreError> {
        let credential = sqlx::query_as!(
            LockedCredential,
            r#"SELECT c.id, c.uuid, c.name, c.type AS credential_type, c.hold, s.uuid AS server_uuid,
                      s.name AS server_name
                 FROM credentials c JOIN servers s ON s.uuid = c.server_uuid
                WHERE c.uuid = $1"#,
            uuid,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(credential)
    }
}
