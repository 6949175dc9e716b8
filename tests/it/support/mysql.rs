//! The MySQL target: the MariaDB that `scripts/services.sh` starts, a database per test, a
//! second server that a test may stop, and a TCP proxy that can cut the connection to it as a
//! server stop would.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::root;

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
