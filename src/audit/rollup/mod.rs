//! Roll-up and retention of audit files: the `db-sync rollup [--table SCHEMA.TABLE] [--date
//! YYYY-MM-DD]` command and the job kind `rollup` ([`crate::retention`], which adds retention).
//!
//! Every compaction cycle writes one file per table, date and schema version, so a one-minute
//! schedule leaves 1,440 small files per table and day. [`rollup`] merges the files of each
//! date partition before today (UTC) into as few files as `audit.target_file_mb` allows
//! ([`merge`]), and leaves the date partitions older than `audit.retain_days` to retention
//! ([`crate::retention`]), which folds them into the changes each table's state reads.
//!
//! **What a merged file is.** It holds the rows of a run of consecutive files of one table,
//! date, journal and schema version, in `_cdc_seq` order, and is named by the range it covers
//! like every audit file (`<first>-<last>.<journal>.parquet`; two journals' files are never
//! merged). Its footer lists the names of the files it replaces (metadata
//! [`ROLLUP_OF_METADATA`]). A schema change starts a new merged file: one file holds one
//! schema version (its `db_sync.table_schema`), because a single file cannot tell a column an
//! older version lacked (a target column apply leaves alone, e.g. filled by its `DEFAULT`) from
//! a NULL the source sent; readers unify the versions by name as before.
//!
//! **Crash safety.** The merged file is published whole (staging file + rename, or a multipart
//! upload) and fsynced before any small file is deleted. A crash at any point leaves either
//! only the small files, or the merged file and some of the small files it lists. Readers in
//! db-sync ([`visible`]: `query`, `backfill`) leave out a file that a file covering its range
//! lists as replaced, so each change is read exactly once; the next roll-up deletes those
//! leftovers first ([`leftovers`]), then goes on where it stopped. Re-running is always safe.
//!
//! **Concurrency.** Each partition is handled under `compact.lock`, so neither a compaction
//! cycle nor a backfill (which holds the lock while it reads) runs meanwhile. Partitions of
//! the current date are left alone: cycles still write them. A change of an earlier date that
//! arrives late (after an outage) gets a new file with higher sequence numbers, which the next
//! roll-up merges too. A compaction window left unfinished by a crash is redone by the next
//! cycle first: until then, roll-up touches nothing.

pub mod leftovers;
pub mod merge;
pub mod read;
mod tables;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{NaiveDate, Utc};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

use super::{AuditError, AuditFile, AuditStore};
use crate::config::Config;
use crate::error::{Classify, ErrorKind};
use crate::state::{locks, AuditProgress, StateError};

pub use leftovers::{superseded, visible};
pub use tables::{table_files, TableFiles};

/// Parquet key-value metadata of a merged file: a JSON array of the file names it replaces.
pub const ROLLUP_OF_METADATA: &str = "db_sync.rollup_of";

#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    State(#[from] StateError),
    /// Bad `--table` / `--date` (exit 2).
    #[error("`{key}` {message}")]
    Usage { key: String, message: String },
    #[error("roll-up of {what}: {message}; the small files are untouched, run rollup again")]
    Merge { what: String, message: String },
    #[error("retention of {table}: cannot find the changes its state reads: {message}; nothing of it was deleted, run rollup again")]
    Fold { table: String, message: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the audit listing panicked")]
    ListingPanicked,
}

impl Classify for RollupError {
    fn kind(&self) -> ErrorKind {
        match self {
            RollupError::Audit(e) => e.kind(),
            RollupError::State(e) => e.kind(),
            RollupError::Usage { .. } => ErrorKind::Config,
            RollupError::Merge { .. }
            | RollupError::Fold { .. }
            | RollupError::Runtime(_)
            | RollupError::ListingPanicked => ErrorKind::Permanent,
        }
    }
}

/// Which partitions to roll up: all closed ones by default.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `schema.table`.
    pub table: Option<String>,
    /// `YYYY-MM-DD`.
    pub date: Option<String>,
}

/// What a roll-up did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Closed partitions looked at.
    pub partitions: u64,
    /// Small files merged away, merged files written, rows they hold.
    pub files_merged: u64,
    pub files_written: u64,
    pub rows: u64,
    /// Small files an interrupted roll-up had merged already, deleted now.
    pub leftovers_deleted: u64,
    /// Retention: date partitions folded, files deleted, bytes freed (deleted files, and what
    /// rewritten files lost).
    pub expired_partitions: u64,
    pub expired_files: u64,
    pub expired_bytes: u64,
    /// Retention: files rewritten with fewer changes, and the changes kept (the base).
    pub folded_files: u64,
    pub folded_rows: u64,
    /// A compaction window is unfinished: nothing was done (the next cycle finishes it).
    pub waited_for_compaction: bool,
}

/// Per table, every file of its partitions older than `audit.retain_days`: retention's to fold
/// ([`crate::retention`]), never rolled up here.
pub type Expired = BTreeMap<String, Vec<AuditFile>>;

