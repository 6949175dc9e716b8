//! Backfill and the compaction lock beside a running daemon: `backfill --truncate` during a
//! steady workload ends equal to the source and never shows readers an empty table; a killed
//! backfill leaves the old table as it was; `/healthz` and SIGTERM work while another process
//! holds `compact.lock`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use db_sync::state::locks;

use crate::metrics::{free_port, get};
use crate::schedule::{count, daemon_config};
use crate::support::target::*;
use crate::support::*;

const WAIT: Duration = Duration::from_secs(120);

/// Waits until `ok`, or panics with the daemon's log.
fn wait_until(what: &str, daemon: &Capture, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < WAIT,
            "{what} never happened; log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs the workload's random changes until `stop`, on a connection of its own.
fn workload(p: &Pipeline, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let (port, db) = (p.port, p.db.clone());
    std::thread::spawn(move || {
        let sql = Sql::connect(port, &db);
        let mut rng = Rng(0x5eed_bacf);
        let mut round = 0;
        while !stop.load(Ordering::SeqCst) {
            round += 1;
            sql.exec(&random_change(&mut rng, round));
            std::thread::sleep(Duration::from_millis(5));
        }
        round
    })
}

/// Counts the target's `table` in a loop until `stop`, as a reader would: the counts seen
/// after the first non-zero one that were 0, and the errors (a missing table).
fn reader(my: &My, table: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<String>> {
    use mysql_async::prelude::Queryable;
    let url = format!("mysql://root@127.0.0.1:{}/{}", my.port, my.db);
    let sql = format!("SELECT COUNT(*) FROM `{table}`");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
            let (mut seen_rows, mut bad) = (false, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                match conn.query_first::<u64, _>(sql.as_str()).await {
                    Ok(Some(0)) if seen_rows => bad.push("0 rows".to_string()),
                    Ok(n) => seen_rows |= n.unwrap_or(0) > 0,
                    Err(e) => bad.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            bad
        })
    })
}

/// Waits until a cycle starts (it asks the capture to seal the journal's active segment) and
/// returns at once: the moment a backfill that lists the audit files before it takes the
/// lock lists them, and the cycle then writes a file it never reads.
fn wait_for_a_cycle_to_start(journal: &Path, daemon: &Capture) {
    let request = journal.join(locks::SEAL_REQUEST);
    let start = Instant::now();
    while !request.exists() {
        assert!(
            start.elapsed() < WAIT,
            "no cycle started; log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn backfill_truncate_beside_the_daemon_ends_equal_to_the_source_and_never_empty() {
    let p = Pipeline::new("bf_live", WORKLOAD_SCHEMA, WORKLOAD_TABLES);
    let my = My::fresh(&format!("bf_live_{}", std::process::id()));
    daemon_config(&p, &my, 50);
    let mut daemon = p.spawn_db_sync(&["run"]);
    wait_until("the snapshot applied", &daemon, || {
        count(&my, "accounts") == 500 && count(&my, "lines") == 200
    });

    // A steady workload of inserts, updates, deletes and key changes, a reader counting the
    // target's rows, and three backfills, each started as a cycle starts.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = workload(&p, stop.clone());
    let reads = reader(&my, "accounts", stop.clone());
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1500));
        wait_for_a_cycle_to_start(&p.journal_dir(), &daemon);
        let out = p.db_sync(&["backfill", "--table", "public.accounts", "--truncate"]);
        assert!(out.status.success(), "backfill: {}", text(&out));
    }
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::SeqCst);
    let rounds = writes.join().unwrap();
    assert!(rounds > 100, "only {rounds} changes");

    // The next cycles catch up: the target equals the source, row for row.
    let sql = p.sql();
    sql.exec("INSERT INTO marker VALUES (1)");
    wait_for_marker(&p, &mut daemon, "public.marker", WAIT);
    wait_until("the marker applied", &daemon, || count(&my, "marker") == 1);
    let bad = reads.join().unwrap();
    assert!(
        bad.is_empty(),
        "a reader saw {} bad counts during the backfills: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert_eq!(daemon.terminate(STOP_WAIT), 0);
    assert_workload_equal(&sql, &my);
    assert_eq!(shadows(&my), 0, "no shadow table left behind");
}

