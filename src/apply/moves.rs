//! Key changes in the target: a row moves to its new key with an UPDATE, so the columns the
//! change did not send (unchanged TOAST values) stay with it (when a move is planned:
//! [`super::merge`]).

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use super::chunk::Chunk;
use super::ddl::quote;
use super::merge::{cells, describe_key, Cell, MoveRow, Version};
use super::statement::{check_warnings, classify, key_match, param, Stop};

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
    let key_match = key_match(chunk);
    let table = Table {
        chunk,
        name: quote(&chunk.target.name),
        key_match,
    };
    for &i in keep {
        let m = &rows[i];
        let at = [i];
        let sent = Sent::of(&chunk.plan.versions[m.version], &m.cells);
        let to: Vec<Value> = cells(&m.to).map(param).collect();
        let from: Vec<Value> = cells(&m.from).map(param).collect();
        match table.carrier(conn, &at, from, to).await? {
            Some(key) => table.update(conn, &at, sent, key).await?,
            None => {
                tracing::warn!(
                    table = %chunk.target.name,
                    from = %describe_key(&chunk.plan.key, &m.from),
                    to = %describe_key(&chunk.plan.key, &m.to),
                    "a key change found no row to move in the target; inserting the new row with the columns the source sent (the others are NULL)"
                );
                table.insert(conn, &at, sent).await?;
            }
        }
        check_warnings(conn, chunk, &at).await?;
    }
    Ok(())
}

/// The cells a key change sent: `col = ?` assignments, their values, and the column names.
struct Sent {
    sets: Vec<String>,
    params: Vec<Value>,
    names: Vec<String>,
}

impl Sent {
    fn of(version: &Version, row: &[u8]) -> Sent {
        let mut sent = Sent {
            sets: Vec::new(),
            params: Vec::new(),
            names: Vec::new(),
        };
        for (c, cell) in cells(row).enumerate() {
            if cell == Cell::Unchanged {
                continue;
            }
            sent.sets
                .push(format!("{} = ?", quote(&version.columns[c])));
            sent.names.push(quote(&version.columns[c]));
            sent.params.push(param(cell));
        }
        sent
    }
}

/// The target table of a move chunk, and its statements (`at`: the row's index in the chunk,
/// for the error that names it).
struct Table<'c> {
    chunk: &'c Chunk<'c>,
    name: String,
    /// `k1 <=> ? AND k2 <=> ?`: the key columns, NULL-safe.
    key_match: String,
}

impl Table<'_> {
    /// Which row carries the unchanged columns: the old key's (`from`) if the target still
    /// has it, a stale row at the new key deleted first; else the new key's (`to`: a rerun,
    /// or a backfill that already moved it). `None`: neither is there. Never deletes the only
    /// copy of a value the source did not send again.
    async fn carrier(
        &self,
        conn: &mut Conn,
        at: &[usize],
        from: Vec<Value>,
        to: Vec<Value>,
    ) -> Result<Option<Vec<Value>>, Stop> {
        if self.exists(conn, at, from.clone()).await? {
            let sql = format!("DELETE FROM {} WHERE {}", self.name, self.key_match);
            conn.exec_drop(sql, to)
                .await
                .map_err(|e| classify(self.chunk, at, e))?;
            return Ok(Some(from));
        }
        Ok(self.exists(conn, at, to.clone()).await?.then_some(to))
    }

    async fn exists(&self, conn: &mut Conn, at: &[usize], key: Vec<Value>) -> Result<bool, Stop> {
        let sql = format!(
            "SELECT 1 FROM {} WHERE {} LIMIT 1",
            self.name, self.key_match
        );
        let found: Option<u8> = conn
            .exec_first(sql, key)
            .await
            .map_err(|e| classify(self.chunk, at, e))?;
        Ok(found.is_some())
    }

    /// The row at `key` takes the new key and the sent cells.
    async fn update(
        &self,
        conn: &mut Conn,
        at: &[usize],
        sent: Sent,
        key: Vec<Value>,
    ) -> Result<(), Stop> {
        let sql = format!(
            "UPDATE {} SET {} WHERE {}",
            self.name,
            sent.sets.join(", "),
            self.key_match
        );
        let mut params = sent.params;
        params.extend(key);
        conn.exec_drop(sql, params)
            .await
            .map_err(|e| classify(self.chunk, at, e))
    }

    async fn insert(&self, conn: &mut Conn, at: &[usize], sent: Sent) -> Result<(), Stop> {
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            self.name,
            sent.names.join(", "),
            vec!["?"; sent.names.len()].join(", ")
        );
        conn.exec_drop(sql, sent.params)
            .await
            .map_err(|e| classify(self.chunk, at, e))
    }
}
