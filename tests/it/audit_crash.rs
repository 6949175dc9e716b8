//! Exactly once under crashes: a crash anywhere in compaction leaves every journal event in
//! exactly one audit file.

use std::os::unix::process::ExitStatusExt;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::support::audit::*;
use crate::support::*;

// ---------------------------------------------------------------------------------------------
// 2. Exactly once under crashes

const THREE_TABLES: [&str; 3] = ["t1", "t2", "t3"];

/// One round of changes on all three tables, interleaved in transactions: 40 inserts, 10
/// updates and 5 deletes per table. Returns the number of change events.
fn churn(sql: &Sql, round: i64) -> usize {
    let base = round * 1000;
    for chunk in 0..4 {
        let lo = base + chunk * 10 + 1;
        let inserts: String = THREE_TABLES
            .iter()
            .map(|t| {
                format!(
                    "INSERT INTO {t} SELECT g, g % 7, 'round {round}' FROM generate_series({lo}, {}) g;",
                    lo + 9
                )
            })
            .collect();
        sql.exec(&format!("BEGIN; {inserts} COMMIT;"));
    }
    for t in THREE_TABLES {
        sql.exec(&format!(
            "UPDATE {t} SET v = v + 1 WHERE id BETWEEN {} AND {};",
            base + 1,
            base + 10
        ));
        sql.exec(&format!(
            "DELETE FROM {t} WHERE id BETWEEN {} AND {};",
            base + 31,
            base + 35
        ));
    }
    THREE_TABLES.len() * (40 + 10 + 5)
}

#[test]
fn a_crash_anywhere_in_compaction_leaves_every_event_in_exactly_one_file() {
    let schema: String = THREE_TABLES
        .iter()
        .map(|t| {
            format!(
                "CREATE TABLE {t} (id int PRIMARY KEY, v int, note text); \
                 INSERT INTO {t} SELECT g, 0, 'seed' FROM generate_series(1, 10) g;"
            )
        })
        .collect();
    let p = Pipeline::new("exactly", &schema, "public.t1,public.t2,public.t3");
    let audit = audit_dir(&p);
    let extra = file_audit(&audit);
    let conn = duck();
    let mut expected = 30; // the snapshot
    let mut settled = BTreeMap::new(); // files of completed runs: never rewritten

    for (round, failpoint) in [
        (1, "compact.after_file:1"),
        (2, "compact.after_file:2"),
        (3, "compact.before_manifest"),
    ] {
        let mut capture = p.start_capture_with(&extra);
        p.wait_for_events(expected, &mut capture, SNAPSHOT_WAIT);
        expected += churn(&p.sql(), round);
        p.wait_for_events(expected, &mut capture, STREAM_WAIT);
        assert_eq!(capture.terminate(STOP_WAIT), 0);
        assert_eq!(p.events().len(), expected);
        let manifest_before = audited_through(&p);

        // The crash.
        let out = p.db_sync_env(&["compact", "--once"], &[("DB_SYNC_FAILPOINT", failpoint)]);
        assert_eq!(
            out.status.signal(),
            Some(SIGABRT),
            "{failpoint} must abort compact: {}",
            output_text(&out)
        );
        let crashed = file_states(&audit);
        let new: Vec<&PathBuf> = crashed
            .keys()
            .filter(|k| !settled.contains_key(*k))
            .collect();
        let published = match failpoint {
            "compact.before_manifest" => THREE_TABLES.len(),
            fp => fp.rsplit(':').next().unwrap().parse().unwrap(),
        };
        assert!(
            new.len() >= published,
            "{failpoint}: {} new files visible, expected at least {published}: {new:?}",
            new.len()
        );
        if failpoint == "compact.before_manifest" {
            assert_eq!(
                audited_through(&p),
                manifest_before,
                "{failpoint}: the manifest must not move"
            );
        }
        // Every visible file is whole (audit_files reads each), and the manifest never claims
        // an event that no file holds.
        let visible: BTreeSet<i64> = seqs(&conn, &audit).into_iter().collect();
        if let Some(through) = audited_through(&p) {
            let claimed_missing: Vec<u64> = (1..=through)
                .filter(|s| !visible.contains(&(*s as i64)))
                .take(10)
                .collect();
            assert!(
                claimed_missing.is_empty(),
                "{failpoint}: manifest says audited through {through}, but no file holds {claimed_missing:?}"
            );
        }
        assert_unchanged(&settled, &crashed, failpoint);

        // The re-run finishes the work: same names, nothing twice, nothing left over.
        compact(&p);
        assert_only_parquet(&audit);
        assert_audit_matches_journal(&p, &conn, &audit);
        assert_eq!(audited_through(&p), Some(expected as u64));
        let done = file_states(&audit);
        for name in crashed.keys() {
            assert!(
                done.contains_key(name),
                "{failpoint}: the re-run did not reuse the name {}",
                name.display()
            );
        }
        assert_unchanged(&settled, &done, failpoint);

        // Nothing new: exit 0 and write nothing.
        compact(&p);
        assert!(
            file_states(&audit) == done,
            "a run with nothing new wrote files"
        );
        assert_eq!(audited_through(&p), Some(expected as u64));
        settled = done;
    }

    // More changes, compacted while capture runs: compact has capture seal its segment.
    let mut capture = p.start_capture_with(&extra);
    p.wait_for_events(expected, &mut capture, SNAPSHOT_WAIT);
    expected += churn(&p.sql(), 4);
    p.wait_for_events(expected, &mut capture, STREAM_WAIT);
    compact(&p);
    assert_audit_matches_journal(&p, &conn, &audit);
    assert_eq!(audited_through(&p), Some(expected as u64));
    assert_unchanged(&settled, &file_states(&audit), "after a later run");
    assert_only_parquet(&audit);
    assert_eq!(capture.terminate(STOP_WAIT), 0);
    assert_eq!(p.events().len(), expected);
}
