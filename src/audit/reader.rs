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

/// An audit file being read, batch by batch ([`AuditStore::open_rows`]).
pub struct FileReader {
    /// The table schema as the journal held it (JSON).
    pub schema_json: String,
    location: String,
    reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    /// A downloaded copy, removed on drop.
    temporary: Option<std::path::PathBuf>,
}

impl Iterator for FileReader {
    type Item = Result<RecordBatch, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        let location = &self.location;
        self.reader
            .next()
            .map(|b| b.map_err(|e| read_error(location, e)))
    }
}

impl Drop for FileReader {
    fn drop(&mut self) {
        if let Some(p) = &self.temporary {
            let _ = std::fs::remove_file(p);
        }
    }
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

    /// Opens an audit file to read its rows batch by batch, each about `batch_bytes` (sized
    /// from the file's own row sizes), so a file of any size and rows of any size read in
    /// bounded memory. `file://` files are read in place; an `s3://` file is copied into
    /// `scratch` first (and removed when the reader is dropped). A file without its table
    /// schema is an error that says how to get one.
    pub async fn open_rows(
        &self,
        file: &AuditFile,
        batch_bytes: usize,
        scratch: &Path,
    ) -> Result<FileReader, AuditError> {
        let location = self.describe_location(file);
        let (path, temporary) = match &self.local_root {
            Some(root) => {
                let mut p = root.clone();
                for part in file.location.parts().skip(self.prefix.parts().count()) {
                    p.push(part.as_ref());
                }
                (p, false)
            }
            None => {
                let name = file.location.filename().unwrap_or("audit.parquet");
                let p = scratch.join(format!("{}-{name}", std::process::id()));
                self.download(file, &p).await?;
                (p, true)
            }
        };
        let f = std::fs::File::open(&path).map_err(|e| read_error(&location, e))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| read_error(&location, e))?;
        let schema_json = schema_json(builder.metadata()).ok_or_else(|| {
            read_error(
                &location,
                std::io::Error::other(format!(
                    "it has no `{TABLE_SCHEMA_METADATA}` metadata (written by an older db-sync?); compact the journal again or use --resnapshot"
                )),
            )
        })?;
        let meta = builder.metadata();
        let rows: i64 = meta.row_groups().iter().map(|g| g.num_rows()).sum();
        let bytes: i64 = meta.row_groups().iter().map(|g| g.total_byte_size()).sum();
        let per_row = (bytes / rows.max(1)).max(1) as usize;
        let batch_rows = (batch_bytes / per_row).clamp(1, 8192);
        let reader = builder
            .with_batch_size(batch_rows)
            .build()
            .map_err(|e| read_error(&location, e))?;
        Ok(FileReader {
            schema_json,
            location,
            reader,
            temporary: temporary.then_some(path),
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
