//! The PostgreSQL backend, for several tidegate processes on one database. Transactions run at
//! READ COMMITTED; what needs more is locked explicitly:
//! - a request update is `UPDATE ... WHERE id = $1 AND version = $2`: a concurrent update of the
//!   same request waits for the row lock, then finds the version moved on (0 rows: conflict);
//! - every audit append first locks the one row of `audit_head` (`SELECT ... FOR UPDATE`) and
//!   holds it to commit, so appenders extend the chain one after the other and never fork it.
//!   The head is locked after the request row, in every transaction, so no two lock in
//!   opposite orders.
//!
//! Migrations run on a connection of their own under sqlx's migrator, which holds a session
//! advisory lock (`pg_advisory_lock`, keyed by the database name) while it checks and applies
//! them: processes starting together migrate one after the other, and the later ones find
//! nothing left to do. The connection is closed afterwards, so the lock never outlives the run.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::sql::{self, AuditRow};
use crate::{DELIVERY_COLUMNS, DeliveryRow, TOKEN_COLUMNS, TokenRow};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection, Postgres, QueryBuilder, Transaction};
use tidegate_core::audit::{AuditEntry, NewAuditEntry};
use tidegate_core::request::Request;
use tidegate_core::store::LeaderLock;
use tidegate_core::store::{ApiToken, RequestFilter, Store, StoreError};

use time::OffsetDateTime;

use crate::{
    AUDIT_ROWS_PER_INSERT, REQUEST_ROWS_PER_INSERT, RequestRow, Secrets, chain_after,
    decode_request, map_error, missing_migrations, parse_sortable_time, redact_url, sortable_time,
    update_chunks,
};

static MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// How long to wait for a pooled connection.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// The store on a PostgreSQL database (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`). Its
/// tables go to the first schema of the connection's `search_path`
/// (`?options=-c%20search_path%3DNAME` in the URL to choose one).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    options: PgConnectOptions,
    secrets: Secrets,
}

impl PostgresStore {
    /// Connects and migrates.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let store = PostgresStore::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without migrating.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let secrets = Secrets::of_url(url);
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Database(
                secrets.redact(format!("bad PostgreSQL URL {:?}: {e}", redact_url(url))),
            )
        })?;
        // One connection first, so that an unreachable server or a refused login is an error at
        // once (the pool would keep retrying until its acquire timeout).
        let probe = PgConnection::connect_with(&options)
            .await
            .map_err(|e| map_error(e, "database", &secrets))?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(|e| map_error(e, "database", &secrets))?;
        Ok(PostgresStore {
            pool,
            options,
            secrets,
        })
    }

    /// Brings the schema up to date; running it again, or in several processes at once, is
    /// safe (see the module docs).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = PgConnection::connect_with(&self.options)
            .await
            .map_err(|e| self.db(e, "database"))?;
        // On failure `conn` is dropped, which closes it and so releases the advisory lock.
        MIGRATIONS
            .run_direct(&mut conn)
            .await
            .map_err(|e| StoreError::Database(self.secrets.redact(format!("migrations: {e}"))))?;
        conn.close().await.map_err(|e| self.db(e, "database"))
    }

    /// The connection pool, for tools and tests.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection (waiting for the ones in use).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn db(&self, error: sqlx::Error, what: &str) -> StoreError {
        map_error(error, what, &self.secrets)
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool
            .begin()
            .await
            .map_err(|e| self.db(e, "transaction"))
    }

    /// Appends `entries` after the chain head, which it locks until the transaction ends.
    async fn append(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        entries: &[NewAuditEntry],
    ) -> Result<Vec<AuditEntry>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
                .fetch_optional(&mut **tx)
                .await
                .map_err(|e| self.db(e, "audit entry"))?;
        let (seq, hash) =
            head.ok_or_else(|| StoreError::Corrupt("the audit chain head row is missing".into()))?;
        let chained = chain_after(seq, &hash, entries);
        for chunk in chained.chunks(AUDIT_ROWS_PER_INSERT) {
            sql::insert_audit::<Postgres>(chunk)
                .build()
                .execute(&mut **tx)
                .await
                .map_err(|e| self.db(e, "audit entry"))?;
        }
        if let Some(last) = chained.last() {
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(last.seq)
                .bind(&last.hash)
                .execute(&mut **tx)
                .await
                .map_err(|e| self.db(e, "audit entry"))?;
        }
        Ok(chained)
    }
}

