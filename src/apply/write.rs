//! Writing one chunk: a transaction that inserts the chunk's checkpoint row first, then its
//! deletes or upserts, then commits (why: [`super`], exactly-once effect).
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

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::checkpoint;
use super::chunk::{Chunk, Work};
use super::ddl::quote;
use super::merge::{bad_parts, cells, Cell, KeyedRow, UpsertGroup};
use super::profile::{Profile, Step};
use super::rejected::{self, Reject};
use super::sql::SqlError;
use super::statement::{classify, delete, dropped_columns, exec_rows, param, parts_by_size, Stop};
use super::values::{write_hex, write_load_data_field};
use super::{exchange, moves, sweep, unkeyed, ApplyError};
use crate::failpoint;

/// What a chunk's transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkOutcome {
    Applied,
    /// Its checkpoint row was already there: an earlier run committed it.
    AlreadyCommitted,
}

/// How one attempt at a chunk ended, short of a retryable failure.
pub enum Attempt {
    Done(ChunkOutcome),
    /// Roll back and redo with multi-row statements.
    Redo,
    /// The server refuses `LOAD DATA LOCAL`: roll back, say so once, use INSERT from now on.
    Refused(String),
    /// A value the target refuses (rolled back by the caller), and the row it is in when the
    /// server said.
    Rejected(ApplyError, Option<usize>),
}

/// Rows of a chunk set aside for `_db_sync_rejected`, by their index in the chunk.
pub type Skip = BTreeMap<usize, Reject>;

/// `target.on_reject: quarantine` for one chunk: the rows to set aside, and whether applied
/// keys may have entries to clear.
pub struct Quarantine<'a> {
    pub skip: &'a Skip,
    pub resolve: bool,
}

/// One attempt at `chunk` in one transaction on `conn`. `fast`: upserts through LOAD DATA.
/// `Err` is a failed statement for the caller's retry loop.
pub async fn chunk_transaction(
    conn: &mut Conn,
    pipeline: &str,
    chunk: &Chunk<'_>,
    fast: bool,
    q: &Quarantine<'_>,
    profile: &Profile,
) -> Result<Attempt, SqlError> {
    if let Work::Truncate = chunk.work {
        truncate(conn, chunk).await?;
    }
    let keep: Vec<usize> = (0..chunk.rows())
        .filter(|i| !q.skip.contains_key(i))
        .collect();
    let started = Instant::now();
    if !begin(conn, pipeline, chunk, keep.len()).await? {
        return Ok(Attempt::Done(ChunkOutcome::AlreadyCommitted));
    }
    let lap = profile.lap(Step::Checkpoint, started);
    set_aside(conn, pipeline, chunk, q, &keep).await?;
    let written = match write_rows(conn, pipeline, chunk, fast, &keep, profile).await {
        Ok(Some(ended)) => return Ok(ended),
        Ok(None) => Ok(()),
        Err(stop) => Err(stop),
    };
    profile.lap(Step::Write, lap);
    let written = match (written, chunk.stage) {
        (Ok(()), Some(stage)) => stage_keys(conn, chunk, stage).await,
        (written, _) => written,
    };
    match written {
        Ok(()) => {}
        Err(Stop::Sql(e)) => return Err(e),
        Err(Stop::Rejected(e, row)) => return Ok(Attempt::Rejected(e, row)),
    }
    failpoint::hit("apply.before_commit");
    let committing = Instant::now();
    conn.query_drop("COMMIT").await?;
    profile.lap(Step::Commit, committing);
    failpoint::hit("apply.after_chunk");
    Ok(Attempt::Done(ChunkOutcome::Applied))
}

/// Starts the chunk's transaction with its checkpoint row (`rows` applied). `false`: the row
/// is there already, an earlier run committed the chunk (rolled back).
async fn begin(
    conn: &mut Conn,
    pipeline: &str,
    chunk: &Chunk<'_>,
    rows: usize,
) -> Result<bool, SqlError> {
    conn.query_drop("START TRANSACTION").await?;
    let params = (
        pipeline,
        chunk.window.0,
        chunk.window.1,
        chunk.no,
        chunk.chunks,
        chunk.target.name.clone(),
        chunk.operation(),
        rows as u32,
        chunk.digest(),
    );
    match conn.exec_drop(checkpoint::insert_sql(), params).await {
        Ok(()) => Ok(true),
        Err(e) => {
            let e = SqlError::from(e);
            if e.code == Some(1062) {
                conn.query_drop("ROLLBACK").await?;
                return Ok(false);
            }
            Err(e)
        }
    }
}

