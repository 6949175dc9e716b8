//! Audit files read back: the table schema each carries in its metadata
//! ([`super::TABLE_SCHEMA_METADATA`]) and its change rows. Backfill, `query` and the tests read
//! audit files through here.

use std::path::Path;

use arrow::record_batch::RecordBatch;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::ParquetMetaData;

use super::{AuditError, AuditFile, AuditStore, TABLE_SCHEMA_METADATA};
use crate::types::TableSchema;

/// One audit file's content.
pub struct FileRows {
    /// The table schema as the journal held it (JSON).
    pub schema_json: String,
    pub batches: Vec<RecordBatch>,
}

/// The table schema JSON an audit file's metadata holds, if any.
pub fn schema_json(metadata: &ParquetMetaData) -> Option<String> {
    metadata
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|kv| kv.key == TABLE_SCHEMA_METADATA))
        .and_then(|kv| kv.value.clone())
}

fn read_error(location: &str, e: impl std::error::Error + Send + Sync + 'static) -> AuditError {
    AuditError::Read {
        location: location.to_string(),
        source: Box::new(e),
    }
}

/// The table schema of a local audit file (its footer only); `None` for a file without one
/// (written by a db-sync older than the metadata).
pub fn local_table_schema(path: &Path) -> Result<Option<TableSchema>, AuditError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let location = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| read_error(&location, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| read_error(&location, e))?;
    let Some(json) = schema_json(reader.metadata()) else {
        return Ok(None);
    };
    TableSchema::from_json(json.as_bytes())
        .map(Some)
        .map_err(|e| read_error(&location, e))
}

impl AuditStore {
    /// The full URL of a file, for messages.
    pub fn describe_location(&self, file: &AuditFile) -> String {
        format!("{}/{}", self.url.trim_end_matches('/'), file.location)
    }

    async fn bytes(&self, file: &AuditFile) -> Result<bytes::Bytes, AuditError> {
        let location = self.describe_location(file);
        self.store
            .get(&file.location)
            .await
            .map_err(|e| read_error(&location, e))?
            .bytes()
            .await
            .map_err(|e| read_error(&location, e))
    }

    /// Reads a whole audit file (one request), its rows in batches of `batch_rows`. A file
    /// without its table schema is an error that says how to get one.
    pub async fn read(&self, file: &AuditFile, batch_rows: usize) -> Result<FileRows, AuditError> {
        let location = self.describe_location(file);
        let bytes = self.bytes(file).await?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| read_error(&location, e))?;
        let schema_json = schema_json(builder.metadata()).ok_or_else(|| {
            read_error(
                &location,
                std::io::Error::other(format!(
                    "it has no `{TABLE_SCHEMA_METADATA}` metadata (written by an older db-sync?); compact the journal again or use --resnapshot"
                )),
            )
        })?;
        let batches = builder
            .with_batch_size(batch_rows)
            .build()
            .map_err(|e| read_error(&location, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| read_error(&location, e))?;
        Ok(FileRows {
            schema_json,
            batches,
        })
    }

    /// Copies an audit file to the local path `to` (creating its directory).
    pub async fn download(&self, file: &AuditFile, to: &Path) -> Result<(), AuditError> {
        let bytes = self.bytes(file).await?;
        let location = self.describe_location(file);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| read_error(&location, e))?;
        }
        std::fs::write(to, &bytes).map_err(|e| read_error(&location, e))
    }
}
