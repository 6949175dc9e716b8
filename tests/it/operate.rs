//! Operating db-sync: `query` over the audit files (state, changes, `--as-of`), `backfill`
//! from audit files (whole, `--since/--until`, `--truncate`), `backfill --resnapshot` through
//! the running daemon, and `status` without secrets.

use std::time::{Duration, Instant};

use crate::schedule::{count, daemon_config};
use crate::support::target::{audit_yaml, wait_for_marker};
use crate::support::*;

const WAIT: Duration = Duration::from_secs(120);

/// `items.body` of row 1 is stored out of line (TOAST): updates that do not touch it send
/// Debezium's unchanged-TOAST placeholder, which the audit files list in `_cdc_unchanged`.
const ITEMS: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(12,2), body text);
ALTER TABLE items ALTER COLUMN body SET STORAGE EXTERNAL;
INSERT INTO items SELECT i, 'item ' || i, i * 1.25,
  CASE WHEN i = 1 THEN repeat('large-', 4000) ELSE 'small ' || i END FROM generate_series(1, 50) i;
CREATE TABLE marker (id int PRIMARY KEY);
";
const TABLES: &str = "public.items,public.marker";

/// The source rows as the checks compare them: id, name, price, md5(body).
const SOURCE_ROWS: &str =
    "SELECT id::text, name, price::text, md5(body) FROM items ORDER BY items.id";

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "db-sync failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A failure with exit code `code` and exactly one line on stderr, which it returns.
fn fails(out: std::process::Output, code: i32) -> String {
    assert_eq!(out.status.code(), Some(code), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    lines[0].to_string()
}

/// The source's current time in UTC, as `--as-of` takes it: after every commit so far.
fn source_now(sql: &Sql) -> String {
    sql.value("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
        .unwrap()
}

/// Rows as CSV lines (no header), NULL as an empty field, like `query --format csv` prints.
fn csv(rows: &[Vec<Option<String>>]) -> Vec<String> {
    rows.iter()
        .map(|r| {
            r.iter()
                .map(|v| v.clone().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

fn query_csv(p: &Pipeline, sql: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["query", sql, "--format", "csv"];
    args.extend_from_slice(extra);
    ok(p.db_sync(&args))
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

/// Captures the snapshot, then two rounds of changes a second apart; returns the source time
/// between them and the source rows at that time. Round one renames row 1 (its body unchanged),
/// deletes row 2 and adds row 100; round two reprices rows 1..10 and deletes row 100.
fn two_rounds(p: &Pipeline) -> (String, Vec<Vec<Option<String>>>) {
    let sql = p.sql();
    let mut capture = p.spawn_db_sync(&["capture"]);
    p.wait_for_events(50, &mut capture, WAIT);
    sql.exec("BEGIN; UPDATE items SET name = 'renamed' WHERE id = 1; DELETE FROM items WHERE id = 2; INSERT INTO items VALUES (100, 'hundred', 9.99, 'x'); COMMIT");
    let between = source_now(&sql);
    let rows_then = sql.rows(SOURCE_ROWS);
    std::thread::sleep(Duration::from_millis(1200));
    sql.exec("UPDATE items SET price = price + 1 WHERE id <= 10");
    sql.exec("DELETE FROM items WHERE id = 100");
    sql.exec("INSERT INTO marker VALUES (1)");
    wait_for_marker(p, &mut capture, "public.marker", WAIT);
    assert_eq!(capture.terminate(WAIT), 0);
    (between, rows_then)
}

#[test]
fn query_shows_the_state_the_changes_and_the_state_as_of_a_time() {
    let p = Pipeline::new("query", ITEMS, TABLES);
    p.write_config_with(&pg_password(), p.port, &audit_yaml(&p));
    let (between, rows_then) = two_rounds(&p);
    ok(p.db_sync(&["compact", "--once"]));
    let sql = p.sql();

    // The state equals the source, row 1's large body included (its last two updates did
    // not send it).
    let state = "SELECT id, name, price, md5(body) FROM public.items ORDER BY id";
    assert_eq!(query_csv(&p, state, &[]), csv(&sql.rows(SOURCE_ROWS)));
    let count = query_csv(&p, "SELECT count(*) FROM public.items", &[]);
    assert_eq!(
        count,
        vec![sql.value("SELECT count(*) FROM items").unwrap()]
    );
    // As of a time between the two rounds: the source as it was then.
    assert_eq!(
        query_csv(&p, state, &["--as-of", &between]),
        csv(&rows_then)
    );
    // One change row per change: 50 snapshot reads, then 3 and 10 changes.
    assert_eq!(
        query_csv(&p, "SELECT count(*) FROM public.items_changes", &[]),
        vec!["63"]
    );
    assert_eq!(
        query_csv(
            &p,
            "SELECT _cdc_op, count(*) FROM public.items_changes GROUP BY 1 ORDER BY 1",
            &[]
        ),
        vec!["c,1", "d,2", "r,50", "u,10"]
    );
    assert_eq!(
        query_csv(
            &p,
            "SELECT count(*) FROM public.items_changes",
            &["--as-of", &between]
        ),
        vec!["53"]
    );
    // Row 1's body really was left out of its updates: the fill is doing the work.
    assert_eq!(
        query_csv(
            &p,
            "SELECT count(*) FROM public.items_changes WHERE id = 1 AND list_contains(_cdc_unchanged, 'body')",
            &[]
        ),
        vec!["2"]
    );

    // JSON lines keep decimals exact (as strings); the table format aligns and counts rows.
    let json = ok(p.db_sync(&[
        "query",
        "SELECT id, price, name FROM public.items WHERE id IN (1, 3) ORDER BY id",
        "--format",
        "json",
    ]));
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        rows,
        vec![
            serde_json::json!({"id": 1, "price": "2.25", "name": "renamed"}),
            serde_json::json!({"id": 3, "price": "4.75", "name": "item 3"}),
        ]
    );
    let table = ok(p.db_sync(&["query", "SELECT name FROM public.items WHERE id = 1"]));
    assert!(
        table.contains("| renamed |") && table.contains("(1 row)"),
        "{table}"
    );

    // Bad input: one line, exit 2.
    let line = fails(p.db_sync(&["query", "SELECT * FROM public.nope"]), 2);
    assert!(
        line.contains("nope") && line.contains("public.items"),
        "names the table and the audited ones: {line}"
    );
    let line = fails(p.db_sync(&["query", "SELEC 1"]), 2);
    assert!(line.contains("syntax error"), "{line}");
    // (clap's usage error, with its "--help" hint line)
    let out = p.db_sync(&["query", "SELECT 1", "--as-of", "last tuesday"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is not a time"), "{}", text(&out));
}

#[test]
fn backfill_rebuilds_a_table_from_its_audit_files() {
    let p = Pipeline::new("backfill", ITEMS, TABLES);
    let my = My::fresh(&format!("backfill_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml("  batch_rows: 7\n"));
    p.write_config_with(&pg_password(), p.port, &extra);
    let (between, rows_then) = two_rounds(&p);
    ok(p.db_sync(&["compact", "--once"]));
    let sql = p.sql();
    let source = sql.rows(SOURCE_ROWS);
    let target_rows = || my.rows("SELECT id, name, price, md5(body) FROM items ORDER BY id");
    assert_eq!(target_rows(), source);

    // Dropped: backfill recreates the table and its rows, row 1's body included.
    my.exec("DROP TABLE items");
    let out = ok(p.db_sync(&["backfill", "--table", "public.items"]));
    assert!(
        out.contains("backfilled public.items into `items`") && out.contains("63 changes"),
        "{out}"
    );
    assert_eq!(target_rows(), source);

    // --since replays only later changes: rows 1..10 (repriced after `between`) are mended,
    // the others keep what the target had.
    my.exec("UPDATE items SET name = 'garbage'");
    ok(p.db_sync(&["backfill", "--table", "public.items", "--since", &between]));
    let names = my.rows("SELECT id, name FROM items WHERE id IN (1, 3, 20) ORDER BY id");
    let name = |r: &Vec<Option<String>>| r[1].clone().unwrap();
    assert_eq!(
        names.iter().map(name).collect::<Vec<_>>(),
        ["renamed", "item 3", "garbage"]
    );

    // --until with --truncate: the table as the source held it then.
    let out = ok(p.db_sync(&[
        "backfill",
        "--table",
        "public.items",
        "--until",
        &between,
        "--truncate",
    ]));
    assert!(out.contains("(emptied first)"), "{out}");
    assert_eq!(target_rows(), rows_then);

    // And back to now; a compaction after it has nothing to do.
    ok(p.db_sync(&["backfill", "--table", "public.items", "--truncate"]));
    assert_eq!(target_rows(), source);
    let out = ok(p.db_sync(&["compact", "--once"]));
    assert!(out.contains("nothing new"), "{out}");
    assert_eq!(target_rows(), source);

    // Bad input: one line, exit 2.
    let line = fails(p.db_sync(&["backfill", "--table", "public.nope"]), 2);
    assert!(
        line.contains("public.nope") && line.contains("public.items"),
        "{line}"
    );
    let line = fails(
        p.db_sync(&[
            "backfill",
            "--table",
            "public.items",
            "--since",
            "2026-11-02",
            "--until",
            "2026-11-01",
        ]),
        2,
    );
    assert!(line.contains("is after --until"), "{line}");
}

fn wait_until(what: &str, daemon: &Capture, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < WAIT,
            "{what} did not happen; log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn resnapshot_brings_back_a_table_whose_audit_files_were_deleted() {
    let p = Pipeline::new("resnap", ITEMS, TABLES);
    let my = My::fresh(&format!("resnap_{}", std::process::id()));
    daemon_config(&p, &my, 5000);
    let sql = p.sql();

    let daemon = p.spawn_db_sync(&["run"]);
    wait_until("the snapshot in the target", &daemon, || {
        count(&my, "items") == 50
    });
    // A change committed now shows up in the target within a few ticks.
    sql.exec("UPDATE items SET name = 'live' WHERE id = 7");
    wait_until("the update in the target", &daemon, || {
        my.value("SELECT name FROM items WHERE id = 7").as_deref() == Some("live")
    });

    // Lose the table's audit files and its target table; ask for a resnapshot.
    std::fs::remove_dir_all(p.dir.path().join("audit/public.items")).unwrap();
    my.exec("DROP TABLE items");
    let out = ok(p.db_sync(&["backfill", "--table", "public.items", "--resnapshot"]));
    assert!(
        out.contains("incremental snapshot of public.items"),
        "{out}"
    );
    wait_until("the resnapshot in the target", &daemon, || {
        count(&my, "items") == 50
    });
    wait_until("snapshot reads in the audit files", &daemon, || {
        p.db_sync(&[
            "query",
            "SELECT count(*) FROM public.items_changes WHERE _cdc_op = 'r'",
            "--format",
            "csv",
        ])
        .stdout
        .ends_with(b"50\n")
    });
    // The signalling table's own rows stay out of the journal and the target.
    assert_eq!(
        count(&my, &format!("dbsync_signal_{}", p.name.to_lowercase())),
        0
    );
    assert_eq!(daemon.terminate(WAIT), 0);
    assert_eq!(
        my.rows("SELECT id, name, price, md5(body) FROM items ORDER BY id"),
        sql.rows(SOURCE_ROWS)
    );
    assert!(p
        .events()
        .iter()
        .all(|e| !e["table"].as_str().unwrap().contains("dbsync_signal")));

    let line = fails(
        p.db_sync(&["backfill", "--table", "public.nope", "--resnapshot"]),
        2,
    );
    assert!(line.contains("no such table"), "{line}");
}

#[test]
fn status_has_every_field_and_no_secret() {
    let p = Pipeline::new("status", ITEMS, TABLES);
    let my = My::fresh(&format!("status_{}", std::process::id()));
    let user = format!("st_{}", std::process::id());
    my.exec(&format!("DROP USER IF EXISTS '{user}'@'%'"));
    my.exec(&format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'my-s3cret-pw'"
    ));
    my.exec(&format!("GRANT ALL ON `{}`.* TO '{user}'@'%'", my.db));
    let target = format!(
        "target:\n  url: mysql://{user}:my-s3cret-pw@127.0.0.1:{}/{}\n",
        my.port, my.db
    );
    p.write_config_with(
        &pg_password(),
        p.port,
        &format!("{}{target}", audit_yaml(&p)),
    );
    let mut capture = p.spawn_db_sync(&["capture"]);
    p.wait_for_events(50, &mut capture, WAIT);
    ok(p.db_sync(&["compact", "--once"]));
    // One change journaled but not yet compacted: lag in events and seconds.
    p.sql().exec("INSERT INTO marker VALUES (1)");
    wait_for_marker(&p, &mut capture, "public.marker", WAIT);

    let out = p.db_sync(&["status", "--json"]);
    let all = text(&out);
    assert!(!all.contains("my-s3cret-pw"), "no secret: {all}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    for field in [
        "segments",
        "journal_bytes",
        "last_journaled_seq",
        "sealed_through",
        "audited_through",
        "audit_lag_events",
        "audit_lag_seconds",
        "applied_through",
        "apply_lag_events",
        "apply_lag_seconds",
        "jobs",
        "source_slot",
    ] {
        assert!(
            status.get(field).is_some(),
            "status has {field}: {status:#}"
        );
    }
    assert_eq!(status["audit_lag_events"], 1, "{status:#}");
    assert_eq!(status["apply_lag_events"], 1, "{status:#}");
    let lag = status["apply_lag_seconds"].as_f64().unwrap();
    assert!(lag > 0.0 && lag < 3600.0, "{status:#}");
    assert_eq!(status["source_slot"]["active"], true, "{status:#}");
    let out = p.db_sync(&["status"]);
    assert!(out.status.success() && !text(&out).contains("my-s3cret-pw"));
    assert_eq!(capture.terminate(WAIT), 0);
    my.exec(&format!("DROP USER IF EXISTS '{user}'@'%'"));
}
