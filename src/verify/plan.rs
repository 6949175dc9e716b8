//! How each column of a table is read on each side so that the two texts compare with apply's
//! value rules: the PostgreSQL and MySQL expressions, the comparison, and for key columns the
//! order both sides sort in and how a key is written back as a literal (re-checks).
//!
//! The expressions turn each value into a canonical text, chosen by the *source* type: the
//! target column is the one apply created for it (or one widened by hand, which the
//! expressions tolerate: a FLOAT widened to DOUBLE still compares by the source's bits). The
//! source type is the column's [`Logical`], resolved from the catalog by
//! [`crate::types::postgres`]; [`reading`] decides per type, by an exhaustive match, so a new
//! type is a compile error here until verify knows how to read it.

use crate::apply::sql::sql_string;
use crate::types::postgres::PgType;
use crate::types::{Logical, Text};

/// How two canonical texts of one column are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueCmp {
    /// Byte for byte.
    Exact,
    /// The same `f32` bits (the target's text is a DOUBLE's).
    F32,
    /// The same `f64` bits.
    F64,
    /// The same number: leading and trailing zeros and a `+` do not count.
    Decimal,
    /// The same JSON value: object key order and white space do not count.
    Json,
    /// PostgreSQL's µs of a `timetz` against the target's ZonedTime text: the same UTC time
    /// of day.
    TimeTz,
}

/// How key values are ordered: both sides sort this way, and the merge relies on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrder {
    /// Signed integers (ints, booleans, dates as days, timestamps as µs).
    Int,
    /// Decimal numbers.
    Decimal,
    /// Bytes (text in the C / binary collation, uuids).
    Bytes,
}

/// How a key's canonical text becomes a literal again, for the re-check of given keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Literal {
    /// A number as it is.
    Number,
    /// A string literal.
    Text,
    /// A boolean from 0 or 1.
    Bool,
    /// Days since 1970-01-01.
    Days,
    /// µs since 1970-01-01 00:00:00 (UTC for timestamptz), `tz` or not.
    Micros { tz: bool },
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// SQL giving the canonical text on each side.
    pub pg: String,
    pub my: String,
    pub cmp: ValueCmp,
}

#[derive(Debug, Clone)]
pub struct Key {
    pub column: Column,
    pub order: KeyOrder,
    pub literal: Literal,
    /// The ORDER BY term on each side.
    pub pg_order: String,
    pub my_order: String,
}

/// One table's comparison: the key columns first, then the other columns both sides have.
#[derive(Debug, Clone)]
pub struct TablePlan {
    /// `schema.table` at the source.
    pub source: String,
    pub target: String,
    pub keys: Vec<Key>,
    pub columns: Vec<Column>,
    /// Source columns the target table lacks (each counts as a difference of the table).
    pub missing_columns: Vec<String>,
}

/// A source column as the catalog describes it.
#[derive(Debug, Clone)]
pub struct SourceColumn {
    pub name: String,
    pub ty: PgType,
    /// 1-based position in the primary key, 0 when not in it.
    pub key_position: i32,
}

/// Why a table cannot be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the target table has no key column `{0}`")]
    NoTargetKeyColumn(String),
    #[error("verify cannot order its key column `{column}` ({type_name}) alike on both sides")]
    UnorderedKey { column: String, type_name: String },
}

pub fn pg_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn my_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn pg_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `{c}`: the column as it is.
const SAME: &str = "{c}";
const PG_EPOCH_US: &str =
    "CASE WHEN isfinite({c}) THEN (extract(epoch FROM {c}) * 1000000)::bigint::text ELSE {c}::text END";
const MY_EPOCH_US: &str = "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {c})";
const PG_DAYS: &str =
    "CASE WHEN isfinite({c}) THEN ({c} - date '1970-01-01')::text ELSE {c}::text END";
const MY_DAYS: &str = "DATEDIFF({c}, '1970-01-01')";
const PG_TIME_US: &str = "(extract(epoch FROM {c}) * 1000000)::bigint";
const MY_TIME_US: &str =
    "HOUR({c}) * 3600000000 + MINUTE({c}) * 60000000 + SECOND({c}) * 1000000 + MICROSECOND({c})";
