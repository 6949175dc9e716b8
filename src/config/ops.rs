//! The operations keys: `source_guard:` (how much WAL the slot may hold back before db-sync
//! warns) and `metrics:` (where `run` serves `/metrics` and `/healthz`).

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
}

impl Default for SourceGuardConfig {
    fn default() -> Self {
        SourceGuardConfig {
            max_retained_wal_mb: default_max_retained_wal_mb(),
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
