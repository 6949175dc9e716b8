//! Types: the Connect schema of a table as Debezium describes it, and the one place where a
//! column's type is resolved and mapped.
//!
//! [`TableSchema`] / [`ConnectSchema`] are the model: what the bridge writes once per table
//! schema version (JsonConverter's JSON shape) and what every stage reads. [`Logical`] is a
//! column's type resolved once from it, by Debezium schema *name* (decode by schema name, not
//! column type), with the facts of the source type that some stage decides by. Everything a
//! stage does per type is an exhaustive `match` on it, so adding a type makes the compiler name
//! every place it must touch:
//!
//! - its Arrow type and the limits both sides keep ([`logical`]); the audit column builder
//!   (`compact::columns`) and the journal's JSON (`journal::event`) decode by it, and a unit
//!   test in `apply::values` checks that apply renders every Arrow type it gives;
//! - its MySQL column type, a [`mysql::ColType`] value that renders into DDL and compares with
//!   what the server reports ([`mysql`]);
//! - how verify reads and compares it (`verify::plan`), from the PostgreSQL catalog resolved
//!   to a `Logical` in [`postgres`], the only place that knows PostgreSQL's type names.
//!
//! Dates and times as text, in every stage, are [`time`]'s; the `_cdc_` columns and the
//! change-row schema are [`cdc`]'s.
//!
//! # The type map
//!
//! What a PostgreSQL column becomes at each step, under the engine settings capture gives
//! Debezium (`decimal.handling.mode=precise` and `time.precision.mode=adaptive`, Debezium's
//! defaults, and `column.propagate.source.type=.*`, see [`crate::capture`]). Debezium's schema
//! names are shortened (`io.debezium.time.`, `io.debezium.data.`, Kafka's `Decimal`); a
//! column is resolved by that name first, then by its Connect type ([`Logical::of`]):
//!
//! | PostgreSQL | Debezium | audit file (Arrow) | MySQL target |
//! |---|---|---|---|
//! | `smallint` | int16 | Int16 | `SMALLINT` |
//! | `integer` | int32 | Int32 | `INT` |
//! | `bigint` | int64 | Int64 | `BIGINT` |
//! | `real` | float32 | Float32 | `FLOAT` |
//! | `double precision` | float64 | Float64 | `DOUBLE` |
//! | `numeric(p,s)` | `Decimal` (bytes) | Decimal128(p,s) | `DECIMAL(p,s)` |
//! | `numeric` | `VariableScaleDecimal` | Utf8: exact text | `LONGTEXT`: exact text |
//! | `money` | `Decimal`, scale 2 | Decimal128(38,2) | `DECIMAL` |
//! | `boolean` | boolean | Boolean | `TINYINT(1)` |
//! | `varchar(n)`, `char(n)` | string | Utf8 | `VARCHAR(n)`, `CHAR(n)` |
//! | `text` | string | Utf8 | `LONGTEXT` |
//! | `bytea` | bytes | Binary | `LONGBLOB` |
//! | `date` | `Date`: days | Date32 | `DATE` |
//! | `timestamp(0..3)` | `Timestamp`: ms | Timestamp(µs) | `DATETIME(6)` |
//! | `timestamp(4..6)`, `timestamp` | `MicroTimestamp`: µs | Timestamp(µs) | `DATETIME(6)` |
//! | `timestamptz` | `ZonedTimestamp`: text | Timestamp(µs, UTC) | `DATETIME(6)`, UTC |
//! | `time(0..3)` | `Time`: ms | Time64(µs) | `TIME(6)` |
//! | `time(4..6)`, `time` | `MicroTime`: µs | Time64(µs) | `TIME(6)` |
//! | `timetz` | `ZonedTime`: text | Utf8 | `LONGTEXT` |
//! | `interval` | `MicroDuration`: µs | Duration(µs) | `BIGINT`: µs |
//! | `uuid` | `Uuid`: text | Utf8 | `CHAR(36)` |
//! | `json`, `jsonb` | `Json`: text | Utf8 | `JSON` |
//! | enum types | `Enum`: text | Utf8 | `VARCHAR(255)` |
//! | arrays | array of the item | List of the item | `JSON` |
//! | `inet`, `cidr`, `macaddr`, `xml`, ranges, … | string: output text | Utf8 | `LONGTEXT` |
//! | none of these (maps, structs) | | Utf8: JSON text, with a warning | `LONGTEXT` |
//!
//! Where a type is too narrow for a value, the value is carried exactly rather than rounded
//! ([`limits`]): a decimal wider than Arrow's 38 digits (or with a negative scale) is exact
//! text in the audit files, one wider than MySQL's 65 digits (30 after the point) is
//! `LONGTEXT`; an unbounded `varchar`, a `varchar(n)` longer than 16,383 and a `char(n)` longer
//! than 255 are `LONGTEXT`. A key column must be indexable whole: unbounded text and JSON keys
//! are `VARCHAR(255)`, a `bytea` key is `VARBINARY(255)`, a `varchar(n)` key at most
//! `VARCHAR(768)`. A table's own columns are nullable in the audit files, and so are the
//! non-key columns of a target table. Millisecond values are scaled to µs; dates and times of
//! any year, BC included, are handled by [`time`]. A value MySQL cannot hold (year 10000, `NaN`
//! in a `DOUBLE`) stops apply or is quarantined ([`crate::apply`]); the audit files keep it
//! exactly.

pub mod cdc;
pub mod logical;
pub mod mysql;
pub mod postgres;
pub mod time;

use std::collections::BTreeMap;

use serde::Deserialize;

