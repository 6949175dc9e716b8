//! Journal tests: framing, roll, torn tails, corruption, schema de-duplication, re-delivery,
//! and a property test of the writer against a simple model.

use std::path::Path;

use proptest::prelude::*;

use super::event::encode::varint;
use super::event::{self, EventHeader};
use super::*;

const SCHEMA_A: &[u8] = br#"{"table":"public.a","topic":"t.public.a","key":{"type":"struct","optional":false,"fields":[{"field":"id","type":"int64","optional":false}]},"row":{"type":"struct","optional":true,"fields":[{"field":"id","type":"int64","optional":false},{"field":"name","type":"string","optional":true}]}}"#;
const SCHEMA_B: &[u8] = br#"{"table":"public.b","topic":"t.public.b","key":null,"row":{"type":"struct","optional":true,"fields":[{"field":"v","type":"string","optional":true}]}}"#;

/// An event body for SCHEMA_A as the bridge would encode it: key {id}, after {id, name}.
fn body_a(op: u8, snapshot: bool, pos: Option<(u64, u64)>, id: i64, name: Option<&str>) -> Vec<u8> {
    let mut flags = event::KEY | event::AFTER;
    if snapshot {
        flags |= event::SNAPSHOT;
    }
    if pos.is_some() {
        flags |= event::PG_POSITION;
    }
    let mut b = vec![op, flags];
    b.extend_from_slice(&1_700_000_000_000_000i64.to_le_bytes());
    match pos {
        Some((c, l)) => {
            b.extend_from_slice(&c.to_le_bytes());
            b.extend_from_slice(&l.to_le_bytes());
        }
        None => varint(&mut b, 0),
    }
    let z = ((id << 1) ^ (id >> 63)) as u64;
    b.push(0); // key bitmap: id present
    varint(&mut b, z);
    b.push(if name.is_none() { 0b10 } else { 0 });
    varint(&mut b, z);
    if let Some(n) = name {
        varint(&mut b, n.len() as u64);
        b.extend_from_slice(n.as_bytes());
    }
    b
}

fn body_b(pos: (u64, u64)) -> Vec<u8> {
    let mut b = vec![b'c', event::PG_POSITION | event::AFTER];
    b.extend_from_slice(&0i64.to_le_bytes());
    b.extend_from_slice(&pos.0.to_le_bytes());
    b.extend_from_slice(&pos.1.to_le_bytes());
    b.push(0);
    varint(&mut b, 1);
    b.push(b'x');
    b
}

fn dump(dir: &Path, from: u64) -> Result<Vec<serde_json::Value>, JournalError> {
    let mut out = Vec::new();
    read_events(dir, from, |e| {
        out.push(event::to_json(e.seq, e.schema, e.body).expect("decodes"));
        Ok(true)
    })?;
    Ok(out)
}

fn seqs(dir: &Path) -> Vec<u64> {
    dump(dir, 0)
        .unwrap()
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect()
}

#[test]
fn appends_and_reads_back_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let mut j = Journal::open(tmp.path(), 1 << 20).unwrap();
    let a = j.schema_id(SCHEMA_A).unwrap();
    let e1 = body_a(b'c', false, Some((10, 5)), 1, Some("ünï"));
    let e2 = body_a(b'u', false, Some((10, 7)), 1, None);
    let out = j.append([(a, &e1[..]), (a, &e2[..])]).unwrap();
    assert_eq!((out.events, out.first_seq, out.last_seq), (2, 1, 2));
    let rows = dump(tmp.path(), 0).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["table"], "public.a");
    assert_eq!(rows[0]["op"], "c");
    assert_eq!(rows[0]["position"], "0/5");
    assert_eq!(rows[0]["key"], serde_json::json!({"id": 1}));
    assert_eq!(
        rows[0]["after"],
        serde_json::json!({"id": 1, "name": "ünï"})
    );
    assert_eq!(rows[1]["after"]["name"], serde_json::Value::Null);
    assert_eq!(rows[1]["seq"], 2);
    assert_eq!(rows[1]["ts"], "2023-11-14T22:13:20.000000Z");
    assert_eq!(dump(tmp.path(), 2).unwrap().len(), 1);
}

