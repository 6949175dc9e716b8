//! The audit stage: sealed journal windows → Parquet audit files (their layout:
//! [audit files](crate::audit#audit-files)).
//!
//! [`audit_once`] guarantees, for the window of sequences it handles:
//!
//! - **Exactly once.** Every journal event lands in exactly one audit file. The window is
//!   recorded in [`AuditProgress`] before any file is written; file names derive from the
//!   window's events (`<first_seq>-<last_seq>.<journal>.parquet` per table, commit date and
//!   schema version, see [`crate::compact::plan`]), so a re-run after a crash anywhere
//!   rewrites the same names and never adds a second copy.
//! - **Whole files.** A file is published only when complete (see [`crate::audit`]), and on
//!   `file://` it is fsynced with its directories before the progress file counts it.
//! - **Bounded memory.** Events are decoded in batches of `audit.batch_rows` rows (or of the
//!   memory budget's batch bytes, [`crate::config::Budget`]) per file being written; a window
//!   of any size streams through.
//! - **Nothing lost on failure.** An unreachable or unauthorised store fails before anything
//!   is written; any later failure leaves the journal as it was and the window `pending`, to
//!   be redone whole by the next run.
//!
//! Work is split across two cores: a thread reads and decodes the journal into Arrow batches
//! ([`crate::compact::decode_window`]), while the async side encodes Parquet and uploads.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::DataType;
use object_store::buffered::BufWriter;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::{AuditError, AuditStore, TABLE_SCHEMA_METADATA};
use crate::compact::{self, CompactError, Decoded, Plan, UnknownTypeWarnings};
use crate::config::Config;
use crate::error::{Classify, ErrorKind};
use crate::failpoint;
use crate::journal::{self, JournalError};
use crate::state::{AuditProgress, StateError, Window};
use crate::types::cdc;

const SEAL_WAIT: Duration = Duration::from_secs(30);

/// Why an audit stopped.
#[derive(Debug, thiserror::Error)]
pub enum AuditRunError {
    #[error(transparent)]
    Decode(#[from] CompactError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Store(#[from] AuditError),
    /// A blocking step (sealing, planning) panicked or was cancelled.
    #[error("compaction stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("compaction stopped: cannot start the decoder thread: {0}")]
    DecoderThread(#[source] std::io::Error),
    #[error("compaction stopped: the decoder thread panicked")]
    DecoderPanicked,
    /// Fewer files were completed than planned (the decoder ended early without an error).
    #[error("compaction stopped: {published} of {planned} audit files were completed; the window is redone on the next run")]
    Incomplete { published: u64, planned: u64 },
}

impl Classify for AuditRunError {
    fn kind(&self) -> ErrorKind {
        match self {
            AuditRunError::Decode(e) => e.kind(),
            AuditRunError::Journal(e) => e.kind(),
            AuditRunError::State(e) => e.kind(),
            AuditRunError::Store(e) => e.kind(),
            AuditRunError::Task(_)
            | AuditRunError::DecoderThread(_)
            | AuditRunError::DecoderPanicked
            | AuditRunError::Incomplete { .. } => ErrorKind::Permanent,
        }
    }
}

/// What one audit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub from: u64,
    pub to: u64,
    pub events: u64,
    pub files: u64,
    pub tables: usize,
}

/// Seals the journal, audits every sealed event not yet audited and records the progress.
/// `Ok(None)`: nothing new. The caller holds the compaction lock ([`crate::cycle`]).
pub async fn audit_once(config: &Config) -> Result<Option<Summary>, AuditRunError> {
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
        tokio::task::spawn_blocking(move || journal::seal(&dir, max, SEAL_WAIT)).await??;
    }

