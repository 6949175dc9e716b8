//! Reading audit files in place through the object store, for roll-up: the footer alone for
//! grouping, the row groups one by one for merging (no copy of the file is made).

use std::ops::Range;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use super::ROLLUP_OF_METADATA;
use crate::audit::{AuditError, AuditFile, AuditStore, TABLE_SCHEMA_METADATA};

/// What a file's footer says, for grouping.
pub struct Footer {
    pub schema_json: Option<String>,
    pub arrow: SchemaRef,
    pub rows: u64,
    pub rollup_of: Vec<String>,
}

pub async fn footer(store: &AuditStore, f: &AuditFile) -> Result<Footer, AuditError> {
    let builder = open(store, f).await?;
    let meta = builder.metadata();
    let kv = |key: &str| {
        meta.file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|kv| kv.key == key))
            .and_then(|kv| kv.value.clone())
    };
    let rollup_of = kv(ROLLUP_OF_METADATA)
        .and_then(|v| serde_json::from_str::<Vec<String>>(&v).ok())
        .unwrap_or_default();
    Ok(Footer {
        schema_json: kv(TABLE_SCHEMA_METADATA),
        arrow: builder.schema().clone(),
        rows: meta.file_metadata().num_rows().max(0) as u64,
        rollup_of,
    })
}

/// An audit file read in place through the object store with ranged reads.
pub struct StoreReader {
    store: Arc<dyn object_store::ObjectStore>,
    location: ObjectPath,
    size: u64,
}

fn parquet_err(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl AsyncFileReader for StoreReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.location, range)
                .await
                .map_err(parquet_err)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.location, &ranges)
                .await
                .map_err(parquet_err)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

pub async fn open(
    store: &AuditStore,
    f: &AuditFile,
) -> Result<ParquetRecordBatchStreamBuilder<StoreReader>, AuditError> {
    let reader = StoreReader {
        store: store.store.clone(),
        location: f.location.clone(),
        size: f.size,
    };
    ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| AuditError::Read {
            location: store.describe_location(f),
            source: Box::new(e),
        })
}

/// Rows per batch when reading a file of `rows` rows through `builder`: about `batch_bytes`
/// each, by the file's own average row size.
pub fn batch_rows(
    builder: &ParquetRecordBatchStreamBuilder<StoreReader>,
    rows: u64,
    batch_bytes: usize,
) -> usize {
    let total: i64 = builder
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.total_byte_size())
        .sum();
    let per_row = (total / (rows.max(1) as i64)).max(1) as usize;
    (batch_bytes / per_row).clamp(1, 8192)
}

pub fn file_name(f: &AuditFile) -> &str {
    f.location.filename().unwrap_or("")
}
