//! Apply: audited journal windows → merged, batched upserts and deletes in the MySQL target
//! (DESIGN §2, §7).
//!
//! [`apply_audited`] guarantees:
//!
//! - **Exactly-once effect.** Work goes in windows of at most [`WINDOW_EVENTS`] journal
//!   sequences, recorded in [`ApplyProgress`] (`pending`) before anything is sent. A window's
//!   changes are merged per key ([`merge`]) and cut into numbered chunks of `target.batch_rows`
//!   rows; each chunk commits in one transaction with its row in `_db_sync_checkpoint`
//!   ([`checkpoint`]). A re-run after a crash anywhere redoes the same window, finds the same
//!   chunks, and skips the committed ones.
//! - **Order.** Windows apply in journal order, each only after the one before it is done, so
//!   an older value never overwrites a newer one.
//! - **Nothing lost on failure.** The journal keeps every event until it is applied (GC needs
//!   audited *and* applied); a transient failure is retried with backoff ([`sql`]), a
//!   permanent one stops the cycle with the table, column and key, and the next cycle starts
//!   again from there.
//!
//! Tables without a primary key cannot be merged or upserted: they are reported once (log and
//! `status`) and skipped; their changes are still in the audit files.
//!
//! [`Applier`] is the target side on its own (connection, tables, chunks and checkpoints):
//! `backfill` drives it with windows read from audit files instead of the journal.

mod checkpoint;
mod ddl;
pub mod merge;
pub mod sql;
mod values;
mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use crate::audit::AuditError;
use crate::compact::{self, CompactError};
use crate::config::{Config, TargetConfig};
use crate::error::{Classify, ErrorKind};
use crate::journal::{self, JournalError};
use crate::state::{ApplyProgress, ApplyWindow, AuditProgress, StateError};
use ddl::TargetTable;
use merge::{MergeError, Merger, TablePlan};
use sql::{with_retry, Session, SqlError};
use write::{Attempt, Chunk, ChunkOutcome, Work};

pub use ddl::quote;
pub use sql::redact_url;

/// The most journal sequences one apply window spans: bounds the memory of a merge.
pub const WINDOW_EVENTS: u64 = 262_144;
/// Rows per decoded batch fed to the merge.
pub const DECODE_ROWS: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Decode(#[from] CompactError),
    #[error("apply stopped: {0}")]
    Merge(#[from] MergeError),
    #[error("`{key}` {message}")]
    Config { key: String, message: String },
    #[error("cannot reach the target {url}: {source}; is MySQL running and `target.url` right? The journal keeps every change not yet applied")]
    Unreachable { url: String, source: SqlError },
    #[error("target: {what} failed: {source}")]
    Sql { what: String, source: SqlError },
    #[error("apply stopped: target table `{table}` (for {source_table}) does not exist; create it, or set `target.create_tables: true`")]
    NoTable { source_table: String, table: String },
    #[error("apply stopped: target table `{table}` has no column `{column}`, which the source added; add it, or set `target.create_tables: true`")]
    NoColumn { table: String, column: String },
    #[error("apply stopped: target table `{table}` (for {source_table}){}, key {key}: {message}; change the target column (or the source value), then run compact again: the journal keeps every change not yet applied", column.as_ref().map(|c| format!(", column `{c}`")).unwrap_or_default())]
    Rejected {
        source_table: String,
        table: String,
        column: Option<String>,
        key: String,
        message: String,
    },
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("apply stopped: {0}")]
    Internal(String),
}

impl ApplyError {
    /// A failed statement: unreachable when the connection failed, else what failed.
    pub fn sql(url: &str, what: &str, e: SqlError) -> ApplyError {
        if e.is_unreachable() {
            ApplyError::Unreachable {
                url: url.to_string(),
                source: e,
            }
        } else {
            ApplyError::Sql {
                what: what.to_string(),
                source: e,
            }
        }
    }
}

