//! HTTP adapter. The route table is `router` below; handlers live beside it by resource.

mod audit;
mod credentials;
mod error;
mod extract;
mod health;
mod webhooks;

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Level;

pub use error::{redact_keys, ApiError};
pub use extract::{API_KEY_HEADER, MAX_BODY_BYTES, REQUEST_ID_HEADER};

use crate::bus::RelayStatus;
use crate::store::Store;
use crate::usage::UsageRecorder;
use crate::webhooks::WebhookSettings;
use crate::writer::Writer;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub writer: Writer,
    pub usage: UsageRecorder,
    pub relay: Option<RelayHandle>,
    pub webhooks: WebhookSettings,
    pub health_timeout: Duration,
}

/// The relay running in this process, for health reports.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    pub exchange: String,
    pub status: std::sync::Arc<RelayStatus>,
}

/// The route table of the service.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/credentials/list", post(credentials::list))
        .route("/api/v1/credentials/create", post(credentials::create))
        .route("/api/v1/credentials/regenerate", post(credentials::regenerate))
        .route("/api/v1/credentials/revoke", post(credentials::revoke))
        .route("/api/v1/credentials/history", post(audit::history))
        .route("/api/v1/events/list", post(audit::list_events))
        .route("/api/v1/webhooks/create", post(webhooks::create))
        .route("/api/v1/webhooks/list", post(webhooks::list))
        .route("/api/v1/webhooks/delete", post(webhooks::delete))
        .route("/api/v1/webhooks/deliveries", post(webhooks::deliveries))
        .route("/api/v1/webhooks/retry", post(webhooks::retry))
        .route("/healthz", get(health::healthz))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let request_id = request
                        .headers()
                        .get(REQUEST_ID_HEADER)
                        .and_then(|value| value.to_str().ok())
                        .map(redact_keys)
                        .unwrap_or_default();
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        request_id = %request_id,
                        caller = tracing::field::Empty,
                        credential_uuid = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_response(tower_http::trace::DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// The success envelope of the seed: `{"status": "success", "data": …}`.
#[derive(Debug)]
pub struct Success<T>(pub T);

impl<T: Serialize> IntoResponse for Success<T> {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Envelope<T> {
            status: &'static str,
            data: T,
        }
        Json(Envelope { status: "success", data: self.0 }).into_response()
    }
}
