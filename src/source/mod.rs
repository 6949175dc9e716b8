//! The PostgreSQL source, as db-sync itself sees it (Debezium keeps its own connection).
//!
//! This module owns:
//!
//! - **db-sync's own connections** to the source ([`connect`](mod@connect)): built from
//!   `source:` the way Debezium reads it, TLS included, with `database.sslmode` meaning what
//!   libpq means by it. `check`, `status`, the slot guard, `verify`, `backfill --resnapshot`
//!   and capture's set-up all connect through it.
//! - **The names** the pipeline uses at the source, derived here once from the config and
//!   nowhere else: the replication slot ([`slot_name`]), the publication
//!   ([`publication_name`]) and Debezium's signalling table ([`signal_collection`]). Capture's
//!   engine properties take their values from these functions, so what db-sync reads and
//!   what Debezium uses can never disagree.
//! - **The slot's state** ([`slot`]): one query of `pg_replication_slots` for everything the
//!   callers ask of it (active, positions, retained WAL, `wal_status`).
//! - **The publication's options** ([`publication`]), **the signalling table** ([`signal`]),
//!   **the source's identity** ([`identity`]: cluster, database, slot), **table sizes**
//!   ([`sizes`]) and **the included tables** ([`tables`]: keys, replica identity, generated
//!   columns, under Debezium's include and exclude lists).
//!
//! A floor module: it depends on [`crate::config`] and the state directory's identity types
//! only, never on a pipeline stage, so every stage (and the coming snapshot loader) can use it.
//!
//! Keys, all under `source:` and read as Debezium reads them: `database.hostname`, `.port`,
//! `.user`, `.password`, `.dbname`, `.sslmode` and `.sslrootcert`; `slot.name` and
//! `publication.name` (default `dbsync_<name>`, the pipeline name in lower case with `_` for
//! anything but letters and digits); `publish.via.partition.root` (default true);
//! `signal.data.collection` (default `public.dbsync_signal_<name>`, empty: off).

pub mod connect;
pub mod identity;
pub mod publication;
pub mod signal;
pub mod sizes;
pub mod slot;
pub mod tables;

pub use connect::{connect, pg_error, SourceConfigError, SourceError};

use crate::config::Config;

/// The pipeline's name as a PostgreSQL identifier part: lower-case ASCII letters and digits,
/// anything else `_` (`Shop-1` → `shop_1`).
fn ident(config: &Config) -> String {
    config
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The replication slot of the pipeline: `source.slot.name`, by default `dbsync_<name>`.
/// Meaningful for PostgreSQL sources only.
pub fn slot_name(config: &Config) -> String {
    config
        .source_prop("slot.name")
        .unwrap_or_else(|| format!("dbsync_{}", ident(config)))
}

/// The publication of the pipeline: `source.publication.name`, by default `dbsync_<name>`.
/// Meaningful for PostgreSQL sources only.
pub fn publication_name(config: &Config) -> String {
    config
        .source_prop("publication.name")
        .unwrap_or_else(|| format!("dbsync_{}", ident(config)))
}

/// Whether the publication publishes a partitioned table's changes under its own name
/// (`source.publish.via.partition.root`, on by default).
pub fn publish_via_partition_root(config: &Config) -> bool {
    config
        .source_prop("publish.via.partition.root")
        .is_none_or(|v| v == "true")
}

/// Debezium's signalling table (`schema.table`) of a PostgreSQL source:
/// `source.signal.data.collection`, by default `public.dbsync_signal_<name>`; `None` when it
/// is set empty (signalling off) or the source is not PostgreSQL.
pub fn signal_collection(config: &Config) -> Option<String> {
    if !config.is_postgres() {
        return None;
    }
    match config.source_prop("signal.data.collection") {
        Some(c) if c.is_empty() => None,
        Some(c) => Some(c),
        None => Some(format!("public.dbsync_signal_{}", ident(config))),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!("name: Shop-1\nsource:\n  connector.class: io.debezium.connector.postgresql.PostgresConnector\n{extra}");
        Config::parse(Path::new("c.yaml"), &text, &|_| None).unwrap()
    }

    #[test]
    fn names_derive_from_the_pipeline_unless_source_sets_them() {
        let c = config("");
        assert_eq!(slot_name(&c), "dbsync_shop_1");
        assert_eq!(publication_name(&c), "dbsync_shop_1");
        assert_eq!(
            signal_collection(&c).as_deref(),
            Some("public.dbsync_signal_shop_1")
        );
        assert!(publish_via_partition_root(&c));
        let c = config("  slot.name: s\n  publication.name: p\n  signal.data.collection: \"\"\n  publish.via.partition.root: false\n");
        assert_eq!(slot_name(&c), "s");
        assert_eq!(publication_name(&c), "p");
        assert_eq!(signal_collection(&c), None);
        assert!(!publish_via_partition_root(&c));
    }
}
