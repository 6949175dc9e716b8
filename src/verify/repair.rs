//! `verify --repair`: differences that persisted are repaired through the normal path, so the
//! repair is journaled, audited and applied like any change.
//!
//! - Keys missing in the target or different there are re-read from the source through
//!   Debezium's signalling table: `execute-snapshot` signals of type `incremental` whose
//!   `additional-conditions` filter names exactly those keys. Their rows arrive as `r` events
//!   in the journal, the audit files and the target. The running capture (`db-sync run` or
//!   `capture`) executes them: without one connected to the slot, repair refuses.
//! - Keys only in the target (a snapshot cannot bring a deletion) are deleted there while
//!   verify holds `compact.lock` (no cycle writes meanwhile), once a fresh source snapshot
//!   shows each key still absent, compared by value there. The deletes go through apply's
//!   delete chunks ([`Applier::delete_keys`]): numbered, `target.batch_rows` keys each, one
//!   transaction with its checkpoint row under the pipeline key `<name>:repair:<table>`,
//!   transient failures retried. A key inserted at the source after the re-check is
//!   journaled, and applied after the delete; a re-run after a crash compares again and
//!   deletes what is still extra.
//!
//! Every repair is logged; verify counts it in its report and in `verify-state.json`.

use mysql_async::prelude::Queryable;

use super::plan::{pg_ident, TablePlan};
use super::VerifyError;
use crate::apply::sql::{with_retry, Session, SqlError};
use crate::apply::Applier;
use crate::config::Config;
use crate::source::SourceError;

/// The most characters of one signal's `data` (the signalling table's column is VARCHAR(2048)).
const SIGNAL_DATA_MAX: usize = 2000;
/// Extra keys per re-check at the source and per read of their target rows.
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

/// Deletes from the target the `keys` the source (at a fresh snapshot) does not hold, through
/// apply's delete chunks (`applier`, under a pipeline key of its own). The caller holds
/// `compact.lock`. How many target rows went.
pub async fn delete_extra(
    pg: &tokio_postgres::Client,
    my: &mut Session,
    applier: &mut Applier,
    batch_rows: usize,
    plan: &TablePlan,
    keys: &[Vec<Vec<u8>>],
) -> Result<u64, VerifyError> {
    let mut values = Vec::new();
    for chunk in keys.chunks(DELETE_KEYS) {
        let absent = absent_at_source(pg, plan, chunk).await?;
        if !absent.is_empty() {
            values.extend(target_keys(my, plan, &absent).await?);
        }
    }
    if values.is_empty() {
        return Ok(0);
    }
    let key: Vec<String> = plan.keys.iter().map(|k| k.column.name.clone()).collect();
    applier
        .delete_keys(&plan.source, &key, &values, batch_rows)
        .await?;
    tracing::info!(table = %plan.source, target = %plan.target, rows = values.len(), "repair: deleted target rows whose keys the source does not hold");
    Ok(values.len() as u64)
}

/// Which of `keys` the source does not hold now, compared by value in PostgreSQL (a key's
/// canonical text is not the column's own: days for a date, `1.5` for `1.50`).
async fn absent_at_source(
    pg: &tokio_postgres::Client,
    plan: &TablePlan,
    keys: &[Vec<Vec<u8>>],
) -> Result<Vec<Vec<Vec<u8>>>, VerifyError> {
    let (schema, name) = plan
        .source
        .split_once('.')
        .unwrap_or(("public", &plan.source));
    let table = format!("{}.{}", pg_ident(schema), pg_ident(name));
    let sql = keys
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
    Ok(keys
        .iter()
        .enumerate()
        .filter(|(i, _)| !present.contains(i))
        .map(|(_, k)| k.clone())
        .collect())
}

/// The key values of the target rows at `keys`, as the target's own text (the text protocol),
/// which apply binds back as they are.
async fn target_keys(
    my: &mut Session,
    plan: &TablePlan,
    keys: &[Vec<Vec<u8>>],
) -> Result<Vec<Vec<Vec<u8>>>, VerifyError> {
    let columns: Vec<String> = plan
        .keys
        .iter()
        .map(|k| super::plan::my_ident(&k.column.name))
        .collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {}",
        columns.join(", "),
        super::plan::my_ident(&plan.target),
        plan.key_filter(keys, false)
    );
    let what = format!("reading the extra keys of `{}`", plan.target);
    let rows: Result<Vec<mysql_async::Row>, SqlError> =
        with_retry!(my, &what, |conn| Ok(conn.query(&sql).await?));
    let rows = rows.map_err(|source| VerifyError::Target {
        url: my.url.clone(),
        what,
        source,
    })?;
    Ok(rows
        .into_iter()
        .map(|row| {
            row.unwrap()
                .into_iter()
                .map(|v| match v {
                    mysql_async::Value::Bytes(b) => b,
                    other => other.as_sql(true).into_bytes(),
                })
                .collect()
        })
        .collect())
}
