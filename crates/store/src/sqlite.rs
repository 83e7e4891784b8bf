//! The SQLite backend: one file in WAL mode (readers never wait for the writer), a busy timeout
//! so writers queue instead of failing, and every write in a `BEGIN IMMEDIATE` transaction,
//! which takes the database's write lock up front: writers (in this process or any other)
//! run one after the other, so the audit chain cannot fork and no transaction has to upgrade a
//! read lock half-way (which SQLite would refuse with `SQLITE_BUSY` instead of waiting).
//! Within a process, every write goes through one writer task ([`writer`]), which commits
//! concurrent writes together.

mod writer;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use crate::sql::{self, AuditRow};
use crate::{DELIVERY_COLUMNS, DeliveryRow, TOKEN_COLUMNS, TokenRow};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{QueryBuilder, Sqlite, Transaction};
use tidegate_core::audit::{AuditEntry, NewAuditEntry};
use tidegate_core::request::Request;
use tidegate_core::store::{ApiToken, RequestFilter, Store, StoreError};
use writer::{Write, Writer, Written};

use time::OffsetDateTime;

use crate::{
    AUDIT_ROWS_PER_INSERT, REQUEST_ROWS_PER_INSERT, RequestRow, Secrets, chain_after,
    decode_request, genesis, map_error, missing_migrations, parse_sortable_time, sortable_time,
};

static MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a writer waits for another writer's transaction before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often [`SqliteStore::migrate`] tries when another process migrates the same file at
/// the same moment (SQLite's migrator takes no lock, so the loser fails and retries).
const MIGRATE_ATTEMPTS: u32 = 5;

/// How often [`SqliteStore::connect`] tries when the file is busy.
const CONNECT_ATTEMPTS: u32 = 10;

/// The store on an SQLite file (`sqlite://PATH`).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: Writer,
}

impl SqliteStore {
    /// Opens (creating the file if missing) and migrates.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let store = SqliteStore::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens without migrating.
    pub async fn connect(url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Database(format!("bad SQLite URL {url:?}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // A large batch (thousands of expiries after a restart) fits in the page cache
            // instead of spilling pages to the WAL mid-transaction; grown only as used.
            .pragma("cache_size", "-32768")
            // Savepoints' statement journals stay in memory, not in temporary files.
            .pragma("temp_store", "memory");
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let mut attempt = 1;
        loop {
            match new_pool(options.clone(), in_memory).await {
                Ok(pool) => {
                    let writer = Writer::start(pool.clone());
                    return Ok(SqliteStore { pool, writer });
                }
                // Switching a new file to WAL mode can report "database is locked" at once,
                // without waiting, when another process does the same at the same moment.
                Err(e) if is_busy(&e) && attempt < CONNECT_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(e) => return Err(db(e, "database")),
            }
        }
    }

    /// Brings the schema up to date; running it again does nothing.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut attempt = 1;
        loop {
            match MIGRATIONS.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt >= MIGRATE_ATTEMPTS => {
                    return Err(StoreError::Database(format!("migrations: {e}")));
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    attempt += 1;
                }
            }
        }
    }

    /// The connection pool, for tools and tests.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes every connection (waiting for the ones in use).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// One statement through the writer; the rows it changed.
    async fn statement(
        &self,
        sql: &'static str,
        binds: Vec<Option<String>>,
        what: &'static str,
    ) -> Result<u64, StoreError> {
        match self
            .writer
            .write(Write::Statement { sql, binds, what })
            .await?
        {
            Written::Rows(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }

    async fn update_batch(
        &self,
        batch: Vec<(Request, Vec<NewAuditEntry>)>,
    ) -> Result<Vec<bool>, StoreError> {
        match self.writer.write(Write::UpdateRequests(batch)).await? {
            Written::Stored(stored) => Ok(stored),
            _ => Err(unexpected()),
        }
    }
}

async fn new_pool(
    options: SqliteConnectOptions,
    in_memory: bool,
) -> Result<SqlitePool, sqlx::Error> {
    if in_memory {
        // Every connection to `:memory:` would be a database of its own: keep exactly one,
        // for as long as the pool lives.
        SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        SqlitePoolOptions::new().max_connections(4)
    }
    .acquire_timeout(BUSY_TIMEOUT)
    .connect_with(options)
    .await
}

/// SQLITE_BUSY or SQLITE_LOCKED, with any extended code.
fn is_busy(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => e
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| matches!(code & 0xff, 5 | 6)),
        _ => false,
    }
}

/// The writer answered a write with another write's kind of answer (a bug, not bad data).
fn unexpected() -> StoreError {
    StoreError::Database("the database writer gave an unexpected answer".into())
}

