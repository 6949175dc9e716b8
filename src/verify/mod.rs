//! `db-sync verify`: proves that each applied target table equals its source table, key by
//! key and value by value, and tells real divergence from changes still in flight.
//!
//! # What it guarantees
//!
//! - **Exact.** Each column is compared with apply's value rules ([`plan`], by the [type
//!   map](crate::types#the-type-map)): decimals by value, timestamps to the µs in UTC, floats by
//!   bits, JSON by value (key order is free), arrays, bytea. Both sides stream in key order through
//!   one merge ([`compare`]), so memory holds a few batches of rows whatever the table's size. A
//!   side that does not arrive in key order is an error, never a difference.
//! - **One snapshot each.** The source is read in one `REPEATABLE READ` transaction whose WAL
//!   position is noted first; the target in one consistent-snapshot transaction.
//! - **Settled.** A change committed at the source but not yet applied is not a divergence.
//!   When the first pass finds differences, verify waits until the pipeline has applied past
//!   the noted position (the slot confirms it, then every journaled event is applied: it runs
//!   compaction cycles itself, which wait for a daemon's through `compact.lock`), then re-reads
//!   only the differing keys at a new snapshot, and repeats. It stops when nothing differs,
//!   when two re-checks made after the pipeline caught up find the very same rows (nothing is
//!   in flight for them), or after `--settle` seconds. Only what persists is reported.
//! - **Read-only** on both databases. It records each table's outcome in
//!   `verify-state.json` for `status`.

pub mod compare;
pub mod plan;
mod read;
mod repair;
mod report;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mysql_async::prelude::Queryable;
use serde::Serialize;

use crate::apply::sql::{Session, SqlError, UrlError};
use crate::config::{target_table_name as target_name, Config};
use crate::error::{Classify, ErrorKind};
use crate::journal::JournalError;
use crate::source::slot::{BadLsn, Lsn};
use crate::source::SourceError;
use crate::state::{ApplyProgress, StateError};
use compare::{Advance, CompareError, CopyError, Merge, Row, Tally};
use plan::TablePlan;
use read::*;

pub use report::print;

