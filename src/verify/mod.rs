//! `db-sync verify`: proves that each applied target table equals its source table, key by
//! key and value by value, and tells real divergence from changes still in flight.
//!
//! # What it guarantees
//!
//! - **Exact.** Each column is compared with apply's value rules (DESIGN §6, [`plan`]):
//!   decimals by value, timestamps to the µs in UTC, floats by bits, JSON by value (key order
//!   is free), arrays, bytea. Both sides stream in key order through one merge ([`compare`]),
//!   so memory holds a few batches of rows whatever the table's size. A side that does not
//!   arrive in key order is an error, never a difference.
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

use crate::apply::sql::Session;
use crate::config::Config;
use crate::error::{Classify, ErrorKind};
use crate::state::{ApplyProgress, StateError};
use compare::{Advance, Merge, Row, Tally};
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
    #[error("verify: the source: {0}")]
    Source(String),
    #[error("verify: the target {url}: {message}")]
    Target { url: String, message: String },
    #[error("verify: {0}")]
    Compare(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("verify: the compaction cycle it ran to settle failed: {0}")]
    Cycle(#[from] crate::cycle::CycleError),
}

impl Classify for VerifyError {
    fn kind(&self) -> ErrorKind {
        match self {
            VerifyError::Usage(_) => ErrorKind::Config,
            VerifyError::Source(_) | VerifyError::Target { .. } => ErrorKind::Transient,
            VerifyError::Compare(_) => ErrorKind::Permanent,
            VerifyError::State(e) => e.kind(),
            VerifyError::Cycle(e) => e.kind(),
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
    let (pg, described) = crate::capture::source::connect(config, "db-sync verify --repair")
        .await
        .map_err(|e| VerifyError::Source(e.to_string()))?;
    let slot = crate::capture::engine_properties(config)
        .get("slot.name")
        .cloned()
        .unwrap_or_default();
    let active: bool = pg
        .query_opt(
            "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| {
            VerifyError::Source(format!(
                "{described}: {}",
                crate::capture::source::pg_error(&e)
            ))
        })?
        .is_some_and(|r| r.get(0));
    if !active {
        return Err(VerifyError::Compare(format!(
            "--repair re-reads keys through the running capture, and none is connected to replication slot {slot}; start `db-sync run` (or `capture`) and run verify --repair again"
        )));
    }
    let redacted = crate::apply::redact_url(tc.url.expose());
    let mut my = Session::new(tc.url.expose(), redacted)
        .map_err(|e| VerifyError::Usage(format!("`target.url` {e}")))?;
    let dir = config.journal.dir.clone();
    // No cycle writes to the target while extra rows are deleted.
    let lock = tokio::task::spawn_blocking(move || crate::state::locks::compact_lock(&dir))
        .await
        .map_err(|e| VerifyError::Compare(format!("waiting for compact.lock: {e}")))??;
    let mut done = BTreeMap::new();
    for t in report.tables.iter().filter(|t| t.differences() > 0) {
        let Some(plan) = &t.plan else {
            continue;
        };
        if t.keys_overflow {
            return Err(VerifyError::Compare(format!(
                "{}: more than {KEYS_CAP} keys differ, too many for a key-wise repair; rebuild the table with `db-sync backfill --table {} --resnapshot`",
                t.table, t.table
            )));
        }
        let deleted = repair::delete_extra(&pg, &mut my, plan, &t.extra_keys).await?;
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
    let dir = &config.journal.dir;
    let progress = if dir.is_dir() {
        ApplyProgress::load(dir)?
    } else {
        ApplyProgress::default()
    };
    let applied: Vec<String> = progress
        .column_types
        .keys()
        .filter(|t| !progress.skipped_tables.contains(*t))
        .cloned()
        .collect();
    let tables = select_tables(&applied, &opts.tables)?;

    let redacted = crate::apply::redact_url(tc.url.expose());
    let target_err = |message: String| VerifyError::Target {
        url: redacted.clone(),
        message,
    };
    let mut my = Session::new(tc.url.expose(), redacted.clone())
        .map_err(|e| VerifyError::Usage(format!("`target.url` {e}")))?;
    let (client, described) = crate::capture::source::connect(config, "db-sync verify")
        .await
        .map_err(|e| VerifyError::Source(e.to_string()))?;
    let pg = Arc::new(client);
    let pg_err = move |what: &str, e: tokio_postgres::Error| {
        VerifyError::Source(format!(
            "{what} on {described}: {}",
            crate::capture::source::pg_error(&e)
        ))
    };
    pg.batch_execute(
        "SET extra_float_digits = 1; SET DateStyle = ISO; SET IntervalStyle = postgres; \
         SET TimeZone = 'UTC'; SET bytea_output = hex; SET statement_timeout = 0",
    )
    .await
    .map_err(|e| pg_err("setting up the session", e))?;

    // Plans: the source's columns and key, the target's columns.
    let mut plans: Vec<Result<TablePlan, (String, String, String)>> = Vec::new();
    for table in &tables {
        let target = target_name(&tc.table_name, table);
        let (schema, name) = table.split_once('.').unwrap_or(("public", table));
        let cols = source_columns(&pg, schema, name)
            .await
            .map_err(|e| pg_err(&format!("reading the columns of {table}"), e))?;
        let target_cols = target_columns(&mut my, &target)
            .await
            .map_err(|e| target_err(format!("reading the columns of `{target}`: {e}")))?;
        let plan = if cols.is_empty() {
            Err("the source table does not exist".to_string())
        } else if target_cols.is_empty() {
            Err("the target table does not exist".to_string())
        } else {
            plan::table(table, &target, &cols, &target_cols)
        };
        plans.push(plan.map_err(|why| (table.clone(), target, why)));
    }

    // First pass: the whole of each table, at one snapshot per side.
    let start_lsn = begin_source_snapshot(&pg)
        .await
        .map_err(|e| pg_err("starting a snapshot", e))?;
    begin_target_snapshot(&mut my).await.map_err(&target_err)?;
    let mut tallies: Vec<Option<Tally>> = Vec::new();
    for plan in &plans {
        tallies.push(match plan {
            Ok(plan) => Some(compare_table(&pg, &mut my, plan, None, &target_err).await?),
            Err(_) => None,
        });
    }
    end_snapshots(&pg, &mut my).await;
    let first: Vec<u64> = tallies
        .iter()
        .map(|t| t.as_ref().map_or(0, Tally::differences))
        .collect();

    // Settle.
    let settle_start = Instant::now();
    let deadline = settle_start + opts.settle;
    let mut rechecks = 0;
    let mut caught_up_last = false;
    let mut capture_running = true;
    let mut last_digests: Option<Vec<u64>> = None;
    let mut lsn = start_lsn.clone();
    while tallies.iter().flatten().any(|t| t.differences() > 0) && Instant::now() < deadline {
        let wait = wait_applied_past(config, &pg, &lsn, deadline).await?;
        capture_running = wait.capture_running;
        caught_up_last = wait.caught_up;
        if !wait.caught_up && Instant::now() >= deadline {
            break;
        }
        lsn = begin_source_snapshot(&pg)
            .await
            .map_err(|e| pg_err("starting a snapshot", e))?;
        begin_target_snapshot(&mut my).await.map_err(&target_err)?;
        for (plan, tally) in plans.iter().zip(tallies.iter_mut()) {
            let (Ok(plan), Some(t)) = (plan, tally.as_mut()) else {
                continue;
            };
            if t.differences() == 0 {
                continue;
            }
            let source_rows = t.source_rows;
            let target_rows = t.target_rows;
            let mut fresh = if t.keys_overflow {
                compare_table(&pg, &mut my, plan, None, &target_err).await?
            } else {
                let mut acc = Tally::default();
                let all: Vec<Vec<Vec<u8>>> = t.keys.iter().chain(&t.extra_keys).cloned().collect();
                for keys in all.chunks(KEYS_PER_QUERY) {
                    let part = compare_table(&pg, &mut my, plan, Some(keys), &target_err).await?;
                    acc.absorb(part);
                }
                acc
            };
            if !t.keys_overflow {
                // A re-check of some keys keeps the first pass's row counts.
                fresh.source_rows = source_rows;
                fresh.target_rows = target_rows;
            }
            *t = fresh;
        }
        end_snapshots(&pg, &mut my).await;
        rechecks += 1;
        let digests: Vec<u64> = tallies
            .iter()
            .map(|t| t.as_ref().map_or(0, |t| t.digest))
            .collect();
        if wait.caught_up && last_digests.as_ref() == Some(&digests) {
            break; // the same rows differ the same way twice after catching up: not in flight
        }
        last_digests = wait.caught_up.then_some(digests);
    }
    let settle_seconds = if rechecks > 0 {
        settle_start.elapsed().as_secs_f64()
    } else {
        0.0
    };

    let mut reports = Vec::new();
    for ((plan, tally), first) in plans.iter().zip(tallies).zip(first) {
        reports.push(match (plan, tally) {
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
                keys: t.keys.clone(),
                extra_keys: t.extra_keys.clone(),
                keys_overflow: t.keys_overflow,
            },
            (Ok(plan), None) => TableReport::not_compared(&plan.source, &plan.target, "not read"),
            (Err((table, target, why)), _) => TableReport::not_compared(table, target, why),
        });
    }
    let report = Report {
        tables: reports,
        start_lsn,
        settle_seconds,
        rechecks,
        caught_up: caught_up_last,
        capture_running,
        seconds: started.elapsed().as_secs_f64(),
    };
    record(config, &report)?;
    Ok(report)
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

/// The target table name of `source` under `target.table_name` (as apply names it).
fn target_name(template: &str, source: &str) -> String {
    let (schema, table) = source.split_once('.').unwrap_or(("", source));
    template
        .replace("{schema}", schema)
        .replace("{table}", table)
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
    pg: &tokio_postgres::Client,
    lsn: &str,
    deadline: Instant,
) -> Result<Waited, VerifyError> {
    let slot = crate::capture::engine_properties(config)
        .get("slot.name")
        .cloned()
        .unwrap_or_default();
    let dir = &config.journal.dir;
    loop {
        let row = pg
            .query_opt(
                "SELECT active, coalesce(confirmed_flush_lsn >= $2::text::pg_lsn, false) \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot, &lsn],
            )
            .await
            .map_err(|e| VerifyError::Source(crate::capture::source::pg_error(&e)))?;
        let (active, confirmed) = row.map_or((false, false), |r| (r.get(0), r.get(1)));
        if confirmed || !active {
            // Everything up to `lsn` is journaled (or nothing more will be): apply it all.
            let journaled = last_journaled(dir)?;
            loop {
                let applied = if dir.is_dir() {
                    ApplyProgress::load(dir)?.applied_through
                } else {
                    0
                };
                if applied >= journaled {
                    return Ok(Waited {
                        caught_up: true,
                        capture_running: active,
                    });
                }
                if Instant::now() >= deadline {
                    return Ok(Waited {
                        caught_up: false,
                        capture_running: active,
                    });
                }
                crate::cycle::run_once(config).await?;
            }
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

/// The last sequence in the journal (0 when empty or missing).
fn last_journaled(dir: &std::path::Path) -> Result<u64, VerifyError> {
    if !dir.is_dir() {
        return Ok(0);
    }
    let io = |e: crate::journal::JournalError| VerifyError::Compare(e.to_string());
    let segments = crate::journal::segments(dir).map_err(io)?;
    let mut last = segments.last().map_or(0, |s| s.first_seq.saturating_sub(1));
    crate::journal::read_events(dir, segments.last().map_or(0, |s| s.first_seq), |e| {
        last = e.seq;
        Ok(true)
    })
    .map_err(io)?;
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
