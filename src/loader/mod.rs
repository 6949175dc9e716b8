//! The native initial loader: db-sync reads a PostgreSQL source's initial snapshot itself,
//! with binary `COPY` over page (`ctid`) ranges on `snapshot.connections` connections, and
//! journals the rows as snapshot reads in the bridge's own encoding, so audit files, apply,
//! backfill and `query` see no difference from Debezium's snapshot. Debezium then only
//! streams (`snapshot.mode=no_data`).
//!
//! # When the rows are exact
//!
//! Before the first range is read, the loader makes sure the publication and the
//! replication slot exist (creating them if not), and only then exports one snapshot `S`
//! (`pg_export_snapshot` in a `REPEATABLE READ` transaction held open for the whole load),
//! which every reader imports. All ranges so come from one instant: each row is on exactly
//! one page of it, so the page ranges read it exactly once, however the table is written
//! meanwhile. Streaming starts after the last range, from the slot's consistent point `L`,
//! which comes before `S`: a change committed between the two is both in the rows read and
//! replayed after them, which ends in the same row (an upsert of the values the row has, a
//! delete of a row that is not there, a key change whose new row is already there). No
//! change is lost and none lands on a row older than it.
//!
//! # Resumable
//!
//! The plan (each table's ranges) is written once to `loader-progress.json` in the state
//! directory, and each range is marked there once its rows are journaled. Before a range's
//! append the file names it and the journal's next sequence; a crash in the append (a torn
//! batch) is found on the next start by the journal having grown past that sequence, and the
//! range is read again without the keys it already journaled. A restart reads only the ranges
//! not done; the slot still holds every change from `L`. A torn range stays noted (`torn`)
//! until it is read again, so a second crash before that still knows which of its rows are
//! journaled.
//!
//! The first snapshot does not survive a restart; the ranges left are read under a new one,
//! and a row written in between may have moved across pages. The plan notes `S`'s `xmin`:
//! a row version no transaction since has written is where `S` saw it, and the page ranges
//! left read only those; every row written since is read once more, from the whole table,
//! under the new snapshot ([`progress::Progress::resume`]). Such a row may so come twice
//! among the snapshot reads (as `S` saw it and as the new snapshot does); the slot's replay
//! then brings it to its latest state, so the target ends exact. A source nobody writes
//! while db-sync is down gets every row exactly once.
//!
//! # Snapshot markers
//!
//! Apply's snapshot sweep needs a table's last snapshot row flagged. The writer holds each
//! table's latest non-empty range back until the next one arrives, so that the table's last
//! range is known when it is written; the last row of it carries the table's last-row flag,
//! and the last table's last row the snapshot's.
//!
//! # Tables that join later
//!
//! A table added to a pipeline that streams is loaded the same way ([`Start::Joined`]), before
//! the engine streams on: it joins the publication first, so the slot replays its changes from
//! there over the rows read. Its plan replaces the completed one in `loader-progress.json`.
//!
//! # What it reads
//!
//! Every included table whose columns are all of the types [`columns::Kind`] knows, with
//! Debezium's default value handling. Otherwise, or with source keys that change what
//! Debezium sends (`column.include.list`, `decimal.handling.mode`, …), the whole initial
//! snapshot goes through Debezium, with one line saying why; so does `snapshot.loader:
//! debezium`.

mod columns;
mod copy;
mod progress;
mod write;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use tokio::sync::watch;

use crate::config::{Config, Loader};
use crate::journal::event;
use crate::journal::Journal;
use crate::source::tables::SourceTable;
use crate::source::{self, connect, SourceError};
use columns::{Column, Kind};
pub use progress::{LoadStatus, TableLoad, PROGRESS_FILE};
use progress::{Progress, Range};

/// Source keys that change what Debezium sends for a value or which columns it sends; with
/// any of them set, Debezium reads the snapshot.
const DEBEZIUM_ONLY_KEYS: &[&str] = &[
    "decimal.handling.mode",
    "time.precision.mode",
    "binary.handling.mode",
    "interval.handling.mode",
    "hstore.handling.mode",
    "column.include.list",
    "column.exclude.list",
    "converters",
    "message.key.columns",
    "snapshot.select.statement.overrides",
    "field.name.adjustment.mode",
    "schema.name.adjustment.mode",
    "topic.naming.strategy",
    "money.fraction.digits",
];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("initial load: {0}")]
    Read(String),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// One table the loader reads.
