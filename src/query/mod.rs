//! `db-sync query SQL [--as-of TS] [--format table|csv|json]`: DuckDB over the audit files.
//!
//! For every audited table `schema.table` it defines two views:
//!
//! - `schema.table_changes`: every change row, the table's columns and the `_cdc_` columns
//!   (files read with `union_by_name`, so columns added later are there, null before);
//! - `schema.table`: the table's state: per key, the latest change unless it is a delete, with
//!   each column the source did not send (`_cdc_unchanged`, PostgreSQL's unchanged TOAST)
//!   taken from the key's latest change that did send it.
//!
//! With `--as-of`, both views hold only changes committed at or before that time, so the state
//! is the source's as of then. A time before the history retention keeps (`audit.retain_days`:
//! older changes are folded into each table's base, [`needed_seqs`]) is refused. `file://` audit files are read in place; of `s3://`, only the
//! files of the tables the statement names (and with `--as-of` only the dates up to it) are
//! copied, into a local cache bounded by `query.cache_mb` ([`cache`]; DuckDB's own S3 support
//! is an extension it would have to download).

pub mod cache;
mod output;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use duckdb::arrow::array::RecordBatch;
use duckdb::arrow::datatypes::{DataType, SchemaRef};
use duckdb::Connection;

use crate::audit::{reader, AuditError, AuditFile, AuditStore};
use crate::config::Config;
use crate::error::{Classify, ErrorKind};
use crate::types::cdc;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The user's statement failed: one line from DuckDB (bad usage, exit 2).
    #[error("query: {message}")]
    Sql {
        message: String,
        source: duckdb::Error,
    },
    #[error("{what}: {}", first_line(&.source.to_string()))]
    Duck { what: String, source: duckdb::Error },
    #[error("query: cannot read the result: {0}")]
    Result(#[from] duckdb::arrow::error::ArrowError),
    #[error("cannot create {path} for the audit files: {source}")]
    Scratch {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot print the result: {0}")]
    Print(#[source] output::OutputError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// `--as-of` before the history retention keeps (bad usage, exit 2).
    #[error("query: --as-of {as_of} is before {kept_from}, the oldest date whose history the audit files keep (audit.retain_days: {days} folds older changes into each table's state); ask for a time on or after it")]
    BeforeRetention {
        as_of: String,
        kept_from: String,
        days: u64,
    },
}

impl Classify for QueryError {
    fn kind(&self) -> ErrorKind {
        match self {
            QueryError::Audit(e) => e.kind(),
            QueryError::Sql { .. } | QueryError::BeforeRetention { .. } => ErrorKind::Config,
            QueryError::Duck { .. }
            | QueryError::Result(_)
            | QueryError::Scratch { .. }
            | QueryError::Print(_)
            | QueryError::Runtime(_) => ErrorKind::Permanent,
        }
    }
}

/// How `query` prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned table.
    Table,
    /// CSV with a header line; NULL is an empty field.
    Csv,
    /// One JSON object per row (JSON lines); decimals as strings, so no digit is lost.
    Json,
}

/// Runs `sql` over the audit files of `config` and prints the result on stdout.
pub fn run(
    config: &Config,
    sql: &str,
    as_of: Option<DateTime<Utc>>,
    format: Format,
) -> Result<(), QueryError> {
    if let (Some(t), Some(days)) = (as_of, config.audit.retain_days) {
        let kept_from = Utc::now().date_naive() - chrono::Days::new(days);
        if t.date_naive() < kept_from {
            return Err(QueryError::BeforeRetention {
                as_of: t.format("%Y-%m-%d %H:%M:%S%.f UTC").to_string(),
                kept_from: kept_from.format("%Y-%m-%d").to_string(),
                days,
            });
        }
    }
    let store = AuditStore::open(&config.audit)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(QueryError::Runtime)?;
    let files = rt.block_on(store.list_files(None))?;
    // An interrupted roll-up may have left files its merged file holds too.
    let files = rt.block_on(crate::audit::rollup::visible(&store, files))?;
    let mut files = prune(files, as_of);
    let all_tables: std::collections::BTreeSet<String> =
        files.iter().map(|f| f.table.clone()).collect();
    let (local, cache) = if store.local_root.is_some() {
        (rt.block_on(local_paths(&store, &files, None))?, None)
    } else {
        // s3://: only the tables the statement names, through the local cache.
        let named = cache::tables_named(sql, &all_tables);
        files.retain(|f| named.contains(&f.table));
        let cache = cache::Cache::open(&config.query)?;
        let (local, fetched) = rt.block_on(cache.fetch(&store, &files))?;
        tracing::info!(
            tables = named.len(),
            files = files.len(),
            downloaded = fetched.downloaded,
            downloaded_bytes = fetched.downloaded_bytes,
            from_cache = fetched.hits,
            cache = %config.query.cache_dir.display(),
            "audit files for the query"
        );
        (local, Some(cache))
    };
    let conn = Connection::open_in_memory().map_err(|source| QueryError::Duck {
        what: "cannot open DuckDB".into(),
        source,
    })?;
    let mut catalog = define_views(&conn, &local, as_of)?;
    catalog.tables = all_tables.into_iter().collect();
    let result = execute(&conn, sql, &catalog);
    drop(conn);
    if let Some(cache) = cache {
        let evicted = cache.evict();
        if evicted > 0 {
            tracing::debug!(
                files = evicted,
                "evicted from the query cache (query.cache_mb)"
            );
        }
    }
    let (schema, batches) = result?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    output::print(&mut out, format, &schema, &batches).map_err(QueryError::Print)
}

/// The `_cdc_seq` of the changes among `files` (audit files of one table, in sequence order)
/// that the table's state as of their end reads: each live key's latest change and the
/// changes its unsent columns are filled from. `None` for a table without a key (it has no
/// state). Retention keeps exactly these of the partitions it expires. Blocking (DuckDB);
/// `scratch` holds copies of `s3://` files meanwhile.
pub async fn needed_seqs(
    store: &AuditStore,
    table: &str,
    files: &[AuditFile],
    scratch: &Path,
) -> Result<Option<std::collections::HashSet<i64>>, QueryError> {
    // One at a time, so the future stays `Send` (the daemon's roll-up job runs it).
    let root = store
        .local_root
        .clone()
        .unwrap_or_else(|| scratch.to_path_buf());
    let skip = store.prefix.parts().count();
    let mut paths = Vec::with_capacity(files.len());
    for f in files {
        let mut p = root.clone();
        for part in f.location.parts().skip(skip) {
            p.push(part.as_ref());
        }
        if store.local_root.is_none() {
            store.download(f, &p).await?;
        }
        paths.push(p);
    }
    let local = BTreeMap::from([(table.to_string(), paths)]);
    let table = table.to_string();
    let found = tokio::task::spawn_blocking(move || {
        let conn = Connection::open_in_memory().map_err(|source| QueryError::Duck {
            what: "cannot open DuckDB".into(),
            source,
        })?;
        let catalog = define_views(&conn, &local, None)?;
        let Some(sql) = catalog.needed.get(&table) else {
            return Ok(None);
        };
        let what = format!("finding the changes the state of {table} reads");
        let mut stmt = conn.prepare(sql).map_err(|e| duck_err(&what, e))?;
        let seqs = stmt
            .query_map([], |row| row.get::<_, i64>(0))
            .and_then(|rows| rows.collect::<Result<std::collections::HashSet<i64>, _>>())
            .map_err(|e| duck_err(&what, e))?;
        Ok(Some(seqs))
    })
    .await
    .map_err(|e| QueryError::Duck {
        what: format!("the state query thread failed: {e}"),
        source: duckdb::Error::InvalidQuery,
    })?;
    found
}

/// Drops files whose whole date partition lies after `as_of`, keeping each table's first file
/// so that its views still have their columns.
fn prune(files: Vec<AuditFile>, as_of: Option<DateTime<Utc>>) -> Vec<AuditFile> {
    let Some(as_of) = as_of else {
        return files;
    };
    let day = as_of.format("%Y-%m-%d").to_string();
    let mut kept: Vec<AuditFile> = Vec::with_capacity(files.len());
    for f in files {
        let first_of_table = kept.last().is_none_or(|k| k.table != f.table);
        if first_of_table || f.date <= day {
            kept.push(f);
        }
    }
    kept
}

/// Each table's files as local paths, in sequence order: in place for `file://`, downloaded
/// into `scratch` otherwise.
async fn local_paths(
    store: &AuditStore,
    files: &[AuditFile],
    scratch: Option<&Path>,
) -> Result<BTreeMap<String, Vec<PathBuf>>, QueryError> {
    use futures::{StreamExt, TryStreamExt};
    let root = match (&store.local_root, scratch) {
        (Some(root), _) => root.clone(),
        (None, Some(dir)) => dir.to_path_buf(),
        (None, None) => unreachable!("tempdir_for makes a scratch directory for s3://"),
    };
    let skip = store.prefix.parts().count();
    let paths: Vec<(String, PathBuf)> = files
        .iter()
        .map(|f| {
            let mut p = root.clone();
            for part in f.location.parts().skip(skip) {
                p.push(part.as_ref());
            }
            (f.table.clone(), p)
        })
        .collect();
    if store.local_root.is_none() {
        futures::stream::iter(files.iter().zip(&paths))
            .map(|(f, (_, path))| store.download(f, path))
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
    }
    let mut by_table: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for (table, path) in paths {
        by_table.entry(table).or_default().push(path);
    }
    Ok(by_table)
}

/// What the views cover, for messages.
struct Catalog {
    tables: Vec<String>,
    keyless: Vec<String>,
    /// Per keyed table, the query of the `_cdc_seq` its state reads ([`StateSql::needed`]).
    needed: BTreeMap<String, String>,
}

/// A DuckDB identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A DuckDB string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn duck_err(what: &str, source: duckdb::Error) -> QueryError {
    QueryError::Duck {
        what: what.to_string(),
        source,
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// Defines `schema.table_changes` and `schema.table` for every table in `local`.
fn define_views(
    conn: &Connection,
    local: &BTreeMap<String, Vec<PathBuf>>,
    as_of: Option<DateTime<Utc>>,
) -> Result<Catalog, QueryError> {
    let mut catalog = Catalog {
        tables: Vec::new(),
        keyless: Vec::new(),
        needed: BTreeMap::new(),
    };
    for (table, paths) in local {
        let (schema, name) = table.split_once('.').unwrap_or(("main", table.as_str()));
        let what = format!("defining the views of {table}");
        let exec = |sql: &str| conn.execute_batch(sql).map_err(|e| duck_err(&what, e));
        exec(&format!("CREATE SCHEMA IF NOT EXISTS {}", ident(schema)))?;
        let list = paths
            .iter()
            .map(|p| lit(&p.display().to_string()))
            .collect::<Vec<_>>()
            .join(", ");
        let filter = as_of.map_or(String::new(), |t| {
            format!(
                " WHERE {} <= TIMESTAMPTZ '{}'",
                ident(cdc::TS),
                t.format("%Y-%m-%d %H:%M:%S%.6f+00")
            )
        });
        let changes = format!("{}.{}", ident(schema), ident(&format!("{name}_changes")));
        exec(&format!(
            "CREATE VIEW {changes} AS SELECT * FROM read_parquet([{list}], union_by_name = true, hive_partitioning = false){filter}"
        ))?;
        catalog.tables.push(table.clone());

        let key = match paths.last().map(|p| key_columns(p)).transpose()? {
            Some(Some(key)) if !key.is_empty() => key,
            _ => {
                catalog.keyless.push(table.clone());
                continue;
            }
        };
        let all: Vec<String> = query_strings(
            conn,
            &format!("SELECT column_name FROM (DESCRIBE {changes})"),
        )
        .map_err(|e| duck_err(&what, e))?;
        let has_old_key = all.iter().any(|c| c == cdc::OLD_KEY);
        let columns: Vec<String> = all
            .into_iter()
            .filter(|c| !c.starts_with(cdc::PREFIX))
            .collect();
        let unchanged: Vec<String> = query_strings(
            conn,
            &format!(
                "SELECT DISTINCT u FROM (SELECT unnest({}) AS u FROM {changes}) ORDER BY u",
                ident(cdc::UNCHANGED)
            ),
        )
        .map_err(|e| duck_err(&what, e))?
        .into_iter()
        .filter(|c| columns.contains(c))
        .collect();
        let history = History {
            has_old_key,
            journals: journal_ranges(paths),
        };
        let state = StateSql::of(&changes, &columns, &key, &unchanged, &history);
        exec(&state.view(schema, name))?;
        catalog.needed.insert(table.clone(), state.needed());
    }
    Ok(catalog)
}

/// What the state view needs to know of a table's history besides its columns.
struct History {
    /// The files have `_cdc_old_key` (written since key changes carry the old key).
    has_old_key: bool,
    /// The sequence range of each journal whose files these are, oldest first.
    journals: Vec<(u64, u64)>,
}

/// The sequence range of each journal among audit files `paths` (named
/// `<first>-<last>[.<journal>].parquet`), oldest first.
fn journal_ranges(paths: &[PathBuf]) -> Vec<(u64, u64)> {
    let mut by_journal: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for p in paths {
        let Some(stem) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".parquet"))
        else {
            continue;
        };
        let (range, journal) = stem.split_once('.').unwrap_or((stem, ""));
        let Some((first, last)) = range
            .split_once('-')
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        else {
            continue;
        };
        let e = by_journal
            .entry(journal.to_string())
            .or_insert((first, last));
        e.0 = e.0.min(first);
        e.1 = e.1.max(last);
    }
    let mut ranges: Vec<(u64, u64)> = by_journal.into_values().collect();
    ranges.sort();
    ranges
}

