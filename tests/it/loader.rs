//! The native initial loader: what it journals is what Debezium's snapshot journals (schema
//! byte for byte, every value), and a load killed part way continues with the ranges left,
//! every row once, and ends with the target equal to the source.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::support::target::*;
use crate::support::*;

const TYPES: &str = "
CREATE TABLE t (
  id int PRIMARY KEY,
  a smallint DEFAULT 7, b bigint NOT NULL DEFAULT 0, c boolean DEFAULT false, d real,
  e double precision, f text DEFAULT 'x', g varchar(40) DEFAULT 'y', h char(3), i bytea,
  j uuid, k json, l jsonb, m date DEFAULT '2020-01-02', n timestamp(3), o timestamp,
  p timestamptz DEFAULT now(), q time(3), r time, s numeric(12,2) DEFAULT 1.50, u numeric,
  v varchar, w timestamptz(0), x numeric(5,0), y serial
);
INSERT INTO t VALUES
 (1, -32768, 9223372036854775807, true, 1.5, -2.25e300, 'hello', 'wörld', 'ab', '\\x00ff',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"b\": 1,  \"a\": [1,2]}', '{\"b\": 1,  \"a\": [1,2]}',
  '1999-12-31', '2020-01-01 10:00:00.123', '1900-01-01 00:00:00.000001',
  '2020-06-01 12:34:56.789012+02', '23:59:59.999', '00:00:00.000001', -1234567890.12,
  123456789012345678901234567890.000000001, 'vv', '2020-01-01 00:00:00+00', 99999),
 (2, null, 0, null, null, null, null, null, null, null, null, null, null, null, null, null,
  null, null, null, null, null, null, null, null),
 (3, 1, -1, false, 'NaN', 'Infinity', repeat('z', 100000), '', '   ', '', null, 'null', '[]',
  '1970-01-01', '1970-01-01', '1969-12-31 23:59:59.999999', '1969-12-31 23:59:59.999999+00',
  '00:00', '24:00:00', 0, 'NaN', '', '1970-01-01 00:00:01.5+05', -1);
CREATE TABLE parted (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE parted_eu PARTITION OF parted FOR VALUES IN ('eu');
CREATE TABLE parted_us PARTITION OF parted FOR VALUES IN ('us');
INSERT INTO parted SELECT i, CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END, 'v' || i FROM generate_series(1, 40) i;
CREATE TABLE a_table_name_of_exactly_sixty_three_characters_for_the_loader_ (id bigint PRIMARY KEY, v text);
INSERT INTO a_table_name_of_exactly_sixty_three_characters_for_the_loader_ VALUES (1, 'long');
CREATE TABLE keyless (a int, b text);
ALTER TABLE keyless REPLICA IDENTITY FULL;
INSERT INTO keyless VALUES (1, 'same'), (1, 'same'), (2, null);
";

const TYPE_TABLES: &str = "public.t,public.parted,public.a_table_name_of_exactly_sixty_three_characters_for_the_loader_,public.keyless";

/// Each schema frame's JSON in the journal, by table, with the pipeline's topic prefix
/// replaced by `PREFIX` (the two pipelines are named apart).
fn schema_frames(p: &Pipeline) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    db_sync::journal::read_events(&p.journal_dir(), 0, |e| {
        let json = String::from_utf8(e.schema_json.to_vec()).unwrap();
        out.insert(e.schema.table.clone(), json.replace(&p.name, "PREFIX"));
        Ok(true)
    })
    .expect("journal reads");
    out
}

/// The snapshot rows, by table and key (or row, for a table without one), in order.
fn snapshot_rows(p: &Pipeline) -> BTreeMap<String, Vec<(String, Value)>> {
    let mut out: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    for e in p.events() {
        assert_eq!(e["op"], "r", "{e}");
        let table = e["table"].as_str().unwrap().to_string();
        let id = if e["key"].is_null() {
            e["after"].to_string()
        } else {
            e["key"].to_string()
        };
        out.entry(table).or_default().push((id, e["after"].clone()));
    }
    for rows in out.values_mut() {
        rows.sort_by(|a, b| a.0.cmp(&b.0));
    }
    out
}

