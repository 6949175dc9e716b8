//! Audit storage: where the Parquet audit files go, through `object_store`, and what they
//! are.
//!
//! `audit.url` is `file://PATH` (relative to the working directory, or absolute with
//! `file:///`) or `s3://BUCKET[/PREFIX]` with `audit.options` passed to the S3 client
//! (`endpoint`, `region`, `access_key_id`, `secret_access_key`, `allow_http`, ...).
//!
//! A file becomes visible only when complete: writes go through a multipart upload (S3) or a
//! staging file that is renamed into place (local), so readers never see a partial file, and
//! writing the same name again replaces the file whole.
//!
//! The module is the audit stage's home: the store and file names here, [`writer`] (the stage
//! itself: journal windows → Parquet files), [`reader`] (audit files → change rows, for
//! backfill, `query` and tests) and [`rollup`] (merging closed date partitions, retention,
//! which files readers skip after an interrupted roll-up, and the `rollup` command and job on
//! top). Keys: `audit.url`, `audit.options`, `audit.batch_rows` (rows per decoded batch and
//! row group, default 65,536), `audit.target_file_mb` and `audit.retain_days` (roll-up).
//!
//! # Audit files
//!
//! ```text
//! <audit.url>/<schema>.<table>/date=<YYYY-MM-DD>/<first_seq>-<last_seq>.<journal>.parquet
//! ```
//!
//! - **Where.** One folder per source table (`schema.table`, percent-encoded where an object
//!   name needs it), one `date=` folder per UTC date of the source commit times it holds, so
//!   readers that know Hive partitioning can prune by date.
//! - **Name.** The first and last `_cdc_seq` of the rows and the id of the journal that wrote
//!   them ([`file_location`](AuditStore::file_location); no `.<journal>` for a journal from
//!   before identities, see [`crate::state::identity`]). A compaction window writes one file
//!   per table, commit date and schema version ([`crate::compact::plan`]), named from the
//!   journal alone, so a re-run writes the same names. A rolled-up file is named by the range
//!   it covers.
//! - **Rows.** Each row is a change: the table's own columns (the after-image of `c`, `u` and
//!   `r`, the before-image of `d`, nulls for `t`), typed by the
//!   [type map](crate::types#the-type-map), then the `_cdc_` columns ([`crate::types::cdc`]).
//!   Rows are in `_cdc_seq` order. A column the source added appears in later files only:
//!   read the files with `union_by_name`.
//! - **Parquet.** zstd (level 1); `sorting_columns = [_cdc_seq]`; min/max statistics per row
//!   group and per page, and a page index; pages of at most 8,192 rows; a row group per
//!   decoded batch; `_cdc_seq` and `_cdc_ts` in `DELTA_BINARY_PACKED` (Spark reads it with its
//!   vectorized reader from 3.3 on); a dictionary only for a column of few distinct values,
//!   `PLAIN` for the others ([`writer::writer_properties`]).
//! - **Metadata.** Key [`TABLE_SCHEMA_METADATA`] holds the table's Connect schema as the
//!   journal holds it (key and source column types included): enough to rebuild the target
//!   table from the file alone. A rolled-up file also lists the files it replaces
//!   ([`rollup::ROLLUP_OF_METADATA`]).
//!
//! DuckDB, pyarrow and Spark read them as they are, e.g.
//! `read_parquet('data/audit/public.orders/**/*.parquet', union_by_name = true,
//! hive_partitioning = true)`.

pub mod reader;
pub mod rollup;
pub mod writer;

use std::str::FromStr;
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

use crate::config::AuditConfig;
use crate::error::{Classify, ErrorKind};

pub use writer::{audit_once, AuditRunError, Summary};

/// Parquet key-value metadata key holding the table's Connect schema (the journal's schema
/// JSON): enough to rebuild the target table with its exact types from an audit file alone.
pub const TABLE_SCHEMA_METADATA: &str = "db_sync.table_schema";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit.url {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("audit.options.{key}: {message}")]
    Option { key: String, message: String },
    #[error("cannot write audit file {location} at {url}: {}; check audit.url, the bucket and its credentials (audit.options); the journal keeps every event for the next run", describe(.source.as_ref()))]
    Write {
        url: String,
        location: String,
        source: BoxError,
    },
    #[error("cannot reach audit storage {url}: {}; check audit.url, the bucket and its credentials (audit.options); the journal keeps every event for the next run", describe(.source))]
    Unreachable {
        url: String,
        source: object_store::Error,
    },
    #[error("cannot read audit file {location}: {}", describe(.source.as_ref()))]
    Read { location: String, source: BoxError },
}

