//! tidegate's storage: the [`tidegate_core::store::Store`] trait on two backends, SQLite
//! (embedded, the default: one file, WAL mode) and PostgreSQL (for several tidegate processes
//! sharing one database). [`open`] picks the backend by URL and brings the schema up to date.
//!
//! Both backends keep the same data:
//! - `requests`: the columns the queries filter and sort on (id, entitlement, requester, state,
//!   open flag, version, created_at, due_at) and the whole request as JSON text. `due_at` is
//!   [`Request::due_at`] as of the last write (a partial index over the open rows serves the
//!   due filter and `next_due`). Updates are optimistic:
//!   a stored change must carry the next version, else [`StoreError::Conflict`].
//! - `audit`: the hash-chained audit log, seq 1, 2, 3 ... with no gaps. Appends are serialized
//!   (PostgreSQL: a row lock on the chain head; SQLite: `BEGIN IMMEDIATE`) so the chain never
//!   forks, and a request change and its audit entries commit in one transaction.
//! - `api_tokens`: API tokens by the hash of their secret.

use std::sync::Arc;

use tidegate_core::audit::{AuditEntry, GENESIS, NewAuditEntry};
use tidegate_core::request::Request;
use tidegate_core::store::{Store, TokenKind};
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

pub use tidegate_core::store::{ApiToken, RequestFilter, StoreError};

mod postgres;
mod sql;
mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Opens the store at `url` and runs its migrations: `sqlite://PATH` (the file is created if
/// missing; `sqlite::memory:` for a throwaway in-memory database) or `postgres://...`
/// (`postgresql://` too).
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    match Backend::of(url)? {
        Backend::Sqlite => Ok(Arc::new(SqliteStore::open(url).await?)),
        Backend::Postgres => Ok(Arc::new(PostgresStore::open(url).await?)),
    }
}

/// Which backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(url: &str) -> Result<Backend, StoreError> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(StoreError::Database(format!(
                "unsupported database URL {:?}: use sqlite://PATH or postgres://USER@HOST/DB",
                redact_url(url)
            ))),
        }
    }
}

/// Turns a database error into a [`StoreError`]: a unique violation is
/// [`StoreError::Duplicate`] of `what`, anything else [`StoreError::Database`], with the
/// connection password (if any) blanked out of the message.
pub(crate) fn map_error(error: sqlx::Error, what: &str, secrets: &Secrets) -> StoreError {
    if let sqlx::Error::Database(e) = &error
        && e.is_unique_violation()
    {
        return StoreError::Duplicate(what.to_owned());
    }
    StoreError::Database(secrets.redact(error.to_string()))
}

/// Strings that must never appear in an error message (a connection password).
#[derive(Debug, Clone, Default)]
pub(crate) struct Secrets(Vec<String>);

impl Secrets {
    /// The password in `url`, as written and percent-decoded.
    pub(crate) fn of_url(url: &str) -> Secrets {
        let mut out = Vec::new();
        if let Some(password) = url_password(url) {
            let decoded = percent_decode(password);
            out.push(password.to_owned());
            if decoded != password {
                out.push(decoded);
            }
        }
        Secrets(out)
    }

