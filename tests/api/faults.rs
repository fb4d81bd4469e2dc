//! Network faults between the service and PostgreSQL, made by a test-owned proxy on loopback:
//! the shared server itself is never stopped.

use std::time::{Duration, Instant};

use credential_ledger::startup::Settings;
use credential_ledger::store::{DatabaseSettings, Store};
use credential_ledger_test_support::backend::TestDb;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app_on, test_settings, wait_until, TestApp};
use crate::load::Load;
use crate::proxy::Proxy;

const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The test database, reached through a proxy the test controls.
async fn through_proxy(db: &TestDb) -> (Proxy, Store) {
    let upstream = url::Url::parse(db.url()).unwrap();
    let address = format!("{}:{}", upstream.host_str().unwrap(), upstream.port().unwrap_or(5432));
    let proxy = Proxy::start(address.parse().unwrap()).await;
    let mut proxied = upstream.clone();
    proxied.set_port(Some(proxy.port())).unwrap();
    let settings = DatabaseSettings {
        url: proxied.to_string(),
        max_connections: 8,
        acquire_timeout: Duration::from_secs(1),
        query_timeout: QUERY_TIMEOUT,
    };
    (proxy, Store::open(&settings).await.unwrap())
}

async fn readiness(app: &TestApp) -> StatusCode {
    app.client.get(format!("{}/readyz", app.address)).send().await.unwrap().status()
}

/// Every connection the service holds goes silent mid-load (its packets vanish; the network
/// still accepts new connections): writes stall for at most the query timeout, the instance says
/// it is not ready meanwhile, and it recovers by itself on fresh connections. SIGTERM then stops
/// it within its bound even with a write stuck on a silent connection.
async fn silently_dead_connections_do_not_wedge_writes(db: TestDb) {
    let (proxy, proxied) = through_proxy(&db).await;
    let settings =
        Settings { query_timeout: QUERY_TIMEOUT, shutdown_timeout: Duration::from_secs(8), ..test_settings() };
    let mut app = spawn_app_on(&db, proxied, settings).await;
    let load = Load::start(app.address.clone(), app.tenant.key.clone());
    load.wait_for_acknowledged(20, Duration::from_secs(10)).await;

    proxy.blackhole_existing();
    let silenced = Instant::now();
    let mut not_ready = false;
    let mut recovered = None;
    while silenced.elapsed() < Duration::from_secs(20) && recovered.is_none() {
        not_ready |= readiness(&app).await == StatusCode::SERVICE_UNAVAILABLE;
        let answer = app.create(&app.tenant.key, json!({"name": "after the silence"})).await;
        if answer.status == StatusCode::OK {
            recovered = Some(silenced.elapsed());
        } else {
            assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.body);
        }
    }
    let recovered = recovered.expect("writes recover by themselves");
    assert!(recovered < QUERY_TIMEOUT * 3, "writes recovered after {recovered:?}");
    assert!(not_ready, "/readyz said 503 while writes could not commit");
    wait_until("the instance to become ready again", Duration::from_secs(15), || async {
        (readiness(&app).await == StatusCode::OK).then_some(())
    })
    .await;
    let seen = load.stop().await;
    assert!(
        seen.outcomes.iter().all(|outcome| matches!(outcome.status, Some(200 | 503))),
        "only successes and 503s under the fault"
    );

    // A write stuck on a silent connection when SIGTERM comes.
    let stuck = {
        let (client, url, key) =
            (app.client.clone(), format!("{}/api/v1/credentials/create", app.address), app.tenant.key.clone());
        tokio::spawn(async move {
            client.post(url).header("X-Server-API-Key", key).json(&json!({"name": "at shutdown"})).send().await
        })
    };
    // No sign tells when the request has reached the database: give it a moment to.
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.blackhole_existing();
    let stopping = Instant::now();
    tokio::time::timeout(Duration::from_secs(12), app.stop())
        .await
        .expect("SIGTERM stops the service within its bound");
    assert!(stopping.elapsed() < Duration::from_secs(10), "stopped after {:?}", stopping.elapsed());
    let _ = stuck.await;
}

/// The read barrier keeps a connection of its own between head reads. When it is closed under
/// it (a server restart, an idle timeout in the network), the next request is not refused: the
/// head is read again on a fresh connection.
async fn a_barrier_connection_closed_between_requests_is_replaced_unseen(db: TestDb) {
    let (proxy, proxied) = through_proxy(&db).await;
    let app = spawn_app_on(&db, proxied, test_settings()).await;
    assert_eq!(app.list(&app.tenant.key).await.status, StatusCode::OK);
    for _ in 0..3 {
        proxy.close_existing();
        // The proxy resets the connections from its own tasks: let it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let answer = app.list(&app.tenant.key).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
}

// A proxy in front of PostgreSQL's port: the embedded ledger has no connection to break.
credential_ledger_test_support::on_postgres!(
    silently_dead_connections_do_not_wedge_writes,
    a_barrier_connection_closed_between_requests_is_replaced_unseen
);
