//! Webhook deliveries as values: the state of a delivery, and the retry policy that decides what
//! an attempt leaves it as. Sending, queueing and recording are the adapters' job.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Where a delivery (one event to one endpoint) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Opened, its first attempt not yet recorded.
    Pending,
    /// An attempt failed (or a retry was asked for) and another one is due.
    Retrying,
    Delivered,
    /// No attempt is due any more: the schedule ran out, or the endpoint is gone.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("status must be one of pending, retrying, delivered, failed")]
pub struct InvalidDeliveryStatus;

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 4] =
        [DeliveryStatus::Pending, DeliveryStatus::Retrying, DeliveryStatus::Delivered, DeliveryStatus::Failed];

    pub fn parse(raw: &str) -> Result<Self, InvalidDeliveryStatus> {
        DeliveryStatus::ALL.into_iter().find(|status| status.as_str() == raw).ok_or(InvalidDeliveryStatus)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one attempt got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The endpoint answered with this HTTP status.
    Answered(u16),
    /// No answer: refused destination, connection error or timeout (a short cause).
    Unanswered(String),
}

/// What an attempt leaves its delivery as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    Delivered,
    /// Another attempt is due at `due`, `delay` after this one.
    Retrying {
        due: DateTime<Utc>,
        delay: Duration,
    },
    /// The schedule ran out.
    Failed,
    /// The endpoint answered 410 Gone: it is to be disabled, and the delivery has failed.
    EndpointGone,
}

impl AfterAttempt {
    pub fn status(self) -> DeliveryStatus {
        match self {
            AfterAttempt::Delivered => DeliveryStatus::Delivered,
            AfterAttempt::Retrying { .. } => DeliveryStatus::Retrying,
            AfterAttempt::Failed | AfterAttempt::EndpointGone => DeliveryStatus::Failed,
        }
    }

    pub fn next_attempt_at(self) -> Option<DateTime<Utc>> {
        match self {
            AfterAttempt::Retrying { due, .. } => Some(due),
            _ => None,
        }
    }
}

/// The retry policy. `attempt` is the number of the attempt just made (1 for the first), made at
/// `now`; attempt n+1 follows a failed attempt n after `schedule[n-1]`, and once the schedule
/// has no delay left for it the delivery has failed. Any 2xx is success; 410 Gone ends the
/// delivery at once; anything else (3xx included: redirects are not followed) and no answer
/// at all are retried.
pub fn after_attempt(attempt: i32, result: &AttemptResult, schedule: &[Duration], now: DateTime<Utc>) -> AfterAttempt {
    match result {
        AttemptResult::Answered(status) if (200..300).contains(status) => return AfterAttempt::Delivered,
        AttemptResult::Answered(410) => return AfterAttempt::EndpointGone,
        AttemptResult::Answered(_) | AttemptResult::Unanswered(_) => {}
    }
    let delay = usize::try_from(attempt).ok().and_then(|attempt| attempt.checked_sub(1)).and_then(|i| schedule.get(i));
    match delay {
        Some(&delay) => AfterAttempt::Retrying { due: later(now, delay), delay },
        None => AfterAttempt::Failed,
    }
}

