//! The comparison itself, free of I/O: two row streams in key order merged key by key, each
//! pair of rows compared value by value with the column's rule, and the tally of what differs.
//!
//! A row is the canonical texts of its fields (`None`: NULL), keys first (see [`super::plan`]).
//! Both sides must arrive in ascending key order under [`KeyOrder`]; a row that does not is an
//! error ([`Merge::step`]), never a reported difference, so a collation that sorts otherwise
//! cannot pass for divergence.
//!
//! A table without a key has no order to merge by, and may hold equal rows: its rows are
//! counted as a [`Multiset`], each reduced to one form per value ([`canonical`]), and a row the
//! source holds more often than the target is missing there, one it holds less often extra.

use std::cmp::Ordering;

use super::plan::{KeyOrder, TablePlan, ValueCmp};

pub type Row = Vec<Option<Vec<u8>>>;

/// A side whose rows cannot be merged: never a difference, always an error.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{side} returned key {key} after {last}: its key order differs from the other side's (a target key column with another collation than the binary one apply creates?)")]
    OutOfOrder {
        side: &'static str,
        key: String,
        last: String,
    },
    #[error("{side} returned a NULL key value")]
    NullKey { side: &'static str },
    #[error("key column `{column}` holds {value:?}, not an integer")]
    NotInteger { column: String, value: String },
}

/// PostgreSQL's COPY text that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the COPY stream ended inside a row")]
    Truncated,
    #[error("a COPY field ends with a lone backslash")]
    LoneBackslash,
    #[error("a COPY row has {found} fields, expected {expected}")]
    Width { found: usize, expected: usize },
}

/// How many keys of each kind a report shows.
pub const FIRST_KEYS: usize = 10;

/// What a table's comparison found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Rows read from the source.
    pub source_rows: u64,
    /// Rows read from the target.
    pub target_rows: u64,
    /// Keys in the source, not in the target.
    pub missing: u64,
    /// Keys in the target, not in the source.
    pub extra: u64,
    /// Keys on both sides whose values differ.
    pub different: u64,
    pub first_missing: Vec<String>,
    pub first_extra: Vec<String>,
    /// Key and the columns that differ.
    pub first_different: Vec<(String, Vec<String>)>,
    /// Per column, how many rows differ in it.
    pub columns: std::collections::BTreeMap<String, u64>,
    /// Every key missing or different in the target (canonical texts), and every key extra
    /// there, up to the cap given to [`Merge::new`] (both together).
    pub keys: Vec<Vec<Vec<u8>>>,
    pub extra_keys: Vec<Vec<Vec<u8>>>,
    /// More keys differed than the cap kept.
    pub keys_overflow: bool,
    /// A digest of every difference (key and both rows), independent of order: two passes
    /// with the same digest saw the same rows differ the same way.
    pub digest: u64,
}

impl Tally {
    /// Adds the findings of a pass over other keys of the same table.
    pub fn absorb(&mut self, o: Tally) {
        self.source_rows += o.source_rows;
        self.target_rows += o.target_rows;
        self.missing += o.missing;
        self.extra += o.extra;
        self.different += o.different;
        let n = FIRST_KEYS.saturating_sub(self.first_missing.len());
        self.first_missing
            .extend(o.first_missing.into_iter().take(n));
        let n = FIRST_KEYS.saturating_sub(self.first_extra.len());
        self.first_extra.extend(o.first_extra.into_iter().take(n));
        let n = FIRST_KEYS.saturating_sub(self.first_different.len());
        self.first_different
            .extend(o.first_different.into_iter().take(n));
        for (c, n) in o.columns {
            *self.columns.entry(c).or_default() += n;
        }
        self.keys.extend(o.keys);
        self.extra_keys.extend(o.extra_keys);
        self.keys_overflow |= o.keys_overflow;
        self.digest = self.digest.wrapping_add(o.digest);
    }

    pub fn differences(&self) -> u64 {
        self.missing + self.extra + self.different
    }
}

