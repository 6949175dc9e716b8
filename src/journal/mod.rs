//! The durable local journal: where captured changes live until they are audited and applied.
//!
//! # Segments
//!
//! `journal.dir` (the pipeline's state directory, see [`crate::state`]) holds segment files
//! named `segment-<first seq, 20 digits>.log`. The newest is the *active* segment, the only one
//! ever written; every older one is *sealed*. A new segment starts once the active one reaches
//! `journal.segment_max_bytes` (64 MiB by default).
//!
//! # Frames
//!
//! A segment is a header, then frames ([`segment`] has the byte layout):
//!
//! - a **schema frame** holds one Debezium table schema version (JSON) under a journal-wide id;
//! - an **event frame** holds one change: its sequence number, its schema id and the event
//!   body exactly as the Java bridge encoded it ([`event`]).
//!
//! Each frame carries its length and a CRC32C of its payload.
//!
//! # Invariants
//!
//! - Event sequence numbers start at the journal's first sequence (1, or one past an earlier
//!   journal's audit files: [`crate::state::identity`]) and increase by one per event, across
//!   segments.
//! - A schema frame precedes, in the same segment, the first event that uses it: a segment is
//!   readable on its own, so deleting older segments never orphans an event.
//! - Each [`Journal::append`] is one `write` and one `fdatasync` (group commit). When it
//!   returns `Ok`, the whole batch is durable; only then does the bridge acknowledge the batch
//!   to Debezium, so an offset is never committed for an event the journal lacks.
//! - A batch never spans segments: the writer rolls before a batch once the active segment
//!   reaches `segment_max_bytes`. A new segment is written under a temporary name, fsynced and
//!   renamed, so a segment file always has a whole header.
//! - A segment header carries the writer state needed to continue (next sequence, last
//!   streaming position, next schema id).
//!
//! # Crashes and corruption
//!
//! A crash can leave only the unacknowledged tail of the active segment torn: a frame cut
//! short, or a last frame whose bytes did not all reach the disk, with nothing whole after
//! it. On open, the writer truncates such a tail and says how many bytes went; Debezium
//! re-delivers them. Any other bad frame is corruption and never skipped or truncated: a bad
//! frame in a sealed segment, or one in the active segment with whole frames after it, is an
//! error naming the segment and offset.
//!
//! # De-duplication
//!
//! After a crash Debezium re-delivers everything since its last committed offset. Streaming
//! events carry PostgreSQL's (last commit LSN, change LSN) pair, which increases strictly in
//! the order the source emits changes (change LSNs alone go backwards across interleaved
//! transactions). The writer drops a streaming event whose pair is not above the last one it
//! journaled. Events sharing one position (a key-changing update becomes a delete and a
//! create at the same LSN) are told apart by their order within it, counted afresh in each
//! delivery stream, i.e. each process start. Snapshot reads share a position and are kept as
//! they come: re-read rows are idempotent upserts downstream. Events without a comparable
//! position are always kept: a duplicate is recoverable, a dropped event is not.
//!
//! # Deletion
//!
//! A sealed segment is never written again; it is deleted whole once every event in it is
//! audited and (with a target) applied, and it was last written more than
//! `journal.retain_hours` ago (24 by default). The rule is
//! [`crate::state::collectable_through`]; the compaction cycle applies it ([`crate::cycle`]).

pub mod event;
mod files;
pub mod segment;

pub use files::*;

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Classify, ErrorKind};
use crate::state::{self, locks, StateError};
use crate::types::TableSchema;
use event::EventHeader;
use segment::{Frame, Frames, Header, HEADER_LEN};

/// A PostgreSQL streaming position: (last commit LSN, change LSN), compared in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub commit_lsn: u64,
    pub change_lsn: u64,
}

/// Where the journal is in the source's stream: a position, and which of the events sharing
/// it (an update that changes the key is a delete and a create from one WAL record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark {
    pub position: Position,
    pub ordinal: u32,
}

