//! The loader's writer: one thread that appends the ranges the readers encoded to the
//! journal, in the order they arrive, and keeps `loader-progress.json` in step. It seals the
//! active segment when compaction asks, as capture does while it streams, so the pipeline
//! audits and applies the load as it arrives.

use super::columns::Column;
use super::progress::{InFlight, Progress};
use super::{LoadError, Table};
use crate::journal::event;
use crate::journal::Journal;

/// One range's rows, encoded: bodies back to back, `ends` where each ends.
#[derive(Debug)]
pub struct Loaded {
    pub range: usize,
    pub table: usize,
    pub bodies: Vec<u8>,
    pub ends: Vec<u32>,
}

impl Loaded {
    pub fn new(range: usize, table: usize) -> Loaded {
        Loaded {
            range,
            table,
            bodies: Vec::with_capacity(1 << 20),
            ends: Vec::new(),
        }
    }

    fn rows(&self) -> usize {
        self.ends.len()
    }

    /// Flags the last row: its table's last snapshot row, and the snapshot's when `all`.
    fn flag_last(&mut self, all: bool) {
        let Some(last) = self.ends.len().checked_sub(1) else {
            return;
        };
        let start = if last == 0 {
            0
        } else {
            self.ends[last - 1] as usize
        };
        if all {
            self.bodies[start + 1] |= event::SNAPSHOT_LAST;
        }
        self.bodies[start + 2] |= event::TABLE_SNAPSHOT_LAST;
    }
}

/// What the writer did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub rows: u64,
    pub complete: bool,
}

pub struct Writer {
    journal: Journal,
    schema_ids: Vec<u32>,
    /// Per table: ranges not yet arrived.
    remaining: Vec<usize>,
    /// Per table: the latest non-empty range, written once the next arrives.
    held: Vec<Option<Loaded>>,
    /// Bytes of bodies per journal append.
    piece_bytes: usize,
    bar: Bar,
}

/// A one-line progress bar on standard error, when it is a terminal.
struct Bar {
    on: bool,
}

impl Bar {
    fn show(&mut self, s: &super::progress::LoadStatus) {
        if !self.on {
            return;
        }
        let done = s.ranges - s.ranges_left;
        let width = 30;
        let filled = (done * width).checked_div(s.ranges).unwrap_or(width);
        let eta = s
            .eta_seconds
            .map(|e| format!(", {:.0} s left", e))
            .unwrap_or_default();
        eprint!(
            "\rinitial load [{}{}] {done}/{} ranges, {} rows, {:.0} rows/s{eta}   ",
            "#".repeat(filled),
            " ".repeat(width - filled),
            s.ranges,
            s.rows,
            s.rows_per_second
        );
        if s.ranges_left == 0 {
            eprintln!();
        }
    }
}

