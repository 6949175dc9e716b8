//! Test support: the real services that `scripts/services.sh` starts, one module each, and
//! the `db-sync` binary as a child process.
//!
//! Every test gets its own database, replication slot, publication, journal and offsets, so
//! tests run in parallel against one server and clean up after themselves.
//!
//! - [`pg`]: the PostgreSQL source, a database and pipeline per test ([`Pipeline`]);
//! - [`mysql`]: the MariaDB target, a database per test, a second server, a cutting proxy;
//! - [`s3`]: the S3-compatible server (moto);
//! - [`process`]: db-sync runs (to completion or in the background) and the journal read back;
//! - [`audit`]: audit files read back independently with DuckDB, S3 objects downloaded;
//! - [`compare`]: a PostgreSQL table against its MariaDB copy, value by value;
//! - [`target`]: apply runs, the apply workload and its comparison with the source;
//! - [`types`]: the type table (the type map of [`db_sync::types`]) and how values are compared.

pub mod audit;
pub mod compare;
pub mod mysql;
pub mod pg;
pub mod process;
pub mod s3;
pub mod target;
pub mod types;

use std::path::PathBuf;

pub use mysql::*;
pub use pg::*;
pub use process::*;
pub use s3::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_db-sync");

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
