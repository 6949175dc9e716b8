//! The MySQL session apply runs on: connecting, the session settings, one retry loop for
//! transient failures, and reading the server's error text.
//!
//! Sessions run with strict `sql_mode`, `NO_AUTO_VALUE_ON_ZERO` and `time_zone '+00:00'`
//! (`DATETIME` has no zone: db-sync writes UTC). A failed statement is sorted once
//! ([`SqlError::kind`]): transient failures (connection lost, deadlock, lock wait, server
//! shutting down) roll back and retry with backoff, 8 attempts over about 25 s; anything else
//! is returned at once.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

use crate::error::ErrorKind;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries of a transient failure: 0.25 s doubling to 8 s, 8 attempts over about 25 s.
const MAX_ATTEMPTS: u32 = 8;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

const SESSION: [&str; 3] = [
    "SET NAMES utf8mb4",
    "SET SESSION time_zone = '+00:00'",
    // NO_AUTO_VALUE_ON_ZERO: a key 0 is stored as 0, not replaced by the next auto-increment.
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'",
];

/// MySQL server error codes a retry can get past.
fn transient_code(code: u16) -> bool {
    matches!(
        code,
        1205 // lock wait timeout
        | 1213 // deadlock
        | 1040 // too many connections
        | 1053 // server shutdown in progress
        | 1927 // connection killed (MariaDB)
        | 2006 // server has gone away
        | 2013 // lost connection during query
        | 4031 // disconnected by the server (idle)
    )
}

/// A failed statement, sorted into what a retry can fix and what it cannot.
#[derive(Debug)]
pub struct SqlError {
    pub code: Option<u16>,
    pub message: String,
    pub transient: bool,
    /// The connection is unusable: drop it and reconnect.
    pub fatal: bool,
}

impl SqlError {
    pub fn kind(&self) -> ErrorKind {
        if self.transient {
            ErrorKind::Transient
        } else {
            ErrorKind::Permanent
        }
    }

    /// The connection failed or went away (as opposed to the server refusing a statement).
    pub fn is_unreachable(&self) -> bool {
        self.code.is_none() && self.transient
    }
}

impl std::error::Error for SqlError {}

impl From<mysql_async::Error> for SqlError {
    fn from(e: mysql_async::Error) -> Self {
        use mysql_async::{DriverError, Error};
        let fatal = e.is_fatal();
        match e {
            Error::Server(s) => SqlError {
                code: Some(s.code),
                transient: transient_code(s.code),
                message: s.message,
                fatal: false,
            },
            // A certificate that does not verify will not verify on the next attempt either.
            Error::Io(io) if tls_failure(&io) => SqlError {
                code: None,
                message: format!(
                    "{}; check ssl-mode and ssl-ca in target.url",
                    chain(&io).replace('\n', " ")
                ),
                transient: false,
                fatal: true,
            },
            Error::Io(io) => SqlError {
                code: None,
                message: io.to_string(),
                transient: true,
                fatal: true,
            },
            Error::Driver(DriverError::NoClientSslFlagFromServer) => SqlError {
                code: None,
                message: "the target does not offer TLS, and target.url asks for it (ssl-mode): enable TLS on the server, or set ssl-mode=PREFERRED or DISABLED".into(),
                transient: false,
                fatal: true,
            },
            Error::Driver(
                d @ (DriverError::ConnectionClosed
                | DriverError::PoolDisconnected
                | DriverError::PacketOutOfOrder),
            ) => SqlError {
                code: None,
                message: d.to_string(),
                transient: true,
                fatal: true,
            },
            other => SqlError {
                code: None,
                message: other.to_string().replace('\n', " "),
                transient: false,
                fatal,
            },
        }
    }
}

/// Whether an I/O failure is a TLS handshake that failed (a certificate, a protocol), not a
/// connection that dropped.
fn tls_failure(e: &mysql_async::IoError) -> bool {
    if matches!(e, mysql_async::IoError::Tls(_)) {
        return true;
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = src {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return true;
            }
        }
        src = err.source();
    }
    false
}