#[derive(Debug, Clone)]
pub struct Table {
    /// `schema.table`.
    pub name: String,
    /// The columns Debezium sends, in table order.
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the primary key, in key order.
    pub key: Vec<usize>,
    /// The schema entry JSON (`{"table","topic","key","row"}`), as the bridge writes it.
    pub schema_json: String,
    /// The relations holding the rows (the partitions of a partitioned table).
    pub leaves: Vec<Leaf>,
}

/// A relation holding rows: the table, or a partition of it.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Quoted `schema.table`.
    pub name: String,
    /// Heap pages when the load was planned.
    pub pages: u32,
    /// Heap, TOAST and maps, in bytes.
    pub bytes: u64,
    /// The relation's file (`pg_relation_filenode`): a rewrite changes it.
    pub filenode: u32,
    /// Bytes per heap page of the rows as read (detoasted and decompressed), measured on a
    /// sample of the first rows: compressible TOASTed values are far larger read than
    /// stored.
    pub read_per_page: u64,
}

impl Leaf {
    /// Bytes of rows per heap page: stored (TOAST included) or as read, the larger.
    fn bytes_per_page(&self) -> u64 {
        (self.bytes / u64::from(self.pages.max(1))).max(self.read_per_page)
    }
}

/// Rows of a leaf's start that [`read_per_page`] reads.
const SAMPLE_ROWS: u32 = 32;

/// Bytes per heap page of the first [`SAMPLE_ROWS`] rows of `leaf` as read (their text), over
/// the pages they are on; 0 for an empty leaf.
async fn read_per_page(
    client: &tokio_postgres::Client,
    described: &str,
    leaf: &str,
) -> Result<u64, LoadError> {
    let sql = format!(
        "SELECT count(DISTINCT (c::text::point)[0])::bigint, coalesce(sum(octet_length(r::text)), 0)::bigint
           FROM (SELECT ctid AS c, t AS r FROM ONLY {leaf} t LIMIT {SAMPLE_ROWS}) s"
    );
    let row = client
        .query_one(sql.as_str(), &[])
        .await
        .map_err(SourceError::query(format!(
            "cannot sample the rows of {leaf} on {described}"
        )))?;
    let (pages, bytes): (i64, i64) = (row.get(0), row.get(1));
    Ok(if pages > 0 {
        (bytes / pages).max(0) as u64
    } else {
        0
    })
}

/// At most about this much of a table's bytes in one range, TOAST included: a range is held
/// in memory whole (twice, at most, per table: one read, one held back by the writer).
const MAX_RANGE_BYTES: u64 = 16 << 20;

/// Whether the initial snapshot is the loader's to read, and what it reads.
#[derive(Debug)]
pub enum Decision {
    Native(Vec<Table>),
    /// Debezium reads it; the reason, for one log line.
    Debezium(String),
}

/// Decides who reads the initial snapshot of `tables` (the included tables db-sync applies).
pub async fn decide(config: &Config, tables: &[SourceTable]) -> Result<Decision, LoadError> {
    if !config.is_postgres() {
        return Ok(Decision::Debezium("the source is not PostgreSQL".into()));
    }
    if config.snapshot.loader == Loader::Debezium {
        return Ok(Decision::Debezium("snapshot.loader is debezium".into()));
    }
    if let Some(key) = DEBEZIUM_ONLY_KEYS
        .iter()
        .find(|k| config.source_prop(k).is_some())
    {
        return Ok(Decision::Debezium(format!(
            "source.{key} is set, and the native loader sends values as Debezium's defaults do"
        )));
    }
    let (client, described) = connect(config, "db-sync loader").await?;
    let prefix = config
        .source_prop("topic.prefix")
        .unwrap_or_else(|| config.name.clone());
    let mut out = Vec::new();
    for t in tables {
        match describe(&client, &described, &prefix, t).await? {
            Ok(table) => out.push(table),
            Err(why) => return Ok(Decision::Debezium(why)),
        }
    }
    Ok(Decision::Native(out))
}

