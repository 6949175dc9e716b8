//! `verify --repair`: differences that persisted are repaired through the normal path, so the
//! repair is journaled, audited and applied like any change.
//!
//! - Keys missing in the target or different there are re-read from the source through
//!   Debezium's signalling table: `execute-snapshot` signals of type `incremental` whose
//!   `additional-conditions` filter names exactly those keys. Their rows arrive as `r` events
//!   in the journal, the audit files and the target. The running capture (`db-sync run` or
//!   `capture`) executes them: without one connected to the slot, repair refuses.
//! - Keys only in the target (a snapshot cannot bring a deletion) are deleted there, in
//!   transactions of at most 500 keys (a transient failure retried with backoff, as apply's
//!   chunks are), while verify holds `compact.lock` (no cycle writes meanwhile) and after a
//!   fresh source snapshot shows each key still absent, compared by value there. A key
//!   inserted at the source after that snapshot is journaled, and applied after the delete.
//!   Deleting an absent key changes nothing, so a re-run after a crash is harmless: a
//!   checkpoint row, as apply's chunks have, would only say what is gone already.
//!
//! Every repair is logged; verify counts it in its report and in `verify-state.json`.

use mysql_async::prelude::Queryable;

use super::plan::{pg_ident, TablePlan};
use super::VerifyError;
use crate::apply::sql::{with_retry, Session, SqlError};
use crate::config::Config;
use crate::source::SourceError;

/// The most characters of one signal's `data` (the signalling table's column is VARCHAR(2048)).
const SIGNAL_DATA_MAX: usize = 2000;
/// Keys per delete transaction.
const DELETE_KEYS: usize = 500;

/// Asks the capture for an incremental snapshot of `keys` of `plan`'s table, in as many
/// signals as their filters need.
pub async fn resnapshot(
    config: &Config,
    pg: &tokio_postgres::Client,
    plan: &TablePlan,
    keys: &[Vec<Vec<u8>>],
) -> Result<Vec<String>, VerifyError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let collection = crate::source::signal_collection(config).ok_or_else(|| {
        VerifyError::Usage(
            "--repair needs Debezium's signalling table (`source.signal.data.collection`; db-sync sets it by default: do not set it empty)".into(),
        )
    })?;
    let table = &plan.source;
    let quoted_collection = collection
        .split_once('.')
        .map_or(pg_ident(&collection), |(s, t)| {
            format!("{}.{}", pg_ident(s), pg_ident(t))
        });
    let data_of = |chunk: &[Vec<Vec<u8>>]| {
        serde_json::json!({
            "data-collections": [table],
            "type": "incremental",
            "additional-conditions": [{
                "data-collection": table,
                "filter": plan.key_filter(chunk, true),
            }],
        })
        .to_string()
    };
    // Pack keys into signals whose data fits the signalling table's column.
    let mut chunks: Vec<&[Vec<Vec<u8>>]> = Vec::new();
    let mut start = 0;
    while start < keys.len() {
        let mut end = start + 1;
        while end < keys.len() && data_of(&keys[start..end + 1]).len() <= SIGNAL_DATA_MAX {
            end += 1;
        }
        if data_of(&keys[start..end]).len() > SIGNAL_DATA_MAX {
            return Err(VerifyError::Repair(format!(
                "{table}: key {} is too long for a snapshot signal; rebuild the table with `db-sync backfill --table {table} --resnapshot`",
                super::compare::show_key(plan, &keys[start])
            )));
        }
        chunks.push(&keys[start..end]);
        start = end;
    }
    let mut ids = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let id = format!(
            "db-sync-repair-{}-{}-{i}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
            std::process::id()
        );
        pg.execute(
            &format!(
                "INSERT INTO {quoted_collection} (id, type, data) VALUES ($1, 'execute-snapshot', $2)"
            ),
            &[&id, &data_of(chunk)],
        )
        .await
        .map_err(SourceError::query(format!(
            "cannot insert the repair's snapshot signal into {collection}"
        )))?;
        tracing::info!(table = %table, keys = chunk.len(), signal = %id, "repair: asked the capture for an incremental snapshot of the differing keys");
        ids.push(id);
    }
    Ok(ids)
}

/// Deletes from the target the `keys` the source (at a fresh snapshot) does not hold. The
/// caller holds `compact.lock`.
pub async fn delete_extra(
    pg: &tokio_postgres::Client,
    my: &mut Session,
    plan: &TablePlan,
    keys: &[Vec<Vec<u8>>],
) -> Result<u64, VerifyError> {
    let mut deleted = 0;
    for chunk in keys.chunks(DELETE_KEYS) {
        // Which of them the source holds now, compared by value in PostgreSQL (a key's
        // canonical text is not the column's own: days for a date, `1.5` for `1.50`): those stay.
        let (schema, name) = plan
            .source
            .split_once('.')
            .unwrap_or(("public", &plan.source));
        let table = format!("{}.{}", pg_ident(schema), pg_ident(name));
        let sql = chunk
            .iter()
            .enumerate()
            .map(|(i, key)| {
                format!(
                    "SELECT {i} WHERE EXISTS (SELECT 1 FROM {table} WHERE {})",
                    plan.key_filter(std::slice::from_ref(key), true)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let rows = pg
            .query(&sql, &[])
            .await
            .map_err(SourceError::query(format!(
                "re-reading keys of {}",
                plan.source
            )))?;
        let present: std::collections::HashSet<usize> =
            rows.iter().map(|r| r.get::<_, i32>(0) as usize).collect();
        let absent: Vec<Vec<Vec<u8>>> = chunk
            .iter()
            .enumerate()
            .filter(|(i, _)| !present.contains(i))
            .map(|(_, k)| k.clone())
            .collect();
        if absent.is_empty() {
            continue;
        }
        let sql = format!(
            "DELETE FROM {} WHERE {}",
            super::plan::my_ident(&plan.target),
            plan.key_filter(&absent, false)
        );
        let what = format!("deleting extra keys of `{}`", plan.target);
        // A transient failure (a deadlock, a lock wait, a lost connection) rolls back and
        // retries with backoff, as apply's chunks do.
        let removed: Result<u64, SqlError> = with_retry!(my, &what, |conn| {
            conn.query_drop("START TRANSACTION").await?;
            conn.query_drop(&sql).await?;
            let removed = conn.affected_rows();
            conn.query_drop("COMMIT").await?;
            Ok(removed)
        });
        deleted += removed.map_err(|source| VerifyError::Target {
            url: my.url.clone(),
            what,
            source,
        })?;
        tracing::info!(table = %plan.source, target = %plan.target, rows = deleted, "repair: deleted target rows whose keys the source does not hold");
    }
    Ok(deleted)
}
