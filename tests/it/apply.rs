//! Apply to the MySQL target ([`db_sync::apply`]): after capture and `compact --once`, the MariaDB
//! tables equal the PostgreSQL tables row for row and value for value, across key changes,
//! large transactions, unchanged TOAST, schema changes, hostile names, crashes at every chunk
//! boundary and a target that goes away mid-apply.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use serde_json::Value;

use crate::support::compare::*;
use crate::support::target::*;
use crate::support::types::{Cmp, PG_EPOCH_US, TYPES_SCHEMA};
use crate::support::*;

#[rustfmt::skip]
const TYPE_COLS: &[Col] = &[
    col("c_int2",     PG_TEXT, MY, EXACT),
    col("c_int4",     PG_TEXT, MY, EXACT),
    col("c_int8",     PG_TEXT, MY, EXACT),
    // MariaDB prints a FLOAT with 6 digits; as a DOUBLE it shows every bit.
    col("c_real",     PG_TEXT, "CAST({c} AS DOUBLE)", Check::Same(Cmp::F32)),
    col("c_double",   PG_TEXT, MY, Check::Same(Cmp::F64)),
    col("c_num",      PG_TEXT, MY, Check::Same(Cmp::Decimal)),
    col("c_num38",    PG_TEXT, MY, Check::Same(Cmp::Decimal)),
    col("c_num50",    PG_TEXT, MY, Check::Same(Cmp::Decimal)),
    col("c_numu",     PG_TEXT, MY, Check::Same(Cmp::Decimal)),
    col("c_money",    "{c}::numeric::text", MY, Check::Same(Cmp::Decimal)),
    col("c_bool",     "{c}::int::text", MY, EXACT),
    col("c_text",     PG_TEXT, MY, EXACT),
    col("c_varchar",  PG_TEXT, MY, EXACT),
    // Both sides ignore char(n)'s trailing blanks.
    col("c_char",     PG_TEXT, MY, EXACT),
    col("c_bytea",    "encode({c}, 'hex')", "lower(hex({c}))", EXACT),
    col("c_date",     PG_TEXT, "DATE_FORMAT({c}, '%Y-%m-%d')", EXACT),
    col("c_ts",       PG_EPOCH_US, MY_EPOCH_US, EXACT),
    col("c_ts3",      PG_EPOCH_US, MY_EPOCH_US, EXACT),
    col("c_tstz",     PG_EPOCH_US, MY_EPOCH_US, EXACT),
    col("c_time",     PG_EPOCH_US, MY_TIME_US, EXACT),
    col("c_time3",    PG_EPOCH_US, MY_TIME_US, EXACT),
    col("c_timetz",   PG_EPOCH_US, MY, Check::Same(Cmp::TimeTz)),
    col("c_interval", PG_EPOCH_US, MY, EXACT),
    col("c_uuid",     PG_TEXT, MY, EXACT),
    col("c_json",     PG_TEXT, MY, Check::Json),
    col("c_jsonb",    PG_TEXT, MY, Check::Json),
    col("c_enum",     PG_TEXT, MY, EXACT),
    col("c_inet",     "{c}", MY, EXACT),
    col("c_cidr",     "{c}", MY, EXACT),
    col("c_macaddr",  "{c}", MY, EXACT),
    col("c_xml",      PG_TEXT, MY, EXACT),
    col("c_ints",     "array_to_json({c})::text", MY, Check::Json),
    col("c_texts",    "array_to_json({c})::text", MY, Check::Json),
];

