//! The shadow table of `backfill --truncate`: the target table is rebuilt under another name
//! and swapped in with one `RENAME TABLE`, so a reader sees the old rows or the new ones,
//! never a table emptied or half rebuilt.
//!
//! Names ([`Names`]): `<target>__dbsync_rebuild` is the table being built,
//! `<target>__dbsync_replaced` the old table between the swap and its drop (each shortened
//! with a hash of the target's name where MySQL's 64 characters would not hold it).
//!
//! A crash or a kill at any point leaves the target table whole: before the swap it is the
//! old table untouched, after it the new one. What a killed run leaves behind (a half-built
//! shadow, an old table not yet dropped) is dropped when the next backfill of the table
//! starts ([`Ddl::drop_leftovers`]).

use mysql_async::prelude::Queryable;

use crate::apply::sql::{with_retry, Session, SqlError};
use crate::apply::{quote, redact_url, ApplyError};
use crate::config::TargetConfig;

/// MySQL's and MariaDB's longest table name, in characters.
const MAX_NAME: usize = 64;
const REBUILD: &str = "__dbsync_rebuild";
const REPLACED: &str = "__dbsync_replaced";

/// The tables of one rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The target table readers use.
    pub target: String,
    /// Where the rows are replayed.
    pub rebuild: String,
    /// The old table, between the swap and its drop.
    pub replaced: String,
}

impl Names {
    pub fn of(target: &str) -> Names {
        Names {
            target: target.to_string(),
            rebuild: derived(target, REBUILD),
            replaced: derived(target, REPLACED),
        }
    }
}

/// `<target><suffix>`, or, when that is longer than a table name may be, a prefix of the
/// target, a hash of its whole name and the suffix.
fn derived(target: &str, suffix: &str) -> String {
    if target.chars().count() + suffix.len() <= MAX_NAME {
        return format!("{target}{suffix}");
    }
    let hash = format!("{:08x}", crc32c::crc32c(target.as_bytes()));
    let keep = MAX_NAME - suffix.len() - hash.len() - 1;
    let prefix: String = target.chars().take(keep).collect();
    format!("{prefix}_{hash}{suffix}")
}

/// The DDL of a rebuild, on a session of its own.
pub struct Ddl {
    session: Session,
}

impl Ddl {
    /// A session to `target:` (not connected yet).
    pub fn new(tc: &TargetConfig) -> Result<Ddl, ApplyError> {
        let session = Session::new(tc.url.expose(), redact_url(tc.url.expose())).map_err(|e| {
            ApplyError::Config {
                key: "target.url".into(),
                message: e.to_string(),
            }
        })?;
        Ok(Ddl { session })
    }

