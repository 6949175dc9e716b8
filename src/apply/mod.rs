//! Apply: audited journal windows → merged, batched upserts and deletes in the MySQL target.
//!
//! [`apply_audited`] guarantees:
//!
//! - **Exactly-once effect.** Work goes in windows ([`window`]: bounded by the rows their
//!   merge holds), recorded in [`ApplyProgress`](crate::state::ApplyProgress) (`pending`)
//!   before anything is sent. A window's changes are merged per key ([`merge`]) and cut into
//!   numbered chunks of `target.batch_rows` rows ([`chunk`]; a table the target keeps unique
//!   indexes of its own on has its upserts in one, [`exchange`]); each chunk commits in one
//!   transaction with its row in `_db_sync_checkpoint` ([`checkpoint`],
//!   [`write`](mod@write)). A re-run after a crash anywhere redoes the same window, finds the
//!   same chunks, and skips the committed ones.
//! - **Order.** Windows apply in journal order, each only after the one before it is done, so
//!   an older value never overwrites a newer one.
//! - **Nothing lost on failure.** The journal keeps every event until it is applied (GC needs
//!   audited *and* applied); a transient failure is retried with backoff ([`sql`]), a
//!   permanent one stops the cycle with the table, column and key, and the next cycle starts
//!   again from there.
//! - **One table's bad row never stops the others.** A row the target refuses for its values
//!   (out of range, too long, a constraint of the target's own) is set aside with
//!   `target.on_reject: quarantine` ([`rejected`]); with `stop`, the default, it holds its
//!   table out of apply ([`Hold`]): the window's other tables go on, the held table's later
//!   changes wait in the audit files, and `compact --once` exits 1 with one line naming the
//!   row and the fix until a backfill of the table ends the hold. The table's chunks in the
//!   window where the hold began are still cut, so a re-run of that window numbers them all
//!   as before. A refusal that would meet every table alike (a privilege, a table changed by
//!   hand) still stops the cycle.
//!
//! Tables without a primary key (captured only with `REPLICA IDENTITY FULL`) are not merged:
//! each change applies as it came, matched by all its columns ([`unkeyed`]).
//!
//! [`Applier`] is the target side on its own (connection, tables, chunks and checkpoints):
//! `backfill` drives it with windows read from audit files instead of the journal.
//!
//! Keys: `target.url` (`mysql://USER:PASSWORD@HOST:PORT/DB`, TLS through its `ssl-mode` and
//! `ssl-ca` parameters), `target.batch_rows` (rows per chunk, default 20,000),
//! `target.connections` (chunks of disjoint keys applied side by side, default 2),
//! `target.create_tables` (create missing tables, add new columns; default true),
//! `target.table_name` (default `{table}`), `target.load_data` (the `LOAD DATA` path, default
//! true), `target.truncate` (`apply` or `ignore` a source TRUNCATE), `target.on_reject`
//! (`stop` the table of a row the target refuses, or `quarantine` the row) and
//! `target.dropped_columns` (`keep` a column the source dropped, NULL in rows written
//! afterwards, or `drop` it). `memory_limit_mb` bounds a window's merged rows and a chunk's
//! bytes ([`crate::config::Budget`]).
//!
//! # Checkpoint tables
//!
//! db-sync keeps these tables in the target database, beside the applied tables:
//!
//! - **`_db_sync_checkpoint`** ([`checkpoint`]): one row per committed chunk, inserted first
//!   in the chunk's own transaction. Primary key (`pipeline`, `window_from`, `chunk`); also
//!   `window_to`, `chunks` (in the window), `table_name`, `operation`, `row_count`,
//!   `committed_at` (UTC) and `digest` (16 hex digits of the chunk's plan: window, number,
//!   table, operation, row count, first and last key; a re-run whose plan of a committed
//!   chunk differs stops instead of skipping it). `pipeline` is the checkpoint key: the pipeline name and the
//!   journal's id (`<name>:<journal>`, [`crate::state::identity`]), or
//!   `<name>:backfill:<table>` for a backfill, `<name>:repair:<table>` for the deletes of
//!   `verify --repair` ([`Applier::delete_keys`]). An insert that hits the primary key means an
//!   earlier run committed the chunk: its transaction is rolled back and the chunk skipped.
//!   At the end of a run, the rows of the windows before the last one it applied go.
//! - **`_db_sync_rejected`** ([`rejected`], `target.on_reject: quarantine`): one row per
//!   (`pipeline`, `table_name`, `key_hash`) the target refused, with the key and value as
//!   text, the target table and column, the error and the journal sequence, written in the
//!   transaction of the chunk it came in. `pipeline` here is the pipeline name alone.
//! - **`_db_sync_seen_<hash>`** ([`sweep`]): while a table's full snapshot is applied over a
//!   target table that already had rows, the keys the snapshot wrote; dropped once the sweep
//!   has deleted the rows it did not bring.
//!
//! # MySQL facts apply relies on
//!
//! Every statement is valid on MySQL 8 and MariaDB 10.11 (the tests' target). Sessions write
//! UTC (`DATETIME` has no zone) in strict mode, so a value the column cannot hold is an error,
//! not a rounding ([`sql`]). A deadlock (1213) or lock wait timeout (1205) rolls the whole
//! transaction back: the chunk is retried, not the statement. `INSERT … ON DUPLICATE KEY
//! UPDATE c = VALUES(c)` is the upsert both servers accept (MySQL's row alias is not MariaDB
//! syntax); `LOAD DATA LOCAL INFILE … REPLACE` is faster but deletes and re-inserts, and
//! needs `local_infile` on the server ([`write`](mod@write)). A statement binds at most 65,535
//! parameters ([`statement`]). Identifiers are quoted with backticks, a backtick doubled
//! ([`quote`]); a key must be indexable whole, and a row's `VARCHAR`s must fit in 65,535
//! bytes ([`ddl`]).

