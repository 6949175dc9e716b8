//! No silent divergence, part 1: the changes real PostgreSQL databases make every week reach
//! the audit files and the target as the source made them. A key change with an unchanged
//! TOASTed value, TRUNCATE (in one window, across windows, across a crash), ADD COLUMN with a
//! default, a widened type and a narrowing one, a partitioned table, and timestamps beyond
//! year 9999 and before year 1; unique indexes the target keeps of its own, and a snapshot
//! filtered by an override that must not sweep.

use crate::support::audit::{audit_dir, duck, duck_rows, output_text, scan, walk};
use crate::support::target::*;
use crate::support::*;

/// A value PostgreSQL stores out of line: 150 kB of incompressible text.
const BIG: &str = "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 4700))";

#[test]
fn a_key_change_keeps_its_unchanged_toasted_value_everywhere() {
    let p = Pipeline::new(
        "keytoast",
        &format!(
            "CREATE TABLE docs (id int PRIMARY KEY, n int, body text);
             ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
             INSERT INTO docs SELECT i, 0, {BIG} FROM generate_series(1, 3) i;
             {MARKER}"
        ),
        "public.docs,public.marker",
    );
    let my = My::fresh(&format!("keytoast_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml(""));
    snapshot(&p, &extra, 3);
    compact(&p);
    let sql = p.sql();
    let before = source_now(&sql);
    let rows_before = lines(sql.rows("SELECT id, md5(body) FROM docs ORDER BY id"));

    // Row 1 is only in the target when its key changes (the value must come from there); row 2
    // changes twice in one window, the second time from its new key (a chain of moves); row 4
    // is inserted and re-keyed in the same window (the value comes from the window).
    stream(
        &p,
        &[
            "UPDATE docs SET id = 99 WHERE id = 1",
            "UPDATE docs SET n = 5 WHERE id = 2",
            "UPDATE docs SET id = 200 WHERE id = 2",
            "UPDATE docs SET id = 201, n = 6 WHERE id = 200",
            &format!("INSERT INTO docs VALUES (4, 0, {BIG})"),
            "UPDATE docs SET id = 40 WHERE id = 4",
        ],
    );
    let events = p.events();
    let creates: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["table"] == "public.docs" && e["old_key"].is_object())
        .collect();
    assert_eq!(
        creates.len(),
        4,
        "the creates of key changes name their old keys"
    );
    assert!(
        creates
            .iter()
            .all(|e| e["after"]["body"] == "__debezium_unavailable_value"),
        "the workload must send the body as unchanged TOAST: {creates:#?}"
    );
    compact(&p);

    let source = lines(sql.rows("SELECT id, md5(body) FROM docs ORDER BY id"));
    assert_eq!(source.len(), 4);
    let target = lines(my.rows("SELECT id, MD5(body) FROM docs ORDER BY id"));
    assert_eq!(
        target, source,
        "the target rows carry their bodies to the new keys"
    );
    assert_eq!(
        query_csv(&p, "SELECT id, md5(body) FROM public.docs ORDER BY id", &[]),
        source,
        "the state view follows the value to the new key"
    );
    assert_eq!(
        query_csv(
            &p,
            "SELECT id, md5(body) FROM public.docs ORDER BY id",
            &["--as-of", &before]
        ),
        rows_before,
        "--as-of before the key changes: the old keys, with their bodies"
    );

    // Rebuilt from the audit files alone.
    let out = run_ok(&p, &["backfill", "--table", "public.docs", "--truncate"]);
    assert!(out.contains("backfilled public.docs"), "{out}");
    let target = lines(my.rows("SELECT id, MD5(body) FROM docs ORDER BY id"));
    assert_eq!(target, source, "after backfill");
}

#[test]
fn a_truncate_empties_the_target_in_order_exactly_once() {
    let p = Pipeline::new(
        "truncate",
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 5) i;
             {MARKER}"
        ),
        "public.t,public.marker",
    );
    let my = My::fresh(&format!("truncate_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml("  batch_rows: 2\n"));
    snapshot(&p, &extra, 5);
    compact(&p);
    let ids = |my: &My| -> Vec<String> {
        my.rows("SELECT id FROM t ORDER BY id")
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect()
    };
    assert_eq!(ids(&my).len(), 5);

    // One window: a row before the truncate is gone, the rows after it stay.
    stream(
        &p,
        &[
            "INSERT INTO t VALUES (6, 'six')",
            "TRUNCATE t",
            "INSERT INTO t VALUES (7, 'seven'), (8, 'eight')",
        ],
    );
    assert!(
        p.events().iter().any(|e| e["op"] == "t"),
        "the truncate is journaled"
    );
    compact(&p);
    assert_eq!(ids(&my), ["7", "8"]);
    let conn = duck();
    let ops = duck_rows(
        &conn,
        &format!(
            "SELECT _cdc_op, count(*) FROM {} GROUP BY 1 ORDER BY 1",
            scan(&audit_dir(&p), "public.t")
        ),
    );
    assert!(
        ops.contains(&vec![Some("t".into()), Some("1".into())]),
        "one truncate row in the audit files: {ops:?}"
    );
    assert_eq!(
        query_csv(&p, "SELECT id FROM public.t ORDER BY id", &[]),
        ["7", "8"],
        "the state view starts after the truncate"
    );

    // Across windows, with a crash between chunks: the truncate (chunk 0) and two chunks of
    // rows commit, then the process dies; the re-run finishes, truncating nothing it should not.
    stream(&p, &["INSERT INTO t VALUES (9, 'nine')"]);
    compact(&p);
    assert_eq!(ids(&my), ["7", "8", "9"]);
    stream(
        &p,
        &[
            "TRUNCATE t",
            "INSERT INTO t SELECT i, 'w' || i FROM generate_series(10, 20) i",
        ],
    );
    let out = p.db_sync_env(
        &["compact", "--once"],
        &[("DB_SYNC_FAILPOINT", "apply.after_chunk:3")],
    );
    assert!(
        !out.status.success(),
        "the failpoint must stop it: {}",
        text(&out)
    );
    compact(&p);
    let want: Vec<String> = (10..=20).map(|i| i.to_string()).collect();
    assert_eq!(ids(&my), want);
    assert_eq!(
        lines(sql_rows(&p, "SELECT id, v FROM t ORDER BY id")),
        lines(my.rows("SELECT id, v FROM t ORDER BY id"))
    );

    // `target.truncate: ignore` leaves the target as it is; the truncate is still audited.
    p.write_config_with(
        &pg_password(),
        p.port,
        &format!(
            "{}{}",
            audit_yaml(&p),
            my.target_yaml("  batch_rows: 2\n  truncate: ignore\n")
        ),
    );
    stream(&p, &["TRUNCATE t", "INSERT INTO t VALUES (30, 'x')"]);
    compact(&p);
    assert_eq!(ids(&my).len(), 12, "11 rows kept and the new one");
}

fn sql_rows(p: &Pipeline, q: &str) -> Vec<Vec<Option<String>>> {
    p.sql().rows(q)
}

#[test]
fn add_column_with_a_default_fills_existing_target_rows() {
    let p = Pipeline::new(
        "adddefault",
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 3) i;
             {MARKER}"
        ),
        "public.t,public.marker",
    );
    let my = My::fresh(&format!("adddefault_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml(""));
    snapshot(&p, &extra, 3);
    compact(&p);
    // PostgreSQL fills rows 1..3 without writing them to the WAL: only the default says so.
    stream(
        &p,
        &[
            "ALTER TABLE t ADD COLUMN n int DEFAULT 7, ADD COLUMN s text DEFAULT 'it''s here', \
             ADD COLUMN d date DEFAULT '2024-02-29', ADD COLUMN amount numeric(8,2) DEFAULT 12.50",
            "INSERT INTO t (id, v) VALUES (4, 'four')",
        ],
    );
    compact(&p);
    let q = "SELECT id, v, n, s, d, amount FROM t ORDER BY id";
    let source = lines(
        p.sql()
            .rows("SELECT id, v, n, s, to_char(d, 'YYYY-MM-DD'), amount FROM t ORDER BY id"),
    );
    assert_eq!(source.len(), 4);
    assert_eq!(lines(my.rows(q)), source, "existing rows took the defaults");
}

#[test]
fn a_widened_type_is_followed_and_a_narrowing_one_stops_with_the_statement() {
    let p = Pipeline::new(
        "widen",
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY, n int, s varchar(10), r real);
             INSERT INTO t VALUES (1, 1, 'short', 1.5), (2, 2, 'x', 2.5);
             {MARKER}"
        ),
        "public.t,public.marker",
    );
    let my = My::fresh(&format!("widen_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml(""));
    snapshot(&p, &extra, 2);
    compact(&p);
    let column_type = |c: &str| {
        my.value(&format!(
            "SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 't' AND COLUMN_NAME = '{c}'"
        ))
        .unwrap()
    };
    assert!(column_type("n").starts_with("int"), "{}", column_type("n"));

    stream(
        &p,
        &[
            "ALTER TABLE t ALTER COLUMN n TYPE bigint, ALTER COLUMN s TYPE varchar(100), \
             ALTER COLUMN r TYPE double precision",
            "UPDATE t SET n = 3000000000, s = repeat('long', 20), r = 0.1 WHERE id = 1",
        ],
    );
    compact(&p);
    assert!(
        column_type("n").starts_with("bigint"),
        "{}",
        column_type("n")
    );
    assert_eq!(column_type("s"), "varchar(100)");
    assert_eq!(column_type("r"), "double");
    let q = "SELECT id, n, s FROM t ORDER BY id";
    assert_eq!(lines(my.rows(q)), lines(p.sql().rows(q)));
    assert_eq!(
        my.value("SELECT r FROM t WHERE id = 1").as_deref(),
        Some("0.1")
    );
    // The audit files start a new file schema: the old files keep int32, the new ones int64.
    let conn = duck();
    let mut types = std::collections::BTreeSet::new();
    for f in walk(&audit_dir(&p).join("public.t")) {
        let t = duck_rows(
            &conn,
            &format!(
                "SELECT typeof(n) FROM read_parquet('{}') LIMIT 1",
                f.display()
            ),
        );
        types.insert(t[0][0].clone().unwrap());
    }
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        ["BIGINT", "INTEGER"],
        "one file schema before the change, one after"
    );

    // text → int cannot be followed without loss: one line with the statement to run.
    stream(
        &p,
        &[
            "ALTER TABLE t ALTER COLUMN s TYPE int USING length(s)",
            "UPDATE t SET s = 7 WHERE id = 2",
        ],
    );
    let out = p.db_sync(&["compact", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let line = last_stderr_line(&out);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{stderr}"
    );
    for part in [
        "public.t",
        "`s`",
        "VARCHAR(100)",
        "INT",
        "ALTER TABLE `t` MODIFY COLUMN `s` INT NULL",
    ] {
        assert!(line.contains(part), "names {part}: {line}");
    }
    // What a user does: convert the values as the source did, then run the statement.
    my.exec("UPDATE `t` SET `s` = CHAR_LENGTH(`s`)");
    my.exec("ALTER TABLE `t` MODIFY COLUMN `s` INT NULL");
    compact(&p);
    assert_eq!(lines(my.rows(q)), lines(p.sql().rows(q)));
}

#[test]
fn a_partitioned_table_is_one_table_with_every_partition_present_and_future() {
    let p = Pipeline::new(
        "partitioned",
        &format!(
            "CREATE TABLE m (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
             CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu');
             CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us');
             INSERT INTO m SELECT i, CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END, 'v' || i FROM generate_series(1, 6) i;
             {MARKER}"
        ),
        "public.m,public.marker",
    );
    let my = My::fresh(&format!("partitioned_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml(""));
    snapshot(&p, &extra, 6);
    stream(
        &p,
        &[
            "INSERT INTO m VALUES (7, 'eu', 'seven'), (8, 'us', 'eight')",
            "UPDATE m SET v = 'changed' WHERE id IN (1, 2)",
            "DELETE FROM m WHERE id = 3",
            "CREATE TABLE m_asia PARTITION OF m FOR VALUES IN ('asia')",
            "INSERT INTO m VALUES (9, 'asia', 'nine')",
        ],
    );
    let tables: std::collections::BTreeSet<String> = p
        .events()
        .iter()
        .map(|e| e["table"].as_str().unwrap().to_string())
        .collect();
    assert!(
        tables.iter().all(|t| !t.starts_with("public.m_")),
        "changes arrive under the parent's name: {tables:?}"
    );
    compact(&p);
    let dirs: Vec<String> = std::fs::read_dir(audit_dir(&p))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n == "public.m" || n.starts_with("public.m_"))
        .collect();
    assert_eq!(dirs, ["public.m"], "one audit table");
    let q = "SELECT id, region, v FROM m ORDER BY id";
    let source = lines(p.sql().rows(q));
    assert_eq!(source.len(), 8);
    assert_eq!(lines(my.rows(q)), source);
    assert_eq!(
        query_csv(&p, "SELECT id, region, v FROM public.m ORDER BY id", &[]),
        source
    );
}

#[test]
fn timestamps_beyond_the_targets_range_are_audited_exactly_and_quarantined() {
    let p = Pipeline::new(
        "farfuture",
        &format!(
            "CREATE TABLE w (id int PRIMARY KEY, tz timestamptz, ts timestamp, d date);
             INSERT INTO w VALUES
               (1, '10000-01-01 00:00:00+00', '10000-06-01 12:00:00', '10000-12-31'),
               (3, '2026-01-01 00:00:00+00', '2026-01-01 00:00:00', '2026-01-01'),
               (6, '0044-03-15 12:00:00+00 BC', '0044-03-15 12:00:00 BC', '0044-03-15 BC');
             {MARKER}"
        ),
        "public.w,public.marker",
    );
    let my = My::fresh(&format!("farfuture_{}", std::process::id()));
    let extra = format!(
        "{}{}",
        audit_yaml(&p),
        my.target_yaml("  on_reject: quarantine\n")
    );
    snapshot(&p, &extra, 3);
    stream(
        &p,
        &[
            // Streamed as well as in the snapshot (row 6): the loader reads the era from
            // binary COPY; Debezium's own snapshot would lose it (README, known limits).
            "INSERT INTO w VALUES (2, '0044-03-15 12:00:00+00 BC', '0044-03-15 12:00:00 BC', '0044-03-15 BC')",
            "INSERT INTO w VALUES (4, '12345-05-05 05:05:05.123456+00', NULL, NULL)",
            "INSERT INTO w VALUES (5, '2026-05-05 05:05:05+00', '2026-05-05 05:05:05', '2026-05-05')",
        ],
    );
    let out = p.db_sync(&["compact", "--once"]);
    assert!(out.status.success(), "{}", text(&out));

    // Audit files: every value exact (microseconds since the epoch, days), as PostgreSQL has it.
    let conn = duck();
    let audit = lines(duck_rows(
        &conn,
        &format!(
            "SELECT id, epoch_us(tz), epoch_us(ts), d - DATE '1970-01-01' FROM {} ORDER BY id",
            scan(&audit_dir(&p), "public.w")
        ),
    ));
    let source = lines(p.sql().rows(
        "SELECT id, (extract(epoch FROM tz) * 1000000)::bigint, \
         (extract(epoch FROM ts) * 1000000)::bigint, d - date '1970-01-01' FROM w ORDER BY id",
    ));
    assert_eq!(audit, source);

    // The target: rows 3 and 5 hold; 1, 2, 4 and 6 are quarantined.
    let ids: Vec<String> = lines(my.rows("SELECT id FROM w ORDER BY id"));
    assert_eq!(ids, ["3", "5"]);
    let rejected = lines(my.rows(
        "SELECT key_text, column_name FROM _db_sync_rejected WHERE table_name = 'public.w' ORDER BY key_text",
    ));
    assert_eq!(rejected.len(), 4, "{rejected:?}");
    assert!(rejected[0].starts_with("id=1,"), "{rejected:?}");
    let value = my
        .value("SELECT value_text FROM _db_sync_rejected WHERE key_text = 'id=4'")
        .unwrap();
    assert!(
        value.contains("12345"),
        "the value is kept as text: {value}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&run_ok(&p, &["status", "--json"])).unwrap();
    assert_eq!(status["rejected_rows"], 4, "{status:#}");

    // A later change the target can hold replaces the rejected one.
    stream(
        &p,
        &["UPDATE w SET tz = '2030-01-01 00:00:00+00', ts = NULL, d = NULL WHERE id = 4"],
    );
    compact(&p);
    assert_eq!(
        lines(my.rows("SELECT id FROM w ORDER BY id")),
        ["3", "4", "5"]
    );
    assert_eq!(
        my.value("SELECT COUNT(*) FROM _db_sync_rejected WHERE key_text = 'id=4'")
            .as_deref(),
        Some("0")
    );
}

#[test]
fn unique_indexes_on_the_target_never_swallow_a_row_and_refuse_what_they_cannot_hold() {
    let p = Pipeline::new(
        "uniques",
        &format!(
            "CREATE TABLE people (id int PRIMARY KEY, email text NOT NULL UNIQUE, nick text, \
               body text);
             ALTER TABLE people ALTER COLUMN body SET STORAGE EXTERNAL;
             INSERT INTO people SELECT i, 'u' || i || '@x', 'n' || i, {BIG}
               FROM generate_series(1, 4) i;
             {MARKER}"
        ),
        "public.people,public.marker",
    );
    let my = My::fresh(&format!("uniques_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml(""));
    snapshot(&p, &extra, 4);
    compact(&p);
    // The user's own index on the target, as the source has it, and a generated column of
    // theirs (kept by the server, never written back).
    my.exec("ALTER TABLE people ADD UNIQUE INDEX email_u (email(64))");
    my.exec("ALTER TABLE people ADD COLUMN email_len INT AS (CHAR_LENGTH(email)) VIRTUAL");
    let q = "SELECT id, email, nick, md5(body) FROM people ORDER BY id";
    let target_q = "SELECT id, email, nick, MD5(body) FROM people ORDER BY id";

    // Rows 1 and 2 trade emails in one transaction, their bodies unchanged (sent as unchanged
    // TOAST: an upsert keeps the target's body). Row 6 comes first so that the window's
    // whole-row group (6, 5) applies before row 4's: row 5 takes row 4's email, which row 4
    // gives up in the same window. REPLACE would delete row 4 for it and row 4's upsert then
    // insert it without its body; ON DUPLICATE KEY UPDATE would stop on the swap.
    stream(
        &p,
        &[
            "INSERT INTO people VALUES (6, 'u6@x', 'n6', 'six')",
            "BEGIN; UPDATE people SET email = 'swap' WHERE id = 1; \
             UPDATE people SET email = 'u1@x' WHERE id = 2; \
             UPDATE people SET email = 'u2@x' WHERE id = 1; COMMIT",
            "UPDATE people SET email = 'old4@x' WHERE id = 4",
            "INSERT INTO people VALUES (5, 'u4@x', 'n5', 'five')",
        ],
    );
    compact(&p);
    let source = lines(p.sql().rows(q));
    assert_eq!(source.len(), 6);
    assert_eq!(
        lines(my.rows(target_q)),
        source,
        "rows that trade unique values keep their bodies and end as at the source"
    );
    assert_eq!(
        my.value("SELECT SUM(email_len = CHAR_LENGTH(email)) FROM people")
            .as_deref(),
        Some("6")
    );

    // An index the source does not have: the target folds case, the source does not. The
    // row that meets it is refused by name, and no row is deleted for it.
    my.exec("ALTER TABLE people MODIFY nick LONGTEXT COLLATE utf8mb4_general_ci");
    my.exec("ALTER TABLE people ADD UNIQUE INDEX nick_ci (nick(32))");
    stream(
        &p,
        &["INSERT INTO people VALUES (7, 'u7@x', 'N1', 'seven')"],
    );
    let out = p.db_sync(&["compact", "--once"]);
    let said = output_text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("nick_ci") && said.contains("unique index") && said.contains("id=7"),
        "one line names the index, the row and the fix: {said}"
    );
    assert_eq!(
        lines(my.rows(target_q)),
        source,
        "row 1 still there, row 7 not written"
    );
    // The table is held until the index is gone and a backfill rebuilds it.
    my.exec("ALTER TABLE people DROP INDEX nick_ci");
    run_ok(&p, &["backfill", "--table", "public.people", "--truncate"]);
    compact(&p);
    assert_eq!(lines(my.rows(target_q)), lines(p.sql().rows(q)));
}

#[test]
fn a_filtered_snapshot_never_sweeps_the_rows_it_leaves_out() {
    let mut p = Pipeline::new(
        "filtered",
        &format!(
            "CREATE TABLE f (id int PRIMARY KEY, v text);
             INSERT INTO f SELECT i, 'v' || i FROM generate_series(1, 4) i;
             {MARKER}"
        ),
        "public.f,public.marker",
    );
    p.source_extra.push((
        "snapshot.select.statement.overrides".into(),
        "public.f".into(),
    ));
    p.source_extra.push((
        "snapshot.select.statement.overrides.public.f".into(),
        "\"SELECT * FROM public.f WHERE id <= 2\"".into(),
    ));
    let my = My::fresh(&format!("filtered_{}", std::process::id()));
    // Rows the target holds already (a load of its own), which the filter leaves out.
    my.exec("CREATE TABLE f (id INT NOT NULL PRIMARY KEY, v LONGTEXT NULL)");
    my.exec("INSERT INTO f VALUES (3, 'v3'), (4, 'v4'), (2, 'stale')");
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml(""));
    snapshot(&p, &extra, 2);
    compact(&p);
    assert_eq!(
        lines(my.rows("SELECT id, v FROM f ORDER BY id")),
        ["1,v1", "2,v2", "3,v3", "4,v4"],
        "the snapshot's rows applied, the rows outside its filter kept"
    );
}