/// `target.on_reject: quarantine`, in the chunk's transaction: records the rows set aside,
/// and clears the entries of the keys it applies.
async fn set_aside(
    conn: &mut Conn,
    pipeline: &str,
    chunk: &Chunk<'_>,
    q: &Quarantine<'_>,
    keep: &[usize],
) -> Result<(), SqlError> {
    if !q.skip.is_empty() {
        let rejects: Vec<&Reject> = q.skip.values().collect();
        rejected::record(
            conn,
            pipeline,
            &chunk.plan.table,
            &chunk.target.name,
            &rejects,
        )
        .await?;
    }
    if q.resolve {
        let applied: Vec<String> = keep.iter().map(|&i| chunk.describe(i)).collect();
        rejected::resolve(conn, pipeline, &chunk.plan.table, &applied).await?;
    }
    Ok(())
}

/// Writes the chunk's rows (`keep`) in its open transaction. `Some`: the attempt ends here,
/// rolled back (LOAD DATA to be redone with INSERT, or refused).
async fn write_rows(
    conn: &mut Conn,
    pipeline: &str,
    chunk: &Chunk<'_>,
    fast: bool,
    keep: &[usize],
    profile: &Profile,
) -> Result<Option<Attempt>, Stop> {
    match &chunk.work {
        // Done before the transaction (TRUNCATE commits by itself).
        Work::Truncate => {}
        Work::Sweep { stage } => sweep_rows(conn, pipeline, chunk, stage).await?,
        Work::Delete { .. } => delete(conn, chunk, keep).await?,
        Work::Exchange(groups) => exchange::exchange(conn, chunk, groups, keep).await?,
        Work::Move(rows) => moves::move_rows(conn, chunk, rows, keep).await?,
        Work::Changes(changes) => unkeyed::apply(conn, chunk, changes, keep).await?,
        Work::Upsert { group, rows, .. } if fast => {
            return Ok(load_data_upsert(conn, chunk, group, rows, keep, profile).await?);
        }
        Work::Upsert { group, rows, .. } => upsert(conn, chunk, group, rows, keep).await?,
    }
    Ok(None)
}

/// The sweep of a completed snapshot, its deleted row count kept in its checkpoint row.
async fn sweep_rows(
    conn: &mut Conn,
    pipeline: &str,
    chunk: &Chunk<'_>,
    stage: &str,
) -> Result<(), Stop> {
    let at: [usize; 0] = [];
    match sweep::sweep(conn, &chunk.target.name, stage, &chunk.plan.key).await {
        Ok(rows) => conn
            .exec_drop(
                checkpoint::set_row_count_sql(),
                (rows, pipeline, chunk.window.0, chunk.no),
            )
            .await
            .map_err(|e| classify(chunk, &at, e)),
        Err(e) => Err(classify(chunk, &at, e)),
    }
}

/// An upsert chunk through LOAD DATA. `Some`: rolled back, to be redone with INSERT (a
/// warning or a refused value, which INSERT names by its row) or refused by the server.
async fn load_data_upsert(
    conn: &mut Conn,
    chunk: &Chunk<'_>,
    group: &UpsertGroup,
    rows: &[KeyedRow],
    keep: &[usize],
    profile: &Profile,
) -> Result<Option<Attempt>, SqlError> {
    let ended = match load_data(conn, chunk, group, rows, keep, profile).await {
        Ok(0) => return Ok(None),
        Ok(warnings) => {
            tracing::debug!(
                warnings,
                chunk = chunk.no,
                "LOAD DATA warned; redoing the chunk with INSERT to find the value"
            );
            Attempt::Redo
        }
        Err(e) if matches!(e.code, Some(1148 | 3948 | 4166)) => Attempt::Refused(e.to_string()),
        Err(e) if e.transient || e.code.is_none() => return Err(e),
        Err(e) => {
            // A value the server refused (strict mode): redo with INSERT, whose error names
            // the row, hence the key.
            tracing::debug!(
                chunk = chunk.no,
                "LOAD DATA failed ({e}); redoing the chunk with INSERT to find the value"
            );
            Attempt::Redo
        }
    };
    conn.query_drop("ROLLBACK").await?;
    Ok(Some(ended))
}

/// Stages the keys an upsert or move chunk wrote, for its table's snapshot sweep. Rows set
/// aside for `_db_sync_rejected` are staged too: the source has them.
async fn stage_keys(conn: &mut Conn, chunk: &Chunk<'_>, stage: &str) -> Result<(), Stop> {
    if !matches!(
        chunk.work,
        Work::Upsert { .. } | Work::Move(_) | Work::Exchange(_)
    ) {
        return Ok(());
    }
    let keys = (0..chunk.rows()).map(|i| cells(chunk.key(i)).map(param).collect());
    sweep::stage(conn, stage, &chunk.plan.key, keys)
        .await
        .map_err(|e| Stop::Sql(e.into()))
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
    chunk.target.columns.keys().all(|c| sent.contains(c))
}