/// Tables a rebuild names (`<table>__dbsync_rebuild`, `<table>__dbsync_replaced`).
fn shadows(my: &My) -> u64 {
    my.value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE '%\\_\\_dbsync\\_%'")
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_killed_backfill_leaves_the_old_table_as_it_was() {
    let p = Pipeline::new(
        "bf_killed",
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, 300) i;",
        "public.items",
    );
    let my = My::fresh(&format!("bf_killed_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml("  batch_rows: 20\n"));
    snapshot(&p, &extra, 300);
    compact(&p);
    my.exec("UPDATE items SET v = 'by hand' WHERE id = 1");
    let rows = || my.rows("SELECT id, v FROM items ORDER BY id");
    let before = rows();

    // Killed after its second chunk of fifteen.
    let out = p.db_sync_env(
        &["backfill", "--table", "public.items", "--truncate"],
        &[("DB_SYNC_FAILPOINT", "apply.after_chunk:2")],
    );
    assert!(!out.status.success(), "the failpoint fired: {}", text(&out));
    assert_eq!(rows(), before, "the old table, exactly");
    assert_eq!(shadows(&my), 1, "the killed backfill's half-built shadow");

    // The next backfill drops what the killed one left and swaps a whole table in.
    let out = run_ok(&p, &["backfill", "--table", "public.items", "--truncate"]);
    assert!(
        out.contains("backfilled public.items into `items`"),
        "{out}"
    );
    assert_eq!(
        rows(),
        p.sql()
            .rows("SELECT id::text, v FROM items ORDER BY items.id")
    );
    assert_eq!(shadows(&my), 0, "no shadow table left behind");
}

/// Two compact jobs: the runtime has two worker threads, and when the wait for the lock was a
/// blocking `flock`, each waiting job took one of them and nothing else ran (with one job
/// the other worker still answered). SIGTERM must end the waits, the lock still held.
#[test]
fn healthz_and_sigterm_work_while_another_process_holds_the_lock() {
    let p = Pipeline::new(
        "bf_lockwait",
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, 100) i;",
        "public.items",
    );
    let my = My::fresh(&format!("bf_lockwait_{}", std::process::id()));
    let jobs = p.dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    for (name, schedule) in [("compact", "*/2 * * * * *"), ("compact_b", "1/2 * * * * *")] {
        std::fs::write(
            jobs.join(format!("{name}.yaml")),
            format!("name: {name}\nschedule: \"{schedule}\"\nkind: compact\n"),
        )
        .unwrap();
    }
    let port = free_port();
    let extra = format!(
        "{}{}jobs_dir: {}\nmetrics:\n  listen: 127.0.0.1:{port}\n",
        audit_yaml(&p),
        my.target_yaml(""),
        jobs.display()
    );
    p.write_config_with(&pg_password(), p.port, &extra);
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    let daemon = p.spawn_db_sync(&["run"]);
    wait_until("/healthz 200 with the snapshot applied", &daemon, || {
        get(&healthz).0 == 200 && count(&my, "items") == 100
    });

    // Another process (this test) holds the lock while both jobs come due.
    let path = p.journal_dir().join(locks::COMPACT_LOCK);
    let mut lock = None;
    wait_until("the lock taken", &daemon, || {
        lock = locks::try_lock(&path).unwrap();
        lock.is_some()
    });
    std::thread::sleep(Duration::from_millis(2500));
    for _ in 0..4 {
        let asked = Instant::now();
        let (code, body) = get(&healthz);
        let took = asked.elapsed();
        assert!(
            code != 0 && took < Duration::from_secs(1),
            "/healthz: {code} {body:?} after {took:?}; log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = daemon.log();
    assert!(
        log.contains("waiting for compact.lock held by another db-sync process"),
        "{log}"
    );
    // SIGTERM stops the waiting jobs and the daemon, the lock still held.
    assert_eq!(daemon.terminate(Duration::from_secs(30)), 0);
    drop(lock);
}
