//! The journaled change event: the body the Java bridge encodes (`BatchEncoder.java` holds the
//! byte layout), read back, and decoded to JSON for people and scripts (`journal dump`). The
//! Connect schema that describes a body is [`crate::types::TableSchema`].
//!
//! The body is stored exactly as the bridge produced it; the journal only reads its fixed
//! header (op, flags, time, position) to de-duplicate. Values are decoded by their resolved
//! type ([`crate::types::Logical`], by Connect schema *name*), so `io.debezium.time.Date` and
//! Kafka's `Date` both become dates.

use serde_json::{Map, Value};

use super::Position;
use crate::types::time::{format_date, format_time_us, format_timestamp_ns, format_timestamp_us};
use crate::types::{names, ConnectSchema, ConnectType, Logical, TableSchema, Unit};

pub const SNAPSHOT: u8 = 1;
pub const SNAPSHOT_LAST: u8 = 2;
pub const PG_POSITION: u8 = 4;
pub const TX: u8 = 8;
pub const KEY: u8 = 16;
pub const BEFORE: u8 = 32;
pub const AFTER: u8 = 64;
/// A second flags byte follows the first (bodies written before it have none).
pub const EXT: u8 = 128;
/// `flags2`: the create half of a key-changing update carries the old key after the row.
pub const OLD_KEY: u8 = 1;
/// `flags2`: the last row of a table's initial (blocking) snapshot.
pub const TABLE_SNAPSHOT_LAST: u8 = 2;
/// `flags2`: a row of an incremental (signalled) snapshot, not of the initial one.
pub const INCREMENTAL: u8 = 4;
/// `flags2`: the delete half of a key-changing update; its create half follows it.
pub const NEW_KEY: u8 = 8;

/// A malformed event body or schema: a bridge bug or corruption, never user input.
#[derive(Debug, thiserror::Error)]
#[error("malformed event: {0}")]
pub struct DecodeError(pub String);

fn err<T>(what: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(what.into()))
}

/// The fixed part of an event body, read without touching the row values.
#[derive(Debug, Clone)]
pub struct EventHeader<'a> {
    pub op: u8,
    pub flags: u8,
    /// The second flags byte, 0 when absent.
    pub flags2: u8,
    /// Source commit time, microseconds since the epoch (UTC).
    pub ts_us: i64,
    /// PostgreSQL (last commit LSN, change LSN); orders and de-duplicates streaming events.
    pub position: Option<Position>,
    /// Other connectors' position text (`file:pos:row`); empty when none.
    pub position_text: &'a str,
    pub tx: Option<&'a str>,
    /// Key, before and after structs, as flagged.
    pub values: &'a [u8],
}

