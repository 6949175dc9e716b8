//! Window planning: where windows end, which changes are superseded, and (the property that
//! matters) that merging without the superseded changes gives the same plans as merging all.

use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::apply::merge::Merger;
use crate::journal::event::encode::{text, varint, zigzag as zz};
use crate::journal::Journal;

const SCHEMA: &[u8] = br#"{"table":"public.t","topic":"t.public.t","key":{"type":"struct","optional":false,"fields":[{"field":"id","type":"int64","optional":false}]},"row":{"type":"struct","optional":true,"fields":[{"field":"id","type":"int64","optional":false},{"field":"name","type":"string","optional":true},{"field":"n","type":"int64","optional":true}]}}"#;
const PH: &str = "__debezium_unavailable_value";

/// One change of `public.t` as the test builds it.
#[derive(Debug, Clone, PartialEq)]
enum Change {
    /// c/u/r of `id`; `name: None` sends the placeholder (unchanged TOAST).
    Row {
        op: u8,
        id: i64,
        name: Option<String>,
        n: i64,
    },
    Delete(i64),
    /// The delete half of a key change from `id` (its create half, [`Change::Moved`], follows).
    Left(i64),
    /// The create half of a key change from `old` (its delete half comes before it).
    Moved {
        id: i64,
        old: i64,
        name: Option<String>,
    },
}

/// The body the bridge would send for `c`.
fn body(c: &Change) -> Vec<u8> {
    let (op, id, image, old) = match c {
        Change::Row { op, id, name, n } => (*op, *id, Some((name.as_deref(), *n)), None),
        Change::Delete(id) | Change::Left(id) => (b'd', *id, None, None),
        Change::Moved { id, old, name } => (b'c', *id, Some((name.as_deref(), 1)), Some(*old)),
    };
    let mut flags = event::KEY
        | if image.is_some() {
            event::AFTER
        } else {
            event::BEFORE
        };
    if op == b'r' {
        flags |= event::SNAPSHOT;
    }
    let left = matches!(c, Change::Left(_));
    if old.is_some() || left {
        flags |= event::EXT;
    }
    let mut b = vec![op, flags];
    if old.is_some() {
        b.push(event::OLD_KEY);
    }
    if left {
        b.push(event::NEW_KEY);
    }
    b.extend_from_slice(&1_700_000_000_000_000i64.to_le_bytes());
    varint(&mut b, 0); // no position text
    b.push(0);
    zz(&mut b, id);
    match image {
        Some((name, n)) => {
            b.push(0);
            zz(&mut b, id);
            text(&mut b, name.unwrap_or(PH));
            zz(&mut b, n);
        }
        // A delete's before-image: the key, the rest null.
        None => {
            b.push(0b110);
            zz(&mut b, id);
        }
    }
    if let Some(old) = old {
        b.push(0);
        zz(&mut b, old);
    }
    b
}

/// A journal in `dir` holding `changes` as seqs 1..; small segments, so windows cross them.
fn journal(dir: &Path, changes: &[Change]) {
    let mut j = Journal::open(dir, 2048).unwrap();
    let s = j.schema_id(SCHEMA).unwrap();
    for c in changes {
        let b = body(c);
        j.append([(s, &b[..])]).unwrap();
    }
}

fn row(op: u8, id: i64, name: Option<&str>) -> Change {
    Change::Row {
        op,
        id,
        name: name.map(str::to_string),
        n: id * 10,
    }
}

/// An update of `id` with `name` and `n` = 0.
fn row_n(id: i64, name: &str) -> Change {
    Change::Row {
        op: b'u',
        id,
        name: Some(name.to_string()),
        n: 0,
    }
}

fn plan(through: u64, snapshot_events: u64, max_events: u64, merged_bytes: usize) -> End {
    End::Plan {
        through,
        snapshot_events,
        max_events,
        merged_bytes,
    }
}

fn superseded(s: &Scan) -> Vec<u64> {
    (s.from..=s.to)
        .filter(|&q| s.superseded(q, "public.t"))
        .collect()
}