#[test]
fn every_type_lands_in_mysql_as_it_left_postgres() {
    // LOAD DATA (the default) and multi-row INSERT must store the same values.
    for (tag, load_data) in [("ld", true), ("ins", false)] {
        let p = Pipeline::new(
            &format!("apply_types_{tag}"),
            TYPES_SCHEMA,
            "public.all_types,public.marker",
        );
        let sql = p.sql();
        // Rows 5 and 6 hold infinities and NaN, which MySQL's columns refuse (a test below
        // shows the error); the rest are the extremes the audit test uses.
        sql.exec("DELETE FROM all_types WHERE id IN (5, 6); UPDATE all_types SET c_double = 0 WHERE id = 4; CREATE TABLE marker (id int PRIMARY KEY)");
        let my = My::fresh(&format!("apply_types_{tag}_{}", std::process::id()));
        let extra = format!(
            "{}{}",
            audit_yaml(&p),
            my.target_yaml(&format!("  load_data: {load_data}\n"))
        );
        let mut capture = p.start_capture_with(&extra);
        p.wait_for_events(5, &mut capture, SNAPSHOT_WAIT);
        // Streamed changes: an update of many columns, a delete, an insert, a key change.
        sql.exec("UPDATE all_types SET c_text = 'changed', c_num = -0.01, c_ts = '2001-02-03 04:05:06.000007', c_bytea = '\\x00ff', c_jsonb = '{\"z\": [true, false]}' WHERE id = 3");
        sql.exec("DELETE FROM all_types WHERE id = 4");
        sql.exec("INSERT INTO all_types SELECT 8, c_int2, c_int4, c_int8, c_real, c_double, c_num, c_num38, c_num50, c_numu, c_money, c_bool, c_text, c_varchar, c_char, c_bytea, c_date, c_ts, c_ts3, c_tstz, c_time, c_time3, c_timetz, c_interval, c_uuid, c_json, c_jsonb, c_enum, c_inet, c_cidr, c_macaddr, c_xml, c_ints, c_texts FROM all_types WHERE id = 2");
        sql.exec("UPDATE all_types SET id = 9 WHERE id = 1");
        sql.exec("INSERT INTO marker VALUES (1)");
        wait_for_marker(&p, &mut capture, "public.marker", STREAM_WAIT);
        assert_eq!(capture.terminate(STOP_WAIT), 0);

        let summary = compact(&p);
        assert!(summary.contains("applied seq"), "{summary}");
        assert_eq!(summary.contains("LOAD DATA"), load_data, "{summary}");
        assert_same_rows(
            &sql,
            &my,
            "all_types",
            "all_types",
            &[("id", "id")],
            TYPE_COLS,
        );
        assert_eq!(
            my.value("SELECT COUNT(*) FROM all_types").as_deref(),
            Some("5")
        );

        // The tables were created with the type map's MySQL types and the source's key.
        for (column, want) in [
            ("id", "int(11)"),
            ("c_int8", "bigint(20)"),
            ("c_real", "float"),
            ("c_num", "decimal(12,2)"),
            ("c_num50", "decimal(50,20)"),
            ("c_numu", "longtext"),
            ("c_bool", "tinyint(1)"),
            ("c_text", "longtext"),
            ("c_varchar", "varchar(20)"),
            ("c_char", "char(5)"),
            ("c_bytea", "longblob"),
            ("c_date", "date"),
            ("c_ts", "datetime(6)"),
            ("c_tstz", "datetime(6)"),
            ("c_time", "time(6)"),
            ("c_interval", "bigint(20)"),
            ("c_uuid", "char(36)"),
            ("c_jsonb", "longtext"), // MariaDB's JSON is LONGTEXT with a json_valid check
            ("c_enum", "varchar(255)"),
            ("c_ints", "longtext"),
        ] {
            assert_eq!(column_type(&my, "all_types", column), want, "{column}");
        }
        assert_eq!(
            my.value("SELECT GROUP_CONCAT(COLUMN_NAME) FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'all_types' AND CONSTRAINT_NAME = 'PRIMARY'").as_deref(),
            Some("id")
        );
        // Every chunk committed with its checkpoint row.
        let chunks = my
            .value("SELECT COUNT(*) FROM _db_sync_checkpoint")
            .unwrap();
        assert!(chunks.parse::<u32>().unwrap() >= 2, "{chunks}");
    }
}