impl<'a> EventHeader<'a> {
    pub fn parse(body: &'a [u8]) -> Result<EventHeader<'a>, DecodeError> {
        let mut c = Cursor::new(body);
        let op = c.u8()?;
        let flags = c.u8()?;
        let flags2 = if flags & EXT != 0 { c.u8()? } else { 0 };
        let ts_us = c.u64()? as i64;
        let (position, position_text) = if flags & PG_POSITION != 0 {
            let commit_lsn = c.u64()?;
            let change_lsn = c.u64()?;
            (
                Some(Position {
                    commit_lsn,
                    change_lsn,
                }),
                "",
            )
        } else {
            (None, c.str()?)
        };
        let tx = if flags & TX != 0 {
            Some(c.str()?)
        } else {
            None
        };
        Ok(EventHeader {
            op,
            flags,
            flags2,
            ts_us,
            position,
            position_text,
            tx,
            values: c.rest(),
        })
    }

    pub fn is_snapshot(&self) -> bool {
        self.flags & SNAPSHOT != 0
    }

    pub fn is_last_snapshot_record(&self) -> bool {
        self.flags & SNAPSHOT_LAST != 0
    }

    /// The create half of a key-changing update: the old key follows the row.
    pub fn has_old_key(&self) -> bool {
        self.flags2 & OLD_KEY != 0
    }

    /// The delete half of a key-changing update (journals from before this flag never say).
    pub fn has_new_key(&self) -> bool {
        self.flags2 & NEW_KEY != 0
    }

    /// The last row of its table's initial snapshot.
    pub fn is_table_snapshot_last(&self) -> bool {
        self.flags2 & TABLE_SNAPSHOT_LAST != 0
    }

    /// A row of a full (initial or blocking) snapshot, which brings every row of its table;
    /// an incremental snapshot's rows interleave with changes instead.
    pub fn is_full_snapshot(&self) -> bool {
        self.is_snapshot() && self.flags2 & INCREMENTAL == 0
    }
}

/// A PostgreSQL LSN as PostgreSQL prints it: `16/B374D848`.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// An event decoded for display: `journal dump`'s line (one JSON object per event: `seq`,
/// `table`, `op`, `position`, `ts`, `tx`, `snapshot`, `key`, `before`, `after`, and `old_key`
/// on the create half of a key change).
pub fn to_json(seq: u64, schema: &TableSchema, body: &[u8]) -> Result<Value, DecodeError> {
    let h = EventHeader::parse(body)?;
    let mut c = Cursor::new(h.values);
    let key = if h.flags & KEY != 0 {
        match &schema.key {
            Some(k) => decode_struct(k, &mut c)?,
            None => return err("key flagged but the schema has no key"),
        }
    } else {
        Value::Null
    };
    let before = if h.flags & BEFORE != 0 {
        decode_struct(&schema.row, &mut c)?
    } else {
        Value::Null
    };
    let after = if h.flags & AFTER != 0 {
        decode_struct(&schema.row, &mut c)?
    } else {
        Value::Null
    };
    let old_key = match (&schema.key, h.has_old_key()) {
        (Some(k), true) => Some(decode_struct(k, &mut c)?),
        (None, true) => return err("old key flagged but the schema has no key"),
        _ => None,
    };
    if !c.rest().is_empty() {
        return err(format!("{} bytes left after the values", c.rest().len()));
    }
    let position = match h.position {
        Some(p) => format_lsn(p.change_lsn),
        None => h.position_text.to_string(),
    };
    let mut m = Map::new();
    m.insert("seq".into(), seq.into());
    m.insert("table".into(), schema.table.clone().into());
    m.insert("op".into(), char::from(h.op).to_string().into());
    m.insert("position".into(), position.into());
    m.insert("ts".into(), format_timestamp_us(h.ts_us, true).into());
    m.insert("tx".into(), h.tx.map(Value::from).unwrap_or(Value::Null));
    m.insert("snapshot".into(), h.is_snapshot().into());
    m.insert("key".into(), key);
    m.insert("before".into(), before);
    m.insert("after".into(), after);
    // Only the create half of a key-changing update has one.
    if let Some(old) = old_key {
        m.insert("old_key".into(), old);
    }
    Ok(Value::Object(m))
}

fn decode_struct(schema: &ConnectSchema, c: &mut Cursor<'_>) -> Result<Value, DecodeError> {
    if schema.ty != ConnectType::Struct {
        return err("expected a struct schema");
    }
    let n = schema.fields.len();
    let bitmap = c.take(n.div_ceil(8))?;
    let mut m = Map::with_capacity(n);
    for (i, f) in schema.fields.iter().enumerate() {
        let is_null = bitmap[i / 8] & (1 << (i % 8)) != 0;
        let v = if is_null {
            Value::Null
        } else {
            decode_value(f, c)?
        };
        m.insert(f.field_name().to_string(), v);
    }
    // VariableScaleDecimal is a struct on the wire and a number to people.
    if schema.logical() == Logical::VariableDecimal {
        if let (Some(Value::Number(scale)), Some(Value::String(hex))) =
            (m.get("scale"), m.get("value"))
        {
            let bytes = unhex(hex)?;
            let scale = scale.as_i64().unwrap_or(0) as i32;
            return Ok(Value::String(decimal_text(&bytes, scale)));
        }
    }
    Ok(Value::Object(m))
}

/// One present value of schema `s`, as `journal dump` shows it: by its resolved type, so a
/// new [`Logical`] variant must say how it prints.
pub fn decode_value(s: &ConnectSchema, c: &mut Cursor<'_>) -> Result<Value, DecodeError> {
    Ok(match s.logical() {
        Logical::Int8 => Value::from(c.u8()? as i8),
        Logical::Int16 | Logical::Int32 | Logical::Int64 | Logical::Duration => {
            Value::from(c.zigzag()?)
        }
        Logical::Date => Value::String(format_date(c.zigzag()?)),
        Logical::Timestamp(Unit::Nano) => Value::String(format_timestamp_ns(c.zigzag()?)),
        Logical::Timestamp(unit) => Value::String(format_timestamp_us(
            c.zigzag()?.saturating_mul(unit.to_micros()),
            false,
        )),
        Logical::Time(Unit::Nano) => Value::String(format_time_us(c.zigzag()?.div_euclid(1000))),
        Logical::Time(unit) => {
            Value::String(format_time_us(c.zigzag()?.saturating_mul(unit.to_micros())))
        }
        Logical::Float32 => float(f32::from_bits(c.u32()?) as f64),
        Logical::Float64 => float(f64::from_bits(c.u64()?)),
        Logical::Boolean => Value::Bool(c.u8()? != 0),
        Logical::Text(_) | Logical::ZonedTimestamp | Logical::ZonedTime => {
            Value::String(c.str()?.to_string())
        }
        Logical::Decimal { .. } => {
            let scale = c.zigzag()? as i32;
            let len = c.varint()? as usize;
            Value::String(decimal_text(c.take(len)?, scale))
        }
        Logical::Bytes => {
            let len = c.varint()? as usize;
            Value::String(hex(c.take(len)?))
        }
        Logical::VariableDecimal => decode_struct(s, c)?,
        Logical::List(_) | Logical::Unknown => decode_raw(s, c)?,
    })
}

/// A value by its Connect type alone: lists, and the types the mapping does not know (maps,
/// structs), whose parts are decoded by their own types.
fn decode_raw(s: &ConnectSchema, c: &mut Cursor<'_>) -> Result<Value, DecodeError> {
    Ok(match s.ty {
        ConnectType::Array => {
            let item = s
                .items
                .as_deref()
                .ok_or_else(|| DecodeError("array schema without items".into()))?;
            let n = c.varint()? as usize;
            let mut out = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                out.push(decode_optional(item, c)?);
            }
            Value::Array(out)
        }
        ConnectType::Map => {
            let (ks, vs) = match (s.keys.as_deref(), s.values.as_deref()) {
                (Some(k), Some(v)) => (k, v),
                _ => return err("map schema without keys or values"),
            };
            let n = c.varint()? as usize;
            let mut m = Map::new();
            for _ in 0..n {
                let k = decode_optional(ks, c)?;
                let v = decode_optional(vs, c)?;
                let k = match k {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                m.insert(k, v);
            }
            Value::Object(m)
        }
        ConnectType::Struct => decode_struct(s, c)?,
        _ => decode_value(s, c)?,
    })
}

/// Consumes one struct of `schema` without building values (keys the audit does not need).
pub fn skip_struct(schema: &ConnectSchema, c: &mut Cursor<'_>) -> Result<(), DecodeError> {
    let n = schema.fields.len();
    let bitmap = c.take(n.div_ceil(8))?;
    for (i, f) in schema.fields.iter().enumerate() {
        if bitmap[i / 8] & (1 << (i % 8)) == 0 {
            skip_value(f, c)?;
        }
    }
    Ok(())
}

fn skip_value(s: &ConnectSchema, c: &mut Cursor<'_>) -> Result<(), DecodeError> {
    match s.ty {
        ConnectType::Int8 | ConnectType::Boolean => {
            c.u8()?;
        }
        ConnectType::Int16 | ConnectType::Int32 | ConnectType::Int64 => {
            c.varint()?;
        }
        ConnectType::Float32 => {
            c.u32()?;
        }
        ConnectType::Float64 => {
            c.u64()?;
        }
        ConnectType::String => {
            c.str()?;
        }
        ConnectType::Bytes => {
            // A Decimal carries its scale before its bytes (BatchEncoder.java).
            if s.logical_name() == names::DECIMAL {
                c.varint()?;
            }
            let len = c.varint()? as usize;
            c.take(len)?;
        }
        ConnectType::Array => {
            let item = s
                .items
                .as_deref()
                .ok_or_else(|| DecodeError("array schema without items".into()))?;
            for _ in 0..c.varint()? {
                if c.u8()? != 0 {
                    skip_value(item, c)?;
                }
            }
        }
        ConnectType::Map => {
            let (k, v) = match (s.keys.as_deref(), s.values.as_deref()) {
                (Some(k), Some(v)) => (k, v),
                _ => return err("map schema without keys or values"),
            };
            for _ in 0..c.varint()? {
                if c.u8()? != 0 {
                    skip_value(k, c)?;
                }
                if c.u8()? != 0 {
                    skip_value(v, c)?;
                }
            }
        }
        ConnectType::Struct => skip_struct(s, c)?,
    }
    Ok(())
}

fn decode_optional(s: &ConnectSchema, c: &mut Cursor<'_>) -> Result<Value, DecodeError> {
    if c.u8()? == 0 {
        Ok(Value::Null)
    } else {
        decode_value(s, c)
    }
}

fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(v.to_string()))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("\\x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn unhex(s: &str) -> Result<Vec<u8>, DecodeError> {
    let digits = s.strip_prefix("\\x").unwrap_or(s);
    (0..digits.len() / 2)
        .map(|i| {
            u8::from_str_radix(&digits[2 * i..2 * i + 2], 16)
                .map_err(|_| DecodeError("bad hex".into()))
        })
        .collect()
}

