//! The checkpoint table `_db_sync_checkpoint`: one row per committed chunk, inserted in the
//! chunk's own transaction, which is what makes apply's effect exactly once ([`super`]). Its
//! primary key (pipeline, window, chunk) is the guard that makes a re-run skip what
//! committed, even a chunk whose COMMIT reply was lost with the connection. Each row also
//! carries a digest of the chunk's plan (window, table, operation, row count, first and last
//! key): a re-run that plans the chunk differently (state restored from an older copy, config
//! changed between a crash and the re-run) stops with one line instead of skipping rows it
//! never applied. Its columns: [checkpoint tables](super#checkpoint-tables).

use std::collections::HashMap;

use mysql_async::prelude::Queryable;

use super::ddl::quote;
use super::sql::{sql_string, with_retry, Session, SqlError};

pub const TABLE: &str = "_db_sync_checkpoint";

/// Creates the checkpoint table if it is missing. A table from before pipeline keys carried
/// a journal identity and long table names has a `pipeline` column of 64 characters: it is
/// widened to 255; one from before digests gets its `digest` column.
pub async fn create(session: &mut Session) -> Result<(), SqlError> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {} (\
         `pipeline` VARCHAR(255) NOT NULL, \
         `window_from` BIGINT UNSIGNED NOT NULL, \
         `window_to` BIGINT UNSIGNED NOT NULL, \
         `chunk` INT UNSIGNED NOT NULL, \
         `chunks` INT UNSIGNED NOT NULL, \
         `table_name` VARCHAR(255) NOT NULL, \
         `operation` VARCHAR(8) NOT NULL, \
         `row_count` INT UNSIGNED NOT NULL, \
         `committed_at` DATETIME(6) NOT NULL, \
         `digest` CHAR(16) NULL, \
         PRIMARY KEY (`pipeline`, `window_from`, `chunk`)\
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        quote(TABLE)
    );
    session.exec(&sql, "creating the checkpoint table").await?;
    // Tables from earlier versions: a `pipeline` of 64 characters, no `digest`.
    let columns: Vec<(String, Option<u64>)> =
        with_retry!(session, "reading the checkpoint table", |conn| conn
            .exec::<(String, Option<u64>), _, _>(
                "SELECT COLUMN_NAME, CHARACTER_MAXIMUM_LENGTH FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
                   AND COLUMN_NAME IN ('pipeline', 'digest')",
                (TABLE,),
            )
            .await
            .map_err(SqlError::from))?;
    let width = |name: &str| columns.iter().find(|(c, _)| c == name).map(|(_, w)| *w);
    if width("pipeline").flatten().is_some_and(|w| w < 255) {
        let sql = format!(
            "ALTER TABLE {} MODIFY `pipeline` VARCHAR(255) NOT NULL",
            quote(TABLE)
        );
        session.exec(&sql, "widening the checkpoint table").await?;
    }
    if width("digest").is_none() {
        let sql = format!(
            "ALTER TABLE {} ADD COLUMN `digest` CHAR(16) NULL",
            quote(TABLE)
        );
        match session
            .exec(&sql, "adding digests to the checkpoint table")
            .await
        {
            // Another db-sync added it meanwhile.
            Err(e) if e.code == Some(1060) => {}
            done => done?,
        }
    }
    Ok(())
}

/// The chunks of `pipeline`'s window starting at `from` that already committed, each with
/// the digest of the plan it was written for (`None` for rows from before digests).
pub async fn committed(
    session: &mut Session,
    pipeline: &str,
    from: u64,
) -> Result<HashMap<u32, Option<String>>, SqlError> {
    let sql = format!(
        "SELECT `chunk`, `digest` FROM {} WHERE `pipeline` = ? AND `window_from` = ?",
        quote(TABLE)
    );
    let chunks: Vec<(u32, Option<String>)> =
        with_retry!(session, "reading the checkpoint table", |conn| conn
            .exec::<(u32, Option<String>), _, _>(&sql, (pipeline, from))
            .await
            .map_err(SqlError::from))?;
    Ok(chunks.into_iter().collect())
}

/// Drops `pipeline`'s checkpoint rows of windows before `before` (all applied: the progress
/// file says so).
pub async fn prune(session: &mut Session, pipeline: &str, before: u64) -> Result<(), SqlError> {
    let sql = format!(
        "DELETE FROM {} WHERE `pipeline` = {} AND `window_from` < {before}",
        quote(TABLE),
        sql_string(pipeline)
    );
    session.exec(&sql, "pruning the checkpoint table").await
}

/// The row count recorded for chunk `chunk` of `pipeline`'s window starting at `from`.
pub async fn row_count(
    session: &mut Session,
    pipeline: &str,
    from: u64,
    chunk: u32,
) -> Result<Option<u64>, SqlError> {
    let sql = format!(
        "SELECT `row_count` FROM {} WHERE `pipeline` = ? AND `window_from` = ? AND `chunk` = ?",
        quote(TABLE)
    );
    with_retry!(session, "reading the checkpoint table", |conn| conn
        .exec_first::<u64, _, _>(&sql, (pipeline, from, chunk))
        .await
        .map_err(SqlError::from))
}

/// The statement that sets a chunk's row count once its work is done (a sweep's deletions).
pub fn set_row_count_sql() -> String {
    format!(
        "UPDATE {} SET `row_count` = ? WHERE `pipeline` = ? AND `window_from` = ? AND `chunk` = ?",
        quote(TABLE)
    )
}

/// The statement that records a chunk, first thing in its transaction.
pub fn insert_sql() -> String {
    format!(
        "INSERT INTO {} (`pipeline`, `window_from`, `window_to`, `chunk`, `chunks`, `table_name`, `operation`, `row_count`, `digest`, `committed_at`) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6))",
        quote(TABLE)
    )
}
