//! One compaction cycle (`db-sync compact --once`, and each scheduled run): audit, apply, then
//! journal GC, under one lock.
//!
//! [`run_once`] holds `compact.lock` in the journal directory for the whole cycle, so two
//! processes (a daemon and a cron-started `compact --once`) never work on one journal at
//! once: the second waits. Each stage keeps its own guarantee ([`crate::compact`],
//! [`crate::apply`]); GC then deletes only sealed segments that are audited, applied (when a
//! target is configured) and older than `journal.retain_hours`.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::apply::{self, ApplyError};
use crate::compact::manifest::Manifest;
use crate::compact::{self, CompactError};
use crate::config::Config;
use crate::journal::{self, JournalError};

const COMPACT_LOCK: &str = "compact.lock";

#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error(transparent)]
    Compact(#[from] CompactError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// What one cycle did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub audit: Option<compact::Summary>,
    pub apply: Option<apply::Summary>,
    pub segments_deleted: usize,
}

impl Summary {
    pub fn did_nothing(&self) -> bool {
        self.audit.is_none() && self.apply.is_none() && self.segments_deleted == 0
    }
}

/// Runs one cycle: audit what is sealed, apply what is audited, collect garbage.
pub async fn run_once(config: &Config) -> Result<Summary, CycleError> {
    run_until(config, None).await
}

/// [`run_once`] that stops applying at the next chunk boundary once `stop` turns true (the
/// window stays pending; the next cycle finishes it).
pub async fn run_until(
    config: &Config,
    stop: Option<&tokio::sync::watch::Receiver<bool>>,
) -> Result<Summary, CycleError> {
    let dir = &config.journal.dir;
    if !dir.is_dir() {
        tracing::info!(journal = %dir.display(), "no journal yet; nothing to compact");
        return Ok(Summary::default());
    }
    let _lock = lock(dir)?;
    let audit = compact::audit_once(config).await?;
    let apply = apply::apply_audited(config, stop).await?;
    let segments_deleted = collect_garbage(config)?;
    Ok(Summary {
        audit,
        apply,
        segments_deleted,
    })
}

/// Holds the compaction lock; a second holder waits for the first.
pub(crate) fn lock(dir: &Path) -> Result<std::fs::File, JournalError> {
    let path = dir.join(COMPACT_LOCK);
    if let Some(file) = journal::try_lock_file(&path)? {
        return Ok(file);
    }
    tracing::info!(
        "another compaction holds {}; waiting for it",
        path.display()
    );
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| JournalError::io(&path, e))?;
    file.lock().map_err(|e| JournalError::io(&path, e))?;
    Ok(file)
}

/// Journal GC: sealed segments audited, applied (with a target) and past `retain_hours`.
fn collect_garbage(config: &Config) -> Result<usize, CycleError> {
    let manifest = Manifest::load(&config.journal.dir).map_err(CompactError::from)?;
    let through = manifest.collectable_through(config.target.is_some());
    let cutoff = SystemTime::now() - Duration::from_secs(config.journal.retain_hours * 3600);
    let deleted = journal::delete_segments_through(&config.journal.dir, through, cutoff)?;
    for path in &deleted {
        tracing::info!(segment = %path.display(), "deleted audited and applied journal segment");
    }
    Ok(deleted.len())
}
