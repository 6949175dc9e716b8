//! Compaction to audit files (DESIGN §2, §5, §6): `compact --once` turns the journal into typed,
//! zstd-compressed Parquet files, every journal event in exactly one file, also across crashes.
//!
//! The files are read back independently with DuckDB and compared with PostgreSQL (values,
//! type by type) and with the journal (sequence, op, position, transaction, commit time).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use duckdb::Connection;
use serde_json::Value;

use crate::support::*;

const SNAPSHOT_WAIT: Duration = Duration::from_secs(90);
const STREAM_WAIT: Duration = Duration::from_secs(60);
const STOP_WAIT: Duration = Duration::from_secs(60);
const SIGABRT: i32 = 6;
const CDC_COLUMNS: [&str; 7] = [
    "_cdc_op",
    "_cdc_seq",
    "_cdc_ts",
    "_cdc_position",
    "_cdc_tx",
    "_cdc_snapshot",
    "_cdc_unchanged",
];

// ---------------------------------------------------------------------------------------------
// Running db-sync

/// The `audit:` section for a local directory.
fn file_audit(dir: &Path) -> String {
    format!("audit:\n  url: file://{}\n", dir.display())
}

/// The `audit:` section for `s3://<bucket>/<prefix>` on the test S3 server.
fn s3_audit(bucket: &str, prefix: &str) -> String {
    format!(
        "audit:\n  url: s3://{bucket}/{prefix}\n  options:\n    endpoint: \"{}\"\n    region: us-east-1\n    access_key_id: test\n    secret_access_key: test\n    allow_http: true\n",
        s3_endpoint()
    )
}

fn audit_dir(p: &Pipeline) -> PathBuf {
    p.dir.path().join("audit")
}

fn output_text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `compact --once`, which must succeed.
fn compact(p: &Pipeline) {
    let out = p.db_sync(&["compact", "--once"]);
    assert!(
        out.status.success(),
        "compact --once failed: {}",
        output_text(&out)
    );
}

/// Captures the snapshot of a fresh pipeline, runs the `streamed` statements, waits for `total`
/// events in the journal and stops capture.
fn capture_workload(p: &Pipeline, extra: &str, snapshot: usize, streamed: &[&str], total: usize) {
    let mut capture = p.start_capture_with(extra);
    p.wait_for_events(snapshot, &mut capture, SNAPSHOT_WAIT);
    let sql = p.sql();
    for statement in streamed {
        sql.exec(statement); // each its own transaction
    }
    p.wait_for_events(total, &mut capture, STREAM_WAIT);
    assert_eq!(capture.terminate(STOP_WAIT), 0);
    let events = p.events();
    assert_eq!(events.len(), total, "journal: {events:#?}");
}

/// `audited_through` from `<journal.dir>/audit-manifest.json`, None before the first run.
fn audited_through(p: &Pipeline) -> Option<u64> {
    let path = p.journal_dir().join("audit-manifest.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("{}: {e}", path.display()),
    };
    let json: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {text}", path.display()));
    Some(
        json["audited_through"]
            .as_u64()
            .unwrap_or_else(|| panic!("{} lacks audited_through: {text}", path.display())),
    )
}

// ---------------------------------------------------------------------------------------------
// Reading audit files with DuckDB

fn duck() -> Connection {
    Connection::open_in_memory().expect("DuckDB in memory")
}

/// A SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// All audit files of `table` as one relation, as DESIGN §5 says readers read them.
fn scan(dir: &Path, table: &str) -> String {
    format!(
        "read_parquet({}, union_by_name=true, hive_partitioning=true)",
        lit(&format!("{}/{table}/**/*.parquet", dir.display()))
    )
}

fn read_file(path: &Path) -> String {
    format!("read_parquet({})", lit(&path.display().to_string()))
}

/// Rows of a DuckDB query, each value as text (NULL as None), like [`Sql::rows`].
fn duck_rows(conn: &Connection, sql: &str) -> Vec<Vec<Option<String>>> {
    let fail = |e: duckdb::Error| -> String { format!("DuckDB: {sql}: {e}") };
    let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{}", fail(e)));
    let mut rows = stmt.query([]).unwrap_or_else(|e| panic!("{}", fail(e)));
    let n = rows.as_ref().expect("an executed statement").column_count();
    let mut out = Vec::new();
    while let Some(row) = rows.next().unwrap_or_else(|e| panic!("{}", fail(e))) {
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            let v = row.get(i).unwrap_or_else(|e| panic!("{}", fail(e)));
            values.push(duck_text(v));
        }
        out.push(values);
    }
    out
}

fn duck_text(v: duckdb::types::Value) -> Option<String> {
    use duckdb::types::Value as V;
    Some(match v {
        V::Null => return None,
        V::Text(s) => s,
        V::Boolean(b) => b.to_string(),
        V::TinyInt(v) => v.to_string(),
        V::SmallInt(v) => v.to_string(),
        V::Int(v) => v.to_string(),
        V::BigInt(v) => v.to_string(),
        V::HugeInt(v) => v.to_string(),
        V::UTinyInt(v) => v.to_string(),
        V::USmallInt(v) => v.to_string(),
        V::UInt(v) => v.to_string(),
        V::UBigInt(v) => v.to_string(),
        other => format!("{other:?}"),
    })
}

/// `(name, type)` of each column of `relation`, without the hive partition column `date`.
fn describe(conn: &Connection, relation: &str) -> Vec<(String, String)> {
    duck_rows(conn, &format!("DESCRIBE SELECT * FROM {relation}"))
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .filter(|(name, _)| name != "date")
        .collect()
}

fn cell(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("NULL")
}

// ---------------------------------------------------------------------------------------------
// Layout and exactly-once checks

/// Every file below `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// After a finished run no temporary or partial file is left: only `*.parquet`.
fn assert_only_parquet(dir: &Path) {
    let other: Vec<PathBuf> = walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_none_or(|x| x != "parquet"))
        .collect();
    assert!(
        other.is_empty(),
        "files other than *.parquet left in {}: {other:?}",
        dir.display()
    );
}

/// Each audit file's bytes and modification time, by path: "unchanged" means both equal.
fn file_states(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read audit file");
            let mtime = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .expect("mtime");
            (p, (bytes, mtime))
        })
        .collect()
}

fn assert_unchanged(
    before: &BTreeMap<PathBuf, (Vec<u8>, SystemTime)>,
    now: &BTreeMap<PathBuf, (Vec<u8>, SystemTime)>,
    what: &str,
) {
    for (path, state) in before {
        match now.get(path) {
            None => panic!("{what}: {} disappeared", path.display()),
            Some(s) => assert!(s == state, "{what}: {} was rewritten", path.display()),
        }
    }
}

/// An audit file, its place in the layout of DESIGN §5 checked.
#[derive(Debug)]
struct AuditFile {
    path: PathBuf,
    /// `schema.table`, the first directory level.
    table: String,
}

fn date_of_us(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_else(|| panic!("{us} µs is not a time"))
        .format("%Y-%m-%d")
        .to_string()
}

fn layout_error(rel: &Path, why: &str) -> ! {
    panic!(
        "{}: {why}; expected <schema>.<table>/date=<YYYY-MM-DD>/<first_seq>-<last_seq>.parquet",
        rel.display()
    )
}

