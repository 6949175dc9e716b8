//! The audit stage against a journal written through the journal API and a `file://` store,
//! read back with the parquet crate. (Integration tests cover the real source and DuckDB.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Decimal128Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::*;
use crate::audit::TABLE_SCHEMA_METADATA;
use crate::compact::DEFAULT_UNAVAILABLE_PLACEHOLDER;
use crate::config::Config;
use crate::journal::event::encode::{text as s, varint, zigzag as zz};
use crate::journal::{self, event, Journal};
use crate::state::{AuditProgress, Window};
use crate::types::TableSchema;

/// One cycle (lock, audit, GC; these configs have no target) and what its audit did.
async fn compact_once(config: &Config) -> Result<Option<Summary>, crate::cycle::CycleError> {
    crate::cycle::run_once(config).await.map(|s| s.audit)
}

const SCHEMA: &str = r#"{"table":"public.t","topic":"x.public.t",
 "key":{"type":"struct","optional":false,"fields":[{"field":"id","type":"int64","optional":false}]},
 "row":{"type":"struct","optional":true,"fields":[
  {"field":"id","type":"int64","optional":false},
  {"field":"amount","type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2","connect.decimal.precision":"10"}},
  {"field":"at","type":"string","optional":true,"name":"io.debezium.time.ZonedTimestamp"},
  {"field":"day","type":"int32","optional":true,"name":"io.debezium.time.Date"},
  {"field":"tags","type":"array","optional":true,"items":{"type":"string","optional":true}},
  {"field":"big","type":"string","optional":true},
  {"field":"geo","type":"struct","optional":true,"name":"io.debezium.data.geometry.Point","fields":[{"field":"x","type":"float64","optional":false}]}
 ]}}"#;

const DAY_US: i64 = 86_400_000_000;

struct Row<'a> {
    id: i64,
    amount: Option<i64>,
    at: Option<&'a str>,
    day: Option<i32>,
    tags: Option<Vec<Option<&'a str>>>,
    big: Option<&'a str>,
}

fn row(out: &mut Vec<u8>, r: &Row<'_>) {
    let mut bitmap = 0u8;
    let present = [
        true,
        r.amount.is_some(),
        r.at.is_some(),
        r.day.is_some(),
        r.tags.is_some(),
        r.big.is_some(),
        false,
    ];
    for (i, p) in present.iter().enumerate() {
        if !p {
            bitmap |= 1 << i;
        }
    }
    out.push(bitmap);
    zz(out, r.id);
    if let Some(a) = r.amount {
        zz(out, 2);
        let bytes = (a as i128).to_be_bytes();
        varint(out, 16);
        out.extend_from_slice(&bytes);
    }
    if let Some(at) = r.at {
        s(out, at);
    }
    if let Some(d) = r.day {
        zz(out, d as i64);
    }
    if let Some(tags) = &r.tags {
        varint(out, tags.len() as u64);
        for t in tags {
            match t {
                Some(t) => {
                    out.push(1);
                    s(out, t);
                }
                None => out.push(0),
            }
        }
    }
    if let Some(b) = r.big {
        s(out, b);
    }
}

fn body(
    op: u8,
    ts_us: i64,
    pos: (u64, u64),
    before: Option<&Row<'_>>,
    after: Option<&Row<'_>>,
) -> Vec<u8> {
    let mut flags = event::PG_POSITION | event::KEY;
    if before.is_some() {
        flags |= event::BEFORE;
    }
    if after.is_some() {
        flags |= event::AFTER;
    }
    if op == b'r' {
        flags |= event::SNAPSHOT;
    }
    let mut b = vec![op, flags];
    b.extend_from_slice(&ts_us.to_le_bytes());
    b.extend_from_slice(&pos.0.to_le_bytes());
    b.extend_from_slice(&pos.1.to_le_bytes());
    let id = after.or(before).map(|r| r.id).unwrap_or(0);
    b.push(0);
    zz(&mut b, id);
    if let Some(r) = before {
        row(&mut b, r);
    }
    if let Some(r) = after {
        row(&mut b, r);
    }
    b
}

