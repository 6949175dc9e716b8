//! Capture: Debezium's embedded engine, in this process, feeding the journal.
//!
//! [`run`] starts the JVM (once per process), builds the engine from `source:` over the
//! defaults of [`engine_properties`], and runs it on a thread of its own. The Java bridge hands
//! each engine batch to [`append_batch`] in one JNI call; that call appends the batch to the
//! journal with one fsync and only then returns, after which the bridge acknowledges the
//! records. So:
//!
//! - **Durable:** every event Debezium may commit an offset for is fsynced in the journal.
//! - **Crash:** a crash anywhere loses nothing acknowledged; Debezium re-delivers the rest from
//!   its last committed offset and the journal drops what it already holds (by position).
//! - **Stop:** on shutdown the engine is closed after the batch in hand; `run` returns `Ok`.
//! - **Failure:** an engine failure (credentials, `wal_level`, privileges) or a journal error
//!   ends `run` with one line naming the cause.

pub mod jvm;
mod prepare;
pub mod publication;
pub mod signal;
mod sizing;
pub mod source;
pub mod wire;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use jni::objects::{JByteArray, JClass, JObject, JString, JValue};
use jni::sys::{jint, jlong, jstring};
use jni::{JNIEnv, NativeMethod};
use tokio::sync::{watch, Notify};

use crate::config::Config;
use crate::error::{Classify, ErrorKind};
use crate::journal::{Journal, JournalError};
use crate::state::locks;
use crate::types::TableSchema;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Set-up or configuration: jars, JVM, options. Fixed by the user before a retry helps.
    #[error("{0}")]
    Setup(String),
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The engine stopped with an error (connection, credentials, source settings).
    #[error("capture failed: {0}")]
    Engine(String),
    /// The pipeline's local state disagrees with itself or with the source (one line with
    /// the recovery).
    #[error("capture refused: {0}")]
    StateMismatch(String),
    #[error("{0}")]
    State(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl Classify for CaptureError {
    fn kind(&self) -> ErrorKind {
        match self {
            CaptureError::Setup(_) => ErrorKind::Config,
            CaptureError::CreateDir { .. } => ErrorKind::Config,
            CaptureError::Engine(_) | CaptureError::StateMismatch(_) | CaptureError::State(_) => {
                ErrorKind::Permanent
            }
            CaptureError::Journal(e) => e.kind(),
        }
    }
}

/// A source setting db-sync cannot use for its own connections (`check`, `status`, signals).
#[derive(Debug, thiserror::Error)]
#[error("source.{key} {message}")]
pub struct SourceConfigError {
    pub key: String,
    pub message: String,
}

/// What a capture run did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub batches: u64,
    pub events: u64,
    pub duplicates: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Stop once the initial snapshot's last record is journaled (benchmarks, one-off loads).
    pub exit_after_snapshot: bool,
}

const DEFAULT_HEARTBEAT_MS: &str = "10000";
/// Debezium's offsets and schema history, in the state directory.
pub const OFFSETS_FILE: &str = "debezium-offsets.dat";
pub const HISTORY_FILE: &str = "debezium-history.dat";

/// The pipeline's state directory (`journal.dir`) as an absolute path.
pub fn state_dir(config: &Config) -> PathBuf {
    std::path::absolute(&config.journal.dir).unwrap_or_else(|_| config.journal.dir.clone())
}
const DEFAULT_OFFSET_FLUSH_MS: &str = "1000";