pub use logical::{limits, Logical, Text, Unit};

/// A table schema version: the table and its key and row schemas.
#[derive(Debug, Clone, Deserialize)]
pub struct TableSchema {
    /// `schema.table` (PostgreSQL) or `db.table` (MySQL), unquoted.
    pub table: String,
    pub topic: String,
    pub key: Option<ConnectSchema>,
    pub row: ConnectSchema,
}

/// A schema the bridge wrote that does not parse: a bridge bug or corruption.
#[derive(Debug, thiserror::Error)]
#[error("bad schema JSON: {0}")]
pub struct SchemaError(#[from] serde_json::Error);

impl TableSchema {
    pub fn from_json(json: &[u8]) -> Result<TableSchema, SchemaError> {
        Ok(serde_json::from_slice(json)?)
    }

    /// The key columns, in key order (empty without a key).
    pub fn key_columns(&self) -> Vec<String> {
        self.key
            .as_ref()
            .map(|k| {
                k.fields
                    .iter()
                    .map(|f| f.field_name().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the table has a primary key (apply needs one).
    pub fn has_key(&self) -> bool {
        self.key.as_ref().is_some_and(|k| !k.fields.is_empty())
    }
}

/// A Kafka Connect schema in JsonConverter's JSON shape.
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectSchema {
    /// Set on struct fields.
    #[serde(default)]
    pub field: Option<String>,
    #[serde(rename = "type")]
    pub ty: ConnectType,
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub version: Option<i64>,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub fields: Vec<ConnectSchema>,
    #[serde(default)]
    pub items: Option<Box<ConnectSchema>>,
    #[serde(default)]
    pub keys: Option<Box<ConnectSchema>>,
    #[serde(default)]
    pub values: Option<Box<ConnectSchema>>,
    /// The column default, in the wire's value form (`SchemaJson.defaultJson` in the bridge):
    /// integers (dates as days, times and timestamps in their units), floats, booleans,
    /// strings, decimals as exact text, bytes as hex text.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectType {
    Int8,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Boolean,
    String,
    Bytes,
    Array,
    Map,
    Struct,
}

impl ConnectSchema {
    /// The Connect logical / Debezium semantic type name, `""` when none.
    pub fn logical_name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    pub fn field_name(&self) -> &str {
        self.field.as_deref().unwrap_or("")
    }

    /// The scale of a Connect `Decimal` (its `scale` parameter; 0 when absent).
    pub fn decimal_scale(&self) -> i32 {
        self.parameters
            .get("scale")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The declared precision of a Connect `Decimal`; absent for e.g. PostgreSQL's `money`.
    pub fn decimal_precision(&self) -> Option<u32> {
        self.parameters
            .get("connect.decimal.precision")
            .and_then(|v| v.parse().ok())
    }

    /// The source column type Debezium propagates (`column.propagate.source.type`), upper case.
    pub fn source_type(&self) -> Option<String> {
        self.parameters
            .get(names::SOURCE_TYPE)
            .map(|s| s.to_ascii_uppercase())
    }

    /// Whether the source column type Debezium propagates is `name` (upper case).
    pub fn source_type_is(&self, name: &str) -> bool {
        self.parameters
            .get(names::SOURCE_TYPE)
            .is_some_and(|t| t.eq_ignore_ascii_case(name))
    }

    /// The source column length Debezium propagates, when it is a real bound.
    pub fn source_length(&self) -> Option<u32> {
        self.parameters
            .get(names::SOURCE_LENGTH)
            .and_then(|l| l.parse::<u32>().ok())
            .filter(|&l| l > 0 && l < i32::MAX as u32)
    }

    /// This field's resolved type.
    pub fn logical(&self) -> Logical {
        Logical::of(self)
    }
}

/// Connect logical type and Debezium semantic type names, and the parameters db-sync reads.
pub mod names {
    pub const DECIMAL: &str = "org.apache.kafka.connect.data.Decimal";
    pub const VARIABLE_SCALE_DECIMAL: &str = "io.debezium.data.VariableScaleDecimal";
    pub const DATE: &str = "io.debezium.time.Date";
    pub const CONNECT_DATE: &str = "org.apache.kafka.connect.data.Date";
    pub const TIMESTAMP: &str = "io.debezium.time.Timestamp";
    pub const MICRO_TIMESTAMP: &str = "io.debezium.time.MicroTimestamp";
    pub const NANO_TIMESTAMP: &str = "io.debezium.time.NanoTimestamp";
    pub const CONNECT_TIMESTAMP: &str = "org.apache.kafka.connect.data.Timestamp";
    pub const TIME: &str = "io.debezium.time.Time";
    pub const MICRO_TIME: &str = "io.debezium.time.MicroTime";
    pub const NANO_TIME: &str = "io.debezium.time.NanoTime";
    pub const CONNECT_TIME: &str = "org.apache.kafka.connect.data.Time";
    pub const MICRO_DURATION: &str = "io.debezium.time.MicroDuration";
    pub const ZONED_TIMESTAMP: &str = "io.debezium.time.ZonedTimestamp";
    pub const ZONED_TIME: &str = "io.debezium.time.ZonedTime";
    pub const UUID: &str = "io.debezium.data.Uuid";
    pub const JSON: &str = "io.debezium.data.Json";
    pub const ENUM: &str = "io.debezium.data.Enum";
    /// Debezium's source-type parameters (`column.propagate.source.type`, on by default).
    pub const SOURCE_TYPE: &str = "__debezium.source.column.type";
    pub const SOURCE_LENGTH: &str = "__debezium.source.column.length";
}
