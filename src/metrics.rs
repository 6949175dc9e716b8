//! `/metrics` (Prometheus text, through the `prometheus-client` crate) and `/healthz`, served
//! by `db-sync run` on `metrics.listen`.
//!
//! Where each number comes from, so it always agrees with the state directory and `status`:
//!
//! - **Counters by table and op** (events captured, changes applied) are counted from the
//!   journal itself: a tailer reads the events journaled since it last looked (at each scrape
//!   and every 10 s, so journal GC never outruns it), and the events between the previous and
//!   the current `applied_through`. They count from the start of this process.
//! - **Cycle metrics** (duration histogram, failures, last success, merged rows written) are
//!   recorded by the scheduler when a cycle ends ([`cycle_done`]).
//! - **Gauges** (journal bytes and segments, last journaled / audited / applied seq, lags, the
//!   slot's retained WAL and active flag, rejected rows, verify differences) are read at scrape
//!   time with [`crate::status::collect`], as `status` reads them.
//!
//! `/healthz` answers `200 ok`, or `503` with one line naming the first problem: capture not
//! running (not connected to its slot), a resync in progress, a table apply holds out (the
//! target refused one of its rows), the last cycle failed, no cycle succeeded within three
//! schedule periods, or the slot over `source_guard.max_retained_wal_mb`.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::config::Config;
use crate::cycle::CycleError;
use crate::error::{Classify, ErrorKind};

type Labels = Vec<(String, String)>;

#[derive(Debug, thiserror::Error)]
#[error("{path}: `metrics.listen` {addr}: cannot listen ({source}); set it to a free HOST:PORT, or to \"\" to turn metrics off")]
pub struct ListenError {
    path: String,
    addr: String,
    source: std::io::Error,
}

impl Classify for ListenError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Config
    }
}

/// Binds `metrics.listen` before anything starts, so a taken port is one line at once;
/// `None` when metrics are off.
pub fn bind(config: &Config) -> Result<Option<std::net::TcpListener>, ListenError> {
    if config.metrics.listen.is_empty() {
        return Ok(None);
    }
    let err = |source| ListenError {
        path: config.path.display().to_string(),
        addr: config.metrics.listen.clone(),
        source,
    };
    let listener = std::net::TcpListener::bind(&config.metrics.listen).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    global().start_counting(config);
    Ok(Some(listener))
}

/// The process's metrics (one pipeline per process).
pub struct Metrics {
    registry: Registry,
    events_captured: Family<Labels, Counter>,
    changes_applied: Family<Labels, Counter>,
    rows_written: Counter,
    cycle_seconds: Histogram,
    cycle_failures: Counter,
    cycles: Counter,
    last_success: Gauge<f64, AtomicU64>,
    journal_bytes: Gauge,
    journal_segments: Gauge,
    last_journaled: Gauge,
    audited_through: Gauge,
    applied_through: Gauge,
    audit_lag_events: Gauge,
    audit_lag_seconds: Gauge<f64, AtomicU64>,
    apply_lag_events: Gauge,
    apply_lag_seconds: Gauge<f64, AtomicU64>,
    slot_retained: Gauge,
    slot_active: Gauge,
    slot_over_limit: Gauge,
    resync_in_progress: Gauge,
    rejected_rows: Gauge,
    tables_held: Gauge,
    verify_differences: Family<Labels, Gauge>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Journal events counted into `events_captured` (through this seq).
    captured_through: Option<u64>,
    /// Events counted into `changes_applied` (through this seq).
    applied_counted: Option<u64>,
    /// The last cycle's failure (its one line), until a cycle succeeds.
    last_failure: Option<String>,
    last_success_at: Option<Instant>,
    started: Option<Instant>,
}

static GLOBAL: OnceLock<Metrics> = OnceLock::new();

/// The metrics of this process, registered on first use.
pub fn global() -> &'static Metrics {
    GLOBAL.get_or_init(Metrics::new)
}

/// Records the end of a scheduled cycle: how long it took, and the merged rows it wrote or
/// why it failed.
pub fn cycle_done(seconds: f64, outcome: Result<u64, &CycleError>) {
    let m = global();
    m.cycles.inc();
    m.cycle_seconds.observe(seconds);
    let mut st = m.state.lock().unwrap_or_else(|p| p.into_inner());
    match outcome {
        Ok(rows) => {
            m.rows_written.inc_by(rows);
            m.last_success
                .set(chrono::Utc::now().timestamp_micros() as f64 / 1e6);
            st.last_success_at = Some(Instant::now());
            st.last_failure = None;
        }
        Err(e) => {
            m.cycle_failures.inc();
            st.last_failure = Some(e.to_string().replace('\n', " "));
        }
    }
}