impl Mark {
    /// The mark of `position` when the previous streaming event of the same stream was at
    /// `previous`: events sharing a position are numbered in arrival order.
    pub fn next(previous: Option<Mark>, position: Position) -> Mark {
        let ordinal = match previous {
            Some(m) if m.position == position => m.ordinal + 1,
            _ => 0,
        };
        Mark { position, ordinal }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal segment {segment} is corrupt at offset {offset}: {what}; restore the segment from a backup or move it aside and re-capture (its events are lost otherwise)")]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("journal {dir} is locked by another db-sync process; stop it first (only one capture may write a journal)")]
    Locked { dir: PathBuf },
    #[error("journal batch rejected: {0}")]
    BadBatch(String),
    #[error("journal event {seq} does not decode ({what}); the bridge jar and db-sync may not match: rebuild with scripts/setup.sh")]
    Undecodable { seq: u64, what: String },
    #[error("journal is unusable after an earlier write failure; restart db-sync")]
    Poisoned,
    #[error(transparent)]
    State(#[from] StateError),
}

impl Classify for JournalError {
    fn kind(&self) -> ErrorKind {
        match self {
            JournalError::Io { .. } | JournalError::Locked { .. } => ErrorKind::Transient,
            JournalError::State(e) => e.kind(),
            JournalError::Corrupt { .. }
            | JournalError::BadBatch(_)
            | JournalError::Undecodable { .. }
            | JournalError::Poisoned => ErrorKind::Permanent,
        }
    }
}

impl JournalError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        JournalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What one [`Journal::append`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Appended {
    pub events: usize,
    /// Re-delivered streaming events dropped by position.
    pub duplicates: usize,
    /// Sequence range written, when `events > 0`.
    pub first_seq: u64,
    pub last_seq: u64,
    /// The batch held the snapshot's last record.
    pub snapshot_completed: bool,
}

/// The journal writer. One per journal directory, enforced with a lock file.
pub struct Journal {
    dir: PathBuf,
    segment_max_bytes: u64,
    active: File,
    active_path: PathBuf,
    active_size: u64,
    active_first_seq: u64,
    next_seq: u64,
    /// The last streaming event journaled.
    last_mark: Option<Mark>,
    /// The last streaming event Debezium delivered to this process, journaled or not.
    stream_mark: Option<Mark>,
    next_schema_id: u32,
    /// Schema JSON → journal id, for every schema seen since open.
    schema_ids: HashMap<Vec<u8>, u32>,
    schema_json: HashMap<u32, Vec<u8>>,
    /// Schema ids already written into the active segment.
    in_segment: HashSet<u32>,
    buf: Vec<u8>,
    poisoned: bool,
    _lock: File,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir` for writing.
    ///
    /// Truncates a torn tail of the active segment and restores the writer state from it.
    /// Fails if another process holds the journal.
    pub fn open(dir: &Path, segment_max_bytes: u64) -> Result<Journal, JournalError> {
        std::fs::create_dir_all(dir).map_err(|e| JournalError::io(dir, e))?;
        let lock = locks::try_lock(&dir.join(locks::WRITER_LOCK))?.ok_or_else(|| {
            JournalError::Locked {
                dir: dir.to_path_buf(),
            }
        })?;

        let segments = segment::list(dir)?;
        // Sealed segments are checked whole by readers; here only their headers, which is cheap
        // and catches a journal directory that is not ours or badly damaged before we append.
        for (_, path) in segments.iter().rev().skip(1) {
            segment::read_header(path)?;
        }
        let Some((_, active_path)) = segments.last().cloned() else {
            // A new journal numbers from its identity's first sequence (after every earlier
            // journal's audit files, see `state::identity`), else from 1.
            let first_seq =
                state::identity::Identity::load(dir)?.map_or(1, |id| id.first_seq.max(1));
            let header = Header {
                first_seq,
                last_mark: None,
                next_schema_id: 1,
            };
            let (file, path) = create_segment(dir, &header)?;
            return Ok(Journal::from_parts(
                dir,
                segment_max_bytes,
                file,
                path,
                header,
                lock,
            ));
        };

        let bytes = segment::read_all(&active_path)?;
        let header = Header::decode(&active_path, &bytes)?;
        let mut journal = Journal::from_parts(
            dir,
            segment_max_bytes,
            open_append(&active_path)?,
            active_path.clone(),
            header,
            lock,
        );
        let mut frames = Frames::new(&bytes);
        let torn = loop {
            match frames.next() {
                Ok(None) => break None,
                Ok(Some(Frame::Schema { id, json })) => {
                    journal.remember_schema(id, json);
                    journal.in_segment.insert(id);
                    journal.next_schema_id = journal.next_schema_id.max(id + 1);
                }
                Ok(Some(Frame::Event { seq, body, .. })) => {
                    journal.next_seq = seq + 1;
                    if let Ok(h) = EventHeader::parse(body) {
                        if !h.is_snapshot() {
                            if let Some(p) = h.position {
                                journal.last_mark = Some(Mark::next(journal.last_mark, p));
                            }
                        }
                    }
                }
                Err(bad) => break Some(bad),
            }
        };
        let valid_len = frames.offset();
        if let Some(bad) = &torn {
            // Only a frame cut short at the very end is a torn tail; a bad frame with good
            // frames after it is corruption, and truncating would lose the good ones.
            if let Some(next) = segment::valid_frame_after(&bytes, bad.offset) {
                return Err(JournalError::Corrupt {
                    segment: active_path.clone(),
                    offset: bad.offset,
                    what: format!(
                        "{}, with whole frames after it (from offset {next}), so not a torn tail",
                        bad.what
                    ),
                });
            }
        }
        if let Some(bad) = torn {
            let dropped = bytes.len() as u64 - valid_len;
            tracing::warn!(
                segment = %active_path.display(),
                offset = bad.offset,
                bytes = dropped,
                "journal: truncating torn tail ({}); Debezium re-delivers these unacknowledged events",
                bad.what
            );
            journal
                .active
                .set_len(valid_len)
                .and_then(|()| journal.active.sync_all())
                .map_err(|e| JournalError::io(&active_path, e))?;
        }
        journal.active_size = valid_len;
        Ok(journal)
    }

    fn from_parts(
        dir: &Path,
        segment_max_bytes: u64,
        active: File,
        active_path: PathBuf,
        header: Header,
        lock: File,
    ) -> Journal {
        Journal {
            dir: dir.to_path_buf(),
            segment_max_bytes,
            active,
            active_path,
            active_size: HEADER_LEN as u64,
            active_first_seq: header.first_seq,
            next_seq: header.first_seq,
            last_mark: header.last_mark,
            stream_mark: None,
            next_schema_id: header.next_schema_id.max(1),
            schema_ids: HashMap::new(),
            schema_json: HashMap::new(),
            in_segment: HashSet::new(),
            buf: Vec::with_capacity(1 << 20),
            poisoned: false,
            _lock: lock,
        }
    }

    fn remember_schema(&mut self, id: u32, json: &[u8]) {
        self.schema_ids.insert(json.to_vec(), id);
        self.schema_json.insert(id, json.to_vec());
    }

    /// The journal id for a schema, by content: the same JSON always gets the same id.
    pub fn schema_id(&mut self, json: &[u8]) -> Result<u32, JournalError> {
        if let Some(&id) = self.schema_ids.get(json) {
            return Ok(id);
        }
        TableSchema::from_json(json).map_err(|e| JournalError::BadBatch(e.to_string()))?;
        let id = self.next_schema_id;
        self.next_schema_id += 1;
        self.remember_schema(id, json);
        Ok(id)
    }

    /// For a schema without a key, the latest schema of the same table and row that has one.
    ///
    /// Debezium sends a TRUNCATE without a key, so its schema version lacks the key its
    /// table's rows have; journaled under the keyed version, it reaches apply in order with
    /// the table's other changes instead of looking like a table apply cannot key.
    pub fn keyed_twin(&self, id: u32) -> Option<u32> {
        let parse = |json: &[u8]| serde_json::from_slice::<serde_json::Value>(json).ok();
        let this = parse(self.schema_json.get(&id)?)?;
        let keyless = |v: &serde_json::Value| {
            v["key"].is_null() || v["key"]["fields"].as_array().is_some_and(|f| f.is_empty())
        };
        if !keyless(&this) {
            return None;
        }
        self.schema_json
            .iter()
            .filter(|(other, _)| **other != id)
            .filter_map(|(other, json)| Some((*other, parse(json)?)))
            .filter(|(_, v)| !keyless(v) && v["table"] == this["table"] && v["row"] == this["row"])
            .map(|(other, _)| other)
            .max()
    }

    /// The sequence number the next event gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The last streaming event journaled.
    pub fn last_mark(&self) -> Option<Mark> {
        self.last_mark
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends a batch of events (schema id from [`Journal::schema_id`], bridge-encoded body)
    /// with one write and one fdatasync. Re-delivered streaming events are dropped by position.
    ///
    /// On `Ok`, every event of the batch is durable or was already in the journal. On `Err`,
    /// nothing of the batch counts: the file is cut back to its previous length and, if even
    /// that fails, the journal refuses further appends.
    pub fn append<'a>(
        &mut self,
        events: impl IntoIterator<Item = (u32, &'a [u8])>,
    ) -> Result<Appended, JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        if self.active_size >= self.segment_max_bytes && self.next_seq > self.active_first_seq {
            self.roll()?;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut out = Appended::default();
        let mut seq = self.next_seq;
        let mut last_mark = self.last_mark;
        let mut stream_mark = self.stream_mark;
        let mut new_in_segment: Vec<u32> = Vec::new();
        for (schema_id, body) in events {
            let h = EventHeader::parse(body).map_err(|e| JournalError::BadBatch(e.to_string()))?;
            out.snapshot_completed |= h.is_last_snapshot_record();
            if !h.is_snapshot() {
                if let Some(p) = h.position {
                    let mark = Mark::next(stream_mark, p);
                    stream_mark = Some(mark);
                    if last_mark.is_some_and(|last| mark <= last) {
                        out.duplicates += 1;
                        continue;
                    }
                    last_mark = Some(mark);
                }
            }
            if !self.in_segment.contains(&schema_id) && !new_in_segment.contains(&schema_id) {
                let json = self.schema_json.get(&schema_id).ok_or_else(|| {
                    JournalError::BadBatch(format!("event uses unknown schema id {schema_id}"))
                })?;
                segment::put_schema(&mut buf, schema_id, json);
                new_in_segment.push(schema_id);
            }
            segment::put_event(&mut buf, seq, schema_id, body);
            if out.events == 0 {
                out.first_seq = seq;
            }
            out.last_seq = seq;
            out.events += 1;
            seq += 1;
        }
        if !buf.is_empty() {
            if let Err(e) = self
                .active
                .write_all(&buf)
                .and_then(|()| self.active.sync_data())
            {
                self.buf = buf;
                // Cut the partial write off so a later append cannot follow garbage.
                if self.active.set_len(self.active_size).is_err() {
                    self.poisoned = true;
                }
                return Err(JournalError::io(&self.active_path, e));
            }
            self.active_size += buf.len() as u64;
        }
        self.next_seq = seq;
        self.last_mark = last_mark;
        self.stream_mark = stream_mark;
        self.in_segment.extend(new_in_segment);
        self.buf = buf;
        Ok(out)
    }

    /// Seals the active segment and starts a new one, if the active one holds any event.
    pub fn roll(&mut self) -> Result<(), JournalError> {
        if self.next_seq == self.active_first_seq {
            return Ok(());
        }
        self.start_segment()
    }

    /// Forgets the stream's position, so that a new stream (the new replication slot of a
    /// resync) is never compared with the old one's: Debezium sends a new slot's first
    /// transaction without a previous commit position, which would sort before every old mark
    /// and be dropped as a duplicate. A new segment starts without a mark (an empty active
    /// segment is replaced by one).
    pub fn forget_marks(&mut self) -> Result<(), JournalError> {
        self.last_mark = None;
        self.stream_mark = None;
        self.start_segment()
    }

    /// Starts the active segment at the next sequence, its header carrying the current mark.
    fn start_segment(&mut self) -> Result<(), JournalError> {
        let header = Header {
            first_seq: self.next_seq,
            last_mark: self.last_mark,
            next_schema_id: self.next_schema_id,
        };
        let (file, path) = create_segment(&self.dir, &header)?;
        self.active = file;
        self.active_path = path;
        self.active_size = HEADER_LEN as u64;
        self.active_first_seq = header.first_seq;
        self.in_segment.clear();
        Ok(())
    }
}

/// Creates a segment whole: header written and fsynced under a temporary name, then renamed
/// and the directory fsynced, so a crash leaves either no segment or a complete header.
fn create_segment(dir: &Path, header: &Header) -> Result<(File, PathBuf), JournalError> {
    let path = dir.join(segment::file_name(header.first_seq));
    let tmp = path.with_extension("log.tmp");
    {
        let mut f = File::create(&tmp).map_err(|e| JournalError::io(&tmp, e))?;
        f.write_all(&header.encode())
            .and_then(|()| f.sync_all())
            .map_err(|e| JournalError::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| JournalError::io(&path, e))?;
    state::sync_dir(dir)?;
    Ok((open_append(&path)?, path))
}

fn open_append(path: &Path) -> Result<File, JournalError> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| JournalError::io(path, e))
}

#[cfg(test)]
mod tests;
