//! Which DuckDB library this binary runs with (README "The DuckDB library").
//!
//! Without the `bundled-duckdb` feature db-sync links the prebuilt `libduckdb.so` that
//! scripts/setup.sh unpacks; `db-sync check` names the file the dynamic loader picked and
//! its version, and refuses a library of another version than the `duckdb` crate was built
//! for (its C API may differ).

use std::path::PathBuf;

/// The DuckDB release the `duckdb` crate (`=1.10506.0`) matches.
pub const EXPECTED_VERSION: &str = "v1.5.6";

/// The loaded DuckDB: where it came from and its version string (`v1.5.6`).
pub struct Loaded {
    /// `None` when DuckDB is compiled into the binary (feature `bundled-duckdb`).
    pub path: Option<PathBuf>,
    pub version: String,
}

impl std::fmt::Display for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.path {
            Some(path) => write!(f, "DuckDB {} from {}", self.version, path.display()),
            None => write!(f, "DuckDB {} compiled in (bundled-duckdb)", self.version),
        }
    }
}

/// How a broken library is restored.
const FIX: &str = "run scripts/setup.sh to restore the prebuilt library (scripts/duckdb.sha256)";

/// The DuckDB library cannot serve: it fails, or it is another release. `library` names the
/// file (or the DuckDB compiled in).
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("{library} does not work: {source}; {FIX}")]
    Broken {
        library: String,
        source: duckdb::Error,
    },
    #[error("{library} is DuckDB {found}, db-sync was built for {EXPECTED_VERSION}; {FIX}")]
    Version { library: String, found: String },
}

/// Open an in-memory database and report the library behind it; an error is one line
/// naming the file and the command that restores it.
pub fn loaded() -> Result<Loaded, LibraryError> {
    let path = mapped_library();
    let library = path.as_ref().map_or_else(
        || "the DuckDB compiled in".to_string(),
        |p| p.display().to_string(),
    );
    let version = duckdb::Connection::open_in_memory()
        .and_then(|c| c.query_row("SELECT version()", [], |r| r.get::<_, String>(0)))
        .map_err(|source| LibraryError::Broken {
            library: library.clone(),
            source,
        })?;
    if version != EXPECTED_VERSION {
        return Err(LibraryError::Version {
            library,
            found: version,
        });
    }
    Ok(Loaded { path, version })
}

/// The `libduckdb*.so` file mapped into this process, from /proc/self/maps.
fn mapped_library() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|name| name.starts_with("libduckdb"))
        })
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loaded_library_is_the_pinned_release() {
        let lib = loaded().expect("DuckDB loads");
        assert_eq!(lib.version, EXPECTED_VERSION);
        if cfg!(feature = "bundled-duckdb") {
            assert!(lib.path.is_none(), "{lib}");
        } else {
            let path = lib.path.expect("libduckdb.so is mapped");
            assert!(
                path.ends_with(".cargo/duckdb/libduckdb.so"),
                "{}",
                path.display()
            );
        }
    }
}
