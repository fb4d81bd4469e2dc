//! HTTP adapter. The route table is `router` below; handlers live beside it by resource.

mod audit;
mod console;
mod credentials;
mod envelope;
mod error;
mod extract;
mod guard;
mod large_reads;
mod list_json;
mod openapi;
mod ops;
mod relay_auth;
mod role_ops;
mod serve;
mod webhooks;

use std::time::{Duration, Instant};

use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use envelope::{Success, SuccessStatus};
pub use error::{redact_keys, ApiError};
pub use extract::{API_KEY_HEADER, MAX_BODY_BYTES, REQUEST_ID_HEADER};
pub use guard::AuthGuard;
pub use large_reads::LargeReads;
pub use openapi::openapi_document;
pub use relay_auth::{relay_router, RelayAuth, RelaySecret, RELAY_SECRET_HEADER};
pub use role_ops::role_router;
pub use serve::serve;

use crate::app::replica::Replica;
use crate::app::usage::UsageRecorder;
use crate::app::writer::Writer;
use crate::bus::RelayStatus;
use crate::domain::KEY_PREFIX;
use crate::metrics::{metrics, RequestLabels, RouteLabels};
use crate::store::Store;
use crate::webhooks::WebhookSettings;

/// What every handler can reach: shared, since every request's extractors take a copy.
pub type AppState = std::sync::Arc<App>;

#[derive(Debug)]
pub struct App {
    pub store: Store,
    /// The credential view in memory: what authentication and `list` read.
    pub replica: std::sync::Arc<Replica>,
    pub writer: Writer,
    pub usage: UsageRecorder,
    pub relay: Option<RelayHandle>,
    pub webhooks: WebhookSettings,
    pub auth_guard: AuthGuard,
    /// Each server's share of the expensive reads.
    pub large_reads: LargeReads,
    /// `create` is refused once a server holds this many credentials.
    pub max_credentials_per_server: usize,
    /// Whether this process runs a webhook worker (reported by `/readyz`).
    pub webhook_worker: bool,
    /// Wakes this process's in-process webhook worker (`webhooks/retry`).
    pub delivery_wake: std::sync::Arc<tokio::sync::Notify>,
    pub health_timeout: Duration,
}

/// The relay running in this process, for health reports.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    pub exchange: String,
    pub status: std::sync::Arc<RelayStatus>,
}

/// Protections that apply to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request still running after this is abandoned with 503 `request_timeout`.
    pub request_timeout: Duration,
    /// Requests beyond this many at once are refused with 503 `overloaded`.
    pub max_concurrent_requests: usize,
    /// How long a client may take to send a request's headers, counted from when the
    /// connection is ready for its next request: it also closes idle keep-alive connections.
    pub header_read_timeout: Duration,
}

/// The route table of the service.
pub fn router(state: AppState, limits: Limits) -> Router {
    let api = Router::new()
        .route("/api/v1/credentials/list", post(credentials::list))
        .route("/api/v1/credentials/create", post(credentials::create))
        .route("/api/v1/credentials/regenerate", post(credentials::regenerate))
        .route("/api/v1/credentials/revoke", post(credentials::revoke))
        .route("/api/v1/credentials/history", post(audit::history))
        .route("/api/v1/events/list", post(audit::list_events))
        .route("/api/v1/events/head", post(audit::chain_head))
        .route("/api/v1/webhooks/create", post(webhooks::create))
        .route("/api/v1/webhooks/list", post(webhooks::list))
        .route("/api/v1/webhooks/delete", post(webhooks::delete))
        .route("/api/v1/webhooks/deliveries", post(webhooks::deliveries))
        .route("/api/v1/webhooks/retry", post(webhooks::retry))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/docs", get(console::page))
        .route("/console", get(console::page))
        .route("/console/app.js", get(console::script))
        .route("/console/app.css", get(console::styles))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // One `layer` call per stack, outermost first: `Router::layer` boxes each route once per
        // call, and a boxed route is cloned whole for every request, so ten calls cost dozens of
        // allocations a request where one costs two (issue 18's profile).
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async { ApiError::Overloaded }))
                .load_shed()
                // Global: `Router::layer` wraps each route, and the cap is for all of them.
                .layer(GlobalConcurrencyLimitLayer::new(limits.max_concurrent_requests))
                .layer(middleware::from_fn_with_state(limits.request_timeout, abandon_slow_requests))
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        );
    // Outside the concurrency cap: an instance at capacity is alive and says so, rather than
    // being restarted by its orchestrator for being busy.
    let probes = Router::new()
        .route("/livez", get(ops::livez))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics));
    api.merge(probes)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        // The fields are computed only when the span is recorded (its level is on).
                        .make_span_with(|request: &Request| {
                            tracing::info_span!(
                                "request",
                                method = %request.method(),
                                // The peer's address; behind a proxy, the proxy's.
                                client = %OrEmpty(request.extensions().get::<ConnectInfo<std::net::SocketAddr>>().map(|info| info.0.ip())),
                                // A client may put a key anywhere, the path included.
                                path = %redact_keys(request.uri().path()),
                                request_id = %OrEmpty(request.headers().get(REQUEST_ID_HEADER).and_then(|value| value.to_str().ok()).map(redact_keys)),
                                caller = tracing::field::Empty,
                                credential_uuid = tracing::field::Empty,
                            )
                        })
                        .on_request(())
                        .on_response(log_response)
                        // `log_response` has said it, at its level, with its cause.
                        .on_failure(()),
                )
                .layer(middleware::from_fn(every_request)),
        )
        .with_state(state)
}

