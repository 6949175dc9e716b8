//! Reading both sides: the columns each side has, the consistent snapshots, and one table
//! streamed in key order from both into the merge.

use super::*;

pub(super) async fn source_columns(
    pg: &tokio_postgres::Client,
    schema: &str,
    table: &str,
) -> Result<Vec<plan::SourceColumn>, tokio_postgres::Error> {
    let rows = pg
        .query(
            "SELECT a.attname::text, coalesce(bt.typname, t.typname)::text, \
                    coalesce(bt.typtype, t.typtype)::text, coalesce(bt.typcategory, t.typcategory)::text, \
                    coalesce(array_position(c.conkey, a.attnum), 0)::int4 \
             FROM pg_attribute a \
             JOIN pg_class r ON r.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = r.relnamespace \
             JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype \
             LEFT JOIN pg_constraint c ON c.conrelid = a.attrelid AND c.contype = 'p' \
             WHERE n.nspname = $1 AND r.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| plan::SourceColumn {
            name: r.get(0),
            typname: r.get(1),
            typtype: r.get(2),
            category: r.get(3),
            key_position: r.get(4),
        })
        .collect())
}

/// The lower-cased column names of target table `name`; empty when it does not exist.
pub(super) async fn target_columns(
    my: &mut Session,
    name: &str,
) -> Result<HashSet<String>, String> {
    let conn = my.conn().await.map_err(|e| e.to_string())?;
    let names: Vec<String> = conn
        .exec(
            "SELECT LOWER(COLUMN_NAME) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            (name,),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(names.into_iter().collect())
}

/// Starts a read-only repeatable-read transaction and returns the WAL position at its start:
/// every transaction the snapshot sees committed before it.
pub(super) async fn begin_source_snapshot(
    pg: &tokio_postgres::Client,
) -> Result<String, tokio_postgres::Error> {
    pg.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let row = pg
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?;
    Ok(row.get(0))
}

pub(super) async fn begin_target_snapshot(my: &mut Session) -> Result<(), String> {
    let conn = my.conn().await.map_err(|e| e.to_string())?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .map_err(|e| e.to_string())
}

pub(super) async fn end_snapshots(pg: &tokio_postgres::Client, my: &mut Session) {
    let _ = pg.batch_execute("COMMIT").await;
    if let Ok(conn) = my.conn().await {
        let _ = conn.query_drop("COMMIT").await;
    }
}

/// Compares one table (or the `filter` keys of it) inside the open snapshots: the source is
/// read and parsed on another task while the target is read and merged on this one.
pub(super) async fn compare_table(
    pg: &Arc<tokio_postgres::Client>,
    my: &mut Session,
    plan: &TablePlan,
    filter: Option<&[Vec<Vec<u8>>]>,
    target_err: &impl Fn(String) -> VerifyError,
) -> Result<Tally, VerifyError> {
    let (schema, name) = plan
        .source
        .split_once('.')
        .unwrap_or(("public", &plan.source));
    let pg_sql = format!("COPY ({}) TO STDOUT", plan.pg_select(schema, name, filter));
    let my_sql = plan.my_select(filter);
    let width = plan.width();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<Row>, String>>(4);
    let client = pg.clone();
    let reader = tokio::spawn(async move {
        let result = async {
            let stream = client
                .copy_out(pg_sql.as_str())
                .await
                .map_err(|e| crate::capture::source::pg_error(&e))?;
            futures::pin_mut!(stream);
            let mut parser = compare::CopyParser::default();
            let mut batch = Vec::new();
            let mut bytes = 0;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| crate::capture::source::pg_error(&e))?;
                bytes += chunk.len();
                parser.feed(&chunk, width, &mut batch)?;
                if batch.len() >= BATCH_ROWS || bytes >= BATCH_BYTES {
                    bytes = 0;
                    if tx.send(Ok(std::mem::take(&mut batch))).await.is_err() {
                        return Ok(()); // the merge stopped
                    }
                }
            }
            parser.finish()?;
            if !batch.is_empty() {
                let _ = tx.send(Ok(batch)).await;
            }
            Ok::<(), String>(())
        }
        .await;
        if let Err(e) = result {
            let _ = tx.send(Err(e)).await;
        }
    });

    let mut source = SourceRows {
        rx: &mut rx,
        batch: Vec::new().into_iter(),
    };
    let conn = my.conn().await.map_err(|e| target_err(e.to_string()))?;
    let mut result = conn
        .query_iter(my_sql)
        .await
        .map_err(|e| target_err(format!("reading `{}`: {e}", plan.target)))?;
    let next_target = |row: Option<mysql_async::Row>| -> Option<Row> {
        row.map(|r| {
            r.unwrap()
                .into_iter()
                .map(|v| match v {
                    mysql_async::Value::NULL => None,
                    mysql_async::Value::Bytes(b) => Some(b),
                    other => Some(other.as_sql(true).into_bytes()),
                })
                .collect()
        })
    };
    let mut merge = Merge::new(plan, KEYS_CAP);
    let mut s = source.next().await.map_err(VerifyError::Source)?;
    let mut t = next_target(
        result
            .next()
            .await
            .map_err(|e| target_err(format!("reading `{}`: {e}", plan.target)))?,
    );
    let outcome =
        loop {
            match merge.step(s.as_ref(), t.as_ref()) {
                Err(e) => break Err(VerifyError::Compare(format!("{}: {e}", plan.source))),
                Ok(Advance::Done) => break Ok(()),
                Ok(advance) => {
                    if matches!(advance, Advance::Source | Advance::Both) {
                        s = source.next().await.map_err(VerifyError::Source)?;
                    }
                    if matches!(advance, Advance::Target | Advance::Both) {
                        t =
                            next_target(result.next().await.map_err(|e| {
                                target_err(format!("reading `{}`: {e}", plan.target))
                            })?);
                    }
                }
            }
        };
    drop(result);
    drop(rx);
    let _ = reader.await;
    outcome?;
    Ok(merge.tally)
}

/// The source rows as the reader task hands them over.
pub(super) struct SourceRows<'a> {
    rx: &'a mut tokio::sync::mpsc::Receiver<Result<Vec<Row>, String>>,
    batch: std::vec::IntoIter<Row>,
}

impl SourceRows<'_> {
    async fn next(&mut self) -> Result<Option<Row>, String> {
        loop {
            if let Some(row) = self.batch.next() {
                return Ok(Some(row));
            }
            match self.rx.recv().await {
                Some(batch) => self.batch = batch?.into_iter(),
                None => return Ok(None),
            }
        }
    }
}
