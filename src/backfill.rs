//! `db-sync backfill --table T [--since TS] [--until TS] [--truncate]`: rebuilds the target rows
//! of one table from its audit files.
//!
//! The audit files are replayed in `_cdc_seq` order through the same merge, chunks and checkpoint
//! table as apply ([`Applier::apply_window`]), read batch by batch and applied in windows of about
//! the memory budget's window bytes (`memory_limit_mb`), each window after the one before it, so
//! the target ends as the source was at the last replayed change. It applies with the `target:`
//! settings apply uses (`target.batch_rows`, `target.truncate`, ...). The checkpoint rows go under
//! the pipeline name `<name>:backfill:<table>`, cleared when a backfill starts: a retried chunk
//! whose commit was lost is not applied twice, and a new backfill replays everything again.
//!
//! Guarantees beside a running daemon:
//!
//! - **Every audited change is replayed.** Backfill takes `compact.lock` before it lists the
//!   audit files and holds it to the end, so no cycle writes an audit file it would miss, or
//!   applies to the target meanwhile.
//! - **Readers never see a half-built table.** With `--truncate` the table is rebuilt under
//!   a shadow name and swapped in with one `RENAME TABLE` (`backfill/shadow.rs`); a failed or killed
//!   backfill leaves the old table as it was, and the next backfill drops what it left.
//!   Without `--truncate` the rows are replayed in place.
//! - **Nothing cycles would have applied is lost.** Apply's progress is left alone: what is
//!   audited is replayed here (the target then holds the latest audited values), and the
//!   next cycle applies everything after `applied_through` again, in order, which ends in
//!   the same state (a window applied again is idempotent), then what was journaled
//!   meanwhile.
//! - **A table apply holds out is applied again.** When the target refused a row of the table
//!   and apply held it out ([`crate::state::Hold`]), a backfill of its whole history ends the
//!   hold.

mod shadow;

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use chrono::{DateTime, Utc};

use crate::apply::merge::{Merger, TablePlan};
use crate::apply::{Applier, ApplyError, SweepPlan};
use crate::audit::{AuditError, AuditFile, AuditStore};
use crate::config::{Budget, Config};
use crate::state::{locks, ApplyProgress, ApplyWindow, Sweep};
use crate::types::{cdc, TableSchema};

/// What to backfill.
#[derive(Debug, Clone)]
pub struct Options {
    /// `schema.table`.
    pub table: String,
    /// Replay only changes committed at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Replay only changes committed at or before this time.
    pub until: Option<DateTime<Utc>>,
    /// Rebuild the table from nothing: under a shadow name, swapped in for the old one at
    /// the end.
    pub truncate: bool,
}

/// What a backfill did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub target_table: String,
    pub files: usize,
    /// Changes replayed (inside the time range).
    pub changes: u64,
    pub upserts: u64,
    pub deletes: u64,
    pub chunks: u32,
    /// First and last journal sequence replayed.
    pub seqs: Option<(u64, u64)>,
    /// `--truncate` replaced an existing target table.
    pub truncated: bool,
    /// Apply held the table out (the target had refused a row of it), and now applies it
    /// again.
    pub released: bool,
    pub seconds: f64,
}

/// Progress reporting: one tick per audit file read.
pub trait Progress {
    fn start(&self, files: u64);
    fn file_done(&self, changes: u64);
    fn window_applied(&self, window: (u64, u64), rows: u64);
}