#[test]
fn a_change_replaced_whole_later_is_superseded() {
    let tmp = tempfile::tempdir().unwrap();
    journal(
        tmp.path(),
        &[
            row(b'c', 1, Some("a")), // 1: replaced by 3
            row(b'c', 2, Some("b")), // 2: replaced by 4 (a delete)
            row(b'u', 1, Some("c")), // 3: kept: 5 takes its name
            Change::Delete(2),       // 4
            row(b'u', 1, None),      // 5: unchanged name
            row(b'u', 3, None),      // 6
            row(b'u', 3, Some("d")), // 7: replaces 6
            row(b'u', 3, None),      // 8
            row(b'u', 3, Some("e")), // 9: replaces 6..8 (6 already)
        ],
    );
    let s = scan(tmp.path(), 1, End::Exact(9), PH).unwrap().unwrap();
    assert_eq!((s.from, s.to, s.events), (1, 9, 9));
    assert_eq!(superseded(&s), vec![1, 2, 6, 7, 8]);
    // A window that ends before the replacing change keeps what it replaces.
    let s = scan(tmp.path(), 1, End::Exact(4), PH).unwrap().unwrap();
    assert_eq!(superseded(&s), vec![1, 2]);
    let s = scan(tmp.path(), 4, End::Exact(9), PH).unwrap().unwrap();
    assert_eq!(superseded(&s), vec![6, 7, 8]);
}

#[test]
fn a_window_ends_where_the_source_changed_the_tables_key() {
    // The same table, keyed by (id, n) from its third change on.
    let wider = String::from_utf8(SCHEMA.to_vec()).unwrap().replace(
        r#""key":{"type":"struct","optional":false,"fields":[{"field":"id","type":"int64","optional":false}]}"#,
        r#""key":{"type":"struct","optional":false,"fields":[{"field":"id","type":"int64","optional":false},{"field":"n","type":"int64","optional":false}]}"#,
    );
    assert_ne!(wider.as_bytes(), SCHEMA);
    let wide_body = |id: i64, n: i64| {
        let mut b = vec![b'c', event::KEY | event::AFTER];
        b.extend_from_slice(&1_700_000_000_000_000i64.to_le_bytes());
        varint(&mut b, 0);
        b.push(0);
        zz(&mut b, id);
        zz(&mut b, n);
        b.push(0);
        zz(&mut b, id);
        text(&mut b, "w");
        zz(&mut b, n);
        b
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut j = Journal::open(tmp.path(), 1 << 20).unwrap();
    let narrow = j.schema_id(SCHEMA).unwrap();
    let wide = j.schema_id(wider.as_bytes()).unwrap();
    for (schema, b) in [
        (narrow, body(&row(b'c', 1, Some("a")))),
        (narrow, body(&row(b'c', 2, Some("b")))),
        (wide, wide_body(1, 7)),
        (wide, wide_body(1, 8)),
    ] {
        j.append([(schema, &b[..])]).unwrap();
    }
    let big = plan(4, 1 << 20, 1 << 20, 1 << 30);
    let s = scan(tmp.path(), 1, big, PH).unwrap().unwrap();
    assert_eq!(
        s.to, 2,
        "the window ends before the first change under the new key"
    );
    let s = scan(tmp.path(), 3, big, PH).unwrap().unwrap();
    assert_eq!((s.from, s.to), (3, 4), "the next one starts with it");
    let s = scan(tmp.path(), 1, End::Exact(4), PH).unwrap().unwrap();
    assert_eq!(s.to, 4, "a recorded window is taken as it was recorded");
}

#[test]
fn a_window_never_ends_after_the_delete_half_of_a_key_change() {
    let tmp = tempfile::tempdir().unwrap();
    journal(
        tmp.path(),
        &[
            row(b'u', 1, Some("a")), // 1
            Change::Left(1),         // 2: the audited range ends here
            Change::Moved {
                id: 2,
                old: 1,
                name: None,
            }, // 3: beyond it
            row(b'u', 3, Some("c")), // 4
        ],
    );
    let big = plan(2, 1 << 20, 1 << 20, 1 << 30);
    let s = scan(tmp.path(), 1, big, PH).unwrap().unwrap();
    assert_eq!(s.to, 1, "the window ends before the delete half");
    assert!(
        scan(tmp.path(), 2, big, PH).unwrap().is_none(),
        "nothing to apply until the create half is audited too"
    );
    let s = scan(tmp.path(), 2, plan(3, 1 << 20, 1 << 20, 1 << 30), PH)
        .unwrap()
        .unwrap();
    assert_eq!((s.from, s.to), (2, 3), "then both halves in one window");
    // A recorded window is taken as it was recorded.
    let s = scan(tmp.path(), 1, End::Exact(2), PH).unwrap().unwrap();
    assert_eq!(s.to, 2);
}

#[test]
fn a_key_change_lacking_columns_keeps_what_came_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let moved = |name: Option<&str>| Change::Moved {
        id: 2,
        old: 1,
        name: name.map(str::to_string),
    };
    journal(
        tmp.path(),
        &[
            row(b'u', 1, Some("a")), // 1: replaced by 2
            Change::Delete(1),       // 2: replaced by 4
            moved(Some("sent")),     // 3
            row(b'u', 1, Some("b")), // 4: replaced by 5
            Change::Delete(1),       // 5
            moved(None),             // 6: takes the name from 4
            row(b'u', 3, Some("c")), // 7: replaced by 8
            row(b'u', 3, Some("d")), // 8
        ],
    );
    // The first key change sent every column: the old key's change before it may go.
    let s = scan(tmp.path(), 1, End::Exact(3), PH).unwrap().unwrap();
    assert_eq!(superseded(&s), vec![1]);
    // The second takes the name from the old key's changes: nothing of the table before it
    // is skipped; after it, changes are again, and other tables are not held back.
    let s = scan(tmp.path(), 1, End::Exact(8), PH).unwrap().unwrap();
    assert_eq!(superseded(&s), vec![7]);
    assert!(s.superseded(4, "public.other"));
    // The same from a later start: what is skipped does not depend on where the read began.
    let s = scan(tmp.path(), 5, End::Exact(8), PH).unwrap().unwrap();
    assert_eq!(superseded(&s), vec![7]);
    // A window never ends between the halves of a key change.
    let s = scan(tmp.path(), 1, plan(8, 1 << 20, 1 << 20, 1), PH)
        .unwrap()
        .unwrap();
    assert_eq!(s.to, 1);
    let s = scan(tmp.path(), 2, plan(8, 1 << 20, 1 << 20, 1), PH)
        .unwrap()
        .unwrap();
    assert_eq!(
        s.to, 3,
        "the create half follows its delete half into the window"
    );
    let s = scan(tmp.path(), 2, plan(8, 1 << 20, 1, 1 << 30), PH)
        .unwrap()
        .unwrap();
    assert_eq!(s.to, 3);
}