#[test]
fn a_random_workload_with_a_large_transaction_ends_equal_to_the_source() {
    let p = Pipeline::new("apply_random", WORKLOAD_SCHEMA, WORKLOAD_TABLES);
    let my = My::fresh(&format!("apply_random_{}", std::process::id()));
    let extra = format!(
        "{}{}",
        audit_yaml(&p),
        my.target_yaml("  batch_rows: 2000\n")
    );
    let mut capture = p.start_capture_with(&extra);
    p.wait_for_events(700, &mut capture, SNAPSHOT_WAIT);
    let sql = p.sql();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..6 {
        for _ in 0..150 {
            sql.exec(&random_change(&mut rng, round));
        }
        if round == 2 {
            // One transaction of 100,000 changes, and churn on the same keys right after.
            sql.exec("BEGIN; INSERT INTO lines SELECT 1000 + i / 10, i % 10, i, 'big ' || i FROM generate_series(0, 99999) i; COMMIT");
            sql.exec("UPDATE lines SET qty = -qty WHERE order_id BETWEEN 1000 AND 1100");
            sql.exec("DELETE FROM lines WHERE order_id BETWEEN 1200 AND 1300");
        }
        // Compactions while capture runs: windows end mid-workload.
        compact(&p);
    }
    sql.exec("INSERT INTO marker VALUES (1)");
    wait_for_marker(&p, &mut capture, "public.marker", STREAM_WAIT);
    assert_eq!(capture.terminate(STOP_WAIT), 0);
    compact(&p);
    assert_workload_equal(&sql, &my);
    assert_eq!(
        my.value("SELECT COUNT(*) FROM `lines`").unwrap(),
        sql.value("SELECT COUNT(*) FROM lines").unwrap()
    );

    // Status: everything audited is applied.
    let status: Value =
        serde_json::from_slice(&p.db_sync(&["status", "--json"]).stdout).expect("status JSON");
    assert_eq!(
        status["applied_through"], status["audited_through"],
        "{status:#}"
    );
    assert_eq!(status["apply_lag_events"], 0, "{status:#}");
}

#[test]
fn a_crash_anywhere_in_apply_leaves_the_target_equal_after_a_rerun() {
    let p = Pipeline::new("apply_crash", WORKLOAD_SCHEMA, WORKLOAD_TABLES);
    let my = My::fresh(&format!("apply_crash_{}", std::process::id()));
    let extra = format!(
        "{}{}",
        audit_yaml(&p),
        my.target_yaml("  batch_rows: 300\n")
    );
    let mut capture = p.start_capture_with(&extra);
    p.wait_for_events(700, &mut capture, SNAPSHOT_WAIT);
    let sql = p.sql();
    let mut rng = Rng(42);
    for _ in 0..300 {
        sql.exec(&random_change(&mut rng, 1));
    }
    sql.exec(
        "INSERT INTO lines SELECT 5000 + i / 10, i % 10, i, 'bulk' FROM generate_series(0, 9999) i",
    );
    sql.exec("INSERT INTO marker VALUES (1)");
    wait_for_marker(&p, &mut capture, "public.marker", STREAM_WAIT);
    assert_eq!(capture.terminate(STOP_WAIT), 0);

    // Crash before a commit and after one, at several chunks: each run stops with SIGABRT.
    for point in [
        "apply.before_commit:1",
        "apply.after_chunk:2",
        "apply.before_commit:7",
        "apply.after_chunk:13",
    ] {
        let out = p.db_sync_env(&["compact", "--once"], &[("DB_SYNC_FAILPOINT", point)]);
        assert_eq!(
            out.status.signal(),
            Some(SIGABRT),
            "{point}: {}",
            text(&out)
        );
    }
    // A checkpoint row written for another plan of its chunk (state restored from an older
    // copy, config changed since the crash) stops the re-run with one line: skipping it would
    // leave rows unapplied.
    let row = my.rows(
        "SELECT window_from, chunk, digest FROM _db_sync_checkpoint ORDER BY window_from DESC, chunk LIMIT 1",
    );
    let (from, chunk, digest) = (
        row[0][0].clone().unwrap(),
        row[0][1].clone().unwrap(),
        row[0][2].clone().expect("checkpoint rows carry a digest"),
    );
    let at = format!("WHERE window_from = {from} AND chunk = {chunk}");
    my.exec(&format!(
        "UPDATE _db_sync_checkpoint SET digest = '0123456789abcdef' {at}"
    ));
    let out = p.db_sync(&["compact", "--once"]);
    let line = last_stderr_line(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        line.contains(&format!("checkpoint row of chunk {chunk} of window {from}")),
        "{line}"
    );
    my.exec(&format!(
        "UPDATE _db_sync_checkpoint SET digest = '{digest}' {at}"
    ));
    let summary = compact(&p);
    assert!(
        summary.contains("already committed"),
        "committed chunks are skipped: {summary}"
    );
    assert_workload_equal(&sql, &my);
    // Once done, a window's checkpoint rows say every chunk committed once.
    let rows = my.rows("SELECT chunk, chunks FROM _db_sync_checkpoint ORDER BY chunk");
    let total: usize = rows[0][1].as_deref().unwrap().parse().unwrap();
    assert_eq!(rows.len(), total, "{rows:?}");

    // kill -9 at moments that fall anywhere in a cycle, then a clean run.
    let mut capture = p.spawn_db_sync(&["capture"]);
    for _ in 0..300 {
        sql.exec(&random_change(&mut rng, 2));
    }
    sql.exec("UPDATE lines SET qty = qty * 2 WHERE order_id >= 5000");
    sql.exec("INSERT INTO marker VALUES (2)");
    wait_for_markers(&p, &mut capture, "public.marker", 2, STREAM_WAIT);
    assert_eq!(capture.terminate(STOP_WAIT), 0);
    for ms in [100u64, 300, 600, 1000] {
        let mut run = p.spawn_db_sync(&["compact", "--once"]);
        std::thread::sleep(Duration::from_millis(ms));
        let _ = run.child.kill();
        let _ = run.child.wait();
    }
    compact(&p);
    assert_workload_equal(&sql, &my);
}

