//! The change row: what an audit file holds ([audit files](crate::audit#audit-files)) and what
//! apply merges. A table's own columns (after-image for c/u/r, before-image for d, nulls for t),
//! then the `_cdc_` columns named here, in this order: `_cdc_op`, `_cdc_seq`, `_cdc_ts`,
//! `_cdc_position`, `_cdc_tx`, `_cdc_snapshot`, `_cdc_unchanged`, then `_cdc_old_key` for a
//! table with a key or `_cdc_before` for a table without one ([`change_schema`]).
//!
//! Every stage that writes or reads change rows (the decoder, the audit writer and reader,
//! the merge, `query`'s views, backfill) uses these names, so the layout has one definition.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::TableSchema;

/// `c` insert, `u` update, `d` delete, `r` snapshot read, `t` truncate.
pub const OP: &str = "_cdc_op";
/// Journal sequence: unique, increasing in commit order.
pub const SEQ: &str = "_cdc_seq";
/// Source commit time (UTC µs).
pub const TS: &str = "_cdc_ts";
/// Source position (PostgreSQL change LSN; MySQL `file:pos:row`).
pub const POSITION: &str = "_cdc_position";
/// Source transaction id.
pub const TX: &str = "_cdc_tx";
/// Whether the row is a snapshot read.
pub const SNAPSHOT: &str = "_cdc_snapshot";
/// Columns the source did not send (PostgreSQL's unchanged TOAST): null here, and left as they
/// are in the target.
pub const UNCHANGED: &str = "_cdc_unchanged";
/// The old key of the create half of an update that changed the key (a struct of the key
/// columns; null on every other row). Only tables with a key have it.
pub const OLD_KEY: &str = "_cdc_old_key";
/// The whole old row of an update of a table without a key (a struct of the table's columns;
/// null on every other row): with `REPLICA IDENTITY FULL` PostgreSQL logs it, and apply finds
/// the target row by it. Only tables without a key have it.
pub const BEFORE: &str = "_cdc_before";
/// The prefix every `_cdc_` column has; a source column with it would be shadowed.
pub const PREFIX: &str = "_cdc_";

/// The Arrow type of [`OLD_KEY`] for `table`, `None` for a table without a key.
pub fn old_key_type(table: &TableSchema) -> Option<DataType> {
    let key = table.key.as_ref().filter(|k| !k.fields.is_empty())?;
    let fields: Vec<Field> = key
        .fields
        .iter()
        .map(|f| Field::new(f.field_name(), f.logical().arrow_type(), true))
        .collect();
    Some(DataType::Struct(fields.into()))
}

/// The Arrow type of [`BEFORE`] for `table`, `None` for a table with a key.
pub fn before_type(table: &TableSchema) -> Option<DataType> {
    if table.has_key() {
        return None;
    }
    let fields: Vec<Field> = table
        .row
        .fields
        .iter()
        .map(|f| Field::new(f.field_name(), f.logical().arrow_type(), true))
        .collect();
    Some(DataType::Struct(fields.into()))
}

/// The Arrow schema of a table's change rows: its columns, then the `_cdc_` columns.
pub fn change_schema(table: &TableSchema) -> SchemaRef {
    let mut fields: Vec<Field> = table
        .row
        .fields
        .iter()
        .map(|f| Field::new(f.field_name(), f.logical().arrow_type(), true))
        .collect();
    fields.extend([
        Field::new(OP, DataType::Utf8, false),
        Field::new(SEQ, DataType::Int64, false),
        Field::new(
            TS,
            DataType::Timestamp(TimeUnit::Microsecond, Some(super::logical::UTC.into())),
            false,
        ),
        Field::new(POSITION, DataType::Utf8, false),
        Field::new(TX, DataType::Utf8, true),
        Field::new(SNAPSHOT, DataType::Boolean, false),
        Field::new(
            UNCHANGED,
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
    ]);
    if let Some(t) = old_key_type(table) {
        fields.push(Field::new(OLD_KEY, t, true));
    }
    if let Some(t) = before_type(table) {
        fields.push(Field::new(BEFORE, t, true));
    }
    Arc::new(Schema::new(fields))
}
