//! Compaction's first half: journal windows → Arrow batches of change rows
//! ([`crate::types::cdc`]), each column typed by the [type map](crate::types#the-type-map).
//!
//! This module only decodes; [`crate::audit`] writes the batches as Parquet files and
//! [`crate::apply`] merges them per key. Both read the same rows, so an audit file and the
//! target never disagree about a value.
//!
//! - [`plan`] reads a window's event headers once and names every output file before any is
//!   written: one per table, commit date (UTC) and schema version. The names depend only on
//!   the journal, so a re-run plans the same files.
//! - [`decode_window`] reads the window again and decodes each event straight from the
//!   bridge's bytes into its file's Arrow builders, sending a batch when it holds
//!   `batch_rows` rows or its file is complete: memory is bounded by the batch size, whatever
//!   the window's.
//! - [`decode_in_order`] decodes a window in journal order per table (for apply's merge).
//!
//! PostgreSQL does not send an unchanged TOASTed value (a large value stored out of line) with
//! an update, and Debezium puts a placeholder in its place (`__debezium_unavailable_value`, or
//! `source.unavailable.value.placeholder`, [`placeholder`]). Here it becomes null and its
//! column is listed in `_cdc_unchanged`, so no reader takes the placeholder for a value; apply
//! leaves such a column as the target has it. Reading never changes the journal. Keys:
//! `audit.batch_rows` and the memory budget's batch bytes bound a batch.

mod batch;
mod columns;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;

use crate::config::Config;
use crate::error::{Classify, ErrorKind};
use crate::journal::event::{DecodeError, EventHeader};
use crate::journal::{self, JournalError};
use crate::types::TableSchema;

pub use batch::{unknown_columns, RowBatch, UnknownTypeWarnings};

/// The placeholder Debezium sends for an unchanged TOASTed value unless configured otherwise.
pub const DEFAULT_UNAVAILABLE_PLACEHOLDER: &str = "__debezium_unavailable_value";

/// The placeholder of `config`'s source (`unavailable.value.placeholder`).
pub fn placeholder(config: &Config) -> String {
    config
        .source_prop("unavailable.value.placeholder")
        .unwrap_or_else(|| DEFAULT_UNAVAILABLE_PLACEHOLDER.to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot decode journal event {seq} ({table}): {source}; the bridge jar and db-sync may not match (rebuild with scripts/setup.sh)")]
    Decode {
        seq: u64,
        table: String,
        source: DecodeError,
    },
    /// The receiver of the decoded batches went away: it failed, and its own error says why.
    #[error("compaction stopped: the writer of the decoded batches stopped")]
    WriterStopped,
    /// The journal holds an event the window's plan did not count: the window changed between
    /// the two reads.
    #[error("compaction stopped: journal event {seq} was not in the window's plan")]
    NotInPlan { seq: u64 },
}

impl Classify for CompactError {
    fn kind(&self) -> ErrorKind {
        match self {
            CompactError::Journal(e) => e.kind(),
            CompactError::Decode { .. }
            | CompactError::WriterStopped
            | CompactError::NotInPlan { .. } => ErrorKind::Permanent,
        }
    }
}

impl CompactError {
    fn decode(seq: u64, table: &str) -> impl FnOnce(DecodeError) -> CompactError + '_ {
        move |source| CompactError::Decode {
            seq,
            table: table.to_string(),
            source,
        }
    }
}

