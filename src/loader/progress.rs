//! `loader-progress.json`: the load's plan and which of its ranges are journaled, in the
//! state directory, written whole (temporary file, fsync, rename) after every range.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{journaled_id, ranges_of, LoadError, Table};
use crate::journal::{read_events, Journal};
use crate::state;

pub const PROGRESS_FILE: &str = "loader-progress.json";

/// Pages `start..end` of leaf `leaf` of table `table` (`end` open for a leaf's last range),
/// or, when `changed`, the rows of the whole leaf written since the load's first snapshot
/// (read at a resume: [`Progress::resume`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Range {
    pub table: usize,
    pub leaf: usize,
    pub start: u32,
    pub end: Option<u32>,
    #[serde(default)]
    pub changed: bool,
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
    /// The `xmin` (a 64-bit transaction id) of the load's first snapshot: a row version
    /// written by a transaction at or after it may differ from what that snapshot saw.
    #[serde(default)]
    pub since_xmin: Option<u64>,
    /// Per table, per leaf: the relation's file when the load was planned (a rewrite, such
    /// as `VACUUM FULL` or `TRUNCATE`, gives it a new one and moves every row).
    #[serde(default)]
    pub filenodes: Vec<Vec<u32>>,
    /// The first snapshot is gone (a restart): page ranges leave out the rows written since
    /// it, which `changed` ranges read.
    #[serde(default)]
    pub resumed: bool,
    /// A load of tables that joined a pipeline whose initial load is done.
    #[serde(default)]
    pub joined: bool,
    /// Rows journaled so far, per table.
    #[serde(default)]
    pub table_rows: Vec<u64>,
    /// This start: when it began (Unix milliseconds), and the rows and ranges done then.
    #[serde(default)]
    pub started_ms: i64,
    #[serde(default)]
    pub rows_at_start: u64,
    #[serde(default)]
    pub done_at_start: usize,
    /// When a range was last journaled (Unix milliseconds).
    #[serde(default)]
    pub updated_ms: i64,
}

/// The load as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LoadStatus {
    pub complete: bool,
    pub rows: u64,
    pub ranges: usize,
    pub ranges_left: usize,
    /// Rows per second since the current (or last) start.
    pub rows_per_second: f64,
    /// Seconds until the last range, at the rate of the current start.
    pub eta_seconds: Option<f64>,
    pub tables: Vec<TableLoad>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableLoad {
    pub table: String,
    pub rows: u64,
    pub ranges: usize,
    pub ranges_left: usize,
}