/// The rows of a table without a key on both sides, counted: the source's add, the target's
/// take away, so what is left over differs.
pub struct Multiset<'p> {
    plan: &'p TablePlan,
    rules: Vec<ValueCmp>,
    /// Per row (its values' forms): the count, and the row as first read, to show.
    counts: std::collections::HashMap<Row, (i64, Row)>,
    source_rows: u64,
    target_rows: u64,
}

impl<'p> Multiset<'p> {
    pub fn new(plan: &'p TablePlan) -> Self {
        Multiset {
            plan,
            rules: plan.rules(),
            counts: Default::default(),
            source_rows: 0,
            target_rows: 0,
        }
    }

    /// Counts a row of the source (`source`) or of the target.
    pub fn add(&mut self, row: &Row, source: bool) {
        let key: Row = self
            .rules
            .iter()
            .zip(row)
            .map(|(&cmp, v)| canonical(cmp, v.as_deref(), source))
            .collect();
        let (n, _) = self.counts.entry(key).or_insert_with(|| (0, row.clone()));
        if source {
            *n += 1;
            self.source_rows += 1;
        } else {
            *n -= 1;
            self.target_rows += 1;
        }
    }

    /// What differs. A multiset has no keys to re-check or repair one by one: any difference
    /// counts as more than the keys kept (`keys_overflow`), so a re-check reads the table
    /// whole.
    pub fn tally(self) -> Tally {
        let names = self.plan.names();
        let show = |row: &Row| {
            names
                .iter()
                .zip(row)
                .map(|(n, v)| match v {
                    Some(v) => format!("{n}={}", String::from_utf8_lossy(v)),
                    None => format!("{n}=NULL"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut t = Tally {
            source_rows: self.source_rows,
            target_rows: self.target_rows,
            ..Tally::default()
        };
        let mut differing: Vec<(&Row, i64)> = self
            .counts
            .values()
            .filter(|(n, _)| *n != 0)
            .map(|(n, row)| (row, *n))
            .collect();
        differing.sort();
        for (row, n) in differing {
            let (count, first) = if n > 0 {
                (&mut t.missing, &mut t.first_missing)
            } else {
                (&mut t.extra, &mut t.first_extra)
            };
            *count += n.unsigned_abs();
            if first.len() < FIRST_KEYS {
                first.push(show(row));
            }
            t.digest = t.digest.wrapping_add(fnv(&format!("{n}\0{}", show(row))));
        }
        t.keys_overflow = t.differences() > 0;
        t
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One form of a canonical text under `cmp` (of the source's side, or the target's): two
/// texts hold the same value exactly when their forms are equal ([`same`], and the multiset
/// of a table without a key).
pub fn canonical(cmp: ValueCmp, v: Option<&[u8]>, source: bool) -> Option<Vec<u8>> {
    let v = v?;
    // A text that does not parse keeps its bytes behind a NUL, which no form starts with.
    let raw = || [&[0u8][..], v].concat();
    let Ok(s) = std::str::from_utf8(v) else {
        return Some(raw());
    };
    let form = match cmp {
        ValueCmp::Exact => None,
        ValueCmp::F32 => s.parse::<f32>().ok().map(|f| {
            if f.is_nan() {
                "NaN".to_string()
            } else {
                format!("f32:{}", f.to_bits())
            }
        }),
        ValueCmp::F64 => s.parse::<f64>().ok().map(|f| {
            if f.is_nan() {
                "NaN".to_string()
            } else {
                format!("f64:{}", f.to_bits())
            }
        }),
        ValueCmp::Decimal => Some(canonical_decimal(s)),
        ValueCmp::Json => serde_json::from_str::<serde_json::Value>(s)
            .ok()
            .map(|j| sorted_json(j).to_string()),
        ValueCmp::TimeTz if source => s
            .parse::<i64>()
            .ok()
            .map(|us| us.rem_euclid(DAY_US).to_string()),
        ValueCmp::TimeTz => utc_time_of_day_us(s).map(|us| us.to_string()),
    };
    Some(form.map_or_else(raw, String::into_bytes))
}

/// `v` with every object's keys in order (serde_json keeps them as they came).
fn sorted_json(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut entries: Vec<(String, serde_json::Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sorted_json(v)))
                    .collect(),
            )
        }
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(sorted_json).collect())
        }
        other => other,
    }
}

