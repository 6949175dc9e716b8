//! Named crash points for tests: `DB_SYNC_FAILPOINT=<name>[:<n>]` aborts the process (as a
//! crash would: no destructor runs) the n-th time (default the first) execution passes [`hit`]
//! with that name. Every point the code has, where it is and what a crash there leaves:
//!
//! - `compact.after_file`: [`crate::audit::writer`], after each audit file is published (and
//!   fsynced on `file://`); the window is still `pending` in `audit-progress.json`.
//! - `compact.before_manifest`: [`crate::audit::writer`], after every file of the window is
//!   published, before `audit-progress.json` records the window done (the name is from when
//!   that file was the manifest).
//! - `apply.before_commit`: [`crate::apply`] (`write.rs`), a chunk's checkpoint row and rows
//!   are written in its open transaction, before `COMMIT`: the server rolls it back whole.
//! - `apply.after_chunk`: [`crate::apply`] (`write.rs`), right after a chunk's `COMMIT`: its
//!   checkpoint row is committed, the window still `pending` in `apply-progress.json`.
//! - `rollup.after_merged`: [`crate::audit::rollup::merge`], a merged file is published (and
//!   fsynced on `file://`), none of the small files it replaces deleted yet.
//! - `rollup.after_delete`: [`crate::audit::rollup::merge`], after each small file a roll-up
//!   deletes.
//! - `loader.before_append`: [`crate::loader`], a range is named in flight in
//!   `loader-progress.json`, none of its rows journaled.
//! - `loader.after_append`: [`crate::loader`], a range's rows are journaled, the range not yet
//!   marked done: the next start must find them and not journal them again.
//!
//! `tests/it/audit_crash.rs`, `apply.rs`, `divergence.rs`, `rollup.rs` and `loader.rs` crash at these
//! points and check that the next run finishes the work exactly once.
//!
//! `DB_SYNC_PAUSE=<name>:<ms>` sleeps `ms` milliseconds at every pass of the point instead: a
//! test slows a step down to write to the source while it runs. Besides the points above,
//! `verify.before_repair` ([`crate::verify`]: the comparison is done, the repair's re-check at
//! the source not yet) is there to pause at.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
static COUNT: AtomicU64 = AtomicU64::new(0);
static PAUSE: OnceLock<Option<(String, u64)>> = OnceLock::new();

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

fn pause() -> &'static Option<(String, u64)> {
    PAUSE.get_or_init(|| {
        let raw = std::env::var("DB_SYNC_PAUSE").ok()?;
        let (name, ms) = raw.split_once(':')?;
        Some((name.to_string(), ms.parse().ok()?))
    })
}

/// Aborts the process if the configured failpoint is `name` and this is its n-th pass (or
/// sleeps, if it is the pause point).
pub fn hit(name: &str) {
    if let Some((want, ms)) = pause() {
        if want == name {
            std::thread::sleep(std::time::Duration::from_millis(*ms));
        }
    }
    if let Some((want, n)) = spec() {
        if want == name && COUNT.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("failpoint {name}:{n}: aborting");
            std::process::abort();
        }
    }
}
