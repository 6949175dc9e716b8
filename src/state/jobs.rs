//! The last run of each scheduled job (`jobs-state.json`), which `status` shows.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{read_json, write_atomic};

pub const FILE: &str = "jobs-state.json";

/// The last run of one job, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRun {
    pub name: String,
    /// RFC 3339 time the run started.
    pub started_at: String,
    pub seconds: f64,
    /// `ok`, `nothing new`, `stopped` or the one-line error.
    pub result: String,
}

/// The last run of every job that has run, by name; none when the file is missing or unreadable
/// (it only feeds `status`).
pub fn load_runs(dir: &Path) -> Vec<JobRun> {
    read_json(&dir.join(FILE))
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Records `run`, replacing the job's previous one. A failure is a warning: the job itself ran.
pub fn store_run(dir: &Path, run: JobRun) {
    let mut runs = load_runs(dir);
    runs.retain(|r| r.name != run.name);
    runs.push(run);
    runs.sort_by(|a, b| a.name.cmp(&b.name));
    let bytes = serde_json::to_vec_pretty(&runs).expect("job runs serialize");
    if let Err(e) = write_atomic(dir, FILE, &bytes) {
        tracing::warn!("cannot record the job run for `status`: {e}");
    }
}
