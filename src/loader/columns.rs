//! A table's columns as the loader reads them: the Connect schema Debezium gives the table
//! (the same JSON, so the journal keeps one schema version for loaded and streamed rows) and,
//! per column, how a binary `COPY` value becomes the bridge's wire value
//! ([`crate::journal::event`]).
//!
//! The loader knows the types below, under Debezium's default `decimal.handling.mode`
//! (`precise`) and `time.precision.mode` (`adaptive`). A table with a column of any other type
//! is not the loader's: the initial snapshot then goes through Debezium ([`super::decide`]).

use serde_json::{json, Map, Value};

use crate::journal::event::encode;
use crate::types::names;

/// How one column's binary value is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int16,
    Int32,
    Int64,
    Bool,
    Float32,
    Float64,
    /// `text`, `varchar`, `char`, `name`: UTF-8 as sent.
    Text,
    Bytes,
    Uuid,
    Json,
    /// `jsonb`: a version byte, then the text.
    Jsonb,
    Date,
    /// `timestamp(0..3)`: milliseconds.
    TimestampMs,
    /// `timestamp(4..6)`: microseconds.
    TimestampUs,
    /// `timestamptz`, as ISO 8601 text in UTC.
    TimestampTz,
    /// `time(0..3)`: milliseconds, int32.
    TimeMs,
    /// `time(4..6)`: microseconds.
    TimeUs,
    /// `numeric(p,s)`: Connect `Decimal` at scale `s`.
    Decimal {
        scale: i32,
    },
    /// `numeric`: Debezium's `VariableScaleDecimal` struct.
    VariableDecimal,
}

/// One column of a table, from the catalog.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// `pg_type.typname`.
    pub type_name: String,
    pub typmod: i32,
    pub not_null: bool,
    /// The `DEFAULT` expression, as `pg_get_expr` prints it.
    pub default: Option<String>,
    pub kind: Kind,
}

/// Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_US: i64 = 946_684_800_000_000;
const PG_EPOCH_DAYS: i64 = 10_957;

impl Kind {
    /// The kind of a column of type `type_name` with modifier `typmod`; `None` when the
    /// loader does not carry the type.
    pub fn of(type_name: &str, typmod: i32) -> Option<Kind> {
        // timestamp(p) and time(p) keep p in typmod; -1 is the default precision, 6.
        let precision = if typmod < 0 { 6 } else { typmod };
        Some(match type_name {
            "int2" => Kind::Int16,
            "int4" => Kind::Int32,
            "int8" => Kind::Int64,
            "bool" => Kind::Bool,
            "float4" => Kind::Float32,
            "float8" => Kind::Float64,
            "text" | "varchar" | "bpchar" => Kind::Text,
            "bytea" => Kind::Bytes,
            "uuid" => Kind::Uuid,
            "json" => Kind::Json,
            "jsonb" => Kind::Jsonb,
            "date" => Kind::Date,
            "timestamp" if precision <= 3 => Kind::TimestampMs,
            "timestamp" => Kind::TimestampUs,
            "timestamptz" => Kind::TimestampTz,
            "time" if precision <= 3 => Kind::TimeMs,
            "time" => Kind::TimeUs,
            "numeric" if typmod < 0 => Kind::VariableDecimal,
            "numeric" => Kind::Decimal {
                scale: (typmod - 4) & 0xFFFF,
            },
            _ => return None,
        })
    }
}

/// A binary value the loader cannot carry (a server sending another format than its type's).
#[derive(Debug, thiserror::Error)]
#[error("column {column}: {problem}")]
pub struct ValueError {
    pub column: String,
    pub problem: String,
}

impl Column {
    /// Whether this value is carried as a null although the source has one (numeric `NaN`
    /// and infinities, which a Connect `Decimal` cannot hold: Debezium sends null).
    pub fn is_null_value(&self, v: &[u8]) -> bool {
        matches!(self.kind, Kind::Decimal { .. } | Kind::VariableDecimal)
            && v.len() >= 6
            && u16::from_be_bytes([v[4], v[5]]) & 0xC000 == 0xC000
    }