/// One table's columns, schema and leaves; `Err(reason)` when the loader cannot read it.
async fn describe(
    client: &tokio_postgres::Client,
    described: &str,
    prefix: &str,
    t: &SourceTable,
) -> Result<Result<Table, String>, LoadError> {
    let columns = match columns_of(client, described, t).await? {
        Ok(columns) => columns,
        Err(why) => return Ok(Err(why)),
    };
    let key: Vec<usize> = t
        .key
        .iter()
        .filter_map(|k| columns.iter().position(|c| &c.name == k))
        .collect();
    if key.len() != t.key.len() {
        return Ok(Err(format!(
            "a key column of {} is left out of its rows",
            t.name
        )));
    }
    let leaves = leaves_of(client, described, t).await?;
    if let Some(leaf) = leaves.iter().find(|l| l.bytes_per_page() > MAX_RANGE_BYTES) {
        return Ok(Err(format!(
            "{} holds rows of megabytes ({} MB of values per heap page, as read), which Debezium's snapshot reads in small batches",
            leaf.name,
            leaf.bytes_per_page() >> 20
        )));
    }
    let schema_json =
        write::schema_json(client, described, prefix, &t.name, &columns, &key).await?;
    Ok(Ok(Table {
        name: t.name.clone(),
        columns,
        key,
        schema_json,
        leaves,
    }))
}

/// The columns of `t` the loader reads (its generated ones left out); `Err(reason)` when one
/// is of a type only Debezium's snapshot reads.
async fn columns_of(
    client: &tokio_postgres::Client,
    described: &str,
    t: &SourceTable,
) -> Result<Result<Vec<Column>, String>, LoadError> {
    let (schema, table) = t.name.split_once('.').unwrap_or(("", &t.name));
    let rows = client
        .query(
            "SELECT a.attname::text, t.typname::text, a.atttypmod, a.attnotnull,
                    pg_get_expr(d.adbin, d.adrelid), t.typtype::text
               FROM pg_attribute a
               JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_type t ON t.oid = a.atttypid
               LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
              WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .map_err(SourceError::query(format!(
            "cannot read the columns of {} on {described}",
            t.name
        )))?;
    let mut columns = Vec::new();
    for r in rows {
        let name: String = r.get(0);
        if t.generated.contains(&name) {
            continue;
        }
        let type_name: String = r.get(1);
        let typmod: i32 = r.get(2);
        let Some(kind) = Kind::of(&type_name, typmod).filter(|_| r.get::<_, String>(5) == "b")
        else {
            return Ok(Err(format!(
                "column {}.{name} is of type {type_name}, which only Debezium's snapshot reads",
                t.name
            )));
        };
        columns.push(Column {
            name,
            type_name,
            typmod,
            not_null: r.get(3),
            default: r.get(4),
            kind,
        });
    }
    Ok(Ok(columns))
}

/// The heap tables that hold the rows of `t` (itself, or its leaf partitions), with their
/// sizes and how many bytes a page of each reads as.
async fn leaves_of(
    client: &tokio_postgres::Client,
    described: &str,
    t: &SourceTable,
) -> Result<Vec<Leaf>, LoadError> {
    let (schema, table) = t.name.split_once('.').unwrap_or(("", &t.name));
    let mut leaves = client
        .query(
            "WITH root AS (SELECT format('%I.%I', $1::text, $2::text)::regclass::oid AS oid)
             SELECT format('%I.%I', n.nspname, c.relname),
                    (pg_relation_size(c.oid) / current_setting('block_size')::bigint)::bigint,
                    pg_table_size(c.oid), pg_relation_filenode(c.oid)::text::bigint
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind = 'r'
                AND (c.oid = (SELECT oid FROM root)
                     OR c.oid IN (SELECT relid FROM pg_partition_tree((SELECT oid FROM root))
                                   WHERE isleaf))
              ORDER BY 1",
            &[&schema, &table],
        )
        .await
        .map_err(SourceError::query(format!(
            "cannot list the partitions of {} on {described}",
            t.name
        )))?
        .into_iter()
        .map(|r| Leaf {
            name: r.get(0),
            pages: u32::try_from(r.get::<_, i64>(1)).unwrap_or(u32::MAX),
            bytes: r.get::<_, i64>(2).max(0) as u64,
            filenode: u32::try_from(r.get::<_, i64>(3)).unwrap_or(0),
            read_per_page: 0,
        })
        .collect::<Vec<Leaf>>();
    for leaf in &mut leaves {
        leaf.read_per_page = read_per_page(client, described, &leaf.name).await?;
    }
    Ok(leaves)
}

/// What [`run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every range is journaled (now or before): Debezium streams from the slot.
    Complete,
    /// Shutdown was asked for; the next start continues.
    Stopped,
}

