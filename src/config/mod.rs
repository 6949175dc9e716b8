//! Configuration: what users write in `config/config.yaml` (or the file `--config` names).
//!
//! Loading is three steps, each with errors that name the key path:
//! 1. `.env` beside the working directory is loaded into the environment (never overriding
//!    variables already set);
//! 2. the YAML is parsed, then `${VAR}` / `${VAR:-default}` are substituted into its string
//!    values: a value from the environment is always the exact string it holds (a password
//!    with ` #` or `: `, a `0012`), never YAML to be parsed again;
//! 3. the values are deserialized into plain structs that deny unknown keys (numbers and
//!    booleans may be given as strings, so `${PORT}` works for them), then
//!    [`Config::validate`] checks values.
//!
//! Secrets (passwords, keys) are wrapped in [`Secret`], whose `Debug` and `Display` print `***`;
//! secret-bearing properties of `source:` and `audit.options` print as `***` wherever they are
//! shown ([`Props::redacted`]).
//!
//! # Keys
//!
//! Every key, its default, and the module that reads it (whose header says more):
//!
//! | key | default | read by |
//! |---|---|---|
//! | `name` | required | source names ([`crate::source`]), engine name, checkpoint keys |
//! | `source.*` | `connector.class` required | the engine ([`crate::capture`]), [`crate::source`] |
//! | `engine.lib_dir` | `debezium/lib` | [`crate::capture`], [`crate::check`] |
//! | `engine.jvm_options` | `[-Xmx1g]` | [`crate::capture`] |
//! | `journal.dir` | `data/journal` | the state directory: [`crate::state`], [`crate::journal`] |
//! | `journal.segment_max_bytes` | 67108864 | [`crate::journal`] |
//! | `journal.retain_hours` | 24 | journal GC in [`crate::cycle`] |
//! | `audit.url`, `audit.options` | `file://data/audit`, none | [`crate::audit`] |
//! | `audit.batch_rows` | 65536 | [`crate::audit::writer`] |
//! | `audit.target_file_mb`, `audit.retain_days` | 256, null: keep all | [`crate::audit::rollup`] |
//! | `target.*` | no target: audit only | [`crate::apply`], which lists its keys |
//! | `query.cache_dir`, `query.cache_mb` | `data/query-cache`, 1024 | [`crate::query`] |
//! | `source_guard.max_retained_wal_mb` | 10240 | [`crate::guard`], `status`, `/healthz` |
//! | `source_guard.on_slot_lost` | `resync` | [`crate::capture`] (a lost slot: resync or stop) |
//! | `snapshot.loader` | `native` | [`crate::loader`] (`debezium`: Debezium's own snapshot) |
//! | `snapshot.connections` | 2 | [`crate::loader`] (source connections reading ranges) |
//! | `snapshot.range_pages` | 2048 | [`crate::loader`] (heap pages per range: 16 MiB) |
//! | `metrics.listen` | `127.0.0.1:9464` (empty: off) | [`crate::metrics`] |
//! | `memory_limit_mb` | 512 | [`Budget`]: decode, apply, backfill, the engine's queue |
//! | `jobs_dir` | `jobs` | [`crate::schedule`] |

mod flex;
mod interpolate;
mod ops;
mod secret;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use interpolate::{interpolate, InterpolateError};
pub use ops::{Loader, MetricsConfig, SlotLost, SnapshotConfig, SourceGuardConfig};
pub use secret::{is_secret_key, Secret};