impl Metrics {
    fn new() -> Metrics {
        let g = Gauge::<i64>::default;
        let f = Gauge::<f64, AtomicU64>::default;
        let mut m = Metrics {
            registry: Registry::default(),
            events_captured: Family::default(),
            changes_applied: Family::default(),
            rows_written: Counter::default(),
            cycle_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            cycle_failures: Counter::default(),
            cycles: Counter::default(),
            last_success: f(),
            journal_bytes: g(),
            journal_segments: g(),
            last_journaled: g(),
            audited_through: g(),
            applied_through: g(),
            audit_lag_events: g(),
            audit_lag_seconds: f(),
            apply_lag_events: g(),
            apply_lag_seconds: f(),
            slot_retained: g(),
            resync_in_progress: g(),
            slot_active: g(),
            slot_over_limit: g(),
            rejected_rows: g(),
            tables_held: g(),
            verify_differences: Family::default(),
            state: Mutex::new(State {
                started: Some(Instant::now()),
                ..State::default()
            }),
        };
        let mut registry = Registry::with_prefix("db_sync");
        m.register_flow(&mut registry);
        m.register_progress(&mut registry);
        m.register_source_and_target(&mut registry);
        m.registry = registry;
        m
    }

    /// The counters of what flowed through, and the cycles.
    fn register_flow(&self, r: &mut Registry) {
        r.register("events_captured", "Events journaled by capture since this process started, by source table and op (c, u, d, r, t)", self.events_captured.clone());
        r.register("changes_applied", "Journaled changes applied to the target since this process started, by source table and op (d: deletes)", self.changes_applied.clone());
        r.register(
            "rows_written",
            "Target rows written or deleted after merging per key, by the scheduled cycles",
            self.rows_written.clone(),
        );
        r.register(
            "cycle_duration_seconds",
            "Duration of the scheduled compaction cycles (audit, apply, GC)",
            self.cycle_seconds.clone(),
        );
        r.register(
            "cycles",
            "Scheduled compaction cycles run",
            self.cycles.clone(),
        );
        r.register(
            "cycle_failures",
            "Scheduled compaction cycles that failed",
            self.cycle_failures.clone(),
        );
        r.register(
            "last_successful_cycle_timestamp_seconds",
            "Unix time the last scheduled cycle succeeded (0: none yet)",
            self.last_success.clone(),
        );
    }

    /// The journal and how far audit and apply have come.
    fn register_progress(&self, r: &mut Registry) {
        r.register(
            "journal_bytes",
            "Bytes in journal segments",
            self.journal_bytes.clone(),
        );
        r.register(
            "journal_segments",
            "Journal segments",
            self.journal_segments.clone(),
        );
        r.register(
            "last_journaled_seq",
            "Last journaled sequence",
            self.last_journaled.clone(),
        );
        r.register(
            "audited_through_seq",
            "Every sequence up to this one is in an audit file",
            self.audited_through.clone(),
        );
        r.register(
            "applied_through_seq",
            "Every sequence up to this one is applied to the target",
            self.applied_through.clone(),
        );
        r.register(
            "audit_lag_events",
            "Journaled events not yet in audit files",
            self.audit_lag_events.clone(),
        );
        r.register(
            "audit_lag_seconds",
            "Age of the oldest journaled event not yet in an audit file",
            self.audit_lag_seconds.clone(),
        );
        r.register(
            "apply_lag_events",
            "Journaled events not yet applied to the target",
            self.apply_lag_events.clone(),
        );
        r.register(
            "apply_lag_seconds",
            "Age of the oldest journaled event not yet applied",
            self.apply_lag_seconds.clone(),
        );
    }

    /// The source's slot, the target's rejected rows, verify's findings.
    fn register_source_and_target(&self, r: &mut Registry) {
        r.register(
            "slot_retained_wal_bytes",
            "WAL the source keeps for the replication slot",
            self.slot_retained.clone(),
        );
        r.register(
            "slot_active",
            "1 when a capture is connected to the replication slot",
            self.slot_active.clone(),
        );
        r.register(
            "slot_over_limit",
            "1 when the slot retains more WAL than source_guard.max_retained_wal_mb",
            self.slot_over_limit.clone(),
        );
        r.register(
            "resync_in_progress",
            "1 while a resync after the replication slot was lost captures its full snapshot",
            self.resync_in_progress.clone(),
        );
        r.register(
            "rejected_rows",
            "Rows of this pipeline in the target's _db_sync_rejected",
            self.rejected_rows.clone(),
        );
        r.register(
            "tables_held",
            "Tables apply holds out because the target refused one of their rows (target.on_reject: stop); a backfill of each ends its hold",
            self.tables_held.clone(),
        );
        r.register(
            "verify_differences",
            "Differences the last `db-sync verify` of each table found",
            self.verify_differences.clone(),
        );
    }