/// A value shown as itself, or as nothing when there is none.
struct OrEmpty<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrEmpty<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => Ok(()),
        }
    }
}

/// The one line a request logs: its status, its latency as a number of milliseconds (which log
/// queries can compare and sum), and for a refusal its code, and for a 5xx its cause, at WARN
/// for a 503 (the service is short of something, and says so) and ERROR for a 500 (a fault).
pub(crate) fn log_response(response: &Response, latency: Duration, _span: &tracing::Span) {
    log_response_at(response, latency, false);
}

/// The same for the mail relays' checks, which come at the rate of logins: an answer is logged
/// at DEBUG, a 5xx as for the API.
pub(crate) fn log_relay_response(response: &Response, latency: Duration, _span: &tracing::Span) {
    log_response_at(response, latency, true);
}

fn log_response_at(response: &Response, latency: Duration, quiet: bool) {
    let status = response.status().as_u16();
    let latency_ms = latency.as_secs_f64() * 1e3;
    let refusal = response.extensions().get::<error::Refusal>();
    let code = refusal.map(|refusal| refusal.code);
    let cause = refusal.and_then(|refusal| refusal.cause.as_deref());
    match status {
        503 => tracing::warn!(status, latency_ms, code, cause, "finished processing request"),
        500.. => tracing::error!(status, latency_ms, code, cause, "finished processing request"),
        _ if quiet => tracing::debug!(status, latency_ms, code, "finished processing request"),
        _ => tracing::info!(status, latency_ms, code, "finished processing request"),
    }
}

/// What every request goes through, in one layer (each `from_fn` layer is a boxed future and a
/// clone of the stack beneath it, per request): a body declared too large is refused, the
/// answer is counted, and the request's id is echoed.
async fn every_request(request: Request, next: Next) -> Response {
    let id = request.headers().get(REQUEST_ID_HEADER).cloned();
    let counted = Counted::new(&request);
    let response = match refuse_declared_oversized_body(&request) {
        Some(refusal) => refusal,
        None => next.run(request).await,
    };
    counted.finish(&response);
    echo_request_id(id, response)
}

/// Answers with the request's id (its own, or the one made for it), as tower-http's
/// `PropagateRequestIdLayer` would, but with anything shaped like a key redacted: a proxy that
/// logs response headers must not log a key a client pasted into the wrong header.
fn echo_request_id(id: Option<HeaderValue>, mut response: Response) -> Response {
    let echoed = id.and_then(|id| match id.to_str() {
        // Redacting visible ASCII leaves visible ASCII: the value is always valid.
        Ok(text) if text.contains(KEY_PREFIX) => HeaderValue::from_str(&redact_keys(text)).ok(),
        Ok(_) => Some(id),
        // Bytes beyond ASCII cannot be redacted as text: such an id is echoed only without a key.
        Err(_) if id.as_bytes().windows(KEY_PREFIX.len()).any(|window| window == KEY_PREFIX.as_bytes()) => None,
        Err(_) => Some(id),
    });
    if let Some(echoed) = echoed {
        response.headers_mut().insert(REQUEST_ID_HEADER, echoed);
    }
    response
}

/// A body declared larger than the limit gets 413 before anything else, authentication
/// included: waiting for a terabyte that never comes would end in a timeout instead.
fn refuse_declared_oversized_body(request: &Request) -> Option<Response> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > MAX_BODY_BYTES as u64 => {
            Some(ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES }.into_response())
        }
        _ => None,
    }
}

async fn abandon_slow_requests(
    axum::extract::State(timeout): axum::extract::State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// A request on its way, to be counted by route, method and status when it is answered.
struct Counted {
    route: String,
    method: &'static str,
    started: Instant,
}

impl Counted {
    fn new(request: &Request) -> Self {
        // The route template, not the path: a path can be anything a client sends.
        let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |path| path.as_str()).to_owned();
        // Any client may send any method: only the standard ones get a series of their own, so
        // that invented methods cannot grow the registry without bound.
        let method = match *request.method() {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::PATCH => "PATCH",
            Method::HEAD => "HEAD",
            Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        Counted { route, method, started: Instant::now() }
    }

    fn finish(self, response: &Response) {
        let metrics = metrics();
        metrics
            .http_request_duration
            .get_or_create(&RouteLabels { route: self.route.clone() })
            .observe(self.started.elapsed().as_secs_f64());
        metrics
            .http_requests
            .get_or_create(&RequestLabels {
                route: self.route,
                method: self.method.to_owned(),
                status: response.status().as_u16(),
            })
            .inc();
    }
}
