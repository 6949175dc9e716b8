//! Run-time search path for the prebuilt DuckDB library (README "The DuckDB library").
//!
//! Without the `bundled-duckdb` feature the binaries need `libduckdb.so` at run time. They
//! look for it beside themselves (`$ORIGIN`, as installed in the Docker image), then in
//! `$ORIGIN/../lib`, then in the directory the build linked against (`DUCKDB_LIB_DIR`,
//! `.cargo/duckdb` of the checkout by default), so nobody has to set `LD_LIBRARY_PATH`.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_BUNDLED_DUCKDB");
    if std::env::var_os("CARGO_FEATURE_BUNDLED_DUCKDB").is_some() {
        return;
    }
    let Some(dir) = std::env::var_os("DUCKDB_LIB_DIR") else {
        panic!("DUCKDB_LIB_DIR is not set: build from the checkout (its .cargo/config.toml sets it) after scripts/setup.sh, or enable the bundled-duckdb feature");
    };
    let dir = Path::new(&dir);
    let lib = dir.join("libduckdb.so");
    if !lib.is_file() {
        panic!(
            "{} is missing: run scripts/setup.sh, which fetches the prebuilt DuckDB, or build with --features bundled-duckdb",
            lib.display()
        );
    }
    println!("cargo:rerun-if-changed={}", lib.display());
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    println!(
        "cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN:$ORIGIN/../lib:{}",
        dir.display()
    );
}
