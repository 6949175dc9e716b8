//! `_db_sync_rejected` (`target.on_reject: quarantine`): the rows the target cannot hold,
//! one per (pipeline, source table, key), so that apply goes on without them. Its columns:
//! [checkpoint tables](super#checkpoint-tables).
//!
//! A rejected row is recorded in the transaction of the chunk it came in, beside that chunk's
//! checkpoint row, so it is recorded exactly once. A later change of the same key that the
//! target takes replaces the rejected one: its chunk deletes the key's entry.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use super::ddl::quote;
use super::sql::{Session, SqlError};

pub const TABLE: &str = "_db_sync_rejected";

/// A row the target refused.
#[derive(Debug, Clone)]
pub struct Reject {
    /// The key as people read it (`id=7`).
    pub key: String,
    pub column: Option<String>,
    /// The value as text, when known.
    pub value: Option<String>,
    pub error: String,
    /// The journal sequence of the change.
    pub seq: i64,
}

/// Creates the table if it is missing.
pub async fn create(session: &mut Session) -> Result<(), SqlError> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {} (\
         `pipeline` VARCHAR(255) NOT NULL, \
         `table_name` VARCHAR(255) NOT NULL, \
         `key_hash` BINARY(32) NOT NULL, \
         `key_text` TEXT NOT NULL, \
         `target_table` VARCHAR(255) NOT NULL, \
         `column_name` VARCHAR(255) NULL, \
         `value_text` LONGTEXT NULL, \
         `error` TEXT NOT NULL, \
         `seq` BIGINT NOT NULL, \
         `rejected_at` DATETIME(6) NOT NULL, \
         PRIMARY KEY (`pipeline`, `table_name`, `key_hash`)\
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        quote(TABLE)
    );
    session.exec(&sql, "creating the rejected-rows table").await
}

/// The source tables that have rejected rows of `pipeline`.
pub async fn tables_with_rejects(
    session: &mut Session,
    pipeline: &str,
) -> Result<Vec<String>, SqlError> {
    let sql = format!(
        "SELECT DISTINCT `table_name` FROM {} WHERE `pipeline` = ?",
        quote(TABLE)
    );
    let pipeline = owner(pipeline).to_string();
    super::sql::with_retry!(session, "reading the rejected-rows table", |conn| conn
        .exec::<String, _, _>(&sql, (pipeline.as_str(),))
        .await
        .map_err(SqlError::from))
}

/// Records `rejects` of `source_table` (target table `target`), replacing earlier entries of
/// the same keys.
pub async fn record(
    conn: &mut Conn,
    pipeline: &str,
    source_table: &str,
    target: &str,
    rejects: &[&Reject],
) -> Result<(), SqlError> {
    for r in rejects {
        let sql = format!(
            "INSERT INTO {} (`pipeline`, `table_name`, `key_hash`, `key_text`, `target_table`, `column_name`, `value_text`, `error`, `seq`, `rejected_at`) \
             VALUES (?, ?, UNHEX(SHA2(?, 256)), ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6)) \
             ON DUPLICATE KEY UPDATE `key_text` = VALUES(`key_text`), `target_table` = VALUES(`target_table`), \
             `column_name` = VALUES(`column_name`), `value_text` = VALUES(`value_text`), `error` = VALUES(`error`), \
             `seq` = VALUES(`seq`), `rejected_at` = VALUES(`rejected_at`)",
            quote(TABLE)
        );
        let params: Vec<Value> = vec![
            owner(pipeline).into(),
            source_table.into(),
            r.key.as_str().into(),
            r.key.as_str().into(),
            target.into(),
            r.column.clone().into(),
            r.value.clone().into(),
            r.error.as_str().into(),
            r.seq.into(),
        ];
        conn.exec_drop(sql, params).await?;
    }
    Ok(())
}

/// Deletes the entries of `keys` (as people read them): their rows were applied.
pub async fn resolve(
    conn: &mut Conn,
    pipeline: &str,
    source_table: &str,
    keys: &[String],
) -> Result<(), SqlError> {
    for part in keys.chunks(1000) {
        let sql = format!(
            "DELETE FROM {} WHERE `pipeline` = ? AND `table_name` = ? AND `key_hash` IN ({})",
            quote(TABLE),
            vec!["UNHEX(SHA2(?, 256))"; part.len()].join(", ")
        );
        let mut params: Vec<Value> = vec![owner(pipeline).into(), source_table.into()];
        params.extend(part.iter().map(|k| Value::from(k.as_str())));
        conn.exec_drop(sql, params).await?;
    }
    Ok(())
}

/// How many rows of `pipeline` the target holds in quarantine (`status`), `None` without
/// the table.
pub async fn count(conn: &mut Conn, pipeline: &str) -> Result<Option<u64>, SqlError> {
    let exists: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            (TABLE,),
        )
        .await?;
    if exists.unwrap_or(0) == 0 {
        return Ok(None);
    }
    let sql = format!("SELECT COUNT(*) FROM {} WHERE `pipeline` = ?", quote(TABLE));
    Ok(conn
        .exec_first::<u64, _, _>(sql, (owner(pipeline),))
        .await?)
}

/// The pipeline name of a checkpoint key (`name`, `name:<journal>`, `name:backfill:<table>`):
/// rejected rows belong to the pipeline, whichever journal or backfill set them aside, so
/// that a later change of the key replaces them and `status` counts them all.
fn owner(key: &str) -> &str {
    key.split(':').next().unwrap_or(key)
}
