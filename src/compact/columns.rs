//! Journal events → Arrow columns, by each column's resolved type ([`Logical`], the
//! [type map](crate::types#the-type-map)).
//!
//! A [`Col`] is built once per column per schema version and decodes values straight from the
//! bridge's bytes into an Arrow builder: no intermediate value per field. Types the mapping
//! does not know become Utf8 holding the value as JSON text, with a warning naming the table
//! and column once per compaction: never dropped.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    DurationMicrosecondBuilder, Float32Builder, Float64Builder, Int16Builder, Int32Builder,
    Int64Builder, Int8Builder, ListArray, StringBuilder, Time64MicrosecondBuilder,
    Time64NanosecondBuilder, TimestampMicrosecondBuilder, TimestampNanosecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field};

use crate::journal::event::{self, Cursor, DecodeError};
use crate::types::logical::UTC;
use crate::types::time;
use crate::types::{ConnectSchema, ConnectType, Logical, Unit};

/// How one column is built.
pub enum Col {
    Bool(BooleanBuilder),
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    /// With its precision and scale.
    Decimal(Decimal128Builder, u8, i8),
    /// Decimal too wide for Decimal128: exact text.
    DecimalText(StringBuilder),
    /// `VariableScaleDecimal` {scale, value}: exact text.
    VariableDecimal(StringBuilder),
    Date(Date32Builder),
    /// Naive timestamp in µs; the multiplier turns the wire unit (ms or µs) into µs.
    Timestamp(TimestampMicrosecondBuilder, i64),
    TimestampNs(TimestampNanosecondBuilder),
    /// `ZonedTimestamp`: ISO text on the wire, UTC µs in Arrow.
    ZonedTimestamp(TimestampMicrosecondBuilder),
    Time(Time64MicrosecondBuilder, i64),
    TimeNs(Time64NanosecondBuilder),
    Duration(DurationMicrosecondBuilder),
    List(Box<ListCol>),
    /// Unknown: the value rendered as JSON text.
    Json(StringBuilder, Box<ConnectSchema>),
}

pub struct ListCol {
    offsets: Vec<i32>,
    validity: Vec<bool>,
    item: Col,
    item_field: Arc<Field>,
}

impl Col {
    pub fn new(s: &ConnectSchema, capacity: usize) -> Col {
        Col::of(&s.logical(), s, capacity)
    }