/// Keys verify keeps for the re-check of one table; past it, a re-check reads the whole table.
const KEYS_CAP: usize = 100_000;
/// Keys per re-check query.
const KEYS_PER_QUERY: usize = 500;
/// A source batch is handed over at this many rows or bytes, whichever comes first.
const BATCH_ROWS: usize = 2048;
const BATCH_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    /// A table and the first differing keys.
    #[default]
    Table,
    /// One JSON object.
    Json,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// `SCHEMA.TABLE`s; empty: every applied table.
    pub tables: Vec<String>,
    pub settle: Duration,
    /// Repair what persists (see [`repair`]), then verify again.
    pub repair: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Bad usage or set-up: the message names the fix.
    #[error("{0}")]
    Usage(String),
    #[error("verify: `target.url` {0}")]
    TargetUrl(#[source] UrlError),
    #[error("verify: the source: {0}")]
    Source(#[from] SourceError),
    #[error("verify: the target {url}: {what}: {source}")]
    Target {
        url: String,
        what: String,
        source: SqlError,
    },
    /// A side's rows cannot be merged (out of key order, a NULL key).
    #[error("verify: {table}: {source}")]
    Compare { table: String, source: CompareError },
    #[error("verify: {table}: the source's COPY text: {source}")]
    Copy { table: String, source: CopyError },
    #[error("verify: the source's WAL position: {0}")]
    Lsn(#[from] BadLsn),
    /// `--repair` cannot do what it was asked: the message names why and what to do.
    #[error("verify: {0}")]
    Repair(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("verify: the compaction cycle it ran to settle failed: {0}")]
    Cycle(#[from] crate::cycle::CycleError),
    #[error("verify --repair: {0}")]
    Apply(#[from] crate::apply::ApplyError),
}

impl Classify for VerifyError {
    fn kind(&self) -> ErrorKind {
        match self {
            VerifyError::Usage(_) | VerifyError::TargetUrl(_) => ErrorKind::Config,
            VerifyError::Source(e) => e.kind(),
            VerifyError::Target { source, .. } => source.kind(),
            VerifyError::Compare { .. }
            | VerifyError::Copy { .. }
            | VerifyError::Lsn(_)
            | VerifyError::Repair(_) => ErrorKind::Permanent,
            VerifyError::Journal(e) => e.kind(),
            VerifyError::State(e) => e.kind(),
            VerifyError::Cycle(e) => e.kind(),
            VerifyError::Apply(e) => e.kind(),
        }
    }
}

/// One table's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub table: String,
    pub target_table: String,
    /// Rows in the source table (first pass).
    pub rows: u64,
    pub target_rows: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// Per column, rows that differ in it.
    pub different_columns: BTreeMap<String, u64>,
    pub first_missing: Vec<String>,
    pub first_extra: Vec<String>,
    pub first_different: Vec<(String, Vec<String>)>,
    /// Source columns the target table lacks.
    pub missing_columns: Vec<String>,
    /// Why the table was not compared, if so (it counts as a difference).
    pub not_compared: Option<String>,
    /// Differences of the first pass that settled (were in flight).
    pub settled: u64,
    /// `--repair`: keys re-read from the source through snapshot signals, and target rows
    /// deleted (keys the source does not hold).
    pub repaired_resnapshot: u64,
    pub repaired_deleted: u64,
    #[serde(skip)]
    plan: Option<TablePlan>,
    #[serde(skip)]
    keys: Vec<Vec<Vec<u8>>>,
    #[serde(skip)]
    extra_keys: Vec<Vec<Vec<u8>>>,
    #[serde(skip)]
    keys_overflow: bool,
}

impl TableReport {
    fn not_compared(table: &str, target: &str, why: &str) -> TableReport {
        TableReport {
            table: table.to_string(),
            target_table: target.to_string(),
            rows: 0,
            target_rows: 0,
            missing: 0,
            extra: 0,
            different: 0,
            different_columns: BTreeMap::new(),
            first_missing: vec![],
            first_extra: vec![],
            first_different: vec![],
            missing_columns: vec![],
            not_compared: Some(why.to_string()),
            settled: 0,
            repaired_resnapshot: 0,
            repaired_deleted: 0,
            plan: None,
            keys: Vec::new(),
            extra_keys: Vec::new(),
            keys_overflow: false,
        }
    }

    pub fn differences(&self) -> u64 {
        self.missing
            + self.extra
            + self.different
            + self.missing_columns.len() as u64
            + u64::from(self.not_compared.is_some())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tables: Vec<TableReport>,
    /// The source's WAL position when verify started.
    pub start_lsn: String,
    /// Seconds spent settling; 0 when the first pass found nothing.
    pub settle_seconds: f64,
    pub rechecks: u32,
    /// Whether the pipeline had caught up before the last re-check.
    pub caught_up: bool,
    /// False when no capture was connected: source changes since the journal's last event
    /// are not captured, and show as differences.
    pub capture_running: bool,
    pub seconds: f64,
}

impl Report {
    pub fn differences(&self) -> u64 {
        self.tables.iter().map(TableReport::differences).sum()
    }
}

/// Runs verify: compare, settle, (with `repair`) repair and verify again, record. `Ok` with
/// the report whatever it found; the caller turns differences into exit code 1.
pub async fn verify(config: &Config, opts: &Options) -> Result<Report, VerifyError> {
    let report = verify_once(config, opts).await?;
    if !opts.repair || report.differences() == 0 {
        return Ok(report);
    }
    let started = Instant::now();
    tracing::info!(
        differences = report.differences(),
        "repairing: the missing and different keys are read again through capture, the extra rows the source still lacks are deleted"
    );
    // A test writes to the source here, between the comparison and the repair's re-check.
    crate::failpoint::hit("verify.before_repair");
    let repaired = repair_all(config, &report).await?;
    // The repair flows through capture, the journal and apply: verify again until it has
    // (each pass settles on its own), or `--settle` is spent.
    let deadline = Instant::now() + opts.settle;
    let mut again = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let pass = verify_once(
            config,
            &Options {
                tables: report.tables.iter().map(|t| t.table.clone()).collect(),
                settle: left,
                repair: false,
            },
        )
        .await?;
        if pass.differences() == 0 || Instant::now() >= deadline {
            break pass;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    for t in &mut again.tables {
        if let Some((resnapshot, deleted)) = repaired.get(&t.table) {
            t.repaired_resnapshot = *resnapshot;
            t.repaired_deleted = *deleted;
        }
    }
    again.seconds = report.seconds + started.elapsed().as_secs_f64();
    record(config, &again)?;
    Ok(again)
}

/// Repairs each table's persisting differences ([`repair`]): per table, keys re-read and rows
/// deleted.
async fn repair_all(
    config: &Config,
    report: &Report,
) -> Result<BTreeMap<String, (u64, u64)>, VerifyError> {
    let Some(tc) = &config.target else {
        return Ok(BTreeMap::new());
    };
    let (pg, described) = crate::source::connect(config, "db-sync verify --repair").await?;
    let slot = crate::source::slot_name(config);
    let active = crate::source::slot::read(&pg, &described, &slot)
        .await?
        .is_some_and(|s| s.active);
    if !active {
        return Err(VerifyError::Repair(format!(
            "--repair re-reads keys through the running capture, and none is connected to replication slot {slot}; start `db-sync run` (or `capture`) and run verify --repair again"
        )));
    }
    let redacted = crate::apply::redact_url(tc.url.expose());
    let mut my = Session::new(tc.url.expose(), redacted).map_err(VerifyError::TargetUrl)?;
    // No cycle writes to the target while extra rows are deleted.
    let lock = crate::state::locks::compact_lock(&config.journal.dir).await?;
    let held = ApplyProgress::load(&config.journal.dir)?.held;
    let mut done = BTreeMap::new();
    for t in report.tables.iter().filter(|t| t.differences() > 0) {
        let Some(plan) = &t.plan else {
            continue;
        };
        // Apply leaves a held table out, so the keys re-read through the journal would never
        // reach it.
        if let Some(hold) = held.get(&t.table) {
            tracing::warn!(table = %t.table, "--repair passes over it: {}", hold.line(&t.table));
            continue;
        }
        if plan.keys.is_empty() {
            tracing::warn!(
                table = %t.table,
                "it has no primary key, so --repair cannot name its rows one by one; rebuild it with `db-sync backfill --table {} --truncate`",
                t.table
            );
            continue;
        }
        if t.keys_overflow {
            return Err(VerifyError::Repair(format!(
                "{}: more than {KEYS_CAP} keys differ, too many for a key-wise repair; rebuild the table with `db-sync backfill --table {} --resnapshot`",
                t.table, t.table
            )));
        }
        let deleted = if t.extra_keys.is_empty() {
            0
        } else {
            let pipeline = format!("{}:repair:{}", config.name, t.table);
            let mut applier = crate::apply::Applier::new(tc, &pipeline, config.budget())?;
            applier.prepare().await?;
            // Chunks an earlier repair committed belong to its own keys.
            applier.prune_checkpoints(u64::MAX).await?;
            let (keys, batch) = (&t.extra_keys, tc.batch_rows);
            repair::delete_extra(&pg, &mut my, &mut applier, batch, plan, keys).await?
        };
        let signals = repair::resnapshot(config, &pg, plan, &t.keys).await?;
        tracing::info!(
            table = %t.table,
            resnapshot = t.keys.len(),
            deleted,
            signals = signals.len(),
            "repair: sent"
        );
        done.insert(t.table.clone(), (t.keys.len() as u64, deleted));
    }
    drop(lock);
    Ok(done)
}

/// Records each table's outcome in `verify-state.json` for `status`.
fn record(config: &Config, report: &Report) -> Result<(), VerifyError> {
    let dir = &config.journal.dir;
    if !dir.is_dir() {
        return Ok(());
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let runs = report
        .tables
        .iter()
        .map(|t| {
            (
                t.table.clone(),
                crate::state::verify::LastVerify {
                    finished_at: now.clone(),
                    rows: t.rows,
                    differences: t.differences(),
                    missing: t.missing,
                    extra: t.extra,
                    different: t.different,
                    repaired: t.repaired_resnapshot + t.repaired_deleted,
                },
            )
        })
        .collect();
    crate::state::verify::store(dir, &runs)?;
    Ok(())
}

/// A table that cannot be compared: its source name, target name and why.
struct NotCompared {
    table: String,
    target: String,
    why: String,
}

type Planned = Result<TablePlan, NotCompared>;

/// One verify: compare, settle, record.
async fn verify_once(config: &Config, opts: &Options) -> Result<Report, VerifyError> {
    let started = Instant::now();
    let Some(tc) = &config.target else {
        return Err(VerifyError::Usage(format!(
            "{}: verify compares the source with the target, and `target.url` is not set",
            config.path.display()
        )));
    };
    if !config.is_postgres() {
        return Err(VerifyError::Usage(
            "verify reads the source with PostgreSQL; this pipeline's connector.class is another"
                .into(),
        ));
    }
    let tables = select_tables(&applied_tables(&config.journal.dir)?, &opts.tables)?;
    let mut sides = open_sides(config, tc).await?;
    let plans = plan_tables(&mut sides, &tc.table_name, &tables).await?;

    // First pass: the whole of each table, at one snapshot per side.
    let start_lsn = begin_snapshots(&mut sides).await?;
    let mut tallies: Vec<Option<Tally>> = Vec::new();
    for plan in &plans {
        tallies.push(match plan {
            Ok(plan) => Some(compare_table(&mut sides, plan, None).await?),
            Err(_) => None,
        });
    }
    end_snapshots(&mut sides).await;
    let first: Vec<u64> = tallies
        .iter()
        .map(|t| t.as_ref().map_or(0, Tally::differences))
        .collect();

    let settled = settle(
        config,
        &mut sides,
        &plans,
        &mut tallies,
        start_lsn,
        opts.settle,
    )
    .await?;
    let report = Report {
        tables: table_reports(&plans, tallies, first),
        start_lsn: start_lsn.to_string(),
        settle_seconds: settled.seconds,
        rechecks: settled.rechecks,
        caught_up: settled.caught_up,
        capture_running: settled.capture_running,
        seconds: started.elapsed().as_secs_f64(),
    };
    record(config, &report)?;
    Ok(report)
}

/// The tables apply has written, from its progress file.
fn applied_tables(dir: &std::path::Path) -> Result<Vec<String>, VerifyError> {
    let progress = if dir.is_dir() {
        ApplyProgress::load(dir)?
    } else {
        ApplyProgress::default()
    };
    Ok(progress.column_types.keys().cloned().collect())
}

/// Connects to both sides; the source session prints values as the comparison expects them.
async fn open_sides(
    config: &Config,
    tc: &crate::config::TargetConfig,
) -> Result<Sides, VerifyError> {
    let redacted = crate::apply::redact_url(tc.url.expose());
    let my = Session::new(tc.url.expose(), redacted).map_err(VerifyError::TargetUrl)?;
    let (client, described) = crate::source::connect(config, "db-sync verify").await?;
    let sides = Sides {
        pg: Arc::new(client),
        described,
        my,
    };
    sides
        .pg
        .batch_execute(
            "SET extra_float_digits = 1; SET DateStyle = ISO; SET IntervalStyle = postgres; \
             SET TimeZone = 'UTC'; SET bytea_output = hex; SET statement_timeout = 0",
        )
        .await
        .map_err(sides.source_err("setting up the session"))?;
    Ok(sides)
}

/// Each table's plan: the source's columns and key, the target's columns.
async fn plan_tables(
    sides: &mut Sides,
    template: &str,
    tables: &[String],
) -> Result<Vec<Planned>, VerifyError> {
    let mut plans = Vec::new();
    for table in tables {
        let target = target_name(template, table);
        let (schema, name) = table.split_once('.').unwrap_or(("public", table));
        let cols = source_columns(&sides.pg, schema, name)
            .await
            .map_err(sides.source_err(&format!("reading the columns of {table}")))?;
        let target_cols = target_columns(&mut sides.my, &target)
            .await
            .map_err(target_err(
                &sides.my,
                format!("reading the columns of `{target}`"),
            ))?;
        let plan = if cols.is_empty() {
            Err("the source table does not exist".to_string())
        } else if target_cols.is_empty() {
            Err("the target table does not exist".to_string())
        } else {
            plan::table(table, &target, &cols, &target_cols).map_err(|e| e.to_string())
        };
        plans.push(plan.map_err(|why| NotCompared {
            table: table.clone(),
            target,
            why,
        }));
    }
    Ok(plans)
}

/// How the settling went.
struct Settled {
    rechecks: u32,
    /// Whether the pipeline had caught up before the last re-check.
    caught_up: bool,
    capture_running: bool,
    /// Seconds spent settling; 0 when nothing needed it.
    seconds: f64,
}

/// Re-checks the differing keys until nothing differs, the same rows differ the same way
/// twice after the pipeline caught up (nothing is in flight for them), or `settle` is spent.
async fn settle(
    config: &Config,
    sides: &mut Sides,
    plans: &[Planned],
    tallies: &mut [Option<Tally>],
    start_lsn: Lsn,
    settle: Duration,
) -> Result<Settled, VerifyError> {
    let settle_start = Instant::now();
    let deadline = settle_start + settle;
    let mut out = Settled {
        rechecks: 0,
        caught_up: false,
        capture_running: true,
        seconds: 0.0,
    };
    let mut last_digests: Option<Vec<u64>> = None;
    let mut lsn = start_lsn;
    while tallies.iter().flatten().any(|t| t.differences() > 0) && Instant::now() < deadline {
        let wait = wait_applied_past(config, sides, lsn, deadline).await?;
        out.capture_running = wait.capture_running;
        out.caught_up = wait.caught_up;
        if !wait.caught_up && Instant::now() >= deadline {
            break;
        }
        lsn = recheck(sides, plans, tallies).await?;
        out.rechecks += 1;
        let digests: Vec<u64> = tallies
            .iter()
            .map(|t| t.as_ref().map_or(0, |t| t.digest))
            .collect();
        if wait.caught_up && last_digests.as_ref() == Some(&digests) {
            break; // the same rows differ the same way twice after catching up: not in flight
        }
        last_digests = wait.caught_up.then_some(digests);
    }
    if out.rechecks > 0 {
        out.seconds = settle_start.elapsed().as_secs_f64();
    }
    Ok(out)
}

/// Re-reads, at a new snapshot, the keys of each table that differed; returns the snapshot's
/// WAL position. A table with more differing keys than verify keeps is read whole.
async fn recheck(
    sides: &mut Sides,
    plans: &[Planned],
    tallies: &mut [Option<Tally>],
) -> Result<Lsn, VerifyError> {
    let lsn = begin_snapshots(sides).await?;
    for (plan, tally) in plans.iter().zip(tallies.iter_mut()) {
        let (Ok(plan), Some(t)) = (plan, tally.as_mut()) else {
            continue;
        };
        if t.differences() == 0 {
            continue;
        }
        if t.keys_overflow {
            *t = compare_table(sides, plan, None).await?;
            continue;
        }
        let mut fresh = Tally::default();
        let all: Vec<Vec<Vec<u8>>> = t.keys.iter().chain(&t.extra_keys).cloned().collect();
        for keys in all.chunks(KEYS_PER_QUERY) {
            fresh.absorb(compare_table(sides, plan, Some(keys)).await?);
        }
        // A re-check of some keys keeps the first pass's row counts.
        fresh.source_rows = t.source_rows;
        fresh.target_rows = t.target_rows;
        *t = fresh;
    }
    end_snapshots(sides).await;
    Ok(lsn)
}

/// Each table's report from its plan, its last tally and its first pass's differences.
fn table_reports(
    plans: &[Planned],
    tallies: Vec<Option<Tally>>,
    first: Vec<u64>,
) -> Vec<TableReport> {
    plans
        .iter()
        .zip(tallies)
        .zip(first)
        .map(|((plan, tally), first)| match (plan, tally) {
            (Ok(plan), Some(t)) => TableReport {
                table: plan.source.clone(),
                target_table: plan.target.clone(),
                rows: t.source_rows,
                target_rows: t.target_rows,
                missing: t.missing,
                extra: t.extra,
                different: t.different,
                different_columns: t.columns.clone(),
                first_missing: t.first_missing.clone(),
                first_extra: t.first_extra.clone(),
                first_different: t.first_different.clone(),
                missing_columns: plan.missing_columns.clone(),
                not_compared: None,
                settled: first.saturating_sub(t.differences()),
                repaired_resnapshot: 0,
                repaired_deleted: 0,
                plan: Some(plan.clone()),
                keys: t.keys,
                extra_keys: t.extra_keys,
                keys_overflow: t.keys_overflow,
            },
            (Ok(plan), None) => TableReport::not_compared(&plan.source, &plan.target, "not read"),
            (Err(n), _) => TableReport::not_compared(&n.table, &n.target, &n.why),
        })
        .collect()
}

/// The tables to verify: `named` (each must be applied), or every applied one.
fn select_tables(applied: &[String], named: &[String]) -> Result<Vec<String>, VerifyError> {
    let list = || {
        if applied.is_empty() {
            "none yet (a table is verified once compaction has applied it)".to_string()
        } else {
            applied.join(", ")
        }
    };
    if named.is_empty() {
        if applied.is_empty() {
            return Err(VerifyError::Usage(
                "no table has been applied to the target yet; run `db-sync compact` (or `db-sync run`) first".into(),
            ));
        }
        return Ok(applied.to_vec());
    }
    let mut out = Vec::new();
    for t in named {
        if !t.contains('.') {
            return Err(VerifyError::Usage(format!(
                "`--table` {t}: write SCHEMA.TABLE; applied tables: {}",
                list()
            )));
        }
        if !applied.contains(t) {
            return Err(VerifyError::Usage(format!(
                "`--table` {t} is not a table apply has written; applied tables: {}",
                list()
            )));
        }
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    Ok(out)
}

/// How the wait for the pipeline ended.
struct Waited {
    /// Every change committed before the position is applied.
    caught_up: bool,
    capture_running: bool,
}

/// Waits (running compaction cycles) until every change the source committed before `lsn` is
/// applied to the target, or `deadline`. With no capture connected to the slot, nothing new
/// can arrive: it applies what is journaled and says so.
async fn wait_applied_past(
    config: &Config,
    sides: &Sides,
    lsn: Lsn,
    deadline: Instant,
) -> Result<Waited, VerifyError> {
    let slot = crate::source::slot_name(config);
    loop {
        let state = crate::source::slot::read(&sides.pg, &sides.described, &slot).await?;
        let active = state.as_ref().is_some_and(|s| s.active);
        let confirmed = state.as_ref().is_some_and(|s| s.confirmed_through(lsn));
        if confirmed || !active {
            // Everything up to `lsn` is journaled (or nothing more will be): apply it all.
            let caught_up = apply_journaled(config, deadline).await?;
            return Ok(Waited {
                caught_up,
                capture_running: active,
            });
        }
        if Instant::now() >= deadline {
            return Ok(Waited {
                caught_up: false,
                capture_running: active,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs compaction cycles until every event journaled now is applied (true), or `deadline`
/// (false).
async fn apply_journaled(config: &Config, deadline: Instant) -> Result<bool, VerifyError> {
    let dir = &config.journal.dir;
    let journaled = last_journaled(dir)?;
    loop {
        let applied = if dir.is_dir() {
            ApplyProgress::load(dir)?.applied_through
        } else {
            0
        };
        if applied >= journaled {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        crate::cycle::run_once(config).await?;
    }
}

/// The last sequence in the journal (0 when empty or missing).
fn last_journaled(dir: &std::path::Path) -> Result<u64, VerifyError> {
    if !dir.is_dir() {
        return Ok(0);
    }
    let segments = crate::journal::segments(dir)?;
    let mut last = segments.last().map_or(0, |s| s.first_seq.saturating_sub(1));
    crate::journal::read_events(dir, segments.last().map_or(0, |s| s.first_seq), |e| {
        last = e.seq;
        Ok(true)
    })?;
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_the_applied_ones_or_those_named() {
        let applied = vec!["public.a".to_string(), "public.b".to_string()];
        assert_eq!(select_tables(&applied, &[]).unwrap(), applied);
        assert_eq!(
            select_tables(&applied, &["public.b".into(), "public.b".into()]).unwrap(),
            vec!["public.b".to_string()]
        );
        let e = select_tables(&applied, &["public.c".into()]).unwrap_err();
        assert!(e.to_string().contains("public.a, public.b"), "{e}");
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(select_tables(&[], &[]).is_err());
        assert_eq!(target_name("{schema}_{table}", "s.t"), "s_t");
    }
}
