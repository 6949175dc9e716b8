//! Apply when things go wrong: the target goes away mid-apply (a cutting proxy, a real
//! MariaDB stopped and restarted), a value it cannot hold, a missing table, missing
//! privileges. Nothing is lost or doubled, and each failure is one line that names the fix.

use std::time::Duration;

use serde_json::Value;

use crate::support::target::*;
use crate::support::*;

#[test]
fn a_target_that_goes_away_mid_apply_is_retried_or_fails_cleanly() {
    let p = Pipeline::new("apply_outage", WORKLOAD_SCHEMA, WORKLOAD_TABLES);
    let my = My::fresh(&format!("apply_outage_{}", std::process::id()));
    let proxy = Proxy::start(mysql_port());
    let extra = format!(
        "{}{}",
        audit_yaml(&p),
        my.target_yaml_on(proxy.port, "  batch_rows: 50\n")
    );
    let mut capture = journal_bulk_load(&p, &extra, 7000);
    let sql = p.sql();

    // A short outage once chunks are committing: the cycle retries and completes.
    let mut run = compact_until_applying(&p, &my);
    proxy.down();
    std::thread::sleep(Duration::from_secs(2));
    proxy.up();
    assert_eq!(run.wait(Duration::from_secs(120)), 0, "log:\n{}", run.log());
    assert!(run.log().contains("retrying"), "log:\n{}", run.log());
    assert_workload_equal(&sql, &my);

    // A long outage: the cycle gives up with one line (password hidden), and the next
    // cycle, with the target back, completes.
    sql.exec("UPDATE lines SET qty = qty + 1 WHERE order_id >= 7000");
    sql.exec("INSERT INTO marker VALUES (2)");
    wait_for_markers(&p, &mut capture, "public.marker", 2, STREAM_WAIT);
    proxy.down();
    let out = p.db_sync(&["compact", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let line = last_stderr_line(&out);
    assert!(
        line.contains("cannot reach the target mysql://root:***@")
            || line.contains("cannot reach the target mysql://root@"),
        "{line}"
    );
    proxy.up();
    assert_eq!(capture.terminate(STOP_WAIT), 0);
    compact(&p);
    assert_workload_equal(&sql, &my);
}

#[test]
fn a_value_the_target_cannot_hold_holds_its_table_with_table_column_and_key() {
    let p = Pipeline::new(
        "apply_bad",
        "CREATE TABLE m (id int PRIMARY KEY, d double precision); INSERT INTO m VALUES (1, 1.5), (2, 'NaN'), (3, 2.5);",
        "public.m",
    );
    let my = My::fresh(&format!("apply_bad_{}", std::process::id()));
    // retain_hours 0: GC deletes a segment as soon as it is audited and applied.
    let extra = format!(
        "  retain_hours: 0\n{}{}",
        audit_yaml(&p),
        my.target_yaml("")
    );
    let mut capture = p.start_capture_with(&extra);
    p.wait_for_events(3, &mut capture, SNAPSHOT_WAIT);
    assert_eq!(capture.terminate(STOP_WAIT), 0);

    let out = p.db_sync(&["compact", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let line = last_stderr_line(&out);
    for part in [
        "apply holds public.m",
        "`m`",
        "column `d`",
        "key id=2",
        "audit files",
        "backfill --table public.m --truncate",
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }
    // Nothing of the chunk was applied; the table is held, its changes in the audit files.
    assert_eq!(my.value("SELECT COUNT(*) FROM m").as_deref(), Some("0"));
    let status: Value =
        serde_json::from_slice(&p.db_sync(&["status", "--json"]).stdout).expect("status JSON");
    assert_eq!(status["applied_through"], 3, "{status:#}");
    assert!(status["held_tables"]["public.m"].is_object(), "{status:#}");
    let out = p.db_sync(&["compact", "--once"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "held until rebuilt: {}",
        text(&out)
    );

    // The fix the message names: a target column that holds the value, then the rebuild.
    my.exec("ALTER TABLE m MODIFY d VARCHAR(40)");
    let out = p.db_sync(&["backfill", "--table", "public.m", "--truncate"]);
    assert!(out.status.success(), "{}", text(&out));
    compact(&p);
    assert_eq!(
        p.events().len(),
        0,
        "audited and applied: GC deleted the segment"
    );
    assert_eq!(
        my.rows("SELECT id, d FROM m ORDER BY id"),
        vec![
            vec![Some("1".into()), Some("1.5".into())],
            vec![Some("2".into()), Some("NaN".into())],
            vec![Some("3".into()), Some("2.5".into())],
        ]
    );
}

#[test]
fn a_missing_target_table_without_create_tables_is_named() {
    let p = Pipeline::new(
        "apply_notable",
        "CREATE TABLE q (id int PRIMARY KEY); INSERT INTO q VALUES (1);",
        "public.q",
    );
    let my = My::fresh(&format!("apply_notable_{}", std::process::id()));
    let extra = format!(
        "{}{}",
        audit_yaml(&p),
        my.target_yaml("  create_tables: false\n")
    );
    let mut capture = p.start_capture_with(&extra);
    p.wait_for_events(1, &mut capture, SNAPSHOT_WAIT);
    assert_eq!(capture.terminate(STOP_WAIT), 0);
    let out = p.db_sync(&["compact", "--once"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let line = last_stderr_line(&out);
    assert!(
        line.contains("`q`") && line.contains("target.create_tables: true"),
        "{line}"
    );
    my.exec("CREATE TABLE q (id int PRIMARY KEY)");
    compact(&p);
    assert_eq!(my.value("SELECT COUNT(*) FROM q").as_deref(), Some("1"));
}

#[test]
fn check_reports_the_target_and_names_missing_privileges() {
    let p = Pipeline::new(
        "apply_check",
        "CREATE TABLE c (id int PRIMARY KEY);",
        "public.c",
    );
    let my = My::fresh(&format!("apply_check_{}", std::process::id()));
    let user = format!("ro_{}", std::process::id());
    my.exec(&format!("DROP USER IF EXISTS '{user}'@'%'"));
    my.exec(&format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'ro-secret'"
    ));
    my.exec(&format!("GRANT SELECT ON `{}`.* TO '{user}'@'%'", my.db));

    p.write_config_with(&pg_password(), p.port, &my.target_yaml(""));
    let out = p.db_sync(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout.contains("ok    target: connected to mysql://root"),
        "{stdout}"
    );
    assert!(stdout.contains("ok    target local_infile: ON"), "{stdout}");

    let url = format!(
        "mysql://{user}:ro-secret@127.0.0.1:{}/{}",
        mysql_port(),
        my.db
    );
    p.write_config_with(&pg_password(), p.port, &format!("target:\n  url: {url}\n"));
    let out = p.db_sync(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout.contains(&format!(
            "FAIL  target privileges: missing INSERT, UPDATE, DELETE, CREATE, ALTER on {}",
            my.db
        )),
        "{stdout}"
    );
    assert!(
        !text(&out).contains("ro-secret"),
        "the password never shows: {}",
        text(&out)
    );
    my.exec(&format!("DROP USER '{user}'@'%'"));
}

#[test]
fn mariadb_stopped_mid_apply_and_restarted_loses_and_doubles_nothing() {
    // A second, throwaway MariaDB, started and stopped by the project's script.
    // Beside the shared server's port, so suites on other ports do not collide.
    let port = mysql_port() + 1;
    assert!(
        mariadb_service("start", port),
        "scripts/services.sh could not start MariaDB on {port}"
    );
    let _stop = StopMariadb(port);
    let p = Pipeline::new("apply_restart", WORKLOAD_SCHEMA, WORKLOAD_TABLES);
    let my = My::fresh_on(port, &format!("apply_restart_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml("  batch_rows: 50\n"));
    let capture = journal_bulk_load(&p, &extra, 9000);
    let sql = p.sql();
    assert_eq!(capture.terminate(STOP_WAIT), 0);

    let mut run = compact_until_applying(&p, &my);
    assert!(
        mariadb_service("stop", port),
        "could not stop MariaDB on {port}"
    );
    assert!(
        mariadb_service("start", port),
        "could not start MariaDB on {port} again"
    );
    // Either the cycle rode out the restart, or it failed with one line and the next
    // cycle completes (transient errors: see `db_sync::apply`).
    let code = run.wait(Duration::from_secs(120));
    eprintln!(
        "compact during the restart exited {code}; log:\n{}",
        run.log()
    );
    if code != 0 {
        assert_eq!(code, 1, "log:\n{}", run.log());
        let last = run
            .log()
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_string();
        assert!(last.starts_with("error: "), "one error line: {last}");
        compact(&p);
    } else {
        assert!(run.log().contains("retrying"), "log:\n{}", run.log());
    }
    my.reconnect();
    assert_workload_equal(&sql, &my);
}
