//! db-sync: change-data-capture batch sync. See README.md and DESIGN §3 for the commands.

use std::process::ExitCode;

fn main() -> ExitCode {
    db_sync::cli::main()
}