/// The values the target cannot hold, found before the chunk starts: each row's index, its
/// `_db_sync_rejected` record, and the error that stops apply with `on_reject: stop`.
pub fn bad_values(chunk: &Chunk<'_>) -> Vec<(usize, Reject, ApplyError)> {
    let plan = chunk.plan;
    let mut out = Vec::new();
    let mut note = |i: usize, column: &str, b: &str| {
        let (value, reason) = bad_parts(b);
        let error = ApplyError::Rejected(Box::new(super::Refusal {
            source_table: plan.table.clone(),
            table: chunk.target.name.clone(),
            column: Some(column.to_string()),
            key: chunk.describe(i),
            message: reason.to_string(),
            of_value: true,
        }));
        let mut reject = chunk.reject(i, Some(column.to_string()), reason.to_string());
        reject.value = Some(value.to_string());
        out.push((i, reject, error));
    };
    for i in 0..chunk.rows() {
        let bad_key = cells(chunk.key(i)).enumerate().find_map(|(k, c)| match c {
            Cell::Bad(b) => Some((k, b)),
            _ => None,
        });
        if let Some((k, b)) = bad_key {
            note(i, &plan.key[k], b);
            continue;
        }
        if let Some((row, names)) = chunk.row_cells(i) {
            if let Some((c, b)) = cells(row).enumerate().find_map(|(c, cell)| match cell {
                Cell::Bad(b) => Some((c, b)),
                _ => None,
            }) {
                note(i, &names[c], b);
            }
        }
    }
    out
}

/// Empties the table. `TRUNCATE TABLE` commits by itself, so it runs before the chunk's
/// transaction records the chunk: a crash in between truncates again on the re-run, which
/// changes nothing (no later chunk of the table runs before this one is recorded). Where
/// TRUNCATE is refused (a foreign key references the table, or the user lacks DROP), the
/// chunk's own transaction deletes every row instead.
async fn truncate(conn: &mut Conn, chunk: &Chunk<'_>) -> Result<(), SqlError> {
    let sql = format!("TRUNCATE TABLE {}", quote(&chunk.target.name));
    match conn.query_drop(&sql).await.map_err(SqlError::from) {
        Ok(()) => Ok(()),
        // 1701: referenced by a foreign key; 1142: no DROP privilege.
        Err(e) if matches!(e.code, Some(1701 | 1142)) => {
            tracing::debug!(table = %chunk.target.name, "TRUNCATE refused ({e}); deleting every row instead");
            conn.query_drop("START TRANSACTION").await?;
            conn.query_drop(format!("DELETE FROM {}", quote(&chunk.target.name)))
                .await?;
            conn.query_drop("COMMIT").await?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

async fn upsert(
    conn: &mut Conn,
    chunk: &Chunk<'_>,
    group: &UpsertGroup,
    rows: &[KeyedRow],
    keep: &[usize],
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
    updates.extend(
        dropped_columns(chunk, version)
            .into_iter()
            .map(|c| format!("{} = NULL", quote(c))),
    );
    if updates.is_empty() {
        // Only key columns: nothing to update on a duplicate.
        let q = quote(&chunk.plan.key[0]);
        updates.push(format!("{q} = {q}"));
    }
    let tuple = format!("({})", vec!["?"; names.len()].join(", "));
    for part in statement_parts(rows, keep, names.len()) {
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {} ON DUPLICATE KEY UPDATE {}",
            quote(&chunk.target.name),
            names.join(", "),
            vec![tuple.as_str(); part.len()].join(", "),
            updates.join(", ")
        );
        let mut params = Vec::with_capacity(part.len() * names.len());
        for &i in part {
            params.extend(
                cells(&rows[i].1)
                    .filter(|c| *c != Cell::Unchanged)
                    .map(param),
            );
        }
        exec_rows(conn, chunk, part, &sql, params).await?;
    }
    Ok(())
}

/// Rows per statement: within MySQL's placeholder limit and well inside the default
/// `max_allowed_packet` (16 MB), whatever the row size. Parts of `keep` (row indices).
fn statement_parts<'k>(rows: &[KeyedRow], keep: &'k [usize], columns: usize) -> Vec<&'k [usize]> {
    parts_by_size(keep, columns, |i| rows[i].1.len())
}

/// Streams the chunk with `LOAD DATA LOCAL INFILE … REPLACE`; returns the warning count.
async fn load_data(
    conn: &mut Conn,
    chunk: &Chunk<'_>,
    group: &UpsertGroup,
    rows: &[KeyedRow],
    keep: &[usize],
    profile: &Profile,
) -> Result<u16, SqlError> {
    let started = Instant::now();
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
    let mut data = Vec::with_capacity(keep.iter().map(|&i| rows[i].1.len() + 16).sum());
    for &i in keep {
        let row = &rows[i].1;
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
    // Part of the chunk's writing time; Profile::seconds takes it out of there.
    profile.add(Step::Render, started.elapsed());
    conn.set_infile_handler(async move {
        let stream: mysql_async::InfileData =
            Box::pin(futures::stream::once(async move { Ok(bytes) }));
        Ok(stream)
    });
    conn.query_drop(&sql).await?;
    Ok(conn.get_warnings())
}