/// Every `*.parquet` below `dir`, each checked: path `<schema>.<table>/date=<YYYY-MM-DD>/
/// <first_seq>-<last_seq>.parquet` with plain decimal seqs equal to the smallest and largest
/// `_cdc_seq` inside, no seq twice in the file, every row's commit time (UTC) on that date,
/// every column chunk zstd-compressed. A file DuckDB cannot read fails here.
fn audit_files(conn: &Connection, dir: &Path) -> Vec<AuditFile> {
    let mut out = Vec::new();
    for path in walk(dir) {
        if path.extension().is_none_or(|x| x != "parquet") {
            continue;
        }
        let rel = path.strip_prefix(dir).unwrap();
        let parts: Vec<&str> = rel.iter().map(|c| c.to_str().unwrap()).collect();
        if parts.len() != 3 {
            layout_error(rel, "wrong depth");
        }
        if !parts[0].contains('.') {
            layout_error(rel, "first level is not schema.table");
        }
        let date = parts[1]
            .strip_prefix("date=")
            .unwrap_or_else(|| layout_error(rel, "no date= level"));
        if chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_err() || date.len() != 10 {
            layout_error(rel, "date is not YYYY-MM-DD");
        }
        let (first, last) = parts[2]
            .strip_suffix(".parquet")
            .and_then(|s| s.split_once('-'))
            .unwrap_or_else(|| layout_error(rel, "name is not <first>-<last>.parquet"));
        let seq = |s: &str| -> i64 {
            match s.parse::<i64>() {
                Ok(n) if n.to_string() == s => n,
                _ => layout_error(rel, "sequence is not a plain decimal number"),
            }
        };
        let (first, last) = (seq(first), seq(last));

        let stats = duck_rows(
            conn,
            &format!(
                "SELECT count(*), count(DISTINCT _cdc_seq), min(_cdc_seq), max(_cdc_seq), \
                 min(epoch_us(_cdc_ts)), max(epoch_us(_cdc_ts)) FROM {}",
                read_file(&path)
            ),
        );
        let s: Vec<&str> = stats[0].iter().map(cell).collect();
        assert_ne!(s[0], "0", "{}: an empty audit file", rel.display());
        assert_eq!(s[0], s[1], "{}: a seq twice in one file", rel.display());
        assert_eq!(
            (s[2], s[3]),
            (first.to_string().as_str(), last.to_string().as_str()),
            "{}: name does not match the smallest and largest _cdc_seq inside",
            rel.display()
        );
        for us in [s[4], s[5]] {
            assert_eq!(
                date_of_us(us.parse().unwrap()),
                date,
                "{}: a row committed on another UTC date",
                rel.display()
            );
        }
        let codecs = duck_rows(
            conn,
            &format!(
                "SELECT DISTINCT compression FROM parquet_metadata({})",
                lit(&path.display().to_string())
            ),
        );
        assert_eq!(
            codecs,
            vec![vec![Some("ZSTD".to_string())]],
            "{}: every column chunk zstd",
            rel.display()
        );
        out.push(AuditFile {
            table: parts[0].to_string(),
            path,
        });
    }
    out
}

/// The `_cdc_*` values of one audit row, as text.
#[derive(Debug, Clone, PartialEq)]
struct Meta {
    table: String,
    op: String,
    snapshot: bool,
    position: String,
    tx: Option<String>,
    ts_us: i64,
}

/// `(seq, meta, file)` of every row of every audit file below `dir`, by seq (duplicates kept).
fn audit_rows(conn: &Connection, dir: &Path) -> Vec<(i64, Meta, PathBuf)> {
    let mut out = Vec::new();
    for f in audit_files(conn, dir) {
        let rows = duck_rows(
            conn,
            &format!(
                "SELECT _cdc_seq, _cdc_op, _cdc_snapshot, _cdc_position, _cdc_tx, epoch_us(_cdc_ts) \
                 FROM {}",
                read_file(&f.path)
            ),
        );
        for r in rows {
            let meta = Meta {
                table: f.table.clone(),
                op: cell(&r[1]).to_string(),
                snapshot: cell(&r[2]) == "true",
                position: cell(&r[3]).to_string(),
                tx: r[4].clone(),
                ts_us: cell(&r[5]).parse().unwrap(),
            };
            out.push((cell(&r[0]).parse().unwrap(), meta, f.path.clone()));
        }
    }
    out.sort_by_key(|(seq, _, _)| *seq);
    out
}

/// Every `_cdc_seq` in the audit files below `dir`, sorted, duplicates kept.
fn seqs(conn: &Connection, dir: &Path) -> Vec<i64> {
    audit_rows(conn, dir)
        .into_iter()
        .map(|(s, _, _)| s)
        .collect()
}