/// Rolls up the closed date partitions chosen by `opts`; returns the expired ones untouched.
/// Re-runnable: it first deletes the leftovers of an interrupted run (see the module doc).
pub async fn rollup(config: &Config, opts: &Options) -> Result<(Summary, Expired), RollupError> {
    if let Some(d) = &opts.date {
        if NaiveDate::parse_from_str(d, "%Y-%m-%d").is_err() {
            return Err(RollupError::Usage {
                key: "--date".into(),
                message: format!("{d:?} is not a date; write YYYY-MM-DD (UTC)"),
            });
        }
    }
    let store = AuditStore::open(&config.audit)?;
    store.probe().await?;
    let files = store.list_files(opts.table.as_deref()).await?;
    if let (Some(t), true) = (&opts.table, files.is_empty()) {
        return Err(no_such_table(&store, t).await?);
    }
    let today = Utc::now().date_naive().format("%Y-%m-%d").to_string();
    check_closed(opts.date.as_deref(), &today)?;
    let expire_before = config.audit.retain_days.map(|days| {
        (Utc::now().date_naive() - chrono::Days::new(days))
            .format("%Y-%m-%d")
            .to_string()
    });
    // (table, date) → files; each partition is handled under the compaction lock.
    let mut partitions: BTreeMap<(String, String), Vec<AuditFile>> = BTreeMap::new();
    for f in files {
        partitions
            .entry((f.table.clone(), f.date.clone()))
            .or_default()
            .push(f);
    }
    let mut summary = Summary::default();
    // Every expired partition of a table is folded at once (one state): none is rolled up.
    let mut expired = Expired::new();
    for ((table, date), files) in partitions {
        if expire_before.as_ref().is_some_and(|cut| date < *cut) {
            expired.entry(table).or_default().extend(files);
            continue;
        }
        if date >= today || opts.date.as_ref().is_some_and(|d| *d != date) {
            continue;
        }
        if files.len() < 2 {
            continue; // nothing to merge, no leftover possible
        }
        let _lock = match lock(config).await? {
            Lock::Held(l) => l,
            Lock::Pending => {
                tracing::warn!("an unfinished compaction window is pending; roll-up waits for the next compaction cycle to finish it");
                summary.waited_for_compaction = true;
                return Ok((summary, Expired::new()));
            }
        };
        summary.partitions += 1;
        roll_up_partition(config, &store, files, &mut summary).await?;
    }
    Ok((summary, expired))
}

/// `--date` names a closed partition: cycles still write today's.
fn check_closed(date: Option<&str>, today: &str) -> Result<(), RollupError> {
    match date {
        Some(d) if d >= today => Err(RollupError::Usage {
            key: "--date".into(),
            message: format!(
                "{d} is not closed yet: compaction cycles still write today's partition ({today} UTC); name an earlier date"
            ),
        }),
        _ => Ok(()),
    }
}

/// The error for a `--table` without audit files, naming the tables there are.
async fn no_such_table(store: &AuditStore, table: &str) -> Result<RollupError, RollupError> {
    let tables: BTreeSet<String> = store
        .list_files(None)
        .await?
        .into_iter()
        .map(|f| f.table)
        .collect();
    let held = if tables.is_empty() {
        "no table yet".to_string()
    } else {
        tables.into_iter().collect::<Vec<_>>().join(", ")
    };
    Ok(RollupError::Usage {
        key: "--table".into(),
        message: format!(
            "{table}: no audit files under {}; they hold {held} (write SCHEMA.TABLE)",
            store.url
        ),
    })
}

/// One closed partition: the leftovers of an interrupted roll-up deleted, then its runs of
/// files merged.
async fn roll_up_partition(
    config: &Config,
    store: &AuditStore,
    files: Vec<AuditFile>,
    summary: &mut Summary,
) -> Result<(), RollupError> {
    let files = without_leftovers(store, files, summary).await?;
    merge::merge_runs(config, store, files, summary).await
}

/// `files` without the leftovers of an interrupted roll-up among them, which are deleted.
pub async fn without_leftovers(
    store: &AuditStore,
    files: Vec<AuditFile>,
    summary: &mut Summary,
) -> Result<Vec<AuditFile>, RollupError> {
    let leftovers = superseded(store, &files).await?;
    for f in &leftovers {
        delete(store, f).await?;
        summary.leftovers_deleted += 1;
    }
    let gone: HashSet<&ObjectPath> = leftovers.iter().map(|f| &f.location).collect();
    Ok(files
        .into_iter()
        .filter(|f| !gone.contains(&f.location))
        .collect())
}

pub enum Lock {
    Held(Option<std::fs::File>),
    Pending,
}

/// The compaction lock (when a journal exists), unless a compaction window is pending. The
/// wait for it blocks nothing else in the daemon.
pub async fn lock(config: &Config) -> Result<Lock, RollupError> {
    let dir = &config.journal.dir;
    if !dir.is_dir() {
        return Ok(Lock::Held(None));
    }
    let lock = locks::compact_lock(dir).await?;
    if AuditProgress::load(dir)?.pending.is_some() {
        return Ok(Lock::Pending);
    }
    Ok(Lock::Held(Some(lock)))
}

/// Deletes an audit file; one already gone is fine (a re-run).
pub async fn delete(store: &AuditStore, f: &AuditFile) -> Result<(), RollupError> {
    match store.store.delete(&f.location).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(AuditError::Write {
            url: store.url.clone(),
            location: f.location.to_string(),
            source: Box::new(e),
        }
        .into()),
    }
}
