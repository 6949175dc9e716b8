//! Roll-up and retention of audit files (`db-sync rollup`, job kind `rollup`; issue 17).
//!
//! Every compaction cycle writes one file per table, date and schema version, so a one-minute
//! schedule leaves 1,440 small files per table and day. [`rollup`] merges the files of each
//! date partition before today (UTC) into as few files as `audit.target_file_mb` allows, and
//! deletes date partitions older than `audit.retain_days`.
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
//! leftovers first, then goes on where it stopped. Re-running is always safe.
//!
//! **Concurrency.** Each partition is handled under `compact.lock`, so neither a compaction
//! cycle nor a backfill (which holds the lock while it reads) runs meanwhile. Partitions of
//! the current date are left alone: cycles still write them. A change of an earlier date that
//! arrives late (after an outage) gets a new file with higher sequence numbers, which the next
//! roll-up merges too. A compaction window left unfinished by a crash is redone by the next
//! cycle first: until then, roll-up touches nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use chrono::{NaiveDate, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use futures::TryStreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use super::{AuditError, AuditFile, AuditStore, TABLE_SCHEMA_METADATA};
use crate::config::Config;
use crate::error::{Classify, ErrorKind};
use crate::failpoint;
use crate::state::{locks, AuditProgress, StateError};

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
}

impl Classify for RollupError {
    fn kind(&self) -> ErrorKind {
        match self {
            RollupError::Audit(e) => e.kind(),
            RollupError::State(e) => e.kind(),
            RollupError::Usage { .. } => ErrorKind::Config,
            RollupError::Merge { .. } => ErrorKind::Permanent,
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
    /// Retention: date partitions, files and bytes deleted.
    pub expired_partitions: u64,
    pub expired_files: u64,
    pub expired_bytes: u64,
    /// A compaction window is unfinished: nothing was done (the next cycle finishes it).
    pub waited_for_compaction: bool,
}

/// Rolls up the closed date partitions chosen by `opts` and applies `audit.retain_days`.
/// Re-runnable: it first deletes the leftovers of an interrupted run (see the module doc).
pub async fn rollup(config: &Config, opts: &Options) -> Result<Summary, RollupError> {
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
    if let Some(t) = &opts.table {
        if files.is_empty() {
            let tables: Vec<String> = store
                .list_files(None)
                .await?
                .into_iter()
                .map(|f| f.table)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            return Err(RollupError::Usage {
                key: "--table".into(),
                message: format!(
                    "{t}: no audit files under {}; they hold {} (write SCHEMA.TABLE)",
                    store.url,
                    if tables.is_empty() {
                        "no table yet".to_string()
                    } else {
                        tables.join(", ")
                    }
                ),
            });
        }
    }
    let today = Utc::now().date_naive().format("%Y-%m-%d").to_string();
    if let Some(d) = &opts.date {
        if *d >= today {
            return Err(RollupError::Usage {
                key: "--date".into(),
                message: format!(
                    "{d} is not closed yet: compaction cycles still write today's partition ({today} UTC); name an earlier date"
                ),
            });
        }
    }
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
    let target_bytes = config.audit.target_file_mb.saturating_mul(1 << 20);
    for ((table, date), files) in partitions {
        if date >= today || opts.date.as_ref().is_some_and(|d| *d != date) {
            continue;
        }
        let expired = expire_before.as_ref().is_some_and(|cut| date < *cut);
        if files.len() < 2 && !expired {
            continue; // nothing to merge, no leftover possible
        }
        let _lock = match lock(config)? {
            Lock::Held(l) => l,
            Lock::Pending => {
                tracing::warn!("an unfinished compaction window is pending; roll-up waits for the next compaction cycle to finish it");
                summary.waited_for_compaction = true;
                return Ok(summary);
            }
        };
        summary.partitions += 1;
        if expired {
            expire(&store, &files, &mut summary).await?;
            tracing::info!(table = %table, date = %date, files = files.len(), "deleted an expired date partition (audit.retain_days)");
            continue;
        }
        let leftovers = superseded(&store, &files).await?;
        for f in &leftovers {
            delete(&store, f).await?;
            summary.leftovers_deleted += 1;
        }
        let gone: HashSet<&ObjectPath> = leftovers.iter().map(|f| &f.location).collect();
        let files: Vec<AuditFile> = files
            .into_iter()
            .filter(|f| !gone.contains(&f.location))
            .collect();
        roll_partition(config, &store, files, target_bytes, &mut summary).await?;
    }
    Ok(summary)
}

enum Lock {
    Held(Option<std::fs::File>),
    Pending,
}

/// The compaction lock (when a journal exists), unless a compaction window is pending.
fn lock(config: &Config) -> Result<Lock, RollupError> {
    let dir = &config.journal.dir;
    if !dir.is_dir() {
        return Ok(Lock::Held(None));
    }
    let lock = locks::compact_lock(dir)?;
    if AuditProgress::load(dir)?.pending.is_some() {
        return Ok(Lock::Pending);
    }
    Ok(Lock::Held(Some(lock)))
}

async fn delete(store: &AuditStore, f: &AuditFile) -> Result<(), RollupError> {
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

async fn expire(
    store: &AuditStore,
    files: &[AuditFile],
    summary: &mut Summary,
) -> Result<(), RollupError> {
    for f in files {
        delete(store, f).await?;
        summary.expired_files += 1;
        summary.expired_bytes += f.size;
    }
    summary.expired_partitions += 1;
    if let (Some(root), Some(f)) = (&store.local_root, files.first()) {
        // An empty `date=` directory would linger on a file system (S3 has no directories).
        let mut dir = root.clone();
        let parts: Vec<_> = f
            .location
            .parts()
            .skip(store.prefix.parts().count())
            .collect();
        for p in &parts[..parts.len().saturating_sub(1)] {
            dir.push(p.as_ref());
        }
        let _ = std::fs::remove_dir(&dir);
    }
    Ok(())
}

/// What a file's footer says, for grouping.
struct Footer {
    schema_json: Option<String>,
    arrow: SchemaRef,
    rows: u64,
    rollup_of: Vec<String>,
}

async fn footer(store: &AuditStore, f: &AuditFile) -> Result<Footer, AuditError> {
    let builder = open(store, f).await?;
    let meta = builder.metadata();
    let kv = |key: &str| {
        meta.file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|kv| kv.key == key))
            .and_then(|kv| kv.value.clone())
    };
    let rollup_of = kv(ROLLUP_OF_METADATA)
        .and_then(|v| serde_json::from_str::<Vec<String>>(&v).ok())
        .unwrap_or_default();
    Ok(Footer {
        schema_json: kv(TABLE_SCHEMA_METADATA),
        arrow: builder.schema().clone(),
        rows: meta.file_metadata().num_rows().max(0) as u64,
        rollup_of,
    })
}

/// An audit file read in place through the object store with ranged reads: the footer alone
/// for grouping, the row groups one by one for merging (no copy of the file is made).
struct StoreReader {
    store: Arc<dyn object_store::ObjectStore>,
    location: ObjectPath,
    size: u64,
}

fn parquet_err(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl AsyncFileReader for StoreReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.location, range)
                .await
                .map_err(parquet_err)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.location, &ranges)
                .await
                .map_err(parquet_err)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