mod checkpoint;
mod chunk;
mod ddl;
mod exchange;
pub mod merge;
mod moves;
mod parallel;
mod profile;
pub mod rejected;
mod run;
pub mod sql;
mod statement;
mod sweep;
mod unkeyed;
mod values;
mod window;
mod write;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::audit::AuditError;
use crate::compact::{CompactError, SnapshotMarks};
use crate::config::{
    target_name_clashes, target_table_name as target_name, Config, DroppedColumns, OnReject,
    TargetConfig,
};
use crate::error::{Classify, ErrorKind};
use crate::journal::JournalError;
use crate::state::{ApplyWindow, ColumnTypes, Hold, StateError, Sweep};
use ddl::TargetTable;
use merge::{MergeError, TablePlan};
use profile::{Profile, Step};
use sql::{Session, SqlError};

pub use ddl::quote;
pub use run::apply_audited;
pub use sql::redact_url;

/// The most changes one apply window spans. Windows are bounded by their merged rows (the
/// memory budget's `window_bytes`, see [`window`]); this only keeps the merge's per-change
/// bookkeeping (4 bytes a change) and a window's redo after a crash within reason.
pub const WINDOW_EVENTS: u64 = 2_097_152;
/// A window of snapshot rows only (which never repeat a key) stops at this many changes.
pub const SNAPSHOT_WINDOW_EVENTS: u64 = 131_072;
/// The first window of a run is this small and each next one twice the size, up to
/// [`SNAPSHOT_WINDOW_EVENTS`], while the windows hold snapshot rows only: chunks start going to
/// the target after a short merge, and from then on the next window's merge runs while the
/// current one is applied.
pub const FIRST_WINDOW_EVENTS: u64 = 8_192;
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
    #[error("apply stopped: {0}")]
    TypeChange(Box<TypeChange>),
    /// The target refused a row: its table is held out of apply when the refusal is about
    /// the row's values ([`ApplyError::refuses_a_value`]), else apply stops.
    #[error("apply stopped: {0}; change the target column (or the source value), then run compact again: the journal keeps every change not yet applied")]
    Rejected(Box<Refusal>),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("apply stopped: {0}")]
    Internal(String),
    /// A checkpoint row says its chunk covered other rows than this run plans for it.
    #[error("apply stopped: {0}")]
    CheckpointMismatch(String),
    /// The target table's primary key is not the source table's.
    #[error("apply stopped: {0}")]
    KeyMismatch(String),
}

/// A source column type change the target table cannot follow without loss.
#[derive(Debug)]
pub struct TypeChange {
    pub source_table: String,
    pub table: String,
    pub column: String,
    pub from: String,
    pub to: String,
    /// The statement that would follow it, for the user to judge and run.
    pub statement: String,
}

