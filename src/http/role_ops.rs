//! The probes and metrics of the processes that serve no API (`relay`, `webhook-worker`), on
//! `OPS_ADDR`: an orchestrator can tell whether they live, and Prometheus can scrape them.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::envelope::Success;
use super::ops::{livez, metrics_answer};
use super::{ApiError, RelayHandle};
use crate::bus::RelayStatusSnapshot;
use crate::store::Store;

#[derive(Clone)]
struct RoleState {
    role: &'static str,
    store: Store,
    relay: Option<RelayHandle>,
    timeout: Duration,
}

#[derive(Debug, Serialize)]
struct RoleReadiness {
    role: &'static str,
    database: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    relay: Option<RelayStatusSnapshot>,
}

/// `/livez` (the process answers), `/readyz` (it reaches its database; the relay's state is
/// reported, as `serve` reports it) and `/metrics`, for the process `role`.
pub fn role_router(role: &'static str, store: Store, relay: Option<RelayHandle>, timeout: Duration) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // A probe's answer is logged like the relays' checks: a 503's cause at WARN, the rest at DEBUG.
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .on_request(())
                .on_response(super::log_relay_response)
                .on_failure(()),
        )
        .with_state(RoleState { role, store, relay, timeout })
}

async fn readyz(State(state): State<RoleState>) -> Result<Success<RoleReadiness>, ApiError> {
    let checked = tokio::time::timeout(state.timeout, state.store.applied_migrations()).await;
    match checked {
        Ok(Ok(_)) => Ok(Success(RoleReadiness {
            role: state.role,
            database: "up",
            relay: state.relay.as_ref().map(|relay| relay.status.snapshot()),
        })),
        Ok(Err(error)) => Err(ApiError::Unavailable(error.to_string())),
        Err(_) => Err(ApiError::Unavailable("the database did not answer in time".into())),
    }
}

async fn metrics(State(state): State<RoleState>, headers: HeaderMap) -> Response {
    metrics_answer(&state.store, state.relay.as_ref(), state.timeout, &headers).await
}