/// The load this state directory holds, if any: what `status` shows.
pub fn status(dir: &std::path::Path) -> Result<Option<LoadStatus>, LoadError> {
    Ok(Progress::load(dir)?.map(|p| p.status()))
}

/// Whether the pipeline's initial load is journaled (by the loader, now or at an earlier
/// start).
pub fn completed(dir: &std::path::Path) -> bool {
    Progress::load(dir)
        .ok()
        .flatten()
        .is_some_and(|p| p.complete || p.joined)
}

/// The tables of a load that an earlier start began and did not finish.
pub fn pending(dir: &std::path::Path) -> Result<Option<Vec<String>>, LoadError> {
    Ok(Progress::load(dir)?
        .filter(|p| !p.complete)
        .map(|p| p.tables))
}

/// Which load [`run`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The pipeline's initial load (or a resync's): done once.
    Initial,
    /// The tables that joined a pipeline that streams: a new load once the last is done.
    Joined,
}

/// Loads `tables` into `journal`, continuing a load that an earlier start began.
pub async fn run(
    config: &Config,
    tables: Vec<Table>,
    journal: Journal,
    start: Start,
    shutdown: watch::Receiver<bool>,
) -> Result<(Journal, Outcome), LoadError> {
    let dir = config.journal.dir.clone();
    let stored = match Progress::load(&dir)? {
        Some(p) if p.complete && start == Start::Initial => {
            return Ok((journal, Outcome::Complete));
        }
        Some(p) if p.complete => None,
        other => other,
    };
    let (progress, snapshot, skip) = open(config, &tables, &journal, stored, start).await?;
    let todo: VecDeque<usize> = (0..progress.ranges.len())
        .filter(|&i| !progress.done[i])
        .collect();
    let at = Arc::new(ReadAt {
        snapshot: snapshot.name.clone(),
        exclude_written: progress.resumed,
        since_xmin: progress.since_xmin,
    });
    let tables = Arc::new(tables);
    let (tx, rx) = tokio::sync::mpsc::channel::<write::Loaded>(config.snapshot.connections.max(1));
    let writer = write::Writer::new(
        journal,
        &tables,
        &progress,
        config.journal.segment_max_bytes,
    )?;
    let lsn = progress.slot_lsn;
    let plan = progress.ranges.clone();
    let writer = std::thread::Builder::new()
        .name("loader-writer".into())
        .spawn(move || writer.run(rx, progress))
        .map_err(|e| LoadError::Read(format!("cannot start the writer thread: {e}")))?;
    let readers = Readers {
        tables,
        plan: plan.into(),
        queue: Arc::new(Mutex::new(todo)),
        skip: Arc::new(skip),
        at,
        lsn,
    };
    let started = Instant::now();
    let readers = readers.spawn(config, &tx, &shutdown);
    drop(tx);
    let failed = join_readers(readers).await;
    let (journal, written) = tokio::task::spawn_blocking(move || writer.join())
        .await
        .map_err(|e| LoadError::Read(e.to_string()))?
        .map_err(|_| LoadError::Read("the writer thread panicked".into()))?;
    drop(snapshot);
    let summary = written?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok((journal, finished(summary.rows, summary.complete, started)))
}

/// Says how the load ended: its rows and rate.
fn finished(rows: u64, complete: bool, started: Instant) -> Outcome {
    let secs = started.elapsed().as_secs_f64();
    if complete {
        tracing::info!(
            rows,
            seconds = format!("{secs:.1}"),
            rows_per_second = (rows as f64 / secs.max(1e-3)) as u64,
            "initial load complete; streaming starts from the slot"
        );
        Outcome::Complete
    } else {
        tracing::info!(
            rows,
            "initial load stopped; the next start continues with the ranges left"
        );
        Outcome::Stopped
    }
}

/// What the reader tasks share: the tables, the ranges and the queue of those left, the rows
/// a torn range journaled already, the snapshot they read under, the slot's position.
struct Readers {
    tables: Arc<Vec<Table>>,
    plan: Arc<[Range]>,
    queue: Arc<Mutex<VecDeque<usize>>>,
    skip: Arc<HashMap<usize, HashSet<Vec<u8>>>>,
    at: Arc<ReadAt>,
    lsn: u64,
}