fn db(error: sqlx::Error, what: &str) -> StoreError {
    map_error(error, what, &Secrets::default())
}

/// Appends `entries` after the last entry. The caller holds the write lock (`BEGIN IMMEDIATE`).
async fn append(
    tx: &mut Transaction<'static, Sqlite>,
    entries: &[NewAuditEntry],
) -> Result<Vec<AuditEntry>, StoreError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let head: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut **tx)
            .await
            .map_err(|e| db(e, "audit entry"))?;
    let (seq, hash) = head.unwrap_or_else(genesis);
    let chained = chain_after(seq, &hash, entries);
    for chunk in chained.chunks(AUDIT_ROWS_PER_INSERT) {
        sql::insert_audit::<Sqlite>(chunk)
            .build()
            .execute(&mut **tx)
            .await
            .map_err(|e| db(e, "audit entry"))?;
    }
    Ok(chained)
}

/// Inserts request rows, [`REQUEST_ROWS_PER_INSERT`] per statement. `what` names them in a
/// duplicate error.
async fn insert_rows(
    tx: &mut Transaction<'static, Sqlite>,
    rows: &[(&Request, RequestRow)],
    what: &str,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(REQUEST_ROWS_PER_INSERT) {
        sql::insert_requests::<Sqlite>(chunk, &sql::SQLITE)
            .build()
            .execute(&mut **tx)
            .await
            .map_err(|e| db(e, what))?;
    }
    Ok(())
}

