//! The publication's `publish_via_partition_root` (PostgreSQL 13+): a partitioned table named
//! in `table.include.list` is one table, its partitions' changes published under its name.
//!
//! Debezium creates the publication with the option (`publish.via.partition.root`, a db-sync
//! default) but leaves an existing publication's options alone, so a pipeline whose
//! publication predates the default would see a partitioned table's snapshot but none of its
//! streamed changes: PostgreSQL publishes a partition's changes under the partition's name
//! unless the option is on. Capture start sets the option on such a publication.

use crate::config::Config;

/// Sets `publish_via_partition_root = true` on the pipeline's publication when it exists
/// without it. A failure is a warning naming the statement to run: capture works without it
/// for tables that are not partitioned.
pub async fn ensure_partition_root(config: &Config) {
    if !config.is_postgres() {
        return;
    }
    if !super::publish_via_partition_root(config) {
        return;
    }
    let name = super::publication_name(config);
    // An unreachable source is the engine's to report, in its own one line.
    let Ok((client, _)) = super::connect(config, "db-sync capture").await else {
        return;
    };
    let viaroot: Option<bool> = match client
        .query_opt(
            "SELECT pubviaroot FROM pg_publication WHERE pubname = $1",
            &[&name],
        )
        .await
    {
        Ok(row) => row.map(|r| r.get(0)),
        // PostgreSQL before 13 has no such column (and no such option).
        Err(e) => {
            tracing::debug!("cannot read the publication's options: {e}");
            return;
        }
    };
    if viaroot != Some(false) {
        return;
    }
    let sql = format!(
        "ALTER PUBLICATION \"{}\" SET (publish_via_partition_root = true)",
        name.replace('"', "\"\"")
    );
    match client.batch_execute(&sql).await {
        Ok(()) => tracing::info!(publication = %name, "set publish_via_partition_root on the publication: partitioned tables stream under their own name"),
        Err(e) => tracing::warn!(
            "publication {name} publishes partitions under their own names ({e}); a partitioned table's streamed changes are missed until you run `{sql}` on the source"
        ),
    }
}
