//! MySQL column types as values: what [`Logical::mysql_type`](super::Logical::mysql_type)
//! gives each column, how that renders in DDL, how `information_schema.COLUMNS.COLUMN_TYPE`
//! of an existing target column reads back, and which type holds every value of which. Apply
//! uses the last to follow a type the source widened (`ALTER TABLE … MODIFY`) and to stop on a
//! change the target cannot follow without loss.
//!
//! A [`ColType`] names a type as db-sync declares it (`TINYINT(1)`, `JSON`); the question
//! "can it hold that one's values" is asked of its [`storage`](ColType::storage), which is
//! what the server reports back (MariaDB stores `JSON` as `LONGTEXT`; `TINYINT(1)` is a
//! `TINYINT` with a display width).

use std::fmt;

/// A MySQL column type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColType {
    /// An integer of this many bytes: 1 (TINYINT), 2, 3, 4 or 8 (BIGINT).
    Int(u8),
    /// `TINYINT(1)`, MySQL's boolean: stored as a TINYINT.
    Bool,
    Float,
    Double,
    Decimal(u32, u32),
    Varchar(u32),
    Char(u32),
    /// TEXT types by their largest byte length (TINYTEXT 255 … LONGTEXT 4 GB).
    Text(u64),
    /// `JSON`: stored as LONGTEXT (MariaDB's JSON is one; MySQL's holds only JSON text).
    Json,
    Varbinary(u32),
    /// BLOB types by their largest byte length.
    Blob(u64),
    Date,
    /// `DATETIME(fsp)`.
    Datetime(u32),
    /// `TIME(fsp)`.
    Time(u32),
    /// Anything else, by its (lower-case) text.
    Other(String),
}

/// The largest byte length of LONGTEXT and LONGBLOB.
pub const LONG: u64 = 4_294_967_295;
const TINY: u64 = 255;
const REGULAR: u64 = 65_535;
const MEDIUM: u64 = 16_777_215;

impl ColType {
    /// LONGTEXT.
    pub const LONGTEXT: ColType = ColType::Text(LONG);
    /// LONGBLOB.
    pub const LONGBLOB: ColType = ColType::Blob(LONG);

    /// Parses a server's `COLUMN_TYPE` (`bigint(20)`, `decimal(12,2)`, `varchar(40)`,
    /// `datetime(6)`, …) as its storage: `tinyint(1)` is `Int(1)`, `json` is LONGTEXT.
    /// Case-insensitive; `unsigned` and the like make it `Other`.
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
            ("tinytext", _) => ColType::Text(TINY),
            ("text", _) => ColType::Text(REGULAR),
            ("mediumtext", _) => ColType::Text(MEDIUM),
            ("longtext" | "json", _) => ColType::LONGTEXT,
            ("varbinary", Some(n)) => ColType::Varbinary(n),
            ("tinyblob", _) => ColType::Blob(TINY),
            ("blob", _) => ColType::Blob(REGULAR),
            ("mediumblob", _) => ColType::Blob(MEDIUM),
            ("longblob", _) => ColType::LONGBLOB,
            ("date", _) => ColType::Date,
            ("datetime", f) => ColType::Datetime(f.unwrap_or(0)),
            ("time", f) => ColType::Time(f.unwrap_or(0)),
            _ => ColType::Other(t),
        }
    }

    /// The type the server stores and reports for this one (what [`ColType::parse`] reads).
    pub fn storage(&self) -> ColType {
        match self {
            ColType::Bool => ColType::Int(1),
            ColType::Json => ColType::LONGTEXT,
            other => other.clone(),
        }
    }

    /// The bytes this type takes of a row's 65,535 (utf8mb4 text counts 4 bytes a character);
    /// 0 for the types stored off-row or of fixed small size.
    pub fn row_bytes(&self) -> usize {
        const UTF8MB4: usize = 4;
        match self {
            ColType::Varchar(n) | ColType::Char(n) => *n as usize * UTF8MB4,
            ColType::Varbinary(n) => *n as usize,
            // Small fixed sizes and off-row types: the row limit's margin covers them.
            _ => 0,
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
        match (&self.storage(), &other.storage()) {
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

/// The type as DDL writes it: `BIGINT`, `DECIMAL(12,2)`, `VARCHAR(40)`, `DATETIME(6)`, …
impl fmt::Display for ColType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // TEXT and BLOB by the smallest type of at least `n` bytes.
        let sized = |n: u64, names: [&'static str; 4]| {
            let i = [TINY, REGULAR, MEDIUM]
                .iter()
                .take_while(|&&max| n > max)
                .count();
            names[i]
        };
        match self {
            ColType::Int(1) => f.write_str("TINYINT"),
            ColType::Int(2) => f.write_str("SMALLINT"),
            ColType::Int(3) => f.write_str("MEDIUMINT"),
            ColType::Int(4) => f.write_str("INT"),
            ColType::Int(_) => f.write_str("BIGINT"),
            ColType::Bool => f.write_str("TINYINT(1)"),
            ColType::Float => f.write_str("FLOAT"),
            ColType::Double => f.write_str("DOUBLE"),
            ColType::Decimal(p, s) => write!(f, "DECIMAL({p},{s})"),
            ColType::Varchar(n) => write!(f, "VARCHAR({n})"),
            ColType::Char(n) => write!(f, "CHAR({n})"),
            ColType::Text(n) => {
                f.write_str(sized(*n, ["TINYTEXT", "TEXT", "MEDIUMTEXT", "LONGTEXT"]))
            }
            ColType::Json => f.write_str("JSON"),
            ColType::Varbinary(n) => write!(f, "VARBINARY({n})"),
            ColType::Blob(n) => {
                f.write_str(sized(*n, ["TINYBLOB", "BLOB", "MEDIUMBLOB", "LONGBLOB"]))
            }
            ColType::Date => f.write_str("DATE"),
            ColType::Datetime(0) => f.write_str("DATETIME"),
            ColType::Datetime(fsp) => write!(f, "DATETIME({fsp})"),
            ColType::Time(0) => f.write_str("TIME"),
            ColType::Time(fsp) => write!(f, "TIME({fsp})"),
            ColType::Other(text) => f.write_str(text),
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

    #[test]
    fn declared_types_render_and_read_back_as_their_storage() {
        let all = [
            ColType::Int(1),
            ColType::Int(2),
            ColType::Int(3),
            ColType::Int(4),
            ColType::Int(8),
            ColType::Bool,
            ColType::Float,
            ColType::Double,
            ColType::Decimal(65, 30),
            ColType::Varchar(768),
            ColType::Char(36),
            ColType::Text(TINY),
            ColType::Text(REGULAR),
            ColType::Text(MEDIUM),
            ColType::LONGTEXT,
            ColType::Json,
            ColType::Varbinary(255),
            ColType::Blob(TINY),
            ColType::Blob(REGULAR),
            ColType::Blob(MEDIUM),
            ColType::LONGBLOB,
            ColType::Date,
            ColType::Datetime(0),
            ColType::Datetime(6),
            ColType::Time(0),
            ColType::Time(6),
        ];
        for t in all {
            assert_eq!(ColType::parse(&t.to_string()), t.storage(), "{t}");
        }
        assert_eq!(ColType::Bool.to_string(), "TINYINT(1)");
        assert!(ColType::Bool.holds(&ColType::Int(1)) && ColType::Int(1).holds(&ColType::Bool));
        assert!(ColType::LONGTEXT.holds(&ColType::Json));
        assert_eq!(
            ColType::parse("int unsigned"),
            ColType::Other("int unsigned".into())
        );
    }
}
