//! Rate limiting of failed authentications, per client address, so that guessing keys is slow
//! and costs the database nothing: a blocked address is refused before its key is looked at.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Above this many blocked addresses, expired entries are swept.
const SWEEP_AT: usize = 10_000;

#[derive(Clone)]
pub struct AuthGuard {
    failures: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    blocked: Arc<Mutex<HashMap<IpAddr, Instant>>>,
}

impl std::fmt::Debug for AuthGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthGuard").finish_non_exhaustive()
    }
}

impl AuthGuard {
    /// Allows `per_minute` failed authentications per address (as a burst, refilled evenly).
    pub fn new(per_minute: u32) -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN));
        AuthGuard { failures: Arc::new(RateLimiter::keyed(quota)), blocked: Arc::default() }
    }

    /// How long `address` must still wait, if it is blocked.
    pub fn refused(&self, address: IpAddr) -> Option<Duration> {
        let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        let until = *blocked.get(&address)?;
        let now = Instant::now();
        if until > now {
            return Some(until - now);
        }
        blocked.remove(&address);
        None
    }

    /// Counts a failed authentication; past the quota, the address is blocked until its
    /// budget has refilled.
    pub fn record_failure(&self, address: IpAddr) {
        let Err(not_until) = self.failures.check_key(&address) else { return };
        let wait = not_until.wait_time_from(DefaultClock::default().now()).max(Duration::from_secs(1));
        let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        if blocked.len() >= SWEEP_AT {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
            self.failures.retain_recent();
        }
        blocked.insert(address, Instant::now() + wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_once_its_failures_exceed_the_quota_and_others_are_not() {
        let guard = AuthGuard::new(3);
        let guesser: IpAddr = "192.0.2.1".parse().unwrap();
        let bystander: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            guard.record_failure(guesser);
            assert_eq!(guard.refused(guesser), None);
        }
        guard.record_failure(guesser);
        let wait = guard.refused(guesser).expect("blocked");
        assert!(wait > Duration::from_secs(1) && wait <= Duration::from_secs(21), "{wait:?}");
        assert_eq!(guard.refused(bystander), None);
    }
}