#[test]
fn sequence_survives_reopen_and_roll() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut j = Journal::open(tmp.path(), 4096).unwrap();
        let a = j.schema_id(SCHEMA_A).unwrap();
        for i in 0..200u64 {
            let e = body_a(
                b'c',
                false,
                Some((100 + i, 1)),
                i as i64,
                Some("some text to fill"),
            );
            j.append([(a, &e[..])]).unwrap();
        }
    }
    let segments = segment::list(tmp.path()).unwrap();
    assert!(segments.len() > 3, "rolled at 4096 bytes: {segments:?}");
    // Each segment names its first sequence and holds the schema it uses.
    for (first, path) in &segments {
        let bytes = segment::read_all(path).unwrap();
        let h = Header::decode(path, &bytes).unwrap();
        assert_eq!(h.first_seq, *first);
        let mut frames = Frames::new(&bytes);
        if let Some(f) = frames.next().unwrap() {
            assert!(
                matches!(f, Frame::Schema { .. }),
                "segment starts with its schema"
            );
        }
    }
    let mut j = Journal::open(tmp.path(), 4096).unwrap();
    assert_eq!(j.next_seq(), 201);
    let a = j.schema_id(SCHEMA_A).unwrap();
    let e = body_a(b'c', false, Some((1000, 1)), 1, None);
    assert_eq!(j.append([(a, &e[..])]).unwrap().first_seq, 201);
    assert_eq!(seqs(tmp.path()), (1..=201).collect::<Vec<_>>());
}

#[test]
fn a_schema_is_stored_once_per_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let mut j = Journal::open(tmp.path(), 1 << 20).unwrap();
    let a = j.schema_id(SCHEMA_A).unwrap();
    let b = j.schema_id(SCHEMA_B).unwrap();
    assert_ne!(a, b);
    assert_eq!(j.schema_id(SCHEMA_A).unwrap(), a, "same JSON, same id");
    for i in 0..50u64 {
        let ea = body_a(b'c', false, Some((i + 1, 1)), i as i64, Some("x"));
        let eb = body_b((i + 1, 2));
        j.append([(a, &ea[..]), (b, &eb[..])]).unwrap();
    }
    let (_, path) = segment::list(tmp.path()).unwrap().pop().unwrap();
    let bytes = segment::read_all(&path).unwrap();
    let mut frames = Frames::new(&bytes);
    let mut schema_frames = 0;
    let mut events = 0;
    while let Some(f) = frames.next().unwrap() {
        match f {
            Frame::Schema { .. } => schema_frames += 1,
            Frame::Event { .. } => events += 1,
        }
    }
    assert_eq!((schema_frames, events), (2, 100));
    // The per-event cost is the body plus a 21-byte frame, not the schema.
    let per_event = (bytes.len() - HEADER_LEN - SCHEMA_A.len() - SCHEMA_B.len()) / events;
    assert!(per_event < 60, "{per_event} bytes per event");

    // After reopening, the schema is known again and not re-written into the same segment.
    drop(j);
    let mut j = Journal::open(tmp.path(), 1 << 20).unwrap();
    assert_eq!(j.schema_id(SCHEMA_A).unwrap(), a);
    let e = body_a(b'c', false, Some((1000, 1)), 1, None);
    j.append([(a, &e[..])]).unwrap();
    let bytes2 = segment::read_all(&path).unwrap();
    assert_eq!(
        bytes2.len() - bytes.len(),
        segment::FRAME_HEADER_LEN + 13 + e.len()
    );
}