/// The Debezium properties for `config`: safe defaults, overridden by anything in `source:`.
///
/// Defaults: offsets and schema history in the state directory; a short offset flush so little
/// is re-delivered after a crash; a heartbeat; for PostgreSQL, `pgoutput`, a slot and a
/// publication named after the pipeline with the publication limited to the included tables
/// and publishing a partitioned table's changes under its own name, TRUNCATE captured, and a
/// heartbeat action that emits a logical message, so the slot advances even when only tables
/// outside the pipeline change (DESIGN §9).
pub fn engine_properties(config: &Config) -> BTreeMap<String, String> {
    let name = &config.name;
    let ident: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let mut p: BTreeMap<String, String> = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        p.insert(k.to_string(), v.to_string());
    };
    set("name", name);
    set("topic.prefix", name);
    set(
        "offset.storage",
        "org.apache.kafka.connect.storage.FileOffsetBackingStore",
    );
    // Debezium's own state lives with the journal, by absolute path: a process started from
    // another working directory finds the same files (DESIGN §2, §9).
    let state = state_dir(config);
    set(
        "offset.storage.file.filename",
        &state.join(OFFSETS_FILE).display().to_string(),
    );
    set("offset.flush.interval.ms", DEFAULT_OFFSET_FLUSH_MS);
    set(
        "schema.history.internal",
        "io.debezium.storage.file.history.FileSchemaHistory",
    );
    set(
        "schema.history.internal.file.filename",
        &state.join(HISTORY_FILE).display().to_string(),
    );
    set("tombstones.on.delete", "false");
    // Rows of megabytes must not pile up in the engine's queue. Debezium 3.6's snapshot does
    // not keep to `max.queue.size.in.bytes` (measured: the queue passed it many times over), so
    // the queue is bounded by records too: 256 queued and 128 per batch hold rows of 1 MB in
    // the default 1 GB heap; small rows lose little (one fsync per 128 rows). The bridge
    // journals a batch in pieces of 16 MB.
    set(
        "max.queue.size.in.bytes",
        &((config.memory_limit_mb << 20) / 8).to_string(),
    );
    set("max.queue.size", "256");
    set("max.batch.size", "128");
    set("heartbeat.interval.ms", DEFAULT_HEARTBEAT_MS);
    // Starting the task creates the replication slot, which waits for every write
    // transaction running on the server to end: on a busy server that is minutes, not the
    // engine's default of about 90 s, after which capture would fail and start over.
    set("task.management.timeout.ms", "900000");
    // Source column types and lengths in the schema: apply creates VARCHAR(n), CHAR(n).
    set("column.propagate.source.type", ".*");
    if config.is_postgres() {
        set("plugin.name", "pgoutput");
        set("slot.name", &format!("dbsync_{ident}"));
        set("publication.name", &format!("dbsync_{ident}"));
        set("publication.autocreate.mode", "filtered");
        // A partitioned table's changes arrive under its own name, whichever partition
        // they touch (DESIGN §9); without this only its snapshot would.
        set("publish.via.partition.root", "true");
        // TRUNCATE is a change like any other (DESIGN §2); Debezium skips it by default.
        set("skipped.operations", "none");
        // The snapshot reads through a cursor, 10,240 rows a fetch by default: gigabytes when
        // rows are megabytes. The JDBC driver starts at 4 rows, then sizes each fetch to a
        // tenth of the heap by the largest row it has seen, up to 10,240 (the `database.`
        // properties reach the driver). A single fetch beyond a tenth of the heap (a row of
        // more than ~25 MB at -Xmx1g) is the driver's one-line error naming maxResultBuffer.
        set("snapshot.fetch.size", "4");
        set("database.adaptiveFetch", "true");
        set("database.adaptiveFetchMaximum", "10240");
        set("database.maxResultBuffer", "10p");
        set(
            "heartbeat.action.query",
            "SELECT pg_logical_emit_message(false, 'db-sync-heartbeat', now()::text)",
        );
        set(
            "signal.data.collection",
            &signal::default_collection(&ident),
        );
    }
    for (k, v) in config.source.iter() {
        p.insert(k.clone(), v.as_string());
    }
    // An empty signalling table turns signalling off: Debezium must not see the key at all.
    if p.get("signal.data.collection")
        .is_some_and(|c| c.is_empty())
    {
        p.remove("signal.data.collection");
    }
    // Debezium reads signals from the change stream: the table must be captured.
    if let (Some(collection), Some(list)) = (
        p.get("signal.data.collection").filter(|c| !c.is_empty()),
        p.get("table.include.list"),
    ) {
        let list = signal::include_list_with(list, collection);
        p.insert("table.include.list".into(), list);
    }
    p
}

/// The files named by the engine properties whose directories must exist.
fn engine_files(props: &BTreeMap<String, String>) -> Vec<PathBuf> {
    [
        "offset.storage.file.filename",
        "schema.history.internal.file.filename",
    ]
    .iter()
    .filter_map(|k| props.get(*k).map(PathBuf::from))
    .collect()
}

/// Per-run state the native callback reaches through the handle.
struct Sink {
    state: Mutex<SinkState>,
    batches: AtomicU64,
    events: AtomicU64,
    duplicates: AtomicU64,
    snapshot_completed: AtomicBool,
    wake: Notify,
}