/// An error and its causes, joined.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s = format!("{s}: {t}");
        }
        src = inner.source();
    }
    s
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "{} (MySQL error {code})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Runs `$body` (an expression of type `Result<T, SqlError>` that may use the connection
/// `$conn` and `.await`) on `$session`, retrying transient failures with backoff: the whole
/// body is one unit (a statement, or a transaction the body commits). Evaluates to the last
/// error when it is permanent or the attempts are spent.
///
/// A macro rather than a function taking an async closure: the futures of closures that borrow
/// the connection cannot be shown `Send` to the scheduler that runs cycles.
macro_rules! with_retry {
    ($session:expr, $what:expr, |$conn:ident| $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            let result = async {
                let $conn = $session.conn().await?;
                $body
            }
            .await;
            match result {
                Ok(v) => break Ok(v),
                Err(e) => {
                    if let Err(e) = $session.backoff(e, &mut attempt, $what).await {
                        break Err(e);
                    }
                }
            }
        }
    }};
}
pub(crate) use with_retry;

/// A bad `target.url`.
#[derive(Debug, thiserror::Error)]
#[error("{message}; expected mysql://USER:PASSWORD@HOST:PORT/DATABASE")]
pub struct UrlError {
    pub message: String,
}

/// How the target connection uses TLS: `ssl-mode` in `target.url`, as the MySQL client
/// means it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disabled,
    /// The default: TLS when the server offers it (unverified), plain otherwise.
    Preferred,
    /// TLS, certificate not verified.
    Required,
    /// TLS, certificate verified against `ssl-ca` (or the built-in roots), host name not.
    VerifyCa,
    /// TLS, certificate and host name verified.
    VerifyIdentity,
}

/// `target.url` with MySQL's `ssl-mode` and `ssl-ca` parameters (also spelled `ssl_mode`,
/// `ssl_ca`) taken out and turned into driver options; the driver's own `require_ssl`,
/// `verify_ca` and `verify_identity` parameters still work, and then `ssl-mode` is not implied.
pub fn target_opts(url: &str) -> Result<(OptsBuilder, TlsMode), UrlError> {
    let bad = |message: String| UrlError { message };
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut rest = Vec::new();
    let (mut mode, mut ca) = (None, None);
    let mut native_tls = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(v);
        match k.to_ascii_lowercase().replace('_', "-").as_str() {
            "ssl-mode" | "sslmode" => {
                mode = Some(match value.to_ascii_uppercase().replace('-', "_").as_str() {
                    "DISABLED" => TlsMode::Disabled,
                    "PREFERRED" => TlsMode::Preferred,
                    "REQUIRED" => TlsMode::Required,
                    "VERIFY_CA" => TlsMode::VerifyCa,
                    "VERIFY_IDENTITY" => TlsMode::VerifyIdentity,
                    other => {
                        return Err(bad(format!(
                            "ssl-mode={other} is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY"
                        )))
                    }
                })
            }
            "ssl-ca" => ca = Some(std::path::PathBuf::from(value)),
            "require-ssl" | "verify-ca" | "verify-identity" => {
                native_tls = true;
                rest.push(pair);
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let opts = Opts::from_url(&url).map_err(|e| bad(e.to_string()))?;
    let mode = match mode {
        Some(m) => m,
        None if native_tls => return Ok((OptsBuilder::from_opts(opts), TlsMode::Required)),
        None if ca.is_some() => TlsMode::VerifyCa,
        None => TlsMode::Preferred,
    };
    if let Some(ca) = &ca {
        if !ca.is_file() {
            return Err(bad(format!(
                "ssl-ca={} is not a readable file",
                ca.display()
            )));
        }
    }
    let ssl = match mode {
        TlsMode::Disabled => None,
        TlsMode::Preferred | TlsMode::Required => Some(
            mysql_async::SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        ),
        TlsMode::VerifyCa | TlsMode::VerifyIdentity => {
            let mut ssl = mysql_async::SslOpts::default()
                .with_danger_skip_domain_validation(mode == TlsMode::VerifyCa);
            if let Some(ca) = ca {
                ssl = ssl.with_root_certs(vec![ca.into()]);
            }
            Some(ssl)
        }
    };
    Ok((OptsBuilder::from_opts(opts).ssl_opts(ssl), mode))
}

/// `%XX` escapes decoded (a path in a URL parameter).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Opens a connection within [`CONNECT_TIMEOUT`]; `Err` only for the timeout.
async fn connect(opts: Opts) -> Result<Result<Conn, mysql_async::Error>, SqlError> {
    tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts))
        .await
        .map_err(|_| SqlError {
            code: None,
            message: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
            transient: true,
            fatal: true,
        })
}

