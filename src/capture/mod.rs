//! Capture: Debezium's embedded engine, in this process, feeding the journal.
//!
//! [`run`] starts the JVM (once per process), builds the engine from `source:` over the
//! defaults of [`engine_properties`], and runs it on a thread of its own. The Java bridge hands
//! each engine batch to `sink::append_batch` in one JNI call; that call appends the batch to the
//! journal with one fsync and only then returns, after which the bridge acknowledges the
//! records. So:
//!
//! - **Durable:** every event Debezium may commit an offset for is fsynced in the journal.
//! - **Crash:** a crash anywhere loses nothing acknowledged; Debezium re-delivers the rest from
//!   its last committed offset and the journal drops what it already holds (by position).
//! - **Stop:** on shutdown the engine is closed after the batch in hand; `run` returns `Ok`.
//! - **Failure:** an engine failure (credentials, `wal_level`, privileges) or a journal error
//!   ends `run` with one line naming the cause.
//!
//! Capture owns the engine and the bridge only; what db-sync itself knows of the source (its
//! connection, the slot and publication names, the signalling table, the source's identity)
//! is [`crate::source`]'s, and capture's engine properties take those names from there.
//!
//! Before the engine starts, [`prepare`](mod@prepare) makes the local state agree with itself: a
//! new journal gets its identity, and a journal and Debezium offsets that disagree, or a source
//! other than the journal's, are refused with one line. The parts:
//!
//! - [`jvm`]: the JVM in this process and what JNI allows (one JVM, `-Xrs`, natives
//!   registered); keys `engine.lib_dir` and `engine.jvm_options`.
//! - [`properties`]: the engine's properties, db-sync's defaults under anything set in
//!   `source:`, and the Debezium facts they answer (offsets and schema history by absolute
//!   path in the state directory, a one-second offset flush, `pgoutput`, TRUNCATE captured,
//!   a heartbeat that moves the slot, the publication of a partitioned table's root, a queue
//!   of at most `memory_limit_mb`/8 bytes). `db-sync engine-properties` prints them.
//! - [`sizing`]: the engine's queue, batch and fetch sizes, fitted to the size of the rows.
//! - [`wire`] and [`sink`]: the batch the bridge hands over in one JNI call, and the native
//!   method that journals it (`journal.dir`, `journal.segment_max_bytes`). Meanwhile [`run`]
//!   rolls the active segment, between batches, when a cycle asks (`seal.request`).
//!
//! The Java side is `debezium/bridge/` (`Bridge.java`, and `BatchEncoder.java`, which writes
//! the event bodies [`crate::journal::event`] reads).

mod jvm;
mod prepare;
mod properties;
mod resync;
mod sink;
pub mod sizing;
pub mod tables;
mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use jni::objects::{JObject, JString, JValue};
use jni::sys::jlong;
use tokio::sync::watch;

use crate::audit::AuditError;
use crate::config::Config;
use crate::error::{Classify, ErrorKind};
use crate::journal::{Journal, JournalError};
use crate::source;
use crate::source::tables::SourceTable;
use crate::state::{locks, StateError};
use sink::Sink;