struct SinkState {
    journal: Journal,
    /// JVM schema id → journal schema id.
    schema_ids: HashMap<u32, u32>,
    /// JVM schema ids of the signalling table, whose rows stay out of the journal.
    signal_ids: HashSet<u32>,
    /// `signal.data.collection` (`schema.table`), if any.
    signal_table: Option<String>,
    scratch: Vec<u8>,
}

impl Sink {
    /// Journals one bridge batch: maps the JVM's schema ids to the journal's, then one append.
    fn append(&self, state: &mut SinkState, batch: &[u8]) -> Result<(), String> {
        let entries = wire::entries(batch)?;
        let mut events: Vec<(u32, &[u8])> = Vec::with_capacity(entries.len());
        for entry in entries {
            match entry {
                wire::Entry::Schema { jvm_id, json } => {
                    if state.signal_table.as_ref().is_some_and(|signal| {
                        TableSchema::from_json(json).is_ok_and(|s| &s.table == signal)
                    }) {
                        state.signal_ids.insert(jvm_id);
                        continue;
                    }
                    let id = state.journal.schema_id(json).map_err(|e| e.to_string())?;
                    state.schema_ids.insert(jvm_id, id);
                }
                wire::Entry::Event { jvm_id, .. } if state.signal_ids.contains(&jvm_id) => {}
                wire::Entry::Event { jvm_id, body } => {
                    let mut id = *state.schema_ids.get(&jvm_id).ok_or_else(|| {
                        format!("bridge sent an event of unknown schema {jvm_id}")
                    })?;
                    // A TRUNCATE comes without a key: journal it under its table's keyed
                    // schema, so apply sees it in order with the table's rows.
                    if body.first() == Some(&b't') {
                        if let Some(keyed) = state.journal.keyed_twin(id) {
                            id = keyed;
                        }
                    }
                    events.push((id, body));
                }
            }
        }
        let out = state.journal.append(events).map_err(|e| e.to_string())?;
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(out.events as u64, Ordering::Relaxed);
        self.duplicates
            .fetch_add(out.duplicates as u64, Ordering::Relaxed);
        if out.duplicates > 0 {
            tracing::info!(
                duplicates = out.duplicates,
                "dropped re-delivered events the journal already holds"
            );
        }
        if out.snapshot_completed {
            self.snapshot_completed.store(true, Ordering::SeqCst);
            self.wake.notify_one();
        }
        Ok(())
    }
}

/// `Bridge.appendBatch(long handle, byte[] batch, int length) -> String`: called by the bridge
/// once per engine batch on the engine's thread. Returns null when the batch is durable.
extern "system" fn append_batch<'local>(
    env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
    batch: JByteArray<'local>,
    length: jint,
) -> jstring {
    // SAFETY: `handle` is the address of the `Sink` that `run` keeps alive (in an Arc) until
    // `Bridge.run` has returned, and the bridge only calls this from inside `Bridge.run`.
    let sink = unsafe { &*(handle as *const Sink) };
    let result = (|| -> Result<(), String> {
        let len = usize::try_from(length).map_err(|_| "negative batch length".to_string())?;
        let mut state = sink
            .state
            .lock()
            .map_err(|_| "journal lock poisoned".to_string())?;
        let mut scratch = std::mem::take(&mut state.scratch);
        scratch.resize(len, 0);
        // SAFETY: i8 and u8 have the same size and alignment, and the slice covers `scratch`.
        let as_i8 =
            unsafe { std::slice::from_raw_parts_mut(scratch.as_mut_ptr().cast::<i8>(), len) };
        // One copy out of the Java heap, so no JVM critical section is held across the fsync.
        env.get_byte_array_region(&batch, 0, as_i8)
            .map_err(|e| format!("cannot read the batch from the JVM: {e}"))?;
        let outcome = sink.append(&mut state, &scratch);
        state.scratch = scratch;
        outcome
    })();
    match result {
        Ok(()) => std::ptr::null_mut(),
        Err(message) => env
            .new_string(message)
            .map(JString::into_raw)
            .unwrap_or(std::ptr::null_mut()),
    }
}

fn natives() -> Vec<NativeMethod> {
    vec![jvm::native(
        "appendBatch",
        "(J[BI)Ljava/lang/String;",
        append_batch as *mut c_void,
    )]
}