impl std::fmt::Display for TypeChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} changed column `{}` from {} to {}, which target table `{}` cannot follow without loss; check its values, run `{}` on the target, then run compact again (the journal keeps every change not yet applied)",
            self.source_table, self.column, self.from, self.to, self.table, self.statement
        )
    }
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

/// A row the target refused.
#[derive(Debug)]
pub struct Refusal {
    pub source_table: String,
    pub table: String,
    pub column: Option<String>,
    /// The row's key as people read it (all its values without a key).
    pub key: String,
    pub message: String,
    /// The refusal is about the row's values (db-sync found a value the column cannot hold,
    /// or the server said so: [`VALUE_ERRORS`]).
    pub of_value: bool,
}

/// The refused row as one phrase: target table, source table, column, key, and why.
impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let column = self
            .column
            .as_ref()
            .map(|c| format!(", column `{c}`"))
            .unwrap_or_default();
        write!(
            f,
            "target table `{}` (for {}){column}, key {}: {}",
            self.table, self.source_table, self.key, self.message
        )
    }
}

/// MySQL errors about a row's values, not about the server, the session or the table's
/// definition: a value out of range, too long, not valid for its type, NULL where the column
/// takes none, a duplicate on a unique index, a foreign key or CHECK constraint, no target
/// row to change.
const VALUE_ERRORS: &[u16] = &[
    1032, 1048, 1062, 1264, 1265, 1292, 1300, 1366, 1367, 1406, 1411, 1416, 1451, 1452, 1690, 3140,
    3819, 4025,
];

/// Whether the server's refusal `e` is about a row's values ([`VALUE_ERRORS`]).
fn refuses_values(e: &SqlError) -> bool {
    !e.transient && e.code.is_some_and(|c| VALUE_ERRORS.contains(&c))
}

impl ApplyError {
    /// The row the target refused for its values, as one phrase, when this is such a
    /// refusal: with `target.on_reject: stop` it holds the row's table alone (see
    /// [`crate::state::Hold`]). Other refusals (a privilege, a table changed by hand) would
    /// refuse every table alike: they stop apply.
    pub fn refuses_a_value(&self) -> Option<String> {
        match self {
            ApplyError::Rejected(r) if r.of_value => Some(r.to_string()),
            _ => None,
        }
    }
}

