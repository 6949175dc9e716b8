//! Writing one chunk: a transaction that inserts the chunk's checkpoint row first, then its
//! deletes or upserts, then commits (DESIGN §2, §7).
//!
//! Two ways to write upserts, with the same values (rendered once by [`super::values`]):
//! - `LOAD DATA LOCAL INFILE … REPLACE` streams the chunk as text; the server's fastest path.
//!   Only used where REPLACE (delete + insert) cannot differ from an upsert: the chunk sends
//!   every target column, and no foreign key references the table and no trigger is on it.
//!   Because `LOCAL` turns bad values into warnings, a chunk with any warning is rolled back
//!   and redone the second way, which reports the exact problem.
//! - Multi-row `INSERT … ON DUPLICATE KEY UPDATE` with bound parameters: every other case, and
//!   everywhere when the server refuses `LOAD DATA LOCAL` (said once).
//!
//! Any warning other than MySQL 8's deprecation of `VALUES()` stops the chunk: a value that
//! would be truncated or rounded is an error, not a silent change.

use std::collections::HashSet;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use super::checkpoint;
use super::ddl::{quote, TargetTable};
use super::merge::{cells, describe_key, Cell, KeyedRow, TablePlan, UpsertGroup};
use super::sql::{column_in_message, row_in_message, SqlError};
use super::values::{write_hex, write_load_data_field};
use super::ApplyError;
use crate::failpoint;

/// MySQL's limit on placeholders in one prepared statement.
const MAX_PARAMS: usize = 65_535;
/// "'VALUES function' is deprecated" (MySQL 8.0.20+): the form MariaDB needs.
const WARN_DEPRECATED: u16 = 1287;

/// What a chunk's transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkOutcome {
    Applied,
    /// Its checkpoint row was already there: an earlier run committed it.
    AlreadyCommitted,
}

/// A chunk to apply: rows of one table, one kind.
pub struct Chunk<'a> {
    pub no: u32,
    pub chunks: u32,
    pub window: (u64, u64),
    pub plan: &'a TablePlan,
    pub target: &'a TargetTable,
    pub work: Work<'a>,
}

pub enum Work<'a> {
    Delete(&'a [Box<[u8]>]),
    Upsert {
        group: &'a UpsertGroup,
        rows: &'a [KeyedRow],
    },
}

impl Chunk<'_> {
    pub fn rows(&self) -> usize {
        match &self.work {
            Work::Delete(keys) => keys.len(),
            Work::Upsert { rows, .. } => rows.len(),
        }
    }

    fn operation(&self) -> &'static str {
        match self.work {
            Work::Delete(_) => "delete",
            Work::Upsert { .. } => "upsert",
        }
    }
}

/// How one attempt at a chunk ended, short of a retryable failure.
pub enum Attempt {
    Done(ChunkOutcome),
    /// Roll back and redo with multi-row statements.
    Redo,
    /// The server refuses `LOAD DATA LOCAL`: roll back, say so once, use INSERT from now on.
    Refused(String),
    /// A value the target refuses: the chunk stops (rolled back by the caller).
    Rejected(ApplyError),
}

/// One attempt at `chunk` in one transaction on `conn`. `fast`: upserts through LOAD DATA.
/// `Err` is a failed statement for the caller's retry loop.
pub async fn chunk_transaction(
    conn: &mut Conn,
    pipeline: &str,
    chunk: &Chunk<'_>,
    fast: bool,
) -> Result<Attempt, SqlError> {
    conn.query_drop("START TRANSACTION").await?;
    let params = (
        pipeline,
        chunk.window.0,
        chunk.window.1,
        chunk.no,
        chunk.chunks,
        chunk.target.name.clone(),
        chunk.operation(),
        chunk.rows() as u32,
    );
    if let Err(e) = conn.exec_drop(checkpoint::insert_sql(), params).await {
        let e = SqlError::from(e);
        if e.code == Some(1062) {
            conn.query_drop("ROLLBACK").await?;
            return Ok(Attempt::Done(ChunkOutcome::AlreadyCommitted));
        }
        return Err(e);
    }
    let written = match &chunk.work {
        Work::Delete(keys) => delete(conn, chunk, keys).await,
        Work::Upsert { group, rows } if fast => match load_data(conn, chunk, group, rows).await {
            Ok(0) => Ok(()),
            Ok(warnings) => {
                tracing::debug!(
                    warnings,
                    chunk = chunk.no,
                    "LOAD DATA warned; redoing the chunk with INSERT to find the value"
                );
                conn.query_drop("ROLLBACK").await?;
                return Ok(Attempt::Redo);
            }
            Err(e) if matches!(e.code, Some(1148 | 3948 | 4166)) => {
                conn.query_drop("ROLLBACK").await?;
                return Ok(Attempt::Refused(e.to_string()));
            }
            Err(e) if e.transient || e.code.is_none() => return Err(e),
            Err(e) => {
                // A value the server refused (strict mode): redo with INSERT, whose error
                // names the row, hence the key.
                tracing::debug!(
                    chunk = chunk.no,
                    "LOAD DATA failed ({e}); redoing the chunk with INSERT to find the value"
                );
                conn.query_drop("ROLLBACK").await?;
                return Ok(Attempt::Redo);
            }
        },
        Work::Upsert { group, rows } => upsert(conn, chunk, group, rows).await,
    };
    match written {
        Ok(()) => {}
        Err(Stop::Sql(e)) => return Err(e),
        Err(Stop::Rejected(e)) => return Ok(Attempt::Rejected(e)),
    }
    failpoint::hit("apply.before_commit");
    conn.query_drop("COMMIT").await?;
    failpoint::hit("apply.after_chunk");
    Ok(Attempt::Done(ChunkOutcome::Applied))
}