impl Classify for ApplyError {
    fn kind(&self) -> ErrorKind {
        match self {
            ApplyError::Config { .. } => ErrorKind::Config,
            ApplyError::Audit(e) => e.kind(),
            ApplyError::State(e) => e.kind(),
            ApplyError::Journal(e) => e.kind(),
            ApplyError::Decode(e) => e.kind(),
            ApplyError::Unreachable { .. } => ErrorKind::Transient,
            ApplyError::Sql { source, .. } => source.kind(),
            ApplyError::Merge(_)
            | ApplyError::NoTable { .. }
            | ApplyError::NoColumn { .. }
            | ApplyError::Rejected { .. }
            | ApplyError::Internal(_) => ErrorKind::Permanent,
        }
    }
}

/// What one apply did, over all the windows it finished.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub from: u64,
    pub to: u64,
    /// Changes read from the journal.
    pub changes: u64,
    /// Rows written or deleted after merging.
    pub rows: u64,
    pub chunks: u32,
    /// Chunks an earlier, interrupted run had committed.
    pub chunks_skipped: u32,
    pub tables: usize,
    pub seconds: f64,
    pub load_data: bool,
}

/// The target side of apply: a session, the tables it has prepared, and the chunk protocol.
/// Checkpoint rows go under `pipeline` (the pipeline name for apply, `<name>:backfill:<table>`
/// for backfill).
pub struct Applier {
    session: Session,
    pipeline: String,
    /// Use `LOAD DATA LOCAL` (configured, and the server has not refused it).
    load_data: bool,
    create_tables: bool,
    table_name: String,
    collation: Option<String>,
}

/// What [`Applier::apply_window`] did.
pub struct WindowDone {
    pub chunks: u32,
    pub skipped: u32,
    /// Stopped on request before the last chunk.
    pub stopped: bool,
}

impl Applier {
    /// An applier for `target:` (not connected yet); a bad URL is a config error.
    pub fn new(tc: &TargetConfig, pipeline: &str) -> Result<Applier, ApplyError> {
        let session = Session::new(tc.url.expose(), redact_url(tc.url.expose())).map_err(|e| {
            ApplyError::Config {
                key: "target.url".into(),
                message: e.to_string(),
            }
        })?;
        Ok(Applier {
            session,
            pipeline: pipeline.to_string(),
            load_data: tc.load_data,
            create_tables: tc.create_tables,
            table_name: tc.table_name.clone(),
            collation: None,
        })
    }

    /// Connects (retrying) and creates the checkpoint table if it is missing.
    pub async fn prepare(&mut self) -> Result<(), ApplyError> {
        checkpoint::create(&mut self.session)
            .await
            .map_err(|e| ApplyError::sql(&self.session.url, "creating the checkpoint table", e))
    }

    pub fn uses_load_data(&self) -> bool {
        self.load_data
    }

    /// The target table name of source table `schema.table` (`target.table_name`).
    pub fn target_name(&self, source: &str) -> String {
        target_name(&self.table_name, source)
    }

    /// Drops this pipeline's checkpoint rows of windows before `before`.
    pub async fn prune_checkpoints(&mut self, before: u64) -> Result<(), ApplyError> {
        checkpoint::prune(&mut self.session, &self.pipeline, before)
            .await
            .map_err(|e| ApplyError::sql(&self.session.url, "pruning the checkpoint table", e))
    }

    /// Empties the target table of source table `source` when it exists: its name, and
    /// whether it did.
    pub async fn truncate(&mut self, source: &str) -> Result<(String, bool), ApplyError> {
        let name = self.target_name(source);
        let done = ddl::truncate(&mut self.session, &name).await?;
        Ok((name, done))
    }

    async fn prepare_table(&mut self, plan: &TablePlan) -> Result<TargetTable, ApplyError> {
        let name = self.target_name(&plan.table);
        let collation = match &self.collation {
            Some(c) => c.clone(),
            None => {
                let c = ddl::binary_collation(&mut self.session).await?;
                self.collation.insert(c).clone()
            }
        };
        ddl::prepare_table(
            &mut self.session,
            &name,
            plan,
            self.create_tables,
            &collation,
        )
        .await
    }

