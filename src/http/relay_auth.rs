//! The relays' listener (`RELAY_AUTH_ADDR`): mail relays ask whether a key may be used, by
//! nginx's mail `auth_http` protocol (`GET /auth/smtp`) or a JSON call for other relays
//! (`POST /v1/credentials/verify`). It is not the public API: it listens on its own address,
//! every call carries the relays' shared secret, and it is not in the OpenAPI document. The rules
//! are the API's own: a key is refused from the moment its revoke or rotation commits, on every
//! instance (the replica's read barrier); a malformed key is refused before any lookup; failures
//! are counted per client address and, past the quota, refused before the key is looked at.
//! A check is not an event: the log records changes, and a use only moves `last_used_at`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::extract::JsonBody;
use super::{ApiError, AppState, AuthGuard, MAX_BODY_BYTES};
use crate::app::replica::ReplicaCredential;
use crate::domain::{ApiKey, CredentialType};
use crate::metrics::{metrics, ReasonLabels};

pub const RELAY_SECRET_HEADER: &str = "x-relay-secret";
/// The address nginx's client connected from, on `auth_http` calls (and, optionally, `verify`).
const CLIENT_IP_HEADER: &str = "client-ip";
/// How long nginx makes a client wait after a refused login before it may try again.
const WAIT_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The shared secret every relay call carries (`RELAY_AUTH_SECRET`): at least 16 characters.
#[derive(Clone)]
pub struct RelaySecret(String);

impl RelaySecret {
    pub fn parse(secret: &str) -> Result<RelaySecret, String> {
        if secret.chars().count() < 16 {
            return Err("RELAY_AUTH_SECRET must be at least 16 characters".into());
        }
        Ok(RelaySecret(secret.to_owned()))
    }
}

impl std::fmt::Debug for RelaySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelaySecret(…)")
    }
}

/// What the relays' listener needs besides the service's state.
#[derive(Debug)]
pub struct RelayAuth {
    /// SHA-256 of the shared secret: calls are compared digest to digest, so the time a
    /// comparison takes says nothing about the secret.
    secret_digest: [u8; 32],
    /// Where nginx sends a client whose login succeeded (`SMTP_UPSTREAM`).
    smtp_upstream: Option<SocketAddr>,
    /// Failed checks per client address, apart from the API's own.
    guard: AuthGuard,
    /// Server names never change: each is read from the store once.
    server_names: Mutex<HashMap<Uuid, String>>,
}

impl RelayAuth {
    pub fn new(secret: &RelaySecret, smtp_upstream: Option<SocketAddr>, failures_per_minute: u32) -> RelayAuth {
        RelayAuth {
            secret_digest: Sha256::digest(secret.0.as_bytes()).into(),
            smtp_upstream,
            guard: AuthGuard::new(failures_per_minute),
            server_names: Mutex::default(),
        }
    }
}

/// What the relays' handlers reach: the service, and the listener's own checks.
#[derive(Clone)]
struct Relay {
    app: AppState,
    checks: Arc<RelayAuth>,
}

/// The relays' routes, behind the shared secret.
pub fn relay_router(app: AppState, checks: RelayAuth) -> Router {
    let state = Relay { app, checks: Arc::new(checks) };
    Router::new()
        .route("/auth/smtp", get(auth_smtp))
        .route("/v1/credentials/verify", post(verify))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // One stack, outermost first: see `router`.
        .layer(
            tower::ServiceBuilder::new()
                .layer(
                    // The path only: a key travels in headers and bodies here, never in the span.
                    tower_http::trace::TraceLayer::new_for_http()
                        .make_span_with(|request: &Request| {
                            tracing::info_span!(
                                "relay_check",
                                method = %request.method(),
                                path = %super::redact_keys(request.uri().path()),
                                caller = tracing::field::Empty,
                            )
                        })
                        .on_request(())
                        .on_response(super::log_relay_response)
                        .on_failure(()),
                )
                .layer(middleware::from_fn_with_state(state.clone(), require_relay_secret))
                .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        .with_state(state)
}

/// Nothing is looked at, not even the route, without the shared secret.
async fn require_relay_secret(State(relay): State<Relay>, request: Request, next: Next) -> Response {
    let mut given = request.headers().get_all(RELAY_SECRET_HEADER).iter();
    let matches = match (given.next(), given.next()) {
        (Some(secret), None) => <[u8; 32]>::from(Sha256::digest(secret.as_bytes())) == relay.checks.secret_digest,
        _ => false,
    };
    if !matches {
        metrics().relay_auth_failures.get_or_create(&ReasonLabels { reason: "relay_secret" }).inc();
        return ApiError::RelaySecret.into_response();
    }
    next.run(request).await
}

/// Why a check failed, as the metrics count it.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    RateLimited(Duration),
    Malformed,
    Unknown,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::RateLimited(_) => "rate_limited",
            Refusal::Malformed => "malformed",
            Refusal::Unknown => "unknown",
        }
    }
}

/// The rules both routes share: the client's address not blocked, a well-formed key, then a live
/// credential of the type asked for, as of every commit made before the call arrived. A use is
/// recorded; a failure counted against the address.
async fn check(
    relay: &Relay,
    client: IpAddr,
    key: &str,
    credential_type: CredentialType,
) -> Result<Result<ReplicaCredential, Refusal>, ApiError> {
    let arrived = Instant::now();
    if let Some(wait) = relay.checks.guard.refused(client) {
        return Ok(Err(refusal(Refusal::RateLimited(wait))));
    }
    let failed = |refused: Refusal| {
        relay.checks.guard.record_failure(client);
        refusal(refused)
    };
    let Ok(key) = ApiKey::parse(key) else {
        return Ok(Err(failed(Refusal::Malformed)));
    };
    relay.app.replica.sync(arrived).await?;
    let now = chrono::Utc::now();
    let Some(credential) = relay.app.replica.usable(&key.hash(), credential_type, now) else {
        return Ok(Err(failed(Refusal::Unknown)));
    };
    relay.app.usage.record(credential.uuid, now);
    tracing::Span::current().record("caller", tracing::field::display(credential.uuid));
    Ok(Ok(credential))
}

