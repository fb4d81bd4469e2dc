//! The replica as a file: written when the service stops, read when it starts, so that a large
//! ledger is ready in seconds. Loading the view costs a database row per credential (about 3 s
//! per million on PostgreSQL, 10 s on the embedded ledger, BENCHMARKS.md "Scale"); this file is
//! read at the disk's speed, and only the indexes are rebuilt.
//!
//! The file is trusted only as far as the log vouches for it. It names the log position it
//! reflects and the chain hash of the event there; the replica takes it only if the log holds an
//! event with that hash at that position (the chain covers everything before it), then applies
//! the events after it with the same `apply` as ever. A file of another ledger, of a log that was
//! restored to an earlier point, torn, or changed by a byte (a CRC-32 covers it all) is set
//! aside and the view is loaded instead. It holds key hashes and names, as the database does:
//! it is written readable by its owner only.
//!
//! Layout: `MAGIC`, the position (i64), the event hash (32 bytes), the table
//! (`CredentialTable::write_to`), then the CRC-32 of everything before it; little-endian.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::table::CredentialTable;
use crate::domain::Hash;

const MAGIC: &[u8; 8] = b"CLREPL01";

pub struct Snapshot {
    pub position: i64,
    pub event_hash: Hash,
    pub table: CredentialTable,
}

/// Writes `table` as it stands at `position` to `path`, whole or not at all: into a file beside
/// it, synced, then renamed over it.
pub fn write(path: &Path, position: i64, event_hash: &Hash, table: &CredentialTable) -> io::Result<()> {
    let partial = partial_path(path);
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&partial)?;
    let written = (|| {
        let mut out = Checksummed { inner: BufWriter::with_capacity(1 << 20, file), crc: crc32fast::Hasher::new() };
        out.write_all(MAGIC)?;
        out.write_all(&position.to_le_bytes())?;
        out.write_all(event_hash)?;
        table.write_to(&mut out)?;
        let crc = out.crc.clone().finalize();
        let mut file = out.inner.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.write_all(&crc.to_le_bytes())?;
        file.sync_all()
    })();
    match written {
        Ok(()) => std::fs::rename(&partial, path),
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            Err(error)
        }
    }
}

/// Reads a snapshot, checking its CRC; `Ok(None)` when there is no file.
pub fn read(path: &Path) -> io::Result<Option<Snapshot>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut input = Checksummed { inner: BufReader::with_capacity(1 << 20, file), crc: crc32fast::Hasher::new() };
    let mut magic = [0; 8];
    input.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a replica snapshot of this version"));
    }
    let mut position = [0; 8];
    input.read_exact(&mut position)?;
    let mut event_hash = [0; 32];
    input.read_exact(&mut event_hash)?;
    let table = CredentialTable::read_from(&mut input)?;
    let computed = input.crc.clone().finalize();
    let mut stored = [0; 4];
    input.inner.read_exact(&mut stored)?;
    if u32::from_le_bytes(stored) != computed {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "replica snapshot: its checksum does not match"));
    }
    if input.inner.read(&mut [0])? != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "replica snapshot: bytes after its end"));
    }
    Ok(Some(Snapshot { position: i64::from_le_bytes(position), event_hash, table }))
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial-{}", std::process::id()));
    path.with_file_name(name)
}

/// Passes bytes through, keeping the CRC-32 of all of them.
struct Checksummed<T> {
    inner: T,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.crc.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Checksummed<R> {
    fn read(&mut self, bytes: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(bytes)?;
        self.crc.update(&bytes[..read]);
        Ok(read)
    }
}