    /// Drops what a killed backfill of this table left behind: a shadow and an old table.
    pub async fn drop_leftovers(&mut self, names: &Names) -> Result<(), ApplyError> {
        for name in [&names.rebuild, &names.replaced] {
            if self.exists(name).await? {
                tracing::info!(table = %name, "dropping what an interrupted backfill left behind");
                self.exec(
                    &format!("DROP TABLE IF EXISTS {}", quote(name)),
                    &format!("dropping {}", quote(name)),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Creates the empty shadow: like the target table (its columns, keys and indexes) when
    /// it exists; otherwise apply creates it as it would create the target, and without
    /// `target.create_tables` that is refused here, naming the target.
    pub async fn create(
        &mut self,
        source_table: &str,
        names: &Names,
        create_tables: bool,
    ) -> Result<(), ApplyError> {
        if !self.exists(&names.target).await? {
            if create_tables {
                return Ok(());
            }
            return Err(ApplyError::NoTable {
                source_table: source_table.to_string(),
                table: names.target.clone(),
            });
        }
        self.refuse_what_a_swap_loses(names).await?;
        self.exec(
            &format!(
                "CREATE TABLE {} LIKE {}",
                quote(&names.rebuild),
                quote(&names.target)
            ),
            &format!(
                "creating {} like {} (backfill --truncate needs the CREATE privilege)",
                quote(&names.rebuild),
                quote(&names.target)
            ),
        )
        .await
    }

    /// Swaps the rebuilt table in (one `RENAME TABLE`, atomic for readers) and drops the old
    /// one. Whether there was an old table; `false` also when nothing was rebuilt (no target
    /// table, and no row replayed to create it).
    pub async fn swap(&mut self, names: &Names) -> Result<bool, ApplyError> {
        if !self.exists(&names.rebuild).await? {
            return Ok(false);
        }
        let (target, rebuild, replaced) = (
            quote(&names.target),
            quote(&names.rebuild),
            quote(&names.replaced),
        );
        let what = format!(
            "swapping {rebuild} in as {target} (RENAME TABLE needs the ALTER and DROP privileges)"
        );
        if !self.exists(&names.target).await? {
            self.exec(&format!("RENAME TABLE {rebuild} TO {target}"), &what)
                .await?;
            return Ok(false);
        }
        self.exec(
            &format!("RENAME TABLE {target} TO {replaced}, {rebuild} TO {target}"),
            &what,
        )
        .await?;
        self.exec(
            &format!("DROP TABLE IF EXISTS {replaced}"),
            &format!("dropping the replaced table {replaced}"),
        )
        .await?;
        Ok(true)
    }

    /// A rename leaves the target's triggers and foreign keys with the old table (and
    /// `CREATE TABLE … LIKE` copies neither): refused, naming them, rather than lost.
    async fn refuse_what_a_swap_loses(&mut self, names: &Names) -> Result<(), ApplyError> {
        let name = names.target.as_str();
        let what = format!("reading the triggers and foreign keys of {}", quote(name));
        let found: Result<Option<(u64, u64)>, SqlError> =
            with_retry!(self.session, &what, |conn| conn
                .exec_first(
                    "SELECT \
                       (SELECT COUNT(*) FROM information_schema.TRIGGERS \
                         WHERE TRIGGER_SCHEMA = DATABASE() AND EVENT_OBJECT_TABLE = ?), \
                       (SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS \
                         WHERE CONSTRAINT_SCHEMA = DATABASE() \
                           AND (TABLE_NAME = ? OR REFERENCED_TABLE_NAME = ?))",
                    (name, name, name),
                )
                .await
                .map_err(SqlError::from));
        let (triggers, foreign_keys) = found
            .map_err(|e| ApplyError::sql(&self.session.url, &what, e))?
            .unwrap_or((0, 0));
        if triggers + foreign_keys == 0 {
            return Ok(());
        }
        Err(ApplyError::Config {
            key: "--truncate".into(),
            message: format!(
                "rebuilds {} as {} and swaps it in with RENAME TABLE, which would leave its {triggers} trigger(s) and {foreign_keys} foreign key(s) behind; drop them and re-create them after the backfill, or backfill without --truncate",
                quote(name),
                quote(&names.rebuild)
            ),
        })
    }

    async fn exists(&mut self, name: &str) -> Result<bool, ApplyError> {
        let what = format!("looking for table {}", quote(name));
        let found: Result<Option<u64>, SqlError> = with_retry!(self.session, &what, |conn| conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                (name,),
            )
            .await
            .map_err(SqlError::from));
        let n = found.map_err(|e| ApplyError::sql(&self.session.url, &what, e))?;
        Ok(n.unwrap_or(0) > 0)
    }

    async fn exec(&mut self, sql: &str, what: &str) -> Result<(), ApplyError> {
        self.session
            .exec(sql, what)
            .await
            .map_err(|e| ApplyError::sql(&self.session.url, what, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_names_fit_in_a_table_name() {
        let n = Names::of("orders");
        assert_eq!(n.rebuild, "orders__dbsync_rebuild");
        assert_eq!(n.replaced, "orders__dbsync_replaced");
        let long = "x".repeat(60);
        let n = Names::of(&long);
        for name in [&n.rebuild, &n.replaced] {
            assert_eq!(name.chars().count(), MAX_NAME, "{name}");
            assert!(name.starts_with("xxxx"), "{name}");
        }
        // Two long names that share their first characters get two shadows.
        let other = format!("{}y", "x".repeat(59));
        assert_ne!(Names::of(&other).rebuild, n.rebuild);
        assert!(Names::of(&"é".repeat(64)).rebuild.chars().count() <= MAX_NAME);
    }
}
