//! Reading an export for `import`: the whole file, verified offline before any database is
//! opened, so that an import refused for its input leaves nothing behind.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;

use uuid::Uuid;

use super::{ExpectedHead, ExportRecord, Failure, VerifiedHead, Verifier};
use crate::domain::{Ledger, StoredEvent};
use crate::store::{ImportBatch, StoredEndpoint, StoredServer};

/// An export read whole and verified: what `Store::import` writes.
pub struct ImportFile {
    pub servers: Vec<StoredServer>,
    pub endpoints: Vec<StoredEndpoint>,
    pub events: Vec<StoredEvent>,
    /// The credentials the events fold into, as the view will hold them.
    pub ledger: Ledger,
    /// The head `verify --file` reports for the same file.
    pub head: VerifiedHead,
}

impl ImportFile {
    pub fn batch(&self) -> ImportBatch<'_> {
        ImportBatch { servers: &self.servers, endpoints: &self.endpoints, events: &self.events, ledger: &self.ledger }
    }
}

/// Why a file cannot be imported. None of these names a secret.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("line {line} is not an export record ({reason})")]
    NotARecord { line: usize, reason: String },
    #[error("the file holds no records")]
    Empty,
    #[error("{0}")]
    Verification(#[from] Failure),
    #[error(
        "positions {from}-{to} are only chain links (a one-server export): import needs the whole ledger, \
         from `export --backup`"
    )]
    Partial { from: i64, to: i64 },
    #[error(
        "not a --backup export: it has events but no server records (export the ledger again with `export --backup`)"
    )]
    NotABackup,
    #[error("server {0} has events or webhook endpoints but no server record")]
    MissingServer(Uuid),
    #[error("two records for {what} {uuid}")]
    Duplicate { what: &'static str, uuid: Uuid },
}

/// Reads the export at `path` whole and verifies it as `verify --file` does (positions, links,
/// hashes, time, the log rules; `expect_head` if given), folds its events into the view, and
/// checks that it is a whole-ledger backup: no gap records, one server record for every server
/// its events and endpoints name.
/// `read` hears how many bytes each line took, as it is read.
pub fn read_import(
    path: &Path,
    expect_head: Option<ExpectedHead>,
    mut read: impl FnMut(u64),
) -> Result<ImportFile, ImportError> {
    let unreadable =
        |error: std::io::Error| ImportError::Unreadable { path: path.display().to_string(), reason: error.to_string() };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut verifier = Verifier::new(expect_head);
    let mut ledger = Ledger::new(0);
    let (mut servers, mut endpoints, mut events) = (Vec::new(), Vec::new(), Vec::new());
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(unreadable)?;
        read(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        let record = parse(&line, index + 1)?;
        verifier.push(&record)?;
        match record {
            ExportRecord::Event(event) => {
                ledger
                    .fold(event.logged())
                    .map_err(|unreadable| Failure { position: unreadable.position, problem: unreadable.reason })?;
                events.push(event);
            }
            ExportRecord::Gap(gap) => {
                return Err(ImportError::Partial { from: gap.from_position, to: gap.to_position })
            }
            ExportRecord::Server(server) => servers.push(server),
            ExportRecord::WebhookEndpoint(endpoint) => endpoints.push(endpoint),
        }
    }
    if events.is_empty() && servers.is_empty() && endpoints.is_empty() {
        return Err(ImportError::Empty);
    }
    let head = verifier.finish()?;
    let mut known = HashSet::new();
    for server in &servers {
        if !known.insert(server.uuid) {
            return Err(ImportError::Duplicate { what: "server", uuid: server.uuid });
        }
    }
    if servers.is_empty() && !events.is_empty() {
        return Err(ImportError::NotABackup);
    }
    let mut endpoint_uuids = HashSet::new();
    for endpoint in &endpoints {
        if !endpoint_uuids.insert(endpoint.uuid) {
            return Err(ImportError::Duplicate { what: "webhook endpoint", uuid: endpoint.uuid });
        }
    }
    let named =
        events.iter().map(|event| event.server_uuid).chain(endpoints.iter().map(|endpoint| endpoint.server_uuid));
    if let Some(missing) = named.into_iter().find(|uuid| !known.contains(uuid)) {
        return Err(ImportError::MissingServer(missing));
    }
    Ok(ImportFile { servers, endpoints, events, ledger, head })
}

/// One line as a record. A line that holds a secret is not quoted in the error: serde's message
/// can repeat a value.
fn parse(line: &str, number: usize) -> Result<ExportRecord, ImportError> {
    serde_json::from_str(line).map_err(|error| ImportError::NotARecord {
        line: number,
        reason: if line.contains("\"secret\"") {
            format!("unreadable at column {}", error.column())
        } else {
            error.to_string()
        },
    })
}