/// Rebuilds the target rows of `opts.table` from its audit files (see the module doc for
/// what it guarantees).
pub async fn backfill(
    config: &Config,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<Summary, ApplyError> {
    let started = Instant::now();
    let tc = config.target.as_ref().ok_or_else(|| ApplyError::Config {
        key: "target".into(),
        message: "is not configured: backfill writes to the target; add a `target:` section".into(),
    })?;
    // Before the listing, and to the end: a cycle between the two would write a file the
    // replay never reads, and no cycle applies to the target while the table is rebuilt.
    let _lock = if config.journal.dir.is_dir() {
        Some(locks::compact_lock(&config.journal.dir).await?)
    } else {
        None
    };
    let budget = config.budget();
    let store = AuditStore::open(&config.audit)?;
    let files = files_to_replay(&store, opts, budget.batch_bytes).await?;
    check_unkeyed(&store, files.first(), budget, opts, &config.journal.dir).await?;
    let pipeline = format!("{}:backfill:{}", config.name, opts.table);
    let names = shadow::Names::of(&Applier::new(tc, &pipeline, budget)?.target_name(&opts.table));
    let mut ddl = shadow::Ddl::new(tc)?;
    ddl.drop_leftovers(&names).await?;
    // With --truncate the rows go to the shadow, swapped in at the end; else to the target.
    let mut into = tc.clone();
    if opts.truncate {
        ddl.create(&opts.table, &names, tc.create_tables).await?;
        into.table_name = names.rebuild.clone();
    }
    let mut target = Applier::new(&into, &pipeline, budget)?;
    target.prepare().await?;
    // A chunk committed by an earlier run belongs to a table rebuilt since: replay all.
    target.prune_checkpoints(u64::MAX).await?;
    let mut replay = Replay {
        target,
        settings: (tc.batch_rows, tc.truncate.applies()),
        opts,
        summary: Summary {
            target_table: names.target.clone(),
            files: files.len(),
            ..Summary::default()
        },
        progress,
        pending: Vec::new(),
        pending_bytes: 0,
        reach: 0,
        in_snapshot: false,
    };
    replay.files(&store, &files, budget).await?;
    let mut summary = replay.summary;
    if opts.truncate {
        summary.truncated = ddl.swap(&names).await?;
    }
    summary.released = release(&config.journal.dir, opts, &mut replay.target).await?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Ends apply's hold on the table (see [`crate::state::Hold`]) once a replay of its whole
/// history has rebuilt it: the changes apply passed over are in it, and the next cycle
/// applies the table again from where apply is. A replay of part of the history ends nothing.
/// Whether a hold ended.
async fn release(
    journal: &std::path::Path,
    opts: &Options,
    target: &mut Applier,
) -> Result<bool, ApplyError> {
    if !journal.is_dir() {
        return Ok(false);
    }
    let mut progress = ApplyProgress::load(journal)?;
    let Some(hold) = progress.held.get(&opts.table) else {
        return Ok(false);
    };
    let table = &opts.table;
    if opts.since.is_some() || opts.until.is_some() {
        tracing::warn!(
            "{table} stays held: only a backfill of its whole history (without --since and --until) ends the hold ({})",
            hold.reason
        );
        return Ok(false);
    }
    // A snapshot sweep the hold cut short never gets its last chunk: its stage table goes.
    if let Some(Sweep::Staging { stage }) = progress.sweeps.get(table) {
        target.drop_sweep_stage(stage).await?;
        progress.sweeps.remove(table);
    }
    progress.held.remove(table);
    progress.store(journal)?;
    tracing::info!(table = %table, "the hold on the table ends: apply applies it again from the next cycle on");
    Ok(true)
}

/// A table without a key is rebuilt only whole, from a replay that starts at a full snapshot
/// of it, and only when apply has applied everything audited (its rows may be equal, so a
/// replay over rows the target has, from the middle of its history, or that apply then
/// applies again in part, would leave them the wrong number of times): said before anything
/// is created or replayed.
async fn check_unkeyed(
    store: &AuditStore,
    first: Option<&AuditFile>,
    budget: Budget,
    opts: &Options,
    journal: &std::path::Path,
) -> Result<(), ApplyError> {
    let Some(first) = first else {
        return Ok(());
    };
    let mut reader = store
        .open_rows(first, budget.batch_bytes, &std::env::temp_dir())
        .await?;
    let schema = table_schema(&reader.schema_json, &mut Vec::new(), store, first)?;
    if schema.has_key() {
        return Ok(());
    }
    let table = &opts.table;
    if !opts.truncate || opts.since.is_some() || opts.until.is_some() {
        return Err(unkeyed(format!(
            "{table} has no primary key, so backfill rebuilds it only whole: run `db-sync backfill --table {table} --truncate` without --since and --until (replayed over the rows the target has, its changes would add equal rows again)"
        )));
    }
    if journal.is_dir() {
        let audited = crate::state::AuditProgress::load(journal)?.audited_through;
        let applied = crate::state::ApplyProgress::load(journal)?;
        if applied.pending.is_some() || applied.applied_through < audited {
            return Err(unkeyed(format!(
                "{table} has no primary key, and apply has not applied everything audited yet (applied through {}, audited through {audited}): it would apply those changes again after the rebuild. Run `db-sync compact --once` until it succeeds, then backfill again",
                applied.applied_through
            )));
        }
    }
    let first_op = match reader.next() {
        Some(batch) => {
            let batch = batch.map_err(|e| read_fail(store, first, e))?;
            batch
                .column_by_name(cdc::OP)
                .and_then(|c| c.as_string_opt::<i32>())
                .filter(|ops| !ops.is_empty())
                .map(|ops| ops.value(0).to_string())
        }
        None => None,
    };
    if first_op.as_deref() == Some("r") {
        return Ok(());
    }
    Err(unkeyed(format!(
        "{table} has no primary key, and its audit files no longer start at a full snapshot of it (retention deleted the older ones, or it was empty when it was snapshotted), so a replay cannot rebuild it. Take a new snapshot of it instead: remove it from `table.include.list`, run capture, then put it back (a table that joins the pipeline is snapshotted alone, and its target table emptied first)"
    )))
}

/// The audit files of `opts.table` to replay, in order: those an interrupted roll-up left
/// behind, those outside the time range, and those of journals before the latest one's
/// snapshot left out.
async fn files_to_replay(
    store: &AuditStore,
    opts: &Options,
    batch_bytes: usize,
) -> Result<Vec<AuditFile>, ApplyError> {
    let all = store.list_files(Some(&opts.table)).await?;
    if all.is_empty() {
        let tables: std::collections::BTreeSet<String> = store
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
        return Err(ApplyError::Config {
            key: "--table".into(),
            message: format!(
                "{}: no audit files under {}; they hold {held} (write SCHEMA.TABLE; a table appears after its first compaction, or use --resnapshot)",
                opts.table, store.url
            ),
        });
    }
    // An interrupted roll-up may have left files its merged file holds too.
    let all = crate::audit::rollup::visible(store, all).await?;
    let files = in_range(all, opts.since, opts.until);
    from_latest_snapshot(store, files, batch_bytes).await
}

/// The replay of a table's audit files: batches gathered into windows, each merged and
/// applied after the one before it.
struct Replay<'a> {
    target: Applier,
    /// `target.batch_rows`, and whether truncates apply.
    settings: (usize, bool),
    opts: &'a Options,
    summary: Summary,
    progress: &'a dyn Progress,
    /// The next window's batches, and their bytes.
    pending: Vec<(Arc<TableSchema>, RecordBatch)>,
    pending_bytes: usize,
    /// The highest `_cdc_seq` in `pending`.
    reach: u64,
    /// The last change replayed of a table without a key was a snapshot read.
    in_snapshot: bool,
}

impl Replay<'_> {
    /// Reads `files` batch by batch (those in the time range), applying a window whenever
    /// the pending batches reach the window budget and nothing later can come before them.
    async fn files(
        &mut self,
        store: &AuditStore,
        files: &[AuditFile],
        budget: Budget,
    ) -> Result<(), ApplyError> {
        self.progress.start(files.len() as u64);
        let scratch = std::env::temp_dir();
        let mut schemas: Vec<(String, Arc<TableSchema>)> = Vec::new();
        for (i, file) in files.iter().enumerate() {
            let next_first = files.get(i + 1).map(|f| f.first_seq);
            let mut reader = store.open_rows(file, budget.batch_bytes, &scratch).await?;
            let schema = table_schema(&reader.schema_json, &mut schemas, store, file)?;
            let mut changes = 0u64;
            for batch in &mut reader {
                let batch = within(&batch?, self.opts.since, self.opts.until)
                    .map_err(|e| read_fail(store, file, e))?;
                if batch.num_rows() == 0 {
                    continue;
                }
                changes += batch.num_rows() as u64;
                self.reach = self.reach.max(last_seq(&batch));
                self.pending_bytes += batch.get_array_memory_size();
                self.pending.push((schema.clone(), batch));
                // A window ends where nothing later can come before it: the rest of this file
                // follows in order, and the next file must start after everything pending.
                let clear = next_first.is_none_or(|n| n > self.reach);
                if self.pending_bytes >= budget.window_bytes && clear {
                    self.apply_pending().await?;
                }
            }
            self.progress.file_done(changes);
        }
        self.apply_pending().await
    }

    /// The tables without a key whose full snapshot starts in the window from `from`: their
    /// target table is emptied before its first row, as apply does (a later snapshot, a
    /// resync, brings every row again).
    fn snapshots_starting(
        &mut self,
        plans: &[TablePlan],
        from: u64,
    ) -> std::collections::BTreeMap<String, Sweep> {
        let mut replace = std::collections::BTreeMap::new();
        for p in plans.iter().filter(|p| p.key.is_empty()) {
            // A run of reads at the window's start may go on from the window before.
            let starts = match p.snapshot_start {
                Some(0) => !self.in_snapshot,
                Some(_) => true,
                None => false,
            };
            if starts {
                replace.insert(p.table.clone(), Sweep::Replace { window_from: from });
            }
            if let Some(last) = p.changes.last() {
                self.in_snapshot = last.read;
            }
        }
        replace
    }

    /// Merges the pending batches in `_cdc_seq` order and applies them as one window.
    async fn apply_pending(&mut self) -> Result<(), ApplyError> {
        let batches = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        if batches.is_empty() {
            return Ok(());
        }
        let (batch_rows, truncates) = self.settings;
        let mut merger = Merger::new(truncates);
        let (mut from, mut to) = (u64::MAX, 0u64);
        for_each_in_seq_order(&batches, |schema, batch| {
            let seqs = batch
                .column_by_name(cdc::SEQ)
                .map(|c| c.as_primitive::<Int64Type>().clone());
            if let Some(seqs) = seqs.filter(|s| !s.is_empty()) {
                from = from.min(seqs.value(0) as u64);
                to = to.max(seqs.value(seqs.len() - 1) as u64);
            }
            merger.push(schema, &batch).map_err(ApplyError::from)
        })?;
        let changes = merger.changes;
        let plans = merger.finish();
        let window = ApplyWindow::unrecorded(from, to, batch_rows, changes);
        let replace = self.snapshots_starting(&plans, from);
        let sweeps = SweepPlan {
            marks: Default::default(),
            sweeps: Some(&replace),
        };
        let done = self
            .target
            .apply_window(&window, &plans, None, &sweeps, &Default::default(), None)
            .await?;
        let rows: u64 = plans.iter().map(|p| p.rows() as u64).sum();
        let deletes: u64 = plans.iter().map(|p| p.deletes.len() as u64).sum();
        let summary = &mut self.summary;
        summary.changes += changes;
        summary.deletes += deletes;
        summary.upserts += rows - deletes;
        summary.chunks += done.chunks;
        summary.seqs = Some(match summary.seqs {
            Some((a, _)) => (a, to),
            None => (from, to),
        });
        self.progress.window_applied((from, to), rows);
        Ok(())
    }
}