#[test]
fn an_unchanged_toasted_column_keeps_its_value_in_the_target() {
    let p = Pipeline::new(
        "apply_toast",
        "CREATE TABLE notes (id int PRIMARY KEY, n int, big text, tiny text);
         INSERT INTO notes SELECT i, 0, (SELECT string_agg(md5(i::text || g::text), '') FROM generate_series(1, 4000) g), 'x' FROM generate_series(1, 3) i;",
        "public.notes",
    );
    let my = My::fresh(&format!("apply_toast_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml(""));
    let mut capture = p.start_capture_with(&extra);
    p.wait_for_events(3, &mut capture, SNAPSHOT_WAIT);
    assert_eq!(capture.terminate(STOP_WAIT), 0);
    compact(&p);
    let cols = [
        col("n", PG_TEXT, MY, EXACT),
        col("big", PG_TEXT, MY, EXACT),
        col("tiny", PG_TEXT, MY, EXACT),
    ];
    let sql = p.sql();
    assert_same_rows(&sql, &my, "notes", "notes", &[("id", "id")], &cols);

    // Row 1: only the small column changes (big is not sent). Row 2: big changes, then the
    // small column in the same window (big must come from the first update). Row 3: the small
    // column changes twice.
    let mut capture = p.spawn_db_sync(&["capture"]);
    sql.exec("UPDATE notes SET n = 1 WHERE id = 1");
    sql.exec("UPDATE notes SET big = big || 'tail' WHERE id = 2");
    sql.exec("UPDATE notes SET n = 2, tiny = 'y' WHERE id = 2");
    sql.exec("UPDATE notes SET n = 3 WHERE id = 3");
    sql.exec("UPDATE notes SET n = 4 WHERE id = 3");
    p.wait_for_events(8, &mut capture, STREAM_WAIT);
    assert_eq!(capture.terminate(STOP_WAIT), 0);
    let unchanged: Vec<bool> = p.events()[3..]
        .iter()
        .map(|e| e["after"]["big"] == "__debezium_unavailable_value")
        .collect();
    assert_eq!(
        unchanged,
        [true, false, true, true, true],
        "the workload must produce unchanged TOAST"
    );
    compact(&p);
    assert_same_rows(&sql, &my, "notes", "notes", &[("id", "id")], &cols);
    assert_eq!(
        my.value("SELECT LENGTH(big) FROM notes WHERE id = 1")
            .as_deref(),
        Some("128000")
    );
}

#[test]
fn schema_changes_hostile_names_and_tables_without_a_key() {
    let schema = r#"
        CREATE TABLE "Hostile ""T"" `x` select" ("select" int PRIMARY KEY, "col with space" text, "quote""d" int, "back`tick" text);
        CREATE TABLE evolving (id int PRIMARY KEY, a int);
        CREATE TABLE nokey (a int, b text);
        ALTER TABLE nokey REPLICA IDENTITY FULL;
        INSERT INTO "Hostile ""T"" `x` select" VALUES (1, 'a b', 1, '`'), (2, 'c', 2, '``');
        INSERT INTO evolving VALUES (1, 1), (2, 2);
        INSERT INTO nokey VALUES (1, 'x');
    "#;
    let mut p = Pipeline::new(
        "apply_schema",
        schema,
        r"public\.Hostile.*,public\.evolving,public\.nokey",
    );
    p.source_extra
        .push(("publication.autocreate.mode".into(), "all_tables".into()));
    let my = My::fresh(&format!("apply_schema_{}", std::process::id()));
    let extra = format!(
        "{}{}",
        audit_yaml(&p),
        my.target_yaml("  load_data: false\n")
    );
    let mut capture = p.start_capture_with(&extra);
    p.wait_for_events(5, &mut capture, SNAPSHOT_WAIT);
    let sql = p.sql();
    sql.exec("ALTER TABLE evolving ADD COLUMN b text, ADD COLUMN \"Mixed Case\" numeric(6,1)");
    sql.exec("UPDATE evolving SET b = 'new', \"Mixed Case\" = 12.5 WHERE id = 1");
    sql.exec("INSERT INTO evolving VALUES (3, 3, 'three', -1.5)");
    sql.exec(r#"UPDATE "Hostile ""T"" `x` select" SET "back`tick" = 'changed', "select" = 20 WHERE "select" = 2"#);
    sql.exec("INSERT INTO nokey VALUES (2, 'y')");
    p.wait_for_events(10, &mut capture, STREAM_WAIT);
    assert_eq!(capture.terminate(STOP_WAIT), 0);

    let out = p.db_sync(&["compact", "--once"]);
    assert!(out.status.success(), "{}", text(&out));

    assert_same_rows(
        &sql,
        &my,
        r#""Hostile ""T"" `x` select""#,
        "`Hostile \"T\" ``x`` select`",
        &[(r#""select""#, "`select`")],
        &[
            col("col with space", PG_TEXT, MY, EXACT),
            col("quote\"d", PG_TEXT, MY, EXACT),
            col("back`tick", PG_TEXT, MY, EXACT),
        ],
    );
    assert_same_rows(
        &sql,
        &my,
        "evolving",
        "evolving",
        &[("id", "id")],
        &[
            col("a", PG_TEXT, MY, EXACT),
            col("b", PG_TEXT, MY, EXACT),
            col("Mixed Case", PG_TEXT, MY, Check::Same(Cmp::Decimal)),
        ],
    );
    assert_eq!(column_type(&my, "evolving", "Mixed Case"), "decimal(6,1)");
    // The table without a key (its replica identity FULL, else capture refuses it) is applied
    // row by row, and audited.
    assert_eq!(
        lines(my.rows("SELECT a, b FROM nokey ORDER BY a")),
        lines(sql.rows("SELECT a, b FROM nokey ORDER BY a"))
    );
    let audited = std::fs::read_dir(p.dir.path().join("audit/public.nokey"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(audited > 0, "public.nokey has audit files");
}
