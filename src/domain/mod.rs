//! The pure core of the ledger: credentials, keys, events, commands, `decide` and `apply`.
//!
//! Nothing in here performs I/O. Time and randomness come in as arguments, so every rule can be
//! tested with plain values (given these events, when this command, then these events).

mod apply;
mod caller;
mod chain;
mod command;
mod credential;
mod delivery;
mod event;
mod key;
mod ledger;
mod stored_event;
mod trail;
mod webhook;

pub use apply::{apply, ApplyError};
pub use caller::Caller;
pub use chain::{canonical_json, chain_hash, ChainLink, Hash, GENESIS_HASH};
pub use command::{authorize, decide, handle, Command, DomainError, Handled, KeyMaterial, Outcome};
pub use credential::{
    Credential, CredentialName, CredentialType, ExpiresAt, GracePeriod, InvalidExpiresAt, InvalidGracePeriod,
    InvalidName, InvalidType, ServerName,
};
pub use delivery::{after_attempt, AfterAttempt, AttemptResult, DeliveryStatus, InvalidDeliveryStatus};
pub use event::{
    Actor, CredentialCreated, CredentialLocked, CredentialReplaced, Event, EventDecodeError, EventMetadata, LockReason,
    PendingEvent, CREDENTIAL_CREATED, CREDENTIAL_LOCKED, CREDENTIAL_REPLACED,
};
pub use key::{ApiKey, InvalidKey, KeyHash, KEY_PREFIX};
pub use ledger::Ledger;
pub use stored_event::{LoggedEvent, StoredEvent, UnreadableEvent};
pub use trail::{LogRules, RecordedEvent, Violation};
pub use webhook::{
    is_public_address, EventFilter, InvalidEventFilter, InvalidSecret, InvalidUrl, WebhookSecret, WebhookUrl,
    DEFAULT_WEBHOOK_EVENTS, WEBHOOK_EVENTS,
};
