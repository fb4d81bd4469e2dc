//! The replica's credentials, held compactly: one fixed-size row per credential in one vector,
//! the names one after another in one text buffer, and indexes that hold row numbers (4 bytes a
//! slot) rather than keys or pointers. A credential costs 72 bytes here plus its name and its
//! index slots, against about 450 as a `Credential` behind an `Arc` in three hash maps.
//!
//! The table holds what the replica answers with (authentication, `list`, the deadlines) and what
//! `apply` decides by (hold, deadline, replacement, version), not the rest of a view row (when it
//! was created and locked, the key's display prefix): those are history, which the view and the
//! log answer.
//!
//! Rows are never removed (the log has no deletion), so a row number stays valid for the life of
//! the table. What a credential's creation fixes (its id, uuid, server, key, name and type) is
//! written once; the rest is updated in place.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::io::{self, Read, Write};

use chrono::{DateTime, Utc};
use hashbrown::HashTable;
use uuid::Uuid;

use crate::domain::{Credential, CredentialName, CredentialType, InvalidName, KeyHash};

/// An absent deadline. Instants are held as microseconds since the epoch, the ledger's precision
/// (every instant it records is truncated to the microsecond), which `i64` holds for every date
/// chrono can represent; `i64::MIN` is none of them.
const NO_INSTANT: i64 = i64::MIN;
const FLAG_API: u8 = 1;
const FLAG_HOLD: u8 = 2;

/// One credential, 72 bytes: every field is aligned to at most 4 (the deadline is kept as bytes),
/// so none is padded.
#[derive(Clone, Copy)]
struct Row {
    uuid: Uuid,
    key_hash: [u8; 32],
    /// Microseconds since the epoch, or `NO_INSTANT`, as native-endian bytes.
    expires_at: [u8; 8],
    /// Ids are handed out from 1 without gaps, one per credential: they fit as row numbers do.
    id: u32,
    /// Where the name starts in `text`.
    text: u32,
    server: u32,
    /// A stream ends at its lock, so it holds a few events (created, replaced, locked).
    version: u8,
    flags: u8,
    name_len: u16,
}

/// What the replica knows of a credential: what it answers authentication, relays and `list`
/// with, and the deadline it waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaCredential {
    pub id: i64,
    pub uuid: Uuid,
    pub server_uuid: Uuid,
    /// A `CredentialName` when it came in: answering with it needs no second check.
    pub name: String,
    pub credential_type: CredentialType,
    pub hold: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub replaced_by: Option<Uuid>,
}

impl ReplicaCredential {
    /// Whether the key is refused at `at`, by the same rule as [`Credential::held_at`].
    pub fn held_at(&self, at: DateTime<Utc>) -> bool {
        self.hold || self.expires_at.is_some_and(|deadline| deadline <= at)
    }
}

impl From<Credential> for ReplicaCredential {
    fn from(credential: Credential) -> Self {
        ReplicaCredential {
            id: credential.id,
            uuid: credential.uuid,
            server_uuid: credential.server_uuid,
            name: credential.name.into(),
            credential_type: credential.credential_type,
            hold: credential.hold,
            expires_at: credential.expires_at,
            replaced_by: credential.replaced_by,
        }
    }
}

struct Server {
    uuid: Uuid,
    /// Its credentials' rows by ascending id: the order `list` answers in.
    rows: Vec<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("the replica holds {0} bytes of names, its most")]
    TextFull(usize),
    #[error("the replica holds {0} credentials, its most")]
    Full(usize),
    #[error("credential {0} is at version {1}: a stream of that length is not the ledger's")]
    LongStream(Uuid, i32),
}

pub struct CredentialTable {
    rows: Vec<Row>,
    text: Vec<u8>,
    hasher: RandomState,
    by_uuid: HashTable<u32>,
    by_key: HashTable<u32>,
    servers: Vec<Server>,
    server_slots: HashMap<Uuid, u32>,
    /// Only credentials replaced in a rotation with a grace period have one: few.
    replaced_by: HashMap<u32, Uuid>,
}

impl Default for CredentialTable {
    fn default() -> Self {
        CredentialTable {
            rows: Vec::new(),
            text: Vec::new(),
            hasher: RandomState::new(),
            by_uuid: HashTable::new(),
            by_key: HashTable::new(),
            servers: Vec::new(),
            server_slots: HashMap::new(),
            replaced_by: HashMap::new(),
        }
    }
}