/// Why a statement of a chunk stopped it.
enum Stop {
    /// For the retry loop.
    Sql(SqlError),
    Rejected(ApplyError),
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

/// Whether REPLACE equals an upsert for this chunk (see the module doc).
pub fn replace_fits(chunk: &Chunk<'_>) -> bool {
    let Work::Upsert { group, .. } = &chunk.work else {
        return false;
    };
    if !chunk.target.replace_safe {
        return false;
    }
    let version = &chunk.plan.versions[group.version];
    let sent: HashSet<String> = group
        .columns
        .iter()
        .map(|&c| version.columns[c].to_ascii_lowercase())
        .collect();
    chunk.target.columns.iter().all(|c| sent.contains(c))
}

/// A value the target cannot hold stops the chunk before it starts, naming column and key.
pub fn check_values(chunk: &Chunk<'_>) -> Result<(), ApplyError> {
    let plan = chunk.plan;
    let bad = |column: &str, key: &[u8], reason: &str| ApplyError::Rejected {
        source_table: plan.table.clone(),
        table: chunk.target.name.clone(),
        column: Some(column.to_string()),
        key: describe_key(&plan.key, key),
        message: reason.to_string(),
    };
    match &chunk.work {
        Work::Delete(keys) => {
            for key in *keys {
                for (i, cell) in cells(key).enumerate() {
                    if let Cell::Bad(reason) = cell {
                        return Err(bad(&plan.key[i], key, reason));
                    }
                }
            }
        }
        Work::Upsert { group, rows } => {
            let columns = &plan.versions[group.version].columns;
            for (key, row) in *rows {
                for (i, cell) in cells(row).enumerate() {
                    if let Cell::Bad(reason) = cell {
                        return Err(bad(&columns[i], key, reason));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The error for a statement the server refused: the column and row from the server's
/// message when it gives them, mapped to the row's key.
pub fn rejected(chunk: &Chunk<'_>, keys: Option<&[&[u8]]>, e: SqlError) -> ApplyError {
    let row = row_in_message(&e.message);
    let key = match (keys, row) {
        (Some(keys), Some(n)) if n >= 1 && n <= keys.len() => {
            describe_key(&chunk.plan.key, keys[n - 1])
        }
        (Some(keys), None) if keys.len() == 1 => describe_key(&chunk.plan.key, keys[0]),
        _ => format!("one of {} rows of chunk {}", chunk.rows(), chunk.no),
    };
    ApplyError::Rejected {
        source_table: chunk.plan.table.clone(),
        table: chunk.target.name.clone(),
        column: column_in_message(&e.message),
        key,
        message: e.to_string(),
    }
}

/// Fails on any warning but MySQL 8's deprecation notice, naming the row's key.
async fn check_warnings(conn: &mut Conn, chunk: &Chunk<'_>, keys: &[&[u8]]) -> Result<(), Stop> {
    if conn.get_warnings() == 0 {
        return Ok(());
    }
    let warnings: Vec<(String, u16, String)> = conn.query("SHOW WARNINGS").await?;
    match warnings
        .into_iter()
        .find(|(_, code, _)| *code != WARN_DEPRECATED)
    {
        None => Ok(()),
        Some((level, code, message)) => Err(Stop::Rejected(rejected(
            chunk,
            Some(keys),
            SqlError {
                code: Some(code),
                message: format!("{level}: {message}"),
                transient: false,
                fatal: false,
            },
        ))),
    }
}

fn param(cell: Cell<'_>) -> Value {
    match cell {
        Cell::Value(v) => Value::Bytes(v.to_vec()),
        _ => Value::NULL,
    }
}

/// A server error: transient ones retry, others name the row.
fn classify(chunk: &Chunk<'_>, keys: &[&[u8]], e: mysql_async::Error) -> Stop {
    let e = SqlError::from(e);
    if e.transient || e.code.is_none() {
        Stop::Sql(e)
    } else {
        Stop::Rejected(rejected(chunk, Some(keys), e))
    }
}

async fn delete(conn: &mut Conn, chunk: &Chunk<'_>, keys: &[Box<[u8]>]) -> Result<(), Stop> {
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
    for part in keys.chunks(per_stmt) {
        let sql = format!(
            "DELETE FROM {} WHERE {lhs} IN ({})",
            quote(&chunk.target.name),
            vec![tuple.as_str(); part.len()].join(", ")
        );
        let params: Vec<Value> = part.iter().flat_map(|k| cells(k).map(param)).collect();
        let refs: Vec<&[u8]> = part.iter().map(|k| &k[..]).collect();
        conn.exec_drop(&sql, params)
            .await
            .map_err(|e| classify(chunk, &refs, e))?;
        check_warnings(conn, chunk, &refs).await?;
    }
    Ok(())
}

async fn upsert(
    conn: &mut Conn,
    chunk: &Chunk<'_>,
    group: &UpsertGroup,
    rows: &[KeyedRow],
) -> Result<(), Stop> {
    let version = &chunk.plan.versions[group.version];
    let names: Vec<String> = group
        .columns
        .iter()
        .map(|&c| quote(&version.columns[c]))
        .collect();
    let is_key = |c: usize| chunk.plan.key.iter().any(|k| *k == version.columns[c]);
    let mut updates: Vec<String> = group
        .columns
        .iter()
        .filter(|&&c| !is_key(c))
        .map(|&c| {
            let q = quote(&version.columns[c]);
            format!("{q} = VALUES({q})")
        })
        .collect();
    if updates.is_empty() {
        // Only key columns: nothing to update on a duplicate.
        let q = quote(&chunk.plan.key[0]);
        updates.push(format!("{q} = {q}"));
    }
    let tuple = format!("({})", vec!["?"; names.len()].join(", "));
    for part in statement_parts(rows, names.len()) {
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {} ON DUPLICATE KEY UPDATE {}",
            quote(&chunk.target.name),
            names.join(", "),
            vec![tuple.as_str(); part.len()].join(", "),
            updates.join(", ")
        );
        let mut params = Vec::with_capacity(part.len() * names.len());
        for (_, row) in part {
            params.extend(cells(row).filter(|c| *c != Cell::Unchanged).map(param));
        }
        let refs: Vec<&[u8]> = part.iter().map(|(k, _)| &k[..]).collect();
        conn.exec_drop(&sql, params)
            .await
            .map_err(|e| classify(chunk, &refs, e))?;
        check_warnings(conn, chunk, &refs).await?;
    }
    Ok(())
}

/// Rows per statement: within MySQL's placeholder limit and well inside the default
/// `max_allowed_packet` (16 MB), whatever the row size.
fn statement_parts(rows: &[KeyedRow], columns: usize) -> Vec<&[KeyedRow]> {
    const MAX_BYTES: usize = 4 << 20;
    let max_rows = (MAX_PARAMS / columns.max(1)).max(1);
    let mut parts = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (_, row)) in rows.iter().enumerate() {
        if i > start && (i - start == max_rows || bytes + row.len() > MAX_BYTES) {
            parts.push(&rows[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += row.len();
    }
    if start < rows.len() {
        parts.push(&rows[start..]);
    }
    parts
}

/// Streams the chunk with `LOAD DATA LOCAL INFILE … REPLACE`; returns the warning count.
async fn load_data(
    conn: &mut Conn,
    chunk: &Chunk<'_>,
    group: &UpsertGroup,
    rows: &[KeyedRow],
) -> Result<u16, SqlError> {
    let version = &chunk.plan.versions[group.version];
    let mut targets = Vec::with_capacity(group.columns.len());
    let mut sets = Vec::new();
    for &c in &group.columns {
        let q = quote(&version.columns[c]);
        if version.binary[c] {
            targets.push(format!("@b{c}"));
            sets.push(format!("{q} = UNHEX(@b{c})"));
        } else {
            targets.push(q);
        }
    }
    let mut data = Vec::with_capacity(rows.iter().map(|(_, r)| r.len() + 16).sum());
    for (_, row) in rows {
        let mut first = true;
        for (c, cell) in cells(row).enumerate() {
            if cell == Cell::Unchanged {
                continue;
            }
            if !first {
                data.push(b'\t');
            }
            first = false;
            match cell {
                Cell::Value(v) if version.binary[c] => write_hex(&mut data, v),
                Cell::Value(v) => write_load_data_field(&mut data, v),
                _ => data.extend_from_slice(b"\\N"),
            }
        }
        data.push(b'\n');
    }
    let sql = format!(
        "LOAD DATA LOCAL INFILE 'db-sync-chunk' REPLACE INTO TABLE {} CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({}){}",
        quote(&chunk.target.name),
        targets.join(", "),
        if sets.is_empty() {
            String::new()
        } else {
            format!(" SET {}", sets.join(", "))
        }
    );
    let bytes = bytes::Bytes::from(data);
    conn.set_infile_handler(async move {
        let stream: mysql_async::InfileData =
            Box::pin(futures::stream::once(async move { Ok(bytes) }));
        Ok(stream)
    });
    conn.query_drop(&sql).await?;
    Ok(conn.get_warnings())
}
