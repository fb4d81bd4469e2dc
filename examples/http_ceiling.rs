//! The HTTP ceiling for the benchmarks: the least an axum server can do for `list`, a static
//! JSON list of 10 credential-shaped objects, with the same runtime and the same JSON envelope.
//! `cargo run --release --example http_ceiling -- 127.0.0.1:18081`

use axum::routing::post;
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
    let app = Router::new().route("/api/v1/credentials/list", post(move || async move { Json(body.clone()) }));
    let listener = tokio::net::TcpListener::bind(&address).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
