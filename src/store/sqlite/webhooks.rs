//! Webhook endpoints, deliveries and attempts in the embedded ledger: PostgreSQL's semantics
//! (store/postgres/webhooks.rs), with every write that reads first under the write lock
//! (`BEGIN IMMEDIATE`), which is what makes a claim exclusive across processes on one file.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::FromRow;
use uuid::Uuid;

use super::{sql, stored_time, SqliteStore};
use crate::domain::DeliveryStatus;
use crate::store::webhooks::{
    AttemptListing, AttemptRecord, DeliveryTarget, EndpointTarget, LockedCredential, NewDelivery, Requeue,
    WebhookEndpoint,
};
use crate::store::StoreError;

/// A time of a webhook row (not of the log: a bad one is a decoding error, not a broken chain).
fn row_time(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| StoreError::Database(sqlx::Error::Decode(format!("{text:?}: {error}").into())))
}

fn row_times(text: Option<&str>) -> Result<Option<DateTime<Utc>>, StoreError> {
    text.map(row_time).transpose()
}

/// `time + delay`, and `time - delay`, saturating (settings may hold absurd durations).
fn plus(time: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(delay)
        .ok()
        .and_then(|delay| time.checked_add_signed(delay))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn minus(time: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(delay)
        .ok()
        .and_then(|delay| time.checked_sub_signed(delay))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[derive(FromRow)]
struct EndpointRow {
    uuid: Uuid,
    url: String,
    events: Json<Vec<String>>,
    description: Option<String>,
    created_at: String,
    disabled_at: Option<String>,
    disabled_reason: Option<String>,
}

impl EndpointRow {
    fn endpoint(self) -> Result<WebhookEndpoint, StoreError> {
        Ok(WebhookEndpoint {
            uuid: self.uuid,
            url: self.url,
            events: self.events.0,
            description: self.description,
            created_at: row_time(&self.created_at)?,
            disabled_at: row_times(self.disabled_at.as_deref())?,
            disabled_reason: self.disabled_reason,
        })
    }
}

#[derive(FromRow)]
struct ClaimedRow {
    id: i64,
    webhook_id: String,
    payload: String,
    attempts: i32,
    endpoint_uuid: Uuid,
    url: String,
    secret: String,
}

impl From<ClaimedRow> for DeliveryTarget {
    fn from(row: ClaimedRow) -> Self {
        DeliveryTarget {
            id: row.id,
            webhook_id: row.webhook_id,
            payload: row.payload,
            attempt: row.attempts,
            endpoint: EndpointTarget { uuid: row.endpoint_uuid, url: row.url, secret: row.secret },
        }
    }
}

#[derive(FromRow)]
struct AttemptRow {
    delivery_id: i64,
    event_id: Uuid,
    event_type: String,
    webhook_id: String,
    endpoint_uuid: Uuid,
    attempt: i32,
    response_status: Option<i32>,
    error: Option<String>,
    duration_ms: i32,
    attempted_at: String,
    next_attempt_at: Option<String>,
    outcome: DeliveryStatus,
    delivery_status: DeliveryStatus,
}

impl AttemptRow {
    fn listing(self) -> Result<AttemptListing, StoreError> {
        Ok(AttemptListing {
            attempted_at: row_time(&self.attempted_at)?,
            next_attempt_at: row_times(self.next_attempt_at.as_deref())?,
            delivery_id: self.delivery_id,
            event_id: self.event_id,
            event_type: self.event_type,
            webhook_id: self.webhook_id,
            endpoint_uuid: self.endpoint_uuid,
            attempt: self.attempt,
            response_status: self.response_status,
            error: self.error,
            duration_ms: self.duration_ms,
            outcome: self.outcome,
            delivery_status: self.delivery_status,
        })
    }
}

impl SqliteStore {
    pub async fn create_webhook_endpoint(
        &self,
        server_uuid: Uuid,
        url: &str,
        events: &[String],
        description: Option<&str>,
        secret: &str,
    ) -> Result<WebhookEndpoint, StoreError> {
        let row = sqlx::query_as::<_, EndpointRow>(sql::CREATE_WEBHOOK_ENDPOINT)
            .bind(Uuid::new_v4())
            .bind(server_uuid)
            .bind(url)
            .bind(Json(events))
            .bind(description)
            .bind(secret)
            .bind(stored_time(Utc::now()))
            .fetch_one(&self.writer)
            .await?;
        row.endpoint()
    }

    pub async fn list_webhook_endpoints(&self, server_uuid: Uuid) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let rows = sqlx::query_as::<_, EndpointRow>(sql::LIST_WEBHOOK_ENDPOINTS)
            .bind(server_uuid)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(EndpointRow::endpoint).collect()
    }

    pub async fn delete_webhook_endpoint(&self, server_uuid: Uuid, uuid: Uuid) -> Result<bool, StoreError> {
        let now = stored_time(Utc::now());
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let deleted =
            sqlx::query(sql::DELETE_WEBHOOK_ENDPOINT).bind(uuid).bind(server_uuid).bind(&now).execute(&mut *tx);
        let deleted = deleted.await?.rows_affected() == 1;
        if deleted {
            sqlx::query(sql::FAIL_OPEN_DELIVERIES).bind(uuid).bind(&now).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    pub async fn subscribed_endpoints(
        &self,
        server_uuid: Uuid,
        event_type: &str,
    ) -> Result<Vec<EndpointTarget>, StoreError> {
        let query = sqlx::query_as::<_, EndpointTarget>(sql::SUBSCRIBED_ENDPOINTS).bind(server_uuid).bind(event_type);
        Ok(query.fetch_all(&self.pool).await?)
    }

    pub async fn disable_webhook_endpoint(&self, uuid: Uuid, reason: &str) -> Result<(), StoreError> {
        let now = stored_time(Utc::now());
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(sql::DISABLE_WEBHOOK_ENDPOINT).bind(uuid).bind(reason).bind(&now).execute(&mut *tx).await?;
        sqlx::query(sql::FAIL_OPEN_DELIVERIES).bind(uuid).bind(&now).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn open_webhook_delivery(
        &self,
        server_uuid: Uuid,
        endpoint_uuid: Uuid,
        event_id: Uuid,
        event_type: &str,
        webhook_id: &str,
        payload: &str,
    ) -> Result<i64, StoreError> {
        let id = sqlx::query_scalar(sql::OPEN_WEBHOOK_DELIVERY)
            .bind(server_uuid)
            .bind(endpoint_uuid)
            .bind(event_id)
            .bind(event_type)
            .bind(webhook_id)
            .bind(payload)
            .bind(stored_time(Utc::now()))
            .fetch_one(&self.writer)
            .await?;
        Ok(id)
    }

    /// One statement, so it holds the write lock from its read to its write.
    pub async fn claim_webhook_attempt(
        &self,
        delivery_id: i64,
        attempt: Option<i32>,
        lease: Duration,
    ) -> Result<Option<DeliveryTarget>, StoreError> {
        let now = Utc::now();
        let row = sqlx::query_as::<_, ClaimedRow>(sql::CLAIM_DELIVERY)
            .bind(delivery_id)
            .bind(stored_time(plus(now, lease)))
            .bind(stored_time(now))
            .bind(attempt)
            .fetch_optional(&self.writer)
            .await?;
        Ok(row.map(DeliveryTarget::from))
    }

    /// Claims up to `room` attempts that may be claimed at `now` (see `DUE_DELIVERIES`), each
    /// held until `now + lease`; under the write lock, so no other claimer, in this process or
    /// another, sees them due until the lease and `presumed_lost_after` have passed.
    pub async fn claim_due_attempts(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        presumed_lost_after: Duration,
        room: usize,
    ) -> Result<Vec<DeliveryTarget>, StoreError> {
        if room == 0 {
            return Ok(Vec::new());
        }
        self.bounded(async {
            let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
            let ids: Vec<i64> = sqlx::query_scalar(sql::DUE_DELIVERIES)
                .bind(stored_time(now))
                .bind(stored_time(minus(now, presumed_lost_after)))
                .bind(i64::try_from(room).unwrap_or(i64::MAX))
                .fetch_all(&mut *tx)
                .await?;
            let mut claimed = Vec::with_capacity(ids.len());
            let (held_until, at) = (stored_time(plus(now, lease)), stored_time(now));
            for id in ids {
                let row = sqlx::query_as::<_, ClaimedRow>(sql::CLAIM_DELIVERY)
                    .bind(id)
                    .bind(&held_until)
                    .bind(&at)
                    .bind(None::<i32>)
                    .fetch_optional(&mut *tx)
                    .await?;
                claimed.extend(row.map(DeliveryTarget::from));
            }
            tx.commit().await?;
            Ok(claimed)
        })
        .await
    }

    /// When the next attempt may be claimed: the earliest due time of those nobody holds, or
    /// `presumed_lost_after` past the earliest of those held.
    pub async fn next_due_at(&self, presumed_lost_after: Duration) -> Result<Option<DateTime<Utc>>, StoreError> {
        let (free, held): (Option<String>, Option<String>) =
            sqlx::query_as(sql::NEXT_DUE).fetch_one(&self.pool).await?;
        let free = row_times(free.as_deref())?;
        let held = row_times(held.as_deref())?.map(|due| plus(due, presumed_lost_after));
        Ok(free.into_iter().chain(held).min())
    }

    /// Records an attempt and what it left the delivery as, together (see the PostgreSQL
    /// twin). `held`: a message already holds the next attempt (RabbitMQ); otherwise nobody
    /// does, and its due time is the schedule.
    pub async fn record_webhook_attempt(
        &self,
        delivery: &DeliveryTarget,
        record: &AttemptRecord,
        held: bool,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            let now = stored_time(Utc::now());
            let next_attempt_at = record.next_attempt_at.map(stored_time);
            let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query(sql::INSERT_ATTEMPT)
                .bind(delivery.id)
                .bind(delivery.attempt)
                .bind(stored_time(record.attempted_at))
                .bind(record.duration_ms)
                .bind(record.response_status)
                .bind(record.error.as_deref())
                .bind(record.outcome.as_str())
                .bind(next_attempt_at.as_deref())
                .execute(&mut *tx)
                .await?;
            sqlx::query(sql::SETTLE_DELIVERY)
                .bind(delivery.id)
                .bind(record.outcome.as_str())
                .bind(next_attempt_at.as_deref())
                .bind(delivery.attempt)
                .bind(held.then_some(now.as_str()))
                .bind(now.as_str())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    pub async fn requeue_webhook_delivery(&self, server_uuid: Uuid, delivery_id: i64) -> Result<Requeue, StoreError> {
        self.bounded(async {
            let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
            let status: Option<(DeliveryStatus, bool)> = sqlx::query_as(sql::DELIVERY_STATUS)
                .bind(delivery_id)
                .bind(server_uuid)
                .fetch_optional(&mut *tx)
                .await?;
            match status {
                None => return Ok(Requeue::NotFound),
                Some((status, _)) if status != DeliveryStatus::Failed => return Ok(Requeue::NotFailed),
                Some((_, false)) => return Ok(Requeue::EndpointClosed),
                Some(_) => {}
            }
            sqlx::query(sql::REQUEUE_DELIVERY)
                .bind(delivery_id)
                .bind(stored_time(Utc::now()))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Requeue::Requeued)
        })
        .await
    }

    pub async fn list_webhook_attempts(
        &self,
        server_uuid: Uuid,
        endpoint_uuid: Option<Uuid>,
        status: Option<DeliveryStatus>,
        limit: i64,
    ) -> Result<Vec<AttemptListing>, StoreError> {
        let rows = sqlx::query_as::<_, AttemptRow>(sql::LIST_WEBHOOK_ATTEMPTS)
            .bind(server_uuid)
            .bind(endpoint_uuid)
            .bind(status.map(DeliveryStatus::as_str))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(AttemptRow::listing).collect()
    }

    pub async fn webhook_endpoint_exists(&self, server_uuid: Uuid, uuid: Uuid) -> Result<bool, StoreError> {
        let query = sqlx::query_scalar(sql::WEBHOOK_ENDPOINT_EXISTS).bind(uuid).bind(server_uuid);
        Ok(query.fetch_one(&self.pool).await?)
    }

    pub async fn locked_credential(&self, uuid: Uuid) -> Result<Option<LockedCredential>, StoreError> {
        let query = sqlx::query_as::<_, LockedCredential>(sql::LOCKED_CREDENTIAL).bind(uuid);
        Ok(query.fetch_optional(&self.pool).await?)
    }

    /// Where the dispatcher `name` has fanned the log out to, its row created on first use.
    pub async fn dispatch_checkpoint(&self, name: &str) -> Result<i64, StoreError> {
        self.bounded(async {
            sqlx::query(sql::SEED_DISPATCH_CHECKPOINT)
                .bind(name)
                .bind(stored_time(Utc::now()))
                .execute(&self.writer)
                .await?;
            Ok(sqlx::query_scalar(sql::DISPATCH_CHECKPOINT).bind(name).fetch_one(&self.pool).await?)
        })
        .await
    }

    /// Opens `deliveries` (due at `now`, held by nobody) and moves the checkpoint `name` from
    /// `from` to `to`, in one transaction; false, with nothing written, when the checkpoint is
    /// no longer at `from` (another dispatcher took that batch).
    pub async fn commit_dispatch(
        &self,
        name: &str,
        from: i64,
        to: i64,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.bounded(async {
            let at = stored_time(now);
            let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
            let moved = sqlx::query(sql::ADVANCE_DISPATCH_CHECKPOINT)
                .bind(name)
                .bind(from)
                .bind(to)
                .bind(&at)
                .execute(&mut *tx)
                .await?;
            if moved.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            for delivery in deliveries {
                sqlx::query(sql::INSERT_DUE_DELIVERY)
                    .bind(delivery.server_uuid)
                    .bind(delivery.endpoint_uuid)
                    .bind(delivery.event_id)
                    .bind(&delivery.event_type)
                    .bind(&delivery.webhook_id)
                    .bind(&delivery.payload)
                    .bind(&at)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(true)
        })
        .await
    }
}