/// A configuration problem: always a bad input, never a runtime failure (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}; pass --config PATH or create it from config/config.yaml")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: `{key}` {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl crate::error::Classify for ConfigError {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::Config
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Pipeline name: Debezium's engine name (its offsets are kept under it), the checkpoint
    /// key, the default slot, publication and signalling table names.
    pub name: String,
    /// Debezium connector properties, passed through verbatim (values are stringified).
    pub source: Props,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub journal: JournalConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub target: Option<TargetConfig>,
    #[serde(default = "default_jobs_dir")]
    pub jobs_dir: PathBuf,
    #[serde(default)]
    pub query: QueryConfig,
    #[serde(default)]
    pub source_guard: SourceGuardConfig,
    #[serde(default)]
    pub snapshot: SnapshotConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The memory db-sync's own work stays within, whatever the row size: decode batches,
    /// apply windows and chunks, backfill reads (see [`Config::budget`]). The JVM's heap is
    /// `engine.jvm_options`' to set.
    #[serde(default = "default_memory_limit_mb", deserialize_with = "flex::parse")]
    pub memory_limit_mb: u64,
    /// The file this was loaded from, for error messages.
    #[serde(skip)]
    pub path: PathBuf,
}

/// `memory_limit_mb` shared out among the work that holds rows in memory. Each stage holds
/// at most a few units of its share at once (a batch being filled and one being written; a
/// window being applied and the next being merged), which keeps the sum within the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes of journal events one decoded batch holds (also keeps Arrow's 2 GiB offsets far).
    pub batch_bytes: usize,
    /// Bytes of journal events one apply window (or backfill window) spans.
    pub window_bytes: usize,
    /// Bytes of rendered rows one chunk (one transaction, one LOAD DATA stream) holds.
    pub chunk_bytes: usize,
}

impl Budget {
    pub fn of(limit_mb: u64) -> Budget {
        let limit = usize::try_from(limit_mb.max(64) << 20).unwrap_or(usize::MAX);
        Budget {
            batch_bytes: (limit / 16).min(64 << 20),
            window_bytes: limit / 8,
            // Under the 16 MiB max_allowed_packet of MariaDB's default, whatever the limit.
            chunk_bytes: (limit / 32).min(8 << 20),
        }
    }
}

/// A map of string properties (`source:`, `audit.options`). `Debug` redacts secret-bearing keys.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Props(pub BTreeMap<String, SourceValue>);

impl Props {
    pub fn get(&self, key: &str) -> Option<&SourceValue> {
        self.0.get(key)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &SourceValue)> {
        self.0.iter()
    }

    /// Every property as a string, secret-bearing ones as `***`.
    pub fn redacted(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_key(k) {
                    "***".to_string()
                } else {
                    v.as_string()
                };
                (k.clone(), shown)
            })
            .collect()
    }
}

impl std::fmt::Debug for Props {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.redacted()).finish()
    }
}

