//! Key changes in the target: a row moves to its new key with an UPDATE, so the columns the
//! change did not send (unchanged TOAST values) stay with it (DESIGN §7).

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use super::ddl::quote;
use super::merge::{cells, describe_key, Cell, MoveRow};
use super::write::{check_warnings, classify, param, Chunk, Stop};

/// Moves each row to its new key, keeping the columns the change did not send (unchanged
/// TOAST). If the old row is there, a stale row at the new key goes and the old row takes the
/// new key and the sent cells; if only the new key's row is there (a rerun, a backfill), it
/// takes the sent cells. A row at neither key (removed by hand) is inserted with what the
/// change sent, and said. Running a move twice gives the same row.
pub(super) async fn move_rows(
    conn: &mut Conn,
    chunk: &Chunk<'_>,
    rows: &[MoveRow],
    keep: &[usize],
) -> Result<(), Stop> {
    let plan = chunk.plan;
    let table = quote(&chunk.target.name);
    let key_match = plan
        .key
        .iter()
        .map(|k| format!("{} <=> ?", quote(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    for &i in keep {
        let m = &rows[i];
        let version = &plan.versions[m.version];
        let at = [i];
        let to: Vec<Value> = cells(&m.to).map(param).collect();
        let from: Vec<Value> = cells(&m.from).map(param).collect();
        let mut sets = Vec::new();
        let mut params = Vec::new();
        let mut names = Vec::new();
        for (c, cell) in cells(&m.cells).enumerate() {
            if cell == Cell::Unchanged {
                continue;
            }
            sets.push(format!("{} = ?", quote(&version.columns[c])));
            names.push(quote(&version.columns[c]));
            params.push(param(cell));
        }
        // Which row carries the unchanged columns: the old key's if the target still has it,
        // else the new key's (a rerun, or a backfill that already moved it). Never delete
        // the only copy of a value the source did not send again.
        let from_exists: Option<u8> = conn
            .exec_first(
                format!("SELECT 1 FROM {table} WHERE {key_match} LIMIT 1"),
                from.clone(),
            )
            .await
            .map_err(|e| classify(chunk, &at, e))?;
        let carrier = if from_exists.is_some() {
            conn.exec_drop(format!("DELETE FROM {table} WHERE {key_match}"), to)
                .await
                .map_err(|e| classify(chunk, &at, e))?;
            Some(from)
        } else {
            let to_exists: Option<u8> = conn
                .exec_first(
                    format!("SELECT 1 FROM {table} WHERE {key_match} LIMIT 1"),
                    to.clone(),
                )
                .await
                .map_err(|e| classify(chunk, &at, e))?;
            to_exists.map(|_| to)
        };
        match carrier {
            Some(key) => {
                let mut update = params;
                update.extend(key);
                conn.exec_drop(
                    format!("UPDATE {table} SET {} WHERE {key_match}", sets.join(", ")),
                    update,
                )
                .await
                .map_err(|e| classify(chunk, &at, e))?;
            }
            None => {
                tracing::warn!(
                    table = %chunk.target.name,
                    from = %describe_key(&plan.key, &m.from),
                    to = %describe_key(&plan.key, &m.to),
                    "a key change found no row to move in the target; inserting the new row with the columns the source sent (the others are NULL)"
                );
                conn.exec_drop(
                    format!(
                        "INSERT INTO {table} ({}) VALUES ({})",
                        names.join(", "),
                        vec!["?"; names.len()].join(", ")
                    ),
                    params,
                )
                .await
                .map_err(|e| classify(chunk, &at, e))?;
            }
        }
        check_warnings(conn, chunk, &at).await?;
    }
    Ok(())
}
