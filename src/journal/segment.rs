//! One segment file: its header, its frames, and reading them back.
//!
//! ```text
//! header (HEADER_LEN bytes):
//!   magic "DBSJRNL1" | u64 first_seq | u8 has_mark | u64 commit_lsn | u64 change_lsn
//!   | u32 ordinal | u32 next_schema_id | u32 crc32c(previous header bytes)
//! frame:
//!   u32 payload_len | u32 crc32c(payload) | payload
//! payload:
//!   u8 KIND_SCHEMA | u32 schema_id | schema JSON (UTF-8)
//!   u8 KIND_EVENT  | u64 seq | u32 schema_id | event body (see `event.rs`)
//! ```
//! All integers little-endian. The header carries the writer state a new segment needs to
//! continue (next sequence, last streaming position for de-duplication, next schema id), so
//! a journal stays correct after every older segment is deleted.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{JournalError, Mark, Position};

pub const MAGIC: &[u8; 8] = b"DBSJRNL1";
pub const HEADER_LEN: usize = 8 + 8 + 1 + 8 + 8 + 4 + 4 + 4;
const CRC_AT: usize = HEADER_LEN - 4;
pub const FRAME_HEADER_LEN: usize = 8;
/// Frames larger than this are corruption, not data: a batch-sized sanity bound.
pub const MAX_FRAME_LEN: u32 = 1 << 30;

pub const KIND_SCHEMA: u8 = 1;
pub const KIND_EVENT: u8 = 2;

/// The state a segment starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub first_seq: u64,
    /// The last streaming event journaled before this segment.
    pub last_mark: Option<Mark>,
    pub next_schema_id: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.first_seq.to_le_bytes());
        if let Some(m) = self.last_mark {
            b[16] = 1;
            b[17..25].copy_from_slice(&m.position.commit_lsn.to_le_bytes());
            b[25..33].copy_from_slice(&m.position.change_lsn.to_le_bytes());
            b[33..37].copy_from_slice(&m.ordinal.to_le_bytes());
        }
        b[37..41].copy_from_slice(&self.next_schema_id.to_le_bytes());
        let crc = crc32c::crc32c(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(path: &Path, b: &[u8]) -> Result<Header, JournalError> {
        let corrupt = |what: &str| JournalError::Corrupt {
            segment: path.to_path_buf(),
            offset: 0,
            what: what.to_string(),
        };
        if b.len() < HEADER_LEN {
            return Err(corrupt("header is short"));
        }
        if &b[..8] != MAGIC {
            return Err(corrupt("not a db-sync journal segment (bad magic)"));
        }
        if crc32c::crc32c(&b[..CRC_AT]) != u32_at(b, CRC_AT) {
            return Err(corrupt("header CRC mismatch"));
        }
        let last_mark = (b[16] == 1).then(|| Mark {
            position: Position {
                commit_lsn: u64_at(b, 17),
                change_lsn: u64_at(b, 25),
            },
            ordinal: u32_at(b, 33),
        });
        Ok(Header {
            first_seq: u64_at(b, 8),
            last_mark,
            next_schema_id: u32_at(b, 37),
        })
    }
}

/// `segment-<first_seq, 20 digits>.log`: names sort in sequence order.
pub fn file_name(first_seq: u64) -> String {
    format!("segment-{first_seq:020}.log")
}

/// The first sequence encoded in a segment file name, or None for other files.
pub fn parse_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("segment-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// Segment files in `dir`, oldest first.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| JournalError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io(dir, e))?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_file_name) {
            out.push((first, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// A frame read from a segment, borrowing the segment's bytes.
#[derive(Debug, Clone, Copy)]
pub enum Frame<'a> {
    Schema {
        id: u32,
        json: &'a [u8],
    },
    Event {
        seq: u64,
        schema_id: u32,
        body: &'a [u8],
    },
}

/// Why a scan stopped before the end of the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFrame {
    pub offset: u64,
    pub what: String,
}

/// Walks the frames of a segment held in memory.
pub struct Frames<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Frames<'a> {
    /// `bytes` is the whole file including the header.
    pub fn new(bytes: &'a [u8]) -> Self {
        Frames {
            bytes,
            pos: HEADER_LEN.min(bytes.len()),
        }
    }

    /// Offset of the next frame: after a clean end, the end of valid data.
    pub fn offset(&self) -> u64 {
        self.pos as u64
    }

    /// The next frame, `Ok(None)` at a clean end, or where and why the bytes stop making sense.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Frame<'a>>, BadFrame> {
        let rest = &self.bytes[self.pos..];
        if rest.is_empty() {
            return Ok(None);
        }
        let bad = |what: &str| BadFrame {
            offset: self.pos as u64,
            what: what.to_string(),
        };
        if rest.len() < FRAME_HEADER_LEN {
            return Err(bad("frame header cut short"));
        }
        let len = u32_at(rest, 0);
        if len == 0 || len > MAX_FRAME_LEN {
            return Err(bad(&format!("impossible frame length {len}")));
        }
        let end = FRAME_HEADER_LEN + len as usize;
        if rest.len() < end {
            return Err(bad("frame cut short"));
        }
        let payload = &rest[FRAME_HEADER_LEN..end];
        if crc32c::crc32c(payload) != u32_at(rest, 4) {
            return Err(bad("CRC mismatch"));
        }
        let frame = match payload[0] {
            KIND_SCHEMA if payload.len() >= 5 => Frame::Schema {
                id: u32_at(payload, 1),
                json: &payload[5..],
            },
            KIND_EVENT if payload.len() >= 13 => Frame::Event {
                seq: u64_at(payload, 1),
                schema_id: u32_at(payload, 9),
                body: &payload[13..],
            },
            kind => return Err(bad(&format!("unknown frame kind {kind}"))),
        };
        self.pos += end;
        Ok(Some(frame))
    }
}

