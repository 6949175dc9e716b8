//! `db-sync status [--json]`: the journal and audit progress. Never prints a secret.

use serde::Serialize;

use crate::cli::Failure;
use crate::compact::manifest::{Manifest, Window};
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
