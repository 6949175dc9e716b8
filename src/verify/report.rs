//! How `verify` prints its report: an aligned table with the first differing keys, or JSON.

use super::{Format, Report, TableReport};

pub fn print(report: &Report, format: Format) {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(report).expect("the report serializes")
        ),
        Format::Table => print!("{}", table(report)),
    }
}

fn table(r: &Report) -> String {
    let mut out = summary(r);
    for t in &r.tables {
        details(t, &mut out);
    }
    out.push_str(&footer(r));
    out
}

/// One aligned line per table: rows, missing, extra, different, and the verdict.
fn summary(r: &Report) -> String {
    let mut out = String::new();
    let width = r
        .tables
        .iter()
        .map(|t| t.table.len())
        .max()
        .unwrap_or(5)
        .max(5);
    out.push_str(&format!(
        "{:<width$}  {:>10}  {:>8}  {:>8}  {:>9}  result\n",
        "table", "rows", "missing", "extra", "different"
    ));
    for t in &r.tables {
        let result = match (&t.not_compared, t.differences()) {
            (Some(why), _) => format!("not compared: {why}"),
            (None, 0) if t.settled > 0 => {
                format!("in sync ({} in-flight difference(s) settled)", t.settled)
            }
            (None, 0) => "in sync".to_string(),
            (None, n) => format!("{n} difference(s)"),
        };
        out.push_str(&format!(
            "{:<width$}  {:>10}  {:>8}  {:>8}  {:>9}  {result}\n",
            t.table, t.rows, t.missing, t.extra, t.different
        ));
    }
    out
}

/// A table's repairs, missing columns and first differing keys of each kind.
fn details(t: &TableReport, out: &mut String) {
    if t.repaired_resnapshot + t.repaired_deleted > 0 {
        out.push_str(&format!(
            "{}: repaired before this verify: {} key(s) re-read from the source (incremental snapshot), {} row(s) deleted from `{}`\n",
            t.table, t.repaired_resnapshot, t.repaired_deleted, t.target_table
        ));
    }
    if !t.missing_columns.is_empty() {
        out.push_str(&format!(
            "{}: target table `{}` lacks column(s) {}\n",
            t.table,
            t.target_table,
            t.missing_columns.join(", ")
        ));
    }
    let more = |shown: usize, all: u64| {
        if (shown as u64) < all {
            format!(" (first {shown} of {all})")
        } else {
            String::new()
        }
    };
    if t.missing > 0 {
        out.push_str(&format!(
            "{}: missing in `{}`{}: {}\n",
            t.table,
            t.target_table,
            more(t.first_missing.len(), t.missing),
            t.first_missing.join("; ")
        ));
    }
    if t.extra > 0 {
        out.push_str(&format!(
            "{}: extra in `{}`{}: {}\n",
            t.table,
            t.target_table,
            more(t.first_extra.len(), t.extra),
            t.first_extra.join("; ")
        ));
    }
    if t.different > 0 {
        let keys: Vec<String> = t
            .first_different
            .iter()
            .map(|(k, cols)| format!("{k} ({})", cols.join(", ")))
            .collect();
        let cols: Vec<String> = t
            .different_columns
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        out.push_str(&format!(
            "{}: different in `{}`{}: {}; rows per column: {}\n",
            t.table,
            t.target_table,
            more(t.first_different.len(), t.different),
            keys.join("; "),
            cols.join(", ")
        ));
    }
}

/// Where the snapshot started, how long it took, and how the settling went.
fn footer(r: &Report) -> String {
    let settled = if r.rechecks > 0 {
        format!(
            "; settled for {:.1}s ({} re-check(s){})",
            r.settle_seconds,
            r.rechecks,
            if r.caught_up {
                ", the pipeline had caught up"
            } else {
                ", the pipeline had not caught up"
            }
        )
    } else {
        String::new()
    };
    format!(
        "verified from WAL {} in {:.1}s{settled}{}\n",
        r.start_lsn,
        r.seconds,
        if r.capture_running {
            ""
        } else {
            "; no capture is connected to the slot: source changes since its last run are not captured yet"
        }
    )
}
