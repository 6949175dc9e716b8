//! A replication slot that is not the one the journal streamed from, and the resync that
//! follows (`source_guard.on_slot_lost`).
//!
//! PostgreSQL keeps the WAL a logical slot needs until its consumer confirms it. The slot can
//! still go: dropped by hand or by a failover to a server that never had it, invalidated when
//! it held back more than `max_slot_wal_keep_size` (`wal_status = lost`), or recreated under
//! the same name. Then the changes made since capture last confirmed a position are gone for
//! good, and Debezium, started from its offsets, either fails ("Last recorded offset is no
//! longer available") or streams from the new slot's start with the changes between
//! missing, deletes included.
//!
//! Capture checks before the engine starts, whenever Debezium's offsets exist: the slot is
//! missing, lost, or recreated (its `restart_lsn` lies after every position Debezium's offsets
//! record, which a slot that kept its WAL never does: Debezium confirms only what its offsets
//! hold, up to the last commit position). Then, with `resync` (the default), it makes the
//! journal forget the old stream's position (the new slot's first transaction comes without a
//! previous commit position, would sort before it and be dropped as a duplicate), records the
//! resync in the journal's identity, drops the unusable slot, sets Debezium's offsets aside
//! (`debezium-offsets.dat.lost-<time>`) and starts the engine with `snapshot.mode=initial`: a
//! new slot and a full snapshot of the included tables into the same journal. Apply takes
//! that snapshot as it takes a new journal's: over a target table that has rows it sweeps,
//! deleting the rows the snapshot did not bring (deleted while nothing could capture them).
//! The resync shows in `status`, `/metrics` and `/healthz` until the snapshot's last row is
//! journaled. With `stop`, capture exits 1 with one line instead.
//!
//! A crash during the resync finds the resync recorded and the offsets (if any) of the new
//! slot: the snapshot starts over, as a new journal's would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::CaptureError;
use crate::config::{Config, SlotLost};
use crate::journal::Journal;
use crate::source::slot::{self, Lsn, SlotState};
use crate::state::identity::{Identity, Resync};

const APPLICATION: &str = "db-sync capture";

/// Checks the slot against Debezium's offsets and starts a resync (or refuses) when it is not
/// the one they were confirmed to; continues a resync in progress (the snapshot mode).
pub async fn check_slot(
    config: &Config,
    props: &mut BTreeMap<String, String>,
    journal: &mut Journal,
    identity: &mut Identity,
) -> Result<(), CaptureError> {
    if !config.is_postgres() {
        return Ok(());
    }
    if identity.resync.as_ref().is_some_and(Resync::in_progress) {
        tracing::warn!("a resync after the replication slot was lost is in progress: its full snapshot starts over");
        props.insert("snapshot.mode".into(), "initial".into());
        return Ok(());
    }
    let Some(offsets) = offsets_file(props) else {
        return Ok(());
    };
    if journal.next_seq() <= identity.first_seq && journal.last_mark().is_none() {
        return Ok(());
    }
    // An unreachable source is the engine's to report, in its own one line.
    let Ok(state) = slot::read_pipeline(config, APPLICATION).await else {
        return Ok(());
    };
    let Some(reason) = lost(state.as_ref(), confirmed_lsn(&offsets)) else {
        return Ok(());
    };
    let name = crate::source::slot_name(config);
    match config.source_guard.on_slot_lost {
        SlotLost::Stop => Err(CaptureError::SlotLost(format!(
            "replication slot {name} {reason}: the changes made at the source since capture last confirmed a position are gone from the WAL. Set source_guard.on_slot_lost: resync to take a new slot and a full snapshot (rows deleted meanwhile are deleted from the target too), or move {} aside to start this pipeline afresh",
            config.journal.dir.display()
        ))),
        SlotLost::Resync => {
            tracing::warn!(
                slot = %name,
                "replication slot {name} {reason}: resyncing — a new slot and a full snapshot of the included tables; target rows the snapshot does not bring are deleted when it completes"
            );
            // Before the resync is recorded: a crash in between resyncs again from here.
            journal.forget_marks()?;
            identity.resync = Some(Resync {
                reason: format!("replication slot {name} {reason}"),
                started_at: chrono::Utc::now().to_rfc3339(),
                completed_at: None,
            });
            identity.store(&config.journal.dir)?;
            if state.is_some() {
                slot::drop_pipeline(config, APPLICATION)
                    .await
                    .map_err(|e| CaptureError::SlotLost(format!("{e}; drop replication slot {name} by hand (SELECT pg_drop_replication_slot('{name}')) and start again")))?;
            }
            set_aside(&offsets)?;
            // The new slot's snapshot is a new load, whoever reads it.
            let progress = config.journal.dir.join(crate::loader::PROGRESS_FILE);
            if let Err(e) = std::fs::remove_file(&progress) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(crate::state::StateError::io(&progress, e).into());
                }
            }
            props.insert("snapshot.mode".into(), "initial".into());
            Ok(())
        }
    }
}

/// Records the resync in progress as complete: its snapshot's last row is journaled.
pub fn complete(dir: &Path) -> Result<(), CaptureError> {
    let Some(mut identity) = Identity::load(dir)? else {
        return Ok(());
    };
    if let Some(r) = identity.resync.as_mut().filter(|r| r.in_progress()) {
        r.completed_at = Some(chrono::Utc::now().to_rfc3339());
        identity.store(dir)?;
        tracing::info!(
            "the resync's full snapshot is journaled; capture streams from the new slot"
        );
    }
    Ok(())
}