impl Readers {
    /// Starts `snapshot.connections` readers, each on its own connection under the snapshot:
    /// each takes the next range off the queue, reads it and hands it to the writer (`tx`),
    /// until the queue is empty, shutdown is asked for, or the writer is gone.
    fn spawn(
        self,
        config: &Config,
        tx: &tokio::sync::mpsc::Sender<write::Loaded>,
        shutdown: &watch::Receiver<bool>,
    ) -> tokio::task::JoinSet<Result<(), LoadError>> {
        let shared = Arc::new(self);
        let mut readers = tokio::task::JoinSet::new();
        for n in 0..config.snapshot.connections.max(1) {
            let (config, shared, tx, shutdown) = (
                config.clone(),
                Arc::clone(&shared),
                tx.clone(),
                shutdown.clone(),
            );
            readers.spawn(async move {
                let (client, described) =
                    connect(&config, &format!("db-sync loader {}", n + 1)).await?;
                shared.at.begin(&client, &described).await?;
                loop {
                    if *shutdown.borrow() {
                        return Ok(());
                    }
                    let Some(i) = shared.queue.lock().expect("queue").pop_front() else {
                        return Ok(());
                    };
                    let range = &shared.plan[i];
                    let loaded = read_range(
                        &client,
                        &described,
                        &shared.tables[range.table],
                        (range, i),
                        &shared.at,
                        shared.lsn,
                        shared.skip.get(&i),
                    )
                    .await?;
                    if tx.send(loaded).await.is_err() {
                        return Ok(()); // the writer failed; its error is the one to report
                    }
                }
            });
        }
        readers
    }
}

