//! The tables the pipeline includes, as the source's catalog shows them.
//!
//! Debezium decides which tables it captures from `table.include.list` /
//! `table.exclude.list` (regular expressions matched, ignoring case, against the whole
//! `schema.table`) and `schema.include.list` / `schema.exclude.list` (against the schema
//! name); with none set, every table outside the system schemas. [`included`] applies the
//! same lists to the catalog, so db-sync's checks see the tables Debezium will stream:
//! ordinary tables and partitioned parents (a partition streams under its root's name, see
//! [`publication`](super::publication)), never the pipeline's own signalling table.
//!
//! For each table it reads what the checks at start need: the primary key, the replica
//! identity (`FULL` puts every column in an update's and a delete's old row), and the stored
//! generated columns (before PostgreSQL 18, logical decoding leaves them out of streamed
//! rows although a snapshot reads them).

use super::{connect, signal_collection, SourceError};
use crate::config::Config;

/// One included table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTable {
    /// `schema.table`, as Debezium names it.
    pub name: String,
    /// The primary key's columns in key order; empty without one.
    pub key: Vec<String>,
    /// `REPLICA IDENTITY FULL`: updates and deletes carry the whole old row.
    pub identity_full: bool,
    /// Stored generated columns (`GENERATED ALWAYS AS (…) STORED`), in column order.
    pub generated: Vec<String>,
}

impl SourceTable {
    /// Why db-sync refuses this table, as one line with the fix: no primary key and a replica
    /// identity that leaves the old row out of updates and deletes, so no change can say
    /// which target row it is about. `None` for a table db-sync applies.
    pub fn refusal(&self) -> Option<String> {
        (self.key.is_empty() && !self.identity_full).then(|| {
            format!(
                "{} has no primary key and its replica identity is not FULL: db-sync cannot tell its rows apart and does not apply it; add a primary key, or run ALTER TABLE {} REPLICA IDENTITY FULL",
                self.name,
                quoted(&self.name)
            )
        })
    }

    /// The Debezium table pattern (`schema\.table`, escaped) that matches only this table.
    pub fn pattern(&self) -> String {
        let (schema, table) = self.name.split_once('.').unwrap_or(("", &self.name));
        format!("{}\\.{}", escaped(schema), escaped(table))
    }

    /// The Debezium column patterns (`schema.table.column`, dots escaped) of the generated
    /// columns.
    pub fn generated_patterns(&self) -> impl Iterator<Item = String> + '_ {
        let (schema, table) = self.name.split_once('.').unwrap_or(("", &self.name));
        self.generated
            .iter()
            .map(move |c| format!("{}\\.{}\\.{}", escaped(schema), escaped(table), escaped(c)))
    }
}

/// `name` as a Java regular expression matching only itself: ASCII punctuation escaped (a
/// backslash before a letter would be an error in Java).
fn escaped(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_punctuation() && c != '_' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `schema.table` quoted for PostgreSQL where a part needs it.
fn quoted(name: &str) -> String {
    let part = |p: &str| {
        if !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !p.starts_with(|c: char| c.is_ascii_digit())
        {
            p.to_string()
        } else {
            format!("\"{}\"", p.replace('"', "\"\""))
        }
    };
    match name.split_once('.') {
        Some((schema, table)) => format!("{}.{}", part(schema), part(table)),
        None => part(name),
    }
}

/// The tables Debezium captures under `config`'s include and exclude lists, sorted by name.
pub async fn included(config: &Config) -> Result<Vec<SourceTable>, SourceError> {
    let (client, described) = connect(config, "db-sync tables").await?;
    let list = |key: &str| {
        config
            .source_prop(key)
            .map(|l| anchored(&l))
            .filter(|p| !p.is_empty())
    };
    let (tables_in, tables_out) = (list("table.include.list"), list("table.exclude.list"));
    let (schemas_in, schemas_out) = (list("schema.include.list"), list("schema.exclude.list"));
    let rows = client
        .query(
            "SELECT n.nspname || '.' || c.relname,
                    c.relreplident = 'f',
                    COALESCE((SELECT array_agg(a.attname::text ORDER BY k.ord)
                                FROM pg_index i
                                CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                                JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                               WHERE i.indrelid = c.oid AND i.indisprimary), '{}'),
                    COALESCE((SELECT array_agg(a.attname::text ORDER BY a.attnum)
                                FROM pg_attribute a
                               WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                                 AND a.attgenerated = 's'), '{}')
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
                AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
                AND ($1::text IS NULL OR n.nspname || '.' || c.relname ~* $1)
                AND ($2::text IS NULL OR NOT n.nspname || '.' || c.relname ~* $2)
                AND ($3::text IS NULL OR n.nspname ~* $3)
                AND ($4::text IS NULL OR NOT n.nspname ~* $4)
              ORDER BY 1",
            &[&tables_in, &tables_out, &schemas_in, &schemas_out],
        )
        .await
        .map_err(SourceError::query(format!(
            "cannot list the included tables on {described}"
        )))?;
    let signal = signal_collection(config);
    Ok(rows
        .into_iter()
        .map(|row| SourceTable {
            name: row.get(0),
            identity_full: row.get(1),
            key: row.get(2),
            generated: row.get(3),
        })
        .filter(|t| Some(&t.name) != signal.as_ref())
        .collect())
}

/// A Debezium list (comma-separated regular expressions, each matching a whole name) as one
/// anchored PostgreSQL regular expression; empty for an empty list.
fn anchored(list: &str) -> String {
    let parts: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("^({})$", parts.join("|"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_matches_whole_names_only() {
        assert_eq!(anchored(" public.a , b\\.c,"), "^(public.a|b\\.c)$");
        assert_eq!(anchored(" , "), "");
    }

    #[test]
    fn a_keyless_table_is_refused_unless_its_identity_is_full() {
        let t = SourceTable {
            name: "public.Log".into(),
            key: vec![],
            identity_full: false,
            generated: vec!["total".into()],
        };
        let line = t.refusal().unwrap();
        assert!(
            line.contains("ALTER TABLE public.\"Log\" REPLICA IDENTITY FULL"),
            "{line}"
        );
        assert!(SourceTable {
            identity_full: true,
            ..t.clone()
        }
        .refusal()
        .is_none());
        assert_eq!(
            t.generated_patterns().collect::<Vec<_>>(),
            vec!["public\\.Log\\.total".to_string()]
        );
    }
}