/// A credential in the table, read in place.
#[derive(Clone, Copy)]
pub struct Entry<'a> {
    table: &'a CredentialTable,
    row: &'a Row,
    slot: u32,
}

fn micros(instant: DateTime<Utc>) -> i64 {
    instant.timestamp_micros()
}

fn optional_micros(instant: Option<DateTime<Utc>>) -> i64 {
    instant.map_or(NO_INSTANT, micros)
}

fn instant(micros: i64) -> Option<DateTime<Utc>> {
    (micros != NO_INSTANT).then(|| DateTime::from_timestamp_micros(micros)).flatten()
}

impl<'a> Entry<'a> {
    pub fn uuid(&self) -> Uuid {
        self.row.uuid
    }

    #[cfg(test)]
    pub fn id(&self) -> i64 {
        self.row.id.into()
    }

    pub fn server_uuid(&self) -> Uuid {
        self.table.servers[self.row.server as usize].uuid
    }

    pub fn credential_type(&self) -> CredentialType {
        if self.row.flags & FLAG_API != 0 {
            CredentialType::Api
        } else {
            CredentialType::Smtp
        }
    }

    pub fn hold(&self) -> bool {
        self.row.flags & FLAG_HOLD != 0
    }

    fn expires_micros(&self) -> i64 {
        i64::from_ne_bytes(self.row.expires_at)
    }

    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        instant(self.expires_micros())
    }

    fn name(&self) -> &'a str {
        let start = self.row.text as usize;
        let text = &self.table.text[start..start + usize::from(self.row.name_len)];
        // Written from a `str`, whole, so the slice falls on its boundaries.
        std::str::from_utf8(text).unwrap_or_default()
    }

    /// Whether the key is refused at `at`, by the same rule as [`Credential::held_at`].
    pub fn held_at(&self, at: DateTime<Utc>) -> bool {
        let expires_at = self.expires_micros();
        self.hold() || (expires_at != NO_INSTANT && expires_at <= micros(at))
    }

    /// The deadline still to be recorded by a lock, as [`Credential::pending_deadline`].
    pub fn pending_deadline(&self) -> Option<DateTime<Utc>> {
        self.expires_at().filter(|_| !self.hold())
    }

    pub fn replaced_by(&self) -> Option<Uuid> {
        self.table.replaced_by.get(&self.slot).copied()
    }

    pub fn credential(&self) -> ReplicaCredential {
        ReplicaCredential {
            id: self.row.id.into(),
            uuid: self.row.uuid,
            server_uuid: self.server_uuid(),
            name: self.name().to_owned(),
            credential_type: self.credential_type(),
            hold: self.hold(),
            expires_at: self.expires_at(),
            replaced_by: self.replaced_by(),
        }
    }

    /// The credential as `apply` takes it, to fold the next event of its stream. The history the
    /// table does not hold is left empty (the creation instant at the epoch, no lock instant, no
    /// key prefix): `apply` decides by the rest, and the replica keeps only the rest of what it
    /// returns.
    pub fn for_fold(&self) -> Result<Credential, InvalidName> {
        Ok(Credential {
            id: self.row.id.into(),
            uuid: self.row.uuid,
            server_uuid: self.server_uuid(),
            // Parsed when it came in, and parsing again changes nothing (it trims, then checks).
            name: CredentialName::parse(self.name())?,
            credential_type: self.credential_type(),
            hold: self.hold(),
            key_hash: KeyHash(self.row.key_hash),
            key_prefix: String::new(),
            created_at: DateTime::UNIX_EPOCH,
            locked_at: None,
            expires_at: self.expires_at(),
            replaced_by: self.replaced_by(),
            version: self.row.version.into(),
        })
    }
}

impl CredentialTable {
    /// Makes room for `credentials` more, so that loading a view allocates each structure once.
    pub fn reserve(&mut self, credentials: usize) {
        let CredentialTable { rows, text, hasher, by_uuid, by_key, .. } = self;
        rows.reserve_exact(credentials);
        text.reserve(credentials * 16);
        by_uuid.reserve(credentials, |slot| hasher.hash_one(rows[*slot as usize].uuid));
        by_key.reserve(credentials, |slot| hasher.hash_one(rows[*slot as usize].key_hash));
    }