    fn of(logical: &Logical, s: &ConnectSchema, capacity: usize) -> Col {
        let text = || StringBuilder::with_capacity(capacity, capacity * 16);
        match logical {
            Logical::Boolean => Col::Bool(BooleanBuilder::with_capacity(capacity)),
            Logical::Int8 => Col::I8(Int8Builder::with_capacity(capacity)),
            Logical::Int16 => Col::I16(Int16Builder::with_capacity(capacity)),
            Logical::Int32 => Col::I32(Int32Builder::with_capacity(capacity)),
            Logical::Int64 => Col::I64(Int64Builder::with_capacity(capacity)),
            Logical::Float32 => Col::F32(Float32Builder::with_capacity(capacity)),
            Logical::Float64 => Col::F64(Float64Builder::with_capacity(capacity)),
            Logical::Text(_) | Logical::ZonedTime => Col::Utf8(text()),
            Logical::Bytes => Col::Binary(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            Logical::Decimal { .. } => match logical.decimal128() {
                Some((p, sc)) => Col::Decimal(
                    Decimal128Builder::with_capacity(capacity)
                        .with_precision_and_scale(p, sc)
                        .expect("decimal128() checked precision and scale"),
                    p,
                    sc,
                ),
                None => Col::DecimalText(text()),
            },
            Logical::VariableDecimal => Col::VariableDecimal(text()),
            Logical::Date => Col::Date(Date32Builder::with_capacity(capacity)),
            Logical::ZonedTimestamp => Col::ZonedTimestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone(UTC),
            ),
            Logical::Timestamp(Unit::Nano) => {
                Col::TimestampNs(TimestampNanosecondBuilder::with_capacity(capacity))
            }
            Logical::Timestamp(unit) => Col::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity),
                unit.to_micros(),
            ),
            Logical::Time(Unit::Nano) => {
                Col::TimeNs(Time64NanosecondBuilder::with_capacity(capacity))
            }
            Logical::Time(unit) => Col::Time(
                Time64MicrosecondBuilder::with_capacity(capacity),
                unit.to_micros(),
            ),
            Logical::Duration => Col::Duration(DurationMicrosecondBuilder::with_capacity(capacity)),
            Logical::List(item_type) if item_type.is_known() => {
                let item = s.items.as_deref().expect("a list has an item schema");
                let DataType::List(field) = logical.arrow_type() else {
                    unreachable!("a list of a known type is an Arrow list")
                };
                Col::List(Box::new(ListCol {
                    offsets: {
                        let mut v = Vec::with_capacity(capacity + 1);
                        v.push(0);
                        v
                    },
                    validity: Vec::with_capacity(capacity),
                    item: Col::of(item_type, item, capacity),
                    item_field: field,
                }))
            }
            Logical::List(_) | Logical::Unknown => Col::Json(text(), Box::new(s.clone())),
        }
    }

    pub fn append_null(&mut self) {
        match self {
            Col::Bool(b) => b.append_null(),
            Col::I8(b) => b.append_null(),
            Col::I16(b) => b.append_null(),
            Col::I32(b) => b.append_null(),
            Col::I64(b) => b.append_null(),
            Col::F32(b) => b.append_null(),
            Col::F64(b) => b.append_null(),
            Col::Utf8(b) | Col::DecimalText(b) | Col::VariableDecimal(b) | Col::Json(b, _) => {
                b.append_null()
            }
            Col::Binary(b) => b.append_null(),
            Col::Decimal(b, ..) => b.append_null(),
            Col::Date(b) => b.append_null(),
            Col::Timestamp(b, _) | Col::ZonedTimestamp(b) => b.append_null(),
            Col::TimestampNs(b) => b.append_null(),
            Col::Time(b, _) => b.append_null(),
            Col::TimeNs(b) => b.append_null(),
            Col::Duration(b) => b.append_null(),
            Col::List(l) => {
                l.offsets
                    .push(*l.offsets.last().expect("offsets start with 0"));
                l.validity.push(false);
            }
        }
    }

    /// Decodes one present value of schema `s` from `c` and appends it. Returns `true` when
    /// the value was the unchanged-TOAST placeholder (appended as null).
    pub fn append(
        &mut self,
        s: &ConnectSchema,
        c: &mut Cursor<'_>,
        placeholder: &str,
    ) -> Result<bool, DecodeError> {
        match self {
            Col::Bool(b) => b.append_value(c.u8()? != 0),
            Col::I8(b) => b.append_value(c.u8()? as i8),
            Col::I16(b) => b.append_value(narrow(c.zigzag()?)?),
            Col::I32(b) => b.append_value(narrow(c.zigzag()?)?),
            Col::I64(b) => b.append_value(c.zigzag()?),
            Col::F32(b) => b.append_value(f32::from_bits(c.u32()?)),
            Col::F64(b) => b.append_value(f64::from_bits(c.u64()?)),
            Col::Utf8(b) => {
                let v = c.str()?;
                if v == placeholder {
                    b.append_null();
                    return Ok(true);
                }
                b.append_value(v);
            }
            Col::Binary(b) => {
                let len = c.varint()? as usize;
                let v = c.take(len)?;
                if v == placeholder.as_bytes() {
                    b.append_null();
                    return Ok(true);
                }
                b.append_value(v);
            }
            Col::Decimal(b, _, target) => {
                let (scale, bytes) = decimal_wire(c)?;
                b.append_value(unscaled_i128(bytes, scale, *target)?);
            }
            Col::DecimalText(b) => {
                let (scale, bytes) = decimal_wire(c)?;
                b.append_value(event::decimal_text(bytes, scale));
            }
            Col::VariableDecimal(b) => {
                // struct {scale: int32, value: bytes}; both present in Debezium's output.
                let bitmap = c.u8()?;
                if bitmap & 0b11 != 0 {
                    b.append_null();
                } else {
                    let scale = c.zigzag()? as i32;
                    let len = c.varint()? as usize;
                    b.append_value(event::decimal_text(c.take(len)?, scale));
                }
            }
            Col::Date(b) => b.append_value(narrow(c.zigzag()?)?),
            Col::Timestamp(b, mult) => b.append_value(c.zigzag()?.saturating_mul(*mult)),
            Col::TimestampNs(b) => b.append_value(c.zigzag()?),
            Col::ZonedTimestamp(b) => {
                let v = c.str()?;
                if v == placeholder {
                    b.append_null();
                    return Ok(true);
                }
                let us = time::parse_zoned_timestamp(v).map_err(|e| DecodeError(e.to_string()))?;
                b.append_value(us);
            }
            Col::Time(b, mult) => b.append_value(c.zigzag()?.saturating_mul(*mult)),
            Col::TimeNs(b) => b.append_value(c.zigzag()?),
            Col::Duration(b) => b.append_value(c.zigzag()?),
            Col::List(l) => {
                let item_schema = s
                    .items
                    .as_deref()
                    .ok_or_else(|| DecodeError("array schema without items".into()))?;
                let n = c.varint()? as usize;
                let last = *l.offsets.last().expect("offsets start with 0");
                // An unchanged TOASTed array arrives as [placeholder]: the column is null.
                if n == 1 && is_placeholder_item(c, item_schema, placeholder) {
                    c.u8()?;
                    c.str()?;
                    l.offsets.push(last);
                    l.validity.push(false);
                    return Ok(true);
                }
                for _ in 0..n {
                    if c.u8()? == 0 {
                        l.item.append_null();
                    } else {
                        l.item.append(item_schema, c, placeholder)?;
                    }
                }
                l.offsets.push(last + n as i32);
                l.validity.push(true);
            }
            Col::Json(b, schema) => {
                let v = event::decode_value(schema, c)?;
                b.append_value(v.to_string());
            }
        }
        Ok(false)
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Bool(b) => Arc::new(b.finish()),
            Col::I8(b) => Arc::new(b.finish()),
            Col::I16(b) => Arc::new(b.finish()),
            Col::I32(b) => Arc::new(b.finish()),
            Col::I64(b) => Arc::new(b.finish()),
            Col::F32(b) => Arc::new(b.finish()),
            Col::F64(b) => Arc::new(b.finish()),
            Col::Utf8(b) | Col::DecimalText(b) | Col::VariableDecimal(b) | Col::Json(b, _) => {
                Arc::new(b.finish())
            }
            Col::Binary(b) => Arc::new(b.finish()),
            Col::Decimal(b, p, s) => Arc::new(
                b.finish()
                    .with_precision_and_scale(*p, *s)
                    .expect("valid precision and scale"),
            ),
            Col::Date(b) => Arc::new(b.finish()),
            Col::Timestamp(b, _) => Arc::new(b.finish()),
            Col::ZonedTimestamp(b) => Arc::new(b.finish().with_timezone(UTC)),
            Col::TimestampNs(b) => Arc::new(b.finish()),
            Col::Time(b, _) => Arc::new(b.finish()),
            Col::TimeNs(b) => Arc::new(b.finish()),
            Col::Duration(b) => Arc::new(b.finish()),
            Col::List(l) => {
                let values = l.item.finish();
                let offsets = OffsetBuffer::new(std::mem::replace(&mut l.offsets, vec![0]).into());
                let validity = std::mem::take(&mut l.validity);
                let nulls = if validity.iter().all(|v| *v) {
                    None
                } else {
                    Some(NullBuffer::from(validity))
                };
                Arc::new(ListArray::new(l.item_field.clone(), offsets, values, nulls))
            }
        }
    }
}

