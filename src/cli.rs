//! The command line: parsing, dispatch, and the one place where failures become a line on
//! stderr and an exit code (0 ok, 1 runtime failure, 2 bad usage or bad config), from each
//! error's [`ErrorKind`](crate::error::ErrorKind). Scripts and tests drive these commands, so
//! their names, options and exit codes stay stable.
//!
//! `db-sync [--config PATH] [-v] COMMAND` (default `config/config.yaml`), and the module each
//! command runs:
//!
//! - `run`: capture, and the jobs of `jobs_dir` on their cron ([`crate::schedule`]);
//!   SIGINT/SIGTERM finish the batch and the chunk in hand, then exit 0 (a second signal exits
//!   at once).
//! - `capture [--exit-after-snapshot]`: capture alone, until stopped ([`crate::capture`]).
//! - `compact [--once]`: one cycle, audit, apply and GC ([`crate::cycle`]).
//! - `backfill --table SCHEMA.TABLE [--since TS] [--until TS] [--truncate]`: the target rows
//!   of a table rebuilt from its audit files ([`crate::backfill`]); `--resnapshot` asks the
//!   running capture for an incremental snapshot instead ([`crate::source::signal`]).
//! - `query SQL [--as-of TS] [--format table|csv|json]`: DuckDB over the audit files
//!   ([`crate::query`]).
//! - `rollup [--table SCHEMA.TABLE] [--date YYYY-MM-DD]`: roll-up and retention
//!   ([`crate::audit::rollup`]).
//! - `status [--json]` ([`crate::status`]); `verify [--table T]... [--settle SECS] [--repair]
//!   [--format table|json]`, exit 1 when differences persist ([`crate::verify`]); `check`
//!   ([`crate::check`]).
//! - `journal dump [--from SEQ] [--limit N]`: journal events as JSON lines
//!   ([`crate::journal::event::to_json`]).
//! - `engine-properties [--show-secrets]` (hidden): the properties capture would give the
//!   engine ([`crate::capture::fitted_properties`]), for running it outside db-sync.
//!
//! Times (`--since`, `--until`, `--as-of`) are read by [`crate::timearg`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use tokio::sync::watch;

use crate::capture;
use crate::config::Config;
use crate::error::Classify;
use crate::journal::{self, event, JournalError};

#[derive(Parser, Debug)]
#[command(
    name = "db-sync",
    version,
    about = "CDC batch sync: Debezium (in-process) -> journal -> Parquet audit files + MySQL"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = "config/config.yaml")]
    config: PathBuf,
    /// More log output (debug); RUST_LOG overrides.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Capture changes and run the jobs in jobs_dir on their cron; SIGINT/SIGTERM finish the batch (and a job's chunk) in hand and exit 0.
    Run,
    /// Capture changes into the journal until stopped.
    Capture {
        /// Stop once the initial snapshot is journaled.
        #[arg(long)]
        exit_after_snapshot: bool,
    },
    /// One cycle: seal the journal, write audit files for what is new, apply it to the target, GC; exit 0 when done.
    Compact {
        /// Run one cycle and exit (always so: `run` schedules cycles).
        #[arg(long)]
        once: bool,
    },
    /// Rebuild the target rows of a table from its audit files (progress bar), or with
    /// --resnapshot ask Debezium for an incremental snapshot of it.
    Backfill {
        /// The source table, SCHEMA.TABLE.
        #[arg(long)]
        table: String,
        /// Replay only changes committed at or after this time (UTC unless it has an offset).
        #[arg(long, value_parser = crate::timearg::parse)]
        since: Option<DateTime<Utc>>,
        /// Replay only changes committed at or before this time.
        #[arg(long, value_parser = crate::timearg::parse)]
        until: Option<DateTime<Utc>>,
        /// Empty the target table before replaying.
        #[arg(long)]
        truncate: bool,
        /// Ask the running capture to read the table again (rows arrive as `r` events).
        #[arg(long, conflicts_with_all = ["since", "until", "truncate"])]
        resnapshot: bool,
    },
    /// Run SQL with DuckDB over the audit files: views SCHEMA.TABLE (state) and SCHEMA.TABLE_changes.
    Query {
        /// One SQL statement, e.g. "select count(*) from public.orders".
        sql: String,
        /// The state as of this source commit time (UTC unless it has an offset).
        #[arg(long, value_parser = crate::timearg::parse)]
        as_of: Option<DateTime<Utc>>,
        #[arg(long, value_enum, default_value = "table")]
        format: crate::query::Format,
    },
    /// Merge the small audit files of closed date partitions; delete partitions past audit.retain_days.
    Rollup {
        /// Only this source table, SCHEMA.TABLE.
        #[arg(long)]
        table: Option<String>,
        /// Only this date partition, YYYY-MM-DD (UTC; before today).
        #[arg(long)]
        date: Option<String>,
    },
    /// Journal, audit and apply progress; --json for scripts.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Compare each applied table's source and target key by key and value by value; changes in flight settle; exit 1 when differences persist.
    Verify {
        /// A source table, SCHEMA.TABLE (repeat for more); default: every applied table.
        #[arg(long = "table")]
        tables: Vec<String>,
        /// Seconds to wait at most for differences in flight to be applied (and, with
        /// --repair, for the repair to be applied).
        #[arg(long, default_value_t = 120)]
        settle: u64,
        /// Repair what persists: re-read the differing keys through an incremental snapshot
        /// (journaled, audited, applied), delete keys the source does not hold; verify again.
        #[arg(long)]
        repair: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: crate::verify::Format,
    },
    /// Validate config, jars, JVM, the source's prerequisites and the target; one line per finding.
    Check,
    /// Print the Debezium engine properties capture would start the engine with now, one
    /// `key=value` a line (to run the engine outside db-sync, as the capture benchmark does).
    #[command(hide = true)]
    EngineProperties {
        /// Print secret-bearing values (the source's password) as they are, not as `***`.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Inspect the journal.
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
}