#[test]
fn redelivered_streaming_events_are_dropped_by_position() {
    let tmp = tempfile::tempdir().unwrap();
    let mut j = Journal::open(tmp.path(), 1 << 20).unwrap();
    let a = j.schema_id(SCHEMA_A).unwrap();
    // Two interleaved transactions: change LSNs go backwards, (commit, change) does not.
    let t1 = [
        body_a(b'c', false, Some((0, 50)), 1, None),
        body_a(b'c', false, Some((0, 90)), 2, None),
    ];
    let t2 = [
        body_a(b'c', false, Some((100, 60)), 3, None),
        body_a(b'c', false, Some((100, 70)), 4, None),
    ];
    j.append(t1.iter().map(|e| (a, &e[..]))).unwrap();
    j.append(t2.iter().map(|e| (a, &e[..]))).unwrap();
    drop(j);

    // Restart: Debezium re-delivers from inside t1, then a new transaction follows.
    let mut j = Journal::open(tmp.path(), 1 << 20).unwrap();
    let a = j.schema_id(SCHEMA_A).unwrap();
    let t3 = body_a(b'c', false, Some((120, 65)), 5, None);
    let redelivery = [&t1[1], &t2[0], &t2[1], &t3];
    let out = j.append(redelivery.iter().map(|e| (a, &e[..]))).unwrap();
    assert_eq!((out.events, out.duplicates), (1, 3));
    let ids: Vec<i64> = dump(tmp.path(), 0)
        .unwrap()
        .iter()
        .map(|v| v["key"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);

    // Snapshot reads and position-less events are always kept.
    let r = body_a(b'r', true, Some((0, 1)), 9, None);
    let none = body_a(b'c', false, None, 10, None);
    let out = j.append([(a, &r[..]), (a, &none[..])]).unwrap();
    assert_eq!((out.events, out.duplicates), (2, 0));
}

#[test]
fn events_sharing_a_position_are_kept_and_deduplicated_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    // A key-changing update: a delete and a create from one WAL record, one position.
    let d = body_a(b'd', false, Some((40, 41)), 1, None);
    let c = body_a(b'c', false, Some((40, 41)), 2, None);
    let next = body_a(b'c', false, Some((50, 51)), 3, None);
    {
        let mut j = Journal::open(tmp.path(), 1 << 20).unwrap();
        let a = j.schema_id(SCHEMA_A).unwrap();
        // Crash after the delete was journaled but before the create was.
        assert_eq!(j.append([(a, &d[..])]).unwrap().events, 1);
    }
    let mut j = Journal::open(tmp.path(), 1 << 20).unwrap();
    let a = j.schema_id(SCHEMA_A).unwrap();
    let out = j
        .append([(a, &d[..]), (a, &c[..]), (a, &next[..])])
        .unwrap();
    assert_eq!(
        (out.events, out.duplicates),
        (2, 1),
        "the create is new, the delete is not"
    );
    drop(j);
    let mut j = Journal::open(tmp.path(), 1 << 20).unwrap();
    let a = j.schema_id(SCHEMA_A).unwrap();
    let out = j
        .append([(a, &d[..]), (a, &c[..]), (a, &next[..])])
        .unwrap();
    assert_eq!((out.events, out.duplicates), (0, 3));
    let ops: Vec<String> = dump(tmp.path(), 0)
        .unwrap()
        .iter()
        .map(|v| v["op"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ops, vec!["d", "c", "c"]);
}

#[test]
fn dedup_state_survives_rolls_into_empty_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let mut j = Journal::open(tmp.path(), 4096).unwrap();
    let a = j.schema_id(SCHEMA_A).unwrap();
    let e = body_a(b'c', false, Some((500, 10)), 1, None);
    j.append([(a, &e[..])]).unwrap();
    j.roll().unwrap();
    drop(j);
    // Delete every sealed segment, as journal GC will: the active header still knows.
    let segments = segment::list(tmp.path()).unwrap();
    for (_, p) in &segments[..segments.len() - 1] {
        std::fs::remove_file(p).unwrap();
    }
    let mut j = Journal::open(tmp.path(), 4096).unwrap();
    assert_eq!(j.next_seq(), 2);
    let a = j.schema_id(SCHEMA_A).unwrap();
    assert_eq!(j.append([(a, &e[..])]).unwrap().duplicates, 1);
}

#[test]
fn a_new_stream_after_forgetting_marks_is_kept_and_the_forgetting_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let mut j = Journal::open(tmp.path(), 4096).unwrap();
    let a = j.schema_id(SCHEMA_A).unwrap();
    let old = body_a(b'c', false, Some((500, 10)), 1, None);
    j.append([(a, &old[..])]).unwrap();
    // A new slot's first transaction: no previous commit position, an LSN the old stream had.
    let first = body_a(b'u', false, Some((0, 600)), 1, None);
    j.forget_marks().unwrap();
    drop(j);
    let mut j = Journal::open(tmp.path(), 4096).unwrap();
    assert_eq!(j.last_mark(), None, "the new segment starts without a mark");
    let a = j.schema_id(SCHEMA_A).unwrap();
    let out = j.append([(a, &first[..])]).unwrap();
    assert_eq!((out.events, out.duplicates), (1, 0));
    // From there on, re-deliveries (after a restart) are dropped again.
    drop(j);
    let mut j = Journal::open(tmp.path(), 4096).unwrap();
    let a = j.schema_id(SCHEMA_A).unwrap();
    assert_eq!(j.append([(a, &first[..])]).unwrap().duplicates, 1);
    // An empty active segment is replaced.
    j.roll().unwrap();
    j.forget_marks().unwrap();
    assert_eq!(seqs(tmp.path()), vec![1, 2]);
    assert_eq!(j.append([(a, &first[..])]).unwrap().events, 1);
}

