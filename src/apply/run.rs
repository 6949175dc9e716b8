//! The apply stage of a cycle: audited journal windows, merged on a blocking thread one
//! window ahead, applied in order, their progress recorded (see the module doc of
//! [`super`]).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::record_batch::RecordBatch;

use super::merge::{Merger, TablePlan};
use super::profile::Step;
use super::window::{self, End, Scan};
use super::{
    Applier, ApplyError, Summary, SweepPlan, DECODE_ROWS, FIRST_WINDOW_EVENTS,
    SNAPSHOT_WINDOW_EVENTS, WINDOW_EVENTS,
};
use crate::compact::{self, SnapshotMarks};
use crate::config::Config;
use crate::journal;
use crate::state::{ApplyProgress, ApplyWindow, AuditProgress};
use crate::types::TableSchema;

/// Applies every audited, not yet applied journal event to the target. The caller holds the
/// compaction lock. `Ok(None)`: nothing to apply, or no target configured.
///
/// With `stop`, it returns at the next chunk boundary once `stop` turns true, leaving the
/// window pending for the next run.
pub async fn apply_audited(
    config: &Config,
    stop: Option<&tokio::sync::watch::Receiver<bool>>,
) -> Result<Option<Summary>, ApplyError> {
    let Some(tc) = config.target.as_ref() else {
        return Ok(None);
    };
    let dir = config.journal.dir.clone();
    if !dir.is_dir() {
        return Ok(None);
    }
    let started = Instant::now();
    let mut progress = ApplyProgress::load(&dir)?;
    let placeholder = compact::placeholder(config);
    let budget = config.budget();
    let mut applier: Option<Applier> = None;
    let mut summary: Option<Summary> = None;
    // The next window's merge runs on another core while this window's chunks are applied.
    // (its first sequence, its merge)
    let mut ahead: Option<(u64, MergeTask)> = None;
    let mut merge_wait = std::time::Duration::ZERO;
    let mut events = FIRST_WINDOW_EVENTS;
    // Checkpoint rows of windows before this one are no longer needed.
    let mut prune_before: Option<u64> = None;
    // The audit stage ran before this one under the same lock: it does not move meanwhile.
    let audited_through = AuditProgress::load(&dir)?.audited_through;
    let identity = crate::state::identity::Identity::load(&dir)?
        .unwrap_or_else(crate::state::identity::Identity::legacy);
    let has_identity = !identity.journal.is_empty();
    loop {
        // The window: the one an earlier run recorded, or the next one, planned by its merge.
        let recorded = progress.pending.clone();
        let task = match (&recorded, ahead.take()) {
            (None, Some((from, task))) if from == progress.applied_through + 1 => task,
            (Some(w), _) => {
                if summary.is_none() {
                    tracing::info!(
                        from = w.from,
                        to = w.to,
                        "finishing the apply window an earlier run left unfinished"
                    );
                }
                spawn_merge(&dir, Next::Recorded(w.clone()), &placeholder, tc, budget)
            }
            (None, _) => {
                let Some(from) = first_unapplied(progress.applied_through, audited_through, &dir)?
                else {
                    break;
                };
                let end = plan_end(audited_through, events, budget);
                let next = Next::Plan { from, end };
                spawn_merge(&dir, next, &placeholder, tc, budget)
            }
        };
        let waiting = Instant::now();
        let merged = task
            .await
            .map_err(|e| ApplyError::Internal(format!("the merge thread failed: {e}")))??;
        merge_wait += waiting.elapsed();
        let Some(merged) = merged else {
            break;
        };
        let window = match recorded {
            Some(w) => w,
            None => {
                if merged.from > progress.applied_through + 1 {
                    tracing::warn!(
                        "journal events {}..{} were deleted before they were applied (no target was configured then); the target lacks them until `db-sync backfill` loads them from the audit files",
                        progress.applied_through + 1,
                        merged.from - 1
                    );
                }
                // Recorded before anything of it is sent: a re-run merges the same window.
                let w = ApplyWindow {
                    from: merged.from,
                    to: merged.to,
                    batch_rows: tc.batch_rows,
                    chunk_bytes: budget.chunk_bytes,
                    superseded_through: merged.to,
                    changes: 0,
                    rows: 0,
                    chunks: 0,
                    finished_at: None,
                };
                progress.pending = Some(w.clone());
                progress.store(&dir)?;
                w
            }
        };
        events = (events * 2).min(SNAPSHOT_WINDOW_EVENTS);
        let from = window.to + 1;
        if from <= audited_through {
            let next = Next::Plan {
                from,
                end: plan_end(audited_through, events, budget),
            };
            ahead = Some((from, spawn_merge(&dir, next, &placeholder, tc, budget)));
        }
        for table in &merged.skipped {
            if progress.skipped_tables.insert(table.clone()) {
                tracing::warn!(table = %table, "table has no primary key: apply skips it (its changes are still audited); add a primary key, or set message.key.columns in source:");
            }
        }
        let a = match applier.as_mut() {
            Some(a) => a,
            None => {
                let key = identity.checkpoint_key(&config.name);
                let mut a = Applier::new(tc, &key, budget)?;
                a.prepare().await?;
                applier.insert(a)
            }
        };
        // A legacy journal (no identity) may hold incremental snapshot rows from before they
        // were marked as such: no sweeps there.
        if has_identity
            && a.plan_sweeps(&merged.plans, &merged.marks, &mut progress.sweeps)
                .await?
        {
            progress.store(&dir)?;
        }
        let applying = Instant::now();
        let sweeps = std::mem::take(&mut progress.sweeps);
        let plan = SweepPlan {
            marks: merged.marks,
            sweeps: Some(&sweeps),
        };
        let done = a
            .apply_window(
                &window,
                &merged.plans,
                Some(&mut progress.column_types),
                &plan,
                stop,
            )
            .await;
        progress.sweeps = sweeps;
        let done = done?;
        if done.stopped {
            tracing::info!(
                from = window.from,
                to = window.to,
                "stopping between chunks; the window stays pending for the next run"
            );
            break;
        }
        a.finish_sweeps(window.from, &done.sweeps, &mut progress.sweeps)
            .await?;
        let mut finished = window.clone();
        finished.changes = merged.changes;
        finished.rows = merged.plans.iter().map(|p| p.rows() as u64).sum();
        finished.chunks = done.chunks;
        tracing::info!(
            from = window.from,
            to = window.to,
            changes = finished.changes,
            rows = finished.rows,
            chunks = done.chunks,
            merge_s = format!("{:.2}", merged.seconds),
            apply_s = format!("{:.2}", applying.elapsed().as_secs_f64()),
            "applied window"
        );
        progress.complete(finished.clone());
        progress.store(&dir)?;
        prune_before = Some(window.from);
        let s = summary.get_or_insert_with(|| Summary {
            from: window.from,
            connections: a.connections,
            ..Summary::default()
        });
        s.to = window.to;
        s.changes += finished.changes;
        s.rows += finished.rows;
        s.chunks += done.chunks;
        s.chunks_skipped += done.skipped;
        s.tables = s.tables.max(merged.plans.len());
        s.load_data = a.uses_load_data();
    }
    if let (Some(before), Some(a)) = (prune_before, applier.as_mut()) {
        // Once a run, not once a window: a DELETE is a commit (a log flush) on the target.
        a.prune_checkpoints(before).await?;
    }
    if let (Some(s), Some(a)) = (summary.as_mut(), applier.as_ref()) {
        s.seconds = started.elapsed().as_secs_f64();
        a.profile.add(Step::MergeWait, merge_wait);
        s.profile = a.profile.seconds();
        tracing::info!(
            seconds = format!("{:.2}", s.seconds),
            connections = s.connections,
            "apply profile: {}",
            s.profile
        );
    }
    Ok(summary)
}