impl Classify for ApplyError {
    fn kind(&self) -> ErrorKind {
        match self {
            ApplyError::Config { .. } | ApplyError::KeyMismatch(_) => ErrorKind::Config,
            ApplyError::Audit(e) => e.kind(),
            ApplyError::State(e) => e.kind(),
            ApplyError::Journal(e) => e.kind(),
            ApplyError::Decode(e) => e.kind(),
            ApplyError::Unreachable { .. } => ErrorKind::Transient,
            ApplyError::Sql { source, .. } => source.kind(),
            ApplyError::Merge(_)
            | ApplyError::NoTable { .. }
            | ApplyError::NoColumn { .. }
            | ApplyError::TypeChange(_)
            | ApplyError::Rejected(_)
            | ApplyError::Internal(_)
            | ApplyError::CheckpointMismatch(_) => ErrorKind::Permanent,
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
    /// Connections that applied chunks at once (`target.connections`).
    pub connections: usize,
    pub profile: profile::Seconds,
}

/// The target side of apply: a session, the tables it has prepared, and the chunk protocol.
/// Checkpoint rows go under `pipeline` (the pipeline name for apply, `<name>:backfill:<table>`
/// for backfill).
pub struct Applier {
    session: Session,
    /// More sessions for chunks applied in parallel (`target.connections` - 1), opened on
    /// first use.
    workers: Vec<Session>,
    connections: usize,
    pipeline: String,
    /// Use `LOAD DATA LOCAL` (configured, and the server has not refused it).
    load_data: AtomicBool,
    create_tables: bool,
    /// `target.dropped_columns: drop`.
    drop_columns: bool,
    table_name: String,
    collation: Option<String>,
    /// `target.on_reject: quarantine`.
    quarantine: bool,
    /// A row the target refuses for its values holds its table out of apply, and the other
    /// tables go on (apply with `on_reject: stop`); else it stops.
    hold: bool,
    /// The most bytes of rendered rows one chunk holds.
    chunk_bytes: usize,
    /// Source tables with rows in `_db_sync_rejected` (their applied keys clear them).
    rejects: Mutex<std::collections::HashSet<String>>,
    profile: Profile,
    /// Source tables whose snapshot a `snapshot.select.statement.overrides` statement reads:
    /// their snapshot need not hold every row, so it never sweeps.
    filtered: std::collections::HashSet<String>,
}

/// What [`Applier::apply_window`] did.
pub struct WindowDone {
    pub chunks: u32,
    pub skipped: u32,
    /// Stopped on request before the last chunk.
    pub stopped: bool,
    /// The snapshot sweeps the window committed: source table, chunk, stage table.
    pub sweeps: Vec<(String, u32, String)>,
    /// Tables held out of apply in this window (see [`Applier::holding`]).
    pub holds: Vec<(String, Hold)>,
}

/// The snapshot sweeps of a window: where its tables have full-snapshot rows, and the sweep
/// state of each table ([`sweep`]).
#[derive(Default)]
pub struct SweepPlan<'a> {
    pub marks: HashMap<String, SnapshotMarks>,
    pub sweeps: Option<&'a BTreeMap<String, Sweep>>,
}

impl Applier {
    /// An applier for `target:` (not connected yet); a bad URL is a config error.
    pub fn new(
        tc: &TargetConfig,
        pipeline: &str,
        budget: crate::config::Budget,
    ) -> Result<Applier, ApplyError> {
        let session = Session::new(tc.url.expose(), redact_url(tc.url.expose())).map_err(|e| {
            ApplyError::Config {
                key: "target.url".into(),
                message: e.to_string(),
            }
        })?;
        Ok(Applier {
            session,
            workers: Vec::new(),
            connections: tc.connections.max(1),
            pipeline: pipeline.to_string(),
            load_data: AtomicBool::new(tc.load_data),
            create_tables: tc.create_tables,
            drop_columns: tc.dropped_columns == DroppedColumns::Drop,
            table_name: tc.table_name.clone(),
            collation: None,
            quarantine: tc.on_reject == OnReject::Quarantine,
            hold: false,
            chunk_bytes: budget.chunk_bytes,
            rejects: Default::default(),
            profile: Profile::default(),
            filtered: Default::default(),
        })
    }

    /// Leaves the snapshot sweep out for the tables `config` reads through a
    /// `snapshot.select.statement.overrides` statement (a filter may leave rows out that the
    /// target rightly has).
    pub fn with_snapshot_filters(mut self, config: &Config) -> Applier {
        self.filtered = snapshot_filtered(config);
        self
    }

    /// A row the target refuses for its values holds its table out of apply instead of
    /// stopping it (`target.on_reject: stop`; see [`Hold`]): the window's other tables go on,
    /// and [`WindowDone::holds`] says which table and why.
    pub fn holding(mut self) -> Applier {
        self.hold = !self.quarantine;
        self
    }

    /// Connects (retrying) and creates the checkpoint table (and, with `on_reject:
    /// quarantine`, the rejected-rows table) if missing.
    pub async fn prepare(&mut self) -> Result<(), ApplyError> {
        let url = self.session.url.clone();
        checkpoint::create(&mut self.session)
            .await
            .map_err(|e| ApplyError::sql(&url, "creating the checkpoint table", e))?;
        if self.quarantine {
            rejected::create(&mut self.session)
                .await
                .map_err(|e| ApplyError::sql(&url, "creating the rejected-rows table", e))?;
            let tables = rejected::tables_with_rejects(&mut self.session, &self.pipeline)
                .await
                .map_err(|e| ApplyError::sql(&url, "reading the rejected-rows table", e))?;
            *self.rejects.get_mut().expect("not poisoned") = tables.into_iter().collect();
        }
        Ok(())
    }