impl Progress {
    /// A new plan for `tables`, read under a snapshot whose `xmin` is `since_xmin`.
    pub fn plan(tables: &[Table], slot_lsn: u64, since_xmin: u64, range_pages: u32) -> Progress {
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
            since_xmin: Some(since_xmin),
            filenodes: filenodes(tables),
            resumed: false,
            joined: false,
            table_rows: vec![0; tables.len()],
            started_ms: 0,
            rows_at_start: 0,
            done_at_start: 0,
            updated_ms: 0,
        }
    }

    /// Notes that a start begins now.
    pub fn start(&mut self) {
        self.started_ms = chrono::Utc::now().timestamp_millis();
        self.updated_ms = self.started_ms;
        self.rows_at_start = self.rows;
        self.done_at_start = self.done.iter().filter(|d| **d).count();
    }

    /// Notes `rows` more of table `table` journaled, and range `range` done.
    pub fn journaled(&mut self, range: usize, table: usize, rows: u64) {
        self.done[range] = true;
        self.in_flight = None;
        self.torn.retain(|t| t.range != range);
        self.rows += rows;
        if self.table_rows.len() < self.tables.len() {
            self.table_rows.resize(self.tables.len(), 0);
        }
        self.table_rows[table] += rows;
        self.updated_ms = chrono::Utc::now().timestamp_millis();
    }

    /// What `status` shows.
    pub fn status(&self) -> LoadStatus {
        let secs = (self.updated_ms - self.started_ms).max(0) as f64 / 1000.0;
        let done_now = self.done.iter().filter(|d| **d).count();
        let ranges_this_start = done_now.saturating_sub(self.done_at_start);
        let left = self.left();
        let tables = self
            .tables
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mine = self
                    .ranges
                    .iter()
                    .zip(&self.done)
                    .filter(|(r, _)| r.table == i);
                TableLoad {
                    table: name.clone(),
                    rows: self.table_rows.get(i).copied().unwrap_or(0),
                    ranges: mine.clone().count(),
                    ranges_left: mine.filter(|(_, d)| !**d).count(),
                }
            })
            .collect();
        LoadStatus {
            complete: self.complete,
            rows: self.rows,
            ranges: self.ranges.len(),
            ranges_left: left,
            rows_per_second: if secs > 0.0 {
                (self.rows - self.rows_at_start) as f64 / secs
            } else {
                0.0
            },
            eta_seconds: (ranges_this_start > 0 && !self.complete)
                .then(|| secs / ranges_this_start as f64 * left as f64),
            tables,
        }
    }

    /// Makes the ranges left exact under a new snapshot, the first being gone. A row that
    /// no transaction has written since the first snapshot is where that snapshot saw it,
    /// with the same values: the page ranges left read those. A row written since may have
    /// moved between pages (into a range already read, or out of one), so each table with
    /// ranges left also gets one `changed` range per leaf, which reads every such row of the
    /// leaf under the new snapshot; the slot replays its changes since the first snapshot
    /// over it. Such a row can so be journaled twice as a snapshot read (at the first
    /// snapshot and at this one): the target still ends exact, as the replay ends at its
    /// latest state. A leaf rewritten meanwhile (`VACUUM FULL`, `CLUSTER`, `TRUNCATE`) has
    /// every row at a new page: all its ranges are read again.
    pub fn resume(&mut self, tables: &[Table]) {
        let left: HashSet<usize> = self
            .ranges
            .iter()
            .zip(&self.done)
            .filter(|(_, d)| !**d)
            .map(|(r, _)| r.table)
            .collect();
        let now = filenodes(tables);
        for (i, r) in self.ranges.iter().enumerate() {
            if !left.contains(&r.table) {
                continue;
            }
            if r.changed {
                // Superseded by the new changed range of its leaf.
                self.done[i] = true;
            } else if rewritten(&self.filenodes, &now, r) {
                if self.done[i] {
                    tracing::warn!(
                        table = %self.tables[r.table],
                        leaf = %tables[r.table].leaves[r.leaf].name,
                        "initial load: the table was rewritten while db-sync was down; its ranges are read again, and the rows they had journaled come twice among the snapshot reads"
                    );
                }
                self.done[i] = false;
            }
        }
        let mut left: Vec<usize> = left.into_iter().collect();
        left.sort_unstable();
        for table in left {
            for leaf in 0..tables[table].leaves.len() {
                self.ranges.push(Range {
                    table,
                    leaf,
                    start: 0,
                    end: None,
                    changed: true,
                });
                self.done.push(false);
            }
        }
        self.filenodes = now;
        self.resumed = true;
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

/// Whether the leaf of `r` has another file `now` than when planned (unknown to a plan
/// written before files were noted: not rewritten).
fn rewritten(planned: &[Vec<u32>], now: &[Vec<u32>], r: &Range) -> bool {
    let file = |f: &[Vec<u32>]| f.get(r.table).and_then(|l| l.get(r.leaf)).copied();
    file(planned).is_some_and(|was| file(now) != Some(was))
}

/// Per table, per leaf: its relation file.
fn filenodes(tables: &[Table]) -> Vec<Vec<u32>> {
    tables
        .iter()
        .map(|t| t.leaves.iter().map(|l| l.filenode).collect())
        .collect()
}