impl Classify for AuditError {
    fn kind(&self) -> ErrorKind {
        match self {
            AuditError::Url { .. } | AuditError::Option { .. } => ErrorKind::Config,
            AuditError::Write { .. } | AuditError::Unreachable { .. } => ErrorKind::Transient,
            AuditError::Read { .. } => ErrorKind::Permanent,
        }
    }
}

/// The audit store and the prefix under which table folders live.
#[derive(Clone)]
pub struct AuditStore {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: ObjectPath,
    /// `audit.url` as configured (no secrets: credentials live in options).
    pub url: String,
    /// For `file://`: the directory (absolute) that holds the table folders.
    pub local_root: Option<std::path::PathBuf>,
}

/// One published audit file, as its location names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFile {
    /// `schema.table`.
    pub table: String,
    /// `YYYY-MM-DD`: the UTC date of the source commit times it holds.
    pub date: String,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The id of the journal that wrote it ("" for a journal from before identities).
    pub journal: String,
    pub location: ObjectPath,
    pub size: u64,
}

impl AuditFile {
    /// Parses `<table>/date=<date>/<first>-<last>[.<journal>].parquet` (relative to the
    /// prefix); `None` for anything else (staging files, foreign objects).
    fn parse(relative: &[&str], location: ObjectPath, size: u64) -> Option<AuditFile> {
        let [table, date, name] = relative else {
            return None;
        };
        let date = date.strip_prefix("date=")?;
        let stem = name.strip_suffix(".parquet")?;
        let (range, journal) = match stem.split_once('.') {
            Some((range, journal))
                if !journal.is_empty() && journal.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                (range, journal)
            }
            Some(_) => return None,
            None => (stem, ""),
        };
        let (first, last) = range.split_once('-')?;
        // Object names percent-encode what S3 advises against and every non-ASCII byte
        // (object_store's rule): the table is the decoded name.
        let table = percent_encoding::percent_decode_str(table)
            .decode_utf8()
            .ok()?
            .into_owned();
        Some(AuditFile {
            table,
            date: date.to_string(),
            first_seq: first.parse().ok()?,
            last_seq: last.parse().ok()?,
            journal: journal.to_string(),
            location,
            size,
        })
    }
}

impl std::fmt::Debug for AuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditStore")
            .field("url", &self.url)
            .finish()
    }
}