/// One connection to the target, reopened as needed.
pub struct Session {
    opts: Opts,
    /// `ssl-mode=PREFERRED` (the default): the plain options, for a server without TLS.
    plain: Option<Opts>,
    /// `target.url` with the password hidden, for messages.
    pub url: String,
    conn: Option<Conn>,
}

impl Session {
    /// A session for `url` (not connected yet); `redacted` is how messages show it.
    pub fn new(url: &str, redacted: String) -> Result<Session, UrlError> {
        let (builder, mode) = target_opts(url)?;
        let opts: Opts = builder
            .init(SESSION.to_vec())
            .prefer_socket(false)
            .stmt_cache_size(64)
            .into();
        if opts.db_name().is_none() {
            return Err(UrlError {
                message: "names no database".into(),
            });
        }
        let plain = (mode == TlsMode::Preferred)
            .then(|| OptsBuilder::from_opts(opts.clone()).ssl_opts(None).into());
        Ok(Session {
            opts,
            plain,
            url: redacted,
            conn: None,
        })
    }

    /// The connection, opened if needed (within a 10 s timeout).
    /// Another session to the same target (not connected yet), for work in parallel.
    pub fn sibling(&self) -> Session {
        Session {
            opts: self.opts.clone(),
            plain: self.plain.clone(),
            url: self.url.clone(),
            conn: None,
        }
    }

    pub async fn conn(&mut self) -> Result<&mut Conn, SqlError> {
        if self.conn.is_none() {
            let mut conn = connect(self.opts.clone()).await?;
            if let Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            )) = &conn
            {
                if let Some(plain) = self.plain.take() {
                    // ssl-mode=PREFERRED and a server without TLS: plain from now on.
                    tracing::debug!(target = %self.url, "the target offers no TLS; connecting without");
                    self.opts = plain;
                    conn = connect(self.opts.clone()).await?;
                }
            }
            self.conn = Some(conn?);
        }
        Ok(self.conn.as_mut().expect("set above"))
    }

    /// Runs `sql` (no result), retrying transient failures.
    pub async fn exec(&mut self, sql: &str, what: &str) -> Result<(), SqlError> {
        with_retry!(self, what, |conn| conn
            .query_drop(sql)
            .await
            .map_err(SqlError::from))
    }

    /// Waits before the next attempt after `e`, or gives up: `Err` when `e` is permanent or
    /// the attempts are spent. [`with_retry!`] is the loop around it.
    pub async fn backoff(
        &mut self,
        e: SqlError,
        attempt: &mut u32,
        what: &str,
    ) -> Result<(), SqlError> {
        if e.fatal {
            self.conn = None;
        } else {
            // Lock-wait timeouts leave the transaction open; deadlocks already rolled it back.
            self.rollback().await;
        }
        *attempt += 1;
        if !e.transient || *attempt >= MAX_ATTEMPTS {
            return Err(e);
        }
        let wait = (FIRST_BACKOFF * 2u32.pow(*attempt - 1)).min(MAX_BACKOFF);
        tracing::warn!(
            target = %self.url,
            attempt = *attempt,
            "{what}: {e}; retrying in {:.2}s",
            wait.as_secs_f64()
        );
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Rolls back whatever is open; a connection that cannot is dropped (the server then
    /// rolls back).
    pub async fn rollback(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            if conn.query_drop("ROLLBACK").await.is_err() {
                self.conn = None;
            }
        }
    }
}