    /// Counts from here: what the journal holds and apply has applied before are not
    /// counted. Called as the process starts, before capture journals anything (the native
    /// loader can journal a whole snapshot before the first scrape).
    fn start_counting(&self, config: &Config) {
        let dir = &config.journal.dir;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if dir.is_dir() {
            st.captured_through.get_or_insert(last_seq(dir));
            st.applied_counted.get_or_insert(applied_through(dir));
        } else {
            st.captured_through.get_or_insert(0);
            st.applied_counted.get_or_insert(0);
        }
    }

    /// Counts the events journaled and applied since the last call.
    fn tail(&self, config: &Config) {
        let dir = &config.journal.dir;
        if !dir.is_dir() {
            return;
        }
        let applied = applied_through(dir);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // From the start of this process: what was journaled and applied before is not counted.
        let last = last_seq(dir);
        let captured_from = *st.captured_through.get_or_insert(last);
        let applied_from = *st.applied_counted.get_or_insert(applied);
        let mut counts: HashMap<(bool, String, char), u64> = HashMap::new();
        let from = captured_from.min(applied_from) + 1;
        let mut seen = captured_from;
        let read = crate::journal::read_events(dir, from, |e| {
            let op = crate::journal::event::EventHeader::parse(e.body)
                .map(|h| char::from(h.op))
                .unwrap_or('?');
            if e.seq > captured_from {
                *counts
                    .entry((true, e.schema.table.clone(), op))
                    .or_default() += 1;
                seen = e.seq;
            }
            if e.seq > applied_from && e.seq <= applied {
                *counts
                    .entry((false, e.schema.table.clone(), op))
                    .or_default() += 1;
            }
            Ok(true)
        });
        if let Err(e) = read {
            tracing::debug!("metrics: reading the journal: {e}");
            return;
        }
        for ((captured, table, op), n) in counts {
            let labels = vec![
                ("table".to_string(), table),
                ("op".to_string(), op.to_string()),
            ];
            let family = if captured {
                &self.events_captured
            } else {
                &self.changes_applied
            };
            family.get_or_create(&labels).inc_by(n);
        }
        st.captured_through = Some(seen);
        st.applied_counted = Some(applied.max(applied_from));
    }

    /// Reads the gauges as `status` does (blocking: files and two short queries).
    fn refresh(&self, config: &Config) -> Option<crate::status::Status> {
        self.tail(config);
        let s = match crate::status::collect(config) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("metrics: status: {e}");
                return None;
            }
        };
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.journal_bytes.set(i(s.journal_bytes));
        self.journal_segments.set(i(s.segments as u64));
        self.last_journaled.set(i(s.last_journaled_seq));
        self.audited_through.set(i(s.audited_through));
        self.applied_through.set(i(s.applied_through));
        self.audit_lag_events.set(i(s.audit_lag_events));
        self.audit_lag_seconds.set(s.audit_lag_seconds);
        self.apply_lag_events.set(i(s.apply_lag_events));
        self.apply_lag_seconds.set(s.apply_lag_seconds);
        if let Some(slot) = &s.source_slot {
            self.slot_retained.set(slot.retained_wal_bytes);
            self.slot_active.set(i64::from(slot.active));
        } else {
            self.slot_active.set(0);
        }
        self.slot_over_limit
            .set(i64::from(s.source_slot_warning.is_some()));
        self.resync_in_progress.set(i64::from(
            s.resync.as_ref().is_some_and(|r| r.in_progress()),
        ));
        self.rejected_rows.set(i(s.rejected_rows.unwrap_or(0)));
        self.tables_held.set(i(s.held_tables.len() as u64));
        for (table, v) in &s.verify {
            self.verify_differences
                .get_or_create(&vec![("table".to_string(), table.clone())])
                .set(i(v.differences));
        }
        Some(s)
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        // A String never fails to take text.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// `None` when healthy, else the reason.
    fn unhealthy(
        &self,
        s: Option<&crate::status::Status>,
        period: Option<Duration>,
    ) -> Option<String> {
        let Some(s) = s else {
            return Some("cannot read the state directory".into());
        };
        match (&s.source_slot, &s.source_slot_error) {
            (Some(slot), _) if !slot.active => {
                return Some(format!(
                    "capture is not running: no capture is connected to replication slot {}",
                    slot.slot
                ))
            }
            (None, Some(e)) => return Some(format!("capture state unknown: {e}")),
            (None, None) => {
                return Some(
                    "capture is not running: the replication slot does not exist yet".into(),
                )
            }
            _ => {}
        }
        if let Some(r) = s.resync.as_ref().filter(|r| r.in_progress()) {
            return Some(format!(
                "resyncing since {}: {}; the target is complete again when the full snapshot is applied",
                r.started_at, r.reason
            ));
        }
        if let Some((table, hold)) = s.held_tables.iter().next() {
            return Some(hold.line(table));
        }
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = &st.last_failure {
            return Some(format!("the last compaction cycle failed: {e}"));
        }
        if let Some(period) = period {
            let since = st.last_success_at.or(st.started).map(|t| t.elapsed());
            if since.is_some_and(|d| d > period * 3) {
                return Some(format!(
                    "no compaction cycle succeeded in the last {:.0}s (three schedule periods of {:.0}s)",
                    since.unwrap_or_default().as_secs_f64(),
                    period.as_secs_f64()
                ));
            }
        }
        s.source_slot_warning.clone()
    }
}

