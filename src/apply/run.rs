//! The apply stage of a cycle: audited journal windows, merged on a blocking thread one
//! window ahead, applied in order, their progress recorded (see the module doc of
//! [`super`]).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;

use super::merge::{Merger, TablePlan};
use super::profile::Step;
use super::window::{self, End, Scan};
use super::{
    Applier, ApplyError, Summary, SweepPlan, WindowDone, DECODE_ROWS, FIRST_WINDOW_EVENTS,
    SNAPSHOT_WINDOW_EVENTS, WINDOW_EVENTS,
};
use crate::compact::{self, SnapshotMarks};
use crate::config::{Budget, Config, TargetConfig};
use crate::journal;
use crate::state::identity::Identity;
use crate::state::{ApplyProgress, ApplyWindow, AuditProgress};
use crate::types::TableSchema;

/// Turns true when the run should stop at the next chunk boundary.
type StopSignal<'s> = Option<&'s tokio::sync::watch::Receiver<bool>>;

/// Applies every audited, not yet applied journal event to the target. The caller holds the
/// compaction lock. `Ok(None)`: nothing to apply, or no target configured.
///
/// With `stop`, it returns at the next chunk boundary once `stop` turns true, leaving the
/// window pending for the next run.
pub async fn apply_audited(
    config: &Config,
    stop: StopSignal<'_>,
) -> Result<Option<Summary>, ApplyError> {
    let Some(tc) = config.target.as_ref() else {
        return Ok(None);
    };
    let dir = config.journal.dir.clone();
    if !dir.is_dir() {
        return Ok(None);
    }
    let started = Instant::now();
    let mut run = Run::new(config, tc, dir)?;
    while let Some((window, merged)) = run.next_window().await? {
        if !run.apply(&window, merged, stop).await? {
            tracing::info!(
                from = window.from,
                to = window.to,
                "stopping between chunks; the window stays pending for the next run"
            );
            break;
        }
    }
    run.finish(started).await
}

/// One [`apply_audited`]: its windows, the merge running ahead, the target, what it did.
struct Run<'c> {
    config: &'c Config,
    tc: &'c TargetConfig,
    dir: PathBuf,
    placeholder: String,
    budget: Budget,
    progress: ApplyProgress,
    /// The audit stage ran before this one under the same lock: it does not move meanwhile.
    audited_through: u64,
    identity: Identity,
    /// Connected at the first window.
    applier: Option<Applier>,
    summary: Option<Summary>,
    /// The next window's merge, running on another core while this window's chunks are
    /// applied: its first sequence, and the task.
    ahead: Option<(u64, MergeTask)>,
    merge_wait: Duration,
    /// The most changes of the next planned window of snapshot rows (the ramp).
    events: u64,
    /// Checkpoint rows of windows before this one are no longer needed.
    prune_before: Option<u64>,
}

