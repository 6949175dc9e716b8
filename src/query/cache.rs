//! The local cache of `s3://` audit files that `query` reads.
//!
//! - **What is fetched.** Only the files of the tables a statement names (see
//!   [`tables_named`]) and, with `--as-of`, only the dates up to it; never the whole bucket.
//! - **Keyed by object name and size.** Audit files are immutable once published (a redone
//!   compaction window rewrites a name with the same rows; a rolled-up file is a new name),
//!   so a cached copy stays valid for as long as the object keeps its name and size. A copy is
//!   `<query.cache_dir>/<store>/<object path>/<size>/<file name>`: the file keeps its name,
//!   which the state view reads journal ranges from.
//! - **Whole files only.** A download goes to a temporary name and is renamed into place, so
//!   a crashed or concurrent query never sees a partial copy.
//! - **Bounded, least recently used first.** A hit or a download sets the file's modification
//!   time; after the query, files are deleted oldest first until the cache holds at most
//!   `query.cache_mb`. A query holds a shared lock on `<cache_dir>/.lock` while it reads, and
//!   eviction needs it exclusively (it is skipped while another query reads), so no query
//!   loses a file under it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::audit::{AuditFile, AuditStore};
use crate::config::QueryConfig;

use super::QueryError;

/// The cache, locked (shared) for one query.
pub struct Cache {
    dir: PathBuf,
    cap_bytes: u64,
    lock: File,
}

/// What one fetch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fetched {
    pub downloaded: u64,
    pub downloaded_bytes: u64,
    pub hits: u64,
}

fn scratch_err(path: &Path, source: std::io::Error) -> QueryError {
    QueryError::Scratch {
        path: path.to_path_buf(),
        source,
    }
}

impl Cache {
    pub fn open(config: &QueryConfig) -> Result<Cache, QueryError> {
        let dir = config.cache_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| scratch_err(&dir, e))?;
        let lock_path = dir.join(".lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| scratch_err(&lock_path, e))?;
        lock.lock_shared().map_err(|e| scratch_err(&lock_path, e))?;
        Ok(Cache {
            dir,
            cap_bytes: config.cache_mb.saturating_mul(1 << 20),
            lock,
        })
    }

    /// Where the copy of `f` lives.
    pub fn path_of(&self, store: &AuditStore, f: &AuditFile) -> PathBuf {
        let mut p = self.dir.join(store_key(&store.url));
        let parts: Vec<_> = f.location.parts().collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            p.push(part.as_ref());
        }
        p.push(f.size.to_string());
        p.push(f.location.filename().unwrap_or("audit.parquet"));
        p
    }

    /// Local copies of `files`, grouped by table in the order given: downloads what the cache
    /// lacks (8 at a time), marks the rest as just used.
    pub async fn fetch(
        &self,
        store: &AuditStore,
        files: &[AuditFile],
    ) -> Result<(BTreeMap<String, Vec<PathBuf>>, Fetched), QueryError> {
        use futures::{StreamExt, TryStreamExt};
        let mut stats = Fetched::default();
        let mut missing = Vec::new();
        let mut by_table: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for f in files {
            let path = self.path_of(store, f);
            if path.is_file() {
                touch(&path);
                stats.hits += 1;
            } else {
                missing.push((f, path.clone()));
                stats.downloaded += 1;
                stats.downloaded_bytes += f.size;
            }
            by_table.entry(f.table.clone()).or_default().push(path);
        }
        futures::stream::iter(missing)
            .map(|(f, path)| async move {
                let tmp = path.with_file_name(format!(
                    ".{}.{}.tmp",
                    f.location.filename().unwrap_or("audit"),
                    std::process::id()
                ));
                store.download(f, &tmp).await?;
                std::fs::rename(&tmp, &path).map_err(|e| scratch_err(&path, e))?;
                Ok::<(), QueryError>(())
            })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        Ok((by_table, stats))
    }

    /// Deletes the least recently used copies until the cache holds at most `query.cache_mb`;
    /// skipped (returns 0) while another query holds the cache. Returns the files deleted.
    pub fn evict(self) -> u64 {
        if self.lock.try_lock().is_err() {
            return 0;
        }
        evict_to(&self.dir, self.cap_bytes)
    }
}

