//! Jobs and the daemon (`db-sync run`): `jobs/*.yaml` on their cron schedules, beside capture.
//!
//! `jobs_dir` (default `jobs/`) holds one YAML file per job, with exactly three keys: `name`,
//! `schedule` (cron with seconds: `sec min hour day month weekday`, in UTC) and `kind`:
//! `compact` (one [`crate::cycle`]) or `rollup` ([`crate::audit::rollup`]). Guarantees:
//!
//! - **No overlap.** A job never runs twice at once: a tick that comes while the previous
//!   run is still going is skipped and logged. Across processes (a `compact --once` from
//!   system cron or a Kubernetes CronJob), the cycle's lock file serialises them.
//! - **Clean stop.** On SIGINT/SIGTERM capture finishes its batch, and a running job finishes
//!   the chunk in hand (the rest of its window stays pending in `apply-progress.json` for the
//!   next run); then `run` exits 0.
//! - **Bad files are bad usage.** A bad cron expression or an unknown kind is one line naming
//!   the file and the key, before anything starts (exit 2).
//! - **A failed run is retried or stops the daemon, by its kind** ([`on_job_failure`]). A
//!   [`Transient`](ErrorKind::Transient) failure (the target or the audit store unreachable, a
//!   lock held) is logged, counted (`db_sync_cycle_failures_total`, `/healthz`) and retried at
//!   the next tick: capture goes on journaling meanwhile, and the next cycle picks up where
//!   this one stopped. A [`Config`](ErrorKind::Config) or
//!   [`Permanent`](ErrorKind::Permanent) failure (a setting, a target table that does not
//!   fit, a corrupt journal) would fail the same way at every tick, so it stops the
//!   daemon like a signal does (capture finishes its batch) and `run` exits with the error's
//!   one line and its kind's exit code; the journal keeps every change not yet applied, and
//!   the next start after the fix goes on from there. While the daemon is stopped the source
//!   keeps the WAL the slot has not confirmed (the slot guard's concern): fix and restart.
//!   A roll-up job's failure is logged and recorded, and never stops the daemon. A row the
//!   target refuses for its values does not fail the cycle: it holds its table out of apply
//!   ([`crate::state::Hold`]), and the cycle goes on with the others.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::watch;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::config::{deserialize_tracked, Config};
use crate::cycle::CycleError;
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
    Scheduler(#[source] JobSchedulerError),
    /// A job failed in a way a retry cannot mend; the daemon stopped (see the module doc).
    #[error("job {job} failed, and the daemon stopped: {source}")]
    Job {
        job: String,
        source: Box<CycleError>,
    },
}

impl Classify for ScheduleError {
    fn kind(&self) -> ErrorKind {
        match self {
            ScheduleError::Invalid { .. } => ErrorKind::Config,
            ScheduleError::Scheduler(_) => ErrorKind::Permanent,
            ScheduleError::Job { source, .. } => source.kind(),
        }
    }
}

/// What the daemon does after a job's run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Log it, count it, run again at the next tick.
    Retry,
    /// Stop the daemon with the error (exit code by its kind).
    Stop,
}

/// The daemon's policy for a failed job run, by the failure's kind (see the module doc).
pub fn on_job_failure(kind: ErrorKind) -> Action {
    match kind {
        ErrorKind::Transient => Action::Retry,
        ErrorKind::Config | ErrorKind::Permanent => Action::Stop,
    }
}

/// The longest gap between the next few ticks of the compact jobs' schedules (the longest
/// job's); `None` without a compact job. `/healthz` calls a pipeline unhealthy when no cycle
/// succeeded within three of them.
pub fn compact_period(jobs: &[JobSpec]) -> Option<Duration> {
    let parser = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build();
    let now = chrono::Utc::now();
    jobs.iter()
        .filter(|j| j.kind == JobKind::Compact)
        .filter_map(|j| {
            let cron = parser.parse(&j.schedule).ok()?;
            let ticks: Vec<_> = cron.iter_after(now).take(4).collect();
            ticks
                .windows(2)
                .filter_map(|w| (w[1] - w[0]).to_std().ok())
                .max()
        })
        .min()
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
/// to stop at their next chunk boundary. A job failure that calls for a stop
/// ([`on_job_failure`]) turns `shutdown` true itself (capture stops too) and is returned.
pub async fn run_jobs(
    config: Arc<Config>,
    jobs: Vec<JobSpec>,
    shutdown: watch::Sender<bool>,
) -> Result<(), ScheduleError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let scheduler = JobScheduler::new()
        .await
        .map_err(ScheduleError::Scheduler)?;
    let failed: Arc<Mutex<Option<ScheduleError>>> = Arc::default();
    let mut running_flags = Vec::new();
    for spec in jobs {
        let running = Arc::new(AtomicBool::new(false));
        running_flags.push(running.clone());
        let job = scheduled(&config, &spec, running, &shutdown, &failed)?;
        scheduler.add(job).await.map_err(ScheduleError::Scheduler)?;
        tracing::info!(job = %spec.name, schedule = %spec.schedule, file = %spec.file.display(), "scheduled");
    }
    scheduler.start().await.map_err(ScheduleError::Scheduler)?;
    let mut stop = shutdown.subscribe();
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            break;
        }
    }
    let mut scheduler = scheduler;
    scheduler
        .shutdown()
        .await
        .map_err(ScheduleError::Scheduler)?;
    // A job that is running stops at its next chunk boundary.
    while running_flags.iter().any(|r| r.load(Ordering::SeqCst)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failure = failed.lock().unwrap_or_else(|p| p.into_inner()).take();
    failure.map_or(Ok(()), Err)
}

