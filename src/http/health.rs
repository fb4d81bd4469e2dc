use axum::extract::State;
use serde::Serialize;

use super::{ApiError, AppState, Success};
use crate::bus::RelayStatusSnapshot;

#[derive(Debug, Serialize)]
pub struct Health {
    database: &'static str,
    /// The position of the last event in the log.
    head: i64,
    /// Present when this process runs the relay.
    relay: Option<RelayHealth>,
}

#[derive(Debug, Serialize)]
pub struct RelayHealth {
    exchange: String,
    /// The last position confirmed by the broker (by whichever instance leads).
    relayed: i64,
    /// Events committed but not yet confirmed by the broker.
    lag: i64,
    #[serde(flatten)]
    this_instance: RelayStatusSnapshot,
}

/// `GET /healthz`: 200 while the database answers, 503 when it does not. The relay's state is
/// reported but never fails the check: the API works while the broker is down.
pub async fn healthz(State(app): State<AppState>) -> Result<Success<Health>, ApiError> {
    let exchange = app.relay.as_ref().map_or("", |relay| relay.exchange.as_str());
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
    Ok(Success(Health { database: "up", head: progress.head, relay }))
}
