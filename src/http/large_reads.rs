//! A bound on each server's share of the expensive reads (a list of over ten thousand credentials,
//! any `as_of`), so that one tenant flooding them cannot take the cores and memory the others
//! need: beyond its share a server gets 429 `server_busy` at once, and other servers are not
//! slowed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// Lists of more credentials than this (about 1.3 MB of JSON) count as large reads and are
/// streamed; smaller ones are built whole, which is faster for them and bounded anyway.
pub const LARGE_LIST: usize = 10_000;

type Shares = Arc<Mutex<HashMap<Uuid, Arc<Semaphore>>>>;

#[derive(Debug)]
pub struct LargeReads {
    per_server: usize,
    shares: Shares,
}

/// One running large read; its share is given back when it is dropped (when the answer has been
/// streamed to the end, or the client went away).
#[derive(Debug)]
pub struct LargeRead {
    permit: Option<OwnedSemaphorePermit>,
    server_uuid: Uuid,
    shares: Shares,
}

impl LargeReads {
    pub fn new(per_server: usize) -> Self {
        LargeReads { per_server: per_server.max(1), shares: Arc::default() }
    }

    /// A share for one more large read of `server_uuid`, if it has one free.
    pub fn begin(&self, server_uuid: Uuid) -> Option<LargeRead> {
        let semaphore = {
            let mut shares = self.shares.lock().unwrap_or_else(PoisonError::into_inner);
            shares.entry(server_uuid).or_insert_with(|| Arc::new(Semaphore::new(self.per_server))).clone()
        };
        let permit = semaphore.try_acquire_owned().ok()?;
        Some(LargeRead { permit: Some(permit), server_uuid, shares: self.shares.clone() })
    }
}

impl Drop for LargeRead {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut shares = self.shares.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget a server with no read running, so that the table does not grow with every
        // server that ever listed.
        if let Some(semaphore) = shares.get(&self.server_uuid) {
            if Arc::strong_count(semaphore) == 1 && semaphore.available_permits() > 0 {
                shares.remove(&self.server_uuid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_server_has_its_own_share_and_gets_it_back() {
        let reads = LargeReads::new(2);
        let (busy, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let first = reads.begin(busy).unwrap();
        let second = reads.begin(busy).unwrap();
        assert!(reads.begin(busy).is_none(), "a third large read of one server waits its turn");
        assert!(reads.begin(other).is_some(), "another server is not affected");
        drop(first);
        assert!(reads.begin(busy).is_some());
        drop(second);
        assert!(reads.shares.lock().unwrap().is_empty(), "idle servers are forgotten");
    }
}