/// Creates the publication (the included tables and the signalling table) and the slot when
/// they do not exist, before any range is read; the slot's consistent point.
async fn prepare_source(config: &Config, tables: &[Table]) -> Result<u64, LoadError> {
    let (client, described) = connect(config, "db-sync loader").await?;
    let may_replicate: Option<(String, bool)> = client
        .query_opt(
            "SELECT rolname::text, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .ok()
        .flatten()
        .map(|r| (r.get(0), r.get(1)));
    if let Some((user, false)) = may_replicate {
        return Err(LoadError::Read(format!(
            "{user} lacks the REPLICATION attribute that a replication slot needs: run ALTER ROLE {user} REPLICATION on the source"
        )));
    }
    let publication = source::publication_name(config);
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(SourceError::query(format!(
            "cannot read pg_publication on {described}"
        )))?
        .is_some();
    if !exists {
        let mut names: Vec<String> = tables.iter().map(|t| quote_name(&t.name)).collect();
        if let Some(signal) = source::signal_collection(config) {
            let present = client
                .query_opt("SELECT to_regclass($1)::text", &[&quote_name(&signal)])
                .await
                .ok()
                .flatten()
                .and_then(|r| r.get::<_, Option<String>>(0));
            if present.is_some() {
                names.push(quote_name(&signal));
            }
        }
        let what = if names.is_empty() {
            "FOR ALL TABLES".to_string()
        } else {
            format!("FOR TABLE {}", names.join(", "))
        };
        let via_root = source::publish_via_partition_root(config);
        let sql = format!(
            "CREATE PUBLICATION \"{}\" {what} WITH (publish_via_partition_root = {via_root})",
            publication.replace('"', "\"\"")
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(SourceError::query(format!(
                "cannot create publication {publication} on {described}"
            )))?;
    } else {
        publish(config, &client, &described, &publication, tables).await?;
    }
    let slot = source::slot_name(config);
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(SourceError::query(format!(
            "cannot read pg_replication_slots on {described}"
        )))?;
    // PostgreSQL 17+: a failover slot, as Debezium's `slot.failover` asks (the five-argument
    // form does not exist before 17).
    let failover = client
        .query_one(
            "SELECT current_setting('server_version_num')::int >= 170000",
            &[],
        )
        .await
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false);
    let slot_sql = if failover {
        "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)"
    } else {
        "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')"
    };
    let lsn: Option<String> = match row {
        Some(r) => r.get(0),
        None => client
            .query_one(slot_sql, &[&slot])
            .await
            .map_err(SourceError::query(format!(
                "cannot create replication slot {slot} on {described}"
            )))?
            .get(0),
    };
    let lsn: source::slot::Lsn = lsn
        .unwrap_or_default()
        .parse()
        .map_err(|e: source::slot::BadLsn| LoadError::Read(e.to_string()))?;
    Ok(lsn.0)
}

/// The load's transactions wait between ranges while the writer catches up; a server's
/// `idle_in_transaction_session_timeout` must not end them (and the snapshot) meanwhile.
const IDLE_IN_TRANSACTION: &str = "SET idle_in_transaction_session_timeout = 0";

/// The snapshot a start reads its ranges under: a `REPEATABLE READ` transaction on its own
/// connection that exports it, open until every range is read (a reader's transaction
/// imports it).
struct Snapshot {
    name: String,
    /// Its `xmin`, a 64-bit transaction id.
    xmin: u64,
    _holder: tokio_postgres::Client,
}

impl Snapshot {
    async fn export(config: &Config) -> Result<Snapshot, LoadError> {
        let (client, described) = connect(config, "db-sync loader snapshot").await?;
        let failed = |what: &str| SourceError::query(format!("cannot {what} on {described}"));
        client
            .batch_execute(IDLE_IN_TRANSACTION)
            .await
            .map_err(failed("set idle_in_transaction_session_timeout"))?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(failed("begin a transaction"))?;
        let row = client
            .query_one(
                "SELECT pg_export_snapshot(), txid_snapshot_xmin(txid_current_snapshot())",
                &[],
            )
            .await
            .map_err(failed("export a snapshot"))?;
        Ok(Snapshot {
            name: row.get(0),
            xmin: row.get::<_, i64>(1) as u64,
            _holder: client,
        })
    }
}

/// How a start reads its ranges: under which snapshot, and whether the load's first
/// snapshot is gone ([`Progress::resume`]).
struct ReadAt {
    snapshot: String,
    /// Page ranges leave out the rows written since `since_xmin`.
    exclude_written: bool,
    since_xmin: Option<u64>,
}

impl ReadAt {
    /// Opens the reader's transaction on `client`, under the start's snapshot.
    async fn begin(
        &self,
        client: &tokio_postgres::Client,
        described: &str,
    ) -> Result<(), LoadError> {
        client
            .batch_execute(&format!(
                "{IDLE_IN_TRANSACTION}; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
                self.snapshot.replace('\'', "''")
            ))
            .await
            .map_err(SourceError::query(format!(
                "cannot import the load's snapshot on {described}"
            )))?;
        Ok(())
    }

    /// The `WHERE` condition of `range`.
    fn condition(&self, range: &Range) -> String {
        let written = self.written_since();
        if range.changed {
            return written;
        }
        let mut cond = format!("ctid >= '({},0)'::tid", range.start);
        if let Some(end) = range.end {
            cond.push_str(&format!(" AND ctid < '({end},0)'::tid"));
        }
        if self.exclude_written {
            cond.push_str(&format!(" AND NOT ({written})"));
        }
        cond
    }

    /// Whether a row version was written at or after the first snapshot's `xmin`: its 32-bit
    /// `xmin` is at or after that one's in the circular order of transaction ids
    /// (`FrozenTransactionId` and the other special ids below 3 are older than any). A plan
    /// without `since_xmin` (written by an older db-sync) reads as before: none.
    fn written_since(&self) -> String {
        match self.since_xmin {
            Some(x) => format!(
                "xmin::text::bigint >= 3 AND ((xmin::text::bigint - {}) & 4294967295) < 2147483648",
                x & 0xffff_ffff
            ),
            None => "false".into(),
        }
    }
}

/// Adds to the existing `publication` the tables it lacks, before the snapshot: PostgreSQL
/// decodes a table's changes only from when it joined the publication, so one added later
/// (by Debezium, when it starts) would lose the changes made between the snapshot and then.
/// A publication `FOR ALL TABLES`, or one the user keeps (`publication.autocreate.mode:
/// disabled`), is left as it is.
async fn publish(
    config: &Config,
    client: &tokio_postgres::Client,
    described: &str,
    publication: &str,
    tables: &[Table],
) -> Result<(), LoadError> {
    if config.source_prop("publication.autocreate.mode").as_deref() == Some("disabled") {
        return Ok(());
    }
    for t in tables {
        let missing = client
            .query_one(
                "SELECT NOT p.puballtables AND NOT EXISTS (
                        SELECT 1 FROM pg_publication_rel r
                         WHERE r.prpubid = p.oid AND r.prrelid = $2::text::regclass)
                   FROM pg_publication p WHERE p.pubname = $1",
                &[&publication, &quote_name(&t.name)],
            )
            .await
            .map_err(SourceError::query(format!(
                "cannot read publication {publication} on {described}"
            )))?
            .get::<_, bool>(0);
        if missing {
            let sql = format!(
                "ALTER PUBLICATION \"{}\" ADD TABLE {}",
                publication.replace('"', "\"\""),
                quote_name(&t.name)
            );
            client
                .batch_execute(&sql)
                .await
                .map_err(SourceError::query(format!(
                    "cannot add {} to publication {publication} on {described}",
                    t.name
                )))?;
        }
    }
    Ok(())
}

