//! Printing a query's result: an aligned table, CSV, or JSON lines.

use std::io::Write;

use duckdb::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use duckdb::arrow::datatypes::{DataType, SchemaRef};
use duckdb::arrow::util::display::{ArrayFormatter, FormatOptions};

use super::Format;

/// Prints `batches` (of `schema`) to `out` in `format`. A reader that went away (`| head`) is
/// not an error.
pub fn print(
    out: &mut impl Write,
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<(), std::io::Error> {
    let written = match format {
        Format::Table => write_table(out, schema, batches),
        Format::Csv => write_csv(out, schema, batches),
        Format::Json => write_json(out, batches),
    };
    match written.and_then(|()| out.flush().map_err(|e| e.to_string())) {
        Ok(()) => Ok(()),
        Err(e) if e.contains("Broken pipe") => Ok(()),
        Err(e) => Err(std::io::Error::other(e)),
    }
}

fn formatter(array: &dyn Array) -> Result<ArrayFormatter<'_>, String> {
    static OPTIONS: std::sync::LazyLock<FormatOptions<'static>> =
        std::sync::LazyLock::new(|| FormatOptions::default().with_null(""));
    ArrayFormatter::try_new(array, &OPTIONS).map_err(|e| e.to_string())
}

fn write_table(
    out: &mut impl Write,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<(), String> {
    let empty;
    let batches = if batches.is_empty() {
        empty = [RecordBatch::new_empty(schema.clone())];
        &empty[..]
    } else {
        batches
    };
    let table =
        duckdb::arrow::util::pretty::pretty_format_batches(batches).map_err(|e| e.to_string())?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    writeln!(out, "{table}").map_err(|e| e.to_string())?;
    writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" }).map_err(|e| e.to_string())
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
) -> Result<(), String> {
    let header: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| csv_field(f.name()))
        .collect();
    writeln!(out, "{}", header.join(",")).map_err(|e| e.to_string())?;
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
            writeln!(out, "{}", fields.join(",")).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn write_json(out: &mut impl Write, batches: &[RecordBatch]) -> Result<(), String> {
    for batch in batches {
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            let mut object = serde_json::Map::with_capacity(batch.num_columns());
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                object.insert(field.name().clone(), json_value(column, row)?);
            }
            serde_json::to_writer(&mut *out, &object).map_err(|e| e.to_string())?;
            writeln!(out).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// One cell as JSON: numbers as numbers, decimals as strings (exact), nested values nested,
/// everything else as its display text (timestamps in RFC 3339).
fn json_value(array: &ArrayRef, row: usize) -> Result<serde_json::Value, String> {
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