impl<'c> Run<'c> {
    fn new(config: &'c Config, tc: &'c TargetConfig, dir: PathBuf) -> Result<Run<'c>, ApplyError> {
        Ok(Run {
            config,
            tc,
            progress: ApplyProgress::load(&dir)?,
            placeholder: compact::placeholder(config),
            budget: config.budget(),
            audited_through: AuditProgress::load(&dir)?.audited_through,
            identity: Identity::load(&dir)?.unwrap_or_else(Identity::legacy),
            dir,
            applier: None,
            summary: None,
            ahead: None,
            merge_wait: Duration::ZERO,
            events: FIRST_WINDOW_EVENTS,
            prune_before: None,
        })
    }

    /// The next window, merged: the one an earlier run recorded, or the next one, planned by
    /// its merge and recorded now. `None`: nothing left to apply.
    async fn next_window(&mut self) -> Result<Option<(ApplyWindow, Merged)>, ApplyError> {
        let recorded = self.progress.pending.clone();
        let Some(task) = self.merge_task(recorded.as_ref())? else {
            return Ok(None);
        };
        let waiting = Instant::now();
        let merged = task
            .await
            .map_err(|e| ApplyError::Internal(format!("the merge thread failed: {e}")))??;
        self.merge_wait += waiting.elapsed();
        let Some(merged) = merged else {
            return Ok(None);
        };
        let window = match recorded {
            Some(w) => w,
            None => self.record(&merged)?,
        };
        self.events = (self.events * 2).min(SNAPSHOT_WINDOW_EVENTS);
        let from = window.to + 1;
        if from <= self.audited_through {
            let next = Next::Plan {
                from,
                end: self.plan_end(),
            };
            self.ahead = Some((from, self.spawn(next)));
        }
        Ok(Some((window, merged)))
    }

    /// The merge of the next window: the recorded one, the one merged ahead, or a new one.
    /// `None`: everything audited is applied.
    fn merge_task(
        &mut self,
        recorded: Option<&ApplyWindow>,
    ) -> Result<Option<MergeTask>, ApplyError> {
        let next_from = self.progress.applied_through + 1;
        Ok(Some(match (recorded, self.ahead.take()) {
            (None, Some((from, task))) if from == next_from => task,
            (Some(w), _) => {
                if self.summary.is_none() {
                    tracing::info!(
                        from = w.from,
                        to = w.to,
                        "finishing the apply window an earlier run left unfinished"
                    );
                }
                self.spawn(Next::Recorded(w.clone()))
            }
            (None, _) => {
                let applied = self.progress.applied_through;
                let Some(from) = first_unapplied(applied, self.audited_through, &self.dir)? else {
                    return Ok(None);
                };
                let end = self.plan_end();
                self.spawn(Next::Plan { from, end })
            }
        }))
    }

    /// Records a new window as pending before anything of it is sent: a re-run merges the
    /// same window.
    fn record(&mut self, merged: &Merged) -> Result<ApplyWindow, ApplyError> {
        let applied = self.progress.applied_through;
        if merged.from > applied + 1 {
            tracing::warn!(
                "journal events {}..{} were deleted before they were applied (no target was configured then); the target lacks them until `db-sync backfill` loads them from the audit files",
                applied + 1,
                merged.from - 1
            );
        }
        let w = ApplyWindow {
            from: merged.from,
            to: merged.to,
            batch_rows: self.tc.batch_rows,
            chunk_bytes: self.budget.chunk_bytes,
            superseded_through: merged.to,
            changes: 0,
            rows: 0,
            chunks: 0,
            finished_at: None,
        };
        self.progress.pending = Some(w.clone());
        self.progress.store(&self.dir)?;
        Ok(w)
    }

    fn plan_end(&self) -> End {
        plan_end(self.audited_through, self.events, self.budget)
    }

    fn spawn(&self, next: Next) -> MergeTask {
        spawn_merge(&self.dir, next, &self.placeholder, self.tc, self.budget)
    }

    /// Applies a merged window and records it done. `false`: stopped on request between
    /// chunks, the window still pending.
    async fn apply(
        &mut self,
        window: &ApplyWindow,
        mut merged: Merged,
        stop: StopSignal<'_>,
    ) -> Result<bool, ApplyError> {
        let a = match self.applier.as_mut() {
            Some(a) => a,
            None => {
                let key = self.identity.checkpoint_key(&self.config.name);
                let mut a = Applier::new(self.tc, &key, self.budget)?
                    .with_snapshot_filters(self.config)
                    .holding();
                a.prepare().await?;
                self.applier.insert(a)
            }
        };
        // Held tables: out of every window after the one their hold began in; in that one
        // cut as before, so its chunks keep their numbers, but not applied.
        let held = &self.progress.held;
        merged.plans.retain(|p| {
            !held
                .get(&p.table)
                .is_some_and(|h| h.leaves_out(window.from))
        });
        let held: BTreeSet<String> = merged
            .plans
            .iter()
            .filter(|p| held.contains_key(&p.table))
            .map(|p| p.table.clone())
            .collect();
        // A legacy journal (no identity) may hold incremental snapshot rows from before they
        // were marked as such: no sweeps there.
        let progress = &mut self.progress;
        if !self.identity.journal.is_empty()
            && a.plan_sweeps(
                window.from,
                &merged.plans,
                &merged.marks,
                &mut progress.sweeps,
            )
            .await?
        {
            progress.store(&self.dir)?;
        }
        let applying = Instant::now();
        let sweeps = std::mem::take(&mut progress.sweeps);
        let plan = SweepPlan {
            marks: merged.marks,
            sweeps: Some(&sweeps),
        };
        let done = a
            .apply_window(
                window,
                &merged.plans,
                Some(&mut progress.column_types),
                &plan,
                &held,
                stop,
            )
            .await;
        let marks = plan.marks;
        progress.sweeps = sweeps;
        let done = done?;
        progress.held.extend(done.holds.iter().cloned());
        if done.stopped {
            if !done.holds.is_empty() {
                progress.store(&self.dir)?;
            }
            return Ok(false);
        }
        a.finish_sweeps(window.from, &done.sweeps, &marks, &mut progress.sweeps)
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
        progress.store(&self.dir)?;
        self.prune_before = Some(window.from);
        self.count(&finished, &done, merged.plans.len());
        Ok(true)
    }

    /// Adds a finished window to the summary.
    fn count(&mut self, finished: &ApplyWindow, done: &WindowDone, tables: usize) {
        let Some(a) = self.applier.as_ref() else {
            return;
        };
        let s = self.summary.get_or_insert_with(|| Summary {
            from: finished.from,
            connections: a.connections,
            ..Summary::default()
        });
        s.to = finished.to;
        s.changes += finished.changes;
        s.rows += finished.rows;
        s.chunks += done.chunks;
        s.chunks_skipped += done.skipped;
        s.tables = s.tables.max(tables);
        s.load_data = a.uses_load_data();
    }

    /// Prunes the checkpoint rows of the windows applied, and completes the summary.
    async fn finish(mut self, started: Instant) -> Result<Option<Summary>, ApplyError> {
        if let (Some(before), Some(a)) = (self.prune_before, self.applier.as_mut()) {
            // Once a run, not once a window: a DELETE is a commit (a log flush) on the target.
            a.prune_checkpoints(before).await?;
        }
        if let (Some(s), Some(a)) = (self.summary.as_mut(), self.applier.as_ref()) {
            s.seconds = started.elapsed().as_secs_f64();
            a.profile.add(Step::MergeWait, self.merge_wait);
            s.profile = a.profile.seconds();
            tracing::info!(
                seconds = format!("{:.2}", s.seconds),
                connections = s.connections,
                "apply profile: {}",
                s.profile
            );
        }
        Ok(self.summary)
    }
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

