//! Apply: audited journal windows → merged, batched upserts and deletes in the MySQL target
//! (DESIGN §2, §7).
//!
//! [`apply_audited`] guarantees:
//!
//! - **Exactly-once effect.** Work goes in windows of at most [`WINDOW_EVENTS`] journal
//!   sequences, recorded in the manifest (`apply_pending`) before anything is sent. A window's
//!   changes are merged per key ([`merge`]) and cut into numbered chunks of `target.batch_rows`
//!   rows; each chunk commits in one transaction with its row in `_db_sync_checkpoint`. A
//!   re-run after a crash anywhere redoes the same window, finds the same chunks, and skips
//!   the committed ones.
//! - **Order.** Windows apply in journal order, each only after the one before it is done, so
//!   an older value never overwrites a newer one.
//! - **Nothing lost on failure.** The journal keeps every event until it is applied (GC needs
//!   audited *and* applied); a transient failure is retried with backoff, a permanent one stops
//!   the cycle with the table, column and key, and the next cycle starts again from there.
//!
//! Tables without a primary key cannot be merged or upserted: they are reported once (log and
//! `status`) and skipped; their changes are still in the audit files.

pub mod backfill;
mod ddl;
mod merge;
mod target;
mod values;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use crate::compact::manifest::{ApplyWindow, Manifest, ManifestError};
use crate::compact::{self, CompactError, DEFAULT_UNAVAILABLE_PLACEHOLDER};
use crate::config::{Config, TargetConfig};
use crate::journal::{self, JournalError};
use merge::{MergeError, Merger, TablePlan};
use target::{Chunk, ChunkOutcome, Target, TargetTable, Work};

pub use target::Probe;

/// Looks at the target once (no retries, no changes) for `db-sync check`: what it found and
/// the redacted URL, or why it could not connect. `None`: no target configured.
pub async fn probe_target(config: &Config) -> Option<Result<(String, Probe), String>> {
    let tc = config.target.as_ref()?;
    let url = redact_url(tc.url.expose());
    let mut t = match Target::new(tc.url.expose(), url.clone(), &config.name, tc.load_data) {
        Ok(t) => t,
        Err(e) => return Some(Err(e.to_string())),
    };
    Some(
        t.probe(tc.create_tables)
            .await
            .map(|p| (url.clone(), p))
            .map_err(|e| format!("cannot connect to {url}: {e}")),
    )
}

