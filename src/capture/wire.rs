//! The batch the Java bridge hands over in one JNI call (`BatchEncoder.java` is the writer):
//! a sequence of schema entries and event entries, each tagged and length-prefixed.

use crate::journal::event::{Cursor, DecodeError};

pub const TAG_SCHEMA: u8 = 1;
pub const TAG_EVENT: u8 = 2;

/// One entry of a batch, borrowing the batch bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A schema version the JVM numbered `jvm_id`; JSON `{"table","topic","key","row"}`.
    Schema { jvm_id: u32, json: &'a [u8] },
    /// An event body of a schema the JVM numbered `jvm_id`.
    Event { jvm_id: u32, body: &'a [u8] },
}

/// A malformed batch: a bridge bug, reported with the offset of the entry.
#[derive(Debug, thiserror::Error)]
#[error("bridge batch at byte {offset}: {problem}")]
pub struct WireError {
    pub offset: usize,
    #[source]
    pub problem: Problem,
}

#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The entry is cut short.
    #[error(transparent)]
    Short(#[from] DecodeError),
    #[error("unknown entry tag {0}")]
    UnknownTag(u8),
}

/// Splits a batch into entries.
pub fn entries(batch: &[u8]) -> Result<Vec<Entry<'_>>, WireError> {
    let mut out = Vec::new();
    let mut c = Cursor::new(batch);
    while !c.rest().is_empty() {
        let offset = batch.len() - c.rest().len();
        let bad = |e: DecodeError| WireError {
            offset,
            problem: Problem::Short(e),
        };
        let tag = c.u8().map_err(bad)?;
        let jvm_id = c.u32().map_err(bad)?;
        let len = c.u32().map_err(bad)? as usize;
        let bytes = c.take(len).map_err(bad)?;
        out.push(match tag {
            TAG_SCHEMA => Entry::Schema {
                jvm_id,
                json: bytes,
            },
            TAG_EVENT => Entry::Event {
                jvm_id,
                body: bytes,
            },
            other => {
                return Err(WireError {
                    offset,
                    problem: Problem::UnknownTag(other),
                })
            }
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tag: u8, id: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&id.to_le_bytes());
        v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn splits_schema_and_event_entries() {
        let mut batch = entry(TAG_SCHEMA, 1, b"{}");
        batch.extend(entry(TAG_EVENT, 1, b"abc"));
        assert_eq!(
            entries(&batch).unwrap(),
            vec![
                Entry::Schema {
                    jvm_id: 1,
                    json: b"{}"
                },
                Entry::Event {
                    jvm_id: 1,
                    body: b"abc"
                }
            ]
        );
    }

    #[test]
    fn a_short_or_unknown_entry_names_its_offset() {
        let mut batch = entry(TAG_EVENT, 1, b"abc");
        batch.extend(entry(9, 1, b""));
        let e = entries(&batch).unwrap_err();
        assert!(matches!(e.problem, Problem::UnknownTag(9)), "{e}");
        assert!(
            e.to_string().contains("byte 12: unknown entry tag 9"),
            "{e}"
        );
        let short = &entry(TAG_EVENT, 1, b"abc")[..10];
        let e = entries(short).unwrap_err();
        assert!(matches!(e.problem, Problem::Short(_)), "{e}");
        assert_eq!(e.offset, 0);
    }
}
