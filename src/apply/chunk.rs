//! A window's merged plans cut into numbered chunks: the unit of one transaction and one
//! checkpoint row ([`super::write`]).
//!
//! A table's chunks come in the order its plan applies (a truncate, the deletes, the moves,
//! each upsert group, and the sweep of a full snapshot that completes in the window), each at
//! most `target.batch_rows` rows and about the chunk byte budget. A table the target keeps
//! secondary unique indexes on has its upserts in one chunk instead (an exchange: rows can
//! only trade unique values safely inside one transaction). A table without a key has its
//! changes in journal order, and a truncate before the first row of a full snapshot that
//! starts in the window. The cut depends only on the merged plans, the sizes the window
//! recorded and the sweep state recorded before it, so a re-run of a window cuts the same
//! chunks and finds its committed ones by number.

use super::ddl::TargetTable;
use super::merge::{
    bad_parts, cells, describe_key, Cell, KeyedRow, MoveRow, RowChange, TablePlan, UpsertGroup,
};
use super::rejected::Reject;
use super::SweepPlan;
use crate::state::{ApplyWindow, Sweep};

/// A chunk to apply: rows of one table, one kind.
pub struct Chunk<'a> {
    pub no: u32,
    pub chunks: u32,
    pub window: (u64, u64),
    pub plan: &'a TablePlan,
    pub target: &'a TargetTable,
    pub work: Work<'a>,
    /// The stage table of the table's snapshot sweep, while one is staging keys.
    pub stage: Option<&'a str>,
}