/// The most journal sequences one apply window spans: bounds the memory of a merge.
pub const WINDOW_EVENTS: u64 = 262_144;
/// Rows per decoded batch fed to the merge.
const DECODE_ROWS: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Decode(#[from] CompactError),
    #[error("apply stopped: {0}")]
    Merge(#[from] MergeError),
    #[error("`{key}` {message}")]
    Config { key: String, message: String },
    #[error("cannot reach the target {url}: {message}; is MySQL running and `target.url` right? The journal keeps every change not yet applied")]
    Unreachable { url: String, message: String },
    #[error("target: {what} failed: {message}")]
    Sql { what: String, message: String },
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
    Audit(#[from] crate::audit::AuditError),
    #[error("cannot read audit file {location}: {message}")]
    ReadAudit { location: String, message: String },
    #[error("apply stopped: {0}")]
    Internal(String),
}

impl ApplyError {
    /// A configuration mistake (exit code 2) rather than a runtime failure.
    pub fn is_config(&self) -> bool {
        use crate::audit::AuditError;
        matches!(
            self,
            ApplyError::Config { .. }
                | ApplyError::Audit(AuditError::Url { .. } | AuditError::Option { .. })
        )
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
    let mut manifest = Manifest::load(&dir)?;
    let placeholder = config
        .source_prop("unavailable.value.placeholder")
        .unwrap_or_else(|| DEFAULT_UNAVAILABLE_PLACEHOLDER.to_string());
    let mut target: Option<Target> = None;
    let mut summary: Option<Summary> = None;
    // The next window's merge runs on another core while this window's chunks are applied.
    let mut ahead: Option<(ApplyWindow, MergeTask)> = None;
    loop {
        let window = match manifest.apply_pending.clone() {
            Some(w) => {
                tracing::info!(
                    from = w.from,
                    to = w.to,
                    "finishing the apply window an earlier run left unfinished"
                );
                w
            }
            None => {
                let Some(w) = next_window(&manifest, &dir, tc.batch_rows)? else {
                    break;
                };
                if w.from > manifest.applied_through + 1 {
                    tracing::warn!(
                        "journal events {}..{} were deleted before they were applied (no target was configured then); the target lacks them until `db-sync backfill` loads them from the audit files",
                        manifest.applied_through + 1,
                        w.from - 1
                    );
                }
                manifest.apply_pending = Some(w.clone());
                manifest.store(&dir)?;
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
        let mut upcoming = manifest.clone();
        upcoming.applied_through = window.to;
        if let Some(w) = next_window(&upcoming, &dir, tc.batch_rows)? {
            let task = spawn_merge(&dir, &w, &placeholder);
            ahead = Some((w, task));
        }
        for table in &merged.skipped {
            if manifest.skipped_tables.insert(table.clone()) {
                tracing::warn!(table = %table, "table has no primary key: apply skips it (its changes are still audited); add a primary key, or set message.key.columns in source:");
            }
        }
        let t = match target.as_mut() {
            Some(t) => t,
            None => {
                let mut t = Target::new(
                    tc.url.expose(),
                    redact_url(tc.url.expose()),
                    &config.name,
                    tc.load_data,
                )?;
                t.prepare().await?;
                target.insert(t)
            }
        };
        let applying = Instant::now();
        let done = apply_window(t, tc, &window, &merged.plans, stop).await?;
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
        manifest.complete_apply(finished.clone());
        manifest.store(&dir)?;
        t.prune_checkpoints(window.from).await?;
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
        s.load_data = t.uses_load_data();
    }
    if let Some(s) = summary.as_mut() {
        s.seconds = started.elapsed().as_secs_f64();
    }
    Ok(summary)
}

/// The window after `manifest.applied_through`, or `None` when everything audited is applied.
fn next_window(
    manifest: &Manifest,
    dir: &Path,
    batch_rows: usize,
) -> Result<Option<ApplyWindow>, ApplyError> {
    let mut from = manifest.applied_through + 1;
    if from > manifest.audited_through {
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
        to: manifest.audited_through.min(from + WINDOW_EVENTS - 1),
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
            if table.key.as_ref().is_none_or(|k| k.fields.is_empty()) {
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

struct WindowDone {
    chunks: u32,
    skipped: u32,
    /// Stopped on request before the last chunk.
    stopped: bool,
}

/// The target table name for source table `schema.table` (`target.table_name`).
fn target_name(template: &str, source: &str) -> String {
    let (schema, table) = source.split_once('.').unwrap_or(("", source));
    template
        .replace("{schema}", schema)
        .replace("{table}", table)
}

async fn apply_window(
    t: &mut Target,
    tc: &TargetConfig,
    window: &ApplyWindow,
    plans: &[TablePlan],
    stop: Option<&tokio::sync::watch::Receiver<bool>>,
) -> Result<WindowDone, ApplyError> {
    // Names first: two source tables must not land in one target table.
    let mut names: BTreeMap<String, &str> = BTreeMap::new();
    for p in plans {
        let name = target_name(&tc.table_name, &p.table);
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
        let name = target_name(&tc.table_name, &p.table);
        tables.push(t.prepare_table(&name, p, tc.create_tables).await?);
    }

    // Number the chunks: table by table, deletes first, then each upsert group.
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
        t.committed_chunks(window.from).await?
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
        if t.apply_chunk(chunk).await? == ChunkOutcome::AlreadyCommitted {
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

/// `mysql://user:***@host:port/db`: the URL with its password hidden.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
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

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_url("mysql://sync:s3cret@127.0.0.1:13306/target"),
            "mysql://sync:***@127.0.0.1:13306/target"
        );
        assert_eq!(redact_url("mysql://h/db"), "mysql://h/db");
        assert_eq!(redact_url("mysql://root@h/db"), "mysql://root@h/db");
    }
}
