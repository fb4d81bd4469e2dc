//! Who is calling: an API credential that authenticated, and its server.

use uuid::Uuid;

use super::event::Actor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub credential_uuid: Uuid,
    pub server_uuid: Uuid,
}

impl Caller {
    /// The caller as the events it causes record it.
    pub fn actor(&self) -> Actor {
        Actor::Credential { uuid: self.credential_uuid }
    }
}
