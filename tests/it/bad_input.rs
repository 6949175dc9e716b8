//! Bad input: each gives one line naming the cause and the fix, and the right exit code.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

const ONE_TABLE: &str = "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);";

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn wrong_password_is_one_line_and_exit_1() {
    let p = Pipeline::new("badpw", ONE_TABLE, "public.t");
    let config = p.write_config_with("not-the-password", p.port, "");
    let out = run_db_sync(p.dir.path(), &config, &["capture"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = last_stderr_line(&out);
    assert!(line.starts_with("error: capture failed:"), "{line}");
    assert!(line.contains("password authentication failed"), "{line}");
    assert!(
        !stderr(&out).contains("not-the-password"),
        "the password never appears"
    );
    assert!(
        !stderr(&out).contains("\tat "),
        "no Java stack trace by default"
    );

    let out = run_db_sync(p.dir.path(), &config, &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("FAIL  source:") && report.contains("password authentication failed"),
        "{report}"
    );
}

#[test]
fn wrong_port_is_one_line_and_exit_1() {
    let p = Pipeline::new("badport", ONE_TABLE, "public.t");
    // A port nothing listens on.
    let config = p.write_config_with(&pg_password(), 1, "");
    let out = run_db_sync(p.dir.path(), &config, &["capture"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = last_stderr_line(&out);
    assert!(line.starts_with("error: capture failed:"), "{line}");
    assert!(
        line.to_lowercase().contains("connection") && line.contains("refused"),
        "{line}"
    );
}

#[test]
fn missing_replication_privilege_is_reported() {
    let p = Pipeline::new("norepl", ONE_TABLE, "public.t");
    let role = format!("norepl_{}", std::process::id());
    let sql = p.sql();
    sql.exec(&format!(
        "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD 'pw'; GRANT SELECT ON t TO {role};"
    ));
    let text = std::fs::read_to_string(p.write_config()).unwrap();
    let text = text
        .replace("database.user: postgres", &format!("database.user: {role}"))
        .replace(
            &format!("database.password: {}", pg_password()),
            "database.password: pw",
        );
    std::fs::write(p.config_path(), text).unwrap();

    let out = p.db_sync(&["check"]);
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains(&format!(
            "FAIL  replication privilege: {role} lacks REPLICATION"
        )),
        "{report}"
    );

    let out = p.db_sync(&["capture"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = last_stderr_line(&out);
    assert!(line.starts_with("error: capture failed:"), "{line}");
    assert!(line.to_lowercase().contains("replication"), "{line}");
    sql.exec(&format!("DROP OWNED BY {role}; DROP ROLE {role};"));
}

#[test]
fn wal_level_replica_is_named() {
    // A second, throwaway PostgreSQL at wal_level=replica, started by the project's script.
    // Beside the shared server's port, so suites on other ports do not collide.
    let port = pg_port() + 1;
    let services = root().join("scripts/services.sh");
    let status = Command::new("bash")
        .arg(&services)
        .args(["start", "pg"])
        .env("PG_PORT", port.to_string())
        .env("PG_WAL_LEVEL", "replica")
        .status()
        .expect("services.sh");
    assert!(
        status.success(),
        "scripts/services.sh could not start PostgreSQL on {port}"
    );
    let stop = StopPg(port);

    let p = Pipeline::on_port(port, "replica", ONE_TABLE, "public.t");
    let config = p.write_config_with(&pg_password(), port, "");
    let out = run_db_sync(p.dir.path(), &config, &["check"]);
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("FAIL  wal_level: is replica; set wal_level = logical"),
        "{report}"
    );

    let out = run_db_sync(p.dir.path(), &config, &["capture"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = last_stderr_line(&out);
    assert!(line.contains("wal_level"), "{line}");
    drop(p);
    drop(stop);
}

struct StopPg(u16);

impl Drop for StopPg {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("scripts/services.sh"))
            .args(["stop", "pg"])
            .env("PG_PORT", self.0.to_string())
            .status();
    }
}

#[test]
fn unknown_config_key_is_named_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        "name: x\nsource:\n  connector.class: io.debezium.connector.postgresql.PostgresConnector\njournal:\n  dri: data/journal\n",
    )
    .unwrap();
    for cmd in [&["capture"][..], &["check"], &["journal", "dump"]] {
        let out = run_db_sync(dir.path(), &config, cmd);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {}", stderr(&out));
        let text = stderr(&out);
        assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
        assert!(
            text.contains("journal.dri") && text.contains("unknown field"),
            "{text}"
        );
    }
    let out = run_db_sync(dir.path(), &dir.path().join("missing.yaml"), &["capture"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.yaml"));
}

#[test]
fn missing_jars_name_the_setup_script_and_exit_2() {
    let p = Pipeline::new("nojars", ONE_TABLE, "public.t");
    let empty = p.dir.path().join("emptylib");
    std::fs::create_dir_all(&empty).unwrap();
    let config = p.write_config_with(&pg_password(), p.port, "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &root().join("debezium/lib").display().to_string(),
        &empty.display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    let out = p.db_sync(&["capture"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let line = last_stderr_line(&out);
    assert!(
        line.contains("db-sync-bridge.jar") && line.contains("scripts/setup.sh"),
        "{line}"
    );
}

#[test]
fn a_corrupt_sealed_segment_is_named_with_its_offset() {
    let mut p = Pipeline::new("corrupt", ONE_TABLE, "public.t");
    p.source_extra.push(("max.batch.size".into(), "50".into()));
    // A journal with a sealed segment, written by capture itself (tiny segments).
    let mut config_text = std::fs::read_to_string(p.write_config()).unwrap();
    config_text = config_text.replace("segment_max_bytes: 1048576", "segment_max_bytes: 4096");
    std::fs::write(p.config_path(), &config_text).unwrap();
    p.sql().exec("INSERT INTO t SELECT generate_series(2, 400)");
    let mut capture = {
        let log = std::fs::File::create(p.dir.path().join("c.log")).unwrap();
        Capture {
            child: Command::new(BIN)
                .arg("--config")
                .arg(p.config_path())
                .args(["capture", "--exit-after-snapshot"])
                .current_dir(p.dir.path())
                .stderr(log)
                .spawn()
                .unwrap(),
            log_path: p.dir.path().join("c.log"),
        }
    };
    assert_eq!(
        capture.wait(Duration::from_secs(90)),
        0,
        "{}",
        capture.log()
    );
    let segments: Vec<_> = {
        let mut v: Vec<_> = std::fs::read_dir(p.journal_dir())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        v.sort();
        v
    };
    assert!(
        segments.len() >= 2,
        "expected a sealed segment: {segments:?}"
    );
    let sealed = &segments[0];
    let mut bytes = std::fs::read(sealed).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(sealed, &bytes).unwrap();

    let out = p.db_sync(&["journal", "dump"]);
    assert_eq!(out.status.code(), Some(1));
    let line = last_stderr_line(&out);
    assert!(line.contains(&sealed.display().to_string()), "{line}");
    assert!(line.contains("is corrupt at offset"), "{line}");

    // `check` reads every frame too, and says the same.
    let out = p.db_sync(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        report.contains("FAIL  journal:") && report.contains("is corrupt at offset"),
        "{report}"
    );

    // A damaged header in a sealed segment stops capture before it appends anything.
    let mut bytes = std::fs::read(sealed).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(sealed, &bytes).unwrap();
    let out = p.db_sync(&["capture"]);
    assert_eq!(out.status.code(), Some(1));
    let line = last_stderr_line(&out);
    assert!(
        line.contains("header CRC mismatch") && line.contains(&sealed.display().to_string()),
        "{line}"
    );
}
