//! The queues of the webhook workers, all named after the events exchange:
//!
//! - `<exchange>.webhooks`: the work queue, bound to `credential.locked`; it also receives
//!   attempts coming back from the retry queues;
//! - `<exchange>.webhooks.retry.<delay>`: one per delay of the schedule, where an attempt waits
//!   out its delay (message TTL) before it is dead-lettered back to the work queue;
//! - `<exchange>.webhooks.dead`: deliveries that failed their last attempt.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use crate::bus::BusError;

/// The `type` of a message that asks for one attempt of a delivery.
pub const ATTEMPT_MESSAGE_TYPE: &str = "WebhookAttempt";
const LOCKED_ROUTING_KEY: &str = "credential.locked";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub exchange: String,
    pub work_queue: String,
    pub retry_queues: Vec<String>,
    pub dead_letter_queue: String,
    delays: Vec<Duration>,
}

impl Topology {
    pub fn new(exchange: &str, schedule: &[Duration]) -> Self {
        let work_queue = work_queue_name(exchange);
        // The delay is in the name: queue arguments cannot change, a new schedule gets new queues.
        let retry_queues = schedule.iter().map(|delay| format!("{work_queue}.retry.{}ms", delay.as_millis())).collect();
        Topology {
            exchange: exchange.to_owned(),
            dead_letter_queue: format!("{work_queue}.dead"),
            work_queue,
            retry_queues,
            delays: schedule.to_vec(),
        }
    }

    pub async fn declare(&self, channel: &Channel) -> Result<(), BusError> {
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() },
                FieldTable::default(),
            )
            .await?;
        declare_work_queue(channel, &self.exchange).await?;
        for (queue, delay) in self.retry_queues.iter().zip(&self.delays) {
            let mut arguments = FieldTable::default();
            arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(delay.as_millis() as i64));
            arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from("")));
            arguments.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(LongString::from(self.work_queue.as_str())),
            );
            channel.queue_declare(queue.as_str().into(), durable, arguments).await?;
        }
        channel.queue_declare(self.dead_letter_queue.as_str().into(), durable, FieldTable::default()).await?;
        Ok(())
    }

    /// The queue where an attempt waits out `delay`; None for a delay not in the schedule.
    pub fn retry_queue(&self, delay: Duration) -> Option<&str> {
        let index = self.delays.iter().position(|scheduled| *scheduled == delay)?;
        self.retry_queues.get(index).map(String::as_str)
    }
}

pub fn work_queue_name(exchange: &str) -> String {
    format!("{exchange}.webhooks")
}

/// The durable work queue, bound to `credential.locked`. The relay declares it too (before it
/// publishes anything), so that events published before a webhook worker first started are kept.
pub async fn declare_work_queue(channel: &Channel, exchange: &str) -> Result<(), BusError> {
    let queue = work_queue_name(exchange);
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.as_str().into(), durable, FieldTable::default()).await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.into(),
            LOCKED_ROUTING_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_delay_has_its_retry_queue_and_the_dead_letter_queue_comes_last() {
        let topology = Topology::new("ex", &[Duration::from_secs(5), Duration::from_secs(300)]);
        assert_eq!(topology.work_queue, "ex.webhooks");
        assert_eq!(topology.retry_queues, ["ex.webhooks.retry.5000ms", "ex.webhooks.retry.300000ms"]);
        assert_eq!(topology.retry_queue(Duration::from_secs(5)), Some("ex.webhooks.retry.5000ms"));
        assert_eq!(topology.retry_queue(Duration::from_secs(300)), Some("ex.webhooks.retry.300000ms"));
        assert_eq!(topology.retry_queue(Duration::from_secs(6)), None);
        assert_eq!(topology.dead_letter_queue, "ex.webhooks.dead");
    }
}
