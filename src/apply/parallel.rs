//! Applying the chunks of a window: one at a time, or a run of chunks with disjoint keys on
//! several connections at once (`target.connections`). Each chunk is one transaction with its
//! checkpoint row wherever it runs ([`super::write`]).

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::chunk::{Chunk, Work};
use super::ddl::quote;
use super::profile::Profile;
use super::rejected::{self, Reject};
use super::sql::{with_retry, Session, SqlError};
use super::statement;
use super::write::{self, Attempt, ChunkOutcome, Skip};
use super::{Applier, ApplyError};
use crate::state::Hold;

impl Applier {
    /// Applies a window's `chunks` in order, skipping those in `committed`: each run of
    /// chunks whose keys are disjoint (the deletes, or the upserts, of one table) may commit
    /// in any order, so it goes to several connections at once. The chunks of the tables in
    /// `held` are passed over; a table whose row the target refuses for its values joins them,
    /// with its hold in `holds`, when the applier is [`holding`](Applier::holding). Returns how
    /// many were committed already, and whether it stopped on request before the last.
    pub(super) async fn apply_runs(
        &mut self,
        chunks: &[Chunk<'_>],
        committed: &HashSet<u32>,
        held: &mut BTreeSet<String>,
        holds: &mut Vec<(String, Hold)>,
        stop: Option<&tokio::sync::watch::Receiver<bool>>,
    ) -> Result<(u32, bool), ApplyError> {
        let mut skipped = 0;
        let mut rest = chunks;
        while let Some(first) = rest.first() {
            if stop.is_some_and(|s| *s.borrow()) {
                return Ok((skipped, true));
            }
            let run = rest
                .iter()
                .take_while(|c| {
                    parallel_class(c).is_some() && parallel_class(c) == parallel_class(first)
                })
                .count()
                .max(1);
            let (now, later) = rest.split_at(run);
            rest = later;
            if held.contains(&first.plan.table) {
                continue;
            }
            let todo: Vec<&Chunk<'_>> = now.iter().filter(|c| !committed.contains(&c.no)).collect();
            skipped += (now.len() - todo.len()) as u32;
            let (done, stopped) = match self.apply_chunks(&todo, stop).await {
                Ok(done) => done,
                Err(e) => {
                    // A run's chunks are of one table.
                    let reason = e.refuses_a_value().filter(|_| self.hold).ok_or(e)?;
                    let table = first.plan.table.clone();
                    held.insert(table.clone());
                    holds.push((
                        table,
                        Hold {
                            window_from: first.window.0,
                            reason,
                            since: chrono::Utc::now()
                                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        },
                    ));
                    continue;
                }
            };
            skipped += done;
            if stopped {
                return Ok((skipped, true));
            }
        }
        Ok((skipped, false))
    }

    /// Applies `chunks` (disjoint keys, any order) on up to `target.connections`
    /// connections. Returns how many an earlier run had committed, and whether it stopped
    /// on request before the last. The first error stops the others at their next chunk.
    async fn apply_chunks(
        &mut self,
        chunks: &[&Chunk<'_>],
        stop: Option<&tokio::sync::watch::Receiver<bool>>,
    ) -> Result<(u32, bool), ApplyError> {
        let ctx = Ctx {
            pipeline: &self.pipeline,
            profile: &self.profile,
            quarantine: self.quarantine,
            load_data: &self.load_data,
            rejects: &self.rejects,
        };
        if chunks.len() <= 1 || self.connections <= 1 {
            let mut skipped = 0;
            for chunk in chunks {
                if stop.is_some_and(|s| *s.borrow()) {
                    return Ok((skipped, true));
                }
                if run_chunk(&mut self.session, &ctx, chunk).await?
                    == ChunkOutcome::AlreadyCommitted
                {
                    skipped += 1;
                }
            }
            return Ok((skipped, false));
        }
        let wanted = self.connections.min(chunks.len()) - 1;
        while self.workers.len() < wanted {
            self.workers.push(self.session.sibling());
        }
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let stopped = AtomicBool::new(false);
        let sessions =
            std::iter::once(&mut self.session).chain(self.workers.iter_mut().take(wanted));
        let results = futures::future::join_all(sessions.map(|session| {
            let (ctx, next, failed, stopped) = (&ctx, &next, &failed, &stopped);
            async move {
                let mut skipped = 0u32;
                loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    if stop.is_some_and(|s| *s.borrow()) {
                        stopped.store(true, Ordering::Relaxed);
                        break;
                    }
                    let Some(chunk) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    match run_chunk(session, ctx, chunk).await {
                        Ok(ChunkOutcome::AlreadyCommitted) => skipped += 1,
                        Ok(ChunkOutcome::Applied) => {}
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                }
                Ok(skipped)
            }
        }))
        .await;
        let mut skipped = 0;
        for r in results {
            skipped += r?;
        }
        Ok((skipped, stopped.load(Ordering::Relaxed)))
    }
}

/// What the chunks applied at once share: settings and what one learns for all.
struct Ctx<'a> {
    pipeline: &'a str,
    profile: &'a Profile,
    quarantine: bool,
    load_data: &'a AtomicBool,
    rejects: &'a Mutex<std::collections::HashSet<String>>,
}

/// Chunks of one run may be applied in parallel when this is `Some` and the same: the
/// deletes, or the upserts, of one table (one key per row of a window: disjoint keys).
/// Truncates, moves (which read the rows they move), sweeps, exchanges and the changes of a
/// table without a key go alone, in order.
fn parallel_class<'a>(chunk: &Chunk<'a>) -> Option<(&'a str, bool)> {
    match chunk.work {
        Work::Delete { .. } => Some((chunk.plan.table.as_str(), false)),
        Work::Upsert { .. } => Some((chunk.plan.table.as_str(), true)),
        Work::Truncate
        | Work::Move(_)
        | Work::Sweep { .. }
        | Work::Exchange(_)
        | Work::Changes(_) => None,
    }
}

