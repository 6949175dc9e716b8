//! The last `db-sync verify` of each table (`verify-state.json`), which `status` shows.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{read_json, write_atomic, StateError};

pub const FILE: &str = "verify-state.json";

/// The outcome of the last verify of one source table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastVerify {
    /// RFC 3339 time the verify finished.
    pub finished_at: String,
    /// Rows read from the source table.
    pub rows: u64,
    /// Differences that persisted after settling: missing + extra + different rows.
    pub differences: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// Rows `--repair` re-read from the source or deleted from the target before this verify.
    #[serde(default)]
    pub repaired: u64,
}

/// Source table → its last verify; empty when the file is missing or unreadable (it only
/// feeds `status`).
pub fn load(dir: &Path) -> BTreeMap<String, LastVerify> {
    read_json(&dir.join(FILE))
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Records the verify of each table in `runs`, keeping the other tables' last verify.
pub fn store(dir: &Path, runs: &BTreeMap<String, LastVerify>) -> Result<(), StateError> {
    let mut all = load(dir);
    all.extend(runs.iter().map(|(k, v)| (k.clone(), v.clone())));
    let bytes = serde_json::to_vec_pretty(&all).expect("verify state serializes");
    write_atomic(dir, FILE, &bytes)
}
