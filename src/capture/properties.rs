//! The Debezium engine's properties: db-sync's defaults, overridden by anything in `source:`.
//!
//! Defaults: offsets and schema history in the state directory; a short offset flush so little
//! is re-delivered after a crash; a heartbeat; for PostgreSQL, `pgoutput`, the slot and the
//! publication named by [`crate::source`] with the publication limited to the included tables
//! and publishing a partitioned table's changes under its own name, TRUNCATE captured, and a
//! heartbeat action that emits a logical message, so the slot advances even when only tables
//! outside the pipeline change, and a failover slot where the server has them (PostgreSQL
//! 17+). The source's names come from [`crate::source`], the one place that derives them, so
//! db-sync's own queries and the engine never disagree on them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::Config;
use crate::source;

pub(super) const DEFAULT_HEARTBEAT_MS: &str = "10000";
const DEFAULT_OFFSET_FLUSH_MS: &str = "1000";
/// Debezium's offsets and schema history, in the state directory.
pub const OFFSETS_FILE: &str = "debezium-offsets.dat";
pub const HISTORY_FILE: &str = "debezium-history.dat";

/// The pipeline's state directory (`journal.dir`) as an absolute path.
pub fn state_dir(config: &Config) -> PathBuf {
    std::path::absolute(&config.journal.dir).unwrap_or_else(|_| config.journal.dir.clone())
}

/// The Debezium properties for `config`: safe defaults, overridden by anything in `source:`
/// (see the module doc).
pub fn engine_properties(config: &Config) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    defaults(config, &mut p);
    if config.is_postgres() {
        postgres_defaults(config, &mut p);
    }
    for (k, v) in config.source.iter() {
        p.insert(k.clone(), v.as_string());
    }
    signalling(config, &mut p);
    p
}

fn set(p: &mut BTreeMap<String, String>, k: &str, v: impl Into<String>) {
    p.insert(k.to_string(), v.into());
}

/// Every connector's defaults.
fn defaults(config: &Config, p: &mut BTreeMap<String, String>) {
    set(p, "name", &config.name);
    set(p, "topic.prefix", &config.name);
    set(
        p,
        "offset.storage",
        "org.apache.kafka.connect.storage.FileOffsetBackingStore",
    );
    // Debezium's own state lives with the journal, by absolute path: a process started from
    // another working directory finds the same files.
    let state = state_dir(config);
    let offsets = state.join(OFFSETS_FILE).display().to_string();
    set(p, "offset.storage.file.filename", offsets);
    set(p, "offset.flush.interval.ms", DEFAULT_OFFSET_FLUSH_MS);
    set(
        p,
        "schema.history.internal",
        "io.debezium.storage.file.history.FileSchemaHistory",
    );
    let history = state.join(HISTORY_FILE).display().to_string();
    set(p, "schema.history.internal.file.filename", history);
    set(p, "tombstones.on.delete", "false");
    // Rows of megabytes must not pile up in the engine's queue. Debezium 3.6's snapshot does
    // not keep to `max.queue.size.in.bytes` (measured: the queue passed it many times over), so
    // the queue is bounded by records too: 256 queued and 128 per batch hold rows of 1 MB in
    // the default 1 GB heap; small rows lose little (one fsync per 128 rows). The bridge
    // journals a batch in pieces of 16 MB.
    let queue_bytes = (config.memory_limit_mb << 20) / 8;
    set(p, "max.queue.size.in.bytes", queue_bytes.to_string());
    set(p, "max.queue.size", "256");
    set(p, "max.batch.size", "128");
    set(p, "heartbeat.interval.ms", DEFAULT_HEARTBEAT_MS);
    // Starting the task creates the replication slot, which waits for every write
    // transaction running on the server to end: on a busy server that is minutes, not the
    // engine's default of about 90 s, after which capture would fail and start over.
    set(p, "task.management.timeout.ms", "900000");
    // Source column types and lengths in the schema: apply creates VARCHAR(n), CHAR(n).
    set(p, "column.propagate.source.type", ".*");
}

/// A PostgreSQL source's defaults.
fn postgres_defaults(config: &Config, p: &mut BTreeMap<String, String>) {
    set(p, "plugin.name", "pgoutput");
    set(p, "slot.name", source::slot_name(config));
    set(p, "publication.name", source::publication_name(config));
    set(p, "publication.autocreate.mode", "filtered");
    // A partitioned table's changes arrive under its own name, whichever partition they
    // touch; without this only its snapshot would.
    let via_root = source::publish_via_partition_root(config);
    set(p, "publish.via.partition.root", via_root.to_string());
    // TRUNCATE is a change like any other; Debezium skips it by default.
    set(p, "skipped.operations", "none");
    // The snapshot reads through a cursor, 10,240 rows a fetch by default: gigabytes when
    // rows are megabytes. The JDBC driver starts at 4 rows, then sizes each fetch to a
    // tenth of the heap by the largest row it has seen, up to 10,240 (the `database.`
    // properties reach the driver). A single fetch beyond a tenth of the heap (a row of
    // more than ~25 MB at -Xmx1g) is the driver's one-line error naming maxResultBuffer.
    set(p, "snapshot.fetch.size", "4");
    set(p, "database.adaptiveFetch", "true");
    set(p, "database.adaptiveFetchMaximum", "10240");
    set(p, "database.maxResultBuffer", "10p");
    set(
        p,
        "heartbeat.action.query",
        "SELECT pg_logical_emit_message(false, 'db-sync-heartbeat', now()::text)",
    );
    // PostgreSQL 17 keeps a failover slot on the standbys that `sync_replication_slots`
    // names, so capture goes on from a promoted standby. Debezium creates the slot so only
    // on a 17+ primary and ignores this elsewhere; an existing slot keeps what it was
    // created with.
    set(p, "slot.failover", "true");
}