    let mut progress = AuditProgress::load(&dir)?;
    let window = match progress.pending.clone() {
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
            let from = progress.audited_through + 1;
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
    progress.pending = Some(window.clone());
    progress.store(&dir)?;

    let plan = {
        let dir = dir.clone();
        let (from, to) = (window.from, window.to);
        tokio::task::spawn_blocking(move || compact::plan(&dir, from, to)).await??
    };
    let mut warnings = UnknownTypeWarnings::default();
    for schema in plan.schemas() {
        warnings.check(schema);
    }
    let (events, tables) = (plan.events(), plan.tables());
    let files = write_files(config, &store, &dir, &window, Arc::new(plan)).await?;

    failpoint::hit("compact.before_manifest");
    let mut done = window.clone();
    done.events = events;
    done.files = files;
    progress.complete(done);
    progress.store(&dir)?;
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

/// The Parquet settings of every audit file of `schema` (and of a rolled-up file):
///
/// - zstd at level 1 on pages of at most [`PAGE_ROWS`] rows, one row group per decoded batch
///   (on pages this size, level 3 came out no smaller in the compaction benchmark, and is
///   slower);
/// - statistics (min/max, null count) per row group *and* per page for every column, so the
///   footer and the page index (column index + offset index) cover `_cdc_seq`, `_cdc_ts` and
///   the key columns; rows are written in `_cdc_seq` order, so `_cdc_seq` and `_cdc_ts`
///   ranges of row groups and pages are narrow and an `--as-of` bound or a sequence range
///   skips most of a large file;
/// - `sorting_columns = [_cdc_seq ASC]`, which tells readers (DuckDB, Spark, DataFusion) the
///   order they may rely on;
/// - `_cdc_seq` and `_cdc_ts` in `DELTA_BINARY_PACKED`, without a dictionary: both rise (or
///   stay equal) from row to row, so a delta takes a few bits where a dictionary of unique
///   values costs more than the values themselves;
/// - a dictionary for the other columns only while it stays under [`DICTIONARY_BYTES`] per
///   column chunk: a column of few distinct values (an op, a status) keeps it, a column of
///   mostly distinct values (keys, prices, times, free text) falls back to `PLAIN` after its
///   first page, which zstd compresses better than a dictionary of unique values.
pub fn writer_properties(batch_rows: usize, schema: &arrow::datatypes::Schema) -> WriterProperties {
    use parquet::file::properties::EnabledStatistics;
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(batch_rows))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_offset_index_disabled(false)
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_dictionary_page_size_limit(DICTIONARY_BYTES)
        .set_sorting_columns(seq_order(schema))
        .set_created_by(format!("db-sync {}", env!("CARGO_PKG_VERSION")));
    for name in [cdc::SEQ, cdc::TS] {
        // DELTA_BINARY_PACKED is for INT32/INT64 only: a column of another type keeps the
        // defaults (no audit file has one; the check keeps a foreign file writable).
        let int64 = schema
            .field_with_name(name)
            .is_ok_and(|f| matches!(f.data_type(), DataType::Int64 | DataType::Timestamp(..)));
        if int64 {
            let path = ColumnPath::from(name);
            builder = builder
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
        }
    }
    builder.build()
}

/// `sorting_columns` of a file of `schema`: `_cdc_seq` ascending, named by its leaf index.
fn seq_order(schema: &arrow::datatypes::Schema) -> Option<Vec<SortingColumn>> {
    let descr = parquet::arrow::ArrowSchemaConverter::new()
        .convert(schema)
        .ok()?;
    let i = descr
        .columns()
        .iter()
        .position(|c| c.path().string() == cdc::SEQ)?;
    Some(vec![SortingColumn {
        column_idx: i as i32,
        descending: false,
        nulls_first: false,
    }])
}

/// Rows per data page at most: the granularity of the page index.
const PAGE_ROWS: usize = 8192;

/// Bytes of dictionary per column chunk at most (counted as `PLAIN` writes the values: 2,048
/// int64 values, some 600 short strings) before the column falls back to `PLAIN`. parquet's
/// default, 1 MiB, kept a dictionary of all 65,536 values of a row group of distinct keys,
/// times or prices: 8 bytes a value in the dictionary and 2 more for its index, which zstd
/// compresses worse than the values alone, and building it cost more time than the rest of
/// the encoding (the compaction benchmark's 1M rows: 29.4 MB, 21.4 MB with this limit).
const DICTIONARY_BYTES: usize = 16 * 1024;

async fn write_files(
    config: &Config,
    store: &AuditStore,
    dir: &Path,
    window: &Window,
    plan: Arc<Plan>,
) -> Result<u64, AuditRunError> {
    let placeholder = compact::placeholder(config);
    let batch_rows = config.audit.batch_rows;
    let batch_bytes = config.budget().batch_bytes;
    let progress = progress_bar(plan.events());
    let journal_id = crate::state::identity::journal_id(dir)?;

    // Bounded: at most a few decoded batches wait for the encoder.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Decoded, CompactError>>(4);
    let decoder = {
        let dir = dir.to_path_buf();
        let plan = plan.clone();
        let range = (window.from, window.to);
        let progress = progress.clone();
        std::thread::Builder::new()
            .name("compact-decode".into())
            .spawn(move || {
                let result = compact::decode_window(
                    &dir,
                    range,
                    &plan,
                    (batch_rows, batch_bytes),
                    &placeholder,
                    &progress,
                    |d| tx.blocking_send(Ok(d)).is_ok(),
                );
                if let Err(e) = result {
                    let _ = tx.blocking_send(Err(e));
                }
            })
            .map_err(AuditRunError::DecoderThread)?
    };

    let mut writers: HashMap<usize, (AsyncArrowWriter<BufWriter>, u64)> = HashMap::new();
    let mut published = 0u64;
    while let Some(item) = rx.recv().await {
        let Decoded { file, batch } = item?;
        let fp = &plan.files[file];
        let location = store.file_location(
            &fp.table.table,
            &fp.date,
            (fp.first_seq, fp.last_seq),
            &journal_id,
        );
        let write_err = |e: parquet::errors::ParquetError| AuditError::Write {
            url: store.url.clone(),
            location: location.to_string(),
            source: Box::new(e),
        };
        if let std::collections::hash_map::Entry::Vacant(slot) = writers.entry(file) {
            let object = BufWriter::new(store.store.clone(), location.clone());
            let props = writer_properties(batch_rows, &batch.schema());
            let mut writer = AsyncArrowWriter::try_new(object, batch.schema(), Some(props))
                .map_err(write_err)?;
            writer.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
                TABLE_SCHEMA_METADATA.to_string(),
                fp.schema_json.to_string(),
            ));
            slot.insert((writer, 0));
        }
        let (writer, rows) = writers.get_mut(&file).expect("inserted above");
        writer.write(&batch).await.map_err(write_err)?;
        // A row group per batch's worth of bytes, not per `batch_rows` rows: rows of large
        // values must not pile up in the writer.
        if writer.in_progress_size() >= batch_bytes {
            writer.flush().await.map_err(write_err)?;
        }
        *rows += batch.num_rows() as u64;
        if *rows == fp.rows {
            let (writer, _) = writers.remove(&file).expect("present");
            writer.close().await.map_err(write_err)?;
            store.sync_local(&location)?;
            published += 1;
            tracing::debug!(file = %location, rows = fp.rows, "published audit file");
            failpoint::hit("compact.after_file");
        }
    }
    decoder.join().map_err(|_| AuditRunError::DecoderPanicked)?;
    progress.finish_and_clear();
    if !writers.is_empty() || published != plan.files.len() as u64 {
        return Err(AuditRunError::Incomplete {
            published,
            planned: plan.files.len() as u64,
        });
    }
    Ok(published)
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
