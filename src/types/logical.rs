//! [`Logical`]: a column's type, resolved once from its Connect schema (or, for verify, from
//! the PostgreSQL catalog: [`super::postgres`]), with its Arrow type and its MySQL type as
//! exhaustive matches.
//!
//! Besides the Connect type, `Logical` keeps the facts of the source type that some stage
//! decides by: the declared bound of `varchar(n)` and `char(n)` (target DDL), whether text is
//! blank-padded `char` or another type's output (verify casts and orders by it), whether a
//! decimal is PostgreSQL's `money`, and `timetz` (Debezium's `ZonedTime`). Debezium gives the
//! source type name in `__debezium.source.column.type`; it is read here, once.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, TimeUnit};

use super::mysql::{self, ColType};
use super::{names, ConnectSchema, ConnectType};

/// The limits the mapping keeps, in one place (what happens past each: the
/// [type map](crate::types#the-type-map)).
pub mod limits {
    /// Arrow's Decimal128 holds 38 digits; wider decimals are audited as exact text.
    pub const ARROW_DECIMAL128_PRECISION: u8 = 38;
    /// MySQL's DECIMAL holds 65 digits, 30 of them after the point; wider is exact text.
    pub const MYSQL_DECIMAL_PRECISION: u32 = 65;
    pub const MYSQL_DECIMAL_SCALE: i32 = 30;
    /// MySQL dates and datetimes hold years 1 to 9999 (the documented range starts at 1000;
    /// MariaDB and MySQL accept smaller years in DATE and DATETIME).
    pub const MYSQL_YEARS: std::ops::RangeInclusive<u32> = 1..=9999;
    /// MySQL's TIME spans ±838:59:59.999999.
    pub const MYSQL_TIME_MAX_US: i64 = (838 * 3600 + 59 * 60 + 59) * 1_000_000 + 999_999;
    /// The longest VARCHAR key InnoDB indexes whole: 3072 bytes of utf8mb4.
    pub const MYSQL_KEY_VARCHAR: u32 = 768;
    /// The longest VARCHAR / CHAR db-sync declares; longer text is LONGTEXT.
    pub const MYSQL_VARCHAR: u32 = 16_383;
    pub const MYSQL_CHAR: u32 = 255;
}

/// The unit a time value has on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Milli,
    Micro,
    Nano,
}

impl Unit {
    /// The factor from this unit to microseconds (nanoseconds stay nanoseconds).
    pub fn to_micros(self) -> i64 {
        match self {
            Unit::Milli => 1000,
            Unit::Micro | Unit::Nano => 1,
        }
    }
}

/// What kind of text a string column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text {
    /// Character data without a declared bound: `text`, `name`, or a string whose source type
    /// is not given.
    Plain,
    /// `varchar(n)` / `character varying(n)`, with its bound when one is declared.
    Varchar(Option<u32>),
    /// `char(n)` (`bpchar`): blank-padded to its length, with it when one is declared.
    Char(Option<u32>),
    Uuid,
    Json,
    Enum,
    /// Another source type carried as its output text (`inet`, `cidr`, `macaddr`, `xml`,
    /// ranges, …): text to db-sync, but at the source neither character data nor ordered as
    /// text.
    Formatted,
}

impl Text {
    /// The kind of a plain string column by the source type Debezium propagates (upper case)
    /// and the length it declares. Without a source type the column is character data.
    pub fn of_source(source: Option<&str>, length: Option<u32>) -> Text {
        match source {
            None => Text::Plain,
            Some("VARCHAR" | "CHARACTER VARYING") => Text::Varchar(length),
            Some("BPCHAR" | "CHAR" | "CHARACTER") => Text::Char(length),
            // PostgreSQL's and MySQL's unbounded character types.
            Some("TEXT" | "NAME" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT") => Text::Plain,
            Some(_) => Text::Formatted,
        }
    }
}

/// A column's type as db-sync handles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Logical {
    Int8,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Boolean,
    Text(Text),
    Bytes,
    /// A Connect `Decimal`: its declared precision (absent for e.g. `money`), the source
    /// column's length when Debezium propagates it, and its scale. `money` marks PostgreSQL's
    /// `money`, whose text at the source is locale-formatted (`$1,234.50`).
    Decimal {
        precision: Option<u32>,
        source_length: Option<u32>,
        scale: i32,
        money: bool,
    },
    /// `VariableScaleDecimal` (unconstrained `numeric`): exact text everywhere.
    VariableDecimal,
    /// Days since 1970-01-01.
    Date,
    /// A timestamp without a zone, in `Unit`s since the epoch.
    Timestamp(Unit),
    /// `ZonedTimestamp`: ISO 8601 text on the wire, a UTC instant.
    ZonedTimestamp,
    /// Time of day in `Unit`s since midnight.
    Time(Unit),
    /// `ZonedTime` (PostgreSQL's `timetz`): `HH:MM:SS[.f]Z` text, a time of day in UTC; text in
    /// the audit files and the target.
    ZonedTime,
    /// `MicroDuration`: microseconds.
    Duration,
    /// An array of the item type.
    List(Box<Logical>),
    /// Not in the mapping (maps, structs, arrays without an item schema): written as JSON text.
    Unknown,
}

