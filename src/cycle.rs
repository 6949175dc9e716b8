//! One compaction cycle (`db-sync compact --once`, and each scheduled run): audit, apply, then
//! journal GC, under one lock.
//!
//! [`run_once`] holds `compact.lock` in the state directory for the whole cycle, so two
//! processes (a daemon and a cron-started `compact --once`) never work on one journal at
//! once: the second waits, without blocking the async runtime, and a stop request ends the
//! wait ([`locks::compact_lock`]). Each stage keeps its own guarantee
//! ([`crate::audit::writer`], [`crate::apply`]); GC then deletes only sealed segments that
//! are audited, applied (when a target is configured) and older than `journal.retain_hours`
//! ([`state::collectable_through`]).
//!
//! A table apply holds out (the target refused one of its rows, [`state::Hold`]) does not
//! fail the cycle: the others went on. The cycle's [`Summary`] names it; `compact --once`
//! exits 1 with its line, and the daemon shows it in `status`, `/metrics` and `/healthz`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::apply::{self, ApplyError};
use crate::audit::{self, AuditRunError};
use crate::config::Config;
use crate::error::{Classify, ErrorKind};
use crate::journal::{self, JournalError};
use crate::state::{self, locks, ApplyProgress, AuditProgress, Hold, StateError};

#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error(transparent)]
    Audit(#[from] AuditRunError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    State(#[from] StateError),
}

impl Classify for CycleError {
    fn kind(&self) -> ErrorKind {
        match self {
            CycleError::Audit(e) => e.kind(),
            CycleError::Apply(e) => e.kind(),
            CycleError::Journal(e) => e.kind(),
            CycleError::State(e) => e.kind(),
        }
    }
}

/// What one cycle did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub audit: Option<audit::Summary>,
    pub apply: Option<apply::Summary>,
    pub segments_deleted: usize,
    /// Tables apply holds out because the target refused one of their rows (see
    /// [`state::Hold`]): the cycle went on with the others, and the target differs in these.
    pub held: BTreeMap<String, Hold>,
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
    // Waiting for another process's lock (a backfill, say) blocks nothing else in the daemon,
    // and a stop request ends the wait.
    let lock = match stop {
        Some(stop) => locks::compact_lock_until(dir, stop).await?,
        None => Some(locks::compact_lock(dir).await?),
    };
    let Some(_lock) = lock else {
        tracing::info!("stopped while waiting for compact.lock; nothing done");
        return Ok(Summary::default());
    };
    let audit = audit::audit_once(config).await?;
    let apply = apply::apply_audited(config, stop).await?;
    let applied = ApplyProgress::load(dir)?;
    let segments_deleted = collect_garbage(config, &applied)?;
    crate::guard::warn_if_over(config).await;
    let held = match config.target {
        Some(_) => applied.held,
        None => BTreeMap::new(),
    };
    Ok(Summary {
        audit,
        apply,
        segments_deleted,
        held,
    })
}

/// Journal GC: sealed segments audited, applied (with a target) and past `retain_hours`.
fn collect_garbage(config: &Config, applied: &ApplyProgress) -> Result<usize, CycleError> {
    let dir = &config.journal.dir;
    let through =
        state::collectable_through(&AuditProgress::load(dir)?, applied, config.target.is_some());
    let cutoff = SystemTime::now() - Duration::from_secs(config.journal.retain_hours * 3600);
    let deleted = journal::delete_segments_through(dir, through, cutoff)?;
    for path in &deleted {
        tracing::info!(segment = %path.display(), "deleted audited and applied journal segment");
    }
    Ok(deleted.len())
}
