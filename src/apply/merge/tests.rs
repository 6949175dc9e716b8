//! The merge against a model: applying the merged plan to the target state before a window
//! must give the state that applying every change one by one gives.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, ListBuilder, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use proptest::prelude::*;

use super::*;

fn table() -> Arc<TableSchema> {
    Arc::new(
        TableSchema::from_json(
            br#"{"table":"public.t","topic":"x",
                "key":{"type":"struct","fields":[{"field":"k","type":"int64"}]},
                "row":{"type":"struct","fields":[{"field":"k","type":"int64"},
                    {"field":"a","type":"int64","optional":true},
                    {"field":"t","type":"string","optional":true}]}}"#,
        )
        .unwrap(),
    )
}

/// One change as the audit file holds it.
#[derive(Debug, Clone)]
struct Change {
    op: &'static str,
    k: i64,
    a: Option<i64>,
    /// `None`: unchanged (not sent).
    t: Option<String>,
}

/// The audit schema of the test table with `columns` before the `_cdc_` columns.
fn audit_schema(columns: &[(&str, DataType)]) -> Arc<Schema> {
    let mut fields: Vec<Field> = columns
        .iter()
        .map(|(name, ty)| Field::new(*name, ty.clone(), true))
        .collect();
    fields.extend([
        Field::new("_cdc_op", DataType::Utf8, false),
        Field::new("_cdc_seq", DataType::Int64, false),
        Field::new(
            "_cdc_unchanged",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
    ]);
    Arc::new(Schema::new(fields))
}

fn batch(changes: &[Change], first_seq: i64) -> RecordBatch {
    let schema = audit_schema(&[
        ("k", DataType::Int64),
        ("a", DataType::Int64),
        ("t", DataType::Utf8),
    ]);
    let mut unchanged = ListBuilder::new(StringBuilder::new());
    for c in changes {
        if c.t.is_none() && c.op != "d" {
            unchanged.values().append_value("t");
        }
        unchanged.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(changes.iter().map(|c| c.k))),
        Arc::new(Int64Array::from_iter(changes.iter().map(|c| c.a))),
        Arc::new(StringArray::from_iter(changes.iter().map(|c| c.t.clone()))),
        Arc::new(StringArray::from_iter_values(changes.iter().map(|c| c.op))),
        Arc::new(Int64Array::from_iter_values(
            (0..changes.len() as i64).map(|i| first_seq + i),
        )),
        Arc::new(unchanged.finish()),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

type Row = (Option<i64>, Option<String>);

fn text(cell: Cell<'_>) -> Option<String> {
    match cell {
        Cell::Value(v) => Some(String::from_utf8(v.to_vec()).unwrap()),
        Cell::Null => None,
        other => panic!("unexpected {other:?}"),
    }
}

/// Applies a plan the way the target does: deletes, then upserts of the sent columns.
fn apply(plan: &TablePlan, target: &mut BTreeMap<i64, Row>) {
    let key = |k: &[u8]| {
        text(cells(k).next().unwrap())
            .unwrap()
            .parse::<i64>()
            .unwrap()
    };
    for k in &plan.deletes {
        target.remove(&key(k));
    }
    for g in &plan.upserts {
        let names = &plan.versions[g.version].columns;
        for (k, row) in &g.rows {
            let entry = target.entry(key(k)).or_insert((None, None));
            for (i, cell) in cells(row).enumerate() {
                if !g.columns.contains(&i) {
                    assert_eq!(cell, Cell::Unchanged);
                    continue;
                }
                match names[i].as_str() {
                    "a" => entry.0 = text(cell).map(|v| v.parse().unwrap()),
                    "t" => entry.1 = text(cell),
                    _ => {}
                }
            }
        }
    }
}

/// Turns random picks into a valid change stream (updates and deletes only of present keys)
/// and applies it one change at a time to `model`.
fn changes(picks: &[(u8, i64, i64, bool)], model: &mut BTreeMap<i64, Row>) -> Vec<Change> {
    let mut out = Vec::new();
    for (n, &(kind, k, a, unchanged)) in picks.iter().enumerate() {
        let t = format!("t{n}");
        let present = model.contains_key(&k);
        match (kind % 4, present) {
            (0, false) | (1, false) => {
                out.push(Change {
                    op: "c",
                    k,
                    a: Some(a),
                    t: Some(t.clone()),
                });
                model.insert(k, (Some(a), Some(t)));
            }
            (1, true) | (0, true) => {
                let sent = (!unchanged).then(|| t.clone());
                out.push(Change {
                    op: "u",
                    k,
                    a: Some(a),
                    t: sent.clone(),
                });
                let row = model.get_mut(&k).unwrap();
                row.0 = Some(a);
                if let Some(t) = sent {
                    row.1 = Some(t);
                }
            }
            (2, true) => {
                out.push(Change {
                    op: "d",
                    k,
                    a: None,
                    t: None,
                });
                model.remove(&k);
            }
            (3, true) => {
                // A key change: Debezium's delete of the old key and create of the new one.
                let to = (k + 1) % 6;
                if model.contains_key(&to) {
                    continue;
                }
                let row = model.remove(&k).unwrap();
                out.push(Change {
                    op: "d",
                    k,
                    a: None,
                    t: None,
                });
                out.push(Change {
                    op: "c",
                    k: to,
                    a: row.0,
                    t: row.1.clone(),
                });
                model.insert(to, row);
            }
            _ => {}
        }
    }
    out
}

proptest! {
    #[test]
    fn merged_plan_equals_change_by_change(
        before in proptest::collection::vec((0u8..4, 0i64..6, 0i64..100, any::<bool>()), 0..12),
        window in proptest::collection::vec((0u8..4, 0i64..6, 0i64..100, any::<bool>()), 0..60),
        split in 0usize..60,
    ) {
        let mut model = BTreeMap::new();
        changes(&before, &mut model);
        let mut target = model.clone();
        let window = changes(&window, &mut model);
        let split = split.min(window.len());
        let mut merger = Merger::default();
        let t = table();
        if split > 0 {
            merger.push(&t, &batch(&window[..split], 1)).unwrap();
        }
        if split < window.len() {
            merger.push(&t, &batch(&window[split..], 1 + split as i64)).unwrap();
        }
        for plan in merger.finish() {
            apply(&plan, &mut target);
        }
        prop_assert_eq!(target, model);
    }
}

#[test]
fn insert_delete_reinsert_leaves_the_row() {
    let c = |op, a| Change {
        op,
        k: 1,
        a,
        t: Some("x".into()),
    };
    let mut merger = Merger::default();
    merger
        .push(
            &table(),
            &batch(&[c("c", Some(1)), c("d", None), c("c", Some(3))], 10),
        )
        .unwrap();
    let plans = merger.finish();
    assert!(plans[0].deletes.is_empty());
    assert_eq!(plans[0].upserts[0].rows.len(), 1);
    let mut target = BTreeMap::new();
    apply(&plans[0], &mut target);
    assert_eq!(target[&1], (Some(3), Some("x".to_string())));
}

#[test]
fn journal_order_is_required() {
    let c = Change {
        op: "c",
        k: 1,
        a: None,
        t: None,
    };
    let mut merger = Merger::default();
    merger
        .push(&table(), &batch(std::slice::from_ref(&c), 5))
        .unwrap();
    let e = merger.push(&table(), &batch(&[c], 5)).unwrap_err();
    assert!(matches!(e, MergeError::Order { .. }), "{e}");
}

#[test]
fn unchanged_columns_are_filled_across_schema_versions() {
    // Version 2 adds a column before `t`; the unchanged `t` still finds its earlier value.
    let mut merger = Merger::default();
    let t = table();
    merger
        .push(
            &t,
            &batch(
                &[Change {
                    op: "u",
                    k: 1,
                    a: Some(1),
                    t: Some("big".into()),
                }],
                1,
            ),
        )
        .unwrap();
    let schema = audit_schema(&[
        ("k", DataType::Int64),
        ("n", DataType::Int64),
        ("t", DataType::Utf8),
    ]);
    let mut unchanged = ListBuilder::new(StringBuilder::new());
    unchanged.values().append_value("t");
    unchanged.append(true);
    let v2 = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(Int64Array::from(vec![7])),
            Arc::new(StringArray::from(vec![None::<&str>])),
            Arc::new(StringArray::from(vec!["u"])),
            Arc::new(Int64Array::from(vec![2])),
            Arc::new(unchanged.finish()),
        ],
    )
    .unwrap();
    merger.push(&t, &v2).unwrap();
    let plans = merger.finish();
    let g = &plans[0].upserts[0];
    assert_eq!((g.version, g.columns.clone()), (1, vec![0, 1, 2]));
    let row: Vec<Cell<'_>> = cells(&g.rows[0].1).collect();
    assert_eq!(row[2], Cell::Value(b"big"));
    assert_eq!(describe_key(&plans[0].key, &g.rows[0].0), "k=1");
}