impl AuditStore {
    /// Builds the store for `audit:`; creates a local directory when needed. Does not touch
    /// the network: [`AuditStore::probe`] does.
    pub fn open(config: &AuditConfig) -> Result<AuditStore, AuditError> {
        let url = config.url.clone();
        let bad = |message: &str| AuditError::Url {
            url: url.clone(),
            message: message.to_string(),
        };
        if let Some(path) = url.strip_prefix("file://") {
            if config.options.iter().next().is_some() {
                return Err(bad(
                    "audit.options apply to s3:// only; remove them for file://",
                ));
            }
            if path.is_empty() {
                return Err(bad(
                    "names no directory; write file://data/audit or file:///abs/path",
                ));
            }
            std::fs::create_dir_all(path)
                .map_err(|e| bad(&format!("cannot create {path}: {e}")))?;
            let root = std::fs::canonicalize(path)
                .map_err(|e| bad(&format!("cannot resolve {path}: {e}")))?;
            let store = LocalFileSystem::new_with_prefix(&root)
                .map_err(|e| bad(&e.to_string()))?
                .with_automatic_cleanup(true);
            return Ok(AuditStore {
                store: Arc::new(store),
                prefix: ObjectPath::default(),
                url,
                local_root: Some(root),
            });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("names no bucket; write s3://BUCKET/PREFIX"));
            }
            let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
            for (key, value) in config.options.iter() {
                let k = AmazonS3ConfigKey::from_str(key).map_err(|_| AuditError::Option {
                    key: key.clone(),
                    message: "is not an S3 option; use endpoint, region, access_key_id, secret_access_key, session_token or allow_http".into(),
                })?;
                builder = builder.with_config(k, value.as_string());
            }
            let store = builder.build().map_err(|e| bad(&e.to_string()))?;
            return Ok(AuditStore {
                store: Arc::new(store),
                prefix: ObjectPath::from(prefix.trim_matches('/')),
                url,
                local_root: None,
            });
        }
        Err(bad("use file://PATH or s3://BUCKET/PREFIX"))
    }

    /// The location of an audit file:
    /// `<prefix>/<table>/date=<date>/<first>-<last>.<journal>.parquet` (no `.<journal>` for a
    /// journal from before identities). The journal's id keeps two journals' files apart.
    pub fn file_location(
        &self,
        table: &str,
        date: &str,
        (first_seq, last_seq): (u64, u64),
        journal: &str,
    ) -> ObjectPath {
        let name = if journal.is_empty() {
            format!("{first_seq}-{last_seq}.parquet")
        } else {
            format!("{first_seq}-{last_seq}.{journal}.parquet")
        };
        let parts = [table.to_string(), format!("date={date}"), name];
        parts
            .iter()
            .fold(self.prefix.clone(), |path, part| path.join(part.as_str()))
    }

    /// The published audit files of `table` (of every table with `None`), ordered by table
    /// and first sequence.
    pub async fn list_files(&self, table: Option<&str>) -> Result<Vec<AuditFile>, AuditError> {
        use futures::TryStreamExt;
        let under = match table {
            Some(t) => self.prefix.clone().join(t),
            None => self.prefix.clone(),
        };
        let skip = self.prefix.parts().count();
        let objects: Vec<_> =
            self.store
                .list(Some(&under))
                .try_collect()
                .await
                .map_err(|source| AuditError::Unreachable {
                    url: self.url.clone(),
                    source,
                })?;
        let mut files: Vec<AuditFile> = objects
            .into_iter()
            .filter_map(|meta| {
                let parts: Vec<_> = meta.location.parts().skip(skip).collect();
                let parts: Vec<&str> = parts.iter().map(|p| p.as_ref()).collect();
                AuditFile::parse(&parts, meta.location.clone(), meta.size)
            })
            .filter(|f| table.is_none_or(|t| f.table == t))
            .collect();
        files.sort_by(|a, b| (&a.table, a.first_seq).cmp(&(&b.table, b.first_seq)));
        Ok(files)
    }

    /// Makes a published `file://` file durable: fsyncs it and the directories on its path
    /// (object_store's local store renames a finished file into place but syncs nothing), so
    /// that a power loss after the progress file counts it cannot lose it. A no-op for `s3://`,
    /// where a completed upload is durable.
    pub fn sync_local(&self, location: &ObjectPath) -> Result<(), AuditError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let fail = |e: std::io::Error| AuditError::Write {
            url: self.url.clone(),
            location: location.to_string(),
            source: Box::new(e),
        };
        let mut path = root.clone();
        let mut dirs = vec![root.clone()];
        let parts: Vec<_> = location.parts().collect();
        for (i, part) in parts.iter().enumerate() {
            path.push(part.as_ref());
            if i + 1 < parts.len() {
                dirs.push(path.clone());
            }
        }
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(fail)?;
        for dir in dirs.iter().rev() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(fail)?;
        }
        Ok(())
    }

    /// Checks that the store answers and the bucket exists, before any work is done.
    pub async fn probe(&self) -> Result<(), AuditError> {
        use futures::StreamExt;
        let mut listing = self.store.list(Some(&self.prefix));
        match listing.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(source)) => Err(AuditError::Unreachable {
                url: self.url.clone(),
                source,
            }),
        }
    }
}

/// A storage error as one line, with its causes and without S3's XML noise.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    tidy_s3_body(&crate::error::one_line(e))
}

