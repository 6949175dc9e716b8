//! Memory bounded by bytes, not rows: 3,000 rows of 1 MB text and 500 rows of 4 MB bytea (5 GB of
//! values) go through capture, compaction, apply and backfill with the default `memory_limit_mb`
//! (512), every value arriving whole; each process's peak RSS is printed (the README records it).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::target::*;
use crate::support::*;

/// The high-water mark of a process's resident set (`VmHWM`), sampled until it exits.
struct PeakRss(Arc<AtomicU64>);

impl PeakRss {
    fn watch(pid: u32) -> PeakRss {
        let peak = Arc::new(AtomicU64::new(0));
        let p = peak.clone();
        std::thread::spawn(move || {
            let path = format!("/proc/{pid}/status");
            while let Ok(status) = std::fs::read_to_string(&path) {
                let kb = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
                match kb {
                    Some(kb) => {
                        p.fetch_max(kb, Ordering::Relaxed);
                    }
                    // A zombie has no VmHWM line: it has exited.
                    None => break,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        PeakRss(peak)
    }

    fn mb(&self) -> u64 {
        self.0.load(Ordering::Relaxed) / 1024
    }
}

/// Runs a db-sync command to completion, with its peak RSS in MB.
fn measured(p: &Pipeline, args: &[&str]) -> (std::process::Output, u64) {
    let child = Command::new(BIN)
        .arg("--config")
        .arg(p.config_path())
        .args(args)
        .current_dir(p.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn db-sync");
    let peak = PeakRss::watch(child.id());
    let out = child.wait_with_output().expect("db-sync runs");
    // The sampler's last reading comes from before the exit.
    std::thread::sleep(Duration::from_millis(50));
    (out, peak.mb())
}

/// md5 over each row's md5, in key order: one value for a whole column.
const PG_TEXT_SUM: &str =
    "SELECT count(*), md5(string_agg(md5(body), '' ORDER BY id)) FROM big_text";
const MY_TEXT_SUM: &str =
    "SELECT count(*), MD5(GROUP_CONCAT(MD5(body) ORDER BY id SEPARATOR '')) FROM big_text";
const PG_BYTES_SUM: &str =
    "SELECT count(*), md5(string_agg(md5(data), '' ORDER BY id)) FROM big_bytes";
const MY_BYTES_SUM: &str =
    "SELECT count(*), MD5(GROUP_CONCAT(MD5(data) ORDER BY id SEPARATOR '')) FROM big_bytes";

#[test]
fn rows_of_megabytes_stay_within_the_memory_budget_end_to_end() {
    // Distinct per row (md5 of the id), compressible so PostgreSQL's TOAST keeps the source
    // small; 1 MiB of text, 4 MiB of bytes.
    let p = Pipeline::new(
        "bigrows",
        &format!(
            "CREATE TABLE big_text (id int PRIMARY KEY, body text);
             CREATE TABLE big_bytes (id int PRIMARY KEY, data bytea);
             {MARKER}"
        ),
        "public.big_text,public.big_bytes,public.marker",
    );
    let sql = p.sql();
    // In short transactions: creating a replication slot waits for every running write
    // transaction of the server, and other tests create slots meanwhile.
    for from in (1..=3000).step_by(100) {
        sql.exec(&format!(
            "INSERT INTO big_text SELECT g, repeat(md5(g::text), 32768) FROM generate_series({from}, {}) g",
            from + 99
        ));
    }
    for from in (1..=500).step_by(25) {
        sql.exec(&format!(
            "INSERT INTO big_bytes SELECT g, decode(repeat(md5(g::text), 262144), 'hex') FROM generate_series({from}, {}) g",
            from + 24
        ));
    }
    assert_eq!(
        sql.value("SELECT min(length(body)) FROM big_text")
            .as_deref(),
        Some("1048576")
    );
    assert_eq!(
        sql.value("SELECT min(length(data)) FROM big_bytes")
            .as_deref(),
        Some("4194304")
    );
    let my = My::fresh(&format!("bigrows_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml(""));
    p.write_config_with(&pg_password(), p.port, &extra);
    // The engine's default heap (1 GB), not the small one the other tests use.
    let config = std::fs::read_to_string(p.config_path())
        .unwrap()
        .replace("jvm_options: [-Xmx256m]", "jvm_options: [-Xmx1g]");
    std::fs::write(p.config_path(), config).unwrap();

    // Capture: the snapshot, then one streamed change of each kind.
    let mut capture = p.spawn_db_sync(&["capture"]);
    let capture_peak = PeakRss::watch(capture.child.id());
    p.wait_for_events(3500, &mut capture, Duration::from_secs(900));
    sql.exec("UPDATE big_text SET body = repeat('x', 1048576) WHERE id = 1");
    sql.exec("UPDATE big_bytes SET data = decode(repeat('ab', 4194304), 'hex') WHERE id = 1");
    sql.exec("INSERT INTO marker VALUES (DEFAULT)");
    wait_for_marker(&p, &mut capture, "public.marker", Duration::from_secs(300));
    let log = capture.log();
    assert_eq!(capture.terminate(STOP_WAIT), 0, "{log}");
    let capture_mb = capture_peak.mb();

    // Compaction: audit files, then apply.
    let (out, compact_mb) = measured(&p, &["compact", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let pg_text = lines(sql.rows(PG_TEXT_SUM));
    let pg_bytes = lines(sql.rows(PG_BYTES_SUM));
    assert_eq!(
        lines(my.rows(MY_TEXT_SUM)),
        pg_text,
        "every text value arrives whole"
    );
    assert_eq!(
        lines(my.rows(MY_BYTES_SUM)),
        pg_bytes,
        "every bytea value arrives whole"
    );

    // The audit files hold every value whole too.
    let audited = query_csv(
        &p,
        "SELECT count(*), sum(length(body)) FROM public.big_text_changes",
        &[],
    );
    assert_eq!(audited, vec![format!("3001,{}", 3001u64 << 20)]);

    // Backfill from the audit files.
    let (out, backfill_mb) = measured(
        &p,
        &["backfill", "--table", "public.big_bytes", "--truncate"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        lines(my.rows(MY_BYTES_SUM)),
        pg_bytes,
        "backfill brings every value back"
    );

    eprintln!(
        "peak RSS with memory_limit_mb 512: capture {capture_mb} MB (with the JVM, -Xmx1g), compact --once {compact_mb} MB, backfill {backfill_mb} MB"
    );
    // The budget is db-sync's own buffers; allocator slack and the runtime come on top.
    for (what, mb) in [("compact --once", compact_mb), ("backfill", backfill_mb)] {
        assert!(mb < 1024, "{what} peaked at {mb} MB with a 512 MB budget");
    }
}
