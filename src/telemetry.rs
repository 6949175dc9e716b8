//! Logging: `tracing` to stderr; `RUST_LOG` or `-v` choose the level.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the stderr logger. `verbose` raises the default from `info` to `debug`.
pub fn init(verbose: bool) {
    // The scheduler crate narrates its own start-up at info; its warnings still show.
    let default = if verbose {
        "db_sync=debug,tokio_cron_scheduler=warn,info"
    } else {
        "tokio_cron_scheduler=warn,info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