/// Whether the capture that just failed did so because the slot went while it ran, so that a
/// new start resyncs (`resync`) rather than the daemon stopping.
pub async fn lost_while_running(config: &Config) -> bool {
    if !config.is_postgres() || config.source_guard.on_slot_lost != SlotLost::Resync {
        return false;
    }
    if offsets_file(&super::engine_properties(config)).is_none() {
        return false;
    }
    match slot::read_pipeline(config, APPLICATION).await {
        Ok(state) => lost(state.as_ref(), None).is_some(),
        Err(_) => false,
    }
}

/// Why slot `state` is not the one Debezium's offsets (confirmed through `confirmed`) were
/// read from; `None` when it is.
fn lost(state: Option<&SlotState>, confirmed: Option<Lsn>) -> Option<&'static str> {
    match state {
        None => Some("no longer exists on the source (dropped, or not on a promoted standby)"),
        Some(s) if s.is_lost() => Some(
            "was invalidated: the source removed WAL it still needed (wal_status = lost; see max_slot_wal_keep_size)",
        ),
        Some(s) if confirmed.is_some_and(|c| s.restart_lsn.is_some_and(|r| r > c)) => Some(
            "was recreated: it starts after the last position capture confirmed",
        ),
        Some(_) => None,
    }
}

/// Debezium's offsets file, when it exists and is not empty.
pub fn offsets_file(props: &BTreeMap<String, String>) -> Option<PathBuf> {
    let path = PathBuf::from(props.get("offset.storage.file.filename")?);
    std::fs::metadata(&path)
        .is_ok_and(|m| m.len() > 0)
        .then_some(path)
}

/// The highest position Debezium's offsets record. The file is a serialized Java map whose
/// values are the connector's offsets as JSON text (`{"lsn_proc":…,"lsn_commit":…,"lsn":…}`),
/// so the numbers after those keys are read from the bytes; `None` when there is none. The
/// slot is confirmed to the commit position (`lsn_commit`), which lies after the last change's
/// own (`lsn`): the highest of the three is the bound the slot's `restart_lsn` stays under.
fn confirmed_lsn(path: &Path) -> Option<Lsn> {
    let bytes = std::fs::read(path).ok()?;
    lsn_in(&bytes)
}

fn lsn_in(bytes: &[u8]) -> Option<Lsn> {
    let mut best = None;
    for key in [&b"\"lsn\":"[..], b"\"lsn_proc\":", b"\"lsn_commit\":"] {
        let mut at = 0;
        while let Some(i) = bytes[at..].windows(key.len()).position(|w| w == key) {
            let start = at + i + key.len();
            let digits = bytes[start..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if let Some(n) = std::str::from_utf8(&bytes[start..start + digits])
                .ok()
                .and_then(|d| d.parse::<u64>().ok())
            {
                best = best.max(Some(n));
            }
            at = start;
        }
    }
    best.map(Lsn)
}

/// Renames Debezium's offsets out of the way, keeping them for inspection.
fn set_aside(offsets: &Path) -> Result<(), CaptureError> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut aside = offsets.as_os_str().to_owned();
    aside.push(format!(".lost-{stamp}"));
    std::fs::rename(offsets, &aside).map_err(|source| CaptureError::CreateDir {
        path: PathBuf::from(aside),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(restart: u64, wal_status: &str) -> SlotState {
        SlotState {
            name: "s".into(),
            active: false,
            active_pid: None,
            plugin: None,
            database: None,
            restart_lsn: Some(Lsn(restart)),
            confirmed_flush_lsn: Some(Lsn(restart)),
            wal_status: Some(wal_status.into()),
            retained_wal_bytes: 0,
            unconfirmed_wal_bytes: 0,
        }
    }

    #[test]
    fn a_slot_is_lost_when_missing_invalidated_or_recreated_after_the_offsets() {
        assert!(lost(None, None).unwrap().contains("no longer exists"));
        assert!(lost(Some(&slot(5, "lost")), Some(Lsn(9)))
            .unwrap()
            .contains("invalidated"));
        assert!(lost(Some(&slot(10, "reserved")), Some(Lsn(9)))
            .unwrap()
            .contains("recreated"));
        assert_eq!(lost(Some(&slot(9, "reserved")), Some(Lsn(9))), None);
        assert_eq!(lost(Some(&slot(10, "reserved")), None), None);
    }

    #[test]
    fn the_offsets_lsn_is_read_from_the_serialized_map() {
        let mut file = b"\xac\xed\x00\x05sr\x00\x11java.util.HashMap".to_vec();
        file.extend_from_slice(br#"{"lsn_proc":120,"lsn_commit":125,"lsn":118,"txId":7}"#);
        file.extend_from_slice(b"\x00\x01x");
        file.extend_from_slice(br#"{"lsn":99}"#);
        assert_eq!(
            lsn_in(&file),
            Some(Lsn(125)),
            "the commit position bounds the slot"
        );
        assert_eq!(lsn_in(b"nothing"), None);
    }
}
