//! `db-sync status [--json]`: the journal, audit and apply progress, the source slot, the
//! audit files, the last verify and job runs. Never prints a secret. A part that cannot be
//! read (source or target unreachable) is named in its `*_error` field; only the state
//! directory can fail `status`.
//!
//! Where each part comes from: the journal's segments and the progress files of the state
//! directory ([`crate::state`]); the slot from `pg_replication_slots`, judged against
//! `source_guard.max_retained_wal_mb` ([`crate::source::slot`], [`crate::guard`]); the count
//! of `_db_sync_rejected` from the target; the audit files (by table, with `audit.retain_days`)
//! from the audit store; the last job runs and verify from `jobs-state.json` and
//! `verify-state.json`. [`crate::metrics`] reads the same through [`collect`], so `/metrics`
//! and `status` agree.

use serde::Serialize;

use crate::apply::sql::{Session, SqlError, UrlError};
use crate::config::Config;
use crate::error::{Classify, ErrorKind};
use crate::journal::{self, JournalError};
use crate::source::slot::SlotState;
use crate::source::SourceError;
use crate::state::jobs::{load_runs, JobRun};
use crate::state::{ApplyProgress, ApplyWindow, AuditProgress, StateError, Window};

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    State(#[from] StateError),
}

impl Classify for StatusError {
    fn kind(&self) -> ErrorKind {
        match self {
            StatusError::Journal(e) => e.kind(),
            StatusError::State(e) => e.kind(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub pipeline: String,
    pub journal_dir: String,
    pub segments: usize,
    pub journal_bytes: u64,
    /// The next sequence capture will assign minus one (0: empty journal).
    pub last_journaled_seq: u64,
    pub sealed_through: u64,
    pub audited_through: u64,
    pub audit_pending: Option<Window>,
    pub audit_lag_events: u64,
    /// Age in seconds of the oldest journaled change not yet in an audit file (source commit
    /// time to now); 0 when every change is audited.
    pub audit_lag_seconds: f64,
    pub audit_url: String,
    pub last_audit_window: Option<Window>,
    /// Whether `target:` is configured; the apply fields below stay at zero without one.
    pub target_configured: bool,
    pub applied_through: u64,
    pub apply_pending: Option<ApplyWindow>,
    pub apply_lag_events: u64,
    /// Age in seconds of the oldest journaled change not yet applied; 0 when none is waiting.
    pub apply_lag_seconds: f64,
    pub last_apply_window: Option<ApplyWindow>,
    /// Rows of this pipeline in the target's `_db_sync_rejected` (`target.on_reject:
    /// quarantine`); `None` when there is no such table (or no target).
    pub rejected_rows: Option<u64>,
    /// Why the target could not be asked, if so.
    pub target_error: Option<String>,
    /// Full snapshots this journal applied over target tables that had rows: per source
    /// table, staging or done, and the target rows each deleted (deleted at the source while
    /// nothing captured it).
    pub snapshot_sweeps: std::collections::BTreeMap<String, crate::state::Sweep>,
    /// Tables apply holds out because the target refused one of their rows: why, and since
    /// when. A backfill of each ends its hold.
    pub held_tables: std::collections::BTreeMap<String, crate::state::Hold>,
    /// The last run of each scheduled job (`db-sync run`).
    pub jobs: Vec<JobRun>,
    /// The PostgreSQL replication slot: how much WAL it holds back.
    pub source_slot: Option<SlotStatus>,
    /// Why the slot could not be read (source unreachable), if so.
    pub source_slot_error: Option<String>,
    /// Per table: audit files, bytes, oldest and newest date kept; `audit.retain_days`.
    pub audit_tables: Vec<crate::audit::rollup::TableFiles>,
    pub audit_retain_days: Option<u64>,
    /// Why the audit store could not be listed, if so.
    pub audit_tables_error: Option<String>,
    /// The slot guard's warning when the slot retains more WAL than
    /// `source_guard.max_retained_wal_mb`.
    pub source_slot_warning: Option<String>,
    /// The last `db-sync verify` of each table.
    pub verify: std::collections::BTreeMap<String, crate::state::verify::LastVerify>,
    /// The journal's last resync after its replication slot was lost (in progress until its
    /// snapshot's last row is journaled).
    pub resync: Option<crate::state::identity::Resync>,
    /// The native initial load (`snapshot.loader: native`): per table the rows journaled and
    /// the ranges left, the rate and the time left; `None` when db-sync did not load.
    pub initial_load: Option<crate::loader::LoadStatus>,
}

/// A PostgreSQL replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Serialize)]
pub struct SlotStatus {
    pub slot: String,
    /// False when no capture is connected.
    pub active: bool,
    /// WAL the server keeps for the slot (`pg_current_wal_lsn() - restart_lsn`).
    pub retained_wal_bytes: i64,
    /// WAL not yet confirmed as journaled (`pg_current_wal_lsn() - confirmed_flush_lsn`).
    pub unconfirmed_wal_bytes: i64,
}

impl From<SlotState> for SlotStatus {
    fn from(s: SlotState) -> SlotStatus {
        SlotStatus {
            slot: s.name,
            active: s.active,
            retained_wal_bytes: s.retained_wal_bytes,
            unconfirmed_wal_bytes: s.unconfirmed_wal_bytes,
        }
    }
}

/// Why one part of the status could not be read: shown in that part's `*_error` field, never
/// a failure of `status` itself.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot start a runtime for the query: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the query panicked")]
    Panicked,
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("`target.url` {0}")]
    TargetUrl(#[source] UrlError),
    #[error("cannot connect to {url}: {source}")]
    TargetConnect { url: String, source: SqlError },
    #[error("cannot read the rejected rows on {url}: {source}")]
    Rejected { url: String, source: SqlError },
}

/// Runs `query` on a thread and runtime of its own: `collect` may be called from async code
/// (the metrics server and tests do), where blocking on the caller's runtime would panic.
fn on_own_runtime<T, F>(query: impl FnOnce() -> F + Send + 'static) -> Result<T, ProbeError>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, ProbeError>>,
{
    let thread = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ProbeError::Runtime)?
            .block_on(query())
    });
    thread.join().map_err(|_| ProbeError::Panicked)?
}

