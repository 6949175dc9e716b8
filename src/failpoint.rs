//! Named crash points for tests: `DB_SYNC_FAILPOINT=<name>[:<n>]` aborts the process (as a
//! crash would) the n-th time (default first) execution passes [`hit`] with that name.
//!
//! Points: `compact.after_file` (after an audit file is published), `compact.before_manifest`
//! (after all files, before the manifest records them), `rollup.after_merged` (a rolled-up
//! file is published, none of the small files it replaces is deleted yet), `rollup.after_delete`
//! (after each small file a roll-up deletes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
static COUNT: AtomicU64 = AtomicU64::new(0);

fn spec() -> &'static Option<(String, u64)> {
    SPEC.get_or_init(|| {
        let raw = std::env::var("DB_SYNC_FAILPOINT").ok()?;
        let (name, n) = match raw.split_once(':') {
            Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
            None => (raw, 1),
        };
        Some((name, n.max(1)))
    })
}

/// Aborts the process if the configured failpoint is `name` and this is its n-th pass.
pub fn hit(name: &str) {
    if let Some((want, n)) = spec() {
        if want == name && COUNT.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("failpoint {name}:{n}: aborting");
            std::process::abort();
        }
    }
}
