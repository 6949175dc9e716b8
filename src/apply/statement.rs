//! What every statement of a chunk shares, whichever kind of work it does ([`super::write`],
//! [`super::moves`], [`super::sweep`], [`super::exchange`], [`super::unkeyed`]): bound
//! parameters within MySQL's placeholder limit, statements cut to fit it, deletes by key, the
//! columns the source dropped,
//! the warnings that stop a chunk, and how a server error stops it (retried when transient,
//! else a refused value named by its row's key).

use std::collections::HashSet;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use super::chunk::Chunk;
use super::ddl::quote;
use super::merge::{cells, Cell, Version};
use super::sql::{column_in_message, row_in_message, SqlError};
use super::ApplyError;

/// MySQL's limit on placeholders in one prepared statement.
pub const MAX_PARAMS: usize = 65_535;
/// "'VALUES function' is deprecated" (MySQL 8.0.20+): the form MariaDB needs.
const WARN_DEPRECATED: u16 = 1287;

/// Why a statement of a chunk stopped it.
pub(super) enum Stop {
    /// For the retry loop.
    Sql(SqlError),
    /// A refused value, and its row in the chunk when known.
    Rejected(ApplyError, Option<usize>),
}

impl From<SqlError> for Stop {
    fn from(e: SqlError) -> Self {
        Stop::Sql(e)
    }
}

impl From<mysql_async::Error> for Stop {
    fn from(e: mysql_async::Error) -> Self {
        Stop::Sql(e.into())
    }
}

/// A cell as a bound parameter.
pub(super) fn param(cell: Cell<'_>) -> Value {
    match cell {
        Cell::Value(v) => Value::Bytes(v.to_vec()),
        _ => Value::NULL,
    }
}

/// A server error: transient ones retry, others name the row.
pub(super) fn classify(chunk: &Chunk<'_>, rows: &[usize], e: mysql_async::Error) -> Stop {
    let e = SqlError::from(e);
    if e.transient || e.code.is_none() {
        Stop::Sql(e)
    } else {
        let (e, row) = rejected(chunk, Some(rows), e);
        Stop::Rejected(e, row)
    }
}

/// The error for a statement the server refused: the column and row from the server's
/// message when it gives them, mapped to the row's key. `rows` are the chunk indices of the
/// statement's rows, in order; the index of the refused row comes back when the server named
/// it.
pub fn rejected(
    chunk: &Chunk<'_>,
    rows: Option<&[usize]>,
    e: SqlError,
) -> (ApplyError, Option<usize>) {
    let named = row_in_message(&e.message);
    let row = match (rows, named) {
        (Some(rows), Some(n)) if n >= 1 && n <= rows.len() => Some(rows[n - 1]),
        (Some([only]), None) => Some(*only),
        _ => None,
    };
    let key = match row {
        Some(i) => chunk.describe(i),
        None => format!("one of {} rows of chunk {}", chunk.rows(), chunk.no),
    };
    let error = ApplyError::Rejected(Box::new(super::Refusal {
        source_table: chunk.plan.table.clone(),
        table: chunk.target.name.clone(),
        column: column_in_message(&e.message),
        key,
        of_value: super::refuses_values(&e),
        message: e.to_string(),
    }));
    (error, row)
}

/// Fails on any warning but MySQL 8's deprecation notice, naming the row's key: a value that
/// would be truncated or rounded is an error, not a silent change.
pub(super) async fn check_warnings(
    conn: &mut Conn,
    chunk: &Chunk<'_>,
    rows: &[usize],
) -> Result<(), Stop> {
    if conn.get_warnings() == 0 {
        return Ok(());
    }
    let warnings: Vec<(String, u16, String)> = conn.query("SHOW WARNINGS").await?;
    match warnings
        .into_iter()
        .find(|(_, code, _)| *code != WARN_DEPRECATED)
    {
        None => Ok(()),
        Some((level, code, message)) => {
            let (e, row) = rejected(
                chunk,
                Some(rows),
                SqlError {
                    code: Some(code),
                    message: format!("{level}: {message}"),
                    transient: false,
                    fatal: false,
                },
            );
            Err(Stop::Rejected(e, row))
        }
    }
}

/// Deletes the rows at the keys of `keep` (row indices of the chunk).
pub(super) async fn delete(conn: &mut Conn, chunk: &Chunk<'_>, keep: &[usize]) -> Result<(), Stop> {
    let key_cols: Vec<String> = chunk.plan.key.iter().map(|k| quote(k)).collect();
    let per_stmt = (MAX_PARAMS / key_cols.len()).max(1);
    let lhs = if key_cols.len() == 1 {
        key_cols[0].clone()
    } else {
        format!("({})", key_cols.join(", "))
    };
    let tuple = if key_cols.len() == 1 {
        "?".to_string()
    } else {
        format!("({})", vec!["?"; key_cols.len()].join(", "))
    };
    for part in keep.chunks(per_stmt) {
        let sql = format!(
            "DELETE FROM {} WHERE {lhs} IN ({})",
            quote(&chunk.target.name),
            vec![tuple.as_str(); part.len()].join(", ")
        );
        let params: Vec<Value> = part
            .iter()
            .flat_map(|&i| cells(chunk.key(i)).map(param))
            .collect();
        exec_rows(conn, chunk, part, &sql, params).await?;
    }
    Ok(())
}

/// The target columns db-sync made for source columns that `version` no longer has (dropped
/// at the source): NULL in every row written without them.
pub(super) fn dropped_columns<'c>(chunk: &Chunk<'c>, version: &Version) -> Vec<&'c String> {
    let has: HashSet<String> = version
        .columns
        .iter()
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let mut dropped: Vec<&String> = chunk
        .target
        .followed
        .iter()
        .filter(|c| chunk.target.columns.contains_key(*c) && !has.contains(*c))
        .collect();
    dropped.sort();
    dropped
}

/// Runs one statement for the chunk rows `rows`: a server error or a warning names the row.
pub(super) async fn exec_rows(
    conn: &mut Conn,
    chunk: &Chunk<'_>,
    rows: &[usize],
    sql: &str,
    params: Vec<Value>,
) -> Result<(), Stop> {
    conn.exec_drop(sql, params)
        .await
        .map_err(|e| classify(chunk, rows, e))?;
    check_warnings(conn, chunk, rows).await
}

/// Parts of `keep` for statements of `columns` parameters a row, `size(i)` bytes for row `i`
/// (see `write::statement_parts`).
pub(super) fn parts_by_size(
    keep: &[usize],
    columns: usize,
    size: impl Fn(usize) -> usize,
) -> Vec<&[usize]> {
    const MAX_BYTES: usize = 4 << 20;
    let max_rows = (MAX_PARAMS / columns.max(1)).max(1);
    let mut parts = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (n, &i) in keep.iter().enumerate() {
        let len = size(i);
        if n > start && (n - start == max_rows || bytes + len > MAX_BYTES) {
            parts.push(&keep[start..n]);
            start = n;
            bytes = 0;
        }
        bytes += len;
    }
    if start < keep.len() {
        parts.push(&keep[start..]);
    }
    parts
}

/// `k1 <=> ? AND k2 <=> ?`: the key columns of `chunk`, NULL-safe, for one row's key.
pub(super) fn key_match(chunk: &Chunk<'_>) -> String {
    chunk
        .plan
        .key
        .iter()
        .map(|k| format!("{} <=> ?", quote(k)))
        .collect::<Vec<_>>()
        .join(" AND ")
}
