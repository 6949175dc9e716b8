//! What capture checks of the included tables before the engine starts, and what it tells
//! the engine about them.
//!
//! - **Two tables, one target table.** `target.table_name` (default `{table}`) maps
//!   `a.orders` and `b.orders` to one target table, where each would overwrite the other's
//!   rows: capture refuses to start, naming both and the key to change.
//! - **Tables without a key.** A table with no primary key whose replica identity is not
//!   `FULL` sends updates and deletes that name no row, and once it is in a publication
//!   PostgreSQL refuses the application's own UPDATE and DELETE on it. db-sync refuses it
//!   with one line naming `ALTER TABLE … REPLICA IDENTITY FULL` and leaves it out of the
//!   engine's `table.include.list` (so out of the publication too); the other tables go on.
//!   With `FULL`, every update and delete carries the whole old row, and apply finds the
//!   target row by it (see `crate::apply`).
//! - **Generated columns.** PostgreSQL before 18 leaves stored generated columns out of
//!   logical decoding: a snapshot would read their values and every streamed change would
//!   carry NULL, so the target would keep the snapshot's value for ever. Capture leaves them
//!   out of both (Debezium's `column.exclude.list`), with one warning per column: the audit
//!   files and the target do not have them, and `verify` does not compare them.
//! - **Tables added to or removed from the pipeline.** The journal's identity records the
//!   included tables at each start. A table added to `table.include.list` since (or created
//!   under a pattern it matches) gets a snapshot of its own: its existing rows arrive as
//!   snapshot rows, its changes from then on as changes (it joins the publication first;
//!   PostgreSQL never decodes a table's changes from before that, which is why its rows must
//!   be read). The native loader reads it before the engine starts, under one snapshot and
//!   resumable, as it reads an initial load; a table it cannot read gets Debezium's
//!   incremental snapshot through the signalling table, while the others stream on. No
//!   other table is read again. A table no longer included is logged once: its changes
//!   stop, its target table and audit history stay.

use std::collections::BTreeMap;

use super::CaptureError;
use crate::config::{target_name_clashes, Config};
use crate::source::signal;
use crate::source::tables::{included, SourceTable};
use crate::state::identity::Identity;

/// The included tables, or `None` when the source cannot be asked (the engine then reports
/// why, in its own line) or is not PostgreSQL.
pub async fn list(config: &Config) -> Option<Vec<SourceTable>> {
    if !config.is_postgres() {
        return None;
    }
    match included(config).await {
        Ok(tables) => Some(tables),
        Err(e) => {
            tracing::debug!("cannot list the included tables: {e}");
            None
        }
    }
}

/// Refuses a start where two included tables share one target table; logs the refusal of
/// each table without a key. Also used by `check`.
pub fn check(config: &Config, tables: &[SourceTable]) -> Result<(), CaptureError> {
    if let Some(message) = clash(config, tables) {
        return Err(CaptureError::Config {
            key: "target.table_name".into(),
            message,
        });
    }
    for table in tables {
        if let Some(line) = table.refusal() {
            tracing::error!(table = %table.name, "{line}");
        }
    }
    Ok(())
}

/// Compares `tables` with those of the last start (see the module doc) when the pipeline has
/// captured before (`captured`: Debezium's offsets exist and no full snapshot is due): logs
/// each removed table, and gives the added ones, whose rows capture must read
/// ([`snapshot_joined`]). Records the tables but the added ones, which [`record_joined`]
/// records once their snapshot is journaled or asked for: until then every start finds them
/// added again.
pub async fn follow(
    config: &Config,
    tables: &[SourceTable],
    identity: &mut Identity,
    captured: bool,
) -> Result<Vec<String>, CaptureError> {
    let now: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
    let mut record = now.clone();
    let mut joined = Vec::new();
    if let (Some(before), true) = (&identity.tables, captured) {
        for gone in before.iter().filter(|t| !now.contains(t)) {
            tracing::info!(table = %gone, "{gone} is no longer included (source.table.include.list): its changes are no longer captured; its target table and audit history stay");
        }
        joined = now
            .iter()
            .filter(|t| !before.contains(t))
            .cloned()
            .collect();
        record.retain(|t| !joined.contains(t));
    }
    if identity.tables.as_ref() != Some(&record) {
        identity.tables = Some(record);
        identity.store(&config.journal.dir)?;
    }
    Ok(joined)
}