#[test]
fn a_torn_tail_is_truncated_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let mut j = Journal::open(tmp.path(), 1 << 20).unwrap();
    let a = j.schema_id(SCHEMA_A).unwrap();
    for i in 0..3u64 {
        let e = body_a(b'c', false, Some((i + 1, 1)), i as i64, Some("abc"));
        j.append([(a, &e[..])]).unwrap();
    }
    drop(j);
    let (_, path) = segment::list(tmp.path()).unwrap().pop().unwrap();
    let good_len = std::fs::metadata(&path).unwrap().len();
    // A crash mid-write: half a frame, then zeros.
    let mut bytes = std::fs::read(&path).unwrap();
    let last_frame = bytes[bytes.len() - 40..].to_vec();
    bytes.extend_from_slice(&last_frame[..20]);
    bytes.extend_from_slice(&[0u8; 100]);
    std::fs::write(&path, &bytes).unwrap();

    // Readers stop at the tear of the active segment.
    assert_eq!(seqs(tmp.path()), vec![1, 2, 3]);
    let mut j = Journal::open(tmp.path(), 1 << 20).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
    assert_eq!(j.next_seq(), 4);
    let a = j.schema_id(SCHEMA_A).unwrap();
    let e = body_a(b'c', false, Some((9, 1)), 9, None);
    j.append([(a, &e[..])]).unwrap();
    assert_eq!(seqs(tmp.path()), vec![1, 2, 3, 4]);
}

/// A one-segment journal of five events, and its active segment's path and frame offsets.
fn active_journal(dir: &Path) -> (PathBuf, Vec<usize>) {
    let mut j = Journal::open(dir, 1 << 20).unwrap();
    let a = j.schema_id(SCHEMA_A).unwrap();
    for i in 0..5u64 {
        let e = body_a(b'c', false, Some((i + 1, 1)), i as i64, Some("payload"));
        j.append([(a, &e[..])]).unwrap();
    }
    drop(j);
    let (_, path) = segment::list(dir).unwrap().pop().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let mut frames = Frames::new(&bytes);
    let mut offsets = Vec::new();
    loop {
        let at = frames.offset() as usize;
        match frames.next() {
            Ok(Some(_)) => offsets.push(at),
            _ => break,
        }
    }
    (path, offsets)
}