#[test]
fn the_native_loader_journals_what_debeziums_snapshot_does() {
    let ours = Pipeline::new("loadnative", TYPES, TYPE_TABLES);
    let theirs = Pipeline::new("loaddbz", TYPES, TYPE_TABLES);
    ours.write_config_with(&pg_password(), ours.port, "snapshot:\n  loader: native\n");
    let out = ours.db_sync(&["capture", "--exit-after-snapshot"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("initial load complete"),
        "{}",
        text(&out)
    );
    theirs.write_config_with(
        &pg_password(),
        theirs.port,
        "snapshot:\n  loader: debezium\n",
    );
    let out = theirs.db_sync(&["capture", "--exit-after-snapshot"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("initial load"), "{}", text(&out));

    let (a, b) = (schema_frames(&ours), schema_frames(&theirs));
    assert_eq!(a.len(), 4, "{a:#?}");
    for (table, json) in &b {
        assert_eq!(
            a.get(table),
            Some(json),
            "the schema of {table}, byte for byte"
        );
    }
    let (a, b) = (snapshot_rows(&ours), snapshot_rows(&theirs));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (table, rows) in &b {
        assert_eq!(a[table].len(), rows.len(), "{table}");
        for (x, y) in a[table].iter().zip(rows) {
            assert_eq!(x, y, "{table}: a row of the native load against Debezium's");
        }
    }
}

const BIG: &str = "
CREATE TABLE big (id int PRIMARY KEY, n int, body text);
ALTER TABLE big ALTER body SET STORAGE EXTERNAL;
INSERT INTO big
SELECT i, i, CASE WHEN i % 100 = 0 THEN repeat(md5(i::text), 100) ELSE md5(i::text) END
  FROM generate_series(1, 20000) i;
CREATE TABLE marker (id serial PRIMARY KEY);
";

/// A pipeline of `tables` (the native loader, the default, in ranges of 8 pages) with a
/// fresh target; the config's extra lines.
fn small_ranges(name: &str, schema: &str, tables: &str) -> (Pipeline, My, String) {
    let p = Pipeline::new(name, schema, tables);
    let my = My::fresh(&format!("{name}_{}", std::process::id()));
    let extra = format!(
        "{}{}snapshot:\n  range_pages: 8\n",
        audit_yaml(&p),
        my.target_yaml("")
    );
    p.write_config_with(&pg_password(), p.port, &extra);
    (p, my, extra)
}

fn done_ranges(p: &Pipeline) -> (usize, usize) {
    let text = std::fs::read_to_string(p.journal_dir().join("loader-progress.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let done = v["done"].as_array().unwrap();
    (done.iter().filter(|d| **d == true).count(), done.len())
}

fn crash_at(p: &Pipeline, point: &str) {
    let out = p.db_sync_env(&["capture"], &[("DB_SYNC_FAILPOINT", point)]);
    assert_eq!(
        out.status.code(),
        None,
        "aborted at {point}: {}",
        text(&out)
    );
}

#[test]
fn a_load_killed_part_way_continues_with_the_ranges_left_and_ends_equal_to_the_source() {
    let (p, my, _) = small_ranges("loadkill", BIG, "public.big,public.marker");
    let sql = p.sql();

    // Killed after the 4th range's rows are journaled, before the range is marked done.
    crash_at(&p, "loader.after_append:4");
    let (done, ranges) = done_ranges(&p);
    assert_eq!(done, 3, "three ranges marked done of {ranges}");
    assert!(ranges > 10, "{ranges}");
    let status: Value =
        serde_json::from_slice(&p.db_sync(&["status", "--json"]).stdout).expect("status JSON");
    let load = &status["initial_load"];
    assert_eq!(load["ranges_left"], ranges - 3, "{status}");
    assert_eq!(load["tables"][0]["table"], "public.big", "{status}");
    assert!(load["tables"][0]["rows"].as_u64().unwrap() > 0, "{status}");
    // Written while db-sync is down, so the next start reads under a new snapshot: rows
    // added beyond the planned pages; space freed in the ranges already read, and rows of the
    // last pages (not read yet; every hundredth with a TOASTed body) updated into it, body
    // untouched. Read by page alone, the moved rows would be in no range left, and their
    // replayed updates lack the body.
    sql.exec("INSERT INTO big SELECT i, i, 'new' FROM generate_series(20001, 20500) i");
    sql.exec("DELETE FROM big WHERE id <= 300");
    sql.exec("VACUUM big");
    sql.exec("UPDATE big SET n = n + 1 WHERE id > 19000 AND id <= 20000");
    let moved = sql.rows(
        "SELECT count(*) FROM big WHERE id > 19000 AND id <= 20000 AND (ctid::text::point)[0] < 24",
    );
    assert_ne!(
        moved[0][0].as_deref(),
        Some("0"),
        "rows moved into the ranges already read"
    );
    // Killed again, with a range named in flight and none of it journaled.
    crash_at(&p, "loader.before_append:3");
    let (again, _) = done_ranges(&p);
    assert!(
        again >= done + 2,
        "the second run went on from the first: {again} done"
    );

    // Streamed after the load (the loader is not exact under writes yet: an update moves a
    // row between page ranges): updates that leave the TOASTed body alone, deletes, key
    // changes of rows with TOASTed bodies.
    let mut capture = p.spawn_db_sync(&["capture"]);
    let start = std::time::Instant::now();
    while done_ranges(&p).0 < done_ranges(&p).1 {
        assert!(start.elapsed() < SNAPSHOT_WAIT, "{}", capture.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    sql.exec("UPDATE big SET n = -n WHERE id % 7 = 0");
    sql.exec("DELETE FROM big WHERE id % 11 = 0");
    sql.exec("UPDATE big SET id = id + 100000 WHERE id % 300 = 0");
    sql.exec("UPDATE big SET body = 'changed' WHERE id = 1");
    sql.exec("INSERT INTO marker VALUES (DEFAULT)");
    wait_for_marker(&p, &mut capture, "public.marker", SNAPSHOT_WAIT);
    let log = capture.log();
    assert_eq!(capture.terminate(STOP_WAIT), 0, "{log}");
    assert!(log.contains("continuing"), "{log}");
    assert_eq!(done_ranges(&p).0, done_ranges(&p).1);

    // Every key once in the snapshot (no range journaled twice, none started over), but the
    // rows written while db-sync was down, which may come again as the new snapshot has them.
    let mut seen = std::collections::HashMap::new();
    for e in p.events().iter().filter(|e| e["snapshot"] == true) {
        let id = e["key"]["id"].as_i64().unwrap();
        if let Some(first) = seen.insert(id, e.clone()) {
            assert!(id > 19000, "twice in the snapshot:\n{first}\n{e}");
        }
    }
    assert!(seen.contains_key(&19999), "a moved row was read");

    compact(&p);
    let query = "SELECT id, n, md5(body) FROM big ORDER BY id";
    let source = lines(sql.rows(query));
    assert_eq!(
        lines(my.rows(query)),
        source,
        "the target equals the source"
    );
}

#[test]
fn a_load_under_writes_reads_one_snapshot_and_ends_equal_to_the_source() {
    let (p, my, _) = small_ranges("loadwrites", BIG, "public.big,public.marker");
    let sql = p.sql();
    // Free space in the first pages, so that updated rows move back into ranges read early.
    sql.exec("DELETE FROM big WHERE id <= 2000");
    sql.exec("VACUUM big");

    // The load, slowed to 0.3 s per range, beside a workload: updates that
    // move rows across pages and leave the TOASTed body alone, deletes, key changes (of rows
    // with TOASTed bodies too), inserts.
    let (out, rounds) = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            p.db_sync_env(
                &["capture", "--exit-after-snapshot"],
                &[("DB_SYNC_PAUSE", "loader.before_append:300")],
            )
        });
        let mut rounds = 0;
        let mut flowed = None;
        while !load.is_finished() {
            if rounds == 3 {
                // Compaction while the load runs: the loader seals the segment it asks for,
                // and the ranges so far reach the target.
                let out = p.db_sync(&["compact", "--once"]);
                assert!(out.status.success(), "{}", text(&out));
                assert!(!text(&out).contains("did not seal"), "{}", text(&out));
                flowed = Some(my.rows("SELECT count(*) FROM big")[0][0].clone());
            }
            let r = rounds % 10;
            sql.exec(&format!(
                "UPDATE big SET n = n + 1 WHERE id % 10 = {r} AND id > 15000;
                 DELETE FROM big WHERE id % 97 = {r} AND id < 15000;
                 UPDATE big SET id = id + 100000 WHERE id % 200 = {r} AND id < 100000;
                 INSERT INTO big SELECT i, i, 'new' FROM generate_series(30000 + {rounds} * 10, 30009 + {rounds} * 10) i"
            ));
            rounds += 1;
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        (load.join().unwrap(), (rounds, flowed))
    });
    let (rounds, flowed) = rounds;
    assert!(out.status.success(), "{}", text(&out));
    let flowed: u64 = flowed
        .flatten()
        .expect("a compaction during the load")
        .parse()
        .unwrap();
    assert!(flowed > 0, "rows reached the target during the load");
    assert!(
        rounds >= 5,
        "the workload ran beside the load: {rounds} rounds"
    );

    // One snapshot: every key at most once among the snapshot reads.
    let mut seen = std::collections::HashMap::new();
    for e in p.events().iter().filter(|e| e["snapshot"] == true) {
        if let Some(first) = seen.insert(e["key"].to_string(), e.clone()) {
            panic!("twice in the snapshot:\n{first}\n{e}");
        }
    }

    let mut capture = p.spawn_db_sync(&["capture"]);
    sql.exec("INSERT INTO marker VALUES (DEFAULT)");
    wait_for_marker(&p, &mut capture, "public.marker", SNAPSHOT_WAIT);
    let log = capture.log();
    assert_eq!(capture.terminate(STOP_WAIT), 0, "{log}");
    compact(&p);
    let query = "SELECT id, n, md5(body) FROM big ORDER BY id";
    assert_eq!(
        lines(my.rows(query)),
        lines(sql.rows(query)),
        "the target equals the source"
    );
}

#[test]
fn a_table_never_analyzed_is_sized_from_a_sample_of_its_rows() {
    // As the loader leaves a table: filled, and not analyzed (autovacuum kept off here).
    let p = Pipeline::new(
        "sizing",
        "CREATE TABLE narrow (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false);
         INSERT INTO narrow SELECT i, md5(i::text) FROM generate_series(1, 5000) i;
         CREATE TABLE wide (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false);
         INSERT INTO wide SELECT i, (SELECT string_agg(md5(i::text || g::text), '') FROM generate_series(1, 1000) g)
           FROM generate_series(1, 200) i;",
        "public.narrow,public.wide",
    );
    p.write_config_with(&pg_password(), p.port, "");
    let config = db_sync::config::Config::load(&p.config_path()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let size = |include: &str| {
        rt.block_on(db_sync::source::sizes::largest_row(&config, include))
            .unwrap()
    };
    let narrow = size("public.narrow").expect("measured without statistics");
    assert!((30.0..200.0).contains(&narrow), "{narrow}");
    let wide = size("public.narrow,public.wide").expect("measured without statistics");
    assert!(
        wide > db_sync::capture::sizing::SMALL_ROW_BYTES,
        "rows of 32 kB: {wide}"
    );
}

#[test]
fn a_table_that_joins_is_loaded_alone_and_a_crash_in_its_load_resumes_it() {
    let (mut p, my, extra) = small_ranges(
        "loadjoin",
        &format!("CREATE TABLE a (id int PRIMARY KEY, v text); INSERT INTO a VALUES (1, 'a'), (2, 'a');{BIG}"),
        "public.a,public.marker",
    );
    let out = p.db_sync(&["capture", "--exit-after-snapshot"]);
    assert!(out.status.success(), "{}", text(&out));

    // `big` joins; its load is killed part way, and written meanwhile.
    p.tables = "public.a,public.big,public.marker".into();
    p.write_config_with(&pg_password(), p.port, &extra);
    crash_at(&p, "loader.after_append:3");
    let (done, ranges) = done_ranges(&p);
    assert!(done == 2 && ranges > 10, "{done} of {ranges}");
    let sql = p.sql();
    sql.exec("UPDATE big SET n = -n WHERE id % 7 = 0");
    sql.exec("DELETE FROM big WHERE id % 11 = 0");
    sql.exec("UPDATE a SET v = 'streamed' WHERE id = 1");

    let mut capture = p.spawn_db_sync(&["capture"]);
    sql.exec("INSERT INTO marker VALUES (DEFAULT)");
    wait_for_marker(&p, &mut capture, "public.marker", SNAPSHOT_WAIT);
    let log = capture.log();
    assert_eq!(capture.terminate(STOP_WAIT), 0, "{log}");
    assert!(log.contains("public.big joined the pipeline"), "{log}");
    assert!(log.contains("continuing"), "{log}");
    let events = p.events();
    let reads = |t: &str| {
        events
            .iter()
            .filter(|e| e["table"] == t && e["snapshot"] == true)
            .count()
    };
    assert_eq!(reads("public.a"), 2, "a is not read again");
    assert!(reads("public.big") > 15000, "{}", reads("public.big"));

    compact(&p);
    for query in [
        "SELECT id, n, md5(body) FROM big ORDER BY id",
        "SELECT id, v FROM a ORDER BY id",
    ] {
        assert_eq!(lines(my.rows(query)), lines(sql.rows(query)), "{query}");
    }
}
