//! Audit files read back independently: running db-sync with an `audit:` section, the files
//! read with DuckDB (their layout, their rows against the journal), the S3 server's objects
//! downloaded, and the small workload the audit-store suite uses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use duckdb::Connection;
use serde_json::Value;

use super::*;

pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(90);
pub const STREAM_WAIT: Duration = Duration::from_secs(60);
pub const STOP_WAIT: Duration = Duration::from_secs(60);
pub const SIGABRT: i32 = 6;
/// The `_cdc_` columns of a keyed table's audit file, in order.
pub const CDC_COLUMNS: [&str; 8] = [
    "_cdc_op",
    "_cdc_seq",
    "_cdc_ts",
    "_cdc_position",
    "_cdc_tx",
    "_cdc_snapshot",
    "_cdc_unchanged",
    "_cdc_old_key",
];

// ---------------------------------------------------------------------------------------------
// Running db-sync

/// The `audit:` section for a local directory.
pub fn file_audit(dir: &Path) -> String {
    format!("audit:\n  url: file://{}\n", dir.display())
}

/// The `audit:` section for `s3://<bucket>/<prefix>` on the test S3 server.
pub fn s3_audit(bucket: &str, prefix: &str) -> String {
    format!(
        "audit:\n  url: s3://{bucket}/{prefix}\n  options:\n    endpoint: \"{}\"\n    region: us-east-1\n    access_key_id: test\n    secret_access_key: test\n    allow_http: true\n",
        s3_endpoint()
    )
}

pub fn audit_dir(p: &Pipeline) -> PathBuf {
    p.dir.path().join("audit")
}

pub fn output_text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `compact --once`, which must succeed.
pub fn compact(p: &Pipeline) {
    let out = p.db_sync(&["compact", "--once"]);
    assert!(
        out.status.success(),
        "compact --once failed: {}",
        output_text(&out)
    );
}

/// Captures the snapshot of a fresh pipeline, runs the `streamed` statements, waits for `total`
/// events in the journal and stops capture.
pub fn capture_workload(
    p: &Pipeline,
    extra: &str,
    snapshot: usize,
    streamed: &[&str],
    total: usize,
) {
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

/// `audited_through` from `<journal.dir>/audit-progress.json`, None before the first run.
pub fn audited_through(p: &Pipeline) -> Option<u64> {
    let path = p.journal_dir().join("audit-progress.json");
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

pub fn duck() -> Connection {
    Connection::open_in_memory().expect("DuckDB in memory")
}

/// A SQL string literal.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// All audit files of `table` as one relation, read as [`db_sync::audit#audit-files`] says
/// readers read them.
pub fn scan(dir: &Path, table: &str) -> String {
    format!(
        "read_parquet({}, union_by_name=true, hive_partitioning=true)",
        lit(&format!("{}/{table}/**/*.parquet", dir.display()))
    )
}

pub fn read_file(path: &Path) -> String {
    format!("read_parquet({})", lit(&path.display().to_string()))
}

/// Rows of a DuckDB query, each value as text (NULL as None), like [`Sql::rows`].
pub fn duck_rows(conn: &Connection, sql: &str) -> Vec<Vec<Option<String>>> {
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

pub fn duck_text(v: duckdb::types::Value) -> Option<String> {
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
pub fn describe(conn: &Connection, relation: &str) -> Vec<(String, String)> {
    duck_rows(conn, &format!("DESCRIBE SELECT * FROM {relation}"))
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .filter(|(name, _)| name != "date")
        .collect()
}

pub fn cell(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("NULL")
}

// ---------------------------------------------------------------------------------------------
// Layout and exactly-once checks

/// Every file below `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
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
pub fn assert_only_parquet(dir: &Path) {
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
pub fn file_states(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
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

pub fn assert_unchanged(
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

/// An audit file, its place in the layout ([`db_sync::audit#audit-files`]) checked.
#[derive(Debug)]
pub struct AuditFile {
    pub path: PathBuf,
    /// `schema.table`, the first directory level.
    pub table: String,
}

pub fn date_of_us(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_else(|| panic!("{us} µs is not a time"))
        .format("%Y-%m-%d")
        .to_string()
}

pub fn layout_error(rel: &Path, why: &str) -> ! {
    panic!(
        "{}: {why}; expected <schema>.<table>/date=<YYYY-MM-DD>/<first_seq>-<last_seq>.<journal>.parquet",
        rel.display()
    )
}

/// Every `*.parquet` below `dir`, each checked: path `<schema>.<table>/date=<YYYY-MM-DD>/
/// <first_seq>-<last_seq>.<journal>.parquet` (the journal's id in hex) with plain decimal seqs
/// equal to the smallest and largest
/// `_cdc_seq` inside, no seq twice in the file, every row's commit time (UTC) on that date,
/// every column chunk zstd-compressed. A file DuckDB cannot read fails here.
pub fn audit_files(conn: &Connection, dir: &Path) -> Vec<AuditFile> {
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
        let (range, journal) = parts[2]
            .strip_suffix(".parquet")
            .and_then(|s| s.split_once('.'))
            .unwrap_or_else(|| layout_error(rel, "name is not <first>-<last>.<journal>.parquet"));
        if journal.len() != 12 || !journal.bytes().all(|b| b.is_ascii_hexdigit()) {
            layout_error(rel, "the journal id is not 12 hex digits");
        }
        let (first, last) = range
            .split_once('-')
            .unwrap_or_else(|| layout_error(rel, "name is not <first>-<last>.<journal>.parquet"));
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
pub struct Meta {
    pub table: String,
    pub op: String,
    pub snapshot: bool,
    pub position: String,
    pub tx: Option<String>,
    pub ts_us: i64,
}

/// `(seq, meta, file)` of every row of every audit file below `dir`, by seq (duplicates kept).
pub fn audit_rows(conn: &Connection, dir: &Path) -> Vec<(i64, Meta, PathBuf)> {
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
pub fn seqs(conn: &Connection, dir: &Path) -> Vec<i64> {
    audit_rows(conn, dir)
        .into_iter()
        .map(|(s, _, _)| s)
        .collect()
}

/// What the journal says an event's audit row must carry (`journal dump` renders values as
/// the audit files hold them).
pub fn journal_meta(e: &Value) -> Meta {
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
pub fn assert_audit_matches_journal(p: &Pipeline, conn: &Connection, dir: &Path) {
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
// 6. Snapshot reads, and the small workload of the S3 tests

pub const SMALL_SCHEMA: &str = "CREATE TABLE snap (id int PRIMARY KEY, v text);
    INSERT INTO snap SELECT g, 'v' || g FROM generate_series(1, 5) g;";
pub const SMALL_SNAPSHOT: usize = 5;
pub const SMALL_STREAM: &[&str] = &[
    "INSERT INTO snap VALUES (6, 'six'), (7, 'seven'), (8, 'eight')",
    "UPDATE snap SET v = 'uno' WHERE id = 1",
    "DELETE FROM snap WHERE id = 2",
];
pub const SMALL_EVENTS: usize = 10;

// ---------------------------------------------------------------------------------------------
// 7, 8. S3

/// Whether the S3 tests can run here. Without CI they skip, saying so, when no S3 server
/// answers; in CI they must run.
pub fn s3_ready(test: &str) -> bool {
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

pub fn s3_store() -> object_store::aws::AmazonS3 {
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
pub fn download(prefix: &str, into: &Path) -> Vec<(String, u64, Option<String>, String)> {
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
