//! The slot guard (`source_guard.max_retained_wal_mb`): a replication slot that stops
//! advancing makes the source keep every WAL segment since, until its disk fills. Each cycle
//! reads how much WAL the pipeline's slot retains and warns when it is over the limit;
//! `status` and `/healthz` say the same, so the operator acts before the source's disk fills.

use crate::config::Config;

/// A PostgreSQL replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    pub slot: String,
    /// False when no capture is connected.
    pub active: bool,
    /// WAL the server keeps for the slot (`pg_current_wal_lsn() - restart_lsn`).
    pub retained_wal_bytes: i64,
}

/// The pipeline's slot; `Ok(None)` for another connector or a slot not created yet.
pub async fn read_slot(config: &Config) -> Result<Option<SlotState>, String> {
    if !config.is_postgres() {
        return Ok(None);
    }
    let slot = crate::capture::engine_properties(config)
        .get("slot.name")
        .cloned()
        .unwrap_or_default();
    let (client, source) = crate::capture::source::connect(config, "db-sync guard")
        .await
        .map_err(|e| e.to_string())?;
    let row = client
        .query_opt(
            "SELECT active, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| format!("cannot read pg_replication_slots on {source}: {e}"))?;
    Ok(row.map(|r| SlotState {
        slot,
        active: r.get(0),
        retained_wal_bytes: r.get(1),
    }))
}

/// The warning when `retained` bytes are over the limit; `None` within it.
pub fn over_limit(config: &Config, slot: &str, retained: i64) -> Option<String> {
    let limit = config.source_guard.max_retained_wal_bytes();
    (retained > limit).then(|| {
        format!(
            "replication slot {slot} retains {} MB of WAL, over source_guard.max_retained_wal_mb = {}: the source keeps WAL until capture confirms it; check that `db-sync run` is capturing (status, log), or drop the slot if the pipeline is gone, before the source's disk fills",
            retained >> 20,
            config.source_guard.max_retained_wal_mb
        )
    })
}

/// Reads the slot and warns when it retains more WAL than the limit (once per call: each
/// cycle). An unreachable source is only a debug line here: capture reports it.
pub async fn warn_if_over(config: &Config) {
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), read_slot(config)).await;
    match read.unwrap_or_else(|_| Err("the source did not answer within 5 s".into())) {
        Ok(Some(s)) => {
            if let Some(warning) = over_limit(config, &s.slot, s.retained_wal_bytes) {
                tracing::warn!("{warning}");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::debug!("slot guard: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_in_mebibytes_and_exclusive() {
        let yaml = "name: t\nsource:\n  connector.class: io.debezium.connector.postgresql.PostgresConnector\nsource_guard:\n  max_retained_wal_mb: 1\n";
        let config = Config::parse(std::path::Path::new("c.yaml"), yaml, &|_| None).unwrap();
        assert_eq!(over_limit(&config, "s", 1 << 20), None);
        let w = over_limit(&config, "s", (1 << 20) + 1).unwrap();
        assert!(w.contains("max_retained_wal_mb = 1"), "{w}");
        let yaml = "name: t\nsource:\n  connector.class: x\n";
        let config = Config::parse(std::path::Path::new("c.yaml"), yaml, &|_| None).unwrap();
        assert_eq!(config.source_guard.max_retained_wal_mb, 10240);
        assert_eq!(config.metrics.listen, "127.0.0.1:9464");
        let bad = format!("{yaml}metrics:\n  listen: localhost\n");
        let e = Config::parse(std::path::Path::new("c.yaml"), &bad, &|_| None).unwrap_err();
        assert!(e.to_string().contains("`metrics.listen`"), "{e}");
        let off = format!("{yaml}metrics:\n  listen: \"\"\n");
        assert!(Config::parse(std::path::Path::new("c.yaml"), &off, &|_| None).is_ok());
    }
}