    /// Gives back what growing by doubling left spare; after a load, before serving.
    pub fn shrink_to_fit(&mut self) {
        self.rows.shrink_to_fit();
        self.text.shrink_to_fit();
        for server in &mut self.servers {
            server.rows.shrink_to_fit();
        }
    }

    pub fn credential_count(&self) -> usize {
        self.rows.len()
    }

    /// The bytes the table holds on the heap (its own accounting, not the allocator's).
    pub fn heap_bytes(&self) -> usize {
        self.rows.capacity() * size_of::<Row>()
            + self.text.capacity()
            + self.by_uuid.allocation_size()
            + self.by_key.allocation_size()
            + self.servers.iter().map(|server| server.rows.capacity() * 4).sum::<usize>()
            + self.servers.capacity() * size_of::<Server>()
            + self.server_slots.capacity() * (size_of::<(Uuid, u32)>() + 1)
            + self.replaced_by.capacity() * (size_of::<(u32, Uuid)>() + 1)
    }

    fn entry(&self, slot: u32) -> Entry<'_> {
        Entry { table: self, row: &self.rows[slot as usize], slot }
    }

    pub fn get(&self, uuid: &Uuid) -> Option<Entry<'_>> {
        let hash = self.hasher.hash_one(uuid);
        let slot = *self.by_uuid.find(hash, |slot| self.rows[*slot as usize].uuid == *uuid)?;
        Some(self.entry(slot))
    }

    pub fn by_key(&self, key_hash: &KeyHash) -> Option<Entry<'_>> {
        let hash = self.hasher.hash_one(key_hash.0);
        let slot = *self.by_key.find(hash, |slot| self.rows[*slot as usize].key_hash == key_hash.0)?;
        Some(self.entry(slot))
    }

    /// How many credentials a server holds, held ones included.
    pub fn server_len(&self, server_uuid: &Uuid) -> usize {
        self.server_slots.get(server_uuid).map_or(0, |server| self.servers[*server as usize].rows.len())
    }

    /// Up to `limit` of a server's credentials with an id above `after`, by ascending id.
    pub fn server_page(&self, server_uuid: &Uuid, after: Option<i64>, limit: usize) -> impl Iterator<Item = Entry<'_>> {
        let rows =
            self.server_slots.get(server_uuid).map_or(&[][..], |server| &self.servers[*server as usize].rows[..]);
        let start =
            after.map_or(0, |after| rows.partition_point(|slot| i64::from(self.rows[*slot as usize].id) <= after));
        rows[start..].iter().take(limit).map(|slot| self.entry(*slot))
    }

    /// The servers that hold credentials here.
    #[cfg(test)]
    pub fn servers(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.servers.iter().map(|server| server.uuid)
    }

    /// Adds a credential, or updates the one with its uuid in place.
    pub fn insert(&mut self, credential: &Credential) -> Result<(), TableError> {
        match self.get(&credential.uuid).map(|entry| entry.slot) {
            Some(slot) => self.update(slot, credential),
            None => self.add(credential),
        }
    }

    fn update(&mut self, slot: u32, credential: &Credential) -> Result<(), TableError> {
        let version = version(credential)?;
        let row = &mut self.rows[slot as usize];
        row.flags = flags(credential);
        row.expires_at = optional_micros(credential.expires_at).to_ne_bytes();
        row.version = version;
        match credential.replaced_by {
            Some(replacement) => self.replaced_by.insert(slot, replacement),
            None => self.replaced_by.remove(&slot),
        };
        Ok(())
    }

    fn add(&mut self, credential: &Credential) -> Result<(), TableError> {
        let full = || TableError::Full(self.rows.len());
        let slot = u32::try_from(self.rows.len()).map_err(|_| full())?;
        let id = u32::try_from(credential.id).map_err(|_| full())?;
        let name = credential.name.as_str();
        // A name is at most 255 characters of at most 4 bytes.
        let name_len = u16::try_from(name.len()).map_err(|_| TableError::TextFull(name.len()))?;
        let text = u32::try_from(self.text.len() + name.len()).map_err(|_| TableError::TextFull(self.text.len()))?
            - u32::from(name_len);
        let server = self.server_slot(credential.server_uuid)?;

        self.text.extend_from_slice(name.as_bytes());
        self.rows.push(Row {
            uuid: credential.uuid,
            key_hash: credential.key_hash.0,
            expires_at: optional_micros(credential.expires_at).to_ne_bytes(),
            id,
            text,
            server,
            version: version(credential)?,
            name_len,
            flags: flags(credential),
        });
        if let Some(replacement) = credential.replaced_by {
            self.replaced_by.insert(slot, replacement);
        }
        let CredentialTable { rows, hasher, by_uuid, by_key, servers, .. } = self;
        by_uuid
            .insert_unique(hasher.hash_one(credential.uuid), slot, |slot| hasher.hash_one(rows[*slot as usize].uuid));
        by_key.insert_unique(hasher.hash_one(credential.key_hash.0), slot, |slot| {
            hasher.hash_one(rows[*slot as usize].key_hash)
        });
        let listed = &mut servers[server as usize].rows;
        // Ids come from one sequence, so a new credential nearly always goes last; another
        // instance's batch may commit before one that took lower ids.
        match listed.last() {
            Some(last) if rows[*last as usize].id > id => {
                let at = listed.partition_point(|slot| rows[*slot as usize].id < id);
                listed.insert(at, slot);
            }
            _ => listed.push(slot),
        }
        Ok(())
    }

    fn server_slot(&mut self, server_uuid: Uuid) -> Result<u32, TableError> {
        if let Some(slot) = self.server_slots.get(&server_uuid) {
            return Ok(*slot);
        }
        let slot = u32::try_from(self.servers.len()).map_err(|_| TableError::Full(self.servers.len()))?;
        self.servers.push(Server { uuid: server_uuid, rows: Vec::new() });
        self.server_slots.insert(server_uuid, slot);
        Ok(slot)
    }
}