    pub fn uses_load_data(&self) -> bool {
        self.load_data.load(Ordering::Relaxed)
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

    /// Deletes the target rows of source table `table` at `keys` (each key's values as the
    /// target's own text, in the order of the `key` columns) through the chunk protocol: one
    /// window of delete chunks of `target.batch_rows` keys, each one transaction with its
    /// checkpoint row (`verify --repair`, whose applier has a pipeline key of its own).
    pub async fn delete_keys(
        &mut self,
        table: &str,
        key: &[String],
        keys: &[Vec<Vec<u8>>],
        batch_rows: usize,
    ) -> Result<WindowDone, ApplyError> {
        let deletes: Vec<Box<[u8]>> = keys
            .iter()
            .map(|values| {
                let mut cells = Vec::new();
                for v in values {
                    merge::push_cell(&mut cells, merge::Cell::Value(v));
                }
                cells.into_boxed_slice()
            })
            .collect();
        let plan = TablePlan {
            table: table.to_string(),
            versions: Vec::new(),
            key: key.to_vec(),
            truncate: false,
            delete_seqs: vec![0; deletes.len()],
            deletes,
            moves: Vec::new(),
            upserts: Vec::new(),
            changes: Vec::new(),
            snapshot_start: None,
        };
        let window = ApplyWindow::unrecorded(1, 1, batch_rows, keys.len() as u64);
        let none = SweepPlan::default();
        self.apply_window(&window, &[plan], None, &none, &BTreeSet::new(), None)
            .await
    }

    /// Drops the stage table of a snapshot sweep that will not finish.
    pub async fn drop_sweep_stage(&mut self, stage: &str) -> Result<(), ApplyError> {
        sweep::finish(&mut self.session, stage)
            .await
            .map_err(|e| ApplyError::sql(&self.session.url, "dropping a stage table", e))
    }

    /// Empties the target table of source table `source` when it exists: its name, and
    /// whether it did.
    pub async fn truncate(&mut self, source: &str) -> Result<(String, bool), ApplyError> {
        let name = self.target_name(source);
        let done = ddl::truncate(&mut self.session, &name).await?;
        Ok((name, done))
    }

    async fn prepare_table(
        &mut self,
        plan: &TablePlan,
        known: Option<&mut BTreeMap<String, String>>,
    ) -> Result<TargetTable, ApplyError> {
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
            (self.create_tables, self.drop_columns),
            &collation,
            known,
        )
        .await
    }

    /// Decides, before any of their chunks, which tables whose full snapshot starts in this
    /// window get a sweep: those whose target table already has rows. Returns whether
    /// `sweeps` changed (the caller records it before applying).
    pub async fn plan_sweeps(
        &mut self,
        window_from: u64,
        plans: &[TablePlan],
        marks: &HashMap<String, SnapshotMarks>,
        sweeps: &mut BTreeMap<String, Sweep>,
    ) -> Result<bool, ApplyError> {
        let mut changed = false;
        for plan in plans {
            let starts = marks.get(&plan.table).is_some_and(|m| m.rows);
            // A snapshot that completed in an earlier window is over: these rows are a new
            // full snapshot's (a resync), decided afresh.
            let decided = match sweeps.get(&plan.table) {
                None => false,
                Some(Sweep::Done { window_from: w, .. } | Sweep::Complete { window_from: w }) => {
                    *w >= window_from
                }
                Some(Sweep::NotNeeded | Sweep::Staging { .. } | Sweep::Replace { .. }) => true,
            };
            if !starts || decided {
                continue;
            }
            if self.filtered.contains(&plan.table) {
                tracing::info!(
                    table = %plan.table,
                    "a snapshot read through snapshot.select.statement.overrides may leave rows out: no sweep deletes the target rows it does not bring"
                );
                sweeps.insert(plan.table.clone(), Sweep::NotNeeded);
                changed = true;
                continue;
            }
            if plan.key.is_empty() {
                tracing::info!(
                    table = %plan.table,
                    "a full snapshot of a table without a key starts: the target table is emptied before its first row (rows that may be equal cannot be swept one by one)"
                );
                sweeps.insert(plan.table.clone(), Sweep::Replace { window_from });
                changed = true;
                continue;
            }
            let target = self.target_name(&plan.table);
            let stage = sweep::start(&mut self.session, &self.pipeline, &target, &plan.key)
                .await
                .map_err(|e| ApplyError::sql(&self.session.url, "starting a snapshot sweep", e))?;
            let state = match stage {
                Some(stage) => {
                    tracing::info!(
                        table = %plan.table,
                        target = %target,
                        "a full snapshot starts over a target table that has rows: the rows it does not bring (deleted at the source meanwhile) go when it completes"
                    );
                    Sweep::Staging { stage }
                }
                None => Sweep::NotNeeded,
            };
            sweeps.insert(plan.table.clone(), state);
            changed = true;
        }
        Ok(changed)
    }