/// Exact decimal text of a two's-complement big-endian unscaled integer with `scale`.
pub fn decimal_text(unscaled: &[u8], scale: i32) -> String {
    let negative = unscaled.first().is_some_and(|b| b & 0x80 != 0);
    // Magnitude as big-endian bytes.
    let mut mag: Vec<u8> = if negative {
        // two's complement negate: invert and add one
        let mut v: Vec<u8> = unscaled.iter().map(|b| !b).collect();
        for b in v.iter_mut().rev() {
            let (n, carry) = b.overflowing_add(1);
            *b = n;
            if !carry {
                break;
            }
        }
        v
    } else {
        unscaled.to_vec()
    };
    // Repeated division by 10^9 over base-256 digits.
    let mut chunks: Vec<u32> = Vec::new();
    while mag.iter().any(|&b| b != 0) {
        let mut rem: u64 = 0;
        for b in mag.iter_mut() {
            let cur = (rem << 8) | *b as u64;
            *b = (cur / 1_000_000_000) as u8;
            rem = cur % 1_000_000_000;
        }
        chunks.push(rem as u32);
        while mag.first() == Some(&0) {
            mag.remove(0);
        }
    }
    let mut digits = match chunks.split_last() {
        None => "0".to_string(),
        Some((most, rest)) => {
            let mut s = most.to_string();
            for c in rest.iter().rev() {
                s.push_str(&format!("{c:09}"));
            }
            s
        }
    };
    if scale > 0 {
        let scale = scale as usize;
        if digits.len() <= scale {
            digits = format!("{}{}", "0".repeat(scale - digits.len() + 1), digits);
        }
        digits.insert(digits.len() - scale, '.');
    } else if scale < 0 && digits != "0" {
        digits.push_str(&"0".repeat((-scale) as usize));
    }
    if negative && digits.bytes().any(|b| b.is_ascii_digit() && b != b'0') {
        digits.insert(0, '-');
    }
    digits
}

