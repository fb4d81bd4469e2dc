//! Webhook endpoints, deliveries and attempts.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{PgStore, StoreError};
use crate::domain::DeliveryStatus;
use crate::store::webhooks::{
    AttemptListing, AttemptRecord, DeliveryTarget, EndpointTarget, LockedCredential, NewDelivery, Requeue,
    WebhookEndpoint,
};

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
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query!(
            r#"UPDATE webhook_endpoints SET deleted_at = now()
                WHERE uuid = $1 AND server_uuid = $2 AND deleted_at IS NULL"#,
            uuid,
            server_uuid,
        )
        .execute(&mut *tx)
        .await?;
        let deleted = deleted.rows_affected() == 1;
        if deleted {
            fail_open_deliveries(&mut tx, uuid).await?;
        }
        tx.commit().await?;
        Ok(deleted)
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
        let mut tx = self.pool.begin().await?;
        sqlx::query!(
            "UPDATE webhook_endpoints SET disabled_at = now(), disabled_reason = $2 WHERE uuid = $1 AND disabled_at IS NULL",
            uuid,
            reason,
        )
        .execute(&mut *tx)
        .await?;
        fail_open_deliveries(&mut tx, uuid).await?;
        tx.commit().await?;
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
    /// `held`: a retry message is on its queue before this runs, so the next attempt is handed
    /// over (RabbitMQ); otherwise nobody holds it, and `next_attempt_at` is its schedule.
    pub async fn record_webhook_attempt(
        &self,
        delivery: &DeliveryTarget,
        record: &AttemptRecord,
        held: bool,
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
        // An endpoint closed (410, deleted) while the attempt ran failed what it was owed; a
        // failed attempt must not put the delivery back to `retrying` for an attempt never made.
        sqlx::query!(
            r#"UPDATE webhook_deliveries d
                  SET status = CASE WHEN $2::text = 'retrying' AND NOT open.open THEN 'failed' ELSE $2::text END,
                      next_attempt_at = CASE WHEN open.open THEN $3::timestamptz END,
                      handed_over_at = CASE WHEN $5 AND open.open THEN now() END, updated_at = now()
                 FROM (SELECT e.deleted_at IS NULL AND e.disabled_at IS NULL AS open
                         FROM webhook_endpoints e JOIN webhook_deliveries owed ON owed.endpoint_uuid = e.uuid
                        WHERE owed.id = $1) open
                WHERE d.id = $1 AND d.attempts = $4"#,
            delivery.id,
            record.outcome.as_str(),
            record.next_attempt_at,
            delivery.attempt,
            held,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Puts a failed delivery of `server_uuid` back in line for one more attempt, in one write:
    /// the attempt is due now and nobody holds it, so the workers' next sweep queues it.
    pub async fn requeue_webhook_delivery(&self, server_uuid: Uuid, delivery_id: i64) -> Result<Requeue, StoreError> {
        let found = sqlx::query!(
            r#"SELECT d.status AS "status: DeliveryStatus",
                      (e.deleted_at IS NULL AND e.disabled_at IS NULL) AS "endpoint_open!"
                 FROM webhook_deliveries d JOIN webhook_endpoints e ON e.uuid = d.endpoint_uuid
                WHERE d.id = $1 AND d.server_uuid = $2 FOR UPDATE OF d, e"#,
            delivery_id,
            server_uuid,
        );
        let mut tx = self.pool.begin().await?;
        let Some(found) = found.fetch_optional(&mut *tx).await? else {
            return Ok(Requeue::NotFound);
        };
        if found.status != DeliveryStatus::Failed {
            return Ok(Requeue::NotFailed);
        }
        if !found.endpoint_open {
            return Ok(Requeue::EndpointClosed);
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

    /// Claims up to `room` attempts that may be claimed at `now`: due and held by nobody, or
    /// held and overdue by `presumed_lost_after` (their worker presumed lost); each is counted
    /// and held until `now + lease`. One statement that commits before any request is sent:
    /// `SKIP LOCKED` lets concurrent claimers pass each other's rows, and one that waited on a
    /// row sees it again as updated (no longer due), so no attempt goes to two claimers.
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
        let rows = sqlx::query!(
            r#"WITH due AS (
                   SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.uuid = d.endpoint_uuid
                    WHERE d.status IN ('pending', 'retrying') AND d.next_attempt_at <= $1
                      AND (d.handed_over_at IS NULL OR d.next_attempt_at < $1 - make_interval(secs => $3))
                      AND e.deleted_at IS NULL AND e.disabled_at IS NULL
                    ORDER BY d.next_attempt_at
                    LIMIT $4
                      FOR UPDATE OF d SKIP LOCKED)
               UPDATE webhook_deliveries d
                  SET attempts = d.attempts + 1, next_attempt_at = $1 + make_interval(secs => $2),
                      handed_over_at = $1, updated_at = now()
                 FROM due, webhook_endpoints e
                WHERE d.id = due.id AND e.uuid = d.endpoint_uuid
            RETURNING d.id, d.webhook_id, d.payload, d.attempts, e.uuid AS endpoint_uuid, e.url, e.secret"#,
            now,
            lease.as_secs_f64(),
            presumed_lost_after.as_secs_f64(),
            i64::try_from(room).unwrap_or(i64::MAX),
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| DeliveryTarget {
                id: row.id,
                webhook_id: row.webhook_id,
                payload: row.payload,
                attempt: row.attempts,
                endpoint: EndpointTarget { uuid: row.endpoint_uuid, url: row.url, secret: row.secret },
            })
            .collect())
    }

    /// When the next attempt may be claimed: the earliest due time of those nobody holds, or
    /// `presumed_lost_after` past the earliest of those held.
    pub async fn next_due_at(&self, presumed_lost_after: Duration) -> Result<Option<DateTime<Utc>>, StoreError> {
        let next = sqlx::query_scalar!(
            r#"SELECT min(CASE WHEN d.handed_over_at IS NULL THEN d.next_attempt_at
                              ELSE d.next_attempt_at + make_interval(secs => $1) END)
                 FROM webhook_deliveries d JOIN webhook_endpoints e ON e.uuid = d.endpoint_uuid
                WHERE d.status IN ('pending', 'retrying') AND e.deleted_at IS NULL AND e.disabled_at IS NULL"#,
            presumed_lost_after.as_secs_f64(),
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(next)
    }

    /// Where the dispatcher `name` has fanned the log out to, its row created on first use at
    /// the furthest a relay to RabbitMQ got (so switching from RabbitMQ sends no history again),
    /// or at the start.
    pub async fn dispatch_checkpoint(&self, name: &str) -> Result<i64, StoreError> {
        sqlx::query!(
            r#"INSERT INTO relay_checkpoints (exchange, position)
               VALUES ($1, COALESCE((SELECT max(position) FROM relay_checkpoints WHERE exchange NOT LIKE 'in-process:%'), 0))
               ON CONFLICT (exchange) DO NOTHING"#,
            name,
        )
        .execute(&self.pool)
        .await?;
        let position = sqlx::query_scalar!("SELECT position FROM relay_checkpoints WHERE exchange = $1", name)
            .fetch_one(&self.pool)
            .await?;
        Ok(position)
    }

    /// Opens `deliveries` (due at `now`, held by nobody) and moves the checkpoint `name` from
    /// `from` to `to`, in one transaction; false, with nothing written, when the checkpoint is
    /// no longer at `from`. The compare-and-set comes first: its row lock makes a concurrent
    /// dispatcher of the same batch wait, then find the checkpoint moved.
    pub async fn commit_dispatch(
        &self,
        name: &str,
        from: i64,
        to: i64,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query!(
            "UPDATE relay_checkpoints SET position = $3, updated_at = now() WHERE exchange = $1 AND position = $2",
            name,
            from,
            to,
        )
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let column =
            |field: fn(&NewDelivery) -> &str| deliveries.iter().map(|d| field(d).to_owned()).collect::<Vec<_>>();
        sqlx::query!(
            r#"INSERT INTO webhook_deliveries (server_uuid, endpoint_uuid, event_id, event_type, webhook_id, payload,
                                               status, next_attempt_at, handed_over_at)
               SELECT server_uuid, endpoint_uuid, event_id, event_type, webhook_id, payload, 'pending', $7, NULL
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[])
                      AS d (server_uuid, endpoint_uuid, event_id, event_type, webhook_id, payload)
               ON CONFLICT (event_id, endpoint_uuid) DO NOTHING"#,
            &deliveries.iter().map(|d| d.server_uuid).collect::<Vec<_>>(),
            &deliveries.iter().map(|d| d.endpoint_uuid).collect::<Vec<_>>(),
            &deliveries.iter().map(|d| d.event_id).collect::<Vec<_>>(),
            &column(|d| d.event_type.as_str()),
            &column(|d| d.webhook_id.as_str()),
            &column(|d| d.payload.as_str()),
            now,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
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

    pub async fn webhook_endpoint_exists(&self, server_uuid: Uuid, uuid: Uuid) -> Result<bool, StoreError> {
        let exists = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE uuid = $1 AND server_uuid = $2) AS "exists!""#,
            uuid,
            server_uuid,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(exists)
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

/// What an endpoint that answered 410, or was deleted, was still owed: nothing will be sent, so
/// its open deliveries fail (an attempt already under way still records what it got).
async fn fail_open_deliveries(tx: &mut sqlx::PgConnection, endpoint_uuid: Uuid) -> Result<(), StoreError> {
    sqlx::query!(
        r#"UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, updated_at = now()
            WHERE endpoint_uuid = $1 AND status IN ('pending', 'retrying')"#,
        endpoint_uuid,
    )
    .execute(tx)
    .await?;
    Ok(())
}
