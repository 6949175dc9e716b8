//! PostgreSQL's binary `COPY … TO STDOUT (FORMAT binary)` stream, cut into rows.
//!
//! The stream is a signature (`PGCOPY\n\xff\r\n\0`), a 32-bit flags word and a header
//! extension, then tuples: a 16-bit field count (−1 ends the stream) and per field a 32-bit
//! length (−1 is NULL) and that many bytes in the type's binary send format. All integers are
//! big-endian. The server sends the stream in chunks that cut tuples anywhere; [`Rows`] keeps
//! the unfinished tail of one chunk for the next.

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// A stream that is not binary COPY as PostgreSQL writes it.
#[derive(Debug, thiserror::Error)]
#[error("malformed binary COPY stream: {0}")]
pub struct CopyFormatError(pub String);

/// Cuts a binary COPY stream into rows, chunk by chunk.
#[derive(Debug, Default)]
pub struct Rows {
    pending: Vec<u8>,
    header_done: bool,
    ended: bool,
    /// Field value ranges of the current row, into the buffer handed to the callback.
    fields: Vec<Option<(usize, usize)>>,
}

impl Rows {
    pub fn new() -> Rows {
        Rows::default()
    }

    /// Whether the end-of-data marker was seen.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Feeds one chunk; calls `row` with each whole row's fields (`None` is NULL).
    pub fn feed(
        &mut self,
        chunk: &[u8],
        mut row: impl FnMut(&[Option<&[u8]>]) -> Result<(), CopyFormatError>,
    ) -> Result<(), CopyFormatError> {
        // Whole rows straight from the chunk when nothing is pending; else join first.
        let joined;
        let buf: &[u8] = if self.pending.is_empty() {
            chunk
        } else {
            self.pending.extend_from_slice(chunk);
            joined = std::mem::take(&mut self.pending);
            &joined
        };
        let mut at = 0;
        if !self.header_done {
            if buf.len() < SIGNATURE.len() + 8 {
                self.pending = buf.to_vec();
                return Ok(());
            }
            if &buf[..SIGNATURE.len()] != SIGNATURE {
                return Err(CopyFormatError("no PGCOPY signature".into()));
            }
            let ext = be_u32(&buf[SIGNATURE.len() + 4..]) as usize;
            let end = SIGNATURE.len() + 8 + ext;
            if buf.len() < end {
                self.pending = buf.to_vec();
                return Ok(());
            }
            at = end;
            self.header_done = true;
        }
        let mut values: Vec<Option<&[u8]>> = Vec::new();
        while !self.ended {
            match self.next_row(&buf[at..])? {
                None => break,
                Some(None) => {
                    self.ended = true;
                    at += 2;
                }
                Some(Some(len)) => {
                    values.clear();
                    values.extend(
                        self.fields
                            .iter()
                            .map(|f| f.map(|(s, e)| &buf[at + s..at + e])),
                    );
                    row(&values)?;
                    at += len;
                }
            }
        }
        if at < buf.len() {
            if self.ended {
                return Err(CopyFormatError("bytes after the end of the data".into()));
            }
            self.pending = buf[at..].to_vec();
        }
        Ok(())
    }

    /// The next row in `b`: `None` when `b` holds no whole row yet, `Some(None)` at the end
    /// marker, else the row's length with `self.fields` set.
    fn next_row(&mut self, b: &[u8]) -> Result<Option<Option<usize>>, CopyFormatError> {
        if b.len() < 2 {
            return Ok(None);
        }
        let n = i16::from_be_bytes([b[0], b[1]]);
        if n == -1 {
            return Ok(Some(None));
        }
        if n < 0 {
            return Err(CopyFormatError(format!("field count {n}")));
        }
        self.fields.clear();
        let mut at = 2;
        for _ in 0..n {
            if b.len() < at + 4 {
                return Ok(None);
            }
            let len = be_u32(&b[at..]) as i32;
            at += 4;
            if len == -1 {
                self.fields.push(None);
                continue;
            }
            if len < 0 {
                return Err(CopyFormatError(format!("field length {len}")));
            }
            let end = at + len as usize;
            if b.len() < end {
                return Ok(None);
            }
            self.fields.push(Some((at, end)));
            at = end;
        }
        Ok(Some(Some(at)))
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(rows: &[Vec<Option<&[u8]>>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        for r in rows {
            out.extend_from_slice(&(r.len() as i16).to_be_bytes());
            for f in r {
                match f {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(v) => {
                        out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                        out.extend_from_slice(v);
                    }
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[test]
    fn rows_come_whole_however_the_chunks_cut_them() {
        let rows: Vec<Vec<Option<&[u8]>>> = vec![
            vec![Some(b"\x00\x00\x00\x01"), None, Some(b"hello")],
            vec![Some(b"\x00\x00\x00\x02"), Some(b""), Some(b"x")],
        ];
        let bytes = stream(&rows);
        for cut in 1..bytes.len() {
            let mut got: Vec<Vec<Option<Vec<u8>>>> = Vec::new();
            let mut r = Rows::new();
            for chunk in bytes.chunks(cut) {
                r.feed(chunk, |f| {
                    got.push(f.iter().map(|v| v.map(<[u8]>::to_vec)).collect());
                    Ok(())
                })
                .unwrap();
            }
            assert!(r.ended(), "cut {cut}");
            let want: Vec<Vec<Option<Vec<u8>>>> = rows
                .iter()
                .map(|r| r.iter().map(|v| v.map(<[u8]>::to_vec)).collect())
                .collect();
            assert_eq!(got, want, "cut {cut}");
        }
    }

    #[test]
    fn a_stream_without_the_signature_is_refused() {
        let e = Rows::new()
            .feed(b"PGCOPY\nxxxxxxxxxxxxxxxx", |_| Ok(()))
            .unwrap_err();
        assert!(e.to_string().contains("signature"), "{e}");
    }
}
