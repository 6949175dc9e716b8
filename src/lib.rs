//! db-sync: change-data-capture batch sync.
//!
//! Data flows one way, and the modules follow it (DESIGN §1):
//! [`config`] → [`capture`] (JVM + Debezium bridge) → [`journal`] → compaction and apply
//! (later issues). [`cli`] and `main.rs` sit on top; [`check`] and [`telemetry`] beside.

pub mod capture;
pub mod check;
pub mod cli;
pub mod config;
pub mod journal;
pub mod telemetry;
