//! db-sync: change-data-capture batch sync. The commands are `db_sync::cli`'s (see its docs and
//! README.md); the design is the library's crate documentation.

use std::process::ExitCode;

fn main() -> ExitCode {
    db_sync::cli::main()
}