/// The slot of a PostgreSQL source; `Ok(None)` for other connectors or a slot not created yet.
fn slot_status(config: &Config) -> Result<Option<SlotStatus>, ProbeError> {
    if !config.is_postgres() {
        return Ok(None);
    }
    let config = config.clone();
    on_own_runtime(move || async move {
        let slot = crate::source::slot::read_pipeline(&config, "db-sync status").await?;
        Ok(slot.map(SlotStatus::from))
    })
}

/// The target's count of this pipeline's rejected rows; `Ok(None)` without a target or table.
fn rejected_rows(config: &Config) -> Result<Option<u64>, ProbeError> {
    let Some(tc) = &config.target else {
        return Ok(None);
    };
    let url = tc.url.expose().to_string();
    let pipeline = config.name.clone();
    on_own_runtime(move || async move {
        let redacted = crate::apply::redact_url(&url);
        let mut session = Session::new(&url, redacted.clone()).map_err(ProbeError::TargetUrl)?;
        let conn = session
            .conn()
            .await
            .map_err(|source| ProbeError::TargetConnect {
                url: redacted.clone(),
                source,
            })?;
        crate::apply::rejected::count(conn, &pipeline)
            .await
            .map_err(|source| ProbeError::Rejected {
                url: redacted,
                source,
            })
    })
}

/// Seconds since the source committed the first journaled change at or after `seq`; 0 when
/// there is none.
fn commit_age(dir: &std::path::Path, seq: u64) -> f64 {
    let mut ts_us = None;
    let _ = journal::read_events(dir, seq, |e| {
        if e.seq < seq {
            return Ok(true);
        }
        ts_us = crate::journal::event::EventHeader::parse(e.body)
            .ok()
            .map(|h| h.ts_us);
        Ok(false)
    });
    ts_us.map_or(0.0, |t| {
        let now = chrono::Utc::now().timestamp_micros();
        (now.saturating_sub(t)).max(0) as f64 / 1e6
    })
}

/// A part of the status that may be unreadable: its value (empty when not), and why not.
fn part<T: Default, E: std::fmt::Display>(read: Result<T, E>) -> (T, Option<String>) {
    match read {
        Ok(value) => (value, None),
        Err(e) => (T::default(), Some(e.to_string())),
    }
}

