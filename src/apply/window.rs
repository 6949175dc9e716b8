//! Where an apply window ends, and which of its changes the merge passes over.
//!
//! One read of the window's event headers and keys, ahead of the merge, which decodes
//! nothing:
//!
//! - **The end.** A window is bounded by what its merge holds, about one row per key, not by
//!   the changes it spans: [`End::Plan`] reads on while the estimate of the merged rows (each
//!   key's last change, and a per-key overhead) stays within the byte budget, up to
//!   [`super::WINDOW_EVENTS`]. Many changes of few keys make one window, so each key is
//!   written once, however often it changed. A stretch of snapshot rows (which never repeat a
//!   key) gains nothing from a long window, and small first windows let the first chunks leave
//!   early: there the window stops at the ramp size the caller gives. A window never ends
//!   between the delete half and the create half of a key change, whatever ends it (the
//!   budget, or the audited range when a journal seal fell between the two halves). It ends
//!   before the first change of a table whose primary key the source changed: the merge
//!   keys a table by one key per window. A table without a key has every change merged as
//!   it came (see [`super::merge`]): each counts whole.
//! - **What is superseded.** A change whose key changes again later in the window, by a
//!   delete or by a row with every column sent, leaves nothing in the merged result: the
//!   merge skips it without decoding it. A row with an unchanged TOASTed column (it holds the
//!   placeholder) takes values from the changes before it, so those stay. The create half of
//!   a key change whose row lacks a column takes it from the old key's earlier changes: a
//!   table's changes before its last such create are never skipped.
//!
//! What is skipped depends only on the journal from a change to the window's end, so a re-run
//! of a recorded window merges the same rows and cuts the same chunks.

use std::collections::HashMap;
use std::path::Path;

use crate::journal::event::{self, Cursor, EventHeader};
use crate::journal::{self, JournalError, StoredEvent};

/// What a change costs the merge beyond its own bytes: the key's map entry and allocations.
const KEY_OVERHEAD: usize = 64;

/// Index of no event.
const NONE: u32 = u32::MAX;

/// Where the window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// At this sequence (a window recorded by an earlier run).
    Exact(u64),
    /// Where the limits say, and never after `through`.
    Plan {
        through: u64,
        /// The most changes of a window of snapshot rows only.
        snapshot_events: u64,
        /// The most changes of any window.
        max_events: u64,
        /// The budget of the estimated merged rows.
        merged_bytes: usize,
    },
}

/// A planned window: its end, and the changes the merge passes over.
#[derive(Debug, Default)]
pub struct Scan {
    pub from: u64,
    pub to: u64,
    /// Changes in the window.
    pub events: u64,
    /// Bit `seq - from`: a later change of the same key replaces this one whole.
    superseded: Vec<u64>,
    /// Per table, its last key change whose create lacks columns: no earlier change of the
    /// table is skipped.
    moves_through: HashMap<String, u64>,
}

fn bit(words: &[u64], i: usize) -> bool {
    words.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

impl Scan {
    /// The window `from..=to` with nothing to pass over (one recorded before skipping was),
    /// without reading it.
    pub fn whole(from: u64, to: u64) -> Scan {
        Scan {
            from,
            to,
            ..Scan::default()
        }
    }

    /// Whether the merge may pass over change `seq` of `table`.
    pub fn superseded(&self, seq: u64, table: &str) -> bool {
        let Some(i) = seq.checked_sub(self.from) else {
            return false;
        };
        // Asked for every change: the table lookup only where a key change holds one back.
        bit(&self.superseded, i as usize)
            && (self.moves_through.is_empty()
                || self.moves_through.get(table).is_none_or(|&m| seq > m))
    }
}

/// A key's bytes (schema version and key struct), inline when short: comparing a key in the
/// map then reads one cache line, not two.
enum KeyBytes {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

const INLINE: usize = 22;

impl KeyBytes {
    fn new(b: &[u8]) -> KeyBytes {
        if b.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..b.len()].copy_from_slice(b);
            KeyBytes::Inline {
                len: b.len() as u8,
                bytes,
            }
        } else {
            KeyBytes::Heap(b.into())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            KeyBytes::Inline { len, bytes } => &bytes[..*len as usize],
            KeyBytes::Heap(b) => b,
        }
    }
}

impl std::borrow::Borrow<[u8]> for KeyBytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

