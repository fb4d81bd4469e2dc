//! A ledger file for tests: no server needed.

use std::path::PathBuf;

use uuid::Uuid;

use super::SqliteStore;
use crate::store::DatabaseSettings;

/// A ledger file of its own, removed with its write-ahead log when dropped.
pub(crate) struct TempLedger {
    pub(crate) path: PathBuf,
}

impl TempLedger {
    pub(crate) fn new() -> TempLedger {
        TempLedger { path: std::env::temp_dir().join(format!("credential-ledger-test-{}.db", Uuid::new_v4())) }
    }

    pub(crate) fn settings(&self) -> DatabaseSettings {
        DatabaseSettings::new(format!("sqlite://{}", self.path.display()))
    }

    pub(crate) async fn store(&self) -> SqliteStore {
        self.store_with(self.settings()).await
    }

    pub(crate) async fn store_with(&self, settings: DatabaseSettings) -> SqliteStore {
        let store = SqliteStore::open(&settings).await.unwrap();
        store.prepare().await.unwrap();
        store
    }
}

impl Drop for TempLedger {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}