impl PostgresStore {
    /// Inserts request rows, [`REQUEST_ROWS_PER_INSERT`] per statement. `what` names them in a
    /// duplicate error.
    async fn insert_rows(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        rows: &[(&Request, RequestRow)],
        what: &str,
    ) -> Result<(), StoreError> {
        for chunk in rows.chunks(REQUEST_ROWS_PER_INSERT) {
            sql::insert_requests::<Postgres>(chunk, &sql::POSTGRES)
                .build()
                .execute(&mut **tx)
                .await
                .map_err(|e| self.db(e, what))?;
        }
        Ok(())
    }

    /// Stores changed requests (the rows at `chunk`, no id twice), each if the stored version
    /// is the one before it; per row whether it was stored (`false`: a conflict, nothing
    /// written for it). Locks the rows in id order first, so concurrent batches cannot
    /// deadlock, and holds the locks to the end of the transaction. Entitlement, requester and
    /// creation time never change after creation, so they and their indexes are left alone.
    async fn update_rows(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        rows: &[(&Request, RequestRow)],
        chunk: &[usize],
    ) -> Result<Vec<bool>, StoreError> {
        let what = match chunk {
            [i] => format!("request {}", rows[*i].0.id),
            _ => "requests".to_owned(),
        };
        let ids: Vec<&str> = chunk.iter().map(|&i| rows[i].0.id.as_str()).collect();
        sqlx::query("SELECT id FROM requests WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&ids)
            .execute(&mut **tx)
            .await
            .map_err(|e| self.db(e, &what))?;
        let mut update = QueryBuilder::<Postgres>::new(
            "UPDATE requests AS r SET state = v.state, is_open = v.is_open, \
             version = v.version, due_at = v.due_at, access_ends_at = v.access_ends_at, \
             body = v.body FROM (",
        );
        update.push_values(chunk, |mut b, &i| {
            let (request, row) = &rows[i];
            b.push_bind(&request.id)
                .push_bind(row.state)
                .push_bind(row.open)
                .push_bind(request.version)
                .push_bind(&row.due_at)
                .push_unseparated("::timestamptz")
                .push_bind(&row.access_ends_at)
                .push_unseparated("::timestamptz")
                .push_bind(&row.body);
        });
        update.push(
            ") AS v (id, state, is_open, version, due_at, access_ends_at, body) \
             WHERE r.id = v.id AND r.version = v.version - 1 \
             RETURNING r.id",
        );
        let updated: Vec<String> = update
            .build_query_scalar()
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| self.db(e, &what))?;
        let updated: std::collections::HashSet<String> = updated.into_iter().collect();
        Ok(chunk
            .iter()
            .map(|&i| updated.contains(&rows[i].0.id))
            .collect())
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn insert_request(
        &self,
        request: &Request,
        audit: &[NewAuditEntry],
    ) -> Result<(), StoreError> {
        let rows = [(request, RequestRow::of(request)?)];
        let what = format!("request {}", request.id);
        let mut tx = self.begin().await?;
        self.insert_rows(&mut tx, &rows, &what).await?;
        self.append(&mut tx, audit).await?;
        tx.commit().await.map_err(|e| self.db(e, &what))
    }

    async fn update_request(
        &self,
        request: &Request,
        audit: &[NewAuditEntry],
    ) -> Result<(), StoreError> {
        let rows = [(request, RequestRow::of(request)?)];
        let what = format!("request {}", request.id);
        let mut tx = self.begin().await?;
        if self.update_rows(&mut tx, &rows, &[0]).await? != [true] {
            tx.rollback().await.map_err(|e| self.db(e, &what))?;
            return Err(StoreError::Conflict(request.id.clone()));
        }
        self.append(&mut tx, audit).await?;
        tx.commit().await.map_err(|e| self.db(e, &what))
    }

    /// One transaction: multi-row INSERTs, then the audit entries of the whole batch in batch
    /// order (one lock of the chain head).
    async fn insert_requests(
        &self,
        batch: &[(Request, Vec<NewAuditEntry>)],
    ) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let rows = sql::batch_rows(batch)?;
        let audit = sql::stored_audit(batch, |_| true);
        let what = sql::batch_what(batch);
        let mut tx = self.begin().await?;
        self.insert_rows(&mut tx, &rows, &what).await?;
        self.append(&mut tx, &audit).await?;
        tx.commit().await.map_err(|e| self.db(e, "requests"))
    }

