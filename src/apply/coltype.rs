//! MySQL column types as values: parsed from db-sync's own type text
//! ([`crate::types::Logical::mysql_type`]) and from `information_schema.COLUMNS.COLUMN_TYPE`,
//! and which can hold every value of which. Apply uses it to follow a type the source widened
//! (`ALTER TABLE … MODIFY`) and to stop on a change the target cannot follow without loss.

/// A column type, as far as the question "can it hold that one's values" goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColType {
    /// An integer of this many bytes (TINYINT 1 … BIGINT 8); TINYINT(1) is one too.
    Int(u8),
    Float,
    Double,
    Decimal(u32, u32),
    Varchar(u32),
    Char(u32),
    /// TEXT types by their largest byte length; JSON reads as LONGTEXT (MariaDB stores it so).
    Text(u64),
    Varbinary(u32),
    Blob(u64),
    Date,
    Datetime(u32),
    Time(u32),
    /// Anything else, by its text.
    Other(String),
}

const LONG: u64 = 4_294_967_295;

impl ColType {
    /// Parses `BIGINT`, `bigint(20)`, `decimal(12,2)`, `varchar(40)`, `datetime(6)`, …
    /// (case-insensitive; `unsigned` and the like make it `Other`).
    pub fn parse(text: &str) -> ColType {
        let t = text.trim().to_ascii_lowercase();
        let (name, args) = match t.find('(') {
            Some(i) if t.ends_with(')') => (&t[..i], Some(&t[i + 1..t.len() - 1])),
            Some(_) => return ColType::Other(t),
            None => (t.as_str(), None),
        };
        let nums: Vec<u32> = args
            .map(|a| a.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_default();
        let first = nums.first().copied();
        match (name, first) {
            ("tinyint", _) => ColType::Int(1),
            ("smallint", _) => ColType::Int(2),
            ("mediumint", _) => ColType::Int(3),
            ("int" | "integer", _) => ColType::Int(4),
            ("bigint", _) => ColType::Int(8),
            ("float", _) => ColType::Float,
            ("double" | "real", _) => ColType::Double,
            ("decimal" | "numeric", p) => {
                ColType::Decimal(p.unwrap_or(10), nums.get(1).copied().unwrap_or(0))
            }
            ("varchar", Some(n)) => ColType::Varchar(n),
            ("char", n) => ColType::Char(n.unwrap_or(1)),
            ("tinytext", _) => ColType::Text(255),
            ("text", _) => ColType::Text(65_535),
            ("mediumtext", _) => ColType::Text(16_777_215),
            ("longtext" | "json", _) => ColType::Text(LONG),
            ("varbinary", Some(n)) => ColType::Varbinary(n),
            ("tinyblob", _) => ColType::Blob(255),
            ("blob", _) => ColType::Blob(65_535),
            ("mediumblob", _) => ColType::Blob(16_777_215),
            ("longblob", _) => ColType::Blob(LONG),
            ("date", _) => ColType::Date,
            ("datetime", f) => ColType::Datetime(f.unwrap_or(0)),
            ("time", f) => ColType::Time(f.unwrap_or(0)),
            _ => ColType::Other(t),
        }
    }

    /// Whether a column of this type holds every value a column of `other` holds, exactly.
    pub fn holds(&self, other: &ColType) -> bool {
        use ColType as T;
        // The most decimal digits an integer of `bytes` bytes has.
        let int_digits = |bytes: u8| match bytes {
            1 => 3,
            2 => 5,
            3 => 8,
            4 => 10,
            _ => 19,
        };
        match (self, other) {
            (a, b) if a == b => true,
            (T::Int(a), T::Int(b)) => a >= b,
            (T::Double, T::Float | T::Int(1..=4)) => true,
            (T::Float, T::Int(1 | 2)) => true,
            (T::Decimal(p, s), T::Decimal(p2, s2)) => s >= s2 && p - s >= p2 - s2,
            (T::Decimal(p, s), T::Int(b)) => p - s >= int_digits(*b),
            (T::Varchar(n), T::Varchar(m) | T::Char(m)) => n >= m,
            (T::Char(n), T::Char(m)) => n >= m,
            // Text holds the text of any value.
            (T::Text(n), T::Text(m)) => n >= m,
            (T::Text(n), T::Varchar(m) | T::Char(m)) => *n >= u64::from(*m) * 4,
            (
                T::Text(_),
                T::Int(_)
                | T::Float
                | T::Double
                | T::Decimal(..)
                | T::Date
                | T::Datetime(_)
                | T::Time(_),
            ) => true,
            (T::Varbinary(n), T::Varbinary(m)) => n >= m,
            (T::Blob(n), T::Blob(m)) => n >= m,
            (T::Blob(n), T::Varbinary(m)) => *n >= u64::from(*m),
            (T::Datetime(f), T::Datetime(g)) | (T::Time(f), T::Time(g)) => f >= g,
            (T::Datetime(_), T::Date) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_and_own_type_texts_parse_alike() {
        for (ours, server) in [
            ("INT", "int(11)"),
            ("BIGINT", "bigint(20)"),
            ("TINYINT(1)", "tinyint(1)"),
            ("DECIMAL(12,2)", "decimal(12,2)"),
            ("VARCHAR(40)", "varchar(40)"),
            ("DATETIME(6)", "datetime(6)"),
            ("JSON", "longtext"),
            ("LONGBLOB", "longblob"),
        ] {
            assert_eq!(
                ColType::parse(ours),
                ColType::parse(server),
                "{ours} vs {server}"
            );
        }
    }

    #[test]
    fn widening_holds_and_narrowing_does_not() {
        let t = ColType::parse;
        assert!(t("BIGINT").holds(&t("INT")));
        assert!(!t("INT").holds(&t("BIGINT")));
        assert!(t("DECIMAL(14,3)").holds(&t("DECIMAL(12,2)")));
        assert!(!t("DECIMAL(12,3)").holds(&t("DECIMAL(12,2)")));
        assert!(t("VARCHAR(100)").holds(&t("VARCHAR(10)")));
        assert!(t("LONGTEXT").holds(&t("VARCHAR(100)")));
        assert!(t("DOUBLE").holds(&t("FLOAT")));
        assert!(t("DATETIME(6)").holds(&t("DATETIME(3)")));
        assert!(!t("INT").holds(&t("LONGTEXT")));
        assert!(t("LONGTEXT").holds(&t("INT")));
    }
}