/// Reads the window `from..=to` with a callback that fails with compaction's own errors (or
/// a caller's, `E`): the first error stops the read and is returned as it is, its kind kept.
fn read_window<E: From<CompactError>>(
    dir: &Path,
    (from, to): (u64, u64),
    mut f: impl FnMut(&journal::StoredEvent<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let mut failed = None;
    let read = journal::read_events(dir, from, |e| {
        if e.seq > to {
            return Ok(false);
        }
        match f(&e) {
            Ok(()) => Ok(true),
            Err(err) => {
                failed = Some(err);
                Ok(false)
            }
        }
    });
    if let Some(err) = failed {
        return Err(err);
    }
    read.map_err(|e| E::from(CompactError::Journal(e)))
}

/// One output file of a window: a table, a commit date, a schema version.
#[derive(Debug, Clone)]
pub struct FilePlan {
    pub table: Arc<TableSchema>,
    /// The schema as the journal holds it (JSON), for the file's metadata.
    pub schema_json: Arc<str>,
    /// `YYYY-MM-DD`.
    pub date: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub rows: u64,
}

/// The files of a window, and how to find an event's file.
pub struct Plan {
    pub files: Vec<FilePlan>,
    schemas: SchemaIndex,
    /// (schema index, commit day) → file index.
    file_of: HashMap<(usize, i64), usize>,
}

impl Plan {
    /// Every schema version the window uses.
    pub fn schemas(&self) -> &[Arc<TableSchema>] {
        &self.schemas.schemas
    }

    /// Events in the window.
    pub fn events(&self) -> u64 {
        self.files.iter().map(|p| p.rows).sum()
    }

    /// Distinct tables in the window.
    pub fn tables(&self) -> usize {
        let mut t: Vec<&str> = self.files.iter().map(|p| p.table.table.as_str()).collect();
        t.sort_unstable();
        t.dedup();
        t.len()
    }
}

/// The day (UTC) of a commit time in µs, as days since the epoch.
fn commit_day(ts_us: i64) -> i64 {
    ts_us.div_euclid(86_400_000_000)
}

/// Reads the window `from..=to` once, headers only, to name every output file before writing
/// any.
pub fn plan(dir: &Path, from: u64, to: u64) -> Result<Plan, CompactError> {
    let mut schemas = SchemaIndex::default();
    let mut plans: Vec<FilePlan> = Vec::new();
    let mut by_key: HashMap<(usize, i64), usize> = HashMap::new();
    read_window(dir, (from, to), |e| {
        let (schema, day) = schemas.locate(e)?;
        let i = *by_key.entry((schema, day)).or_insert_with(|| {
            plans.push(FilePlan {
                table: schemas.schemas[schema].clone(),
                schema_json: schemas.jsons[schema].clone(),
                date: crate::types::time::format_date(day),
                first_seq: e.seq,
                last_seq: e.seq,
                rows: 0,
            });
            plans.len() - 1
        });
        plans[i].last_seq = e.seq;
        plans[i].rows += 1;
        Ok::<(), CompactError>(())
    })?;
    Ok(Plan {
        files: plans,
        schemas,
        file_of: by_key,
    })
}

/// Distinct schema versions by content, found through the journal's cheap per-segment keys.
#[derive(Default)]
struct SchemaIndex {
    /// Looked up for every event: not with SipHash.
    by_key: HashMap<(usize, u32), usize, foldhash::fast::RandomState>,
    by_json: HashMap<Vec<u8>, usize>,
    schemas: Vec<Arc<TableSchema>>,
    jsons: Vec<Arc<str>>,
}

impl SchemaIndex {
    /// A copy that knows the same schema versions (same indices) but no segment keys: keys
    /// are only meaningful within one read.
    fn fresh_read(&self) -> SchemaIndex {
        SchemaIndex {
            by_key: HashMap::default(),
            by_json: self.by_json.clone(),
            schemas: self.schemas.clone(),
            jsons: self.jsons.clone(),
        }
    }

    /// The (schema version, commit day) an event belongs to: the key of its file.
    fn locate(&mut self, e: &journal::StoredEvent<'_>) -> Result<(usize, i64), CompactError> {
        let h = EventHeader::parse(e.body).map_err(CompactError::decode(e.seq, &e.schema.table))?;
        Ok((self.index(e), commit_day(h.ts_us)))
    }

    fn index(&mut self, e: &journal::StoredEvent<'_>) -> usize {
        if let Some(&i) = self.by_key.get(&e.schema_key) {
            return i;
        }
        let i = match self.by_json.get(e.schema_json) {
            Some(&i) => i,
            None => {
                self.schemas.push(Arc::new(e.schema.clone()));
                self.jsons
                    .push(String::from_utf8_lossy(e.schema_json).into_owned().into());
                let i = self.schemas.len() - 1;
                self.by_json.insert(e.schema_json.to_vec(), i);
                i
            }
        };
        self.by_key.insert(e.schema_key, i);
        i
    }
}

/// A decoded batch on its way to the writer of file `file` (an index into [`Plan::files`]).
pub struct Decoded {
    pub file: usize,
    pub batch: RecordBatch,
}

/// Reads the window `from..=to` again and decodes each event into its file's batch; hands a
/// batch to `send` when it holds `batch_rows` rows or `batch_bytes` of events, or its file is
/// complete. `send` returning `false` (the
/// writer went away) stops the read. Runs on a thread of its own.
pub fn decode_window(
    dir: &Path,
    (from, to): (u64, u64),
    plan: &Plan,
    (batch_rows, batch_bytes): (usize, usize),
    placeholder: &str,
    progress: &indicatif::ProgressBar,
    mut send: impl FnMut(Decoded) -> bool,
) -> Result<(), CompactError> {
    let mut schemas = plan.schemas.fresh_read();
    let mut batches: Vec<Option<RowBatch>> = (0..plan.files.len()).map(|_| None).collect();
    let mut decoded: Vec<u64> = vec![0; plan.files.len()];
    let mut since_tick = 0u64;
    let mut deliver = |d: Decoded| -> Result<(), CompactError> {
        if send(d) {
            Ok(())
        } else {
            Err(CompactError::WriterStopped)
        }
    };
    let result = read_window(dir, (from, to), |e| {
        let file = *plan
            .file_of
            .get(&schemas.locate(e)?)
            .ok_or(CompactError::NotInPlan { seq: e.seq })?;
        let fp = &plan.files[file];
        let rows = batches[file].get_or_insert_with(|| {
            RowBatch::new(fp.table.clone(), batch_rows.min(fp.rows as usize))
        });
        rows.push(e.seq, e.body, placeholder)
            .map_err(CompactError::decode(e.seq, &fp.table.table))?;
        decoded[file] += 1;
        if decoded[file] == fp.rows {
            let mut last = batches[file].take().expect("present");
            deliver(Decoded {
                file,
                batch: last.finish(),
            })?;
        } else if rows.is_full(rows.capacity(), batch_bytes) {
            deliver(Decoded {
                file,
                batch: rows.finish(),
            })?;
        }
        since_tick += 1;
        if since_tick == 65536 {
            progress.inc(since_tick);
            since_tick = 0;
        }
        Ok(())
    });
    progress.inc(since_tick);
    result
}

/// Where a window holds rows of a table's full (initial or blocking) snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotMarks {
    /// The window has rows of the table's full snapshot.
    pub rows: bool,
    /// The window has the snapshot's last row of the table: the snapshot is complete.
    pub done: bool,
}

