//! Events of one table schema version → an Arrow `RecordBatch` of change rows
//! ([`crate::types::cdc`]).

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Int64Builder, ListBuilder, StringBuilder, StructArray,
    TimestampMicrosecondBuilder,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Fields, SchemaRef};
use arrow::record_batch::RecordBatch;

use super::columns::Col;
use crate::journal::event::format_lsn;
use crate::journal::event::{self, Cursor, DecodeError, EventHeader};
use crate::types::{cdc, ConnectSchema, TableSchema};

/// Columns whose type the mapping does not know (written as JSON text).
pub fn unknown_columns(table: &TableSchema) -> Vec<String> {
    table
        .row
        .fields
        .iter()
        .filter(|f| !f.logical().is_known())
        .map(|f| f.field_name().to_string())
        .collect()
}

/// Builds one batch of audit rows for one table schema version.
pub struct RowBatch {
    table: Arc<TableSchema>,
    schema: SchemaRef,
    cols: Vec<Col>,
    op: StringBuilder,
    seq: Int64Builder,
    ts: TimestampMicrosecondBuilder,
    position: StringBuilder,
    tx: StringBuilder,
    snapshot: BooleanBuilder,
    unchanged: ListBuilder<StringBuilder>,
    /// `_cdc_old_key`, for tables with a key.
    old_key: Option<Images>,
    /// `_cdc_before`, for tables without one.
    before: Option<Images>,
    rows: usize,
    /// Journal bytes of the events in the batch: what its Arrow arrays take, about.
    bytes: usize,
    capacity: usize,
}

/// Builds a struct column of images: `_cdc_old_key` (the key columns, set on the create half
/// of a key-changing update) or `_cdc_before` (every column, set on an update of a table
/// without a key); null on the other rows.
struct Images {
    fields: Fields,
    cols: Vec<Col>,
    valid: Vec<bool>,
}

impl Images {
    fn new(ty: Option<DataType>, schema: &ConnectSchema, capacity: usize) -> Option<Images> {
        let DataType::Struct(fields) = ty? else {
            unreachable!("an image is a struct")
        };
        Some(Images {
            fields,
            cols: schema
                .fields
                .iter()
                .map(|f| Col::new(f, capacity))
                .collect(),
            valid: Vec::with_capacity(capacity),
        })
    }

    fn push(
        &mut self,
        schema: &ConnectSchema,
        c: &mut Cursor<'_>,
        placeholder: &str,
    ) -> Result<(), DecodeError> {
        let bitmap = c.take(schema.fields.len().div_ceil(8))?;
        for (i, (f, col)) in schema.fields.iter().zip(self.cols.iter_mut()).enumerate() {
            if bitmap[i / 8] & (1 << (i % 8)) != 0 {
                col.append_null();
            } else {
                // PostgreSQL logs old rows with their TOASTed values inline: no placeholder.
                col.append(f, c, placeholder)?;
            }
        }
        self.valid.push(true);
        Ok(())
    }

    fn push_null(&mut self) {
        for col in &mut self.cols {
            col.append_null();
        }
        self.valid.push(false);
    }

    fn finish(&mut self) -> ArrayRef {
        let arrays: Vec<ArrayRef> = self.cols.iter_mut().map(Col::finish).collect();
        let valid = std::mem::take(&mut self.valid);
        let nulls = (!valid.iter().all(|v| *v)).then(|| NullBuffer::from(valid));
        Arc::new(StructArray::new(self.fields.clone(), arrays, nulls))
    }
}

