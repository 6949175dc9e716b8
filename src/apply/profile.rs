//! Where apply's time goes (README "Apply" profile): seconds per step, summed over the
//! connections that apply chunks at once, so the steps can add up to more than the wall time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Profile {
    /// Waiting for the journal of a window to be decoded and merged.
    merge_wait: AtomicU64,
    /// Target tables described, created or altered.
    tables: AtomicU64,
    /// Chunk rows rendered as LOAD DATA text.
    render: AtomicU64,
    /// The statements that write rows (LOAD DATA, INSERT, DELETE, moves, sweeps), rendering
    /// included (taken out when read).
    write: AtomicU64,
    /// START TRANSACTION and the checkpoint row.
    checkpoint: AtomicU64,
    /// COMMIT (the server's log flush).
    commit: AtomicU64,
}

/// Which step a duration belongs to.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    MergeWait,
    Tables,
    Render,
    Write,
    Checkpoint,
    Commit,
}

impl Profile {
    pub fn add(&self, step: Step, d: Duration) {
        let counter = match step {
            Step::MergeWait => &self.merge_wait,
            Step::Tables => &self.tables,
            Step::Render => &self.render,
            Step::Write => &self.write,
            Step::Checkpoint => &self.checkpoint,
            Step::Commit => &self.commit,
        };
        counter.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Adds the time since `since` to `step` and returns now.
    pub fn lap(&self, step: Step, since: Instant) -> Instant {
        let now = Instant::now();
        self.add(step, now - since);
        now
    }

    pub fn seconds(&self) -> Seconds {
        let s = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / 1e9;
        Seconds {
            merge_wait: s(&self.merge_wait),
            tables: s(&self.tables),
            render: s(&self.render),
            // Rendering happens inside the write step of a LOAD DATA chunk.
            write: (s(&self.write) - s(&self.render)).max(0.0),
            checkpoint: s(&self.checkpoint),
            commit: s(&self.commit),
        }
    }
}

/// A [`Profile`] read out, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Seconds {
    pub merge_wait: f64,
    pub tables: f64,
    pub render: f64,
    pub write: f64,
    pub checkpoint: f64,
    pub commit: f64,
}

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "waiting for the merge {:.2}s, tables {:.2}s, rendering {:.2}s, writing {:.2}s, checkpoint rows {:.2}s, commits {:.2}s",
            self.merge_wait, self.tables, self.render, self.write, self.checkpoint, self.commit
        )
    }
}