async fn open(
    store: &AuditStore,
    f: &AuditFile,
) -> Result<ParquetRecordBatchStreamBuilder<StoreReader>, AuditError> {
    let reader = StoreReader {
        store: store.store.clone(),
        location: f.location.clone(),
        size: f.size,
    };
    ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| AuditError::Read {
            location: store.describe_location(f),
            source: Box::new(e),
        })
}

fn file_name(f: &AuditFile) -> &str {
    f.location.filename().unwrap_or("")
}

/// The files among `files` that a merged file covering their range lists as replaced: the
/// leftovers of an interrupted roll-up. Reads only the footers of files whose range covers
/// another file's (none in the usual case, where ranges do not overlap).
pub async fn superseded(
    store: &AuditStore,
    files: &[AuditFile],
) -> Result<Vec<AuditFile>, AuditError> {
    let mut by_part: BTreeMap<(&str, &str, &str), Vec<&AuditFile>> = BTreeMap::new();
    for f in files {
        by_part
            .entry((&f.table, &f.date, &f.journal))
            .or_default()
            .push(f);
    }
    let mut out = Vec::new();
    let mut lists: HashMap<ObjectPath, Vec<String>> = HashMap::new();
    for (_, mut part) in by_part {
        // Containers first: by first sequence, then the wider range first.
        part.sort_by(|a, b| (a.first_seq, b.last_seq).cmp(&(b.first_seq, a.last_seq)));
        let mut widest = 0u64; // the highest last_seq of the files before
        for (i, x) in part.iter().enumerate() {
            if i > 0 && widest >= x.last_seq {
                for c in &part[..i] {
                    if c.last_seq < x.last_seq {
                        continue;
                    }
                    if !lists.contains_key(&c.location) {
                        let list = footer(store, c).await?.rollup_of;
                        lists.insert(c.location.clone(), list);
                    }
                    if lists[&c.location].iter().any(|n| n == file_name(x)) {
                        out.push((*x).clone());
                        break;
                    }
                }
            }
            widest = widest.max(x.last_seq);
        }
    }
    Ok(out)
}

