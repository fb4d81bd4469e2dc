//! The HTTP ceiling for the benchmarks: the least an axum server can do for `list`, a static
//! JSON list of 10 credential-shaped objects, with the same runtime and the same JSON envelope;
//! and for an SMTP login check (`GET /auth/smtp`), nginx's `auth_http` answer as fixed headers.
//! `cargo run --release --example http_ceiling -- 127.0.0.1:18081`

use axum::http::HeaderName;
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
            })
        })
        .collect();
    let body = json!({"status": "success", "data": credentials});
    let login_accepted = [
        (HeaderName::from_static("auth-status"), "OK"),
        (HeaderName::from_static("auth-server"), "127.0.0.1"),
        (HeaderName::from_static("auth-port"), "2525"),
    ];
    let app = Router::new()
        .route("/api/v1/credentials/list", post(move || async move { Json(body.clone()) }))
        .route("/auth/smtp", get(move || async move { login_accepted }));
    let listener = tokio::net::TcpListener::bind(&address).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
