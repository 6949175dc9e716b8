//! Running apply against the MariaDB target: `compact --once` until done, waiting for marker
//! rows in the journal, the workload of the apply tests (accounts, lines, docs) and its
//! comparison with the source, a bulk load to interrupt.

use std::process::Output;
use std::time::{Duration, Instant};

use super::compare::*;
use super::types::{Cmp, PG_EPOCH_US};
use super::*;

pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(90);
pub const STREAM_WAIT: Duration = Duration::from_secs(120);
pub const STOP_WAIT: Duration = Duration::from_secs(60);
pub const SIGABRT: i32 = 6;

pub fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `compact --once`, which must succeed; its summary line.
pub fn compact(p: &Pipeline) -> String {
    let out = p.db_sync(&["compact", "--once"]);
    assert!(
        out.status.success(),
        "compact --once failed: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn audit_yaml(p: &Pipeline) -> String {
    format!("audit:\n  url: file://{}/audit\n", p.dir.path().display())
}

/// Waits until the journal holds a change of `table` (a marker written last), so everything
/// committed before it is journaled.
pub fn wait_for_marker(p: &Pipeline, capture: &mut Capture, table: &str, timeout: Duration) {
    wait_for_markers(p, capture, table, 1, timeout)
}

/// Waits until the journal holds `n` changes of `table`.
pub fn wait_for_markers(
    p: &Pipeline,
    capture: &mut Capture,
    table: &str,
    n: usize,
    timeout: Duration,
) {
    let start = Instant::now();
    loop {
        let mut found = 0;
        if p.journal_dir().exists() {
            db_sync::journal::read_events(&p.journal_dir(), 0, |e| {
                found += usize::from(e.schema.table == table);
                Ok(true)
            })
            .expect("journal reads");
        }
        if found >= n {
            return;
        }
        if let Ok(Some(status)) = capture.child.try_wait() {
            panic!("capture exited ({status}); log:\n{}", capture.log());
        }
        assert!(
            start.elapsed() < timeout,
            "no {table} event within {timeout:?}; log:\n{}",
            capture.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A deterministic pseudo-random stream (xorshift), so a failure can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

pub const WORKLOAD_SCHEMA: &str = "
CREATE TABLE accounts (id bigint PRIMARY KEY, balance numeric(14,2) NOT NULL, name text, updated timestamptz);
CREATE TABLE lines (order_id int, line int, qty int, note varchar(40), PRIMARY KEY (order_id, line));
CREATE TABLE docs (id uuid PRIMARY KEY, body jsonb, blob bytea, tags text[]);
CREATE TABLE marker (id int PRIMARY KEY);
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE SEQUENCE moved START 1000000;
INSERT INTO accounts SELECT i, i * 1.5, 'acct ' || i, now() FROM generate_series(1, 500) i;
INSERT INTO lines SELECT o, l, o * l, 'n' || o FROM generate_series(1, 50) o, generate_series(1, 4) l;
";

pub const WORKLOAD_TABLES: &str = "public.accounts,public.lines,public.docs,public.marker";

/// One random statement or transaction of the workload.
pub fn random_change(rng: &mut Rng, round: u64) -> String {
    let id = 1 + rng.next(700);
    match rng.next(10) {
        0 | 1 => format!("INSERT INTO accounts VALUES ({}, {}.{:02}, 'new {round}', now()) ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance", id, rng.next(100000), rng.next(100)),
        2 | 3 => format!("UPDATE accounts SET balance = balance + {}.25, updated = now() WHERE id = {id}", rng.next(50)),
        4 => format!("DELETE FROM accounts WHERE id = {id}"),
        // A key change: Debezium sends a delete of the old key and a create of the new one.
        5 => format!("UPDATE accounts SET id = nextval('moved') WHERE id = {id}"),
        6 => format!(
            "BEGIN; INSERT INTO lines VALUES ({o}, {l}, 1, 'tx {round}') ON CONFLICT DO NOTHING; UPDATE lines SET qty = qty + 1 WHERE order_id = {o}; DELETE FROM lines WHERE order_id = {o2} AND line = 1; COMMIT",
            o = 1 + rng.next(80), l = 1 + rng.next(6), o2 = 1 + rng.next(80)
        ),
        // Composite key changes; every new line number is above the order's highest.
        7 => format!("UPDATE lines SET line = line + (SELECT max(line) FROM lines WHERE order_id = {o}) WHERE order_id = {o}", o = 1 + rng.next(60)),
        8 => format!("INSERT INTO docs VALUES (gen_random_uuid(), '{{\"round\": {round}, \"x\": [1, null, \"é\"]}}', gen_random_bytes({}), ARRAY['a', NULL, 'b{round}'])", 1 + rng.next(64)),
        _ => format!("UPDATE docs SET body = jsonb_set(body, '{{round}}', '{round}') WHERE id IN (SELECT id FROM docs ORDER BY id LIMIT {})", 1 + rng.next(3)),
    }
}

pub fn assert_workload_equal(sql: &Sql, my: &My) {
    assert_same_rows(
        sql,
        my,
        "accounts",
        "accounts",
        &[("id", "id")],
        &[
            col("balance", PG_TEXT, MY, Check::Same(Cmp::Decimal)),
            col("name", PG_TEXT, MY, EXACT),
            col("updated", PG_EPOCH_US, MY_EPOCH_US, EXACT),
        ],
    );
    assert_same_rows(
        sql,
        my,
        "lines",
        "`lines`",
        &[("order_id", "order_id"), ("line", "line")],
        &[
            col("qty", PG_TEXT, MY, EXACT),
            col("note", PG_TEXT, MY, EXACT),
        ],
    );
    assert_same_rows(
        sql,
        my,
        "docs",
        "docs",
        &[("id::text", "id")],
        &[
            col("body", PG_TEXT, MY, Check::Json),
            col("blob", "encode({c}, 'hex')", "lower(hex({c}))", EXACT),
            col("tags", "array_to_json({c})::text", MY, Check::Json),
        ],
    );
}

/// Journals the workload tables' snapshot plus a bulk load of 40,000 `lines` (order ids from
/// `base`) and a `docs` row; capture keeps running.
pub fn journal_bulk_load(p: &Pipeline, extra: &str, base: u32) -> Capture {
    let mut capture = p.start_capture_with(extra);
    p.wait_for_events(700, &mut capture, SNAPSHOT_WAIT);
    let sql = p.sql();
    sql.exec(&format!(
        "INSERT INTO lines SELECT {base} + i / 10, i % 10, i, 'bulk' FROM generate_series(0, 39999) i"
    ));
    sql.exec("INSERT INTO docs VALUES (gen_random_uuid(), '{}', '\\x00', NULL)");
    sql.exec("INSERT INTO marker VALUES (1)");
    wait_for_marker(p, &mut capture, "public.marker", STREAM_WAIT);
    capture
}

/// Starts `compact --once` and returns once its first chunk has committed.
pub fn compact_until_applying(p: &Pipeline, my: &My) -> Capture {
    let run = p.spawn_db_sync(&["compact", "--once"]);
    let start = Instant::now();
    while my.value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '_db_sync_checkpoint'").as_deref() != Some("1")
        || my.value("SELECT COUNT(*) FROM _db_sync_checkpoint").as_deref() == Some("0")
    {
        assert!(start.elapsed() < Duration::from_secs(60), "apply never started; log:\n{}", run.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    run
}

/// The source's current time in UTC, as `--as-of` takes it: after every commit so far.
pub fn source_now(sql: &Sql) -> String {
    std::thread::sleep(Duration::from_millis(50));
    let t = sql
        .value("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    t
}

pub fn run_ok(p: &Pipeline, args: &[&str]) -> String {
    let out = p.db_sync(args);
    assert!(out.status.success(), "db-sync {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `query --format csv` without the header line.
pub fn query_csv(p: &Pipeline, sql: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["query", sql, "--format", "csv"];
    args.extend_from_slice(extra);
    run_ok(p, &args)
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

pub fn lines(rows: Vec<Vec<Option<String>>>) -> Vec<String> {
    rows.into_iter()
        .map(|r| {
            r.into_iter()
                .map(Option::unwrap_or_default)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// Starts capture, runs `statements` (each its own transaction) and a marker insert, waits
/// for the marker and stops capture.
pub fn stream(p: &Pipeline, statements: &[&str]) {
    let mut capture = p.spawn_db_sync(&["capture"]);
    let sql = p.sql();
    for s in statements {
        sql.exec(s);
    }
    sql.exec("INSERT INTO marker VALUES (DEFAULT)");
    let n = sql
        .value("SELECT count(*) FROM marker")
        .unwrap()
        .parse()
        .unwrap();
    wait_for_markers(p, &mut capture, "public.marker", n, STREAM_WAIT);
    let log = capture.log();
    assert_eq!(capture.terminate(STOP_WAIT), 0, "{log}");
}

/// The first capture of a pipeline: its snapshot of `events` rows.
pub fn snapshot(p: &Pipeline, extra: &str, events: usize) {
    let mut capture = p.start_capture_with(extra);
    p.wait_for_events(events, &mut capture, SNAPSHOT_WAIT);
    assert_eq!(capture.terminate(STOP_WAIT), 0);
}

pub const MARKER: &str = "CREATE TABLE marker (id serial PRIMARY KEY);";
