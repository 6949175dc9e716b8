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

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, Utc};
use duckdb::Connection;

use crate::audit::{AuditFile, AuditStore};
use crate::cli::Failure;
use crate::compact::TABLE_SCHEMA_METADATA;
use crate::config::Config;
use crate::journal::event::TableSchema;

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
) -> Result<(), Failure> {
    let store = AuditStore::open(&config.audit).map_err(|e| Failure::usage(e.to_string()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))?;
    let files = rt
        .block_on(store.list_files(None))
        .map_err(|e| Failure::runtime(e.to_string()))?;
    let files = prune(files, as_of);
    let scratch = tempdir_for(&store)?;
    let local = rt.block_on(local_paths(&store, &files, scratch.as_deref()))?;
    let conn = Connection::open_in_memory()
        .map_err(|e| Failure::runtime(format!("cannot open DuckDB: {e}")))?;
    let catalog = define_views(&conn, &local, as_of)?;
    let (schema, batches) = execute(&conn, sql, &catalog)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = match format {
        Format::Table => write_table(&mut out, &schema, &batches),
        Format::Csv => write_csv(&mut out, &schema, &batches),
        Format::Json => write_json(&mut out, &batches),
    };
    match written.and_then(|()| out.flush().map_err(|e| e.to_string())) {
        Ok(()) => Ok(()),
        // The reader went away (`| head`): not an error.
        Err(e) if e.contains("Broken pipe") => Ok(()),
        Err(e) => Err(Failure::runtime(format!("cannot print the result: {e}"))),
    }
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
fn tempdir_for(store: &AuditStore) -> Result<Option<TempDir>, Failure> {
    if store.local_root.is_some() {
        return Ok(None);
    }
    let dir = std::env::temp_dir().join(format!("db-sync-query-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| {
        Failure::runtime(format!(
            "cannot create {} for the audit files: {e}",
            dir.display()
        ))
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
) -> Result<BTreeMap<String, Vec<PathBuf>>, Failure> {
    use futures::{StreamExt, TryStreamExt};
    use object_store::ObjectStoreExt;
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
            .map(|(f, (_, path))| async move {
                let fail = |e: &dyn std::fmt::Display| {
                    Failure::runtime(format!(
                        "cannot read audit file {} from {}: {e}",
                        f.location, store.url
                    ))
                };
                let bytes = store
                    .store
                    .get(&f.location)
                    .await
                    .map_err(|e| fail(&crate::audit::one_line(&e)))?
                    .bytes()
                    .await
                    .map_err(|e| fail(&crate::audit::one_line(&e)))?;
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| fail(&e))?;
                }
                std::fs::write(path, &bytes).map_err(|e| fail(&e))?;
                Ok::<(), Failure>(())
            })
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

fn duck_err(what: &str, e: duckdb::Error) -> Failure {
    Failure::runtime(format!("{what}: {}", first_line(&e.to_string())))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// Defines `schema.table_changes` and `schema.table` for every table in `local`.
fn define_views(
    conn: &Connection,
    local: &BTreeMap<String, Vec<PathBuf>>,
    as_of: Option<DateTime<Utc>>,
) -> Result<Catalog, Failure> {
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
                " WHERE \"_cdc_ts\" <= TIMESTAMPTZ '{}'",
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
        .filter(|c| !c.starts_with("_cdc_"))
        .collect();
        let unchanged: Vec<String> = query_strings(
            conn,
            &format!("SELECT DISTINCT u FROM (SELECT unnest(\"_cdc_unchanged\") AS u FROM {changes}) ORDER BY u"),
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
    let mut fills = String::new();
    let mut out = Vec::with_capacity(columns.len());
    for c in columns {
        match unchanged.iter().position(|u| u == c) {
            Some(i) => {
                fills.push_str(&format!(
                    ", last_value(CASE WHEN NOT list_contains(coalesce(\"_cdc_unchanged\", []::VARCHAR[]), {}) \
                     THEN struct_pack(v := {}) END IGNORE NULLS) OVER (PARTITION BY {partition} ORDER BY \"_cdc_seq\" \
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
        "CREATE VIEW {}.{} AS SELECT {} FROM (SELECT *, row_number() OVER (PARTITION BY {partition} ORDER BY \"_cdc_seq\" DESC) AS \"__db_sync_rn\"{fills} FROM {changes}) WHERE \"__db_sync_rn\" = 1 AND \"_cdc_op\" <> 'd'",
        ident(schema),
        ident(name),
        out.join(", ")
    )
}

/// The source key of the table an audit file holds, from the schema db-sync wrote into it.
fn key_columns(path: &Path) -> Result<Option<Vec<String>>, Failure> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let fail = |e: &dyn std::fmt::Display| {
        Failure::runtime(format!("cannot read audit file {}: {e}", path.display()))
    };
    let file = std::fs::File::open(path).map_err(|e| fail(&e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| fail(&e))?;
    let Some(json) = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|kv| kv.key == TABLE_SCHEMA_METADATA))
        .and_then(|kv| kv.value.clone())
    else {
        return Ok(None);
    };
    let schema = TableSchema::from_json(json.as_bytes()).map_err(|e| fail(&e))?;
    Ok(schema.key.map(|k| {
        k.fields
            .iter()
            .map(|f| f.field_name().to_string())
            .collect()
    }))
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
) -> Result<(SchemaRef, Vec<RecordBatch>), Failure> {
    let fail = |e: duckdb::Error| {
        let mut message = first_line(&e.to_string());
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
        Failure::usage(format!("query: {message}"))
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
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::runtime(format!("query: cannot read the result: {e}")))?;
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

fn formatter(array: &dyn Array) -> Result<ArrayFormatter<'_>, String> {
    static OPTIONS: std::sync::LazyLock<FormatOptions<'static>> =
        std::sync::LazyLock::new(|| FormatOptions::default().with_null(""));
    ArrayFormatter::try_new(array, &OPTIONS).map_err(|e| e.to_string())
}

fn write_table(
    out: &mut impl Write,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<(), String> {
    let empty;
    let batches = if batches.is_empty() {
        empty = [RecordBatch::new_empty(schema.clone())];
        &empty[..]
    } else {
        batches
    };
    let table = arrow::util::pretty::pretty_format_batches(batches).map_err(|e| e.to_string())?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    writeln!(out, "{table}").map_err(|e| e.to_string())?;
    writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" }).map_err(|e| e.to_string())
}

/// A CSV field, quoted when it must be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn write_csv(
    out: &mut impl Write,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<(), String> {
    let header: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| csv_field(f.name()))
        .collect();
    writeln!(out, "{}", header.join(",")).map_err(|e| e.to_string())?;
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| formatter(c.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            let fields: Vec<String> = batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(c, f)| {
                    if c.is_null(row) {
                        String::new()
                    } else {
                        csv_field(&f.value(row).to_string())
                    }
                })
                .collect();
            writeln!(out, "{}", fields.join(",")).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn write_json(out: &mut impl Write, batches: &[RecordBatch]) -> Result<(), String> {
    for batch in batches {
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            let mut object = serde_json::Map::with_capacity(batch.num_columns());
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                object.insert(field.name().clone(), json_value(column, row)?);
            }
            serde_json::to_writer(&mut *out, &object).map_err(|e| e.to_string())?;
            writeln!(out).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// One cell as JSON: numbers as numbers, decimals as strings (exact), nested values nested,
/// everything else as its display text (timestamps in RFC 3339).
fn json_value(array: &ArrayRef, row: usize) -> Result<serde_json::Value, String> {
    use arrow::datatypes as t;
    use serde_json::Value as J;
    if array.is_null(row) {
        return Ok(J::Null);
    }
    macro_rules! num {
        ($ty:ty) => {
            J::from(array.as_primitive::<$ty>().value(row))
        };
    }
    Ok(match array.data_type() {
        DataType::Boolean => J::Bool(array.as_boolean().value(row)),
        DataType::Int8 => num!(t::Int8Type),
        DataType::Int16 => num!(t::Int16Type),
        DataType::Int32 => num!(t::Int32Type),
        DataType::Int64 => num!(t::Int64Type),
        DataType::UInt8 => num!(t::UInt8Type),
        DataType::UInt16 => num!(t::UInt16Type),
        DataType::UInt32 => num!(t::UInt32Type),
        DataType::UInt64 => num!(t::UInt64Type),
        DataType::Float32 | DataType::Float64 => {
            let v = match array.data_type() {
                DataType::Float32 => array.as_primitive::<t::Float32Type>().value(row) as f64,
                _ => array.as_primitive::<t::Float64Type>().value(row),
            };
            serde_json::Number::from_f64(v).map_or_else(|| J::String(v.to_string()), J::Number)
        }
        DataType::Utf8 => J::String(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => J::String(array.as_string::<i64>().value(row).to_string()),
        DataType::List(_) => {
            let list = array.as_list::<i32>().value(row);
            J::Array(
                (0..list.len())
                    .map(|i| json_value(&list, i))
                    .collect::<Result<_, _>>()?,
            )
        }
        DataType::LargeList(_) => {
            let list = array.as_list::<i64>().value(row);
            J::Array(
                (0..list.len())
                    .map(|i| json_value(&list, i))
                    .collect::<Result<_, _>>()?,
            )
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let mut object = serde_json::Map::new();
            for (f, c) in fields.iter().zip(s.columns()) {
                object.insert(f.name().clone(), json_value(c, row)?);
            }
            J::Object(object)
        }
        _ => J::String(formatter(array.as_ref())?.value(row).to_string()),
    })
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
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
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