// Debezium's MicroDuration counts a month as 365.25 / 12 days, PostgreSQL's epoch of an
// interval as 30: the difference is 37,800 s per month of the interval's month field.
const PG_INTERVAL_US: &str =
    "((extract(epoch FROM {c}) + extract(month FROM {c}) * 37800) * 1000000)::bigint";

/// How a column of one type is read: SQL templates (`{c}` stands for the quoted column) for
/// each side, the comparison, and for a key how it sorts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub pg: &'static str,
    pub my: &'static str,
    pub cmp: ValueCmp,
    /// `None`: a type verify cannot order on both sides alike.
    pub key: Option<KeyReading>,
}

/// How a key column of one type sorts and is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyReading {
    pub order: KeyOrder,
    pub literal: Literal,
    /// Whether the PostgreSQL side sorts it `COLLATE "C"` (byte order, as MySQL's binary
    /// collation does).
    pub collate: bool,
}

impl Reading {
    const fn new(pg: &'static str, my: &'static str, cmp: ValueCmp) -> Reading {
        Reading {
            pg,
            my,
            cmp,
            key: None,
        }
    }

    const fn key(self, order: KeyOrder, literal: Literal, collate: bool) -> Reading {
        Reading {
            key: Some(KeyReading {
                order,
                literal,
                collate,
            }),
            ..self
        }
    }
}

/// How a column of type `l` is read and compared.
pub fn reading(l: &Logical) -> Reading {
    use KeyOrder as O;
    use ValueCmp as V;
    match l {
        Logical::Int8 | Logical::Int16 | Logical::Int32 | Logical::Int64 => {
            Reading::new(SAME, SAME, V::Exact).key(O::Int, Literal::Number, false)
        }
        Logical::Float32 => Reading::new(SAME, "CAST({c} AS DOUBLE)", V::F32),
        Logical::Float64 => Reading::new(SAME, SAME, V::F64),
        Logical::Boolean => {
            Reading::new("{c}::int", SAME, V::Exact).key(O::Int, Literal::Bool, false)
        }
        Logical::Bytes => Reading::new("encode({c}, 'hex')", "lower(hex({c}))", V::Exact),
        // money's own text is locale-formatted; as a key its literal would need a cast.
        Logical::Decimal { money: true, .. } => Reading::new("{c}::numeric", SAME, V::Decimal),
        Logical::Decimal { money: false, .. } | Logical::VariableDecimal => {
            Reading::new(SAME, SAME, V::Decimal).key(O::Decimal, Literal::Number, false)
        }
        Logical::Date => Reading::new(PG_DAYS, MY_DAYS, V::Exact).key(O::Int, Literal::Days, false),
        Logical::Timestamp(_) => Reading::new(PG_EPOCH_US, MY_EPOCH_US, V::Exact).key(
            O::Int,
            Literal::Micros { tz: false },
            false,
        ),
        Logical::ZonedTimestamp => Reading::new(PG_EPOCH_US, MY_EPOCH_US, V::Exact).key(
            O::Int,
            Literal::Micros { tz: true },
            false,
        ),
        Logical::Time(_) => Reading::new(PG_TIME_US, MY_TIME_US, V::Exact),
        Logical::ZonedTime => Reading::new(PG_TIME_US, SAME, V::TimeTz),
        Logical::Duration => Reading::new(PG_INTERVAL_US, SAME, V::Exact),
        Logical::Text(text) => text_reading(*text),
        Logical::List(_) => Reading::new("array_to_json({c})::text", SAME, V::Json),
        // Composites and the like: their output text.
        Logical::Unknown => Reading::new(SAME, SAME, V::Exact),
    }
}