/// Which side(s) the merge consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    Source,
    Target,
    Both,
    Done,
}

/// The merge of two key-ordered streams, one step per call.
pub struct Merge<'p> {
    plan: &'p TablePlan,
    pub tally: Tally,
    keys_cap: usize,
    last_source: Option<Vec<Vec<u8>>>,
    last_target: Option<Vec<Vec<u8>>>,
}

impl<'p> Merge<'p> {
    pub fn new(plan: &'p TablePlan, keys_cap: usize) -> Self {
        Merge {
            plan,
            tally: Tally::default(),
            keys_cap,
            last_source: None,
            last_target: None,
        }
    }

    /// Compares the heads of both streams (`None`: that stream is over), records what it
    /// finds, and says which head to replace. `Err` when a stream is not in key order.
    pub fn step(
        &mut self,
        source: Option<&Row>,
        target: Option<&Row>,
    ) -> Result<Advance, CompareError> {
        let n = self.plan.keys.len();
        let (advance, seen_source, seen_target) = match (source, target) {
            (None, None) => return Ok(Advance::Done),
            (Some(s), None) => {
                self.remember(0, Some(s), None);
                self.missing(&s[..n]);
                (Advance::Source, Some(s), None)
            }
            (None, Some(t)) => {
                self.remember(1, None, Some(t));
                self.extra(&t[..n]);
                (Advance::Target, None, Some(t))
            }
            (Some(s), Some(t)) => match self.cmp_keys(&s[..n], &t[..n])? {
                Ordering::Less => {
                    self.remember(0, Some(s), None);
                    self.missing(&s[..n]);
                    (Advance::Source, Some(s), None)
                }
                Ordering::Greater => {
                    self.remember(1, None, Some(t));
                    self.extra(&t[..n]);
                    (Advance::Target, None, Some(t))
                }
                Ordering::Equal => {
                    self.pair(s, t);
                    (Advance::Both, Some(s), Some(t))
                }
            },
        };
        if let Some(s) = seen_source {
            self.tally.source_rows += 1;
            let key = key_of(&s[..n], "the source")?;
            if let Some(last) = &self.last_source {
                if self.cmp_key_bytes(last, &key)? != Ordering::Less {
                    return Err(self.out_of_order("the source", last, &key));
                }
            }
            self.last_source = Some(key);
        }
        if let Some(t) = seen_target {
            self.tally.target_rows += 1;
            let key = key_of(&t[..n], "the target")?;
            if let Some(last) = &self.last_target {
                if self.cmp_key_bytes(last, &key)? != Ordering::Less {
                    return Err(self.out_of_order("the target", last, &key));
                }
            }
            self.last_target = Some(key);
        }
        Ok(advance)
    }

    fn out_of_order(&self, side: &'static str, last: &[Vec<u8>], key: &[Vec<u8>]) -> CompareError {
        CompareError::OutOfOrder {
            side,
            key: show_key(self.plan, key),
            last: show_key(self.plan, last),
        }
    }

    fn cmp_keys(
        &self,
        a: &[Option<Vec<u8>>],
        b: &[Option<Vec<u8>>],
    ) -> Result<Ordering, CompareError> {
        let a = key_of(a, "the source")?;
        let b = key_of(b, "the target")?;
        self.cmp_key_bytes(&a, &b)
    }