/// `files` without the leftovers of an interrupted roll-up ([`superseded`]): what readers in
/// db-sync read, so every change is read exactly once whenever a roll-up stopped.
pub async fn visible(
    store: &AuditStore,
    files: Vec<AuditFile>,
) -> Result<Vec<AuditFile>, AuditError> {
    let gone: HashSet<ObjectPath> = superseded(store, &files)
        .await?
        .into_iter()
        .map(|f| f.location)
        .collect();
    if gone.is_empty() {
        return Ok(files);
    }
    Ok(files
        .into_iter()
        .filter(|f| !gone.contains(&f.location))
        .collect())
}

/// Merges runs of consecutive files of one (table, date) partition, per journal: a run ends
/// at a schema change, at a file whose range overlaps the run's, or at `target_bytes`.
async fn roll_partition(
    config: &Config,
    store: &AuditStore,
    files: Vec<AuditFile>,
    target_bytes: u64,
    summary: &mut Summary,
) -> Result<(), RollupError> {
    let mut by_journal: BTreeMap<String, Vec<AuditFile>> = BTreeMap::new();
    for f in files {
        by_journal.entry(f.journal.clone()).or_default().push(f);
    }
    for (_, mut files) in by_journal {
        if files.len() < 2 {
            continue;
        }
        files.sort_by_key(|f| (f.first_seq, f.last_seq));
        let mut groups: Vec<Vec<(AuditFile, Footer)>> = Vec::new();
        let mut current: Vec<(AuditFile, Footer)> = Vec::new();
        let mut bytes = 0u64;
        for f in files {
            let meta = footer(store, &f).await?;
            let fits = current.last().is_some_and(|(last, lm)| {
                f.first_seq > last.last_seq
                    && meta.schema_json.is_some()
                    && meta.schema_json == lm.schema_json
                    && meta.arrow.fields() == lm.arrow.fields()
                    && bytes + f.size <= target_bytes
            });
            if !fits && !current.is_empty() {
                groups.push(std::mem::take(&mut current));
                bytes = 0;
            }
            bytes += f.size;
            current.push((f, meta));
        }
        groups.push(current);
        for group in groups.into_iter().filter(|g| g.len() >= 2) {
            merge(config, store, group, summary).await?;
        }
    }
    Ok(())
}

/// Writes one merged file from `group` (consecutive, non-overlapping, one schema), then
/// deletes the group's files. See the module doc for what a crash leaves.
async fn merge(
    config: &Config,
    store: &AuditStore,
    group: Vec<(AuditFile, Footer)>,
    summary: &mut Summary,
) -> Result<(), RollupError> {
    let (first, last) = (&group[0].0, &group[group.len() - 1].0);
    let location = store.file_location(
        &first.table,
        &first.date,
        (first.first_seq, last.last_seq),
        &first.journal,
    );
    let what = store.describe_location(&AuditFile {
        location: location.clone(),
        ..first.clone()
    });
    let fail = |message: String| RollupError::Merge {
        what: what.clone(),
        message,
    };
    if group.iter().any(|(f, _)| f.location == location) {
        return Ok(()); // cannot happen for a run of two or more; never overwrite a member
    }
    let write_err = |e: parquet::errors::ParquetError| AuditError::Write {
        url: store.url.clone(),
        location: location.to_string(),
        source: Box::new(e),
    };
    let schema = group[0].1.arrow.clone();
    let batch_rows = config.audit.batch_rows;
    let batch_bytes = config.budget().batch_bytes;
    let props = super::writer::writer_properties(batch_rows, &schema);
    let object = BufWriter::new(store.store.clone(), location.clone());
    let mut writer =
        AsyncArrowWriter::try_new(object, schema.clone(), Some(props)).map_err(write_err)?;
    if let Some(json) = &group[0].1.schema_json {
        writer.append_key_value_metadata(KeyValue::new(TABLE_SCHEMA_METADATA.into(), json.clone()));
    }
    let names: Vec<&str> = group.iter().map(|(f, _)| file_name(f)).collect();
    let names_json = serde_json::to_string(&names).map_err(|e| fail(e.to_string()))?;
    writer.append_key_value_metadata(KeyValue::new(ROLLUP_OF_METADATA.into(), names_json));

    let mut rows = 0u64;
    let mut last_seq = i64::MIN;
    for (f, meta) in &group {
        let builder = open(store, f).await?;
        let m = builder.metadata();
        let total: i64 = m.row_groups().iter().map(|g| g.total_byte_size()).sum();
        let per_row = (total / (meta.rows.max(1) as i64)).max(1) as usize;
        let mut stream = builder
            .with_batch_size((batch_bytes / per_row).clamp(1, 8192))
            .build()
            .map_err(|e| AuditError::Read {
                location: store.describe_location(f),
                source: Box::new(e),
            })?;
        let mut file_rows = 0u64;
        while let Some(batch) = stream.try_next().await.map_err(|e| AuditError::Read {
            location: store.describe_location(f),
            source: Box::new(e),
        })? {
            // The order the name and the readers rely on, checked rather than assumed.
            let seqs = batch
                .column_by_name(crate::types::cdc::SEQ)
                .and_then(|c| {
                    c.as_any()
                        .downcast_ref::<arrow::array::Int64Array>()
                        .cloned()
                })
                .ok_or_else(|| fail(format!("{} has no _cdc_seq column", file_name(f))))?;
            for s in seqs.values().iter() {
                if *s <= last_seq {
                    return Err(fail(format!(
                        "{} is not in _cdc_seq order after the files before it",
                        file_name(f)
                    )));
                }
                last_seq = *s;
            }
            writer.write(&batch).await.map_err(write_err)?;
            if writer.in_progress_size() >= batch_bytes {
                writer.flush().await.map_err(write_err)?;
            }
            file_rows += batch.num_rows() as u64;
        }
        if file_rows != meta.rows {
            return Err(fail(format!(
                "{} gave {file_rows} rows, its footer says {}",
                file_name(f),
                meta.rows
            )));
        }
        rows += file_rows;
    }
    writer.close().await.map_err(write_err)?;
    store.sync_local(&location)?;
    tracing::info!(file = %location, files = group.len(), rows, "wrote a rolled-up audit file");
    failpoint::hit("rollup.after_merged");
    for (f, _) in &group {
        delete(store, f).await?;
        failpoint::hit("rollup.after_delete");
    }
    summary.files_merged += group.len() as u64;
    summary.files_written += 1;
    summary.rows += rows;
    Ok(())
}

