//! The topology on the broker, in one place: the events exchange, the routing key of each event
//! type, and the queues of the webhook workers, all named after the exchange:
//!
//! - `<exchange>.webhooks`: the work queue, bound to the routing key of `CredentialLocked`; it
//!   also receives attempts coming back from the retry queues, or handed over by the sweep;
//! - `<exchange>.webhooks.retry.<delay>ms`: one per delay of the retry schedule, where an attempt
//!   waits out its delay (message TTL) before it is dead-lettered back to the work queue;
//! - `<exchange>.webhooks.dead`: deliveries that failed their last attempt.
//!
//! Queue names and arguments are fixed once a broker has the queues: a change here is a change
//! of every deployment's broker.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use super::BusError;
use crate::domain::{CREDENTIAL_CREATED, CREDENTIAL_LOCKED, CREDENTIAL_REPLACED};

pub const CREATED_ROUTING_KEY: &str = "credential.created";
pub const LOCKED_ROUTING_KEY: &str = "credential.locked";
pub const REPLACED_ROUTING_KEY: &str = "credential.replaced";

/// The routing key of each event type.
pub fn routing_key(event_type: &str) -> String {
    match event_type {
        CREDENTIAL_CREATED => CREATED_ROUTING_KEY.to_owned(),
        CREDENTIAL_LOCKED => LOCKED_ROUTING_KEY.to_owned(),
        CREDENTIAL_REPLACED => REPLACED_ROUTING_KEY.to_owned(),
        // Unknown future types still get a stable, bindable key.
        other => format!("credential.{}", other.to_ascii_lowercase()),
    }
}

/// Whether a topic exchange delivers a message with `routing_key` to a queue bound with
/// `binding`, by AMQP's rules: both are words separated by dots, `*` stands for exactly one word
/// and `#` for zero or more. `events tail` filters the log with it when it reads the log itself,
/// so the same `--binding-key` selects the same events with or without RabbitMQ.
pub fn matches(binding: &str, routing_key: &str) -> bool {
    let binding: Vec<&str> = binding.split('.').collect();
    let key: Vec<&str> = routing_key.split('.').collect();
    matches_words(&binding, &key)
}

fn matches_words(binding: &[&str], key: &[&str]) -> bool {
    match binding.split_first() {
        None => key.is_empty(),
        // `#` takes as many words as makes the rest match, none included.
        Some((&"#", rest)) => (0..=key.len()).any(|taken| matches_words(rest, &key[taken..])),
        Some((word, rest)) => match key.split_first() {
            Some((first, key_rest)) => (*word == "*" || word == first) && matches_words(rest, key_rest),
            None => false,
        },
    }
}

/// The events exchange: durable, topic.
pub async fn declare_exchange(channel: &Channel, exchange: &str) -> Result<(), BusError> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() },
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// The webhook workers' queues on one exchange, for one retry schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub exchange: String,
    pub work_queue: String,
    /// One per delay of the schedule, in its order.
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
        declare_exchange(channel, &self.exchange).await?;
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

/// The durable work queue, bound to the routing key of `CredentialLocked`. The relay declares it
/// too (before it publishes anything), so that events published before a webhook worker first
/// started are kept.
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
    fn a_binding_matches_routing_keys_as_a_topic_exchange_does() {
        for (binding, key, expected) in [
            ("#", "credential.locked", true),
            ("#", "credential", true),
            ("credential.locked", "credential.locked", true),
            ("credential.locked", "credential.created", false),
            ("credential.*", "credential.locked", true),
            ("credential.*", "credential", false),
            ("credential.*", "credential.locked.again", false),
            ("*.locked", "credential.locked", true),
            ("*", "credential.locked", false),
            ("credential.#", "credential", true),
            ("credential.#", "credential.locked", true),
            ("credential.#", "credential.locked.again", true),
            ("credential.#", "server.created", false),
            ("#.locked", "credential.locked", true),
            ("#.locked", "locked", true),
            ("#.locked", "credential.created", false),
            ("credential.#.again", "credential.again", true),
            ("credential.#.again", "credential.a.b.again", true),
            ("credential.#.again", "credential.a.b.agai", false),
            ("#.#", "credential.locked", true),
            // Words are whole: no prefix or substring matching, and `*` is a word of its own.
            ("credential.lock", "credential.locked", false),
            ("credential.lock*", "credential.locked", false),
            ("Credential.locked", "credential.locked", false),
        ] {
            assert_eq!(matches(binding, key), expected, "{binding} against {key}");
        }
    }

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

    #[test]
    fn each_event_type_has_its_routing_key_and_future_types_stay_under_credential() {
        // The keys themselves are the contract: tests/bus checks them on the wire.
        assert_eq!(routing_key(CREDENTIAL_CREATED), CREATED_ROUTING_KEY);
        assert_eq!(routing_key(CREDENTIAL_LOCKED), LOCKED_ROUTING_KEY);
        assert_eq!(routing_key(CREDENTIAL_REPLACED), REPLACED_ROUTING_KEY);
        assert_eq!(routing_key("CredentialRenamed"), "credential.credentialrenamed");
    }
}
