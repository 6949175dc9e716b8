//! Merge per primary key (DESIGN §7): a window's changes → the one final operation per key.
//!
//! Rows arrive as audit batches (table columns then `_cdc_` columns), in journal order per
//! table (`_cdc_seq`, never commit time). For each key the last change wins: `d` leaves a
//! delete, `c`/`u`/`r` an upsert. An update that changes a key arrives from Debezium as a
//! delete of the old key and a create of the new one, so it needs no special case. A column
//! the source did not send (`_cdc_unchanged`, PostgreSQL's unchanged TOAST) takes the value
//! an earlier change in the window gave it; if none did, it stays out of the upsert and the
//! target keeps its value.
//!
//! Values are rendered to their MySQL text once, here ([`super::values`]), and kept per key in
//! one compact buffer: memory is about the size of the final rows.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, ListArray, StringArray};
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
}

/// One cell of a merged row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell<'a> {
    Null,
    Value(&'a [u8]),
    /// Not sent by the source and not set earlier in the window: leave the target's value.
    Unchanged,
    /// A value the target cannot hold, with the reason.
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

fn push_cell(out: &mut Vec<u8>, cell: Cell<'_>) {
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
            push_cell(out, Cell::Bad(&e.0));
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
    Upsert { version: u32, cells: Box<[u8]> },
}

struct Slot {
    seq: i64,
    op: Op,
}

struct TableMerge {
    versions: Vec<Version>,
    /// Key columns, in key order.
    key: Vec<String>,
    rows: HashMap<Box<[u8]>, Slot>,
    last_seq: i64,
}

/// Merges the changes of a window, table by table.
#[derive(Default)]
pub struct Merger {
    tables: HashMap<String, TableMerge>,
    /// Changes read (before merging), for the summary.
    pub changes: u64,
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
}

/// The merged operations of one table.
#[derive(Debug)]
pub struct TablePlan {
    pub table: String,
    pub versions: Vec<Version>,
    pub key: Vec<String>,
    /// Keys to delete, in journal order of their last change.
    pub deletes: Vec<Box<[u8]>>,
    pub upserts: Vec<UpsertGroup>,
}

impl TablePlan {
    /// The row count the plan applies.
    pub fn rows(&self) -> usize {
        self.deletes.len() + self.upserts.iter().map(|g| g.rows.len()).sum::<usize>()
    }
}

impl Merger {
    /// Adds a batch of audit rows of `table` (which must have a key). Batches of one table must
    /// come in journal order.
    pub fn push(
        &mut self,
        table: &Arc<TableSchema>,
        batch: &RecordBatch,
    ) -> Result<(), MergeError> {
        let name = &table.table;
        let missing = |column: &str| MergeError::MissingColumn {
            table: name.clone(),
            column: column.to_string(),
        };
        let schema = batch.schema();
        let n = schema.index_of(cdc::OP).map_err(|_| missing(cdc::OP))?;
        let op: &StringArray = batch.column(n).as_string();
        let seq: &Int64Array = batch
            .column(schema.index_of(cdc::SEQ).map_err(|_| missing(cdc::SEQ))?)
            .as_primitive::<Int64Type>();
        let unchanged: Option<&ListArray> = schema
            .index_of(cdc::UNCHANGED)
            .ok()
            .map(|i| batch.column(i).as_list());
        let columns: Vec<String> = schema.fields()[..n]
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let renderers = batch.columns()[..n]
            .iter()
            .zip(&columns)
            .map(|(a, c)| {
                Cells::new(a).ok_or_else(|| MergeError::Type {
                    table: name.clone(),
                    column: c.clone(),
                    ty: a.data_type().to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let merge = self
            .tables
            .entry(name.clone())
            .or_insert_with(|| TableMerge {
                versions: Vec::new(),
                key: table.key_columns(),
                rows: HashMap::new(),
                last_seq: i64::MIN,
            });
        let key_idx = merge
            .key
            .iter()
            .map(|k| {
                columns
                    .iter()
                    .position(|c| c == k)
                    .ok_or_else(|| missing(k))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let binary: Vec<bool> = renderers
            .iter()
            .map(|r| matches!(r, Cells::Binary(_) | Cells::LargeBinary(_)))
            .collect();
        let version = match merge
            .versions
            .iter()
            .position(|v| v.columns == columns && v.binary == binary)
        {
            Some(v) => v,
            None => {
                merge.versions.push(Version {
                    schema: table.clone(),
                    index: columns
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (c.clone(), i))
                        .collect(),
                    columns: columns.clone(),
                    binary,
                });
                merge.versions.len() - 1
            }
        };

        let mut key = Vec::with_capacity(32);
        let mut row_buf = Vec::with_capacity(256);
        let mut skip = vec![false; n];
        for row in 0..batch.num_rows() {
            let s = seq.value(row);
            if s <= merge.last_seq {
                return Err(MergeError::Order {
                    table: name.clone(),
                    seq: s,
                    last: merge.last_seq,
                });
            }
            merge.last_seq = s;
            self.changes += 1;
            key.clear();
            for &k in &key_idx {
                push_rendered(&mut key, &renderers[k], row);
            }
            let new_op = match op.value(row) {
                "d" => Op::Delete,
                "c" | "u" | "r" => {
                    let mut any_unchanged = false;
                    if let Some(list) =
                        unchanged.filter(|l| !l.is_null(row) && l.value_length(row) > 0)
                    {
                        let names = list.value(row);
                        let names = names.as_string::<i32>();
                        skip.iter_mut().for_each(|s| *s = false);
                        for i in 0..names.len() {
                            if let Some(&c) = merge.versions[version].index.get(names.value(i)) {
                                skip[c] = true;
                                any_unchanged = true;
                            }
                        }
                    }
                    row_buf.clear();
                    for (c, r) in renderers.iter().enumerate() {
                        if any_unchanged && skip[c] {
                            row_buf.push(UNCHANGED);
                        } else {
                            push_rendered(&mut row_buf, r, row);
                        }
                    }
                    if any_unchanged {
                        if let Some(Slot {
                            op:
                                Op::Upsert {
                                    version: before,
                                    cells: old,
                                },
                            ..
                        }) = merge.rows.get(key.as_slice())
                        {
                            row_buf = fill_unchanged(
                                &row_buf,
                                &merge.versions[version],
                                old,
                                &merge.versions[*before as usize],
                            );
                        }
                    }
                    Op::Upsert {
                        version: version as u32,
                        cells: row_buf.as_slice().into(),
                    }
                }
                // Truncates and messages are not row changes.
                _ => continue,
            };
            match merge.rows.get_mut(key.as_slice()) {
                Some(slot) => *slot = Slot { seq: s, op: new_op },
                None => {
                    merge
                        .rows
                        .insert(key.as_slice().into(), Slot { seq: s, op: new_op });
                }
            }
        }
        Ok(())
    }

    /// The merged operations, tables sorted by name, each in journal order.
    pub fn finish(self) -> Vec<TablePlan> {
        let mut plans: Vec<TablePlan> =
            self.tables
                .into_iter()
                .map(|(table, t)| {
                    let mut slots: Vec<(Box<[u8]>, Slot)> = t.rows.into_iter().collect();
                    slots.sort_unstable_by_key(|(_, s)| s.seq);
                    let mut deletes = Vec::new();
                    let mut upserts: Vec<UpsertGroup> = Vec::new();
                    let mut group_of: HashMap<(usize, Vec<usize>), usize> = HashMap::new();
                    for (key, slot) in slots {
                        match slot.op {
                            Op::Delete => deletes.push(key),
                            Op::Upsert {
                                version,
                                cells: row,
                            } => {
                                let version = version as usize;
                                let columns: Vec<usize> = cells(&row)
                                    .enumerate()
                                    .filter(|(_, c)| *c != Cell::Unchanged)
                                    .map(|(i, _)| i)
                                    .collect();
                                let g = *group_of.entry((version, columns.clone())).or_insert_with(
                                    || {
                                        upserts.push(UpsertGroup {
                                            version,
                                            columns,
                                            rows: Vec::new(),
                                        });
                                        upserts.len() - 1
                                    },
                                );
                                upserts[g].rows.push((key, row));
                            }
                        }
                    }
                    TablePlan {
                        table,
                        versions: t.versions,
                        key: t.key,
                        deletes,
                        upserts,
                    }
                })
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

/// A key as people read it: `id=7, region=eu`.
pub fn describe_key(plan_key: &[String], key: &[u8]) -> String {
    plan_key
        .iter()
        .zip(cells(key))
        .map(|(name, cell)| match cell {
            Cell::Value(v) => format!("{name}={}", String::from_utf8_lossy(v)),
            Cell::Null => format!("{name}=NULL"),
            Cell::Unchanged => format!("{name}=?"),
            Cell::Bad(m) => format!("{name}=<{m}>"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
