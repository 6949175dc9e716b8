//! The `rollup` command and job kind: [`crate::audit::rollup`] merges the small files of
//! closed date partitions, then retention (`audit.retain_days`) folds the expired ones into
//! the changes each table's state reads. Retention reads the state through
//! [`crate::query`], which reads the audit files: so it sits above both.
//!
//! **Folding.** Deleting a table's old partitions outright would delete its snapshot, and
//! with it every row that has not changed since: `query`, `--as-of` and `backfill` would
//! answer from a partial history. So [`fold`] keeps, of all the expired partitions of a table
//! together, exactly the changes that the table's state as of their end reads (the `query`
//! state view's own walk, [`crate::query::needed_seqs`]): each live key's latest change, the
//! changes its unsent columns (unchanged TOAST) are filled from, the create halves of key
//! changes that link a key to its old key's history, and the latest change of every key those
//! belong to (so the old key of a key change stays deleted). The rest goes: deletes and the history
//! of deleted keys, rows before a truncate, changes that a later one replaced. What is left is
//! the table's base: one latest row per live key (plus the few that fill it), in the files
//! and partitions it came in, so every reader reads it as before and the state of every
//! later time is unchanged. The history before the cutoff is not: `query --as-of` before it
//! says so and answers nothing.
//!
//! A file keeps its name (its range still bounds its rows) and its footer; a file with no
//! change left is deleted, one with every change left is not rewritten. A rewrite is
//! published whole, in place (staging file and rename, or a multipart upload that completes
//! last). A crash between files leaves some folded and some not; the next run folds the rest
//! and finds the same changes needed, because a folded file still holds every change the
//! state reads. Tables without a key have no state: their expired partitions are deleted.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use arrow::array::{Array, BooleanArray, Int64Array};
use futures::TryStreamExt;
use object_store::buffered::BufWriter;
use object_store::ObjectStoreExt;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::arrow::ProjectionMask;

use crate::audit::rollup::{self, delete, lock, merge, read, without_leftovers, Lock};
use crate::audit::rollup::{Options, RollupError, Summary};
use crate::audit::{writer, AuditError, AuditFile, AuditStore};
use crate::config::Config;
use crate::types::cdc;

/// Rolls up the closed date partitions chosen by `opts`, then folds each table's expired
/// partitions ([`fold`]) and rolls up what is left of them.
pub async fn rollup(config: &Config, opts: &Options) -> Result<Summary, RollupError> {
    let (mut summary, expired) = rollup::rollup(config, opts).await?;
    if summary.waited_for_compaction {
        return Ok(summary);
    }
    let store = AuditStore::open(&config.audit)?;
    for (table, files) in expired {
        let _lock = match lock(config).await? {
            Lock::Held(l) => l,
            Lock::Pending => {
                tracing::warn!("an unfinished compaction window is pending; retention waits for the next compaction cycle to finish it");
                summary.waited_for_compaction = true;
                return Ok(summary);
            }
        };
        let dates: BTreeSet<String> = files.iter().map(|f| f.date.clone()).collect();
        fold(config, &store, &table, files, &mut summary).await?;
        // What is left of each folded date is rolled up like any closed partition.
        let mut left: BTreeMap<String, Vec<AuditFile>> = BTreeMap::new();
        for f in store.list_files(Some(&table)).await? {
            if dates.contains(&f.date) {
                left.entry(f.date.clone()).or_default().push(f);
            }
        }
        for files in left.into_values().filter(|f| f.len() >= 2) {
            merge::merge_runs(config, &store, files, &mut summary).await?;
        }
    }
    Ok(summary)
}

