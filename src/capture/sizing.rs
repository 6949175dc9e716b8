//! The engine's queue, batch and fetch sizes, fitted to the size of the captured rows.
//!
//! Rows of megabytes need small batches and a small queue in the 1 GB heap (Debezium 3.6's
//! snapshot does not keep to `max.queue.size.in.bytes`), and small JDBC fetches. Rows of a
//! few hundred bytes run at half speed with those: every batch is one journal `fdatasync`
//! (measured: 1,000,000 rows of 7 columns in 40.7 s with batches of 128, 20.7 s with 2,048).
//! So before it starts, capture asks the source how large the included tables' rows are
//! ([`crate::source::sizes`]: relation size over `reltuples`, TOAST included) and, when every
//! table is known to hold rows of at most [`SMALL_ROW_BYTES`], gives the engine Debezium's own
//! larger sizes. A table PostgreSQL has no statistics for yet (never analyzed: one the
//! initial loader just filled, before autovacuum gets to it) is measured from a sample of its
//! rows instead; one that cannot be read keeps the safe sizes. A key set in `source:` always
//! wins.

use std::collections::BTreeMap;

use crate::config::Config;

/// The largest average row, in bytes, that the larger sizes are used for: 8,192 rows queued
/// of this size are 128 MiB of a 1 GB heap.
pub const SMALL_ROW_BYTES: f64 = 16_384.0;

/// Debezium's own defaults, for small rows.
const SMALL_ROWS: [(&str, &str); 3] = [
    ("max.batch.size", "2048"),
    ("max.queue.size", "8192"),
    ("snapshot.fetch.size", "10240"),
];
/// The JDBC driver's adaptive fetch, only needed for large rows.
const LARGE_ROWS_ONLY: [&str; 3] = [
    "database.adaptiveFetch",
    "database.adaptiveFetchMaximum",
    "database.maxResultBuffer",
];

/// Adjusts the default sizes in `props` to the source's rows; leaves them as they are when
/// the source cannot say (or is not PostgreSQL).
pub async fn fit(config: &Config, props: &mut BTreeMap<String, String>) {
    if !config.is_postgres() {
        return;
    }
    let Some(include) = props.get("table.include.list").cloned() else {
        return;
    };
    match crate::source::sizes::largest_row(config, &include).await {
        Ok(Some(bytes)) if bytes <= SMALL_ROW_BYTES => {
            for (k, v) in SMALL_ROWS {
                if !config.source.contains_key(k) {
                    props.insert(k.to_string(), v.to_string());
                }
            }
            for k in LARGE_ROWS_ONLY {
                if !config.source.contains_key(k) {
                    props.remove(k);
                }
            }
            tracing::debug!(
                bytes_per_row = bytes.round(),
                "engine sized for small rows (batches of 2048, queue of 8192, fetches of 10240)"
            );
        }
        Ok(Some(bytes)) => tracing::info!(
            bytes_per_row = bytes.round(),
            "large rows: the engine keeps small batches and fetches"
        ),
        Ok(None) => tracing::debug!(
            "cannot size the rows of some included table: the engine keeps small batches and fetches"
        ),
        Err(e) => {
            tracing::debug!("could not read table sizes ({e}): the engine keeps small batches")
        }
    }
}
