//! Merge per primary key: a window's changes → the one final operation per key.
//!
//! Rows arrive as audit batches (table columns then `_cdc_` columns), in journal order per
//! table (`_cdc_seq`, never commit time). For each key the last change wins: `d` leaves a
//! delete, `c`/`u`/`r` an upsert. A column the source did not send (`_cdc_unchanged`,
//! PostgreSQL's unchanged TOAST) takes the value an earlier change in the window gave it; if
//! none did, it stays out of the upsert and the target keeps its value.
//!
//! An update that changes a key arrives from Debezium as a delete of the old key and, right
//! after it, a create of the new one that names the old key (`_cdc_old_key`). When that create
//! lacks an unchanged column, the only copy of the value is the old row: taken from the window
//! when an earlier change there sent it, otherwise from the target, by *moving* the target row
//! to the new key (a [`MoveRow`]: `UPDATE … SET key = new … WHERE key = old`) instead of
//! deleting it. Moves apply after the deletes and before the upserts, in journal order.
//!
//! A `t` (TRUNCATE) forgets every earlier change of its table in the window and makes the plan
//! truncate the table first; later changes stay ([`Merger::new`] with `truncate: false`
//! ignores truncates, `target.truncate: ignore`).
//!
//! A table without a key has no key to merge by: two rows may be equal, and the target holds
//! them as many times as the source does. Its changes stay as they came, one [`RowChange`]
//! each, in journal order: an insert adds its row, a delete removes one row equal to its old
//! row, an update changes one row equal to its old row (`_cdc_before`, which `REPLICA
//! IDENTITY FULL` makes PostgreSQL log). Apply matches all columns, NULL-safe.
//!
//! Values are rendered to their MySQL text once, here ([`super::values`]), and kept per key in
//! one compact buffer: memory is about the size of the final rows.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, ListArray, StringArray, StructArray};
use arrow::datatypes::Int64Type;
use arrow::record_batch::RecordBatch;

use super::values::Cells;
use crate::types::{cdc, TableSchema};

const NULL: u8 = 0;
const VALUE: u8 = 1;
const UNCHANGED: u8 = 2;
const BAD: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("table {table}: audit rows lack column {column}")]
    MissingColumn { table: String, column: String },
    #[error("table {table}: column {column} has Arrow type {ty}, which apply does not know")]
    Type {
        table: String,
        column: String,
        ty: String,
    },
    #[error("table {table}: change {seq} arrived after change {last}; apply needs journal order")]
    Order { table: String, seq: i64, last: i64 },
    #[error("table {table} has no primary key and its update {seq} carries no old row (its replica identity was not FULL, or its audit file was written before db-sync kept old rows), so apply cannot tell which target row it changed; run ALTER TABLE {table} REPLICA IDENTITY FULL at the source, then take a new snapshot of it (remove it from `table.include.list`, run capture, put it back)")]
    NoOldRow { table: String, seq: i64 },
}

/// One cell of a merged row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell<'a> {
    Null,
    Value(&'a [u8]),
    /// Not sent by the source and not set earlier in the window: leave the target's value.
    Unchanged,
    /// A value the target cannot hold: its text and the reason ([`bad_parts`]).
    Bad(&'a str),
}

/// Reads the cells of an encoded row (or key) in column order.
pub fn cells(mut buf: &[u8]) -> impl Iterator<Item = Cell<'_>> {
    std::iter::from_fn(move || {
        let (&tag, rest) = buf.split_first()?;
        buf = rest;
        Some(match tag {
            NULL => Cell::Null,
            UNCHANGED => Cell::Unchanged,
            _ => {
                let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
                let v = &buf[4..4 + len];
                buf = &buf[4 + len..];
                if tag == VALUE {
                    Cell::Value(v)
                } else {
                    Cell::Bad(std::str::from_utf8(v).unwrap_or("unrepresentable value"))
                }
            }
        })
    })
}