/// Reads every part of the status; fails only when the state directory cannot be read.
pub fn collect(config: &Config) -> Result<Status, StatusError> {
    let dir = &config.journal.dir;
    let (segments, audit, apply) = if dir.is_dir() {
        (
            journal::segments(dir)?,
            AuditProgress::load(dir)?,
            ApplyProgress::load(dir)?,
        )
    } else {
        Default::default()
    };
    let mut last = 0;
    journal::read_events(dir, segments.last().map_or(0, |s| s.first_seq), |e| {
        last = e.seq;
        Ok(true)
    })
    .or_else(|e| if dir.is_dir() { Err(e) } else { Ok(()) })?;
    if last == 0 {
        last = segments.last().map_or(0, |s| s.first_seq.saturating_sub(1));
    }
    let sealed_through = segments.iter().rev().find_map(|s| s.last_seq).unwrap_or(0);
    let (source_slot, source_slot_error) = part(slot_status(config));
    let (rejected_rows, target_error) = part(rejected_rows(config));
    let (audit_tables, audit_tables_error) = part(crate::audit::rollup::table_files(config));
    Ok(Status {
        pipeline: config.name.clone(),
        journal_dir: dir.display().to_string(),
        segments: segments.len(),
        journal_bytes: segments.iter().map(|s| s.bytes).sum(),
        last_journaled_seq: last,
        sealed_through,
        audited_through: audit.audited_through,
        audit_pending: audit.pending.clone(),
        audit_lag_events: last.saturating_sub(audit.audited_through),
        audit_lag_seconds: if last > audit.audited_through {
            commit_age(dir, audit.audited_through + 1)
        } else {
            0.0
        },
        audit_url: config.audit.url.clone(),
        last_audit_window: audit.windows.last().cloned(),
        target_configured: config.target.is_some(),
        applied_through: apply.applied_through,
        apply_pending: apply.pending.clone(),
        apply_lag_events: if config.target.is_some() {
            last.saturating_sub(apply.applied_through)
        } else {
            0
        },
        apply_lag_seconds: if config.target.is_some() && last > apply.applied_through {
            commit_age(dir, apply.applied_through + 1)
        } else {
            0.0
        },
        last_apply_window: apply.last.clone(),
        rejected_rows,
        target_error,
        snapshot_sweeps: apply.sweeps.clone(),
        held_tables: apply.held.clone(),
        jobs: load_runs(dir),
        source_slot_warning: source_slot
            .as_ref()
            .and_then(|s| crate::guard::over_limit(config, &s.slot, s.retained_wal_bytes)),
        source_slot,
        source_slot_error,
        audit_tables,
        audit_retain_days: config.audit.retain_days,
        audit_tables_error,
        verify: crate::state::verify::load(dir),
        resync: crate::state::identity::Identity::load(dir)
            .ok()
            .flatten()
            .and_then(|i| i.resync),
        initial_load: crate::loader::status(dir).ok().flatten(),
    })
}

/// Prints the status for a person, or as one JSON object with `json`.
pub fn run(config: &Config, json: bool) -> Result<(), StatusError> {
    let s = collect(config)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&s).expect("status serializes")
        );
        return Ok(());
    }
    print_progress(&s);
    if s.target_configured {
        print_target(&s);
    }
    print_source_slot(&s);
    print_initial_load(&s);
    print_audit_tables(&s);
    if let Some(w) = &s.source_slot_warning {
        println!("WARNING          {w}");
    }
    print_verify(&s);
    for j in &s.jobs {
        println!(
            "job {:<12} last run {} ({:.1}s): {}",
            j.name, j.started_at, j.seconds, j.result
        );
    }
    print_compaction(&s);
    Ok(())
}

/// The native initial load, while it runs (one line once it is complete).
fn print_initial_load(s: &Status) {
    let Some(l) = &s.initial_load else {
        return;
    };
    if l.complete {
        println!("initial load     complete: {} rows", l.rows);
        return;
    }
    let eta = l
        .eta_seconds
        .map(|e| format!(", about {e:.0} s left"))
        .unwrap_or_default();
    println!(
        "initial load     {} of {} ranges left, {} rows journaled, {:.0} rows/s{eta} (the slot holds the WAL meanwhile: see source slot)",
        l.ranges_left, l.ranges, l.rows, l.rows_per_second
    );
    for t in l.tables.iter().filter(|t| t.ranges_left > 0) {
        println!(
            "  {:<30} {} rows, {} of {} ranges left",
            t.table, t.rows, t.ranges_left, t.ranges
        );
    }
}

