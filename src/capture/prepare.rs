//! What capture checks and sets up before the engine starts, so that the pipeline's local
//! state ([`crate::state`]) is one consistent whole: the journal's identity, Debezium's offsets
//! and schema history beside the journal, and the source the journal was captured from.
//!
//! Refusals, each one line with its recovery:
//! - the journal holds streamed changes but Debezium's offsets are missing: a start would
//!   re-snapshot and stream from wherever the slot is, with a journal that does not match;
//! - Debezium's offsets are there but the journal is empty: the changes between are lost;
//! - the source is not the one the journal was captured from (another cluster, database or
//!   slot): its positions mean something else, and de-duplication by position would drop its
//!   changes.

use std::path::{Path, PathBuf};

use super::{CaptureError, HISTORY_FILE, OFFSETS_FILE};
use crate::audit::AuditStore;
use crate::config::Config;
use crate::journal::Journal;
use crate::state::identity::Identity;
use crate::state::{ApplyProgress, AuditProgress};

/// The identity of the journal in `config`'s state directory, created with a new journal:
/// numbered after the highest sequence of the audit store's files, with its progress files
/// starting there. A journal from before identities gets an empty id (nothing it named
/// changes).
pub async fn identity(config: &Config) -> Result<Identity, CaptureError> {
    let dir = &config.journal.dir;
    std::fs::create_dir_all(dir).map_err(|source| CaptureError::CreateDir {
        path: dir.clone(),
        source,
    })?;
    if let Some(id) = Identity::load(dir)? {
        return Ok(id);
    }
    let has_segments = !crate::journal::segments(dir)?.is_empty();
    if has_segments {
        let id = Identity::legacy();
        id.store(dir)?;
        return Ok(id);
    }
    // A new journal: after every sequence an earlier journal of this pipeline audited.
    let store = AuditStore::open(&config.audit)?;
    let files = store
        .list_files(None)
        .await
        .map_err(CaptureError::NewJournal)?;
    let first_seq = files.iter().map(|f| f.last_seq).max().unwrap_or(0) + 1;
    let id = Identity::new(first_seq);
    if first_seq > 1 {
        // Nothing before the first sequence is this journal's to audit or apply.
        let audit = AuditProgress {
            audited_through: first_seq - 1,
            ..AuditProgress::default()
        };
        audit.store(dir)?;
        let apply = ApplyProgress {
            applied_through: first_seq - 1,
            ..ApplyProgress::default()
        };
        apply.store(dir)?;
        tracing::info!(
            journal = %id.journal,
            first_seq,
            "a new journal: the audit store holds an earlier journal's files, so this one numbers its events from {first_seq} and starts with a full snapshot"
        );
    }
    id.store(dir)?;
    Ok(id)
}

/// Moves Debezium's offsets and schema history from where earlier versions kept them
/// (`data/offsets/<name>.dat`, `data/history/<name>.dat`, relative to the working directory)
/// into the state directory, once, when the state directory has none.
pub fn adopt_legacy_files(config: &Config, props: &std::collections::BTreeMap<String, String>) {
    let state_dir = super::state_dir(config);
    let moves = [
        (
            "offset.storage.file.filename",
            OFFSETS_FILE,
            PathBuf::from(format!("data/offsets/{}.dat", config.name)),
        ),
        (
            "schema.history.internal.file.filename",
            HISTORY_FILE,
            PathBuf::from(format!("data/history/{}.dat", config.name)),
        ),
    ];
    for (key, file, legacy) in moves {
        let want = state_dir.join(file);
        if props.get(key).map(PathBuf::from) != Some(want.clone()) || want.exists() {
            continue;
        }
        if legacy.is_file() {
            match std::fs::copy(&legacy, &want) {
                Ok(_) => {
                    let _ = std::fs::remove_file(&legacy);
                    tracing::info!(from = %legacy.display(), to = %want.display(), "moved Debezium's state into the state directory");
                }
                Err(e) => {
                    tracing::warn!(from = %legacy.display(), to = %want.display(), "cannot move Debezium's state into the state directory: {e}")
                }
            }
        }
    }
}

/// Refuses a journal and Debezium offsets that disagree (see the module doc).
pub fn check_offsets(
    config: &Config,
    props: &std::collections::BTreeMap<String, String>,
    journal: &Journal,
    identity: &Identity,
) -> Result<(), CaptureError> {
    let Some(offsets) = props.get("offset.storage.file.filename").map(PathBuf::from) else {
        return Ok(());
    };
    let present = std::fs::metadata(&offsets).is_ok_and(|m| m.len() > 0);
    let dir = &config.journal.dir;
    // A resync in progress set the lost slot's offsets aside itself (see `resync.rs`).
    let resyncing = identity.resync.as_ref().is_some_and(|r| r.in_progress());
    if journal.last_mark().is_some() && !present && !resyncing {
        return Err(CaptureError::StateMismatch(format!(
            "journal {} holds streamed changes, but Debezium's offsets {} are missing: a start would take a new snapshot and stream from wherever the slot is, and the journal would not match. Restore {} from a backup, or start this pipeline afresh by moving {} aside (a new journal takes a full snapshot)",
            dir.display(),
            offsets.display(),
            offsets.display(),
            dir.display()
        )));
    }
    let empty = journal.next_seq() <= identity.first_seq && journal.last_mark().is_none();
    if present && empty {
        return Err(CaptureError::StateMismatch(format!(
            "Debezium's offsets {} say this pipeline has captured before, but journal {} is empty: the changes captured since are not in it. To capture again from a full snapshot, delete {} and {}",
            offsets.display(),
            dir.display(),
            offsets.display(),
            props
                .get("schema.history.internal.file.filename")
                .map(|h| Path::new(h).display().to_string())
                .unwrap_or_else(|| "the schema history".into())
        )));
    }
    Ok(())
}

/// Records the source on the journal's first capture; refuses another one later.
pub async fn check_source(config: &Config, identity: &mut Identity) -> Result<(), CaptureError> {
    if !config.is_postgres() {
        return Ok(());
    }
    // An unreachable source is the engine's to report, in its own one line.
    let Ok(now) = crate::source::identity::read(config, "db-sync capture").await else {
        return Ok(());
    };
    match &identity.source {
        None => {
            identity.source = Some(now);
            identity.store(&config.journal.dir)?;
            Ok(())
        }
        Some(was) => {
            let other_cluster = matches!(
                (&was.system_identifier, &now.system_identifier),
                (Some(a), Some(b)) if a != b
            );
            if other_cluster || was.database != now.database || was.slot != now.slot {
                return Err(CaptureError::StateMismatch(format!(
                    "journal {} was captured from {was}, but the source is now {now}: a restored or replaced server's positions mean something else, and its changes would be dropped as already journaled. To capture this source, move {} aside (a new journal takes a full snapshot), or point source: back at the original",
                    config.journal.dir.display(),
                    config.journal.dir.display()
                )));
            }
            Ok(())
        }
    }
}