    /// Appends the wire form of binary value `v` to `out`.
    pub fn encode(&self, v: &[u8], out: &mut Vec<u8>) -> Result<(), ValueError> {
        let bad = |problem: String| ValueError {
            column: self.name.clone(),
            problem,
        };
        let fixed = |n: usize| -> Result<&[u8], ValueError> {
            if v.len() == n {
                Ok(v)
            } else {
                Err(bad(format!("{} bytes where {n} were expected", v.len())))
            }
        };
        match self.kind {
            Kind::Int16 => {
                let b = fixed(2)?;
                encode::zigzag(out, i64::from(i16::from_be_bytes([b[0], b[1]])));
            }
            Kind::Int32 => {
                let b = fixed(4)?;
                encode::zigzag(out, i64::from(i32::from_be_bytes(b.try_into().unwrap())));
            }
            Kind::Int64 => encode::zigzag(out, be_i64(fixed(8)?)),
            Kind::Bool => out.push(u8::from(fixed(1)?[0] != 0)),
            Kind::Float32 => {
                let b = fixed(4)?;
                out.extend_from_slice(&u32::from_be_bytes(b.try_into().unwrap()).to_le_bytes());
            }
            Kind::Float64 => {
                let b = fixed(8)?;
                out.extend_from_slice(&u64::from_be_bytes(b.try_into().unwrap()).to_le_bytes());
            }
            Kind::Text | Kind::Json => {
                std::str::from_utf8(v).map_err(|_| bad("text that is not UTF-8".into()))?;
                encode::bytes(out, v);
            }
            Kind::Bytes => encode::bytes(out, v),
            Kind::Jsonb => match v.split_first() {
                Some((1, text)) => encode::bytes(out, text),
                _ => return Err(bad("jsonb of an unknown binary version".into())),
            },
            Kind::Uuid => encode::text(out, &uuid_text(fixed(16)?)),
            Kind::Date => {
                let b = fixed(4)?;
                let days = i64::from(i32::from_be_bytes(b.try_into().unwrap()));
                encode::zigzag(out, days + PG_EPOCH_DAYS);
            }
            Kind::TimestampUs => encode::zigzag(out, be_i64(fixed(8)?) + PG_EPOCH_US),
            Kind::TimestampMs => {
                encode::zigzag(out, (be_i64(fixed(8)?) + PG_EPOCH_US).div_euclid(1000))
            }
            Kind::TimestampTz => {
                let us = be_i64(fixed(8)?) + PG_EPOCH_US;
                encode::text(out, &zoned_timestamp(us, self.precision()));
            }
            Kind::TimeUs => encode::zigzag(out, be_i64(fixed(8)?)),
            Kind::TimeMs => encode::zigzag(out, be_i64(fixed(8)?).div_euclid(1000)),
            Kind::Decimal { scale } => {
                let n = Numeric::parse(v).map_err(bad)?;
                encode::zigzag(out, i64::from(scale));
                encode::bytes(out, &n.unscaled(scale));
            }
            Kind::VariableDecimal => {
                let n = Numeric::parse(v).map_err(bad)?;
                let scale = i32::from(n.dscale);
                // The struct {scale int32, value bytes}: a bitmap byte (no nulls), then both.
                out.push(0);
                encode::zigzag(out, i64::from(scale));
                encode::bytes(out, &n.unscaled(scale));
            }
        }
        Ok(())
    }

    /// The precision of a `timestamp`, `timestamptz` or `time` column (6 by default).
    fn precision(&self) -> i32 {
        if self.typmod < 0 {
            6
        } else {
            self.typmod
        }
    }

    /// Debezium's `__debezium.source.column.length` and `.scale` (the JDBC driver's column
    /// size and decimal digits); no scale for an unconstrained `numeric`.
    fn length_and_scale(&self) -> (i64, Option<i64>) {
        const UNBOUNDED: i64 = 2_147_483_647;
        let fraction = |p: i32| if p > 0 { i64::from(p) + 1 } else { 0 };
        let p = self.precision();
        match self.type_name.as_str() {
            "int2" => (5, Some(0)),
            "int4" => (10, Some(0)),
            "int8" => (19, Some(0)),
            "bool" => (1, Some(0)),
            "float4" => (8, Some(8)),
            "float8" => (17, Some(17)),
            "varchar" | "bpchar" if self.typmod >= 4 => (i64::from(self.typmod - 4), Some(0)),
            "date" => (13, Some(0)),
            "timestamp" => (22 + fraction(p), Some(i64::from(p))),
            "timestamptz" => (28 + fraction(p), Some(i64::from(p))),
            "time" => (8 + fraction(p), Some(i64::from(p))),
            "numeric" if self.typmod < 0 => (0, None),
            "numeric" => (
                i64::from(((self.typmod - 4) >> 16) & 0xFFFF),
                Some(i64::from((self.typmod - 4) & 0xFFFF)),
            ),
            _ => (UNBOUNDED, Some(0)),
        }
    }