/// The journal and how far audit has come.
fn print_progress(s: &Status) {
    println!("pipeline         {}", s.pipeline);
    println!(
        "journal          {} ({} segment(s), {} bytes)",
        s.journal_dir, s.segments, s.journal_bytes
    );
    println!("last journaled   seq {}", s.last_journaled_seq);
    println!("sealed through   seq {}", s.sealed_through);
    println!(
        "audited through  seq {} ({} events, {:.1}s behind) at {}",
        s.audited_through, s.audit_lag_events, s.audit_lag_seconds, s.audit_url
    );
}

/// How far apply has come, what it skips and rejects, and the snapshot sweeps.
fn print_target(s: &Status) {
    println!(
        "applied through  seq {} ({} events, {:.1}s behind){}",
        s.applied_through,
        s.apply_lag_events,
        s.apply_lag_seconds,
        if s.apply_pending.is_some() {
            "; a window is being applied"
        } else {
            ""
        }
    );
    match (&s.rejected_rows, &s.target_error) {
        (Some(n), _) => println!(
            "rejected rows    {n} in {} (rows the target cannot hold)",
            crate::apply::rejected::TABLE
        ),
        (None, Some(e)) => println!("target           unknown: {e}"),
        (None, None) => {}
    }
    for (table, hold) in &s.held_tables {
        println!("held             {}", hold.line(table));
    }
    for (table, sweep) in &s.snapshot_sweeps {
        match sweep {
            crate::state::Sweep::NotNeeded
            | crate::state::Sweep::Complete { .. }
            | crate::state::Sweep::Replace { .. } => {}
            crate::state::Sweep::Staging { .. } => println!(
                "snapshot sweep   {table}: the snapshot is being applied over existing rows"
            ),
            crate::state::Sweep::Done {
                rows, finished_at, ..
            } => println!(
                "snapshot sweep   {table}: {rows} target row(s) deleted that the snapshot did not bring ({finished_at})"
            ),
        }
    }
}

fn print_source_slot(s: &Status) {
    match (&s.source_slot, &s.source_slot_error) {
        (Some(slot), _) => println!(
            "source slot      {} ({}): {} bytes of WAL retained, {} not yet confirmed",
            slot.slot,
            if slot.active { "active" } else { "inactive" },
            slot.retained_wal_bytes,
            slot.unconfirmed_wal_bytes
        ),
        (None, Some(e)) => println!("source slot      unknown: {e}"),
        (None, None) => {}
    }
    match &s.resync {
        Some(r) if r.in_progress() => println!(
            "resync           in progress since {}: {}; a full snapshot is being captured and applied",
            r.started_at, r.reason
        ),
        Some(r) => println!(
            "resync           done {} (started {}): {}",
            r.completed_at.as_deref().unwrap_or(""),
            r.started_at,
            r.reason
        ),
        None => {}
    }
}

/// The last `verify` of each table.
fn print_verify(s: &Status) {
    for (table, v) in &s.verify {
        println!(
            "verify           {table}: {} row(s), {} difference(s) ({} missing, {} extra, {} different){} at {}",
            v.rows,
            v.differences,
            v.missing,
            v.extra,
            v.different,
            if v.repaired > 0 {
                format!(", after repairing {} row(s)", v.repaired)
            } else {
                String::new()
            },
            v.finished_at
        );
    }
}

/// An interrupted compaction, and the last one that finished.
fn print_compaction(s: &Status) {
    if let Some(p) = &s.audit_pending {
        println!(
            "audit pending    seq {}..={} (an interrupted compaction; the next run redoes it)",
            p.from, p.to
        );
    }
    if let Some(w) = &s.last_audit_window {
        println!(
            "last compaction  seq {}..={}: {} events, {} file(s), finished {}",
            w.from,
            w.to,
            w.events,
            w.files,
            w.finished_at.as_deref().unwrap_or("?")
        );
    }
}

/// The audit store per table, and the retention that `rollup` applies.
fn print_audit_tables(s: &Status) {
    if let Some(e) = &s.audit_tables_error {
        println!("audit files      unknown: {e}");
    }
    for t in &s.audit_tables {
        println!(
            "audit files      {}: {} file(s), {} bytes, oldest date kept {}, newest {}",
            t.table, t.files, t.bytes, t.oldest_date, t.newest_date
        );
    }
    match s.audit_retain_days {
        Some(days) => {
            println!("audit retention  {days} day(s): rollup folds older date partitions into each table's base")
        }
        None => println!("audit retention  every date is kept (audit.retain_days: null)"),
    }
}
