//! Printing a query's result: an aligned table, CSV, or JSON lines.

use std::io::{ErrorKind, Write};

use duckdb::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use duckdb::arrow::datatypes::{DataType, SchemaRef};
use duckdb::arrow::error::ArrowError;
use duckdb::arrow::util::display::{ArrayFormatter, FormatOptions};

use super::Format;

/// Why a result could not be printed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(transparent)]
    Write(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A value Arrow cannot format.
    #[error(transparent)]
    Format(#[from] ArrowError),
}

impl OutputError {
    /// The reader went away (`| head`).
    fn broken_pipe(&self) -> bool {
        match self {
            OutputError::Write(e) => e.kind() == ErrorKind::BrokenPipe,
            OutputError::Json(e) => e.io_error_kind() == Some(ErrorKind::BrokenPipe),
            OutputError::Format(_) => false,
        }
    }
}

/// Prints `batches` (of `schema`) to `out` in `format`. A reader that went away (`| head`) is
/// not an error.
pub fn print(
    out: &mut impl Write,
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<(), OutputError> {
    let written = match format {
        Format::Table => write_table(out, schema, batches),
        Format::Csv => write_csv(out, schema, batches),
        Format::Json => write_json(out, batches),
    };
    match written.and_then(|()| Ok(out.flush()?)) {
        Err(e) if e.broken_pipe() => Ok(()),
        other => other,
    }
}

fn formatter(array: &dyn Array) -> Result<ArrayFormatter<'_>, ArrowError> {
    static OPTIONS: std::sync::LazyLock<FormatOptions<'static>> =
        std::sync::LazyLock::new(|| FormatOptions::default().with_null(""));
    ArrayFormatter::try_new(array, &OPTIONS)
}

fn write_table(
    out: &mut impl Write,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<(), OutputError> {
    let empty;
    let batches = if batches.is_empty() {
        empty = [RecordBatch::new_empty(schema.clone())];
        &empty[..]
    } else {
        batches
    };
    let table = duckdb::arrow::util::pretty::pretty_format_batches(batches)?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    writeln!(out, "{table}")?;
    writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
    Ok(())
}

/// A CSV field, quoted when it must be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn write_csv(
    out: &mut impl Write,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<(), OutputError> {
    let header: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| csv_field(f.name()))
        .collect();
    writeln!(out, "{}", header.join(","))?;
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| formatter(c.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            let fields: Vec<String> = batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(c, f)| {
                    if c.is_null(row) {
                        String::new()
                    } else {
                        csv_field(&f.value(row).to_string())
                    }
                })
                .collect();
            writeln!(out, "{}", fields.join(","))?;
        }
    }
    Ok(())
}

fn write_json(out: &mut impl Write, batches: &[RecordBatch]) -> Result<(), OutputError> {
    for batch in batches {
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            let mut object = serde_json::Map::with_capacity(batch.num_columns());
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                object.insert(field.name().clone(), json_value(column, row)?);
            }
            serde_json::to_writer(&mut *out, &object)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// One cell as JSON: numbers as numbers, decimals as strings (exact), nested values nested,
/// everything else as its display text (timestamps in RFC 3339).
fn json_value(array: &ArrayRef, row: usize) -> Result<serde_json::Value, ArrowError> {
    use duckdb::arrow::datatypes as t;
    use serde_json::Value as J;
    if array.is_null(row) {
        return Ok(J::Null);
    }
    macro_rules! num {
        ($ty:ty) => {
            J::from(array.as_primitive::<$ty>().value(row))
        };
    }
    Ok(match array.data_type() {
        DataType::Boolean => J::Bool(array.as_boolean().value(row)),
        DataType::Int8 => num!(t::Int8Type),
        DataType::Int16 => num!(t::Int16Type),
        DataType::Int32 => num!(t::Int32Type),
        DataType::Int64 => num!(t::Int64Type),
        DataType::UInt8 => num!(t::UInt8Type),
        DataType::UInt16 => num!(t::UInt16Type),
        DataType::UInt32 => num!(t::UInt32Type),
        DataType::UInt64 => num!(t::UInt64Type),
        DataType::Float32 | DataType::Float64 => {
            let v = match array.data_type() {
                DataType::Float32 => array.as_primitive::<t::Float32Type>().value(row) as f64,
                _ => array.as_primitive::<t::Float64Type>().value(row),
            };
            serde_json::Number::from_f64(v).map_or_else(|| J::String(v.to_string()), J::Number)
        }
        DataType::Utf8 => J::String(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => J::String(array.as_string::<i64>().value(row).to_string()),
        DataType::List(_) => {
            let list = array.as_list::<i32>().value(row);
            J::Array(
                (0..list.len())
                    .map(|i| json_value(&list, i))
                    .collect::<Result<_, _>>()?,
            )
        }
        DataType::LargeList(_) => {
            let list = array.as_list::<i64>().value(row);
            J::Array(
                (0..list.len())
                    .map(|i| json_value(&list, i))
                    .collect::<Result<_, _>>()?,
            )
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let mut object = serde_json::Map::new();
            for (f, c) in fields.iter().zip(s.columns()) {
                object.insert(f.name().clone(), json_value(c, row)?);
            }
            J::Object(object)
        }
        _ => J::String(formatter(array.as_ref())?.value(row).to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