impl Logical {
    /// Resolves a Connect schema, by its semantic name first, then its Connect type.
    pub fn of(s: &ConnectSchema) -> Logical {
        use ConnectType as C;
        match (s.ty, s.logical_name()) {
            (C::Int32 | C::Int64, names::DATE | names::CONNECT_DATE) => Logical::Date,
            (C::Int32 | C::Int64, names::TIMESTAMP | names::CONNECT_TIMESTAMP) => {
                Logical::Timestamp(Unit::Milli)
            }
            (C::Int32 | C::Int64, names::MICRO_TIMESTAMP) => Logical::Timestamp(Unit::Micro),
            (C::Int32 | C::Int64, names::NANO_TIMESTAMP) => Logical::Timestamp(Unit::Nano),
            (C::Int32 | C::Int64, names::TIME | names::CONNECT_TIME) => Logical::Time(Unit::Milli),
            (C::Int32 | C::Int64, names::MICRO_TIME) => Logical::Time(Unit::Micro),
            (C::Int32 | C::Int64, names::NANO_TIME) => Logical::Time(Unit::Nano),
            (C::Int64, names::MICRO_DURATION) => Logical::Duration,
            (C::String, names::ZONED_TIMESTAMP) => Logical::ZonedTimestamp,
            (C::String, names::ZONED_TIME) => Logical::ZonedTime,
            (C::String, names::UUID) => Logical::Text(Text::Uuid),
            (C::String, names::JSON) => Logical::Text(Text::Json),
            (C::String, names::ENUM) => Logical::Text(Text::Enum),
            (C::Bytes, names::DECIMAL) => Logical::Decimal {
                precision: s.decimal_precision(),
                source_length: s.source_length(),
                scale: s.decimal_scale(),
                money: s.source_type_is("MONEY"),
            },
            (C::Struct, names::VARIABLE_SCALE_DECIMAL) => Logical::VariableDecimal,
            (C::Int8, _) => Logical::Int8,
            (C::Int16, _) => Logical::Int16,
            (C::Int32, _) => Logical::Int32,
            (C::Int64, _) => Logical::Int64,
            (C::Float32, _) => Logical::Float32,
            (C::Float64, _) => Logical::Float64,
            (C::Boolean, _) => Logical::Boolean,
            (C::String, _) => Logical::Text(Text::of_source(
                s.source_type().as_deref(),
                s.source_length(),
            )),
            (C::Bytes, _) => Logical::Bytes,
            (C::Array, _) => match s.items.as_deref() {
                Some(item) => Logical::List(Box::new(Logical::of(item))),
                None => Logical::Unknown,
            },
            (C::Map | C::Struct, _) => Logical::Unknown,
        }
    }

    /// Whether the mapping knows the type (an unknown one, or a list of one, is JSON text).
    pub fn is_known(&self) -> bool {
        match self {
            Logical::Unknown => false,
            Logical::List(item) => item.is_known(),
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
            | Logical::Duration => true,
        }
    }

    /// For a `Decimal`: (precision, scale) when it fits Arrow's Decimal128. The precision is
    /// Decimal128's widest when none is declared.
    pub fn decimal128(&self) -> Option<(u8, i8)> {
        let Logical::Decimal {
            precision, scale, ..
        } = self
        else {
            return None;
        };
        let p = match precision {
            Some(p) => u8::try_from(*p).ok()?,
            None => limits::ARROW_DECIMAL128_PRECISION,
        };
        let s = i8::try_from(*scale).ok()?;
        (p <= limits::ARROW_DECIMAL128_PRECISION && s >= 0 && s as u8 <= p).then_some((p, s))
    }

