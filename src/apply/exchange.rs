//! Upserts into a table the target keeps secondary unique indexes on: one exchange chunk
//! ([`Work::Exchange`](super::chunk::Work::Exchange)) per window.
//!
//! An upsert finds its row through *any* unique index, not only the key. When a row takes a
//! unique value that another row of the window still holds (two rows trade emails in one
//! source transaction; a value passes from one row to another), `INSERT … ON DUPLICATE KEY
//! UPDATE` updates the row that holds it, and `REPLACE` deletes it; chunks on two connections
//! make the order anyone's guess. So the window's upserts of such a table go in one
//! transaction, in three steps:
//!
//! 1. The columns a row does not send (an unchanged TOASTed value, a column only the target
//!    has) are read from the target, so that nothing the row keeps is lost in step 2.
//! 2. Every key of the window leaves.
//! 3. Every row returns, with plain `INSERT`s.
//!
//! After step 2 no old value of the window is left, and the new values are the source's, which
//! its own unique indexes keep apart: rows of the window cannot meet. A row that meets a row
//! outside the window means the target's index is not the source's (it folds case or accents
//! where the source compares bytes, or the source has no such index): it is refused with its
//! key and the index (never a silent delete), and `target.on_reject: quarantine` sets it aside.
//!
//! Moves (key changes) run before, as for every table: a move that meets a unique value is
//! refused the same way.

use std::collections::{HashMap, HashSet};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};

use super::chunk::Chunk;
use super::ddl::quote;
use super::merge::{cells, Cell, UpsertGroup};
use super::sql::SqlError;
use super::statement::{check_warnings, delete, key_match, param, parts_by_size, rejected, Stop};
use super::ApplyError;

/// Rows whose unsent columns one `SELECT` reads (a `UNION ALL` of key lookups).
const READ_ROWS: usize = 256;

/// Applies the exchange's rows `keep` (indices through `groups`, in order) in the chunk's open
/// transaction (see the module doc).
pub(super) async fn exchange(
    conn: &mut Conn,
    chunk: &Chunk<'_>,
    groups: &[UpsertGroup],
    keep: &[usize],
) -> Result<(), Stop> {
    let shapes: Vec<Shape> = groups.iter().map(|g| Shape::of(chunk, g)).collect();
    // Each group's first row index in the chunk.
    let starts: Vec<usize> = groups
        .iter()
        .scan(0, |at, g| {
            let start = *at;
            *at += g.rows.len();
            Some(start)
        })
        .collect();
    let mut by_group: Vec<Vec<usize>> = vec![Vec::new(); groups.len()];
    for &i in keep {
        by_group[starts.partition_point(|&s| s <= i) - 1].push(i);
    }
    let mut kept: HashMap<usize, Vec<Value>> = HashMap::new();
    for (shape, rows) in shapes.iter().zip(&by_group) {
        if !shape.unsent.is_empty() {
            read_unsent(conn, chunk, shape, rows, &mut kept).await?;
        }
    }
    delete(conn, chunk, keep).await?;
    for (n, (shape, rows)) in shapes.iter().zip(&by_group).enumerate() {
        let (filled, plain): (Vec<Back>, Vec<Back>) = rows
            .iter()
            .map(|&i| {
                let cells: &[u8] = &groups[n].rows[i - starts[n]].1;
                (i, cells, kept.get(&i).map(Vec::as_slice))
            })
            .partition(|r| r.2.is_some());
        insert(conn, chunk, shape, &plain).await?;
        insert(conn, chunk, shape, &filled).await?;
    }
    Ok(())
}

/// A row going back: its index in the chunk, its cells, and the values kept for its unsent
/// columns (`None`: it has none to keep).
type Back<'r> = (usize, &'r [u8], Option<&'r [Value]>);

/// The columns of one upsert group's rows: sent, NULL (dropped at the source, followed by
/// db-sync), and kept from the target (the rest of the target's columns but the generated
/// ones, which the server computes again).
struct Shape {
    sent: Vec<String>,
    nulls: Vec<String>,
    unsent: Vec<String>,
}

impl Shape {
    fn of(chunk: &Chunk<'_>, group: &UpsertGroup) -> Shape {
        let version = &chunk.plan.versions[group.version];
        let sent: Vec<String> = group
            .columns
            .iter()
            .map(|&c| version.columns[c].clone())
            .collect();
        let lower = |cols: &[String]| -> HashSet<String> {
            cols.iter().map(|c| c.to_ascii_lowercase()).collect()
        };
        let sent_lower = lower(&sent);
        let known = lower(&version.columns);
        let mut nulls: Vec<String> = chunk
            .target
            .followed
            .iter()
            .filter(|c| chunk.target.columns.contains_key(*c) && !known.contains(*c))
            .cloned()
            .collect();
        nulls.sort();
        let mut unsent: Vec<String> = chunk
            .target
            .columns
            .keys()
            .filter(|c| {
                !sent_lower.contains(*c)
                    && !nulls.contains(c)
                    && !chunk.target.generated.contains(*c)
            })
            .cloned()
            .collect();
        unsent.sort();
        Shape {
            sent,
            nulls,
            unsent,
        }
    }
}