/// How a text column is read: character data sorts by its bytes on both sides.
fn text_reading(text: Text) -> Reading {
    let bytes = |r: Reading, collate| r.key(KeyOrder::Bytes, Literal::Text, collate);
    match text {
        Text::Plain | Text::Varchar(_) => bytes(Reading::new(SAME, SAME, ValueCmp::Exact), true),
        // char(n): both sides drop the trailing blanks.
        Text::Char(_) => bytes(Reading::new("{c}::text", SAME, ValueCmp::Exact), true),
        // An enum sorts by its declaration at the source: the key orders by its text.
        Text::Enum => bytes(Reading::new("{c}::text", SAME, ValueCmp::Exact), true),
        // A uuid sorts by its bytes, as its lower-case text does.
        Text::Uuid => bytes(Reading::new(SAME, SAME, ValueCmp::Exact), false),
        Text::Json => Reading::new(SAME, SAME, ValueCmp::Json),
        // inet, cidr, macaddr, xml, …: their output text (a cast to text would add /32 to an
        // inet), neither character data nor ordered as text.
        Text::Formatted => Reading::new(SAME, SAME, ValueCmp::Exact),
    }
}

/// The column plan of `c` and, for a key column, how it sorts.
pub fn column(c: &SourceColumn) -> (Column, Option<KeyReading>) {
    let r = reading(&c.ty.logical());
    let column = Column {
        name: c.name.clone(),
        pg: r.pg.replace("{c}", &pg_ident(&c.name)),
        my: r.my.replace("{c}", &my_ident(&c.name)),
        cmp: r.cmp,
    };
    (column, r.key)
}

/// The plan of one table from its source columns and the target's column names (lower case:
/// MySQL column names are case-insensitive). A table without a primary key has no keys: its
/// rows compare as a multiset ([`super::compare::Multiset`]).
pub fn table(
    source: &str,
    target: &str,
    columns: &[SourceColumn],
    target_columns: &std::collections::HashSet<String>,
) -> Result<TablePlan, PlanError> {
    let mut keyed: Vec<&SourceColumn> = columns.iter().filter(|c| c.key_position > 0).collect();
    keyed.sort_by_key(|c| c.key_position);
    let keys = keyed
        .into_iter()
        .map(|c| key(c, target_columns))
        .collect::<Result<Vec<Key>, PlanError>>()?;
    let mut plan_columns = Vec::new();
    let mut missing_columns = Vec::new();
    for c in columns.iter().filter(|c| c.key_position == 0) {
        if target_columns.contains(&c.name.to_lowercase()) {
            plan_columns.push(column(c).0);
        } else {
            missing_columns.push(c.name.clone());
        }
    }
    Ok(TablePlan {
        source: source.to_string(),
        target: target.to_string(),
        keys,
        columns: plan_columns,
        missing_columns,
    })
}

/// The plan of key column `c`, which the target must have and both sides must order alike.
fn key(
    c: &SourceColumn,
    target_columns: &std::collections::HashSet<String>,
) -> Result<Key, PlanError> {
    if !target_columns.contains(&c.name.to_lowercase()) {
        return Err(PlanError::NoTargetKeyColumn(c.name.clone()));
    }
    let (column, key) = column(c);
    let Some(KeyReading {
        order,
        literal,
        collate,
    }) = key
    else {
        return Err(PlanError::UnorderedKey {
            column: c.name.clone(),
            type_name: c.ty.name.clone(),
        });
    };
    let pc = pg_ident(&c.name);
    Ok(Key {
        pg_order: if collate {
            format!("{pc} COLLATE \"C\"")
        } else {
            pc
        },
        my_order: my_ident(&c.name),
        column,
        order,
        literal,
    })
}

impl TablePlan {
    fn all(&self) -> impl Iterator<Item = &Column> {
        self.keys.iter().map(|k| &k.column).chain(&self.columns)
    }

    /// The number of fields of a row: keys, then columns.
    pub fn width(&self) -> usize {
        self.keys.len() + self.columns.len()
    }

    /// The source query (inside `COPY (…) TO STDOUT`), in key order, for `filter` keys.
    pub fn pg_select(&self, schema: &str, table: &str, filter: Option<&[Vec<Vec<u8>>]>) -> String {
        let cols: Vec<String> = self.all().map(|c| c.pg.clone()).collect();
        let order: Vec<&str> = self.keys.iter().map(|k| k.pg_order.as_str()).collect();
        format!(
            "SELECT {} FROM {}.{}{}{}",
            cols.join(", "),
            pg_ident(schema),
            pg_ident(table),
            filter.map_or(String::new(), |keys| self.where_in(keys, true)),
            order_by(&order)
        )
    }