    fn cmp_key_bytes(&self, a: &[Vec<u8>], b: &[Vec<u8>]) -> Result<Ordering, CompareError> {
        for ((k, x), y) in self.plan.keys.iter().zip(a).zip(b) {
            let o = match k.order {
                KeyOrder::Bytes => x.cmp(y),
                KeyOrder::Int => {
                    let p = |v: &[u8]| {
                        std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.parse::<i128>().ok())
                            .ok_or_else(|| CompareError::NotInteger {
                                column: k.column.name.clone(),
                                value: String::from_utf8_lossy(v).into_owned(),
                            })
                    };
                    p(x)?.cmp(&p(y)?)
                }
                KeyOrder::Decimal => {
                    cmp_decimal(&String::from_utf8_lossy(x), &String::from_utf8_lossy(y))
                }
            };
            if o != Ordering::Equal {
                return Ok(o);
            }
        }
        Ok(Ordering::Equal)
    }

    fn keep_key(&mut self, key: &[Option<Vec<u8>>], extra: bool) {
        if self.tally.keys.len() + self.tally.extra_keys.len() < self.keys_cap {
            let key = key.iter().map(|v| v.clone().unwrap_or_default()).collect();
            if extra {
                self.tally.extra_keys.push(key);
            } else {
                self.tally.keys.push(key);
            }
        } else {
            self.tally.keys_overflow = true;
        }
    }

    fn remember(&mut self, kind: u8, source: Option<&Row>, target: Option<&Row>) {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        (kind, source, target).hash(&mut h);
        self.tally.digest = self.tally.digest.wrapping_add(h.finish());
    }

    fn missing(&mut self, key: &[Option<Vec<u8>>]) {
        self.tally.missing += 1;
        if self.tally.first_missing.len() < FIRST_KEYS {
            let shown = show_key_opt(self.plan, key);
            self.tally.first_missing.push(shown);
        }
        self.keep_key(key, false);
    }

    fn extra(&mut self, key: &[Option<Vec<u8>>]) {
        self.tally.extra += 1;
        if self.tally.first_extra.len() < FIRST_KEYS {
            let shown = show_key_opt(self.plan, key);
            self.tally.first_extra.push(shown);
        }
        self.keep_key(key, true);
    }

    fn pair(&mut self, s: &Row, t: &Row) {
        let n = self.plan.keys.len();
        let differing: Vec<&str> = self
            .plan
            .columns
            .iter()
            .enumerate()
            .filter(|(i, c)| !same(c.cmp, s[n + i].as_deref(), t[n + i].as_deref()))
            .map(|(_, c)| c.name.as_str())
            .collect();
        if differing.is_empty() {
            return;
        }
        self.remember(2, Some(s), Some(t));
        self.tally.different += 1;
        for c in &differing {
            *self.tally.columns.entry(c.to_string()).or_default() += 1;
        }
        if self.tally.first_different.len() < FIRST_KEYS {
            self.tally.first_different.push((
                show_key_opt(self.plan, &s[..n]),
                differing.iter().map(|c| c.to_string()).collect(),
            ));
        }
        self.keep_key(&s[..n], false);
    }
}

fn key_of(key: &[Option<Vec<u8>>], side: &'static str) -> Result<Vec<Vec<u8>>, CompareError> {
    key.iter()
        .map(|v| v.clone().ok_or(CompareError::NullKey { side }))
        .collect()
}

