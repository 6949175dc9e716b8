//! Target tables from source schemas (the [type map](crate::types#the-type-map)'s MySQL column):
//! `CREATE TABLE` with the same primary key, `ALTER TABLE … ADD COLUMN` for a column the source
//! added, reading a table's definition back, and identifier quoting. Everything here is valid for
//! MariaDB 10.11 and MySQL 8. The column types themselves come from
//! [`crate::types::Logical::mysql_type`], as [`ColType`] values rendered here into DDL.
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

use std::collections::{BTreeMap, HashMap, HashSet};

use mysql_async::prelude::Queryable;

use super::merge::TablePlan;
use super::sql::{with_retry, Session, SqlError};
use super::ApplyError;
use crate::types::mysql::ColType;
use crate::types::ConnectSchema;

/// MySQL's row limit, less a margin for the fixed-size and off-row columns.
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
    pub ty: ColType,
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
    while defs.iter().map(|d| d.ty.row_bytes()).sum::<usize>() > ROW_LIMIT {
        let widest = defs
            .iter_mut()
            .filter(|d| !d.key && matches!(d.ty, ColType::Varchar(_)))
            .max_by_key(|d| d.ty.row_bytes());
        match widest {
            Some(d) => d.ty = ColType::LONGTEXT,
            None => break,
        }
    }
    defs
}

/// The hidden primary key db-sync gives the target table of a source table without one:
/// InnoDB clusters rows by it, and `SELECT *` does not show it (`INVISIBLE`, MySQL 8.0.23 and
/// MariaDB 10.3 on).
pub const ROW_ID: &str = "_db_sync_row";

/// `CREATE TABLE IF NOT EXISTS` with the primary key (without one, the hidden [`ROW_ID`]) and
/// the text collation `collation`.
pub fn create_table(table: &str, defs: &[ColumnDef], key: &[String], collation: &str) -> String {
    let mut sql = format!("CREATE TABLE IF NOT EXISTS {} (", quote(table));
    for d in defs {
        sql.push_str(&format!("{}, ", column_sql(d)));
    }
    let row_id = [ROW_ID.to_string()];
    let key = if key.is_empty() {
        sql.push_str(&format!(
            "{} BIGINT UNSIGNED NOT NULL AUTO_INCREMENT INVISIBLE, ",
            quote(ROW_ID)
        ));
        &row_id[..]
    } else {
        key
    };
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
    /// The lower-cased columns db-sync made for the source table's columns (the apply
    /// progress records them). One that a schema version no longer has was dropped at the
    /// source: the target keeps it, and rows written from that version on hold NULL in it.
    pub followed: HashSet<String>,
    /// The lower-cased columns of its primary key, in key order (empty without one).
    pub key: Vec<String>,
    /// Its unique indexes other than the primary key (users add them), by name: upserts then
    /// go as one exchange ([`super::chunk::Work::Exchange`]).
    pub unique: Vec<String>,
    /// Its generated columns (lower-cased; users add them): the server computes them, no
    /// statement writes them.
    pub generated: HashSet<String>,
}