impl RowBatch {
    pub fn new(table: Arc<TableSchema>, capacity: usize) -> RowBatch {
        let schema = cdc::change_schema(&table);
        let cols = table
            .row
            .fields
            .iter()
            .map(|f| Col::new(f, capacity))
            .collect();
        RowBatch {
            schema,
            cols,
            op: StringBuilder::with_capacity(capacity, capacity),
            seq: Int64Builder::with_capacity(capacity),
            ts: TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            position: StringBuilder::with_capacity(capacity, capacity * 12),
            tx: StringBuilder::with_capacity(capacity, capacity * 8),
            snapshot: BooleanBuilder::with_capacity(capacity),
            unchanged: ListBuilder::new(StringBuilder::new()),
            old_key: table
                .key
                .as_ref()
                .and_then(|k| Images::new(cdc::old_key_type(&table), k, capacity)),
            before: Images::new(cdc::before_type(&table), &table.row, capacity),
            rows: 0,
            bytes: 0,
            capacity,
            table,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends the change row of one event: the after-image for c/u/r, the before-image for d.
    pub fn push(&mut self, seq: u64, body: &[u8], placeholder: &str) -> Result<(), DecodeError> {
        let h = EventHeader::parse(body)?;
        let mut c = Cursor::new(h.values);
        if h.flags & event::KEY != 0 {
            match &self.table.key {
                Some(k) => event::skip_struct(k, &mut c)?,
                None => return Err(DecodeError("key flagged but the schema has no key".into())),
            }
        }
        let want_before = h.op == b'd';
        let mut imaged = false;
        let mut before_kept = false;
        let mut unchanged: Vec<usize> = Vec::new();
        if h.flags & event::BEFORE != 0 {
            if want_before {
                self.push_image(&mut c, placeholder, &mut unchanged)?;
                imaged = true;
            } else if let Some(before) = self.before.as_mut().filter(|_| h.op == b'u') {
                before.push(&self.table.row, &mut c, placeholder)?;
                before_kept = true;
            } else {
                event::skip_struct(&self.table.row, &mut c)?;
            }
        }
        if let (Some(before), false) = (self.before.as_mut(), before_kept) {
            before.push_null();
        }
        if h.flags & event::AFTER != 0 {
            if want_before {
                event::skip_struct(&self.table.row, &mut c)?;
            } else {
                self.push_image(&mut c, placeholder, &mut unchanged)?;
                imaged = true;
            }
        }
        if !imaged {
            for col in &mut self.cols {
                col.append_null();
            }
        }
        self.op
            .append_value(char::from(h.op).encode_utf8(&mut [0u8; 4]));
        self.seq.append_value(seq as i64);
        self.ts.append_value(h.ts_us);
        match h.position {
            Some(p) => self.position.append_value(format_lsn(p.change_lsn)),
            None => self.position.append_value(h.position_text),
        }
        self.tx.append_option(h.tx);
        self.snapshot.append_value(h.is_snapshot());
        for i in unchanged {
            self.unchanged
                .values()
                .append_value(self.table.row.fields[i].field_name());
        }
        self.unchanged.append(true);
        match (&mut self.old_key, &self.table.key) {
            (Some(old), Some(key)) if h.has_old_key() => old.push(key, &mut c, placeholder)?,
            (Some(old), _) => old.push_null(),
            (None, _) if h.has_old_key() => {
                return Err(DecodeError(
                    "old key flagged but the schema has no key".into(),
                ))
            }
            (None, _) => {}
        }
        self.rows += 1;
        self.bytes += body.len();
        Ok(())
    }

    /// Whether the batch should be sent: `max_rows` rows, or `max_bytes` of events (rows of
    /// megabyte values must not pile up, nor pass Arrow's 2 GiB of offsets per array).
    pub fn is_full(&self, max_rows: usize, max_bytes: usize) -> bool {
        self.rows >= max_rows.max(1) || self.bytes >= max_bytes
    }

    fn push_image(
        &mut self,
        c: &mut Cursor<'_>,
        placeholder: &str,
        unchanged: &mut Vec<usize>,
    ) -> Result<(), DecodeError> {
        let fields = &self.table.row.fields;
        let bitmap = c.take(fields.len().div_ceil(8))?;
        for (i, (f, col)) in fields.iter().zip(self.cols.iter_mut()).enumerate() {
            if bitmap[i / 8] & (1 << (i % 8)) != 0 {
                col.append_null();
            } else if col.append(f, c, placeholder)? {
                unchanged.push(i);
            }
        }
        Ok(())
    }

    /// The rows so far as a batch; the builder starts empty again.
    pub fn finish(&mut self) -> RecordBatch {
        let mut arrays: Vec<ArrayRef> = self.cols.iter_mut().map(Col::finish).collect();
        arrays.push(Arc::new(self.op.finish()));
        arrays.push(Arc::new(self.seq.finish()));
        arrays.push(Arc::new(self.ts.finish().with_timezone("UTC")));
        arrays.push(Arc::new(self.position.finish()));
        arrays.push(Arc::new(self.tx.finish()));
        arrays.push(Arc::new(self.snapshot.finish()));
        arrays.push(Arc::new(self.unchanged.finish()));
        if let Some(old) = &mut self.old_key {
            arrays.push(old.finish());
        }
        if let Some(before) = &mut self.before {
            arrays.push(before.finish());
        }
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.schema.clone(), arrays)
            .expect("columns are built from the same schema")
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Warns once per table and column about types written as JSON text.
#[derive(Default)]
pub struct UnknownTypeWarnings {
    seen: HashSet<(String, String)>,
}

impl UnknownTypeWarnings {
    pub fn check(&mut self, table: &TableSchema) {
        for column in unknown_columns(table) {
            if self.seen.insert((table.table.clone(), column.clone())) {
                tracing::warn!(
                    table = %table.table,
                    column = %column,
                    "type not in the mapping; written as JSON text (Utf8)"
                );
            }
        }
    }
}
