//! `scripts/setup.sh` on a copy of the project: a clean set-up extracts the listed jars and
//! builds the bridge; a bad checksum or a jar the wheel lacks is one line naming the fix.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{last_stderr_line, root};

/// Copies what set-up reads (scripts/, debezium/ without lib/) into `dest`.
fn copy_project(dest: &Path) {
    let status = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "mkdir -p '{d}/debezium' && cp -R '{r}/scripts' '{d}/' && cp -R '{r}/debezium/bridge' '{r}/debezium/jars.sha256' '{d}/debezium/'",
            d = dest.display(),
            r = root().display()
        ))
        .status()
        .expect("cp");
    assert!(status.success());
}

fn setup(dir: &Path) -> Output {
    Command::new("bash")
        .arg(dir.join("scripts/setup.sh"))
        .arg("--no-install")
        .env("SETUP_SKIP_CARGO", "1")
        .output()
        .expect("setup.sh")
}

#[test]
fn a_clean_setup_extracts_the_listed_jars_and_builds_the_bridge() {
    let tmp = tempfile::tempdir().unwrap();
    copy_project(tmp.path());
    let out = setup(tmp.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = std::fs::read_to_string(tmp.path().join("debezium/jars.sha256")).unwrap();
    for name in listed.lines().filter_map(|l| l.split_whitespace().nth(1)) {
        assert!(
            tmp.path().join("debezium/lib").join(name).is_file(),
            "{name} extracted"
        );
    }
    assert!(tmp.path().join("debezium/lib/db-sync-bridge.jar").is_file());
    // A second run is a no-op check.
    let again = setup(tmp.path());
    assert!(again.status.success());
    assert!(!String::from_utf8_lossy(&again.stderr).contains("extracting"));
}

#[test]
fn a_bad_checksum_names_the_jar_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    copy_project(tmp.path());
    let list = tmp.path().join("debezium/jars.sha256");
    let text = std::fs::read_to_string(&list).unwrap();
    let first = text.lines().next().unwrap();
    let name = first.split_whitespace().nth(1).unwrap().to_string();
    std::fs::write(&list, text.replacen(&first[..64], &"0".repeat(64), 1)).unwrap();
    let out = setup(tmp.path());
    assert_eq!(out.status.code(), Some(1));
    let line = last_stderr_line(&out);
    assert!(line.starts_with("error: checksum mismatch"), "{line}");
    assert!(
        line.contains(&name) && line.contains("rerun scripts/setup.sh"),
        "{line}"
    );
}

#[test]
fn a_jar_the_wheel_lacks_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    copy_project(tmp.path());
    let list = tmp.path().join("debezium/jars.sha256");
    let mut text = std::fs::read_to_string(&list).unwrap();
    text.push_str(&format!("{}  no-such-thing-1.0.jar\n", "0".repeat(64)));
    std::fs::write(&list, text).unwrap();
    let out = setup(tmp.path());
    assert_eq!(out.status.code(), Some(1));
    let line = last_stderr_line(&out);
    assert!(
        line.contains("no-such-thing-1.0.jar") && line.contains("rerun scripts/setup.sh"),
        "{line}"
    );
}
