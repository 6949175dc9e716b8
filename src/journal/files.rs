//! The journal's files as a whole: listing and sealing segments, reading events in order,
//! window ends, verification, and deleting segments that are audited and applied.

use super::*;

/// One segment file and the sequence range it may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub path: PathBuf,
    pub first_seq: u64,
    pub bytes: u64,
    /// Sealed segments only: the next segment's first sequence minus one.
    pub last_seq: Option<u64>,
}

/// The segments, oldest first; the last one is the active segment.
pub fn segments(dir: &Path) -> Result<Vec<SegmentInfo>, JournalError> {
    let list = segment::list(dir)?;
    let mut out = Vec::with_capacity(list.len());
    for (i, (first_seq, path)) in list.iter().enumerate() {
        let bytes = std::fs::metadata(path)
            .map_err(|e| JournalError::io(path, e))?
            .len();
        out.push(SegmentInfo {
            path: path.clone(),
            first_seq: *first_seq,
            bytes,
            last_seq: list.get(i + 1).map(|(next, _)| next - 1),
        });
    }
    Ok(out)
}

/// The last sequence held by a sealed segment (0 when nothing is sealed).
pub fn sealed_through(dir: &Path) -> Result<u64, JournalError> {
    Ok(segments(dir)?
        .iter()
        .rev()
        .find_map(|s| s.last_seq)
        .unwrap_or(0))
}

/// Seals the active segment so that compaction can read everything journaled so far.
///
/// If no capture holds the journal, rolls it here. Otherwise asks the capture (through
/// [`locks::SEAL_REQUEST`]) and waits up to `wait` for it; on timeout, compaction proceeds with
/// what is already sealed and says so.
pub fn seal(
    dir: &Path,
    segment_max_bytes: u64,
    wait: std::time::Duration,
) -> Result<(), JournalError> {
    match Journal::open(dir, segment_max_bytes) {
        Ok(mut journal) => return journal.roll(),
        Err(JournalError::Locked { .. }) => {}
        Err(e) => return Err(e),
    }
    locks::request_seal(dir)?;
    let start = std::time::Instant::now();
    while locks::seal_requested(dir) {
        if start.elapsed() > wait {
            tracing::warn!(
                journal = %dir.display(),
                "the running capture did not seal the active segment within {wait:?}; compacting what is sealed"
            );
            locks::clear_seal_request(dir);
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

/// Deletes sealed segments whose every event is at or below `through` and that were last
/// written before `cutoff`. Never the active segment. Returns the paths deleted.
pub fn delete_segments_through(
    dir: &Path,
    through: u64,
    cutoff: std::time::SystemTime,
) -> Result<Vec<PathBuf>, JournalError> {
    let mut deleted = Vec::new();
    for s in segments(dir)? {
        let Some(last) = s.last_seq else { continue };
        if last > through {
            break;
        }
        let modified = std::fs::metadata(&s.path)
            .and_then(|m| m.modified())
            .map_err(|e| JournalError::io(&s.path, e))?;
        if modified <= cutoff {
            std::fs::remove_file(&s.path).map_err(|e| JournalError::io(&s.path, e))?;
            deleted.push(s.path);
        }
    }
    Ok(deleted)
}

/// What [`verify`] found: a journal that reads back whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub segments: usize,
    pub bytes: u64,
    pub events: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
}

/// Reads every frame of every segment, checking each CRC; the first corruption is the error.
pub fn verify(dir: &Path) -> Result<Summary, JournalError> {
    let segments = segment::list(dir)?;
    let mut summary = Summary {
        segments: segments.len(),
        ..Summary::default()
    };
    for (_, path) in &segments {
        summary.bytes += std::fs::metadata(path)
            .map_err(|e| JournalError::io(path, e))?
            .len();
    }
    read_events(dir, 0, |e| {
        summary.events += 1;
        summary.first_seq.get_or_insert(e.seq);
        summary.last_seq = Some(e.seq);
        Ok(true)
    })?;
    Ok(summary)
}

/// One event as read back: its sequence, its table schema and its bridge-encoded body.
pub struct StoredEvent<'a> {
    pub seq: u64,
    pub schema: &'a TableSchema,
    /// The schema frame's JSON, and (segment index, schema id): a cheap identity for the
    /// schema within one read.
    pub schema_json: &'a [u8],
    pub schema_key: (usize, u32),
    pub body: &'a [u8],
}

/// Reads events in sequence order from `from_seq` on, calling `f` for each until it returns
/// `false`. Safe while a writer appends: the active segment is read up to its last whole frame.
/// A bad frame in a sealed segment is [`JournalError::Corrupt`].
pub fn read_events(
    dir: &Path,
    from_seq: u64,
    mut f: impl FnMut(StoredEvent<'_>) -> Result<bool, JournalError>,
) -> Result<(), JournalError> {
    let segments = segment::list(dir)?;
    for (i, (first_seq, path)) in segments.iter().enumerate() {
        let is_active = i + 1 == segments.len();
        if let Some((next_first, _)) = segments.get(i + 1) {
            if *next_first <= from_seq {
                continue; // wholly before the range
            }
        }
        let _ = first_seq;
        let contents = if is_active {
            segment::Contents::Read(segment::read_all(path)?)
        } else {
            segment::map(path)?
        };
        let bytes: &[u8] = &contents;
        Header::decode(path, bytes)?;
        // Looked up for every event: not with SipHash.
        let mut schemas: HashMap<u32, (TableSchema, &[u8]), foldhash::fast::RandomState> =
            HashMap::default();
        let mut frames = Frames::new(bytes);
        loop {
            match frames.next() {
                Ok(None) => break,
                Ok(Some(Frame::Schema { id, json })) => {
                    let schema =
                        TableSchema::from_json(json).map_err(|e| JournalError::Corrupt {
                            segment: path.clone(),
                            offset: frames.offset(),
                            what: e.to_string(),
                        })?;
                    schemas.insert(id, (schema, json));
                }
                Ok(Some(Frame::Event {
                    seq,
                    schema_id,
                    body,
                })) => {
                    if seq < from_seq {
                        continue;
                    }
                    let (schema, json) = schemas.get(&schema_id).ok_or_else(|| JournalError::Corrupt {
                        segment: path.clone(),
                        offset: frames.offset(),
                        what: format!("event {seq} uses schema {schema_id}, which the segment does not hold"),
                    })?;
                    let event = StoredEvent {
                        seq,
                        schema,
                        schema_json: json,
                        schema_key: (i, schema_id),
                        body,
                    };
                    if !f(event)? {
                        return Ok(());
                    }
                }
                // The active segment's tail may be mid-write or torn: its end, not corruption,
                // unless whole frames follow the bad one.
                Err(bad)
                    if is_active && segment::valid_frame_after(bytes, bad.offset).is_none() =>
                {
                    break
                }
                Err(bad) => {
                    return Err(JournalError::Corrupt {
                        segment: path.clone(),
                        offset: bad.offset,
                        what: bad.what,
                    })
                }
            }
        }
    }
    Ok(())
}
