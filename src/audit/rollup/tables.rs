//! What the audit store keeps of each table (files, bytes, dates), for `status`.

use std::collections::BTreeMap;

use super::RollupError;
use crate::audit::{AuditFile, AuditStore};
use crate::config::Config;

/// What the audit store holds of one table, for `status`.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct TableFiles {
    pub table: String,
    pub files: u64,
    pub bytes: u64,
    /// The oldest and newest date partitions kept (`YYYY-MM-DD`).
    pub oldest_date: String,
    pub newest_date: String,
}

/// Files, bytes and the date range kept per table (one listing of the store). Runs on its own
/// thread and runtime, so it may be called from async code too.
pub fn table_files(config: &Config) -> Result<Vec<TableFiles>, RollupError> {
    let audit = config.audit.clone();
    let listing = std::thread::spawn(move || -> Result<Vec<AuditFile>, RollupError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(RollupError::Runtime)?;
        let store = AuditStore::open(&audit)?;
        Ok(rt.block_on(store.list_files(None))?)
    });
    let files = listing.join().map_err(|_| RollupError::ListingPanicked)??;
    let mut out: BTreeMap<String, TableFiles> = BTreeMap::new();
    for f in files {
        let t = out.entry(f.table.clone()).or_insert_with(|| TableFiles {
            table: f.table.clone(),
            files: 0,
            bytes: 0,
            oldest_date: f.date.clone(),
            newest_date: f.date.clone(),
        });
        t.files += 1;
        t.bytes += f.size;
        if f.date < t.oldest_date {
            t.oldest_date = f.date.clone();
        }
        if f.date > t.newest_date {
            t.newest_date = f.date;
        }
    }
    Ok(out.into_values().collect())
}
