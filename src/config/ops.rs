//! The operations keys: `source_guard:` (how much WAL the slot may hold back before db-sync
//! warns, and what capture does when the slot is lost), `snapshot:` (who reads the initial
//! snapshot) and `metrics:` (where `run` serves `/metrics` and `/healthz`).

use serde::Deserialize;

use super::flex;

/// `source_guard:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceGuardConfig {
    /// Above this much WAL retained by the replication slot (MB), every cycle warns, and
    /// `status` and `/healthz` say so.
    #[serde(
        default = "default_max_retained_wal_mb",
        deserialize_with = "flex::parse"
    )]
    pub max_retained_wal_mb: u64,
    /// What capture does when the replication slot it streamed from is gone (dropped,
    /// invalidated, recreated): see [`SlotLost`].
    #[serde(default)]
    pub on_slot_lost: SlotLost,
}

/// `source_guard.on_slot_lost`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotLost {
    /// A new slot and a full snapshot of the included tables, swept over the target (rows
    /// deleted meanwhile go), with one warning; `status` and `/healthz` show it until done.
    #[default]
    Resync,
    /// Exit 1 with one line naming the cause and the fix.
    Stop,
}

impl Default for SourceGuardConfig {
    fn default() -> Self {
        SourceGuardConfig {
            max_retained_wal_mb: default_max_retained_wal_mb(),
            on_slot_lost: SlotLost::default(),
        }
    }
}

impl SourceGuardConfig {
    pub fn max_retained_wal_bytes(&self) -> i64 {
        i64::try_from(self.max_retained_wal_mb.saturating_mul(1 << 20)).unwrap_or(i64::MAX)
    }
}

fn default_max_retained_wal_mb() -> u64 {
    10240
}

/// `metrics:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `HOST:PORT` where `run` serves `/metrics` and `/healthz`; empty turns them off.
    #[serde(default = "default_listen")]
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_listen(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:9464".to_string()
}

/// `snapshot:`: who reads a PostgreSQL source's initial (and resync) snapshot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    #[serde(default)]
    pub loader: Loader,
    /// Source connections the native loader reads ranges on, at once.
    #[serde(
        default = "default_snapshot_connections",
        deserialize_with = "flex::parse"
    )]
    pub connections: usize,
    /// Heap pages (8 KiB each) per range: the unit of a `COPY`, of a journal append and of
    /// resumption (2048: 16 MiB of table).
    #[serde(default = "default_range_pages", deserialize_with = "flex::parse")]
    pub range_pages: u32,
}

/// `snapshot.loader`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loader {
    /// db-sync reads the tables itself with binary `COPY` over page ranges under one
    /// snapshot, resumable per range ([`crate::loader`]); Debezium then only streams.
    #[default]
    Native,
    /// Debezium's own snapshot (one JDBC reader per table; starts over after a crash).
    Debezium,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            loader: Loader::default(),
            connections: default_snapshot_connections(),
            range_pages: default_range_pages(),
        }
    }
}

fn default_snapshot_connections() -> usize {
    2
}

fn default_range_pages() -> u32 {
    2048
}