fn config(root: &Path) -> Config {
    let text = format!(
        "name: t\nsource:\n  connector.class: io.debezium.connector.postgresql.PostgresConnector\njournal:\n  dir: {j}\n  retain_hours: 0\naudit:\n  url: file://{a}\n  batch_rows: 2\n",
        j = root.join("journal").display(),
        a = root.join("audit").display()
    );
    Config::parse(Path::new("c.yaml"), &text, &|_| None).unwrap()
}

fn full(id: i64) -> Row<'static> {
    Row {
        id,
        amount: Some(-1250),
        at: Some("1969-12-31T23:59:59.999999Z"),
        day: Some(-1),
        tags: Some(vec![Some("a"), None]),
        big: Some("large text"),
    }
}

/// The table schema an audit file carries in its metadata.
fn schema_metadata(path: &Path) -> TableSchema {
    let file = std::fs::File::open(path).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap();
    let json = kv
        .iter()
        .find(|kv| kv.key == TABLE_SCHEMA_METADATA)
        .and_then(|kv| kv.value.clone())
        .expect("the file carries its table schema");
    TableSchema::from_json(json.as_bytes()).unwrap()
}

fn read(path: &Path) -> RecordBatch {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

fn parquet_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Five changes of `public.t` over two days: a snapshot row, an insert, an update with
/// unchanged TOAST values, a delete and an insert with an empty array.
fn journal_two_days(config: &Config, day1: i64, day2: i64) {
    let mut j = Journal::open(&config.journal.dir, 1 << 20).unwrap();
    let id = j.schema_id(SCHEMA.as_bytes()).unwrap();
    let mut toasted = full(1);
    toasted.big = Some(DEFAULT_UNAVAILABLE_PLACEHOLDER);
    toasted.tags = Some(vec![Some(DEFAULT_UNAVAILABLE_PLACEHOLDER)]);
    let key_only = Row {
        id: 2,
        amount: None,
        at: None,
        day: None,
        tags: None,
        big: None,
    };
    let events = [
        body(b'r', day1, (0, 1), None, Some(&full(1))),
        body(b'c', day1, (10, 11), None, Some(&full(2))),
        body(b'u', day1, (12, 13), None, Some(&toasted)),
        body(b'd', day2, (14, 15), Some(&key_only), None),
        body(
            b'c',
            day2,
            (16, 17),
            None,
            Some(&Row {
                id: 3,
                amount: Some(i64::from(i32::MAX)),
                at: None,
                day: None,
                tags: Some(vec![]),
                big: None,
            }),
        ),
    ];
    j.append(events.iter().map(|e| (id, &e[..]))).unwrap();
}

/// Each file carries its table's Connect schema, key included.
fn assert_connect_schemas(files: &[PathBuf]) {
    for f in files {
        let schema = schema_metadata(f);
        assert_eq!(schema.table, "public.t");
        let key: Vec<&str> = schema
            .key
            .as_ref()
            .unwrap()
            .fields
            .iter()
            .map(|f| f.field_name())
            .collect();
        assert_eq!(key, ["id"]);
        assert_eq!(
            schema.row.fields.len(),
            TableSchema::from_json(SCHEMA.as_bytes())
                .unwrap()
                .row
                .fields
                .len()
        );
    }
}

/// The first day's file: typed columns, the `_cdc_` columns, unchanged TOAST named.
fn assert_first_day(file: &Path) {
    let b = read(file);
    let schema = b.schema();
    assert_eq!(
        schema.field_with_name("amount").unwrap().data_type(),
        &DataType::Decimal128(10, 2)
    );
    assert_eq!(
        schema.field_with_name("at").unwrap().data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(
        schema.field_with_name("day").unwrap().data_type(),
        &DataType::Date32
    );
    assert_eq!(
        schema.field_with_name("geo").unwrap().data_type(),
        &DataType::Utf8,
        "unknown → text"
    );
    let amount = b
        .column_by_name("amount")
        .unwrap()
        .as_primitive::<Decimal128Type>();
    assert_eq!(amount.value(0), -1250);
    let at = b
        .column_by_name("at")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    assert_eq!(at.value(0), -1);
    let ops = b.column_by_name("_cdc_op").unwrap().as_string::<i32>();
    assert_eq!((ops.value(0), ops.value(1), ops.value(2)), ("r", "c", "u"));
    let snap = b.column_by_name("_cdc_snapshot").unwrap().as_boolean();
    assert!(snap.value(0) && !snap.value(1));
    let pos = b
        .column_by_name("_cdc_position")
        .unwrap()
        .as_string::<i32>();
    assert_eq!(pos.value(1), "0/B");
    // The unchanged TOAST values: null, and named in _cdc_unchanged.
    let big = b.column_by_name("big").unwrap();
    assert!(!big.is_null(1) && big.is_null(2));
    assert!(b.column_by_name("tags").unwrap().is_null(2));
    let unchanged = b.column_by_name("_cdc_unchanged").unwrap().as_list::<i32>();
    assert_eq!(unchanged.value(0).len(), 0);
    let listed = unchanged.value(2);
    let listed = listed.as_string::<i32>();
    assert_eq!((listed.value(0), listed.value(1)), ("tags", "big"));
}

/// The second day's file: the delete's before-image, an empty array kept empty.
fn assert_second_day(file: &Path) {
    let b2 = read(file);
    let seq = b2
        .column_by_name("_cdc_seq")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert_eq!((seq.value(0), seq.value(1)), (4, 5));
    // The delete row holds the before-image: its key, other columns null.
    let id = b2.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    assert_eq!(id.value(0), 2);
    assert!(b2.column_by_name("amount").unwrap().is_null(0));
    let tags = b2.column_by_name("tags").unwrap().as_list::<i32>();
    assert!(
        !tags.is_null(1) && tags.value(1).is_empty(),
        "an empty array stays empty"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_typed_files_per_table_and_day_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let day1 = 20_000 * DAY_US + 5;
    let day2 = 20_001 * DAY_US + 7;
    journal_two_days(&config, day1, day2);
    let summary = compact_once(&config).await.unwrap().expect("work done");
    assert_eq!(
        (
            summary.from,
            summary.to,
            summary.events,
            summary.files,
            summary.tables
        ),
        (1, 5, 5, 2, 1)
    );

    let audit = tmp.path().join("audit");
    let files = parquet_files(&audit);
    let names: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(&audit).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        vec![
            "public.t/date=2024-10-04/1-3.parquet",
            "public.t/date=2024-10-05/4-5.parquet"
        ]
    );
    assert_connect_schemas(&files);
    assert_first_day(&files[0]);
    assert_second_day(&files[1]);

    // Nothing new: nothing written. The audited segment is gone (retain_hours: 0).
    assert_eq!(compact_once(&config).await.unwrap(), None);
    assert_eq!(parquet_files(&audit), files);
    let m = AuditProgress::load(&config.journal.dir).unwrap();
    assert_eq!(
        (m.audited_through, m.pending.is_none(), m.windows.len()),
        (5, true, 1)
    );
    assert_eq!(
        journal::segments(&config.journal.dir).unwrap().len(),
        1,
        "only the active segment is left"
    );

    // `status` reports the same progress.
    let status = crate::status::collect(&config).unwrap();
    assert_eq!(
        (
            status.last_journaled_seq,
            status.audited_through,
            status.audit_lag_events
        ),
        (5, 5, 0)
    );
    assert_eq!(
        status.last_audit_window.map(|w| (w.events, w.files)),
        Some((5, 2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_window_is_redone_under_the_same_names() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    {
        let mut j = Journal::open(&config.journal.dir, 1 << 20).unwrap();
        let id = j.schema_id(SCHEMA.as_bytes()).unwrap();
        let events: Vec<Vec<u8>> = (1..=3)
            .map(|i| body(b'c', DAY_US, (i, i), None, Some(&full(i as i64))))
            .collect();
        j.append(events.iter().map(|e| (id, &e[..]))).unwrap();
    }
    // A crash after the window was recorded: the progress says pending 1..=3.
    journal::seal(&config.journal.dir, 1 << 20, Duration::from_secs(1)).unwrap();
    let m = AuditProgress {
        pending: Some(Window {
            from: 1,
            to: 3,
            events: 0,
            files: 0,
            finished_at: None,
        }),
        ..AuditProgress::default()
    };
    m.store(&config.journal.dir).unwrap();
    // More events arrive before the re-run; they must not join the redone window.
    {
        let mut j = Journal::open(&config.journal.dir, 1 << 20).unwrap();
        let id = j.schema_id(SCHEMA.as_bytes()).unwrap();
        let e = body(b'c', DAY_US, (9, 9), None, Some(&full(9)));
        j.append([(id, &e[..])]).unwrap();
    }
    let first = compact_once(&config).await.unwrap().unwrap();
    assert_eq!((first.from, first.to), (1, 3));
    let second = compact_once(&config).await.unwrap().unwrap();
    assert_eq!((second.from, second.to), (4, 4));
    let names: Vec<String> = parquet_files(&tmp.path().join("audit"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, vec!["1-3.parquet", "4-4.parquet"]);
}

#[tokio::test]
async fn a_missing_bucket_directory_for_file_urls_is_created_and_bad_options_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = config(tmp.path());
    config.audit.url = format!("file://{}/x", tmp.path().display());
    config.audit.options = crate::config::Props(
        [(
            "region".to_string(),
            crate::config::SourceValue::Str("r".into()),
        )]
        .into(),
    );
    std::fs::create_dir_all(&config.journal.dir).unwrap();
    let e = compact_once(&config).await.unwrap_err().to_string();
    assert!(e.contains("audit.options apply to s3:// only"), "{e}");
}

/// Footer statistics that prune: every row group carries min/max of `_cdc_seq`, `_cdc_ts` and the
/// key, the file has a page index (column and offset index) for them, and declares its `_cdc_seq`
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_carry_statistics_a_page_index_and_their_sort_order() {
    use parquet::arrow::arrow_reader::ArrowReaderOptions;
    use parquet::file::metadata::PageIndexPolicy;
    use parquet::file::statistics::Statistics;

    use crate::types::cdc;

    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path()); // batch_rows: 2, so 5 events make 3 row groups
    let day = 20_000 * DAY_US;
    {
        let mut j = Journal::open(&config.journal.dir, 1 << 20).unwrap();
        let id = j.schema_id(SCHEMA.as_bytes()).unwrap();
        let events: Vec<Vec<u8>> = (0..5)
            .map(|i| {
                body(
                    b'c',
                    day + i * 1000,
                    (10 + i as u64, 11),
                    None,
                    Some(&full(100 - i)),
                )
            })
            .collect();
        j.append(events.iter().map(|e| (id, &e[..]))).unwrap();
    }
    compact_once(&config).await.unwrap().expect("work done");
    let files = parquet_files(&tmp.path().join("audit"));
    assert_eq!(files.len(), 1);
    let file = std::fs::File::open(&files[0]).unwrap();
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options).unwrap();
    let meta = builder.metadata();
    let descr = meta.file_metadata().schema_descr();
    let leaf = |name: &str| {
        descr
            .columns()
            .iter()
            .position(|c| c.path().string() == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    };
    let (seq, ts, key) = (leaf(cdc::SEQ), leaf(cdc::TS), leaf("id"));
    assert_eq!(meta.num_row_groups(), 3);
    let mut ranges = Vec::new();
    for (g, rg) in meta.row_groups().iter().enumerate() {
        let int64 = |c: usize| match rg.column(c).statistics() {
            Some(Statistics::Int64(s)) => (*s.min_opt().unwrap(), *s.max_opt().unwrap()),
            other => panic!("row group {g} column {c}: no int64 statistics: {other:?}"),
        };
        ranges.push((int64(seq), int64(ts), int64(key)));
        assert_eq!(
            rg.sorting_columns().map(|s| s.as_slice()),
            Some(
                &[parquet::file::metadata::SortingColumn {
                    column_idx: seq as i32,
                    descending: false,
                    nulls_first: false
                }][..]
            ),
            "row group {g} declares its _cdc_seq order"
        );
    }
    assert_eq!(
        ranges,
        vec![
            ((1, 2), (day, day + 1000), (99, 100)),
            ((3, 4), (day + 2000, day + 3000), (97, 98)),
            ((5, 5), (day + 4000, day + 4000), (96, 96)),
        ]
    );
    // The page index: a column index (page min/max) and an offset index (page locations)
    // per column chunk, written after the row groups.
    for (g, rg) in meta.row_groups().iter().enumerate() {
        for c in [seq, ts, key] {
            let chunk = rg.column(c);
            assert!(
                chunk.column_index_range().is_some_and(|r| !r.is_empty()),
                "row group {g} column {c} has a column index"
            );
            assert!(
                chunk.offset_index_range().is_some_and(|r| !r.is_empty()),
                "row group {g} column {c} has an offset index"
            );
        }
    }
}

/// What keeps files small ([`writer_properties`]): `_cdc_seq` and `_cdc_ts` as deltas with no
/// dictionary, a dictionary for a column of few values, and a column of distinct values back to
/// `PLAIN` after its first page (parquet's default limit kept a dictionary of every value).
#[test]
fn sequence_and_time_are_deltas_and_dictionaries_stay_where_they_pay() {
    use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Encoding, PageType};
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use crate::types::cdc;

    let rows = 4 * PAGE_ROWS as i64;
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(cdc::OP, DataType::Utf8, false),
        Field::new(cdc::SEQ, DataType::Int64, false),
        Field::new(
            cdc::TS,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let columns: Vec<ArrayRef> = vec![
        // Distinct keys in no order.
        std::sync::Arc::new(Int64Array::from_iter_values(
            (0..rows).map(|i| i * 7919 % 1_000_003),
        )),
        std::sync::Arc::new(StringArray::from_iter_values(
            (0..rows).map(|i| ["c", "u", "d"][i as usize % 3]),
        )),
        // A table's share of the journal: increasing, with gaps.
        std::sync::Arc::new(Int64Array::from_iter_values((0..rows).map(|i| 10 + 3 * i))),
        // Commit times: a few events per transaction.
        std::sync::Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                (0..rows).map(|i| 20_000 * DAY_US + i / 4 * 1500),
            )
            .with_timezone("UTC"),
        ),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("f.parquet");
    let file = std::fs::File::create(&path).unwrap();
    let props = writer_properties(65_536, &schema);
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    assert_eq!(read(&path), batch, "the rows read back as written");

    let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(reader.metadata().num_row_groups(), 1);
    let group = reader.get_row_group(0).unwrap();
    let pages = |c: usize| -> Vec<(PageType, Encoding)> {
        group
            .get_column_page_reader(c)
            .unwrap()
            .map(|p| {
                let p = p.unwrap();
                (p.page_type(), p.encoding())
            })
            .collect()
    };
    let delta = vec![(PageType::DATA_PAGE, Encoding::DELTA_BINARY_PACKED); 4];
    assert_eq!(pages(2), delta, "_cdc_seq: deltas, {PAGE_ROWS} rows a page");
    assert_eq!(pages(3), delta, "_cdc_ts: deltas, {PAGE_ROWS} rows a page");
    let op = pages(1);
    assert_eq!(op[0], (PageType::DICTIONARY_PAGE, Encoding::PLAIN));
    assert!(
        op[1..]
            .iter()
            .all(|p| *p == (PageType::DATA_PAGE, Encoding::RLE_DICTIONARY)),
        "_cdc_op keeps its dictionary: {op:?}"
    );
    let id = pages(0);
    assert_eq!(
        id[..2],
        [
            (PageType::DICTIONARY_PAGE, Encoding::PLAIN),
            (PageType::DATA_PAGE, Encoding::RLE_DICTIONARY)
        ]
    );
    assert!(
        id.len() > 2
            && id[2..]
                .iter()
                .all(|p| *p == (PageType::DATA_PAGE, Encoding::PLAIN)),
        "distinct keys fall back to PLAIN after the first page: {id:?}"
    );
}