/// Apply's progress: the last sequence applied (0 before any).
fn applied_through(dir: &std::path::Path) -> u64 {
    crate::state::ApplyProgress::load(dir)
        .map(|p| p.applied_through)
        .unwrap_or(0)
}

/// The last journaled sequence (0 for an empty journal).
fn last_seq(dir: &std::path::Path) -> u64 {
    let Ok(segments) = crate::journal::segments(dir) else {
        return 0;
    };
    let mut last = segments.last().map_or(0, |s| s.first_seq.saturating_sub(1));
    let _ = crate::journal::read_events(dir, segments.last().map_or(0, |s| s.first_seq), |e| {
        last = e.seq;
        Ok(true)
    });
    last
}

/// Serves `/metrics` and `/healthz` until `stop` turns true. `period` is the compact jobs'
/// schedule period (`schedule::compact_period`), for the health check.
pub async fn serve(
    listener: std::net::TcpListener,
    config: Arc<Config>,
    period: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("metrics: cannot serve: {e}");
            return;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics and /healthz");
    }
    let metrics = global();
    // Count what is journaled from now on, and keep the tail close behind journal GC.
    {
        let config = config.clone();
        let _ = tokio::task::spawn_blocking(move || metrics.tail(&config)).await;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = stop.changed() => {
                if *stop.borrow() {
                    return;
                }
            }
            _ = tick.tick() => {
                let config = config.clone();
                tokio::task::spawn_blocking(move || metrics.tail(&config));
            }
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let config = config.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let config = config.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(req.uri().path(), config, period).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

async fn answer(
    path: &str,
    config: Arc<Config>,
    period: Option<Duration>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let metrics = global();
    let (status, content_type, body) = match path {
        "/metrics" => {
            let body = tokio::task::spawn_blocking(move || {
                metrics.refresh(&config);
                metrics.encode()
            })
            .await
            .unwrap_or_default();
            (
                200,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                body,
            )
        }
        "/healthz" => {
            let verdict = tokio::task::spawn_blocking(move || {
                let s = metrics.refresh(&config);
                metrics.unhealthy(s.as_ref(), period)
            })
            .await
            .unwrap_or_else(|_| Some("the health check panicked".into()));
            match verdict {
                None => (200, "text/plain; charset=utf-8", "ok\n".to_string()),
                Some(why) => (503, "text/plain; charset=utf-8", format!("{why}\n")),
            }
        }
        _ => (
            404,
            "text/plain; charset=utf-8",
            "not found: try /metrics or /healthz\n".to_string(),
        ),
    };
    let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_names_every_metric() {
        let m = Metrics::new();
        m.events_captured
            .get_or_create(&vec![
                ("table".into(), "public.t".into()),
                ("op".into(), "c".into()),
            ])
            .inc_by(3);
        let text = m.encode();
        assert!(
            text.contains("db_sync_events_captured_total{table=\"public.t\",op=\"c\"} 3"),
            "{text}"
        );
        for name in [
            "db_sync_cycle_duration_seconds_bucket",
            "db_sync_cycle_failures_total",
            "db_sync_slot_retained_wal_bytes",
            "db_sync_apply_lag_seconds",
            "db_sync_resync_in_progress",
            "db_sync_tables_held",
        ] {
            assert!(text.contains(name), "{name}: {text}");
        }
    }
}