#[test]
fn a_key_change_replayed_over_a_snapshot_read_of_its_new_key_keeps_the_read_values() {
    // The initial loader read row 2 after the key change 1 → 2 that the slot then replays;
    // the old key 1 is in neither the window nor the target.
    let tmp = tempfile::tempdir().unwrap();
    journal(
        tmp.path(),
        &[
            row(b'r', 2, Some("toasted")),
            Change::Left(1),
            Change::Moved {
                id: 2,
                old: 1,
                name: None,
            },
        ],
    );
    let (plan, _) = merged(tmp.path(), 1, 3, false);
    assert!(plan.contains("moves=[]"), "{plan}");
    let toasted = format!("{:?}", b"toasted");
    assert!(
        plan.contains(toasted.trim_matches(['[', ']'])),
        "the read's value: {plan}"
    );
}

#[test]
fn a_planned_window_is_bounded_by_its_merged_rows_not_its_changes() {
    let tmp = tempfile::tempdir().unwrap();
    // 4 rounds of updates of 30 keys, then 30 more keys; every change the same size.
    let mut changes = Vec::new();
    for round in 0..4 {
        for id in 0..30 {
            changes.push(row_n(id, &format!("round {round}")));
        }
    }
    for id in 30..60 {
        changes.push(row_n(id, "round x"));
    }
    journal(tmp.path(), &changes);
    // Its last change, its key (schema version and key bytes), the map entry.
    let per_key = body(&changes[0]).len() + 4 + 2 + KEY_OVERHEAD;
    // Room for 40 keys: all four rounds fit, and 10 of the new keys.
    let s = scan(tmp.path(), 1, plan(150, 8, 1 << 20, 40 * per_key), PH)
        .unwrap()
        .unwrap();
    assert_eq!((s.to, s.events), (130, 130));
    assert_eq!(superseded(&s).len(), 90);
    // The next window starts where it ended.
    let s = scan(tmp.path(), 131, plan(150, 8, 1 << 20, 40 * per_key), PH)
        .unwrap()
        .unwrap();
    assert_eq!((s.from, s.to), (131, 150));
    // At most max_events changes, never past `through`, at least one change.
    let s = scan(tmp.path(), 1, plan(150, 8, 100, 1 << 30), PH)
        .unwrap()
        .unwrap();
    assert_eq!(s.to, 100);
    let s = scan(tmp.path(), 1, plan(120, 8, 1 << 20, 1 << 30), PH)
        .unwrap()
        .unwrap();
    assert_eq!(s.to, 120);
    let s = scan(tmp.path(), 1, plan(150, 8, 1 << 20, 1), PH)
        .unwrap()
        .unwrap();
    assert_eq!(s.to, 1);
    assert!(scan(tmp.path(), 151, plan(150, 8, 1 << 20, 1 << 30), PH)
        .unwrap()
        .is_none());
    // A recorded window is what it was, even where the journal has nothing.
    let s = scan(tmp.path(), 151, End::Exact(160), PH).unwrap().unwrap();
    assert_eq!((s.from, s.to, s.events), (151, 160, 0));
}

