//! Roll-up of small audit files, retention, and `query` over S3 through a cache.
//!
//! The audit files come from real compaction cycles (the library's `cycle::run_once`) over a
//! journal written through the journal API, so that commit dates can be chosen (two days in
//! the past, 150 cycles each); everything under test runs as the `db-sync` binary, crashes
//! included (failpoints abort the process).

use std::collections::BTreeMap;
use std::path::PathBuf;

use db_sync::config::Config;
use db_sync::journal::{event, Journal};

use crate::support::audit::{duck, duck_rows, walk};
use crate::support::run_db_sync;

const SCHEMA: &str = r#"{"table":"public.t","topic":"x.public.t",
 "key":{"type":"struct","optional":false,"fields":[{"field":"id","type":"int64","optional":false}]},
 "row":{"type":"struct","optional":true,"fields":[
  {"field":"id","type":"int64","optional":false},
  {"field":"v","type":"string","optional":true},
  {"field":"n","type":"int64","optional":true}
 ]}}"#;

const OTHER: &str = r#"{"table":"public.other","topic":"x.public.other",
 "key":{"type":"struct","optional":false,"fields":[{"field":"id","type":"int64","optional":false}]},
 "row":{"type":"struct","optional":true,"fields":[
  {"field":"id","type":"int64","optional":false},
  {"field":"v","type":"string","optional":true},
  {"field":"n","type":"int64","optional":true}
 ]}}"#;

