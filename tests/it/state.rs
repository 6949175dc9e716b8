//! No silent divergence, part 2: a pipeline's local state is one whole in one place, a new
//! journal never mistakes itself for an old one, and rows deleted while nothing captured
//! leave the target when the new journal's snapshot completes.

use std::path::Path;

use serde_json::Value;

use crate::support::audit::{audit_dir, file_states, walk};
use crate::support::target::*;
use crate::support::*;

/// Drops the explicit Debezium state paths from the config the pipeline wrote: the defaults
/// (the state directory) apply.
fn default_state_paths(p: &Pipeline) {
    let text = std::fs::read_to_string(p.config_path()).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            !l.contains("offset.storage.file.filename")
                && !l.contains("schema.history.internal.file.filename")
        })
        .collect();
    std::fs::write(p.config_path(), kept.join("\n") + "\n").unwrap();
}

fn items_schema(rows: u32) -> String {
    format!(
        "CREATE TABLE items (id int PRIMARY KEY, name text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, {rows}) g;
         {MARKER}"
    )
}

fn ops(p: &Pipeline, table: &str, op: &str) -> usize {
    p.events()
        .iter()
        .filter(|e| e["table"] == table && e["op"] == op)
        .count()
}

fn capture_in(p: &Pipeline, cwd: &Path, statements: &[&str], markers: usize) {
    let mut capture = p.spawn_db_sync_in(cwd, &["capture"]);
    let sql = p.sql();
    for s in statements {
        sql.exec(s);
    }
    sql.exec("INSERT INTO marker VALUES (DEFAULT)");
    wait_for_markers(p, &mut capture, "public.marker", markers, STREAM_WAIT);
    let log = capture.log();
    assert_eq!(capture.terminate(STOP_WAIT), 0, "{log}");
}