/// Reads the unsent columns of `rows` from the target into `kept`, by row index. A row the
/// target does not have gets no entry (it returns with what it sent, as an upsert would
/// insert it).
async fn read_unsent(
    conn: &mut Conn,
    chunk: &Chunk<'_>,
    shape: &Shape,
    rows: &[usize],
    kept: &mut HashMap<usize, Vec<Value>>,
) -> Result<(), Stop> {
    let key_match = key_match(chunk);
    let columns = shape
        .unsent
        .iter()
        .map(|c| quote(c))
        .collect::<Vec<_>>()
        .join(", ");
    let table = quote(&chunk.target.name);
    for part in rows.chunks(READ_ROWS) {
        let sql = part
            .iter()
            .map(|i| format!("SELECT {i}, {columns} FROM {table} WHERE {key_match}"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let params: Vec<Value> = part
            .iter()
            .flat_map(|&i| cells(chunk.key(i)).map(param))
            .collect();
        let found: Vec<Row> = conn
            .exec(sql, params)
            .await
            .map_err(|e| refused(chunk, part, e.into()))?;
        for row in found {
            let mut values = row.unwrap();
            let i = match values.remove(0) {
                Value::Int(i) => i as usize,
                Value::UInt(i) => i as usize,
                Value::Bytes(b) => String::from_utf8_lossy(&b).parse().unwrap_or(usize::MAX),
                _ => usize::MAX,
            };
            if part.contains(&i) {
                kept.insert(i, values);
            }
        }
    }
    Ok(())
}

/// Inserts `rows` of one shape, all with kept values or all without. A statement the server
/// refuses is redone row by row, to name the row.
async fn insert(
    conn: &mut Conn,
    chunk: &Chunk<'_>,
    shape: &Shape,
    rows: &[Back<'_>],
) -> Result<(), Stop> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let mut names: Vec<String> = shape.sent.iter().map(|c| quote(c)).collect();
    let mut slots: Vec<&str> = vec!["?"; shape.sent.len()];
    names.extend(shape.nulls.iter().map(|c| quote(c)));
    slots.extend(std::iter::repeat_n("NULL", shape.nulls.len()));
    if first.2.is_some() {
        names.extend(shape.unsent.iter().map(|c| quote(c)));
        slots.extend(std::iter::repeat_n("?", shape.unsent.len()));
    }
    let tuple = format!("({})", slots.join(", "));
    let per_row = slots.iter().filter(|s| **s == "?").count();
    let statement = |n: usize| {
        format!(
            "INSERT INTO {} ({}) VALUES {}",
            quote(&chunk.target.name),
            names.join(", "),
            vec![tuple.as_str(); n].join(", ")
        )
    };
    let params_of = |part: &[Back<'_>]| {
        let mut params = Vec::with_capacity(part.len() * per_row);
        for (_, row, kept) in part {
            params.extend(cells(row).filter(|c| *c != Cell::Unchanged).map(param));
            params.extend(kept.iter().flat_map(|k| k.iter().cloned()));
        }
        params
    };
    let at: Vec<usize> = (0..rows.len()).collect();
    let size = |n: usize| {
        let (_, row, kept) = rows[n];
        row.len()
            + kept.map_or(0, |k| {
                k.iter()
                    .map(|v| match v {
                        Value::Bytes(b) => b.len(),
                        _ => 16,
                    })
                    .sum()
            })
    };
    for part in parts_by_size(&at, per_row, size) {
        let part = &rows[part[0]..=part[part.len() - 1]];
        let indices: Vec<usize> = part.iter().map(|r| r.0).collect();
        match conn.exec_drop(statement(part.len()), params_of(part)).await {
            Ok(()) => check_warnings(conn, chunk, &indices).await?,
            Err(e) => {
                let e = SqlError::from(e);
                if e.transient || e.code.is_none() || part.len() == 1 {
                    return Err(refused(chunk, &indices, e));
                }
                // InnoDB undid the statement alone: find its row.
                for one in part.chunks(1) {
                    conn.exec_drop(statement(1), params_of(one))
                        .await
                        .map_err(|e| refused(chunk, &[one[0].0], e.into()))?;
                    check_warnings(conn, chunk, &[one[0].0]).await?;
                }
            }
        }
    }
    Ok(())
}

/// A failed statement of the exchange: transient ones retry; a duplicate on a unique index
/// says why it can happen only here; others name the row as everywhere.
fn refused(chunk: &Chunk<'_>, rows: &[usize], e: SqlError) -> Stop {
    if e.transient || e.code.is_none() {
        return Stop::Sql(e);
    }
    let duplicate = e.code == Some(1062);
    let (mut error, row) = rejected(chunk, Some(rows), e);
    if let (true, ApplyError::Rejected(r)) = (duplicate, &mut error) {
        r.message.push_str(
            ": the target's unique index holds this value in a row the source does not change here, so the index is not the source's (it folds case or accents, or the source has no such index); give it the source's collation and columns, or drop it",
        );
    }
    Stop::Rejected(error, row)
}