#[test]
fn snapshot_rows_only_stop_at_the_ramp_size() {
    let tmp = tempfile::tempdir().unwrap();
    let mut changes: Vec<Change> = (0..40).map(|id| row(b'r', id, Some("s"))).collect();
    changes.extend((0..40).map(|id| row(b'u', id, Some("u"))));
    journal(tmp.path(), &changes);
    let s = scan(tmp.path(), 1, plan(80, 16, 1 << 20, 1 << 30), PH)
        .unwrap()
        .unwrap();
    assert_eq!(s.to, 16);
    let s = scan(tmp.path(), 25, plan(80, 16, 1 << 20, 1 << 30), PH)
        .unwrap()
        .unwrap();
    assert_eq!(s.to, 40);
    // Once a streaming change is in, the ramp no longer cuts the window.
    let s = scan(tmp.path(), 33, plan(80, 16, 1 << 20, 1 << 30), PH)
        .unwrap()
        .unwrap();
    assert_eq!(s.to, 80);
}

/// The plans of merging `from..=to`, passing over the superseded changes or not; and the
/// changes counted.
fn merged(dir: &Path, from: u64, to: u64, skip: bool) -> (String, u64) {
    let s = scan(dir, from, End::Exact(to), PH).unwrap().unwrap();
    let mut m = Merger::new(true);
    let mut passed = 0u64;
    crate::compact::decode_in_order::<crate::compact::CompactError>(
        dir,
        (from, to),
        PH,
        (3, 1 << 20),
        |seq, table| {
            let yes = skip && s.superseded(seq, table);
            passed += u64::from(yes);
            yes
        },
        |table, batch| {
            m.push(table, &batch).unwrap();
            Ok(())
        },
    )
    .unwrap();
    let changes = m.changes + passed;
    (describe(&m.finish()), changes)
}