    /// The Arrow type of the column in the audit files.
    pub fn arrow_type(&self) -> DataType {
        match self {
            Logical::Int8 => DataType::Int8,
            Logical::Int16 => DataType::Int16,
            Logical::Int32 => DataType::Int32,
            Logical::Int64 => DataType::Int64,
            Logical::Float32 => DataType::Float32,
            Logical::Float64 => DataType::Float64,
            Logical::Boolean => DataType::Boolean,
            Logical::Text(_) | Logical::ZonedTime => DataType::Utf8,
            Logical::Bytes => DataType::Binary,
            Logical::Decimal { .. } => match self.decimal128() {
                Some((p, s)) => DataType::Decimal128(p, s),
                None => DataType::Utf8,
            },
            Logical::VariableDecimal => DataType::Utf8,
            Logical::Date => DataType::Date32,
            Logical::Timestamp(Unit::Milli | Unit::Micro) => {
                DataType::Timestamp(TimeUnit::Microsecond, None)
            }
            Logical::Timestamp(Unit::Nano) => DataType::Timestamp(TimeUnit::Nanosecond, None),
            Logical::ZonedTimestamp => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            Logical::Time(Unit::Milli | Unit::Micro) => DataType::Time64(TimeUnit::Microsecond),
            Logical::Time(Unit::Nano) => DataType::Time64(TimeUnit::Nanosecond),
            Logical::Duration => DataType::Duration(TimeUnit::Microsecond),
            Logical::List(item) if item.is_known() => {
                DataType::List(Arc::new(Field::new("item", item.arrow_type(), true)))
            }
            // A list of an unknown type is JSON text as a whole, like any unknown type.
            Logical::List(_) | Logical::Unknown => DataType::Utf8,
        }
    }

    /// The MySQL column type; `key` for a primary-key column, which MySQL must be able to
    /// index whole.
    pub fn mysql_type(&self, key: bool) -> ColType {
        let t = match self {
            Logical::Int8 => ColType::Int(1),
            Logical::Int16 => ColType::Int(2),
            Logical::Int32 => ColType::Int(4),
            Logical::Int64 | Logical::Duration => ColType::Int(8),
            Logical::Float32 => ColType::Float,
            Logical::Float64 => ColType::Double,
            Logical::Boolean => ColType::Bool,
            Logical::Text(text) => text_type(*text, key),
            Logical::List(_) => ColType::Json,
            Logical::Bytes => ColType::LONGBLOB,
            Logical::Decimal {
                precision,
                source_length,
                scale,
                money: _,
            } => decimal_type(precision.or(*source_length), *scale),
            // Unconstrained numeric holds up to 131,072 digits: exact text, never a rounding.
            Logical::VariableDecimal => ColType::LONGTEXT,
            Logical::Date => ColType::Date,
            Logical::Timestamp(_) | Logical::ZonedTimestamp => ColType::Datetime(6),
            Logical::Time(_) => ColType::Time(6),
            // MySQL's TIME has no zone: the UTC time's text.
            Logical::ZonedTime => ColType::LONGTEXT,
            // Unknown types are audited as JSON text.
            Logical::Unknown => ColType::LONGTEXT,
        };
        if !key {
            return t;
        }
        // MySQL cannot index LONGTEXT / LONGBLOB / JSON whole; every other type it can.
        match t {
            ColType::Json | ColType::Text(mysql::LONG) => KEY_TEXT,
            ColType::Blob(mysql::LONG) => ColType::Varbinary(255),
            t => t,
        }
    }
}

/// The MySQL type of a text column: its declared bound when MySQL has one that size.
fn text_type(text: Text, key: bool) -> ColType {
    match text {
        Text::Uuid => ColType::Char(36),
        Text::Json => ColType::Json,
        Text::Enum => ColType::Varchar(255),
        Text::Varchar(Some(n)) if n <= limits::MYSQL_VARCHAR => ColType::Varchar(if key {
            n.min(limits::MYSQL_KEY_VARCHAR)
        } else {
            n
        }),
        Text::Char(Some(n)) if n <= limits::MYSQL_CHAR => ColType::Char(n),
        Text::Plain | Text::Varchar(_) | Text::Char(_) | Text::Formatted => ColType::LONGTEXT,
    }
}

/// `DECIMAL(p,s)` when MySQL's DECIMAL holds the precision (its widest when none is known)
/// and the scale; exact text otherwise.
fn decimal_type(precision: Option<u32>, scale: i32) -> ColType {
    let p = precision.unwrap_or(limits::MYSQL_DECIMAL_PRECISION);
    if (0..=limits::MYSQL_DECIMAL_SCALE).contains(&scale)
        && p <= limits::MYSQL_DECIMAL_PRECISION
        && p as i32 >= scale
    {
        ColType::Decimal(p.max(1), scale as u32)
    } else {
        ColType::LONGTEXT
    }
}