/// Waits for every reader; the first error (the others are stopped at it).
async fn join_readers(
    mut readers: tokio::task::JoinSet<Result<(), LoadError>>,
) -> Option<LoadError> {
    let mut failed: Option<LoadError> = None;
    while let Some(r) = readers.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failed.get_or_insert(e);
                readers.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                failed.get_or_insert(LoadError::Read(format!("a reader panicked: {e}")));
            }
        }
    }
    failed
}

/// The plan this start reads (a new one, or an earlier start's, made exact under a new
/// snapshot: [`Progress::resume`]), the snapshot it reads under, and the ids of the rows torn
/// ranges already journaled; stored before any range is read.
async fn open(
    config: &Config,
    tables: &[Table],
    journal: &Journal,
    stored: Option<Progress>,
    start: Start,
) -> Result<(Progress, Snapshot, HashMap<usize, HashSet<Vec<u8>>>), LoadError> {
    let dir = &config.journal.dir;
    let slot_lsn = match stored {
        Some(_) => None,
        None => Some(prepare_source(config, tables).await?),
    };
    // Every range this start reads, it reads under this one snapshot, taken after the slot's
    // consistent point (see the module docs).
    let snapshot = Snapshot::export(config).await?;
    let mut progress = match (stored, slot_lsn) {
        (Some(p), _) => {
            p.check_tables(tables)?;
            tracing::info!(
                ranges_left = p.left(),
                "initial load: continuing; the ranges already journaled are not read again"
            );
            p
        }
        (None, lsn) => {
            let lsn = lsn.unwrap_or_default();
            let mut p = Progress::plan(
                tables,
                lsn,
                snapshot.xmin,
                config.snapshot.range_pages.max(1),
            );
            p.joined = start == Start::Joined;
            tracing::info!(
                tables = tables.len(),
                ranges = p.ranges.len(),
                slot_lsn = %crate::journal::event::format_lsn(lsn),
                "initial load: reading the tables with COPY over page ranges"
            );
            p
        }
    };
    let skip = progress.torn_range_keys(journal)?;
    if slot_lsn.is_none() {
        progress.resume(tables);
    }
    progress.start();
    progress.store(dir)?;
    Ok((progress, snapshot, skip))
}

/// `schema.table` quoted for PostgreSQL.
fn quote_name(name: &str) -> String {
    let (schema, table) = name.split_once('.').unwrap_or(("public", name));
    format!(
        "\"{}\".\"{}\"",
        schema.replace('"', "\"\""),
        table.replace('"', "\"\"")
    )
}

