//! db-sync: change-data-capture batch sync. Debezium's embedded engine, hosted in this
//! process through JNI, captures row changes from PostgreSQL into a durable local journal;
//! compaction cycles turn the journal into Parquet audit files in object storage (`file://`,
//! `s3://`) and apply it to a MySQL target as merged upserts and deletes.
//!
//! These docs are the design. This page is the overview: how data flows, what db-sync
//! guarantees and which module keeps each guarantee, and where each on-disk format is
//! described. Each module's header says what the module owns, what it guarantees, the
//! configuration keys it reads and the facts about PostgreSQL, Debezium and MySQL it relies
//! on. Render them, private items included, with
//! `cargo doc --no-deps --document-private-items --open`; `scripts/test.sh` fails on a link
//! that points nowhere.
//!
//! # Data flow
//!
//! Data flows one way, and the modules follow it: a module never imports from a stage after
//! it (`scripts/check_imports.py` fails on an import cycle).
//!
//! ```text
//! PostgreSQL ─► Debezium engine ─► bridge ── one JNI call per batch ──► journal: write + fdatasync
//!               (JVM, in-process)    ▲                                     │
//!                                    └─ returns once the batch is durable ─┘
//!                                 (only then does the bridge acknowledge it)
//!
//! cycle (cron or `compact --once`; one at a time, under compact.lock):
//!   sealed segments ─► compact: decode ─┬─► audit: Parquet files ─► file:// or s3://
//!                                       └─► apply: merge per key ─► MySQL: a transaction per chunk
//!   then journal GC: segments audited, applied and old enough are deleted
//! ```
//!
//! [`config`] is what users write. [`capture`] hosts Debezium (JVM + bridge) and appends to the
//! [`journal`]; before Debezium streams, [`loader`] reads a PostgreSQL source's initial
//! snapshot itself (binary `COPY` over page ranges) into the same journal. [`compact`] decodes journal windows into Arrow change rows; [`audit`] writes
//! them as Parquet files (and reads them back, and rolls small files up), [`apply`] merges
//! them per key into MySQL. [`cycle`] runs audit, apply and journal GC under one lock;
//! [`schedule`] runs cycles on cron beside capture (`run`). [`backfill`], [`query`],
//! [`status`], [`verify`], [`check`] and [`metrics`] sit on top, and [`cli`] and `main.rs`
//! above them. Beside the flow, used by every stage: [`types`] (the Connect schema, the type
//! map and the change-row layout), [`state`] (every file of the state directory), [`source`]
//! (db-sync's own connections to the PostgreSQL source, the slot's and publication's names and
//! state, the source's identity), [`guard`] (the slot guard), [`error`] (error kinds),
//! [`failpoint`], [`telemetry`], [`timearg`] and [`duckdb_lib`].
//!
//! # Guarantees
//!
//! After a crash at any point (`kill -9` included), a restart and a compaction leave the
//! target tables equal to the source tables, and the audit files holding every streamed
//! change exactly once. Each part of that is kept in one place:
//!
//! - **Nothing lost on the way in.** The Java bridge hands each engine batch (in pieces of
//!   about 16 MB) to [`capture`] in one JNI call, which appends it to the journal with one
//!   `write` and one `fdatasync` ([`journal::Journal::append`]) before it returns. Only then
//!   does the bridge mark the records processed, so Debezium never commits an offset for an
//!   event the journal lacks; after a crash it re-delivers everything since its last
//!   committed offset (flushed every second, see [`capture::engine_properties`]).
//! - **Nothing doubled in the journal.** Re-delivered streaming events are dropped by their source
//!   position, the (commit LSN, change LSN, ordinal) mark
//!   ([de-duplication](journal#de-duplication)). Snapshot reads share one position and are kept:
//!   they are idempotent upserts downstream, flagged `_cdc_snapshot`.
//! - **Every event in exactly one audit file.** The audit stage records the window it is
//!   about to write (`pending` in `audit-progress.json`) before any file; file names derive
//!   from the window's sequence ranges, so a re-run rewrites the same names, never a second
//!   copy; a file is visible only when whole ([`audit::writer`]). Readers in db-sync skip the
//!   small files a rolled-up file replaces, so a roll-up stopped anywhere never makes them
//!   read a change twice ([`audit::rollup`]).
//! - **Every change applied with exactly-once effect.** A window's changes are merged per key
//!   and cut into numbered chunks; each chunk commits in one MySQL transaction with its row in
//!   the checkpoint table, so a re-run skips the chunks that committed, even one whose COMMIT
//!   reply was lost ([`apply`]).
//! - **In order.** Sequence numbers follow the order Debezium delivers, which for PostgreSQL
//!   is commit order; the merge goes by `_cdc_seq` per key, and windows apply one after
//!   another, so an older value never overwrites a newer one. A TRUNCATE is a change like any
//!   other: journaled, audited as `_cdc_op = 't'` and applied in its place
//!   (`target.truncate`).
//! - **Values exact.** A column's type is resolved once, from Debezium's schema *name*
//!   ([`types::Logical`]); the [type map](types#the-type-map) keeps decimals exact (as decimal
//!   text where Arrow or MySQL are too narrow), times to the µs in UTC, floats to the bit.
//!   Apply renders each value once to the text MySQL parses back to the same value, and a
//!   warning of the server (a truncated or rounded value) stops the chunk instead of a silent
//!   change. `verify` compares source and target value by value ([`verify`]).
//! - **Whole files.** Every state file is written to a temporary name, fsynced, renamed and
//!   its directory fsynced ([`state::write_atomic`]); a journal segment is created the same
//!   way; an audit file is published whole and, on `file://`, fsynced before the progress
//!   counts it. A torn journal tail can only be unacknowledged, and is cut off on open
//!   ([crashes and corruption](journal#crashes-and-corruption)).
//! - **One writer each.** One capture appends to a journal (`writer.lock`), one cycle or
//!   backfill audits and applies (`compact.lock`); both are `flock`s, which a crash releases
//!   ([`state::locks`]).
//! - **Identity.** Each journal has an identity created with it, carried by its checkpoint
//!   keys and audit file names, and numbers its events after every earlier journal's audit
//!   files: a new journal (a new host, a wiped state directory) never skips a chunk or
//!   overwrites a file of an earlier one. The source's identity is recorded on the first
//!   capture, and a journal refuses another source; a journal and Debezium offsets that
//!   disagree are refused with one line ([`state::identity`], [`capture`]).
//! - **GC only of what is safe.** A sealed segment is deleted only when every event in it is
//!   audited and, with a target, applied, and it is older than `journal.retain_hours`
//!   ([`state::collectable_through`], [`cycle`]).
//! - **Bounded memory.** `memory_limit_mb` is shared out among decode batches, apply windows
//!   and chunks, and backfill reads ([`config::Budget`]), whatever the size of a row; the
//!   engine's queue is sized by it too.
//!
//! The crash points of the tests are listed in [`failpoint`].
//!
//! # On-disk formats
//!
//! Each format is described once, in the module that owns it.
//!
//! ## Journal frames
//!
//! `journal.dir` holds segment files `segment-<first seq>.log`: a header with the writer state
//! a segment needs to continue on its own, then frames, each a length, a CRC32C and a payload
//! that is a schema (one Debezium table schema version as JSON) or an event (sequence, schema
//! id, and the body as the bridge encoded it). Segments, frames and their invariants:
//! [frames](journal#frames); the bytes: [`journal::segment`]; the event body: [`journal::event`].
//!
//! ## State files
//!
//! Beside the segments, the state directory holds the journal's identity, Debezium's offsets
//! and schema history, the audit and apply progress, job runs, the last verify, and the lock
//! files: [the state directory](state#the-state-directory).
//!
//! ## Audit files
//!
//! `<audit.url>/<schema>.<table>/date=<YYYY-MM-DD>/<first_seq>-<last_seq>.<journal>.parquet`,
//! zstd Parquet sorted by `_cdc_seq`, holding the table's columns and the `_cdc_` columns:
//! [audit files](audit#audit-files); the columns: [`types::cdc`].
//!
//! ## Checkpoint tables
//!
//! In the MySQL target, beside the applied tables: `_db_sync_checkpoint` (one row per
//! committed chunk), `_db_sync_rejected` (`target.on_reject: quarantine`) and the stage tables
//! of snapshot sweeps: [checkpoint tables](apply#checkpoint-tables).
//!
//! # Commands and configuration
//!
//! The commands, and the module behind each: [`cli`]. Every configuration key, and the
//! module that reads it: [configuration keys](config#keys).
//!
//! # Facts from outside
//!
//! What db-sync relies on in PostgreSQL, Debezium, the JVM and MySQL is written where the
//! code relies on it: positions and de-duplication in [`journal`]; the engine's properties,
//! the JVM and the bridge in [`capture`]; the slot, the publication, TLS and the signalling
//! table in [`source`]; Debezium's schemas and value encodings in [`types`] and
//! [`journal::event`]; unchanged TOAST values in [`compact`] and [`apply::merge`]; MySQL's
//! statements, sessions, errors and limits in [`apply`] and [`types::mysql`].

pub mod apply;
pub mod audit;
pub mod backfill;
pub mod capture;
pub mod check;
pub mod cli;
pub mod compact;
pub mod config;
pub mod cycle;
pub mod duckdb_lib;
pub mod error;
pub mod failpoint;
pub mod guard;
pub mod journal;
pub mod loader;
pub mod metrics;
pub mod query;
pub mod retention;
pub mod schedule;
pub mod source;
pub mod state;
pub mod status;
pub mod telemetry;
pub mod timearg;
pub mod types;
pub mod verify;
