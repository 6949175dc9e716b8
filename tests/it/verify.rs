//! `db-sync verify`: every type of the type map ([`db_sync::types#the-type-map`]) compared without
//! a false difference, exactly the real differences found after the target is changed behind
//! db-sync's back (a JSON object's key order is not one), `status` showing the last verify, bad
//! usage, and changes in flight settled while the daemon applies a workload.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::schedule::{count, daemon_config};
use crate::support::audit::{audit_dir, duck, duck_rows, scan};
use crate::support::target::*;
use crate::support::types::TYPES_SCHEMA;
use crate::support::*;

fn verify(p: &Pipeline, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let out = p.db_sync(&all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until `capture` is connected to the pipeline's slot (`--repair` needs it).
fn wait_until_connected(p: &Pipeline, capture: &Capture) {
    let start = Instant::now();
    while p
        .sql()
        .value(&format!(
            "SELECT active::text FROM pg_replication_slots WHERE slot_name = '{}'",
            p.slot()
        ))
        .as_deref()
        != Some("true")
    {
        assert!(
            start.elapsed() < STREAM_WAIT,
            "capture never connected; log:\n{}",
            capture.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn table_report<'a>(report: &'a Value, table: &str) -> &'a Value {
    report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == table)
        .unwrap_or_else(|| panic!("no {table} in {report:#}"))
}

#[test]
fn verify_finds_exactly_the_real_differences_of_every_type() {
    let p = Pipeline::new(
        "verify_types",
        TYPES_SCHEMA,
        "public.all_types,public.marker",
    );
    let sql = p.sql();
    // As in apply's type test: MySQL's columns refuse infinities and NaN (rows 5 and 6), and
    // MariaDB keeps no negative zero (a -0 real is stored as 0, which verify reports: floats
    // compare by bits).
    sql.exec("DELETE FROM all_types WHERE id IN (5, 6); UPDATE all_types SET c_double = 0, c_real = 0 WHERE id = 4; CREATE TABLE marker (id int PRIMARY KEY)");
    let my = My::fresh(&format!("verify_types_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml(""));
    let mut capture = p.start_capture_with(&extra);
    p.wait_for_events(5, &mut capture, SNAPSHOT_WAIT);
    // Streamed changes too, so both kinds of row are compared.
    sql.exec("UPDATE all_types SET c_text = 'changed', c_num = -0.01, c_ts = '2001-02-03 04:05:06.000007', c_jsonb = '{\"z\": [true, false], \"a\": {\"y\": 1, \"b\": null}}' WHERE id = 3");
    sql.exec("INSERT INTO all_types SELECT 8, c_int2, c_int4, c_int8, c_real, c_double, c_num, c_num38, c_num50, c_numu, c_money, c_bool, c_text, c_varchar, c_char, c_bytea, c_date, c_ts, c_ts3, c_tstz, c_time, c_time3, c_timetz, c_interval, c_uuid, c_json, c_jsonb, c_enum, c_inet, c_cidr, c_macaddr, c_xml, c_ints, c_texts FROM all_types WHERE id = 2");
    sql.exec("INSERT INTO marker VALUES (1)");
    wait_for_marker(&p, &mut capture, "public.marker", STREAM_WAIT);
    assert_eq!(capture.terminate(STOP_WAIT), 0);
    compact(&p);

    // In sync: exit 0, no false difference on any type.
    let (code, out, err) = verify(&p, &["--settle", "30"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("public.all_types"), "{out}");
    assert!(!out.contains("difference(s)"), "{out}");

    // Behind db-sync's back: a row deleted, a row inserted, one digit of a decimal, one µs of
    // a timestamp, a text value, and a JSON object with its keys reordered (not a difference).
    my.exec("DELETE FROM all_types WHERE id = 1");
    my.exec("INSERT INTO all_types (id, c_text) VALUES (99, 'extra')");
    my.exec("UPDATE all_types SET c_num = c_num + 0.01 WHERE id = 2");
    my.exec("UPDATE all_types SET c_ts = c_ts + INTERVAL 1 MICROSECOND WHERE id = 8");
    my.exec("UPDATE all_types SET c_text = 'tampered' WHERE id = 7");
    my.exec("UPDATE all_types SET c_jsonb = '{\"z\": [true, false], \"a\": {\"y\": 1, \"b\": null}}' WHERE id = 3");
    assert_ne!(
        my.value("SELECT c_jsonb FROM all_types WHERE id = 3"),
        sql.value("SELECT c_jsonb::text FROM all_types WHERE id = 3"),
        "the reordered JSON must differ as text"
    );
    let (code, out, err) = verify(&p, &["--settle", "60", "--format", "json"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.trim()
            .starts_with("error: verify: 5 difference(s) persist in 1 table(s)"),
        "{err}"
    );
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let t = table_report(&report, "public.all_types");
    assert_eq!(t["rows"], 6, "{t:#}");
    assert_eq!(t["target_rows"], 6, "{t:#}");
    assert_eq!(t["missing"], 1, "{t:#}");
    assert_eq!(t["extra"], 1, "{t:#}");
    assert_eq!(t["different"], 3, "{t:#}");
    assert_eq!(t["first_missing"], serde_json::json!(["id=1"]));
    assert_eq!(t["first_extra"], serde_json::json!(["id=99"]));
    assert_eq!(
        t["first_different"],
        serde_json::json!([
            ["id=2", ["c_num"]],
            ["id=7", ["c_text"]],
            ["id=8", ["c_ts"]]
        ])
    );
    assert_eq!(
        t["different_columns"],
        serde_json::json!({"c_num": 1, "c_text": 1, "c_ts": 1})
    );

    // The table form names the same keys; `status` shows the last verify.
    let (code, out, _) = verify(&p, &["--table", "public.all_types", "--settle", "5"]);
    eprintln!("{out}"); // the README's example
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("missing in `all_types`: id=1"), "{out}");
    assert!(out.contains("extra in `all_types`: id=99"), "{out}");
    assert!(
        out.contains("different in `all_types`: id=2 (c_num); id=7 (c_text); id=8 (c_ts)"),
        "{out}"
    );
    let status = p.db_sync(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("verify           public.all_types: 6 row(s), 5 difference(s) (1 missing, 1 extra, 3 different)"),
        "{status}"
    );

    // --repair: the capture re-reads the missing and different keys (`r` events through the
    // journal, the audit files and apply) and the extra row is deleted; then in sync.
    let before = p.events().last().unwrap()["seq"].as_u64().unwrap();
    let capture = p.start_capture_with(&extra);
    wait_until_connected(&p, &capture);
    let (code, out, err) = verify(&p, &["--repair", "--settle", "120", "--format", "json"]);
    assert_eq!(code, 0, "{out}\n{err}\ncapture log:\n{}", capture.log());
    let report: Value = serde_json::from_str(&out).unwrap();
    let t = table_report(&report, "public.all_types");
    assert_eq!(
        (&t["missing"], &t["extra"], &t["different"]),
        (&Value::from(0), &Value::from(0), &Value::from(0)),
        "{t:#}"
    );
    assert_eq!(t["repaired_resnapshot"], 4, "{t:#}");
    assert_eq!(t["repaired_deleted"], 1, "{t:#}");
    assert_eq!(
        my.value("SELECT COUNT(*) FROM all_types WHERE id = 99")
            .as_deref(),
        Some("0")
    );
    let conn = duck();
    let rows = duck_rows(
        &conn,
        &format!(
            "SELECT id::VARCHAR FROM {} WHERE _cdc_op = 'r' AND _cdc_seq > {before} ORDER BY id",
            scan(&audit_dir(&p), "public.all_types")
        ),
    );
    let ids: Vec<&str> = rows.iter().map(|r| r[0].as_deref().unwrap()).collect();
    assert_eq!(
        ids,
        ["1", "2", "7", "8"],
        "the repair's rows in the audit files"
    );
    assert_eq!(capture.terminate(STOP_WAIT), 0);
    let status = p.db_sync(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("verify           public.all_types: 6 row(s), 0 difference(s) (0 missing, 0 extra, 0 different), after repairing 5 row(s)"),
        "{status}"
    );
    let (code, out, err) = verify(&p, &["--settle", "5"]);
    assert_eq!(code, 0, "{out}\n{err}");

    // Bad usage: one line, exit 2.
    let (code, _, err) = verify(&p, &["--format", "xml"]);
    assert_eq!(code, 2, "{err}");
    for args in [
        &["--table", "public.nope"][..],
        &["--table", "all_types"][..],
    ] {
        let (code, out, err) = verify(&p, args);
        assert_eq!(code, 2, "{args:?}: {out}\n{err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    let (_, _, err) = verify(&p, &["--table", "public.nope"]);
    assert!(err.contains("applied tables: public.all_types"), "{err}");
}

#[test]
fn verify_settles_changes_in_flight_while_the_daemon_runs() {
    let p = Pipeline::new("verify_settle", WORKLOAD_SCHEMA, WORKLOAD_TABLES);
    let my = My::fresh(&format!("verify_settle_{}", std::process::id()));
    daemon_config(&p, &my, 500);
    let sql = p.sql();
    sql.exec("INSERT INTO docs VALUES (gen_random_uuid(), '{\"b\": 1, \"a\": [1, 2]}', '\\x00ff', ARRAY['x', NULL])");
    sql.exec("INSERT INTO marker VALUES (1)");
    let daemon = p.spawn_db_sync(&["run"]);
    let start = Instant::now();
    while count(&my, "marker") < 1 || count(&my, "accounts") < 500 {
        assert!(
            start.elapsed() < STREAM_WAIT,
            "the daemon never applied the snapshot; log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A workload commits at the source for as long as verify runs.
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let workload = {
        let (stop, committed) = (stop.clone(), committed.clone());
        let port = p.port;
        let db = p.db.clone();
        std::thread::spawn(move || {
            let sql = Sql::connect(port, &db);
            let mut rng = Rng(0x5eed_1234_abcd);
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                sql.exec(&random_change(&mut rng, round));
                committed.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    while committed.load(Ordering::Relaxed) < 20 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = committed.load(Ordering::Relaxed);
    let (code, out, err) = verify(&p, &["--settle", "120", "--format", "json"]);
    let during = committed.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    workload.join().unwrap();
    sql.exec("INSERT INTO marker VALUES (2)");
    assert_eq!(code, 0, "{out}\n{err}\ndaemon log:\n{}", daemon.log());
    assert!(during > 0, "the workload must commit while verify runs");
    let report: Value = serde_json::from_str(&out).unwrap();
    for table in WORKLOAD_TABLES.split(',') {
        let t = table_report(&report, table);
        assert_eq!(t["missing"], 0, "{t:#}");
        assert_eq!(t["extra"], 0, "{t:#}");
        assert_eq!(t["different"], 0, "{t:#}");
    }
    assert!(
        table_report(&report, "public.accounts")["rows"]
            .as_u64()
            .unwrap()
            > 0,
        "{report:#}"
    );
    let mut daemon = daemon;
    wait_for_markers(&p, &mut daemon, "public.marker", 2, STREAM_WAIT);
    assert_eq!(daemon.terminate(STOP_WAIT), 0);
    // After the stream stops, the daemon's state equals the source row for row too.
    compact(&p);
    assert_workload_equal(&sql, &my);
}

#[test]
fn verify_repair_rechecks_decimal_keys_by_value_and_keeps_a_key_the_source_gains_meanwhile() {
    // A decimal key: PostgreSQL prints `9.7500` where verify's key text is `9.75`.
    let p = Pipeline::new(
        "repair_race",
        &format!(
            "CREATE TABLE dk (k numeric(12,4) PRIMARY KEY, v text);
             INSERT INTO dk VALUES (1.5, 'a'), (2.25, 'b');
             {MARKER}"
        ),
        "public.dk,public.marker",
    );
    let my = My::fresh(&format!("repair_race_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml(""));
    snapshot(&p, &extra, 2);
    compact(&p);
    // Two rows only the target has.
    my.exec("INSERT INTO dk VALUES (7.5, 'extra'), (9.75, 'extra')");
    let mut capture = p.spawn_db_sync(&["capture"]);
    wait_until_connected(&p, &capture);

    // verify --repair compares, then waits before its re-check; meanwhile the source gains
    // key 9.75 and a cycle applies it. The re-check must find it at the source and keep it.
    let mut repair = p.spawn_db_sync_env(
        &["verify", "--repair", "--settle", "60"],
        &[("DB_SYNC_PAUSE", "verify.before_repair:6000")],
    );
    let start = Instant::now();
    while !repair.log().contains("repairing") {
        assert!(
            start.elapsed() < STREAM_WAIT,
            "verify never got to its repair: {}",
            repair.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let sql = p.sql();
    sql.exec("INSERT INTO dk VALUES (9.75, 'source')");
    sql.exec("INSERT INTO marker VALUES (1)");
    wait_for_marker(&p, &mut capture, "public.marker", STREAM_WAIT);
    compact(&p);
    assert_eq!(repair.wait(STREAM_WAIT), 0, "{}", repair.log());
    let status: Value = serde_json::from_str(&run_ok(&p, &["status", "--json"])).unwrap();
    assert_eq!(
        status["verify"]["public.dk"]["repaired"], 1,
        "only 7.5 goes: {status:#}"
    );
    assert_eq!(
        my.value(
            "SELECT CONCAT(operation, ' ', row_count) FROM _db_sync_checkpoint \
             WHERE pipeline LIKE '%:repair:public.dk'"
        )
        .as_deref(),
        Some("delete 1"),
        "the delete went through apply's checkpointed chunks"
    );
    let q = "SELECT k, v FROM dk ORDER BY k";
    assert_eq!(lines(my.rows(q)), lines(sql.rows(q)));
    assert_eq!(capture.terminate(STOP_WAIT), 0);
}
