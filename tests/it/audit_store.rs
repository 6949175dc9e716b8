//! The audit store, as one suite run against `file://` and `s3://` alike (object_store's
//! habit): each event lands in exactly one file, a run with nothing new writes nothing, and a
//! store that cannot be written is one line that changes nothing, after which a good store
//! audits everything.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::support::audit::*;
use crate::support::*;

/// Where a test's audit files go.
#[derive(Clone, Copy, Debug)]
enum Store {
    File,
    S3,
}

impl Store {
    /// Whether the store can be used here (the S3 server may be missing outside CI).
    fn ready(self, test: &str) -> bool {
        match self {
            Store::File => true,
            Store::S3 => s3_ready(test),
        }
    }

    fn prefix(p: &Pipeline) -> String {
        format!("it/{}", p.name)
    }

    /// The `audit:` section of a good store.
    fn yaml(self, p: &Pipeline) -> String {
        match self {
            Store::File => file_audit(&audit_dir(p)),
            Store::S3 => s3_audit("audit", &Store::prefix(p)),
        }
    }

    /// The `audit:` section of a store that cannot be written, and what its error line names.
    fn bad_yaml(self, p: &Pipeline) -> (String, String) {
        match self {
            Store::File => {
                // A directory under a regular file can never be created.
                let file = p.dir.path().join("not-a-dir");
                std::fs::write(&file, b"x").unwrap();
                let dir = file.join("audit");
                (file_audit(&dir), dir.display().to_string())
            }
            Store::S3 => (
                s3_audit("no-such-bucket-xyz", "p"),
                "no-such-bucket-xyz".to_string(),
            ),
        }
    }

    /// The files of the store, copied (S3) or found (file) under a local directory, with
    /// what identifies each version: (relative path, size, modification).
    fn files(self, p: &Pipeline, copy: &str) -> (PathBuf, Vec<(String, u64, String)>) {
        match self {
            Store::File => {
                let dir = audit_dir(p);
                let mut out: Vec<(String, u64, String)> = walk(&dir)
                    .into_iter()
                    .map(|f| {
                        let meta = std::fs::metadata(&f).unwrap();
                        let rel = f.strip_prefix(&dir).unwrap().display().to_string();
                        (rel, meta.len(), format!("{:?}", meta.modified().unwrap()))
                    })
                    .collect();
                out.sort();
                (dir, out)
            }
            Store::S3 => {
                let local = p.dir.path().join(copy);
                let objects = download(&Store::prefix(p), &local)
                    .into_iter()
                    .map(|(rel, size, e_tag, modified)| {
                        (rel, size, format!("{e_tag:?} {modified}"))
                    })
                    .collect();
                (local, objects)
            }
        }
    }
}

fn each_event_lands_in_one_file(store: Store, test: &str) {
    if !store.ready(test) {
        return;
    }
    let p = Pipeline::new(test, SMALL_SCHEMA, "public.snap");
    let extra = store.yaml(&p);
    capture_workload(&p, &extra, SMALL_SNAPSHOT, SMALL_STREAM, SMALL_EVENTS);
    compact(&p);

    let (local, files) = store.files(&p, "copy");
    assert!(!files.is_empty(), "{store:?}: no audit files");
    assert_only_parquet(&local); // no temporary or partial objects either
    let conn = duck();
    assert_audit_matches_journal(&p, &conn, &local);
    assert_eq!(audited_through(&p), Some(SMALL_EVENTS as u64));

    // Nothing new: nothing written.
    compact(&p);
    let (_, again) = store.files(&p, "copy-again");
    assert_eq!(
        again, files,
        "{store:?}: a run with nothing new changed files"
    );
}

#[test]
fn each_event_lands_in_one_file_on_file_urls() {
    each_event_lands_in_one_file(Store::File, "store_file");
}

#[test]
fn each_event_lands_in_one_file_on_s3() {
    each_event_lands_in_one_file(Store::S3, "store_s3");
}

fn a_bad_store_is_one_line_and_changes_nothing(store: Store, test: &str) {
    if !store.ready(test) {
        return;
    }
    let p = Pipeline::new(test, SMALL_SCHEMA, "public.snap");
    let good = store.yaml(&p);
    let (bad, named) = store.bad_yaml(&p);

    // A first, good run, so that there is progress to keep.
    p.write_config_with(&pg_password(), p.port, &good);
    let mut snapshot = p.spawn_db_sync(&["capture", "--exit-after-snapshot"]);
    assert_eq!(snapshot.wait(SNAPSHOT_WAIT), 0, "{}", snapshot.log());
    assert_eq!(p.events().len(), SMALL_SNAPSHOT);
    compact(&p);
    assert_eq!(audited_through(&p), Some(SMALL_SNAPSHOT as u64));
    let sql = p.sql();
    for statement in SMALL_STREAM {
        sql.exec(statement);
    }
    let mut capture = p.start_capture_with(&good);
    p.wait_for_events(SMALL_EVENTS, &mut capture, STREAM_WAIT);
    assert_eq!(capture.terminate(STOP_WAIT), 0);

    let journal_files = || -> BTreeMap<PathBuf, Vec<u8>> {
        walk(&p.journal_dir())
            .into_iter()
            .filter(|f| {
                f.extension().is_some_and(|x| x == "log")
                    || f.file_name().is_some_and(|n| n == "audit-progress.json")
            })
            .map(|f| {
                let bytes = std::fs::read(&f).unwrap();
                (f, bytes)
            })
            .collect()
    };
    let before = journal_files();

    p.write_config_with(&pg_password(), p.port, &bad);
    let out = p.db_sync(&["compact", "--once"]);
    // A path that cannot be a directory is a bad setting (2); a missing bucket is found only
    // by asking the server (1).
    let want = match store {
        Store::File => 2,
        Store::S3 => 1,
    };
    assert_eq!(out.status.code(), Some(want), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    let line = last_stderr_line(&out);
    assert!(line.starts_with("error: "), "{line}");
    assert!(line.contains(&named), "names {named}: {line}");
    assert!(
        line.contains("audit.url") || line.to_lowercase().contains("create"),
        "says what to fix (audit.url, or create the bucket): {line}"
    );
    assert!(
        journal_files() == before,
        "a failed run must leave the journal and the progress as they were"
    );
    assert_eq!(audited_through(&p), Some(SMALL_SNAPSHOT as u64));

    // Back to the good store: everything is audited, each event once.
    p.write_config_with(&pg_password(), p.port, &good);
    compact(&p);
    let (local, _) = store.files(&p, "copy");
    assert_only_parquet(&local);
    let conn = duck();
    assert_audit_matches_journal(&p, &conn, &local);
    assert_eq!(audited_through(&p), Some(SMALL_EVENTS as u64));
}

#[test]
fn a_bad_file_url_is_one_line_and_changes_nothing_then_a_good_one_audits_everything() {
    a_bad_store_is_one_line_and_changes_nothing(Store::File, "badstore_file");
}

#[test]
fn a_missing_bucket_is_one_line_and_changes_nothing_then_a_good_url_audits_everything() {
    a_bad_store_is_one_line_and_changes_nothing(Store::S3, "badstore_s3");
}