    /// The type name Debezium reports: a `serial` column (an integer defaulting to
    /// `nextval(…)`) by its pseudo-type.
    fn source_type(&self) -> String {
        let serial = self
            .default
            .as_deref()
            .is_some_and(|d| d.starts_with("nextval("));
        match (self.type_name.as_str(), serial) {
            ("int2", true) => "SMALLSERIAL".into(),
            ("int4", true) => "SERIAL".into(),
            ("int8", true) => "BIGSERIAL".into(),
            (other, _) => other.to_uppercase(),
        }
    }

    /// The column default as Debezium's schema carries it, when the loader knows the form.
    fn default_json(&self) -> Option<Value> {
        let expr = self.default.as_deref()?;
        if expr.starts_with("nextval(") {
            return self.not_null.then(|| json!(0));
        }
        let lower = expr.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "now()" | "current_timestamp" | "transaction_timestamp()" | "localtimestamp"
        ) {
            return match self.kind {
                Kind::TimestampMs | Kind::TimestampUs => Some(json!(0)),
                Kind::TimestampTz => Some(json!(zoned_timestamp(0, self.precision()))),
                _ => None,
            };
        }
        let literal = literal(expr)?;
        Some(match self.kind {
            Kind::Int16 | Kind::Int32 | Kind::Int64 => json!(literal.parse::<i64>().ok()?),
            Kind::Bool => json!(literal.parse::<bool>().ok()?),
            Kind::Text | Kind::Uuid | Kind::Json | Kind::Jsonb => json!(literal),
            Kind::Date => json!(days(&literal)?),
            Kind::Decimal { scale } => json!(rescale(&literal, scale)?),
            _ => return None,
        })
    }

    /// The field's Connect schema JSON as Debezium writes it (`SchemaJson.java`'s shape): in
    /// a key without the column parameters, in a row with them.
    pub fn schema(&self, in_key: bool) -> Value {
        let mut m = Map::new();
        m.insert("field".into(), self.name.clone().into());
        let (ty, name): (&str, Option<&str>) = match self.kind {
            Kind::Int16 => ("int16", None),
            Kind::Int32 => ("int32", None),
            Kind::Int64 => ("int64", None),
            Kind::Bool => ("boolean", None),
            Kind::Float32 => ("float32", None),
            Kind::Float64 => ("float64", None),
            Kind::Text => ("string", None),
            Kind::Bytes => ("bytes", None),
            Kind::Uuid => ("string", Some(names::UUID)),
            Kind::Json | Kind::Jsonb => ("string", Some(names::JSON)),
            Kind::Date => ("int32", Some(names::DATE)),
            Kind::TimestampMs => ("int64", Some(names::TIMESTAMP)),
            Kind::TimestampUs => ("int64", Some(names::MICRO_TIMESTAMP)),
            Kind::TimestampTz => ("string", Some(names::ZONED_TIMESTAMP)),
            Kind::TimeMs => ("int32", Some(names::TIME)),
            Kind::TimeUs => ("int64", Some(names::MICRO_TIME)),
            Kind::Decimal { .. } => ("bytes", Some(names::DECIMAL)),
            Kind::VariableDecimal => ("struct", Some(names::VARIABLE_SCALE_DECIMAL)),
        };
        m.insert("type".into(), ty.into());
        m.insert("optional".into(), (!in_key && !self.not_null).into());
        if let Some(name) = name {
            m.insert("name".into(), name.into());
            m.insert("version".into(), 1.into());
        }
        if !in_key {
            if let Some(d) = self.default_json() {
                m.insert("default".into(), d);
            }
        }
        let mut params = std::collections::BTreeMap::new();
        if let Kind::Decimal { scale } = self.kind {
            let (precision, _) = self.length_and_scale();
            params.insert(
                "connect.decimal.precision".to_string(),
                precision.to_string(),
            );
            params.insert("scale".to_string(), scale.to_string());
        }
        if !in_key {
            let (length, scale) = self.length_and_scale();
            params.insert(names::SOURCE_LENGTH.to_string(), length.to_string());
            params.insert(
                "__debezium.source.column.name".to_string(),
                self.name.clone(),
            );
            if let Some(s) = scale {
                params.insert("__debezium.source.column.scale".to_string(), s.to_string());
            }
            params.insert(names::SOURCE_TYPE.to_string(), self.source_type());
        }
        if !params.is_empty() {
            m.insert("parameters".into(), json!(params));
        }
        if self.kind == Kind::VariableDecimal {
            m.insert(
                "fields".into(),
                json!([
                    {"field": "scale", "type": "int32", "optional": false},
                    {"field": "value", "type": "bytes", "optional": false}
                ]),
            );
        }
        Value::Object(m)
    }
}

