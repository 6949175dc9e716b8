//! The slot guard (`source_guard.max_retained_wal_mb`): a replication slot that stops
//! advancing makes the source keep every WAL segment since, until its disk fills. Each cycle
//! reads how much WAL the pipeline's slot retains and warns when it is over the limit;
//! `status` and `/healthz` say the same, so the operator acts before the source's disk fills.

use crate::config::Config;

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

/// Reads the slot ([`crate::source::slot`]) and warns when it retains more WAL than the
/// limit (once per call: each cycle). An unreachable source is only a debug line here:
/// capture reports it.
pub async fn warn_if_over(config: &Config) {
    let read = crate::source::slot::read_pipeline(config, "db-sync guard");
    match tokio::time::timeout(std::time::Duration::from_secs(5), read).await {
        Ok(Ok(Some(s))) => {
            if let Some(warning) = over_limit(config, &s.name, s.retained_wal_bytes) {
                tracing::warn!("{warning}");
            }
        }
        Ok(Ok(None)) => {}
        Ok(Err(e)) => tracing::debug!("slot guard: {e}"),
        Err(_) => tracing::debug!("slot guard: the source did not answer within 5 s"),
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