/// S3 errors carry the server's XML body; keep its code and message, drop request ids.
fn tidy_s3_body(s: &str) -> String {
    let between = |open: &str, close: &str| {
        let start = s.find(open)? + open.len();
        let end = s[start..].find(close)? + start;
        Some(&s[start..end])
    };
    match (s.find("<?xml"), between("<Code>", "</Code>")) {
        (Some(xml), Some(code)) => {
            let message = between("<Message>", "</Message>").unwrap_or("");
            format!("{}{code}: {message}", &s[..xml])
        }
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Props, SourceValue};

    fn cfg(url: &str, options: &[(&str, &str)]) -> AuditConfig {
        AuditConfig {
            url: url.to_string(),
            options: Props(
                options
                    .iter()
                    .map(|(k, v)| (k.to_string(), SourceValue::Str(v.to_string())))
                    .collect(),
            ),
            ..AuditConfig::default()
        }
    }

    #[test]
    fn file_locations_follow_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            AuditStore::open(&cfg(&format!("file://{}", dir.path().display()), &[])).unwrap();
        assert_eq!(
            store
                .file_location("public.orders", "2026-11-24", (7, 42), "")
                .as_ref(),
            "public.orders/date=2026-11-24/7-42.parquet"
        );
        assert_eq!(
            store
                .file_location("public.orders", "2026-11-24", (7, 42), "0a1b2c")
                .as_ref(),
            "public.orders/date=2026-11-24/7-42.0a1b2c.parquet"
        );
        let s3 = AuditStore::open(&cfg("s3://b/some/prefix/", &[("region", "us-east-1")])).unwrap();
        assert_eq!(
            s3.file_location("a.b", "2026-01-01", (1, 2), "").as_ref(),
            "some/prefix/a.b/date=2026-01-01/1-2.parquet"
        );
    }

    #[test]
    fn audit_file_names_parse_and_others_do_not() {
        let loc = ObjectPath::from("x");
        let f = AuditFile::parse(
            &["public.orders", "date=2026-11-24", "7-42.parquet"],
            loc.clone(),
            9,
        )
        .unwrap();
        assert_eq!(
            (f.table.as_str(), f.date.as_str(), f.first_seq, f.last_seq),
            ("public.orders", "2026-11-24", 7, 42)
        );
        let g = AuditFile::parse(
            &["public.orders", "date=2026-11-24", "7-42.0a1b2c.parquet"],
            loc.clone(),
            9,
        )
        .unwrap();
        assert_eq!((g.first_seq, g.journal.as_str()), (7, "0a1b2c"));
        // A unicode table name is percent-encoded in the object name, decoded in the listing.
        let store = AuditStore::open(&cfg("file:///tmp/x", &[])).unwrap();
        let at = store.file_location("public.ñandú", "2026-11-24", (7, 42), "");
        assert!(
            at.as_ref()
                .ends_with("public.%C3%B1and%C3%BA/date=2026-11-24/7-42.parquet"),
            "{at}"
        );
        let all: Vec<_> = at.parts().collect();
        let parts = &all[all.len() - 3..];
        let parts: Vec<&str> = parts.iter().map(|p| p.as_ref()).collect();
        let h = AuditFile::parse(&parts, at.clone(), 9).unwrap();
        assert_eq!(h.table, "public.ñandú");
        for bad in [
            &["public.orders", "date=2026-11-24", "7-42.parquet.tmp"][..],
            &["public.orders", "2026-11-24", "7-42.parquet"],
            &["public.orders", "date=2026-11-24", "x-42.parquet"],
            &["public.orders", "date=2026-11-24", "7-42.parquet#1"],
            &["public.orders", "date=2026-11-24", "7-42.tmp.parquet"],
            &["public.orders", "7-42.parquet"],
        ] {
            assert!(AuditFile::parse(bad, loc.clone(), 0).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn s3_error_bodies_shrink_to_code_and_message() {
        let raw = "Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?> <Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><RequestId>X1</RequestId></Error>";
        assert_eq!(
            tidy_s3_body(raw),
            "Server returned non-2xx status code: 404 Not Found: NoSuchBucket: The specified bucket does not exist"
        );
        assert_eq!(tidy_s3_body("plain"), "plain");
    }

    #[test]
    fn bad_urls_and_options_are_named() {
        let e = AuditStore::open(&cfg("ftp://x", &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("audit.url") && e.contains("s3://BUCKET"), "{e}");
        let e = AuditStore::open(&cfg("s3://", &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("names no bucket"), "{e}");
        let e = AuditStore::open(&cfg("s3://b", &[("colour", "red")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("audit.options.colour"), "{e}");
    }
}
