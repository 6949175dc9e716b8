//! Crash safety: `kill -9` capture again and again while a writer commits; afterwards the
//! journal holds every committed change, each streaming change exactly once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

#[test]
fn kill_9_during_streaming_loses_nothing_and_doubles_nothing() {
    let p = Pipeline::new(
        "crash",
        "CREATE TABLE t (id bigint PRIMARY KEY, v int NOT NULL, pad text);
         INSERT INTO t SELECT g, 0, 'seed' FROM generate_series(1, 10) g;",
        "public.t",
    );
    let mut capture = p.start_capture();
    p.wait_for_events(10, &mut capture, Duration::from_secs(90));

    // Writer: each transaction inserts row k and updates row k-1 (v = 1), so every committed
    // transaction leaves two streaming changes that are easy to account for.
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicI64::new(10));
    let writer = {
        let (stop, committed) = (Arc::clone(&stop), Arc::clone(&committed));
        let (port, db) = (p.port, p.db.clone());
        std::thread::spawn(move || {
            let sql = Sql::connect(port, &db);
            let mut k = 11i64;
            while !stop.load(Ordering::SeqCst) {
                sql.exec(&format!(
                    "BEGIN; INSERT INTO t VALUES ({k}, 0, repeat('p', {pad})); UPDATE t SET v = 1 WHERE id = {prev}; COMMIT;",
                    pad = k % 200,
                    prev = k - 1
                ));
                committed.store(k, Ordering::SeqCst);
                k += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    // Kill at varied moments: during start-up, mid-stream, right after a batch.
    for wait_ms in [2500u64, 700, 4000, 1500, 3000] {
        std::thread::sleep(Duration::from_millis(wait_ms));
        capture.kill9();
        capture = p.start_capture();
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    let last = committed.load(Ordering::SeqCst);
    assert!(last > 100, "the writer committed only {last} rows");

    // Every committed change: 10 snapshot rows, then per k in 11..=last a create and, for
    // k-1 >= 11... every k-1 >= 10, an update.
    let expected = 10 + 2 * (last - 10) as usize;
    let events = p.wait_for_events(expected, &mut capture, Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(2)); // let any stray duplicate arrive
    let events = {
        let more = p.events();
        assert!(more.len() >= events.len());
        more
    };
    assert_eq!(capture.terminate(Duration::from_secs(60)), 0);

    let mut creates: HashMap<i64, usize> = HashMap::new();
    let mut updates: HashMap<i64, usize> = HashMap::new();
    for e in &events {
        let id = e["key"]["id"].as_i64().unwrap();
        match e["op"].as_str().unwrap() {
            "c" => *creates.entry(id).or_default() += 1,
            "u" => {
                assert_eq!(e["after"]["v"], 1);
                *updates.entry(id).or_default() += 1
            }
            "r" => assert!(id <= 10, "only seed rows are snapshot reads: {e}"),
            op => panic!("unexpected op {op}: {e}"),
        }
    }
    for k in 11..=last {
        assert_eq!(
            creates.get(&k),
            Some(&1),
            "create of row {k} must be journaled exactly once"
        );
        assert_eq!(
            updates.get(&(k - 1)),
            Some(&1),
            "update of row {} must be journaled exactly once",
            k - 1
        );
    }
    assert_eq!(
        creates.len() as i64,
        last - 10,
        "no creates beyond what was committed"
    );
    assert_eq!(events.len(), expected, "nothing doubled");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
}