    /// Applies the merged `plans` of `window`: tables prepared, chunks numbered (table by
    /// table, deletes first, then each upsert group), committed chunks skipped. With `stop`,
    /// returns at the next chunk boundary once it turns true.
    pub async fn apply_window(
        &mut self,
        window: &ApplyWindow,
        plans: &[TablePlan],
        stop: Option<&tokio::sync::watch::Receiver<bool>>,
    ) -> Result<WindowDone, ApplyError> {
        // Names first: two source tables must not land in one target table.
        let mut names: BTreeMap<String, &str> = BTreeMap::new();
        for p in plans {
            let name = self.target_name(&p.table);
            if let Some(other) = names.insert(name.clone(), &p.table) {
                return Err(ApplyError::Config {
                    key: "target.table_name".into(),
                    message: format!(
                        "maps both {other} and {} to target table `{name}`; include {{schema}} in it",
                        p.table
                    ),
                });
            }
        }
        let mut tables: Vec<TargetTable> = Vec::with_capacity(plans.len());
        for p in plans {
            tables.push(self.prepare_table(p).await?);
        }

        let batch = window.batch_rows.max(1);
        let mut chunks: Vec<Chunk<'_>> = Vec::new();
        for (plan, target) in plans.iter().zip(&tables) {
            let work =
                plan.deletes
                    .chunks(batch)
                    .map(Work::Delete)
                    .chain(plan.upserts.iter().flat_map(|group| {
                        group
                            .rows
                            .chunks(batch)
                            .map(move |rows| Work::Upsert { group, rows })
                    }));
            for work in work {
                chunks.push(Chunk {
                    no: chunks.len() as u32,
                    chunks: 0,
                    window: (window.from, window.to),
                    plan,
                    target,
                    work,
                });
            }
        }
        let total = chunks.len() as u32;
        for c in &mut chunks {
            c.chunks = total;
        }
        let committed = if total > 0 {
            checkpoint::committed(&mut self.session, &self.pipeline, window.from)
                .await
                .map_err(|e| {
                    ApplyError::sql(&self.session.url, "reading the checkpoint table", e)
                })?
        } else {
            Default::default()
        };
        let mut skipped = 0;
        for chunk in &chunks {
            if stop.is_some_and(|s| *s.borrow()) {
                return Ok(WindowDone {
                    chunks: total,
                    skipped,
                    stopped: true,
                });
            }
            if committed.contains(&chunk.no) {
                skipped += 1;
                continue;
            }
            if self.apply_chunk(chunk).await? == ChunkOutcome::AlreadyCommitted {
                skipped += 1;
            }
        }
        if skipped > 0 {
            tracing::info!(
                window_from = window.from,
                skipped,
                "skipped chunks an earlier run had committed"
            );
        }
        Ok(WindowDone {
            chunks: total,
            skipped,
            stopped: false,
        })
    }

