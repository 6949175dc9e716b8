//! What every statement of a chunk shares, whichever kind of work it does ([`super::write`],
//! [`super::moves`], [`super::sweep`]): bound parameters within MySQL's placeholder limit,
//! the warnings that stop a chunk, and how a server error stops it (retried when transient,
//! else a refused value named by its row's key).

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use super::chunk::Chunk;
use super::merge::{describe_key, Cell};
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
        Some(i) => describe_key(&chunk.plan.key, chunk.key(i)),
        None => format!("one of {} rows of chunk {}", chunk.rows(), chunk.no),
    };
    let error = ApplyError::Rejected {
        source_table: chunk.plan.table.clone(),
        table: chunk.target.name.clone(),
        column: column_in_message(&e.message),
        key,
        message: e.to_string(),
    };
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
