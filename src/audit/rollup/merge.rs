//! Merging the runs of small files of a closed partition into merged files (see the module
//! doc of [`super`]: what a merged file is, and what a crash leaves).

use std::collections::BTreeMap;

use futures::TryStreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;

use super::read::{batch_rows, file_name, footer, open, Footer};
use super::{delete, RollupError, Summary, ROLLUP_OF_METADATA};
use crate::audit::{writer, AuditError, AuditFile, AuditStore, TABLE_SCHEMA_METADATA};
use crate::config::Config;
use crate::failpoint;

/// Merges the runs of consecutive files of one (table, date) partition, per journal, each run
/// into one file: a run ends at a schema change, at a file whose range overlaps the run's, or
/// at `audit.target_file_mb`.
pub async fn merge_runs(
    config: &Config,
    store: &AuditStore,
    files: Vec<AuditFile>,
    summary: &mut Summary,
) -> Result<(), RollupError> {
    let target_bytes = config.audit.target_file_mb.saturating_mul(1 << 20);
    let mut by_journal: BTreeMap<String, Vec<AuditFile>> = BTreeMap::new();
    for f in files {
        by_journal.entry(f.journal.clone()).or_default().push(f);
    }
    for (_, mut files) in by_journal {
        if files.len() < 2 {
            continue;
        }
        files.sort_by_key(|f| (f.first_seq, f.last_seq));
        for group in runs(store, files, target_bytes).await? {
            if group.len() >= 2 {
                merge(config, store, group, summary).await?;
            }
        }
    }
    Ok(())
}

/// `files` (of one journal, in sequence order) cut into runs that one file can hold: a run
/// ends at a schema change, at a file whose range overlaps the run's, or at `target_bytes`.
async fn runs(
    store: &AuditStore,
    files: Vec<AuditFile>,
    target_bytes: u64,
) -> Result<Vec<Vec<(AuditFile, Footer)>>, AuditError> {
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
    Ok(groups)
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
    if group.iter().any(|(f, _)| f.location == location) {
        return Ok(()); // cannot happen for a run of two or more; never overwrite a member
    }
    let what = store.describe_location(&AuditFile {
        location: location.clone(),
        ..first.clone()
    });
    let mut merged = MergedFile::create(config, store, &location, what, &group)?;
    for (f, meta) in &group {
        merged.copy(f, meta).await?;
    }
    let rows = merged.close().await?;
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

/// A merged file being written: the rows of its members in turn, their order checked.
struct MergedFile<'a> {
    store: &'a AuditStore,
    location: &'a ObjectPath,
    /// The file as messages name it.
    what: String,
    writer: AsyncArrowWriter<BufWriter>,
    batch_bytes: usize,
    rows: u64,
    last_seq: i64,
}

impl<'a> MergedFile<'a> {
    /// The writer of the merged file of `group`, its footer naming the schema and the files
    /// it replaces.
    fn create(
        config: &Config,
        store: &'a AuditStore,
        location: &'a ObjectPath,
        what: String,
        group: &[(AuditFile, Footer)],
    ) -> Result<MergedFile<'a>, RollupError> {
        let schema = group[0].1.arrow.clone();
        let props = writer::writer_properties(config.audit.batch_rows, &schema);
        let object = BufWriter::new(store.store.clone(), location.clone());
        let mut merged = MergedFile {
            store,
            location,
            what,
            writer: AsyncArrowWriter::try_new(object, schema, Some(props))
                .map_err(|e| write_err(store, location, e))?,
            batch_bytes: config.budget().batch_bytes,
            rows: 0,
            last_seq: i64::MIN,
        };
        if let Some(json) = &group[0].1.schema_json {
            merged.writer.append_key_value_metadata(KeyValue::new(
                TABLE_SCHEMA_METADATA.into(),
                json.clone(),
            ));
        }
        let names: Vec<&str> = group.iter().map(|(f, _)| file_name(f)).collect();
        let names_json = serde_json::to_string(&names).map_err(|e| merged.fail(e.to_string()))?;
        merged
            .writer
            .append_key_value_metadata(KeyValue::new(ROLLUP_OF_METADATA.into(), names_json));
        Ok(merged)
    }

    /// Appends the rows of member `f`, batch by batch (about the batch budget each).
    async fn copy(&mut self, f: &AuditFile, meta: &Footer) -> Result<(), RollupError> {
        let (store, location) = (self.store, self.location);
        let read_err = |e: ParquetError| AuditError::Read {
            location: store.describe_location(f),
            source: Box::new(e),
        };
        let builder = open(store, f).await?;
        let batch_rows = batch_rows(&builder, meta.rows, self.batch_bytes);
        let mut stream = builder
            .with_batch_size(batch_rows)
            .build()
            .map_err(read_err)?;
        let mut file_rows = 0u64;
        while let Some(batch) = stream.try_next().await.map_err(read_err)? {
            self.check_order(f, &batch)?;
            self.writer
                .write(&batch)
                .await
                .map_err(|e| write_err(store, location, e))?;
            if self.writer.in_progress_size() >= self.batch_bytes {
                self.writer
                    .flush()
                    .await
                    .map_err(|e| write_err(store, location, e))?;
            }
            file_rows += batch.num_rows() as u64;
        }
        if file_rows != meta.rows {
            return Err(self.fail(format!(
                "{} gave {file_rows} rows, its footer says {}",
                file_name(f),
                meta.rows
            )));
        }
        self.rows += file_rows;
        Ok(())
    }

    /// The `_cdc_seq` order the name and the readers rely on, checked rather than assumed.
    fn check_order(
        &mut self,
        f: &AuditFile,
        batch: &arrow::array::RecordBatch,
    ) -> Result<(), RollupError> {
        let seqs = batch
            .column_by_name(crate::types::cdc::SEQ)
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::Int64Array>())
            .ok_or_else(|| self.fail(format!("{} has no _cdc_seq column", file_name(f))))?;
        for &s in seqs.values().iter() {
            if s <= self.last_seq {
                return Err(self.fail(format!(
                    "{} is not in _cdc_seq order after the files before it",
                    file_name(f)
                )));
            }
            self.last_seq = s;
        }
        Ok(())
    }

    /// Completes the file (published whole); the rows it holds.
    async fn close(self) -> Result<u64, RollupError> {
        self.writer
            .close()
            .await
            .map_err(|e| write_err(self.store, self.location, e))?;
        Ok(self.rows)
    }

    fn fail(&self, message: String) -> RollupError {
        RollupError::Merge {
            what: self.what.clone(),
            message,
        }
    }
}

fn write_err(store: &AuditStore, location: &ObjectPath, e: ParquetError) -> AuditError {
    AuditError::Write {
        url: store.url.clone(),
        location: location.to_string(),
        source: Box::new(e),
    }
}
