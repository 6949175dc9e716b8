//! `db-sync check`: one line per finding, so a person sees every problem in one run.
//!
//! Checks, in order: configuration (already loaded, or we would not be here), the jars in
//! `engine.lib_dir` (every jar its `../jars.sha256` lists), the JVM and the bridge, the DuckDB
//! library ([`crate::duckdb_lib`]), the journal (every CRC), and for PostgreSQL sources:
//! reachable with the configured credentials and TLS, `wal_level=logical` (logical decoding
//! needs it, and changing it needs a restart), the replication privilege (or superuser), and
//! each table of `table.include.list`; the MySQL target: reachable, the privileges apply needs,
//! `local_infile` (without it the server refuses `LOAD DATA LOCAL`, and apply falls back to
//! multi-row `INSERT`). Exit 0 when all pass, 1 when any fails.

use mysql_async::prelude::Queryable;

use crate::apply::sql::{redact_url, Session, SqlError, UrlError};
use crate::capture;
use crate::config::Config;
use crate::error::{Classify, ErrorKind};
use crate::source::pg_error;

/// Some checks failed (each printed its own line).
#[derive(Debug, thiserror::Error)]
#[error("{0} check(s) failed")]
pub struct CheckError(pub usize);

impl Classify for CheckError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Permanent
    }
}

struct Report {
    failures: usize,
}

impl Report {
    fn ok(&mut self, what: &str, detail: impl std::fmt::Display) {
        println!("ok    {what}: {detail}");
    }
    fn fail(&mut self, what: &str, detail: impl std::fmt::Display) {
        self.failures += 1;
        println!("FAIL  {what}: {detail}");
    }
}

pub fn run(config: &Config) -> Result<(), CheckError> {
    let mut r = Report { failures: 0 };
    r.ok(
        "config",
        format!("{} (pipeline {})", config.path.display(), config.name),
    );

    match capture::classpath(&config.engine.lib_dir) {
        Ok(jars) => {
            let missing = missing_listed_jars(config, &jars);
            if missing.is_empty() {
                r.ok(
                    "jars",
                    format!("{} jars in {}", jars.len(), config.engine.lib_dir.display()),
                )
            } else {
                r.fail(
                    "jars",
                    format!(
                        "missing from {}: {}; run scripts/setup.sh",
                        config.engine.lib_dir.display(),
                        missing.join(", ")
                    ),
                )
            }
        }
        Err(e) => r.fail("jars", e),
    }
    match capture::find_libjvm() {
        Ok(path) => match capture::check_engine(config) {
            Ok(()) => r.ok("jvm", format!("{} with the bridge loaded", path.display())),
            Err(e) => r.fail("jvm", e),
        },
        Err(e) => r.fail("jvm", e),
    }
    match crate::duckdb_lib::loaded() {
        Ok(lib) => r.ok("duckdb", lib),
        Err(e) => r.fail("duckdb", e),
    }
    check_journal(config, &mut r);
    if config.is_postgres() {
        check_postgres(config, &mut r);
    } else {
        r.ok(
            "source",
            format!(
                "{} (no prerequisite checks for this connector yet)",
                config.connector_class()
            ),
        );
    }
    check_target(config, &mut r);
    if r.failures > 0 {
        return Err(CheckError(r.failures));
    }
    Ok(())
}
/// The MySQL target: reachable, the privileges apply needs, `local_infile` when apply uses it.
fn check_target(config: &Config, r: &mut Report) {
    let Some(tc) = &config.target else {
        r.ok("target", "none configured (audit only)");
        return;
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            r.fail("target", format!("cannot start the async runtime: {e}"));
            return;
        }
    };
    let url = redact_url(tc.url.expose());
    let p = match rt.block_on(probe_target(tc.url.expose(), &url, tc.create_tables)) {
        Err(e) => {
            r.fail(
                "target",
                format!("cannot connect to {url}: {e}; is MySQL running and `target.url` right?"),
            );
            return;
        }
        Ok(found) => found,
    };
    r.ok(
        "target",
        format!(
            "connected to {url} {} (server {}, database {})",
            match &p.tls {
                Some(cipher) => format!("over TLS ({cipher})"),
                None => "without TLS".to_string(),
            },
            p.version,
            p.database
        ),
    );
    if p.missing_privileges.is_empty() {
        r.ok(
            "target privileges",
            "SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER",
        );
    } else {
        r.fail(
            "target privileges",
            format!(
                "missing {} on {}; GRANT them to the user of `target.url`",
                p.missing_privileges.join(", "),
                p.database
            ),
        );
    }
    match (tc.load_data, p.local_infile) {
        (false, _) => r.ok("target local_infile", "not used (target.load_data: false)"),
        (true, true) => r.ok("target local_infile", "ON: upserts can use LOAD DATA LOCAL INFILE"),
        // Not a failure: apply falls back to multi-row INSERT and says so.
        (true, false) => r.ok(
            "target local_infile",
            "OFF: apply falls back to multi-row INSERT (slower); SET GLOBAL local_infile = 1, or set target.load_data: false",
        ),
    }
}

/// Why the target could not be looked at.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Sql(#[from] SqlError),
}

/// What `check` learns about the target.
struct Probe {
    version: String,
    database: String,
    local_infile: bool,
    missing_privileges: Vec<String>,
    /// The session's TLS cipher, if it uses TLS.
    tls: Option<String>,
}