/// `now + delay`, saturating: a schedule of absurd delays must not panic the worker.
fn later(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(delay)
        .ok()
        .and_then(|delay| now.checked_add_signed(delay))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-30T12:00:00Z".parse().unwrap()
    }

    fn schedule() -> Vec<Duration> {
        vec![Duration::from_secs(5), Duration::from_secs(300), Duration::from_millis(1500)]
    }

    fn no_answer() -> AttemptResult {
        AttemptResult::Unanswered("timed out".into())
    }

    #[test]
    fn statuses_read_back_what_they_write_and_nothing_else() {
        for status in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::parse(status.as_str()), Ok(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
            assert_eq!(status.to_string(), status.as_str());
        }
        let names: Vec<&str> = DeliveryStatus::ALL.iter().map(|status| status.as_str()).collect();
        assert_eq!(names, ["pending", "retrying", "delivered", "failed"]);
        for raw in ["", "lost", "Failed", "FAILED", " failed", "failed "] {
            assert_eq!(DeliveryStatus::parse(raw), Err(InvalidDeliveryStatus), "{raw:?}");
        }
    }

    #[test]
    fn any_2xx_is_delivered_whatever_the_attempt() {
        for status in [200, 201, 202, 204, 299] {
            for attempt in [1, 3, 4, 99] {
                let after = after_attempt(attempt, &AttemptResult::Answered(status), &schedule(), now());
                assert_eq!(after, AfterAttempt::Delivered, "{status} on attempt {attempt}");
                assert_eq!((after.status(), after.next_attempt_at()), (DeliveryStatus::Delivered, None));
            }
        }
    }

    #[test]
    fn other_answers_and_no_answer_retry_after_the_delay_of_the_attempt_just_made() {
        let failures = [
            AttemptResult::Answered(100),
            AttemptResult::Answered(199),
            AttemptResult::Answered(300),
            AttemptResult::Answered(301),
            AttemptResult::Answered(400),
            AttemptResult::Answered(404),
            AttemptResult::Answered(429),
            AttemptResult::Answered(500),
            AttemptResult::Answered(503),
            no_answer(),
        ];
        let due = |seconds: f64| now() + chrono::Duration::milliseconds((seconds * 1000.0) as i64);
        for result in &failures {
            let expected = [(1, 5.0, Duration::from_secs(5)), (2, 300.0, Duration::from_secs(300))];
            for (attempt, after_seconds, delay) in expected {
                let after = after_attempt(attempt, result, &schedule(), now());
                assert_eq!(after, AfterAttempt::Retrying { due: due(after_seconds), delay }, "{result:?}");
                assert_eq!(after.status(), DeliveryStatus::Retrying);
                assert_eq!(after.next_attempt_at(), Some(due(after_seconds)));
            }
            let third = after_attempt(3, result, &schedule(), now());
            assert_eq!(third, AfterAttempt::Retrying { due: due(1.5), delay: Duration::from_millis(1500) });
        }
    }

    #[test]
    fn the_attempt_after_the_last_delay_fails_and_so_does_any_later_one() {
        for result in [AttemptResult::Answered(500), AttemptResult::Answered(302), no_answer()] {
            for attempt in [4, 5, 1000, i32::MAX] {
                let after = after_attempt(attempt, &result, &schedule(), now());
                assert_eq!(after, AfterAttempt::Failed, "{result:?} on attempt {attempt}");
                assert_eq!((after.status(), after.next_attempt_at()), (DeliveryStatus::Failed, None));
            }
        }
        // Without a schedule, the first failure is the last.
        assert_eq!(after_attempt(1, &no_answer(), &[], now()), AfterAttempt::Failed);
        // No attempt has a number below 1: such a number has no delay either.
        assert_eq!(after_attempt(0, &no_answer(), &schedule(), now()), AfterAttempt::Failed);
        assert_eq!(after_attempt(-1, &no_answer(), &schedule(), now()), AfterAttempt::Failed);
    }

    #[test]
    fn gone_ends_the_delivery_at_once_even_with_delays_left() {
        for attempt in [1, 2, 4] {
            let after = after_attempt(attempt, &AttemptResult::Answered(410), &schedule(), now());
            assert_eq!(after, AfterAttempt::EndpointGone);
            assert_eq!((after.status(), after.next_attempt_at()), (DeliveryStatus::Failed, None));
        }
    }

    #[test]
    fn a_delay_beyond_the_calendar_saturates_instead_of_panicking() {
        let after = after_attempt(1, &no_answer(), &[Duration::MAX], now());
        assert_eq!(after, AfterAttempt::Retrying { due: DateTime::<Utc>::MAX_UTC, delay: Duration::MAX });
        let century = Duration::from_secs(100 * 366 * 24 * 3600);
        let near_the_end = DateTime::<Utc>::MAX_UTC - chrono::Duration::days(1);
        let after = after_attempt(1, &no_answer(), &[century], near_the_end);
        assert_eq!(after.next_attempt_at(), Some(DateTime::<Utc>::MAX_UTC));
    }
}
