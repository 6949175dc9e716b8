//! Audit rows (Arrow) → the text MySQL parses back to the same value, in the column the
//! [type map](crate::types#the-type-map) gives it.
//!
//! Every value is rendered once, as the exact text form its MySQL column accepts: integers and
//! decimals as digits, floats as the shortest text that parses back to the same bits, times as
//! `YYYY-MM-DD HH:MM:SS.ffffff` (UTC), intervals as microseconds, lists as JSON. The same text
//! is bound as a statement parameter or written into a `LOAD DATA` stream, so both paths store
//! identical values. A value MySQL cannot hold (NaN, an infinite timestamp) is not rounded or
//! dropped: it becomes an error naming the column, raised only if that value is the one to
//! apply.

use std::fmt::Write as _;
use std::io::Write as _;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    DurationMicrosecondArray, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array,
    Int8Array, LargeBinaryArray, LargeStringArray, ListArray, StringArray, Time64MicrosecondArray,
    Time64NanosecondArray, TimestampMicrosecondArray, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, TimeUnit};
use chrono::Datelike as _;

use crate::types::{limits, time, Logical, Unit};

/// A value the target cannot store exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrepresentable(pub String);

/// How one Arrow column renders its cells.
pub enum Cells<'a> {
    Bool(&'a BooleanArray),
    I8(&'a Int8Array),
    I16(&'a Int16Array),
    I32(&'a Int32Array),
    I64(&'a Int64Array),
    F32(&'a Float32Array),
    F64(&'a Float64Array),
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Binary(&'a BinaryArray),
    LargeBinary(&'a LargeBinaryArray),
    Decimal(&'a Decimal128Array, i8),
    Date(&'a Date32Array),
    Timestamp(&'a TimestampMicrosecondArray),
    TimestampNs(&'a TimestampNanosecondArray),
    Time(&'a Time64MicrosecondArray),
    TimeNs(&'a Time64NanosecondArray),
    Duration(&'a DurationMicrosecondArray),
    List(&'a ListArray),
}

impl<'a> Cells<'a> {
    /// The renderer of `array`, or `None` for a type the audit files never hold.
    pub fn new(array: &'a ArrayRef) -> Option<Cells<'a>> {
        Some(match array.data_type() {
            DataType::Boolean => Cells::Bool(array.as_boolean()),
            DataType::Int8 => Cells::I8(array.as_primitive()),
            DataType::Int16 => Cells::I16(array.as_primitive()),
            DataType::Int32 => Cells::I32(array.as_primitive()),
            DataType::Int64 => Cells::I64(array.as_primitive()),
            DataType::Float32 => Cells::F32(array.as_primitive()),
            DataType::Float64 => Cells::F64(array.as_primitive()),
            DataType::Utf8 => Cells::Utf8(array.as_string()),
            DataType::LargeUtf8 => Cells::LargeUtf8(array.as_string()),
            DataType::Binary => Cells::Binary(array.as_binary()),
            DataType::LargeBinary => Cells::LargeBinary(array.as_binary()),
            DataType::Decimal128(_, s) => Cells::Decimal(array.as_primitive(), *s),
            DataType::Date32 => Cells::Date(array.as_primitive()),
            DataType::Timestamp(TimeUnit::Microsecond, _) => Cells::Timestamp(array.as_primitive()),
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                Cells::TimestampNs(array.as_primitive())
            }
            DataType::Time64(TimeUnit::Microsecond) => Cells::Time(array.as_primitive()),
            DataType::Time64(TimeUnit::Nanosecond) => Cells::TimeNs(array.as_primitive()),
            DataType::Duration(TimeUnit::Microsecond) => Cells::Duration(array.as_primitive()),
            DataType::List(_) => Cells::List(array.as_list()),
            _ => return None,
        })
    }

    fn array(&self) -> &dyn Array {
        match self {
            Cells::Bool(a) => *a,
            Cells::I8(a) => *a,
            Cells::I16(a) => *a,
            Cells::I32(a) => *a,
            Cells::I64(a) => *a,
            Cells::F32(a) => *a,
            Cells::F64(a) => *a,
            Cells::Utf8(a) => *a,
            Cells::LargeUtf8(a) => *a,
            Cells::Binary(a) => *a,
            Cells::LargeBinary(a) => *a,
            Cells::Decimal(a, _) => *a,
            Cells::Date(a) => *a,
            Cells::Timestamp(a) => *a,
            Cells::TimestampNs(a) => *a,
            Cells::Time(a) => *a,
            Cells::TimeNs(a) => *a,
            Cells::Duration(a) => *a,
            Cells::List(a) => *a,
        }
    }

    pub fn is_null(&self, row: usize) -> bool {
        self.array().is_null(row)
    }

    /// The value at `row` as people read it (Arrow's display), for messages and the rejected
    /// rows table: also for values [`Cells::write`] refuses.
    pub fn display(&self, row: usize) -> String {
        // Dates and times by our own formatting, which spells years beyond 9999 and before 1
        // (Arrow's formatter refuses some of them).
        match self {
            Cells::Timestamp(a) => {
                return time::format_timestamp_us(a.value(row), a.timezone().is_some())
            }
            Cells::Date(a) => return time::format_date(i64::from(a.value(row))),
            _ => {}
        }
        let options = arrow::util::display::FormatOptions::default();
        match arrow::util::display::ArrayFormatter::try_new(self.array(), &options) {
            Ok(f) => f.value(row).to_string(),
            Err(_) => "(no text form)".into(),
        }
    }

    /// Appends the text of the (non-null) value at `row` to `out`.
    pub fn write(&self, row: usize, out: &mut Vec<u8>) -> Result<(), Unrepresentable> {
        match self {
            Cells::Bool(a) => out.push(if a.value(row) { b'1' } else { b'0' }),
            Cells::I8(a) => write_int(out, a.value(row) as i64),
            Cells::I16(a) => write_int(out, a.value(row) as i64),
            Cells::I32(a) => write_int(out, a.value(row) as i64),
            Cells::I64(a) => write_int(out, a.value(row)),
            // A float is widened exactly; its shortest text then parses back to the same bits.
            Cells::F32(a) => write_float(out, a.value(row) as f64)?,
            Cells::F64(a) => write_float(out, a.value(row))?,
            Cells::Utf8(a) => out.extend_from_slice(a.value(row).as_bytes()),
            Cells::LargeUtf8(a) => out.extend_from_slice(a.value(row).as_bytes()),
            Cells::Binary(a) => out.extend_from_slice(a.value(row)),
            Cells::LargeBinary(a) => out.extend_from_slice(a.value(row)),
            Cells::Decimal(a, scale) => write_decimal(out, a.value(row), *scale),
            Cells::Date(a) => write_date(out, a.value(row))?,
            Cells::Timestamp(a) => write_timestamp(out, a.value(row))?,
            Cells::TimestampNs(a) => {
                let ns = a.value(row);
                if ns.rem_euclid(1000) != 0 {
                    return Err(Unrepresentable(format!(
                        "timestamp with nanoseconds ({ns} ns) does not fit DATETIME(6)"
                    )));
                }
                write_timestamp(out, ns.div_euclid(1000))?
            }
            Cells::Time(a) => write_time(out, a.value(row))?,
            Cells::TimeNs(a) => {
                let ns = a.value(row);
                if ns.rem_euclid(1000) != 0 {
                    return Err(Unrepresentable(format!(
                        "time with nanoseconds ({ns} ns) does not fit TIME(6)"
                    )));
                }
                write_time(out, ns.div_euclid(1000))?
            }
            Cells::Duration(a) => write_int(out, a.value(row)),
            Cells::List(a) => {
                let mut s = String::new();
                list_json(a, row, &mut s)?;
                out.extend_from_slice(s.as_bytes());
            }
        }
        Ok(())
    }
}

fn write_int(out: &mut Vec<u8>, v: i64) {
    let _ = write!(out, "{v}");
}

fn write_float(out: &mut Vec<u8>, v: f64) -> Result<(), Unrepresentable> {
    if v.is_nan() {
        // MySQL's numeric columns refuse these (strict mode), naming the column; a text column
        // the user chose for them takes them as PostgreSQL writes them.
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"Infinity" } else { b"-Infinity" });
    } else if v == 0.0 || (1e-7..1e21).contains(&v.abs()) {
        // The shortest text that parses back to the same bits, as people write numbers.
        let _ = write!(out, "{v}");
    } else {
        // The same digits with an exponent: compact for very large or small values.
        let _ = write!(out, "{v:e}");
    }
    Ok(())
}

/// `unscaled × 10^-scale` as exact decimal text.
pub fn write_decimal(out: &mut Vec<u8>, unscaled: i128, scale: i8) {
    if scale <= 0 {
        let _ = write!(out, "{unscaled}");
        for _ in 0..(-(scale as i32)) {
            out.push(b'0');
        }
        return;
    }
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    if unscaled < 0 {
        out.push(b'-');
    }
    if digits.len() <= scale {
        out.extend_from_slice(b"0.");
        out.resize(out.len() + scale - digits.len(), b'0');
        out.extend_from_slice(digits.as_bytes());
    } else {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int.as_bytes());
        out.push(b'.');
        out.extend_from_slice(frac.as_bytes());
    }
}

/// `v` in `unit` as microseconds; `None` when it has nanoseconds a microsecond cannot hold
/// (or overflows).
fn exact_micros(unit: Unit, v: i64) -> Option<i64> {
    match unit {
        Unit::Nano if v % 1000 == 0 => Some(v / 1000),
        Unit::Nano => None,
        _ => v.checked_mul(unit.to_micros()),
    }
}

fn write_date(out: &mut Vec<u8>, days: i32) -> Result<(), Unrepresentable> {
    let date = time::date(i64::from(days))
        .ok_or_else(|| Unrepresentable(format!("date {days} days from 1970 is out of range")))?;
    mysql_year(date.year_ce(), "date")?;
    time::write_date(out, &date);
    Ok(())
}

/// MySQL dates hold years 1..9999 ([`limits::MYSQL_YEARS`]).
fn mysql_year((ce, year): (bool, u32), what: &str) -> Result<(), Unrepresentable> {
    if !ce || !limits::MYSQL_YEARS.contains(&year) {
        let era = if ce { "" } else { " BC" };
        return Err(Unrepresentable(format!(
            "{what} in year {year}{era} is outside MySQL's range (years 1 to 9999)"
        )));
    }
    Ok(())
}

fn write_timestamp(out: &mut Vec<u8>, us: i64) -> Result<(), Unrepresentable> {
    // PostgreSQL's infinities: a DATETIME refuses them by name; a text column keeps them.
    if us == i64::MAX {
        out.extend_from_slice(b"infinity");
        return Ok(());
    }
    if us == i64::MIN {
        out.extend_from_slice(b"-infinity");
        return Ok(());
    }
    let t = time::timestamp_us(us)
        .ok_or_else(|| Unrepresentable(format!("timestamp {us} µs is out of range")))?;
    mysql_year(t.year_ce(), "timestamp")?;
    time::write_timestamp(out, &t, b' ', time::Fraction::Micros);
    Ok(())
}

fn write_time(out: &mut Vec<u8>, us: i64) -> Result<(), Unrepresentable> {
    // MySQL TIME spans ±838:59:59.999999; PostgreSQL's time is 00:00:00 to 24:00:00.
    if us.abs() > limits::MYSQL_TIME_MAX_US {
        return Err(Unrepresentable(format!(
            "time of {us} µs is outside MySQL's TIME range"
        )));
    }
    if us < 0 {
        out.push(b'-');
    }
    time::write_clock_us(out, us.unsigned_abs());
    Ok(())
}

/// A column default (the Connect schema's, in the bridge's wire form: see
/// [`crate::types::ConnectSchema::default`]) as a MySQL default expression, parenthesised so
/// that TEXT, BLOB and JSON columns take it too. `None` when the type has no literal form here
/// or the value does not fit the column: the column is then added without a default.
pub fn default_literal(logical: &Logical, value: &serde_json::Value) -> Option<String> {
    let text = |out: Vec<u8>| String::from_utf8(out).ok();
    let quoted = |s: &str| format!("('{}')", s.replace('\\', "\\\\").replace('\'', "''"));
    // By type first, so a new type must say whether it has a literal; a value of another
    // JSON shape than its type's has none.
    let literal = match logical {
        Logical::Int8 | Logical::Int16 | Logical::Int32 | Logical::Int64 | Logical::Duration => {
            value.as_i64()?.to_string()
        }
        Logical::Float32 | Logical::Float64 => {
            let mut out = Vec::new();
            write_float(&mut out, value.as_f64()?).ok()?;
            text(out)?
        }
        Logical::Boolean => if value.as_bool()? { "1" } else { "0" }.to_string(),
        Logical::Text(_) | Logical::ZonedTime => return Some(quoted(value.as_str()?)),
        Logical::Decimal { .. } => {
            let s = value.as_str()?;
            let number = s
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-');
            (!s.is_empty() && number).then(|| s.to_string())?
        }
        Logical::Date => {
            let mut out = Vec::new();
            write_date(&mut out, i32::try_from(value.as_i64()?).ok()?).ok()?;
            return Some(quoted(&text(out)?));
        }
        Logical::Timestamp(unit) => {
            let us = exact_micros(*unit, value.as_i64()?)?;
            let mut out = Vec::new();
            write_timestamp(&mut out, us).ok()?;
            return Some(quoted(&text(out)?));
        }
        Logical::ZonedTimestamp => {
            let us = time::parse_zoned_timestamp(value.as_str()?).ok()?;
            let mut out = Vec::new();
            write_timestamp(&mut out, us).ok()?;
            return Some(quoted(&text(out)?));
        }
        Logical::Time(unit) => {
            let us = exact_micros(*unit, value.as_i64()?)?;
            let mut out = Vec::new();
            write_time(&mut out, us).ok()?;
            return Some(quoted(&text(out)?));
        }
        Logical::Bytes => {
            let hex = value.as_str()?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            format!("X'{hex}'")
        }
        // Unconstrained numeric, lists and unknown types: no literal form here.
        Logical::VariableDecimal | Logical::List(_) | Logical::Unknown => return None,
    };
    Some(format!("({literal})"))
}

/// A list cell as a JSON array (an array is a `JSON` column in the target).
fn list_json(a: &ListArray, row: usize, s: &mut String) -> Result<(), Unrepresentable> {
    let values = a.value(row);
    let cells = Cells::new(&values).ok_or_else(|| {
        Unrepresentable(format!("list of {} has no JSON form", values.data_type()))
    })?;
    s.push('[');
    for i in 0..values.len() {
        if i > 0 {
            s.push(',');
        }
        json_value(&cells, i, s)?;
    }
    s.push(']');
    Ok(())
}

fn json_value(cells: &Cells<'_>, i: usize, s: &mut String) -> Result<(), Unrepresentable> {
    if cells.is_null(i) {
        s.push_str("null");
        return Ok(());
    }
    match cells {
        Cells::Bool(a) => s.push_str(if a.value(i) { "true" } else { "false" }),
        Cells::List(a) => list_json(a, i, s)?,
        Cells::Utf8(a) => push_json_string(s, a.value(i)),
        Cells::LargeUtf8(a) => push_json_string(s, a.value(i)),
        Cells::Binary(_) | Cells::LargeBinary(_) => {
            // Bytes as hex text: JSON has no binary type.
            let mut raw = Vec::new();
            cells.write(i, &mut raw)?;
            s.push('"');
            for b in raw {
                let _ = write!(s, "{b:02x}");
            }
            s.push('"');
        }
        Cells::I8(_)
        | Cells::I16(_)
        | Cells::I32(_)
        | Cells::I64(_)
        | Cells::F32(_)
        | Cells::F64(_)
        | Cells::Decimal(..)
        | Cells::Duration(_) => {
            let mut raw = Vec::new();
            cells.write(i, &mut raw)?;
            s.push_str(std::str::from_utf8(&raw).expect("numbers are ASCII"));
        }
        Cells::Date(_)
        | Cells::Timestamp(_)
        | Cells::TimestampNs(_)
        | Cells::Time(_)
        | Cells::TimeNs(_) => {
            let mut raw = Vec::new();
            cells.write(i, &mut raw)?;
            s.push('"');
            s.push_str(std::str::from_utf8(&raw).expect("times are ASCII"));
            s.push('"');
        }
    }
    Ok(())
}

fn push_json_string(s: &mut String, v: &str) {
    s.push_str(&serde_json::Value::from(v).to_string());
}

/// Appends `v` to a `LOAD DATA` stream in its default text format (tab-separated, `\`-escaped).
pub fn write_load_data_field(out: &mut Vec<u8>, v: &[u8]) {
    for &b in v {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0 => out.extend_from_slice(b"\\0"),
            _ => out.push(b),
        }
    }
}

/// Appends `v` as hex digits (for binary columns, loaded through `UNHEX`).
pub fn write_hex(out: &mut Vec<u8>, v: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(v.len() * 2);
    for &b in v {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn text(array: ArrayRef, row: usize) -> Result<String, Unrepresentable> {
        let cells = Cells::new(&array).unwrap();
        let mut out = Vec::new();
        cells.write(row, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn decimals_are_exact_text() {
        let cases = [
            (1250i128, 2i8, "12.50"),
            (-5, 3, "-0.005"),
            (0, 2, "0.00"),
            (7, -2, "700"),
            (
                i128::MAX / 1000,
                10,
                "17014118346046923173168730.3715884105",
            ),
        ];
        for (v, s, want) in cases {
            let mut out = Vec::new();
            write_decimal(&mut out, v, s);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn floats_parse_back_to_the_same_bits() {
        for v in [
            0.1f64,
            -1e300,
            5e-324,
            123456.789,
            -0.0,
            1.0 / 3.0,
            1.5e-8,
            9.9e20,
        ] {
            let got = text(Arc::new(Float64Array::from(vec![v])), 0).unwrap();
            assert_eq!(got.parse::<f64>().unwrap().to_bits(), v.to_bits(), "{got}");
        }
        assert_eq!(
            text(Arc::new(Float64Array::from(vec![1.5])), 0).unwrap(),
            "1.5"
        );
        assert_eq!(
            text(Arc::new(Float64Array::from(vec![1e300])), 0).unwrap(),
            "1e300"
        );
        let f = 0.1f32;
        let got = text(Arc::new(Float32Array::from(vec![f])), 0).unwrap();
        assert_eq!(got.parse::<f64>().unwrap() as f32, f);
        let nan = text(Arc::new(Float64Array::from(vec![f64::NAN])), 0).unwrap();
        assert_eq!(nan, "NaN", "left for MySQL to refuse, naming the column");
    }

    #[test]
    fn times_render_in_utc_with_microseconds() {
        let ts = TimestampMicrosecondArray::from(vec![-1, 1_700_000_000_123_456]);
        assert_eq!(
            text(Arc::new(ts.clone()), 0).unwrap(),
            "1969-12-31 23:59:59.999999"
        );
        assert_eq!(text(Arc::new(ts), 1).unwrap(), "2023-11-14 22:13:20.123456");
        let edges =
            TimestampMicrosecondArray::from(vec![-62_135_596_800_000_000, 253_402_300_799_999_999]);
        assert_eq!(
            text(Arc::new(edges.clone()), 0).unwrap(),
            "0001-01-01 00:00:00.000000"
        );
        assert_eq!(
            text(Arc::new(edges), 1).unwrap(),
            "9999-12-31 23:59:59.999999"
        );
        let inf = TimestampMicrosecondArray::from(vec![i64::MAX]);
        assert_eq!(text(Arc::new(inf), 0).unwrap(), "infinity");
        let t = Time64MicrosecondArray::from(vec![86_400_000_000, 3_723_000_004]);
        assert_eq!(text(Arc::new(t.clone()), 0).unwrap(), "24:00:00.000000");
        assert_eq!(text(Arc::new(t), 1).unwrap(), "01:02:03.000004");
        let d = Date32Array::from(vec![-719_162, 0, -719_163]);
        assert_eq!(text(Arc::new(d.clone()), 0).unwrap(), "0001-01-01");
        assert_eq!(text(Arc::new(d.clone()), 1).unwrap(), "1970-01-01");
        assert!(text(Arc::new(d), 2).is_err(), "year 0 (1 BC) is refused");
    }

    #[test]
    fn lists_become_json() {
        use arrow::array::{ListBuilder, StringBuilder};
        let mut b = ListBuilder::new(StringBuilder::new());
        b.values().append_value("a\"b");
        b.values().append_null();
        b.append(true);
        let array: ArrayRef = Arc::new(b.finish());
        assert_eq!(text(array, 0).unwrap(), r#"["a\"b",null]"#);
    }

    #[test]
    fn load_data_fields_escape_their_delimiters() {
        let mut out = Vec::new();
        write_load_data_field(&mut out, b"a\tb\nc\\N\0\r");
        assert_eq!(out, b"a\\tb\\nc\\\\N\\0\\r");
        let mut hex = Vec::new();
        write_hex(&mut hex, &[0, 0xAB, 0xFF]);
        assert_eq!(hex, b"00ABFF");
    }

    #[test]
    fn column_defaults_become_literals_of_their_type_only() {
        use crate::types::Text;
        use serde_json::json;
        let lit = |l: Logical, v: serde_json::Value| default_literal(&l, &v);
        assert_eq!(lit(Logical::Int32, json!(-7)), Some("(-7)".into()));
        assert_eq!(lit(Logical::Boolean, json!(true)), Some("(1)".into()));
        assert_eq!(
            lit(Logical::Text(Text::Plain), json!("it's \\")),
            Some("('it''s \\\\')".into())
        );
        assert_eq!(lit(Logical::Date, json!(-1)), Some("('1969-12-31')".into()));
        assert_eq!(
            lit(Logical::Timestamp(Unit::Milli), json!(1)),
            Some("('1970-01-01 00:00:00.001000')".into())
        );
        assert_eq!(
            lit(Logical::ZonedTimestamp, json!("1970-01-01T01:00:00+01:00")),
            Some("('1970-01-01 00:00:00.000000')".into())
        );
        assert_eq!(lit(Logical::Bytes, json!("00ff")), Some("(X'00ff')".into()));
        // A value of another shape, one out of MySQL's range, or a type without a literal.
        assert_eq!(lit(Logical::Int32, json!("7")), None);
        assert_eq!(lit(Logical::Bytes, json!("zz")), None);
        assert_eq!(lit(Logical::Date, json!(-719_163)), None);
        assert_eq!(lit(Logical::VariableDecimal, json!("1.5")), None);
    }

    #[test]
    fn every_audit_column_type_renders() {
        use crate::types::{Logical, Text, Unit};
        let all = [
            Logical::Int8,
            Logical::Int16,
            Logical::Int32,
            Logical::Int64,
            Logical::Float32,
            Logical::Float64,
            Logical::Boolean,
            Logical::Text(Text::Json),
            Logical::Bytes,
            Logical::Decimal {
                precision: Some(12),
                source_length: None,
                scale: 2,
                money: false,
            },
            Logical::Decimal {
                precision: Some(80),
                source_length: None,
                scale: 2,
                money: false,
            },
            Logical::VariableDecimal,
            Logical::Date,
            Logical::Timestamp(Unit::Milli),
            Logical::Timestamp(Unit::Nano),
            Logical::ZonedTimestamp,
            Logical::Time(Unit::Micro),
            Logical::Time(Unit::Nano),
            Logical::ZonedTime,
            Logical::Duration,
            Logical::List(Box::new(Logical::Int32)),
            Logical::Unknown,
        ];
        for l in &all {
            // A new variant does not compile here until it is added to `all` above.
            match l {
                Logical::Int8
                | Logical::Int16
                | Logical::Int32
                | Logical::Int64
                | Logical::Float32
                | Logical::Float64
                | Logical::Boolean
                | Logical::Text(_)
                | Logical::Bytes
                | Logical::Decimal { .. }
                | Logical::VariableDecimal
                | Logical::Date
                | Logical::Timestamp(_)
                | Logical::ZonedTimestamp
                | Logical::Time(_)
                | Logical::ZonedTime
                | Logical::Duration
                | Logical::List(_)
                | Logical::Unknown => {}
            }
            let array = arrow::array::new_empty_array(&l.arrow_type());
            assert!(Cells::new(&array).is_some(), "{l:?} has no MySQL text");
        }
    }
}
