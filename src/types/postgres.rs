//! The PostgreSQL side of the type map: a column's type as `pg_catalog` describes it, resolved
//! to the [`Logical`] Debezium's PostgreSQL connector gives it under db-sync's engine settings
//! (precise decimals, adaptive time precision, two fraction digits of `money`).
//!
//! Capture resolves a column from the Connect schema Debezium wrote ([`Logical::of`]); verify
//! reads the live catalog instead and resolves each column here, once. Whatever a stage then
//! does per type is an exhaustive match on [`Logical`], so a new type is a compile error
//! wherever it must be handled, and this is the one place that knows PostgreSQL's type names.
//! Types outside the mapping are carried as their output text ([`Text::Formatted`]).

use super::{Logical, Text, Unit};

/// A column's type in the catalog: `pg_type`'s columns (of a domain's base type) and the
/// column's type modifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgType {
    /// `pg_type.typname`.
    pub name: String,
    /// `pg_type.typtype`: `b` base, `e` enum, `c` composite, `r` range, …
    pub kind: String,
    /// `pg_type.typcategory`: `A` for an array.
    pub category: String,
    /// `pg_attribute.atttypmod` (a domain's `typtypmod`): -1 when none is declared.
    pub typmod: i32,
    /// An array's item type (`typelem`), with the same modifier.
    pub element: Option<Box<PgType>>,
}

impl PgType {
    /// A base type without a modifier (not an array), by name.
    pub fn base(name: &str) -> PgType {
        PgType {
            name: name.to_string(),
            kind: "b".into(),
            category: String::new(),
            typmod: -1,
            element: None,
        }
    }

    /// The type Debezium gives a column of this type.
    pub fn logical(&self) -> Logical {
        if self.category == "A" {
            let item = self
                .element
                .as_deref()
                .map_or(Logical::Unknown, PgType::logical);
            return Logical::List(Box::new(item));
        }
        match self.kind.as_str() {
            "e" => return Logical::Text(Text::Enum),
            // A composite is a struct: not in the mapping.
            "c" => return Logical::Unknown,
            _ => {}
        }
        match self.name.as_str() {
            "int2" => Logical::Int16,
            "int4" => Logical::Int32,
            "int8" | "oid" => Logical::Int64,
            "float4" => Logical::Float32,
            "float8" => Logical::Float64,
            "bool" => Logical::Boolean,
            "bytea" => Logical::Bytes,
            "numeric" => self.numeric(),
            // Debezium's `money.fraction.digits` is 2 unless configured; money declares no
            // precision.
            "money" => Logical::Decimal {
                precision: None,
                source_length: None,
                scale: 2,
                money: true,
            },
            "date" => Logical::Date,
            "timestamp" => Logical::Timestamp(self.time_unit()),
            "timestamptz" => Logical::ZonedTimestamp,
            "time" => Logical::Time(self.time_unit()),
            "timetz" => Logical::ZonedTime,
            "interval" => Logical::Duration,
            "json" | "jsonb" => Logical::Text(Text::Json),
            "uuid" => Logical::Text(Text::Uuid),
            "varchar" => Logical::Text(Text::Varchar(self.length())),
            "bpchar" => Logical::Text(Text::Char(self.length())),
            "text" | "name" => Logical::Text(Text::Plain),
            // inet, cidr, macaddr, xml, ranges and the rest: their output text.
            _ => Logical::Text(Text::Formatted),
        }
    }

    /// `numeric(p, s)` is a `Decimal`; `numeric` without a modifier holds any scale.
    fn numeric(&self) -> Logical {
        if self.typmod < 4 {
            return Logical::VariableDecimal;
        }
        // (precision << 16 | scale as 11-bit two's complement) + 4 (PostgreSQL's numeric.c).
        let m = self.typmod - 4;
        let precision = ((m >> 16) & 0xFFFF) as u32;
        let scale = ((m & 0x7FF) ^ 0x400) - 0x400;
        Logical::Decimal {
            precision: Some(precision),
            source_length: Some(precision),
            scale,
            money: false,
        }
    }

    /// Adaptive precision: up to 3 fraction digits travel as ms, more (or undeclared) as µs.
    fn time_unit(&self) -> Unit {
        if (0..=3).contains(&self.typmod) {
            Unit::Milli
        } else {
            Unit::Micro
        }
    }

    /// The declared length of `varchar(n)` / `char(n)` (the modifier counts a 4-byte header).
    fn length(&self) -> Option<u32> {
        u32::try_from(self.typmod - 4).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_typmod(name: &str, typmod: i32) -> PgType {
        PgType {
            typmod,
            ..PgType::base(name)
        }
    }

    #[test]
    fn catalog_types_resolve_as_debezium_maps_them() {
        let cases = [
            ("int8", Logical::Int64),
            ("oid", Logical::Int64),
            ("float4", Logical::Float32),
            ("numeric", Logical::VariableDecimal),
            ("timestamptz", Logical::ZonedTimestamp),
            ("timestamp", Logical::Timestamp(Unit::Micro)),
            ("timetz", Logical::ZonedTime),
            ("interval", Logical::Duration),
            ("jsonb", Logical::Text(Text::Json)),
            ("name", Logical::Text(Text::Plain)),
            ("bpchar", Logical::Text(Text::Char(None))),
            ("inet", Logical::Text(Text::Formatted)),
            ("xml", Logical::Text(Text::Formatted)),
        ];
        for (name, want) in cases {
            assert_eq!(PgType::base(name).logical(), want, "{name}");
        }
        assert!(matches!(
            PgType::base("money").logical(),
            Logical::Decimal { money: true, .. }
        ));
    }

    #[test]
    fn modifiers_give_bounds_precision_and_units() {
        // numeric(12,2), numeric(5,-2) (PostgreSQL 15), varchar(40), char(3), timestamp(3).
        assert_eq!(
            with_typmod("numeric", (12 << 16 | 2) + 4).logical(),
            Logical::Decimal {
                precision: Some(12),
                source_length: Some(12),
                scale: 2,
                money: false
            }
        );
        let Logical::Decimal { scale, .. } =
            with_typmod("numeric", (5 << 16 | (-2i32 & 0x7FF)) + 4).logical()
        else {
            panic!("numeric(5,-2) is a Decimal")
        };
        assert_eq!(scale, -2);
        assert_eq!(
            with_typmod("varchar", 44).logical(),
            Logical::Text(Text::Varchar(Some(40)))
        );
        assert_eq!(
            with_typmod("bpchar", 7).logical(),
            Logical::Text(Text::Char(Some(3)))
        );
        assert_eq!(
            with_typmod("timestamp", 3).logical(),
            Logical::Timestamp(Unit::Milli)
        );
        assert_eq!(with_typmod("time", 0).logical(), Logical::Time(Unit::Milli));
    }

    #[test]
    fn arrays_enums_and_composites_resolve_by_kind() {
        let enum_type = PgType {
            kind: "e".into(),
            ..PgType::base("mood")
        };
        assert_eq!(enum_type.logical(), Logical::Text(Text::Enum));
        let array = PgType {
            category: "A".into(),
            element: Some(Box::new(PgType::base("int4"))),
            ..PgType::base("_int4")
        };
        assert_eq!(array.logical(), Logical::List(Box::new(Logical::Int32)));
        let row = PgType {
            kind: "c".into(),
            ..PgType::base("pair")
        };
        assert_eq!(row.logical(), Logical::Unknown);
    }
}