/// Runs one roll-up and prints what it did (one line).
pub fn run(config: &Config, opts: &Options) -> Result<(), RollupError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(RollupError::Runtime)?;
    let started = std::time::Instant::now();
    let s = rt.block_on(rollup(config, opts))?;
    println!(
        "{} in {:.1}s",
        describe(&s),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The job kind `rollup`: the result line `jobs-state.json` keeps.
pub async fn job(config: &Config, name: &str) -> String {
    let started = std::time::Instant::now();
    match rollup(config, &Options::default()).await {
        Ok(s) => {
            tracing::info!(job = %name, seconds = format!("{:.2}", started.elapsed().as_secs_f64()), "{}", describe(&s));
            if s.waited_for_compaction {
                "waited: a compaction window is pending".to_string()
            } else {
                "ok".to_string()
            }
        }
        Err(e) => {
            tracing::error!(job = %name, "job failed: {e}");
            format!("failed: {e}")
        }
    }
}

fn describe(s: &Summary) -> String {
    if s.waited_for_compaction {
        return "rolled up nothing: a compaction window is unfinished; the next compaction cycle finishes it, then run rollup again".into();
    }
    let mut out = format!(
        "rolled up {} closed date partition(s): {} file(s) merged into {} ({} rows)",
        s.partitions, s.files_merged, s.files_written, s.rows
    );
    if s.leftovers_deleted > 0 {
        out.push_str(&format!(
            "; {} file(s) left by an interrupted roll-up deleted",
            s.leftovers_deleted
        ));
    }
    if s.expired_partitions > 0 {
        out.push_str(&format!(
            "; retention folded {} expired partition(s) into the {} change(s) the state reads: {} file(s) deleted, {} rewritten, {} bytes freed",
            s.expired_partitions, s.folded_rows, s.expired_files, s.folded_files, s.expired_bytes
        ));
    }
    out
}

/// Folds the expired partitions of `table` (`files`: every file of every expired date) into
/// the changes its state reads (see the module doc). The caller holds `compact.lock`.
pub async fn fold(
    config: &Config,
    store: &AuditStore,
    table: &str,
    files: Vec<AuditFile>,
    summary: &mut Summary,
) -> Result<(), RollupError> {
    let kept_before = summary.folded_rows;
    let mut files = without_leftovers(store, files, summary).await?;
    files.sort_by_key(|f| (f.first_seq, f.last_seq));
    let dates: BTreeSet<String> = files.iter().map(|f| f.date.clone()).collect();
    summary.expired_partitions += dates.len() as u64;
    let scratch = config.journal.dir.join(".retention");
    let needed = crate::query::needed_seqs(store, table, &files, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    let needed = needed.map_err(|e| RollupError::Fold {
        table: table.to_string(),
        message: e.to_string(),
    })?;
    for f in &files {
        match &needed {
            Some(keep) => prune(config, store, f, keep, summary).await?,
            None => {
                delete(store, f).await?;
                summary.expired_files += 1;
                summary.expired_bytes += f.size;
            }
        }
    }
    for f in &files {
        remove_empty_dir(store, f);
    }
    tracing::info!(
        table = %table,
        dates = dates.len(),
        kept_rows = summary.folded_rows - kept_before,
        "folded the expired date partitions (audit.retain_days) into the changes the state reads"
    );
    Ok(())
}

/// Keeps, of file `f`, only the changes in `keep` (see the module doc).
async fn prune(
    config: &Config,
    store: &AuditStore,
    f: &AuditFile,
    keep: &HashSet<i64>,
    summary: &mut Summary,
) -> Result<(), RollupError> {
    let read_err = |e: parquet::errors::ParquetError| AuditError::Read {
        location: store.describe_location(f),
        source: Box::new(e),
    };
    // Which changes stay: the sequence column alone.
    let builder = read::open(store, f).await?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), [cdc::SEQ]);
    let mut stream = builder.with_projection(mask).build().map_err(read_err)?;
    let (mut rows, mut kept) = (0u64, 0u64);
    while let Some(batch) = stream.try_next().await.map_err(read_err)? {
        let seqs = seq_column(store, f, &batch)?;
        rows += seqs.len() as u64;
        kept += seqs.values().iter().filter(|s| keep.contains(s)).count() as u64;
    }
    summary.folded_rows += kept;
    if kept == rows {
        return Ok(());
    }
    if kept == 0 {
        delete(store, f).await?;
        summary.expired_files += 1;
        summary.expired_bytes += f.size;
        return Ok(());
    }
    let builder = read::open(store, f).await?;
    let batch_rows = read::batch_rows(&builder, rows, config.budget().batch_bytes);
    let footer: Vec<parquet::file::metadata::KeyValue> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .filter(|kv| kv.key != "ARROW:schema")
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let schema = builder.schema().clone();
    let write_err = |e: parquet::errors::ParquetError| AuditError::Write {
        url: store.url.clone(),
        location: f.location.to_string(),
        source: Box::new(e),
    };
    let props = writer::writer_properties(config.audit.batch_rows, &schema);
    let object = BufWriter::new(store.store.clone(), f.location.clone());
    let mut out = AsyncArrowWriter::try_new(object, schema, Some(props)).map_err(write_err)?;
    for kv in footer {
        out.append_key_value_metadata(kv);
    }
    let mut stream = builder
        .with_batch_size(batch_rows)
        .build()
        .map_err(read_err)?;
    while let Some(batch) = stream.try_next().await.map_err(read_err)? {
        let seqs = seq_column(store, f, &batch)?;
        let wanted: BooleanArray = seqs
            .values()
            .iter()
            .map(|s| Some(keep.contains(s)))
            .collect();
        let batch =
            arrow::compute::filter_record_batch(&batch, &wanted).map_err(|e| AuditError::Read {
                location: store.describe_location(f),
                source: Box::new(e),
            })?;
        if batch.num_rows() > 0 {
            out.write(&batch).await.map_err(write_err)?;
        }
    }
    // Published whole when it closes, after the last read of the old file.
    out.close().await.map_err(write_err)?;
    store.sync_local(&f.location)?;
    let size = store
        .store
        .head(&f.location)
        .await
        .map(|m| m.size)
        .unwrap_or(f.size);
    summary.folded_files += 1;
    summary.expired_bytes += f.size.saturating_sub(size);
    Ok(())
}

fn seq_column<'b>(
    store: &AuditStore,
    f: &AuditFile,
    batch: &'b arrow::array::RecordBatch,
) -> Result<&'b Int64Array, RollupError> {
    batch
        .column_by_name(cdc::SEQ)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| RollupError::Merge {
            what: store.describe_location(f),
            message: "it has no _cdc_seq column".into(),
        })
}

/// On a file system, the `date=` directory of `f` once it is empty (S3 has no directories).
fn remove_empty_dir(store: &AuditStore, f: &AuditFile) {
    if let Some(root) = &store.local_root {
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
}

#[cfg(test)]
mod tests {
    /// The shipped `jobs/rollup.yaml` loads as the kind `rollup`, beside `jobs/compact.yaml`.
    #[test]
    fn the_shipped_rollup_job_loads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
        let jobs = crate::schedule::load_jobs(&dir).unwrap();
        let rollup = jobs
            .iter()
            .find(|j| j.name == "rollup")
            .expect("jobs/rollup.yaml");
        assert_eq!(rollup.kind, crate::schedule::JobKind::Rollup);
        assert_eq!(rollup.schedule, "0 30 0 * * *");
        assert!(jobs
            .iter()
            .any(|j| j.kind == crate::schedule::JobKind::Compact));
    }
}