impl Writer {
    pub fn new(
        mut journal: Journal,
        tables: &[Table],
        progress: &Progress,
        segment_max_bytes: u64,
    ) -> Result<Writer, LoadError> {
        progress.check_tables(tables)?;
        let schema_ids = tables
            .iter()
            .map(|t| journal.schema_id(t.schema_json.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut remaining = vec![0; tables.len()];
        for (r, done) in progress.ranges.iter().zip(&progress.done) {
            if !done {
                remaining[r.table] += 1;
            }
        }
        Ok(Writer {
            journal,
            schema_ids,
            remaining,
            held: (0..tables.len()).map(|_| None).collect(),
            piece_bytes: usize::try_from(segment_max_bytes)
                .unwrap_or(usize::MAX)
                .clamp(1, 16 << 20),
            bar: Bar {
                on: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            },
        })
    }

    /// Appends what arrives until the readers are done; gives the journal back.
    pub fn run(
        mut self,
        mut rx: tokio::sync::mpsc::Receiver<Loaded>,
        mut progress: Progress,
    ) -> (Journal, Result<Summary, LoadError>) {
        let dir = self.journal.dir().to_path_buf();
        let mut result = Ok(());
        while let Some(loaded) = rx.blocking_recv() {
            if let Err(e) = self.take(loaded, &mut progress, &dir) {
                result = Err(e);
                break;
            }
        }
        // Held ranges of an unfinished load are not journaled: they are read again.
        let done = self.remaining.iter().all(|r| *r == 0) && self.held.iter().all(Option::is_none);
        let summary = result.and_then(|()| {
            if done && !progress.complete {
                progress.complete = true;
                progress.store(&dir)?;
            }
            Ok(Summary {
                rows: progress.rows,
                complete: progress.complete,
            })
        });
        (self.journal, summary)
    }

    fn take(
        &mut self,
        mut loaded: Loaded,
        progress: &mut Progress,
        dir: &std::path::Path,
    ) -> Result<(), LoadError> {
        let t = loaded.table;
        self.remaining[t] -= 1;
        if loaded.rows() == 0 {
            progress.journaled(loaded.range, t, 0);
            progress.store(dir)?;
            if self.remaining[t] == 0 {
                if let Some(mut held) = self.held[t].take() {
                    held.flag_last(self.others_done(t));
                    self.append(held, progress, dir)?;
                }
            }
            return Ok(());
        }
        if let Some(held) = self.held[t].take() {
            self.append(held, progress, dir)?;
        }
        if self.remaining[t] == 0 {
            loaded.flag_last(self.others_done(t));
            self.append(loaded, progress, dir)
        } else {
            self.held[t] = Some(loaded);
            Ok(())
        }
    }

    /// Whether every table but `t` is wholly journaled.
    fn others_done(&self, t: usize) -> bool {
        (0..self.remaining.len())
            .filter(|&o| o != t)
            .all(|o| self.remaining[o] == 0 && self.held[o].is_none())
    }

    fn append(
        &mut self,
        loaded: Loaded,
        progress: &mut Progress,
        dir: &std::path::Path,
    ) -> Result<(), LoadError> {
        progress.in_flight = Some(InFlight {
            range: loaded.range,
            seq: self.journal.next_seq(),
        });
        progress.store(dir)?;
        crate::failpoint::hit("loader.before_append");
        let id = self.schema_ids[loaded.table];
        // In pieces of at most a segment (and 16 MiB), so segments keep their size; every
        // piece after the sequence noted above belongs to this range.
        let piece = self.piece_bytes;
        let bodies = &loaded.bodies;
        let mut start = 0usize;
        let mut at = 0usize;
        while at < loaded.ends.len() {
            let first = at;
            while at < loaded.ends.len()
                && (at == first || loaded.ends[at] as usize - start <= piece)
            {
                at += 1;
            }
            let mut from = start;
            self.journal
                .append(loaded.ends[first..at].iter().map(|&end| {
                    let body = &bodies[from..end as usize];
                    from = end as usize;
                    (id, body)
                }))?;
            start = loaded.ends[at - 1] as usize;
        }
        crate::failpoint::hit("loader.after_append");
        progress.journaled(loaded.range, loaded.table, loaded.rows() as u64);
        progress.store(dir)?;
        self.bar.show(&progress.status());
        // Compaction asks for the active segment to be sealed, so that it audits and applies
        // the ranges loaded so far while the load goes on.
        if crate::state::locks::seal_requested(dir) {
            self.journal.roll()?;
            crate::state::locks::clear_seal_request(dir);
        }
        Ok(())
    }
}

/// The schema entry JSON of a table, as the bridge writes it for Debezium's schema.
pub async fn schema_json(
    client: &tokio_postgres::Client,
    described: &str,
    prefix: &str,
    table: &str,
    columns: &[Column],
    key: &[usize],
) -> Result<String, LoadError> {
    let _ = (client, described);
    let topic = format!("{prefix}.{table}");
    let key_schema = if key.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::json!({
            "type": "struct",
            "optional": false,
            "name": format!("{topic}.Key"),
            "fields": key.iter().map(|&i| columns[i].schema(true)).collect::<Vec<_>>(),
        })
    };
    let row = serde_json::json!({
        "type": "struct",
        "optional": true,
        "name": format!("{topic}.Value"),
        "fields": columns.iter().map(|c| c.schema(false)).collect::<Vec<_>>(),
    });
    Ok(
        serde_json::json!({"table": table, "topic": topic, "key": key_schema, "row": row})
            .to_string(),
    )
}
