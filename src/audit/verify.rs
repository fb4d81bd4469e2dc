//! Verification of the chain: positions gap-free, every `prev_hash` the previous `hash`, every
//! hash recomputed from the event, stream versions consecutive, time never going backwards,
//! and every event one that `decide` could have produced at its position (the domain's
//! `LogRules`: no actor acting after its own lock, no second lock, rotations in pairs, ids in
//! order, one server per credential).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{ChainGap, ExportRecord, NotCovered};
use crate::domain::{Hash, LogRules, RecordedEvent, StoredEvent, GENESIS_HASH};

/// A head an auditor recorded earlier: `POSITION:HASH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedHead {
    pub position: i64,
    pub hash: Hash,
}

impl std::str::FromStr for ExpectedHead {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (position, hash) = text.split_once(':').ok_or("expected POSITION:HASH")?;
        let position = position.parse().map_err(|_| "POSITION must be a number")?;
        let hash = parse_hash(hash).ok_or("HASH must be 64 hex digits")?;
        Ok(ExpectedHead { position, hash })
    }
}

/// The end of a verified chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedHead {
    pub position: i64,
    pub hash: String,
    /// Events checked in full (their hashes recomputed).
    pub events: u64,
    /// Positions taken on trust from gap records (a one-server export).
    pub linked_only: u64,
}

/// The first thing wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("position {position}: {problem}")]
pub struct Failure {
    pub position: i64,
    pub problem: String,
}

pub struct Verifier {
    next_position: i64,
    prev_hash: Hash,
    last_recorded_at: Option<DateTime<Utc>>,
    versions: HashMap<uuid::Uuid, i32>,
    rules: LogRules,
    expect_head: Option<ExpectedHead>,
    events: u64,
    linked_only: u64,
    not_covered: NotCovered,
}

impl Verifier {
    pub fn new(expect_head: Option<ExpectedHead>) -> Self {
        Verifier {
            next_position: 1,
            prev_hash: GENESIS_HASH,
            last_recorded_at: None,
            versions: HashMap::new(),
            rules: LogRules::new(),
            expect_head,
            events: 0,
            linked_only: 0,
            not_covered: NotCovered::default(),
        }
    }

    /// The records pushed so far that the chain does not cover (a backup's servers and endpoints).
    pub fn not_covered(&self) -> NotCovered {
        self.not_covered
    }

    pub fn push(&mut self, record: &ExportRecord) -> Result<(), Failure> {
        match record {
            ExportRecord::Event(event) => self.push_event(event)?,
            ExportRecord::Gap(gap) => self.push_gap(gap)?,
            // Servers and endpoints of a backup: the chain does not cover them.
            ExportRecord::Server(_) | ExportRecord::WebhookEndpoint(_) => {
                self.not_covered.count(record);
                return Ok(());
            }
        }
        if let (Some(expected), Some(end)) = (self.expect_head, record.last_position()) {
            let covers = match record {
                ExportRecord::Event(_) => end == expected.position,
                ExportRecord::Gap(gap) => (gap.from_position..=gap.to_position).contains(&expected.position),
                ExportRecord::Server(_) | ExportRecord::WebhookEndpoint(_) => false,
            };
            if covers && (end != expected.position || self.prev_hash != expected.hash) {
                let problem = if end == expected.position {
                    "the hash differs from the expected head's: the ledger was rewritten up to here"
                } else {
                    "the expected head lies inside a gap of this export and cannot be checked"
                };
                return Err(self.fail(expected.position, problem));
            }
        }
        Ok(())
    }

    /// The verified head, once every record was pushed.
    pub fn finish(self) -> Result<VerifiedHead, Failure> {
        let last = self.next_position - 1;
        self.rules.finish().map_err(|violation| self.fail(last + 1, &violation.to_string()))?;
        if let Some(expected) = self.expect_head {
            if expected.position > last {
                return Err(Failure {
                    position: last + 1,
                    problem: format!(
                        "the ledger ends at position {last}, before the expected head at position {}: it was truncated",
                        expected.position
                    ),
                });
            }
        }
        Ok(VerifiedHead {
            position: last,
            hash: hex::encode(self.prev_hash),
            events: self.events,
            linked_only: self.linked_only,
        })
    }

    fn push_event(&mut self, event: &StoredEvent) -> Result<(), Failure> {
        let position = event.position;
        if position != self.next_position {
            return Err(self.missing(position));
        }
        let prev_hash: Hash =
            event.prev_hash.as_slice().try_into().map_err(|_| self.fail(position, "prev_hash is not 32 bytes"))?;
        if prev_hash != self.prev_hash {
            return Err(self.fail(position, "prev_hash does not match the hash of the previous position"));
        }
        let hash = event.chain_hash(&prev_hash).map_err(|unreadable| self.fail(position, &unreadable.reason))?;
        if hash.as_slice() != event.hash {
            return Err(self.fail(position, "the hash does not match the event's content: the event was changed"));
        }
        let expected_version = self.versions.get(&event.stream_id).map_or(1, |version| version + 1);
        if event.stream_version != expected_version {
            return Err(self.fail(
                position,
                &format!("stream version {} where {expected_version} was expected", event.stream_version),
            ));
        }
        if self.last_recorded_at.is_some_and(|last| event.recorded_at < last) {
            return Err(self.fail(position, "recorded_at is earlier than the previous event's"));
        }
        let decoded = event.logged().decode().map_err(|unreadable| self.fail(position, &unreadable.reason))?;
        let actor = event.actor().ok_or_else(|| self.fail(position, "metadata.actor is missing or unreadable"))?;
        self.rules
            .record(RecordedEvent {
                stream_id: event.stream_id,
                stream_version: event.stream_version,
                server_uuid: event.server_uuid,
                recorded_at: event.recorded_at,
                actor: &actor,
                event: &decoded,
            })
            .map_err(|violation| Failure { position, problem: violation.to_string() })?;
        self.versions.insert(event.stream_id, event.stream_version);
        self.last_recorded_at = Some(event.recorded_at);
        self.prev_hash = hash;
        self.next_position = position + 1;
        self.events += 1;
        Ok(())
    }

    fn push_gap(&mut self, gap: &ChainGap) -> Result<(), Failure> {
        if gap.from_position != self.next_position || gap.to_position < gap.from_position {
            return Err(self.missing(gap.from_position));
        }
        let prev_hash =
            parse_hash(&gap.prev_hash).ok_or_else(|| self.fail(gap.from_position, "prev_hash is not 64 hex digits"))?;
        if prev_hash != self.prev_hash {
            return Err(self.fail(gap.from_position, "prev_hash does not match the hash of the previous position"));
        }
        self.prev_hash =
            parse_hash(&gap.hash).ok_or_else(|| self.fail(gap.to_position, "hash is not 64 hex digits"))?;
        self.rules.skip();
        self.linked_only += (gap.to_position - gap.from_position + 1) as u64;
        self.next_position = gap.to_position + 1;
        Ok(())
    }

    fn missing(&self, found: i64) -> Failure {
        Failure {
            position: self.next_position,
            problem: format!("position {} is missing (the next record is at position {found})", self.next_position),
        }
    }

    fn fail(&self, position: i64, problem: &str) -> Failure {
        Failure { position, problem: problem.to_owned() }
    }
}

fn parse_hash(text: &str) -> Option<Hash> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(text, &mut hash).ok()?;
    Some(hash)
}