/// Appends one encoded cell.
pub(super) fn push_cell(out: &mut Vec<u8>, cell: Cell<'_>) {
    match cell {
        Cell::Null => out.push(NULL),
        Cell::Unchanged => out.push(UNCHANGED),
        Cell::Value(v) => {
            out.push(VALUE);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
        Cell::Bad(m) => {
            out.push(BAD);
            out.extend_from_slice(&(m.len() as u32).to_le_bytes());
            out.extend_from_slice(m.as_bytes());
        }
    }
}

/// Renders the value at `row` straight into `out` as one cell.
fn push_rendered(out: &mut Vec<u8>, col: &Cells<'_>, row: usize) {
    if col.is_null(row) {
        out.push(NULL);
        return;
    }
    let start = out.len();
    out.push(VALUE);
    out.extend_from_slice(&[0; 4]);
    match col.write(row, out) {
        Ok(()) => {
            let len = (out.len() - start - 5) as u32;
            out[start + 1..start + 5].copy_from_slice(&len.to_le_bytes());
        }
        Err(e) => {
            out.truncate(start);
            push_cell(out, Cell::Bad(&format!("{}\0{}", col.display(row), e.0)));
        }
    }
}

/// The columns of one schema version of a table, as its audit rows carry them.
#[derive(Debug, Clone)]
pub struct Version {
    pub schema: Arc<TableSchema>,
    pub columns: Vec<String>,
    /// Columns holding raw bytes (loaded through `UNHEX` by `LOAD DATA`).
    pub binary: Vec<bool>,
    index: HashMap<String, usize>,
}

enum Op {
    Delete,
    Upsert {
        version: u32,
        cells: Box<[u8]>,
    },
    /// The target row of key `from` moves here, then takes the sent cells (its unchanged
    /// columns keep the values the row has).
    Move {
        from: Box<[u8]>,
        version: u32,
        cells: Box<[u8]>,
    },
}

struct Slot {
    seq: i64,
    op: Op,
}

struct TableMerge {
    versions: Vec<Version>,
    /// Key columns, in key order.
    key: Vec<String>,
    /// Hashed with foldhash: a window hashes every key of its changes, and SipHash was a
    /// tenth of apply's own CPU time.
    rows: HashMap<Box<[u8]>, Slot, foldhash::fast::RandomState>,
    last_seq: i64,
    /// The key of the last delete and the operation it replaced (`None`: the row was only in
    /// the target): the create half of a key change, which follows its delete half, takes its
    /// unchanged values from there.
    last_delete: Option<(Box<[u8]>, Option<Op>)>,
    /// A `t` came in the window: the table is emptied before the rest applies.
    truncate: bool,
    /// A table without a key: its changes, unmerged, in journal order.
    changes: Vec<RowChange>,
    /// The index in `changes` where the window's last run of snapshot reads begins.
    snapshot_start: Option<usize>,
}

/// The columns of one audit batch that the merge reads.
struct BatchColumns<'a> {
    op: &'a StringArray,
    seq: &'a Int64Array,
    unchanged: Option<&'a ListArray>,
    /// `_cdc_old_key` and a renderer per key column; audit files written before the old key
    /// was recorded have no such column.
    old_key: Option<(&'a StructArray, Vec<Cells<'a>>)>,
    /// `_cdc_before` and a renderer per column (tables without a key).
    before: Option<(&'a StructArray, Vec<Cells<'a>>)>,
    /// The table's columns (those before `_cdc_op`) and a renderer for each.
    names: Vec<String>,
    renderers: Vec<Cells<'a>>,
}