// Hash and equality are the bytes' (as `Borrow` requires), whichever way they are held.
impl std::hash::Hash for KeyBytes {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl PartialEq for KeyBytes {
    fn eq(&self, other: &KeyBytes) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for KeyBytes {}

/// A key's state during the scan.
struct KeyState {
    /// Index of its last change.
    last: u32,
    /// The estimate of its merged row.
    bytes: u32,
}

/// Reads the window from `from` (headers and keys only). `None`: a planned window would hold
/// no change (nothing audited from `from` on); a recorded one is returned as it was, empty or
/// not.
pub fn scan(
    dir: &Path,
    from: u64,
    end: End,
    placeholder: &str,
) -> Result<Option<Scan>, JournalError> {
    let mut scanner = Scanner {
        end,
        finder: memchr::memmem::Finder::new(placeholder.as_bytes()),
        versions: Versions::default(),
        keys: HashMap::default(),
        key: Vec::with_capacity(64),
        merged: 0,
        all_snapshot: true,
        marks: Marks {
            scan: Scan {
                from,
                to: from,
                ..Scan::default()
            },
            prev: Vec::new(),
            whole: Vec::new(),
        },
    };
    journal::read_events(dir, from, |e| scanner.event(&e))?;
    let mut scan = scanner.marks.scan;
    if scan.events == 0 {
        let End::Exact(to) = end else {
            return Ok(None);
        };
        scan.to = to;
    }
    Ok(Some(scan))
}

/// Schema versions by content: a key only supersedes within its version.
#[derive(Default)]
struct Versions {
    by_json: HashMap<Vec<u8>, u32>,
    /// The version of each schema frame read (the journal's cheap identity of a schema).
    by_frame: HashMap<(usize, u32), u32, foldhash::fast::RandomState>,
    /// Per table, the key columns of the first version the scan met.
    first_key: HashMap<String, Vec<String>>,
    /// Per version: its key columns are not those of its table's first version (the source
    /// changed the table's primary key).
    other_key: Vec<bool>,
}

impl Versions {
    fn of(&mut self, e: &StoredEvent<'_>) -> u32 {
        if let Some(&v) = self.by_frame.get(&e.schema_key) {
            return v;
        }
        let next = self.by_json.len() as u32;
        let v = *self.by_json.entry(e.schema_json.to_vec()).or_insert(next);
        self.by_frame.insert(e.schema_key, v);
        if v as usize >= self.other_key.len() {
            let key = e.schema.key_columns();
            let first = self
                .first_key
                .entry(e.schema.table.clone())
                .or_insert_with(|| key.clone());
            self.other_key.resize(v as usize + 1, false);
            self.other_key[v as usize] = *first != key;
        }
        v
    }

    /// Whether version `v` keys its table otherwise than the first version the scan met.
    fn other_key(&self, v: u32) -> bool {
        self.other_key.get(v as usize).copied().unwrap_or(false)
    }
}

/// A keyed change, as the scan weighs it.
#[derive(Clone, Copy)]
struct Tracked {
    /// Its table's key is not the one of the window's first change of the table.
    other_key: bool,
    /// It replaces every earlier change of its key whole (a delete, or a row with every
    /// column sent).
    whole: bool,
    /// The estimate of its merged row.
    row_bytes: u32,
}

/// What the scan records of the window's changes.
struct Marks {
    scan: Scan,
    /// Per change, the index of the key's change before it ([`NONE`]: the first).
    prev: Vec<u32>,
    /// Bit per change: it was itself whole.
    whole: Vec<u64>,
}

impl Marks {
    /// Room for change `i`.
    fn grow(&mut self, i: usize) {
        if self.prev.len() <= i {
            self.prev.resize(i + 1, NONE);
        }
        let words = i / 64 + 1;
        if self.scan.superseded.len() < words {
            self.scan.superseded.resize(words, 0);
            self.whole.resize(words, 0);
        }
    }

    /// A key change at `seq` whose create half lacks columns: no change of `table` before it
    /// is skipped.
    fn hold_back(&mut self, table: &str, seq: u64) {
        match self.scan.moves_through.get_mut(table) {
            Some(m) => *m = seq,
            None => {
                self.scan.moves_through.insert(table.to_string(), seq);
            }
        }
    }

    /// Change `i` of a key, whose change before it is `before`: a whole one marks every
    /// earlier change of the key superseded, back to the last one that was itself whole (those
    /// before it are marked already).
    fn record(&mut self, i: usize, before: u32, whole: bool) {
        self.prev[i] = before;
        if !whole {
            return;
        }
        self.whole[i / 64] |= 1 << (i % 64);
        let mut j = before;
        while j != NONE {
            let ju = j as usize;
            let bit = 1u64 << (ju % 64);
            if self.scan.superseded[ju / 64] & bit != 0 {
                break;
            }
            self.scan.superseded[ju / 64] |= bit;
            if self.whole[ju / 64] & bit != 0 {
                break;
            }
            j = self.prev[ju];
        }
    }
}

/// The state of one [`scan`].
struct Scanner<'p> {
    end: End,
    /// Finds the unchanged-TOAST placeholder in an event's values.
    finder: memchr::memmem::Finder<'p>,
    versions: Versions,
    keys: HashMap<KeyBytes, KeyState, foldhash::fast::RandomState>,
    /// The current change's key, prefixed with its schema version.
    key: Vec<u8>,
    /// The estimate of the window's merged rows.
    merged: usize,
    /// Every change so far is a snapshot row.
    all_snapshot: bool,
    marks: Marks,
}

impl Scanner<'_> {
    /// Whether a planned window holds as many changes as its limits allow.
    fn full_by_count(&self) -> bool {
        let End::Plan {
            snapshot_events,
            max_events,
            ..
        } = self.end
        else {
            return false;
        };
        let n = self.marks.scan.events;
        n >= max_events || (self.all_snapshot && n >= snapshot_events)
    }

