//! Jobs and the daemon (`db-sync run`): `jobs/*.yaml` on their cron schedules, beside capture.
//!
//! A job file names a job, its schedule (cron with seconds: `sec min hour day month weekday`)
//! and its kind (`compact`: one [`crate::cycle`]). Guarantees:
//!
//! - **No overlap.** A job never runs twice at once: a tick that comes while the previous
//!   run is still going is skipped and logged. Across processes (a `compact --once` from
//!   system cron or a Kubernetes CronJob), the cycle's lock file serialises them.
//! - **Clean stop.** On SIGINT/SIGTERM capture finishes its batch, and a running job finishes
//!   the chunk in hand (the rest of its window stays pending in the manifest for the next
//!   run); then `run` exits 0.
//! - **Bad files are bad usage.** A bad cron expression or an unknown kind is one line naming
//!   the file and the key, before anything starts (exit 2).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::watch;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::config::{deserialize_tracked, Config};
use crate::error::{Classify, ErrorKind};
use crate::state::jobs::{store_run, JobRun};

/// One job file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    name: String,
    schedule: String,
    kind: JobKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// One compaction cycle: audit, apply, GC.
    Compact,
    /// Roll-up of closed date partitions and retention (`db-sync rollup`).
    Rollup,
}

/// A job as loaded and checked.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub file: PathBuf,
    pub name: String,
    pub schedule: String,
    pub kind: JobKind,
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// A job file that cannot work: bad usage (exit 2).
    #[error("{file}: {message}")]
    Invalid { file: PathBuf, message: String },
    #[error("the job scheduler failed: {0}")]
    Scheduler(String),
}

impl Classify for ScheduleError {
    fn kind(&self) -> ErrorKind {
        match self {
            ScheduleError::Invalid { .. } => ErrorKind::Config,
            ScheduleError::Scheduler(_) => ErrorKind::Permanent,
        }
    }
}

/// The jobs in `dir` (`*.yaml` / `*.yml`, by file name), each checked: keys, kind, schedule.
/// A missing directory holds no jobs.
pub fn load_jobs(dir: &Path) -> Result<Vec<JobSpec>, ScheduleError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut jobs: Vec<JobSpec> = Vec::new();
    for file in files {
        let invalid = |message: String| ScheduleError::Invalid {
            file: file.clone(),
            message,
        };
        let raw =
            std::fs::read_to_string(&file).map_err(|e| invalid(format!("cannot read: {e}")))?;
        let job: JobFile = deserialize_tracked(&raw, &|name| std::env::var(name).ok()).map_err(
            |(key, message)| {
                if key.is_empty() || key == "." {
                    invalid(message)
                } else {
                    invalid(format!("`{key}` {message}"))
                }
            },
        )?;
        if let Err(e) = Job::new_async(job.schedule.as_str(), |_, _| Box::pin(async {})) {
            return Err(invalid(format!(
                "`schedule` {:?} is not a cron expression with seconds ({e:?}); e.g. \"0 * * * * *\" runs every minute",
                job.schedule
            )));
        }
        if let Some(other) = jobs.iter().find(|j| j.name == job.name) {
            return Err(invalid(format!(
                "`name` {:?} is also the name of the job in {}",
                job.name,
                other.file.display()
            )));
        }
        jobs.push(JobSpec {
            file: file.clone(),
            name: job.name,
            schedule: job.schedule,
            kind: job.kind,
        });
    }
    Ok(jobs)
}

/// Runs `jobs` on their schedules until `shutdown` turns true, then waits for running jobs
/// to stop at their next chunk boundary.
pub async fn run_jobs(
    config: Arc<Config>,
    jobs: Vec<JobSpec>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ScheduleError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let err =
        |e: tokio_cron_scheduler::JobSchedulerError| ScheduleError::Scheduler(format!("{e:?}"));
    let scheduler = JobScheduler::new().await.map_err(err)?;
    let mut running_flags = Vec::new();
    for spec in jobs {
        let running = Arc::new(AtomicBool::new(false));
        running_flags.push(running.clone());
        let config = config.clone();
        let stop = shutdown.clone();
        let name = spec.name.clone();
        let job = Job::new_async(spec.schedule.as_str(), move |_, _| {
            let (config, stop, name, running) =
                (config.clone(), stop.clone(), name.clone(), running.clone());
            Box::pin(async move {
                if *stop.borrow() {
                    return;
                }
                if running.swap(true, Ordering::SeqCst) {
                    tracing::warn!(job = %name, "the previous run is still going; skipping this tick");
                    return;
                }
                run_job(&config, &name, spec.kind, &stop).await;
                running.store(false, Ordering::SeqCst);
            })
        })
        .map_err(err)?;
        scheduler.add(job).await.map_err(err)?;
        tracing::info!(job = %spec.name, schedule = %spec.schedule, file = %spec.file.display(), "scheduled");
    }
    scheduler.start().await.map_err(err)?;
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
    let mut scheduler = scheduler;
    scheduler.shutdown().await.map_err(err)?;
    // A job that is running stops at its next chunk boundary.
    while running_flags.iter().any(|r| r.load(Ordering::SeqCst)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn run_job(config: &Config, name: &str, kind: JobKind, stop: &watch::Receiver<bool>) {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339();
    let result = match kind {
        JobKind::Compact => match crate::cycle::run_until(config, Some(stop))
            .await
            .inspect(|s| {
                let rows = s.apply.as_ref().map_or(0, |a| a.rows);
                crate::metrics::cycle_done(started.elapsed().as_secs_f64(), Ok(rows))
            })
            .inspect_err(|e| {
                crate::metrics::cycle_done(started.elapsed().as_secs_f64(), Err(e.to_string()))
            }) {
            Ok(s) if s.did_nothing() => {
                tracing::debug!(job = %name, "nothing new to compact");
                "nothing new".to_string()
            }
            Ok(s) => {
                tracing::info!(
                    job = %name,
                    audited = s.audit.as_ref().map_or(0, |a| a.events),
                    applied_rows = s.apply.as_ref().map_or(0, |a| a.rows),
                    segments_deleted = s.segments_deleted,
                    seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
                    "job done"
                );
                if *stop.borrow() { "stopped" } else { "ok" }.to_string()
            }
            Err(e) => {
                tracing::error!(job = %name, "job failed: {e}");
                format!("failed: {e}")
            }
        },
        JobKind::Rollup => crate::audit::rollup::job(config, name).await,
    };
    if config.journal.dir.is_dir() {
        store_run(
            &config.journal.dir,
            JobRun {
                name: name.to_string(),
                started_at,
                seconds: started.elapsed().as_secs_f64(),
                result,
            },
        );
    }
}