/// Stores changed requests (the rows at `chunk`, no id twice), each if the stored version is
/// the one before it, in one statement; per row whether it was stored (`false`: a conflict,
/// nothing written for it). Entitlement, requester and creation time never change after
/// creation, so they and their indexes are left alone.
async fn update_rows(
    tx: &mut Transaction<'static, Sqlite>,
    rows: &[(&Request, RequestRow)],
    chunk: &[usize],
) -> Result<Vec<bool>, StoreError> {
    let mut update = QueryBuilder::<Sqlite>::new(
        "WITH v (id, state, is_open, version, due_at, access_ends_at, body) AS (",
    );
    update.push_values(chunk, |mut b, &i| {
        let (request, row) = &rows[i];
        b.push_bind(&request.id)
            .push_bind(row.state)
            .push_bind(row.open)
            .push_bind(request.version)
            .push_bind(&row.due_at)
            .push_bind(&row.access_ends_at)
            .push_bind(&row.body);
    });
    update.push(
        ") UPDATE requests SET state = v.state, is_open = v.is_open, version = v.version, \
         due_at = v.due_at, access_ends_at = v.access_ends_at, body = v.body \
         FROM v WHERE requests.id = v.id AND requests.version = v.version - 1 \
         RETURNING requests.id",
    );
    let what = match chunk {
        [i] => format!("request {}", rows[*i].0.id),
        _ => "requests".to_owned(),
    };
    let updated: Vec<String> = update
        .build_query_scalar()
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| db(e, &what))?;
    let updated: std::collections::HashSet<String> = updated.into_iter().collect();
    Ok(chunk
        .iter()
        .map(|&i| updated.contains(&rows[i].0.id))
        .collect())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn insert_request(
        &self,
        request: &Request,
        audit: &[NewAuditEntry],
    ) -> Result<(), StoreError> {
        self.writer
            .write(Write::InsertRequests(vec![(
                request.clone(),
                audit.to_vec(),
            )]))
            .await
            .map(|_| ())
    }

    async fn update_request(
        &self,
        request: &Request,
        audit: &[NewAuditEntry],
    ) -> Result<(), StoreError> {
        let stored = self
            .update_batch(vec![(request.clone(), audit.to_vec())])
            .await?;
        if stored == [true] {
            Ok(())
        } else {
            Err(StoreError::Conflict(request.id.clone()))
        }
    }

    /// One transaction: multi-row INSERTs, then the audit entries of the whole batch in batch
    /// order.
    async fn insert_requests(
        &self,
        batch: &[(Request, Vec<NewAuditEntry>)],
    ) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.writer
            .write(Write::InsertRequests(batch.to_vec()))
            .await
            .map(|_| ())
    }

    /// One transaction: multi-row UPDATEs, each row with its version check, then the audit
    /// entries of the stored ones, in batch order.
    async fn update_requests(
        &self,
        batch: &[(Request, Vec<NewAuditEntry>)],
    ) -> Result<Vec<bool>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.update_batch(batch.to_vec()).await
    }

    async fn next_due(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        let due: Option<String> =
            sqlx::query_scalar("SELECT min(due_at) FROM requests WHERE is_open = 1")
                .fetch_one(&self.pool)
                .await
                .map_err(|e| db(e, "request"))?;
        due.as_deref().map(parse_sortable_time).transpose()
    }

    async fn count_open_by_state(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, count(*) FROM requests WHERE is_open = 1 GROUP BY state")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| db(e, "request"))?;
        Ok(rows
            .into_iter()
            .map(|(state, n)| (state, n.max(0) as u64))
            .collect())
    }

    async fn audit_length(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM audit")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db(e, "audit entry"))
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| db(e, "database"))?;
        missing_migrations(&MIGRATIONS, &applied)
    }

    async fn count_overdue(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM requests WHERE is_open = 1 AND access_ends_at <= ?",
        )
        .bind(sortable_time(now)?)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| db(e, "request"))?;
        Ok(count.max(0) as u64)
    }

    async fn request(&self, id: &str) -> Result<Option<Request>, StoreError> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM requests WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db(e, "request"))?;
        body.map(|body| decode_request(id, &body)).transpose()
    }

    async fn requests(&self, filter: &RequestFilter) -> Result<Vec<Request>, StoreError> {
        let mut query = sql::requests_query::<Sqlite>(filter, &sql::SQLITE)?;
        let rows: Vec<(String, String)> = query
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db(e, "request"))?;
        rows.iter()
            .map(|(id, body)| decode_request(id, body))
            .collect()
    }

    async fn append_audit(&self, audit: &[NewAuditEntry]) -> Result<Vec<AuditEntry>, StoreError> {
        if audit.is_empty() {
            return Ok(Vec::new());
        }
        match self
            .writer
            .write(Write::AppendAudit(audit.to_vec()))
            .await?
        {
            Written::Audit(entries) => Ok(entries),
            _ => Err(unexpected()),
        }
    }

    async fn audit(&self, after: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<AuditRow> = sql::audit_after::<Sqlite>(after, limit)
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db(e, "audit entry"))?;
        Ok(rows.into_iter().map(sql::audit_entry).collect())
    }

    async fn audit_of_request(&self, request: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<AuditRow> = sql::audit_of::<Sqlite>(request)
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db(e, "audit entry"))?;
        Ok(rows.into_iter().map(sql::audit_entry).collect())
    }

    async fn delete_token(&self, hash: &str) -> Result<bool, StoreError> {
        let deleted = self
            .statement(
                "DELETE FROM api_tokens WHERE hash = ?",
                vec![Some(hash.to_owned())],
                "API token",
            )
            .await?;
        Ok(deleted > 0)
    }

    async fn purge_expired_tokens(&self, before: &str) -> Result<u64, StoreError> {
        self.statement(
            "DELETE FROM api_tokens WHERE expires_at IS NOT NULL AND expires_at < ?",
            vec![Some(before.to_owned())],
            "API token",
        )
        .await
    }

    async fn insert_token(&self, token: &ApiToken) -> Result<(), StoreError> {
        self.statement(
            "INSERT INTO api_tokens (hash, user_name, description, created_at, expires_at, kind, last_used_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            vec![
                Some(token.hash.clone()),
                Some(token.user.clone()),
                Some(token.description.clone()),
                Some(token.created_at.clone()),
                token.expires_at.clone(),
                Some(token.kind.as_str().to_owned()),
                token.last_used_at.clone(),
            ],
            "an API token with this hash",
        )
        .await
        .map(|_| ())
    }

    async fn token(&self, hash: &str) -> Result<Option<ApiToken>, StoreError> {
        let row: Option<TokenRow> = sqlx::query_as(&format!("{TOKEN_COLUMNS} WHERE hash = ?"))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db(e, "API token"))?;
        row.map(crate::api_token).transpose()
    }

    async fn get_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT value FROM tidegate_state WHERE key = ?")
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| db(e, "state record"))?;
        Ok(row.map(|(v,)| v))
    }

    async fn put_state(&self, key: &str, value: &str, at: &str) -> Result<(), StoreError> {
        self.statement(
            "INSERT INTO tidegate_state (key, value, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            vec![Some(key.to_owned()), Some(value.to_owned()), Some(at.to_owned())],
            "state record",
        )
        .await
        .map(|_| ())
    }

    async fn claim_state(&self, key: &str, value: &str, at: &str) -> Result<bool, StoreError> {
        let written = self
            .statement(
                "INSERT INTO tidegate_state (key, value, updated_at) VALUES (?, ?, ?) \
                 ON CONFLICT (key) DO NOTHING",
                vec![
                    Some(key.to_owned()),
                    Some(value.to_owned()),
                    Some(at.to_owned()),
                ],
                "state record",
            )
            .await?;
        Ok(written > 0)
    }

    async fn delete_state(&self, key: &str) -> Result<bool, StoreError> {
        let deleted = self
            .statement(
                "DELETE FROM tidegate_state WHERE key = ?",
                vec![Some(key.to_owned())],
                "state record",
            )
            .await?;
        Ok(deleted > 0)
    }

    async fn states(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        // A prefix compared exactly, not with LIKE: keys may hold `%` or `_`.
        sqlx::query_as(
            "SELECT key, value FROM tidegate_state \
             WHERE substr(key, 1, length(?)) = ? ORDER BY key",
        )
        .bind(prefix)
        .bind(prefix)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db(e, "state record"))
    }

    async fn enqueue_deliveries(
        &self,
        deliveries: &[tidegate_core::store::NewDelivery],
    ) -> Result<u64, StoreError> {
        // Queued together: the writer commits concurrent statements at once.
        let writes = deliveries.iter().map(|d| {
            self.statement(
                "INSERT INTO tidegate_outbox (channel, event_id, payload, created_at, next_at) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (channel, event_id) DO NOTHING",
                vec![
                    Some(d.channel.clone()),
                    Some(d.event_id.clone()),
                    Some(d.payload.clone()),
                    Some(d.created_at.clone()),
                    Some(d.next_at.clone()),
                ],
                "delivery",
            )
        });
        let mut queued = 0;
        for written in futures_util::future::join_all(writes).await {
            queued += written?;
        }
        Ok(queued)
    }

    async fn due_deliveries(
        &self,
        now: &str,
        limit: usize,
    ) -> Result<Vec<tidegate_core::store::Delivery>, StoreError> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "{DELIVERY_COLUMNS} WHERE state = 'pending' AND next_at <= ? ORDER BY next_at, id LIMIT ?"
        ))
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db(e, "delivery"))?;
        Ok(rows.into_iter().map(crate::delivery).collect())
    }

    async fn record_attempt(
        &self,
        attempt: &tidegate_core::store::Attempt,
    ) -> Result<(), StoreError> {
        self.statement(
            "UPDATE tidegate_outbox SET attempts = attempts + 1, state = ?, next_at = ?, \
             last_error = ?, done_at = ? WHERE id = CAST(? AS INTEGER)",
            vec![
                Some(attempt.state.clone()),
                Some(attempt.next_at.clone()),
                attempt.last_error.clone(),
                attempt.done_at.clone(),
                Some(attempt.id.to_string()),
            ],
            "delivery",
        )
        .await
        .map(|_| ())
    }

    async fn deliveries(
        &self,
        channel: &str,
        limit: usize,
    ) -> Result<Vec<tidegate_core::store::Delivery>, StoreError> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "{DELIVERY_COLUMNS} WHERE channel = ? ORDER BY id DESC LIMIT ?"
        ))
        .bind(channel)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db(e, "delivery"))?;
        Ok(rows.into_iter().map(crate::delivery).collect())
    }

    async fn pending_deliveries(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT channel, COUNT(*) FROM tidegate_outbox WHERE state = 'pending' GROUP BY channel",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db(e, "delivery"))?;
        Ok(rows
            .into_iter()
            .map(|(c, n)| (c, n.max(0) as u64))
            .collect())
    }

    async fn count_states(&self, prefix: &str) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM tidegate_state WHERE substr(key, 1, length(?)) = ?",
        )
        .bind(prefix)
        .bind(prefix)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| db(e, "state record"))?;
        Ok(n.max(0) as u64)
    }

    async fn tokens_of(&self, user: &str) -> Result<Vec<ApiToken>, StoreError> {
        let rows: Vec<TokenRow> = sqlx::query_as(&format!(
            "{TOKEN_COLUMNS} WHERE user_name = ? ORDER BY created_at DESC, hash"
        ))
        .bind(user)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db(e, "API token"))?;
        rows.into_iter().map(crate::api_token).collect()
    }

    async fn touch_token(
        &self,
        hash: &str,
        at: &str,
        unless_since: &str,
    ) -> Result<(), StoreError> {
        self.statement(
            "UPDATE api_tokens SET last_used_at = ? \
             WHERE hash = ? AND (last_used_at IS NULL OR last_used_at < ?)",
            vec![
                Some(at.to_owned()),
                Some(hash.to_owned()),
                Some(unless_since.to_owned()),
            ],
            "API token",
        )
        .await
        .map(|_| ())
    }
}