/// The table as bytes (`write_to`) and back (`read_from`), for the replica's snapshot file: the
/// rows, names, servers and replacements; the indexes are rebuilt from the rows, which is
/// cheaper than reading them. Little-endian throughout.
impl CredentialTable {
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        for count in [self.rows.len(), self.text.len(), self.servers.len(), self.replaced_by.len()] {
            out.write_all(&(count as u64).to_le_bytes())?;
        }
        for server in &self.servers {
            out.write_all(server.uuid.as_bytes())?;
        }
        for row in &self.rows {
            out.write_all(row.uuid.as_bytes())?;
            out.write_all(&row.key_hash)?;
            out.write_all(&i64::from_ne_bytes(row.expires_at).to_le_bytes())?;
            for number in [row.id, row.text, row.server] {
                out.write_all(&number.to_le_bytes())?;
            }
            out.write_all(&[row.version, row.flags])?;
            out.write_all(&row.name_len.to_le_bytes())?;
        }
        out.write_all(&self.text)?;
        for (slot, replacement) in &self.replaced_by {
            out.write_all(&slot.to_le_bytes())?;
            out.write_all(replacement.as_bytes())?;
        }
        Ok(())
    }

    /// Reads what `write_to` wrote, checking that every row number, name and server it refers
    /// to is in the table; the indexes and each server's order by id are rebuilt.
    pub fn read_from(input: &mut impl Read) -> io::Result<CredentialTable> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("replica snapshot: {what}"));
        let mut counts = [0usize; 4];
        for count in &mut counts {
            *count = usize::try_from(u64::from_le_bytes(read_array(input)?)).map_err(|_| invalid("a count"))?;
        }
        let [rows, text, servers, replaced] = counts;
        if rows > u32::MAX as usize || servers > u32::MAX as usize || text > u32::MAX as usize {
            return Err(invalid("more than a table holds"));
        }
        let mut table = CredentialTable::default();
        table.servers.reserve_exact(servers);
        for slot in 0..servers {
            let uuid = Uuid::from_bytes(read_array(input)?);
            table.servers.push(Server { uuid, rows: Vec::new() });
            table.server_slots.insert(uuid, slot as u32);
        }
        table.rows.reserve_exact(rows);
        for _ in 0..rows {
            let row = Row {
                uuid: Uuid::from_bytes(read_array(input)?),
                key_hash: read_array(input)?,
                expires_at: i64::from_le_bytes(read_array(input)?).to_ne_bytes(),
                id: u32::from_le_bytes(read_array(input)?),
                text: u32::from_le_bytes(read_array(input)?),
                server: u32::from_le_bytes(read_array(input)?),
                version: u8::from_le_bytes(read_array(input)?),
                flags: u8::from_le_bytes(read_array(input)?),
                name_len: u16::from_le_bytes(read_array(input)?),
            };
            if row.server as usize >= servers || row.text as usize + usize::from(row.name_len) > text {
                return Err(invalid("a row refers to what is not there"));
            }
            table.rows.push(row);
        }
        table.text = vec![0; text];
        input.read_exact(&mut table.text)?;
        for row in &table.rows {
            let name = &table.text[row.text as usize..row.text as usize + usize::from(row.name_len)];
            if std::str::from_utf8(name).is_err() {
                return Err(invalid("a name is not text"));
            }
        }
        for _ in 0..replaced {
            let slot = u32::from_le_bytes(read_array(input)?);
            if slot as usize >= rows {
                return Err(invalid("a replacement of a row that is not there"));
            }
            table.replaced_by.insert(slot, Uuid::from_bytes(read_array(input)?));
        }
        table.index()?;
        Ok(table)
    }

    /// Builds the indexes and the servers' lists from the rows.
    fn index(&mut self) -> io::Result<()> {
        let CredentialTable { rows, hasher, by_uuid, by_key, servers, .. } = self;
        by_uuid.reserve(rows.len(), |slot| hasher.hash_one(rows[*slot as usize].uuid));
        by_key.reserve(rows.len(), |slot| hasher.hash_one(rows[*slot as usize].key_hash));
        for (slot, row) in rows.iter().enumerate() {
            let slot = slot as u32;
            let uuid_hash = hasher.hash_one(row.uuid);
            if by_uuid.find(uuid_hash, |other| rows[*other as usize].uuid == row.uuid).is_some() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "replica snapshot: a credential twice"));
            }
            by_uuid.insert_unique(uuid_hash, slot, |slot| hasher.hash_one(rows[*slot as usize].uuid));
            by_key.insert_unique(hasher.hash_one(row.key_hash), slot, |slot| {
                hasher.hash_one(rows[*slot as usize].key_hash)
            });
            servers[row.server as usize].rows.push(slot);
        }
        for server in servers.iter_mut() {
            if !server.rows.is_sorted_by_key(|slot| rows[*slot as usize].id) {
                server.rows.sort_unstable_by_key(|slot| rows[*slot as usize].id);
            }
            server.rows.shrink_to_fit();
        }
        Ok(())
    }

    /// Every credential, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'_>> {
        (0..self.rows.len() as u32).map(|slot| self.entry(slot))
    }
}

