//! The apply stage of a cycle: audited journal windows, merged on a blocking thread one
//! window ahead, applied in order, their progress recorded (see the module doc of
//! [`super`]).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Instant;

use super::merge::{Merger, TablePlan};
use super::profile::Step;
use super::{
    Applier, ApplyError, Summary, SweepPlan, DECODE_ROWS, FIRST_WINDOW_EVENTS, WINDOW_EVENTS,
};
use crate::compact::{self, SnapshotMarks};
use crate::config::Config;
use crate::journal;
use crate::state::{ApplyProgress, ApplyWindow, AuditProgress};

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
    let mut ahead: Option<(ApplyWindow, MergeTask)> = None;
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
        let window = match progress.pending.clone() {
            Some(w) => {
                if summary.is_none() {
                    tracing::info!(
                        from = w.from,
                        to = w.to,
                        "finishing the apply window an earlier run left unfinished"
                    );
                }
                w
            }
            None => {
                let Some(w) = next_window(
                    progress.applied_through,
                    audited_through,
                    &dir,
                    (tc.batch_rows, budget.chunk_bytes, budget.window_bytes),
                    events,
                )?
                else {
                    break;
                };
                if w.from > progress.applied_through + 1 {
                    tracing::warn!(
                        "journal events {}..{} were deleted before they were applied (no target was configured then); the target lacks them until `db-sync backfill` loads them from the audit files",
                        progress.applied_through + 1,
                        w.from - 1
                    );
                }
                progress.pending = Some(w.clone());
                progress.store(&dir)?;
                w
            }
        };
        let task = match ahead.take() {
            Some((w, task)) if w == window => task,
            _ => spawn_merge(&dir, &window, &placeholder, tc.truncate.applies(), budget),
        };
        let waiting = Instant::now();
        let merged = task
            .await
            .map_err(|e| ApplyError::Internal(format!("the merge thread failed: {e}")))??;
        merge_wait += waiting.elapsed();
        events = (events * 2).min(WINDOW_EVENTS);
        if let Some(w) = next_window(
            window.to,
            audited_through,
            &dir,
            (tc.batch_rows, budget.chunk_bytes, budget.window_bytes),
            events,
        )? {
            let task = spawn_merge(&dir, &w, &placeholder, tc.truncate.applies(), budget);
            ahead = Some((w, task));
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
        // The next window (already being merged) is recorded in the same write: one
        // durable store per window.
        progress.pending = ahead.as_ref().map(|(w, _)| w.clone());
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

/// The window after `applied_through`, or `None` when everything audited is applied.
fn next_window(
    applied_through: u64,
    audited_through: u64,
    dir: &Path,
    (batch_rows, chunk_bytes, window_bytes): (usize, usize, usize),
    events: u64,
) -> Result<Option<ApplyWindow>, ApplyError> {
    let mut from = applied_through + 1;
    if from > audited_through {
        return Ok(None);
    }
    let first = journal::segments(dir)?
        .first()
        .map_or(from, |s| s.first_seq);
    // Deleted before they were applied (no target was configured then): the caller says so
    // when it records the window.
    from = from.max(first);
    let to = journal::window_end(dir, from, audited_through, events, window_bytes)?;
    Ok(Some(ApplyWindow {
        from,
        to,
        batch_rows,
        chunk_bytes,
        changes: 0,
        rows: 0,
        chunks: 0,
        finished_at: None,
    }))
}

type MergeTask = tokio::task::JoinHandle<Result<Merged, ApplyError>>;

struct Merged {
    plans: Vec<TablePlan>,
    marks: HashMap<String, SnapshotMarks>,
    skipped: BTreeSet<String>,
    changes: u64,
    seconds: f64,
}

/// Reads and merges one window on a blocking thread.
fn spawn_merge(
    dir: &Path,
    window: &ApplyWindow,
    placeholder: &str,
    apply_truncates: bool,
    budget: crate::config::Budget,
) -> MergeTask {
    let dir = dir.to_path_buf();
    let placeholder = placeholder.to_string();
    let (from, to) = (window.from, window.to);
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut merger = Merger::new(apply_truncates);
        let mut skipped = BTreeSet::new();
        let sizes = (DECODE_ROWS, budget.batch_bytes);
        let marks =
            compact::decode_in_order(&dir, from, to, &placeholder, sizes, |table, batch| {
                if !table.has_key() {
                    if only_truncates(&batch) {
                        merger.truncate(table);
                    } else {
                        skipped.insert(table.table.clone());
                    }
                    return Ok(());
                }
                merger.push(table, &batch).map_err(ApplyError::from)
            })?;
        let changes = merger.changes;
        Ok(Merged {
            plans: merger.finish(),
            marks,
            skipped,
            changes,
            seconds: started.elapsed().as_secs_f64(),
        })
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