    /// One transaction: multi-row UPDATEs, each row with its version check, then the audit
    /// entries of the stored ones in batch order (one lock of the chain head, after the row
    /// locks as in every transaction).
    async fn update_requests(
        &self,
        batch: &[(Request, Vec<NewAuditEntry>)],
    ) -> Result<Vec<bool>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sql::batch_rows(batch)?;
        let mut tx = self.begin().await?;
        let mut stored = vec![false; rows.len()];
        for chunk in update_chunks(&rows) {
            let done = self.update_rows(&mut tx, &rows, &chunk).await?;
            for (i, ok) in chunk.iter().zip(done) {
                stored[*i] = ok;
            }
        }
        let audit = sql::stored_audit(batch, |i| stored[i]);
        self.append(&mut tx, &audit).await?;
        tx.commit().await.map_err(|e| self.db(e, "requests"))?;
        Ok(stored)
    }

    async fn next_due(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        let due: Option<String> = sqlx::query_scalar(
            "SELECT to_char(min(due_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
             FROM requests WHERE is_open",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.db(e, "request"))?;
        due.as_deref().map(parse_sortable_time).transpose()
    }

    async fn count_open_by_state(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, count(*) FROM requests WHERE is_open GROUP BY state")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.db(e, "request"))?;
        Ok(rows
            .into_iter()
            .map(|(state, n)| (state, n.max(0) as u64))
            .collect())
    }

    async fn audit_length(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM audit")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.db(e, "audit entry"))
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.db(e, "database"))?;
        missing_migrations(&MIGRATIONS, &applied)
    }

    async fn leader_lock(&self) -> Result<Arc<dyn LeaderLock>, StoreError> {
        Ok(Arc::new(AdvisoryLock {
            options: self.options.clone(),
            secrets: self.secrets.clone(),
            conn: tokio::sync::Mutex::new(None),
        }))
    }

    async fn count_overdue(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM requests WHERE is_open AND access_ends_at <= CAST($1 AS TIMESTAMPTZ)",
        )
        .bind(sortable_time(now)?)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.db(e, "request"))?;
        Ok(count.max(0) as u64)
    }

    async fn request(&self, id: &str) -> Result<Option<Request>, StoreError> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db(e, "request"))?;
        body.map(|body| decode_request(id, &body)).transpose()
    }

    async fn requests(&self, filter: &RequestFilter) -> Result<Vec<Request>, StoreError> {
        let mut query = sql::requests_query::<Postgres>(filter, &sql::POSTGRES)?;
        let rows: Vec<(String, String)> = query
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.db(e, "request"))?;
        rows.iter()
            .map(|(id, body)| decode_request(id, body))
            .collect()
    }

    async fn append_audit(&self, audit: &[NewAuditEntry]) -> Result<Vec<AuditEntry>, StoreError> {
        if audit.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
        let entries = self.append(&mut tx, audit).await?;
        tx.commit().await.map_err(|e| self.db(e, "audit entry"))?;
        Ok(entries)
    }

    async fn audit(&self, after: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<AuditRow> = sql::audit_after::<Postgres>(after, limit)
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.db(e, "audit entry"))?;
        Ok(rows.into_iter().map(sql::audit_entry).collect())
    }

    async fn audit_of_request(&self, request: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<AuditRow> = sql::audit_of::<Postgres>(request)
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.db(e, "audit entry"))?;
        Ok(rows.into_iter().map(sql::audit_entry).collect())
    }

    async fn delete_token(&self, hash: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM api_tokens WHERE hash = $1")
            .bind(hash)
            .execute(&self.pool)
            .await
            .map_err(|e| self.db(e, "API token"))?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn purge_expired_tokens(&self, before: &str) -> Result<u64, StoreError> {
        let purged =
            sqlx::query("DELETE FROM api_tokens WHERE expires_at IS NOT NULL AND expires_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await
                .map_err(|e| self.db(e, "API token"))?;
        Ok(purged.rows_affected())
    }

    async fn insert_token(&self, token: &ApiToken) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (hash, user_name, description, created_at, expires_at, kind, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&token.hash)
        .bind(&token.user)
        .bind(&token.description)
        .bind(&token.created_at)
        .bind(&token.expires_at)
        .bind(token.kind.as_str())
        .bind(&token.last_used_at)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db(e, "an API token with this hash"))?;
        Ok(())
    }

    async fn token(&self, hash: &str) -> Result<Option<ApiToken>, StoreError> {
        let row: Option<TokenRow> = sqlx::query_as(&format!("{TOKEN_COLUMNS} WHERE hash = $1"))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.db(e, "API token"))?;
        row.map(crate::api_token).transpose()
    }

    async fn get_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT value FROM tidegate_state WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.db(e, "state record"))?;
        Ok(row.map(|(v,)| v))
    }

    async fn put_state(&self, key: &str, value: &str, at: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tidegate_state (key, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db(e, "state record"))?;
        Ok(())
    }

    async fn claim_state(&self, key: &str, value: &str, at: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO tidegate_state (key, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db(e, "state record"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_state(&self, key: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM tidegate_state WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(|e| self.db(e, "state record"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn states(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        // A prefix compared exactly, not with LIKE: keys may hold `%` or `_`.
        sqlx::query_as(
            "SELECT key, value FROM tidegate_state \
             WHERE substr(key, 1, length($1)) = $1 ORDER BY key",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db(e, "state record"))
    }

    async fn enqueue_deliveries(
        &self,
        deliveries: &[tidegate_core::store::NewDelivery],
    ) -> Result<u64, StoreError> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO tidegate_outbox (channel, event_id, payload, created_at, next_at) ",
        );
        q.push_values(deliveries, |mut row, d| {
            row.push_bind(&d.channel)
                .push_bind(&d.event_id)
                .push_bind(&d.payload)
                .push_bind(&d.created_at)
                .push_bind(&d.next_at);
        });
        q.push(" ON CONFLICT (channel, event_id) DO NOTHING");
        let done = q
            .build()
            .execute(&self.pool)
            .await
            .map_err(|e| self.db(e, "delivery"))?;
        Ok(done.rows_affected())
    }

    async fn due_deliveries(
        &self,
        now: &str,
        limit: usize,
    ) -> Result<Vec<tidegate_core::store::Delivery>, StoreError> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "{DELIVERY_COLUMNS} WHERE state = 'pending' AND next_at <= $1 ORDER BY next_at, id LIMIT $2"
        ))
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db(e, "delivery"))?;
        Ok(rows.into_iter().map(crate::delivery).collect())
    }

    async fn record_attempt(
        &self,
        attempt: &tidegate_core::store::Attempt,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE tidegate_outbox SET attempts = attempts + 1, state = $1, next_at = $2, \
             last_error = $3, done_at = $4 WHERE id = $5",
        )
        .bind(&attempt.state)
        .bind(&attempt.next_at)
        .bind(&attempt.last_error)
        .bind(&attempt.done_at)
        .bind(attempt.id)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db(e, "delivery"))?;
        Ok(())
    }

    async fn deliveries(
        &self,
        channel: &str,
        limit: usize,
    ) -> Result<Vec<tidegate_core::store::Delivery>, StoreError> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "{DELIVERY_COLUMNS} WHERE channel = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(channel)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db(e, "delivery"))?;
        Ok(rows.into_iter().map(crate::delivery).collect())
    }

    async fn pending_deliveries(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT channel, COUNT(*) FROM tidegate_outbox WHERE state = 'pending' GROUP BY channel",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db(e, "delivery"))?;
        Ok(rows
            .into_iter()
            .map(|(c, n)| (c, n.max(0) as u64))
            .collect())
    }

    async fn count_states(&self, prefix: &str) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM tidegate_state WHERE substr(key, 1, length($1)) = $1",
        )
        .bind(prefix)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.db(e, "state record"))?;
        Ok(n.max(0) as u64)
    }

    async fn tokens_of(&self, user: &str) -> Result<Vec<ApiToken>, StoreError> {
        let rows: Vec<TokenRow> = sqlx::query_as(&format!(
            "{TOKEN_COLUMNS} WHERE user_name = $1 ORDER BY created_at DESC, hash"
        ))
        .bind(user)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.db(e, "API token"))?;
        rows.into_iter().map(crate::api_token).collect()
    }

    async fn touch_token(
        &self,
        hash: &str,
        at: &str,
        unless_since: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE api_tokens SET last_used_at = $1 \
             WHERE hash = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(at)
        .bind(hash)
        .bind(unless_since)
        .execute(&self.pool)
        .await
        .map_err(|e| self.db(e, "API token"))?;
        Ok(())
    }
}

