//! The source's identity: which cluster, database and slot a journal is captured from.
//!
//! Capture records it with the journal's first capture and refuses another source later
//! (see [`crate::state::identity`]): a restored or replaced server's WAL positions mean
//! something else, and de-duplication by position would drop its changes.

use super::{connect, slot_name, SourceError};
use crate::config::Config;
use crate::state::identity::SourceIdentity;

/// The source's identity now. The system identifier is `None` when the user may not read
/// `pg_control_system()` (superusers and `pg_monitor` may): the database and slot still count.
pub async fn read(config: &Config, application: &str) -> Result<SourceIdentity, SourceError> {
    let (client, described) = connect(config, application).await?;
    let database: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .map_err(SourceError::query(format!(
            "cannot read the database name on {described}"
        )))?
        .get(0);
    let system_identifier = client
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .await
        .ok()
        .map(|r| r.get::<_, String>(0));
    Ok(SourceIdentity {
        system_identifier,
        database,
        slot: slot_name(config),
    })
}