/// A scalar YAML value under `source:`; Debezium takes every property as a string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SourceValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl SourceValue {
    pub fn as_string(&self) -> String {
        match self {
            SourceValue::Bool(b) => b.to_string(),
            SourceValue::Int(i) => i.to_string(),
            SourceValue::Float(f) => f.to_string(),
            SourceValue::Str(s) => s.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Directory holding the Debezium jars and `db-sync-bridge.jar`.
    #[serde(default = "default_lib_dir")]
    pub lib_dir: PathBuf,
    #[serde(default = "default_jvm_options")]
    pub jvm_options: Vec<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lib_dir: default_lib_dir(),
            jvm_options: default_jvm_options(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    #[serde(default = "default_journal_dir")]
    pub dir: PathBuf,
    #[serde(
        default = "default_segment_max_bytes",
        deserialize_with = "flex::parse"
    )]
    pub segment_max_bytes: u64,
    /// Hours a sealed segment is kept after it was last written, even once it is audited (and
    /// applied): journal GC in each compaction cycle.
    #[serde(default = "default_retain_hours", deserialize_with = "flex::parse")]
    pub retain_hours: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            dir: default_journal_dir(),
            segment_max_bytes: default_segment_max_bytes(),
            retain_hours: default_retain_hours(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    #[serde(default = "default_audit_url")]
    pub url: String,
    /// object_store options (endpoint, region, access keys, allow_http). Secret-bearing keys
    /// are redacted wherever options are shown.
    #[serde(default)]
    pub options: Props,
    /// Rows per Parquet row group and per decoded batch: bounds compaction's memory.
    #[serde(default = "default_audit_batch_rows", deserialize_with = "flex::parse")]
    pub batch_rows: usize,
    /// Roll-up (`db-sync rollup`, job kind `rollup`): merged files stay under about this size.
    #[serde(default = "default_target_file_mb", deserialize_with = "flex::parse")]
    pub target_file_mb: u64,
    /// Roll-up folds date partitions older than this many days into each table's base (the
    /// changes its state reads; [`crate::retention`]); `None` keeps everything.
    #[serde(default, deserialize_with = "flex::parse_opt")]
    pub retain_days: Option<u64>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            url: default_audit_url(),
            options: Props::default(),
            batch_rows: default_audit_batch_rows(),
            target_file_mb: default_target_file_mb(),
            retain_days: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub url: Secret,
    #[serde(default = "default_batch_rows", deserialize_with = "flex::parse")]
    pub batch_rows: usize,
    #[serde(default = "default_true", deserialize_with = "flex::parse")]
    pub create_tables: bool,
    /// The target table of a source table: `{schema}` and `{table}` are replaced.
    #[serde(default = "default_table_name")]
    pub table_name: String,
    /// Write upserts with `LOAD DATA LOCAL INFILE` where that is safe (falls back to
    /// multi-row INSERT, saying so once, when the server refuses it).
    #[serde(default = "default_true", deserialize_with = "flex::parse")]
    pub load_data: bool,
    /// What a source TRUNCATE does to the target table.
    #[serde(default)]
    pub truncate: TruncateMode,
    /// What happens to a row the target cannot hold.
    #[serde(default)]
    pub on_reject: OnReject,
    /// What a column dropped at the source does to the target's.
    #[serde(default)]
    pub dropped_columns: DroppedColumns,
    /// Connections that apply the chunks of a window in parallel (disjoint keys, each chunk
    /// still one transaction with its checkpoint row).
    #[serde(default = "default_connections", deserialize_with = "flex::parse")]
    pub connections: usize,
}

/// `target.dropped_columns`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DroppedColumns {
    /// The target keeps the column; rows written from then on hold NULL in it.
    #[default]
    Keep,
    /// The target drops it too, once a window has only schema versions without it.
    Drop,
}

/// `target.truncate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TruncateMode {
    /// Empty the target table in order (changes after the truncate stay).
    #[default]
    Apply,
    /// Leave the target table as it is (the truncate is still audited).
    Ignore,
}

impl TruncateMode {
    pub fn applies(self) -> bool {
        self == TruncateMode::Apply
    }
}

/// `target.on_reject`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnReject {
    /// Stop applying the row's table, with one line naming the table, column and key; the
    /// other tables go on, and a backfill of the table ends the hold
    /// ([`crate::state::Hold`]).
    #[default]
    Stop,
    /// Put the row in `_db_sync_rejected` and go on; a later change of the key replaces it.
    Quarantine,
}

fn default_table_name() -> String {
    "{table}".to_string()
}

/// The target table name of source table `schema.table` under `template`
/// (`target.table_name`: `{schema}` and `{table}` replaced).
pub fn target_table_name(template: &str, source: &str) -> String {
    let (schema, table) = source.split_once('.').unwrap_or(("", source));
    template
        .replace("{schema}", schema)
        .replace("{table}", table)
}

/// Included source tables that `template` maps to one target table, as `(target, first,
/// second)`, in name order: the second would overwrite the first's rows.
pub fn target_name_clashes<'a>(
    template: &str,
    tables: impl IntoIterator<Item = &'a str>,
) -> Vec<(String, &'a str, &'a str)> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    let mut clashes = Vec::new();
    for table in tables {
        let name = target_table_name(template, table);
        match seen.get(&name) {
            Some(first) => clashes.push((name, *first, table)),
            None => {
                seen.insert(name, table);
            }
        }
    }
    clashes
}

