//! A steady write load against a running service, recording what was acknowledged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::collections::HashSet;

use credential_ledger::domain::StoredEvent;
use credential_ledger::store::Store;
use serde_json::{json, Value};

use crate::backend::view_of;

/// One request of the load and what came back.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub started: Instant,
    pub elapsed: Duration,
    /// HTTP status, or None when no answer came (connection refused or reset).
    pub status: Option<u16>,
    pub body: Value,
}

/// What the load saw acknowledged.
#[derive(Debug, Default, Clone)]
pub struct Acknowledged {
    pub created: Vec<String>,
    /// (old uuid, new uuid)
    pub rotated: Vec<(String, String)>,
    pub outcomes: Vec<Outcome>,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    seen: Arc<Mutex<Acknowledged>>,
}

impl Load {
    /// Sends creates, and every third request a rotation of the last created credential, one
    /// after another, until stopped.
    pub fn start(base_url: String, key: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Acknowledged::default()));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
        let task = {
            let (stop, seen) = (stop.clone(), seen.clone());
            tokio::spawn(async move {
                let mut step = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    step += 1;
                    let last_created = seen.lock().unwrap().created.last().cloned();
                    let (path, body) = match last_created {
                        Some(uuid) if step % 3 == 0 => ("regenerate", json!({ "uuid": uuid })),
                        _ => ("create", json!({ "name": format!("load {step}"), "type": "API" })),
                    };
                    let started = Instant::now();
                    let sent = client
                        .post(format!("{base_url}/api/v1/credentials/{path}"))
                        .header("X-Server-API-Key", &key)
                        .json(&body)
                        .send()
                        .await;
                    let (status, answer) = match sent {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            (Some(status), response.json::<Value>().await.unwrap_or(Value::Null))
                        }
                        Err(_) => (None, Value::Null),
                    };
                    {
                        let mut seen = seen.lock().unwrap();
                        if status == Some(200) {
                            let data = &answer["data"];
                            if path == "create" {
                                seen.created.push(data["uuid"].as_str().unwrap().to_owned());
                            } else {
                                let old = body["uuid"].as_str().unwrap().to_owned();
                                let new = data["new_uuid"].as_str().unwrap().to_owned();
                                seen.created.push(new.clone());
                                seen.rotated.push((old, new));
                            }
                        }
                        seen.outcomes.push(Outcome { started, elapsed: started.elapsed(), status, body: answer });
                    }
                    if status.is_none() {
                        // The service is restarting: don't spin.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        };
        Load { stop, task, seen }
    }

    pub fn snapshot(&self) -> Acknowledged {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `more` writes have been acknowledged from now on (within `deadline`): the
    /// load is then really running against whatever state the service is in.
    pub async fn wait_for_acknowledged(&self, more: usize, deadline: Duration) {
        let acknowledged = |seen: &Acknowledged| seen.outcomes.iter().filter(|o| o.status == Some(200)).count();
        let from = acknowledged(&self.seen.lock().unwrap());
        let what = format!("{more} more acknowledged writes");
        crate::app::wait_until(&what, deadline, || async {
            (acknowledged(&self.seen.lock().unwrap()) >= from + more).then_some(())
        })
        .await
    }

    pub async fn stop(self) -> Acknowledged {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let seen = self.seen.lock().unwrap().clone();
        seen
    }
}

/// Every acknowledged write is in the log; every rotation in the log is whole (the new
/// credential's creation and the old one's lock, pointing at each other).
pub async fn assert_acknowledged_writes_are_in_the_log(store: &Store, seen: &Acknowledged) {
    let log = store.events_after(0, i64::MAX).await.expect("the log");
    let payload = |event: &StoredEvent| serde_json::from_str::<Value>(&event.payload).expect("a JSON payload");
    let text = |value: &Value| value.as_str().map(str::to_owned);
    let streams: HashSet<String> = log
        .iter()
        .filter(|event| event.event_type == "CredentialCreated")
        .map(|event| event.stream_id.to_string())
        .collect();
    let missing: Vec<&String> = seen.created.iter().filter(|uuid| !streams.contains(*uuid)).collect();
    assert!(missing.is_empty(), "acknowledged creations missing from the log: {missing:?}");

    let rotations: Vec<(String, String)> = log
        .iter()
        .filter(|event| event.event_type == "CredentialCreated")
        .filter_map(|event| Some((text(&payload(event)["replaces"])?, event.stream_id.to_string())))
        .collect();
    let locks: Vec<(String, String)> = log
        .iter()
        .filter(|event| event.event_type == "CredentialLocked")
        .map(|event| (event.stream_id, payload(event)))
        .filter(|(_, payload)| payload["reason"] == "rotated")
        .filter_map(|(stream, payload)| Some((stream.to_string(), text(&payload["replaced_by"])?)))
        .collect();
    let mut rotations_sorted = rotations.clone();
    let mut locks_sorted = locks.clone();
    rotations_sorted.sort();
    locks_sorted.sort();
    assert_eq!(rotations_sorted, locks_sorted, "every rotation is whole: a creation and a lock, never one alone");
    for pair in &seen.rotated {
        assert!(rotations.contains(pair), "acknowledged rotation {pair:?} is not in the log");
    }
}

/// Drops the view, replays the log into it and checks it is what it was.
pub async fn assert_view_equals_a_rebuild(store: &Store) {
    let before = view_of(store).await;
    store.rebuild_projections().await.expect("a rebuild");
    assert_eq!(view_of(store).await, before, "the view equals a rebuild from the log");
}