/// One look at the target, without retries or changes: the server, whether the user may do
/// what apply does, and whether `LOAD DATA LOCAL` is on.
async fn probe_target(url: &str, redacted: &str, create_tables: bool) -> Result<Probe, ProbeError> {
    // information_schema shows a non-admin only their own grants, an admin everyone's.
    const ME: &str = r#"CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')"#;
    let mut session = Session::new(url, redacted.to_string())?;
    let conn = session.conn().await?;
    let row: Option<(String, Option<String>, u64)> = conn
        .query_first("SELECT VERSION(), DATABASE(), @@GLOBAL.local_infile")
        .await
        .map_err(SqlError::from)?;
    let (version, database, local_infile) = row.unwrap_or_default();
    let tls: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .map_err(SqlError::from)?;
    let tls = tls.map(|(_, cipher)| cipher).filter(|c| !c.is_empty());
    let granted: Vec<String> = conn
        .query(format!(
            "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = {ME} \
             UNION SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES \
             WHERE TABLE_SCHEMA = DATABASE() AND GRANTEE = {ME}"
        ))
        .await
        .map_err(SqlError::from)?;
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
        tls,
    })
}

/// Every frame of the journal reads back with a good CRC.
fn check_journal(config: &Config, r: &mut Report) {
    let dir = &config.journal.dir;
    if !dir.exists() {
        r.ok(
            "journal",
            format!("{} (empty; capture creates it)", dir.display()),
        );
        return;
    }
    match crate::journal::verify(dir) {
        Ok(s) => {
            let range = match (s.first_seq, s.last_seq) {
                (Some(a), Some(b)) => format!("seq {a}..={b}"),
                _ => "no events".to_string(),
            };
            r.ok(
                "journal",
                format!(
                    "{}: {} segment(s), {} bytes, {} events, {range}",
                    dir.display(),
                    s.segments,
                    s.bytes,
                    s.events
                ),
            )
        }
        Err(e) => r.fail("journal", e),
    }
}

/// Jars named in `<lib_dir>/../jars.sha256` (the project's list) that `lib_dir` lacks.
fn missing_listed_jars(config: &Config, jars: &[std::path::PathBuf]) -> Vec<String> {
    let list = config.engine.lib_dir.join("..").join("jars.sha256");
    let Ok(text) = std::fs::read_to_string(list) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|name| {
            !jars
                .iter()
                .any(|p| p.file_name().is_some_and(|n| n == *name))
        })
        .map(str::to_string)
        .collect()
}

fn check_postgres(config: &Config, r: &mut Report) {
    let (pg, source, tls) = match crate::source::connect::pg_config(config, "db-sync check") {
        Ok(c) => c,
        Err(e) => {
            r.fail("source", e);
            return;
        }
    };
    let user = pg.get_user().unwrap_or("postgres").to_string();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            r.fail("source", format!("cannot start the async runtime: {e}"));
            return;
        }
    };
    rt.block_on(async {
        let client = match pg.connect(tls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                // pg_stat_ssl is readable by everyone for their own backend.
                let tls = client
                    .query_opt(
                        "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl",
                        &[],
                    )
                    .await
                    .ok()
                    .flatten()
                    .map(|row| row.get::<_, String>(0));
                let how = match tls {
                    Some(version) => format!("over TLS ({version})"),
                    None => "without TLS".to_string(),
                };
                r.ok("source", format!("connected to {source} {how}"));
                client
            }
            Err(e) => {
                r.fail("source", format!("cannot connect to {source}: {}; check source.database.* and that the server runs", pg_error(&e)));
                return;
            }
        };
        match client.query_one("SHOW wal_level", &[]).await {
            Ok(row) => {
                let level: String = row.get(0);
                if level == "logical" {
                    r.ok("wal_level", "logical");
                } else {
                    r.fail("wal_level", format!("is {level}; set wal_level = logical in postgresql.conf and restart PostgreSQL"));
                }
            }
            Err(e) => r.fail("wal_level", pg_error(&e)),
        }
        match client
            .query_one("SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user", &[])
            .await
        {
            Ok(row) if row.get::<_, bool>(0) => r.ok("replication privilege", format!("{user} may replicate")),
            Ok(_) => r.fail("replication privilege", format!("{user} lacks REPLICATION; run ALTER ROLE \"{user}\" REPLICATION as a superuser")),
            Err(e) => r.fail("replication privilege", pg_error(&e)),
        }
        if let Some(list) = config.source_prop("table.include.list") {
            for table in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                // Entries are regular expressions; only check the plain schema.table ones.
                if table.chars().any(|c| "*+?[](){}|\\^$".contains(c)) {
                    continue;
                }
                match client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]).await {
                    Ok(row) if row.get::<_, bool>(0) => r.ok("table", table),
                    Ok(_) => r.fail("table", format!("{table} does not exist; fix source.table.include.list")),
                    Err(e) => r.fail("table", format!("{table}: {}", pg_error(&e))),
                }
            }
        }
        check_tables(config, r).await;
    });
}

/// The included tables as capture checks them at start ([`capture::tables`]): no two of them
/// in one target table, none without a way to tell its rows apart; generated columns named.
async fn check_tables(config: &Config, r: &mut Report) {
    let tables = match crate::source::tables::included(config).await {
        Ok(t) => t,
        Err(e) => return r.fail("tables", e),
    };
    if let Some(line) = capture::tables::clash(config, &tables) {
        r.fail("target.table_name", line);
    }
    let refused: Vec<String> = tables.iter().filter_map(|t| t.refusal()).collect();
    for line in &refused {
        r.fail("table", line);
    }
    for t in &tables {
        for c in &t.generated {
            r.ok(
                "generated column",
                format!("{}.{c}: not streamed by PostgreSQL, left out of the audit files and the target", t.name),
            );
        }
    }
    r.ok(
        "tables",
        format!("{} included, {} refused", tables.len(), refused.len()),
    );
}