/// The limits of a window planned now (see [`super::window`]).
fn plan_end(audited_through: u64, snapshot_events: u64, budget: Budget) -> End {
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
    /// Changes in the window, those the merge passed over included.
    changes: u64,
    /// Changes the merge passed over (superseded).
    passed_over: u64,
    seconds: f64,
}

/// Plans the window (or reads the recorded one) and merges it, on a blocking thread. `None`:
/// nothing to apply from its start on.
fn spawn_merge(
    dir: &Path,
    next: Next,
    placeholder: &str,
    tc: &TargetConfig,
    budget: Budget,
) -> MergeTask {
    let dir = dir.to_path_buf();
    let placeholder = placeholder.to_string();
    let apply_truncates = tc.truncate.applies();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let Some((scan, skip)) = scan_window(&dir, next, &placeholder)? else {
            return Ok(None);
        };
        let scanned = started.elapsed();
        let sizes = (DECODE_ROWS, budget.batch_bytes);
        let mut merged = merge_window(&dir, &scan, skip, &placeholder, sizes, apply_truncates)?;
        merged.seconds = started.elapsed().as_secs_f64();
        tracing::debug!(
            from = merged.from,
            to = merged.to,
            changes = merged.changes,
            passed_over = merged.passed_over,
            scan_s = format!("{:.2}", scanned.as_secs_f64()),
            merge_s = format!("{:.2}", merged.seconds),
            "merged window"
        );
        Ok(Some(merged))
    })
}

/// The window's scan, and whether its merge passes over superseded changes: not in a window
/// recorded before they were. `None`: a planned window with nothing in it.
fn scan_window(
    dir: &Path,
    next: Next,
    placeholder: &str,
) -> Result<Option<(Scan, bool)>, ApplyError> {
    Ok(Some(match next {
        Next::Recorded(w) if w.superseded_through == 0 => (Scan::whole(w.from, w.to), false),
        Next::Recorded(w) => {
            let scan = window::scan(dir, w.from, End::Exact(w.to), placeholder)?
                .ok_or_else(|| ApplyError::Internal("a recorded window read as none".into()))?;
            (scan, true)
        }
        Next::Plan { from, end } => match window::scan(dir, from, end, placeholder)? {
            Some(scan) => (scan, true),
            None => return Ok(None),
        },
    }))
}

/// Decodes the window's changes (those `scan` says are superseded left out when `skip`) and
/// merges them per key. Decoding and merging run on two threads, a batch apart (a
/// rendezvous: at most two batches live, as when one thread did both): the target waits for
/// the merge of the first window, and the other core is free then.
fn merge_window(
    dir: &Path,
    scan: &Scan,
    skip: bool,
    placeholder: &str,
    sizes: (usize, usize),
    apply_truncates: bool,
) -> Result<Merged, ApplyError> {
    let mut merger = Merger::new(apply_truncates);
    let mut passed_over = 0u64;
    let (tx, rx) = std::sync::mpsc::sync_channel::<(Arc<TableSchema>, RecordBatch)>(0);
    let (marks, merged) = std::thread::scope(|s| {
        let merging = s.spawn(|| merge_batches(rx, &mut merger));
        let marks = compact::decode_in_order(
            dir,
            (scan.from, scan.to),
            placeholder,
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
    Ok(Merged {
        from: scan.from,
        to: scan.to,
        changes: merger.changes + passed_over,
        plans: merger.finish(),
        marks: marks?,
        passed_over,
        seconds: 0.0,
    })
}

/// The merging thread of [`merge_window`]. Debezium sends a TRUNCATE under a schema without
/// the key: a batch of only truncates is the table's, whatever its key.
fn merge_batches(
    rx: std::sync::mpsc::Receiver<(Arc<TableSchema>, RecordBatch)>,
    merger: &mut Merger,
) -> Result<(), ApplyError> {
    for (table, batch) in rx {
        if !table.has_key() && only_truncates(&batch) {
            merger.truncate(&table);
            continue;
        }
        merger.push(&table, &batch)?;
    }
    Ok(())
}

/// Whether every row of an audit batch is a truncate (`_cdc_op` = `t`).
fn only_truncates(batch: &arrow::array::RecordBatch) -> bool {
    use arrow::array::{Array, AsArray};
    batch
        .column_by_name(crate::types::cdc::OP)
        .and_then(|c| c.as_string_opt::<i32>())
        .is_some_and(|ops| !ops.is_empty() && (0..ops.len()).all(|i| ops.value(i) == "t"))
}