    pub(crate) fn redact(&self, mut text: String) -> String {
        for secret in &self.0 {
            if !secret.is_empty() {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }
}

/// The password part of `scheme://user:password@host/...`.
fn url_password(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    Some(password)
}

/// `url` with its password replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    Secrets::of_url(url).redact(url.to_owned())
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The columns of a request row besides its JSON.
pub(crate) struct RequestRow {
    pub(crate) body: String,
    pub(crate) state: &'static str,
    pub(crate) open: bool,
    /// [`sortable_time`] of `created_at`.
    pub(crate) created_at: String,
    /// [`sortable_time`] of [`Request::due_at`]; `None` once nothing is left to do.
    pub(crate) due_at: Option<String>,
    /// [`sortable_time`] of [`Request::access_ends_at`].
    pub(crate) access_ends_at: Option<String>,
}

impl RequestRow {
    pub(crate) fn of(request: &Request) -> Result<RequestRow, StoreError> {
        let body = serde_json::to_string(request).map_err(|e| {
            StoreError::Database(format!("cannot encode request {}: {e}", request.id))
        })?;
        Ok(RequestRow {
            body,
            state: request.state.as_str(),
            open: request.open(),
            created_at: sortable_time(request.created_at)?,
            due_at: request.due_at().map(sortable_time).transpose()?,
            access_ends_at: request.access_ends_at().map(sortable_time).transpose()?,
        })
    }
}

/// Reads a request back from its JSON.
pub(crate) fn decode_request(id_hint: &str, body: &str) -> Result<Request, StoreError> {
    serde_json::from_str(body)
        .map_err(|e| StoreError::Corrupt(format!("request {id_hint} does not decode: {e}")))
}

/// Chains `entries` after the entry with `seq` and `hash` (seq 0 and [`GENESIS`] for an empty
/// log).
pub(crate) fn chain_after(seq: i64, hash: &str, entries: &[NewAuditEntry]) -> Vec<AuditEntry> {
    let mut out: Vec<AuditEntry> = Vec::with_capacity(entries.len());
    for entry in entries {
        let next = match out.last() {
            Some(prev) => AuditEntry::chain(prev.seq, &prev.hash, entry),
            None => AuditEntry::chain(seq, hash, entry),
        };
        out.push(next);
    }
    out
}

/// The head of an empty log.
pub(crate) fn genesis() -> (i64, String) {
    (0, GENESIS.to_owned())
}

/// Audit rows per INSERT statement (8 parameters each; SQLite allows 32766 per statement).
pub(crate) const AUDIT_ROWS_PER_INSERT: usize = 500;

/// Request rows per INSERT statement in a batch insert (10 parameters each).
pub(crate) const REQUEST_ROWS_PER_INSERT: usize = 500;

/// The rows of a batch update in statements of at most [`REQUEST_ROWS_PER_INSERT`] rows, in
/// batch order, with no request twice in one statement (a request given twice is updated
/// twice, in order, as if one by one). Indices into the batch.
pub(crate) fn update_chunks(rows: &[(&Request, RequestRow)]) -> Vec<Vec<usize>> {
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut ids: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for (i, (request, _)) in rows.iter().enumerate() {
        let full = chunks
            .last()
            .is_none_or(|c| c.len() >= REQUEST_ROWS_PER_INSERT);
        if full || ids.contains(request.id.as_str()) {
            chunks.push(Vec::new());
            ids.clear();
        }
        ids.insert(&request.id);
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(i);
        }
    }
    chunks
}

/// `Ok` if every migration of `migrator` is among the `applied` versions; otherwise which are
/// missing.
pub(crate) fn missing_migrations(
    migrator: &sqlx::migrate::Migrator,
    applied: &[i64],
) -> Result<(), StoreError> {
    let missing: Vec<String> = migrator
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Database(format!(
            "migrations not applied: {}",
            missing.join(", ")
        )))
    }
}

/// UTC with nanoseconds, fixed width, so that text order is time order.
const SORTABLE_TIME: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

/// A time as fixed-width UTC text: sortable as text (SQLite), and read by PostgreSQL as a
/// `timestamptz`.
pub(crate) fn sortable_time(t: OffsetDateTime) -> Result<String, StoreError> {
    t.to_offset(time::UtcOffset::UTC)
        .format(SORTABLE_TIME)
        .map_err(|e| StoreError::Database(format!("cannot store time {t}: {e}")))
}

/// Reads a time written by [`sortable_time`] (any number of fractional digits: PostgreSQL
/// gives back microseconds).
pub(crate) fn parse_sortable_time(text: &str) -> Result<OffsetDateTime, StoreError> {
    const PARSE: &[BorrowedFormatItem<'static>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond]Z");
    time::PrimitiveDateTime::parse(text, PARSE)
        .map(time::PrimitiveDateTime::assume_utc)
        .map_err(|e| StoreError::Corrupt(format!("stored time {text:?} does not parse: {e}")))
}

/// A `LIMIT` for SQL.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The columns of a stored token, in [`TokenRow`] order.
pub(crate) const TOKEN_COLUMNS: &str = "SELECT hash, user_name, description, created_at, expires_at, kind, last_used_at FROM api_tokens";

pub(crate) type TokenRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
);

