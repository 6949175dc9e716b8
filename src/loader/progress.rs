//! `loader-progress.json`: the load's plan and which of its ranges are journaled, in the
//! state directory, written whole (temporary file, fsync, rename) after every range.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{journaled_id, ranges_of, LoadError, Table};
use crate::journal::{read_events, Journal};
use crate::state;

pub const PROGRESS_FILE: &str = "loader-progress.json";

/// Pages `start..end` of leaf `leaf` of table `table` (`end` open for a leaf's last range).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Range {
    pub table: usize,
    pub leaf: usize,
    pub start: u32,
    pub end: Option<u32>,
}

/// The range being appended, and the journal's next sequence before its append.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct InFlight {
    pub range: usize,
    pub seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    /// The slot's consistent point when the load began.
    pub slot_lsn: u64,
    /// The tables, by name, that `ranges` index.
    pub tables: Vec<String>,
    pub ranges: Vec<Range>,
    pub done: Vec<bool>,
    pub in_flight: Option<InFlight>,
    /// Ranges a crash cut short in their append and not yet read again: kept until done, so
    /// a second crash before that still knows which of their rows are journaled.
    #[serde(default)]
    pub torn: Vec<InFlight>,
    pub complete: bool,
    /// Rows journaled so far.
    pub rows: u64,
}

impl Progress {
    /// A new plan for `tables`.
    pub fn plan(tables: &[Table], slot_lsn: u64, range_pages: u32) -> Progress {
        let ranges: Vec<Range> = tables
            .iter()
            .enumerate()
            .flat_map(|(i, t)| ranges_of(i, &t.leaves, range_pages))
            .collect();
        Progress {
            slot_lsn,
            tables: tables.iter().map(|t| t.name.clone()).collect(),
            done: vec![false; ranges.len()],
            ranges,
            in_flight: None,
            torn: Vec::new(),
            complete: false,
            rows: 0,
        }
    }

    pub fn load(dir: &Path) -> Result<Option<Progress>, LoadError> {
        Ok(state::read_json(&dir.join(PROGRESS_FILE))?)
    }

    pub fn store(&self, dir: &Path) -> Result<(), LoadError> {
        let bytes = serde_json::to_vec(self).expect("progress serializes");
        Ok(state::write_atomic(dir, PROGRESS_FILE, &bytes)?)
    }

    /// Ranges not yet journaled.
    pub fn left(&self) -> usize {
        self.done.iter().filter(|d| !**d).count()
    }

    /// Checks that `tables` are the ones this plan was made for.
    pub fn check_tables(&self, tables: &[Table]) -> Result<(), LoadError> {
        let now: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        if now != self.tables {
            return Err(LoadError::Read(format!(
                "the initial load began with the tables {} and the included tables are now {}: restore the include list until the load completes, or move the state directory aside to load afresh",
                self.tables.join(", "),
                now.join(", ")
            )));
        }
        Ok(())
    }

    /// For each range whose append a crash cut short (the journal grew past the sequence the
    /// file noted before it), now or at an earlier start: the ids ([`journaled_id`]) of its
    /// table's rows journaled since, which reading it again leaves out.
    pub fn torn_range_keys(
        &mut self,
        journal: &Journal,
    ) -> Result<HashMap<usize, HashSet<Vec<u8>>>, LoadError> {
        if let Some(f) = self.in_flight.take() {
            if !self.done[f.range] && journal.next_seq() > f.seq {
                self.torn.push(f);
            }
        }
        let done = &self.done;
        self.torn.retain(|t| !done[t.range]);
        let mut out = HashMap::new();
        for t in &self.torn {
            let table = &self.tables[self.ranges[t.range].table];
            let mut ids = HashSet::new();
            read_events(journal.dir(), t.seq, |e| {
                if &e.schema.table == table {
                    ids.extend(journaled_id(e.schema, e.body));
                }
                Ok(true)
            })?;
            tracing::info!(
                rows = ids.len(),
                "initial load: a range's append was cut short by a crash; reading it again without the rows it journaled"
            );
            out.insert(t.range, ids);
        }
        Ok(out)
    }
}