/// The signalling table, after `source:` is applied: named by [`source::signal_collection`]
/// for PostgreSQL, as `source:` says for another connector; set empty, signalling is off and
/// Debezium must not see the key at all. Debezium reads signals from the change stream, so the
/// table joins `table.include.list`.
fn signalling(config: &Config, p: &mut BTreeMap<String, String>) {
    const KEY: &str = "signal.data.collection";
    let collection = if config.is_postgres() {
        source::signal_collection(config)
    } else {
        p.get(KEY).filter(|c| !c.is_empty()).cloned()
    };
    let Some(collection) = collection else {
        p.remove(KEY);
        return;
    };
    if let Some(list) = p.get("table.include.list") {
        let list = source::signal::include_list_with(list, &collection);
        set(p, "table.include.list", list);
    }
    set(p, KEY, collection);
}

/// The files named by the engine properties whose directories must exist.
pub(super) fn engine_files(props: &BTreeMap<String, String>) -> Vec<PathBuf> {
    [
        "offset.storage.file.filename",
        "schema.history.internal.file.filename",
    ]
    .iter()
    .filter_map(|k| props.get(*k).map(PathBuf::from))
    .collect()
}

/// `props` as a Java properties file, one `key=value` a line (backslashes and line breaks
/// escaped, so `Properties.load` reads back exactly these values), secret-bearing values as
/// `***` unless `secrets`.
pub fn properties_file(props: &BTreeMap<String, String>, secrets: bool) -> String {
    let escape = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r")
    };
    props
        .iter()
        .map(|(k, v)| {
            let v = if secrets || !crate::config::is_secret_key(k) {
                escape(v)
            } else {
                "***".to_string()
            };
            format!("{}={v}\n", escape(k))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn source_overrides_defaults_and_postgres_gets_slot_publication_heartbeat() {
        let text = "name: Shop-1\nsource:\n  connector.class: io.debezium.connector.postgresql.PostgresConnector\n  heartbeat.interval.ms: 500\n";
        let config = Config::parse(Path::new("c.yaml"), text, &|_| None).unwrap();
        let p = engine_properties(&config);
        assert_eq!(p["heartbeat.interval.ms"], "500");
        assert_eq!(p["slot.name"], "dbsync_shop_1");
        assert_eq!(p["slot.name"], source::slot_name(&config));
        assert_eq!(p["publication.name"], source::publication_name(&config));
        assert_eq!(p["publication.autocreate.mode"], "filtered");
        assert_eq!(p["publish.via.partition.root"], "true");
        let state = std::path::absolute("data/journal").unwrap();
        assert_eq!(
            p["offset.storage.file.filename"],
            state.join(OFFSETS_FILE).display().to_string()
        );
        assert_eq!(p["offset.flush.interval.ms"], "1000");
        assert!(p["heartbeat.action.query"].contains("pg_logical_emit_message"));
        assert_eq!(p["signal.data.collection"], "public.dbsync_signal_shop_1");
        assert!(!p.contains_key("table.include.list"));
    }

    #[test]
    fn the_signal_table_is_captured_with_the_included_tables() {
        let text = "name: shop\nsource:\n  connector.class: io.debezium.connector.postgresql.PostgresConnector\n  table.include.list: public.orders\n";
        let config = Config::parse(Path::new("c.yaml"), text, &|_| None).unwrap();
        let p = engine_properties(&config);
        assert_eq!(
            p["table.include.list"],
            "public.orders,public\\.dbsync_signal_shop"
        );
        // Set empty: signalling off, and Debezium does not see the key.
        let off = format!("{text}  signal.data.collection: \"\"\n");
        let config = Config::parse(Path::new("c.yaml"), &off, &|_| None).unwrap();
        let p = engine_properties(&config);
        assert!(!p.contains_key("signal.data.collection"));
        assert_eq!(p["table.include.list"], "public.orders");
    }

    #[test]
    fn other_connectors_get_no_postgres_defaults() {
        let text = "name: m\nsource:\n  connector.class: io.debezium.connector.mysql.MySqlConnector\n  signal.data.collection: db.signals\n  table.include.list: db.t\n";
        let config = Config::parse(Path::new("c.yaml"), text, &|_| None).unwrap();
        let p = engine_properties(&config);
        assert!(!p.contains_key("slot.name"));
        assert!(!p.contains_key("heartbeat.action.query"));
        assert_eq!(p["heartbeat.interval.ms"], DEFAULT_HEARTBEAT_MS);
        assert_eq!(p["signal.data.collection"], "db.signals");
        assert_eq!(p["table.include.list"], "db.t,db\\.signals");
    }

    #[test]
    fn secrets_are_printed_only_when_asked_and_backslashes_escaped() {
        let mut p = BTreeMap::new();
        p.insert("database.password".to_string(), "hunter2".to_string());
        p.insert("table.include.list".to_string(), "a,b\\.c".to_string());
        assert_eq!(
            properties_file(&p, false),
            "database.password=***\ntable.include.list=a,b\\\\.c\n"
        );
        assert!(properties_file(&p, true).starts_with("database.password=hunter2\n"));
    }
}
