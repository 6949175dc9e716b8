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
//! is the source's as of then. `file://` audit files are read in place; `s3://` files are
//! copied to a temporary directory first (DuckDB's own S3 support is an extension it would
//! have to download).

mod output;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use chrono::{DateTime, Utc};
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
    Result(#[from] arrow::error::ArrowError),
    #[error("cannot create {path} for the audit files: {source}")]
    Scratch {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot print the result: {0}")]
    Print(std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

impl Classify for QueryError {
    fn kind(&self) -> ErrorKind {
        match self {
            QueryError::Audit(e) => e.kind(),
            QueryError::Sql { .. } => ErrorKind::Config,
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
    let store = AuditStore::open(&config.audit)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(QueryError::Runtime)?;
    let files = rt.block_on(store.list_files(None))?;
    let files = prune(files, as_of);
    let scratch = tempdir_for(&store)?;
    let local = rt.block_on(local_paths(&store, &files, scratch.as_deref()))?;
    let conn = Connection::open_in_memory().map_err(|source| QueryError::Duck {
        what: "cannot open DuckDB".into(),
        source,
    })?;
    let catalog = define_views(&conn, &local, as_of)?;
    let (schema, batches) = execute(&conn, sql, &catalog)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    output::print(&mut out, format, &schema, &batches).map_err(QueryError::Print)
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

/// A directory for copies of `s3://` files; `None` for `file://`.
fn tempdir_for(store: &AuditStore) -> Result<Option<TempDir>, QueryError> {
    if store.local_root.is_some() {
        return Ok(None);
    }
    let dir = std::env::temp_dir().join(format!("db-sync-query-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| QueryError::Scratch {
        path: dir.clone(),
        source,
    })?;
    Ok(Some(TempDir(dir)))
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
        let columns: Vec<String> = query_strings(
            conn,
            &format!("SELECT column_name FROM (DESCRIBE {changes})"),
        )
        .map_err(|e| duck_err(&what, e))?
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
        exec(&state_view(
            schema, name, &changes, &columns, &key, &unchanged,
        ))?;
    }
    Ok(catalog)
}

/// The `CREATE VIEW` of a table's state: the latest change per key unless it is a delete, with
/// each `unchanged` column filled from the key's latest change that sent it.
fn state_view(
    schema: &str,
    name: &str,
    changes: &str,
    columns: &[String],
    key: &[String],
    unchanged: &[String],
) -> String {
    let partition = key.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ");
    let (seq, op, unchanged_col) = (ident(cdc::SEQ), ident(cdc::OP), ident(cdc::UNCHANGED));
    let mut fills = String::new();
    let mut out = Vec::with_capacity(columns.len());
    for c in columns {
        match unchanged.iter().position(|u| u == c) {
            Some(i) => {
                fills.push_str(&format!(
                    ", last_value(CASE WHEN NOT list_contains(coalesce({unchanged_col}, []::VARCHAR[]), {}) \
                     THEN struct_pack(v := {}) END IGNORE NULLS) OVER (PARTITION BY {partition} ORDER BY {seq} \
                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS \"__db_sync_fill_{i}\"",
                    lit(c),
                    ident(c)
                ));
                out.push(format!(
                    "struct_extract(\"__db_sync_fill_{i}\", 'v') AS {}",
                    ident(c)
                ));
            }
            None => out.push(ident(c)),
        }
    }
    format!(
        "CREATE VIEW {}.{} AS SELECT {} FROM (SELECT *, row_number() OVER (PARTITION BY {partition} ORDER BY {seq} DESC) AS \"__db_sync_rn\"{fills} FROM {changes}) WHERE \"__db_sync_rn\" = 1 AND {op} <> 'd'",
        ident(schema),
        ident(name),
        out.join(", ")
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
                        arrow::compute::cast(c, f.data_type())
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
    let fields: Vec<arrow::datatypes::FieldRef> = schema
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
    Arc::new(arrow::datatypes::Schema::new_with_metadata(
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
    fn the_state_view_fills_unchanged_columns_per_key() {
        let sql = state_view(
            "public",
            "docs",
            "\"public\".\"docs_changes\"",
            &["id".into(), "body".into()],
            &["id".into()],
            &["body".into()],
        );
        assert!(
            sql.contains("PARTITION BY \"id\" ORDER BY \"_cdc_seq\" DESC"),
            "{sql}"
        );
        assert!(
            sql.contains("list_contains(coalesce(\"_cdc_unchanged\", []::VARCHAR[]), 'body')"),
            "{sql}"
        );
        assert!(
            sql.contains("struct_extract(\"__db_sync_fill_0\", 'v') AS \"body\""),
            "{sql}"
        );
        assert!(sql.ends_with("\"_cdc_op\" <> 'd'"), "{sql}");
    }
}