/// The columns of a stored delivery, in [`DeliveryRow`] order.
pub(crate) const DELIVERY_COLUMNS: &str = "SELECT id, channel, event_id, payload, created_at, next_at, attempts, last_error, state, done_at FROM tidegate_outbox";

pub(crate) type DeliveryRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    String,
    Option<String>,
);

pub(crate) fn delivery(row: DeliveryRow) -> tidegate_core::store::Delivery {
    let (id, channel, event_id, payload, created_at, next_at, attempts, last_error, state, done_at) =
        row;
    tidegate_core::store::Delivery {
        id,
        channel,
        event_id,
        payload,
        created_at,
        next_at,
        attempts,
        last_error,
        state,
        done_at,
    }
}

/// A token as both backends read it (the SQL differs only in its placeholders).
pub(crate) fn api_token(row: TokenRow) -> Result<ApiToken, StoreError> {
    let (hash, user, description, created_at, expires_at, kind, last_used_at) = row;
    let kind = TokenKind::parse(&kind)
        .ok_or_else(|| StoreError::Corrupt(format!("API token kind {kind:?}")))?;
    Ok(ApiToken {
        hash,
        user,
        description,
        created_at,
        expires_at,
        kind,
        last_used_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_by_url() {
        assert_eq!(Backend::of("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(
            Backend::of("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        let err = Backend::of("mysql://root:hunter2@h/db").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn passwords_are_redacted() {
        let secrets = Secrets::of_url("postgres://tide:p%40ss:w0rd@db.example:5432/x?sslmode=off");
        assert_eq!(
            secrets.redact("auth failed for p%40ss:w0rd and p@ss:w0rd".into()),
            "auth failed for *** and ***"
        );
        assert_eq!(
            redact_url("postgres://tide:secret@db/x"),
            "postgres://tide:***@db/x"
        );
        assert_eq!(
            redact_url("postgres://tide@db/x?a=b:c@d"),
            "postgres://tide@db/x?a=b:c@d"
        );
        assert!(
            Secrets::of_url("sqlite:///var/lib/tidegate.db")
                .0
                .is_empty()
        );
    }

    #[test]
    fn times_sort_as_text() {
        use time::macros::datetime;
        assert_eq!(
            sortable_time(datetime!(2026-11-22 10:00:01.5 +02:00)).unwrap(),
            "2026-11-22T08:00:01.500000000Z"
        );
        let a = sortable_time(datetime!(2026-11-22 10:00:00 UTC)).unwrap();
        let b = sortable_time(datetime!(2026-11-22 10:00:00.000000001 UTC)).unwrap();
        assert!(a < b);
        let t = datetime!(2026-11-22 10:00:01.123456789 UTC);
        assert_eq!(parse_sortable_time(&sortable_time(t).unwrap()).unwrap(), t);
        assert_eq!(
            parse_sortable_time("2026-11-22T10:00:01.123457Z").unwrap(),
            datetime!(2026-11-22 10:00:01.123457 UTC)
        );
    }

    #[test]
    fn chains_start_at_genesis() {
        let entry = NewAuditEntry {
            at: "2026-11-22T10:00:00Z".into(),
            actor: "alice@example.com".into(),
            action: "request.created".into(),
            request: Some("r1".into()),
            detail: "{}".into(),
        };
        let (seq, hash) = genesis();
        let entries = chain_after(seq, &hash, &[entry.clone(), entry]);
        assert_eq!(entries[0].seq, 1);
        assert_eq!(entries[1].seq, 2);
        tidegate_core::audit::verify(&entries).unwrap();
    }
}