impl<'a> BatchColumns<'a> {
    fn read(table: &str, batch: &'a RecordBatch) -> Result<BatchColumns<'a>, MergeError> {
        let missing = |column: &str| MergeError::MissingColumn {
            table: table.to_string(),
            column: column.to_string(),
        };
        let schema = batch.schema();
        let n = schema.index_of(cdc::OP).map_err(|_| missing(cdc::OP))?;
        let seq = schema.index_of(cdc::SEQ).map_err(|_| missing(cdc::SEQ))?;
        let old_key = image_column(table, batch, cdc::OLD_KEY)?;
        let before = image_column(table, batch, cdc::BEFORE)?;
        let names: Vec<String> = schema.fields()[..n]
            .iter()
            .map(|f| f.name().clone())
            .collect();
        Ok(BatchColumns {
            before,
            op: batch.column(n).as_string(),
            seq: batch.column(seq).as_primitive::<Int64Type>(),
            unchanged: schema
                .index_of(cdc::UNCHANGED)
                .ok()
                .map(|i| batch.column(i).as_list()),
            old_key,
            renderers: renderers(table, &batch.columns()[..n], names.iter().cloned())?,
            names,
        })
    }

    /// Renders the cells of `row` into `out`, a column that `_cdc_unchanged` names as
    /// [`Cell::Unchanged`] (`skip` is scratch space, a flag per column); whether there was any.
    fn render_row(
        &self,
        row: usize,
        version: &Version,
        skip: &mut [bool],
        out: &mut Vec<u8>,
    ) -> bool {
        let mut any_unchanged = false;
        if let Some(list) = self
            .unchanged
            .filter(|l| !l.is_null(row) && l.value_length(row) > 0)
        {
            let names = list.value(row);
            let names = names.as_string::<i32>();
            skip.fill(false);
            for i in 0..names.len() {
                if let Some(&c) = version.index.get(names.value(i)) {
                    skip[c] = true;
                    any_unchanged = true;
                }
            }
        }
        out.clear();
        for (c, r) in self.renderers.iter().enumerate() {
            if any_unchanged && skip[c] {
                out.push(UNCHANGED);
            } else {
                push_rendered(out, r, row);
            }
        }
        any_unchanged
    }

    /// The old key of `row` when it is the create half of a key change.
    fn old_key(&self, row: usize) -> Option<Vec<u8>> {
        image(self.old_key.as_ref(), row)
    }

    /// The old row of `row` when it is an update of a table without a key.
    fn before(&self, row: usize) -> Option<Box<[u8]>> {
        image(self.before.as_ref(), row).map(Into::into)
    }
}

/// An image column of `batch` (`_cdc_old_key`, `_cdc_before`) and a renderer per field, when
/// the batch has it.
fn image_column<'a>(
    table: &str,
    batch: &'a RecordBatch,
    name: &str,
) -> Result<Option<(&'a StructArray, Vec<Cells<'a>>)>, MergeError> {
    let Some(s) = batch
        .schema()
        .index_of(name)
        .ok()
        .and_then(|i| batch.column(i).as_struct_opt())
    else {
        return Ok(None);
    };
    let names = s.fields().iter().map(|f| format!("{name}.{}", f.name()));
    Ok(Some((s, renderers(table, s.columns(), names)?)))
}

/// The cells of `row` in an image column (`_cdc_old_key`, `_cdc_before`), when it has one.
fn image(column: Option<&(&StructArray, Vec<Cells<'_>>)>, row: usize) -> Option<Vec<u8>> {
    let (_, renderers) = column.filter(|(a, _)| a.is_valid(row))?;
    let mut cells = Vec::with_capacity(32);
    for c in renderers {
        push_rendered(&mut cells, c, row);
    }
    Some(cells)
}

/// A renderer per column of `arrays`; a type apply does not know is an error naming the column.
fn renderers<'a>(
    table: &str,
    arrays: &'a [arrow::array::ArrayRef],
    names: impl Iterator<Item = String>,
) -> Result<Vec<Cells<'a>>, MergeError> {
    arrays
        .iter()
        .zip(names)
        .map(|(a, column)| {
            Cells::new(a).ok_or_else(|| MergeError::Type {
                table: table.to_string(),
                column,
                ty: a.data_type().to_string(),
            })
        })
        .collect()
}

/// Scratch space of [`Merger::push`], reused row by row.
#[derive(Default)]
struct RowBuffers {
    key: Vec<u8>,
    row: Vec<u8>,
    skip: Vec<bool>,
}

impl TableMerge {
    fn new(key: Vec<String>) -> TableMerge {
        TableMerge {
            versions: Vec::new(),
            key,
            rows: HashMap::default(),
            last_seq: i64::MIN,
            last_delete: None,
            truncate: false,
            changes: Vec::new(),
            snapshot_start: None,
        }
    }

    /// The positions of the key columns among a batch's `columns`.
    fn key_indices(&self, table: &str, columns: &[String]) -> Result<Vec<usize>, MergeError> {
        self.key
            .iter()
            .map(|k| {
                columns
                    .iter()
                    .position(|c| c == k)
                    .ok_or_else(|| MergeError::MissingColumn {
                        table: table.to_string(),
                        column: k.clone(),
                    })
            })
            .collect()
    }

