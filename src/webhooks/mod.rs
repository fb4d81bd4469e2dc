//! Webhooks: each `CredentialLocked` delivered as a signed HTTP request (Standard Webhooks) to
//! every subscribed endpoint, retried on a schedule, every attempt recorded. With RabbitMQ the
//! relay's messages are fanned out by the workers; without it the dispatcher follows the log
//! and the workers take due attempts from the database (`queue`).

mod dispatcher;
mod payload;
pub mod queue;
mod sender;
mod worker;

use std::time::Duration;

pub use dispatcher::Dispatcher;
pub use payload::WebhookBody;
pub use queue::broker::ATTEMPT_MESSAGE_TYPE;
pub use sender::{check_destination, DestinationRefused, Sender};
pub use worker::WebhookWorker;

use crate::bus::{BusSettings, Topology, DEFAULT_EXCHANGE};

/// The default of `WEBHOOK_RETRY_SCHEDULE`.
pub const DEFAULT_RETRY_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h";
/// The default of `WEBHOOK_TIMEOUT_MS`.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(15);
/// The default of `WEBHOOK_PREFETCH`.
pub const DEFAULT_WEBHOOK_PREFETCH: u16 = 32;
/// The default of `WEBHOOK_SWEEP_INTERVAL_MS`: also the longest a retry asked for through the
/// API waits before a worker hands it to the broker.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// How long past its due time an attempt held by the broker or a worker may stay unmade before
/// a sweep presumes it lost and hands it over again. Longer than the work queue's usual backlog:
/// a late message handed over again costs a message that is dropped, not a webhook.
pub const DEFAULT_PRESUMED_LOST_AFTER: Duration = Duration::from_secs(60);

/// How webhooks are delivered, as `/healthz`, `/readyz` and the start-up log name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    /// No broker: the dispatcher and the database queue, in this process.
    InProcess,
    RabbitMq,
}

impl DeliveryMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::InProcess => "in-process",
            DeliveryMode::RabbitMq => "rabbitmq",
        }
    }
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The broker (`AMQP_URL`); none for in-process delivery.
    pub bus: Option<BusSettings>,
    /// The wait before each retry: attempt n+1 follows attempt n after `retry_schedule[n-1]`.
    pub retry_schedule: Vec<Duration>,
    pub timeout: Duration,
    /// Allow loopback and private destinations (local development and tests only).
    pub allow_private: bool,
    /// How many messages a worker holds unacknowledged at once.
    pub prefetch: u16,
    /// How often a worker sweeps for due attempts that no message carries; without a broker,
    /// also the longest the dispatcher and the workers wait before looking at the database
    /// again (for what other processes on it did).
    pub sweep_interval: Duration,
    /// How long past its due time an attempt that was handed over may stay unmade before the
    /// sweep hands it over again; an attempt in progress is due again `timeout` after it started.
    pub presumed_lost_after: Duration,
}

impl WebhookSettings {
    /// The documented defaults, on `bus` (none: in-process delivery).
    pub fn new(bus: Option<BusSettings>) -> Self {
        WebhookSettings {
            bus,
            retry_schedule: parse_schedule(DEFAULT_RETRY_SCHEDULE).unwrap_or_default(),
            timeout: DEFAULT_WEBHOOK_TIMEOUT,
            allow_private: false,
            prefetch: DEFAULT_WEBHOOK_PREFETCH,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            presumed_lost_after: DEFAULT_PRESUMED_LOST_AFTER,
        }
    }

    pub fn delivery_mode(&self) -> DeliveryMode {
        match self.bus {
            Some(_) => DeliveryMode::RabbitMq,
            None => DeliveryMode::InProcess,
        }
    }

    /// The broker's queues for this schedule.
    pub fn topology(&self) -> Topology {
        let exchange = self.bus.as_ref().map_or(DEFAULT_EXCHANGE, |bus| bus.exchange.as_str());
        Topology::new(exchange, &self.retry_schedule)
    }
}

/// Parses `5s,5m,30m,2h` into durations.
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            humantime::parse_duration(part).map_err(|error| format!("{part:?}: {error}")).and_then(|delay| {
                if delay.is_zero() {
                    Err(format!("{part:?}: must be positive"))
                } else {
                    Ok(delay)
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_parses() {
        let schedule = parse_schedule(DEFAULT_RETRY_SCHEDULE).unwrap();
        assert_eq!(schedule.len(), 6);
        assert_eq!(schedule[0], Duration::from_secs(5));
        assert_eq!(schedule[5], Duration::from_secs(10 * 3600));
        assert_eq!(parse_schedule("100ms, 1s").unwrap(), [Duration::from_millis(100), Duration::from_secs(1)]);
        assert!(parse_schedule("5x").is_err());
        assert!(parse_schedule("0s").is_err());
        assert!(parse_schedule("").unwrap().is_empty());
    }
}