pub enum Work<'a> {
    /// Empty the table (a `t` in the window), before its other chunks.
    Truncate,
    Delete {
        keys: &'a [Box<[u8]>],
        seqs: &'a [i64],
    },
    /// Move rows to their new keys (key changes whose row the target holds).
    Move(&'a [MoveRow]),
    Upsert {
        group: &'a UpsertGroup,
        rows: &'a [KeyedRow],
        seqs: &'a [i64],
    },
    /// The table's full snapshot is complete: delete the target rows whose keys are not in
    /// the stage table (see [`super::sweep`]).
    Sweep { stage: &'a str },
    /// Every upsert of a table the target keeps secondary unique indexes on, in one
    /// transaction: all its keys leave before any row returns, so rows that trade unique
    /// values never meet (see [`super::write`]). Rows count through the groups in order.
    Exchange(&'a [UpsertGroup]),
    /// Changes of a table without a key, one row each, in journal order (see
    /// [`super::unkeyed`]).
    Changes(&'a [RowChange]),
}

/// Row `i` of an exchange: its group and its index there.
pub fn locate(groups: &[UpsertGroup], mut i: usize) -> (&UpsertGroup, usize) {
    for g in groups {
        if i < g.rows.len() {
            return (g, i);
        }
        i -= g.rows.len();
    }
    panic!("row {i} past the end of an exchange");
}

impl Chunk<'_> {
    pub fn rows(&self) -> usize {
        match &self.work {
            Work::Truncate | Work::Sweep { .. } => 0,
            Work::Delete { keys, .. } => keys.len(),
            Work::Move(rows) => rows.len(),
            Work::Upsert { rows, .. } => rows.len(),
            Work::Exchange(groups) => groups.iter().map(|g| g.rows.len()).sum(),
            Work::Changes(changes) => changes.len(),
        }
    }

    /// The key of row `i` (none for a table without a key).
    pub fn key(&self, i: usize) -> &[u8] {
        match &self.work {
            Work::Truncate | Work::Sweep { .. } | Work::Changes(_) => &[],
            Work::Delete { keys, .. } => &keys[i],
            Work::Move(rows) => &rows[i].to,
            Work::Upsert { rows, .. } => &rows[i].0,
            Work::Exchange(groups) => {
                let (g, j) = locate(groups, i);
                &g.rows[j].0
            }
        }
    }

    /// The journal sequence of row `i`'s change.
    pub fn seq(&self, i: usize) -> i64 {
        match &self.work {
            Work::Truncate | Work::Sweep { .. } => 0,
            Work::Delete { seqs, .. } | Work::Upsert { seqs, .. } => seqs[i],
            Work::Move(rows) => rows[i].seq,
            Work::Exchange(groups) => {
                let (g, j) = locate(groups, i);
                g.seqs[j]
            }
            Work::Changes(changes) => changes[i].seq,
        }
    }

    /// Row `i` as people read it: its key, or all its values for a table without a key.
    pub fn describe(&self, i: usize) -> String {
        match (&self.work, self.row_cells(i)) {
            (Work::Changes(_), Some((row, names))) => describe_key(names, row),
            _ => describe_key(&self.plan.key, self.key(i)),
        }
    }

    /// Row `i`'s cells and their column names (none for a delete).
    pub fn row_cells(&self, i: usize) -> Option<(&[u8], &[String])> {
        match &self.work {
            Work::Truncate | Work::Sweep { .. } | Work::Delete { .. } => None,
            Work::Move(rows) => {
                Some((&rows[i].cells, &self.plan.versions[rows[i].version].columns))
            }
            Work::Upsert { group, rows, .. } => {
                Some((&rows[i].1, &self.plan.versions[group.version].columns))
            }
            Work::Exchange(groups) => {
                let (g, j) = locate(groups, i);
                Some((&g.rows[j].1, &self.plan.versions[g.version].columns))
            }
            Work::Changes(changes) => Some((
                changes[i].row(),
                &self.plan.versions[changes[i].version].columns,
            )),
        }
    }

    /// A refused row as `_db_sync_rejected` records it.
    pub fn reject(&self, i: usize, column: Option<String>, error: String) -> Reject {
        let value = column.as_ref().and_then(|c| {
            let (row, names) = self.row_cells(i)?;
            let at = names.iter().position(|n| n.eq_ignore_ascii_case(c))?;
            match cells(row).nth(at)? {
                Cell::Value(v) => Some(String::from_utf8_lossy(v).into_owned()),
                Cell::Bad(b) => Some(bad_parts(b).0.to_string()),
                Cell::Null | Cell::Unchanged => None,
            }
        });
        Reject {
            key: self.describe(i),
            column,
            value,
            error,
            seq: self.seq(i),
        }
    }

    /// What the chunk covers, as 16 hex digits for its checkpoint row: window, number, table,
    /// operation, row count, first and last key or, without a key, change (FNV-1a, 64 bits).
    pub fn digest(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes.iter().chain(&[0xff]) {
                h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(&self.window.0.to_le_bytes());
        eat(&self.window.1.to_le_bytes());
        eat(&self.no.to_le_bytes());
        eat(self.plan.table.as_bytes());
        eat(self.target.name.as_bytes());
        eat(self.operation().as_bytes());
        let rows = self.rows();
        eat(&(rows as u64).to_le_bytes());
        if rows > 0 {
            eat(self.key(0));
            eat(self.key(rows - 1));
            if let Work::Changes(_) = self.work {
                eat(&self.seq(0).to_le_bytes());
                eat(&self.seq(rows - 1).to_le_bytes());
            }
        }
        format!("{h:016x}")
    }

    /// What the chunk does, as its checkpoint row names it.
    pub fn operation(&self) -> &'static str {
        match self.work {
            Work::Truncate => "truncate",
            Work::Delete { .. } => "delete",
            Work::Move(_) => "move",
            Work::Upsert { .. } => "upsert",
            Work::Sweep { .. } => "sweep",
            Work::Exchange(_) => "exchange",
            Work::Changes(_) => "changes",
        }
    }
}

/// A window's chunks, and the snapshot sweeps among them: source table, chunk, stage table.
#[derive(Default)]
pub struct Cut<'a> {
    pub chunks: Vec<Chunk<'a>>,
    pub sweeps: Vec<(String, u32, String)>,
}

/// Cuts the merged `plans` of `window` into numbered chunks, table by table (see the module
/// doc). `tables` holds each plan's target table (`None`: nothing to apply to);
/// `chunk_bytes` is the budget of a window that recorded none.
pub fn cut<'a>(
    window: &ApplyWindow,
    plans: &'a [TablePlan],
    tables: &'a [Option<TargetTable>],
    sweeps: &SweepPlan<'a>,
    chunk_bytes: usize,
) -> Cut<'a> {
    let batch = window.batch_rows.max(1);
    let max_bytes = if window.chunk_bytes > 0 {
        window.chunk_bytes
    } else {
        chunk_bytes
    };
    let mut cut = Cut::default();
    for (plan, target) in plans.iter().zip(tables) {
        let Some(target) = target else {
            continue;
        };
        let stage = match sweeps.sweeps.and_then(|s| s.get(&plan.table)) {
            Some(Sweep::Staging { stage }) => Some(stage.as_str()),
            _ => None,
        };
        let done = sweeps.marks.get(&plan.table).is_some_and(|m| m.done);
        let sweep = stage.filter(|_| done).map(|stage| Work::Sweep { stage });
        let exchange = !target.unique.is_empty();
        // A table without a key whose full snapshot starts in this window (see
        // [`Sweep::Replace`]) is emptied before the snapshot's first row.
        let replace = match sweeps.sweeps.and_then(|s| s.get(&plan.table)) {
            Some(Sweep::Replace { window_from }) if *window_from == window.from => {
                plan.snapshot_start
            }
            _ => None,
        };
        let unkeyed = unkeyed_work(plan, batch, max_bytes, replace);
        for work in unkeyed
            .into_iter()
            .chain(table_work(plan, batch, max_bytes, exchange))
            .chain(sweep)
        {
            let no = cut.chunks.len() as u32;
            if let Work::Sweep { stage } = work {
                cut.sweeps.push((plan.table.clone(), no, stage.to_string()));
            }
            cut.chunks.push(Chunk {
                no,
                chunks: 0,
                window: (window.from, window.to),
                plan,
                target,
                work,
                stage,
            });
        }
    }
    let total = cut.chunks.len() as u32;
    for c in &mut cut.chunks {
        c.chunks = total;
    }
    cut
}

