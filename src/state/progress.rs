//! Audit and apply progress: which journal sequences are in audit files, and which are applied
//! to the target. Each stage owns one file and changes it only under `compact.lock`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{read_json, write_atomic, StateError};

pub const AUDIT_FILE: &str = "audit-progress.json";
pub const APPLY_FILE: &str = "apply-progress.json";
/// The one file both lived in before; moved to the two files on first load.
pub const LEGACY_MANIFEST: &str = "audit-manifest.json";
/// Completed audit windows kept for `status`; older ones are summed into `audited_through`.
const KEEP_WINDOWS: usize = 100;

/// A window of the audit stage: journal sequences `from..=to`.
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

/// A window of the apply stage. Its chunks are numbered from its merged plan, which depends
/// only on the journal, `batch_rows` and `chunk_bytes`: all fixed once the window is recorded,
/// so a re-run after a change of `target.batch_rows` or `memory_limit_mb` cuts the same chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyWindow {
    pub from: u64,
    pub to: u64,
    pub batch_rows: usize,
    /// The most bytes of rendered rows in one chunk (0 in windows recorded before it was:
    /// the current budget's).
    #[serde(default)]
    pub chunk_bytes: usize,
    /// The merge passed over changes that a later change of the same key, up to this
    /// sequence (the window's end), replaces whole. 0 (windows recorded before it was, and
    /// backfill's): nothing passed over.
    #[serde(default)]
    pub superseded_through: u64,
    #[serde(default)]
    pub changes: u64,
    #[serde(default)]
    pub rows: u64,
    #[serde(default)]
    pub chunks: u32,
    #[serde(default)]
    pub finished_at: Option<String>,
}

impl ApplyWindow {
    /// A window applied outside the journal's progress (a backfill's replay, a repair's
    /// deletes): sequences `from..=to`, `changes` of them, in chunks of `batch_rows`.
    pub fn unrecorded(from: u64, to: u64, batch_rows: usize, changes: u64) -> ApplyWindow {
        ApplyWindow {
            from,
            to,
            batch_rows,
            chunk_bytes: 0,
            superseded_through: 0,
            changes,
            rows: 0,
            chunks: 0,
            finished_at: None,
        }
    }
}

/// Which sequences are in audit files (`audit-progress.json`).
///
/// An audit records the window it is about to write as `pending`; a re-run after a crash
/// redoes exactly that window, so files are rewritten under the same names and no event lands
/// in two files. Only when every file of the window is published does `audited_through` move
/// and `pending` clear.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditProgress {
    /// Every sequence up to this one is in exactly one audit file.
    pub audited_through: u64,
    /// A window being written: redo it before anything else.
    pub pending: Option<Window>,
    /// The latest completed windows, oldest first.
    #[serde(default)]
    pub windows: Vec<Window>,
}

/// Which sequences are applied to the target (`apply-progress.json`).
///
/// Apply records the window it is about to apply as `pending` before it sends anything; a
/// re-run finishes that window (its committed chunks are skipped through the checkpoint
/// table) before any other.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyProgress {
    /// Every sequence up to this one is applied to the target.
    #[serde(default)]
    pub applied_through: u64,
    /// A window being applied.
    #[serde(default)]
    pub pending: Option<ApplyWindow>,
    /// The last window applied, for `status`.
    #[serde(default)]
    pub last: Option<ApplyWindow>,
    /// The MySQL type db-sync last gave each column of each source table: a source type change
    /// is told from a column the user changed by hand.
    #[serde(default)]
    pub column_types: ColumnTypes,
    /// Source tables whose full snapshot this journal has applied, or is applying, over a
    /// target table that already had rows: see [`Sweep`].
    #[serde(default)]
    pub sweeps: BTreeMap<String, Sweep>,
    /// Source tables whose changes apply no longer takes, because the target refused one of
    /// their rows (`target.on_reject: stop`): see [`Hold`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub held: BTreeMap<String, Hold>,
}

