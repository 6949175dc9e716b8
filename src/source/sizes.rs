//! How large the source's rows are, from the server's statistics (capture sizes the engine's
//! batches by it, see `capture::sizing`).

use super::{connect, SourceError};
use crate::config::Config;

/// The largest average row (bytes, TOAST and indexes included: relation size over
/// `reltuples`) of the tables a Debezium `table.include.list` names, or `None` when one of
/// them has no statistics yet (never analyzed). A partitioned table counts by its partitions.
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
            "SELECT c.reltuples::float8, pg_total_relation_size(c.oid)::float8
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
        let (tuples, bytes): (f64, f64) = (row.get(0), row.get(1));
        if tuples <= 0.0 {
            // Never analyzed (-1), or analyzed empty: size unknown (or moot) for an empty
            // table, unknown for a never-analyzed one.
            if bytes > 65_536.0 || tuples < 0.0 {
                return Ok(None);
            }
            continue;
        }
        largest = largest.max(bytes / tuples);
    }
    Ok(Some(largest))
}