/// Applies one chunk on `session` (its own transaction and checkpoint row), retrying
/// transient failures; rows the target refuses go to `_db_sync_rejected` with
/// `on_reject: quarantine`.
async fn run_chunk(
    session: &mut Session,
    ctx: &Ctx<'_>,
    chunk: &Chunk<'_>,
) -> Result<ChunkOutcome, ApplyError> {
    let mut skip = bad_values(ctx, chunk)?;
    let what = format!(
        "applying chunk {} to {}",
        chunk.no,
        quote(&chunk.target.name)
    );
    let mut fast = ctx.load_data.load(Ordering::Relaxed) && write::replace_fits(chunk);
    loop {
        let pipeline = ctx.pipeline;
        let resolve = ctx.quarantine
            && ctx
                .rejects
                .lock()
                .expect("not poisoned")
                .contains(&chunk.plan.table);
        let q = write::Quarantine {
            skip: &skip,
            resolve,
        };
        let attempt: Result<Attempt, SqlError> = with_retry!(session, &what, |conn| {
            write::chunk_transaction(conn, pipeline, chunk, fast, &q, ctx.profile).await
        });
        let attempt = attempt.map_err(|e| statement::rejected(chunk, None, e).0)?;
        match attempt {
            Attempt::Done(outcome) => {
                if !skip.is_empty() && outcome == ChunkOutcome::Applied {
                    set_aside(ctx, chunk, &skip);
                }
                return Ok(outcome);
            }
            Attempt::Redo => fast = false,
            Attempt::Refused(message) => {
                if ctx.load_data.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        target = %session.url,
                        "the target refuses LOAD DATA LOCAL INFILE ({message}); applying with multi-row INSERT … ON DUPLICATE KEY UPDATE instead (slower). Enable local_infile on the server, or set target.load_data: false"
                    );
                }
                fast = false;
            }
            Attempt::Rejected(e, row) => {
                // Never leave the chunk's transaction open: the next START TRANSACTION on
                // this connection would commit it.
                session.rollback().await;
                let (i, reject) = quarantined(ctx, chunk, &skip, e, row)?;
                skip.insert(i, reject);
                // INSERT names the row, LOAD DATA does not.
                fast = false;
            }
        }
    }
}

/// The rows of `chunk` holding values the target cannot hold, found before it starts: set
/// aside with `on_reject: quarantine`, else the first stops apply.
fn bad_values(ctx: &Ctx<'_>, chunk: &Chunk<'_>) -> Result<Skip, ApplyError> {
    let mut skip = Skip::new();
    for (i, reject, error) in write::bad_values(chunk) {
        if !ctx.quarantine {
            return Err(error);
        }
        skip.entry(i).or_insert(reject);
    }
    Ok(skip)
}

/// A row the target refused, to set aside and redo the chunk without: with `on_reject:
/// quarantine`, when the server named the row and it is not set aside already. Else the
/// refusal stops apply.
fn quarantined(
    ctx: &Ctx<'_>,
    chunk: &Chunk<'_>,
    skip: &Skip,
    e: ApplyError,
    row: Option<usize>,
) -> Result<(usize, Reject), ApplyError> {
    match (row, &e) {
        (Some(i), ApplyError::Rejected(r)) if ctx.quarantine && !skip.contains_key(&i) => {
            Ok((i, chunk.reject(i, r.column.clone(), r.message.clone())))
        }
        _ => Err(e),
    }
}

/// After a chunk committed with rows set aside: its table has entries in `_db_sync_rejected`
/// (later applied keys clear them), and each row is said.
fn set_aside(ctx: &Ctx<'_>, chunk: &Chunk<'_>, skip: &Skip) {
    ctx.rejects
        .lock()
        .expect("not poisoned")
        .insert(chunk.plan.table.clone());
    for r in skip.values() {
        tracing::warn!(
            table = %chunk.plan.table,
            key = %r.key,
            column = r.column.as_deref().unwrap_or("?"),
            seq = r.seq,
            "the target cannot hold this row ({}); it is in {} and later changes go on",
            r.error,
            rejected::TABLE
        );
    }
}
