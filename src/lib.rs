//! db-sync: change-data-capture batch sync.
//!
//! Data flows one way, and the modules follow it (DESIGN §1):
//! [`config`] → [`capture`] (JVM + Debezium bridge) → [`journal`] → [`compact`] (decode →
//! Arrow) → [`audit`] (Parquet in object storage) and [`apply`] (merge per key → MySQL);
//! [`cycle`] runs audit, apply and journal GC under one lock, and [`schedule`] runs cycles on
//! cron beside capture (`run`). [`cli`] and `main.rs` sit on
//! top; [`check`], [`status`], [`failpoint`] and [`telemetry`] beside.

pub mod apply;
pub mod audit;
pub mod capture;
pub mod check;
pub mod cli;
pub mod compact;
pub mod config;
pub mod cycle;
pub mod failpoint;
pub mod journal;
pub mod query;
pub mod schedule;
pub mod status;
pub mod telemetry;
pub mod timearg;