    /// The target query, in key order, for `filter` keys.
    pub fn my_select(&self, filter: Option<&[Vec<Vec<u8>>]>) -> String {
        let cols: Vec<String> = self.all().map(|c| c.my.clone()).collect();
        let order: Vec<&str> = self.keys.iter().map(|k| k.my_order.as_str()).collect();
        format!(
            "SELECT {} FROM {}{}{}",
            cols.join(", "),
            my_ident(&self.target),
            filter.map_or(String::new(), |keys| self.where_in(keys, false)),
            order_by(&order)
        )
    }

    /// The canonical texts' rules, field by field of a row: keys, then columns.
    pub fn rules(&self) -> Vec<ValueCmp> {
        self.all().map(|c| c.cmp).collect()
    }

    /// The names of the fields of a row: keys, then columns.
    pub fn names(&self) -> Vec<&str> {
        self.all().map(|c| c.name.as_str()).collect()
    }

    /// ` WHERE (k1, k2) IN ((…), …)` for the keys given as their canonical texts.
    fn where_in(&self, keys: &[Vec<Vec<u8>>], pg: bool) -> String {
        format!(" WHERE {}", self.key_filter(keys, pg))
    }

    /// `(k1, k2) IN ((…), …)` for the keys given as their canonical texts, on one side.
    pub fn key_filter(&self, keys: &[Vec<Vec<u8>>], pg: bool) -> String {
        let names: Vec<String> = self
            .keys
            .iter()
            .map(|k| {
                if pg {
                    pg_ident(&k.column.name)
                } else {
                    my_ident(&k.column.name)
                }
            })
            .collect();
        let tuples: Vec<String> = keys
            .iter()
            .map(|key| {
                let lits: Vec<String> = self
                    .keys
                    .iter()
                    .zip(key)
                    .map(|(k, v)| literal(k.literal, &String::from_utf8_lossy(v), pg))
                    .collect();
                format!("({})", lits.join(", "))
            })
            .collect();
        format!("({}) IN ({})", names.join(", "), tuples.join(", "))
    }
}

/// ` ORDER BY …`, or nothing without a key.
fn order_by(order: &[&str]) -> String {
    if order.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {}", order.join(", "))
    }
}

