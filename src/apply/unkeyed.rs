//! Writing the changes of a table without a primary key
//! ([`Work::Changes`](super::chunk::Work::Changes)): each change as it came, in journal order,
//! in the chunk's transaction.
//!
//! Such a table may hold equal rows, and the target must hold each as many times as the
//! source does. So nothing is merged (see [`super::merge`]):
//!
//! - inserts and snapshot reads, in a run, go as multi-row `INSERT`s;
//! - a delete removes one target row equal to its row, every column compared NULL-safe
//!   (`DELETE … WHERE c1 <=> ? AND … LIMIT 1`);
//! - an update changes one target row equal to its old row (`UPDATE … SET <sent columns>
//!   WHERE … LIMIT 1`); one that sends the values the row has changes nothing and is not sent.
//!
//! Equal rows are the same to every reader, so which of them a change takes does not matter.
//! A change that finds no equal row means the target no longer holds what the source held
//! (someone changed it): the table is held out of apply with the row (the other tables go on;
//! `backfill --truncate` rebuilds it and ends the hold), or the change is set aside with
//! `on_reject: quarantine`, instead of going on with a target that differs.
//!
//! Values are bound as text, and MySQL 8 compares a string with an integer or a `DECIMAL` as
//! a `DOUBLE`, which would let a row match a neighbour that differs past the 16th digit
//! (MariaDB compares as the column's type): those columns compare as their own type
//! (`CAST(? AS SIGNED)`, `CAST(? AS DECIMAL(p,s))`), and MySQL's `JSON` as JSON. A `FLOAT`
//! needs nothing: its value is sent as the exact decimal of the `DOUBLE` it widens to, and
//! the server compares the two as `DOUBLE`s.
//!
//! The target table has no index to find a row by: each delete and update reads the table
//! until it finds one. Tables without a key are for small tables (logs, link tables); give a
//! large one a key.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use super::chunk::Chunk;
use super::ddl::quote;
use super::merge::{cells, Cell, RowChange, Version};
use super::statement::{
    check_warnings, classify, dropped_columns, exec_rows, param, parts_by_size, Stop,
};

/// Applies `changes` (the chunk's, `keep` the indices not set aside) in order.
pub(super) async fn apply(
    conn: &mut Conn,
    chunk: &Chunk<'_>,
    changes: &[RowChange],
    keep: &[usize],
) -> Result<(), Stop> {
    let mut at = 0;
    while at < keep.len() {
        let change = &changes[keep[at]];
        match (&change.old, &change.new) {
            (None, Some(_)) => {
                // The run of inserts of one schema version from here.
                let run = keep[at..]
                    .iter()
                    .take_while(|&&i| {
                        changes[i].old.is_none() && changes[i].version == change.version
                    })
                    .count();
                insert(conn, chunk, changes, &keep[at..at + run]).await?;
                at += run;
                continue;
            }
            (Some(old), new) => {
                find_one(conn, chunk, change, old, new.as_deref(), keep[at]).await?;
            }
            (None, None) => {}
        }
        at += 1;
    }
    Ok(())
}

/// Inserts the rows of `run` (inserts of one version) with multi-row `INSERT`s.
async fn insert(
    conn: &mut Conn,
    chunk: &Chunk<'_>,
    changes: &[RowChange],
    run: &[usize],
) -> Result<(), Stop> {
    let version = &chunk.plan.versions[changes[run[0]].version];
    let names: Vec<String> = version.columns.iter().map(|c| quote(c)).collect();
    let tuple = format!("({})", vec!["?"; names.len()].join(", "));
    for part in parts_by_size(run, names.len(), |i| changes[i].row().len()) {
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            quote(&chunk.target.name),
            names.join(", "),
            vec![tuple.as_str(); part.len()].join(", ")
        );
        let params: Vec<Value> = part
            .iter()
            .flat_map(|&i| cells(changes[i].row()).map(param))
            .collect();
        exec_rows(conn, chunk, part, &sql, params).await?;
    }
    Ok(())
}

