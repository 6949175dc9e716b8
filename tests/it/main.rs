//! Integration tests against the real services that `scripts/test.sh` starts: PostgreSQL with
//! logical WAL, the JVM with the real Debezium jars, MariaDB as the MySQL target, the S3 server,
//! the `db-sync` binary.
//!
//! One test binary (delta-rs style): it links once, which matters when a build takes minutes.
//! Shared helpers live in `support/`, one module per service.

mod apply;
mod apply_outage;
mod audit_crash;
mod audit_rows;
mod audit_store;
mod audit_types;
mod backfill_live;
mod bad_input;
mod big_rows;
mod capture;
mod crash;
mod divergence;
mod docker;
mod loader;
mod metrics;
mod operate;
mod query_cache;
mod rollup;
mod schedule;
mod setup;
mod source_changes;
mod state;
mod support;
mod tls;
mod verify;