    /// The index of the schema version whose rows look like `columns`, added if new.
    fn version(&mut self, schema: &Arc<TableSchema>, columns: &BatchColumns<'_>) -> usize {
        let binary: Vec<bool> = columns
            .renderers
            .iter()
            .map(|r| matches!(r, Cells::Binary(_) | Cells::LargeBinary(_)))
            .collect();
        let names = &columns.names;
        if let Some(v) = self
            .versions
            .iter()
            .position(|v| v.columns == *names && v.binary == binary)
        {
            return v;
        }
        self.versions.push(Version {
            schema: schema.clone(),
            index: names
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), i))
                .collect(),
            columns: names.clone(),
            binary,
        });
        self.versions.len() - 1
    }

    /// Checks that `seq` comes after every change seen so far.
    fn advance(&mut self, table: &str, seq: i64) -> Result<(), MergeError> {
        if seq <= self.last_seq {
            return Err(MergeError::Order {
                table: table.to_string(),
                seq,
                last: self.last_seq,
            });
        }
        self.last_seq = seq;
        Ok(())
    }

    /// Forgets every earlier change of the window: the table is emptied first.
    fn truncate(&mut self) {
        self.rows.clear();
        self.last_delete = None;
        self.truncate = true;
        self.changes.clear();
        self.snapshot_start = None;
    }

    /// A delete of `key`: remembered with what it replaced, for a key change's create half.
    fn delete(&mut self, key: &[u8]) -> Op {
        let prior = self.rows.remove(key).map(|slot| slot.op);
        self.last_delete = Some((key.into(), prior));
        Op::Delete
    }

    /// The operation the delete of `from` replaced, when that delete was the last one: the
    /// delete half of the key change whose create half comes now.
    fn take_deleted(&mut self, from: &[u8]) -> Option<Op> {
        match self.last_delete.take() {
            Some((k, op)) if *k == *from => op,
            other => {
                self.last_delete = other;
                None
            }
        }
    }

    /// A `c`, `u` or `r` of `key` whose rendered cells are in `row`, and its old key if it is
    /// the create half of a key change: an upsert, or a move when cells the source did not
    /// send are in no earlier change of the window (the target row holds them).
    fn upsert(
        &mut self,
        version: usize,
        key: &[u8],
        row: &[u8],
        any_unchanged: bool,
        moved_from: Option<Vec<u8>>,
    ) -> Op {
        // The op whose row this change continues: the old key's (a key change) or this key's.
        let prior = moved_from
            .as_deref()
            .and_then(|from| self.take_deleted(from));
        let version_no = version as u32;
        if !any_unchanged {
            return Op::Upsert {
                version: version_no,
                cells: row.into(),
            };
        }
        // A key change continues the old key's row; failing that in the window, the new key's
        // own row there, which only a read taken after the change can have put there first (a
        // snapshot read replayed over: the initial loader's rows precede the changes the slot
        // replays), holds the row's values too.
        let current = match &moved_from {
            Some(_) => prior.as_ref().or_else(|| self.rows.get(key).map(|s| &s.op)),
            None => self.rows.get(key).map(|s| &s.op),
        };
        let (filled, from) = self.fill(version, row, current);
        let still_unchanged = cells(&filled).any(|c| c == Cell::Unchanged);
        // Where the values still missing are: the target row of the original key of a chain
        // of moves, or of the old key.
        match from.or_else(|| moved_from.map(Into::into)) {
            Some(from) if still_unchanged => Op::Move {
                from,
                version: version_no,
                cells: filled.into(),
            },
            _ => Op::Upsert {
                version: version_no,
                cells: filled.into(),
            },
        }
    }

    /// `row` (of `version`) with its unchanged cells taken from `current`, the operation it
    /// continues, and the key a move in `current` started from.
    fn fill(
        &self,
        version: usize,
        row: &[u8],
        current: Option<&Op>,
    ) -> (Vec<u8>, Option<Box<[u8]>>) {
        let new_version = &self.versions[version];
        match current {
            Some(Op::Upsert { version: v, cells }) => (
                fill_unchanged(row, new_version, cells, &self.versions[*v as usize]),
                None,
            ),
            Some(Op::Move {
                from,
                version: v,
                cells,
            }) => (
                fill_unchanged(row, new_version, cells, &self.versions[*v as usize]),
                Some(from.clone()),
            ),
            Some(Op::Delete) | None => (row.to_vec(), None),
        }
    }

    /// The merged operations of `table`, in journal order.
    fn into_plan(self, table: String) -> TablePlan {
        let mut slots: Vec<(Box<[u8]>, Slot)> = self.rows.into_iter().collect();
        slots.sort_unstable_by_key(|(_, s)| s.seq);
        // A moved row leaves its old key: no delete of that key is needed (or safe: it would
        // come first and remove the row the move needs).
        let sources: std::collections::HashSet<Box<[u8]>> = slots
            .iter()
            .filter_map(|(_, s)| match &s.op {
                Op::Move { from, .. } => Some(from.clone()),
                _ => None,
            })
            .collect();
        let mut plan = TablePlan {
            table,
            versions: self.versions,
            key: self.key,
            truncate: self.truncate,
            deletes: Vec::new(),
            delete_seqs: Vec::new(),
            moves: Vec::new(),
            upserts: Vec::new(),
            changes: self.changes,
            snapshot_start: self.snapshot_start,
        };
        let mut group_of: HashMap<(usize, Vec<usize>), usize> = HashMap::new();
        for (key, slot) in slots {
            match slot.op {
                Op::Delete if sources.contains(&key) => {}
                Op::Delete => {
                    plan.deletes.push(key);
                    plan.delete_seqs.push(slot.seq);
                }
                Op::Move {
                    from,
                    version,
                    cells,
                } => plan.moves.push(MoveRow {
                    from,
                    to: key,
                    seq: slot.seq,
                    version: version as usize,
                    cells,
                }),
                Op::Upsert { version, cells } => {
                    plan.add_upsert(&mut group_of, version as usize, key, cells, slot.seq)
                }
            }
        }
        plan.moves = in_dependency_order(std::mem::take(&mut plan.moves));
        plan
    }
}

