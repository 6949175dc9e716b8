//! `db-sync status [--json]`: the journal and audit progress. Never prints a secret.

use serde::Serialize;

use crate::cli::Failure;
use crate::compact::manifest::{ApplyWindow, Manifest, Window};
use crate::config::Config;
use crate::journal;

#[derive(Debug, Serialize)]
pub struct Status {
    pub pipeline: String,
    pub journal_dir: String,
    pub segments: usize,
    pub journal_bytes: u64,
    /// The next sequence capture will assign minus one (0: empty journal).
    pub last_journaled_seq: u64,
    pub sealed_through: u64,
    pub audited_through: u64,
    pub audit_pending: Option<Window>,
    pub audit_lag_events: u64,
    pub audit_url: String,
    pub last_audit_window: Option<Window>,
    /// Whether `target:` is configured; the apply fields below stay at zero without one.
    pub target_configured: bool,
    pub applied_through: u64,
    pub apply_pending: Option<ApplyWindow>,
    pub apply_lag_events: u64,
    pub last_apply_window: Option<ApplyWindow>,
    /// Tables apply skips: they have no primary key.
    pub tables_skipped_by_apply: Vec<String>,
    /// The last run of each scheduled job (`db-sync run`).
    pub jobs: Vec<crate::schedule::JobRun>,
}

pub fn collect(config: &Config) -> Result<Status, Failure> {
    let dir = &config.journal.dir;
    let segments = if dir.is_dir() {
        journal::segments(dir).map_err(|e| Failure::runtime(e.to_string()))?
    } else {
        Vec::new()
    };
    let manifest = if dir.is_dir() {
        Manifest::load(dir).map_err(|e| Failure::runtime(e.to_string()))?
    } else {
        Manifest::default()
    };
    let mut last = 0;
    journal::read_events(dir, segments.last().map_or(0, |s| s.first_seq), |e| {
        last = e.seq;
        Ok(true)
    })
    .or_else(|e| if dir.is_dir() { Err(e) } else { Ok(()) })
    .map_err(|e| Failure::runtime(e.to_string()))?;
    if last == 0 {
        last = segments.last().map_or(0, |s| s.first_seq.saturating_sub(1));
    }
    let sealed_through = segments.iter().rev().find_map(|s| s.last_seq).unwrap_or(0);
    Ok(Status {
        pipeline: config.name.clone(),
        journal_dir: dir.display().to_string(),
        segments: segments.len(),
        journal_bytes: segments.iter().map(|s| s.bytes).sum(),
        last_journaled_seq: last,
        sealed_through,
        audited_through: manifest.audited_through,
        audit_pending: manifest.pending.clone(),
        audit_lag_events: last.saturating_sub(manifest.audited_through),
        audit_url: config.audit.url.clone(),
        last_audit_window: manifest.windows.last().cloned(),
        target_configured: config.target.is_some(),
        applied_through: manifest.applied_through,
        apply_pending: manifest.apply_pending.clone(),
        apply_lag_events: if config.target.is_some() {
            last.saturating_sub(manifest.applied_through)
        } else {
            0
        },
        last_apply_window: manifest.last_apply.clone(),
        tables_skipped_by_apply: manifest.skipped_tables.iter().cloned().collect(),
        jobs: crate::schedule::load_runs(dir),
    })
}

pub fn run(config: &Config, json: bool) -> Result<(), Failure> {
    let s = collect(config)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&s).expect("status serializes")
        );
        return Ok(());
    }
    println!("pipeline         {}", s.pipeline);
    println!(
        "journal          {} ({} segment(s), {} bytes)",
        s.journal_dir, s.segments, s.journal_bytes
    );
    println!("last journaled   seq {}", s.last_journaled_seq);
    println!("sealed through   seq {}", s.sealed_through);
    println!(
        "audited through  seq {} ({} events behind) at {}",
        s.audited_through, s.audit_lag_events, s.audit_url
    );
    if s.target_configured {
        println!(
            "applied through  seq {} ({} events behind){}",
            s.applied_through,
            s.apply_lag_events,
            if s.apply_pending.is_some() {
                "; a window is being applied"
            } else {
                ""
            }
        );
        if !s.tables_skipped_by_apply.is_empty() {
            println!(
                "skipped by apply {} (no primary key)",
                s.tables_skipped_by_apply.join(", ")
            );
        }
    }
    for j in &s.jobs {
        println!(
            "job {:<12} last run {} ({:.1}s): {}",
            j.name, j.started_at, j.seconds, j.result
        );
    }
    if let Some(p) = &s.audit_pending {
        println!(
            "audit pending    seq {}..={} (an interrupted compaction; the next run redoes it)",
            p.from, p.to
        );
    }
    if let Some(w) = &s.last_audit_window {
        println!(
            "last compaction  seq {}..={}: {} events, {} file(s), finished {}",
            w.from,
            w.to,
            w.events,
            w.files,
            w.finished_at.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}
