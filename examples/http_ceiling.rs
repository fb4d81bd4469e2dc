//! The HTTP ceilings for the benchmarks, with the same runtime and the same JSON envelope as the
//! service:
//! - `POST /api/v1/credentials/list`, the strict ceiling: the least an axum route can do for
//!   `list`, answering the bytes of a list of 10 credential-shaped objects serialised once, at
//!   start-up;
//! - `POST /soft/api/v1/credentials/list`, the soft ceiling: the same answer built as a
//!   `serde_json::Value` and serialised on every request (what the benchmarks used until the
//!   strict one), kept to show what per-request JSON costs;
//! - `GET /auth/smtp`: nginx's `auth_http` answer to an SMTP login check, as fixed headers.
//!
//! `cargo run --release --example http_ceiling -- 127.0.0.1:18081`

use axum::body::Bytes;
use axum::http::{header, HeaderName, HeaderValue};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

#[tokio::main]
async fn main() {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18081".to_owned());
    let credentials: Vec<Value> = (1..=10)
        .map(|id| {
            json!({
                "id": id,
                "uuid": format!("00000000-0000-4000-8000-{id:012}"),
                "name": format!("Credential {id}"),
                "type": "API",
                "hold": false,
                "last_used_at": "2026-11-30T12:00:00Z",
                "expires_at": null,
                "replaced_by": null,
            })
        })
        .collect();
    let answer = json!({"status": "success", "data": credentials});
    let serialised = Bytes::from(serde_json::to_vec(&answer).expect("serialise the answer"));
    let json = [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    let login_accepted = [
        (HeaderName::from_static("auth-status"), "OK"),
        (HeaderName::from_static("auth-server"), "127.0.0.1"),
        (HeaderName::from_static("auth-port"), "2525"),
    ];
    let app = Router::new()
        .route("/api/v1/credentials/list", post(move || async move { (json.clone(), serialised.clone()) }))
        .route("/soft/api/v1/credentials/list", post(move || async move { Json(answer.clone()) }))
        .route("/auth/smtp", get(move || async move { login_accepted }));
    let listener = tokio::net::TcpListener::bind(&address).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
