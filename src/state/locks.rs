//! The state directory's lock files and the seal request.
//!
//! Locks are advisory `flock`s held while the file is open: a process that dies releases its
//! lock with it, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;

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

/// How often a waiter for the compaction lock tries it again.
const RETRY: Duration = Duration::from_millis(100);

/// Takes the compaction lock of the state directory `dir`; a second holder waits for the first
/// (a daemon's cycle, a cron-started `compact --once`, a backfill, a roll-up and
/// `verify --repair` never work at once).
///
/// The wait never blocks the async runtime: the lock is tried without blocking, and again
/// after a tokio sleep while another process holds it, so a long backfill in another process
/// leaves the daemon's `/healthz`, signal handling and capture running. Logs once when it has
/// to wait. Dropping the future ends the wait.
pub async fn compact_lock(dir: &Path) -> Result<File, StateError> {
    let path = dir.join(COMPACT_LOCK);
    let mut waiting = false;
    loop {
        if let Some(file) = try_lock(&path)? {
            return Ok(file);
        }
        if !waiting {
            tracing::info!(
                lock = %path.display(),
                "waiting for compact.lock held by another db-sync process"
            );
            waiting = true;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// [`compact_lock`] that gives up once `stop` turns true: `Ok(None)`. A free lock is taken
/// even then.
pub async fn compact_lock_until(
    dir: &Path,
    stop: &watch::Receiver<bool>,
) -> Result<Option<File>, StateError> {
    let mut stop = stop.clone();
    tokio::select! {
        biased;
        lock = compact_lock(dir) => lock.map(Some),
        // A closed channel never turns true: that branch is then left out.
        Ok(_) = stop.wait_for(|stopped| *stopped) => Ok(None),
    }
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
