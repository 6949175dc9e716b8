//! The audit manifest: which journal sequences are in audit files (`audit-manifest.json` in
//! the journal directory). Written whole and atomically (temporary file, fsync, rename).
//!
//! A compaction first records the window it is about to write as `pending`; a re-run after a
//! crash redoes exactly that window, so files are rewritten under the same names and no event
//! lands in two files. Only when every file of the window is published does `audited_through`
//! move and `pending` clear.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const FILE: &str = "audit-manifest.json";
/// Completed windows kept for `status`; older ones are summed into `audited_through`.
const KEEP_WINDOWS: usize = 100;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Every sequence up to this one is in exactly one audit file.
    pub audited_through: u64,
    /// A window being written: redo it before anything else.
    pub pending: Option<Window>,
    /// The latest completed windows, oldest first.
    #[serde(default)]
    pub windows: Vec<Window>,
    /// Every sequence up to this one is applied to the target (see `crate::apply`).
    #[serde(default)]
    pub applied_through: u64,
    /// A window being applied: finish it (its committed chunks are skipped) before any other.
    #[serde(default)]
    pub apply_pending: Option<ApplyWindow>,
    /// The last window applied, for `status`.
    #[serde(default)]
    pub last_apply: Option<ApplyWindow>,
    /// Tables apply skips because they have no primary key (reported once each).
    #[serde(default)]
    pub skipped_tables: std::collections::BTreeSet<String>,
}

/// A window of the apply stage. Its chunks are numbered from its merged plan, which depends
/// only on the journal and `batch_rows`: both are fixed once the window is recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyWindow {
    pub from: u64,
    pub to: u64,
    pub batch_rows: usize,
    #[serde(default)]
    pub changes: u64,
    #[serde(default)]
    pub rows: u64,
    #[serde(default)]
    pub chunks: u32,
    #[serde(default)]
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub from: u64,
    pub to: u64,
    #[serde(default)]
    pub events: u64,
    #[serde(default)]
    pub files: u64,
    /// RFC 3339 time the window completed.
    #[serde(default)]
    pub finished_at: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("audit manifest {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("audit manifest {path} is not valid ({message}); restore it, or delete it and the audit files to re-audit the journal")]
    Invalid { path: PathBuf, message: String },
}

impl Manifest {
    pub fn path(journal_dir: &Path) -> PathBuf {
        journal_dir.join(FILE)
    }

    /// The manifest, or an empty one when none was written yet.
    pub fn load(journal_dir: &Path) -> Result<Manifest, ManifestError> {
        let path = Manifest::path(journal_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ManifestError::Invalid {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => Err(ManifestError::Io {
                path,
                message: e.to_string(),
            }),
        }
    }

    pub fn store(&self, journal_dir: &Path) -> Result<(), ManifestError> {
        let path = Manifest::path(journal_dir);
        let tmp = path.with_extension("json.tmp");
        let io = |e: std::io::Error| ManifestError::Io {
            path: path.clone(),
            message: e.to_string(),
        };
        let bytes = serde_json::to_vec_pretty(self).expect("manifest serializes");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes)
                .and_then(|()| f.sync_all())
                .map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(journal_dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }

    /// The last sequence journal GC may delete: audited, and applied when there is a target.
    pub fn collectable_through(&self, has_target: bool) -> u64 {
        if has_target {
            self.audited_through.min(self.applied_through)
        } else {
            self.audited_through
        }
    }

    /// Marks the apply window `window` done.
    pub fn complete_apply(&mut self, mut window: ApplyWindow) {
        window.finished_at = Some(chrono::Utc::now().to_rfc3339());
        self.applied_through = self.applied_through.max(window.to);
        self.apply_pending = None;
        self.last_apply = Some(window);
    }

    /// Marks `window` done.
    pub fn complete(&mut self, mut window: Window) {
        window.finished_at = Some(chrono::Utc::now().to_rfc3339());
        self.audited_through = self.audited_through.max(window.to);
        self.pending = None;
        self.windows.push(window);
        if self.windows.len() > KEEP_WINDOWS {
            let extra = self.windows.len() - KEEP_WINDOWS;
            self.windows.drain(..extra);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Manifest::default());
        let mut m = Manifest {
            pending: Some(Window {
                from: 1,
                to: 9,
                events: 9,
                files: 0,
                finished_at: None,
            }),
            ..Manifest::default()
        };
        m.store(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), m);
        let w = m.pending.clone().unwrap();
        m.complete(w);
        assert_eq!((m.audited_through, m.pending.is_none()), (9, true));
        std::fs::write(Manifest::path(dir.path()), b"{oops").unwrap();
        let e = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not valid"), "{e}");
    }
}