/// A table's work in the order it applies, cut by rows and bytes: a truncate, the deletes,
/// the moves, then each upsert group; or, with `exchange` (the target has secondary unique
/// indexes), all the upserts as one chunk, whatever their size.
fn table_work(
    plan: &TablePlan,
    batch: usize,
    max_bytes: usize,
    exchange: bool,
) -> impl Iterator<Item = Work<'_>> {
    let truncate = plan.truncate.then_some(Work::Truncate);
    let deletes = spans(plan.deletes.iter().map(|k| k.len()), batch, max_bytes)
        .into_iter()
        .map(move |r| Work::Delete {
            keys: &plan.deletes[r.clone()],
            seqs: &plan.delete_seqs[r],
        });
    let moves = spans(plan.moves.iter().map(|m| m.cells.len()), batch, max_bytes)
        .into_iter()
        .map(move |r| Work::Move(&plan.moves[r]));
    let exchanged = (exchange && !plan.upserts.is_empty()).then_some(Work::Exchange(&plan.upserts));
    let upserts = plan
        .upserts
        .iter()
        .filter(move |_| !exchange)
        .flat_map(move |group| {
            spans(group.rows.iter().map(|(_, r)| r.len()), batch, max_bytes)
                .into_iter()
                .map(move |r| Work::Upsert {
                    group,
                    rows: &group.rows[r.clone()],
                    seqs: &group.seqs[r],
                })
        });
    truncate
        .into_iter()
        .chain(deletes)
        .chain(moves)
        .chain(upserts)
        .chain(exchanged)
}

/// The changes of a table without a key in journal order, cut by rows and bytes, with a
/// truncate before change `replace_at` (where its full snapshot starts).
fn unkeyed_work(
    plan: &TablePlan,
    batch: usize,
    max_bytes: usize,
    replace_at: Option<usize>,
) -> Vec<Work<'_>> {
    fn cut(changes: &[RowChange], batch: usize, max_bytes: usize) -> Vec<Work<'_>> {
        spans(changes.iter().map(|c| c.row().len()), batch, max_bytes)
            .into_iter()
            .map(|r| Work::Changes(&changes[r]))
            .collect()
    }
    let (before, from) = plan
        .changes
        .split_at(replace_at.unwrap_or(plan.changes.len()));
    let mut work = cut(before, batch, max_bytes);
    if replace_at.is_some() {
        work.push(Work::Truncate);
    }
    work.extend(cut(from, batch, max_bytes));
    work
}

/// Consecutive ranges over items of `sizes`: each at most `max_rows` items and about
/// `max_bytes` (at least one item), so a chunk of large rows stays small. Depends only on the
/// sizes, so a re-run cuts the same chunks.
fn spans(
    sizes: impl Iterator<Item = usize>,
    max_rows: usize,
    max_bytes: usize,
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes, mut n) = (0, 0usize, 0);
    for (i, size) in sizes.enumerate() {
        if i > start && (i - start >= max_rows || bytes + size > max_bytes) {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
        n = i + 1;
    }
    if start < n {
        out.push(start..n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_cut_by_rows_and_by_bytes() {
        assert_eq!(spans([1usize; 5].into_iter(), 2, 100), [0..2, 2..4, 4..5]);
        assert_eq!(
            spans([60usize, 60, 10, 10].into_iter(), 10, 100),
            [0..1, 1..4]
        );
        assert_eq!(
            spans([500usize].into_iter(), 10, 100),
            vec![0..1],
            "a row larger than the budget"
        );
        assert!(spans(std::iter::empty(), 10, 100).is_empty());
    }
}
