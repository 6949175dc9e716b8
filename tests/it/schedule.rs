//! The daemon (`db-sync run`): capture plus `jobs/*.yaml` on their cron schedules, a clean
//! stop mid-cycle, no overlap with a `compact --once` from system cron, and bad job files.

use std::time::{Duration, Instant};

use crate::support::target::{
    assert_workload_equal, audit_yaml, wait_for_marker, WORKLOAD_SCHEMA, WORKLOAD_TABLES,
};
use crate::support::*;

const WAIT: Duration = Duration::from_secs(120);

/// Writes `jobs/compact.yaml` (every 2 s) and the config with audit, target and `jobs_dir`.
pub fn daemon_config(p: &Pipeline, my: &My, batch_rows: usize) {
    let jobs = p.dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(
        jobs.join("compact.yaml"),
        "name: compact\nschedule: \"*/2 * * * * *\"\nkind: compact\n",
    )
    .unwrap();
    let extra = format!(
        "{}{}jobs_dir: {}\n",
        audit_yaml(p),
        my.target_yaml(&format!("  batch_rows: {batch_rows}\n")),
        jobs.display()
    );
    p.write_config_with(&pg_password(), p.port, &extra);
}

/// Waits until `table` in the target holds `want` rows (a liveness bound, not a speed claim).
fn wait_for_rows(my: &My, table: &str, want: u64, daemon: &Capture) {
    let start = Instant::now();
    while count(my, table) != want {
        assert!(
            start.elapsed() < WAIT,
            "{table} never held {want} rows; log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Rows of `table` in the target; 0 before the table exists.
pub fn count(my: &My, table: &str) -> u64 {
    my.value(&format!("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{table}'"))
        .filter(|n| n == "1")
        .and_then(|_| my.value(&format!("SELECT COUNT(*) FROM `{table}`")))
        .map_or(0, |n| n.parse().unwrap())
}

#[test]
fn the_daemon_compacts_on_its_schedule_and_stops_cleanly_mid_cycle() {
    let p = Pipeline::new("daemon", WORKLOAD_SCHEMA, WORKLOAD_TABLES);
    let my = My::fresh(&format!("daemon_{}", std::process::id()));
    daemon_config(&p, &my, 1);
    let sql = p.sql();

    // A long first cycle: the snapshot and 30,000 rows, applied one row per chunk.
    let mut capture = p.spawn_db_sync(&["capture"]);
    p.wait_for_events(700, &mut capture, WAIT);
    sql.exec("INSERT INTO lines SELECT 20000 + i / 10, i % 10, i, 'bulk' FROM generate_series(0, 29999) i");
    sql.exec("INSERT INTO docs VALUES (gen_random_uuid(), '{}', '\\x00', NULL)");
    sql.exec("INSERT INTO marker VALUES (1)");
    wait_for_marker(&p, &mut capture, "public.marker", WAIT);
    assert_eq!(capture.terminate(WAIT), 0);

    // The daemon applies it on its schedule; a tick during the cycle is skipped, and SIGTERM
    // stops it between chunks with exit 0.
    let daemon = p.spawn_db_sync(&["run"]);
    let start = Instant::now();
    while count(&my, "lines") <= 300 {
        assert!(
            start.elapsed() < WAIT,
            "the scheduled cycle never started to apply; log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        count(&my, "lines") < 30_200,
        "the cycle ended before the signal; log:\n{}",
        daemon.log()
    );
    let log_path = daemon.log_path.clone();
    let code = daemon.terminate(WAIT);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("skipping this tick"), "{log}");
    assert!(log.contains("stopping between chunks"), "{log}");

    // The next start finishes the window, and new changes follow through capture and the
    // job: nothing lost, nothing doubled.
    let daemon = p.spawn_db_sync(&["run"]);
    sql.exec("INSERT INTO accounts VALUES (424242, 1.00, 'fresh', now())");
    sql.exec("INSERT INTO marker VALUES (2)");
    wait_for_rows(&my, "marker", 2, &daemon);
    assert_eq!(daemon.terminate(WAIT), 0);
    assert_workload_equal(&sql, &my);

    // `status` shows the job's last run.
    let status: serde_json::Value =
        serde_json::from_slice(&p.db_sync(&["status", "--json"]).stdout).expect("status JSON");
    let jobs = status["jobs"].as_array().expect("jobs in status");
    assert_eq!(jobs.len(), 1, "{status:#}");
    assert_eq!(jobs[0]["name"], "compact");
    assert!(jobs[0]["seconds"].as_f64().is_some(), "{status:#}");
    let result = jobs[0]["result"].as_str().unwrap();
    assert!(
        ["ok", "nothing new", "stopped"].contains(&result),
        "{status:#}"
    );
    // And the replication slot capture uses: inactive now, with the WAL it retains.
    assert_eq!(status["source_slot"]["slot"], p.slot(), "{status:#}");
    assert_eq!(status["source_slot"]["active"], false, "{status:#}");
    assert!(
        status["source_slot"]["retained_wal_bytes"]
            .as_i64()
            .is_some(),
        "{status:#}"
    );
}

#[test]
fn a_compact_from_system_cron_never_overlaps_another() {
    let p = Pipeline::new("overlap", WORKLOAD_SCHEMA, WORKLOAD_TABLES);
    let my = My::fresh(&format!("overlap_{}", std::process::id()));
    daemon_config(&p, &my, 20);
    let mut capture = p.spawn_db_sync(&["capture"]);
    p.wait_for_events(700, &mut capture, WAIT);
    let sql = p.sql();
    sql.exec("INSERT INTO lines SELECT 30000 + i / 10, i % 10, i, 'bulk' FROM generate_series(0, 39999) i");
    sql.exec("INSERT INTO docs VALUES (gen_random_uuid(), '{}', '\\x00', NULL)");
    sql.exec("INSERT INTO marker VALUES (1)");
    wait_for_marker(&p, &mut capture, "public.marker", WAIT);
    assert_eq!(capture.terminate(WAIT), 0);

    // Two cycles at once: the second waits for the first's lock, then finds the work done.
    let mut first = p.spawn_db_sync(&["compact", "--once"]);
    std::thread::sleep(Duration::from_millis(300));
    let mut second = p.spawn_db_sync(&["compact", "--once"]);
    assert_eq!(first.wait(WAIT), 0, "{}", first.log());
    assert_eq!(second.wait(WAIT), 0, "{}", second.log());
    let logs = format!("{}{}", first.log(), second.log());
    assert!(
        logs.contains("waiting for compact.lock held by another db-sync process"),
        "{logs}"
    );
    assert_workload_equal(&sql, &my);
}

#[test]
fn bad_job_files_are_named_with_their_key_and_exit_2() {
    let p = Pipeline::new(
        "badjobs",
        "CREATE TABLE t (id int PRIMARY KEY);",
        "public.t",
    );
    let jobs = p.dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let extra = format!("jobs_dir: {}\n", jobs.display());
    p.write_config_with(&pg_password(), p.port, &extra);
    for (body, want) in [
        (
            "name: c\nschedule: \"every minute\"\nkind: compact\n",
            "`schedule` \"every minute\" is not a cron expression with seconds",
        ),
        (
            "name: c\nschedule: \"0 * * * * *\"\nkind: vacuum\n",
            "`kind` unknown variant `vacuum`, expected `compact`",
        ),
    ] {
        std::fs::write(jobs.join("c.yaml"), body).unwrap();
        let out = p.db_sync(&["run"]);
        assert_eq!(out.status.code(), Some(2), "{body}");
        let line = last_stderr_line(&out);
        assert!(line.contains("c.yaml") && line.contains(want), "{line}");
    }
}