fn default_lib_dir() -> PathBuf {
    PathBuf::from("debezium/lib")
}
fn default_jvm_options() -> Vec<String> {
    vec!["-Xmx1g".to_string()]
}
fn default_journal_dir() -> PathBuf {
    PathBuf::from("data/journal")
}
fn default_segment_max_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_retain_hours() -> u64 {
    24
}
fn default_audit_url() -> String {
    "file://data/audit".to_string()
}
fn default_audit_batch_rows() -> usize {
    65536
}
fn default_connections() -> usize {
    2
}
fn default_target_file_mb() -> u64 {
    256
}
fn default_batch_rows() -> usize {
    20_000
}
fn default_true() -> bool {
    true
}
fn default_memory_limit_mb() -> u64 {
    512
}
fn default_jobs_dir() -> PathBuf {
    PathBuf::from("jobs")
}

/// `query:`: the local cache of `s3://` audit files that `db-sync query` reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// The cache holds at most this many MB after a query (least recently used files go).
    #[serde(default = "default_cache_mb", deserialize_with = "flex::parse")]
    pub cache_mb: u64,
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            cache_mb: default_cache_mb(),
            cache_dir: default_cache_dir(),
        }
    }
}

fn default_cache_mb() -> u64 {
    1024
}
fn default_cache_dir() -> PathBuf {
    PathBuf::from("data/query-cache")
}