/// The first journal sequence after `applied_through` still in the journal, or `None` when
/// everything audited is applied.
fn first_unapplied(
    applied_through: u64,
    audited_through: u64,
    dir: &Path,
) -> Result<Option<u64>, ApplyError> {
    let from = applied_through + 1;
    if from > audited_through {
        return Ok(None);
    }
    let first = journal::segments(dir)?
        .first()
        .map_or(from, |s| s.first_seq);
    // Deleted before they were applied (no target was configured then): the caller says so
    // when it records the window.
    Ok(Some(from.max(first)).filter(|f| *f <= audited_through))
}

/// The limits of a window planned now (see [`window`](super::window)).
fn plan_end(audited_through: u64, snapshot_events: u64, budget: crate::config::Budget) -> End {
    End::Plan {
        through: audited_through,
        snapshot_events,
        max_events: WINDOW_EVENTS,
        merged_bytes: budget.window_bytes,
    }
}

type MergeTask = tokio::task::JoinHandle<Result<Option<Merged>, ApplyError>>;

/// Which window to merge.
enum Next {
    /// The window an earlier run recorded: exactly it.
    Recorded(ApplyWindow),
    /// A new window from `from`.
    Plan { from: u64, end: End },
}

struct Merged {
    from: u64,
    to: u64,
    plans: Vec<TablePlan>,
    marks: HashMap<String, SnapshotMarks>,
    skipped: BTreeSet<String>,
    changes: u64,
    seconds: f64,
}

