//! The PostgreSQL source: a synchronous session for set-up and workloads, and a database,
//! pipeline and working directory per test.

use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::process::{read_journal, run_db_sync, Capture};
use super::root;

pub fn pg_port() -> u16 {
    std::env::var("PG_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(15432)
}

pub fn pg_password() -> String {
    std::env::var("PG_PASSWORD").unwrap_or_else(|_| "postgres".into())
}

/// A synchronous PostgreSQL session for test set-up and workloads.
pub struct Sql {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Sql {
    pub fn connect(port: u16, db: &str) -> Sql {
        Sql::try_connect(port, db, "postgres", &pg_password()).unwrap_or_else(|e| {
            panic!("cannot connect to PostgreSQL on 127.0.0.1:{port}/{db} ({e}); start it with scripts/services.sh start all, or run scripts/test.sh")
        })
    }

    pub fn try_connect(port: u16, db: &str, user: &str, password: &str) -> Result<Sql, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(port)
            .user(user)
            .password(password)
            .dbname(db)
            .connect_timeout(Duration::from_secs(5));
        let client = rt.block_on(async {
            let (client, conn) = cfg
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok::<_, String>(client)
        })?;
        Ok(Sql { rt, client })
    }

    pub fn exec(&self, sql: &str) {
        self.rt
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("SQL failed: {sql}: {e:?}"));
    }

    /// Rows as text (NULL as None), through the simple query protocol.
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let msgs = self
            .rt
            .block_on(self.client.simple_query(sql))
            .unwrap_or_else(|e| panic!("SQL failed: {sql}: {e:?}"));
        msgs.into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect()
    }

    pub fn value(&self, sql: &str) -> Option<String> {
        self.rows(sql)
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
    }
}

pub(crate) static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A database, pipeline and working directory of one test. Dropping it stops nothing (the
/// test owns its processes) but drops the slot, the publication and the database.
pub struct Pipeline {
    pub name: String,
    pub db: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// Extra `source:` lines (already indented by the caller's choice of keys).
    pub source_extra: Vec<(String, String)>,
    pub tables: String,
}

impl Pipeline {
    /// A fresh database `db_<name>` with `schema_sql` run in it, capturing `tables`.
    pub fn new(test: &str, schema_sql: &str, tables: &str) -> Pipeline {
        Pipeline::on_port(pg_port(), test, schema_sql, tables)
    }

    pub fn on_port(port: u16, test: &str, schema_sql: &str, tables: &str) -> Pipeline {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("t_{test}_{}_{n}", std::process::id());
        let db = format!("db_{name}");
        let admin = Sql::connect(port, "postgres");
        drop_database(&admin, &db, &name);
        admin.exec(&format!("CREATE DATABASE {db}"));
        Sql::connect(port, &db).exec(schema_sql);
        Pipeline {
            name,
            db,
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            source_extra: Vec::new(),
            tables: tables.to_string(),
        }
    }

    pub fn sql(&self) -> Sql {
        Sql::connect(self.port, &self.db)
    }

    pub fn slot(&self) -> String {
        format!("dbsync_{}", self.name.to_lowercase())
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.dir.path().join("journal")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Writes the config with `password` and `extra` YAML appended at the top level (or
    /// continuing the `journal:` section). Metrics are off unless `extra` sets `metrics:`
    /// (tests run many daemons at once, and the default port would be taken).
    pub fn write_config_with(&self, password: &str, port: u16, extra: &str) -> PathBuf {
        let metrics_off = if extra.contains("metrics:") {
            ""
        } else {
            "metrics:\n  listen: \"\"\n"
        };
        let mut source = format!(
            "  connector.class: io.debezium.connector.postgresql.PostgresConnector\n  database.hostname: 127.0.0.1\n  database.port: {port}\n  database.user: postgres\n  database.password: {password}\n  database.dbname: {db}\n  table.include.list: {tables}\n  offset.storage.file.filename: {dir}/offsets.dat\n  schema.history.internal.file.filename: {dir}/history.dat\n",
            db = self.db,
            tables = self.tables,
            dir = self.dir.path().display(),
        );
        for (k, v) in &self.source_extra {
            source.push_str(&format!("  {k}: {v}\n"));
        }
        let text = format!(
            "name: {name}\nsource:\n{source}engine:\n  lib_dir: {lib}\n  jvm_options: [-Xmx256m]\njournal:\n  dir: {journal}\n  segment_max_bytes: {seg}\n{extra}{sep}{metrics_off}",
            name = self.name,
            lib = root().join("debezium/lib").display(),
            journal = self.journal_dir().display(),
            seg = 1 << 20,
            // After `extra`, which may continue the `journal:` section.
            sep = if extra.is_empty() || extra.ends_with('\n') { "" } else { "\n" },
        );
        let path = self.config_path();
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub fn write_config(&self) -> PathBuf {
        self.write_config_with(&pg_password(), self.port, "")
    }

    /// Starts `db-sync capture` in the background; its stderr goes to a log file.
    pub fn start_capture(&self) -> Capture {
        self.write_config();
        self.spawn_db_sync(&["capture"])
    }

    /// Runs a db-sync command to completion.
    pub fn db_sync(&self, args: &[&str]) -> Output {
        run_db_sync(self.dir.path(), &self.config_path(), args)
    }

    /// The journal as `journal dump` JSON, read through the library.
    pub fn events(&self) -> Vec<Value> {
        read_journal(&self.journal_dir())
    }

    /// Waits until the journal holds at least `n` events; panics with the capture log if not.
    pub fn wait_for_events(
        &self,
        n: usize,
        capture: &mut Capture,
        timeout: Duration,
    ) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let events = self.events();
            if events.len() >= n {
                return events;
            }
            if let Ok(Some(status)) = capture.child.try_wait() {
                panic!(
                    "capture exited ({status}) with {} of {n} events; log:\n{}",
                    events.len(),
                    capture.log()
                );
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out with {} of {n} events; log:\n{}",
                    events.len(),
                    capture.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if let Ok(admin) = Sql::try_connect(self.port, "postgres", "postgres", &pg_password()) {
            drop_database(&admin, &self.db, &self.name);
        }
    }
}

fn drop_database(admin: &Sql, db: &str, name: &str) {
    let slot = format!("dbsync_{}", name.to_lowercase());
    // A slot still held by a dying capture cannot be dropped for a moment: retry briefly.
    for _ in 0..50 {
        let active = admin.value(&format!(
            "SELECT active::text FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ));
        match active.as_deref() {
            None => break,
            Some("false") => {
                let _ = admin.rt.block_on(
                    admin
                        .client
                        .batch_execute(&format!("SELECT pg_drop_replication_slot('{slot}')")),
                );
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let _ = admin.rt.block_on(
        admin
            .client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")),
    );
}
