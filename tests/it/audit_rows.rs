//! What audit rows hold: a new file schema after a schema change, unchanged TOAST values marked,
//! deletes with their before-image, snapshot reads flagged.

use std::collections::BTreeSet;

use crate::support::audit::*;
use crate::support::*;

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