/// What the journal says an event's audit row must carry (`journal dump` renders values as
/// the audit files hold them).
fn journal_meta(e: &Value) -> Meta {
    let ts = e["ts"].as_str().expect("ts");
    let ts_us =
        chrono::NaiveDateTime::parse_from_str(ts.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
            .unwrap_or_else(|err| panic!("journal ts {ts}: {err}"))
            .and_utc()
            .timestamp_micros();
    Meta {
        table: e["table"].as_str().unwrap().to_string(),
        op: e["op"].as_str().unwrap().to_string(),
        snapshot: e["snapshot"].as_bool().unwrap(),
        position: e["position"].as_str().unwrap().to_string(),
        tx: e["tx"].as_str().map(str::to_string),
        ts_us,
    }
}

/// The audit files below `dir` hold every journal event exactly once, each in its table's
/// directory with the journal's op, snapshot flag, position, transaction and commit time.
fn assert_audit_matches_journal(p: &Pipeline, conn: &Connection, dir: &Path) {
    let journal = p.events();
    let rows = audit_rows(conn, dir);
    let mut by_seq: BTreeMap<i64, Vec<(&Meta, &PathBuf)>> = BTreeMap::new();
    for (seq, meta, file) in &rows {
        by_seq.entry(*seq).or_default().push((meta, file));
    }
    let doubled: Vec<String> = by_seq
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .take(10)
        .map(|(seq, v)| {
            format!(
                "seq {seq} in {:?}",
                v.iter().map(|x| x.1).collect::<Vec<_>>()
            )
        })
        .collect();
    assert!(doubled.is_empty(), "events audited twice: {doubled:#?}");
    let journaled: BTreeSet<i64> = journal.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    let audited: BTreeSet<i64> = by_seq.keys().copied().collect();
    let missing: Vec<&i64> = journaled.difference(&audited).take(20).collect();
    let extra: Vec<&i64> = audited.difference(&journaled).take(20).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} journal events, {} audit rows; not audited (first 20): {missing:?}; not in the journal: {extra:?}",
        journaled.len(),
        rows.len()
    );
    let mut wrong = Vec::new();
    for e in &journal {
        let seq = e["seq"].as_i64().unwrap();
        let (got, file) = by_seq[&seq][0];
        let want = journal_meta(e);
        if *got != want {
            wrong.push(format!(
                "seq {seq} in {}:\n  audit   {got:?}\n  journal {want:?}",
                file.display()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} audit rows disagree with the journal, e.g.:\n{}",
        wrong.len(),
        wrong[..wrong.len().min(10)].join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Types

/// How a PostgreSQL value and an audit value, both rendered as text, are compared.
#[derive(Clone, Copy, Debug)]
pub enum Cmp {
    Exact,
    /// Both parse to the same f32 (NaN equals NaN; -0 is not 0).
    F32,
    F64,
    /// Same number: trailing fraction zeros and a leading `+` do not count.
    Decimal,
    /// PostgreSQL's `extract(epoch)` µs of a timetz against Debezium's ZonedTime string: the
    /// same UTC time of day.
    TimeTz,
    /// Microseconds; the DuckDB side depends on how DuckDB reads Duration (BIGINT or INTERVAL).
    Duration,
}

/// A column of the type table: PostgreSQL and DuckDB expressions giving comparable text
/// (`{c}` is the column), how to compare, and the DuckDB types the audit column may read as.
struct Col {
    name: &'static str,
    pg: &'static str,
    duck: &'static str,
    cmp: Cmp,
    types: &'static [&'static str],
}

const PG_OUT: &str = "{c}"; // the type's own output text (simple query protocol)
const PG_TEXT: &str = "{c}::text";
const DUCK_TEXT: &str = "{c}::VARCHAR";
pub const PG_EPOCH_US: &str = "(extract(epoch FROM {c}) * 1000000)::bigint::text";
const DUCK_EPOCH_US: &str = "epoch_us({c})::VARCHAR";
const PG_DAYS: &str = "({c} - date '1970-01-01')::text";
const DUCK_DAYS: &str = "({c} - DATE '1970-01-01')::VARCHAR";
const PG_INT_LIST: &str = "CASE WHEN {c} IS NULL THEN NULL ELSE '[' || coalesce((SELECT string_agg(coalesce(e::text, 'NULL'), ',' ORDER BY i) FROM unnest({c}) WITH ORDINALITY AS u(e, i)), '') || ']' END";
const DUCK_INT_LIST: &str = "CASE WHEN {c} IS NULL THEN NULL ELSE '[' || coalesce(array_to_string(list_transform({c}, lambda x: coalesce(x::VARCHAR, 'NULL')), ','), '') || ']' END";
// Text elements as hex of their UTF-8 bytes, so commas, quotes and the string 'NULL' stay apart.
const PG_TEXT_LIST: &str = "CASE WHEN {c} IS NULL THEN NULL ELSE '[' || coalesce((SELECT string_agg(coalesce(encode(convert_to(e, 'UTF8'), 'hex'), 'NULL'), ',' ORDER BY i) FROM unnest({c}) WITH ORDINALITY AS u(e, i)), '') || ']' END";
const DUCK_TEXT_LIST: &str = "CASE WHEN {c} IS NULL THEN NULL ELSE '[' || coalesce(array_to_string(list_transform({c}, lambda x: coalesce(lower(hex(x)), 'NULL')), ','), '') || ']' END";
const DUCK_INTERVAL_US: &str = "(datepart('day', {c})::BIGINT * 86400000000 + datepart('hour', {c})::BIGINT * 3600000000 + datepart('minute', {c})::BIGINT * 60000000 + datepart('microseconds', {c}))::VARCHAR";

const fn col(
    name: &'static str,
    pg: &'static str,
    duck: &'static str,
    cmp: Cmp,
    types: &'static [&'static str],
) -> Col {
    Col {
        name,
        pg,
        duck,
        cmp,
        types,
    }
}

#[rustfmt::skip]
const COLS: &[Col] = &[
    col("c_int2",     PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["SMALLINT"]),
    col("c_int4",     PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["INTEGER"]),
    col("c_int8",     PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["BIGINT"]),
    col("c_real",     PG_OUT,        DUCK_TEXT,          Cmp::F32,      &["FLOAT"]),
    col("c_double",   PG_OUT,        DUCK_TEXT,          Cmp::F64,      &["DOUBLE"]),
    col("c_num",      PG_OUT,        DUCK_TEXT,          Cmp::Decimal,  &["DECIMAL(12,2)"]),
    col("c_num38",    PG_OUT,        DUCK_TEXT,          Cmp::Decimal,  &["DECIMAL(38,10)"]),
    col("c_num50",    PG_OUT,        DUCK_TEXT,          Cmp::Decimal,  &["VARCHAR"]),
    col("c_numu",     PG_OUT,        DUCK_TEXT,          Cmp::Decimal,  &["VARCHAR"]),
    col("c_money",    "{c}::numeric", DUCK_TEXT,         Cmp::Decimal,  &["DECIMAL(*,2)"]),
    col("c_bool",     PG_TEXT,       DUCK_TEXT,          Cmp::Exact,    &["BOOLEAN"]),
    col("c_text",     PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["VARCHAR"]),
    col("c_varchar",  PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["VARCHAR"]),
    // char(n) as PostgreSQL outputs it, blank-padded (a cast to text would trim).
    col("c_char",     PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["VARCHAR"]),
    col("c_bytea",    "encode({c}, 'hex')", "lower(hex({c}))", Cmp::Exact, &["BLOB"]),
    col("c_date",     PG_DAYS,       DUCK_DAYS,          Cmp::Exact,    &["DATE"]),
    col("c_ts",       PG_EPOCH_US,   DUCK_EPOCH_US,      Cmp::Exact,    &["TIMESTAMP"]),
    // timestamp(3) and time(3): Debezium's millisecond types under adaptive (DESIGN §9).
    col("c_ts3",      PG_EPOCH_US,   DUCK_EPOCH_US,      Cmp::Exact,    &["TIMESTAMP", "TIMESTAMP_MS"]),
    col("c_tstz",     PG_EPOCH_US,   DUCK_EPOCH_US,      Cmp::Exact,    &["TIMESTAMP WITH TIME ZONE"]),
    col("c_time",     PG_EPOCH_US,   DUCK_EPOCH_US,      Cmp::Exact,    &["TIME"]),
    col("c_time3",    PG_EPOCH_US,   DUCK_EPOCH_US,      Cmp::Exact,    &["TIME"]),
    col("c_timetz",   PG_EPOCH_US,   "{c}",              Cmp::TimeTz,   &["VARCHAR"]),
    col("c_interval", PG_EPOCH_US,   DUCK_TEXT,          Cmp::Duration, &["BIGINT", "INTERVAL"]),
    col("c_uuid",     PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["VARCHAR"]),
    col("c_json",     PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["VARCHAR", "JSON"]),
    col("c_jsonb",    PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["VARCHAR", "JSON"]),
    col("c_enum",     PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["VARCHAR"]),
    // inet as output (a cast to text would add /32).
    col("c_inet",     PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["VARCHAR"]),
    col("c_cidr",     PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["VARCHAR"]),
    col("c_macaddr",  PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["VARCHAR"]),
    col("c_xml",      PG_TEXT,       DUCK_TEXT,          Cmp::Exact,    &["VARCHAR"]),
    col("c_ints",     PG_INT_LIST,   DUCK_INT_LIST,      Cmp::Exact,    &["INTEGER[]"]),
    col("c_texts",    PG_TEXT_LIST,  DUCK_TEXT_LIST,     Cmp::Exact,    &["VARCHAR[]"]),
];

pub const TYPES_SCHEMA: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy 😀');
CREATE TABLE all_types (
  id int PRIMARY KEY,
  c_int2 smallint, c_int4 integer, c_int8 bigint,
  c_real real, c_double double precision,
  c_num numeric(12,2), c_num38 numeric(38,10), c_num50 numeric(50,20), c_numu numeric,
  c_money money, c_bool boolean,
  c_text text, c_varchar varchar(20), c_char char(5), c_bytea bytea,
  c_date date, c_ts timestamp(6), c_ts3 timestamp(3), c_tstz timestamptz(6),
  c_time time(6), c_time3 time(3), c_timetz timetz, c_interval interval,
  c_uuid uuid, c_json json, c_jsonb jsonb, c_enum mood,
  c_inet inet, c_cidr cidr, c_macaddr macaddr, c_xml xml,
  c_ints int[], c_texts text[]
);
-- 1: every column NULL.
INSERT INTO all_types (id) VALUES (1);
-- 2: minimums, negatives, empties, 1900.
INSERT INTO all_types (id, c_int2, c_int4, c_int8, c_real, c_double, c_num, c_num38, c_num50, c_numu,
  c_money, c_bool, c_text, c_varchar, c_char, c_bytea, c_date, c_ts, c_ts3, c_tstz, c_time, c_time3,
  c_timetz, c_interval, c_uuid, c_json, c_jsonb, c_enum, c_inet, c_cidr, c_macaddr, c_xml, c_ints, c_texts)
VALUES (2, -32768, -2147483648, -9223372036854775808, '-3.4028235e+38', '-1.7976931348623157e+308',
  -9999999999.99, '-9999999999999999999999999999.9999999999',
  '-999999999999999999999999999999.99999999999999999999', '-1234567890123456789012345678901234567890',
  '-9999999999.99', false, '', '', '', '\x', '1900-01-01', '1900-01-01 00:00:00.000001',
  '1900-01-01 00:00:00.001', '1900-06-15 12:34:56.789012+00', '00:00:00', '00:00:00', '00:00:00+00',
  '-3 days -00:00:00.000001', '00000000-0000-0000-0000-000000000000', '{}', '[]', 'sad', '0.0.0.0',
  '0.0.0.0/0', '00:00:00:00:00:00', '<a/>', '{}', '{}');
-- 3: maximums, unicode, year 9999.
INSERT INTO all_types (id, c_int2, c_int4, c_int8, c_real, c_double, c_num, c_num38, c_num50, c_numu,
  c_money, c_bool, c_text, c_varchar, c_char, c_bytea, c_date, c_ts, c_ts3, c_tstz, c_time, c_time3,
  c_timetz, c_interval, c_uuid, c_json, c_jsonb, c_enum, c_inet, c_cidr, c_macaddr, c_xml, c_ints, c_texts)
VALUES (3, 32767, 2147483647, 9223372036854775807, '3.4028235e+38', '1.7976931348623157e+308',
  9999999999.99, '9999999999999999999999999999.9999999999',
  '999999999999999999999999999999.99999999999999999999', '0.0000000000000000000000000000000000000001',
  '9999999999.99', true, E'tab\t nl\n cr\r quote'' dq" backslash\\ ctl\x01 ünïcödé ✓ 中文 😀',
  repeat('😀', 20), 'ü😀', '\x00017f80feff', '9999-12-31', '9999-12-31 23:59:59.999999',
  '9999-12-31 23:59:59.999', '9999-12-31 23:59:59.999999+00', '23:59:59.999999', '23:59:59.999',
  '23:59:59.999999+14', '100000 hours 0.000001 seconds', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
  '{"k": [1, 2.5, "x"],  "e": "😀", "n": null}', '{"b": {"c": null}, "a": 1, "u": "ü"}', 'happy 😀',
  '2001:db8::1/64', '2001:db8::/32', '08:00:2b:01:02:03', '<r a="1">ü &amp; 😀</r>',
  '{2147483647,NULL,-2147483648}', ARRAY['a,b', NULL, '', '😀', 'quote"', 'NULL', '{x}']);
-- 4: zeros, the epoch, NaN, a JSON null, arrays of one NULL.
INSERT INTO all_types (id, c_int2, c_int4, c_int8, c_real, c_double, c_num, c_num38, c_num50, c_numu,
  c_money, c_bool, c_text, c_date, c_ts, c_ts3, c_tstz, c_time, c_time3, c_timetz, c_interval, c_json,
  c_ints, c_texts)
VALUES (4, 0, 0, 0, '-0', 'NaN', 0, 0, '-12345678901234567890.123456789', '123.450', 0, true, 'x',
  '1970-01-01', '1970-01-01 00:00:00', '1970-01-01 00:00:00', '1970-01-01 00:00:00+00', '12:00:00.5',
  '12:00:00.5', '12:34:56.789+02', '0', 'null', '{NULL}', '{NULL}');
-- 5: past the nanosecond range of i64 (2262-04-11T23:47:16.854775807), infinities.
INSERT INTO all_types (id, c_int8, c_real, c_double, c_num38, c_numu, c_date, c_ts, c_ts3, c_tstz, c_time)
VALUES (5, -1, 'Infinity', 'Infinity', '0.0000000001', '-0.5', '2262-04-12', '2262-04-11 23:47:16.854776',
  '2262-04-11 23:47:16.855', '2262-04-12 00:00:00.000001+00', '00:00:00.000001');
-- 6: just before the epoch, with fractions; a timetz whose UTC time is the day before.
INSERT INTO all_types (id, c_real, c_double, c_num, c_date, c_ts, c_ts3, c_tstz, c_time3, c_timetz, c_interval)
VALUES (6, 'NaN', '-Infinity', -0.01, '1969-12-31', '1969-12-31 23:59:59.999999', '1969-12-31 23:59:59.999',
  '1969-07-20 20:17:40.123456+00', '00:00:00.001', '01:00:00.5+02', '-00:00:00.000001');
-- 7: a 1 MB text (multi-byte characters too) and a 256 KB bytea.
INSERT INTO all_types (id, c_text, c_bytea)
VALUES (7, repeat('0123456789abcdé😀', 52429), decode(repeat('deadbeef', 65536), 'hex'));
"#;
const TYPE_ROWS: usize = 7;

fn subst(template: &str, column: &str) -> String {
    template.replace("{c}", column)
}

pub fn same_value(cmp: Cmp, pg: &str, audit: &str) -> bool {
    match cmp {
        Cmp::Exact | Cmp::Duration => pg == audit,
        Cmp::F32 => match (pg.parse::<f32>(), audit.parse::<f32>()) {
            (Ok(a), Ok(b)) => a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            _ => false,
        },
        Cmp::F64 => match (pg.parse::<f64>(), audit.parse::<f64>()) {
            (Ok(a), Ok(b)) => a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            _ => false,
        },
        Cmp::Decimal => canonical_decimal(pg) == canonical_decimal(audit),
        Cmp::TimeTz => {
            pg.parse::<i64>().ok().map(|us| us.rem_euclid(DAY_US)) == utc_time_of_day_us(audit)
        }
    }
}

fn canonical_decimal(s: &str) -> String {
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

const DAY_US: i64 = 86_400_000_000;

/// `HH:MM:SS[.ffffff](Z|±HH[:MM[:SS]])` as microseconds after midnight UTC.
fn utc_time_of_day_us(s: &str) -> Option<i64> {
    let (time, offset_s) = if let Some(t) = s.strip_suffix('Z') {
        (t, 0)
    } else {
        let at = s.rfind(['+', '-'])?;
        let (t, zone) = s.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let mut secs = 0;
        for (i, part) in zone[1..].split(':').enumerate() {
            secs += part.parse::<i64>().ok()? * [3600, 60, 1].get(i)?;
        }
        (t, sign * secs)
    };
    let mut hms = time.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let m: i64 = hms.next()?.parse().ok()?;
    let sec_part = hms.next()?;
    let (sec, frac) = sec_part.split_once('.').unwrap_or((sec_part, ""));
    let sec: i64 = sec.parse().ok()?;
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros: i64 = format!("{frac:0<6}").parse().ok()?;
    Some((((h * 60 + m) * 60 + sec - offset_s) * 1_000_000 + micros).rem_euclid(DAY_US))
}

pub fn shown(v: &Option<String>) -> String {
    match v {
        None => "NULL".into(),
        Some(s) if s.chars().count() > 100 => format!(
            "{:?}… ({} bytes)",
            s.chars().take(60).collect::<String>(),
            s.len()
        ),
        Some(s) => format!("{s:?}"),
    }
}

/// `pattern` with `*` standing for any text.
fn type_matches(pattern: &str, actual: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == actual,
        Some((head, tail)) => {
            actual.len() >= head.len() + tail.len()
                && actual.starts_with(head)
                && actual.ends_with(tail)
        }
    }
}

#[test]
fn every_postgres_type_round_trips_into_typed_parquet() {
    let p = Pipeline::new("types", TYPES_SCHEMA, "public.all_types");
    let audit = audit_dir(&p);
    // The same rows again, streamed: snapshot (JDBC) and streaming (pgoutput) decode apart.
    let streamed =
        "CREATE TEMP TABLE copy AS SELECT * FROM all_types; UPDATE copy SET id = id + 100; \
                    INSERT INTO all_types SELECT * FROM copy;";
    capture_workload(
        &p,
        &file_audit(&audit),
        TYPE_ROWS,
        &[streamed],
        2 * TYPE_ROWS,
    );
    compact(&p);

    let conn = duck();
    let relation = scan(&audit, "public.all_types");

    // Column order and types: the table's columns, then the _cdc_ columns.
    let described = describe(&conn, &relation);
    let names: Vec<&str> = described.iter().map(|(n, _)| n.as_str()).collect();
    let want_names: Vec<&str> = std::iter::once("id")
        .chain(COLS.iter().map(|c| c.name))
        .chain(CDC_COLUMNS)
        .collect();
    assert_eq!(names, want_names, "audit columns");
    let types: BTreeMap<&str, &str> = described
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let mut wrong_types = Vec::new();
    let expected_types = [("id", &["INTEGER"][..])]
        .into_iter()
        .chain(COLS.iter().map(|c| (c.name, c.types)))
        .chain([
            ("_cdc_op", &["VARCHAR"][..]),
            ("_cdc_seq", &["BIGINT"]),
            ("_cdc_ts", &["TIMESTAMP WITH TIME ZONE"]),
            ("_cdc_position", &["VARCHAR"]),
            ("_cdc_tx", &["VARCHAR"]),
            ("_cdc_snapshot", &["BOOLEAN"]),
            ("_cdc_unchanged", &["VARCHAR[]"]),
        ]);
    for (name, allowed) in expected_types {
        let actual = types[name];
        if !allowed.iter().any(|pattern| type_matches(pattern, actual)) {
            wrong_types.push(format!("{name}: {actual}, expected one of {allowed:?}"));
        }
    }
    assert!(
        wrong_types.is_empty(),
        "audit column types:\n{}",
        wrong_types.join("\n")
    );

    // Values: PostgreSQL's rows against the audit's c and r rows, column by column. (`row_id`,
    // not `id`: PostgreSQL would sort by an output column named id, as text.)
    let pg = p.sql().rows(&format!(
        "SELECT id::text AS row_id, {} FROM all_types ORDER BY id",
        COLS.iter()
            .map(|c| subst(c.pg, c.name))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let duck_expr = |c: &Col| -> String {
        if matches!(c.cmp, Cmp::Duration) && types[c.name] == "INTERVAL" {
            subst(DUCK_INTERVAL_US, c.name)
        } else {
            subst(c.duck, c.name)
        }
    };
    let audited = duck_rows(
        &conn,
        &format!(
            "SELECT id::VARCHAR AS row_id, {} FROM {relation} WHERE _cdc_op IN ('r', 'c') ORDER BY id",
            COLS.iter().map(duck_expr).collect::<Vec<_>>().join(", ")
        ),
    );
    let ids = |rows: &[Vec<Option<String>>]| -> Vec<String> {
        rows.iter().map(|r| cell(&r[0]).to_string()).collect()
    };
    assert_eq!(ids(&audited), ids(&pg), "audited rows by id");
    assert_eq!(pg.len(), 2 * TYPE_ROWS);
    let mut mismatches = Vec::new();
    for (pg_row, audit_row) in pg.iter().zip(&audited) {
        for (i, c) in COLS.iter().enumerate() {
            let (want, got) = (&pg_row[i + 1], &audit_row[i + 1]);
            let same = match (want, got) {
                (None, None) => true,
                (Some(w), Some(g)) => same_value(c.cmp, w, g),
                _ => false,
            };
            if !same {
                mismatches.push(format!(
                    "id {} {}: postgres {} audit {}",
                    cell(&pg_row[0]),
                    c.name,
                    shown(want),
                    shown(got)
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} values differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );

    // Nothing was unchanged-TOAST here: every row's list is empty, not NULL.
    let unchanged = duck_rows(
        &conn,
        &format!(
            "SELECT count(*) FROM {relation} WHERE _cdc_unchanged IS NULL OR len(_cdc_unchanged) <> 0"
        ),
    );
    assert_eq!(
        cell(&unchanged[0][0]),
        "0",
        "_cdc_unchanged is [] when nothing is missing"
    );
    assert_audit_matches_journal(&p, &conn, &audit);
}

// ---------------------------------------------------------------------------------------------
// 2. Exactly once under crashes

const THREE_TABLES: [&str; 3] = ["t1", "t2", "t3"];

/// One round of changes on all three tables, interleaved in transactions: 40 inserts, 10
/// updates and 5 deletes per table. Returns the number of change events.
fn churn(sql: &Sql, round: i64) -> usize {
    let base = round * 1000;
    for chunk in 0..4 {
        let lo = base + chunk * 10 + 1;
        let inserts: String = THREE_TABLES
            .iter()
            .map(|t| {
                format!(
                    "INSERT INTO {t} SELECT g, g % 7, 'round {round}' FROM generate_series({lo}, {}) g;",
                    lo + 9
                )
            })
            .collect();
        sql.exec(&format!("BEGIN; {inserts} COMMIT;"));
    }
    for t in THREE_TABLES {
        sql.exec(&format!(
            "UPDATE {t} SET v = v + 1 WHERE id BETWEEN {} AND {};",
            base + 1,
            base + 10
        ));
        sql.exec(&format!(
            "DELETE FROM {t} WHERE id BETWEEN {} AND {};",
            base + 31,
            base + 35
        ));
    }
    THREE_TABLES.len() * (40 + 10 + 5)
}

#[test]
fn a_crash_anywhere_in_compaction_leaves_every_event_in_exactly_one_file() {
    let schema: String = THREE_TABLES
        .iter()
        .map(|t| {
            format!(
                "CREATE TABLE {t} (id int PRIMARY KEY, v int, note text); \
                 INSERT INTO {t} SELECT g, 0, 'seed' FROM generate_series(1, 10) g;"
            )
        })
        .collect();
    let p = Pipeline::new("exactly", &schema, "public.t1,public.t2,public.t3");
    let audit = audit_dir(&p);
    let extra = file_audit(&audit);
    let conn = duck();
    let mut expected = 30; // the snapshot
    let mut settled = BTreeMap::new(); // files of completed runs: never rewritten

    for (round, failpoint) in [
        (1, "compact.after_file:1"),
        (2, "compact.after_file:2"),
        (3, "compact.before_manifest"),
    ] {
        let mut capture = p.start_capture_with(&extra);
        p.wait_for_events(expected, &mut capture, SNAPSHOT_WAIT);
        expected += churn(&p.sql(), round);
        p.wait_for_events(expected, &mut capture, STREAM_WAIT);
        assert_eq!(capture.terminate(STOP_WAIT), 0);
        assert_eq!(p.events().len(), expected);
        let manifest_before = audited_through(&p);

        // The crash.
        let out = p.db_sync_env(&["compact", "--once"], &[("DB_SYNC_FAILPOINT", failpoint)]);
        assert_eq!(
            out.status.signal(),
            Some(SIGABRT),
            "{failpoint} must abort compact: {}",
            output_text(&out)
        );
        let crashed = file_states(&audit);
        let new: Vec<&PathBuf> = crashed
            .keys()
            .filter(|k| !settled.contains_key(*k))
            .collect();
        let published = match failpoint {
            "compact.before_manifest" => THREE_TABLES.len(),
            fp => fp.rsplit(':').next().unwrap().parse().unwrap(),
        };
        assert!(
            new.len() >= published,
            "{failpoint}: {} new files visible, expected at least {published}: {new:?}",
            new.len()
        );
        if failpoint == "compact.before_manifest" {
            assert_eq!(
                audited_through(&p),
                manifest_before,
                "{failpoint}: the manifest must not move"
            );
        }
        // Every visible file is whole (audit_files reads each), and the manifest never claims
        // an event that no file holds.
        let visible: BTreeSet<i64> = seqs(&conn, &audit).into_iter().collect();
        if let Some(through) = audited_through(&p) {
            let claimed_missing: Vec<u64> = (1..=through)
                .filter(|s| !visible.contains(&(*s as i64)))
                .take(10)
                .collect();
            assert!(
                claimed_missing.is_empty(),
                "{failpoint}: manifest says audited through {through}, but no file holds {claimed_missing:?}"
            );
        }
        assert_unchanged(&settled, &crashed, failpoint);

        // The re-run finishes the work: same names, nothing twice, nothing left over.
        compact(&p);
        assert_only_parquet(&audit);
        assert_audit_matches_journal(&p, &conn, &audit);
        assert_eq!(audited_through(&p), Some(expected as u64));
        let done = file_states(&audit);
        for name in crashed.keys() {
            assert!(
                done.contains_key(name),
                "{failpoint}: the re-run did not reuse the name {}",
                name.display()
            );
        }
        assert_unchanged(&settled, &done, failpoint);

        // Nothing new: exit 0 and write nothing.
        compact(&p);
        assert!(
            file_states(&audit) == done,
            "a run with nothing new wrote files"
        );
        assert_eq!(audited_through(&p), Some(expected as u64));
        settled = done;
    }

    // More changes, compacted while capture runs: compact has capture seal its segment.
    let mut capture = p.start_capture_with(&extra);
    p.wait_for_events(expected, &mut capture, SNAPSHOT_WAIT);
    expected += churn(&p.sql(), 4);
    p.wait_for_events(expected, &mut capture, STREAM_WAIT);
    compact(&p);
    assert_audit_matches_journal(&p, &conn, &audit);
    assert_eq!(audited_through(&p), Some(expected as u64));
    assert_unchanged(&settled, &file_states(&audit), "after a later run");
    assert_only_parquet(&audit);
    assert_eq!(capture.terminate(STOP_WAIT), 0);
    assert_eq!(p.events().len(), expected);
}

// ---------------------------------------------------------------------------------------------
// 3. Schema change

#[test]
fn a_schema_change_starts_a_new_file_and_old_rows_read_null_in_new_columns() {
    let p = Pipeline::new(
        "schemachange",
        "CREATE TABLE evolving (id int PRIMARY KEY, a text); INSERT INTO evolving VALUES (1, 'one'), (2, 'two');",
        "public.evolving",
    );
    let audit = audit_dir(&p);
    let streamed = [
        "INSERT INTO evolving VALUES (3, 'three')",
        "ALTER TABLE evolving ADD COLUMN b int DEFAULT 7",
        "INSERT INTO evolving VALUES (4, 'four', 40)",
        "UPDATE evolving SET a = 'ONE' WHERE id = 1",
        "ALTER TABLE evolving DROP COLUMN a",
        "INSERT INTO evolving VALUES (5, 50)",
    ];
    capture_workload(&p, &file_audit(&audit), 2, &streamed, 6);
    compact(&p);

    let conn = duck();
    // Three column sets, so at least three files, each with one column set.
    let files = audit_files(&conn, &audit);
    assert!(files.len() >= 3, "one file per schema version: {files:#?}");
    let mut column_sets = BTreeSet::new();
    for f in &files {
        let cols: Vec<String> = describe(&conn, &read_file(&f.path))
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| !n.starts_with("_cdc_"))
            .collect();
        let ids: BTreeSet<String> =
            duck_rows(&conn, &format!("SELECT id FROM {}", read_file(&f.path)))
                .into_iter()
                .map(|r| cell(&r[0]).to_string())
                .collect();
        // Rows of 3 were written before ADD COLUMN, 5 after DROP COLUMN.
        if ids.contains("3") {
            assert_eq!(cols, ["id", "a"], "{}", f.path.display());
        }
        if ids.contains("5") {
            assert_eq!(cols, ["id", "b"], "{}", f.path.display());
        }
        column_sets.insert(cols);
    }
    assert!(
        column_sets.contains(&vec!["id".to_string(), "a".into(), "b".into()]),
        "{column_sets:?}"
    );

    // union_by_name: the old rows read NULL in b (not the DEFAULT PostgreSQL now shows), the
    // rows after DROP COLUMN read NULL in a.
    let rows = duck_rows(
        &conn,
        &format!(
            "SELECT _cdc_op, id::VARCHAR AS row_id, a, b::VARCHAR FROM {} \
             ORDER BY _cdc_op <> 'r', CASE WHEN _cdc_op = 'r' THEN id END, _cdc_seq",
            scan(&audit, "public.evolving")
        ),
    );
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        rows,
        vec![
            vec![s("r"), s("1"), s("one"), None],
            vec![s("r"), s("2"), s("two"), None],
            vec![s("c"), s("3"), s("three"), None],
            vec![s("c"), s("4"), s("four"), s("40")],
            vec![s("u"), s("1"), s("ONE"), s("7")],
            vec![s("c"), s("5"), None, s("50")],
        ]
    );
    assert_audit_matches_journal(&p, &conn, &audit);
}

// ---------------------------------------------------------------------------------------------
// 4. Unchanged TOAST

// ~128 KB of hex digits, over the TOAST threshold many times.
const BIG_1: &str =
    "(SELECT string_agg(md5(g::text), '' ORDER BY g) FROM generate_series(1, 4000) g)";
const BIG_2: &str =
    "(SELECT string_agg(md5((g * 7)::text), '' ORDER BY g) FROM generate_series(1, 4000) g)";

#[test]
fn an_update_that_leaves_a_toasted_value_out_marks_it_unchanged_and_null() {
    let p = Pipeline::new(
        "toast",
        &format!(
            "CREATE TABLE toasty (id int PRIMARY KEY, small int, big text);
             ALTER TABLE toasty REPLICA IDENTITY DEFAULT;
             ALTER TABLE toasty ALTER COLUMN big SET STORAGE EXTERNAL;
             INSERT INTO toasty VALUES (1, 1, {BIG_1});"
        ),
        "public.toasty",
    );
    // The precondition: the value lives out of line, in the TOAST table.
    let sql = p.sql();
    let toast = sql
        .value("SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'toasty'::regclass")
        .unwrap();
    assert_ne!(
        sql.value(&format!("SELECT count(*)::text FROM {toast}"))
            .as_deref(),
        Some("0"),
        "big must be TOASTed out of line"
    );
    let audit = audit_dir(&p);
    let insert = format!("INSERT INTO toasty VALUES (2, 2, {BIG_2})");
    let streamed = [
        insert.as_str(),
        "UPDATE toasty SET small = small + 10 WHERE id = 1",
        "UPDATE toasty SET small = small + 10 WHERE id = 2",
        "UPDATE toasty SET big = big || 'x' WHERE id = 2",
    ];
    capture_workload(&p, &file_audit(&audit), 1, &streamed, 5);
    compact(&p);

    let md5 = |expr: &str| sql.value(&format!("SELECT md5({expr})")).unwrap();
    let (big_1, big_2, big_2x) = (md5(BIG_1), md5(BIG_2), md5(&format!("{BIG_2} || 'x'")));
    let conn = duck();
    let rows = duck_rows(
        &conn,
        &format!(
            "SELECT _cdc_op, id::VARCHAR, small::VARCHAR, md5(big), \
             coalesce(array_to_string(_cdc_unchanged, ','), ''), len(_cdc_unchanged)::VARCHAR \
             FROM {} ORDER BY _cdc_seq",
            scan(&audit, "public.toasty")
        ),
    );
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        rows,
        vec![
            vec![s("r"), s("1"), s("1"), s(&big_1), s(""), s("0")],
            vec![s("c"), s("2"), s("2"), s(&big_2), s(""), s("0")],
            // Only `small` changed: PostgreSQL did not send `big`.
            vec![s("u"), s("1"), s("11"), None, s("big"), s("1")],
            vec![s("u"), s("2"), s("12"), None, s("big"), s("1")],
            vec![s("u"), s("2"), s("12"), s(&big_2x), s(""), s("0")],
        ],
        "(op, id, small, md5(big), _cdc_unchanged, its length) by seq"
    );
    assert_audit_matches_journal(&p, &conn, &audit);
}

// ---------------------------------------------------------------------------------------------
// 5. Deletes

#[test]
fn a_delete_carries_the_before_image_key_or_full_row() {
    let p = Pipeline::new(
        "deletes",
        "CREATE TABLE del_key (id int PRIMARY KEY, v text, n int);
         CREATE TABLE del_full (id int PRIMARY KEY, v text, n int);
         ALTER TABLE del_full REPLICA IDENTITY FULL;
         INSERT INTO del_key VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30);
         INSERT INTO del_full VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30);",
        "public.del_key,public.del_full",
    );
    let audit = audit_dir(&p);
    let streamed = [
        "UPDATE del_full SET v = 'b2', n = 21 WHERE id = 2",
        "DELETE FROM del_key WHERE id IN (1, 2)",
        "DELETE FROM del_full WHERE id IN (1, 2)",
    ];
    capture_workload(&p, &file_audit(&audit), 6, &streamed, 11);
    compact(&p);

    let conn = duck();
    let deletes = |table: &str| {
        duck_rows(
            &conn,
            &format!(
                "SELECT id::VARCHAR AS row_id, v, n::VARCHAR FROM {} WHERE _cdc_op = 'd' ORDER BY id",
                scan(&audit, table)
            ),
        )
    };
    let s = |v: &str| Some(v.to_string());
    // REPLICA IDENTITY DEFAULT: the key only.
    assert_eq!(
        deletes("public.del_key"),
        vec![vec![s("1"), None, None], vec![s("2"), None, None]]
    );
    // REPLICA IDENTITY FULL: the whole old row, as updated.
    assert_eq!(
        deletes("public.del_full"),
        vec![
            vec![s("1"), s("a"), s("10")],
            vec![s("2"), s("b2"), s("21")]
        ]
    );
    assert_audit_matches_journal(&p, &conn, &audit);
}

// ---------------------------------------------------------------------------------------------
// 6. Snapshot reads, and the small workload of the S3 tests

const SMALL_SCHEMA: &str = "CREATE TABLE snap (id int PRIMARY KEY, v text);
    INSERT INTO snap SELECT g, 'v' || g FROM generate_series(1, 5) g;";
const SMALL_SNAPSHOT: usize = 5;
const SMALL_STREAM: &[&str] = &[
    "INSERT INTO snap VALUES (6, 'six'), (7, 'seven'), (8, 'eight')",
    "UPDATE snap SET v = 'uno' WHERE id = 1",
    "DELETE FROM snap WHERE id = 2",
];
const SMALL_EVENTS: usize = 10;

#[test]
fn snapshot_reads_are_flagged_and_streamed_changes_are_not() {
    let p = Pipeline::new("snapflags", SMALL_SCHEMA, "public.snap");
    let audit = audit_dir(&p);
    capture_workload(
        &p,
        &file_audit(&audit),
        SMALL_SNAPSHOT,
        SMALL_STREAM,
        SMALL_EVENTS,
    );
    compact(&p);

    let conn = duck();
    let relation = scan(&audit, "public.snap");
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        duck_rows(
            &conn,
            &format!(
                "SELECT _cdc_op, _cdc_snapshot::VARCHAR, count(*)::VARCHAR, min(_cdc_seq)::VARCHAR, \
                 max(_cdc_seq)::VARCHAR FROM {relation} GROUP BY ALL ORDER BY min(_cdc_seq)"
            )
        ),
        vec![
            vec![s("r"), s("true"), s("5"), s("1"), s("5")],
            vec![s("c"), s("false"), s("3"), s("6"), s("8")],
            vec![s("u"), s("false"), s("1"), s("9"), s("9")],
            vec![s("d"), s("false"), s("1"), s("10"), s("10")],
        ],
        "(op, snapshot, rows, first seq, last seq)"
    );
    // Streamed changes carry their transaction and an LSN.
    let lsn_like = |s: &str| {
        s.split_once('/').is_some_and(|(hi, lo)| {
            [hi, lo]
                .iter()
                .all(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
        })
    };
    for r in duck_rows(
        &conn,
        &format!("SELECT _cdc_position, _cdc_tx FROM {relation} WHERE NOT _cdc_snapshot"),
    ) {
        assert!(lsn_like(cell(&r[0])), "an LSN: {r:?}");
        assert!(r[1].is_some(), "a transaction id: {r:?}");
    }
    assert_audit_matches_journal(&p, &conn, &audit);
}

// ---------------------------------------------------------------------------------------------
// 7, 8. S3

/// Whether the S3 tests can run here. Without CI they skip, saying so, when no S3 server
/// answers; in CI they must run.
fn s3_ready(test: &str) -> bool {
    if s3_reachable() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| !v.is_empty()) {
        panic!(
            "{test}: no S3 server at {} and CI is set; start it with scripts/services.sh start all",
            s3_endpoint()
        );
    }
    eprintln!(
        "SKIPPED {test}: no S3 server at {} (scripts/services.sh start all starts one; in CI this test runs)",
        s3_endpoint()
    );
    false
}

