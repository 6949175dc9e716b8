//! How large the source's rows are, from the server's statistics (capture sizes the engine's
//! batches by it, see `capture::sizing`).

use super::{connect, SourceError};
use crate::config::Config;

/// The largest average row (bytes, TOAST and indexes included: relation size over
/// `reltuples`) of the tables a Debezium `table.include.list` names. A partitioned table
/// counts by its partitions. A table the server has no statistics for yet (never analyzed,
/// such as one just loaded) is measured from a sample of its first [`SAMPLE_ROWS`] rows (their
/// text, as the engine reads them, detoasted); `None` when that cannot be read either.
pub async fn largest_row(config: &Config, include: &str) -> Result<Option<f64>, SourceError> {
    let pattern = format!(
        "^({})$",
        include
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("|")
    );
    let (client, described) = connect(config, "db-sync sizing").await?;
    // Partitioned parents have no rows of their own: their partitions count, by the
    // parent's name.
    let rows = client
        .query(
            "SELECT c.reltuples::float8, pg_total_relation_size(c.oid)::float8,
                    format('%I.%I', n.nspname, c.relname)
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
               LEFT JOIN pg_class p ON p.oid = i.inhparent
               LEFT JOIN pg_namespace pn ON pn.oid = p.relnamespace
              WHERE c.relkind = 'r'
                AND (n.nspname || '.' || c.relname ~ $1
                     OR pn.nspname || '.' || p.relname ~ $1)",
            &[&pattern],
        )
        .await
        .map_err(SourceError::query(format!(
            "cannot read table sizes on {described}"
        )))?;
    let mut largest: f64 = 0.0;
    for row in rows {
        let (tuples, bytes, name): (f64, f64, String) = (row.get(0), row.get(1), row.get(2));
        if tuples > 0.0 {
            largest = largest.max(bytes / tuples);
        } else if tuples < 0.0 || bytes > 65_536.0 {
            // Never analyzed (-1), or analyzed while empty and filled since.
            match sampled_row(&client, &name).await {
                Some(b) => largest = largest.max(b),
                None => return Ok(None),
            }
        }
    }
    Ok(Some(largest))
}

/// Rows [`largest_row`] samples of a table without statistics.
pub const SAMPLE_ROWS: u32 = 500;

/// The average text size of the first [`SAMPLE_ROWS`] rows of `table` (quoted); `None` when
/// they cannot be read. An empty table: 0.
async fn sampled_row(client: &tokio_postgres::Client, table: &str) -> Option<f64> {
    let sql = format!(
        "SELECT coalesce(avg(octet_length(s::text)), 0)::float8
           FROM (SELECT * FROM ONLY {table} LIMIT {SAMPLE_ROWS}) s"
    );
    match client.query_one(sql.as_str(), &[]).await {
        Ok(r) => Some(r.get(0)),
        Err(e) => {
            tracing::debug!(%table, "cannot sample the rows of {table}: {e}");
            None
        }
    }
}
