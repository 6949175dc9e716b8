//! The MySQL side of apply: one connection, its session settings, the checkpoint table, and
//! one transaction per chunk.
//!
//! A chunk's transaction first inserts its row in `_db_sync_checkpoint`, then changes the
//! rows, then commits. The checkpoint row's primary key (pipeline, window, chunk) is the
//! guard: a chunk that already committed (even one whose COMMIT reply was lost with the
//! connection) fails that insert with a duplicate key, and is skipped.
//!
//! Two ways to write upserts, with the same values (rendered once by [`super::values`]):
//! - `LOAD DATA LOCAL INFILE … REPLACE` streams the chunk as text; the server's fastest path.
//!   Only used where REPLACE (delete + insert) cannot differ from an upsert: the chunk sends
//!   every target column, and no foreign key references the table and no trigger is on it.
//!   Because `LOCAL` turns bad values into warnings, a chunk with any warning is rolled back
//!   and redone the second way, which reports the exact problem.
//! - Multi-row `INSERT … ON DUPLICATE KEY UPDATE` with bound parameters: every other case, and
//!   everywhere when the server refuses `LOAD DATA LOCAL` (said once).
//!
//! Sessions run in strict mode with `time_zone = '+00:00'`; any warning other than MySQL 8's
//! deprecation of `VALUES()` stops the chunk: a value that would be truncated or rounded is an
//! error, not a silent change.

use std::collections::HashSet;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Value};

use super::ddl::{self, quote, ColumnDef};
use super::merge::{cells, describe_key, Cell, KeyedRow, TablePlan, UpsertGroup};
use super::values::{write_hex, write_load_data_field};
use super::ApplyError;
use crate::failpoint;

pub const CHECKPOINT_TABLE: &str = "_db_sync_checkpoint";
/// MySQL's limit on placeholders in one prepared statement.
const MAX_PARAMS: usize = 65_535;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries of a transient failure: 0.25 s doubling to 8 s, 8 attempts over about 25 s.
const MAX_ATTEMPTS: u32 = 8;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// "'VALUES function' is deprecated" (MySQL 8.0.20+): the form MariaDB needs.
const WARN_DEPRECATED: u16 = 1287;

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
            Error::Io(io) => SqlError {
                code: None,
                message: io.to_string(),
                transient: true,
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

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "{} (MySQL error {code})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// What a chunk's transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkOutcome {
    Applied,
    /// Its checkpoint row was already there: an earlier run committed it.
    AlreadyCommitted,
}

/// A chunk to apply: rows of one table, one kind.
pub struct Chunk<'a> {
    pub no: u32,
    pub chunks: u32,
    pub window: (u64, u64),
    pub plan: &'a TablePlan,
    pub target: &'a TargetTable,
    pub work: Work<'a>,
}

pub enum Work<'a> {
    Delete(&'a [Box<[u8]>]),
    Upsert {
        group: &'a UpsertGroup,
        rows: &'a [KeyedRow],
    },
}

impl Chunk<'_> {
    fn rows(&self) -> usize {
        match &self.work {
            Work::Delete(keys) => keys.len(),
            Work::Upsert { rows, .. } => rows.len(),
        }
    }

    fn operation(&self) -> &'static str {
        match self.work {
            Work::Delete(_) => "delete",
            Work::Upsert { .. } => "upsert",
        }
    }
}

/// A target table as apply found or made it.
#[derive(Debug, Clone)]
pub struct TargetTable {
    pub name: String,
    /// Lower-cased column names (MySQL column names are case-insensitive).
    pub columns: HashSet<String>,
    /// No foreign key references it and no trigger is on it: REPLACE is an upsert here.
    pub replace_safe: bool,
}

/// What `db-sync check` learns about the target.
#[derive(Debug, Clone)]
pub struct Probe {
    pub version: String,
    pub database: String,
    pub local_infile: bool,
    pub missing_privileges: Vec<String>,
}

/// A connection to the target, reopened as needed.
pub struct Target {
    opts: Opts,
    /// `target.url` with the password hidden, for messages.
    url: String,
    pipeline: String,
    conn: Option<Conn>,
    /// Use `LOAD DATA LOCAL` (configured, and the server has not refused it).
    load_data: bool,
    collation: Option<String>,
}

