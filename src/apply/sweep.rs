//! The snapshot sweep: a full snapshot applied over a target table that already has rows
//! must leave the table equal to the snapshot.
//!
//! A snapshot brings every row the source has but says nothing of the rows it no longer has:
//! a new journal (a pipeline moved to a new host, a wiped state directory) finds the target
//! as the old journal left it, and a row deleted at the source while nothing captured would
//! stay for ever. So when a table's full snapshot starts over a non-empty target table, apply
//! stages every key it writes to that table in `_db_sync_seen_…`, in the transaction of the
//! chunk that writes it, until the snapshot's last row; then one chunk deletes the target
//! rows whose key was not staged (the snapshot did not bring them, and no later change
//! touched them) and records how many in its checkpoint row. The stage table goes after.
//!
//! The decision is made, and recorded in the apply progress, before the snapshot's first
//! chunk: a re-run must not take the snapshot's own rows for old ones.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use super::ddl::quote;
use super::sql::{with_retry, Session, SqlError};
use super::statement::MAX_PARAMS;

/// The stage table of target table `target` under checkpoint key `pipeline`: unique per
/// journal and table, and short enough for MySQL's 64-character names.
pub fn stage_name(pipeline: &str, target: &str) -> String {
    format!(
        "_db_sync_seen_{:016x}",
        fnv64(&format!("{pipeline}\0{target}"))
    )
}

fn fnv64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Starts a sweep of target table `target` (keyed by `key`) when it has rows: creates the
/// stage table with the key columns' types and collations and returns its name. `None`: the
/// table is missing or empty, nothing to sweep.
pub async fn start(
    session: &mut Session,
    pipeline: &str,
    target: &str,
    key: &[String],
) -> Result<Option<String>, SqlError> {
    let probe = format!("SELECT 1 FROM {} LIMIT 1", quote(target));
    let has_rows: Result<Option<u8>, SqlError> =
        with_retry!(session, "reading the target table", |conn| conn
            .query_first::<u8, _>(&probe)
            .await
            .map_err(SqlError::from));
    match has_rows {
        Ok(Some(_)) => {}
        Ok(None) => return Ok(None),
        // No such table: apply creates it.
        Err(e) if e.code == Some(1146) => return Ok(None),
        Err(e) => return Err(e),
    }
    let sql = "SELECT COLUMN_NAME, COLUMN_TYPE, COLLATION_NAME FROM information_schema.COLUMNS \
               WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?";
    let target_name = target.to_string();
    let columns: Vec<(String, String, Option<String>)> =
        with_retry!(session, "reading the target table's columns", |conn| conn
            .exec::<(String, String, Option<String>), _, _>(sql, (target_name.clone(),))
            .await
            .map_err(SqlError::from))?;
    let mut defs = Vec::with_capacity(key.len());
    for k in key {
        let Some((name, ty, collation)) = columns.iter().find(|c| c.0.eq_ignore_ascii_case(k))
        else {
            // The target has no such key column: its upserts will say so.
            return Ok(None);
        };
        let collate = collation
            .as_ref()
            .map(|c| format!(" COLLATE {c}"))
            .unwrap_or_default();
        defs.push(format!("{} {ty}{collate} NOT NULL", quote(name)));
    }
    let stage = stage_name(pipeline, target);
    let keys: Vec<String> = key.iter().map(|k| quote(k)).collect();
    session
        .exec(
            &format!("DROP TABLE IF EXISTS {}", quote(&stage)),
            "dropping a stale stage table",
        )
        .await?;
    session
        .exec(
            &format!(
                "CREATE TABLE {} ({}, PRIMARY KEY ({})) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
                quote(&stage),
                defs.join(", "),
                keys.join(", ")
            ),
            "creating the snapshot's stage table",
        )
        .await?;
    Ok(Some(stage))
}

/// Stages `keys` (each the key columns' values, in order) in the chunk's transaction.
pub async fn stage(
    conn: &mut Conn,
    stage: &str,
    key: &[String],
    keys: impl Iterator<Item = Vec<Value>>,
) -> Result<(), mysql_async::Error> {
    let per_stmt = (MAX_PARAMS / key.len().max(1)).clamp(1, 1000);
    let columns: Vec<String> = key.iter().map(|k| quote(k)).collect();
    let tuple = format!("({})", vec!["?"; key.len()].join(", "));
    let mut params: Vec<Value> = Vec::new();
    let mut rows = 0;
    let flush = |rows: usize| {
        format!(
            "INSERT IGNORE INTO {} ({}) VALUES {}",
            quote(stage),
            columns.join(", "),
            vec![tuple.as_str(); rows].join(", ")
        )
    };
    for k in keys {
        params.extend(k);
        rows += 1;
        if rows == per_stmt {
            conn.exec_drop(flush(rows), std::mem::take(&mut params))
                .await?;
            rows = 0;
        }
    }
    if rows > 0 {
        conn.exec_drop(flush(rows), params).await?;
    }
    Ok(())
}

/// Deletes the rows of `target` whose key is not in `stage`, in the chunk's transaction: how
/// many.
pub async fn sweep(
    conn: &mut Conn,
    target: &str,
    stage: &str,
    key: &[String],
) -> Result<u64, mysql_async::Error> {
    let on: Vec<String> = key
        .iter()
        .map(|k| format!("s.{q} = t.{q}", q = quote(k)))
        .collect();
    conn.query_drop(format!(
        "DELETE t FROM {} AS t LEFT JOIN {} AS s ON {} WHERE s.{} IS NULL",
        quote(target),
        quote(stage),
        on.join(" AND "),
        quote(&key[0])
    ))
    .await?;
    Ok(conn.affected_rows())
}

/// Drops the stage table once its sweep committed.
pub async fn finish(session: &mut Session, stage: &str) -> Result<(), SqlError> {
    session
        .exec(
            &format!("DROP TABLE IF EXISTS {}", quote(stage)),
            "dropping the snapshot's stage table",
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_fit_mysql_and_differ_per_journal_and_table() {
        let long = "é".repeat(31);
        let a = stage_name("shop:0123456789ab", &long);
        assert!(a.len() <= 64, "{a}");
        assert_ne!(a, stage_name("shop:ba9876543210", &long));
        assert_ne!(a, stage_name("shop:0123456789ab", "orders"));
        assert_eq!(a, stage_name("shop:0123456789ab", &long));
    }
}
