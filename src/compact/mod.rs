//! Compaction: sealed journal segments → typed Parquet audit files (DESIGN §5, §6).
//!
//! [`compact_once`] guarantees, for the window of sequences it handles:
//!
//! - **Exactly once.** Every journal event lands in exactly one audit file. The window is
//!   recorded in the manifest before any file is written; file names derive from the window's
//!   events (`<first_seq>-<last_seq>.parquet` per table, commit date and schema version), so
//!   a re-run after a crash anywhere rewrites the same names and never adds a second copy.
//! - **Whole files.** A file is published only when complete (see [`crate::audit`]).
//! - **Bounded memory.** Events are decoded in batches of `audit.batch_rows` per file being
//!   written; a window of any size streams through.
//! - **Nothing lost on failure.** An unreachable or unauthorised store fails before anything
//!   is written; any failure leaves the manifest and the journal as they were.
//!
//! Work is split across the two cores the design targets: a thread reads and decodes the
//! journal into Arrow batches, while the async side encodes Parquet and uploads.

mod batch;
mod columns;
pub mod manifest;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use object_store::buffered::BufWriter;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::audit::{one_line, AuditError, AuditStore};
use crate::config::Config;
use crate::failpoint;
use crate::journal::event::{EventHeader, TableSchema};
use crate::journal::{self, JournalError};
use batch::{RowBatch, UnknownTypeWarnings};
use manifest::{Manifest, ManifestError, Window};

pub use batch::audit_schema;

/// Parquet key-value metadata key holding the table's Connect schema (the journal's schema
/// JSON): enough to rebuild the target table with its exact types from an audit file alone.
pub const TABLE_SCHEMA_METADATA: &str = "db_sync.table_schema";

/// The placeholder Debezium sends for an unchanged TOASTed value unless configured otherwise.
pub const DEFAULT_UNAVAILABLE_PLACEHOLDER: &str = "__debezium_unavailable_value";
const SEAL_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("cannot decode journal event {seq}: {message}; the bridge jar and db-sync may not match (rebuild with scripts/setup.sh)")]
    Decode { seq: u64, message: String },
    #[error("compaction stopped: {0}")]
    Internal(String),
}

/// What one compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub from: u64,
    pub to: u64,
    pub events: u64,
    pub files: u64,
    pub tables: usize,
}

/// One output file: a table, a commit date, a schema version.
#[derive(Debug, Clone)]
struct FilePlan {
    table: Arc<TableSchema>,
    /// The schema as the journal holds it (JSON), for the file's metadata.
    schema_json: Arc<str>,
    date: String,
    first_seq: u64,
    last_seq: u64,
    rows: u64,
}

/// Seals the journal, audits every sealed event not yet audited and updates the manifest.
/// `Ok(None)`: nothing new. The caller holds the compaction lock ([`crate::cycle`]).
pub async fn audit_once(config: &Config) -> Result<Option<Summary>, CompactError> {
    let dir = config.journal.dir.clone();
    if !dir.is_dir() {
        tracing::info!(journal = %dir.display(), "no journal yet; nothing to compact");
        return Ok(None);
    }
    let store = AuditStore::open(&config.audit)?;
    // A bad bucket or credentials fail here, before the journal is touched.
    store.probe().await?;

    {
        let dir = dir.clone();
        let max = config.journal.segment_max_bytes;
        tokio::task::spawn_blocking(move || journal::seal(&dir, max, SEAL_WAIT))
            .await
            .map_err(|e| CompactError::Internal(e.to_string()))??;
    }

    let mut manifest = Manifest::load(&dir)?;
    let window = match manifest.pending.clone() {
        Some(w) => {
            tracing::info!(
                from = w.from,
                to = w.to,
                "redoing the window an earlier compaction left unfinished"
            );
            remove_local_staging_files(&config.audit.url);
            w
        }
        None => {
            let from = manifest.audited_through + 1;
            let to = journal::sealed_through(&dir)?;
            if to < from {
                return Ok(None);
            }
            Window {
                from,
                to,
                events: 0,
                files: 0,
                finished_at: None,
            }
        }
    };
    manifest.pending = Some(window.clone());
    manifest.store(&dir)?;

    let plan = {
        let dir = dir.clone();
        let (from, to) = (window.from, window.to);
        tokio::task::spawn_blocking(move || plan(&dir, from, to))
            .await
            .map_err(|e| CompactError::Internal(e.to_string()))??
    };
    let mut warnings = UnknownTypeWarnings::default();
    for schema in &plan.schemas.schemas {
        warnings.check(schema);
    }
    let events: u64 = plan.files.iter().map(|p| p.rows).sum();
    let tables = {
        let mut t: Vec<&str> = plan.files.iter().map(|p| p.table.table.as_str()).collect();
        t.sort_unstable();
        t.dedup();
        t.len()
    };
    let files = write_files(config, &store, &dir, &window, Arc::new(plan)).await?;

    failpoint::hit("compact.before_manifest");
    let mut done = window.clone();
    done.events = events;
    done.files = files;
    manifest.complete(done);
    manifest.store(&dir)?;
    Ok(Some(Summary {
        from: window.from,
        to: window.to,
        events,
        files,
        tables,
    }))
}