    /// Applies the merged `plans` of `window`: tables prepared, chunks numbered (table by
    /// table: a truncate, deletes, moves, then each upsert group; see `chunk.rs`), committed
    /// chunks skipped. `column_types` holds the types db-sync gave each table's columns (per
    /// source table; see [`ddl::prepare_table`]), `None` when there is no such record. The
    /// chunks of the tables in `held` are cut but not applied (their hold began in this
    /// window). With `stop`, returns at the next chunk boundary once it turns true.
    pub async fn apply_window(
        &mut self,
        window: &ApplyWindow,
        plans: &[TablePlan],
        column_types: Option<&mut ColumnTypes>,
        sweeps: &SweepPlan<'_>,
        held: &BTreeSet<String>,
        stop: Option<&tokio::sync::watch::Receiver<bool>>,
    ) -> Result<WindowDone, ApplyError> {
        self.check_names(plans)?;
        let tables = self.prepare_tables(plans, column_types).await?;
        let cut = chunk::cut(window, plans, &tables, sweeps, self.chunk_bytes);
        let total = cut.chunks.len() as u32;
        let committed = if total > 0 {
            checkpoint::committed(&mut self.session, &self.pipeline, window.from)
                .await
                .map_err(|e| {
                    ApplyError::sql(&self.session.url, "reading the checkpoint table", e)
                })?
        } else {
            Default::default()
        };
        let committed = self.check_digests(window, &cut.chunks, committed)?;
        let mut held = held.clone();
        let mut holds = Vec::new();
        let (skipped, stopped) = self
            .apply_runs(&cut.chunks, &committed, &mut held, &mut holds, stop)
            .await?;
        for (table, hold) in &holds {
            tracing::error!("{}", hold.line(table));
        }
        let sweeps = cut
            .sweeps
            .into_iter()
            .filter(|(table, ..)| !held.contains(table))
            .collect();
        if stopped {
            return Ok(WindowDone {
                chunks: total,
                skipped,
                stopped: true,
                sweeps: Vec::new(),
                holds,
            });
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
            sweeps,
            holds,
        })
    }