/// A table held out of apply: the target refused one of its rows, so its changes stop being
/// applied while the other tables' go on. Its chunks in the window where the hold began are
/// still cut (a re-run of that window numbers every chunk as the first run did) but not
/// applied; later windows leave the table out. The changes are in the audit files: a backfill
/// of the table's whole history rebuilds it and ends the hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The apply window the hold began in.
    pub window_from: u64,
    /// The row, the target table and column, and the target's error.
    pub reason: String,
    /// RFC 3339 time the hold began.
    pub since: String,
}

impl Hold {
    /// Whether the table's plan stays out of the window starting at `window_from`: every
    /// window after the one the hold began in.
    pub fn leaves_out(&self, window_from: u64) -> bool {
        window_from > self.window_from
    }

    /// The one line that says what is held, why, and what ends it.
    pub fn line(&self, table: &str) -> String {
        format!(
            "apply holds {table} since {}: {}. Its changes wait in the audit files while the other tables go on. Make the target able to take the row (change the target column, or the source value), then run `db-sync backfill --table {table} --truncate`, which rebuilds the table and ends the hold; or set `target.on_reject: quarantine` to set such rows aside instead",
            self.since, self.reason
        )
    }
}

/// A full snapshot applied over a target table that already had rows (a new journal, a
/// pipeline moved to a new host): the rows the snapshot does not bring were deleted at the
/// source meanwhile, and go when it completes. Decided, and recorded here, before the
/// snapshot's first chunk, so a re-run never mistakes the snapshot's own rows for old ones.
/// A sweep that is [`Sweep::Done`] or [`Sweep::Complete`] belongs to its window: a later
/// window's full-snapshot rows start the next decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Sweep {
    /// The target table was empty or missing: nothing to sweep.
    NotNeeded,
    /// The snapshot that needed no sweep completed in the window starting at `window_from`.
    /// A full snapshot of the table in a later window (a resync after the slot was lost) is
    /// a new one, and gets a sweep decision of its own.
    Complete { window_from: u64 },
    /// The snapshot's keys are being staged in the target (table `stage`).
    Staging { stage: String },
    /// A table without a key, whose rows cannot be swept one by one: its full snapshot
    /// started in the window starting at `window_from`, which empties the target table
    /// before the snapshot's first row.
    Replace { window_from: u64 },
    /// Done: `rows` target rows deleted, in the window starting at `window_from`.
    Done {
        rows: u64,
        window_from: u64,
        finished_at: String,
    },
}

/// Source table → lower-cased column → MySQL type.
pub type ColumnTypes = BTreeMap<String, BTreeMap<String, String>>;

/// The single manifest of earlier versions: audit and apply progress in one file.
#[derive(Deserialize)]
struct Legacy {
    #[serde(default)]
    audited_through: u64,
    #[serde(default)]
    pending: Option<Window>,
    #[serde(default)]
    windows: Vec<Window>,
    #[serde(default)]
    applied_through: u64,
    #[serde(default)]
    apply_pending: Option<ApplyWindow>,
    #[serde(default)]
    last_apply: Option<ApplyWindow>,
}

/// Moves a legacy `audit-manifest.json` into the two progress files, once. Each new file is
/// written whole before the old one goes, so a crash at any point leaves the progress readable
/// from one place or the other.
fn migrate(dir: &Path) -> Result<(), StateError> {
    let legacy_path = dir.join(LEGACY_MANIFEST);
    let Some(old) = read_json::<Legacy>(&legacy_path)? else {
        return Ok(());
    };
    if !dir.join(AUDIT_FILE).exists() {
        let audit = AuditProgress {
            audited_through: old.audited_through,
            pending: old.pending,
            windows: old.windows,
        };
        audit.store(dir)?;
    }
    if !dir.join(APPLY_FILE).exists() {
        let apply = ApplyProgress {
            applied_through: old.applied_through,
            pending: old.apply_pending,
            last: old.last_apply,
            column_types: ColumnTypes::new(),
            sweeps: BTreeMap::new(),
            held: BTreeMap::new(),
        };
        apply.store(dir)?;
    }
    std::fs::remove_file(&legacy_path).map_err(|e| StateError::io(&legacy_path, e))?;
    tracing::info!(dir = %dir.display(), "moved {LEGACY_MANIFEST} to {AUDIT_FILE} and {APPLY_FILE}");
    Ok(())
}