/// The table `name` of the target database, or `None` when it does not exist.
pub async fn describe(
    session: &mut Session,
    name: &str,
) -> Result<Option<TargetTable>, ApplyError> {
    let what = format!("reading the definition of {}", quote(name));
    type Found = (Vec<(String, String, String)>, u64, Vec<String>, Vec<String>);
    let found: Result<Found, SqlError> = with_retry!(session, &what, |conn| {
        {
            let columns: Vec<(String, String, String)> = conn
                .exec(
                    "SELECT COLUMN_NAME, COLUMN_TYPE, EXTRA FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                    (name,),
                )
                .await?;
            let key: Vec<String> = conn
                .exec(
                    "SELECT COLUMN_NAME FROM information_schema.STATISTICS \
                         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
                           AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
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
            let unique: Vec<String> = conn
                .exec(
                    "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS \
                         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
                           AND NON_UNIQUE = 0 AND INDEX_NAME <> 'PRIMARY' ORDER BY INDEX_NAME",
                    (name,),
                )
                .await?;
            Ok::<_, SqlError>((columns, blockers.unwrap_or(0), key, unique))
        }
    });
    let (columns, blockers, key, unique) =
        found.map_err(|e| ApplyError::sql(&session.url, &what, e))?;
    if columns.is_empty() {
        return Ok(None);
    }
    Ok(Some(TargetTable {
        name: name.to_string(),
        generated: columns
            .iter()
            .filter(|(_, _, extra)| extra.to_ascii_uppercase().contains("GENERATED"))
            .map(|(c, _, _)| c.to_ascii_lowercase())
            .collect(),
        columns: columns
            .into_iter()
            .map(|(c, t, _)| (c.to_ascii_lowercase(), t))
            .collect(),
        replace_safe: blockers == 0,
        followed: HashSet::new(),
        key: key.iter().map(|c| c.to_ascii_lowercase()).collect(),
        unique,
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
    (create, drop_dropped): (bool, bool),
    collation: &str,
    mut known: Option<&mut BTreeMap<String, String>>,
) -> Result<TargetTable, ApplyError> {
    let table = describe(session, name).await?;
    let defs = column_defs(&latest_fields(plan), &plan.key);
    let changed = match &table {
        None if !create => {
            return Err(ApplyError::NoTable {
                source_table: plan.table.clone(),
                table: name.to_string(),
            })
        }
        None => {
            let sql = create_table(name, &defs, &plan.key, collation);
            exec(session, &sql, format!("creating table {}", quote(name))).await?;
            tracing::info!(table = %name, source = %plan.table, "created target table");
            true
        }
        Some(t) => {
            // Before any other DDL: a table keyed otherwise is not changed at all, unless
            // db-sync made it and the source changed its key since.
            let rekeyed = if let Err(refused) = check_key(t, plan) {
                let made = known
                    .as_deref()
                    .is_some_and(|k| !t.key.is_empty() && t.key.iter().all(|c| k.contains_key(c)));
                if !(made && create) {
                    return Err(refused);
                }
                rekey(session, t, &defs, plan, refused).await?;
                if let Some(k) = known.as_deref_mut() {
                    for d in defs
                        .iter()
                        .filter(|d| d.key || t.key.contains(&d.name.to_ascii_lowercase()))
                    {
                        k.insert(d.name.to_ascii_lowercase(), d.ty.to_string());
                    }
                }
                true
            } else {
                false
            };
            let added = add_missing_columns(session, t, &defs, create).await?;
            let widened =
                create && follow_types(session, t, plan, &defs, known.as_deref_mut()).await?;
            let dropped = drop_dropped
                && drop_columns(session, t, &defs, &plan.key, known.as_deref_mut()).await?;
            rekeyed || added || widened || dropped
        }
    };
    let mut table = if changed {
        describe(session, name).await?
    } else {
        table
    };
    if let (Some(k), Some(t)) = (known, table.as_mut()) {
        // Record the types of new columns and tables too.
        for d in &defs {
            let lower = d.name.to_ascii_lowercase();
            if t.columns.contains_key(&lower) {
                k.entry(lower).or_insert_with(|| d.ty.to_string());
            }
        }
        t.followed = k.keys().cloned().collect();
    }
    table.ok_or_else(|| {
        ApplyError::Internal(format!(
            "target table {} is still missing after CREATE TABLE",
            quote(name)
        ))
    })
}

/// The source table's key: its latest schema version's, when the source changed it.
fn source_key(plan: &TablePlan) -> Vec<String> {
    plan.versions
        .last()
        .map(|v| v.schema.key_columns())
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| plan.key.clone())
}

/// Gives a table db-sync made the key the source changed to, in one `ALTER TABLE`: the new
/// key's columns take their key types (`NOT NULL`), the old key's columns that leave it their
/// plain ones, and the primary key is replaced. The server checks what the rows allow (no
/// NULL in a new key column, no two rows with one new key, no value longer than the key type);
/// when it refuses, apply stops with `refused` (both keys, the statement to run) and its
/// reason, before any row is written.
async fn rekey(
    session: &mut Session,
    table: &TargetTable,
    defs: &[ColumnDef],
    plan: &TablePlan,
    refused: ApplyError,
) -> Result<(), ApplyError> {
    let key = source_key(plan);
    let mut parts: Vec<String> = defs
        .iter()
        .filter(|d| d.key || table.key.contains(&d.name.to_ascii_lowercase()))
        .map(|d| format!("MODIFY COLUMN {}", column_sql(d)))
        .collect();
    parts.push("DROP PRIMARY KEY".to_string());
    parts.push(format!(
        "ADD PRIMARY KEY ({})",
        key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ")
    ));
    let sql = format!("ALTER TABLE {} {}", quote(&table.name), parts.join(", "));
    let what = format!("changing the primary key of {}", quote(&table.name));
    match session.exec(&sql, &what).await {
        Ok(()) => {
            tracing::warn!(
                table = %table.name,
                source = %plan.table,
                from = %table.key.join(", "),
                to = %key.join(", "),
                "the source changed its primary key; the target table follows it"
            );
            Ok(())
        }
        Err(e) => match refused {
            ApplyError::KeyMismatch(line) => Err(ApplyError::KeyMismatch(format!(
                "{line} (db-sync tried `{sql}`; the target refused: {e})"
            ))),
            other => Err(other),
        },
    }
}

/// Refuses a target table whose primary key is not the source table's (its latest schema
/// version's, when the source changed its key): apply would match rows by the wrong columns
/// (a table made by hand with another key or none, a source key widened since).
fn check_key(table: &TargetTable, plan: &TablePlan) -> Result<(), ApplyError> {
    let source = source_key(plan);
    let lower: Vec<String> = source.iter().map(|c| c.to_ascii_lowercase()).collect();
    if table.key == lower {
        return Ok(());
    }
    // A source table without a key matches rows by all their columns: any target key serves
    // (db-sync's hidden one, or one the user made), as long as no statement must write it.
    if source.is_empty() {
        return Ok(());
    }
    let list = |cols: &[String]| cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
    let (has, alter) = if table.key.is_empty() {
        ("no primary key".to_string(), "ADD PRIMARY KEY")
    } else {
        (
            format!("primary key ({})", list(&table.key)),
            "DROP PRIMARY KEY, ADD PRIMARY KEY",
        )
    };
    Err(ApplyError::KeyMismatch(format!(
        "target table {} has {has}, but source table {} is keyed by ({}): apply would match its rows by the wrong columns. Give the target the source's key (ALTER TABLE {} {alter} ({})) if its rows allow it, or drop it and rebuild it (db-sync creates it with the right key) with `db-sync backfill --table {} --resnapshot`; the journal keeps every change not yet applied",
        quote(&table.name),
        plan.table,
        list(&source),
        quote(&table.name),
        list(&source),
        plan.table,
    )))
}

/// Every column any schema version of `plan` has, in order of first appearance, each with its
/// latest definition.
fn latest_fields(plan: &TablePlan) -> Vec<&ConnectSchema> {
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
    order.iter().map(|c| latest[c]).collect()
}

/// Runs one DDL statement, naming it in the error.
async fn exec(session: &mut Session, sql: &str, what: String) -> Result<(), ApplyError> {
    session
        .exec(sql, &what)
        .await
        .map_err(|e| ApplyError::sql(&session.url, &what, e))
}

/// Adds the columns of `defs` that table `t` lacks (an error when `create` does not allow it);
/// whether it added any.
async fn add_missing_columns(
    session: &mut Session,
    t: &TargetTable,
    defs: &[ColumnDef],
    create: bool,
) -> Result<bool, ApplyError> {
    let missing: Vec<ColumnDef> = defs
        .iter()
        .filter(|d| !t.columns.contains_key(&d.name.to_ascii_lowercase()))
        .cloned()
        .collect();
    let Some(first) = missing.first() else {
        return Ok(false);
    };
    if !create {
        return Err(ApplyError::NoColumn {
            table: t.name.clone(),
            column: first.name.clone(),
        });
    }
    let what = format!("adding columns to {}", quote(&t.name));
    exec(session, &add_columns(&t.name, &missing), what).await?;
    for d in &missing {
        tracing::info!(table = %t.name, column = %d.name, ty = %d.ty, default = d.default.as_deref().unwrap_or("none"), "added target column");
    }
    Ok(true)
}

/// `target.dropped_columns: drop`: drops the target columns db-sync made (`known`) that no
/// schema version of the window has (the source dropped them), and forgets them.
async fn drop_columns(
    session: &mut Session,
    t: &TargetTable,
    defs: &[ColumnDef],
    key: &[String],
    known: Option<&mut BTreeMap<String, String>>,
) -> Result<bool, ApplyError> {
    let Some(known) = known else {
        return Ok(false);
    };
    let has = |c: &str| {
        defs.iter().any(|d| d.name.eq_ignore_ascii_case(c))
            || key.iter().any(|k| k.eq_ignore_ascii_case(c))
    };
    let gone: Vec<String> = known
        .keys()
        .filter(|c| t.columns.contains_key(*c) && !has(c))
        .cloned()
        .collect();
    if gone.is_empty() {
        return Ok(false);
    }
    let sql = format!(
        "ALTER TABLE {} {}",
        quote(&t.name),
        gone.iter()
            .map(|c| format!("DROP COLUMN {}", quote(c)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    exec(
        session,
        &sql,
        format!("dropping columns of {}", quote(&t.name)),
    )
    .await?;
    for c in &gone {
        known.remove(c);
        tracing::info!(table = %t.name, column = %c, "dropped target column: the source dropped it (target.dropped_columns: drop)");
    }
    Ok(true)
}

/// What apply does about one existing target column whose definition it computed anew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follow {
    /// The source type is the one recorded: nothing to do or record.
    Unchanged,
    /// The new type holds every value of the target's: `MODIFY` the column to it.
    Widen,
    /// The source changed the type to one the target column cannot hold.
    Refuse,
    /// The target column stays as it is (it has the new type, holds its values, or no earlier
    /// type is recorded); the new type is recorded.
    Keep,
}

/// The decision for a column db-sync now declares `want`, which the target has as `current`
/// (`COLUMN_TYPE`) and db-sync last declared as `prev` (when recorded).
fn follow(prev: Option<&str>, want: &ColType, current: &str) -> Follow {
    if prev == Some(want.to_string().as_str()) {
        return Follow::Unchanged;
    }
    let (want, cur) = (want.storage(), ColType::parse(current));
    if want != cur && want.holds(&cur) {
        Follow::Widen
    } else if want != cur && prev.is_some() && !cur.holds(&want) {
        // Without a recorded source type (a first run, or a window that failed) the target's
        // own type stands: an operator may have chosen it, and strict mode still refuses any
        // value it cannot hold.
        Follow::Refuse
    } else {
        Follow::Keep
    }
}

/// Follows the source's type changes on the existing columns of `t`: widens those it can and
/// stops on one it cannot follow without loss; whether it altered any.
async fn follow_types(
    session: &mut Session,
    t: &TargetTable,
    plan: &TablePlan,
    defs: &[ColumnDef],
    mut known: Option<&mut BTreeMap<String, String>>,
) -> Result<bool, ApplyError> {
    let mut changed = false;
    for d in defs {
        let lower = d.name.to_ascii_lowercase();
        let Some(current) = t.columns.get(&lower) else {
            continue; // added just now, with the new type
        };
        let prev = known.as_deref().and_then(|k| k.get(&lower)).cloned();
        match follow(prev.as_deref(), &d.ty, current) {
            Follow::Unchanged => continue,
            Follow::Widen => {
                let what = format!("widening column {} of {}", quote(&d.name), quote(&t.name));
                exec(session, &modify_column(&t.name, d), what).await?;
                tracing::info!(table = %t.name, column = %d.name, from = %current, to = %d.ty, "widened target column: the source widened its type");
                changed = true;
            }
            Follow::Refuse => {
                return Err(ApplyError::TypeChange(Box::new(super::TypeChange {
                    source_table: plan.table.clone(),
                    table: t.name.clone(),
                    column: d.name.clone(),
                    from: prev.unwrap_or_else(|| current.to_ascii_uppercase()),
                    to: d.ty.to_string(),
                    statement: modify_column(&t.name, d),
                })))
            }
            Follow::Keep => {}
        }
        if let Some(k) = known.as_deref_mut() {
            k.insert(lower, d.ty.to_string());
        }
    }
    Ok(changed)
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
        let varchars = defs
            .iter()
            .filter(|d| matches!(d.ty, ColType::Varchar(_)))
            .count();
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

    #[test]
    fn a_changed_source_type_widens_stops_or_stands() {
        let int = ColType::Int(4);
        // The recorded type is the one declared now: nothing to do.
        assert_eq!(follow(Some("INT"), &int, "smallint(6)"), Follow::Unchanged);
        // INT over a SMALLINT target: widened, with or without a record.
        assert_eq!(follow(Some("SMALLINT"), &int, "smallint(6)"), Follow::Widen);
        assert_eq!(follow(None, &int, "smallint(6)"), Follow::Widen);
        // Narrowed at the source: refused when recorded, the target's type stands when not.
        let small = ColType::Int(2);
        assert_eq!(follow(Some("INT"), &small, "int(11)"), Follow::Keep);
        let text = ColType::Varchar(10);
        assert_eq!(follow(Some("INT"), &text, "int(11)"), Follow::Refuse);
        assert_eq!(follow(None, &text, "int(11)"), Follow::Keep);
        // TINYINT(1) and JSON are what the server reports as tinyint(1) and longtext.
        assert_eq!(follow(None, &ColType::Bool, "tinyint(1)"), Follow::Keep);
        assert_eq!(
            follow(Some("LONGTEXT"), &ColType::Json, "longtext"),
            Follow::Keep
        );
    }
}