/// `moves` (in journal order of their keys' last changes) reordered so that a move out of a
/// key comes before the move into it: a chain `3 → 5`, then `0 → 3` must move row 3 away
/// before row 0 takes its key, even when row 5 changed again after both (which put its move
/// last by journal order, and made the target lose row 3). Each key is the origin of at most
/// one move and the destination of at most one, so following "the move out of my destination"
/// walks a chain. A cycle (keys swapped in one window) has no such order: its moves run as
/// the walk meets them, which loses the values a swap left unchanged (it needs a temporary
/// key; not done).
fn in_dependency_order(moves: Vec<MoveRow>) -> Vec<MoveRow> {
    let by_from: HashMap<&[u8], usize> = moves
        .iter()
        .enumerate()
        .map(|(i, m)| (&*m.from, i))
        .collect();
    let mut placed = vec![false; moves.len()];
    let mut walking = vec![false; moves.len()];
    let mut order = Vec::with_capacity(moves.len());
    let mut path = Vec::new();
    for start in 0..moves.len() {
        let mut i = start;
        while !placed[i] && !walking[i] {
            walking[i] = true;
            path.push(i);
            match by_from.get(&*moves[i].to) {
                Some(&next) => i = next,
                None => break,
            }
        }
        for &i in path.iter().rev() {
            placed[i] = true;
            order.push(i);
        }
        path.clear();
    }
    let mut slots: Vec<Option<MoveRow>> = moves.into_iter().map(Some).collect();
    order
        .into_iter()
        .map(|i| slots[i].take().expect("each move placed once"))
        .collect()
}

/// Merges the changes of a window, table by table.
pub struct Merger {
    tables: HashMap<String, TableMerge>,
    /// Whether a `t` empties the table (`target.truncate: apply`) or is ignored.
    apply_truncates: bool,
    /// Changes read (before merging), for the summary.
    pub changes: u64,
}

impl Default for Merger {
    fn default() -> Self {
        Merger::new(true)
    }
}

/// A merged upsert: its key cells and its row cells.
pub type KeyedRow = (Box<[u8]>, Box<[u8]>);

/// Upserts that share one column list: one statement shape.
#[derive(Debug)]
pub struct UpsertGroup {
    pub version: usize,
    /// Indices (into the version's columns) of the columns sent.
    pub columns: Vec<usize>,
    /// (key, row cells), in journal order of their last change.
    pub rows: Vec<KeyedRow>,
    /// The journal sequence of each row's last change (for `_db_sync_rejected`).
    pub seqs: Vec<i64>,
}

/// A key change whose row must move in the target (see the module doc).
#[derive(Debug)]
pub struct MoveRow {
    pub from: Box<[u8]>,
    pub to: Box<[u8]>,
    pub seq: i64,
    pub version: usize,
    /// Row cells; [`Cell::Unchanged`] ones keep the moved row's values.
    pub cells: Box<[u8]>,
}