/// The SQL literal of a key's canonical text on one side.
fn literal(kind: Literal, v: &str, pg: bool) -> String {
    // Canonical numbers come from the databases' own output; anything else is quoted so a
    // stray value can never become SQL.
    let number = |v: &str| {
        if !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
        {
            v.to_string()
        } else if pg {
            pg_quote(v)
        } else {
            sql_string(v)
        }
    };
    match (kind, pg) {
        (Literal::Number, _) => number(v),
        (Literal::Text, true) => pg_quote(v),
        (Literal::Text, false) => sql_string(v),
        (Literal::Bool, true) => format!("{}::int::boolean", number(v)),
        (Literal::Bool, false) => number(v),
        (Literal::Days, true) => format!("(date '1970-01-01' + {})", number(v)),
        (Literal::Days, false) => format!("DATE_ADD('1970-01-01', INTERVAL {} DAY)", number(v)),
        (Literal::Micros { tz }, true) => format!(
            "({} 'epoch' + {} * interval '1 microsecond')",
            if tz { "timestamptz" } else { "timestamp" },
            number(v)
        ),
        (Literal::Micros { .. }, false) => format!(
            "TIMESTAMPADD(MICROSECOND, {}, '1970-01-01 00:00:00')",
            number(v)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, typname: &str, key: i32) -> SourceColumn {
        SourceColumn {
            name: name.into(),
            ty: PgType::base(typname),
            key_position: key,
        }
    }

    #[test]
    fn queries_name_every_column_in_key_order_and_quote_names() {
        let cols = [
            col("b", "text", 2),
            col("a\"x", "int4", 1),
            col("v", "float4", 0),
            col("gone", "int4", 0),
        ];
        let target: std::collections::HashSet<String> =
            ["a\"x", "b", "v"].iter().map(|s| s.to_string()).collect();
        let plan = table("public.t", "t`1", &cols, &target).unwrap();
        assert_eq!(plan.missing_columns, vec!["gone".to_string()]);
        assert_eq!(
            plan.pg_select("public", "t", None),
            "SELECT \"a\"\"x\", \"b\", \"v\" FROM \"public\".\"t\" ORDER BY \"a\"\"x\", \"b\" COLLATE \"C\""
        );
        assert_eq!(
            plan.my_select(Some(&[vec![b"7".to_vec(), b"it's".to_vec()]])),
            "SELECT `a\"x`, `b`, CAST(`v` AS DOUBLE) FROM `t``1` WHERE (`a\"x`, `b`) IN ((7, 'it''s')) ORDER BY `a\"x`, `b`"
        );
        assert!(plan
            .pg_select(
                "public",
                "t",
                Some(&[vec![b"1; drop".to_vec(), b"x".to_vec()]])
            )
            .contains("(('1; drop', 'x'))"));
    }

    #[test]
    fn tables_with_an_unordered_key_are_refused_and_those_without_one_read_unordered() {
        let target: std::collections::HashSet<String> = ["a".to_string()].into();
        let unkeyed = table("public.t", "t", &[col("a", "int4", 0)], &target).unwrap();
        assert!(unkeyed.keys.is_empty());
        assert_eq!(unkeyed.my_select(None), "SELECT `a` FROM `t`");
        assert!(table("public.t", "t", &[col("a", "float8", 1)], &target)
            .unwrap_err()
            .to_string()
            .contains("cannot order"));
    }

    #[test]
    fn key_literals_rebuild_the_value() {
        assert_eq!(
            literal(Literal::Days, "-1", false),
            "DATE_ADD('1970-01-01', INTERVAL -1 DAY)"
        );
        assert_eq!(
            literal(Literal::Micros { tz: true }, "5", true),
            "(timestamptz 'epoch' + 5 * interval '1 microsecond')"
        );
        assert_eq!(literal(Literal::Text, "a\\b", false), "'a\\\\b'");
        assert_eq!(literal(Literal::Text, "a\\b", true), "'a\\b'");
    }

    #[test]
    fn each_source_type_reads_as_its_logical_type_decides() {
        let plan = |ty: PgType| {
            let (c, key) = column(&SourceColumn {
                name: "c".into(),
                ty,
                key_position: 1,
            });
            (
                c.pg,
                c.my,
                c.cmp,
                key.map(|k| (k.order, k.literal, k.collate)),
            )
        };
        let text_key = Some((KeyOrder::Bytes, Literal::Text, true));
        // money's text has a currency sign, and no key literal compares with it.
        assert_eq!(
            plan(PgType::base("money")),
            (
                "\"c\"::numeric".into(),
                "`c`".into(),
                ValueCmp::Decimal,
                None
            )
        );
        assert_eq!(
            plan(PgType::base("numeric")).3,
            Some((KeyOrder::Decimal, Literal::Number, false))
        );
        assert_eq!(
            plan(PgType::base("bpchar")),
            (
                "\"c\"::text".into(),
                "`c`".into(),
                ValueCmp::Exact,
                text_key
            )
        );
        assert_eq!(
            plan(PgType::base("varchar")),
            ("\"c\"".into(), "`c`".into(), ValueCmp::Exact, text_key)
        );
        // inet is compared by its output text and is not ordered as text.
        assert_eq!(
            plan(PgType::base("inet")),
            ("\"c\"".into(), "`c`".into(), ValueCmp::Exact, None)
        );
        assert_eq!(plan(PgType::base("timetz")).2, ValueCmp::TimeTz);
        assert_eq!(
            plan(PgType::base("timestamptz")).3,
            Some((KeyOrder::Int, Literal::Micros { tz: true }, false))
        );
        let enum_type = PgType {
            kind: "e".into(),
            ..PgType::base("mood")
        };
        assert_eq!(plan(enum_type).0, "\"c\"::text");
        let array = PgType {
            category: "A".into(),
            element: Some(Box::new(PgType::base("text"))),
            ..PgType::base("_text")
        };
        assert_eq!(
            plan(array),
            (
                "array_to_json(\"c\")::text".into(),
                "`c`".into(),
                ValueCmp::Json,
                None
            )
        );
    }
}