/// The constant of a default expression as `pg_get_expr` prints it (`'x'::text`, `(-1)`,
/// `1.50`, `false`), unquoted; `None` for anything else (a function call, an operator).
fn literal(expr: &str) -> Option<String> {
    let mut e = expr.trim();
    while let Some(inner) = e.strip_prefix('(').and_then(|x| x.strip_suffix(')')) {
        e = inner.trim();
    }
    if let Some(rest) = e.strip_prefix('\'') {
        let close = rest.rfind('\'')?;
        let cast = &rest[close + 1..];
        if !(cast.is_empty() || cast.starts_with("::"))
            || cast.contains('(') && !cast.contains("character")
        {
            return None;
        }
        return Some(rest[..close].replace("''", "'"));
    }
    let e = e.split("::").next()?.trim();
    let e = e
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .unwrap_or(e);
    (e.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.')))
    .then(|| e.to_string())
}

/// Days since 1970 of a `YYYY-MM-DD` date literal.
fn days(text: &str) -> Option<i64> {
    let mut parts = text.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    Some(crate::types::time::days_from_civil(y, m, d))
}

/// Decimal text at `scale` digits after the point (`1.5` at 2 is `1.50`); `None` when it
/// would lose digits or is not a plain decimal.
fn rescale(text: &str, scale: i32) -> Option<String> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if !digits(int.trim_start_matches('-')) || !digits(frac) || frac.len() > scale as usize {
        return None;
    }
    if scale == 0 {
        return Some(int.to_string());
    }
    Some(format!("{int}.{frac:0<width$}", width = scale as usize))
}

fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes(b.try_into().expect("8 bytes"))
}

fn uuid_text(b: &[u8]) -> String {
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

/// A UTC instant as Debezium's `ZonedTimestamp` text: as many fraction digits as the
/// column's precision.
pub fn zoned_timestamp(us: i64, precision: i32) -> String {
    let text = crate::types::time::format_timestamp_us(us, true);
    // `…:SS.ffffffZ`: keep `precision` of the six digits (none: no point either).
    match text.rfind('.') {
        Some(dot) if text.ends_with('Z') => {
            let keep = precision.clamp(0, 6) as usize;
            let cut = if keep == 0 { dot } else { dot + 1 + keep };
            format!("{}Z", &text[..cut])
        }
        _ => text,
    }
}

/// PostgreSQL's binary `numeric`: base-10000 digits, the weight of the first, a sign and the
/// display scale.
#[derive(Debug)]
struct Numeric<'a> {
    digits: &'a [u8],
    weight: i32,
    negative: bool,
    dscale: u16,
}