#[derive(Subcommand, Debug)]
enum JournalCommand {
    /// Print journal records as JSON lines, in sequence order.
    Dump {
        /// First sequence number to print.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Print at most N records.
        #[arg(long)]
        limit: Option<u64>,
    },
}

/// A failure on its way to the user: one line and an exit code.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: crate::error::ErrorKind::Config.exit_code(),
            message: message.into(),
        }
    }
    fn runtime(message: impl Into<String>) -> Self {
        Failure {
            code: crate::error::ErrorKind::Permanent.exit_code(),
            message: message.into(),
        }
    }
}

/// Every module error becomes a failure the same way: its message, and its kind's exit code.
impl<E: Classify + std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            code: e.kind().exit_code(),
            message: e.to_string(),
        }
    }
}

pub fn main() -> ExitCode {
    // Two TLS stacks are linked (object_store brings aws-lc, the database drivers use ring):
    // rustls needs the process default named once, before any connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    crate::telemetry::init(cli.verbose);
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn dispatch(cli: Cli) -> Result<(), Failure> {
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::Run => {
            let metrics = crate::metrics::bind(&config)?;
            let jobs = crate::schedule::load_jobs(&config.jobs_dir)?;
            if jobs.is_empty() {
                tracing::warn!(jobs_dir = %config.jobs_dir.display(), "no job files: `run` only captures (ship jobs/compact.yaml to compact on a schedule)");
            }
            run_until_stopped(&config, capture::Options::default(), jobs, metrics)
        }
        Command::Capture {
            exit_after_snapshot,
        } => run_until_stopped(
            &config,
            capture::Options {
                exit_after_snapshot,
            },
            Vec::new(),
            None,
        ),
        Command::Compact { once: _ } => compact(&config),
        Command::Backfill {
            table,
            resnapshot: true,
            ..
        } => resnapshot(&config, &table),
        Command::Backfill {
            table,
            since,
            until,
            truncate,
            resnapshot: false,
        } => backfill(
            &config,
            crate::backfill::Options {
                table,
                since,
                until,
                truncate,
            },
        ),
        Command::Query { sql, as_of, format } => {
            Ok(crate::query::run(&config, &sql, as_of, format)?)
        }
        Command::Rollup { table, date } => Ok(crate::retention::run(
            &config,
            &crate::audit::rollup::Options { table, date },
        )?),
        Command::Status { json } => Ok(crate::status::run(&config, json)?),
        Command::Verify {
            tables,
            settle,
            repair,
            format,
        } => verify(&config, tables, settle, repair, format),
        Command::Check => Ok(crate::check::run(&config)?),
        Command::EngineProperties { show_secrets } => {
            let props = runtime()?.block_on(capture::fitted_properties(&config));
            print!("{}", capture::properties_file(&props, show_secrets));
            Ok(())
        }
        Command::Journal {
            command: JournalCommand::Dump { from, limit },
        } => dump(&config.journal.dir, from, limit),
    }
}