    /// For a keyed change: its key into `self.key`, and how it weighs.
    fn track(
        &mut self,
        e: &StoredEvent<'_>,
        h: &EventHeader<'_>,
    ) -> Result<Option<Tracked>, event::DecodeError> {
        let (Some(key), true) = (&e.schema.key, h.flags & event::KEY != 0) else {
            return Ok(None);
        };
        let mut c = Cursor::new(h.values);
        event::skip_struct(key, &mut c)?;
        let key_bytes = &h.values[..h.values.len() - c.rest().len()];
        let version = self.versions.of(e);
        self.key.clear();
        self.key.extend_from_slice(&version.to_le_bytes());
        self.key.extend_from_slice(key_bytes);
        let whole = match h.op {
            b'd' => true,
            b'c' | b'u' | b'r' => self.finder.find(c.rest()).is_none(),
            _ => false,
        };
        let row_bytes = if h.op == b'd' {
            key_bytes.len()
        } else {
            e.body.len()
        };
        Ok(Some(Tracked {
            other_key: self.versions.other_key(version),
            whole,
            row_bytes: row_bytes as u32,
        }))
    }

    /// Takes change `e` into the window, or says the window ends before it (`false`).
    fn event(&mut self, e: &StoredEvent<'_>) -> Result<bool, JournalError> {
        let last_allowed = match self.end {
            End::Exact(to) | End::Plan { through: to, .. } => to,
        };
        if e.seq > last_allowed {
            return Ok(false);
        }
        let undecodable = |err: event::DecodeError| JournalError::Undecodable {
            seq: e.seq,
            what: format!("{err} ({})", e.schema.table),
        };
        let h = EventHeader::parse(e.body).map_err(undecodable)?;
        // The window may end before this change: never between the halves of a key change
        // (the create half carries the old key), and never before its first change.
        let may_end = self.marks.scan.events > 0 && !h.has_old_key();
        if may_end && self.full_by_count() {
            return Ok(false);
        }
        // The delete half of a key change as the last change the window may take (the
        // audited range ends there: a journal seal fell between the engine's batches): its
        // create half is beyond, so the window ends before both, even empty (apply then waits
        // for the next audit, which holds the create half too).
        if h.has_new_key() && e.seq == last_allowed && matches!(self.end, End::Plan { .. }) {
            return Ok(false);
        }
        let tracked = self.track(e, &h).map_err(undecodable)?;
        // The source changed the table's primary key: the merge keys a window by one key per
        // table, so the window ends before the first change under the new one.
        if may_end && tracked.is_some_and(|t| t.other_key) && matches!(self.end, End::Plan { .. }) {
            return Ok(false);
        }
        // One lookup of the key per change: the map is the scan's main cost.
        let mut known = tracked.and_then(|_| self.keys.get_mut(self.key.as_slice()));
        // A change of a table without a key is kept as it came (the merge holds each one).
        let unkeyed = (tracked.is_none()
            && e.schema.key.as_ref().is_none_or(|k| k.fields.is_empty()))
        .then_some(e.body.len() + KEY_OVERHEAD);
        if let End::Plan { merged_bytes, .. } = self.end {
            let grown = match (&known, tracked) {
                (Some(k), Some(t)) => (t.row_bytes as usize).saturating_sub(k.bytes as usize),
                (None, Some(t)) => t.row_bytes as usize + self.key.len() + KEY_OVERHEAD,
                _ => unkeyed.unwrap_or(0),
            };
            if may_end && self.merged + grown > merged_bytes {
                return Ok(false);
            }
        }
        self.merged += unkeyed.unwrap_or(0);
        // The change is in the window.
        self.all_snapshot &= h.is_snapshot();
        let i = (e.seq - self.marks.scan.from) as usize;
        if h.has_old_key() && self.finder.find(h.values).is_some() {
            self.marks.hold_back(&e.schema.table, e.seq);
        }
        self.marks.grow(i);
        if let Some(t) = tracked {
            let idx = i as u32;
            let before = match known.take() {
                Some(k) => {
                    self.merged = self.merged - k.bytes as usize + t.row_bytes as usize;
                    k.bytes = t.row_bytes;
                    std::mem::replace(&mut k.last, idx)
                }
                None => {
                    self.merged += t.row_bytes as usize + self.key.len() + KEY_OVERHEAD;
                    let state = KeyState {
                        last: idx,
                        bytes: t.row_bytes,
                    };
                    self.keys.insert(KeyBytes::new(&self.key), state);
                    NONE
                }
            };
            self.marks.record(i, before, t.whole);
        }
        self.marks.scan.to = e.seq;
        self.marks.scan.events += 1;
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