impl<'a> Numeric<'a> {
    fn parse(v: &'a [u8]) -> Result<Numeric<'a>, String> {
        if v.len() < 8 {
            return Err(format!("numeric of {} bytes", v.len()));
        }
        let ndigits = u16::from_be_bytes([v[0], v[1]]) as usize;
        let weight = i32::from(i16::from_be_bytes([v[2], v[3]]));
        let sign = u16::from_be_bytes([v[4], v[5]]);
        let dscale = u16::from_be_bytes([v[6], v[7]]);
        if v.len() != 8 + 2 * ndigits {
            return Err(format!("numeric of {ndigits} digits in {} bytes", v.len()));
        }
        Ok(Numeric {
            digits: &v[8..],
            weight,
            negative: sign == 0x4000,
            dscale,
        })
    }

    /// The unscaled integer at `scale`, minimal two's-complement big-endian (as Java's
    /// `BigInteger.toByteArray()`).
    fn unscaled(&self, scale: i32) -> Vec<u8> {
        // Decimal digits of the magnitude, then the power of ten they stand at.
        let mut text = String::with_capacity(self.digits.len() * 2);
        for pair in self.digits.chunks(2) {
            text.push_str(&format!("{:04}", u16::from_be_bytes([pair[0], pair[1]])));
        }
        let n = (self.digits.len() / 2) as i32;
        // text is Σ d_i·10000^(n-1-i); the value is that × 10000^(weight-n+1).
        let exponent = 4 * (self.weight - n + 1) + scale;
        if exponent >= 0 {
            text.push_str(&"0".repeat(exponent as usize));
        } else {
            let cut = (-exponent) as usize;
            text.truncate(text.len().saturating_sub(cut));
        }
        twos_complement(&text, self.negative)
    }
}

/// Decimal digits (a magnitude) as minimal two's-complement big-endian bytes.
fn twos_complement(digits: &str, negative: bool) -> Vec<u8> {
    let digits = digits.trim_start_matches('0');
    let small = if digits.is_empty() {
        Some(0)
    } else {
        digits.parse::<i128>().ok()
    };
    if let Some(m) = small {
        return encode::minimal_be(if negative { -m } else { m });
    }
    // Wider than i128: base-256 by repeated multiply-add.
    let mut mag: Vec<u8> = vec![0];
    for d in digits.bytes() {
        let mut carry = u32::from(d - b'0');
        for b in mag.iter_mut().rev() {
            let v = u32::from(*b) * 10 + carry;
            *b = v as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            mag.insert(0, carry as u8);
            carry >>= 8;
        }
    }
    if mag[0] & 0x80 != 0 {
        mag.insert(0, 0);
    }
    if negative {
        for b in mag.iter_mut() {
            *b = !*b;
        }
        for b in mag.iter_mut().rev() {
            let (v, carry) = b.overflowing_add(1);
            *b = v;
            if !carry {
                break;
            }
        }
        while mag.len() > 1 && mag[0] == 0xFF && mag[1] & 0x80 != 0 {
            mag.remove(0);
        }
    }
    mag
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::event::decimal_text;

    fn numeric(ndigits: &[u16], weight: i16, negative: bool, dscale: u16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(ndigits.len() as u16).to_be_bytes());
        v.extend_from_slice(&weight.to_be_bytes());
        v.extend_from_slice(&(if negative { 0x4000u16 } else { 0 }).to_be_bytes());
        v.extend_from_slice(&dscale.to_be_bytes());
        for d in ndigits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_become_exact_unscaled_integers() {
        // 12345.67 = [1, 2345, 6700] weight 1
        let n = numeric(&[1, 2345, 6700], 1, false, 2);
        let u = Numeric::parse(&n).unwrap().unscaled(2);
        assert_eq!(decimal_text(&u, 2), "12345.67");
        let n = numeric(&[1, 2345, 6700], 1, true, 2);
        assert_eq!(
            decimal_text(&Numeric::parse(&n).unwrap().unscaled(2), 2),
            "-12345.67"
        );
        // 0.005 = [50] weight -1, at scale 3
        let n = numeric(&[50], -1, false, 3);
        assert_eq!(
            decimal_text(&Numeric::parse(&n).unwrap().unscaled(3), 3),
            "0.005"
        );
        // zero: no digits
        let n = numeric(&[], 0, false, 2);
        assert_eq!(Numeric::parse(&n).unwrap().unscaled(2), vec![0]);
        // 10^40 at scale 0: wider than i128
        let n = numeric(&[1], 10, false, 0);
        let u = Numeric::parse(&n).unwrap().unscaled(0);
        assert_eq!(decimal_text(&u, 0), format!("1{}", "0".repeat(40)));
        let n = numeric(&[1], 10, true, 0);
        let u = Numeric::parse(&n).unwrap().unscaled(0);
        assert_eq!(decimal_text(&u, 0), format!("-1{}", "0".repeat(40)));
        // -128 is one byte, 128 two
        assert_eq!(twos_complement("128", true), vec![0x80]);
        assert_eq!(twos_complement("128", false), vec![0, 0x80]);
    }

    #[test]
    fn kinds_follow_debeziums_adaptive_precision() {
        assert_eq!(Kind::of("timestamp", 3), Some(Kind::TimestampMs));
        assert_eq!(Kind::of("timestamp", -1), Some(Kind::TimestampUs));
        assert_eq!(
            Kind::of("numeric", (12 << 16) + 2 + 4),
            Some(Kind::Decimal { scale: 2 })
        );
        assert_eq!(Kind::of("numeric", -1), Some(Kind::VariableDecimal));
        assert_eq!(Kind::of("interval", -1), None);
    }

    #[test]
    fn uuids_print_as_postgresql_prints_them() {
        let b: Vec<u8> = (0u8..16).collect();
        assert_eq!(uuid_text(&b), "00010203-0405-0607-0809-0a0b0c0d0e0f");
    }
}
