//! db-sync: change-data-capture batch sync.
//!
//! Data flows one way, and the modules follow it (DESIGN §1; README "Layout"):
//!
//! ```text
//! config → capture → journal → compact ─┬→ audit ─┐
//!                                       └→ apply ─┴→ cycle → schedule
//!                                                   backfill · query · status · check → cli
//! ```
//!
//! [`config`] is what users write. [`capture`] hosts Debezium (JVM + bridge) and appends to the
//! [`journal`]. [`compact`] decodes journal windows into Arrow change rows; [`audit`] writes
//! them as Parquet files (and reads them back), [`apply`] merges them per key into MySQL.
//! [`cycle`] runs audit, apply and journal GC under one lock; [`schedule`] runs cycles on cron
//! beside capture (`run`). [`backfill`], [`query`], [`status`] and [`check`] sit on top, and
//! [`cli`] and `main.rs` above them. Beside the flow, used by every stage: [`types`] (the
//! Connect schema, column types and the change-row layout), [`state`] (every file of the
//! state directory), [`source`] (db-sync's own connections to the PostgreSQL source, the
//! slot's and publication's names and state, the source's identity), [`error`] (error
//! kinds), [`failpoint`], [`telemetry`], [`timearg`].

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
pub mod metrics;
pub mod query;
pub mod schedule;
pub mod source;
pub mod state;
pub mod status;
pub mod telemetry;
pub mod timearg;
pub mod types;
pub mod verify;
