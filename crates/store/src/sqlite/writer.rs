//! One writer task per SQLite store: every write of this process goes through it. It takes
//! whatever writes are queued (up to [`MAX_BATCH`]), runs each in a savepoint of one
//! `BEGIN IMMEDIATE` transaction and commits once, so concurrent requests share one fsync
//! (group commit) and each write still succeeds or fails on its own.
//!
//! The writer, not the caller, owns the transaction: a caller that stops waiting (an HTTP
//! handler whose client went away, an aborted task) cannot leave a transaction open in a pooled
//! connection holding the database's write lock, which would stall every later writer.

use sqlx::sqlite::SqlitePool;
use sqlx::{Sqlite, Transaction};
use tidegate_core::audit::{AuditEntry, NewAuditEntry};
use tidegate_core::request::Request;
use tidegate_core::store::StoreError;
use tokio::sync::{mpsc, oneshot};

use super::{append, db, insert_rows, update_rows};
use crate::sql::{batch_rows, batch_what, stored_audit};
use crate::update_chunks;

/// Writes committed together at most; more wait for the next commit.
const MAX_BATCH: usize = 128;

/// Writes waiting for the writer at most; callers beyond that wait to queue.
const QUEUE: usize = 1024;

/// A write, with everything it needs (the caller does not wait on borrowed data).
pub(super) enum Write {
    /// All or none; the request ids must be new.
    InsertRequests(Vec<(Request, Vec<NewAuditEntry>)>),
    /// Each request stored if its stored version is the one before; audit entries of those
    /// stored.
    UpdateRequests(Vec<(Request, Vec<NewAuditEntry>)>),
    AppendAudit(Vec<NewAuditEntry>),
    /// One statement whose parameters are all text (tokens, state records).
    Statement {
        sql: &'static str,
        binds: Vec<Option<String>>,
        /// What the statement writes, for its errors.
        what: &'static str,
    },
}

/// What a write did.
pub(super) enum Written {
    Done,
    /// Per request of an update: stored, or refused for its version.
    Stored(Vec<bool>),
    Audit(Vec<AuditEntry>),
    Rows(u64),
}

struct Job {
    write: Write,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

#[derive(Debug, Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task on the current runtime; it ends when the last handle is dropped.
    pub(super) fn start(pool: SqlitePool) -> Writer {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, queue));
        Writer { jobs }
    }

    pub(super) async fn write(&self, write: Write) -> Result<Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { write, reply })
            .await
            .map_err(|_| StoreError::Database("the database writer has stopped".into()))?;
        answer.await.map_err(|_| {
            StoreError::Database("the database writer stopped before answering".into())
        })?
    }
}

async fn run(pool: SqlitePool, mut queue: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let (writes, replies): (Vec<Write>, Vec<_>) =
            jobs.drain(..).map(|j| (j.write, j.reply)).unzip();
        let results = commit(&pool, writes).await;
        for (reply, result) in replies.into_iter().zip(results) {
            // A caller that stopped waiting does not undo what was written.
            let _ = reply.send(result);
        }
    }
}

/// Runs `writes` in one transaction, each in a savepoint; one result per write. If the
/// transaction cannot begin or commit, every write fails with that error.
async fn commit(pool: &SqlitePool, writes: Vec<Write>) -> Vec<Result<Written, StoreError>> {
    let count = writes.len();
    let mut tx = match pool.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => return failed(count, db(e, "transaction")),
    };
    if count > 1 {
        tracing::trace!(writes = count, "committing writes together");
    }
    // A write alone needs no savepoint (which journals every page it changes): on failure the
    // whole transaction is rolled back.
    let mut writes = writes;
    if count == 1
        && let Some(write) = writes.pop()
    {
        let result = apply(&mut tx, write).await;
        let ended = match &result {
            Ok(_) => tx.commit().await,
            Err(_) => tx.rollback().await,
        };
        return match ended {
            Ok(()) => vec![result],
            Err(e) => failed(1, db(e, "commit")),
        };
    }
    let mut results = Vec::with_capacity(count);
    for write in writes {
        if let Err(e) = savepoint(&mut tx, "SAVEPOINT write").await {
            return failed(count, e);
        }
        let result = apply(&mut tx, write).await;
        if result.is_err()
            && let Err(e) = savepoint(&mut tx, "ROLLBACK TO write").await
        {
            return failed(count, e);
        }
        if let Err(e) = savepoint(&mut tx, "RELEASE write").await {
            return failed(count, e);
        }
        results.push(result);
    }
    match tx.commit().await {
        Ok(()) => results,
        Err(e) => failed(count, db(e, "commit")),
    }
}

fn failed(count: usize, error: StoreError) -> Vec<Result<Written, StoreError>> {
    (0..count).map(|_| Err(error.clone())).collect()
}

async fn savepoint(
    tx: &mut Transaction<'static, Sqlite>,
    sql: &'static str,
) -> Result<(), StoreError> {
    sqlx::query(sql)
        .execute(&mut **tx)
        .await
        .map(|_| ())
        .map_err(|e| db(e, "savepoint"))
}

async fn apply(tx: &mut Transaction<'static, Sqlite>, write: Write) -> Result<Written, StoreError> {
    match write {
        Write::InsertRequests(batch) => {
            let rows = batch_rows(&batch)?;
            let audit = stored_audit(&batch, |_| true);
            let what = batch_what(&batch);
            insert_rows(tx, &rows, &what).await?;
            append(tx, &audit).await?;
            Ok(Written::Done)
        }
        Write::UpdateRequests(batch) => {
            let rows = batch_rows(&batch)?;
            let mut stored = vec![false; rows.len()];
            for chunk in update_chunks(&rows) {
                for (i, ok) in chunk.iter().zip(update_rows(tx, &rows, &chunk).await?) {
                    stored[*i] = ok;
                }
            }
            let audit = stored_audit(&batch, |i| stored[i]);
            append(tx, &audit).await?;
            Ok(Written::Stored(stored))
        }
        Write::AppendAudit(entries) => Ok(Written::Audit(append(tx, &entries).await?)),
        Write::Statement { sql, binds, what } => {
            let mut query = sqlx::query(sql);
            for bind in binds {
                query = query.bind(bind);
            }
            let done = query.execute(&mut **tx).await.map_err(|e| db(e, what))?;
            Ok(Written::Rows(done.rows_affected()))
        }
    }
}