/// Decodes events `from..=to` into change-row batches of at most `batch_rows` rows (or about
/// `batch_bytes` of events) and hands each table's batches to `sink` in journal order; a batch
/// ends where its table's schema version changes. Batches of different tables interleave.
/// Used by apply, which merges per key and so needs each table's changes in order. Events
/// for which `skip(seq, table)` holds are not decoded (apply's superseded changes). Returns
/// each table's [`SnapshotMarks`] where it has any, skipped events included.
pub fn decode_in_order<E: From<CompactError>>(
    dir: &Path,
    (from, to): (u64, u64),
    placeholder: &str,
    (batch_rows, batch_bytes): (usize, usize),
    mut skip: impl FnMut(u64, &str) -> bool,
    mut sink: impl FnMut(&Arc<TableSchema>, RecordBatch) -> Result<(), E>,
) -> Result<HashMap<String, SnapshotMarks>, E> {
    let mut marks: HashMap<String, SnapshotMarks> = HashMap::new();
    let mut schemas = SchemaIndex::default();
    // table → (schema version, rows so far)
    let mut open: HashMap<String, (usize, RowBatch), foldhash::fast::RandomState> =
        HashMap::default();
    read_window(dir, (from, to), |e| -> Result<(), E> {
        let version = schemas.index(e);
        let table = &schemas.schemas[version];
        let name = table.table.as_str();
        if open.get(name).is_some_and(|(v, _)| *v != version) {
            let (old, mut rows) = open.remove(name).expect("checked above");
            sink(&schemas.schemas[old], rows.finish())?;
        }
        let h = EventHeader::parse(e.body).map_err(CompactError::decode(e.seq, name))?;
        if h.is_full_snapshot() {
            let m = match marks.get_mut(name) {
                Some(m) => m,
                None => marks.entry(name.to_string()).or_default(),
            };
            m.rows = true;
            m.done |= h.is_table_snapshot_last();
        }
        if skip(e.seq, name) {
            return Ok(());
        }
        if !open.contains_key(name) {
            open.insert(
                name.to_string(),
                (version, RowBatch::new(table.clone(), batch_rows)),
            );
        }
        let (_, rows) = open.get_mut(name).expect("inserted above");
        rows.push(e.seq, e.body, placeholder)
            .map_err(CompactError::decode(e.seq, name))?;
        if rows.is_full(batch_rows, batch_bytes) {
            sink(table, rows.finish())?;
        }
        Ok(())
    })?;
    let mut rest: Vec<(String, (usize, RowBatch))> = open.into_iter().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, (version, mut rows)) in rest {
        if rows.rows() > 0 {
            sink(&schemas.schemas[version], rows.finish())?;
        }
    }
    Ok(marks)
}
