//! `identity.json`: which journal this is and which source it captures.
//!
//! A journal's identity is created with it. Apply's checkpoint rows and the audit file names
//! carry it, so a new journal (a new host, a wiped state directory) never finds an earlier
//! journal's checkpoint rows and skips its chunks, and never writes over its audit files. A new
//! journal also numbers its events after the highest sequence the audit store holds
//! (`first_seq`), so `_cdc_seq` keeps ordering changes across journals.
//!
//! The source's identity (PostgreSQL's system identifier, the database, the slot) is recorded
//! on the first capture; a later capture from another source is refused instead of having its
//! changes de-duplicated away by position.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{read_json, write_atomic, StateError};

pub const FILE: &str = "identity.json";

/// The identity of the journal in a state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Random hex, created with the journal. Empty for a journal created before identities
    /// existed: its checkpoint rows and files keep the names they had.
    pub journal: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// The journal's first sequence number.
    pub first_seq: u64,
    /// The source the journal captures, recorded on its first capture.
    #[serde(default)]
    pub source: Option<SourceIdentity>,
    /// The last resync of this journal: the replication slot was lost, and capture took a
    /// new slot and a full snapshot into this journal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync: Option<Resync>,
    /// The included tables (`schema.table`) as of the last capture start: a table added to
    /// the include list since is snapshotted alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<String>>,
}

/// A resync: why, since when, and when its snapshot completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resync {
    /// What happened to the slot, one line.
    pub reason: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339; `None` while the snapshot runs.
    #[serde(default)]
    pub completed_at: Option<String>,
}

impl Resync {
    pub fn in_progress(&self) -> bool {
        self.completed_at.is_none()
    }
}

/// What identifies a source: for PostgreSQL, the cluster, the database and the slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceIdentity {
    /// `pg_control_system().system_identifier`, when the user may read it.
    pub system_identifier: Option<String>,
    pub database: String,
    pub slot: String,
}

impl std::fmt::Display for SourceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "database {} slot {} (system identifier {})",
            self.database,
            self.slot,
            self.system_identifier.as_deref().unwrap_or("unknown")
        )
    }
}

impl Identity {
    /// The identity in `dir`, if one was written.
    pub fn load(dir: &Path) -> Result<Option<Identity>, StateError> {
        read_json(&dir.join(FILE))
    }

    pub fn store(&self, dir: &Path) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(self).expect("identity serializes");
        write_atomic(dir, FILE, &bytes)
    }

    /// A new journal's identity, numbering from `first_seq`.
    pub fn new(first_seq: u64) -> Identity {
        Identity {
            journal: random_id(),
            created_at: chrono::Utc::now().to_rfc3339(),
            first_seq,
            source: None,
            resync: None,
            tables: None,
        }
    }

    /// The identity of a journal from before identities: no id, so nothing it named changes.
    pub fn legacy() -> Identity {
        Identity {
            journal: String::new(),
            created_at: chrono::Utc::now().to_rfc3339(),
            first_seq: 1,
            source: None,
            resync: None,
            tables: None,
        }
    }

    /// The key of this journal's rows in `_db_sync_checkpoint`: the pipeline name, and the
    /// journal's id when it has one.
    pub fn checkpoint_key(&self, pipeline: &str) -> String {
        if self.journal.is_empty() {
            pipeline.to_string()
        } else {
            format!("{pipeline}:{}", self.journal)
        }
    }
}

/// The checkpoint key of the journal in `dir` (the pipeline name without an identity file).
pub fn checkpoint_key(dir: &Path, pipeline: &str) -> Result<String, StateError> {
    Ok(match Identity::load(dir)? {
        Some(id) => id.checkpoint_key(pipeline),
        None => pipeline.to_string(),
    })
}

/// The journal id that names this journal's audit files ("" without an identity).
pub fn journal_id(dir: &Path) -> Result<String, StateError> {
    Ok(Identity::load(dir)?.map(|i| i.journal).unwrap_or_default())
}

/// 12 hex digits from the OS's random source (time and process id if it cannot be read).
fn random_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 6];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        let t = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
        let mixed = t ^ (u64::from(std::process::id()) << 32);
        bytes.copy_from_slice(&mixed.to_le_bytes()[..6]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_and_name_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Identity::load(dir.path()).unwrap(), None);
        assert_eq!(checkpoint_key(dir.path(), "shop").unwrap(), "shop");
        let id = Identity::new(42);
        assert_eq!(id.journal.len(), 12);
        assert_ne!(id.journal, Identity::new(1).journal);
        id.store(dir.path()).unwrap();
        assert_eq!(Identity::load(dir.path()).unwrap().as_ref(), Some(&id));
        assert_eq!(
            checkpoint_key(dir.path(), "shop").unwrap(),
            format!("shop:{}", id.journal)
        );
        assert_eq!(Identity::legacy().checkpoint_key("shop"), "shop");
    }
}
