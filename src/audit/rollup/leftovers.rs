//! Which audit files an interrupted roll-up left behind: files that a merged file covering
//! their range lists as replaced. Readers leave them out ([`visible`]); the next roll-up
//! deletes them first.

use std::collections::{BTreeMap, HashMap, HashSet};

use object_store::path::Path as ObjectPath;

use super::read::{file_name, footer};
use crate::audit::{AuditError, AuditFile, AuditStore};

/// The files among `files` that a merged file covering their range lists as replaced: the
/// leftovers of an interrupted roll-up. Reads only the footers of files whose range covers
/// another file's (none in the usual case, where ranges do not overlap).
pub async fn superseded(
    store: &AuditStore,
    files: &[AuditFile],
) -> Result<Vec<AuditFile>, AuditError> {
    let mut by_part: BTreeMap<(&str, &str, &str), Vec<&AuditFile>> = BTreeMap::new();
    for f in files {
        by_part
            .entry((&f.table, &f.date, &f.journal))
            .or_default()
            .push(f);
    }
    let mut out = Vec::new();
    let mut lists: HashMap<ObjectPath, Vec<String>> = HashMap::new();
    for (_, mut part) in by_part {
        // Containers first: by first sequence, then the wider range first.
        part.sort_by(|a, b| (a.first_seq, b.last_seq).cmp(&(b.first_seq, a.last_seq)));
        let mut widest = 0u64; // the highest last_seq of the files before
        for (i, x) in part.iter().enumerate() {
            if i > 0 && widest >= x.last_seq {
                for c in &part[..i] {
                    if c.last_seq < x.last_seq {
                        continue;
                    }
                    if !lists.contains_key(&c.location) {
                        let list = footer(store, c).await?.rollup_of;
                        lists.insert(c.location.clone(), list);
                    }
                    if lists[&c.location].iter().any(|n| n == file_name(x)) {
                        out.push((*x).clone());
                        break;
                    }
                }
            }
            widest = widest.max(x.last_seq);
        }
    }
    Ok(out)
}

/// `files` without the leftovers of an interrupted roll-up ([`superseded`]): what readers in
/// db-sync read, so every change is read exactly once whenever a roll-up stopped.
pub async fn visible(
    store: &AuditStore,
    files: Vec<AuditFile>,
) -> Result<Vec<AuditFile>, AuditError> {
    let gone: HashSet<ObjectPath> = superseded(store, &files)
        .await?
        .into_iter()
        .map(|f| f.location)
        .collect();
    if gone.is_empty() {
        return Ok(files);
    }
    Ok(files
        .into_iter()
        .filter(|f| !gone.contains(&f.location))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(date: &str, first: u64, last: u64, journal: &str) -> AuditFile {
        AuditFile {
            table: "public.t".into(),
            date: date.into(),
            first_seq: first,
            last_seq: last,
            journal: journal.into(),
            location: ObjectPath::from(format!(
                "public.t/date={date}/{first}-{last}.{journal}.parquet"
            )),
            size: 1,
        }
    }

    /// Without overlapping ranges no footer is read (the store here has no files at all), and
    /// nothing is superseded; files of two journals never cover one another.
    #[tokio::test]
    async fn disjoint_ranges_supersede_nothing_without_reading_a_footer() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&crate::config::AuditConfig {
            url: format!("file://{}", dir.path().display()),
            ..Default::default()
        })
        .unwrap();
        let files = vec![
            file("2026-01-01", 1, 10, "aa"),
            file("2026-01-01", 11, 20, "aa"),
            file("2026-01-01", 5, 50, "bb"),
            file("2026-01-02", 5, 50, "aa"),
        ];
        assert!(superseded(&store, &files).await.unwrap().is_empty());
        // A covering range makes it read the container's footer: here an error, as no file
        // exists; it proves the check is attempted exactly when ranges nest.
        let nested = vec![
            file("2026-01-01", 1, 20, "aa"),
            file("2026-01-01", 11, 20, "aa"),
        ];
        assert!(superseded(&store, &nested).await.is_err());
    }
}
