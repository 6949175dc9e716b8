//! How each column of a table is read on each side so that the two texts compare with apply's
//! value rules (DESIGN §6): the PostgreSQL and MySQL expressions, the comparison, and for key
//! columns the order both sides sort in and how a key is written back as a literal (re-checks).
//!
//! The expressions turn each value into a canonical text, chosen by the *source* type: the
//! target column is the one apply created for it (or one widened by hand, which the
//! expressions tolerate: a FLOAT widened to DOUBLE still compares by the source's bits).

use crate::apply::sql::sql_string;

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
    /// `pg_type.typname` (of the domain's base type for a domain).
    pub typname: String,
    /// `pg_type.typtype`: `e` for an enum.
    pub typtype: String,
    /// `pg_type.typcategory`: `A` for an array.
    pub category: String,
    /// 1-based position in the primary key, 0 when not in it.
    pub key_position: i32,
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

const PG_EPOCH_US: &str =
    "CASE WHEN isfinite({c}) THEN (extract(epoch FROM {c}) * 1000000)::bigint::text ELSE {c}::text END";
const MY_EPOCH_US: &str = "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {c})";

/// The column plan and, for a key column, its order and literal (`None`: a type verify cannot
/// order on both sides alike).
pub fn column(c: &SourceColumn) -> (Column, Option<(KeyOrder, Literal, bool)>) {
    let pc = pg_ident(&c.name);
    let mc = my_ident(&c.name);
    let t = |template: &str, ident: &str| template.replace("{c}", ident);
    // (pg, my, cmp, key: (order, literal, collate "C" on the PostgreSQL side))
    let (pg, my, cmp, key) = match (c.category.as_str(), c.typtype.as_str(), c.typname.as_str()) {
        ("A", _, _) => (t("array_to_json({c})::text", &pc), mc.clone(), ValueCmp::Json, None),
        (_, "e", _) => (
            t("{c}::text", &pc),
            mc.clone(),
            ValueCmp::Exact,
            // An enum sorts by its declaration at the source: the key orders by its text.
            Some((KeyOrder::Bytes, Literal::Text, true)),
        ),
        (_, _, "int2" | "int4" | "int8" | "oid") => (
            pc.clone(),
            mc.clone(),
            ValueCmp::Exact,
            Some((KeyOrder::Int, Literal::Number, false)),
        ),
        (_, _, "float4") => (
            pc.clone(),
            t("CAST({c} AS DOUBLE)", &mc),
            ValueCmp::F32,
            None,
        ),
        (_, _, "float8") => (pc.clone(), mc.clone(), ValueCmp::F64, None),
        (_, _, "numeric") => (
            pc.clone(),
            mc.clone(),
            ValueCmp::Decimal,
            Some((KeyOrder::Decimal, Literal::Number, false)),
        ),
        (_, _, "money") => (t("{c}::numeric", &pc), mc.clone(), ValueCmp::Decimal, None),
        (_, _, "bool") => (
            t("{c}::int", &pc),
            mc.clone(),
            ValueCmp::Exact,
            Some((KeyOrder::Int, Literal::Bool, false)),
        ),
        (_, _, "bytea") => (
            t("encode({c}, 'hex')", &pc),
            t("lower(hex({c}))", &mc),
            ValueCmp::Exact,
            None,
        ),
        (_, _, "date") => (
            t(
                "CASE WHEN isfinite({c}) THEN ({c} - date '1970-01-01')::text ELSE {c}::text END",
                &pc,
            ),
            t("DATEDIFF({c}, '1970-01-01')", &mc),
            ValueCmp::Exact,
            Some((KeyOrder::Int, Literal::Days, false)),
        ),
        (_, _, "timestamp") => (
            t(PG_EPOCH_US, &pc),
            t(MY_EPOCH_US, &mc),
            ValueCmp::Exact,
            Some((KeyOrder::Int, Literal::Micros { tz: false }, false)),
        ),
        (_, _, "timestamptz") => (
            t(PG_EPOCH_US, &pc),
            t(MY_EPOCH_US, &mc),
            ValueCmp::Exact,
            Some((KeyOrder::Int, Literal::Micros { tz: true }, false)),
        ),
        (_, _, "time") => (
            t("(extract(epoch FROM {c}) * 1000000)::bigint", &pc),
            t("HOUR({c}) * 3600000000 + MINUTE({c}) * 60000000 + SECOND({c}) * 1000000 + MICROSECOND({c})", &mc),
            ValueCmp::Exact,
            None,
        ),
        (_, _, "timetz") => (
            t("(extract(epoch FROM {c}) * 1000000)::bigint", &pc),
            mc.clone(),
            ValueCmp::TimeTz,
            None,
        ),
        // Debezium's MicroDuration counts a month as 365.25 / 12 days, PostgreSQL's epoch of an
        // interval as 30: the difference is 37,800 s per month of the interval's month field.
        (_, _, "interval") => (
            t(
                "((extract(epoch FROM {c}) + extract(month FROM {c}) * 37800) * 1000000)::bigint",
                &pc,
            ),
            mc.clone(),
            ValueCmp::Exact,
            None,
        ),
        (_, _, "json" | "jsonb") => (pc.clone(), mc.clone(), ValueCmp::Json, None),
        // char(n): both sides drop the trailing blanks.
        (_, _, "bpchar") => (
            t("{c}::text", &pc),
            mc.clone(),
            ValueCmp::Exact,
            Some((KeyOrder::Bytes, Literal::Text, true)),
        ),
        (_, _, "text" | "varchar" | "name") => (
            pc.clone(),
            mc.clone(),
            ValueCmp::Exact,
            Some((KeyOrder::Bytes, Literal::Text, true)),
        ),
        // A uuid sorts by its bytes, as its lower-case text does.
        (_, _, "uuid") => (
            pc.clone(),
            mc.clone(),
            ValueCmp::Exact,
            Some((KeyOrder::Bytes, Literal::Text, false)),
        ),
        // inet, cidr, macaddr, xml and the rest: their output text (a cast to text would add
        // /32 to an inet).
        _ => (pc.clone(), mc.clone(), ValueCmp::Exact, None),
    };
    (
        Column {
            name: c.name.clone(),
            pg,
            my,
            cmp,
        },
        key,
    )
}

