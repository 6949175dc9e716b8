//! The source changes under the pipeline: a replication slot dropped while capture was
//! stopped (resync, or one line with `stop`), two schemas with a table of the same name, a
//! generated column, tables without a key (refused, or applied row by row), a dropped column,
//! a row the target refuses (its table held alone).

use std::time::{Duration, Instant};

use crate::support::target::*;
use crate::support::*;

/// Waits until the journal holds an event of `table` whose row has `id` (streamed or
/// snapshot), so everything committed before it is journaled.
fn wait_for_row(p: &Pipeline, capture: &mut Capture, table: &str, id: i64) {
    wait_for_value(p, capture, table, "id", id)
}

/// Waits until the journal holds an event of `table` whose row has `value` in `column`.
fn wait_for_value(p: &Pipeline, capture: &mut Capture, table: &str, column: &str, id: i64) {
    let start = Instant::now();
    loop {
        let found = p
            .events()
            .iter()
            .any(|e| e["table"] == table && e["after"][column] == id);
        if found {
            return;
        }
        if let Ok(Some(status)) = capture.child.try_wait() {
            panic!("capture exited ({status}); log:\n{}", capture.log());
        }
        assert!(
            start.elapsed() < STREAM_WAIT,
            "no row {id} of {table} in the journal; log:\n{}",
            capture.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn exit_code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[test]
fn a_slot_dropped_while_capture_was_stopped_is_resynced_or_refused_with_one_line() {
    let p = Pipeline::new(
        "slotlost",
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT i, 'a' FROM generate_series(1, 5) i;",
        "public.items",
    );
    let my = My::fresh(&format!("slotlost_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml(""));
    snapshot(&p, &extra, 5);
    let sql = p.sql();
    let mut capture = p.spawn_db_sync(&["capture"]);
    sql.exec("UPDATE items SET v = 'b' WHERE id = 1");
    sql.exec("INSERT INTO items VALUES (10, 'first run')");
    wait_for_row(&p, &mut capture, "public.items", 10);
    let log = capture.log();
    assert_eq!(capture.terminate(STOP_WAIT), 0, "{log}");
    compact(&p);

    // The slot goes while nothing captures; the source changes meanwhile.
    sql.exec(&format!("SELECT pg_drop_replication_slot('{}')", p.slot()));
    sql.exec("UPDATE items SET v = 'meanwhile' WHERE id = 2");
    sql.exec("DELETE FROM items WHERE id IN (3, 10)");
    sql.exec("INSERT INTO items VALUES (6, 'meanwhile')");

    // With `stop`: exit 1, one line naming the cause and the fix, nothing journaled.
    let events = p.events().len();
    p.write_config_with(
        &pg_password(),
        p.port,
        &format!("{extra}source_guard:\n  on_slot_lost: stop\n"),
    );
    let out = p.db_sync(&["capture"]);
    let line = last_stderr_line(&out);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert!(
        line.contains("no longer exists") && line.contains("source_guard.on_slot_lost: resync"),
        "{line}"
    );
    assert_eq!(p.events().len(), events);
    assert_eq!(
        sql.value(&format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}'",
            p.slot()
        ))
        .as_deref(),
        Some("0"),
        "stop creates no slot"
    );

    // With the default (`resync`): a new slot, a full snapshot, the sweep of what is gone.
    p.write_config_with(&pg_password(), p.port, &extra);
    let mut capture = p.spawn_db_sync(&["capture"]);
    wait_for_row(&p, &mut capture, "public.items", 6);
    sql.exec("UPDATE items SET v = 'after' WHERE id = 4");
    sql.exec("INSERT INTO items VALUES (7, 'after')");
    wait_for_row(&p, &mut capture, "public.items", 7);
    let log = capture.log();
    assert_eq!(capture.terminate(STOP_WAIT), 0, "{log}");
    assert!(log.contains("resyncing"), "one warning says so: {log}");
    compact(&p);

    let source = lines(sql.rows("SELECT id, v FROM items ORDER BY id"));
    assert_eq!(
        lines(my.rows("SELECT id, v FROM items ORDER BY id")),
        source,
        "the target equals the source: the rows deleted while the slot was gone are gone"
    );
    let status = run_ok(&p, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(
        status["resync"]["completed_at"].is_string(),
        "status shows the resync, done: {status:#}"
    );
    let sweep = &status["snapshot_sweeps"]["public.items"];
    assert_eq!(sweep["state"], "done", "{status:#}");
    assert_eq!(sweep["rows"], 2, "rows 3 and 10 swept: {status:#}");
    assert!(std::fs::read_dir(p.dir.path()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains(".lost-")));
}

#[test]
fn two_schemas_with_a_same_named_table_are_refused_at_start_and_by_check() {
    let p = Pipeline::new(
        "sametable",
        "CREATE SCHEMA a; CREATE SCHEMA b;
         CREATE TABLE a.orders (id int PRIMARY KEY); CREATE TABLE b.orders (id int PRIMARY KEY);
         INSERT INTO a.orders VALUES (1); INSERT INTO b.orders VALUES (2);",
        "a.orders,b.orders",
    );
    let my = My::fresh(&format!("sametable_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml(""));
    p.write_config_with(&pg_password(), p.port, &extra);
    let out = p.db_sync(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ne!(exit_code(&out), 0, "{}", text(&out));
    assert!(
        stdout.contains("FAIL  target.table_name") && stdout.contains("a.orders and b.orders"),
        "{stdout}"
    );
    let out = p.db_sync(&["capture"]);
    let line = last_stderr_line(&out);
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    assert!(
        line.contains("target.table_name") && line.contains("a.orders and b.orders"),
        "{line}"
    );
    assert!(p.events().is_empty(), "nothing captured");

    // With {schema} in the name both tables arrive, each in its own target table.
    let extra = format!(
        "{}{}",
        audit_yaml(&p),
        my.target_yaml("  table_name: \"{schema}_{table}\"\n")
    );
    snapshot(&p, &extra, 2);
    compact(&p);
    assert_eq!(my.value("SELECT id FROM a_orders").as_deref(), Some("1"));
    assert_eq!(my.value("SELECT id FROM b_orders").as_deref(), Some("2"));
}

#[test]
fn generated_columns_are_left_out_keyless_tables_refused_and_dropped_columns_kept() {
    let p = Pipeline::new(
        "gencols",
        "CREATE TABLE g (id int PRIMARY KEY, a int, doubled int GENERATED ALWAYS AS (a * 2) STORED, gone text);
         INSERT INTO g (id, a, gone) SELECT i, i, 'x' FROM generate_series(1, 3) i;
         CREATE TABLE nokey (a int, b text);
         INSERT INTO nokey VALUES (1, 'one');",
        "public.g,public.nokey",
    );
    let my = My::fresh(&format!("gencols_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml(""));
    p.write_config_with(&pg_password(), p.port, &extra);
    let out = p.db_sync(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAIL  table: public.nokey has no primary key")
            && stdout.contains("ALTER TABLE public.nokey REPLICA IDENTITY FULL"),
        "{stdout}"
    );
    assert!(
        stdout.contains("generated column: public.g.doubled"),
        "{stdout}"
    );

    let mut capture = p.start_capture_with(&extra);
    p.wait_for_events(3, &mut capture, SNAPSHOT_WAIT);
    let sql = p.sql();
    // The refused table is not in the publication: PostgreSQL would refuse this update.
    sql.exec("UPDATE nokey SET b = 'two'");
    sql.exec("UPDATE g SET a = 10 WHERE id = 1");
    sql.exec("ALTER TABLE g DROP COLUMN gone");
    sql.exec("UPDATE g SET a = 20 WHERE id = 2");
    sql.exec("INSERT INTO g (id, a) VALUES (4, 4)");
    wait_for_row(&p, &mut capture, "public.g", 4);
    let log = capture.log();
    assert_eq!(capture.terminate(STOP_WAIT), 0, "{log}");
    assert!(
        log.contains("public.g.doubled is a generated column"),
        "one warning per generated column: {log}"
    );
    assert!(
        log.contains("REPLICA IDENTITY FULL"),
        "the keyless table is refused in one line: {log}"
    );
    assert!(
        p.events()
            .iter()
            .all(|e| e["after"].get("doubled").is_none()),
        "neither the snapshot nor the stream carries the generated column"
    );
    assert!(
        p.events().iter().all(|e| e["table"] != "public.nokey"),
        "the refused table is not captured"
    );
    compact(&p);

    assert_eq!(
        lines(my.rows("SELECT id, a FROM g ORDER BY id")),
        lines(sql.rows("SELECT id, a FROM g ORDER BY id")),
    );
    let columns = lines(my.rows(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = 'g' ORDER BY ordinal_position",
    ));
    assert_eq!(
        columns,
        ["id", "a", "gone"],
        "no generated column; the dropped one kept"
    );
    assert_eq!(
        lines(my.rows("SELECT id, coalesce(gone, 'NULL') FROM g ORDER BY id")),
        ["1,x", "2,NULL", "3,x", "4,NULL"],
        "rows written after the drop have NULL in the dropped column"
    );
    let out = p.db_sync(&["verify", "--table", "public.g", "--settle", "30"]);
    assert_eq!(exit_code(&out), 0, "verify agrees: {}", text(&out));

    // With `target.dropped_columns: drop` the target drops it too, at the next change.
    let extra = format!(
        "{}{}",
        audit_yaml(&p),
        my.target_yaml("  dropped_columns: drop\n")
    );
    let mut capture = p.start_capture_with(&extra);
    sql.exec("INSERT INTO g (id, a) VALUES (5, 5)");
    wait_for_row(&p, &mut capture, "public.g", 5);
    let log = capture.log();
    assert_eq!(capture.terminate(STOP_WAIT), 0, "{log}");
    compact(&p);
    let columns = lines(my.rows(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = 'g' ORDER BY ordinal_position",
    ));
    assert_eq!(columns, ["id", "a"], "the dropped column goes");
    assert_eq!(
        lines(my.rows("SELECT id, a FROM g ORDER BY id")),
        lines(sql.rows("SELECT id, a FROM g ORDER BY id")),
    );
}

#[test]
fn a_table_added_to_the_pipeline_is_snapshotted_alone_while_the_others_stream() {
    let mut p = Pipeline::new(
        "addtable",
        "CREATE TABLE a (id int PRIMARY KEY, v text);
         INSERT INTO a SELECT i, 'a' FROM generate_series(1, 3) i;
         CREATE TABLE b (id int PRIMARY KEY, v text);
         INSERT INTO b SELECT i, 'b' FROM generate_series(1, 1000) i;",
        "public.a",
    );
    let my = My::fresh(&format!("addtable_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml(""));
    snapshot(&p, &extra, 3);
    compact(&p);

    // `b` joins the include list; the pipeline starts again and keeps streaming `a`.
    p.tables = "public.a,public.b".into();
    let mut capture = p.start_capture_with(&extra);
    let sql = p.sql();
    sql.exec("UPDATE a SET v = 'streamed' WHERE id = 1");
    sql.exec("UPDATE b SET v = 'changed' WHERE id = 7");
    sql.exec("INSERT INTO b VALUES (1001, 'new')");
    wait_for_row(&p, &mut capture, "public.b", 1001);
    // Every row of b is in the journal: read by its snapshot, or changed since.
    let start = Instant::now();
    loop {
        let ids: std::collections::BTreeSet<i64> = p
            .events()
            .iter()
            .filter(|e| e["table"] == "public.b")
            .filter_map(|e| e["after"]["id"].as_i64())
            .collect();
        if ids.len() == 1001 {
            break;
        }
        assert!(
            start.elapsed() < STREAM_WAIT,
            "b's snapshot: {}",
            capture.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // b's rows may all be read before the engine streams (the native loader reads them
    // first): a's changes, in order, end with this one.
    sql.exec("INSERT INTO a VALUES (4, 'last')");
    wait_for_row(&p, &mut capture, "public.a", 4);
    let log = capture.log();
    assert_eq!(capture.terminate(STOP_WAIT), 0, "{log}");
    assert!(log.contains("public.b joined the pipeline"), "{log}");
    let snapshot_rows_of_a = p
        .events()
        .iter()
        .filter(|e| e["table"] == "public.a" && e["op"] == "r")
        .count();
    assert_eq!(snapshot_rows_of_a, 3, "a is not read again");
    compact(&p);
    for t in ["a", "b"] {
        let q = format!("SELECT id, v FROM {t} ORDER BY id");
        assert_eq!(lines(my.rows(&q)), lines(sql.rows(&q)), "{t}");
    }
}

#[test]
fn range_domain_and_enum_columns_arrive_as_the_source_prints_them_beside_other_tables() {
    let p = Pipeline::new(
        "ranges",
        "CREATE DOMAIN positive AS numeric(10,2) CHECK (VALUE > 0);
         CREATE TYPE mood AS ENUM ('sad', 'ok');
         CREATE TABLE r (id int PRIMARY KEY, during int4range, span tsrange, price positive, m mood);
         INSERT INTO r VALUES (1, '[1,5)', '[2024-01-01 00:00:00,2024-02-01 12:30:00)', 9.50, 'ok'),
                              (2, 'empty', NULL, 0.01, 'sad');
         CREATE TABLE plain (id int PRIMARY KEY, v text);
         INSERT INTO plain VALUES (1, 'x');",
        "public.r,public.plain",
    );
    let my = My::fresh(&format!("ranges_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml(""));
    snapshot(&p, &extra, 3);
    let sql = p.sql();
    let mut capture = p.spawn_db_sync(&["capture"]);
    sql.exec("UPDATE r SET during = '(10,20]', price = 1.25 WHERE id = 1");
    sql.exec("INSERT INTO plain VALUES (2, 'y')");
    wait_for_row(&p, &mut capture, "public.plain", 2);
    let log = capture.log();
    assert_eq!(capture.terminate(STOP_WAIT), 0, "{log}");
    compact(&p);
    assert_eq!(
        lines(my.rows("SELECT id, during, span, price, m FROM r ORDER BY id")),
        lines(
            sql.rows(
                "SELECT id, during::text, span::text, price::text, m::text FROM r ORDER BY id"
            )
        ),
        "ranges as the source prints them, the domain as its base type, the enum as its label"
    );
    assert_eq!(
        lines(my.rows("SELECT id, v FROM plain ORDER BY id")),
        ["1,x", "2,y"]
    );
}

#[test]
fn a_target_key_other_than_the_source_key_is_followed_or_stops_apply_with_one_line() {
    let p = Pipeline::new(
        "widekey",
        "CREATE TABLE k (id int NOT NULL, region text NOT NULL, v text, CONSTRAINT k_pkey PRIMARY KEY (id));
         INSERT INTO k VALUES (1, 'us', 'a'), (2, 'us', 'b');
         CREATE TABLE byhand (id int PRIMARY KEY, email text);
         INSERT INTO byhand VALUES (1, 'x@y');",
        "public.k,public.byhand",
    );
    let my = My::fresh(&format!("widekey_{}", std::process::id()));
    // A target table made by hand with another key.
    my.exec("CREATE TABLE byhand (id INT, email VARCHAR(64) PRIMARY KEY)");
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml(""));
    snapshot(&p, &extra, 3);
    let out = p.db_sync(&["compact", "--once"]);
    let line = last_stderr_line(&out);
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    assert!(
        line.contains("target table `byhand` has primary key (`email`)")
            && line.contains("keyed by (`id`)"),
        "{line}"
    );
    my.exec("DROP TABLE byhand");
    compact(&p);

    // The source widens its key; a row only the wider key tells apart follows. db-sync made
    // the target table, so it follows the key with DDL before the row is written.
    let sql = p.sql();
    sql.exec("ALTER TABLE k DROP CONSTRAINT k_pkey, ADD PRIMARY KEY (id, region)");
    stream_until(&p, "INSERT INTO k VALUES (1, 'eu', 'c')", "public.k", 1);
    compact(&p);
    let q = "SELECT id, region, v FROM k ORDER BY id, region";
    assert_eq!(lines(my.rows(q)), lines(sql.rows(q)));
    let key = "SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) FROM information_schema.STATISTICS \
               WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'k' AND INDEX_NAME = 'PRIMARY'";
    assert_eq!(my.value(key).as_deref(), Some("id,region"));

    // Back to (id), while the target holds rows of its own that the narrower key cannot
    // tell apart: one line with both keys, the statement tried and the server's reason.
    // (The delete is captured before the key changes: Debezium keys a change by the key the
    // catalog has when it decodes it.)
    my.exec("INSERT INTO k VALUES (7, 'x', 'mine'), (7, 'y', 'mine')");
    stream_until(
        &p,
        "BEGIN; DELETE FROM k WHERE region = 'eu'; INSERT INTO k VALUES (4, 'us', 'e'); COMMIT",
        "public.k",
        4,
    );
    sql.exec("ALTER TABLE k DROP CONSTRAINT k_pkey, ADD PRIMARY KEY (id)");
    stream_until(&p, "INSERT INTO k VALUES (3, 'us', 'd')", "public.k", 3);
    let out = p.db_sync(&["compact", "--once"]);
    let line = last_stderr_line(&out);
    assert_eq!(exit_code(&out), 2, "{}", text(&out));
    assert!(
        line.contains("has primary key (`id`, `region`)")
            && line.contains("keyed by (`id`)")
            && line.contains("Duplicate entry '7'"),
        "{line}"
    );
    assert_eq!(
        my.value("SELECT COUNT(*) FROM k WHERE id = 3").as_deref(),
        Some("0")
    );
    my.exec("DELETE FROM k WHERE v = 'mine'");
    compact(&p);
    assert_eq!(lines(my.rows(q)), lines(sql.rows(q)));
    assert_eq!(my.value(key).as_deref(), Some("id"));
}

/// Starts capture, runs `statement`, waits for a change of `table` with `id`, stops capture.
fn stream_until(p: &Pipeline, statement: &str, table: &str, id: i64) {
    let before = p.events().len();
    let mut capture = p.spawn_db_sync(&["capture"]);
    p.sql().exec(statement);
    let start = Instant::now();
    while !p.events()[before..]
        .iter()
        .any(|e| e["table"] == table && e["after"]["id"] == id)
    {
        if let Ok(Some(status)) = capture.child.try_wait() {
            panic!("capture exited ({status}); log:\n{}", capture.log());
        }
        assert!(start.elapsed() < STREAM_WAIT, "{}", capture.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = capture.log();
    assert_eq!(capture.terminate(STOP_WAIT), 0, "{log}");
}

/// Runs `args`, which must exit with `code` and a last line that says `says`.
fn refused(p: &Pipeline, args: &[&str], code: i32, says: &str) {
    let out = p.db_sync(args);
    assert_eq!(exit_code(&out), code, "{}", text(&out));
    assert!(last_stderr_line(&out).contains(says), "{}", text(&out));
}

/// The rows of table `dup` on both sides as sorted lines (a multiset: equal rows repeat).
fn dup_rows(sql: &Sql, my: &My) -> (Vec<String>, Vec<String>) {
    let query = "SELECT a, b, n, r, md5(big) FROM dup";
    let mut source = lines(sql.rows(query));
    let mut target = lines(my.rows(query));
    source.sort();
    target.sort();
    (source, target)
}

#[test]
fn a_keyless_table_keeps_its_equal_rows_and_nulls_through_changes_a_resync_and_a_backfill() {
    let p = Pipeline::new(
        "keyless",
        &format!(
            "{MARKER}
             CREATE TABLE dup (a int, b text, n numeric(30,10), big text, r real);
             ALTER TABLE dup REPLICA IDENTITY FULL;
             INSERT INTO dup VALUES (1, 'same', 1.5, NULL, 1.1), (1, 'same', 1.5, NULL, 1.1),
               (2, NULL, NULL, NULL, NULL),
               (3, 'x', 12345678901234567890.1234567891, NULL, 0.1),
               (3, 'x', 12345678901234567890.1234567892, NULL, 0.1),
               (4, 'toast', 0, (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 4000) i), 0.25);"
        ),
        "public.dup,public.marker",
    );
    let my = My::fresh(&format!("keyless_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml("  batch_rows: 3\n"));
    snapshot(&p, &extra, 6);
    compact(&p);
    let sql = p.sql();
    let (source, target) = dup_rows(&sql, &my);
    assert_eq!(target, source, "the snapshot, equal rows twice");
    assert_eq!(
        lines(my.rows("SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = 'dup' AND extra LIKE '%INVISIBLE%'")),
        ["_db_sync_row"],
        "a hidden key"
    );

    // One of several equal rows, rows with NULLs, a value beyond a DOUBLE's digits, a FLOAT,
    // an update that leaves a TOASTed value unsent, one that changes nothing.
    let one_of = |a: i32| format!("ctid = (SELECT ctid FROM dup WHERE a = {a} LIMIT 1)");
    stream(
        &p,
        &[
            "INSERT INTO dup VALUES (1, 'same', 1.5, NULL, 1.1)",
            &format!("DELETE FROM dup WHERE {}", one_of(1)),
            &format!("UPDATE dup SET b = 'changed' WHERE {}", one_of(1)),
            "UPDATE dup SET b = 'was null' WHERE a = 2",
            "UPDATE dup SET a = 30 WHERE n = 12345678901234567890.1234567892",
            "UPDATE dup SET a = 40 WHERE a = 4",
            "UPDATE dup SET b = b WHERE a = 3",
            "DELETE FROM dup WHERE a = 2",
            "INSERT INTO dup VALUES (5, NULL, NULL, NULL, NULL), (5, NULL, NULL, NULL, NULL)",
            &format!("DELETE FROM dup WHERE {}", one_of(5)),
        ],
    );
    // A crash after a few chunks of three changes: the re-run skips exactly the committed
    // ones. Meanwhile backfill refuses to rebuild the table (apply would redo part of it).
    let out = p.db_sync_env(
        &["compact", "--once"],
        &[("DB_SYNC_FAILPOINT", "apply.after_chunk:3")],
    );
    assert!(
        !out.status.success(),
        "the failpoint stops it: {}",
        text(&out)
    );
    refused(
        &p,
        &["backfill", "--table", "public.dup", "--truncate"],
        2,
        "compact --once",
    );
    compact(&p);
    let (source, target) = dup_rows(&sql, &my);
    assert_eq!(source.len(), 6, "{source:?}");
    assert_eq!(target, source, "the target holds the source's multiset");

    // The slot goes while nothing captures: the resync's full snapshot replaces the rows (a
    // sweep cannot tell equal rows apart).
    sql.exec(&format!("SELECT pg_drop_replication_slot('{}')", p.slot()));
    sql.exec(&format!("DELETE FROM dup WHERE {}", one_of(1)));
    sql.exec("INSERT INTO dup VALUES (6, 'meanwhile', 6, NULL, 6.6)");
    let mut capture = p.spawn_db_sync(&["capture"]);
    wait_for_value(&p, &mut capture, "public.dup", "a", 6);
    sql.exec("INSERT INTO dup VALUES (7, 'after', 7, NULL, 7.7)");
    wait_for_value(&p, &mut capture, "public.dup", "a", 7);
    let log = capture.log();
    assert_eq!(capture.terminate(STOP_WAIT), 0, "{log}");
    compact(&p);
    let (source, target) = dup_rows(&sql, &my);
    assert_eq!(target, source, "after the resync");

    // Backfill rebuilds it whole from the audit files, and only whole; an incremental
    // snapshot (which reads by key) is refused.
    refused(
        &p,
        &["backfill", "--table", "public.dup", "--resnapshot"],
        2,
        "no primary key",
    );
    refused(&p, &["backfill", "--table", "public.dup"], 2, "--truncate");
    let out = p.db_sync(&["verify", "--table", "public.dup", "--settle", "5"]);
    assert_eq!(
        exit_code(&out),
        0,
        "verify counts equal rows: {}",
        text(&out)
    );
    my.exec("DELETE FROM dup WHERE a = 1 LIMIT 1");
    let out = p.db_sync(&["verify", "--table", "public.dup", "--settle", "1"]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("missing in `dup`: a=1, b=changed"),
        "the row the target lacks: {}",
        text(&out)
    );
    // A change of the row the target lost finds nothing to change: apply holds the table with
    // one line whose fix works (the rebuild, which needs everything audited applied).
    let mut capture = p.spawn_db_sync(&["capture"]);
    sql.exec("UPDATE dup SET b = 'again' WHERE a = 1");
    sql.exec("INSERT INTO dup VALUES (8, 'last', 8, NULL, 8.5)");
    wait_for_value(&p, &mut capture, "public.dup", "a", 8);
    let log = capture.log();
    assert_eq!(capture.terminate(STOP_WAIT), 0, "{log}");
    refused(
        &p,
        &["compact", "--once"],
        1,
        "db-sync backfill --table public.dup --truncate",
    );
    let out = p.db_sync(&["backfill", "--table", "public.dup", "--truncate"]);
    assert!(out.status.success(), "{}", text(&out));
    let (source, target) = dup_rows(&sql, &my);
    assert_eq!(target, source, "rebuilt from the audit files");
    compact(&p);
}

#[test]
fn a_row_the_target_refuses_holds_its_table_alone_until_a_backfill_rebuilds_it() {
    // `bad` sorts first: its chunks come before the others' in every window.
    let p = Pipeline::new(
        "holds",
        &format!(
            "CREATE TABLE bad (id int PRIMARY KEY, at timestamptz, v text);
             CREATE TABLE ok (id int PRIMARY KEY, v text);
             INSERT INTO bad VALUES (1, '2026-01-01 00:00:00+00', 'a'), (2, '2026-01-02 00:00:00+00', 'b');
             INSERT INTO ok VALUES (1, 'a');
             {MARKER}"
        ),
        "public.bad,public.ok,public.marker",
    );
    let my = My::fresh(&format!("holds_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml("  batch_rows: 1\n"));
    snapshot(&p, &extra, 3);
    compact(&p);
    let sql = p.sql();
    let both = |q: &str| (lines(sql.rows(q)), lines(my.rows(q)));
    let (ok_q, bad_q) = (
        "SELECT id, v FROM ok ORDER BY id",
        "SELECT id, v FROM bad ORDER BY id",
    );

    // A timestamp past the target's year 9999, among changes of both tables. A crash after
    // two chunks (after `bad`'s refused one): the re-run numbers the window's chunks as
    // before, skips the committed ones, and holds `bad` again.
    stream(
        &p,
        &[
            "UPDATE bad SET at = '10000-01-01 00:00:00+00', v = 'far' WHERE id = 2",
            "INSERT INTO bad VALUES (3, '2026-03-03 00:00:00+00', 'c')",
            "INSERT INTO ok VALUES (2, 'b')",
            "UPDATE ok SET v = 'a2' WHERE id = 1",
        ],
    );
    let out = p.db_sync_env(
        &["compact", "--once"],
        &[("DB_SYNC_FAILPOINT", "apply.after_chunk:2")],
    );
    assert!(
        !out.status.success(),
        "the failpoint stops it: {}",
        text(&out)
    );
    let out = p.db_sync(&["compact", "--once"]);
    assert_eq!(exit_code(&out), 1, "{}", text(&out));
    let line = last_stderr_line(&out);
    for part in [
        "apply holds public.bad",
        "column `at`",
        "key id=2",
        "the other tables go on",
        "db-sync backfill --table public.bad --truncate",
    ] {
        assert!(line.contains(part), "names {part}: {line}");
    }
    let (source, target) = both(ok_q);
    assert_eq!(target, source, "the other table goes on");
    assert_eq!(
        my.value("SELECT v FROM bad WHERE id = 2").as_deref(),
        Some("b"),
        "the refused row is not written"
    );
    let status: serde_json::Value =
        serde_json::from_str(&run_ok(&p, &["status", "--json"])).unwrap();
    assert!(
        status["held_tables"]["public.bad"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("key id=2")),
        "{status:#}"
    );

    // In later windows the held table stays out while the others go on; the source then
    // changes the value to one the target can hold.
    stream(
        &p,
        &[
            "INSERT INTO bad VALUES (4, '2026-04-04 00:00:00+00', 'd')",
            "INSERT INTO ok VALUES (3, 'c')",
            "UPDATE bad SET at = '2027-01-01 00:00:00+00' WHERE id = 2",
        ],
    );
    let held = lines(my.rows(bad_q));
    refused(&p, &["compact", "--once"], 1, "apply holds public.bad");
    let (source, target) = both(ok_q);
    assert_eq!(target, source);
    assert_eq!(
        lines(my.rows(bad_q)),
        held,
        "the held table stays as it was"
    );

    // The backfill rebuilds the table from its audit files and ends the hold: the next cycle
    // succeeds and applies the table's new changes.
    let out = p.db_sync(&["backfill", "--table", "public.bad", "--truncate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("applies it again"),
        "{}",
        text(&out)
    );
    let (source, target) = both(bad_q);
    assert_eq!(target, source);
    compact(&p);
    stream(&p, &["UPDATE bad SET v = 'e' WHERE id = 1"]);
    compact(&p);
    let at = "SELECT id, v, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM bad ORDER BY id";
    let target_at = "SELECT id, v, DATE_FORMAT(at, '%Y-%m-%d %H:%i:%s') FROM bad ORDER BY id";
    assert_eq!(lines(my.rows(target_at)), lines(sql.rows(at)));
    let status: serde_json::Value =
        serde_json::from_str(&run_ok(&p, &["status", "--json"])).unwrap();
    assert!(
        status["held_tables"]
            .as_object()
            .is_some_and(|h| h.is_empty()),
        "{status:#}"
    );
}
