//! The bridge's way into the journal: [`append_batch`], the native method the Java bridge
//! calls once per engine batch, and the per-run [`Sink`] it reaches through its handle.
//!
//! A batch is durable when the call returns null: it is appended to the journal with one
//! fsync, and only then does the bridge acknowledge its records. On failure the call returns
//! the error as one line of text (the one place a typed error becomes text: Java receives a
//! string), and the bridge stops the engine with it.

use std::collections::{HashMap, HashSet};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use jni::objects::{JByteArray, JClass, JString};
use jni::sys::{jint, jlong, jstring};
use jni::{JNIEnv, NativeMethod};
use tokio::sync::Notify;

use super::{jvm, wire};
use crate::journal::{Journal, JournalError};
use crate::types::TableSchema;

/// Why a batch could not be journaled.
#[derive(Debug, thiserror::Error)]
enum BatchError {
    #[error("the bridge passed a negative batch length {0}")]
    NegativeLength(jint),
    #[error("the journal's lock is poisoned by an earlier panic")]
    Poisoned,
    #[error("cannot read the batch from the JVM: {0}")]
    Read(#[source] jni::errors::Error),
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    #[error("the bridge sent an event of unknown schema {0}")]
    UnknownSchema(u32),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Per-run state the native callback reaches through the handle.
pub(super) struct Sink {
    pub state: Mutex<SinkState>,
    pub batches: AtomicU64,
    pub events: AtomicU64,
    pub duplicates: AtomicU64,
    pub snapshot_completed: AtomicBool,
    pub wake: Notify,
}

pub(super) struct SinkState {
    pub journal: Journal,
    /// JVM schema id → journal schema id.
    schema_ids: HashMap<u32, u32>,
    /// JVM schema ids of the signalling table, whose rows stay out of the journal.
    signal_ids: HashSet<u32>,
    /// `signal.data.collection` (`schema.table`), if any.
    signal_table: Option<String>,
    scratch: Vec<u8>,
}

impl Sink {
    pub fn new(journal: Journal, signal_table: Option<String>) -> Sink {
        Sink {
            state: Mutex::new(SinkState {
                journal,
                schema_ids: HashMap::new(),
                signal_ids: HashSet::new(),
                signal_table,
                scratch: Vec::new(),
            }),
            batches: AtomicU64::new(0),
            events: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            snapshot_completed: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// Journals one bridge batch: maps the JVM's schema ids to the journal's, then one append.
    fn append(&self, state: &mut SinkState, batch: &[u8]) -> Result<(), BatchError> {
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
                    let id = state.journal.schema_id(json)?;
                    state.schema_ids.insert(jvm_id, id);
                }
                wire::Entry::Event { jvm_id, .. } if state.signal_ids.contains(&jvm_id) => {}
                wire::Entry::Event { jvm_id, body } => {
                    let mut id = *state
                        .schema_ids
                        .get(&jvm_id)
                        .ok_or(BatchError::UnknownSchema(jvm_id))?;
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
        let out = state.journal.append(events)?;
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

    /// Copies the batch out of the Java heap and journals it.
    fn receive(
        &self,
        env: &JNIEnv<'_>,
        batch: &JByteArray<'_>,
        length: jint,
    ) -> Result<(), BatchError> {
        let len = usize::try_from(length).map_err(|_| BatchError::NegativeLength(length))?;
        let mut state = self.state.lock().map_err(|_| BatchError::Poisoned)?;
        let mut scratch = std::mem::take(&mut state.scratch);
        scratch.resize(len, 0);
        // SAFETY: i8 and u8 have the same size and alignment, and the slice covers `scratch`.
        let as_i8 =
            unsafe { std::slice::from_raw_parts_mut(scratch.as_mut_ptr().cast::<i8>(), len) };
        // One copy out of the Java heap, so no JVM critical section is held across the fsync.
        let outcome = env
            .get_byte_array_region(batch, 0, as_i8)
            .map_err(BatchError::Read)
            .and_then(|()| self.append(&mut state, &scratch));
        state.scratch = scratch;
        outcome
    }
}

/// `Bridge.appendBatch(long handle, byte[] batch, int length) -> String`: called by the bridge
/// once per engine batch on the engine's thread. Returns null when the batch is durable, else
/// the error's one line.
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
    match sink.receive(&env, &batch, length) {
        Ok(()) => std::ptr::null_mut(),
        Err(e) => env
            .new_string(crate::error::one_line(&e))
            .map(JString::into_raw)
            .unwrap_or(std::ptr::null_mut()),
    }
}

/// The native methods the bridge class declares.
pub(super) fn natives() -> Vec<NativeMethod> {
    vec![jvm::native(
        "appendBatch",
        "(J[BI)Ljava/lang/String;",
        append_batch as *mut c_void,
    )]
}