    /// Applies one chunk in one transaction with its checkpoint row, retrying transient
    /// failures. A permanent failure names the table, column and key.
    async fn apply_chunk(&mut self, chunk: &Chunk<'_>) -> Result<ChunkOutcome, ApplyError> {
        write::check_values(chunk)?;
        let what = format!(
            "applying chunk {} to {}",
            chunk.no,
            quote(&chunk.target.name)
        );
        let mut fast = self.load_data && write::replace_fits(chunk);
        loop {
            let pipeline = &self.pipeline;
            let session = &mut self.session;
            let attempt: Result<Attempt, SqlError> = with_retry!(session, &what, |conn| {
                write::chunk_transaction(conn, pipeline, chunk, fast).await
            });
            let attempt = attempt.map_err(|e| write::rejected(chunk, None, e))?;
            match attempt {
                Attempt::Done(outcome) => return Ok(outcome),
                Attempt::Redo => fast = false,
                Attempt::Refused(message) => {
                    tracing::warn!(
                        target = %self.session.url,
                        "the target refuses LOAD DATA LOCAL INFILE ({message}); applying with multi-row INSERT … ON DUPLICATE KEY UPDATE instead (slower). Enable local_infile on the server, or set target.load_data: false"
                    );
                    self.load_data = false;
                    fast = false;
                }
                Attempt::Rejected(e) => {
                    // Never leave the chunk's transaction open: the next START TRANSACTION on
                    // this connection would commit it.
                    self.session.rollback().await;
                    return Err(e);
                }
            }
        }
    }
}

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
    let mut applier: Option<Applier> = None;
    let mut summary: Option<Summary> = None;
    // The next window's merge runs on another core while this window's chunks are applied.
    let mut ahead: Option<(ApplyWindow, MergeTask)> = None;
    // The audit stage ran before this one under the same lock: it does not move meanwhile.
    let audited_through = AuditProgress::load(&dir)?.audited_through;
    loop {
        let window = match progress.pending.clone() {
            Some(w) => {
                tracing::info!(
                    from = w.from,
                    to = w.to,
                    "finishing the apply window an earlier run left unfinished"
                );
                w
            }
            None => {
                let Some(w) = next_window(
                    progress.applied_through,
                    audited_through,
                    &dir,
                    tc.batch_rows,
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
            _ => spawn_merge(&dir, &window, &placeholder),
        };
        let merged = task
            .await
            .map_err(|e| ApplyError::Internal(format!("the merge thread failed: {e}")))??;
        if let Some(w) = next_window(window.to, audited_through, &dir, tc.batch_rows)? {
            let task = spawn_merge(&dir, &w, &placeholder);
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
                let mut a = Applier::new(tc, &config.name)?;
                a.prepare().await?;
                applier.insert(a)
            }
        };
        let applying = Instant::now();
        let done = a.apply_window(&window, &merged.plans, stop).await?;
        if done.stopped {
            tracing::info!(
                from = window.from,
                to = window.to,
                "stopping between chunks; the window stays pending for the next run"
            );
            break;
        }
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
        a.prune_checkpoints(window.from).await?;
        let s = summary.get_or_insert_with(|| Summary {
            from: window.from,
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
    if let Some(s) = summary.as_mut() {
        s.seconds = started.elapsed().as_secs_f64();
    }
    Ok(summary)
}

/// The window after `applied_through`, or `None` when everything audited is applied.
fn next_window(
    applied_through: u64,
    audited_through: u64,
    dir: &Path,
    batch_rows: usize,
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
    Ok(Some(ApplyWindow {
        from,
        to: audited_through.min(from + WINDOW_EVENTS - 1),
        batch_rows,
        changes: 0,
        rows: 0,
        chunks: 0,
        finished_at: None,
    }))
}

type MergeTask = tokio::task::JoinHandle<Result<Merged, ApplyError>>;

struct Merged {
    plans: Vec<TablePlan>,
    skipped: BTreeSet<String>,
    changes: u64,
    seconds: f64,
}

/// Reads and merges one window on a blocking thread.
fn spawn_merge(dir: &Path, window: &ApplyWindow, placeholder: &str) -> MergeTask {
    let dir = dir.to_path_buf();
    let placeholder = placeholder.to_string();
    let (from, to) = (window.from, window.to);
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut merger = Merger::default();
        let mut skipped = BTreeSet::new();
        compact::decode_in_order(&dir, from, to, &placeholder, DECODE_ROWS, |table, batch| {
            if !table.has_key() {
                skipped.insert(table.table.clone());
                return Ok(());
            }
            merger.push(table, &batch).map_err(ApplyError::from)
        })?;
        let changes = merger.changes;
        Ok(Merged {
            plans: merger.finish(),
            skipped,
            changes,
            seconds: started.elapsed().as_secs_f64(),
        })
    })
}

/// The target table name for source table `schema.table` (`target.table_name`).
fn target_name(template: &str, source: &str) -> String {
    let (schema, table) = source.split_once('.').unwrap_or(("", source));
    template
        .replace("{schema}", schema)
        .replace("{table}", table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_follow_the_template() {
        assert_eq!(target_name("{table}", "public.orders"), "orders");
        assert_eq!(
            target_name("{schema}_{table}", "sales.orders"),
            "sales_orders"
        );
    }
}
