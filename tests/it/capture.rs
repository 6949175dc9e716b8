//! Capture end to end: snapshot, streaming in commit order, values, stop on SIGTERM.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

const SCHEMA: &str = r#"
CREATE TABLE orders (
  id bigint PRIMARY KEY,
  amount numeric(12,2),
  note text,
  paid boolean,
  placed_at timestamptz,
  day date
);
CREATE TABLE "Line Items" (
  order_id bigint,
  line int,
  qty smallint,
  PRIMARY KEY (order_id, line)
);
CREATE TABLE not_captured (id int PRIMARY KEY, v text);
INSERT INTO orders VALUES
  (1, 12.50, 'first', true, '2026-01-02 03:04:05.123456+00', '2026-01-02'),
  (2, -0.01, 'ünïcödé ✓', false, '1969-12-31 23:59:59.999999+00', '1900-01-01'),
  (3, NULL, NULL, NULL, NULL, NULL);
"#;

fn ops(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["table"].as_str().unwrap().to_string(),
                e["op"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn snapshot_then_streaming_changes_in_commit_order_with_exact_values() {
    let p = Pipeline::new("order", SCHEMA, r#"public.orders,public.Line Items"#);
    let mut capture = p.start_capture();

    // The snapshot: existing rows as `r` events with their values.
    let events = p.wait_for_events(3, &mut capture, Duration::from_secs(90));
    assert_eq!(events.len(), 3);
    for e in &events {
        assert_eq!(e["op"], "r");
        assert_eq!(e["snapshot"], true);
        assert_eq!(e["table"], "public.orders");
    }
    let snap: Vec<&Value> = events.iter().map(|e| &e["after"]).collect();
    assert_eq!(
        *snap[0],
        json!({"id": 1, "amount": "12.50", "note": "first", "paid": true,
               "placed_at": "2026-01-02T03:04:05.123456Z", "day": "2026-01-02"})
    );
    assert_eq!(snap[1]["amount"], "-0.01");
    assert_eq!(snap[1]["note"], "ünïcödé ✓");
    assert_eq!(snap[1]["placed_at"], "1969-12-31T23:59:59.999999Z");
    assert_eq!(snap[1]["day"], "1900-01-01");
    assert_eq!(
        *snap[2],
        json!({"id": 3, "amount": null, "note": null, "paid": null, "placed_at": null, "day": null})
    );

    // Streaming: two interleaved transactions commit in the opposite order they began; a
    // change to an uncaptured table in between is not journaled.
    let a = p.sql();
    let b = p.sql();
    a.exec("BEGIN; INSERT INTO orders VALUES (10, 1.00, 'tx a', true, now(), current_date)");
    b.exec("BEGIN; INSERT INTO \"Line Items\" VALUES (10, 1, 5)");
    a.exec("UPDATE orders SET amount = 99999999.99, note = 'tx a again' WHERE id = 1");
    b.exec("INSERT INTO not_captured VALUES (1, 'x'); COMMIT");
    a.exec("COMMIT");
    a.exec("DELETE FROM orders WHERE id = 2");
    a.exec("UPDATE \"Line Items\" SET line = 2 WHERE order_id = 10"); // key change
    a.exec("INSERT INTO orders SELECT g, g, repeat('x', 10), g % 2 = 0, now(), current_date FROM generate_series(100, 149) g");

    let events = p.wait_for_events(3 + 6 + 50, &mut capture, Duration::from_secs(60));
    assert_eq!(events.len(), 59, "{:#?}", &events[3..]);
    let streamed = &events[3..];
    assert_eq!(
        ops(&streamed[..7]),
        vec![
            ("public.Line Items".into(), "c".into()),
            ("public.orders".into(), "c".into()),
            ("public.orders".into(), "u".into()),
            ("public.orders".into(), "d".into()),
            // A key change arrives as delete of the old key and create of the new one.
            ("public.Line Items".into(), "d".into()),
            ("public.Line Items".into(), "c".into()),
            ("public.orders".into(), "c".into()),
        ],
        "journal order must be commit order: {streamed:#?}"
    );
    assert_eq!(streamed[0]["key"], json!({"order_id": 10, "line": 1}));
    assert_eq!(streamed[2]["after"]["amount"], "99999999.99");
    assert_eq!(streamed[2]["after"]["note"], "tx a again");
    // Changes of one transaction share its id; the delete carries the key in `before`.
    assert_eq!(streamed[1]["tx"], streamed[2]["tx"]);
    assert_ne!(streamed[0]["tx"], streamed[1]["tx"]);
    assert_eq!(streamed[3]["before"]["id"], 2);
    assert_eq!(streamed[3]["after"], Value::Null);
    assert_eq!(
        streamed[5]["after"],
        json!({"order_id": 10, "line": 2, "qty": 5})
    );
    for e in streamed {
        assert_eq!(e["snapshot"], false);
        assert!(e["position"].as_str().unwrap().contains('/'), "an LSN: {e}");
        assert!(e["ts"].as_str().unwrap().ends_with('Z'));
    }
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());

    // The publication holds only the captured tables, and the signalling table (read from
    // the change stream by Debezium for `backfill --resnapshot`, never journaled).
    let published = p.sql().rows(&format!(
        "SELECT tablename FROM pg_publication_tables WHERE pubname = '{}' ORDER BY 1",
        p.slot()
    ));
    assert_eq!(
        published,
        vec![
            vec![Some("Line Items".to_string())],
            vec![Some(format!("dbsync_signal_{}", p.name.to_lowercase()))],
            vec![Some("orders".to_string())]
        ]
    );

    // SIGTERM: the batch in hand finishes and the process exits 0.
    assert_eq!(capture.terminate(Duration::from_secs(60)), 0);

    // `journal dump` prints the same records, in the documented field order.
    let out = p.db_sync(&["journal", "dump"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), events.len());
    assert!(
        lines[0].starts_with(r#"{"seq":1,"table":"public.orders","op":"r","position":"#),
        "{}",
        lines[0]
    );
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed, events);
    let out = p.db_sync(&["journal", "dump", "--from", "5", "--limit", "2"]);
    let lines: Vec<Value> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines
            .iter()
            .map(|l| l["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![5, 6]
    );

    // A restart resumes from the stored offsets: no second snapshot, no repeats.
    let mut capture = p.start_capture();
    p.sql()
        .exec("INSERT INTO orders VALUES (200, 2.00, 'after restart', true, now(), current_date)");
    let after = p.wait_for_events(events.len() + 1, &mut capture, Duration::from_secs(60));
    assert_eq!(
        after.len(),
        events.len() + 1,
        "{:#?}",
        &after[events.len()..]
    );
    assert_eq!(after.last().unwrap()["after"]["id"], 200);
    assert_eq!(capture.terminate(Duration::from_secs(60)), 0);
}

#[test]
fn heartbeat_advances_the_slot_while_only_uncaptured_tables_change() {
    let mut p = Pipeline::new(
        "heartbeat",
        "CREATE TABLE quiet (id int PRIMARY KEY); CREATE TABLE busy (id serial PRIMARY KEY, v text); INSERT INTO quiet VALUES (1);",
        "public.quiet",
    );
    p.source_extra
        .push(("heartbeat.interval.ms".into(), "500".into()));
    let mut capture = p.start_capture();
    p.wait_for_events(1, &mut capture, Duration::from_secs(90));

    let sql = p.sql();
    let slot = p.slot();
    // Only the uncaptured table changes: WAL grows, no captured event arrives.
    sql.exec("INSERT INTO busy (v) SELECT repeat('x', 100) FROM generate_series(1, 20000)");
    let written = sql.value("SELECT pg_current_wal_lsn()::text").unwrap();
    let start = std::time::Instant::now();
    loop {
        let advanced = sql.value(&format!(
            "SELECT (confirmed_flush_lsn >= '{written}'::pg_lsn)::text FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ));
        if advanced.as_deref() == Some("true") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(45),
            "slot {slot} did not advance past {written}: retained WAL would grow without bound; log:\n{}",
            capture.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        p.events().len(),
        1,
        "heartbeats are not journaled as changes"
    );
    assert_eq!(capture.terminate(Duration::from_secs(60)), 0);
}
