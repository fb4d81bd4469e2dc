//! Prometheus metrics of the process, served at `GET /metrics`. One registry per process, as
//! Prometheus expects: every instance exposes its own.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_request_duration: HistogramFamily<RouteLabels>,
    pub auth_failures: Family<ReasonLabels, Counter>,
    pub relay_auth_failures: Family<ReasonLabels, Counter>,
    pub write_batch_size: Histogram,
    pub append_duration: Histogram,
    pub relay_published: Counter,
    pub relay_publish_failures: Counter,
    pub relay_position: Gauge,
    pub relay_lag: Gauge,
    pub log_head: Gauge,
    pub webhook_deliveries: Family<OutcomeLabels, Counter>,
    pub replica_reloads: Counter,
    pub database_timeouts: Counter,
    pub deadline_lock_lateness: Histogram,
    pub deadlines_pending: Gauge,
    pub database_connections: Gauge,
    pub database_connections_idle: Gauge,
    pub relay_leader: Gauge,
    pub broker_connected: Gauge,
    pub database_acquire_wait: Histogram,
    pub relay_delay: Histogram,
    pub relay_stage: HistogramFamily<StageLabels>,
    pub runtime_wake_delay: Histogram,
    pub webhook_attempt_duration: Histogram,
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 13 s: past the 10 s request timeout, so a timed-out request falls in a
    // bucket of its own rather than in +Inf with everything slow.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("credential_ledger");
    let http_requests = Family::<RequestLabels, Counter>::default();
    registry.register("http_requests", "HTTP requests by route, method and status", http_requests.clone());
    let http_request_duration = HistogramFamily::<RouteLabels>::new_with_constructor(latency_histogram);
    registry.register("http_request_duration_seconds", "HTTP request latency by route", http_request_duration.clone());
    let auth_failures = Family::<ReasonLabels, Counter>::default();
    registry.register("auth_failures", "Refused authentications by reason", auth_failures.clone());
    let relay_auth_failures = Family::<ReasonLabels, Counter>::default();
    registry.register(
        "relay_auth_failures",
        "Refused relay checks (SMTP logins, verify calls) by reason",
        relay_auth_failures.clone(),
    );
    let write_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
    registry.register("write_batch_size", "Commands committed per group commit", write_batch_size.clone());
    let append_duration = latency_histogram();
    registry.register(
        "append_duration_seconds",
        "Time to decide, append and commit one batch",
        append_duration.clone(),
    );
    let relay_published = Counter::default();
    registry.register("relay_published", "Events published to the bus and confirmed", relay_published.clone());
    let relay_publish_failures = Counter::default();
    registry.register(
        "relay_publish_failures",
        "Relay interruptions (broker or database errors)",
        relay_publish_failures.clone(),
    );
    let relay_position = Gauge::default();
    registry.register("relay_position", "Last log position confirmed by the broker", relay_position.clone());
    let relay_lag = Gauge::default();
    registry.register("relay_lag_events", "Events committed but not yet confirmed by the broker", relay_lag.clone());
    let log_head = Gauge::default();
    registry.register("log_head_position", "Position of the last event in the log", log_head.clone());
    let webhook_deliveries = Family::<OutcomeLabels, Counter>::default();
    registry.register("webhook_attempts", "Webhook attempts by outcome", webhook_deliveries.clone());
    let replica_reloads = Counter::default();
    registry.register(
        "replica_reloads",
        "Times the in-memory replica found the log inconsistent with itself and reloaded the view",
        replica_reloads.clone(),
    );
    let database_timeouts = Counter::default();
    registry.register(
        "database_timeouts",
        "Queries abandoned because the database did not answer in time (their connection is closed)",
        database_timeouts.clone(),
    );
    let deadline_lock_lateness = Histogram::new(exponential_buckets(0.001, 2.0, 16));
    registry.register(
        "deadline_lock_lateness_seconds",
        "From a deadline to the recorded_at of its lock, as seen by each instance that asked for the lock",
        deadline_lock_lateness.clone(),
    );
    let deadlines_pending = Gauge::default();
    registry.register(
        "deadlines_pending",
        "Deadlines (expiries, grace periods) whose lock is not recorded yet",
        deadlines_pending.clone(),
    );
    let build_info = Family::<BuildLabels, Gauge>::default();
    build_info.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
    registry.register("build_info", "The running build: always 1, labelled with its version", build_info);
    let database_connections = Gauge::default();
    registry.register(
        "database_connections",
        "Database connections open in this instance's pools (in use and idle)",
        database_connections.clone(),
    );
    let database_connections_idle = Gauge::default();
    registry.register(
        "database_connections_idle",
        "Database connections open and idle: open minus idle are in use",
        database_connections_idle.clone(),
    );
    let relay_leader = Gauge::default();
    registry.register("relay_leader", "1 while this instance's relay leads its exchange", relay_leader.clone());
    let broker_connected = Gauge::default();
    registry.register(
        "broker_connected",
        "1 while this instance's relay is connected to RabbitMQ",
        broker_connected.clone(),
    );
    let database_acquire_wait = latency_histogram();
    registry.register(
        "database_acquire_wait_seconds",
        "Time the writer waited for a PostgreSQL connection from the pool",
        database_acquire_wait.clone(),
    );
    let relay_delay = latency_histogram();
    registry.register(
        "relay_delay_seconds",
        "From an event's commit (its recorded_at) to the broker's confirm, for each batch's oldest event",
        relay_delay.clone(),
    );
    let relay_stage = HistogramFamily::<StageLabels>::new_with_constructor(latency_histogram);
    registry.register(
        "relay_stage_seconds",
        "Each relay batch by stage: recorded_to_read (its newest event's recorded_at to the relay holding the batch), publish (handing it to the broker client), confirm (from then to the broker's confirm of all of it)",
        relay_stage.clone(),
    );
    let runtime_wake_delay = latency_histogram();
    registry.register(
        "runtime_wake_delay_seconds",
        "How late a task woken by its timer is polled (a probe sleeping 10 ms at a time): how long ready tasks wait for a worker thread, plus the timer's 1 ms grain",
        runtime_wake_delay.clone(),
    );
    let webhook_attempt_duration = latency_histogram();
    registry.register(
        "webhook_attempt_duration_seconds",
        "Webhook attempts, from the request sent to the answer read (or the timeout)",
        webhook_attempt_duration.clone(),
    );
    Metrics {
        registry,
        database_acquire_wait,
        relay_delay,
        relay_stage,
        runtime_wake_delay,
        webhook_attempt_duration,
        database_connections,
        database_connections_idle,
        relay_leader,
        broker_connected,
        deadline_lock_lateness,
        deadlines_pending,
        replica_reloads,
        database_timeouts,
        http_requests,
        http_request_duration,
        auth_failures,
        relay_auth_failures,
        write_batch_size,
        append_duration,
        relay_published,
        relay_publish_failures,
        relay_position,
        relay_lag,
        log_head,
        webhook_deliveries,
    }
});

pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Measures `runtime_wake_delay_seconds` on the runtime it runs on, until `stop`.
pub async fn probe_wake_delay(stop: tokio_util::sync::CancellationToken) {
    const PERIOD: std::time::Duration = std::time::Duration::from_millis(10);
    loop {
        let due = tokio::time::Instant::now() + PERIOD;
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            () = stop.cancelled() => return,
        }
        metrics().runtime_wake_delay.observe(due.elapsed().as_secs_f64());
    }
}

/// The two text formats `/metrics` speaks: Prometheus asks for OpenMetrics in its `Accept`
/// header; `promtool`, older scrapers and people with curl get the classic text format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    OpenMetrics,
    PrometheusText,
}

impl Exposition {
    /// The format an `Accept` header asks for: OpenMetrics only when it is named, since a
    /// client that names neither (or `*/*`) is more likely a person or an old tool.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::PrometheusText,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::PrometheusText => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

impl Metrics {
    pub fn encode(&self, format: Exposition) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        match format {
            Exposition::OpenMetrics => text,
            Exposition::PrometheusText => openmetrics_to_prometheus_text(&text),
        }
    }
}

/// The classic text format (0.0.4) from the OpenMetrics text that prometheus-client writes. The
/// two differ, for our metrics, only in that a counter family is named with its `_total` suffix
/// (OpenMetrics names the family without it, its samples with it), and that the classic format
/// has no `# UNIT` or `# EOF` lines.
fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut text = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then_some((prefix, name, tail))
        });
        match descriptor {
            Some((prefix, name, tail)) => {
                text.push_str(prefix);
                text.push_str(name);
                text.push_str("_total ");
                text.push_str(tail);
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_decides_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Exposition::negotiate(Some(prometheus)), Exposition::OpenMetrics);
        assert_eq!(Exposition::negotiate(Some("text/plain;version=0.0.4")), Exposition::PrometheusText);
        assert_eq!(Exposition::negotiate(Some("*/*")), Exposition::PrometheusText);
        assert_eq!(Exposition::negotiate(None), Exposition::PrometheusText);
    }

    #[test]
    fn counters_are_named_with_their_suffix_in_the_classic_format() {
        let openmetrics = "# HELP app_requests Requests.\n# TYPE app_requests counter\napp_requests_total{route=\"/a\"} 3\n\
                           # HELP app_latency_seconds Latency.\n# TYPE app_latency_seconds histogram\n# UNIT app_latency_seconds seconds\n\
                           app_latency_seconds_sum 0.5\napp_latency_seconds_count 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus_text(openmetrics),
            "# HELP app_requests_total Requests.\n# TYPE app_requests_total counter\napp_requests_total{route=\"/a\"} 3\n\
             # HELP app_latency_seconds Latency.\n# TYPE app_latency_seconds histogram\n\
             app_latency_seconds_sum 0.5\napp_latency_seconds_count 1\n"
        );
    }

    #[test]
    fn every_registered_counter_is_renamed() {
        // A family is written only once it has a series: give each one.
        let all = metrics();
        all.relay_published.inc();
        all.http_requests.get_or_create(&RequestLabels { route: "/".into(), method: "GET".into(), status: 200 }).inc();
        all.auth_failures.get_or_create(&ReasonLabels { reason: "unknown" }).inc();
        all.relay_auth_failures.get_or_create(&ReasonLabels { reason: "unknown" }).inc();
        all.webhook_deliveries.get_or_create(&OutcomeLabels { outcome: "delivered" }).inc();
        let openmetrics = metrics().encode(Exposition::OpenMetrics);
        assert!(openmetrics.ends_with("# EOF\n"));
        let text = metrics().encode(Exposition::PrometheusText);
        assert!(!text.contains("# EOF"));
        let counters: Vec<&str> =
            openmetrics.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
        assert_eq!(counters.len(), 8, "{openmetrics}");
        for counter in counters {
            assert!(text.contains(&format!("# TYPE {counter}_total counter\n")), "{counter}: {text}");
            assert!(text.contains(&format!("# HELP {counter}_total ")), "{counter}: {text}");
        }
    }
}
