//! Comparing a PostgreSQL table with its MariaDB copy value by value: how each column is read
//! on each side and how the two texts are compared.

use serde_json::Value;

use super::mysql::My;
use super::pg::Sql;
use super::types::{same_value, shown, Cmp};

/// How a column is read on each side; `{c}` is the quoted column.
pub struct Col {
    pub name: &'static str,
    pub pg: &'static str,
    pub my: &'static str,
    pub cmp: Check,
}

#[derive(Clone, Copy)]
pub enum Check {
    Same(Cmp),
    /// Both parse to the same JSON value (MySQL 8 normalizes JSON text; key order is free).
    Json,
}

pub const fn col(name: &'static str, pg: &'static str, my: &'static str, cmp: Check) -> Col {
    Col { name, pg, my, cmp }
}

pub const EXACT: Check = Check::Same(Cmp::Exact);
pub const PG_TEXT: &str = "{c}::text";
pub const MY: &str = "{c}";
pub const MY_EPOCH_US: &str =
    "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {c}) AS CHAR)";
pub const MY_TIME_US: &str = "CAST(HOUR({c}) * 3600000000 + MINUTE({c}) * 60000000 + SECOND({c}) * 1000000 + MICROSECOND({c}) AS CHAR)";

pub fn same(check: Check, pg: &Option<String>, my: &Option<String>) -> bool {
    match (pg, my) {
        (None, None) => true,
        (Some(a), Some(b)) => match check {
            Check::Same(cmp) => same_value(cmp, a, b),
            Check::Json => {
                serde_json::from_str::<Value>(a).ok() == serde_json::from_str::<Value>(b).ok()
            }
        },
        _ => false,
    }
}

/// Asserts that PostgreSQL table `pg_table` and MariaDB table `my_table` hold the same rows
/// (ordered by `order`, a list of `(pg expr, my expr)`) with the same values in `cols`.
pub fn assert_same_rows(
    pg: &Sql,
    my: &My,
    pg_table: &str,
    my_table: &str,
    order: &[(&str, &str)],
    cols: &[Col],
) {
    let q = |template: &str, c: &str| template.replace("{c}", c);
    let pg_sql = format!(
        "SELECT {} FROM {pg_table} ORDER BY {}",
        order
            .iter()
            .enumerate()
            // Aliased: PostgreSQL's ORDER BY would otherwise sort by the text output column.
            .map(|(i, (p, _))| format!("{p}::text AS _key{i}"))
            .chain(
                cols.iter()
                    .map(|c| q(c.pg, &format!("\"{}\"", c.name.replace('"', "\"\"")))),
            )
            .collect::<Vec<_>>()
            .join(", "),
        order.iter().map(|(p, _)| *p).collect::<Vec<_>>().join(", ")
    );
    let my_sql = format!(
        "SELECT {} FROM {my_table} ORDER BY {}",
        order
            .iter()
            .map(|(_, m)| format!("CAST({m} AS CHAR)"))
            .chain(
                cols.iter()
                    .map(|c| q(c.my, &format!("`{}`", c.name.replace('`', "``"))))
            )
            .collect::<Vec<_>>()
            .join(", "),
        order.iter().map(|(_, m)| *m).collect::<Vec<_>>().join(", ")
    );
    let pg_rows = pg.rows(&pg_sql);
    let my_rows = my.rows(&my_sql);
    let keys = order.len();
    let key_of = |r: &Vec<Option<String>>| r[..keys].to_vec();
    assert_eq!(
        pg_rows.iter().map(key_of).collect::<Vec<_>>(),
        my_rows.iter().map(key_of).collect::<Vec<_>>(),
        "{pg_table} vs {my_table}: the keys differ"
    );
    for (a, b) in pg_rows.iter().zip(&my_rows) {
        for (i, c) in cols.iter().enumerate() {
            let (pv, mv) = (&a[keys + i], &b[keys + i]);
            assert!(
                same(c.cmp, pv, mv),
                "{pg_table} key {:?} column {}: PostgreSQL {} vs MySQL {}",
                key_of(a),
                c.name,
                shown(pv),
                shown(mv)
            );
        }
    }
}

/// The MySQL column type (`COLUMN_TYPE`) of `table.column`.
pub fn column_type(my: &My, table: &str, column: &str) -> String {
    my.value(&format!(
        "SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}' AND COLUMN_NAME = '{column}'"
    ))
    .unwrap_or_else(|| panic!("no column {table}.{column} in the target"))
}