/// One change of a table without a key (see the module doc).
#[derive(Debug)]
pub struct RowChange {
    pub seq: i64,
    pub version: usize,
    /// A snapshot read.
    pub read: bool,
    /// The row the change finds in the target: a delete's row, an update's old row.
    pub old: Option<Box<[u8]>>,
    /// The row it leaves: an insert's or a read's, an update's new row (its
    /// [`Cell::Unchanged`] cells keep the values the target row has).
    pub new: Option<Box<[u8]>>,
}

impl RowChange {
    /// The row the change is about, for its checkpoint digest and messages.
    pub fn row(&self) -> &[u8] {
        self.new.as_deref().or(self.old.as_deref()).unwrap_or(&[])
    }
}

/// The merged operations of one table, applied in this order: truncate, deletes, moves,
/// upserts; or, for a table without a key, its changes as they came.
#[derive(Debug)]
pub struct TablePlan {
    pub table: String,
    pub versions: Vec<Version>,
    pub key: Vec<String>,
    /// Empty the table before anything else (a `t` in the window).
    pub truncate: bool,
    /// Keys to delete, in journal order of their last change.
    pub deletes: Vec<Box<[u8]>>,
    /// The journal sequence of each delete.
    pub delete_seqs: Vec<i64>,
    /// Rows to move to a new key, in journal order.
    pub moves: Vec<MoveRow>,
    pub upserts: Vec<UpsertGroup>,
    /// The changes of a table without a key, in journal order.
    pub changes: Vec<RowChange>,
    /// The index in `changes` where the window's last run of snapshot reads begins: where a
    /// full snapshot that starts in the window replaces the target's rows (one that starts
    /// later in the window replaces those of an earlier one too).
    pub snapshot_start: Option<usize>,
}

impl TablePlan {
    /// The row count the plan applies.
    pub fn rows(&self) -> usize {
        self.changes.len()
            + self.deletes.len()
            + self.moves.len()
            + self.upserts.iter().map(|g| g.rows.len()).sum::<usize>()
    }

    /// Adds an upsert to the group of its version and sent columns (`group_of` finds it).
    fn add_upsert(
        &mut self,
        group_of: &mut HashMap<(usize, Vec<usize>), usize>,
        version: usize,
        key: Box<[u8]>,
        row: Box<[u8]>,
        seq: i64,
    ) {
        let columns: Vec<usize> = cells(&row)
            .enumerate()
            .filter(|(_, c)| *c != Cell::Unchanged)
            .map(|(i, _)| i)
            .collect();
        let upserts = &mut self.upserts;
        let g = *group_of
            .entry((version, columns.clone()))
            .or_insert_with(|| {
                upserts.push(UpsertGroup {
                    version,
                    columns,
                    rows: Vec::new(),
                    seqs: Vec::new(),
                });
                upserts.len() - 1
            });
        self.upserts[g].rows.push((key, row));
        self.upserts[g].seqs.push(seq);
    }
}

impl Merger {
    /// A merger; `apply_truncates: false` ignores truncates (`target.truncate: ignore`).
    pub fn new(apply_truncates: bool) -> Merger {
        Merger {
            tables: HashMap::new(),
            apply_truncates,
            changes: 0,
        }
    }

    /// A truncate of `table` that came under a schema version without the key (Debezium sends
    /// TRUNCATE keyless; the journal files it under the keyed version when it knows one): the
    /// same as a `t` row, in journal order with the table's batches.
    pub fn truncate(&mut self, table: &Arc<TableSchema>) {
        self.changes += 1;
        if !self.apply_truncates {
            return;
        }
        self.tables
            .entry(table.table.clone())
            .or_insert_with(|| TableMerge::new(Vec::new()))
            .truncate();
    }

