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
//!   between the delete half and the create half of a key change.
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
use crate::journal::{self, JournalError};

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
    let finder = memchr::memmem::Finder::new(placeholder.as_bytes());
    let last_allowed = match end {
        End::Exact(to) => to,
        End::Plan { through, .. } => through,
    };
    // Schema versions by content: a key only supersedes within its version.
    let mut versions: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut version_of: HashMap<(usize, u32), u32, foldhash::fast::RandomState> =
        HashMap::default();
    let mut keys: HashMap<KeyBytes, KeyState, foldhash::fast::RandomState> = HashMap::default();
    let mut prev: Vec<u32> = Vec::new();
    let mut whole_change: Vec<u64> = Vec::new();
    let mut scan = Scan {
        from,
        to: from,
        ..Scan::default()
    };
    let mut merged = 0usize;
    let mut all_snapshot = true;
    let mut key_buf: Vec<u8> = Vec::with_capacity(64);
    journal::read_events(dir, from, |e| {
        if e.seq > last_allowed {
            return Ok(false);
        }
        let undecodable = |err: event::DecodeError| JournalError::Undecodable {
            seq: e.seq,
            what: format!("{err} ({})", e.schema.table),
        };
        let h = EventHeader::parse(e.body).map_err(undecodable)?;
        let n = scan.events;
        if let End::Plan {
            snapshot_events,
            max_events,
            ..
        } = end
        {
            if n > 0
                && !h.has_old_key()
                && (n >= max_events || (all_snapshot && n >= snapshot_events))
            {
                return Ok(false);
            }
        }
        // The key, prefixed with its schema version.
        let mut tracked = None;
        if let (Some(key), true) = (&e.schema.key, h.flags & event::KEY != 0) {
            let mut c = Cursor::new(h.values);
            event::skip_struct(key, &mut c).map_err(undecodable)?;
            let key_bytes = &h.values[..h.values.len() - c.rest().len()];
            let version = match version_of.get(&e.schema_key) {
                Some(&v) => v,
                None => {
                    let next = versions.len() as u32;
                    let v = *versions.entry(e.schema_json.to_vec()).or_insert(next);
                    version_of.insert(e.schema_key, v);
                    v
                }
            };
            key_buf.clear();
            key_buf.extend_from_slice(&version.to_le_bytes());
            key_buf.extend_from_slice(key_bytes);
            let whole = match h.op {
                b'd' => true,
                b'c' | b'u' | b'r' => finder.find(c.rest()).is_none(),
                _ => false,
            };
            let row_bytes = if h.op == b'd' {
                key_bytes.len()
            } else {
                e.body.len()
            };
            tracked = Some((whole, row_bytes as u32));
        }
        // One lookup of the key per change: the map is the scan's main cost.
        let mut known = tracked.and_then(|_| keys.get_mut(key_buf.as_slice()));
        if let (End::Plan { merged_bytes, .. }, Some((_, row_bytes))) = (end, tracked) {
            let grown = match &known {
                Some(k) => (row_bytes as usize).saturating_sub(k.bytes as usize),
                None => row_bytes as usize + key_buf.len() + KEY_OVERHEAD,
            };
            if n > 0 && !h.has_old_key() && merged + grown > merged_bytes {
                return Ok(false);
            }
        }
        // The event is in the window.
        all_snapshot &= h.is_snapshot();
        let i = (e.seq - from) as usize;
        if h.has_old_key() && finder.find(h.values).is_some() {
            match scan.moves_through.get_mut(e.schema.table.as_str()) {
                Some(m) => *m = e.seq,
                None => {
                    scan.moves_through.insert(e.schema.table.clone(), e.seq);
                }
            }
        }
        if prev.len() <= i {
            prev.resize(i + 1, NONE);
        }
        let words = i / 64 + 1;
        if scan.superseded.len() < words {
            scan.superseded.resize(words, 0);
            whole_change.resize(words, 0);
        }
        if let Some((whole, row_bytes)) = tracked {
            let idx = i as u32;
            let before = match known.take() {
                Some(k) => {
                    merged = merged - k.bytes as usize + row_bytes as usize;
                    let before = k.last;
                    k.last = idx;
                    k.bytes = row_bytes;
                    before
                }
                None => {
                    merged += row_bytes as usize + key_buf.len() + KEY_OVERHEAD;
                    keys.insert(
                        KeyBytes::new(&key_buf),
                        KeyState {
                            last: idx,
                            bytes: row_bytes,
                        },
                    );
                    NONE
                }
            };
            prev[i] = before;
            if whole {
                whole_change[i / 64] |= 1 << (i % 64);
                // Every earlier change of the key is replaced: mark back to the last one that
                // was itself whole (those before it are marked already).
                let mut j = before;
                while j != NONE {
                    let ju = j as usize;
                    let bit = 1u64 << (ju % 64);
                    if scan.superseded[ju / 64] & bit != 0 {
                        break;
                    }
                    scan.superseded[ju / 64] |= bit;
                    if whole_change[ju / 64] & bit != 0 {
                        break;
                    }
                    j = prev[ju];
                }
            }
        }
        scan.to = e.seq;
        scan.events += 1;
        Ok(true)
    })?;
    if scan.events == 0 {
        if let End::Exact(to) = end {
            scan.to = to;
            return Ok(Some(scan));
        }
        return Ok(None);
    }
    Ok(Some(scan))
}

#[cfg(test)]
mod tests;