/// Deletes files under `dir`, oldest modification first, until at most `cap` bytes remain.
fn evict_to(dir: &Path, cap: u64) -> u64 {
    let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != ".lock") {
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                files.push((mtime, meta.len(), path));
            }
        }
    }
    let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
    files.sort();
    let mut deleted = 0;
    for (_, len, path) in files {
        if total <= cap {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
            deleted += 1;
            if let Some(parent) = path.parent() {
                let _ = std::fs::remove_dir(parent); // the `<size>` directory, when empty
            }
        }
    }
    deleted
}

fn touch(path: &Path) {
    if let Ok(f) = File::options().write(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// A directory name for an audit store URL (`s3://bucket/prefix` → `s3_bucket_prefix`).
fn store_key(url: &str) -> String {
    url.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_matches('_')
        .to_string()
}

/// The tables among `tables` (`schema.table`) that `sql` names, as `schema.table` or
/// `schema.table_changes`, quoted or not, in any case. A name inside a string literal or a
/// comment counts too: naming a table too many only costs a download.
pub fn tables_named(sql: &str, tables: &BTreeSet<String>) -> BTreeSet<String> {
    let text = sql.replace('"', "").to_lowercase();
    let ident = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    tables
        .iter()
        .filter(|t| {
            let t_low = t.to_lowercase();
            text.match_indices(&t_low).any(|(i, m)| {
                let before = text[..i].chars().next_back();
                let after = &text[i + m.len()..];
                let boundary_before = before.is_none_or(|c| !ident(c) && c != '.');
                let rest = after.strip_prefix("_changes").unwrap_or(after);
                let boundary_after = rest.chars().next().is_none_or(|c| !ident(c));
                boundary_before && boundary_after
            })
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_found_by_name_quoted_or_not_and_with_changes() {
        let tables: BTreeSet<String> = ["public.orders", "public.order", "public.customers", "s.t"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let named = |sql: &str| -> Vec<String> { tables_named(sql, &tables).into_iter().collect() };
        assert_eq!(
            named("select count(*) from public.orders"),
            ["public.orders"]
        );
        assert_eq!(
            named(
                "SELECT * FROM \"public\".\"ORDERS_changes\" o JOIN public.customers c USING (id)"
            ),
            ["public.customers", "public.orders"]
        );
        assert_eq!(
            named("select * from public.order_changes"),
            ["public.order"]
        );
        assert_eq!(named("select * from xs.t, s.t2"), Vec::<String>::new());
        assert_eq!(named("select 1"), Vec::<String>::new());
    }

    #[test]
    fn eviction_deletes_least_recently_used_first_down_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = SystemTime::now() - std::time::Duration::from_secs(1000);
        let mut paths = Vec::new();
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            let p = dir.path().join("s3_x").join(i.to_string()).join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, vec![0u8; 100]).unwrap();
            let f = File::options().write(true).open(&p).unwrap();
            // Used in the order c, a, d, b (b most recently).
            let age = match *name {
                "c" => 40,
                "a" => 30,
                "d" => 20,
                _ => 10,
            };
            f.set_modified(t0 + std::time::Duration::from_secs(100 - age))
                .unwrap();
            paths.push(p);
        }
        std::fs::write(dir.path().join(".lock"), b"").unwrap();
        assert_eq!(evict_to(dir.path(), 250), 2);
        let left: Vec<bool> = paths.iter().map(|p| p.exists()).collect();
        assert_eq!(left, [false, true, false, true], "c then a went");
        assert!(dir.path().join(".lock").exists());
        assert!(
            !dir.path().join("s3_x/2").exists(),
            "empty directories go too"
        );
        assert_eq!(evict_to(dir.path(), 250), 0);
    }
}