pub use jvm::{classpath, find_libjvm, JvmError};
pub use properties::{engine_properties, properties_file, state_dir, HISTORY_FILE, OFFSETS_FILE};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The JVM or the bridge cannot start (jars, JVM, options): fixed by the user first.
    #[error(transparent)]
    Jvm(#[from] Arc<JvmError>),
    /// The config asks for something capture cannot do (one line naming the key).
    #[error("{key} {message}")]
    Config { key: String, message: String },
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// A new journal cannot list the audit store it numbers its events after.
    #[error("a new journal numbers its events after the audit store's: {0}")]
    NewJournal(#[source] AuditError),
    #[error("cannot start the engine thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The engine stopped with an error (connection, credentials, source settings): the
    /// engine's own line, as the bridge returns it.
    #[error("capture failed: {0}")]
    Engine(String),
    /// A JNI call of the bridge failed (not the engine).
    #[error("capture failed: the bridge failed: {0}")]
    Bridge(#[source] jni::errors::Error),
    #[error("capture failed: cannot attach the engine thread to the JVM: {0}")]
    Attach(#[source] jni::errors::Error),
    #[error("capture failed: the engine thread ended without a result")]
    EngineLost,
    /// The pipeline's local state disagrees with itself or with the source (one line with
    /// the recovery).
    #[error("capture refused: {0}")]
    StateMismatch(String),
    /// The replication slot is gone and `source_guard.on_slot_lost` is `stop` (one line with
    /// the fix).
    #[error("capture stopped: {0}")]
    SlotLost(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The native initial load failed (the source, a value, the journal): its one line.
    #[error("capture failed: {0}")]
    Load(String),
}

impl Classify for CaptureError {
    fn kind(&self) -> ErrorKind {
        match self {
            CaptureError::Jvm(_) | CaptureError::Config { .. } | CaptureError::CreateDir { .. } => {
                ErrorKind::Config
            }
            CaptureError::Audit(e) | CaptureError::NewJournal(e) => e.kind(),
            CaptureError::Thread(_)
            | CaptureError::Engine(_)
            | CaptureError::Bridge(_)
            | CaptureError::Attach(_)
            | CaptureError::EngineLost
            | CaptureError::StateMismatch(_)
            | CaptureError::SlotLost(_)
            | CaptureError::Load(_) => ErrorKind::Permanent,
            CaptureError::State(e) => e.kind(),
            CaptureError::Journal(e) => e.kind(),
        }
    }
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

/// The engine properties capture would start the engine with now: [`engine_properties`] with
/// the batch sizes fitted to the source's rows (asks the source; `db-sync engine-properties`).
pub async fn fitted_properties(config: &Config) -> BTreeMap<String, String> {
    let tables = tables::list(config).await;
    fitted(config, tables.as_deref()).await
}

/// [`fitted_properties`] for the included `tables` (when the source could list them).
async fn fitted(config: &Config, tables: Option<&[SourceTable]>) -> BTreeMap<String, String> {
    let mut props = engine_properties(config);
    sizing::fit(config, &mut props).await;
    if let Some(tables) = tables {
        tables::leave_out_refused(config, tables, &mut props);
        tables::exclude_generated(config, tables, &mut props);
    }
    props
}

/// Validates the engine set-up (jars, JVM, bridge) without connecting: for `check`.
pub fn check_engine(config: &Config) -> Result<(), CaptureError> {
    jvm::start(
        &config.engine.lib_dir,
        &config.engine.jvm_options,
        sink::natives,
    )?;
    Ok(())
}

/// Captures changes into the journal until `shutdown` turns true or the engine stops.
///
/// Returns `Ok` after a clean stop (shutdown requested, or the snapshot completed when
/// [`Options::exit_after_snapshot`]); `Err` when the engine or the journal failed.
pub async fn run(
    config: &Config,
    options: Options,
    shutdown: watch::Receiver<bool>,
) -> Result<Summary, CaptureError> {
    let Prepared {
        journal,
        mut props,
        tables,
        joined,
    } = prepare(config).await?;
    let journal = match load(
        config,
        options,
        journal,
        &mut props,
        (tables, joined),
        &shutdown,
    )
    .await?
    {
        Loaded::Stream(journal) => *journal,
        Loaded::Stop => return Ok(Summary::default()),
    };
    let vm = jvm::start(
        &config.engine.lib_dir,
        &config.engine.jvm_options,
        sink::natives,
    )?;
    tracing::info!(
        journal = %config.journal.dir.display(),
        next_seq = journal.next_seq(),
        "capture starting"
    );
    let sink = Arc::new(Sink::new(journal, source::signal_collection(config)));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<(), CaptureError>>();
    let engine_sink = Arc::clone(&sink);
    std::thread::Builder::new()
        .name("debezium-engine".into())
        .spawn(move || {
            let outcome = run_engine(vm, &engine_sink, &props);
            drop(engine_sink);
            let _ = done_tx.send(outcome);
        })
        .map_err(CaptureError::Thread)?;
    let outcome = supervise(config, options, shutdown, vm, &sink, done_rx).await;
    outcome.map(|()| Summary {
        batches: sink.batches.load(Ordering::Relaxed),
        events: sink.events.load(Ordering::Relaxed),
        duplicates: sink.duplicates.load(Ordering::Relaxed),
    })
}

/// [`run`], started again (up to three times) when it failed because the replication slot
/// went while it ran and `source_guard.on_slot_lost` is `resync`: the new start finds the slot
/// gone and resyncs (see `resync.rs`). Any other outcome is `run`'s.
pub async fn run_resyncing(
    config: &Config,
    options: Options,
    shutdown: watch::Receiver<bool>,
) -> Result<Summary, CaptureError> {
    let mut restarts = 0;
    loop {
        let outcome = run(config, options, shutdown.clone()).await;
        match &outcome {
            Err(e)
                if restarts < 3
                    && !*shutdown.borrow()
                    && resync::lost_while_running(config).await =>
            {
                restarts += 1;
                tracing::warn!("capture failed and the replication slot is gone ({e}): starting again to resync");
            }
            _ => return outcome,
        }
    }
}

/// What [`load`] leaves capture to do.
enum Loaded {
    /// Start the engine on the journal.
    Stream(Box<Journal>),
    /// Stop: shutdown came during the load, or the snapshot was all that was asked for.
    Stop,
}

/// Reads the initial snapshot with the native loader when one is due and the loader can
/// read every table ([`crate::loader`]); Debezium then streams without a snapshot of its own.
/// On a pipeline that streams, reads the tables that joined it ([`load_joined`]).
async fn load(
    config: &Config,
    options: Options,
    journal: Journal,
    props: &mut BTreeMap<String, String>,
    (tables, joined): (Option<Vec<SourceTable>>, Vec<String>),
    shutdown: &watch::Receiver<bool>,
) -> Result<Loaded, CaptureError> {
    let due = resync::offsets_file(props).is_none()
        && props.get("snapshot.mode").is_none_or(|m| m == "initial");
    let Some(tables) = tables else {
        return Ok(Loaded::Stream(Box::new(journal)));
    };
    if !due {
        return load_joined(config, journal, &tables, joined, shutdown).await;
    }
    if crate::loader::completed(&config.journal.dir) {
        // The initial load is journaled; Debezium has not streamed since (it commits no
        // offsets before it does): it streams from the slot, after the tables that joined.
        props.insert("snapshot.mode".into(), "no_data".into());
        resync::complete(&config.journal.dir)?;
        let loaded = load_joined(config, journal, &tables, joined, shutdown).await?;
        if options.exit_after_snapshot {
            tracing::info!("snapshot complete; stopping capture");
            return Ok(Loaded::Stop);
        }
        return Ok(loaded);
    }
    let applied: Vec<SourceTable> = tables
        .into_iter()
        .filter(|t| t.refusal().is_none())
        .collect();
    let plan = match crate::loader::decide(config, &applied).await {
        Ok(plan) => plan,
        Err(e) => return Err(CaptureError::Load(e.to_string())),
    };
    let tables = match plan {
        crate::loader::Decision::Native(tables) => tables,
        crate::loader::Decision::Debezium(why) => {
            tracing::info!("the initial snapshot goes through Debezium: {why}");
            return Ok(Loaded::Stream(Box::new(journal)));
        }
    };
    let (journal, outcome) = crate::loader::run(
        config,
        tables,
        journal,
        crate::loader::Start::Initial,
        shutdown.clone(),
    )
    .await
    .map_err(|e| CaptureError::Load(e.to_string()))?;
    if outcome == crate::loader::Outcome::Stopped {
        return Ok(Loaded::Stop);
    }
    resync::complete(&config.journal.dir)?;
    if options.exit_after_snapshot {
        tracing::info!("snapshot complete; stopping capture");
        return Ok(Loaded::Stop);
    }
    props.insert("snapshot.mode".into(), "no_data".into());
    Ok(Loaded::Stream(Box::new(journal)))
}

/// Reads the rows of the tables that joined a streaming pipeline (`joined`, and those of a
/// load of them an earlier start did not finish) with the native loader, before the engine
/// streams on from where it was; the tables the loader cannot read get Debezium's
/// incremental snapshot instead. Each table is recorded as the pipeline's once its rows are
/// journaled (or their snapshot asked for), so a crash before that reads it again.
async fn load_joined(
    config: &Config,
    mut journal: Journal,
    tables: &[SourceTable],
    joined: Vec<String>,
    shutdown: &watch::Receiver<bool>,
) -> Result<Loaded, CaptureError> {
    let load_error = |e: crate::loader::LoadError| CaptureError::Load(e.to_string());
    let pending = crate::loader::pending(&config.journal.dir).map_err(load_error)?;
    let mut rounds: Vec<Vec<String>> = Vec::new();
    if let Some(names) = &pending {
        rounds.push(names.clone());
    }
    let rest: Vec<String> = joined
        .into_iter()
        .filter(|t| !pending.as_ref().is_some_and(|p| p.contains(t)))
        .collect();
    if !rest.is_empty() {
        rounds.push(rest);
    }
    for names in rounds {
        let these: Vec<SourceTable> = tables
            .iter()
            .filter(|t| names.contains(&t.name) && t.refusal().is_none())
            .cloned()
            .collect();
        let plan = crate::loader::decide(config, &these)
            .await
            .map_err(load_error)?;
        let chosen = match plan {
            crate::loader::Decision::Native(chosen) => chosen,
            crate::loader::Decision::Debezium(why) => {
                tracing::info!(
                    "the tables that joined go through Debezium's incremental snapshot: {why}"
                );
                let asked = tables::snapshot_joined(config, &names).await;
                tables::record_joined(config, &asked)?;
                continue;
            }
        };
        for t in &chosen {
            tracing::info!(table = %t.name, "{} joined the pipeline: capture reads its rows with the native loader before streaming on", t.name);
        }
        let (back, outcome) = crate::loader::run(
            config,
            chosen,
            journal,
            crate::loader::Start::Joined,
            shutdown.clone(),
        )
        .await
        .map_err(load_error)?;
        journal = back;
        if outcome == crate::loader::Outcome::Stopped {
            return Ok(Loaded::Stop);
        }
        tables::record_joined(config, &names)?;
    }
    Ok(Loaded::Stream(Box::new(journal)))
}

/// What [`prepare()`] readies: the journal, the engine's properties, the included tables (when
/// the source can say) and those that joined since the last start.
struct Prepared {
    journal: Journal,
    props: BTreeMap<String, String>,
    tables: Option<Vec<SourceTable>>,
    joined: Vec<String>,
}

/// Everything before the engine starts: the journal and its identity, the engine's
/// properties, the checks of the local state against itself and the source, Debezium's
/// directories, and the source-side objects db-sync keeps (signalling table, publication).
async fn prepare(config: &Config) -> Result<Prepared, CaptureError> {
    let mut identity = prepare::identity(config).await?;
    let mut joined = Vec::new();
    let mut journal = Journal::open(&config.journal.dir, config.journal.segment_max_bytes)?;
    let tables = tables::list(config).await;
    if let Some(tables) = &tables {
        tables::check(config, tables)?;
    }
    let mut props = fitted(config, tables.as_deref()).await;
    prepare::adopt_legacy_files(config, &props);
    prepare::check_offsets(config, &props, &journal, &identity)?;
    prepare::check_source(config, &mut identity).await?;
    resync::check_slot(config, &mut props, &mut journal, &mut identity).await?;
    if let Some(tables) = &tables {
        // A full snapshot (a new journal, a resync) reads every table anyway; one the loader
        // completed counts as captured, Debezium's offsets or not.
        let captured = (resync::offsets_file(&props).is_some()
            || crate::loader::completed(&config.journal.dir))
            && !identity.resync.as_ref().is_some_and(|r| r.in_progress());
        joined = tables::follow(config, tables, &mut identity, captured).await?;
    }
    for file in properties::engine_files(&props) {
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CaptureError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
    }
    source::signal::ensure_table(config).await;
    source::publication::ensure_partition_root(config).await;
    Ok(Prepared {
        journal,
        props,
        tables,
        joined,
    })
}

/// Waits for the engine thread to end, meanwhile sealing the journal when compaction asks
/// and asking the engine to stop on shutdown (or once the snapshot is done, when asked to).
async fn supervise(
    config: &Config,
    options: Options,
    mut shutdown: watch::Receiver<bool>,
    vm: &'static jni::JavaVM,
    sink: &Sink,
    mut done: tokio::sync::oneshot::Receiver<Result<(), CaptureError>>,
) -> Result<(), CaptureError> {
    let mut stopping = false;
    let mut resync_done = false;
    let mut seal_check = tokio::time::interval(std::time::Duration::from_millis(250));
    let journal_dir = &config.journal.dir;
    loop {
        tokio::select! {
            _ = seal_check.tick() => {
                if locks::seal_requested(journal_dir) {
                    seal_on_request(sink, journal_dir);
                }
            }
            outcome = &mut done => return outcome.unwrap_or(Err(CaptureError::EngineLost)),
            changed = shutdown.changed(), if !stopping => {
                if changed.is_err() || *shutdown.borrow() {
                    tracing::info!("stopping capture after the batch in hand");
                    stopping = true;
                    request_stop(vm).await;
                }
            }
            _ = sink.wake.notified(), if !stopping => {
                if !resync_done && sink.snapshot_completed.load(Ordering::SeqCst) {
                    resync_done = true;
                    if let Err(e) = resync::complete(journal_dir) {
                        tracing::warn!("cannot record the resync as complete: {e}");
                    }
                }
                if options.exit_after_snapshot && sink.snapshot_completed.load(Ordering::SeqCst) {
                    tracing::info!("snapshot complete; stopping capture");
                    stopping = true;
                    request_stop(vm).await;
                }
            }
        }
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

/// Calls `Bridge.stop()` from a blocking thread attached to the JVM; a failure is a warning
/// (the engine then stops when the process does).
async fn request_stop(vm: &'static jni::JavaVM) {
    let stopped = tokio::task::spawn_blocking(move || -> Result<(), jni::errors::Error> {
        let mut env = vm.attach_current_thread()?;
        env.call_static_method(jvm::BRIDGE_CLASS, "stop", "()V", &[])?;
        Ok(())
    })
    .await;
    match stopped {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("could not ask the engine to stop: {e}"),
        Err(e) => tracing::warn!("could not ask the engine to stop: {e}"),
    }
}

/// Runs `Bridge.run(handle, props)` on the current thread until the engine stops; `Err` holds
/// the engine's one line ([`CaptureError::Engine`]) or the JNI failure.
fn run_engine(
    vm: &'static jni::JavaVM,
    sink: &Arc<Sink>,
    props: &BTreeMap<String, String>,
) -> Result<(), CaptureError> {
    let mut env = vm.attach_current_thread().map_err(CaptureError::Attach)?;
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
        Ok(Some(message)) => Err(CaptureError::Engine(message)),
        Err(e) => {
            let _ = env.exception_describe();
            let _ = env.exception_clear();
            Err(CaptureError::Bridge(e))
        }
    }
}