/// Validates the engine set-up (jars, JVM, bridge) without connecting: for `check`.
pub fn check_engine(config: &Config) -> Result<(), CaptureError> {
    jvm::start(&config.engine.lib_dir, &config.engine.jvm_options, natives).map(|_| ())
}

/// Captures changes into the journal until `shutdown` turns true or the engine stops.
///
/// Returns `Ok` after a clean stop (shutdown requested, or the snapshot completed when
/// [`Options::exit_after_snapshot`]); `Err` when the engine or the journal failed.
pub async fn run(
    config: &Config,
    options: Options,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Summary, CaptureError> {
    let mut identity = prepare::identity(config).await?;
    let journal = Journal::open(&config.journal.dir, config.journal.segment_max_bytes)?;
    let mut props = engine_properties(config);
    sizing::fit(config, &mut props).await;
    prepare::adopt_legacy_files(config, &props);
    prepare::check_offsets(config, &props, &journal, &identity)?;
    prepare::check_source(config, &mut identity).await?;
    for file in engine_files(&props) {
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CaptureError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
    }
    signal::ensure_table(config).await;
    publication::ensure_partition_root(config).await;
    let vm = jvm::start(&config.engine.lib_dir, &config.engine.jvm_options, natives)?;
    tracing::info!(
        journal = %config.journal.dir.display(),
        next_seq = journal.next_seq(),
        "capture starting"
    );
    let sink = Arc::new(Sink {
        state: Mutex::new(SinkState {
            journal,
            schema_ids: HashMap::new(),
            signal_ids: HashSet::new(),
            signal_table: signal::collection(config),
            scratch: Vec::new(),
        }),
        batches: AtomicU64::new(0),
        events: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        snapshot_completed: AtomicBool::new(false),
        wake: Notify::new(),
    });

    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
    let engine_sink = Arc::clone(&sink);
    std::thread::Builder::new()
        .name("debezium-engine".into())
        .spawn(move || {
            let outcome = run_engine(vm, &engine_sink, &props);
            drop(engine_sink);
            let _ = done_tx.send(outcome);
        })
        .map_err(|e| CaptureError::Setup(format!("cannot start the engine thread: {e}")))?;

    let mut stopping = false;
    let mut seal_check = tokio::time::interval(std::time::Duration::from_millis(250));
    let journal_dir = config.journal.dir.clone();
    let outcome = loop {
        tokio::select! {
            _ = seal_check.tick() => {
                if locks::seal_requested(&journal_dir) {
                    seal_on_request(&sink, &journal_dir);
                }
            }
            outcome = &mut done_rx => break outcome.unwrap_or_else(|_| Err("engine thread ended without a result".into())),
            changed = shutdown.changed(), if !stopping => {
                if changed.is_err() || *shutdown.borrow() {
                    tracing::info!("stopping capture after the batch in hand");
                    stopping = true;
                    request_stop(vm).await;
                }
            }
            _ = sink.wake.notified(), if !stopping => {
                if options.exit_after_snapshot && sink.snapshot_completed.load(Ordering::SeqCst) {
                    tracing::info!("snapshot complete; stopping capture");
                    stopping = true;
                    request_stop(vm).await;
                }
            }
        }
    };
    let summary = Summary {
        batches: sink.batches.load(Ordering::Relaxed),
        events: sink.events.load(Ordering::Relaxed),
        duplicates: sink.duplicates.load(Ordering::Relaxed),
    };
    match outcome {
        Ok(()) => Ok(summary),
        Err(e) => Err(CaptureError::Engine(e)),
    }
}

/// Rolls the active segment for a compaction that asked (see [`crate::journal::seal`]).
/// Between batches: the journal lock is the batch boundary.
fn seal_on_request(sink: &Sink, dir: &std::path::Path) {
    let rolled = match sink.state.lock() {
        Ok(mut state) => state.journal.roll(),
        Err(_) => return,
    };
    match rolled {
        Ok(()) => locks::clear_seal_request(dir),
        Err(e) => tracing::warn!("cannot seal the journal for compaction: {e}"),
    }
}

/// Calls `Bridge.stop()` from a blocking thread attached to the JVM.
async fn request_stop(vm: &'static jni::JavaVM) {
    let stopped = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut env = vm.attach_current_thread().map_err(|e| e.to_string())?;
        env.call_static_method(jvm::BRIDGE_CLASS, "stop", "()V", &[])
            .map_err(|e| e.to_string())?;
        Ok(())
    })
    .await;
    if let Ok(Err(e)) | Err(e) = stopped.map_err(|e| e.to_string()) {
        tracing::warn!("could not ask the engine to stop: {e}");
    }
}

