//! Audit files hold every PostgreSQL type of the type map ([`db_sync::types#the-type-map`])
//! exactly: each value read back with DuckDB equals the source value, type by type.

use std::collections::BTreeMap;

use crate::support::audit::*;
use crate::support::types::*;
use crate::support::*;

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
            // The old key of a key change's create half (null elsewhere).
            ("_cdc_old_key", &["STRUCT(id INTEGER)"]),
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