/// A crash mid-upload to `file://` leaves object_store's staging files (`<name>#<n>`) behind;
/// they are invisible to readers of `*.parquet`, but they are garbage. (S3 keeps an
/// interrupted multipart upload invisible and bucket lifecycle rules expire it.)
fn remove_local_staging_files(url: &str) {
    let Some(root) = url.strip_prefix("file://") else {
        return;
    };
    let mut stack = vec![std::path::PathBuf::from(root)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(".parquet#"))
            {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// The day (UTC) of a commit time in µs, as `YYYY-MM-DD`.
fn commit_date(ts_us: i64) -> i64 {
    ts_us.div_euclid(86_400_000_000)
}

/// The files of a window, and how to find an event's file.
struct Plan {
    files: Vec<FilePlan>,
    schemas: SchemaIndex,
    /// (schema index, commit day) → file index.
    file_of: HashMap<(usize, i64), usize>,
}

/// Reads the window once, headers only, to name every output file before writing any.
fn plan(dir: &Path, from: u64, to: u64) -> Result<Plan, CompactError> {
    let mut schemas = SchemaIndex::default();
    let mut plans: Vec<FilePlan> = Vec::new();
    let mut by_key: HashMap<(usize, i64), usize> = HashMap::new();
    journal::read_events(dir, from, |e| {
        if e.seq > to {
            return Ok(false);
        }
        let (schema, day) = schemas.locate(&e)?;
        let i = *by_key.entry((schema, day)).or_insert_with(|| {
            plans.push(FilePlan {
                table: schemas.schemas[schema].clone(),
                schema_json: schemas.jsons[schema].clone(),
                date: crate::journal::event::format_date(day),
                first_seq: e.seq,
                last_seq: e.seq,
                rows: 0,
            });
            plans.len() - 1
        });
        plans[i].last_seq = e.seq;
        plans[i].rows += 1;
        Ok(true)
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
    by_key: HashMap<(usize, u32), usize>,
    by_json: HashMap<Vec<u8>, usize>,
    schemas: Vec<Arc<TableSchema>>,
    jsons: Vec<Arc<str>>,
}

impl SchemaIndex {
    /// A copy that knows the same schema versions (same indices) but no segment keys: keys
    /// are only meaningful within one read.
    fn fresh_read(&self) -> SchemaIndex {
        SchemaIndex {
            by_key: HashMap::new(),
            by_json: self.by_json.clone(),
            schemas: self.schemas.clone(),
            jsons: self.jsons.clone(),
        }
    }

    /// The (schema version, commit day) an event belongs to: the key of its file.
    fn locate(&mut self, e: &journal::StoredEvent<'_>) -> Result<(usize, i64), JournalError> {
        let h = EventHeader::parse(e.body).map_err(|err| JournalError::Undecodable {
            seq: e.seq,
            what: err.to_string(),
        })?;
        Ok((self.index(e), commit_date(h.ts_us)))
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

/// A decoded batch on its way to the writer of file `file`.
struct Decoded {
    file: usize,
    batch: RecordBatch,
}

async fn write_files(
    config: &Config,
    store: &AuditStore,
    dir: &Path,
    window: &Window,
    plan: Arc<Plan>,
) -> Result<u64, CompactError> {
    let placeholder = config
        .source_prop("unavailable.value.placeholder")
        .unwrap_or_else(|| DEFAULT_UNAVAILABLE_PLACEHOLDER.to_string());
    let batch_rows = config.audit.batch_rows;
    let total: u64 = plan.files.iter().map(|p| p.rows).sum();
    let progress = progress_bar(total);

    // Bounded: at most a few decoded batches wait for the encoder.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Decoded, CompactError>>(4);
    let decoder = {
        let dir = dir.to_path_buf();
        let plan = plan.clone();
        let (from, to) = (window.from, window.to);
        let progress = progress.clone();
        std::thread::Builder::new()
            .name("compact-decode".into())
            .spawn(move || {
                let result = decode(
                    &dir,
                    from,
                    to,
                    &plan,
                    batch_rows,
                    &placeholder,
                    &progress,
                    &tx,
                );
                if let Err(e) = result {
                    let _ = tx.blocking_send(Err(e));
                }
            })
            .map_err(|e| CompactError::Internal(format!("cannot start the decoder thread: {e}")))?
    };

    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(batch_rows))
        .set_created_by(format!("db-sync {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut writers: HashMap<usize, (AsyncArrowWriter<BufWriter>, u64)> = HashMap::new();
    let mut published = 0u64;
    while let Some(item) = rx.recv().await {
        let Decoded { file, batch } = item?;
        let fp = &plan.files[file];
        let location = store.file_location(&fp.table.table, &fp.date, fp.first_seq, fp.last_seq);
        let write_err = |e: &(dyn std::error::Error + 'static)| AuditError::Write {
            url: store.url.clone(),
            location: location.to_string(),
            message: one_line(e),
        };
        if let std::collections::hash_map::Entry::Vacant(slot) = writers.entry(file) {
            let object = BufWriter::new(store.store.clone(), location.clone());
            let mut writer = AsyncArrowWriter::try_new(object, batch.schema(), Some(props.clone()))
                .map_err(|e| write_err(&e))?;
            writer.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
                TABLE_SCHEMA_METADATA.to_string(),
                fp.schema_json.to_string(),
            ));
            slot.insert((writer, 0));
        }
        let (writer, rows) = writers.get_mut(&file).expect("inserted above");
        writer.write(&batch).await.map_err(|e| write_err(&e))?;
        *rows += batch.num_rows() as u64;
        if *rows == fp.rows {
            let (writer, _) = writers.remove(&file).expect("present");
            writer.close().await.map_err(|e| write_err(&e))?;
            published += 1;
            tracing::debug!(file = %location, rows = fp.rows, "published audit file");
            failpoint::hit("compact.after_file");
        }
    }
    decoder
        .join()
        .map_err(|_| CompactError::Internal("the decoder thread panicked".into()))?;
    progress.finish_and_clear();
    if !writers.is_empty() || published != plan.files.len() as u64 {
        return Err(CompactError::Internal(format!(
            "{} of {} audit files were completed; the window is redone on the next run",
            published,
            plan.files.len()
        )));
    }
    Ok(published)
}

/// Reads the window again and decodes each event into its file's batch; sends a batch when it
/// is full or its file is complete. Runs on its own thread.
#[allow(clippy::too_many_arguments)]
fn decode(
    dir: &Path,
    from: u64,
    to: u64,
    plan: &Plan,
    batch_rows: usize,
    placeholder: &str,
    progress: &indicatif::ProgressBar,
    tx: &tokio::sync::mpsc::Sender<Result<Decoded, CompactError>>,
) -> Result<(), CompactError> {
    let mut schemas = plan.schemas.fresh_read();
    let mut batches: Vec<Option<RowBatch>> = (0..plan.files.len()).map(|_| None).collect();
    let mut decoded: Vec<u64> = vec![0; plan.files.len()];
    let mut since_tick = 0u64;
    let send = |d: Decoded| -> Result<(), JournalError> {
        tx.blocking_send(Ok(d))
            .map_err(|_| JournalError::BadBatch("the writer stopped".into()))
    };
    let result = journal::read_events(dir, from, |e| {
        if e.seq > to {
            return Ok(false);
        }
        let file = *plan.file_of.get(&schemas.locate(&e)?).ok_or_else(|| {
            JournalError::BadBatch(format!("event {} was not in the plan", e.seq))
        })?;
        let fp = &plan.files[file];
        let rows = batches[file].get_or_insert_with(|| {
            RowBatch::new(fp.table.clone(), batch_rows.min(fp.rows as usize))
        });
        rows.push(e.seq, e.body, placeholder)
            .map_err(|err| JournalError::Undecodable {
                seq: e.seq,
                what: format!("{} ({})", err, fp.table.table),
            })?;
        decoded[file] += 1;
        if decoded[file] == fp.rows {
            let mut last = batches[file].take().expect("present");
            send(Decoded {
                file,
                batch: last.finish(),
            })?;
        } else if rows.rows() >= rows.capacity().max(1) {
            send(Decoded {
                file,
                batch: rows.finish(),
            })?;
        }
        since_tick += 1;
        if since_tick == 65536 {
            progress.inc(since_tick);
            since_tick = 0;
        }
        Ok(true)
    });
    progress.inc(since_tick);
    result.map_err(decode_error)
}

/// Decodes events `from..=to` into audit batches (the rows audit files hold) of at most
/// `batch_rows` rows and hands each table's batches to `sink` in journal order; a batch ends
/// where its table's schema version changes. Batches of different tables interleave. Used by
/// apply, which merges per key and so needs each table's changes in order.
pub fn decode_in_order<E: From<CompactError>>(
    dir: &Path,
    from: u64,
    to: u64,
    placeholder: &str,
    batch_rows: usize,
    mut sink: impl FnMut(&Arc<TableSchema>, RecordBatch) -> Result<(), E>,
) -> Result<(), E> {
    let mut schemas = SchemaIndex::default();
    // table → (schema version, rows so far)
    let mut open: HashMap<String, (usize, RowBatch)> = HashMap::new();
    let mut failed: Option<E> = None;
    let result = journal::read_events(dir, from, |e| {
        if e.seq > to {
            return Ok(false);
        }
        let version = schemas.index(&e);
        let table = schemas.schemas[version].clone();
        if open.get(&table.table).is_some_and(|(v, _)| *v != version) {
            let (old, mut rows) = open.remove(&table.table).expect("checked above");
            if let Err(err) = sink(&schemas.schemas[old], rows.finish()) {
                failed = Some(err);
                return Ok(false);
            }
        }
        let (_, rows) = open
            .entry(table.table.clone())
            .or_insert_with(|| (version, RowBatch::new(table.clone(), batch_rows)));
        rows.push(e.seq, e.body, placeholder)
            .map_err(|err| JournalError::Undecodable {
                seq: e.seq,
                what: format!("{} ({})", err, table.table),
            })?;
        if rows.rows() >= batch_rows {
            let batch = rows.finish();
            if let Err(err) = sink(&table, batch) {
                failed = Some(err);
                return Ok(false);
            }
        }
        Ok(true)
    });
    if let Some(err) = failed {
        return Err(err);
    }
    result.map_err(|e| E::from(decode_error(e)))?;
    let mut rest: Vec<(String, (usize, RowBatch))> = open.into_iter().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, (version, mut rows)) in rest {
        if rows.rows() > 0 {
            sink(&schemas.schemas[version], rows.finish())?;
        }
    }
    Ok(())
}

fn decode_error(e: JournalError) -> CompactError {
    match e {
        JournalError::Undecodable { seq, what } => CompactError::Decode { seq, message: what },
        other => other.into(),
    }
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() || total < 100_000 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "compacting {bar:40} {pos}/{len} events ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests;