/// `id=7` or `a=1, b=x`.
pub fn show_key(plan: &TablePlan, key: &[Vec<u8>]) -> String {
    plan.keys
        .iter()
        .zip(key)
        .map(|(k, v)| format!("{}={}", k.column.name, String::from_utf8_lossy(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn show_key_opt(plan: &TablePlan, key: &[Option<Vec<u8>>]) -> String {
    plan.keys
        .iter()
        .zip(key)
        .map(|(k, v)| {
            format!(
                "{}={}",
                k.column.name,
                v.as_deref()
                    .map_or("NULL".into(), |v| String::from_utf8_lossy(v).into_owned())
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether two canonical texts of a column hold the same value under `cmp`: the source's
/// `a`, the target's `b`. Equal bytes are; otherwise their forms ([`canonical`]) decide.
pub fn same(cmp: ValueCmp, a: Option<&[u8]>, b: Option<&[u8]>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => x == y || canonical(cmp, a, true) == canonical(cmp, b, false),
        _ => false,
    }
}

const DAY_US: i64 = 86_400_000_000;

/// `HH:MM:SS[.ffffff](Z|±HH[:MM])` (Debezium's ZonedTime) → µs of the UTC day.
fn utc_time_of_day_us(s: &str) -> Option<i64> {
    let split = s
        .char_indices()
        .skip(8)
        .find(|(_, c)| matches!(c, 'Z' | '+' | '-'))
        .map(|(i, _)| i)?;
    let (time, zone) = s.split_at(split);
    let mut parts = time.splitn(3, ':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let sec = parts.next()?;
    let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let s: i64 = whole.parse().ok()?;
    let frac_us: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").get(..6)?.parse().ok()?
    };
    let offset_s = if zone == "Z" {
        0
    } else {
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let z = &zone[1..];
        let (zh, zm) = z.split_once(':').unwrap_or((z, "0"));
        sign * (zh.parse::<i64>().ok()? * 3600 + zm.parse::<i64>().ok()? * 60)
    };
    let local = ((h * 3600 + m * 60 + s) * 1_000_000) + frac_us;
    Some((local - offset_s * 1_000_000).rem_euclid(DAY_US))
}

/// A decimal's text without a `+`, leading zeros, trailing fraction zeros, or the sign of zero.
pub fn canonical_decimal(s: &str) -> String {
    let s = s.trim();
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let body = if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    };
    if negative && body != "0" {
        format!("-{body}")
    } else {
        body
    }
}

/// Orders two decimal texts by value.
pub fn cmp_decimal(a: &str, b: &str) -> Ordering {
    let (a, b) = (canonical_decimal(a), canonical_decimal(b));
    let neg = |s: &str| s.starts_with('-');
    match (neg(&a), neg(&b)) {
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (negative, _) => {
            let mag = |s: &str| {
                let s = s.trim_start_matches('-').to_string();
                let (i, f) = s
                    .split_once('.')
                    .map_or((s.clone(), String::new()), |(i, f)| {
                        (i.to_string(), f.to_string())
                    });
                (i, f)
            };
            let ((ai, af), (bi, bf)) = (mag(&a), mag(&b));
            let o = ai
                .len()
                .cmp(&bi.len())
                .then_with(|| ai.cmp(&bi))
                .then_with(|| af.cmp(&bf));
            if negative {
                o.reverse()
            } else {
                o
            }
        }
    }
}

/// Splits PostgreSQL's COPY text format into rows: fields separated by tabs, rows by newlines,
/// `\N` for NULL, backslash escapes. Feed it the stream's chunks; a row may span chunks.
#[derive(Default)]
pub struct CopyParser {
    pending: Vec<u8>,
}

impl CopyParser {
    /// Parses the complete lines of `chunk` (with what an earlier chunk left) into `out`.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        width: usize,
        out: &mut Vec<Row>,
    ) -> Result<(), CopyError> {
        let mut data = chunk;
        if !self.pending.is_empty() {
            match chunk.iter().position(|&b| b == b'\n') {
                None => {
                    self.pending.extend_from_slice(chunk);
                    return Ok(());
                }
                Some(i) => {
                    self.pending.extend_from_slice(&chunk[..i]);
                    let line = std::mem::take(&mut self.pending);
                    out.push(parse_line(&line, width)?);
                    data = &chunk[i + 1..];
                }
            }
        }
        let mut start = 0;
        while let Some(i) = data[start..].iter().position(|&b| b == b'\n') {
            out.push(parse_line(&data[start..start + i], width)?);
            start += i + 1;
        }
        self.pending.extend_from_slice(&data[start..]);
        Ok(())
    }

    /// `Err` when the stream ended inside a row.
    pub fn finish(&self) -> Result<(), CopyError> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(CopyError::Truncated)
        }
    }
}

fn parse_line(line: &[u8], width: usize) -> Result<Row, CopyError> {
    let mut row = Vec::with_capacity(width);
    for field in line.split(|&b| b == b'\t') {
        if field == b"\\N" {
            row.push(None);
        } else if !field.contains(&b'\\') {
            row.push(Some(field.to_vec()));
        } else {
            let mut v = Vec::with_capacity(field.len());
            let mut it = field.iter();
            while let Some(&b) = it.next() {
                if b != b'\\' {
                    v.push(b);
                    continue;
                }
                match it.next() {
                    Some(b'n') => v.push(b'\n'),
                    Some(b'r') => v.push(b'\r'),
                    Some(b't') => v.push(b'\t'),
                    Some(b'b') => v.push(8),
                    Some(b'f') => v.push(12),
                    Some(b'v') => v.push(11),
                    Some(&c) => v.push(c),
                    None => return Err(CopyError::LoneBackslash),
                }
            }
            row.push(Some(v));
        }
    }
    if row.len() != width {
        return Err(CopyError::Width {
            found: row.len(),
            expected: width,
        });
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::super::plan::{self, SourceColumn};
    use super::*;

    fn plan_of(cols: &[(&str, &str, i32)]) -> TablePlan {
        let cols: Vec<SourceColumn> = cols
            .iter()
            .map(|(n, t, k)| SourceColumn {
                name: n.to_string(),
                ty: crate::types::postgres::PgType::base(t),
                key_position: *k,
            })
            .collect();
        let target = cols.iter().map(|c| c.name.clone()).collect();
        plan::table("public.t", "t", &cols, &target).unwrap()
    }

    fn row(fields: &[Option<&str>]) -> Row {
        fields
            .iter()
            .map(|f| f.map(|s| s.as_bytes().to_vec()))
            .collect()
    }

    fn merge(plan: &TablePlan, a: &[Row], b: &[Row]) -> Result<Tally, CompareError> {
        let mut m = Merge::new(plan, 100);
        let (mut i, mut j) = (0, 0);
        loop {
            match m.step(a.get(i), b.get(j))? {
                Advance::Done => return Ok(m.tally),
                Advance::Source => i += 1,
                Advance::Target => j += 1,
                Advance::Both => {
                    i += 1;
                    j += 1
                }
            }
        }
    }

    #[test]
    fn the_merge_finds_missing_extra_and_different_rows() {
        let plan = plan_of(&[("id", "int8", 1), ("v", "numeric", 0), ("j", "jsonb", 0)]);
        let src = [
            row(&[Some("-5"), Some("1.50"), None]),
            row(&[Some("2"), Some("1"), Some(r#"{"a":1,"b":2}"#)]),
            row(&[Some("10"), Some("3"), None]),
            row(&[Some("11"), Some("4"), None]),
        ];
        let tgt = [
            row(&[Some("-5"), Some("1.5"), None]),
            row(&[Some("2"), Some("1.0"), Some(r#"{"b": 2, "a": 1}"#)]),
            row(&[Some("9"), Some("3"), None]),
            row(&[Some("11"), Some("4.01"), Some("null")]),
        ];
        let t = merge(&plan, &src, &tgt).unwrap();
        assert_eq!((t.source_rows, t.target_rows), (4, 4));
        assert_eq!((t.missing, t.extra, t.different), (1, 1, 1));
        assert_eq!(t.first_missing, vec!["id=10"]);
        assert_eq!(t.first_extra, vec!["id=9"]);
        assert_eq!(
            t.first_different,
            vec![("id=11".to_string(), vec!["v".to_string(), "j".to_string()])]
        );
        assert_eq!((t.keys.len(), t.extra_keys.len()), (2, 1));
    }

    #[test]
    fn rows_out_of_key_order_are_an_error_not_a_difference() {
        let plan = plan_of(&[("k", "text", 1)]);
        let src = [row(&[Some("b")]), row(&[Some("a")])];
        let e = merge(&plan, &src, &src).unwrap_err();
        assert!(
            matches!(
                &e,
                CompareError::OutOfOrder {
                    side: "the source",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("returned key k=a after k=b"), "{e}");
        // Integers order by value, not by text.
        let plan = plan_of(&[("id", "int4", 1)]);
        let src = [row(&[Some("9")]), row(&[Some("10")])];
        assert_eq!(merge(&plan, &src, &src).unwrap().differences(), 0);
    }

    #[test]
    fn values_compare_by_their_rule() {
        assert!(same(
            ValueCmp::F32,
            Some(b"0.1"),
            Some(b"0.10000000149011612")
        ));
        assert!(!same(
            ValueCmp::F64,
            Some(b"0.1"),
            Some(b"0.10000000000000002")
        ));
        assert!(!same(ValueCmp::F64, Some(b"-0"), Some(b"0")));
        assert!(same(ValueCmp::Decimal, Some(b"-0.10"), Some(b"-0.1")));
        assert!(!same(ValueCmp::Decimal, Some(b"12.35"), Some(b"12.36")));
        assert!(same(
            ValueCmp::Json,
            Some(br#"{"a":[1,2]}"#),
            Some(br#"{ "a": [1, 2] }"#)
        ));
        assert!(!same(
            ValueCmp::Json,
            Some(br#"{"a":[1,2]}"#),
            Some(br#"{"a":[2,1]}"#)
        ));
        assert!(same(
            ValueCmp::TimeTz,
            Some(b"37800500000"),
            Some(b"10:30:00.5Z")
        ));
        assert!(same(
            ValueCmp::TimeTz,
            Some(b"-3599500000"),
            Some(b"01:00:00.5+02")
        ));
        assert!(!same(ValueCmp::Exact, Some(b"a"), None));
        assert!(same(ValueCmp::Exact, None, None));
        assert_eq!(cmp_decimal("-10", "-9.5"), Ordering::Less);
        assert_eq!(cmp_decimal("10", "9.99"), Ordering::Greater);
        assert_eq!(cmp_decimal("1.10", "1.1"), Ordering::Equal);
    }

    #[test]
    fn a_multiset_counts_equal_rows_apart() {
        let cols = [
            SourceColumn {
                name: "a".into(),
                ty: crate::types::postgres::PgType::base("int4"),
                key_position: 0,
            },
            SourceColumn {
                name: "n".into(),
                ty: crate::types::postgres::PgType::base("numeric"),
                key_position: 0,
            },
        ];
        let target: std::collections::HashSet<String> = ["a".into(), "n".into()].into();
        let plan = plan::table("public.t", "t", &cols, &target).unwrap();
        let row = |a: &str, n: Option<&str>| -> Row {
            vec![
                Some(a.as_bytes().to_vec()),
                n.map(|n| n.as_bytes().to_vec()),
            ]
        };
        let mut m = Multiset::new(&plan);
        for r in [
            row("1", Some("1.50")),
            row("1", Some("1.50")),
            row("2", None),
        ] {
            m.add(&r, true);
        }
        for r in [row("1", Some("1.5")), row("2", None), row("2", None)] {
            m.add(&r, false);
        }
        let t = m.tally();
        assert_eq!((t.source_rows, t.target_rows), (3, 3));
        assert_eq!((t.missing, t.extra, t.different), (1, 1, 0));
        assert_eq!(t.first_missing, ["a=1, n=1.50"], "as the source has it");
        assert_eq!(t.first_extra, ["a=2, n=NULL"]);
        assert!(t.keys_overflow, "re-checked whole");
    }

    #[test]
    fn copy_text_is_split_across_chunks_and_unescaped() {
        let mut p = CopyParser::default();
        let mut out = Vec::new();
        p.feed(b"1\ta\\tb\\\\\\n\t\\N\n2\t", 3, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        p.feed(b"x\ty", 3, &mut out).unwrap();
        assert!(p.finish().is_err());
        p.feed(b"\n", 3, &mut out).unwrap();
        p.finish().unwrap();
        assert_eq!(
            out,
            vec![
                row(&[Some("1"), Some("a\tb\\\n"), None]),
                row(&[Some("2"), Some("x"), Some("y")])
            ]
        );
        assert!(matches!(
            p.feed(b"1\t2\n", 3, &mut out),
            Err(CopyError::Width {
                found: 2,
                expected: 3
            })
        ));
    }
}
