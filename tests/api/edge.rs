//! The HTTP edge against hostile clients: slow headers, idle connections, huge declared
//! bodies, and probes that answer even when the service is at capacity.

use std::time::{Duration, Instant};

use credential_ledger::http::Limits;
use credential_ledger::startup::Settings;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_with, test_settings, wait_until, TestApp, LIST};
use credential_ledger_test_support::backend::TestDb;

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);

fn settings(max_concurrent_requests: usize) -> Settings {
    Settings {
        limits: Limits {
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests,
            header_read_timeout: HEADER_READ_TIMEOUT,
        },
        ..test_settings()
    }
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap()
}

/// How long until the service closes `stream`, reading (and dropping) whatever it sends.
async fn closed_after(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the connection was still open after {limit:?}"),
        }
    }
}

fn list_request(key: &str) -> String {
    format!(
        "POST {LIST} HTTP/1.1\r\nHost: ledger\r\nX-Server-API-Key: {key}\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\n\r\n{{}}"
    )
}

async fn slow_headers_and_idle_connections_are_closed(db: TestDb) {
    let app = spawn_app_with(&db, settings(1024)).await;
    // Slowloris: a request line and one header, then a byte now and then, never the end.
    let mut slow = connect(&app).await;
    slow.write_all(b"POST /api/v1/credentials/list HTTP/1.1\r\nHost: ledger\r\n").await.unwrap();
    let dribble = async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow.write_all(b"X").await.is_err() {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(3), dribble).await.ok();
    assert!(closed_after(&mut slow, Duration::from_secs(3)).await < Duration::from_secs(3));

    // Keep-alive: one request answered, then nothing.
    let mut idle = connect(&app).await;
    idle.write_all(list_request(&app.tenant.key).as_bytes()).await.unwrap();
    let mut status = [0u8; 12];
    idle.read_exact(&mut status).await.unwrap();
    assert_eq!(&status, b"HTTP/1.1 200");
    let closed = closed_after(&mut idle, HEADER_READ_TIMEOUT * 4).await;
    assert!(closed >= HEADER_READ_TIMEOUT / 2, "not closed at once: {closed:?}");
}

async fn a_huge_declared_body_is_refused_at_once(db: TestDb) {
    let app = spawn_app_with(&db, settings(1024)).await;
    for key in [Some(app.tenant.key.as_str()), None] {
        let mut stream = connect(&app).await;
        let key_header = key.map(|key| format!("X-Server-API-Key: {key}\r\n")).unwrap_or_default();
        let request = format!(
            "POST /api/v1/credentials/create HTTP/1.1\r\nHost: ledger\r\n{key_header}Content-Type: application/json\r\n\
             Content-Length: 1000000000000\r\n\r\n{{\"name\":"
        );
        let started = Instant::now();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 512];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut answer)).await.unwrap().unwrap();
        let answer = String::from_utf8_lossy(&answer[..read]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("payload_too_large"), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

async fn probes_answer_while_the_service_is_at_capacity(db: TestDb) {
    let app = spawn_app_with(&db, settings(1)).await;
    // One request holds the only place: its body never comes.
    let mut holder = connect(&app).await;
    let held = format!(
        "POST /api/v1/credentials/create HTTP/1.1\r\nHost: ledger\r\nX-Server-API-Key: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 20\r\n\r\n{{",
        app.tenant.key
    );
    holder.write_all(held.as_bytes()).await.unwrap();
    let refused = wait_until("the held request to take the only place", Duration::from_secs(5), || async {
        let answer = app.list(&app.tenant.key).await;
        (answer.status == StatusCode::SERVICE_UNAVAILABLE).then_some(answer)
    })
    .await;
    assert_eq!(refused.error_code(), "overloaded");
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let answer = app.client.get(format!("{}{probe}", app.address)).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{probe}");
    }
    drop(holder);
}

credential_ledger_test_support::on_both_backends!(
    slow_headers_and_idle_connections_are_closed,
    a_huge_declared_body_is_refused_at_once,
    probes_answer_while_the_service_is_at_capacity,
);