/// The offset of the first whole, CRC-checked frame that starts after `from`, if any: what
/// tells corruption (good frames follow a bad one) from a torn tail (nothing good follows).
/// Only candidates whose length fits and whose kind byte is known are CRC-checked, so a
/// scan of a large segment costs little more than reading it.
pub fn valid_frame_after(bytes: &[u8], from: u64) -> Option<u64> {
    let start = usize::try_from(from).ok()?.saturating_add(1);
    let end = bytes.len().checked_sub(FRAME_HEADER_LEN + 1)?;
    (start..=end).find_map(|at| {
        let len = u32_at(bytes, at) as usize;
        let payload_at = at + FRAME_HEADER_LEN;
        let kind_ok = matches!(
            (bytes[payload_at], len),
            (KIND_SCHEMA, 5..) | (KIND_EVENT, 13..)
        );
        if !kind_ok || len > MAX_FRAME_LEN as usize || payload_at + len > bytes.len() {
            return None;
        }
        let payload = &bytes[payload_at..payload_at + len];
        (crc32c::crc32c(payload) == u32_at(bytes, at + 4)).then_some(at as u64)
    })
}

/// Appends a schema frame to `out`.
pub fn put_schema(out: &mut Vec<u8>, id: u32, json: &[u8]) {
    let start = begin_frame(out);
    out.push(KIND_SCHEMA);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(json);
    end_frame(out, start);
}

/// Appends an event frame to `out`.
pub fn put_event(out: &mut Vec<u8>, seq: u64, schema_id: u32, body: &[u8]) {
    let start = begin_frame(out);
    out.push(KIND_EVENT);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&schema_id.to_le_bytes());
    out.extend_from_slice(body);
    end_frame(out, start);
}

fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    start
}

fn end_frame(out: &mut [u8], start: usize) {
    let payload = &out[start + FRAME_HEADER_LEN..];
    let len = payload.len() as u32;
    let crc = crc32c::crc32c(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Reads and checks a segment's header alone.
pub fn read_header(path: &Path) -> Result<Header, JournalError> {
    let mut f = File::open(path).map_err(|e| JournalError::io(path, e))?;
    let mut b = Vec::with_capacity(HEADER_LEN);
    f.by_ref()
        .take(HEADER_LEN as u64)
        .read_to_end(&mut b)
        .map_err(|e| JournalError::io(path, e))?;
    Header::decode(path, &b)
}

/// Reads a whole segment file.
pub fn read_all(path: &Path) -> Result<Vec<u8>, JournalError> {
    let mut f = File::open(path).map_err(|e| JournalError::io(path, e))?;
    let len = f
        .seek(SeekFrom::End(0))
        .map_err(|e| JournalError::io(path, e))?;
    f.seek(SeekFrom::Start(0))
        .map_err(|e| JournalError::io(path, e))?;
    let mut bytes = Vec::with_capacity(len as usize);
    f.read_to_end(&mut bytes)
        .map_err(|e| JournalError::io(path, e))?;
    Ok(bytes)
}

/// A segment's bytes: read, or mapped.
pub enum Contents {
    Read(Vec<u8>),
    Mapped(memmap2::Mmap),
}

impl std::ops::Deref for Contents {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Contents::Read(v) => v,
            Contents::Mapped(m) => m,
        }
    }
}

/// A sealed segment, mapped: read without copying it (apply reads a window twice).
pub fn map(path: &Path) -> Result<Contents, JournalError> {
    let f = File::open(path).map_err(|e| JournalError::io(path, e))?;
    if f.metadata().map_err(|e| JournalError::io(path, e))?.len() == 0 {
        return Ok(Contents::Read(Vec::new()));
    }
    // SAFETY: a sealed segment is never written again and never shortened; it is only ever
    // deleted, which leaves an existing mapping intact. (A mapping of a file that shrinks
    // faults on access: that is why the active segment is read, not mapped.)
    let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| JournalError::io(path, e))?;
    Ok(Contents::Mapped(map))
}

pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