/// Deletes (`new` is `None`) or updates one target row equal to `old`; stops when none is.
async fn find_one(
    conn: &mut Conn,
    chunk: &Chunk<'_>,
    change: &RowChange,
    old: &[u8],
    new: Option<&[u8]>,
    i: usize,
) -> Result<(), Stop> {
    let version = &chunk.plan.versions[change.version];
    let mut params: Vec<Value> = Vec::new();
    let table = quote(&chunk.target.name);
    let sql = match new {
        None => format!(
            "DELETE FROM {table} WHERE {} LIMIT 1",
            matching(chunk, version)
        ),
        Some(new) => {
            let sets = assignments(chunk, version, old, new, &mut params);
            if sets.is_empty() {
                // The row keeps its values.
                return Ok(());
            }
            format!(
                "UPDATE {table} SET {} WHERE {} LIMIT 1",
                sets.join(", "),
                matching(chunk, version)
            )
        }
    };
    params.extend(cells(old).map(param));
    let one = [i];
    conn.exec_drop(&sql, params)
        .await
        .map_err(|e| classify(chunk, &one, e))?;
    if conn.affected_rows() == 0 {
        let e = mysql_async::Error::Server(mysql_async::ServerError {
            code: 1032,
            message: format!(
                "no row of target table {table} equals the row this {} finds at the source: the target differs from the source (its rows were changed there)",
                if new.is_some() { "update" } else { "delete" },
            ),
            state: "HY000".into(),
        });
        return Err(classify(chunk, &one, e));
    }
    check_warnings(conn, chunk, &one).await
}

/// `c1 <=> ? AND c2 <=> ? …` over every column of `version`, each compared as its target
/// type (see the module doc).
fn matching(chunk: &Chunk<'_>, version: &Version) -> String {
    version
        .columns
        .iter()
        .map(|c| {
            let ty = chunk.target.columns.get(&c.to_ascii_lowercase());
            format!("{} <=> {}", quote(c), typed_param(ty.map(String::as_str)))
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// A bound text parameter compared as a column of MySQL type `ty` (`COLUMN_TYPE`).
fn typed_param(ty: Option<&str>) -> String {
    let Some(ty) = ty.map(str::to_ascii_lowercase) else {
        return "?".into();
    };
    let base = ty.split(['(', ' ']).next().unwrap_or("");
    match base {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year"
            if ty.contains("unsigned") =>
        {
            "CAST(? AS UNSIGNED)".into()
        }
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" => {
            "CAST(? AS SIGNED)".into()
        }
        "decimal" | "numeric" => {
            let digits = ty
                .split_once('(')
                .and_then(|(_, rest)| rest.split_once(')'))
                .map(|(d, _)| d.replace(' ', ""))
                .unwrap_or_else(|| "10,0".into());
            format!("CAST(? AS DECIMAL({digits}))")
        }
        "json" => "CAST(? AS JSON)".into(),
        _ => "?".into(),
    }
}

/// The `SET` list of an update (its values pushed to `params`): the columns it sent whose
/// value is not the old row's, and the columns the source dropped (NULL, as in every row
/// written without them). Empty when the row keeps its values.
fn assignments(
    chunk: &Chunk<'_>,
    version: &Version,
    old: &[u8],
    new: &[u8],
    params: &mut Vec<Value>,
) -> Vec<String> {
    let mut sets = Vec::new();
    for ((name, cell), was) in version.columns.iter().zip(cells(new)).zip(cells(old)) {
        if cell == Cell::Unchanged || cell == was {
            continue;
        }
        sets.push(format!("{} = ?", quote(name)));
        params.push(param(cell));
    }
    if !sets.is_empty() {
        sets.extend(
            dropped_columns(chunk, version)
                .into_iter()
                .map(|c| format!("{} = NULL", quote(c))),
        );
    }
    sets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_compare_as_the_column_type() {
        assert_eq!(typed_param(Some("bigint(20)")), "CAST(? AS SIGNED)");
        assert_eq!(
            typed_param(Some("bigint(20) unsigned")),
            "CAST(? AS UNSIGNED)"
        );
        assert_eq!(
            typed_param(Some("decimal(38,10)")),
            "CAST(? AS DECIMAL(38,10))"
        );
        assert_eq!(typed_param(Some("float")), "?");
        assert_eq!(typed_param(Some("double")), "?");
        assert_eq!(typed_param(Some("varchar(20)")), "?");
        assert_eq!(typed_param(Some("datetime(6)")), "?");
        assert_eq!(typed_param(None), "?");
    }
}