/// Asks Debezium for an incremental snapshot of each table in `joined` through the
/// signalling table (the tables the native loader does not read); the tables it could ask
/// for.
pub async fn snapshot_joined(config: &Config, joined: &[String]) -> Vec<String> {
    let mut asked = Vec::new();
    for added in joined {
        match signal::request_snapshot(config, added).await {
            Ok(id) => {
                tracing::info!(table = %added, signal = %id, "{added} joined the pipeline: capture reads its rows in an incremental snapshot of it alone while the other tables stream on");
                asked.push(added.clone());
            }
            Err(e) => {
                tracing::warn!(table = %added, "{added} joined the pipeline, but its snapshot cannot be asked for ({e}): its existing rows do not arrive yet; the next start asks again");
            }
        }
    }
    asked
}

/// Records `names` among the pipeline's tables (their snapshot is journaled or asked for).
pub fn record_joined(config: &Config, names: &[String]) -> Result<(), CaptureError> {
    if names.is_empty() {
        return Ok(());
    }
    let dir = &config.journal.dir;
    let Some(mut identity) = Identity::load(dir)? else {
        return Ok(());
    };
    let tables = identity.tables.get_or_insert_with(Vec::new);
    for n in names {
        if !tables.contains(n) {
            tables.push(n.clone());
        }
    }
    identity.store(dir)?;
    Ok(())
}

/// One line naming the first two included tables `target.table_name` maps to one target
/// table, and the fix; `None` without a target or a clash.
pub fn clash(config: &Config, tables: &[SourceTable]) -> Option<String> {
    let template = &config.target.as_ref()?.table_name;
    let clashes = target_name_clashes(template, tables.iter().map(|t| t.name.as_str()));
    let (name, first, second) = clashes.into_iter().next()?;
    Some(format!(
        "\"{template}\" maps both {first} and {second} to target table `{name}`, where one would overwrite the other's rows; set target.table_name to a template with {{schema}} (for example \"{{schema}}_{{table}}\"), or leave one table out of source.table.include.list"
    ))
}

/// Leaves the refused tables (see [`SourceTable::refusal`]) out of what the engine captures:
/// when there is one, `table.include.list` becomes the explicit list of the others (and the
/// signalling table), so the publication Debezium keeps in step holds none of them.
pub fn leave_out_refused(
    config: &Config,
    tables: &[SourceTable],
    props: &mut BTreeMap<String, String>,
) {
    if tables.iter().all(|t| t.refusal().is_none()) {
        return;
    }
    let mut list = tables
        .iter()
        .filter(|t| t.refusal().is_none())
        .map(SourceTable::pattern)
        .collect::<Vec<_>>()
        .join(",");
    if let Some(signal) = crate::source::signal_collection(config) {
        list = if list.is_empty() {
            signal.replace('.', "\\.")
        } else {
            signal::include_list_with(&list, &signal)
        };
    }
    props.remove("table.exclude.list");
    props.insert("table.include.list".into(), list);
}

/// Adds the generated columns of `tables` to the engine's `column.exclude.list`, warning
/// once per column. With a `column.include.list` of the user's (Debezium takes only one of
/// the two lists), warns instead that its generated columns stream as NULL.
pub fn exclude_generated(
    config: &Config,
    tables: &[SourceTable],
    props: &mut BTreeMap<String, String>,
) {
    let generated: Vec<(&SourceTable, String)> = tables
        .iter()
        .flat_map(|t| t.generated.iter().map(move |c| (t, c.clone())))
        .collect();
    if generated.is_empty() {
        return;
    }
    if config.source.contains_key("column.include.list") {
        for (t, c) in &generated {
            tracing::warn!(table = %t.name, column = %c, "{}.{c} is a generated column: PostgreSQL does not stream its values, so rows changed after the snapshot carry NULL in it; leave it out of source.column.include.list", t.name);
        }
        return;
    }
    let mut list: Vec<String> = props
        .get("column.exclude.list")
        .map(|l| l.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    list.retain(|s| !s.is_empty());
    for table in tables {
        for pattern in table.generated_patterns() {
            if !list.contains(&pattern) {
                list.push(pattern);
            }
        }
    }
    for (t, c) in &generated {
        tracing::warn!(table = %t.name, column = %c, "{}.{c} is a generated column, which PostgreSQL does not stream: db-sync leaves it out of the audit files and the target (compute it there from the other columns if you need it)", t.name);
    }
    props.insert("column.exclude.list".into(), list.join(","));
}