    /// Adds a batch of audit rows of `table`. Batches of one table must come in journal order.
    pub fn push(
        &mut self,
        table: &Arc<TableSchema>,
        batch: &RecordBatch,
    ) -> Result<(), MergeError> {
        if !table.has_key() {
            return self.push_unkeyed(table, batch);
        }
        let name = &table.table;
        let columns = BatchColumns::read(name, batch)?;
        let merge = self
            .tables
            .entry(name.clone())
            .or_insert_with(|| TableMerge::new(table.key_columns()));
        if merge.key.is_empty() {
            // Opened by a keyless truncate.
            merge.key = table.key_columns();
        }
        let key_idx = merge.key_indices(name, &columns.names)?;
        let version = merge.version(table, &columns);
        let mut buf = RowBuffers {
            skip: vec![false; columns.names.len()],
            ..RowBuffers::default()
        };
        for row in 0..batch.num_rows() {
            let seq = columns.seq.value(row);
            merge.advance(name, seq)?;
            self.changes += 1;
            buf.key.clear();
            for &k in &key_idx {
                push_rendered(&mut buf.key, &columns.renderers[k], row);
            }
            let op = match columns.op.value(row) {
                "d" => merge.delete(&buf.key),
                "t" if self.apply_truncates => {
                    merge.truncate();
                    continue;
                }
                "c" | "u" | "r" => {
                    let version_cols = &merge.versions[version];
                    let any_unchanged =
                        columns.render_row(row, version_cols, &mut buf.skip, &mut buf.row);
                    let moved_from = columns.old_key(row);
                    merge.upsert(version, &buf.key, &buf.row, any_unchanged, moved_from)
                }
                // Messages, and truncates that `target.truncate: ignore` leaves alone.
                _ => continue,
            };
            merge
                .rows
                .insert(buf.key.as_slice().into(), Slot { seq, op });
        }
        Ok(())
    }

    /// Adds a batch of a table without a key: each change kept as it came.
    fn push_unkeyed(
        &mut self,
        table: &Arc<TableSchema>,
        batch: &RecordBatch,
    ) -> Result<(), MergeError> {
        let name = &table.table;
        let columns = BatchColumns::read(name, batch)?;
        let merge = self
            .tables
            .entry(name.clone())
            .or_insert_with(|| TableMerge::new(Vec::new()));
        let version = merge.version(table, &columns);
        let mut skip = vec![false; columns.names.len()];
        let mut buf = Vec::new();
        for row in 0..batch.num_rows() {
            let seq = columns.seq.value(row);
            merge.advance(name, seq)?;
            self.changes += 1;
            let op = columns.op.value(row);
            if op == "t" && self.apply_truncates {
                merge.truncate();
                continue;
            }
            if !matches!(op, "c" | "r" | "u" | "d") {
                continue;
            }
            columns.render_row(row, &merge.versions[version], &mut skip, &mut buf);
            let image: Box<[u8]> = buf.as_slice().into();
            let (old, new) = match op {
                "d" => (Some(image), None),
                "u" => match columns.before(row) {
                    Some(old) => (Some(old), Some(image)),
                    None => {
                        return Err(MergeError::NoOldRow {
                            table: name.clone(),
                            seq,
                        })
                    }
                },
                _ => (None, Some(image)),
            };
            if op == "r" && merge.changes.last().is_none_or(|c| !c.read) {
                merge.snapshot_start = Some(merge.changes.len());
            }
            merge.changes.push(RowChange {
                seq,
                version,
                read: op == "r",
                old,
                new,
            });
        }
        Ok(())
    }

    /// The merged operations, tables sorted by name, each in journal order.
    pub fn finish(self) -> Vec<TablePlan> {
        let mut plans: Vec<TablePlan> = self
            .tables
            .into_iter()
            .map(|(table, merge)| merge.into_plan(table))
            .collect();
        plans.sort_by(|a, b| a.table.cmp(&b.table));
        plans
    }
}

/// `new` with its unchanged cells taken from `old` where `old` has them.
fn fill_unchanged(new: &[u8], new_version: &Version, old: &[u8], old_version: &Version) -> Vec<u8> {
    let old_cells: Vec<Cell<'_>> = cells(old).collect();
    let mut out = Vec::with_capacity(new.len() + old.len());
    for (i, cell) in cells(new).enumerate() {
        let filled = match cell {
            Cell::Unchanged => old_version
                .index
                .get(&new_version.columns[i])
                .map(|&j| old_cells[j])
                .unwrap_or(Cell::Unchanged),
            other => other,
        };
        push_cell(&mut out, filled);
    }
    out
}

/// The value text and the reason of a [`Cell::Bad`].
pub fn bad_parts(bad: &str) -> (&str, &str) {
    bad.split_once('\0').unwrap_or(("", bad))
}

/// A key as people read it: `id=7, region=eu`.
pub fn describe_key(plan_key: &[String], key: &[u8]) -> String {
    plan_key
        .iter()
        .zip(cells(key))
        .map(|(name, cell)| match cell {
            Cell::Value(v) => format!("{name}={}", String::from_utf8_lossy(v)),
            Cell::Null => format!("{name}=NULL"),
            Cell::Unchanged => format!("{name}=?"),
            Cell::Bad(m) => format!("{name}=<{}>", bad_parts(m).1),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
