//! Debezium's signalling table (`signal.data.collection`), used by `backfill --resnapshot`.
//!
//! For a PostgreSQL source db-sync sets `signal.data.collection` to
//! `public.dbsync_signal_<pipeline>` by default, adds it to `table.include.list` (Debezium reads
//! signals from the change stream), creates the table when capture starts, and keeps its rows
//! out of the journal. `backfill --resnapshot` inserts an `execute-snapshot` signal; the running
//! capture then reads the table again in chunks (an incremental snapshot) and the rows arrive
//! as `r` events through the journal, the audit files and apply.

use super::SourceError;
use crate::config::Config;
use crate::error::{Classify, ErrorKind};

/// Why a signal could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// Bad input: no signalling table, no such source table.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Source(#[from] SourceError),
}

impl Classify for SignalError {
    fn kind(&self) -> ErrorKind {
        match self {
            SignalError::Usage(_) => ErrorKind::Config,
            SignalError::Source(e) => e.kind(),
        }
    }
}

fn sql_failed(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> SignalError {
    let failed = SourceError::query(what);
    move |source| SignalError::Source(failed(source))
}

/// `schema.table` as a quoted PostgreSQL name.
fn pg_name(collection: &str) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    match collection.split_once('.') {
        Some((schema, table)) => format!("{}.{}", quote(schema), quote(table)),
        None => quote(collection),
    }
}

fn create_sql(collection: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (id VARCHAR(64) PRIMARY KEY, type VARCHAR(32) NOT NULL, data VARCHAR(2048) NULL)",
        pg_name(collection)
    )
}

async fn connect(config: &Config, app: &str) -> Result<tokio_postgres::Client, SignalError> {
    Ok(super::connect(config, app).await?.0)
}

/// Creates the signalling table when it is missing (capture start). A failure is a warning:
/// capture works without it; only `--resnapshot` needs it.
pub async fn ensure_table(config: &Config) {
    let Some(collection) = super::signal_collection(config) else {
        return;
    };
    // An unreachable source is the engine's to report, in its own one line.
    let client = match connect(config, "db-sync capture").await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("not creating the signalling table: {e}");
            return;
        }
    };
    if let Err(e) = client.batch_execute(&create_sql(&collection)).await {
        tracing::warn!(
            "cannot create the signalling table {collection} ({e}); `backfill --resnapshot` needs it: run `{}` on the source",
            create_sql(&collection)
        );
    }
}

/// Asks the capture for an incremental snapshot of `table`: one `execute-snapshot` signal.
/// Returns the signal id.
pub async fn request_snapshot(config: &Config, table: &str) -> Result<String, SignalError> {
    let collection = super::signal_collection(config).ok_or_else(|| {
        SignalError::Usage(
            "--resnapshot needs a PostgreSQL source with `source.signal.data.collection` (db-sync sets it by default; do not set it empty)".to_string(),
        )
    })?;
    let client = connect(config, "db-sync backfill").await?;
    let exists: Option<String> = client
        .query_one("SELECT to_regclass($1)::text", &[&pg_name(table)])
        .await
        .map_err(sql_failed(format!("cannot look up {table} at the source")))?
        .get(0);
    if exists.is_none() {
        return Err(SignalError::Usage(format!(
            "--table {table}: the source has no such table (write SCHEMA.TABLE)"
        )));
    }
    // Debezium's incremental snapshot reads a table in chunks of its primary key, and passes
    // over a table without one with a log line only.
    let keyed: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = to_regclass($1) AND indisprimary)",
            &[&pg_name(table)],
        )
        .await
        .map_err(sql_failed(format!("cannot read the key of {table} at the source")))?
        .get(0);
    if !keyed && config.source_prop("message.key.columns").is_none() {
        return Err(SignalError::Usage(format!(
            "--table {table}: it has no primary key, which an incremental snapshot reads it by; rebuild it from its audit files with `db-sync backfill --table {table} --truncate`"
        )));
    }
    client
        .batch_execute(&create_sql(&collection))
        .await
        .map_err(sql_failed(format!(
            "cannot create the signalling table {collection}"
        )))?;
    let id = format!(
        "db-sync-resnapshot-{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
        std::process::id()
    );
    let data = serde_json::json!({"data-collections": [table], "type": "incremental"}).to_string();
    client
        .execute(
            &format!(
                "INSERT INTO {} (id, type, data) VALUES ($1, 'execute-snapshot', $2)",
                pg_name(&collection)
            ),
            &[&id, &data],
        )
        .await
        .map_err(sql_failed(format!(
            "cannot insert the snapshot signal into {collection}"
        )))?;
    Ok(id)
}

/// `list` (a Debezium `table.include.list`) with `collection` added unless it names it already;
/// an empty list (every table) stays empty.
pub fn include_list_with(list: &str, collection: &str) -> String {
    let escaped = collection.replace('.', "\\.");
    let present = list
        .split(',')
        .map(str::trim)
        .any(|e| e == collection || e == escaped);
    if present || list.trim().is_empty() {
        list.to_string()
    } else {
        format!("{list},{escaped}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signal_table_joins_the_include_list_once() {
        assert_eq!(
            include_list_with("public.orders", "public.dbsync_signal_shop"),
            "public.orders,public\\.dbsync_signal_shop"
        );
        let once = include_list_with(
            "public.a,public\\.dbsync_signal_shop",
            "public.dbsync_signal_shop",
        );
        assert_eq!(once, "public.a,public\\.dbsync_signal_shop");
        assert_eq!(include_list_with("", "public.s"), "");
    }

    #[test]
    fn names_are_quoted_for_postgres() {
        assert_eq!(
            pg_name("public.dbsync_signal_shop"),
            "\"public\".\"dbsync_signal_shop\""
        );
        assert_eq!(pg_name("odd\"s.t"), "\"odd\"\"s\".\"t\"");
    }
}