/// The parts of a table's state query (see [`StateSql::of`]): its CTEs, the joins of the filled
/// columns, the selected columns, and the fill walks.
struct StateSql {
    ctes: Vec<String>,
    joins: String,
    out: Vec<String>,
    walks: Vec<usize>,
}

impl StateSql {
    /// The `CREATE VIEW` of the state.
    fn view(&self, schema: &str, name: &str) -> String {
        format!(
            "CREATE VIEW {}.{} AS WITH RECURSIVE {} SELECT {} FROM \"__latest\" l{}",
            ident(schema),
            ident(name),
            self.ctes.join(", "),
            self.out.join(", "),
            self.joins
        )
    }

    /// The `_cdc_seq` of every change the state reads: each live key's latest change, the
    /// changes its unsent columns are filled from, and on the way there the create halves of
    /// key changes (the links from a key to the old key's history); and the latest change of
    /// every key one of those belongs to, so that a key that is gone (the old key of a key
    /// change) stays gone. The same-key changes a fill walks past are not needed: without
    /// them the walk goes from one kept change of the key to the next, and none of those it
    /// skips sent the column.
    fn needed(&self) -> String {
        let seq = ident(cdc::SEQ);
        let mut parts = vec![format!("SELECT {seq} FROM \"__latest\"")];
        parts.extend(self.walks.iter().map(|i| {
            format!(
                "SELECT w.\"__cur\" FROM \"__walk_{i}\" w JOIN \"__c\" c ON c.{seq} = w.\"__cur\" \
                 WHERE w.\"__done\" OR c.\"__pk\" IS DISTINCT FROM c.\"__k\""
            )
        }));
        format!(
            "WITH RECURSIVE {}, \"__need\"(\"__s\") AS ({}) SELECT \"__s\" FROM \"__need\" \
             UNION SELECT max(c.{seq}) FROM \"__c\" c WHERE c.\"__k\" IN \
             (SELECT x.\"__k\" FROM \"__c\" x JOIN \"__need\" n ON x.{seq} = n.\"__s\") GROUP BY c.\"__k\"",
            self.ctes.join(", "),
            parts.join(" UNION ")
        )
    }
}

