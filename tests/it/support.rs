//! Test support: the real PostgreSQL that `scripts/services.sh` starts, a database and
//! pipeline per test, the `db-sync` binary as a child process, and the journal read back.
//!
//! Every test gets its own database, replication slot, publication, journal and offsets, so
//! tests run in parallel against one server and clean up after themselves.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use db_sync::journal::{self, event};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_db-sync");

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

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

static COUNTER: AtomicU32 = AtomicU32::new(0);

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

    /// Writes the config with `password` and `extra` YAML appended at the top level.
    pub fn write_config_with(&self, password: &str, port: u16, extra: &str) -> PathBuf {
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
            "name: {name}\nsource:\n{source}engine:\n  lib_dir: {lib}\n  jvm_options: [-Xmx256m]\njournal:\n  dir: {journal}\n  segment_max_bytes: {seg}\n{extra}",
            name = self.name,
            lib = root().join("debezium/lib").display(),
            journal = self.journal_dir().display(),
            seg = 1 << 20,
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

pub fn run_db_sync(cwd: &Path, config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run db-sync")
}

pub fn read_journal(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    if !dir.exists() {
        return out;
    }
    journal::read_events(dir, 0, |e| {
        out.push(event::to_json(e.seq, e.schema, e.body).expect("event decodes"));
        Ok(true)
    })
    .expect("journal reads");
    out
}

/// A running `db-sync capture`.
pub struct Capture {
    pub child: Child,
    pub log_path: PathBuf,
}

impl Capture {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGTERM, then the exit code (panics if it does not exit within `timeout`).
    pub fn terminate(mut self, timeout: Duration) -> i32 {
        signal(&self.child, libc_sigterm());
        self.wait(timeout)
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    pub fn wait(&mut self, timeout: Duration) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "db-sync did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn libc_sigterm() -> &'static str {
    "TERM"
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{sig} failed");
}

/// The last non-empty line of a process's stderr: the one-line error.
pub fn last_stderr_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string()
}

// Audit-file tests (compact.rs): a capture with extra config, db-sync with extra environment,
// and the S3-compatible server of `scripts/services.sh`.

impl Pipeline {
    /// Like [`Pipeline::start_capture`], with `extra` YAML appended to the config (an `audit:`
    /// section, say); later [`Pipeline::db_sync`] calls read the same config.
    pub fn start_capture_with(&self, extra: &str) -> Capture {
        self.write_config_with(&pg_password(), self.port, extra);
        self.spawn_db_sync(&["capture"])
    }

    /// Starts a db-sync command in the background with the config as written; its stderr goes
    /// to a log file.
    pub fn spawn_db_sync(&self, args: &[&str]) -> Capture {
        let log_path = self.dir.path().join(format!(
            "db-sync-{}.log",
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(BIN)
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn db-sync");
        Capture { child, log_path }
    }

    /// Runs a db-sync command to completion with extra environment variables.
    pub fn db_sync_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .envs(env.iter().copied())
            .current_dir(self.dir.path())
            .output()
            .expect("run db-sync")
    }
}

/// The S3-compatible server (moto) that `scripts/services.sh` starts: `S3_ENDPOINT`, by
/// default http://127.0.0.1:19000, with bucket `audit`, key `test`, secret `test`.
pub fn s3_endpoint() -> String {
    std::env::var("S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:19000".into())
}

/// Whether something accepts TCP connections at [`s3_endpoint`].
pub fn s3_reachable() -> bool {
    use std::net::ToSocketAddrs;
    let endpoint = s3_endpoint();
    let authority = endpoint
        .split("://")
        .nth(1)
        .unwrap_or(&endpoint)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let authority = if authority.contains(':') {
        authority
    } else if endpoint.starts_with("https://") {
        format!("{authority}:443")
    } else {
        format!("{authority}:80")
    };
    authority
        .to_socket_addrs()
        .map(|mut addrs| {
            addrs.any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
        })
        .unwrap_or(false)
}

// The MySQL target (apply.rs): the MariaDB that `scripts/services.sh` starts, a database per
// test, and a TCP proxy that can cut the connection to it as a server stop would.

pub fn mysql_port() -> u16 {
    std::env::var("MYSQL_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(13306)
}

/// A synchronous MariaDB session (root over TCP) on a database of its own.
pub struct My {
    rt: tokio::runtime::Runtime,
    conn: std::cell::RefCell<mysql_async::Conn>,
    pub db: String,
    pub port: u16,
}

impl My {
    /// Creates database `db` (dropping an old one) and connects to it.
    pub fn fresh(db: &str) -> My {
        My::fresh_on(mysql_port(), db)
    }

    /// [`My::fresh`] on the MariaDB at `port`.
    pub fn fresh_on(port: u16, db: &str) -> My {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let url = format!("mysql://root@127.0.0.1:{port}/mysql");
        let conn = rt
            .block_on(mysql_async::Conn::from_url(url))
            .unwrap_or_else(|e| panic!("cannot connect to MariaDB on 127.0.0.1:{port} ({e}); start it with scripts/services.sh start all, or run scripts/test.sh"));
        let my = My {
            rt,
            conn: std::cell::RefCell::new(conn),
            db: db.to_string(),
            port,
        };
        my.exec(&format!("DROP DATABASE IF EXISTS `{db}`"));
        my.exec(&format!(
            "CREATE DATABASE `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        ));
        my.exec(&format!("USE `{db}`"));
        my
    }

    /// The `target:` section pointing at this database.
    pub fn target_yaml(&self, extra: &str) -> String {
        self.target_yaml_on(self.port, extra)
    }

    pub fn target_yaml_on(&self, port: u16, extra: &str) -> String {
        format!(
            "target:\n  url: mysql://root@127.0.0.1:{port}/{}\n{extra}",
            self.db
        )
    }

    /// A new session (after the server restarted).
    pub fn reconnect(&self) {
        let url = format!("mysql://root@127.0.0.1:{}/{}", self.port, self.db);
        let conn = self
            .rt
            .block_on(mysql_async::Conn::from_url(url))
            .unwrap_or_else(|e| panic!("cannot reconnect to MariaDB on {}: {e}", self.port));
        *self.conn.borrow_mut() = conn;
    }

    pub fn exec(&self, sql: &str) {
        use mysql_async::prelude::Queryable;
        let mut conn = self.conn.borrow_mut();
        self.rt
            .block_on(conn.query_drop(sql))
            .unwrap_or_else(|e| panic!("MariaDB: {sql}: {e}"));
    }

    /// Rows as text (NULL as None), through the text protocol.
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        use mysql_async::prelude::Queryable;
        let mut conn = self.conn.borrow_mut();
        let rows: Vec<mysql_async::Row> = self
            .rt
            .block_on(conn.query(sql))
            .unwrap_or_else(|e| panic!("MariaDB: {sql}: {e}"));
        rows.into_iter()
            .map(|r| {
                r.unwrap()
                    .into_iter()
                    .map(|v| match v {
                        mysql_async::Value::NULL => None,
                        mysql_async::Value::Bytes(b) => {
                            Some(String::from_utf8_lossy(&b).into_owned())
                        }
                        other => Some(other.as_sql(true)),
                    })
                    .collect()
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

impl Drop for My {
    fn drop(&mut self) {
        use mysql_async::prelude::Queryable;
        let sql = format!("DROP DATABASE IF EXISTS `{}`", self.db);
        let mut conn = self.conn.borrow_mut();
        let _ = self.rt.block_on(conn.query_drop(sql));
    }
}

/// `scripts/services.sh ACTION mariadb` for the MariaDB on `port` (a second, throwaway one).
pub fn mariadb_service(action: &str, port: u16) -> bool {
    Command::new("bash")
        .arg(root().join("scripts/services.sh"))
        .args([action, "mariadb"])
        .env("MYSQL_PORT", port.to_string())
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Stops the MariaDB on its port when dropped.
pub struct StopMariadb(pub u16);

impl Drop for StopMariadb {
    fn drop(&mut self) {
        mariadb_service("stop", self.0);
    }
}

/// A TCP proxy to MariaDB that a test can take down (every connection cut, new ones refused)
/// and bring back: a server stop and restart as the client sees it, without stopping the
/// server other tests share.
pub struct Proxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<AtomicU32>,
}

impl Proxy {
    pub fn start(to: u16) -> Proxy {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(AtomicU32::new(0));
        let (up2, gen2) = (up.clone(), generation.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let born = gen2.load(Ordering::SeqCst);
                for (from, into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let (up, gen) = (up2.clone(), gen2.clone());
                    std::thread::spawn(move || pump(from, into, up, gen, born));
                }
            }
        });
        Proxy {
            port,
            up,
            generation,
        }
    }

    /// Cuts every connection and refuses new ones.
    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn pump(
    mut from: std::net::TcpStream,
    mut into: std::net::TcpStream,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<AtomicU32>,
    born: u32,
) {
    use std::io::{Read, Write};
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if generation.load(Ordering::SeqCst) != born || !up.load(Ordering::SeqCst) {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if into.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = into.shutdown(std::net::Shutdown::Both);
}