/// The files to replay when they come from several journals (a pipeline moved to a new host):
/// a journal with an identity starts with a full snapshot of every table, which brings every
/// row the source still had. If the latest journal's first file of the table starts with such
/// a snapshot, the earlier journals' files are left out: rows they hold that the snapshot
/// did not bring again were deleted while nothing captured.
async fn from_latest_snapshot(
    store: &AuditStore,
    files: Vec<AuditFile>,
    batch_bytes: usize,
) -> Result<Vec<AuditFile>, ApplyError> {
    let Some(latest) = files.last().map(|f| f.journal.clone()) else {
        return Ok(files);
    };
    if latest.is_empty() || files.iter().all(|f| f.journal == latest) {
        return Ok(files);
    }
    let first = files
        .iter()
        .find(|f| f.journal == latest)
        .expect("the last file is of this journal");
    let mut reader = store
        .open_rows(first, batch_bytes, &std::env::temp_dir())
        .await?;
    let starts_with_snapshot = match reader.next() {
        Some(batch) => {
            let batch = batch?;
            batch
                .column_by_name(cdc::OP)
                .and_then(|c| c.as_string_opt::<i32>())
                .is_some_and(|ops| !ops.is_empty() && ops.value(0) == "r")
        }
        None => false,
    };
    if !starts_with_snapshot {
        return Ok(files);
    }
    let (kept, skipped): (Vec<AuditFile>, Vec<AuditFile>) =
        files.into_iter().partition(|f| f.journal == latest);
    tracing::info!(
        journal = %latest,
        skipped = skipped.len(),
        "replaying from the latest journal's snapshot; the earlier journals' files are left out"
    );
    Ok(kept)
}