impl Target {
    pub fn new(
        url: &str,
        redacted: String,
        pipeline: &str,
        load_data: bool,
    ) -> Result<Target, ApplyError> {
        let opts = Opts::from_url(url).map_err(|e| ApplyError::Config {
            key: "target.url".into(),
            message: format!("{e}; expected mysql://USER:PASSWORD@HOST:PORT/DATABASE"),
        })?;
        if opts.db_name().is_none() {
            return Err(ApplyError::Config {
                key: "target.url".into(),
                message: "names no database; expected mysql://USER:PASSWORD@HOST:PORT/DATABASE"
                    .into(),
            });
        }
        let opts: Opts = OptsBuilder::from_opts(opts)
            .init(SESSION.to_vec())
            .prefer_socket(false)
            .stmt_cache_size(64)
            .into();
        Ok(Target {
            opts,
            url: redacted,
            pipeline: pipeline.to_string(),
            conn: None,
            load_data,
            collation: None,
        })
    }

    pub fn uses_load_data(&self) -> bool {
        self.load_data
    }

    async fn conn(&mut self) -> Result<&mut Conn, SqlError> {
        if self.conn.is_none() {
            let conn = tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(self.opts.clone()))
                .await
                .map_err(|_| SqlError {
                    code: None,
                    message: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
                    transient: true,
                    fatal: true,
                })??;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("set above"))
    }

    /// Waits before the next attempt after `e`, or gives up: `Err` when `e` is permanent or
    /// the attempts are spent.
    async fn backoff(
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
    async fn rollback(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            if conn.query_drop("ROLLBACK").await.is_err() {
                self.conn = None;
            }
        }
    }

    /// Runs `sql` (no result), retrying transient failures.
    async fn exec_retry(&mut self, sql: &str, what: &str) -> Result<(), ApplyError> {
        let mut attempt = 0;
        loop {
            let result = async {
                self.conn()
                    .await?
                    .query_drop(sql)
                    .await
                    .map_err(SqlError::from)
            }
            .await;
            match result {
                Ok(()) => return Ok(()),
                Err(e) => self
                    .backoff(e, &mut attempt, what)
                    .await
                    .map_err(|e| self.sql_error(what, e))?,
            }
        }
    }

    fn sql_error(&self, what: &str, e: SqlError) -> ApplyError {
        if e.code.is_none() && e.transient {
            return ApplyError::Unreachable {
                url: self.url.clone(),
                message: e.to_string(),
            };
        }
        ApplyError::Sql {
            what: what.to_string(),
            message: e.to_string(),
        }
    }

    /// One look at the target for `db-sync check`, without retries or changes: the server,
    /// whether the user may do what apply does, and whether `LOAD DATA LOCAL` is on.
    pub async fn probe(&mut self, create_tables: bool) -> Result<Probe, String> {
        // information_schema shows a non-admin only their own grants, an admin everyone's.
        const ME: &str = r#"CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')"#;
        let conn = self.conn().await.map_err(|e| e.to_string())?;
        let row: Option<(String, Option<String>, u64)> = conn
            .query_first("SELECT VERSION(), DATABASE(), @@GLOBAL.local_infile")
            .await
            .map_err(|e| SqlError::from(e).to_string())?;
        let (version, database, local_infile) = row.unwrap_or_default();
        let granted: Vec<String> = conn
            .query(format!(
                "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = {ME} \
                 UNION SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES \
                 WHERE TABLE_SCHEMA = DATABASE() AND GRANTEE = {ME}"
            ))
            .await
            .map_err(|e| SqlError::from(e).to_string())?;
        let mut needed = vec!["SELECT", "INSERT", "UPDATE", "DELETE", "CREATE"];
        if create_tables {
            needed.push("ALTER");
        }
        let missing = needed
            .into_iter()
            .filter(|p| !granted.iter().any(|g| g.eq_ignore_ascii_case(p)))
            .map(str::to_string)
            .collect();
        Ok(Probe {
            version,
            database: database.unwrap_or_default(),
            local_infile: local_infile != 0,
            missing_privileges: missing,
        })
    }

    /// Connects (retrying) and creates the checkpoint table if it is missing.
    pub async fn prepare(&mut self) -> Result<(), ApplyError> {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} (\
             `pipeline` VARCHAR(64) NOT NULL, \
             `window_from` BIGINT UNSIGNED NOT NULL, \
             `window_to` BIGINT UNSIGNED NOT NULL, \
             `chunk` INT UNSIGNED NOT NULL, \
             `chunks` INT UNSIGNED NOT NULL, \
             `table_name` VARCHAR(255) NOT NULL, \
             `operation` VARCHAR(8) NOT NULL, \
             `row_count` INT UNSIGNED NOT NULL, \
             `committed_at` DATETIME(6) NOT NULL, \
             PRIMARY KEY (`pipeline`, `window_from`, `chunk`)\
             ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            quote(CHECKPOINT_TABLE)
        );
        self.exec_retry(&sql, "creating the checkpoint table").await
    }

    /// The chunks of the window starting at `from` that already committed.
    pub async fn committed_chunks(&mut self, from: u64) -> Result<HashSet<u32>, ApplyError> {
        let sql = format!(
            "SELECT `chunk` FROM {} WHERE `pipeline` = ? AND `window_from` = ?",
            quote(CHECKPOINT_TABLE)
        );
        let mut attempt = 0;
        loop {
            let pipeline = self.pipeline.clone();
            let result = async {
                let conn = self.conn().await?;
                conn.exec::<u32, _, _>(&sql, (pipeline, from))
                    .await
                    .map_err(SqlError::from)
            }
            .await;
            match result {
                Ok(v) => return Ok(v.into_iter().collect()),
                Err(e) => self
                    .backoff(e, &mut attempt, "reading the checkpoint table")
                    .await
                    .map_err(|e| self.sql_error("reading the checkpoint table", e))?,
            }
        }
    }

    /// Drops the checkpoint rows of windows before `from` (all applied: the manifest says so).
    pub async fn prune_checkpoints(&mut self, before: u64) -> Result<(), ApplyError> {
        let sql = format!(
            "DELETE FROM {} WHERE `pipeline` = {} AND `window_from` < {before}",
            quote(CHECKPOINT_TABLE),
            sql_string(&self.pipeline)
        );
        self.exec_retry(&sql, "pruning the checkpoint table").await
    }

    /// Empties table `name` (`TRUNCATE TABLE`) when it exists; whether it did.
    pub async fn truncate(&mut self, name: &str) -> Result<bool, ApplyError> {
        if self.describe(name).await?.is_none() {
            return Ok(false);
        }
        let what = format!(
            "emptying {} (TRUNCATE TABLE needs the DROP privilege)",
            quote(name)
        );
        self.exec_retry(&format!("TRUNCATE TABLE {}", quote(name)), &what)
            .await?;
        Ok(true)
    }

    /// The binary, no-pad collation this server has (MySQL 8 and MariaDB name it differently).
    async fn collation(&mut self) -> Result<String, ApplyError> {
        if let Some(c) = &self.collation {
            return Ok(c.clone());
        }
        let sql = "SELECT COLLATION_NAME FROM information_schema.COLLATIONS \
                   WHERE COLLATION_NAME IN ('utf8mb4_0900_bin', 'utf8mb4_nopad_bin')";
        let mut attempt = 0;
        let found = loop {
            let result = async {
                self.conn()
                    .await?
                    .query::<String, _>(sql)
                    .await
                    .map_err(SqlError::from)
            }
            .await;
            match result {
                Ok(v) => break v,
                Err(e) => self
                    .backoff(e, &mut attempt, "reading the server's collations")
                    .await
                    .map_err(|e| self.sql_error("reading the server's collations", e))?,
            }
        };
        let c = found
            .into_iter()
            .next()
            .unwrap_or_else(|| "utf8mb4_bin".to_string());
        self.collation = Some(c.clone());
        Ok(c)
    }

    /// Finds the target table of `plan`, creating it or adding the source's new columns when
    /// `create` allows.
    pub async fn prepare_table(
        &mut self,
        name: &str,
        plan: &TablePlan,
        create: bool,
    ) -> Result<TargetTable, ApplyError> {
        let mut table = self.describe(name).await?;
        // Every column any version in the window has, in order of first appearance.
        let mut fields = Vec::new();
        let mut seen = HashSet::new();
        for v in &plan.versions {
            for f in &v.schema.row.fields {
                if seen.insert(f.field_name().to_ascii_lowercase()) {
                    fields.push(f);
                }
            }
        }
        let defs = ddl::column_defs(&fields, &plan.key);
        match &table {
            None if !create => {
                return Err(ApplyError::NoTable {
                    source_table: plan.table.clone(),
                    table: name.to_string(),
                })
            }
            None => {
                let collation = self.collation().await?;
                let sql = ddl::create_table(name, &defs, &plan.key, &collation);
                self.exec_retry(&sql, &format!("creating table {}", quote(name)))
                    .await?;
                tracing::info!(table = %name, source = %plan.table, "created target table");
            }
            Some(t) => {
                let missing: Vec<ColumnDef> = defs
                    .into_iter()
                    .filter(|d| !t.columns.contains(&d.name.to_ascii_lowercase()))
                    .collect();
                if !missing.is_empty() {
                    if !create {
                        return Err(ApplyError::NoColumn {
                            table: name.to_string(),
                            column: missing[0].name.clone(),
                        });
                    }
                    let sql = ddl::add_columns(name, &missing);
                    self.exec_retry(&sql, &format!("adding columns to {}", quote(name)))
                        .await?;
                    for d in &missing {
                        tracing::info!(table = %name, column = %d.name, ty = %d.ty, "added target column");
                    }
                }
            }
        }
        if table
            .as_ref()
            .is_none_or(|t| t.columns.len() < fields.len())
        {
            table = self.describe(name).await?;
        }
        table.ok_or_else(|| ApplyError::Sql {
            what: format!("creating table {}", quote(name)),
            message: "the table is still missing after CREATE TABLE".into(),
        })
    }

    async fn describe(&mut self, name: &str) -> Result<Option<TargetTable>, ApplyError> {
        let what = format!("reading the definition of {}", quote(name));
        let mut attempt = 0;
        loop {
            let result = async {
                let conn = self.conn().await?;
                let columns: Vec<String> = conn
                    .exec(
                        "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
                         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                        (name,),
                    )
                    .await?;
                let blockers: Option<u64> = conn
                    .exec_first(
                        "SELECT (SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS \
                           WHERE CONSTRAINT_SCHEMA = DATABASE() AND REFERENCED_TABLE_NAME = ?) + \
                         (SELECT COUNT(*) FROM information_schema.TRIGGERS \
                           WHERE TRIGGER_SCHEMA = DATABASE() AND EVENT_OBJECT_TABLE = ?)",
                        (name, name),
                    )
                    .await?;
                Ok::<_, SqlError>((columns, blockers.unwrap_or(0)))
            }
            .await;
            match result {
                Ok((columns, _)) if columns.is_empty() => return Ok(None),
                Ok((columns, blockers)) => {
                    return Ok(Some(TargetTable {
                        name: name.to_string(),
                        columns: columns.iter().map(|c| c.to_ascii_lowercase()).collect(),
                        replace_safe: blockers == 0,
                    }))
                }
                Err(e) => self
                    .backoff(e, &mut attempt, &what)
                    .await
                    .map_err(|e| self.sql_error(&what, e))?,
            }
        }
    }

    /// Applies one chunk in one transaction with its checkpoint row, retrying transient
    /// failures. A permanent failure names the table, column and key.
    pub async fn apply_chunk(&mut self, chunk: &Chunk<'_>) -> Result<ChunkOutcome, ApplyError> {
        check_values(chunk)?;
        let what = format!(
            "applying chunk {} to {}",
            chunk.no,
            quote(&chunk.target.name)
        );
        let mut attempt = 0;
        let mut fast = self.load_data && replace_fits(chunk);
        loop {
            let result = self.chunk_transaction(chunk, fast).await;
            if matches!(result, Err(TxError::Rejected(_))) {
                // Never leave the chunk's transaction open: the next START TRANSACTION on this
                // connection would commit it.
                self.rollback().await;
            }
            match result {
                Ok(TxResult::Done(outcome)) => return Ok(outcome),
                Ok(TxResult::Redo) => fast = false,
                Err(TxError::Refused(message)) => {
                    tracing::warn!(
                        target = %self.url,
                        "the target refuses LOAD DATA LOCAL INFILE ({message}); applying with multi-row INSERT … ON DUPLICATE KEY UPDATE instead (slower). Enable local_infile on the server, or set target.load_data: false"
                    );
                    self.load_data = false;
                    fast = false;
                }
                Err(TxError::Rejected(e)) => return Err(e),
                Err(TxError::Sql(e)) => self
                    .backoff(e, &mut attempt, &what)
                    .await
                    .map_err(|e| rejected(chunk, None, e))?,
            }
        }
    }

    async fn chunk_transaction(
        &mut self,
        chunk: &Chunk<'_>,
        fast: bool,
    ) -> Result<TxResult, TxError> {
        let pipeline = self.pipeline.clone();
        let conn = self.conn().await?;
        conn.query_drop("START TRANSACTION")
            .await
            .map_err(SqlError::from)?;
        let checkpoint = format!(
            "INSERT INTO {} (`pipeline`, `window_from`, `window_to`, `chunk`, `chunks`, `table_name`, `operation`, `row_count`, `committed_at`) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6))",
            quote(CHECKPOINT_TABLE)
        );
        let params = (
            pipeline,
            chunk.window.0,
            chunk.window.1,
            chunk.no,
            chunk.chunks,
            chunk.target.name.clone(),
            chunk.operation(),
            chunk.rows() as u32,
        );
        if let Err(e) = conn.exec_drop(&checkpoint, params).await {
            let e = SqlError::from(e);
            if e.code == Some(1062) {
                conn.query_drop("ROLLBACK").await.map_err(SqlError::from)?;
                return Ok(TxResult::Done(ChunkOutcome::AlreadyCommitted));
            }
            return Err(e.into());
        }
        match &chunk.work {
            Work::Delete(keys) => delete(conn, chunk, keys).await?,
            Work::Upsert { group, rows } if fast => {
                match load_data(conn, chunk, group, rows).await {
                    Ok(0) => {}
                    Ok(warnings) => {
                        tracing::debug!(
                            warnings,
                            chunk = chunk.no,
                            "LOAD DATA warned; redoing the chunk with INSERT to find the value"
                        );
                        conn.query_drop("ROLLBACK").await.map_err(SqlError::from)?;
                        return Ok(TxResult::Redo);
                    }
                    Err(e) if matches!(e.code, Some(1148 | 3948 | 4166)) => {
                        conn.query_drop("ROLLBACK").await.map_err(SqlError::from)?;
                        return Err(TxError::Refused(e.to_string()));
                    }
                    Err(e) if e.transient || e.code.is_none() => return Err(e.into()),
                    Err(e) => {
                        // A value the server refused (strict mode): redo with INSERT, whose
                        // error names the row, hence the key.
                        tracing::debug!(chunk = chunk.no, "LOAD DATA failed ({e}); redoing the chunk with INSERT to find the value");
                        conn.query_drop("ROLLBACK").await.map_err(SqlError::from)?;
                        return Ok(TxResult::Redo);
                    }
                }
            }
            Work::Upsert { group, rows } => upsert(conn, chunk, group, rows).await?,
        }
        failpoint::hit("apply.before_commit");
        conn.query_drop("COMMIT").await.map_err(SqlError::from)?;
        failpoint::hit("apply.after_chunk");
        Ok(TxResult::Done(ChunkOutcome::Applied))
    }
}