#[test]
fn the_active_segment_tells_a_torn_tail_from_corruption() {
    // A torn length: the last frame's header cut short.
    let tmp = tempfile::tempdir().unwrap();
    let (path, offsets) = active_journal(tmp.path());
    let last = *offsets.last().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..last + 3]).unwrap();
    let j = Journal::open(tmp.path(), 1 << 20).unwrap();
    assert_eq!(
        j.next_seq(),
        5,
        "the torn frame goes, the four before it stay"
    );
    drop(j);

    // A torn payload: the last frame cut short.
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = active_journal(tmp.path());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    assert_eq!(Journal::open(tmp.path(), 1 << 20).unwrap().next_seq(), 5);

    // A flipped bit in the last complete frame: nothing whole after it, a torn tail.
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = active_journal(tmp.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 4;
    bytes[at] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(Journal::open(tmp.path(), 1 << 20).unwrap().next_seq(), 5);

    // A flipped bit mid-segment: good frames follow, so it is corruption. Opening refuses,
    // naming the segment and offset, and the file keeps every byte.
    let tmp = tempfile::tempdir().unwrap();
    let (path, offsets) = active_journal(tmp.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let third = offsets[3];
    bytes[third + 12] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let err = Journal::open(tmp.path(), 1 << 20).err().expect("refuses");
    let msg = err.to_string();
    assert!(matches!(err, JournalError::Corrupt { .. }), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(&format!("offset {third}")), "{msg}");
    assert!(msg.contains("not a torn tail"), "{msg}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing truncated");
    // Readers refuse too, instead of stopping at the bad frame as at a tail.
    assert!(matches!(
        dump(tmp.path(), 0),
        Err(JournalError::Corrupt { .. })
    ));
}

/// Writes a two-segment journal and returns the sealed segment's path.
fn sealed_journal(dir: &Path) -> PathBuf {
    let mut j = Journal::open(dir, 1 << 20).unwrap();
    let a = j.schema_id(SCHEMA_A).unwrap();
    for i in 0..10u64 {
        let e = body_a(b'c', false, Some((i + 1, 1)), i as i64, Some("payload"));
        j.append([(a, &e[..])]).unwrap();
    }
    j.roll().unwrap();
    let e = body_a(b'c', false, Some((99, 1)), 99, None);
    j.append([(a, &e[..])]).unwrap();
    segment::list(dir).unwrap()[0].1.clone()
}

#[test]
fn a_flipped_bit_in_a_sealed_segment_is_an_error_naming_segment_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let sealed = sealed_journal(tmp.path());
    let mut bytes = std::fs::read(&sealed).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x01;
    std::fs::write(&sealed, &bytes).unwrap();
    let err = dump(tmp.path(), 0).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, JournalError::Corrupt { .. }), "{msg}");
    assert!(msg.contains(&sealed.display().to_string()), "{msg}");
    assert!(msg.contains("CRC mismatch"), "{msg}");
    assert!(msg.contains("at offset"), "{msg}");
}

#[test]
fn a_truncated_sealed_segment_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let sealed = sealed_journal(tmp.path());
    let len = std::fs::metadata(&sealed).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&sealed)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let msg = dump(tmp.path(), 0).unwrap_err().to_string();
    assert!(msg.contains("cut short"), "{msg}");
}

#[test]
fn a_bad_header_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let sealed = sealed_journal(tmp.path());
    let mut bytes = std::fs::read(&sealed).unwrap();
    bytes[9] ^= 0xFF; // first_seq
    std::fs::write(&sealed, &bytes).unwrap();
    let msg = dump(tmp.path(), 0).unwrap_err().to_string();
    assert!(msg.contains("header CRC mismatch"), "{msg}");
}

#[test]
fn a_second_writer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let _j = Journal::open(tmp.path(), 1 << 20).unwrap();
    let err = Journal::open(tmp.path(), 1 << 20).err().expect("locked");
    assert!(matches!(err, JournalError::Locked { .. }), "{err}");
}

#[test]
fn a_malformed_body_is_rejected_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut j = Journal::open(tmp.path(), 1 << 20).unwrap();
    let a = j.schema_id(SCHEMA_A).unwrap();
    let good = body_a(b'c', false, Some((1, 1)), 1, None);
    let err = j.append([(a, &good[..]), (a, &[b'c'][..])]).unwrap_err();
    assert!(matches!(err, JournalError::BadBatch(_)), "{err}");
    assert_eq!(j.next_seq(), 1);
    assert!(seqs(tmp.path()).is_empty());
    assert!(j.schema_id(b"not json").is_err());
}

#[test]
fn event_header_reads_position_and_flags() {
    let e = body_a(b'r', true, Some((7, 8)), 1, None);
    let h = EventHeader::parse(&e).unwrap();
    assert!(h.is_snapshot());
    assert_eq!(
        h.position,
        Some(Position {
            commit_lsn: 7,
            change_lsn: 8
        })
    );
}

