//! `query` over `s3://` at scale: only the files of the tables (and, with `--as-of`, the dates)
//! a statement reads are downloaded, once, into a bounded local cache (`query.cache_mb`).

use crate::rollup::{setup, stderr};
use crate::support::audit::walk;

/// Parquet files under `dir`, as paths relative to it.
fn parquet_under(dir: &std::path::Path) -> Vec<String> {
    walk(dir)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .collect()
}

/// The `key=value` field of db-sync's "audit files for the query" log line.
fn logged(out: &std::process::Output, key: &str) -> u64 {
    let err = stderr(out);
    let line = err
        .lines()
        .find(|l| l.contains("audit files for the query"))
        .unwrap_or_else(|| panic!("no cache line in: {err}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in: {line}"))
}

/// `query` over `s3://`: two queries of one table download that table's files once and no
/// other table's; `--as-of` fetches only the dates up to it; answers equal the journal's.
#[test]
fn query_over_s3_downloads_only_what_it_reads_and_only_once() {
    if !crate::support::audit::s3_ready("query_over_s3_downloads_only_what_it_reads_and_only_once")
    {
        return;
    }
    let prefix = format!(
        "rollup-cache-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let cache_dir = tempfile::tempdir().unwrap();
    let options = format!(
        "  options:\n    endpoint: \"{}\"\n    region: us-east-1\n    access_key_id: test\n    secret_access_key: test\n    allow_http: true\nquery:\n  cache_dir: {}\n",
        crate::support::s3_endpoint(),
        cache_dir.path().display()
    );
    let s = setup(Some(&format!("s3://audit/{prefix}")), &options, 0);
    let query = |sql: &str, as_of: Option<&str>| {
        let mut args = vec!["query", "--format", "csv", sql];
        if let Some(t) = as_of {
            args.extend(["--as-of", t]);
        }
        let out = s.run(&args, None);
        assert!(out.status.success(), "{sql}: {}", stderr(&out));
        out
    };
    let n = s.events["public.t"];

    let first = query("select count(*) as n from public.t_changes", None);
    assert_eq!(String::from_utf8_lossy(&first.stdout), format!("n\n{n}\n"));
    assert_eq!(
        (logged(&first, "downloaded"), logged(&first, "from_cache")),
        (300, 0)
    );
    let cached = parquet_under(cache_dir.path());
    assert_eq!(cached.len(), 300);
    assert!(
        cached
            .iter()
            .all(|p| p.contains("/public.t/date=2026-01-0")),
        "only public.t's files: {cached:?}"
    );

    let second = query("select count(*) as rows from public.t", None);
    assert_eq!(
        (logged(&second, "downloaded"), logged(&second, "from_cache")),
        (0, 300),
        "the second query downloads nothing"
    );
    assert_eq!(parquet_under(cache_dir.path()), cached);

    let other = query(
        "select count(*) as n from \"public\".\"other_changes\"",
        None,
    );
    assert_eq!(String::from_utf8_lossy(&other.stdout), "n\n10\n");
    assert_eq!(logged(&other, "downloaded"), 10);
    assert_eq!(parquet_under(cache_dir.path()).len(), 310);

    // A name that is not there: nothing is downloaded, and the message names every table.
    let out = s.run(&["query", "select * from public.nope"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("the audit files hold public.other, public.t"),
        "{}",
        stderr(&out)
    );

    // --as-of fetches only the dates up to it.
    std::fs::remove_dir_all(cache_dir.path()).unwrap();
    let as_of = query(
        "select count(*) as n from public.t_changes",
        Some("2026-01-01 23:59"),
    );
    assert_eq!(logged(&as_of, "downloaded"), 150);
    assert!(parquet_under(cache_dir.path())
        .iter()
        .all(|p| p.contains("/public.t/date=2026-01-01/")));
}