/// Plans the window (or reads the recorded one) and merges it, on a blocking thread. `None`:
/// nothing to apply from its start on.
fn spawn_merge(
    dir: &Path,
    next: Next,
    placeholder: &str,
    tc: &crate::config::TargetConfig,
    budget: crate::config::Budget,
) -> MergeTask {
    let dir = dir.to_path_buf();
    let placeholder = placeholder.to_string();
    let apply_truncates = tc.truncate.applies();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        // Whether the window passes over superseded changes: not one recorded before they were.
        let (scan, skip) = match next {
            Next::Recorded(w) if w.superseded_through == 0 => (Scan::whole(w.from, w.to), false),
            Next::Recorded(w) => {
                let scan = window::scan(&dir, w.from, End::Exact(w.to), &placeholder)?
                    .ok_or_else(|| ApplyError::Internal("a recorded window read as none".into()))?;
                (scan, true)
            }
            Next::Plan { from, end } => match window::scan(&dir, from, end, &placeholder)? {
                Some(scan) => (scan, true),
                None => return Ok(None),
            },
        };
        let (from, to) = (scan.from, scan.to);
        let scanned = started.elapsed();
        let mut merger = Merger::new(apply_truncates);
        let mut skipped = BTreeSet::new();
        let mut passed_over = 0u64;
        let sizes = (DECODE_ROWS, budget.batch_bytes);
        // Decoding and merging run on two threads, a batch apart (a rendezvous: at most two
        // batches live, as when one thread did both): the target waits for the merge of the
        // first window, and the other core is free then.
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Arc<TableSchema>, RecordBatch)>(0);
        let (marks, merged) = std::thread::scope(|s| {
            let merging = s.spawn(|| -> Result<(), ApplyError> {
                for (table, batch) in rx {
                    if !table.has_key() {
                        if only_truncates(&batch) {
                            merger.truncate(&table);
                        } else {
                            skipped.insert(table.table.clone());
                        }
                        continue;
                    }
                    merger.push(&table, &batch)?;
                }
                Ok(())
            });
            let marks = compact::decode_in_order(
                &dir,
                (from, to),
                &placeholder,
                sizes,
                |seq, table| {
                    let yes = skip && scan.superseded(seq, table);
                    passed_over += u64::from(yes);
                    yes
                },
                |table, batch| {
                    tx.send((table.clone(), batch))
                        .map_err(|_| ApplyError::Internal("the merge stopped".into()))
                },
            );
            drop(tx);
            let merged = merging
                .join()
                .unwrap_or_else(|_| Err(ApplyError::Internal("the merge thread failed".into())));
            (marks, merged)
        });
        // The merge's own error first: it is why the decode could not hand it a batch.
        merged?;
        let marks = marks?;
        let changes = merger.changes + passed_over;
        tracing::debug!(
            from,
            to,
            changes,
            passed_over,
            scan_s = format!("{:.2}", scanned.as_secs_f64()),
            merge_s = format!("{:.2}", started.elapsed().as_secs_f64()),
            "merged window"
        );
        Ok(Some(Merged {
            from,
            to,
            plans: merger.finish(),
            marks,
            skipped,
            changes,
            seconds: started.elapsed().as_secs_f64(),
        }))
    })
}

/// Whether every row of an audit batch is a truncate (`_cdc_op` = `t`).
fn only_truncates(batch: &arrow::array::RecordBatch) -> bool {
    use arrow::array::{Array, AsArray};
    batch
        .column_by_name(crate::types::cdc::OP)
        .and_then(|c| c.as_string_opt::<i32>())
        .is_some_and(|ops| !ops.is_empty() && (0..ops.len()).all(|i| ops.value(i) == "t"))
}
