//! Retention (`audit.retain_days`): deleting expired date partitions; and what the store
//! keeps of each table, for `status`.

use std::collections::BTreeMap;

use super::{delete, RollupError, Summary};
use crate::audit::{AuditFile, AuditStore};
use crate::config::Config;

/// Deletes the files of an expired date partition (`audit.retain_days`), and its directory on
/// a file system.
pub async fn expire(
    store: &AuditStore,
    files: &[AuditFile],
    summary: &mut Summary,
) -> Result<(), RollupError> {
    for f in files {
        delete(store, f).await?;
        summary.expired_files += 1;
        summary.expired_bytes += f.size;
    }
    summary.expired_partitions += 1;
    if let (Some(root), Some(f)) = (&store.local_root, files.first()) {
        // An empty `date=` directory would linger on a file system (S3 has no directories).
        let mut dir = root.clone();
        let parts: Vec<_> = f
            .location
            .parts()
            .skip(store.prefix.parts().count())
            .collect();
        for p in &parts[..parts.len().saturating_sub(1)] {
            dir.push(p.as_ref());
        }
        let _ = std::fs::remove_dir(&dir);
    }
    Ok(())
}

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