/// Runs `Bridge.run(handle, props)` on the current thread; `Err` holds the engine's one line.
fn run_engine(
    vm: &'static jni::JavaVM,
    sink: &Arc<Sink>,
    props: &BTreeMap<String, String>,
) -> Result<(), String> {
    let mut env = vm
        .attach_current_thread()
        .map_err(|e| format!("cannot attach the engine thread to the JVM: {e}"))?;
    let result = env.with_local_frame(
        16 + 2 * props.len() as i32,
        |env| -> Result<Option<String>, jni::errors::Error> {
            let array = env.new_object_array(
                (props.len() * 2) as i32,
                "java/lang/String",
                JObject::null(),
            )?;
            for (i, (k, v)) in props.iter().enumerate() {
                let key = env.new_string(k)?;
                let value = env.new_string(v)?;
                env.set_object_array_element(&array, (2 * i) as i32, key)?;
                env.set_object_array_element(&array, (2 * i + 1) as i32, value)?;
            }
            let handle = Arc::as_ptr(sink) as jlong;
            let ret = env.call_static_method(
                jvm::BRIDGE_CLASS,
                "run",
                "(J[Ljava/lang/String;)Ljava/lang/String;",
                &[JValue::Long(handle), JValue::Object(&array)],
            )?;
            let obj = ret.l()?;
            if obj.is_null() {
                return Ok(None);
            }
            let message: String = env.get_string(&JString::from(obj))?.into();
            Ok(Some(message))
        },
    );
    match result {
        Ok(None) => Ok(()),
        Ok(Some(message)) => Err(message),
        Err(e) => {
            let _ = env.exception_describe();
            let _ = env.exception_clear();
            Err(format!("the bridge failed: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn source_overrides_defaults_and_postgres_gets_slot_publication_heartbeat() {
        let text = "name: Shop-1\nsource:\n  connector.class: io.debezium.connector.postgresql.PostgresConnector\n  heartbeat.interval.ms: 500\n";
        let config = Config::parse(Path::new("c.yaml"), text, &|_| None).unwrap();
        let p = engine_properties(&config);
        assert_eq!(p["heartbeat.interval.ms"], "500");
        assert_eq!(p["slot.name"], "dbsync_shop_1");
        assert_eq!(p["publication.autocreate.mode"], "filtered");
        let state = std::path::absolute("data/journal").unwrap();
        assert_eq!(
            p["offset.storage.file.filename"],
            state.join(OFFSETS_FILE).display().to_string()
        );
        assert_eq!(p["offset.flush.interval.ms"], "1000");
        assert!(p["heartbeat.action.query"].contains("pg_logical_emit_message"));
        assert_eq!(p["signal.data.collection"], "public.dbsync_signal_shop_1");
        assert!(!p.contains_key("table.include.list"));
    }

    #[test]
    fn the_signal_table_is_captured_with_the_included_tables() {
        let text = "name: shop\nsource:\n  connector.class: io.debezium.connector.postgresql.PostgresConnector\n  table.include.list: public.orders\n";
        let config = Config::parse(Path::new("c.yaml"), text, &|_| None).unwrap();
        let p = engine_properties(&config);
        assert_eq!(
            p["table.include.list"],
            "public.orders,public\\.dbsync_signal_shop"
        );
        // Set empty: signalling off, and Debezium does not see the key.
        let off = format!("{text}  signal.data.collection: \"\"\n");
        let config = Config::parse(Path::new("c.yaml"), &off, &|_| None).unwrap();
        let p = engine_properties(&config);
        assert!(!p.contains_key("signal.data.collection"));
        assert_eq!(p["table.include.list"], "public.orders");
    }

    #[test]
    fn other_connectors_get_no_postgres_defaults() {
        let text =
            "name: m\nsource:\n  connector.class: io.debezium.connector.mysql.MySqlConnector\n";
        let config = Config::parse(Path::new("c.yaml"), text, &|_| None).unwrap();
        let p = engine_properties(&config);
        assert!(!p.contains_key("slot.name"));
        assert!(!p.contains_key("heartbeat.action.query"));
        assert_eq!(p["heartbeat.interval.ms"], DEFAULT_HEARTBEAT_MS);
    }
}