/// Reads the bridge's little-endian encoding.
#[derive(Clone)]
pub struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Cursor { b }
    }

    pub fn rest(&self) -> &'a [u8] {
        self.b
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.b.len() < n {
            return err(format!("needs {n} bytes, {} left", self.b.len()));
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= ((b & 0x7F) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        err("varint too long")
    }

    pub fn zigzag(&mut self) -> Result<i64, DecodeError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        let len = self.varint()? as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError("string is not UTF-8".into()))
    }
}

/// Writers of a body's primitives, as the bridge writes them (`BatchEncoder.java`): for the
/// native loader, and tests that build bodies.
pub(crate) mod encode {
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A signed integer, zigzag-encoded.
    pub fn zigzag(out: &mut Vec<u8>, v: i64) {
        varint(out, ((v << 1) ^ (v >> 63)) as u64);
    }

    /// A string: its length, then its bytes.
    pub fn text(out: &mut Vec<u8>, s: &str) {
        bytes(out, s.as_bytes());
    }

    /// An integer as minimal two's-complement big-endian bytes, as Java's
    /// `BigInteger.toByteArray()` writes a `Decimal`'s unscaled value.
    pub fn minimal_be(v: i128) -> Vec<u8> {
        let bytes = v.to_be_bytes();
        let mut i = 0;
        while i < 15
            && ((bytes[i] == 0 && bytes[i + 1] & 0x80 == 0)
                || (bytes[i] == 0xFF && bytes[i + 1] & 0x80 != 0))
        {
            i += 1;
        }
        bytes[i..].to_vec()
    }

    /// Bytes (or a string's UTF-8): the length, then the bytes.
    pub fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(v: i128) -> Vec<u8> {
        encode::minimal_be(v)
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(decimal_text(&be(1250), 2), "12.50");
        assert_eq!(decimal_text(&be(-1250), 2), "-12.50");
        assert_eq!(decimal_text(&be(5), 3), "0.005");
        assert_eq!(decimal_text(&be(-5), 3), "-0.005");
        assert_eq!(decimal_text(&be(0), 2), "0.00");
        assert_eq!(decimal_text(&be(12), -2), "1200");
        assert_eq!(decimal_text(&be(-128), 0), "-128");
        assert_eq!(
            decimal_text(&be(i128::MAX), 10),
            "17014118346046923173168730371.5884105727"
        );
        assert_eq!(
            decimal_text(&be(i128::MIN + 1), 0),
            "-170141183460469231731687303715884105727"
        );
    }

    #[test]
    fn times_before_1970_floor() {
        assert_eq!(format_timestamp_us(-1, false), "1969-12-31T23:59:59.999999");
        assert_eq!(format_timestamp_us(0, true), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_date(-1), "1969-12-31");
        assert_eq!(format_time_us(86_400_000_000), "24:00:00.000000");
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
    }

    #[test]
    fn varints_and_zigzag_round_trip() {
        for v in [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN] {
            let z = ((v << 1) ^ (v >> 63)) as u64;
            let mut buf = Vec::new();
            let mut x = z;
            while x >= 0x80 {
                buf.push((x as u8) | 0x80);
                x >>= 7;
            }
            buf.push(x as u8);
            assert_eq!(Cursor::new(&buf).zigzag().unwrap(), v);
        }
    }
}
