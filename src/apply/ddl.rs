//! Target tables from source schemas (DESIGN §6, MySQL column): `CREATE TABLE` with the same
//! primary key, `ALTER TABLE … ADD COLUMN` for a column the source added, and identifier
//! quoting. Everything here is valid for MariaDB 10.11 and MySQL 8.
//!
//! Choices the mapping makes, and why:
//! - Non-key columns are nullable: a column the source drops stops arriving, and a `NOT NULL`
//!   target column would then reject every later insert. Constraints live at the source.
//! - Text keys use a binary, no-pad collation when the server has one: PostgreSQL compares
//!   text byte for byte, so `'a'`, `'A'` and `'a '` are three keys there and must stay three
//!   here (a case-insensitive or pad-space collation would merge them into one row).
//! - An unbounded text or bytes key column becomes `VARCHAR(255)` / `VARBINARY(255)`, since
//!   MySQL cannot index `LONGTEXT` whole; a longer key is refused with a clear error.
//! - When `VARCHAR` widths would pass MySQL's 65,535-byte row limit, the widest non-key ones
//!   become `LONGTEXT` (stored off-row), so the table can be created at all.

use crate::journal::event::{names, ConnectSchema, ConnectType};

/// Debezium's source-type parameters (`column.propagate.source.type`, set by our defaults).
const SOURCE_TYPE: &str = "__debezium.source.column.type";
const SOURCE_LENGTH: &str = "__debezium.source.column.length";
const UUID: &str = "io.debezium.data.Uuid";
const JSON: &str = "io.debezium.data.Json";
const ENUM: &str = "io.debezium.data.Enum";
/// Bytes per character of utf8mb4, for the row-size limit.
const UTF8MB4: usize = 4;
const ROW_LIMIT: usize = 65_535 - 1_000;
const KEY_TEXT: &str = "VARCHAR(255)";

/// `` `name` `` with any backtick doubled: safe for every identifier MySQL accepts.
pub fn quote(ident: &str) -> String {
    let mut s = String::with_capacity(ident.len() + 2);
    s.push('`');
    for c in ident.chars() {
        if c == '`' {
            s.push('`');
        }
        s.push(c);
    }
    s.push('`');
    s
}

/// The MySQL type of a source column (DESIGN §6).
pub fn mysql_type(f: &ConnectSchema, key: bool) -> String {
    let name = f.name.as_deref().unwrap_or("");
    let source = f
        .parameters
        .get(SOURCE_TYPE)
        .map(|s| s.to_ascii_uppercase())
        .unwrap_or_default();
    let length = f
        .parameters
        .get(SOURCE_LENGTH)
        .and_then(|l| l.parse::<u32>().ok())
        .filter(|&l| l > 0 && l < i32::MAX as u32);
    let t: String = match (f.ty, name) {
        (ConnectType::Int32, names::DATE | names::CONNECT_DATE) => "DATE".into(),
        (
            ConnectType::Int64 | ConnectType::Int32,
            names::TIMESTAMP
            | names::MICRO_TIMESTAMP
            | names::NANO_TIMESTAMP
            | names::CONNECT_TIMESTAMP,
        ) => "DATETIME(6)".into(),
        (
            ConnectType::Int64 | ConnectType::Int32,
            names::TIME | names::MICRO_TIME | names::NANO_TIME | names::CONNECT_TIME,
        ) => "TIME(6)".into(),
        (ConnectType::Int64, names::MICRO_DURATION) => "BIGINT".into(),
        (ConnectType::String, names::ZONED_TIMESTAMP) => "DATETIME(6)".into(),
        (ConnectType::Bytes, names::DECIMAL) => decimal_type(f, length),
        // Unconstrained numeric holds up to 131,072 digits: exact text, never a rounding.
        (ConnectType::Struct, names::VARIABLE_SCALE_DECIMAL) => "LONGTEXT".into(),
        (ConnectType::String, UUID) => "CHAR(36)".into(),
        (ConnectType::String, JSON) => "JSON".into(),
        (ConnectType::String, ENUM) => "VARCHAR(255)".into(),
        (ConnectType::String, _) => match (source.as_str(), length) {
            ("VARCHAR" | "CHARACTER VARYING", Some(n)) if n <= 16_383 => format!("VARCHAR({n})"),
            ("BPCHAR" | "CHAR" | "CHARACTER", Some(n)) if n <= 255 => format!("CHAR({n})"),
            _ => "LONGTEXT".into(),
        },
        (ConnectType::Int8, _) => "TINYINT".into(),
        (ConnectType::Int16, _) => "SMALLINT".into(),
        (ConnectType::Int32, _) => "INT".into(),
        (ConnectType::Int64, _) => "BIGINT".into(),
        (ConnectType::Float32, _) => "FLOAT".into(),
        (ConnectType::Float64, _) => "DOUBLE".into(),
        (ConnectType::Boolean, _) => "TINYINT(1)".into(),
        (ConnectType::Bytes, _) => "LONGBLOB".into(),
        (ConnectType::Array, _) => "JSON".into(),
        // Unknown types are audited as JSON text.
        (ConnectType::Map | ConnectType::Struct, _) => "LONGTEXT".into(),
    };
    if key {
        match t.as_str() {
            "LONGTEXT" | "JSON" => return KEY_TEXT.into(),
            "LONGBLOB" => return "VARBINARY(255)".into(),
            // InnoDB indexes at most 3072 bytes: 768 utf8mb4 characters.
            v if v.starts_with("VARCHAR(") && length.is_some_and(|n| n > 768) => {
                return "VARCHAR(768)".into()
            }
            _ => {}
        }
    }
    t
}