/// Whether the next list item is a present string equal to the placeholder (not consumed).
fn is_placeholder_item(c: &Cursor<'_>, item: &ConnectSchema, placeholder: &str) -> bool {
    if item.ty != ConnectType::String {
        return false;
    }
    let mut peek = c.clone();
    matches!(peek.u8(), Ok(1)) && peek.str().is_ok_and(|v| v == placeholder)
}

fn narrow<T: TryFrom<i64>>(v: i64) -> Result<T, DecodeError> {
    T::try_from(v).map_err(|_| DecodeError(format!("value {v} out of range for its column")))
}

/// The wire form of a Connect Decimal: (scale, unscaled two's-complement big-endian bytes).
fn decimal_wire<'a>(c: &mut Cursor<'a>) -> Result<(i32, &'a [u8]), DecodeError> {
    let scale = c.zigzag()? as i32;
    let len = c.varint()? as usize;
    Ok((scale, c.take(len)?))
}

/// The unscaled value at `target` scale; an exact rescale or an error, never a rounding.
fn unscaled_i128(bytes: &[u8], scale: i32, target: i8) -> Result<i128, DecodeError> {
    if bytes.len() > 16 {
        return Err(DecodeError(format!(
            "decimal of {} bytes exceeds Decimal128",
            bytes.len()
        )));
    }
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut buf = if negative { [0xFFu8; 16] } else { [0u8; 16] };
    buf[16 - bytes.len()..].copy_from_slice(bytes);
    let mut v = i128::from_be_bytes(buf);
    let mut diff = target as i32 - scale;
    while diff > 0 {
        v = v
            .checked_mul(10)
            .ok_or_else(|| DecodeError("decimal overflows Decimal128 when rescaled".into()))?;
        diff -= 1;
    }
    while diff < 0 {
        if v % 10 != 0 {
            return Err(DecodeError(format!(
                "decimal has more than {target} fraction digits"
            )));
        }
        v /= 10;
        diff += 1;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescaling_is_exact_or_an_error() {
        assert_eq!(unscaled_i128(&[0x04, 0xE2], 2, 2).unwrap(), 1250);
        assert_eq!(unscaled_i128(&[0x04, 0xE2], 2, 4).unwrap(), 125000);
        assert_eq!(unscaled_i128(&[0xFF], 0, 2).unwrap(), -100);
        assert!(unscaled_i128(&[0x04, 0xE3], 2, 1).is_err());
        assert!(unscaled_i128(&[1; 17], 0, 0).is_err());
    }
}