/// The cron job of `spec`: skips a tick while its previous run goes on; on a failure that
/// calls for a stop, records it in `failed` and turns `shutdown` true.
fn scheduled(
    config: &Arc<Config>,
    spec: &JobSpec,
    running: Arc<AtomicBool>,
    shutdown: &watch::Sender<bool>,
    failed: &Arc<Mutex<Option<ScheduleError>>>,
) -> Result<Job, ScheduleError> {
    let (config, shutdown, failed) = (config.clone(), shutdown.clone(), failed.clone());
    let (name, kind) = (spec.name.clone(), spec.kind);
    Job::new_async(spec.schedule.as_str(), move |_, _| {
        let (config, shutdown, failed, name, running) = (
            config.clone(),
            shutdown.clone(),
            failed.clone(),
            name.clone(),
            running.clone(),
        );
        Box::pin(async move {
            let stop = shutdown.subscribe();
            if *stop.borrow() {
                return;
            }
            if running.swap(true, Ordering::SeqCst) {
                tracing::warn!(job = %name, "the previous run is still going; skipping this tick");
                return;
            }
            if let Some(e) = run_job(&config, &name, kind, &stop).await {
                let mut slot = failed.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert(ScheduleError::Job {
                    job: name.clone(),
                    source: Box::new(e),
                });
                let _ = shutdown.send(true);
            }
            running.store(false, Ordering::SeqCst);
        })
    })
    .map_err(ScheduleError::Scheduler)
}

/// Runs one job and records the run; returns the failure that must stop the daemon, if any.
async fn run_job(
    config: &Config,
    name: &str,
    kind: JobKind,
    stop: &watch::Receiver<bool>,
) -> Option<CycleError> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339();
    let (result, stop_with) = match kind {
        JobKind::Compact => compact(config, name, stop, started).await,
        JobKind::Rollup => (crate::retention::job(config, name).await, None),
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
    stop_with
}

/// One compaction cycle as a job: the run's result line, and the failure that must stop the
/// daemon ([`on_job_failure`]), if any.
async fn compact(
    config: &Config,
    name: &str,
    stop: &watch::Receiver<bool>,
    started: Instant,
) -> (String, Option<CycleError>) {
    let outcome = crate::cycle::run_until(config, Some(stop)).await;
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(s) => {
            crate::metrics::cycle_done(seconds, Ok(s.apply.as_ref().map_or(0, |a| a.rows)));
            // Each hold was logged when it began; `status` and `/healthz` show it until a
            // backfill ends it.
            let holding = match s.held.keys().cloned().collect::<Vec<_>>() {
                tables if tables.is_empty() => String::new(),
                tables => format!("; holding {}", tables.join(", ")),
            };
            if s.did_nothing() {
                tracing::debug!(job = %name, "nothing new to compact");
                return (format!("nothing new{holding}"), None);
            }
            tracing::info!(
                job = %name,
                audited = s.audit.as_ref().map_or(0, |a| a.events),
                applied_rows = s.apply.as_ref().map_or(0, |a| a.rows),
                segments_deleted = s.segments_deleted,
                seconds = format!("{seconds:.2}"),
                "job done"
            );
            let result = if *stop.borrow() { "stopped" } else { "ok" };
            (format!("{result}{holding}"), None)
        }
        Err(e) => {
            crate::metrics::cycle_done(seconds, Err(&e));
            let result = format!("failed: {e}");
            match on_job_failure(e.kind()) {
                Action::Retry => {
                    tracing::warn!(job = %name, "job failed; it runs again at the next tick: {e}");
                    (result, None)
                }
                Action::Stop => {
                    tracing::error!(job = %name, "job failed, and a retry cannot mend it; stopping the daemon: {e}");
                    (result, Some(e))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_are_retried_and_the_others_stop_the_daemon() {
        assert_eq!(on_job_failure(ErrorKind::Transient), Action::Retry);
        assert_eq!(on_job_failure(ErrorKind::Config), Action::Stop);
        assert_eq!(on_job_failure(ErrorKind::Permanent), Action::Stop);
    }

    #[test]
    fn the_period_is_the_gap_between_ticks() {
        let job = |schedule: &str, kind| JobSpec {
            file: "j.yaml".into(),
            name: "compact".into(),
            schedule: schedule.into(),
            kind,
        };
        assert_eq!(
            compact_period(&[job("*/5 * * * * *", JobKind::Compact)]),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            compact_period(&[job("0 * * * * *", JobKind::Compact)]),
            Some(Duration::from_secs(60))
        );
        assert_eq!(compact_period(&[job("0 * * * * *", JobKind::Rollup)]), None);
        assert_eq!(compact_period(&[]), None);
    }
}