/// The plan of one table from its source columns and the target's column names (lower case:
/// MySQL column names are case-insensitive). `Err` names why the table cannot be compared.
pub fn table(
    source: &str,
    target: &str,
    columns: &[SourceColumn],
    target_columns: &std::collections::HashSet<String>,
) -> Result<TablePlan, String> {
    let mut keyed: Vec<&SourceColumn> = columns.iter().filter(|c| c.key_position > 0).collect();
    if keyed.is_empty() {
        return Err("it has no primary key".into());
    }
    keyed.sort_by_key(|c| c.key_position);
    let mut keys = Vec::new();
    for c in keyed {
        if !target_columns.contains(&c.name.to_lowercase()) {
            return Err(format!("the target table has no key column `{}`", c.name));
        }
        let (column, key) = column(c);
        let Some((order, literal, collate)) = key else {
            return Err(format!(
                "verify cannot order its key column `{}` ({}) alike on both sides",
                c.name, c.typname
            ));
        };
        let pc = pg_ident(&c.name);
        keys.push(Key {
            pg_order: if collate {
                format!("{pc} COLLATE \"C\"")
            } else {
                pc
            },
            my_order: my_ident(&c.name),
            column,
            order,
            literal,
        });
    }
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
            "SELECT {} FROM {}.{}{} ORDER BY {}",
            cols.join(", "),
            pg_ident(schema),
            pg_ident(table),
            filter.map_or(String::new(), |keys| self.where_in(keys, true)),
            order.join(", ")
        )
    }

    /// The target query, in key order, for `filter` keys.
    pub fn my_select(&self, filter: Option<&[Vec<Vec<u8>>]>) -> String {
        let cols: Vec<String> = self.all().map(|c| c.my.clone()).collect();
        let order: Vec<&str> = self.keys.iter().map(|k| k.my_order.as_str()).collect();
        format!(
            "SELECT {} FROM {}{} ORDER BY {}",
            cols.join(", "),
            my_ident(&self.target),
            filter.map_or(String::new(), |keys| self.where_in(keys, false)),
            order.join(", ")
        )
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
            typname: typname.into(),
            typtype: "b".into(),
            category: "N".into(),
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
    fn tables_without_a_key_or_with_an_unordered_key_are_refused() {
        let target: std::collections::HashSet<String> = ["a".to_string()].into();
        assert!(table("public.t", "t", &[col("a", "int4", 0)], &target)
            .unwrap_err()
            .contains("no primary key"));
        assert!(table("public.t", "t", &[col("a", "float8", 1)], &target)
            .unwrap_err()
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
}