impl StateSql {
    /// The state query of a table (its `CREATE VIEW`, [`StateSql::view`]): the changes after the table's last truncate, the
    /// latest change per key unless it is a delete, with each `unchanged` column filled from the
    /// row's history.
    ///
    /// A new journal (a pipeline moved to a new host) starts with a full snapshot, which brings
    /// every row the source still has: a row of an earlier journal that the latest journal's
    /// snapshot did not bring again was deleted while nothing captured, so the history starts at
    /// the latest journal that has snapshot rows of the table.
    ///
    /// A row's history is its key's earlier changes and, for the create half of an update that
    /// changed the key (`_cdc_old_key`), the old key's: the fill walks back through `pred` (each
    /// change's predecessor in its lineage, deletes left out) until a change that sent the column,
    /// so a NULL the source really sent stays NULL and a value that moved with its row follows it.
    fn of(
        changes: &str,
        columns: &[String],
        key: &[String],
        unchanged: &[String],
        history: &History,
    ) -> StateSql {
        let (seq, op) = (ident(cdc::SEQ), ident(cdc::OP));
        let key_struct = format!(
            "struct_pack({})",
            key.iter()
                .map(|k| format!("{} := {}", ident(k), ident(k)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let lineage_key = if history.has_old_key {
            format!("coalesce({}, {key_struct})", ident(cdc::OLD_KEY))
        } else {
            key_struct.clone()
        };
        let mut ctes = Vec::new();
        let epoch = match latest_snapshot(changes, &history.journals) {
            Some((defs, filter)) => {
                ctes.extend(defs);
                filter
            }
            None => String::new(),
        };
        ctes.extend([
        format!(
            "\"__c\" AS (SELECT *, {key_struct} AS \"__k\", {lineage_key} AS \"__pk\" FROM {changes} \
             WHERE {seq} > (SELECT coalesce(max({seq}), -1) FROM {changes} WHERE {op} = 't'){epoch})"
        ),
        format!(
            "\"__latest\" AS (SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY \"__k\" ORDER BY {seq} DESC) AS \"__rn\" FROM \"__c\") \
             WHERE \"__rn\" = 1 AND {op} NOT IN ('d', 't'))"
        ),
    ]);
        if !unchanged.is_empty() {
            ctes.extend(predecessors());
        }
        let mut joins = String::new();
        let mut out = Vec::with_capacity(columns.len());
        let mut walks = Vec::new();
        for c in columns {
            match unchanged.iter().position(|u| u == c) {
                Some(i) => {
                    let (walk, join, select) = filled(c, i);
                    ctes.push(walk);
                    joins.push_str(&join);
                    out.push(select);
                    walks.push(i);
                }
                None => out.push(format!("l.{}", ident(c))),
            }
        }
        StateSql {
            ctes,
            joins,
            out,
            walks,
        }
    }
}

/// With files of several journals: the CTEs that find the latest journal with snapshot rows
/// of the table, and the filter that starts the history there. `None` for one journal.
fn latest_snapshot(changes: &str, journals: &[(u64, u64)]) -> Option<([String; 2], String)> {
    if journals.len() <= 1 {
        return None;
    }
    let (seq, op) = (ident(cdc::SEQ), ident(cdc::OP));
    let values = journals
        .iter()
        .map(|(lo, hi)| format!("({lo}, {hi})"))
        .collect::<Vec<_>>()
        .join(", ");
    let ctes = [
        format!("\"__j\"(\"__lo\", \"__hi\") AS (VALUES {values})"),
        format!(
            "\"__epoch\" AS (SELECT coalesce(max(j.\"__lo\"), -1) AS \"__s\" FROM \"__j\" j \
             WHERE EXISTS (SELECT 1 FROM {changes} c WHERE c.{op} = 'r' AND c.{seq} BETWEEN j.\"__lo\" AND j.\"__hi\"))"
        ),
    ];
    Some((
        ctes,
        format!(" AND {seq} >= (SELECT \"__s\" FROM \"__epoch\")"),
    ))
}

/// The CTEs of each change's predecessor in its lineage, deletes left out: the key's previous
/// change, or for the create half of a key change, the old key's latest change before it.
/// (DuckDB allows no ASOF JOIN in a recursive query, so a window for the first, a correlated
/// subquery for the second.)
fn predecessors() -> [String; 3] {
    let (seq, op) = (ident(cdc::SEQ), ident(cdc::OP));
    [
        format!("\"__nd\" AS (SELECT * FROM \"__c\" WHERE {op} NOT IN ('d', 't'))"),
        format!(
            "\"__lag\" AS (SELECT {seq}, \"__k\", \"__pk\", lag({seq}) OVER (PARTITION BY \"__k\" ORDER BY {seq}) AS \"__l\" FROM \"__nd\")"
        ),
        format!(
            "\"__pred\" AS (SELECT x.{seq} AS \"__seq\", CASE WHEN x.\"__pk\" = x.\"__k\" THEN x.\"__l\" \
             ELSE (SELECT max(p.{seq}) FROM \"__nd\" p WHERE p.\"__k\" = x.\"__pk\" AND p.{seq} < x.{seq}) END AS \"__prev\" \
             FROM \"__lag\" x)"
        ),
    ]
}

/// Unchanged column `c` (the `i`th) filled from the row's history: the recursive CTE that
/// walks back through the predecessors until a change that sent it, its join, and the
/// selected value.
fn filled(c: &str, i: usize) -> (String, String, String) {
    let (seq, col) = (ident(cdc::SEQ), ident(c));
    let walk = format!("\"__walk_{i}\"");
    let cte = format!(
        "{walk}(\"__seq0\", \"__cur\", \"__val\", \"__done\") AS (\
         SELECT l.{seq}, l.{seq}, l.{col}, false FROM \"__latest\" l WHERE NOT {sent_l} \
         UNION ALL \
         SELECT w.\"__seq0\", p.{seq}, p.{col}, {sent_p} FROM {walk} w \
         JOIN \"__pred\" q ON q.\"__seq\" = w.\"__cur\" \
         JOIN \"__nd\" p ON p.{seq} = q.\"__prev\" WHERE NOT w.\"__done\")",
        sent_l = sent(c, "l"),
        sent_p = sent(c, "p"),
    );
    let join = format!(
        " LEFT JOIN (SELECT \"__seq0\", \"__val\" FROM {walk} WHERE \"__done\") f{i} ON f{i}.\"__seq0\" = l.{seq}"
    );
    let select = format!(
        "CASE WHEN {} THEN l.{col} ELSE f{i}.\"__val\" END AS {col}",
        sent(c, "l")
    );
    (cte, join, select)
}

/// Whether change `row` sent column `c` (`_cdc_unchanged` does not name it).
fn sent(c: &str, row: &str) -> String {
    format!(
        "NOT list_contains(coalesce({row}.{}, []::VARCHAR[]), {})",
        ident(cdc::UNCHANGED),
        lit(c)
    )
}

/// The source key of the table an audit file holds, from the schema db-sync wrote into it.
fn key_columns(path: &Path) -> Result<Option<Vec<String>>, QueryError> {
    Ok(reader::local_table_schema(path)?.map(|s| s.key_columns()))
}

fn query_strings(conn: &Connection, sql: &str) -> Result<Vec<String>, duckdb::Error> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
    rows.collect()
}

/// Runs the user's statement; a DuckDB error is one line, exit 2.
fn execute(
    conn: &Connection,
    sql: &str,
    catalog: &Catalog,
) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
    let fail = |source: duckdb::Error| {
        let mut message = first_line(&source.to_string());
        if message.contains("Catalog Error") && message.contains("does not exist") {
            message.push_str(&format!(
                "; the audit files hold {}{} (a table appears after its first compaction)",
                if catalog.tables.is_empty() {
                    "no table yet".to_string()
                } else {
                    catalog.tables.join(", ")
                },
                if catalog.keyless.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; without a primary key, only their _changes views: {}",
                        catalog.keyless.join(", ")
                    )
                }
            ));
        }
        QueryError::Sql { message, source }
    };
    let mut stmt = conn.prepare(sql).map_err(fail)?;
    let arrow = stmt.query_arrow([]).map_err(fail)?;
    let schema = utc_as_offset(&arrow.get_schema());
    let batches = arrow
        .map(|b| {
            let columns = b
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| {
                    if c.data_type() == f.data_type() {
                        Ok(c.clone())
                    } else {
                        duckdb::arrow::compute::cast(c, f.data_type())
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            RecordBatch::try_new(schema.clone(), columns)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}

/// `schema` with UTC timestamps (zone `UTC`, as DuckDB names it) relabelled `+00:00`: the same
/// instants, printed with an offset (named zones would need the whole tz database).
fn utc_as_offset(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<duckdb::arrow::datatypes::FieldRef> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Timestamp(unit, Some(tz))
                if matches!(tz.as_ref(), "UTC" | "Etc/UTC" | "utc" | "Z") =>
            {
                Arc::new(
                    f.as_ref()
                        .clone()
                        .with_data_type(DataType::Timestamp(*unit, Some("+00:00".into()))),
                )
            }
            _ => f.clone(),
        })
        .collect();
    Arc::new(duckdb::arrow::datatypes::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(table: &str, date: &str, first: u64) -> AuditFile {
        AuditFile {
            table: table.into(),
            date: date.into(),
            first_seq: first,
            last_seq: first,
            location: object_store::path::Path::from("x"),
            journal: String::new(),
            size: 0,
        }
    }

    #[test]
    fn as_of_prunes_later_dates_but_keeps_each_tables_first_file() {
        let files = vec![
            file("a.t", "2026-11-02", 1),
            file("a.t", "2026-11-03", 2),
            file("b.t", "2026-11-01", 3),
            file("b.t", "2026-11-02", 4),
            file("b.t", "2026-11-03", 5),
        ];
        let at = crate::timearg::parse("2026-11-01 12:00").unwrap();
        let kept: Vec<u64> = prune(files, Some(at)).iter().map(|f| f.first_seq).collect();
        assert_eq!(kept, vec![1, 3]);
    }

    #[test]
    fn the_state_view_fills_unchanged_columns_through_the_rows_history() {
        let state = StateSql::of(
            "\"public\".\"docs_changes\"",
            &["id".into(), "body".into()],
            &["id".into()],
            &["body".into()],
            &History {
                has_old_key: true,
                journals: vec![(1, 9)],
            },
        );
        let sql = state.view("public", "docs");
        assert!(
            sql.contains("PARTITION BY \"__k\" ORDER BY \"_cdc_seq\" DESC"),
            "{sql}"
        );
        assert!(
            sql.contains("coalesce(\"_cdc_old_key\", struct_pack(\"id\" := \"id\"))"),
            "{sql}"
        );
        assert!(
            sql.contains("WHERE \"_cdc_op\" = 't'"),
            "the history starts after a truncate: {sql}"
        );
        assert!(
            sql.contains("lag(\"_cdc_seq\") OVER (PARTITION BY \"__k\""),
            "{sql}"
        );
        assert!(
            sql.contains("list_contains(coalesce(l.\"_cdc_unchanged\", []::VARCHAR[]), 'body')"),
            "{sql}"
        );
        assert!(!sql.contains("__epoch"), "one journal: no epoch");
        let needed = state.needed();
        assert!(
            needed.contains(
                "\"__need\"(\"__s\") AS (SELECT \"_cdc_seq\" FROM \"__latest\" UNION SELECT w.\"__cur\" FROM \"__walk_0\" w"
            ) && needed.contains("GROUP BY c.\"__k\""),
            "the latest changes, the changes the fills come from, their keys' latest: {needed}"
        );
    }

    /// Retention keeps exactly what the state reads: the latest change of each live key, the
    /// change an unsent column is filled from, and the create half that links a new key to
    /// its old key's history; not the changes a walk passes, nor deleted keys.
    #[test]
    fn the_needed_changes_are_the_latest_the_fill_sources_and_the_key_links() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE SCHEMA p; CREATE TABLE p.docs_changes AS SELECT id::INTEGER AS id, n::INTEGER AS n, body, \
               seq::BIGINT AS _cdc_seq, op AS _cdc_op, \
               CASE WHEN un THEN ['body'] ELSE []::VARCHAR[] END AS _cdc_unchanged, \
               CASE WHEN old IS NULL THEN NULL ELSE struct_pack(id := old::INTEGER) END AS _cdc_old_key \
             FROM (VALUES \
               (1, 0, 'B1', 1, 'r', false, NULL), (1, 1, NULL, 2, 'u', true, NULL), \
               (1, 2, NULL, 3, 'u', true, NULL), (2, 0, 'B2', 4, 'r', false, NULL), \
               (2, NULL, NULL, 5, 'd', false, NULL), (3, 0, 'B3', 6, 'r', false, NULL), \
               (3, NULL, NULL, 7, 'd', false, NULL), (4, 5, NULL, 8, 'c', true, 3), \
               (5, 0, 'B5', 9, 'r', false, NULL), (5, 1, 'B5x', 10, 'u', false, NULL)) \
               AS v(id, n, body, seq, op, un, old)",
        )
        .unwrap();
        let sql = StateSql::of(
            "\"p\".\"docs_changes\"",
            &["id".into(), "n".into(), "body".into()],
            &["id".into()],
            &["body".into()],
            &History {
                has_old_key: true,
                journals: vec![(1, 10)],
            },
        )
        .needed();
        let mut seqs: Vec<i64> = conn
            .prepare(&sql)
            .unwrap()
            .query_map([], |r| r.get::<_, i64>(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        seqs.sort();
        assert_eq!(
            seqs,
            [1, 3, 6, 7, 8, 10],
            "6 fills 8, and 7 keeps key 3 deleted"
        );

        // The state read from those changes alone is the state.
        let history = History {
            has_old_key: true,
            journals: vec![(1, 10)],
        };
        let view = |changes: &str, name: &str| {
            StateSql::of(
                changes,
                &["id".into(), "n".into(), "body".into()],
                &["id".into()],
                &["body".into()],
                &history,
            )
            .view("p", name)
        };
        conn.execute_batch(&format!(
            "CREATE TABLE p.kept_changes AS SELECT * FROM p.docs_changes WHERE _cdc_seq IN (1, 3, 6, 7, 8, 10); {}; {}",
            view("\"p\".\"docs_changes\"", "docs"),
            view("\"p\".\"kept_changes\"", "kept")
        ))
        .unwrap();
        let rows = |t: &str| -> Vec<String> {
            conn.prepare(&format!(
                "SELECT concat_ws('|', id, n, body) FROM p.{t} ORDER BY id"
            ))
            .unwrap()
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        assert_eq!(rows("docs"), ["1|2|B1", "4|5|B3", "5|1|B5x"]);
        assert_eq!(rows("kept"), rows("docs"));
    }

    #[test]
    fn a_later_journals_snapshot_starts_the_history() {
        let paths: Vec<PathBuf> = [
            "a/1-40.parquet",
            "a/41-90.parquet",
            "a/91-120.0123456789ab.parquet",
            "a/121-130.0123456789ab.parquet",
            "a/not-an-audit-file.txt",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(journal_ranges(&paths), vec![(1, 90), (91, 130)]);
        let sql = StateSql::of(
            "\"public\".\"items_changes\"",
            &["id".into()],
            &["id".into()],
            &[],
            &History {
                has_old_key: false,
                journals: journal_ranges(&paths),
            },
        )
        .view("public", "items");
        assert!(sql.contains("VALUES (1, 90), (91, 130)"), "{sql}");
        assert!(
            sql.contains("\"_cdc_seq\" >= (SELECT \"__s\" FROM \"__epoch\")"),
            "{sql}"
        );
    }
}
