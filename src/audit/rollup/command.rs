//! `db-sync rollup [--table SCHEMA.TABLE] [--date YYYY-MM-DD]` and the job kind `rollup`: the
//! command-line and job faces of [`rollup`] (merge closed date partitions, apply
//! `audit.retain_days`).

use super::{rollup, Options, RollupError, Summary};
use crate::config::Config;

/// Runs one roll-up and prints what it did (one line).
pub fn run(config: &Config, opts: &Options) -> Result<(), RollupError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(RollupError::Runtime)?;
    let started = std::time::Instant::now();
    let s = rt.block_on(rollup(config, opts))?;
    println!(
        "{} in {:.1}s",
        describe(&s),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The job kind `rollup`: the result line `jobs-state.json` keeps.
pub async fn job(config: &Config, name: &str) -> String {
    let started = std::time::Instant::now();
    match rollup(config, &Options::default()).await {
        Ok(s) => {
            tracing::info!(job = %name, seconds = format!("{:.2}", started.elapsed().as_secs_f64()), "{}", describe(&s));
            if s.waited_for_compaction {
                "waited: a compaction window is pending".to_string()
            } else {
                "ok".to_string()
            }
        }
        Err(e) => {
            tracing::error!(job = %name, "job failed: {e}");
            format!("failed: {e}")
        }
    }
}

fn describe(s: &Summary) -> String {
    if s.waited_for_compaction {
        return "rolled up nothing: a compaction window is unfinished; the next compaction cycle finishes it, then run rollup again".into();
    }
    let mut out = format!(
        "rolled up {} closed date partition(s): {} file(s) merged into {} ({} rows)",
        s.partitions, s.files_merged, s.files_written, s.rows
    );
    if s.leftovers_deleted > 0 {
        out.push_str(&format!(
            "; {} file(s) left by an interrupted roll-up deleted",
            s.leftovers_deleted
        ));
    }
    if s.expired_partitions > 0 {
        out.push_str(&format!(
            "; retention folded {} expired partition(s) into the {} change(s) the state reads: {} file(s) deleted, {} rewritten, {} bytes freed",
            s.expired_partitions, s.folded_rows, s.expired_files, s.folded_files, s.expired_bytes
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    /// The shipped `jobs/rollup.yaml` loads as the kind `rollup`, beside `jobs/compact.yaml`.
    #[test]
    fn the_shipped_rollup_job_loads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
        let jobs = crate::schedule::load_jobs(&dir).unwrap();
        let rollup = jobs
            .iter()
            .find(|j| j.name == "rollup")
            .expect("jobs/rollup.yaml");
        assert_eq!(rollup.kind, crate::schedule::JobKind::Rollup);
        assert_eq!(rollup.schedule, "0 30 0 * * *");
        assert!(jobs
            .iter()
            .any(|j| j.kind == crate::schedule::JobKind::Compact));
    }
}
