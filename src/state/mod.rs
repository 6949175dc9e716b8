//! The pipeline's local state: every file in the state directory (`journal.dir`, default
//! `data/journal`) other than the journal's segments, in one place. Every path below is
//! relative to that directory, wherever the process was started; Debezium gets its two files
//! by absolute path ([`crate::capture::state_dir`]), so a `compact --once` from cron or a
//! restart from another working directory finds the same state.
//!
//! # The state directory
//!
//! ```text
//! <journal.dir>/
//!   segment-<first seq>.log   the journal (crate::journal owns their format)
//!   identity.json             the journal's identity and its source's (identity)
//!   debezium-offsets.dat      Debezium's offsets, and its schema history: absolute paths
//!   debezium-history.dat      handed to the engine, never relative to the working directory
//!   audit-progress.json       AuditProgress: which sequences are in audit files
//!   apply-progress.json       ApplyProgress: which sequences are applied to the target
//!   loader-progress.json      the native initial load's ranges and which are journaled (loader)
//!   jobs-state.json           the last run of each scheduled job (`status`)
//!   verify-state.json         the last `verify` of each table (`status`)
//!   writer.lock               held by the one capture that appends to the journal
//!   compact.lock              held by the one cycle (or backfill) that audits / applies
//!   seal.request              a cycle asks the running capture to roll the active segment
//! ```
//!
//! Each `.json` file is the serde form of its type: [`identity::Identity`],
//! [`AuditProgress`], [`ApplyProgress`], [`jobs::JobRun`] (a list), [`verify::LastVerify`] (by
//! table). The two Debezium files are the engine's own (`FileOffsetBackingStore`,
//! `FileSchemaHistory`): db-sync only names them and checks that they agree with the journal
//! ([`crate::capture`]). (Before the split, both progress records lived in one
//! `audit-manifest.json`; the first load moves it to the two files, see [`progress`].)
//!
//! # Invariants
//!
//! - **Whole or not at all.** Every state file is written to a temporary name, fsynced,
//!   renamed over the old one, and the directory fsynced ([`write_atomic`]): a crash leaves
//!   the old version or the new one, never a torn file.
//! - **Intent first.** Audit and apply each record the window they are about to work on
//!   (`pending`) before they write anything downstream; a re-run after a crash redoes exactly
//!   that window. Progress only moves forward.
//! - **One writer each.** Only the holder of `writer.lock` appends to the journal; only the
//!   holder of `compact.lock` changes the progress files or the target. Both locks are
//!   advisory `flock`s held while the file is open, so a crashed holder releases them.
//! - **GC.** A journal segment may be deleted only when every event in it is audited and, when
//!   a target is configured, applied ([`collectable_through`]).

pub mod identity;
pub mod jobs;
pub mod locks;
pub mod progress;
pub mod verify;

use std::path::{Path, PathBuf};

use crate::error::{Classify, ErrorKind};

pub use progress::{
    collectable_through, ApplyProgress, ApplyWindow, AuditProgress, ColumnTypes, Hold, Sweep,
    Window,
};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not valid ({source}); restore it from a backup, or delete it and the audit files to re-audit the journal")]
    Invalid {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl StateError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        StateError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl Classify for StateError {
    fn kind(&self) -> ErrorKind {
        match self {
            StateError::Io { .. } => ErrorKind::Transient,
            StateError::Invalid { .. } => ErrorKind::Permanent,
        }
    }
}

/// Writes `bytes` to `dir/name` whole: temporary file, fsync, rename, directory fsync.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StateError> {
    use std::io::Write;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let io = |e| StateError::io(&path, e);
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io)?;
    }
    std::fs::rename(&tmp, &path).map_err(io)?;
    sync_dir(dir)
}

/// fsyncs a directory, so that a rename or a new file in it survives a power loss.
pub fn sync_dir(dir: &Path) -> Result<(), StateError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StateError::io(dir, e))
}

/// Reads a JSON state file; `None` when it does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateError::Invalid {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::io(path, e)),
    }
}
