//! A real HTTP receiver for webhooks, on a free local port, that answers each path with a
//! scripted sequence of statuses (200 once the script runs out) and keeps what it was sent.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub struct Hook {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub answered: u16,
    /// When the receiver took it in.
    pub received_at: std::time::SystemTime,
}

impl Hook {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Inbox {
    received: HashMap<String, Vec<Hook>>,
    scripts: HashMap<String, VecDeque<u16>>,
    holds: HashMap<String, Duration>,
}

#[derive(Clone)]
pub struct Receiver {
    address: String,
    inbox: Arc<Mutex<Inbox>>,
    arrived: Arc<Notify>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let arrived = Arc::new(Notify::new());
        let app = Router::new().route("/hooks/{name}", post(receive)).with_state((inbox.clone(), arrived.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { address, inbox, arrived }
    }

    pub fn url(&self, name: &str) -> String {
        format!("{}/hooks/{name}", self.address)
    }

    /// The statuses the next requests to `name` get, in order.
    pub fn script(&self, name: &str, statuses: &[u16]) {
        self.inbox.lock().unwrap().scripts.insert(name.to_owned(), statuses.iter().copied().collect());
    }

    /// Requests to `name` wait this long before they are answered (zero: answer at once).
    pub fn hold(&self, name: &str, delay: Duration) {
        self.inbox.lock().unwrap().holds.insert(name.to_owned(), delay);
    }

    pub fn received(&self, name: &str) -> Vec<Hook> {
        self.inbox.lock().unwrap().received.get(name).cloned().unwrap_or_default()
    }

    /// Waits until `name` received at least `count` requests; panics after `wait`.
    pub async fn wait_for(&self, name: &str, count: usize, wait: Duration) -> Vec<Hook> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.arrived.notified();
            let hooks = self.received(name);
            if hooks.len() >= count {
                return hooks;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("{name} received {} of {count} webhooks", hooks.len());
            }
        }
    }
}

async fn receive(
    State((inbox, arrived)): State<(Arc<Mutex<Inbox>>, Arc<Notify>)>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let (answered, hold) = {
        let mut inbox = inbox.lock().unwrap();
        let answered = inbox.scripts.get_mut(&name).and_then(VecDeque::pop_front).unwrap_or(200);
        let hold = inbox.holds.get(&name).copied().unwrap_or_default();
        inbox.received.entry(name).or_default().push(Hook {
            headers,
            body,
            answered,
            received_at: std::time::SystemTime::now(),
        });
        (answered, hold)
    };
    arrived.notify_waiters();
    tokio::time::sleep(hold).await;
    StatusCode::from_u16(answered).unwrap()
}