/// A single-quoted SQL string literal (for the few statements built with a literal).
pub fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// `… at row 3` → 3.
pub fn row_in_message(m: &str) -> Option<usize> {
    let at = m.rfind(" at row ")?;
    m[at + 8..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The column a server message names: `column 'x'`, ``column `db`.`t`.`x` ``, `Column 'x'`.
pub fn column_in_message(m: &str) -> Option<String> {
    let lower = m.to_ascii_lowercase();
    let at = lower.find("column ")? + 7;
    let rest = &m[at..];
    if let Some(r) = rest.strip_prefix('\'') {
        return r.split('\'').next().map(str::to_string);
    }
    if let Some(mut r) = rest.strip_prefix('`') {
        // The last part of `db`.`t`.`col`; a doubled backtick is one backtick.
        let mut name = String::new();
        loop {
            let mut chars = r.char_indices().peekable();
            name.clear();
            let end = loop {
                let (i, c) = chars.next()?;
                if c == '`' {
                    if matches!(chars.peek(), Some((_, '`'))) {
                        chars.next();
                        name.push('`');
                        continue;
                    }
                    break i + 1;
                }
                name.push(c);
            };
            match r[end..].strip_prefix(".`") {
                Some(next) => r = next,
                None => return Some(name),
            }
        }
    }
    None
}

/// `mysql://user:***@host:port/db`: the URL with its password hidden.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_mode_and_ssl_ca_come_out_of_the_url() {
        let mode = |url: &str| target_opts(url).map(|(_, m)| m);
        assert_eq!(mode("mysql://u:p@h/db").unwrap(), TlsMode::Preferred);
        assert_eq!(
            mode("mysql://u:p@h/db?ssl-mode=DISABLED").unwrap(),
            TlsMode::Disabled
        );
        assert_eq!(
            mode("mysql://u:p@h/db?ssl_mode=required").unwrap(),
            TlsMode::Required
        );
        assert_eq!(
            mode("mysql://u:p@h/db?tcp_nodelay=true&ssl-mode=VERIFY_IDENTITY").unwrap(),
            TlsMode::VerifyIdentity
        );
        assert_eq!(
            mode("mysql://u:p@h/db?require_ssl=true").unwrap(),
            TlsMode::Required
        );
        let e = mode("mysql://u:p@h/db?ssl-mode=sometimes").unwrap_err();
        assert!(e.message.contains("ssl-mode=SOMETIMES"), "{}", e.message);
        let e = mode("mysql://u:p@h/db?ssl-ca=%2Fno%2Fsuch.pem").unwrap_err();
        assert!(e.message.contains("ssl-ca=/no/such.pem"), "{}", e.message);
        let ca = tempfile::NamedTempFile::new().unwrap();
        let url = format!("mysql://u:p@h/db?ssl-ca={}", ca.path().display());
        assert_eq!(mode(&url).unwrap(), TlsMode::VerifyCa);
        let (opts, _) = target_opts(&url).unwrap();
        let opts: Opts = opts.into();
        assert_eq!(opts.db_name(), Some("db"));
        assert!(opts.ssl_opts().is_some());
    }

    #[test]
    fn server_messages_name_column_and_row() {
        let m = "Out of range value for column 'qty' at row 3";
        assert_eq!(column_in_message(m).as_deref(), Some("qty"));
        assert_eq!(row_in_message(m), Some(3));
        let m = "Incorrect decimal value: 'x' for column `target`.`t`.`we``ird` at row 12";
        assert_eq!(row_in_message(m), Some(12));
        assert_eq!(column_in_message(m).as_deref(), Some("we`ird"));
        assert_eq!(
            column_in_message("Column 'name' cannot be null").as_deref(),
            Some("name")
        );
        assert_eq!(column_in_message("Deadlock found"), None);
    }

    #[test]
    fn transient_errors_are_the_retryable_ones() {
        assert!(transient_code(1213) && transient_code(1205) && transient_code(2006));
        assert!(!transient_code(1264) && !transient_code(1062));
        assert_eq!(sql_string("it's"), "'it''s'");
    }

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_url("mysql://sync:s3cret@127.0.0.1:13306/target"),
            "mysql://sync:***@127.0.0.1:13306/target"
        );
        assert_eq!(redact_url("mysql://h/db"), "mysql://h/db");
        assert_eq!(redact_url("mysql://root@h/db"), "mysql://root@h/db");
    }
}
