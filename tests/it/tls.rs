//! TLS on every connection db-sync opens: a PostgreSQL and a MariaDB started with
//! `scripts/services.sh --tls` (certificates from a CA the set-up makes), and a role `secure` that
//! each server lets in over TLS only. With the CA configured, `check`, capture (the JVM's own
//! connections), the publication and identity connections, compaction, apply and `status` all work;
//! a plain connection is refused with one line, and a certificate from another CA is refused,
//! naming the setting to fix.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::target::*;
use crate::support::*;

/// The TLS servers' ports, beside the shared servers' (15437 and 13309 by default).
fn pg_tls_port() -> u16 {
    pg_port() + 5
}

fn my_tls_port() -> u16 {
    mysql_port() + 3
}

/// `scripts/services.sh --tls ACTION WHAT` on the TLS ports.
fn tls_service(action: &str, what: &str) -> bool {
    Command::new("bash")
        .arg(root().join("scripts/services.sh"))
        .args(["--tls", action, what])
        .env("PG_PORT", pg_tls_port().to_string())
        .env("MYSQL_PORT", my_tls_port().to_string())
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

struct StopTls;

impl Drop for StopTls {
    fn drop(&mut self) {
        tls_service("stop", "mariadb");
        tls_service("stop", "pg");
    }
}

fn ca_path() -> std::path::PathBuf {
    let dir = std::env::var("SERVICES_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root().join("data/services"));
    dir.join("tls/ca.pem")
}

/// The config of `p` as user `secure` over TLS, with `sslmode` for the source and the
/// target URL's query `target_tls`.
fn tls_config(p: &Pipeline, my: &My, sslmode: &str, target_tls: &str) {
    let ca = ca_path();
    let p2 = [
        ("database.user", "secure".to_string()),
        ("database.sslmode", sslmode.to_string()),
        ("database.sslrootcert", ca.display().to_string()),
    ];
    let base = std::fs::read_to_string(p.write_config_with("securepw", p.port, "")).unwrap();
    // The source lines the pipeline wrote, with the user replaced and the TLS keys added.
    let mut text = String::new();
    for line in base.lines() {
        if line.starts_with("  database.user:") {
            continue;
        }
        text.push_str(line);
        text.push('\n');
        if line == "source:" {
            for (k, v) in &p2 {
                text.push_str(&format!("  {k}: {v}\n"));
            }
        }
    }
    text.push_str(&audit_yaml(p));
    text.push_str(&format!(
        "target:\n  url: mysql://secure:securepw@127.0.0.1:{}/{}{target_tls}\n",
        my_tls_port(),
        my.db
    ));
    std::fs::write(p.config_path(), text).unwrap();
}

#[test]
fn every_connection_speaks_tls_and_plain_ones_are_refused() {
    assert!(
        tls_service("start", "pg") && tls_service("start", "mariadb"),
        "scripts/services.sh --tls could not start PostgreSQL on {} and MariaDB on {}",
        pg_tls_port(),
        my_tls_port()
    );
    let _stop = StopTls;
    let p = Pipeline::on_port(
        pg_tls_port(),
        "tls",
        "CREATE TABLE items (id int PRIMARY KEY, name text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 50) g;",
        "public.items",
    );
    let my = My::fresh_on(my_tls_port(), &format!("tls_{}", std::process::id()));
    let ca = ca_path();
    let target_ok = format!("?ssl-mode=VERIFY_IDENTITY&ssl-ca={}", ca.display());

    // Verified both ways: check says TLS on each side.
    tls_config(&p, &my, "verify-full", &target_ok);
    let out = p.db_sync(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout.contains("ok    source: connected to") && stdout.contains("over TLS (TLSv1."),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok    target: connected to mysql://secure:***@")
            && stdout.contains(&format!("/{}", my.db)),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("over TLS").count(),
        2,
        "both connections use TLS: {stdout}"
    );

    // Capture (the JVM's connections, the publication and identity ones), compaction, apply.
    let mut capture = p.spawn_db_sync(&["capture"]);
    p.wait_for_events(50, &mut capture, SNAPSHOT_WAIT);
    p.sql()
        .exec("UPDATE items SET name = 'changed' WHERE id = 7");
    p.wait_for_events(51, &mut capture, STREAM_WAIT);
    assert_eq!(capture.terminate(STOP_WAIT), 0);
    compact(&p);
    assert_eq!(
        my.value("SELECT count(*) FROM items").as_deref(),
        Some("50")
    );
    assert_eq!(
        my.value("SELECT name FROM items WHERE id = 7").as_deref(),
        Some("changed")
    );
    let out = p.db_sync(&["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status["source_slot"].is_object(), "{status}");
    assert!(status["target_error"].is_null(), "{status}");

    // The default modes (prefer / PREFERRED) use TLS when the server offers it.
    tls_config(&p, &my, "prefer", "");
    let out = p.db_sync(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stdout.matches("over TLS").count(), 2, "{stdout}");

    // Plain connections are refused, each with one line.
    tls_config(&p, &my, "disable", "?ssl-mode=DISABLED");
    let out = p.db_sync(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout.contains("FAIL  source: cannot connect to") && stdout.contains("no encryption"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL  target: cannot connect to") && stdout.contains("Access denied"),
        "{stdout}"
    );
    let out = p.db_sync(&["capture"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        last_stderr_line(&out).contains("no encryption"),
        "{}",
        text(&out)
    );

    // A certificate from another CA: refused at once, naming the setting.
    let other = p.dir.path().join("other-ca.pem");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=another CA", "-keyout"])
        .arg(p.dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(made.success());
    let bad = format!("?ssl-mode=VERIFY_CA&ssl-ca={}", other.display());
    tls_config(&p, &my, "verify-ca", &bad);
    std::fs::write(
        p.config_path(),
        std::fs::read_to_string(p.config_path())
            .unwrap()
            .replace(&ca.display().to_string(), &other.display().to_string()),
    )
    .unwrap();
    let out = p.db_sync(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout.contains("FAIL  source: cannot connect to") && stdout.contains("certificate"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL  target: cannot connect to")
            && stdout.contains("check ssl-mode and ssl-ca in target.url"),
        "{stdout}"
    );
}