impl Config {
    /// Loads `.env`, reads and interpolates `path`, parses and validates it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        // A missing .env is the normal case; a malformed one is worth saying.
        if let Err(e) = dotenvy::dotenv() {
            if !e.not_found() {
                return Err(ConfigError::Parse {
                    path: PathBuf::from(".env"),
                    message: format!("{e}; fix or remove .env"),
                });
            }
        }
        let raw = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &raw, &|name| std::env::var(name).ok())
    }

    /// Parses configuration text; `env` resolves `${VAR}` (tests pass their own).
    pub fn parse(
        path: &Path,
        raw: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config: Config = deserialize_tracked(raw, env).map_err(|(key, message)| {
            if key.is_empty() || key == "." {
                ConfigError::Parse {
                    path: path.to_path_buf(),
                    message,
                }
            } else {
                ConfigError::Invalid {
                    path: path.to_path_buf(),
                    key,
                    message,
                }
            }
        })?;
        config.path = path.to_path_buf();
        config.validate()?;
        Ok(config)
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Checks values that parse but cannot work, naming the key path of each.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_source()?;
        self.validate_sizes()?;
        if let Some(target) = &self.target {
            self.validate_target(target)?;
        }
        Ok(())
    }

    /// The pipeline's name and `source:`.
    fn validate_source(&self) -> Result<(), ConfigError> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(self.invalid(
                "name",
                "must be non-empty and use only letters, digits, '_' and '-' (it names the replication slot, the publication, the signalling table and the engine)",
            ));
        }
        if !self.source.contains_key("connector.class") {
            return Err(self.invalid(
                "source.connector.class",
                "is required, e.g. io.debezium.connector.postgresql.PostgresConnector",
            ));
        }
        for (key, value) in self.source.iter() {
            if let SourceValue::Str(s) = value {
                if s.contains('\n') {
                    return Err(self.invalid(
                        &format!("source.{key}"),
                        "must be a single line; Debezium properties are scalars",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The sizes, URLs and addresses outside `source:` and `target:`.
    fn validate_sizes(&self) -> Result<(), ConfigError> {
        if self.journal.segment_max_bytes < 4096 {
            return Err(self.invalid(
                "journal.segment_max_bytes",
                format!(
                    "is {}; use at least 4096 (default 67108864)",
                    self.journal.segment_max_bytes
                ),
            ));
        }
        if !(self.audit.url.starts_with("file://") || self.audit.url.starts_with("s3://")) {
            return Err(self.invalid(
                "audit.url",
                format!(
                    "is {:?}; use file://PATH or s3://BUCKET/PREFIX",
                    self.audit.url
                ),
            ));
        }
        if self.memory_limit_mb < 64 {
            return Err(self.invalid(
                "memory_limit_mb",
                format!("is {}; use at least 64 (default 512)", self.memory_limit_mb),
            ));
        }
        if self.audit.batch_rows == 0 {
            return Err(self.invalid("audit.batch_rows", "must be at least 1 (default 65536)"));
        }
        if self.query.cache_mb == 0 {
            return Err(self.invalid("query.cache_mb", "must be at least 1 (default 1024)"));
        }
        if self.audit.target_file_mb == 0 {
            return Err(self.invalid("audit.target_file_mb", "must be at least 1 (default 256)"));
        }
        if self.audit.retain_days == Some(0) {
            return Err(self.invalid(
                "audit.retain_days",
                "must be at least 1 (the current date is always kept), or null to keep every date",
            ));
        }
        if !self.metrics.listen.is_empty()
            && self.metrics.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(self.invalid(
                "metrics.listen",
                format!(
                    "is {:?}; use HOST:PORT with an IP address, e.g. 127.0.0.1:9464, or \"\" to turn metrics off",
                    self.metrics.listen
                ),
            ));
        }
        Ok(())
    }

    /// `target:`.
    fn validate_target(&self, target: &TargetConfig) -> Result<(), ConfigError> {
        if !target.url.expose().starts_with("mysql://") {
            return Err(self.invalid("target.url", "must be mysql://USER:PASSWORD@HOST:PORT/DB"));
        }
        if target.connections == 0 {
            return Err(self.invalid("target.connections", "must be at least 1 (default 2)"));
        }
        if target.batch_rows == 0 {
            return Err(self.invalid("target.batch_rows", "must be at least 1"));
        }
        let rest = target
            .table_name
            .replace("{schema}", "")
            .replace("{table}", "");
        if !target.table_name.contains("{table}") || rest.contains('{') || rest.contains('}') {
            return Err(self.invalid(
                "target.table_name",
                "must contain {table} and no placeholder but {schema} and {table} (default \"{table}\")",
            ));
        }
        Ok(())
    }

    /// How `memory_limit_mb` is shared out.
    pub fn budget(&self) -> Budget {
        Budget::of(self.memory_limit_mb)
    }

    /// The Debezium connector class, e.g. `io.debezium.connector.postgresql.PostgresConnector`.
    pub fn connector_class(&self) -> String {
        self.source
            .get("connector.class")
            .map(SourceValue::as_string)
            .unwrap_or_default()
    }

    pub fn is_postgres(&self) -> bool {
        self.connector_class().contains("postgresql")
    }

    /// A `source:` property as a string, if set.
    pub fn source_prop(&self, key: &str) -> Option<String> {
        self.source.get(key).map(SourceValue::as_string)
    }

    /// `source:` for display: secret-bearing properties print `***`.
    pub fn redacted_source(&self) -> BTreeMap<String, String> {
        self.source.redacted()
    }
}

/// Parses YAML into `T`, substituting `${VAR}` into its string values with `env`; on failure,
/// the dotted path of the offending key (empty for the document) and a message.
pub(crate) fn deserialize_tracked<T: serde::de::DeserializeOwned>(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<T, (String, String)> {
    let mut value: serde_json::Value = if text.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_saphyr::from_str(text).map_err(|e| {
            (
                String::new(),
                format!("not valid YAML: {}", e.to_string().replace('\n', " ")),
            )
        })?
    };
    interpolate_values(&mut value, env, &mut Vec::new())?;
    serde_path_to_error::deserialize(value)
        .map_err(|e| (e.path().to_string(), e.inner().to_string()))
}

/// Substitutes `${VAR}` into every string value (not into keys), naming the key of a value
/// that cannot be resolved.
fn interpolate_values(
    value: &mut serde_json::Value,
    env: &dyn Fn(&str) -> Option<String>,
    path: &mut Vec<String>,
) -> Result<(), (String, String)> {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('$') => {
            *s = interpolate(s, env).map_err(|e| (path.join("."), e.0))?;
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                interpolate_values(item, env, path)?;
                path.pop();
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                path.push(k.clone());
                interpolate_values(v, env, path)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests;
