//! Reading both sides: the columns each side has, the consistent snapshots, and one table
//! streamed in key order from both into the merge.

use super::*;
use crate::apply::sql::SqlError;
use crate::source::slot::Lsn;
use compare::CopyError;

/// The two connections verify reads through, each inside one consistent snapshot per pass.
pub(super) struct Sides {
    pub pg: Arc<tokio_postgres::Client>,
    /// The source as messages name it (`host:port/db as user`).
    pub described: String,
    pub my: Session,
}

impl Sides {
    /// A failed source statement, `what` naming its purpose.
    pub fn source_err(&self, what: &str) -> impl FnOnce(tokio_postgres::Error) -> VerifyError {
        let failed = SourceError::query(format!("{what} on {}", self.described));
        move |e| VerifyError::Source(failed(e))
    }
}

/// A failed target statement, `what` naming its purpose.
pub(super) fn target_err(
    my: &Session,
    what: impl Into<String>,
) -> impl FnOnce(SqlError) -> VerifyError {
    let (url, what) = (my.url.clone(), what.into());
    move |source| VerifyError::Target { url, what, source }
}
use crate::types::postgres::PgType;

pub(super) async fn source_columns(
    pg: &tokio_postgres::Client,
    schema: &str,
    table: &str,
) -> Result<Vec<plan::SourceColumn>, tokio_postgres::Error> {
    // A domain is read as its base type (with the domain's modifier); an array with its item.
    // Generated columns are left out: capture leaves them out of the target (see
    // `crate::capture::tables`).
    let rows = pg
        .query(
            "SELECT a.attname::text, coalesce(bt.typname, t.typname)::text, \
                    coalesce(bt.typtype, t.typtype)::text, coalesce(bt.typcategory, t.typcategory)::text, \
                    coalesce(array_position(c.conkey, a.attnum), 0)::int4, \
                    CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END, \
                    et.typname::text, et.typtype::text, et.typcategory::text \
             FROM pg_attribute a \
             JOIN pg_class r ON r.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = r.relnamespace \
             JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype \
             LEFT JOIN pg_type et ON coalesce(bt.typcategory, t.typcategory) = 'A' \
                                 AND et.oid = coalesce(bt.typelem, t.typelem) \
             LEFT JOIN pg_constraint c ON c.conrelid = a.attrelid AND c.contype = 'p' \
             WHERE n.nspname = $1 AND r.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
               AND a.attgenerated = '' \
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let typmod: i32 = r.get(5);
            let element = r.get::<_, Option<String>>(6).map(|name| PgType {
                name,
                kind: r.get(7),
                category: r.get(8),
                typmod,
                element: None,
            });
            plan::SourceColumn {
                name: r.get(0),
                ty: PgType {
                    name: r.get(1),
                    kind: r.get(2),
                    category: r.get(3),
                    typmod,
                    element: element.map(Box::new),
                },
                key_position: r.get(4),
            }
        })
        .collect())
}

/// The lower-cased column names of target table `name`; empty when it does not exist.
pub(super) async fn target_columns(
    my: &mut Session,
    name: &str,
) -> Result<HashSet<String>, SqlError> {
    let conn = my.conn().await?;
    let names: Vec<String> = conn
        .exec(
            "SELECT LOWER(COLUMN_NAME) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            (name,),
        )
        .await?;
    Ok(names.into_iter().collect())
}

/// Starts a read-only repeatable-read transaction and returns the WAL position at its start:
/// every transaction the snapshot sees committed before it.
async fn begin_source_snapshot(
    pg: &tokio_postgres::Client,
) -> Result<String, tokio_postgres::Error> {
    pg.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let row = pg
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?;
    Ok(row.get(0))
}

async fn begin_target_snapshot(my: &mut Session) -> Result<(), SqlError> {
    let conn = my.conn().await?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await?;
    Ok(())
}

/// Opens a snapshot on each side; returns the source's WAL position at its start.
pub(super) async fn begin_snapshots(sides: &mut Sides) -> Result<Lsn, VerifyError> {
    let lsn = begin_source_snapshot(&sides.pg)
        .await
        .map_err(sides.source_err("starting a snapshot"))?;
    begin_target_snapshot(&mut sides.my)
        .await
        .map_err(target_err(&sides.my, "starting a snapshot"))?;
    Ok(lsn.parse()?)
}

pub(super) async fn end_snapshots(sides: &mut Sides) {
    let _ = sides.pg.batch_execute("COMMIT").await;
    if let Ok(conn) = sides.my.conn().await {
        let _ = conn.query_drop("COMMIT").await;
    }
}

/// Why the source's rows stopped coming.
enum SourceRead {
    Pg(tokio_postgres::Error),
    Copy(CopyError),
}

type Batches = tokio::sync::mpsc::Receiver<Result<Vec<Row>, SourceRead>>;

/// Compares one table (or the `filter` keys of it) inside the open snapshots: the source is
/// read and parsed on another task while the target is read and merged on this one.
pub(super) async fn compare_table(
    sides: &mut Sides,
    plan: &TablePlan,
    filter: Option<&[Vec<Vec<u8>>]>,
) -> Result<Tally, VerifyError> {
    let (schema, name) = plan
        .source
        .split_once('.')
        .unwrap_or(("public", &plan.source));
    let pg_sql = format!("COPY ({}) TO STDOUT", plan.pg_select(schema, name, filter));
    let (reader, mut rx) = spawn_source_reader(sides.pg.clone(), pg_sql, plan.width());
    let outcome = if plan.keys.is_empty() {
        count_with_target(sides, plan, &mut rx).await
    } else {
        merge_with_target(sides, plan, filter, &mut rx).await
    };
    drop(rx);
    let _ = reader.await;
    outcome
}