    /// The chunks an earlier run committed, once each checkpoint row's digest matches this
    /// run's plan of its chunk (rows from before digests match any plan). A mismatch means
    /// the row is not this chunk's: skipping it would leave rows unapplied.
    fn check_digests(
        &self,
        window: &ApplyWindow,
        chunks: &[chunk::Chunk<'_>],
        committed: HashMap<u32, Option<String>>,
    ) -> Result<HashSet<u32>, ApplyError> {
        for c in chunks {
            let Some(Some(recorded)) = committed.get(&c.no) else {
                continue;
            };
            if *recorded != c.digest() {
                return Err(ApplyError::CheckpointMismatch(format!(
                    "the checkpoint row of chunk {} of window {}..={} in `{}` (pipeline `{}`) was written for another plan of that chunk than this run's ({} {} row(s) of `{}`): the state directory was restored from an older copy, or the config changed between a crash and this run. Put back the state and config the window was applied with and run again, or rebuild the table with `db-sync backfill --table {} --truncate`",
                    c.no,
                    window.from,
                    window.to,
                    checkpoint::TABLE,
                    self.pipeline,
                    c.operation(),
                    c.rows(),
                    c.target.name,
                    c.plan.table,
                )));
            }
        }
        Ok(committed.into_keys().collect())
    }

    /// Two source tables must not land in one target table (`target.table_name`); capture
    /// refuses such a config at start, this catches the rest (a capture run before that check).
    fn check_names(&self, plans: &[TablePlan]) -> Result<(), ApplyError> {
        let clashes = target_name_clashes(&self.table_name, plans.iter().map(|p| p.table.as_str()));
        match clashes.into_iter().next() {
            None => Ok(()),
            Some((name, first, second)) => Err(ApplyError::Config {
                key: "target.table_name".into(),
                message: format!(
                    "maps both {first} and {second} to target table `{name}`; include {{schema}} in it"
                ),
            }),
        }
    }

    /// The target table of each plan, created or altered to hold its rows. `None`: a window
    /// with only a truncate of a table the target does not have.
    async fn prepare_tables(
        &mut self,
        plans: &[TablePlan],
        mut column_types: Option<&mut ColumnTypes>,
    ) -> Result<Vec<Option<TargetTable>>, ApplyError> {
        let mut tables = Vec::with_capacity(plans.len());
        let preparing = Instant::now();
        for p in plans {
            if p.versions.is_empty() {
                let name = self.target_name(&p.table);
                tables.push(ddl::describe(&mut self.session, &name).await?);
                continue;
            }
            let known = column_types
                .as_deref_mut()
                .map(|k| k.entry(p.table.clone()).or_default());
            tables.push(Some(self.prepare_table(p, known).await?));
        }
        self.profile.lap(Step::Tables, preparing);
        Ok(tables)
    }

    /// After the window that committed them: the rows each sweep deleted (its checkpoint row
    /// says), the stage tables dropped, and the sweeps recorded as done; the snapshots that
    /// completed without a sweep recorded as complete.
    pub async fn finish_sweeps(
        &mut self,
        window_from: u64,
        done: &[(String, u32, String)],
        marks: &HashMap<String, SnapshotMarks>,
        sweeps: &mut BTreeMap<String, Sweep>,
    ) -> Result<(), ApplyError> {
        for (table, m) in marks {
            if m.done
                && matches!(
                    sweeps.get(table),
                    Some(Sweep::NotNeeded | Sweep::Replace { .. })
                )
            {
                sweeps.insert(table.clone(), Sweep::Complete { window_from });
            }
        }
        for (table, chunk, stage) in done {
            let url = self.session.url.clone();
            let rows =
                checkpoint::row_count(&mut self.session, &self.pipeline, window_from, *chunk)
                    .await
                    .map_err(|e| ApplyError::sql(&url, "reading the checkpoint table", e))?
                    .unwrap_or(0);
            sweep::finish(&mut self.session, stage)
                .await
                .map_err(|e| ApplyError::sql(&url, "dropping a stage table", e))?;
            if rows > 0 {
                tracing::warn!(
                    table = %table,
                    rows,
                    "the full snapshot is complete: deleted {rows} target rows it did not bring (they were deleted at the source while nothing captured it)"
                );
            } else {
                tracing::info!(table = %table, "the full snapshot is complete: the target had no rows it did not bring");
            }
            sweeps.insert(
                table.clone(),
                Sweep::Done {
                    rows,
                    window_from,
                    finished_at: chrono::Utc::now().to_rfc3339(),
                },
            );
        }
        Ok(())
    }
}

/// The source tables `snapshot.select.statement.overrides` names (a comma-separated list of
/// `schema.table`, each with its statement under `snapshot.select.statement.overrides.<table>`).
pub fn snapshot_filtered(config: &Config) -> std::collections::HashSet<String> {
    config
        .source_prop("snapshot.select.statement.overrides")
        .map(|list| {
            list.split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_of_a_value_hold_a_table() {
        let refusal = |code: u16, transient: bool| SqlError {
            code: Some(code),
            message: format!("error {code}"),
            transient,
            fatal: false,
        };
        // Incorrect value, too long, out of range, a duplicate, no row to change.
        for code in [1366, 1406, 1264, 1062, 1032] {
            assert!(refuses_values(&refusal(code, false)), "{code}");
        }
        // A privilege, a table or column the target lacks, a read-only server, a lock wait.
        for code in [1142, 1146, 1054, 1290] {
            assert!(!refuses_values(&refusal(code, false)), "{code}");
        }
        assert!(!refuses_values(&refusal(1205, true)));
        let rejected = |of_value| {
            ApplyError::Rejected(Box::new(Refusal {
                source_table: "public.t".into(),
                table: "t".into(),
                column: Some("d".into()),
                key: "id=2".into(),
                message: "Incorrect double value".into(),
                of_value,
            }))
        };
        assert_eq!(
            rejected(true).refuses_a_value().as_deref(),
            Some("target table `t` (for public.t), column `d`, key id=2: Incorrect double value")
        );
        assert_eq!(rejected(false).refuses_a_value(), None);
        assert!(rejected(false).to_string().contains("journal keeps"));
    }

    #[test]
    fn target_names_follow_the_template() {
        assert_eq!(target_name("{table}", "public.orders"), "orders");
        assert_eq!(
            target_name("{schema}_{table}", "sales.orders"),
            "sales_orders"
        );
    }
}