fn compact(config: &Config) -> Result<(), Failure> {
    let rt = runtime()?;
    let started = std::time::Instant::now();
    match rt.block_on(crate::cycle::run_once(config)) {
        Ok(s) if s.did_nothing() => {
            println!("nothing new to compact");
            held(&s)
        }
        Ok(s) => {
            let mut parts = Vec::new();
            if let Some(a) = &s.audit {
                parts.push(format!(
                    "compacted seq {}..={}: {} events of {} table(s) into {} audit file(s)",
                    a.from, a.to, a.events, a.tables, a.files
                ));
            }
            if let Some(a) = &s.apply {
                parts.push(format!(
                    "applied seq {}..={}: {} changes merged into {} row(s) of {} table(s) in {} chunk(s){} in {:.1}s ({:.0} rows/s{}, {} connection{})",
                    a.from,
                    a.to,
                    a.changes,
                    a.rows,
                    a.tables,
                    a.chunks,
                    if a.chunks_skipped > 0 {
                        format!(", {} already committed", a.chunks_skipped)
                    } else {
                        String::new()
                    },
                    a.seconds,
                    a.rows as f64 / a.seconds.max(1e-9),
                    if a.load_data { ", LOAD DATA" } else { "" },
                    a.connections,
                    if a.connections == 1 { "" } else { "s" },
                ));
            }
            parts.push(format!(
                "{} journal segment(s) deleted; {:.1}s in all",
                s.segments_deleted,
                started.elapsed().as_secs_f64()
            ));
            println!("{}", parts.join("; "));
            held(&s)
        }
        // A target setting that cannot work names the config file it is in.
        Err(e @ crate::cycle::CycleError::Apply(crate::apply::ApplyError::Config { .. })) => {
            Err(Failure::usage(format!("{}: {e}", config.path.display())))
        }
        Err(e) => Err(e.into()),
    }
}

/// A cycle that held tables out of apply failed for them, though the others went on: the
/// first one's line (each was logged when its hold began).
fn held(s: &crate::cycle::Summary) -> Result<(), Failure> {
    let Some((table, hold)) = s.held.iter().next() else {
        return Ok(());
    };
    let more = match s.held.len() {
        1 => String::new(),
        n => format!(
            " ({} more table(s) are held; `db-sync status` lists them)",
            n - 1
        ),
    };
    Err(Failure::runtime(format!("{}{more}", hold.line(table))))
}

fn verify(
    config: &Config,
    tables: Vec<String>,
    settle: u64,
    repair: bool,
    format: crate::verify::Format,
) -> Result<(), Failure> {
    let rt = runtime()?;
    let opts = crate::verify::Options {
        tables,
        settle: std::time::Duration::from_secs(settle),
        repair,
    };
    let report = rt.block_on(crate::verify::verify(config, &opts))?;
    crate::verify::print(&report, format);
    match report.differences() {
        0 => Ok(()),
        n => Err(Failure::runtime(format!(
            "verify: {n} difference(s) persist in {} table(s) after settling; the target differs from the source: repair it with `db-sync verify --repair` (through the journal, while capture runs), or rebuild a table with `db-sync backfill --table T --resnapshot`",
            report.tables.iter().filter(|t| t.differences() > 0).count()
        ))),
    }
}

