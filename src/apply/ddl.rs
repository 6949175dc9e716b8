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

use std::collections::HashSet;

use mysql_async::prelude::Queryable;

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
                ty: f.logical().mysql_type(is_key),
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

/// A target table as apply found or made it.
#[derive(Debug, Clone)]
pub struct TargetTable {
    pub name: String,
    /// Lower-cased column names (MySQL column names are case-insensitive).
    pub columns: HashSet<String>,
    /// No foreign key references it and no trigger is on it: REPLACE is an upsert here.
    pub replace_safe: bool,
}

/// The table `name` of the target database, or `None` when it does not exist.
pub async fn describe(
    session: &mut Session,
    name: &str,
) -> Result<Option<TargetTable>, ApplyError> {
    let what = format!("reading the definition of {}", quote(name));
    let found: Result<(Vec<String>, u64), SqlError> = with_retry!(session, &what, |conn| {
        {
            let columns: Vec<String> = conn
                .exec(
                    "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
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
        columns: columns.iter().map(|c| c.to_ascii_lowercase()).collect(),
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

/// Finds the target table of `plan`, creating it or adding the source's new columns when
/// `create` allows. `collation` is the server's binary collation ([`binary_collation`]).
pub async fn prepare_table(
    session: &mut Session,
    name: &str,
    plan: &TablePlan,
    create: bool,
    collation: &str,
) -> Result<TargetTable, ApplyError> {
    let mut table = describe(session, name).await?;
    // Every column any version in the window has, in order of first appearance.
    let mut fields = Vec::new();
    let mut seen = HashSet::new();
    for v in &plan.versions {
        for f in &v.schema.row.fields {
            if seen.insert(f.field_name().to_ascii_lowercase()) {
                fields.push(f);
            }
        }
    }
    let defs = column_defs(&fields, &plan.key);
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
        }
        Some(t) => {
            let missing: Vec<ColumnDef> = defs
                .into_iter()
                .filter(|d| !t.columns.contains(&d.name.to_ascii_lowercase()))
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
                    tracing::info!(table = %name, column = %d.name, ty = %d.ty, "added target column");
                }
            }
        }
    }
    if table
        .as_ref()
        .is_none_or(|t| t.columns.len() < fields.len())
    {
        table = describe(session, name).await?;
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