// ---- model test ------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Action {
    /// A batch of events, each with its position (None: snapshot read). Positions are drawn
    /// from a small range so that many repeat, as re-delivery does.
    Append(Vec<Option<(u64, u64)>>),
    Roll,
    Reopen,
    /// Cut this percentage of the active segment's last frame, then reopen (a crash mid-write).
    Tear(u8),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => prop::collection::vec(
            prop::option::weighted(0.8, (0u64..40, 0u64..40)),
            1..6
        ).prop_map(Action::Append),
        1 => Just(Action::Roll),
        1 => Just(Action::Reopen),
        1 => (1u8..=100).prop_map(Action::Tear),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Failing cases are kept beside this file (tests.regressions), not at the top level.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    })]

    /// The journal holds exactly what a model says: each appended event once, in order, with
    /// consecutive sequence numbers; re-delivered positions dropped; a torn tail loses only
    /// the last batch (which Debezium would re-deliver).
    #[test]
    fn journal_matches_model(actions in prop::collection::vec(action(), 1..40)) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut j = Some(Journal::open(dir, 512).unwrap());
        // Model: the ids (key.id) of the events held, and the last streaming position.
        let mut held: Vec<i64> = Vec::new();
        let mut last: Option<Mark> = None;
        // The last streaming event delivered to the current "process".
        let mut stream: Option<Mark> = None;
        // Length of the active segment's last event frame, while it is the file's tail.
        let mut last_frame_len: Option<u64> = None;
        let mut next_id = 0i64;
        for act in actions {
            match act {
                Action::Append(batch) => {
                    let journal = j.as_mut().unwrap();
                    let a = journal.schema_id(SCHEMA_A).unwrap();
                    let mut bodies = Vec::new();
                    let bodies_first_id = next_id + 1;
                    let mut kept = Vec::new();
                    for pos in batch {
                        next_id += 1;
                        let snapshot = pos.is_none();
                        let p = pos.unwrap_or((0, 0));
                        bodies.push(body_a(b'c', snapshot, Some(p), next_id, Some("v")));
                        if snapshot {
                            kept.push(next_id);
                            continue;
                        }
                        let mark = Mark::next(stream, Position { commit_lsn: p.0, change_lsn: p.1 });
                        stream = Some(mark);
                        if last.is_none_or(|l| mark > l) {
                            last = Some(mark);
                            kept.push(next_id);
                        }
                    }
                    let segment_before = journal.active_first_seq;
                    let out = journal.append(bodies.iter().map(|b| (a, &b[..]))).unwrap();
                    if journal.active_first_seq != segment_before {
                        last_frame_len = None; // rolled: the tail is now a bare header
                    }
                    prop_assert_eq!(out.events, kept.len());
                    if let Some(i) = kept.last() {
                        let body_len = bodies[(*i - bodies_first_id) as usize].len() as u64;
                        last_frame_len = Some(segment::FRAME_HEADER_LEN as u64 + 13 + body_len);
                    }
                    held.extend(kept);
                }
                Action::Roll => {
                    let journal = j.as_mut().unwrap();
                    let before = journal.active_first_seq;
                    journal.roll().unwrap();
                    if journal.active_first_seq != before {
                        last_frame_len = None;
                    }
                }
                Action::Reopen => {
                    drop(j.take()); // release the writer lock before reopening
                    j = Some(Journal::open(dir, 512).unwrap());
                    stream = None;
                }
                Action::Tear(percent) => {
                    drop(j.take()); // release the writer lock before reopening
                    if let Some(frame_len) = last_frame_len.take() {
                        // Cut into the last frame only: what a crash mid-write can do.
                        let cut = (frame_len * percent as u64 / 100).max(1);
                        let (_, path) = segment::list(dir).unwrap().pop().unwrap();
                        let len = std::fs::metadata(&path).unwrap().len();
                        OpenOptions::new().write(true).open(&path).unwrap()
                            .set_len(len - cut).unwrap();
                        held.pop();
                        last = last_mark_of(dir);
                    }
                    j = Some(Journal::open(dir, 512).unwrap());
                    stream = None;
                    let journal = j.as_ref().unwrap();
                    prop_assert_eq!(journal.last_mark(), last);
                    prop_assert_eq!(journal.next_seq(), held.len() as u64 + 1);
                }
            }
            let rows = dump(dir, 0).unwrap();
            let ids: Vec<i64> = rows.iter().map(|r| r["key"]["id"].as_i64().unwrap()).collect();
            prop_assert_eq!(&ids, &held);
            let seqs: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
            prop_assert_eq!(seqs, (1..=held.len() as u64).collect::<Vec<_>>());
        }
    }
}

/// The mark of the last streaming event journaled, read independently of the writer.
fn last_mark_of(dir: &Path) -> Option<Mark> {
    let mut last = None;
    read_events(dir, 0, |e| {
        let h = EventHeader::parse(e.body).unwrap();
        if !h.is_snapshot() {
            if let Some(p) = h.position {
                last = Some(Mark::next(last, p));
            }
        }
        Ok(true)
    })
    .unwrap();
    last
}