/// What the audit store holds of one table, for `status`.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct TableFiles {
    pub table: String,
    pub files: u64,
    pub bytes: u64,
    /// The oldest and newest date partitions kept (`YYYY-MM-DD`).
    pub oldest_date: String,
    pub newest_date: String,
}

/// Files, bytes and the date range kept per table (one listing of the store). Runs on its own
/// thread and runtime, so it may be called from async code too.
pub fn table_files(config: &Config) -> Result<Vec<TableFiles>, String> {
    let audit = config.audit.clone();
    let listing = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let store = AuditStore::open(&audit).map_err(|e| e.to_string())?;
        rt.block_on(store.list_files(None))
            .map_err(|e| e.to_string())
    });
    let files = listing
        .join()
        .map_err(|_| "the audit listing panicked".to_string())??;
    let mut out: BTreeMap<String, TableFiles> = BTreeMap::new();
    for f in files {
        let t = out.entry(f.table.clone()).or_insert_with(|| TableFiles {
            table: f.table.clone(),
            files: 0,
            bytes: 0,
            oldest_date: f.date.clone(),
            newest_date: f.date.clone(),
        });
        t.files += 1;
        t.bytes += f.size;
        if f.date < t.oldest_date {
            t.oldest_date = f.date.clone();
        }
        if f.date > t.newest_date {
            t.newest_date = f.date;
        }
    }
    Ok(out.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(date: &str, first: u64, last: u64, journal: &str) -> AuditFile {
        AuditFile {
            table: "public.t".into(),
            date: date.into(),
            first_seq: first,
            last_seq: last,
            journal: journal.into(),
            location: ObjectPath::from(format!(
                "public.t/date={date}/{first}-{last}.{journal}.parquet"
            )),
            size: 1,
        }
    }

    /// Without overlapping ranges no footer is read (the store here has no files at all), and
    /// nothing is superseded; files of two journals never cover one another.
    #[tokio::test]
    async fn disjoint_ranges_supersede_nothing_without_reading_a_footer() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&crate::config::AuditConfig {
            url: format!("file://{}", dir.path().display()),
            ..Default::default()
        })
        .unwrap();
        let files = vec![
            file("2026-01-01", 1, 10, "aa"),
            file("2026-01-01", 11, 20, "aa"),
            file("2026-01-01", 5, 50, "bb"),
            file("2026-01-02", 5, 50, "aa"),
        ];
        assert!(superseded(&store, &files).await.unwrap().is_empty());
        // A covering range makes it read the container's footer: here an error, as no file
        // exists; it proves the check is attempted exactly when ranges nest.
        let nested = vec![
            file("2026-01-01", 1, 20, "aa"),
            file("2026-01-01", 11, 20, "aa"),
        ];
        assert!(superseded(&store, &nested).await.is_err());
    }
}