/// The zone name of UTC timestamps in the audit files.
pub const UTC: &str = "UTC";
/// An unbounded text key: MySQL indexes it as VARCHAR(255).
pub const KEY_TEXT: ColType = ColType::Varchar(255);

#[cfg(test)]
mod tests {
    use super::*;

    fn field(json: &str) -> ConnectSchema {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn mysql_types_follow_the_design_table() {
        let cases = [
            (r#"{"field":"a","type":"int32"}"#, "INT"),
            (r#"{"field":"a","type":"boolean"}"#, "TINYINT(1)"),
            (
                r#"{"field":"a","type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2","connect.decimal.precision":"12"}}"#,
                "DECIMAL(12,2)",
            ),
            (
                r#"{"field":"a","type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"40","connect.decimal.precision":"80"}}"#,
                "LONGTEXT",
            ),
            (
                r#"{"field":"a","type":"struct","name":"io.debezium.data.VariableScaleDecimal"}"#,
                "LONGTEXT",
            ),
            (
                r#"{"field":"a","type":"string","parameters":{"__debezium.source.column.type":"VARCHAR","__debezium.source.column.length":"40"}}"#,
                "VARCHAR(40)",
            ),
            (
                r#"{"field":"a","type":"string","parameters":{"__debezium.source.column.type":"BPCHAR","__debezium.source.column.length":"3"}}"#,
                "CHAR(3)",
            ),
            (r#"{"field":"a","type":"string"}"#, "LONGTEXT"),
            (
                r#"{"field":"a","type":"string","name":"io.debezium.time.ZonedTimestamp"}"#,
                "DATETIME(6)",
            ),
            (
                r#"{"field":"a","type":"int64","name":"io.debezium.time.MicroDuration"}"#,
                "BIGINT",
            ),
            (
                r#"{"field":"a","type":"string","name":"io.debezium.data.Uuid"}"#,
                "CHAR(36)",
            ),
            (
                r#"{"field":"a","type":"array","items":{"type":"int32"}}"#,
                "JSON",
            ),
            (r#"{"field":"a","type":"bytes"}"#, "LONGBLOB"),
        ];
        for (json, want) in cases {
            assert_eq!(
                field(json).logical().mysql_type(false).to_string(),
                want,
                "{json}"
            );
        }
        assert_eq!(
            field(r#"{"field":"a","type":"string"}"#)
                .logical()
                .mysql_type(true),
            KEY_TEXT
        );
        let long_key = field(
            r#"{"field":"a","type":"string","parameters":{"__debezium.source.column.type":"VARCHAR","__debezium.source.column.length":"1000"}}"#,
        );
        assert_eq!(
            long_key.logical().mysql_type(true).to_string(),
            "VARCHAR(768)"
        );
        assert_eq!(
            long_key.logical().mysql_type(false).to_string(),
            "VARCHAR(1000)"
        );
    }

    #[test]
    fn arrow_types_follow_the_design_table() {
        let cases = [
            (
                r#"{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2","connect.decimal.precision":"12"}}"#,
                DataType::Decimal128(12, 2),
            ),
            (
                r#"{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"}}"#,
                DataType::Decimal128(38, 2),
            ),
            (
                r#"{"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2","connect.decimal.precision":"50"}}"#,
                DataType::Utf8,
            ),
            (
                r#"{"type":"int64","name":"io.debezium.time.Timestamp"}"#,
                DataType::Timestamp(TimeUnit::Microsecond, None),
            ),
            (
                r#"{"type":"int32","name":"io.debezium.time.Time"}"#,
                DataType::Time64(TimeUnit::Microsecond),
            ),
            (
                r#"{"type":"string","name":"io.debezium.time.ZonedTimestamp"}"#,
                DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            ),
            (
                r#"{"type":"map","keys":{"type":"string"},"values":{"type":"string"}}"#,
                DataType::Utf8,
            ),
        ];
        for (json, want) in cases {
            assert_eq!(field(json).logical().arrow_type(), want, "{json}");
        }
        assert!(!field(r#"{"type":"struct","fields":[]}"#)
            .logical()
            .is_known());
        assert!(!field(r#"{"type":"array","items":{"type":"map","keys":{"type":"string"},"values":{"type":"string"}}}"#)
            .logical()
            .is_known());
    }
}
