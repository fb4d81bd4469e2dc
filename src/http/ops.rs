use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::envelope::{success_envelope, Success};
use super::error::ErrorEnvelope;
use super::{ApiError, AppState, RelayHandle};
use crate::bus::RelayStatusSnapshot;
use crate::metrics::Exposition;
use crate::store::{Store, IN_PROCESS_WEBHOOKS_CHECKPOINT};
use crate::webhooks::DeliveryMode;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// The ledger's backend: `sqlite` (embedded) or `postgresql`.
    ledger: &'static str,
    database: &'static str,
    /// The position of the last event in the log.
    head: i64,
    /// Present when this process runs the relay.
    relay: Option<RelayHealth>,
    delivery: DeliveryHealth,
}

/// How webhooks are delivered.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryHealth {
    /// `in-process` (no broker: the log is followed and the database is the queue) or `rabbitmq`.
    #[schema(example = "in-process")]
    mode: &'static str,
    /// In-process: the last position fanned out into deliveries (by whichever instance did).
    #[serde(skip_serializing_if = "Option::is_none")]
    dispatched: Option<i64>,
    /// In-process: events committed and not yet fanned out.
    #[serde(skip_serializing_if = "Option::is_none")]
    lag: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RelayHealth {
    exchange: String,
    /// The last position confirmed by the broker (by whichever instance leads).
    relayed: i64,
    /// Events committed but not yet confirmed by the broker.
    lag: i64,
    #[serde(flatten)]
    #[schema(inline)]
    this_instance: RelayStatusSnapshot,
}

success_envelope!(HealthAnswer, Health);
success_envelope!(ReadinessAnswer, Readiness);

#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    /// Always `true`: the process answers.
    live: bool,
}

success_envelope!(LivenessAnswer, Liveness);

/// Liveness: 200 whenever the process answers, whatever the database and the broker do.
///
/// For an orchestrator's liveness probe: restarting an instance cures nothing during a database
/// outage. `/readyz` says whether the instance can serve, and `/healthz` reports its state.
#[utoipa::path(get, path = "/livez", operation_id = "livez", tag = "operations",
    responses((status = 200, description = "The process answers", body = LivenessAnswer)))]
pub async fn livez() -> Success<Liveness> {
    Success(Liveness { live: true })
}

/// Health report: 200 while the database answers, 503 when it does not.
///
/// Not a liveness probe (use `/livez`): every instance fails it during a database outage. The
/// relay's state is reported but never fails the check: the API works while the broker is down.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations",
    responses(
        (status = 200, description = "Healthy", body = HealthAnswer),
        (status = 503, description = "The database does not answer", body = ErrorEnvelope),
    ))]
pub async fn healthz(State(app): State<AppState>) -> Result<Success<Health>, ApiError> {
    let mode = app.webhooks.delivery_mode();
    let exchange = match (&app.relay, mode) {
        (Some(relay), _) => relay.exchange.as_str(),
        (None, DeliveryMode::InProcess) => IN_PROCESS_WEBHOOKS_CHECKPOINT,
        (None, DeliveryMode::RabbitMq) => "",
    };
    let progress = match tokio::time::timeout(app.health_timeout, app.store.log_progress(exchange)).await {
        Ok(progress) => progress?,
        Err(_) => return Err(ApiError::Unavailable("the database did not answer in time".into())),
    };
    let relay = app.relay.as_ref().map(|relay| RelayHealth {
        exchange: relay.exchange.clone(),
        relayed: progress.relayed,
        lag: progress.head - progress.relayed,
        this_instance: relay.status.snapshot(),
    });
    let delivery = match mode {
        DeliveryMode::InProcess => DeliveryHealth {
            mode: mode.as_str(),
            dispatched: Some(progress.relayed),
            lag: Some(progress.head - progress.relayed),
        },
        DeliveryMode::RabbitMq => DeliveryHealth { mode: mode.as_str(), dispatched: None, lag: None },
    };
    Ok(Success(Health { ledger: app.store.backend(), database: "up", head: progress.head, relay, delivery }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// The ledger's backend: `sqlite` (embedded) or `postgresql`.
    ledger: &'static str,
    database: &'static str,
    migrations_applied: i64,
    migrations_expected: i64,
    /// The relay's state, reported and never failing the check.
    relay: Option<RelayHealth>,
    /// Whether this process runs a webhook worker.
    webhook_worker: bool,
    delivery: DeliveryHealth,
}

/// Readiness: 200 when the database answers and every migration is applied.
///
/// The bus and relay are reported but do not fail it (the API works without the broker).
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = ReadinessAnswer),
        (status = 503, description = "Not ready", body = ErrorEnvelope),
    ))]
pub async fn readyz(State(app): State<AppState>) -> Result<Success<Readiness>, ApiError> {
    let checked = tokio::time::timeout(app.health_timeout, async {
        let migrations = app.store.applied_migrations().await?;
        let health = healthz(State(app.clone())).await?;
        Ok::<_, ApiError>((migrations, health.0))
    })
    .await
    .map_err(|_| ApiError::Unavailable("the database did not answer in time".into()))?;
    let ((applied, expected), health) = checked?;
    if applied < expected {
        return Err(ApiError::Unavailable(format!("{applied} of {expected} migrations are applied")));
    }
    if let Some(problem) = app.writer.health().problem(app.health_timeout) {
        return Err(ApiError::Unavailable(problem));
    }
    if !app.replica.is_consistent() {
        return Err(ApiError::Unavailable("the credential replica is reloading".into()));
    }
    Ok(Success(Readiness {
        ledger: health.ledger,
        database: "up",
        migrations_applied: applied,
        migrations_expected: expected,
        relay: health.relay,
        webhook_worker: app.webhook_worker,
        delivery: health.delivery,
    }))
}

/// `GET /metrics`: OpenMetrics when the `Accept` header asks for it (as Prometheus does), the
/// classic Prometheus text format otherwise.
pub async fn metrics(State(app): State<AppState>, headers: HeaderMap) -> Response {
    metrics_answer(&app.store, app.relay.as_ref(), app.health_timeout, &headers).await
}

/// The metrics, with the gauges read at scrape time brought up to date first.
pub(super) async fn metrics_answer(
    store: &Store,
    relay: Option<&RelayHandle>,
    timeout: Duration,
    headers: &HeaderMap,
) -> Response {
    let exchange = relay.map_or(crate::bus::DEFAULT_EXCHANGE, |relay| relay.exchange.as_str());
    let all = crate::metrics::metrics();
    if let Ok(Ok(progress)) = tokio::time::timeout(timeout, store.log_progress(exchange)).await {
        all.log_head.set(progress.head);
        all.relay_position.set(progress.relayed);
        all.relay_lag.set(progress.head - progress.relayed);
    }
    let (open, idle) = store.connections();
    all.database_connections.set(i64::from(open));
    all.database_connections_idle.set(i64::from(idle));
    if let Some(relay) = relay {
        let status = relay.status.snapshot();
        all.relay_leader.set(i64::from(status.leader));
        all.broker_connected.set(i64::from(status.broker_connected));
    }
    let format = Exposition::negotiate(headers.get(header::ACCEPT).and_then(|accept| accept.to_str().ok()));
    // The answer depends on Accept: a cache must not hand one format to a client asking the other.
    ([(header::CONTENT_TYPE, format.content_type()), (header::VARY, "accept")], all.encode(format)).into_response()
}