fn decimal_type(f: &ConnectSchema, length: Option<u32>) -> String {
    let scale = f.decimal_scale();
    let precision = f.decimal_precision().or(length).unwrap_or(65);
    if (0..=30).contains(&scale) && precision <= 65 && precision as i32 >= scale {
        format!("DECIMAL({},{scale})", precision.max(1))
    } else {
        // Wider than MySQL's DECIMAL: exact text.
        "LONGTEXT".into()
    }
}

/// A column definition: name, type, whether it is part of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: String,
    pub key: bool,
}

/// Column definitions for `fields`, with the row-size limit kept.
pub fn column_defs(fields: &[&ConnectSchema], key: &[String]) -> Vec<ColumnDef> {
    let mut defs: Vec<ColumnDef> = fields
        .iter()
        .map(|f| {
            let is_key = key.iter().any(|k| k == f.field_name());
            ColumnDef {
                name: f.field_name().to_string(),
                ty: mysql_type(f, is_key),
                key: is_key,
            }
        })
        .collect();
    let width = |d: &ColumnDef| -> usize {
        let t = d.ty.as_str();
        ["VARCHAR(", "CHAR(", "VARBINARY("]
            .iter()
            .find_map(|p| t.strip_prefix(p))
            .and_then(|rest| rest.trim_end_matches(')').parse::<usize>().ok())
            .map_or(0, |n| {
                if t.starts_with("VARBINARY") {
                    n
                } else {
                    n * UTF8MB4
                }
            })
    };
    while defs.iter().map(width).sum::<usize>() > ROW_LIMIT {
        let widest = defs
            .iter_mut()
            .filter(|d| !d.key && d.ty.starts_with("VARCHAR("))
            .max_by_key(|d| width(d));
        match widest {
            Some(d) => d.ty = "LONGTEXT".into(),
            None => break,
        }
    }
    defs
}

/// `CREATE TABLE IF NOT EXISTS` with the primary key and the text collation `collation`.
pub fn create_table(table: &str, defs: &[ColumnDef], key: &[String], collation: &str) -> String {
    let mut sql = format!("CREATE TABLE IF NOT EXISTS {} (", quote(table));
    for d in defs {
        sql.push_str(&format!(
            "{} {} {}, ",
            quote(&d.name),
            d.ty,
            if d.key { "NOT NULL" } else { "NULL" }
        ));
    }
    let key: Vec<String> = key.iter().map(|k| quote(k)).collect();
    sql.push_str(&format!(
        "PRIMARY KEY ({})) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}",
        key.join(", ")
    ));
    sql
}

/// `ALTER TABLE … ADD COLUMN …` for `defs` (nullable).
pub fn add_columns(table: &str, defs: &[ColumnDef]) -> String {
    let adds: Vec<String> = defs
        .iter()
        .map(|d| format!("ADD COLUMN {} {} NULL", quote(&d.name), d.ty))
        .collect();
    format!("ALTER TABLE {} {}", quote(table), adds.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(json: &str) -> ConnectSchema {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn identifiers_are_quoted_with_backticks_doubled() {
        assert_eq!(quote("order"), "`order`");
        assert_eq!(quote("we`ird \"name\""), "`we``ird \"name\"`");
    }

    #[test]
    fn types_follow_the_design_table() {
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
            assert_eq!(mysql_type(&field(json), false), want, "{json}");
        }
        assert_eq!(
            mysql_type(&field(r#"{"field":"a","type":"string"}"#), true),
            KEY_TEXT
        );
    }

    #[test]
    fn wide_varchars_fall_back_to_longtext_to_fit_a_row() {
        let f = field(
            r#"{"field":"a","type":"string","parameters":{"__debezium.source.column.type":"VARCHAR","__debezium.source.column.length":"10000"}}"#,
        );
        let mut many: Vec<ConnectSchema> = (0..3).map(|_| f.clone()).collect();
        for (i, f) in many.iter_mut().enumerate() {
            f.field = Some(format!("c{i}"));
        }
        let refs: Vec<&ConnectSchema> = many.iter().collect();
        let defs = column_defs(&refs, &[]);
        let varchars = defs.iter().filter(|d| d.ty.starts_with("VARCHAR")).count();
        assert_eq!(varchars, 1, "{defs:?}");
        let sql = create_table("t`x", &defs, &["c0".into()], "utf8mb4_bin");
        assert!(
            sql.starts_with("CREATE TABLE IF NOT EXISTS `t``x` ("),
            "{sql}"
        );
        assert!(
            sql.ends_with(
                "PRIMARY KEY (`c0`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            ),
            "{sql}"
        );
    }
}