impl AuditProgress {
    /// The progress, or an empty one before the first audit.
    pub fn load(dir: &Path) -> Result<AuditProgress, StateError> {
        migrate(dir)?;
        Ok(read_json(&dir.join(AUDIT_FILE))?.unwrap_or_default())
    }

    pub fn store(&self, dir: &Path) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(self).expect("progress serializes");
        write_atomic(dir, AUDIT_FILE, &bytes)
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

impl ApplyProgress {
    /// The progress, or an empty one before the first apply.
    pub fn load(dir: &Path) -> Result<ApplyProgress, StateError> {
        migrate(dir)?;
        Ok(read_json(&dir.join(APPLY_FILE))?.unwrap_or_default())
    }

    pub fn store(&self, dir: &Path) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(self).expect("progress serializes");
        write_atomic(dir, APPLY_FILE, &bytes)
    }

    /// Marks the window `window` done.
    pub fn complete(&mut self, mut window: ApplyWindow) {
        window.finished_at = Some(chrono::Utc::now().to_rfc3339());
        self.applied_through = self.applied_through.max(window.to);
        self.pending = None;
        self.last = Some(window);
    }
}

/// The last sequence journal GC may delete: audited, and applied when there is a target.
pub fn collectable_through(audit: &AuditProgress, apply: &ApplyProgress, has_target: bool) -> u64 {
    if has_target {
        audit.audited_through.min(apply.applied_through)
    } else {
        audit.audited_through
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            AuditProgress::load(dir.path()).unwrap(),
            AuditProgress::default()
        );
        let mut m = AuditProgress {
            pending: Some(Window {
                from: 1,
                to: 9,
                events: 9,
                files: 0,
                finished_at: None,
            }),
            ..AuditProgress::default()
        };
        m.store(dir.path()).unwrap();
        assert_eq!(AuditProgress::load(dir.path()).unwrap(), m);
        let w = m.pending.clone().unwrap();
        m.complete(w);
        assert_eq!((m.audited_through, m.pending.is_none()), (9, true));
        std::fs::write(dir.path().join(AUDIT_FILE), b"{oops").unwrap();
        let e = AuditProgress::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not valid"), "{e}");
    }

    #[test]
    fn a_hold_keeps_its_table_out_of_the_windows_after_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let hold = Hold {
            window_from: 40,
            reason: "target table `t` (for public.t), key id=2: too long".into(),
            since: "2026-12-07T00:00:00Z".into(),
        };
        assert!(!hold.leaves_out(40), "its own window numbers its chunks");
        assert!(hold.leaves_out(41));
        let mut p = ApplyProgress::default();
        p.store(dir.path()).unwrap();
        let stored = std::fs::read_to_string(dir.path().join(APPLY_FILE)).unwrap();
        assert!(!stored.contains("held"), "no holds, no key: {stored}");
        p.held.insert("public.t".into(), hold.clone());
        p.store(dir.path()).unwrap();
        assert_eq!(
            ApplyProgress::load(dir.path()).unwrap().held["public.t"],
            hold
        );
        let line = hold.line("public.t");
        assert!(
            line.starts_with("apply holds public.t since 2026-12-07T00:00:00Z: target table `t`")
        );
        assert!(line.contains("db-sync backfill --table public.t --truncate"));
    }

    #[test]
    fn a_legacy_manifest_moves_to_the_two_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LEGACY_MANIFEST),
            br#"{"audited_through": 40, "pending": null, "windows": [],
                 "applied_through": 30, "apply_pending": {"from": 31, "to": 40, "batch_rows": 5},
                 "last_apply": null, "skipped_tables": ["public.nokey"]}"#,
        )
        .unwrap();
        let apply = ApplyProgress::load(dir.path()).unwrap();
        assert_eq!(apply.applied_through, 30);
        assert_eq!(
            apply.pending.as_ref().map(|w| (w.from, w.to)),
            Some((31, 40))
        );
        assert_eq!(AuditProgress::load(dir.path()).unwrap().audited_through, 40);
        assert!(!dir.path().join(LEGACY_MANIFEST).exists());
        assert_eq!(
            collectable_through(&AuditProgress::load(dir.path()).unwrap(), &apply, true),
            30
        );
    }
}