fn refusal(refused: Refusal) -> Refusal {
    metrics().relay_auth_failures.get_or_create(&ReasonLabels { reason: refused.reason() }).inc();
    refused
}

/// nginx's `auth_http`: `Auth-Pass` is the key (percent-encoded by nginx), which must be a live
/// SMTP credential's; `Auth-User` is not checked. nginx reads the `Auth-*` headers only, so every
/// answer is 200 and says what it means in `Auth-Status`.
async fn auth_smtp(
    State(relay): State<Relay>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let client = client_address(&headers).unwrap_or(peer.ip());
    let password = headers.get("auth-pass").and_then(|value| percent_decoded(value.as_bytes())).unwrap_or_default();
    let checked = check(&relay, client, &password, CredentialType::Smtp).await;
    match checked {
        Err(error) => {
            tracing::warn!(error = %error, "an SMTP login could not be checked");
            auth_answer("Temporary server problem, try again later", Some(WAIT_AFTER_FAILURE), Some("451 4.3.0"))
        }
        Ok(Err(Refusal::RateLimited(wait))) => auth_answer(
            "Too many failed logins, try again later",
            Some(wait.max(WAIT_AFTER_FAILURE)),
            Some("454 4.7.0"),
        ),
        Ok(Err(_)) => auth_answer("Invalid login or password", Some(WAIT_AFTER_FAILURE), Some("535 5.7.8")),
        Ok(Ok(_)) => match relay.checks.smtp_upstream {
            Some(upstream) => {
                let mut answer = auth_answer("OK", None, None);
                insert(&mut answer, "auth-server", &upstream.ip().to_string());
                insert(&mut answer, "auth-port", &upstream.port().to_string());
                answer
            }
            None => {
                tracing::error!("an SMTP login succeeded but SMTP_UPSTREAM is not set: nowhere to send it");
                auth_answer("Temporary server problem, try again later", Some(WAIT_AFTER_FAILURE), Some("451 4.3.0"))
            }
        },
    }
}

fn auth_answer(status: &str, wait: Option<Duration>, error_code: Option<&str>) -> Response {
    let mut answer = ().into_response();
    insert(&mut answer, "auth-status", status);
    if let Some(wait) = wait {
        insert(&mut answer, "auth-wait", &wait.as_secs().max(1).to_string());
    }
    if let Some(code) = error_code {
        insert(&mut answer, "auth-error-code", code);
    }
    answer
}

fn insert(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(HeaderName::from_static(name), value);
    }
}

/// The client's address as the relay reports it, if it is one.
fn client_address(headers: &HeaderMap) -> Option<IpAddr> {
    headers.get(CLIENT_IP_HEADER)?.to_str().ok()?.trim().parse().ok()
}

/// nginx escapes `%` and spaces in `Auth-User` and `Auth-Pass` (and leaves `+` as it is).
fn percent_decoded(value: &[u8]) -> Option<String> {
    percent_encoding::percent_decode(value).decode_utf8().ok().map(|text| text.into_owned())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    key: String,
    #[serde(rename = "type")]
    credential_type: CredentialType,
}

#[derive(Serialize)]
pub struct Verified {
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<VerifiedCredential>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<VerifiedServer>,
}

#[derive(Serialize)]
struct VerifiedCredential {
    uuid: Uuid,
    name: String,
    #[serde(rename = "type")]
    credential_type: CredentialType,
}

#[derive(Serialize)]
struct VerifiedServer {
    uuid: Uuid,
    name: String,
}

/// For relays that are not nginx: `{"valid": true, "credential": …, "server": …}`, or
/// `{"valid": false}` with nothing about why.
async fn verify(
    State(relay): State<Relay>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<VerifyRequest>,
) -> Result<Json<Verified>, ApiError> {
    let client = client_address(&headers).unwrap_or(peer.ip());
    let Ok(credential) = check(&relay, client, &request.key, request.credential_type).await? else {
        return Ok(Json(Verified { valid: false, credential: None, server: None }));
    };
    let server_name = server_name(&relay, &credential).await?;
    Ok(Json(Verified {
        valid: true,
        credential: Some(VerifiedCredential {
            uuid: credential.uuid,
            name: credential.name.as_str().to_owned(),
            credential_type: credential.credential_type,
        }),
        server: Some(VerifiedServer { uuid: credential.server_uuid, name: server_name }),
    }))
}

async fn server_name(relay: &Relay, credential: &ReplicaCredential) -> Result<String, ApiError> {
    let cached =
        relay.checks.server_names.lock().unwrap_or_else(PoisonError::into_inner).get(&credential.server_uuid).cloned();
    if let Some(name) = cached {
        return Ok(name);
    }
    let stored = relay.app.store.locked_credential(credential.uuid).await?;
    let name = stored
        .map(|stored| stored.server_name)
        .ok_or_else(|| ApiError::Internal(format!("credential {} is not in the view", credential.uuid)))?;
    relay
        .checks
        .server_names
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(credential.server_uuid, name.clone());
    Ok(name)
}