fn s3_store() -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(s3_endpoint())
        .with_region("us-east-1")
        .with_bucket_name("audit")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_allow_http(true)
        .build()
        .expect("S3 client")
}

/// Every object under `prefix` in bucket `audit`, downloaded into `into` at its path relative
/// to the prefix. Returns `(relative path, size, e_tag, last modified)` of each, sorted.
fn download(prefix: &str, into: &Path) -> Vec<(String, u64, Option<String>, String)> {
    use futures::TryStreamExt;
    use object_store::{ObjectStore, ObjectStoreExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = s3_store();
        let root = object_store::path::Path::from(prefix);
        let metas: Vec<object_store::ObjectMeta> = store
            .list(Some(&root))
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("list s3://audit/{prefix}: {e}"));
        let mut out = Vec::new();
        for m in metas {
            let key = m.location.to_string();
            let rel = key
                .strip_prefix(prefix)
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or_else(|| panic!("{key} is not under {prefix}"))
                .to_string();
            let got = store
                .get(&m.location)
                .await
                .unwrap_or_else(|e| panic!("get {key}: {e}"));
            let bytes = got
                .bytes()
                .await
                .unwrap_or_else(|e| panic!("read {key}: {e}"));
            let path = into.join(&rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
            out.push((rel, m.size, m.e_tag, m.last_modified.to_rfc3339()));
        }
        out.sort();
        out
    })
}

