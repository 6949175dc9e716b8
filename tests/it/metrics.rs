//! `db-sync run` serves `/metrics` and `/healthz` on `metrics.listen`: scraped with curl during
//! a workload, the counters equal the journal and the target; `/healthz` turns 503 with a
//! reason while the target is unreachable and back to 200 when it returns, and while a table
//! is held (the target refused a row of it) until a backfill ends the hold.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::schedule::count;
use crate::support::target::*;
use crate::support::*;

const WAIT: Duration = Duration::from_secs(180);

/// (HTTP status, body) of `url`, through curl.
pub fn get(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "20", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The samples of a Prometheus text page: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(what: &str, daemon: &Capture, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < WAIT,
            "{what} never happened; log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn metrics_match_the_journal_and_the_target_and_healthz_follows_the_target() {
    let p = Pipeline::new(
        "metrics",
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, 100) i;",
        "public.items",
    );
    let my = My::fresh(&format!("metrics_{}", std::process::id()));
    let proxy = Proxy::start(my.port);
    let jobs = p.dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(
        jobs.join("compact.yaml"),
        "name: compact\nschedule: \"*/2 * * * * *\"\nkind: compact\n",
    )
    .unwrap();
    let port = free_port();
    let extra = format!(
        "{}{}jobs_dir: {}\nmetrics:\n  listen: 127.0.0.1:{port}\n",
        audit_yaml(&p),
        my.target_yaml_on(proxy.port, ""),
        jobs.display()
    );
    p.write_config_with(&pg_password(), p.port, &extra);
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let healthz = format!("http://127.0.0.1:{port}/healthz");

    let daemon = p.spawn_db_sync(&["run"]);
    wait_until("/healthz 200 with the snapshot applied", &daemon, || {
        get(&healthz).0 == 200 && count(&my, "items") == 100
    });

    // A workload: 50 inserts, 20 updates, 10 deletes.
    let sql = p.sql();
    sql.exec("INSERT INTO items SELECT i, 'new' FROM generate_series(101, 150) i");
    sql.exec("UPDATE items SET v = 'upd' WHERE id BETWEEN 1 AND 20");
    sql.exec("DELETE FROM items WHERE id BETWEEN 91 AND 100");
    let mut page = BTreeMap::new();
    wait_until("everything journaled applied", &daemon, || {
        page = samples(&get(&metrics).1);
        page.get("db_sync_events_captured_total{table=\"public.items\",op=\"d\"}") == Some(&10.0)
            && page.get("db_sync_apply_lag_events") == Some(&0.0)
    });

    // The counters equal the journal, event by event.
    let events = p.events();
    let mut by_op: BTreeMap<String, f64> = BTreeMap::new();
    for e in &events {
        assert_eq!(e["table"], "public.items", "{e}");
        *by_op
            .entry(e["op"].as_str().unwrap().to_string())
            .or_default() += 1.0;
    }
    assert_eq!(by_op.get("r"), Some(&100.0), "{by_op:?}");
    assert_eq!(by_op.get("c"), Some(&50.0), "{by_op:?}");
    assert_eq!(by_op.get("u"), Some(&20.0), "{by_op:?}");
    for (op, n) in &by_op {
        let key = format!("{{table=\"public.items\",op=\"{op}\"}}");
        assert_eq!(
            page.get(&format!("db_sync_events_captured_total{key}")),
            Some(n),
            "{op}: {page:#?}"
        );
        assert_eq!(
            page.get(&format!("db_sync_changes_applied_total{key}")),
            Some(n),
            "{op}: {page:#?}"
        );
    }
    let last = events.last().unwrap()["seq"].as_f64().unwrap();
    assert_eq!(page.get("db_sync_last_journaled_seq"), Some(&last));
    assert_eq!(page.get("db_sync_applied_through_seq"), Some(&last));
    // … and the target: snapshot + inserts - deletes.
    assert_eq!(count(&my, "items"), 140);
    assert_eq!(
        (by_op["r"] + by_op["c"] - by_op["d"]) as u64,
        count(&my, "items")
    );
    assert_eq!(page.get("db_sync_slot_active"), Some(&1.0));
    assert_eq!(page.get("db_sync_slot_over_limit"), Some(&0.0));
    assert!(page["db_sync_slot_retained_wal_bytes"] > 0.0, "{page:#?}");
    assert!(page["db_sync_cycles_total"] >= 1.0, "{page:#?}");
    assert!(page["db_sync_last_successful_cycle_timestamp_seconds"] > 0.0);
    assert!(page["db_sync_journal_bytes"] > 0.0);
    assert!(page.contains_key("db_sync_cycle_duration_seconds_bucket{le=\"+Inf\"}"));
    assert_eq!(page.get("db_sync_cycle_failures_total"), Some(&0.0));

    // The target goes away: with a change to apply, the next cycle fails (after its retries),
    // and /healthz says so; when the target returns, it is healthy again.
    proxy.down();
    sql.exec("INSERT INTO items VALUES (1000, 'during the outage')");
    // While the cycle retries, /healthz first says that no cycle succeeded lately; once the
    // retries are spent it names the failed cycle.
    let mut reason = String::new();
    wait_until("/healthz 503 naming the failed cycle", &daemon, || {
        let (code, body) = get(&healthz);
        if code == 503 {
            assert_eq!(body.trim().lines().count(), 1, "{body}");
            assert!(
                body.starts_with("the last compaction cycle failed:")
                    || body.starts_with("no compaction cycle succeeded in the last"),
                "{body}"
            );
        }
        reason = body;
        code == 503 && reason.starts_with("the last compaction cycle failed:")
    });
    proxy.up();
    wait_until("/healthz 200 again", &daemon, || get(&healthz).0 == 200);
    wait_until("the outage's row applied", &daemon, || {
        count(&my, "items") == 141
    });
    let page = samples(&get(&metrics).1);
    assert!(page["db_sync_cycle_failures_total"] >= 1.0, "{page:#?}");
    assert_eq!(get(&format!("http://127.0.0.1:{port}/nope")).0, 404);

    // A row the target cannot hold (a column narrowed by hand) holds the table: the daemon
    // keeps running, and /healthz and db_sync_tables_held say so until a backfill ends it.
    my.exec("ALTER TABLE items MODIFY v VARCHAR(20)");
    sql.exec("INSERT INTO items VALUES (1001, 'longer than twenty characters')");
    wait_until("/healthz 503 naming the hold", &daemon, || {
        let (code, body) = get(&healthz);
        code == 503 && body.starts_with("apply holds public.items")
    });
    let page = samples(&get(&metrics).1);
    assert_eq!(page.get("db_sync_tables_held"), Some(&1.0), "{page:#?}");
    my.exec("ALTER TABLE items MODIFY v LONGTEXT");
    let out = p.db_sync(&["backfill", "--table", "public.items", "--truncate"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until(
        "/healthz 200 once the backfill ended the hold",
        &daemon,
        || get(&healthz).0 == 200,
    );
    assert_eq!(count(&my, "items"), 142);
    assert_eq!(daemon.terminate(STOP_WAIT), 0);
}

#[test]
fn a_taken_metrics_port_is_one_line_and_exit_2() {
    let p = Pipeline::new(
        "metrics_port",
        "CREATE TABLE t (id int PRIMARY KEY)",
        "public.t",
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    p.write_config_with(
        &pg_password(),
        p.port,
        &format!("metrics:\n  listen: 127.0.0.1:{port}\n"),
    );
    let out = p.db_sync(&["run"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("`metrics.listen`"), "{err}");
}