const DAY_US: i64 = 86_400_000_000;
/// 2026-01-01 and 2026-01-02 (days since 1970-01-01).
const DAY1: i64 = 20_454;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zz(out: &mut Vec<u8>, v: i64) {
    varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// A row of (id, v, n): a null bitmap, then the present values.
fn row(out: &mut Vec<u8>, id: i64, v: Option<&str>, n: Option<i64>) {
    let mut bitmap = 0u8;
    if v.is_none() {
        bitmap |= 2;
    }
    if n.is_none() {
        bitmap |= 4;
    }
    out.push(bitmap);
    zz(out, id);
    if let Some(v) = v {
        varint(out, v.len() as u64);
        out.extend_from_slice(v.as_bytes());
    }
    if let Some(n) = n {
        zz(out, n);
    }
}

/// An event body in the journal's layout (see src/journal/event.rs).
fn body(op: u8, ts_us: i64, lsn: u64, id: i64, v: Option<&str>, n: Option<i64>) -> Vec<u8> {
    let mut flags = event::PG_POSITION | event::KEY;
    flags |= if op == b'd' {
        event::BEFORE
    } else {
        event::AFTER
    };
    let mut b = vec![op, flags];
    b.extend_from_slice(&ts_us.to_le_bytes());
    b.extend_from_slice(&lsn.to_le_bytes());
    b.extend_from_slice(&lsn.to_le_bytes());
    b.push(0);
    zz(&mut b, id);
    if op == b'd' {
        row(&mut b, id, None, None);
    } else {
        row(&mut b, id, v, n);
    }
    b
}

pub(crate) struct Setup {
    dir: tempfile::TempDir,
    config_path: PathBuf,
    /// Events journaled per table.
    pub(crate) events: BTreeMap<&'static str, u64>,
}

impl Setup {
    fn audit(&self) -> PathBuf {
        self.dir.path().join("audit")
    }

    pub(crate) fn run(&self, args: &[&str], failpoint: Option<&str>) -> std::process::Output {
        let mut cmd = std::process::Command::new(crate::support::BIN);
        cmd.arg("--config")
            .arg(&self.config_path)
            .args(args)
            .current_dir(self.dir.path());
        match failpoint {
            Some(f) => cmd.env("DB_SYNC_FAILPOINT", f),
            None => cmd.env_remove("DB_SYNC_FAILPOINT"),
        };
        cmd.output().expect("run db-sync")
    }

    fn query(&self, sql: &str, as_of: Option<&str>) -> String {
        let mut args = vec!["query", "--format", "json", sql];
        if let Some(t) = as_of {
            args.extend(["--as-of", t]);
        }
        let out = run_db_sync(self.dir.path(), &self.config_path, &args);
        assert!(
            out.status.success(),
            "query {sql} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Everything `query` can say about public.t: every change, the state, the state as of
    /// two times.
    fn answers(&self) -> Vec<String> {
        vec![
            self.query(
                "select count(*) as n, count(distinct _cdc_seq) as d, sum(_cdc_seq) as s from public.t_changes",
                None,
            ),
            self.query("select * from public.t_changes order by _cdc_seq", None),
            self.query("select * from public.t order by id", None),
            self.query(
                "select * from public.t order by id",
                Some("2026-01-01 12:00"),
            ),
            self.query(
                "select count(*), sum(n) from public.t",
                Some("2026-01-02 06:00"),
            ),
            self.query(
                "select count(*), sum(_cdc_seq) from public.other_changes",
                None,
            ),
        ]
    }

    /// Parquet files per `table/date=…` directory.
    fn files_per_partition(&self) -> BTreeMap<String, usize> {
        let root = self.audit();
        let mut out = BTreeMap::new();
        for p in walk(&root) {
            let rel = p.strip_prefix(&root).unwrap();
            if p.extension().is_some_and(|e| e == "parquet") {
                let part = rel.parent().unwrap().display().to_string();
                *out.entry(part).or_insert(0) += 1;
            }
        }
        out
    }
}

/// 150 compaction cycles on each of two dates for public.t (inserts, updates, deletes), and a
/// few for public.other on the second date; `extra_yaml` goes into `audit:`; each insert's
/// text carries `payload` bytes of incompressible hex.
pub(crate) fn setup(audit_url: Option<&str>, extra_yaml: &str, payload: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let audit_url = audit_url
        .map(str::to_string)
        .unwrap_or_else(|| format!("file://{}", dir.path().join("audit").display()));
    let text = format!(
        // (The source is never reached: port 1 answers `status` with a refusal at once.)
        "name: rollup\nsource:\n  connector.class: io.debezium.connector.postgresql.PostgresConnector\n  database.hostname: 127.0.0.1\n  database.port: 1\njournal:\n  dir: {}\naudit:\n  url: {audit_url}\n{extra_yaml}",
        journal.display(),
    );
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, &text).unwrap();
    let config = Config::load(&config_path).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut events: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut lsn = 100u64;
    let mut next_id = 1i64;
    let mut noise = 0x9E37_79B9_7F4A_7C15u64;
    for cycle in 0..300i64 {
        let day = DAY1 + cycle / 150;
        let ts = day * DAY_US + (cycle % 150) * 60_000_000 * 9; // every 9 minutes
        {
            let mut j = Journal::open(&journal, 1 << 20).unwrap();
            let t = j.schema_id(SCHEMA.as_bytes()).unwrap();
            let o = j.schema_id(OTHER.as_bytes()).unwrap();
            let mut batch: Vec<(u32, Vec<u8>)> = Vec::new();
            let mut push = |schema: u32, op: u8, id: i64, v: Option<&str>, n: Option<i64>| {
                lsn += 8;
                batch.push((schema, body(op, ts, lsn, id, v, n)));
            };
            let mut text = format!("cycle {cycle} ünïcode ✓ ");
            for _ in 0..payload / 16 {
                noise = noise
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                text.push_str(&format!("{noise:016x}"));
            }
            push(t, b'c', next_id, Some(&text), Some(cycle));
            push(t, b'c', next_id + 1, None, Some(-cycle));
            if next_id > 3 {
                push(t, b'u', next_id - 2, Some("updated"), Some(cycle * 1000));
            }
            if cycle % 10 == 9 {
                push(t, b'd', next_id - 3, None, None);
            }
            if cycle >= 290 {
                push(o, b'c', cycle, Some("other"), Some(1));
            }
            next_id += 2;
            for (schema, _) in &batch {
                let name = if *schema == t {
                    "public.t"
                } else {
                    "public.other"
                };
                *events.entry(name).or_insert(0) += 1;
            }
            j.append(batch.iter().map(|(s, b)| (*s, &b[..]))).unwrap();
        }
        rt.block_on(db_sync::cycle::run_once(&config))
            .expect("compaction cycle");
    }
    Setup {
        dir,
        config_path,
        events,
    }
}

pub(crate) fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// 300 cycles across two dates, then `rollup`, crashed twice on purpose: after the merged
/// file is written, and after some small files are deleted. After each crash and after the
/// finishing run, `query` answers exactly as before (every change once, the state, `--as-of`);
/// the documented `_cdc_seq` de-duplication makes a plain DuckDB read exact meanwhile.
#[test]
fn rollup_merges_each_closed_date_into_one_file_and_survives_crashes() {
    let s = setup(None, "", 0);
    let before = s.files_per_partition();
    assert_eq!(
        before,
        BTreeMap::from([
            ("public.other/date=2026-01-02".to_string(), 10),
            ("public.t/date=2026-01-01".to_string(), 150),
            ("public.t/date=2026-01-02".to_string(), 150),
        ])
    );
    let answers = s.answers();
    let n = s.events["public.t"];
    assert!(
        answers[0].contains(&format!("\"n\":{n},\"d\":{n}")),
        "{}",
        answers[0]
    );
    let conn = duck();
    let dedup = format!(
        "select count(*) from (select * from read_parquet('{}/public.t/**/*.parquet', union_by_name = true) qualify row_number() over (partition by _cdc_seq) = 1)",
        s.audit().display()
    );

    // Crash 1: public.other is rolled up (partitions go in table, date order), then the
    // merged file of public.t's 2026-01-01 is published and no small file of it deleted.
    let out = s.run(&["rollup"], Some("rollup.after_merged:2"));
    assert!(!out.status.success(), "the failpoint aborts");
    assert!(
        stderr(&out).contains("failpoint rollup.after_merged"),
        "{}",
        stderr(&out)
    );
    let mid = s.files_per_partition();
    assert_eq!(mid["public.other/date=2026-01-02"], 1);
    assert_eq!(mid["public.t/date=2026-01-01"], 151);
    assert_eq!(mid["public.t/date=2026-01-02"], 150);
    assert_eq!(s.answers(), answers, "nothing doubled after crash 1");
    assert_eq!(
        duck_rows(&conn, &dedup)[0][0].as_deref(),
        Some(n.to_string().as_str())
    );

    // Crash 2: the re-run removes 2026-01-01's leftovers, merges 2026-01-02 and dies after
    // deleting 40 of its small files.
    let out = s.run(&["rollup"], Some("rollup.after_delete:40"));
    assert!(
        !out.status.success(),
        "the failpoint aborts: {}",
        stderr(&out)
    );
    let mid = s.files_per_partition();
    assert_eq!(mid["public.t/date=2026-01-01"], 1);
    assert_eq!(mid["public.t/date=2026-01-02"], 1 + 150 - 40);
    assert_eq!(
        s.answers(),
        answers,
        "nothing lost or doubled after crash 2"
    );
    assert_eq!(
        duck_rows(&conn, &dedup)[0][0].as_deref(),
        Some(n.to_string().as_str())
    );

    // The re-run finishes the job.
    let out = s.run(&["rollup"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.contains("0 file(s) merged into 0")
            && line.contains("110 file(s) left by an interrupted roll-up deleted"),
        "{line}"
    );
    assert_eq!(
        s.files_per_partition(),
        BTreeMap::from([
            ("public.other/date=2026-01-02".to_string(), 1),
            ("public.t/date=2026-01-01".to_string(), 1),
            ("public.t/date=2026-01-02".to_string(), 1),
        ])
    );
    assert_eq!(s.answers(), answers, "the same answers after the roll-up");
    // Named by the range it covers, with the journal's id; nothing else is left behind.
    let names: Vec<String> = walk(&s.audit())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for name in &names {
        let stem = name.strip_suffix(".parquet").expect(name);
        // (No journal id here: identities come with capture, which this journal never had.)
        let (range, journal) = stem.split_once('.').unwrap_or((stem, ""));
        assert!(journal.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
        let (a, b) = range.split_once('-').unwrap();
        assert!(
            a.parse::<u64>().unwrap() < b.parse::<u64>().unwrap(),
            "{name}"
        );
    }
    // Rows in _cdc_seq order inside the merged file, read independently.
    let path = walk(&s.audit().join("public.t/date=2026-01-01"))[0].clone();
    let ordered = duck_rows(
        &conn,
        &format!(
            "select bool_and(_cdc_seq > prev) from (select _cdc_seq, lag(_cdc_seq, 1, -1) over (order by file_row_number) as prev from read_parquet('{}', file_row_number = true))",
            path.display()
        ),
    );
    assert_eq!(ordered[0][0].as_deref(), Some("true"));

    // Nothing left to do: a second run changes nothing.
    let files = s.files_per_partition();
    let out = s.run(&["rollup"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 file(s) merged into 0"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(s.files_per_partition(), files);
}

/// `audit.target_file_mb` bounds a merged file; `--table` and `--date` limit a run; bad
/// `--date` / `--table` are bad usage.
#[test]
fn rollup_keeps_to_target_file_mb_and_names_bad_arguments() {
    // An insert with 20 KB of hex text per cycle: ~10 KB a file after zstd, MBs a date.
    let s = setup(None, "  target_file_mb: 1\n", 20_000);
    let answers = s.answers();
    let small = walk(&s.audit().join("public.t/date=2026-01-01"));
    let total: u64 = small.iter().map(|p| p.metadata().unwrap().len()).sum();
    let largest_small = small
        .iter()
        .map(|p| p.metadata().unwrap().len())
        .max()
        .unwrap();
    let out = s.run(
        &["rollup", "--table", "public.t", "--date", "2026-01-01"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let files = s.files_per_partition();
    let merged = walk(&s.audit().join("public.t/date=2026-01-01"));
    assert!(total > 2 << 20, "the small files hold {total} bytes");
    // Every merged file but the last is full: more than 1 MB minus one small file.
    let want = total.div_ceil(1 << 20) as usize;
    assert!(
        (want..=want + 1).contains(&merged.len()),
        "{total} bytes in files of at most 1 MB: {} files",
        merged.len()
    );
    for p in &merged {
        let len = p.metadata().unwrap().len();
        assert!(
            len <= (1 << 20) + largest_small,
            "{} is {len} bytes",
            p.display()
        );
    }
    assert_eq!(
        files["public.t/date=2026-01-02"], 150,
        "--date limits the run"
    );
    assert_eq!(
        files["public.other/date=2026-01-02"], 10,
        "--table limits the run"
    );
    assert_eq!(s.answers(), answers);

    for (args, want) in [
        (
            vec!["rollup", "--date", "yesterday"],
            "`--date` \"yesterday\" is not a date",
        ),
        (vec!["rollup", "--date", "2999-01-01"], "is not closed yet"),
        (
            vec!["rollup", "--table", "public.nope"],
            "they hold public.other, public.t",
        ),
    ] {
        let out = s.run(&args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

/// `audit.retain_days` folds the partitions older than it into the changes the state reads,
/// never while a backfill (which holds `compact.lock`, as here) reads them: the state (now
/// and at later times) is unchanged, the history before the cutoff is refused by `--as-of`;
/// `status` shows the oldest date kept, files and bytes per table.
#[test]
fn retention_folds_the_old_partitions_into_the_state_and_waits_for_the_lock() {
    let keep_from = chrono::NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
    let days = (chrono::Utc::now().date_naive() - keep_from).num_days();
    let s = setup(None, &format!("  retain_days: {days}\n"), 0);
    let status = |s: &Setup| -> serde_json::Value {
        let out = s.run(&["status", "--json"], None);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let before = status(&s);
    let t = &before["audit_tables"][1];
    assert_eq!(
        (
            t["table"].as_str(),
            t["files"].as_u64(),
            t["oldest_date"].as_str()
        ),
        (Some("public.t"), Some(300), Some("2026-01-01"))
    );
    assert_eq!(before["audit_retain_days"].as_i64(), Some(days));
    let second_day = s.query(
        "select count(*) as n, sum(_cdc_seq) as s from public.t_changes where _cdc_ts >= '2026-01-02'",
        None,
    );
    let state = s.query("select * from public.t order by id", None);
    let later = s.query(
        "select count(*), sum(n) from public.t",
        Some("2026-01-02 06:00"),
    );
    // Live at the end of the first day: 300 rows inserted, 15 deleted.
    assert!(
        s.query(
            "select count(*) as n from (select arg_max(_cdc_op, _cdc_seq) as op from public.t_changes \
             where _cdc_ts < '2026-01-02' group by id) where op <> 'd'",
            None
        )
        .contains("\"n\":285"),
        "the fixture's first day"
    );

    // A backfill holds the compaction lock: roll-up waits for it, and deletes nothing meanwhile.
    let journal = s.dir.path().join("journal");
    use db_sync::state::locks;
    let lock = locks::try_lock(&journal.join(locks::COMPACT_LOCK))
        .unwrap()
        .expect("nothing else holds the lock");
    let log = s.dir.path().join("rollup.log");
    let mut child = std::process::Command::new(crate::support::BIN)
        .arg("--config")
        .arg(&s.config_path)
        .arg("rollup")
        .current_dir(s.dir.path())
        .env_remove("DB_SYNC_FAILPOINT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let waited = std::time::Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("waiting for compact.lock held by another db-sync process")
    {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(60),
            "rollup never waited for the lock: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "rollup ended without the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(s.files_per_partition()["public.t/date=2026-01-01"], 150);
    drop(lock);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.contains(
            "retention folded 1 expired partition(s) into the 285 change(s) the state reads"
        ),
        "{line}"
    );
    assert_eq!(
        s.files_per_partition(),
        BTreeMap::from([
            ("public.other/date=2026-01-02".to_string(), 1),
            ("public.t/date=2026-01-01".to_string(), 1),
            ("public.t/date=2026-01-02".to_string(), 1),
        ]),
        "the first day's base, rolled up"
    );
    assert_eq!(
        s.query(
            "select count(*) as n, sum(_cdc_seq) as s from public.t_changes where _cdc_ts >= '2026-01-02'",
            None
        ),
        second_day,
        "the second day's changes untouched"
    );
    assert!(
        s.query(
            "select count(*) as n, count(distinct id) as k, count(*) filter (where _cdc_op = 'd') as d from public.t_changes where _cdc_ts < '2026-01-02'",
            None
        )
        .contains("{\"n\":285,\"k\":285,\"d\":0}"),
        "of the first day, one latest change per live key"
    );
    assert_eq!(
        s.query("select * from public.t order by id", None),
        state,
        "the state is the same"
    );
    assert_eq!(
        s.query(
            "select count(*), sum(n) from public.t",
            Some("2026-01-02 06:00")
        ),
        later,
        "so is the state at a later time"
    );
    let out = s.run(
        &[
            "query",
            "select count(*) from public.t",
            "--as-of",
            "2026-01-01 12:00",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is before 2026-01-02, the oldest date whose history"),
        "{}",
        stderr(&out)
    );
    // `backfill` rebuilds the table from the base and the later changes: the state.
    let my = crate::support::mysql::My::fresh(&format!("retention_{}", std::process::id()));
    let mut config = std::fs::read_to_string(&s.config_path).unwrap();
    config.push_str(&my.target_yaml(""));
    std::fs::write(&s.config_path, config).unwrap();
    let out = s.run(&["backfill", "--table", "public.t", "--truncate"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let target = my.rows("SELECT COUNT(*), SUM(n), SUM(CHAR_LENGTH(v)) + SUM(id) FROM t");
    let source = s.query(
        "select count(*) as c, sum(n)::BIGINT as n, (sum(length(v)) + sum(id))::BIGINT as v from public.t",
        None,
    );
    let t = &target[0];
    assert_eq!(
        source.trim(),
        format!(
            "{{\"c\":{},\"n\":{},\"v\":{}}}",
            t[0].as_deref().unwrap(),
            t[1].as_deref().unwrap(),
            t[2].as_deref().unwrap()
        ),
        "backfill after retention"
    );
    // A second run finds nothing more to fold.
    let again = s.run(&["rollup"], None);
    assert!(
        String::from_utf8_lossy(&again.stdout)
            .contains("into the 285 change(s) the state reads: 0 file(s) deleted, 0 rewritten"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let after = status(&s);
    let t = &after["audit_tables"][1];
    assert_eq!(
        (
            t["files"].as_u64(),
            t["oldest_date"].as_str(),
            t["newest_date"].as_str()
        ),
        (Some(2), Some("2026-01-01"), Some("2026-01-02"))
    );
    let bytes = t["bytes"].as_u64().unwrap();
    let on_disk: u64 = walk(&s.audit().join("public.t"))
        .iter()
        .map(|p| p.metadata().unwrap().len())
        .sum();
    assert_eq!(bytes, on_disk);
    let text = s.run(&["status"], None);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!(
            "audit files      public.t: 2 file(s), {bytes} bytes, oldest date kept 2026-01-01"
        )) && text.contains(&format!("audit retention  {days} day(s)")),
        "{text}"
    );
}

/// The input of `scripts/bench/rollup.sh` (not a test: run with `--ignored`): one table,
/// `BENCH_CYCLES` (1440) compaction cycles of one day (2026-01-01, one a minute), each of
/// `BENCH_CHANGES` (700) changes (30% inserts, 60% updates, 10% deletes of earlier keys),
/// written as audit files under `BENCH_ROLLUP_DIR/audit`.
#[test]
#[ignore = "benchmark fixture: scripts/bench/rollup.sh runs it"]
fn rollup_bench_fixture() {
    let Ok(dir) = std::env::var("BENCH_ROLLUP_DIR") else {
        panic!("set BENCH_ROLLUP_DIR");
    };
    let count = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .map_or(d, |v| v.parse().expect("a whole number"))
    };
    let (cycles, per_cycle) = (count("BENCH_CYCLES", 1440), count("BENCH_CHANGES", 700));
    let dir = PathBuf::from(dir);
    let journal = dir.join("journal");
    let text = format!(
        "name: bench\nsource:\n  connector.class: io.debezium.connector.postgresql.PostgresConnector\n  database.hostname: 127.0.0.1\n  database.port: 1\njournal:\n  dir: {}\n  retain_hours: 0\naudit:\n  url: file://{}\n",
        journal.display(),
        dir.join("audit").display()
    );
    let config_path = dir.join("fixture.yaml");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&config_path, &text).unwrap();
    let config = Config::load(&config_path).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mut lsn, mut next_id, mut noise) = (100u64, 1i64, 0x2545_F491_4F6C_DD1Du64);
    let mut random = |below: i64| {
        noise ^= noise << 13;
        noise ^= noise >> 7;
        noise ^= noise << 17;
        (noise % below.max(1) as u64) as i64
    };
    for cycle in 0..cycles as i64 {
        let ts = DAY1 * DAY_US + cycle * 60_000_000;
        let mut j = Journal::open(&journal, 64 << 20).unwrap();
        let t = j.schema_id(SCHEMA.as_bytes()).unwrap();
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(per_cycle as usize);
        for k in 0..per_cycle as i64 {
            lsn += 8;
            let roll = random(10);
            let text = format!("cycle {cycle} change {k} status-{}", roll);
            let b = if roll < 3 || next_id < 10 {
                next_id += 1;
                body(b'c', ts, lsn, next_id - 1, Some(&text), Some(k))
            } else if roll < 9 {
                body(b'u', ts, lsn, 1 + random(next_id - 1), Some(&text), Some(k))
            } else {
                body(b'd', ts, lsn, 1 + random(next_id - 1), None, None)
            };
            batch.push(b);
        }
        j.append(batch.iter().map(|b| (t, &b[..]))).unwrap();
        drop(j);
        rt.block_on(db_sync::cycle::run_once(&config))
            .expect("compaction cycle");
    }
    std::fs::remove_dir_all(&journal).unwrap();
    std::fs::write(
        dir.join("fixture.done"),
        format!("{cycles} cycles of {per_cycle} changes\n"),
    )
    .unwrap();
}