/// The largest `_cdc_seq` of a batch (its last row: batches are in sequence order).
fn last_seq(batch: &RecordBatch) -> u64 {
    batch
        .column_by_name(cdc::SEQ)
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .filter(|s| !s.is_empty())
        .map_or(0, |s| s.value(s.len() - 1) as u64)
}

fn read_fail(
    store: &AuditStore,
    file: &AuditFile,
    source: impl std::error::Error + Send + Sync + 'static,
) -> ApplyError {
    ApplyError::Audit(AuditError::Read {
        location: store.describe_location(file),
        source: Box::new(source),
    })
}

/// The table schema a file carries, parsed once per distinct schema.
fn table_schema(
    json: &str,
    schemas: &mut Vec<(String, Arc<TableSchema>)>,
    store: &AuditStore,
    file: &AuditFile,
) -> Result<Arc<TableSchema>, ApplyError> {
    if let Some((_, s)) = schemas.iter().find(|(j, _)| j == json) {
        return Ok(s.clone());
    }
    let s =
        Arc::new(TableSchema::from_json(json.as_bytes()).map_err(|e| read_fail(store, file, e))?);
    schemas.push((json.to_string(), s.clone()));
    Ok(s)
}

/// The files that can hold changes committed in `[since, until]`: their date partition is the
/// UTC date of their commit times.
fn in_range(
    files: Vec<AuditFile>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Vec<AuditFile> {
    let day = |t: DateTime<Utc>| t.format("%Y-%m-%d").to_string();
    let (since, until) = (since.map(day), until.map(day));
    files
        .into_iter()
        .filter(|f| since.as_ref().is_none_or(|d| &f.date >= d))
        .filter(|f| until.as_ref().is_none_or(|d| &f.date <= d))
        .collect()
}

/// Why the rows of an audit batch cannot be filtered by commit time.
#[derive(Debug, thiserror::Error)]
enum TimeFilterError {
    #[error("it has no _cdc_ts column")]
    NoCommitTime,
    #[error("its _cdc_ts is not a microsecond timestamp")]
    CommitTimeType,
    #[error(transparent)]
    Filter(#[from] arrow::error::ArrowError),
}

/// The rows of `batch` committed in `[since, until]`.
fn within(
    batch: &RecordBatch,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<RecordBatch, TimeFilterError> {
    if since.is_none() && until.is_none() {
        return Ok(batch.clone());
    }
    let ts = batch
        .column_by_name(cdc::TS)
        .ok_or(TimeFilterError::NoCommitTime)?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or(TimeFilterError::CommitTimeType)?;
    let lo = since.map_or(i64::MIN, crate::timearg::micros);
    let hi = until.map_or(i64::MAX, crate::timearg::micros);
    let mask: BooleanArray = ts
        .iter()
        .map(|t| Some(t.is_some_and(|t| lo <= t && t <= hi)))
        .collect();
    Ok(arrow::compute::filter_record_batch(batch, &mask)?)
}

fn unkeyed(message: String) -> ApplyError {
    ApplyError::Config {
        key: "--table".into(),
        message,
    }
}

/// Calls `f` with slices of `batches` (each sorted by `_cdc_seq`) in global `_cdc_seq` order:
/// a k-way merge that passes whole batches when their ranges do not overlap.
fn for_each_in_seq_order(
    batches: &[(Arc<TableSchema>, RecordBatch)],
    mut f: impl FnMut(&Arc<TableSchema>, RecordBatch) -> Result<(), ApplyError>,
) -> Result<(), ApplyError> {
    let seqs: Vec<_> = batches
        .iter()
        .map(|(_, b)| {
            b.column_by_name(cdc::SEQ)
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .cloned()
                .ok_or_else(|| ApplyError::Internal("an audit file has no _cdc_seq".into()))
        })
        .collect::<Result<_, _>>()?;
    let mut at = vec![0usize; batches.len()];
    loop {
        // The batch with the smallest next sequence, and the next smallest of the others.
        let mut best: Option<(usize, i64)> = None;
        let mut second = i64::MAX;
        for (i, s) in seqs.iter().enumerate() {
            if at[i] >= s.len() {
                continue;
            }
            let v = s.value(at[i]);
            match best {
                Some((_, b)) if v >= b => second = second.min(v),
                _ => {
                    if let Some((_, b)) = best {
                        second = second.min(b);
                    }
                    best = Some((i, v));
                }
            }
        }
        let Some((i, _)) = best else {
            return Ok(());
        };
        let s = &seqs[i];
        let start = at[i];
        let mut end = start + 1;
        while end < s.len() && s.value(end) < second {
            end += 1;
        }
        at[i] = end;
        f(&batches[i].0, batches[i].1.slice(start, end - start))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(seqs: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "_cdc_seq",
            DataType::Int64,
            false,
        )]));
        let col: ArrayRef = Arc::new(Int64Array::from(seqs.to_vec()));
        RecordBatch::try_new(schema, vec![col]).unwrap()
    }

    fn order(batches: &[&[i64]]) -> (Vec<i64>, usize) {
        let schema = Arc::new(
            TableSchema::from_json(
                br#"{"table":"s.t","topic":"t","key":null,"row":{"type":"struct","fields":[]}}"#,
            )
            .unwrap(),
        );
        let batches: Vec<_> = batches.iter().map(|s| (schema.clone(), batch(s))).collect();
        let mut out = Vec::new();
        let mut calls = 0;
        for_each_in_seq_order(&batches, |_, b| {
            calls += 1;
            out.extend(b.column(0).as_primitive::<Int64Type>().values().iter());
            Ok(())
        })
        .unwrap();
        (out, calls)
    }

    #[test]
    fn batches_replay_in_sequence_order() {
        // Disjoint ranges pass whole, one call per batch.
        assert_eq!(order(&[&[1, 2, 3], &[4, 9]]), (vec![1, 2, 3, 4, 9], 2));
        assert_eq!(order(&[&[4, 9], &[1, 2, 3]]), (vec![1, 2, 3, 4, 9], 2));
        // Interleaved ranges (two date partitions of one window) are merged.
        let (seqs, _) = order(&[&[1, 3, 5, 8], &[2, 4, 6], &[7]]);
        assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(order(&[&[], &[5]]), (vec![5], 1));
        assert_eq!(order(&[]), (vec![], 0));
    }

    #[test]
    fn date_partitions_outside_the_range_are_skipped() {
        let f = |date: &str| AuditFile {
            table: "s.t".into(),
            date: date.into(),
            first_seq: 1,
            last_seq: 1,
            location: object_store::path::Path::from("x"),
            journal: String::new(),
            size: 0,
        };
        let files = vec![f("2026-11-01"), f("2026-11-02"), f("2026-11-03")];
        let t = |s| Some(crate::timearg::parse(s).unwrap());
        let dates = |v: Vec<AuditFile>| v.into_iter().map(|f| f.date).collect::<Vec<_>>();
        assert_eq!(
            dates(in_range(files.clone(), t("2026-11-02 10:00"), None)),
            ["2026-11-02", "2026-11-03"]
        );
        assert_eq!(
            dates(in_range(files.clone(), None, t("2026-11-02 10:00"))),
            ["2026-11-01", "2026-11-02"]
        );
        assert_eq!(dates(in_range(files, None, None)).len(), 3);
    }
}
