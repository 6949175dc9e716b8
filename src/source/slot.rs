//! The pipeline's replication slot as the source shows it: one query of
//! `pg_replication_slots`, read by the slot guard, `status`, `/healthz` and `verify`.
//!
//! Facts the callers rely on: `active` is true while a walsender (a running capture) holds the
//! slot; the server keeps every WAL segment from `restart_lsn` on; `confirmed_flush_lsn` is the
//! position Debezium has acknowledged, which it does only once the journal holds everything
//! before it; `wal_status` (PostgreSQL 13+) is `lost` when the server removed WAL the slot
//! still needed, after which the slot can never stream again.

use std::fmt;
use std::str::FromStr;

use super::{connect, SourceError};
use crate::config::Config;

/// A WAL position (`pg_lsn`), ordered as the server orders it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lsn(pub u64);

/// Text that is not a WAL position.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a WAL position (two hexadecimal halves, X/Y)")]
pub struct BadLsn(pub String);

impl FromStr for Lsn {
    type Err = BadLsn;

    /// `X/Y`, two hexadecimal halves, as `pg_lsn` prints.
    fn from_str(s: &str) -> Result<Lsn, BadLsn> {
        let half = |h: &str| u32::from_str_radix(h, 16).map_err(|_| BadLsn(s.to_string()));
        let (hi, lo) = s.split_once('/').ok_or_else(|| BadLsn(s.to_string()))?;
        Ok(Lsn((u64::from(half(hi)?) << 32) | u64::from(half(lo)?)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// One row of `pg_replication_slots`, with the server's current position to measure it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    pub name: String,
    /// False when no capture is connected.
    pub active: bool,
    /// The walsender holding the slot, while one does.
    pub active_pid: Option<i32>,
    /// The output plugin (`pgoutput`).
    pub plugin: Option<String>,
    /// The database the slot decodes.
    pub database: Option<String>,
    /// The oldest WAL the slot needs.
    pub restart_lsn: Option<Lsn>,
    /// The position the consumer acknowledged (Debezium: journaled).
    pub confirmed_flush_lsn: Option<Lsn>,
    /// `reserved`, `extended`, `unreserved` or `lost` (PostgreSQL 13+; `None` before).
    pub wal_status: Option<String>,
    /// WAL the server keeps for the slot (`pg_current_wal_lsn() - restart_lsn`).
    pub retained_wal_bytes: i64,
    /// WAL not yet acknowledged (`pg_current_wal_lsn() - confirmed_flush_lsn`).
    pub unconfirmed_wal_bytes: i64,
}

impl SlotState {
    /// Whether the consumer has acknowledged everything before `lsn`.
    pub fn confirmed_through(&self, lsn: Lsn) -> bool {
        self.confirmed_flush_lsn.is_some_and(|c| c >= lsn)
    }

    /// The server removed WAL the slot needs: it cannot stream again.
    pub fn is_lost(&self) -> bool {
        self.wal_status.as_deref() == Some("lost")
    }
}

/// `wal_status` through `to_jsonb`, so the same statement runs on servers before 13 (no such
/// column: null).
const QUERY: &str = "SELECT s.active, s.active_pid, s.plugin::text, s.database::text, \
       s.restart_lsn::text, s.confirmed_flush_lsn::text, to_jsonb(s) ->> 'wal_status', \
       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn), 0)::bigint, \
       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn), 0)::bigint \
  FROM pg_replication_slots s WHERE s.slot_name = $1";

/// Slot `name` on the source `client` is connected to; `Ok(None)` when there is no such slot
/// (not created yet, or dropped). `described` names the source in an error.
pub async fn read(
    client: &tokio_postgres::Client,
    described: &str,
    name: &str,
) -> Result<Option<SlotState>, SourceError> {
    let row = client
        .query_opt(QUERY, &[&name])
        .await
        .map_err(SourceError::query(format!(
            "cannot read pg_replication_slots on {described}"
        )))?;
    let lsn = |i: usize| {
        row.as_ref()
            .and_then(|r| r.get::<_, Option<String>>(i))
            .and_then(|s| s.parse().ok())
    };
    let (restart_lsn, confirmed_flush_lsn) = (lsn(4), lsn(5));
    Ok(row.map(|r| SlotState {
        name: name.to_string(),
        active: r.get(0),
        active_pid: r.get(1),
        plugin: r.get(2),
        database: r.get(3),
        restart_lsn,
        confirmed_flush_lsn,
        wal_status: r.get(6),
        retained_wal_bytes: r.get(7),
        unconfirmed_wal_bytes: r.get(8),
    }))
}

/// The pipeline's slot ([`super::slot_name`]) on a connection of its own, named `application`
/// at the source; `Ok(None)` for another connector or a slot not created yet.
pub async fn read_pipeline(
    config: &Config,
    application: &str,
) -> Result<Option<SlotState>, SourceError> {
    if !config.is_postgres() {
        return Ok(None);
    }
    let (client, described) = connect(config, application).await?;
    read(&client, &described, &super::slot_name(config)).await
}

/// Drops the pipeline's slot unless a walsender holds it; whether it did.
pub async fn drop_pipeline(config: &Config, application: &str) -> Result<bool, SourceError> {
    let (client, described) = connect(config, application).await?;
    let name = super::slot_name(config);
    let dropped = client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
              WHERE slot_name = $1 AND NOT active",
            &[&name],
        )
        .await
        .map_err(SourceError::query(format!(
            "cannot drop replication slot {name} on {described}"
        )))?;
    Ok(dropped > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_and_order_as_the_server_orders_them() {
        let a: Lsn = "0/16B3748".parse().unwrap();
        let b: Lsn = "1/0".parse().unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "0/16B3748");
        assert_eq!(b.0, 1 << 32);
        assert!("16B3748".parse::<Lsn>().is_err());
        let slot = SlotState {
            name: "s".into(),
            active: true,
            active_pid: Some(1),
            plugin: Some("pgoutput".into()),
            database: Some("db".into()),
            restart_lsn: Some(a),
            confirmed_flush_lsn: Some(a),
            wal_status: Some("lost".into()),
            retained_wal_bytes: 0,
            unconfirmed_wal_bytes: 0,
        };
        assert!(slot.confirmed_through(a) && !slot.confirmed_through(b));
        assert!(slot.is_lost());
    }
}
