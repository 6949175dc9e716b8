//! Target tables from source schemas (DESIGN §6, MySQL column): `CREATE TABLE` with the same
//! primary key, `ALTER TABLE … ADD COLUMN` for a column the source added, reading a table's
//! definition back, and identifier quoting. Everything here is valid for MariaDB 10.11 and
//! MySQL 8. The column types themselves come from [`crate::types::Logical::mysql_type`].
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

use std::collections::{BTreeMap, HashMap};

use mysql_async::prelude::Queryable;

use super::coltype::ColType;
use super::merge::TablePlan;
use super::sql::{with_retry, Session, SqlError};
use super::ApplyError;
use crate::types::ConnectSchema;

/// Bytes per character of utf8mb4, for the row-size limit.
const UTF8MB4: usize = 4;
const ROW_LIMIT: usize = 65_535 - 1_000;

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

/// A column definition: name, type, whether it is part of the key, its default expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: String,
    pub key: bool,
    /// The source column's default (`ADD COLUMN … DEFAULT x` fills the rows PostgreSQL filled
    /// without writing them to the WAL).
    pub default: Option<String>,
}

/// Column definitions for `fields`, with the row-size limit kept.
pub fn column_defs(fields: &[&ConnectSchema], key: &[String]) -> Vec<ColumnDef> {
    let mut defs: Vec<ColumnDef> = fields
        .iter()
        .map(|f| {
            let is_key = key.iter().any(|k| k == f.field_name());
            let logical = f.logical();
            ColumnDef {
                name: f.field_name().to_string(),
                ty: logical.mysql_type(is_key),
                key: is_key,
                default: f
                    .default
                    .as_ref()
                    .and_then(|v| super::values::default_literal(&logical, v)),
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
        sql.push_str(&format!("{}, ", column_sql(d)));
    }
    let key: Vec<String> = key.iter().map(|k| quote(k)).collect();
    sql.push_str(&format!(
        "PRIMARY KEY ({})) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}",
        key.join(", ")
    ));
    sql
}

/// A column's definition in DDL: name, type, nullability (keys only are NOT NULL), default.
fn column_sql(d: &ColumnDef) -> String {
    let mut sql = format!(
        "{} {} {}",
        quote(&d.name),
        d.ty,
        if d.key { "NOT NULL" } else { "NULL" }
    );
    if let Some(default) = &d.default {
        sql.push_str(" DEFAULT ");
        sql.push_str(default);
    }
    sql
}

/// `ALTER TABLE … ADD COLUMN …` for `defs`.
pub fn add_columns(table: &str, defs: &[ColumnDef]) -> String {
    let adds: Vec<String> = defs
        .iter()
        .map(|d| format!("ADD COLUMN {}", column_sql(d)))
        .collect();
    format!("ALTER TABLE {} {}", quote(table), adds.join(", "))
}

/// `ALTER TABLE … MODIFY COLUMN …` to `d`'s type.
pub fn modify_column(table: &str, d: &ColumnDef) -> String {
    format!(
        "ALTER TABLE {} MODIFY COLUMN {}",
        quote(table),
        column_sql(d)
    )
}

/// A target table as apply found or made it.
#[derive(Debug, Clone)]
pub struct TargetTable {
    pub name: String,
    /// Lower-cased column names (MySQL column names are case-insensitive) and their types
    /// (`information_schema.COLUMNS.COLUMN_TYPE`).
    pub columns: HashMap<String, String>,
    /// No foreign key references it and no trigger is on it: REPLACE is an upsert here.
    pub replace_safe: bool,
}

/// The table `name` of the target database, or `None` when it does not exist.
pub async fn describe(
    session: &mut Session,
    name: &str,
) -> Result<Option<TargetTable>, ApplyError> {
    let what = format!("reading the definition of {}", quote(name));
    let found: Result<(Vec<(String, String)>, u64), SqlError> =
        with_retry!(session, &what, |conn| {
            {
                let columns: Vec<(String, String)> = conn
                    .exec(
                        "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                        (name,),
                    )
                    .await?;
                let blockers: Option<u64> = conn
                    .exec_first(
                        "SELECT (SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS \
                       WHERE CONSTRAINT_SCHEMA = DATABASE() AND REFERENCED_TABLE_NAME = ?) + \
                     (SELECT COUNT(*) FROM information_schema.TRIGGERS \
                       WHERE TRIGGER_SCHEMA = DATABASE() AND EVENT_OBJECT_TABLE = ?)",
                        (name, name),
                    )
                    .await?;
                Ok::<_, SqlError>((columns, blockers.unwrap_or(0)))
            }
        });
    let (columns, blockers) = found.map_err(|e| ApplyError::sql(&session.url, &what, e))?;
    if columns.is_empty() {
        return Ok(None);
    }
    Ok(Some(TargetTable {
        name: name.to_string(),
        columns: columns
            .into_iter()
            .map(|(c, t)| (c.to_ascii_lowercase(), t))
            .collect(),
        replace_safe: blockers == 0,
    }))
}

/// The binary, no-pad collation this server has (MySQL 8 and MariaDB name it differently).
pub async fn binary_collation(session: &mut Session) -> Result<String, ApplyError> {
    let what = "reading the server's collations";
    let found: Result<Vec<String>, SqlError> = with_retry!(session, what, |conn| conn
        .query::<String, _>(
            "SELECT COLLATION_NAME FROM information_schema.COLLATIONS \
             WHERE COLLATION_NAME IN ('utf8mb4_0900_bin', 'utf8mb4_nopad_bin')",
        )
        .await
        .map_err(SqlError::from));
    let found = found.map_err(|e| ApplyError::sql(&session.url, what, e))?;
    Ok(found
        .into_iter()
        .next()
        .unwrap_or_else(|| "utf8mb4_bin".to_string()))
}

/// Finds the target table of `plan`, creating it, adding the source's new columns (with their
/// defaults) and following the types the source widened, when `create` allows.
///
/// `known` holds, per column of this table, the type db-sync last gave it (apply keeps it in
/// its progress file; backfill has none). A column whose source type changed is modified when
/// the new type holds every value of the target's (a widening); otherwise apply stops with the
/// statement to run by hand, unless the target already has the new type. Without a record of
/// the earlier type, a target column that already holds the new type's values is left as it is.
pub async fn prepare_table(
    session: &mut Session,
    name: &str,
    plan: &TablePlan,
    create: bool,
    collation: &str,
    mut known: Option<&mut BTreeMap<String, String>>,
) -> Result<TargetTable, ApplyError> {
    let mut table = describe(session, name).await?;
    // Every column any version in the window has, in order of first appearance, each with its
    // latest definition.
    let mut order: Vec<String> = Vec::new();
    let mut latest: HashMap<String, &ConnectSchema> = HashMap::new();
    for v in &plan.versions {
        for f in &v.schema.row.fields {
            let lower = f.field_name().to_ascii_lowercase();
            if latest.insert(lower.clone(), f).is_none() {
                order.push(lower);
            }
        }
    }
    let fields: Vec<&ConnectSchema> = order.iter().map(|c| latest[c]).collect();
    let defs = column_defs(&fields, &plan.key);
    let mut changed = false;
    match &table {
        None if !create => {
            return Err(ApplyError::NoTable {
                source_table: plan.table.clone(),
                table: name.to_string(),
            })
        }
        None => {
            let sql = create_table(name, &defs, &plan.key, collation);
            let what = format!("creating table {}", quote(name));
            session
                .exec(&sql, &what)
                .await
                .map_err(|e| ApplyError::sql(&session.url, &what, e))?;
            tracing::info!(table = %name, source = %plan.table, "created target table");
            changed = true;
        }
        Some(t) => {
            let missing: Vec<ColumnDef> = defs
                .iter()
                .filter(|d| !t.columns.contains_key(&d.name.to_ascii_lowercase()))
                .cloned()
                .collect();
            if !missing.is_empty() {
                if !create {
                    return Err(ApplyError::NoColumn {
                        table: name.to_string(),
                        column: missing[0].name.clone(),
                    });
                }
                let sql = add_columns(name, &missing);
                let what = format!("adding columns to {}", quote(name));
                session
                    .exec(&sql, &what)
                    .await
                    .map_err(|e| ApplyError::sql(&session.url, &what, e))?;
                for d in &missing {
                    tracing::info!(table = %name, column = %d.name, ty = %d.ty, default = d.default.as_deref().unwrap_or("none"), "added target column");
                }
                changed = true;
            }
            if create {
                for d in &defs {
                    let lower = d.name.to_ascii_lowercase();
                    let Some(current) = t.columns.get(&lower) else {
                        continue;
                    };
                    let prev = known.as_deref().and_then(|k| k.get(&lower)).cloned();
                    if prev.as_deref() == Some(d.ty.as_str()) {
                        continue; // the source type did not change
                    }
                    let (want, cur) = (ColType::parse(&d.ty), ColType::parse(current));
                    if want != cur && want.holds(&cur) {
                        let sql = modify_column(name, d);
                        let what = format!("widening column {} of {}", quote(&d.name), quote(name));
                        session
                            .exec(&sql, &what)
                            .await
                            .map_err(|e| ApplyError::sql(&session.url, &what, e))?;
                        tracing::info!(table = %name, column = %d.name, from = %current, to = %d.ty, "widened target column: the source widened its type");
                        changed = true;
                    } else if want != cur && prev.is_some() && !cur.holds(&want) {
                        // The source changed the type to one the target column cannot hold.
                        // Without a recorded source type (a first run, or a window that
                        // failed) the target's own type stands: an operator may have chosen
                        // it, and strict mode still refuses any value it cannot hold.
                        return Err(ApplyError::TypeChange(Box::new(super::TypeChange {
                            source_table: plan.table.clone(),
                            table: name.to_string(),
                            column: d.name.clone(),
                            from: prev.unwrap_or_else(|| current.to_ascii_uppercase()),
                            to: d.ty.clone(),
                            statement: modify_column(name, d),
                        })));
                    }
                    if let Some(k) = known.as_deref_mut() {
                        k.insert(lower, d.ty.clone());
                    }
                }
            }
        }
    }
    if changed {
        table = describe(session, name).await?;
    }
    if let (Some(k), Some(t)) = (known, &table) {
        // Record the types of new columns and tables too.
        for d in &defs {
            let lower = d.name.to_ascii_lowercase();
            if t.columns.contains_key(&lower) {
                k.entry(lower).or_insert_with(|| d.ty.clone());
            }
        }
    }
    table.ok_or_else(|| {
        ApplyError::Internal(format!(
            "target table {} is still missing after CREATE TABLE",
            quote(name)
        ))
    })
}

/// Empties table `name` (`TRUNCATE TABLE`) when it exists; whether it did.
pub async fn truncate(session: &mut Session, name: &str) -> Result<bool, ApplyError> {
    if describe(session, name).await?.is_none() {
        return Ok(false);
    }
    let what = format!(
        "emptying {} (TRUNCATE TABLE needs the DROP privilege)",
        quote(name)
    );
    session
        .exec(&format!("TRUNCATE TABLE {}", quote(name)), &what)
        .await
        .map_err(|e| ApplyError::sql(&session.url, &what, e))?;
    Ok(true)
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