#[test]
fn audit_files_land_in_s3_each_event_once() {
    if !s3_ready("audit_files_land_in_s3_each_event_once") {
        return;
    }
    let p = Pipeline::new("s3audit", SMALL_SCHEMA, "public.snap");
    let prefix = format!("it/{}", p.name);
    let extra = s3_audit("audit", &prefix);
    capture_workload(&p, &extra, SMALL_SNAPSHOT, SMALL_STREAM, SMALL_EVENTS);
    compact(&p);

    let local = p.dir.path().join("downloaded");
    let objects = download(&prefix, &local);
    assert!(!objects.is_empty(), "no objects under s3://audit/{prefix}");
    assert_only_parquet(&local); // no temporary or partial objects either
    let conn = duck();
    assert_audit_matches_journal(&p, &conn, &local);
    assert_eq!(audited_through(&p), Some(SMALL_EVENTS as u64));

    // Nothing new: nothing written.
    compact(&p);
    let again = download(&prefix, &p.dir.path().join("downloaded-again"));
    assert_eq!(again, objects, "a run with nothing new changed objects");
}

#[test]
fn a_missing_bucket_is_one_line_and_changes_nothing_then_a_good_url_audits_everything() {
    if !s3_ready(
        "a_missing_bucket_is_one_line_and_changes_nothing_then_a_good_url_audits_everything",
    ) {
        return;
    }
    let p = Pipeline::new("s3bad", SMALL_SCHEMA, "public.snap");
    let prefix = format!("it/{}", p.name);
    let good = s3_audit("audit", &prefix);
    let bad = s3_audit("no-such-bucket-xyz", "p");

    // A first, good run, so that there is a manifest to keep.
    p.write_config_with(&pg_password(), p.port, &good);
    let mut snapshot = p.spawn_db_sync(&["capture", "--exit-after-snapshot"]);
    assert_eq!(snapshot.wait(SNAPSHOT_WAIT), 0, "{}", snapshot.log());
    assert_eq!(p.events().len(), SMALL_SNAPSHOT);
    compact(&p);
    assert_eq!(audited_through(&p), Some(SMALL_SNAPSHOT as u64));
    let sql = p.sql();
    for statement in SMALL_STREAM {
        sql.exec(statement);
    }
    let mut capture = p.start_capture_with(&good);
    p.wait_for_events(SMALL_EVENTS, &mut capture, STREAM_WAIT);
    assert_eq!(capture.terminate(STOP_WAIT), 0);

    let journal_files = || -> BTreeMap<PathBuf, Vec<u8>> {
        walk(&p.journal_dir())
            .into_iter()
            .filter(|f| {
                f.extension().is_some_and(|x| x == "log")
                    || f.file_name().is_some_and(|n| n == "audit-manifest.json")
            })
            .map(|f| {
                let bytes = std::fs::read(&f).unwrap();
                (f, bytes)
            })
            .collect()
    };
    let before = journal_files();

    p.write_config_with(&pg_password(), p.port, &bad);
    let out = p.db_sync(&["compact", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    let line = last_stderr_line(&out);
    assert!(line.starts_with("error: "), "{line}");
    assert!(
        line.contains("no-such-bucket-xyz"),
        "names the bucket: {line}"
    );
    assert!(
        line.contains("audit.url") || line.to_lowercase().contains("create"),
        "says what to fix (audit.url, or create the bucket): {line}"
    );
    assert!(
        journal_files() == before,
        "a failed run must leave the journal and the manifest as they were"
    );
    assert_eq!(audited_through(&p), Some(SMALL_SNAPSHOT as u64));

    // Back to the good URL: everything is audited, each event once.
    p.write_config_with(&pg_password(), p.port, &good);
    compact(&p);
    let local = p.dir.path().join("downloaded");
    download(&prefix, &local);
    assert_only_parquet(&local);
    let conn = duck();
    assert_audit_matches_journal(&p, &conn, &local);
    assert_eq!(audited_through(&p), Some(SMALL_EVENTS as u64));
}