/// Everything a plan applies, in order (its schema versions by their columns: their maps'
/// `Debug` order varies).
fn describe(plans: &[crate::apply::merge::TablePlan]) -> String {
    plans
        .iter()
        .map(|p| {
            let versions: Vec<&Vec<String>> = p.versions.iter().map(|v| &v.columns).collect();
            format!(
                "{} {versions:?} {:?} truncate={} deletes={:?} {:?} moves={:?} upserts={:?}",
                p.table, p.key, p.truncate, p.deletes, p.delete_seqs, p.moves, p.upserts
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn change() -> impl Strategy<Value = Vec<Change>> {
    let name = prop_oneof![Just(None), "[a-c]{1,3}".prop_map(Some)];
    prop_oneof![
        4 => (prop::sample::select(vec![b'c', b'u', b'r']), 0i64..5, name.clone(), 0i64..9)
            .prop_map(|(op, id, name, n)| vec![Change::Row { op, id, name, n }]),
        2 => (0i64..5).prop_map(|id| vec![Change::Delete(id)]),
        1 => (0i64..5, 0i64..5, name).prop_map(|(old, id, name)| {
            vec![Change::Left(old), Change::Moved { id, old, name }]
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Merging without the superseded changes gives the very same plans, window by window.
    #[test]
    fn skipping_superseded_changes_changes_no_plan(
        changes in prop::collection::vec(change(), 1..40).prop_map(|v| v.concat()),
        budget in 300usize..3000,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        journal(tmp.path(), &changes);
        let last = changes.len() as u64;
        let mut from = 1;
        while let Some(s) = scan(tmp.path(), from, plan(last, 4, 1 << 20, budget), PH).unwrap() {
            let all = merged(tmp.path(), s.from, s.to, false);
            let skipped = merged(tmp.path(), s.from, s.to, true);
            prop_assert_eq!(&all, &skipped);
            prop_assert_eq!(all.1, s.to - s.from + 1);
            from = s.to + 1;
        }
        prop_assert_eq!(from, last + 1);
    }
}

/// A target table as a map: key cells → row cells (`None`: NULL).
type Model = std::collections::BTreeMap<Vec<u8>, Vec<Option<Vec<u8>>>>;

/// Applies merged plans to `model` the way the target does: truncate, deletes, moves (the row
/// at the old key, else at the new key, takes the sent columns), upserts (sent columns over
/// the row, or a new row with the others NULL).
fn model_apply(model: &mut Model, plans: &[crate::apply::merge::TablePlan]) {
    use crate::apply::merge::{cells, Cell};
    let value = |c: Cell<'_>| match c {
        Cell::Value(v) => Some(v.to_vec()),
        Cell::Bad(b) => Some(b.as_bytes().to_vec()),
        Cell::Null | Cell::Unchanged => None,
    };
    let write = |row: &mut Vec<Option<Vec<u8>>>, sent: &[u8]| {
        for (i, c) in cells(sent).enumerate() {
            if c != Cell::Unchanged {
                row[i] = value(c);
            }
        }
    };
    for p in plans {
        if p.truncate {
            model.clear();
        }
        for k in &p.deletes {
            model.remove(&k[..]);
        }
        for m in &p.moves {
            let mut row = match model.remove(&m.from[..]) {
                Some(row) => row,
                None => model.remove(&m.to[..]).unwrap_or_else(|| vec![None; 3]),
            };
            write(&mut row, &m.cells);
            model.insert(m.to.to_vec(), row);
        }
        for g in &p.upserts {
            for (k, r) in &g.rows {
                let row = model.entry(k.to_vec()).or_insert_with(|| vec![None; 3]);
                write(row, r);
            }
        }
    }
}

/// The target after applying changes 1..=`last` onto ids 0..5 (name "target") in windows
/// planned with `budget` and a snapshot ramp of `ramp`, skipping superseded changes (`skip:
/// false`: one window of everything, nothing skipped).
fn applied(dir: &Path, last: u64, budget: usize, ramp: u64, skip: bool) -> Model {
    let mut model: Model = (0..5)
        .map(|id: i64| {
            let mut k = Vec::new();
            let text = id.to_string();
            crate::apply::merge::push_cell(
                &mut k,
                crate::apply::merge::Cell::Value(text.as_bytes()),
            );
            (
                k,
                vec![
                    Some(id.to_string().into_bytes()),
                    Some(b"target".to_vec()),
                    None,
                ],
            )
        })
        .collect();
    let mut from = 1;
    while from <= last {
        let end = if skip {
            plan(last, ramp, 1 << 20, budget)
        } else {
            End::Exact(last)
        };
        let s = scan(dir, from, end, PH).unwrap().unwrap();
        let mut m = Merger::new(true);
        crate::compact::decode_in_order::<crate::compact::CompactError>(
            dir,
            (from, s.to),
            PH,
            (3, 1 << 20),
            |seq, table| skip && s.superseded(seq, table),
            |table, batch| {
                m.push(table, &batch).unwrap();
                Ok(())
            },
        )
        .unwrap();
        model_apply(&mut model, &m.finish());
        from = s.to + 1;
    }
    model
}

/// A history a source table can have, from ids 0..5 (name "target") on: inserts of absent
/// ids, updates (the name sent, or unchanged TOAST), deletes, key changes to an absent id
/// (the name sent or not), snapshot re-reads. Returns the changes and the names at the end.
fn history() -> impl Strategy<Value = (Vec<Change>, std::collections::BTreeMap<i64, String>)> {
    let name = prop_oneof![Just(None), "[a-c]{1,3}".prop_map(Some)];
    prop::collection::vec((0u8..5, 0i64..7, 0i64..7, name), 1..40).prop_map(|steps| {
        let mut names: std::collections::BTreeMap<i64, String> =
            (0..5).map(|id| (id, "target".to_string())).collect();
        let mut out = Vec::new();
        for (kind, a, b, name) in steps {
            let exists = names.contains_key(&a);
            match kind {
                0 | 1 if !exists => {
                    let n = name.unwrap_or_else(|| "new".into());
                    names.insert(a, n.clone());
                    out.push(row(b'c', a, Some(&n)));
                }
                0 | 1 => {
                    if let Some(n) = &name {
                        names.insert(a, n.clone());
                    }
                    out.push(row(b'u', a, name.as_deref()));
                }
                2 if exists => {
                    names.remove(&a);
                    out.push(Change::Delete(a));
                }
                3 if exists && !names.contains_key(&b) => {
                    let old = names.remove(&a).expect("exists");
                    names.insert(b, name.clone().unwrap_or(old));
                    out.push(Change::Left(a));
                    out.push(Change::Moved {
                        id: b,
                        old: a,
                        name,
                    });
                }
                4 if exists => out.push(row(b'r', a, Some(&names[&a].clone()))),
                _ => {}
            }
        }
        (out, names)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Applying a history in windows that skip superseded changes leaves the target as
    /// applying it as one window does, and as the source is, whatever the budgets (windows
    /// end between any two changes but the halves of a key change).
    #[test]
    fn windows_that_skip_leave_the_target_as_the_source_is(
        (changes, names) in history(),
        budget in 200usize..3000,
        ramp in 1u64..6,
    ) {
        prop_assume!(!changes.is_empty());
        let tmp = tempfile::tempdir().unwrap();
        journal(tmp.path(), &changes);
        let last = changes.len() as u64;
        let whole = applied(tmp.path(), last, budget, ramp, false);
        let windows = applied(tmp.path(), last, budget, ramp, true);
        prop_assert_eq!(&whole, &windows);
        let got: std::collections::BTreeMap<i64, String> = windows
            .values()
            .map(|r| {
                let text = |c: &Option<Vec<u8>>| String::from_utf8(c.clone().unwrap()).unwrap();
                (text(&r[0]).parse().unwrap(), text(&r[1]))
            })
            .collect();
        prop_assert_eq!(got, names);
    }
}

/// Found by the property above: row 3 moves to 5, row 0 then takes key 3, and row 5 changes
/// again (its name unchanged TOAST). One window merged the 3 → 5 move last (its key's last
/// change), so row 0 overwrote row 3 before it moved, and the target lost a row.
#[test]
fn a_key_freed_by_a_move_and_taken_by_another_keeps_both_rows() {
    let changes = [
        Change::Left(3),
        Change::Moved {
            id: 5,
            old: 3,
            name: None,
        },
        Change::Left(0),
        Change::Moved {
            id: 3,
            old: 0,
            name: None,
        },
        Change::Row {
            op: b'u',
            id: 5,
            name: None,
            n: 50,
        },
    ];
    let tmp = tempfile::tempdir().unwrap();
    journal(tmp.path(), &changes);
    let ids = |m: &Model| {
        m.values()
            .map(|r| String::from_utf8(r[0].clone().unwrap()).unwrap())
            .collect::<Vec<_>>()
    };
    for skip in [false, true] {
        let target = applied(tmp.path(), 5, 200, 1, skip);
        assert_eq!(ids(&target), ["1", "2", "3", "4", "5"], "skip={skip}");
        assert!(target
            .values()
            .all(|r| r[1].as_deref() == Some(&b"target"[..])));
    }
}