fn backfill(config: &Config, opts: crate::backfill::Options) -> Result<(), Failure> {
    if let (Some(since), Some(until)) = (opts.since, opts.until) {
        if since > until {
            return Err(Failure::usage(format!(
                "--since {} is after --until {}",
                crate::timearg::show(since),
                crate::timearg::show(until)
            )));
        }
    }
    let rt = runtime()?;
    let progress = BackfillProgress::new(&opts.table);
    let result = rt.block_on(crate::backfill::backfill(config, &opts, &progress));
    progress.bar.finish_and_clear();
    match result {
        Ok(s) => {
            let range = match (opts.since, opts.until) {
                (None, None) => String::new(),
                (a, b) => format!(
                    " committed {} .. {}",
                    a.map_or("the start".into(), crate::timearg::show),
                    b.map_or("the end".into(), crate::timearg::show)
                ),
            };
            println!(
                "backfilled {} into `{}`{} from {} audit file(s){range}: {} changes{} merged into {} upsert(s) and {} delete(s) in {} chunk(s) in {:.1}s{}",
                opts.table,
                s.target_table,
                if s.truncated { " (emptied first)" } else { "" },
                s.files,
                s.changes,
                s.seqs.map_or(String::new(), |(a, b)| format!(" (seq {a}..={b})")),
                s.upserts,
                s.deletes,
                s.chunks,
                s.seconds,
                if s.released {
                    "; apply held the table out, and applies it again from the next cycle on"
                } else {
                    ""
                }
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// A progress bar over audit files on a terminal; log lines per window otherwise.
struct BackfillProgress {
    bar: indicatif::ProgressBar,
    table: String,
    changes: std::sync::atomic::AtomicU64,
}

impl BackfillProgress {
    fn new(table: &str) -> Self {
        use std::io::IsTerminal;
        let bar = if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} backfill {prefix} [{bar:30}] {pos}/{len} files, {msg} [{elapsed}]",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(table.to_string());
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        BackfillProgress {
            bar,
            table: table.to_string(),
            changes: Default::default(),
        }
    }
}

impl crate::backfill::Progress for BackfillProgress {
    fn start(&self, files: u64) {
        self.bar.set_length(files);
        tracing::info!(table = %self.table, files, "backfill: replaying audit files");
    }
    fn file_done(&self, changes: u64) {
        let total = self
            .changes
            .fetch_add(changes, std::sync::atomic::Ordering::Relaxed)
            + changes;
        self.bar.inc(1);
        self.bar.set_message(format!("{total} changes"));
    }
    fn window_applied(&self, window: (u64, u64), rows: u64) {
        if self.bar.is_hidden() {
            tracing::info!(
                table = %self.table,
                from = window.0,
                to = window.1,
                rows,
                files_read = self.bar.position(),
                files = self.bar.length().unwrap_or(0),
                "backfill: applied window"
            );
        }
    }
}

fn resnapshot(config: &Config, table: &str) -> Result<(), Failure> {
    // Apply leaves a held table out: rows re-read through the journal would never reach it.
    let dir = &config.journal.dir;
    if dir.is_dir() {
        if let Some(hold) = crate::state::ApplyProgress::load(dir)?.held.get(table) {
            return Err(Failure::usage(format!(
                "--table {table}: --resnapshot cannot reach it while apply holds it; {}",
                hold.line(table)
            )));
        }
    }
    let rt = runtime()?;
    match rt.block_on(crate::source::signal::request_snapshot(config, table)) {
        Ok(id) => {
            println!(
                "asked for an incremental snapshot of {table} (signal {id}); the running capture (`db-sync run`) reads the table again in chunks, and its rows arrive as `r` events in the audit files and the target at the next compactions"
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))
}

/// Runs capture and `jobs` with SIGINT/SIGTERM wired to a clean stop (capture finishes its
/// batch, a running job its chunk); a second signal exits at once.
fn run_until_stopped(
    config: &Config,
    options: capture::Options,
    jobs: Vec<crate::schedule::JobSpec>,
    metrics: Option<std::net::TcpListener>,
) -> Result<(), Failure> {
    let rt = runtime()?;
    rt.block_on(async {
        let (tx, rx) = watch::channel(false);
        let signals_tx = tx.clone();
        tokio::spawn(async move {
            let mut signals = 0;
            loop {
                wait_for_signal().await;
                signals += 1;
                if signals > 1 {
                    eprintln!("error: second signal; exiting without waiting for the engine");
                    std::process::exit(130);
                }
                let _ = signals_tx.send(true);
            }
        });
        if let Some(listener) = metrics {
            tokio::spawn(crate::metrics::serve(
                listener,
                std::sync::Arc::new(config.clone()),
                crate::schedule::compact_period(&jobs),
                rx.clone(),
            ));
        }
        // A job failure that a retry cannot mend stops capture too, through `tx`.
        let scheduler = tokio::spawn(crate::schedule::run_jobs(
            std::sync::Arc::new(config.clone()),
            jobs,
            tx.clone(),
        ));
        let captured = capture::run_resyncing(config, options, rx).await;
        // Capture ended (a signal, the snapshot, a job's failure, or its own): stop the jobs
        // too.
        let _ = tx.send(true);
        let jobs = scheduler
            .await
            .map_err(|e| Failure::runtime(format!("the job scheduler stopped: {e}")))?;
        let summary = captured?;
        jobs?;
        tracing::info!(
            batches = summary.batches,
            events = summary.events,
            duplicates = summary.duplicates,
            "capture stopped"
        );
        Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

fn dump(dir: &Path, from: u64, limit: Option<u64>) -> Result<(), Failure> {
    if !dir.is_dir() {
        return Err(Failure::usage(format!(
            "journal.dir {} does not exist; run `db-sync capture` first or fix journal.dir",
            dir.display()
        )));
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let mut closed = false;
    journal::read_events(dir, from, |e| {
        if limit.is_some_and(|l| printed >= l) {
            return Ok(false);
        }
        let line =
            event::to_json(e.seq, e.schema, e.body).map_err(|err| JournalError::Undecodable {
                seq: e.seq,
                what: err.to_string(),
            })?;
        if writeln!(out, "{line}").is_err() {
            closed = true; // reader went away (`| head`): not an error
            return Ok(false);
        }
        printed += 1;
        Ok(true)
    })?;
    if !closed {
        let _ = out.flush();
    }
    Ok(())
}