fn read_array<const N: usize>(input: &mut impl Read) -> io::Result<[u8; N]> {
    let mut bytes = [0; N];
    input.read_exact(&mut bytes)?;
    Ok(bytes)
}

fn version(credential: &Credential) -> Result<u8, TableError> {
    u8::try_from(credential.version).map_err(|_| TableError::LongStream(credential.uuid, credential.version))
}

fn flags(credential: &Credential) -> u8 {
    let api = if credential.credential_type == CredentialType::Api { FLAG_API } else { 0 };
    let hold = if credential.hold { FLAG_HOLD } else { 0 };
    api | hold
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ApiKey;

    fn credential(id: i64, server_uuid: Uuid, name: &str) -> Credential {
        let key = ApiKey::generate(&mut rand::thread_rng());
        Credential {
            id,
            uuid: Uuid::new_v4(),
            server_uuid,
            name: CredentialName::parse(name).unwrap(),
            credential_type: CredentialType::Api,
            hold: false,
            key_hash: key.hash(),
            key_prefix: key.display_prefix().to_owned(),
            created_at: DateTime::from_timestamp_micros(1_796_000_000_123_456).unwrap(),
            locked_at: None,
            expires_at: None,
            replaced_by: None,
            version: 1,
        }
    }

    #[test]
    fn a_row_is_72_bytes() {
        assert_eq!(size_of::<Row>(), 72);
    }

    #[test]
    fn a_credential_comes_out_as_it_went_in_and_updates_in_place() {
        let mut table = CredentialTable::default();
        let server = Uuid::new_v4();
        let first = credential(1, server, "Ünïcode name ✓");
        let second = credential(2, server, "b");
        table.insert(&first).unwrap();
        table.insert(&second).unwrap();
        assert_eq!(table.get(&first.uuid).unwrap().credential(), first.clone().into());
        assert_eq!(table.by_key(&second.key_hash).unwrap().credential(), second.clone().into());

        let held = Credential {
            hold: true,
            locked_at: Some(first.created_at),
            expires_at: Some(DateTime::from_timestamp_micros(1_900_000_000_000_001).unwrap()),
            replaced_by: Some(second.uuid),
            version: 3,
            ..first.clone()
        };
        table.insert(&held).unwrap();
        assert_eq!(table.credential_count(), 2);
        assert_eq!(table.get(&first.uuid).unwrap().credential(), held.clone().into());
        assert_eq!(table.by_key(&first.key_hash).unwrap().credential(), held.clone().into());
        let folded = table.get(&first.uuid).unwrap().for_fold().unwrap();
        assert_eq!(
            (folded.hold, folded.expires_at, folded.replaced_by, folded.version, folded.key_hash),
            (held.hold, held.expires_at, held.replaced_by, held.version, held.key_hash),
            "what apply decides by"
        );
        assert!(table.get(&Uuid::new_v4()).is_none());
    }

    #[test]
    fn a_table_read_back_from_its_bytes_answers_as_the_table() {
        let mut table = CredentialTable::default();
        let (server, other) = (Uuid::new_v4(), Uuid::new_v4());
        let mut credentials = Vec::new();
        for id in [3, 1, 7, 5, 2, 6, 4, 8] {
            let server = if id == 8 { other } else { server };
            let mut credential = credential(id, server, &format!("Crédential {id}"));
            credential.hold = id % 3 == 0;
            credential.credential_type = if id % 2 == 0 { CredentialType::Smtp } else { CredentialType::Api };
            credential.expires_at =
                (id % 4 == 1).then(|| DateTime::from_timestamp_micros(1_800_000_000_000_000 + id).unwrap());
            credential.replaced_by = (id == 5).then(Uuid::new_v4);
            credential.version = if id == 5 { 2 } else { 1 };
            table.insert(&credential).unwrap();
            credentials.push(credential);
        }
        let mut bytes = Vec::new();
        table.write_to(&mut bytes).unwrap();
        let read = CredentialTable::read_from(&mut bytes.as_slice()).unwrap();
        for credential in &credentials {
            let expected = ReplicaCredential::from(credential.clone());
            assert_eq!(read.get(&credential.uuid).unwrap().credential(), expected);
            assert_eq!(read.by_key(&credential.key_hash).unwrap().credential(), expected);
            assert_eq!(read.get(&credential.uuid).unwrap().for_fold().unwrap().version, credential.version);
        }
        let page = |table: &CredentialTable, server| {
            table.server_page(&server, None, 100).map(|e| e.credential()).collect::<Vec<_>>()
        };
        assert_eq!(page(&read, server), page(&table, server));
        assert_eq!(page(&read, other), page(&table, other));
        assert_eq!(read.entries().count(), 8);

        for cut in [0, 1, 40, bytes.len() / 2, bytes.len() - 1] {
            assert!(CredentialTable::read_from(&mut &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut doubled = table;
        doubled.rows.push(doubled.rows[0]);
        let mut bytes = Vec::new();
        doubled.write_to(&mut bytes).unwrap();
        assert!(CredentialTable::read_from(&mut bytes.as_slice()).is_err(), "a credential twice");
    }

    #[test]
    fn a_server_page_is_in_ascending_id_order_whatever_the_order_of_arrival() {
        let mut table = CredentialTable::default();
        let (server, other) = (Uuid::new_v4(), Uuid::new_v4());
        for id in [3, 1, 7, 5, 2, 6, 4] {
            table.insert(&credential(id, server, &format!("c{id}"))).unwrap();
        }
        table.insert(&credential(8, other, "other")).unwrap();
        let ids = |after, limit| table.server_page(&server, after, limit).map(|entry| entry.id()).collect::<Vec<_>>();
        assert_eq!(ids(None, 100), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(ids(Some(2), 3), [3, 4, 5]);
        assert_eq!(ids(Some(7), 3), Vec::<i64>::new());
        assert_eq!(table.server_len(&server), 7);
        assert_eq!(table.server_len(&other), 1);
        assert_eq!(table.server_len(&Uuid::new_v4()), 0);
    }
}