/// Streams `COPY … TO STDOUT` of the source, parsed into batches of rows, on a task of its
/// own; it stops when the receiver goes away.
fn spawn_source_reader(
    pg: Arc<tokio_postgres::Client>,
    sql: String,
    width: usize,
) -> (tokio::task::JoinHandle<()>, Batches) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<Row>, SourceRead>>(4);
    let reader = tokio::spawn(async move {
        let result = async {
            let stream = pg.copy_out(sql.as_str()).await.map_err(SourceRead::Pg)?;
            futures::pin_mut!(stream);
            let mut parser = compare::CopyParser::default();
            let mut batch = Vec::new();
            let mut bytes = 0;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(SourceRead::Pg)?;
                bytes += chunk.len();
                parser
                    .feed(&chunk, width, &mut batch)
                    .map_err(SourceRead::Copy)?;
                if batch.len() >= BATCH_ROWS || bytes >= BATCH_BYTES {
                    bytes = 0;
                    if tx.send(Ok(std::mem::take(&mut batch))).await.is_err() {
                        return Ok(()); // the merge stopped
                    }
                }
            }
            parser.finish().map_err(SourceRead::Copy)?;
            if !batch.is_empty() {
                let _ = tx.send(Ok(batch)).await;
            }
            Ok::<(), SourceRead>(())
        }
        .await;
        if let Err(e) = result {
            let _ = tx.send(Err(e)).await;
        }
    });
    (reader, rx)
}

/// Reads the target's rows of `plan` in key order and merges them with the source's batches.
async fn merge_with_target(
    sides: &mut Sides,
    plan: &TablePlan,
    filter: Option<&[Vec<Vec<u8>>]>,
    rx: &mut Batches,
) -> Result<Tally, VerifyError> {
    let url = sides.my.url.clone();
    let reading = format!("reading `{}`", plan.target);
    let target_failed = |e: mysql_async::Error| VerifyError::Target {
        url: url.clone(),
        what: reading.clone(),
        source: e.into(),
    };
    let mut source = SourceRows {
        rx,
        batch: Vec::new().into_iter(),
        table: &plan.source,
    };
    let conn = sides
        .my
        .conn()
        .await
        .map_err(|source| VerifyError::Target {
            url: url.clone(),
            what: "connecting".into(),
            source,
        })?;
    let mut result = conn
        .query_iter(plan.my_select(filter))
        .await
        .map_err(target_failed)?;
    let mut merge = Merge::new(plan, KEYS_CAP);
    let mut s = source.next().await?;
    let mut t = result.next().await.map_err(target_failed)?.map(target_row);
    loop {
        let advance = merge
            .step(s.as_ref(), t.as_ref())
            .map_err(|e| VerifyError::Compare {
                table: plan.source.clone(),
                source: e,
            })?;
        if advance == Advance::Done {
            return Ok(merge.tally);
        }
        if matches!(advance, Advance::Source | Advance::Both) {
            s = source.next().await?;
        }
        if matches!(advance, Advance::Target | Advance::Both) {
            t = result.next().await.map_err(target_failed)?.map(target_row);
        }
    }
}

/// Counts the rows of a table without a key on both sides ([`compare::Multiset`]).
async fn count_with_target(
    sides: &mut Sides,
    plan: &TablePlan,
    rx: &mut Batches,
) -> Result<Tally, VerifyError> {
    let mut counts = compare::Multiset::new(plan);
    let mut source = SourceRows {
        rx,
        batch: Vec::new().into_iter(),
        table: &plan.source,
    };
    while let Some(row) = source.next().await? {
        counts.add(&row, true);
    }
    let url = sides.my.url.clone();
    let target_failed = |source: SqlError| VerifyError::Target {
        url: url.clone(),
        what: format!("reading `{}`", plan.target),
        source,
    };
    let conn = sides.my.conn().await.map_err(target_failed)?;
    let mut result = conn
        .query_iter(plan.my_select(None))
        .await
        .map_err(|e| target_failed(e.into()))?;
    while let Some(row) = result.next().await.map_err(|e| target_failed(e.into()))? {
        counts.add(&target_row(row), false);
    }
    Ok(counts.tally())
}

/// A target row as canonical texts: MySQL's text protocol gives bytes; anything else is
/// printed as SQL would print it.
fn target_row(r: mysql_async::Row) -> Row {
    r.unwrap()
        .into_iter()
        .map(|v| match v {
            mysql_async::Value::NULL => None,
            mysql_async::Value::Bytes(b) => Some(b),
            other => Some(other.as_sql(true).into_bytes()),
        })
        .collect()
}

/// The source rows as the reader task hands them over.
struct SourceRows<'a> {
    rx: &'a mut Batches,
    batch: std::vec::IntoIter<Row>,
    table: &'a str,
}

impl SourceRows<'_> {
    async fn next(&mut self) -> Result<Option<Row>, VerifyError> {
        loop {
            if let Some(row) = self.batch.next() {
                return Ok(Some(row));
            }
            match self.rx.recv().await {
                Some(Ok(batch)) => self.batch = batch.into_iter(),
                Some(Err(SourceRead::Pg(e))) => {
                    let what = format!("reading {}", self.table);
                    return Err(VerifyError::Source(SourceError::query(what)(e)));
                }
                Some(Err(SourceRead::Copy(source))) => {
                    return Err(VerifyError::Copy {
                        table: self.table.to_string(),
                        source,
                    })
                }
                None => return Ok(None),
            }
        }
    }
}