enum TxResult {
    Done(ChunkOutcome),
    /// Roll back and redo with multi-row statements.
    Redo,
}

enum TxError {
    Sql(SqlError),
    /// The server refuses `LOAD DATA LOCAL`.
    Refused(String),
    Rejected(ApplyError),
}

impl From<SqlError> for TxError {
    fn from(e: SqlError) -> Self {
        TxError::Sql(e)
    }
}

/// A single-quoted SQL string literal (for the one statement built with a literal).
fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// Whether REPLACE equals an upsert for this chunk (see the module doc).
fn replace_fits(chunk: &Chunk<'_>) -> bool {
    let Work::Upsert { group, .. } = &chunk.work else {
        return false;
    };
    if !chunk.target.replace_safe {
        return false;
    }
    let version = &chunk.plan.versions[group.version];
    let sent: HashSet<String> = group
        .columns
        .iter()
        .map(|&c| version.columns[c].to_ascii_lowercase())
        .collect();
    chunk.target.columns.iter().all(|c| sent.contains(c))
}

/// A value the target cannot hold stops the chunk before it starts, naming column and key.
fn check_values(chunk: &Chunk<'_>) -> Result<(), ApplyError> {
    let plan = chunk.plan;
    let bad = |column: &str, key: &[u8], reason: &str| ApplyError::Rejected {
        source_table: plan.table.clone(),
        table: chunk.target.name.clone(),
        column: Some(column.to_string()),
        key: describe_key(&plan.key, key),
        message: reason.to_string(),
    };
    match &chunk.work {
        Work::Delete(keys) => {
            for key in *keys {
                for (i, cell) in cells(key).enumerate() {
                    if let Cell::Bad(reason) = cell {
                        return Err(bad(&plan.key[i], key, reason));
                    }
                }
            }
        }
        Work::Upsert { group, rows } => {
            let columns = &plan.versions[group.version].columns;
            for (key, row) in *rows {
                for (i, cell) in cells(row).enumerate() {
                    if let Cell::Bad(reason) = cell {
                        return Err(bad(&columns[i], key, reason));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The error for a statement the server refused: the column and row from the server's
/// message when it gives them, mapped to the row's key.
fn rejected(chunk: &Chunk<'_>, keys: Option<&[&[u8]]>, e: SqlError) -> ApplyError {
    let row = row_in_message(&e.message);
    let key = match (keys, row) {
        (Some(keys), Some(n)) if n >= 1 && n <= keys.len() => {
            describe_key(&chunk.plan.key, keys[n - 1])
        }
        (Some(keys), None) if keys.len() == 1 => describe_key(&chunk.plan.key, keys[0]),
        _ => format!("one of {} rows of chunk {}", chunk.rows(), chunk.no),
    };
    ApplyError::Rejected {
        source_table: chunk.plan.table.clone(),
        table: chunk.target.name.clone(),
        column: column_in_message(&e.message),
        key,
        message: e.to_string(),
    }
}

/// `… at row 3` → 3.
fn row_in_message(m: &str) -> Option<usize> {
    let at = m.rfind(" at row ")?;
    m[at + 8..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The column a server message names: `column 'x'`, ``column `db`.`t`.`x` ``, `Column 'x'`.
fn column_in_message(m: &str) -> Option<String> {
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

/// Fails on any warning but MySQL 8's deprecation notice, naming the row's key.
async fn check_warnings(conn: &mut Conn, chunk: &Chunk<'_>, keys: &[&[u8]]) -> Result<(), TxError> {
    if conn.get_warnings() == 0 {
        return Ok(());
    }
    let warnings: Vec<(String, u16, String)> =
        conn.query("SHOW WARNINGS").await.map_err(SqlError::from)?;
    match warnings
        .into_iter()
        .find(|(_, code, _)| *code != WARN_DEPRECATED)
    {
        None => Ok(()),
        Some((level, code, message)) => Err(TxError::Rejected(rejected(
            chunk,
            Some(keys),
            SqlError {
                code: Some(code),
                message: format!("{level}: {message}"),
                transient: false,
                fatal: false,
            },
        ))),
    }
}

fn param(cell: Cell<'_>) -> Value {
    match cell {
        Cell::Value(v) => Value::Bytes(v.to_vec()),
        _ => Value::NULL,
    }
}

async fn delete(conn: &mut Conn, chunk: &Chunk<'_>, keys: &[Box<[u8]>]) -> Result<(), TxError> {
    let key_cols: Vec<String> = chunk.plan.key.iter().map(|k| quote(k)).collect();
    let per_stmt = (MAX_PARAMS / key_cols.len()).max(1);
    let lhs = if key_cols.len() == 1 {
        key_cols[0].clone()
    } else {
        format!("({})", key_cols.join(", "))
    };
    let tuple = if key_cols.len() == 1 {
        "?".to_string()
    } else {
        format!("({})", vec!["?"; key_cols.len()].join(", "))
    };
    for part in keys.chunks(per_stmt) {
        let sql = format!(
            "DELETE FROM {} WHERE {lhs} IN ({})",
            quote(&chunk.target.name),
            vec![tuple.as_str(); part.len()].join(", ")
        );
        let params: Vec<Value> = part.iter().flat_map(|k| cells(k).map(param)).collect();
        let refs: Vec<&[u8]> = part.iter().map(|k| &k[..]).collect();
        conn.exec_drop(&sql, params)
            .await
            .map_err(|e| classify(chunk, &refs, e))?;
        check_warnings(conn, chunk, &refs).await?;
    }
    Ok(())
}

/// A server error: transient ones retry, others name the row.
fn classify(chunk: &Chunk<'_>, keys: &[&[u8]], e: mysql_async::Error) -> TxError {
    let e = SqlError::from(e);
    if e.transient || e.code.is_none() {
        TxError::Sql(e)
    } else {
        TxError::Rejected(rejected(chunk, Some(keys), e))
    }
}

async fn upsert(
    conn: &mut Conn,
    chunk: &Chunk<'_>,
    group: &UpsertGroup,
    rows: &[KeyedRow],
) -> Result<(), TxError> {
    let version = &chunk.plan.versions[group.version];
    let names: Vec<String> = group
        .columns
        .iter()
        .map(|&c| quote(&version.columns[c]))
        .collect();
    let is_key = |c: usize| chunk.plan.key.iter().any(|k| *k == version.columns[c]);
    let mut updates: Vec<String> = group
        .columns
        .iter()
        .filter(|&&c| !is_key(c))
        .map(|&c| {
            let q = quote(&version.columns[c]);
            format!("{q} = VALUES({q})")
        })
        .collect();
    if updates.is_empty() {
        // Only key columns: nothing to update on a duplicate.
        let q = quote(&chunk.plan.key[0]);
        updates.push(format!("{q} = {q}"));
    }
    let tuple = format!("({})", vec!["?"; names.len()].join(", "));
    for part in statement_parts(rows, names.len()) {
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {} ON DUPLICATE KEY UPDATE {}",
            quote(&chunk.target.name),
            names.join(", "),
            vec![tuple.as_str(); part.len()].join(", "),
            updates.join(", ")
        );
        let mut params = Vec::with_capacity(part.len() * names.len());
        for (_, row) in part {
            params.extend(cells(row).filter(|c| *c != Cell::Unchanged).map(param));
        }
        let refs: Vec<&[u8]> = part.iter().map(|(k, _)| &k[..]).collect();
        conn.exec_drop(&sql, params)
            .await
            .map_err(|e| classify(chunk, &refs, e))?;
        check_warnings(conn, chunk, &refs).await?;
    }
    Ok(())
}

/// Rows per statement: within MySQL's placeholder limit and well inside the default
/// `max_allowed_packet` (16 MB), whatever the row size.
fn statement_parts(rows: &[KeyedRow], columns: usize) -> Vec<&[KeyedRow]> {
    const MAX_BYTES: usize = 4 << 20;
    let max_rows = (MAX_PARAMS / columns.max(1)).max(1);
    let mut parts = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (_, row)) in rows.iter().enumerate() {
        if i > start && (i - start == max_rows || bytes + row.len() > MAX_BYTES) {
            parts.push(&rows[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += row.len();
    }
    if start < rows.len() {
        parts.push(&rows[start..]);
    }
    parts
}

/// Streams the chunk with `LOAD DATA LOCAL INFILE … REPLACE`; returns the warning count.
async fn load_data(
    conn: &mut Conn,
    chunk: &Chunk<'_>,
    group: &UpsertGroup,
    rows: &[KeyedRow],
) -> Result<u16, SqlError> {
    let version = &chunk.plan.versions[group.version];
    let mut targets = Vec::with_capacity(group.columns.len());
    let mut sets = Vec::new();
    for &c in &group.columns {
        let q = quote(&version.columns[c]);
        if version.binary[c] {
            targets.push(format!("@b{c}"));
            sets.push(format!("{q} = UNHEX(@b{c})"));
        } else {
            targets.push(q);
        }
    }
    let mut data = Vec::with_capacity(rows.iter().map(|(_, r)| r.len() + 16).sum());
    for (_, row) in rows {
        let mut first = true;
        for (c, cell) in cells(row).enumerate() {
            if cell == Cell::Unchanged {
                continue;
            }
            if !first {
                data.push(b'\t');
            }
            first = false;
            match cell {
                Cell::Value(v) if version.binary[c] => write_hex(&mut data, v),
                Cell::Value(v) => write_load_data_field(&mut data, v),
                _ => data.extend_from_slice(b"\\N"),
            }
        }
        data.push(b'\n');
    }
    let sql = format!(
        "LOAD DATA LOCAL INFILE 'db-sync-chunk' REPLACE INTO TABLE {} CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({}){}",
        quote(&chunk.target.name),
        targets.join(", "),
        if sets.is_empty() {
            String::new()
        } else {
            format!(" SET {}", sets.join(", "))
        }
    );
    let bytes = bytes::Bytes::from(data);
    conn.set_infile_handler(async move {
        let stream: mysql_async::InfileData =
            Box::pin(futures::stream::once(async move { Ok(bytes) }));
        Ok(stream)
    });
    conn.query_drop(&sql).await?;
    Ok(conn.get_warnings())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
