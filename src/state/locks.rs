//! The state directory's lock files and the seal request.
//!
//! Locks are advisory `flock`s held while the file is open: a process that dies releases its
//! lock with it, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::path::Path;

use super::StateError;

/// Held by the one capture that appends to the journal.
pub const WRITER_LOCK: &str = "writer.lock";
/// Held by the one cycle (or backfill) that audits and applies.
pub const COMPACT_LOCK: &str = "compact.lock";
/// A cycle's request that the capture holding the journal roll its active segment.
pub const SEAL_REQUEST: &str = "seal.request";

/// Opens (creating) `path` and takes an exclusive lock on it, held while the file is open;
/// `None` when another process holds it.
pub fn try_lock(path: &Path) -> Result<Option<File>, StateError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| StateError::io(path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(StateError::io(path, e)),
    }
}

/// Takes the compaction lock of the state directory `dir`; a second holder waits for the first
/// (a daemon's cycle and a cron-started `compact --once` never work at once).
pub fn compact_lock(dir: &Path) -> Result<File, StateError> {
    let path = dir.join(COMPACT_LOCK);
    if let Some(file) = try_lock(&path)? {
        return Ok(file);
    }
    tracing::info!(
        "another compaction holds {}; waiting for it",
        path.display()
    );
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| StateError::io(&path, e))?;
    file.lock().map_err(|e| StateError::io(&path, e))?;
    Ok(file)
}

/// Asks the capture that holds the journal to roll its active segment.
pub fn request_seal(dir: &Path) -> Result<(), StateError> {
    let path = dir.join(SEAL_REQUEST);
    std::fs::write(&path, b"").map_err(|e| StateError::io(&path, e))
}

/// Whether a seal was requested (the capture checks a few times a second).
pub fn seal_requested(dir: &Path) -> bool {
    dir.join(SEAL_REQUEST).exists()
}

/// Withdraws or answers the seal request.
pub fn clear_seal_request(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(SEAL_REQUEST));
}