/// Leadership as a session-level advisory lock held on a connection of its own (not a pooled
/// one), keyed by the schema so deployments sharing a database do not contend. Chosen over a
/// lease row because PostgreSQL itself ends the hold when the holder dies: a killed process's
/// connection closes and the lock is free at once, with no lease to wait out and no clock to
/// trust. A leader checks its connection every second and before each tailnet change; if the
/// connection is gone, so is the lock, and it stops.
struct AdvisoryLock {
    options: PgConnectOptions,
    secrets: Secrets,
    /// The connection holding (or trying for) the lock, and whether it holds it.
    conn: tokio::sync::Mutex<Option<(PgConnection, bool)>>,
}

/// How long a lock check may take before the connection counts as lost.
const LOCK_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

const LOCK_KEY: &str = "hashtextextended('tidegate leader ' || current_schema(), 0)";

#[async_trait::async_trait]
impl LeaderLock for AdvisoryLock {
    async fn try_acquire(&self) -> Result<bool, StoreError> {
        let mut slot = self.conn.lock().await;
        if let Some((_, true)) = slot.as_ref() {
            return Ok(true);
        }
        if slot.is_none() {
            let conn = tokio::time::timeout(
                LOCK_CHECK_TIMEOUT,
                PgConnection::connect_with(&self.options),
            )
            .await
            .map_err(|_| StoreError::Database("connecting for the leader lock timed out".into()))?
            .map_err(|e| map_error(e, "database", &self.secrets))?;
            *slot = Some((conn, false));
        }
        let Some((conn, holding)) = slot.as_mut() else {
            return Ok(false);
        };
        let query = format!("SELECT pg_try_advisory_lock({LOCK_KEY})");
        match tokio::time::timeout(
            LOCK_CHECK_TIMEOUT,
            sqlx::query_scalar::<_, bool>(&query).fetch_one(&mut *conn),
        )
        .await
        {
            Ok(Ok(got)) => {
                *holding = got;
                Ok(got)
            }
            Ok(Err(e)) => {
                *slot = None;
                Err(map_error(e, "leader lock", &self.secrets))
            }
            Err(_) => {
                *slot = None;
                Err(StoreError::Database(
                    "the leader lock check timed out".into(),
                ))
            }
        }
    }

    async fn held(&self) -> bool {
        let mut slot = self.conn.lock().await;
        let Some((conn, true)) = slot.as_mut() else {
            return false;
        };
        // A session lock lasts as long as its session: the session answering is the lock held.
        let alive = matches!(
            tokio::time::timeout(LOCK_CHECK_TIMEOUT, conn.ping()).await,
            Ok(Ok(()))
        );
        if !alive {
            // Dropping the connection closes it; should the server still have the session, it
            // releases the lock when it notices.
            *slot = None;
        }
        alive
    }

    async fn release(&self) {
        if let Some((mut conn, holding)) = self.conn.lock().await.take() {
            // Unlock first: closing alone frees the lock only once the server's session has
            // exited, a moment later; a replica handing over should hand over now.
            if holding {
                let query = format!("SELECT pg_advisory_unlock({LOCK_KEY})");
                let _ = tokio::time::timeout(
                    LOCK_CHECK_TIMEOUT,
                    sqlx::query_scalar::<_, bool>(&query).fetch_one(&mut conn),
                )
                .await;
            }
            let _ = tokio::time::timeout(LOCK_CHECK_TIMEOUT, conn.close()).await;
        }
    }
}