/// Reads range `i` of `table` with one binary `COPY` and encodes its rows; rows whose key is
/// in `skip` are already journaled (a torn append before a crash).
async fn read_range(
    client: &tokio_postgres::Client,
    described: &str,
    table: &Table,
    (range, i): (&Range, usize),
    at: &ReadAt,
    lsn: u64,
    skip: Option<&HashSet<Vec<u8>>>,
) -> Result<write::Loaded, LoadError> {
    let list = table
        .columns
        .iter()
        .map(|c| format!("\"{}\"", c.name.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(", ");
    let leaf = &table.leaves[range.leaf].name;
    let cond = at.condition(range);
    let sql =
        format!("COPY (SELECT {list} FROM ONLY {leaf} WHERE {cond}) TO STDOUT (FORMAT binary)");
    let ts_us = chrono::Utc::now().timestamp_micros();
    let stream = client
        .copy_out(sql.as_str())
        .await
        .map_err(SourceError::query(format!(
            "cannot COPY {} on {described}",
            table.name
        )))?;
    futures::pin_mut!(stream);
    let mut out = write::Loaded::new(i, range.table);
    let mut rows = copy::Rows::new();
    let mut key_buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(SourceError::query(format!(
            "COPY of {} on {described} failed",
            table.name
        )))?;
        rows.feed(&chunk, |fields| {
            encode_row(table, fields, ts_us, lsn, &mut key_buf, &mut out, skip)
                .map_err(|e| copy::CopyFormatError(e.to_string()))
        })
        .map_err(|e| LoadError::Read(format!("{}: {e}", table.name)))?;
    }
    if !rows.ended() {
        return Err(LoadError::Read(format!(
            "the COPY of {} ended early",
            table.name
        )));
    }
    Ok(out)
}

/// Appends one row's event body to `out` (unless its key is in `skip`).
fn encode_row(
    table: &Table,
    fields: &[Option<&[u8]>],
    ts_us: i64,
    lsn: u64,
    key_buf: &mut Vec<u8>,
    out: &mut write::Loaded,
    skip: Option<&HashSet<Vec<u8>>>,
) -> Result<(), columns::ValueError> {
    let keyed = !table.key.is_empty();
    let present = |i: usize| fields[i].filter(|v| !table.columns[i].is_null_value(v));
    key_buf.clear();
    if keyed {
        put_struct(
            key_buf,
            table.key.iter().map(|&i| (&table.columns[i], present(i))),
        )?;
    }
    let body = &mut out.bodies;
    let start = body.len();
    body.push(b'r');
    let mut flags = event::SNAPSHOT | event::PG_POSITION | event::AFTER | event::EXT;
    if keyed {
        flags |= event::KEY;
    }
    body.push(flags);
    body.push(0); // flags2: the table's last row is flagged by the writer
    body.extend_from_slice(&(ts_us as u64).to_le_bytes());
    body.extend_from_slice(&0u64.to_le_bytes());
    body.extend_from_slice(&lsn.to_le_bytes());
    let values_at = body.len();
    body.extend_from_slice(key_buf);
    put_struct(
        body,
        table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c, present(i))),
    )?;
    if let Some(skip) = skip {
        let id = if keyed {
            &key_buf[..]
        } else {
            &body[values_at..]
        };
        if skip.contains(id) {
            body.truncate(start);
            return Ok(());
        }
    }
    out.ends.push(body.len() as u32);
    Ok(())
}

/// A struct: the null bitmap, then each present value.
fn put_struct<'a>(
    out: &mut Vec<u8>,
    fields: impl Iterator<Item = (&'a Column, Option<&'a [u8]>)> + Clone,
) -> Result<(), columns::ValueError> {
    let n = fields.clone().count();
    let at = out.len();
    out.resize(at + n.div_ceil(8), 0);
    for (i, (column, value)) in fields.enumerate() {
        match value {
            None => out[at + i / 8] |= 1 << (i % 8),
            Some(v) => column.encode(v, out)?,
        }
    }
    Ok(())
}

/// The ranges of one table's leaves: `size` pages each, fewer where TOASTed values make a
/// page hold more than `MAX_RANGE_BYTES / size`; the last open-ended, so rows added beyond the
/// planned size are read too.
fn ranges_of(table: usize, leaves: &[Leaf], size: u32) -> Vec<Range> {
    let mut out = Vec::new();
    for (leaf, l) in leaves.iter().enumerate() {
        let fits = (MAX_RANGE_BYTES / l.bytes_per_page().max(1)).max(1);
        let size = size.min(u32::try_from(fits).unwrap_or(u32::MAX)).max(1);
        let n = l.pages.div_ceil(size).max(1);
        for r in 0..n {
            out.push(Range {
                table,
                leaf,
                start: r * size,
                end: (r + 1 < n).then(|| (r + 1) * size),
                changed: false,
            });
        }
    }
    out
}

/// The key struct's bytes at the start of a journaled body's values (the whole values for a
/// table without a key): what a torn range's re-read compares.
fn journaled_id(schema: &crate::types::TableSchema, body: &[u8]) -> Option<Vec<u8>> {
    let h = event::EventHeader::parse(body).ok()?;
    match &schema.key {
        Some(k) if h.flags & event::KEY != 0 => {
            let mut c = event::Cursor::new(h.values);
            event::skip_struct(k, &mut c).ok()?;
            Some(h.values[..h.values.len() - c.rest().len()].to_vec())
        }
        _ => Some(h.values.to_vec()),
    }
}