fn refused(p: &Pipeline, wanted: &[&str]) {
    let out = p.db_sync(&["capture"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let line = last_stderr_line(&out);
    for w in wanted {
        assert!(line.contains(w), "{w:?} not in: {line}");
    }
}

#[test]
fn state_lives_beside_the_journal_and_state_that_disagrees_is_refused() {
    let p = Pipeline::new("statehome", &items_schema(20), "public.items,public.marker");
    p.write_config_with(&pg_password(), p.port, &audit_yaml(&p));
    default_state_paths(&p);
    let (a, b) = (p.dir.path().join("a"), p.dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();

    // Started from two working directories, as cron and a shell would: one snapshot.
    capture_in(&p, &a, &[], 1);
    capture_in(&p, &b, &["INSERT INTO items VALUES (21, 'late')"], 2);
    assert_eq!(ops(&p, "public.items", "r"), 20, "no second snapshot");
    assert_eq!(ops(&p, "public.items", "c"), 1);
    let journal = p.journal_dir();
    for f in ["debezium-offsets.dat", "identity.json"] {
        assert!(
            journal.join(f).is_file(),
            "{f} lives in the state directory"
        );
    }
    for cwd in [&a, &b] {
        assert!(
            !cwd.join("data").exists(),
            "nothing is written under the working directory {}",
            cwd.display()
        );
    }

    // The offsets gone while the journal holds streamed changes.
    let offsets = journal.join("debezium-offsets.dat");
    let aside = p.dir.path().join("offsets-aside");
    std::fs::rename(&offsets, &aside).unwrap();
    refused(&p, &["offsets", "are missing", "Restore"]);
    std::fs::rename(&aside, &offsets).unwrap();

    // The offsets without the journal they belong to.
    let journal_aside = p.dir.path().join("journal-aside");
    std::fs::rename(&journal, &journal_aside).unwrap();
    std::fs::create_dir_all(&journal).unwrap();
    std::fs::copy(journal_aside.join("debezium-offsets.dat"), &offsets).unwrap();
    refused(&p, &["offsets", "is empty", "delete"]);
    std::fs::remove_dir_all(&journal).unwrap();
    std::fs::rename(&journal_aside, &journal).unwrap();

    // Another source under this journal (a restored or replaced server).
    let id_path = journal.join("identity.json");
    let original = std::fs::read_to_string(&id_path).unwrap();
    let mut id: Value = serde_json::from_str(&original).unwrap();
    assert!(id["source"]["database"] == p.db.as_str(), "{id}");
    id["source"]["system_identifier"] = "1".into();
    std::fs::write(&id_path, id.to_string()).unwrap();
    refused(&p, &["was captured from", "move", "aside"]);
    std::fs::write(&id_path, original).unwrap();

    // Back as it was: capture goes on from where it stopped.
    capture_in(&p, &b, &["INSERT INTO items VALUES (22, 'later')"], 3);
    assert_eq!(ops(&p, "public.items", "r"), 20);
    assert_eq!(ops(&p, "public.items", "c"), 2);
}

#[test]
fn a_new_journal_applies_everything_and_sweeps_rows_deleted_while_away() {
    let p = Pipeline::new("newhost", &items_schema(30), "public.items,public.marker");
    let my = My::fresh(&format!("newhost_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml(""));
    p.write_config_with(&pg_password(), p.port, &extra);
    default_state_paths(&p);
    capture_in(
        &p,
        p.dir.path(),
        &["UPDATE items SET name = 'old' WHERE id = 5"],
        1,
    );
    compact(&p);
    assert_eq!(
        my.value("SELECT count(*) FROM items").as_deref(),
        Some("30")
    );
    let old_files = file_states(&audit_dir(&p));
    let old_id: Value = serde_json::from_str(
        &std::fs::read_to_string(p.journal_dir().join("identity.json")).unwrap(),
    )
    .unwrap();
    let old_journal = old_id["journal"].as_str().unwrap().to_string();

    // A new host without the old volume, and a slot that did not survive (invalidated by
    // max_slot_wal_keep_size, or dropped): the changes made meanwhile reach no stream.
    std::fs::remove_dir_all(p.journal_dir()).unwrap();
    let sql = p.sql();
    sql.exec(&format!("SELECT pg_drop_replication_slot('{}')", p.slot()));
    sql.exec("DELETE FROM items WHERE id IN (1, 2, 3)");
    sql.exec("UPDATE items SET name = 'away' WHERE id = 10");
    sql.exec("INSERT INTO items VALUES (100, 'new')");
    // A row only the target has (written by hand) goes too: the target equals the snapshot.
    my.exec("INSERT INTO items VALUES (500, 'stray')");

    capture_in(
        &p,
        p.dir.path(),
        &["UPDATE items SET name = 'after' WHERE id = 11"],
        2,
    );
    let new_id: Value = serde_json::from_str(
        &std::fs::read_to_string(p.journal_dir().join("identity.json")).unwrap(),
    )
    .unwrap();
    let new_journal = new_id["journal"].as_str().unwrap().to_string();
    assert_ne!(new_journal, old_journal);
    let first_seq = new_id["first_seq"].as_u64().unwrap();
    assert!(
        first_seq > 1,
        "the new journal numbers after the old one's audit files: {new_id}"
    );
    assert!(
        p.events()
            .iter()
            .all(|e| e["seq"].as_u64().unwrap() >= first_seq),
        "every new event is numbered after the old journal"
    );
    assert_eq!(ops(&p, "public.items", "r"), 28, "a full snapshot");

    let out = p.db_sync(&["compact", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        log.contains("deleted 4 target rows it did not bring"),
        "the sweep says how many: {log}"
    );
    let source = lines(sql.rows("SELECT id, name FROM items ORDER BY id"));
    let target = lines(my.rows("SELECT id, name FROM items ORDER BY id"));
    assert_eq!(target, source, "the target equals the source");
    assert!(!source
        .iter()
        .any(|r| r.starts_with("1,") || r.starts_with("500,")));

    let out = p.db_sync(&["status", "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sweep = &status["snapshot_sweeps"]["public.items"];
    assert_eq!(sweep["state"], "done", "{status}");
    assert_eq!(sweep["rows"], 4, "{status}");
    let out = p.db_sync(&["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("snapshot sweep   public.items: 4 target row(s) deleted"),
        "{}",
        text(&out)
    );
    // No stage table is left behind.
    assert_eq!(
        my.value("SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE '\\_db\\_sync\\_seen\\_%'")
            .as_deref(),
        Some("0")
    );

    // Exactly once: more changes, another cycle, nothing swept again.
    capture_in(&p, p.dir.path(), &["DELETE FROM items WHERE id = 20"], 3);
    let out = p.db_sync(&["compact", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("did not bring"));
    let target = lines(my.rows("SELECT id, name FROM items ORDER BY id"));
    assert_eq!(
        target,
        lines(sql.rows("SELECT id, name FROM items ORDER BY id"))
    );

    // The old journal's audit files are untouched, the new ones beside them.
    let now = file_states(&audit_dir(&p));
    for (path, state) in &old_files {
        assert_eq!(now.get(path), Some(state), "{} changed", path.display());
    }
    let names: Vec<String> = walk(&audit_dir(&p))
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert!(names
        .iter()
        .any(|n| n.ends_with(&format!(".{old_journal}.parquet"))));
    assert!(names
        .iter()
        .any(|n| n.ends_with(&format!(".{new_journal}.parquet"))));

    // The state view and backfill read both journals in order and agree with the source.
    let source = lines(sql.rows("SELECT id, name FROM items ORDER BY id"));
    assert_eq!(
        query_csv(&p, "SELECT id, name FROM public.items ORDER BY id", &[]),
        source
    );
    let out = p.db_sync(&["backfill", "--table", "public.items", "--truncate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        lines(my.rows("SELECT id, name FROM items ORDER BY id")),
        source
    );
}

#[test]
fn a_table_named_at_postgresqls_limit_in_unicode_works_everywhere() {
    // 63 bytes: PostgreSQL's longest name; 2-byte characters make it 43 characters.
    let name = format!("{}{}", "ñ".repeat(20), "t".repeat(23));
    assert_eq!(name.len(), 63);
    let p = Pipeline::new(
        "longname",
        &format!(
            "CREATE TABLE \"{name}\" (id int PRIMARY KEY, v text);
             INSERT INTO \"{name}\" SELECT g, 'v' || g FROM generate_series(1, 10) g;
             {MARKER}"
        ),
        &format!("public.{name},public.marker"),
    );
    let my = My::fresh(&format!("longname_{}", std::process::id()));
    let extra = format!("{}{}", audit_yaml(&p), my.target_yaml(""));
    p.write_config_with(&pg_password(), p.port, &extra);
    capture_in(
        &p,
        p.dir.path(),
        &[&format!("UPDATE \"{name}\" SET v = 'changed' WHERE id = 3")],
        1,
    );
    compact(&p);
    let quoted = format!("`{name}`");
    assert_eq!(
        my.value(&format!("SELECT count(*) FROM {quoted}"))
            .as_deref(),
        Some("10")
    );
    assert_eq!(
        my.value(&format!("SELECT v FROM {quoted} WHERE id = 3"))
            .as_deref(),
        Some("changed")
    );
    assert_eq!(
        my.value(&format!(
            "SELECT count(*) FROM _db_sync_checkpoint WHERE table_name = '{name}'"
        ))
        .as_deref()
        .map(|n| n != "0"),
        Some(true),
        "checkpoint rows name the table"
    );
    let rows = query_csv(
        &p,
        &format!("SELECT count(*), max(v) FROM public.\"{name}\""),
        &[],
    );
    assert_eq!(rows, vec!["10,v9".to_string()]);
    let out = p.db_sync(&[
        "backfill",
        "--table",
        &format!("public.{name}"),
        "--truncate",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        my.value(&format!("SELECT v FROM {quoted} WHERE id = 3"))
            .as_deref(),
        Some("changed")
    );
    let out = p.db_sync(&["status"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_bad_frame_with_good_frames_after_it_in_the_active_segment_is_refused_not_truncated() {
    let p = Pipeline::new(
        "activecorrupt",
        &items_schema(200),
        "public.items,public.marker",
    );
    p.write_config_with(&pg_password(), p.port, &audit_yaml(&p));
    capture_in(&p, p.dir.path(), &[], 1);
    let events = p.events().len();
    let mut segments: Vec<_> = std::fs::read_dir(p.journal_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    let active = segments.last().unwrap().clone();
    let mut bytes = std::fs::read(&active).unwrap();
    let size = bytes.len();
    // A flipped bit in the snapshot's frame, which the marker's frame (streamed after the
    // snapshot) follows whole.
    let at = size / 4;
    bytes[at] ^= 0x10;
    std::fs::write(&active, &bytes).unwrap();

    for args in [&["capture"][..], &["compact", "--once"][..]] {
        let out = p.db_sync(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let line = last_stderr_line(&out);
        let name = active.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            line.contains(&name) && line.contains("corrupt at offset"),
            "{args:?}: {line}"
        );
        assert_eq!(
            std::fs::metadata(&active).unwrap().len() as usize,
            size,
            "the good frames after the bad one stay"
        );
    }
    // Flipped back, everything is there.
    bytes[at] ^= 0x10;
    std::fs::write(&active, &bytes).unwrap();
    assert_eq!(p.events().len(), events);
}
