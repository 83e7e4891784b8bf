//! The SQL both backends share, written once over `sqlx::Database`; what really differs
//! between the dialects is a [`Dialect`] value. (Row locking, the audit chain head, the update
//! statement's shape and single-statement placeholders stay in each backend: those are real
//! differences.)

use sqlx::{Database, Encode, QueryBuilder, Type};
use tidegate_core::audit::{AuditEntry, NewAuditEntry};
use tidegate_core::request::Request;
use tidegate_core::store::{RequestFilter, StoreError};

use crate::{RequestRow, sortable_time, sql_limit};

/// What differs between the dialects in the shared queries.
pub(crate) struct Dialect {
    /// The open flag as a condition, written as the partial indexes are (so they serve it).
    pub open: &'static str,
    /// Written around a bound time compared with or stored in a time column.
    pub time: (&'static str, &'static str),
}

pub(crate) const SQLITE: Dialect = Dialect {
    open: "is_open = 1",
    time: ("", ""),
};

pub(crate) const POSTGRES: Dialect = Dialect {
    open: "is_open",
    time: ("CAST(", " AS TIMESTAMPTZ)"),
};

/// `SELECT id, body FROM requests` with `filter`, newest first (oldest due first with a due
/// filter, along the partial index `requests_due`).
pub(crate) fn requests_query<'a, DB>(
    filter: &'a RequestFilter,
    dialect: &Dialect,
) -> Result<QueryBuilder<'a, DB>, StoreError>
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let (cast, as_time) = dialect.time;
    let mut query = QueryBuilder::<DB>::new("SELECT id, body FROM requests WHERE 1 = 1");
    if !filter.states.is_empty() {
        query.push(" AND state IN (");
        let mut states = query.separated(", ");
        for state in &filter.states {
            states.push_bind(state.as_str());
        }
        states.push_unseparated(")");
    }
    if let Some(requester) = &filter.requester {
        query
            .push(" AND requester = ")
            .push_bind(requester.as_str());
    }
    if let Some(entitlement) = &filter.entitlement {
        query
            .push(" AND entitlement = ")
            .push_bind(entitlement.as_str());
    }
    if let Some(at) = filter.overdue_at {
        query
            .push(format!(
                " AND {} AND access_ends_at <= {cast}",
                dialect.open
            ))
            .push_bind(sortable_time(at)?)
            .push(as_time);
    }
    if let Some(due_before) = filter.due_before {
        query
            .push(format!(" AND {} AND due_at <= {cast}", dialect.open))
            .push_bind(sortable_time(due_before)?)
            .push(as_time)
            .push(" ORDER BY due_at, id");
    } else {
        if filter.open_only {
            query.push(format!(" AND {}", dialect.open));
        }
        query.push(" ORDER BY created_at DESC, id DESC");
    }
    if let Some(limit) = filter.limit {
        query.push(" LIMIT ").push_bind(sql_limit(limit));
    }
    Ok(query)
}

/// One multi-row `INSERT INTO requests` of `rows`.
pub(crate) fn insert_requests<'a, DB>(
    rows: &'a [(&'a Request, RequestRow)],
    dialect: &Dialect,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
    Option<&'a str>: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
    bool: Encode<'a, DB> + Type<DB>,
{
    let (cast, as_time) = dialect.time;
    let mut insert = QueryBuilder::<DB>::new(
        "INSERT INTO requests \
         (id, entitlement, requester, state, is_open, version, created_at, due_at, \
         access_ends_at, body) ",
    );
    insert.push_values(rows, |mut b, (request, row)| {
        b.push_bind(request.id.as_str())
            .push_bind(request.entitlement.as_str())
            .push_bind(request.requester.as_str())
            .push_bind(row.state)
            .push_bind(row.open)
            .push_bind(request.version)
            .push(cast)
            .push_bind_unseparated(row.created_at.as_str())
            .push_unseparated(as_time)
            .push(cast)
            .push_bind_unseparated(row.due_at.as_deref())
            .push_unseparated(as_time)
            .push(cast)
            .push_bind_unseparated(row.access_ends_at.as_deref())
            .push_unseparated(as_time)
            .push_bind(row.body.as_str());
    });
    insert
}

/// One multi-row `INSERT INTO audit` of chained entries.
pub(crate) fn insert_audit<'a, DB>(entries: &'a [AuditEntry]) -> QueryBuilder<'a, DB>
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
    Option<&'a str>: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut insert = QueryBuilder::<DB>::new(
        "INSERT INTO audit (seq, at, actor, action, request, detail, prev_hash, hash) ",
    );
    insert.push_values(entries, |mut row, e| {
        row.push_bind(e.seq)
            .push_bind(e.at.as_str())
            .push_bind(e.actor.as_str())
            .push_bind(e.action.as_str())
            .push_bind(e.request.as_deref())
            .push_bind(e.detail.as_str())
            .push_bind(e.prev_hash.as_str())
            .push_bind(e.hash.as_str());
    });
    insert
}

/// The columns of an audit entry, in [`AuditRow`] order.
pub(crate) const AUDIT_COLUMNS: &str =
    "SELECT seq, at, actor, action, request, detail, prev_hash, hash FROM audit";

pub(crate) type AuditRow = (
    i64,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    String,
);

pub(crate) fn audit_entry(row: AuditRow) -> AuditEntry {
    let (seq, at, actor, action, request, detail, prev_hash, hash) = row;
    AuditEntry {
        seq,
        at,
        actor,
        action,
        request,
        detail,
        prev_hash,
        hash,
    }
}

/// The rows of a batch, encoded before any transaction starts.
pub(crate) fn batch_rows(
    batch: &[(Request, Vec<NewAuditEntry>)],
) -> Result<Vec<(&Request, RequestRow)>, StoreError> {
    batch
        .iter()
        .map(|(request, _)| Ok((request, RequestRow::of(request)?)))
        .collect()
}

/// The audit entries of a batch's requests that were stored (all of an insert), in batch
/// order.
pub(crate) fn stored_audit(
    batch: &[(Request, Vec<NewAuditEntry>)],
    stored: impl Fn(usize) -> bool,
) -> Vec<NewAuditEntry> {
    batch
        .iter()
        .enumerate()
        .filter(|(i, _)| stored(*i))
        .flat_map(|(_, (_, audit))| audit.iter().cloned())
        .collect()
}

/// How an insert names its requests in a duplicate error.
pub(crate) fn batch_what(batch: &[(Request, Vec<NewAuditEntry>)]) -> String {
    match batch {
        [(one, _)] => format!("request {}", one.id),
        _ => "a request of the batch".to_owned(),
    }
}

/// Audit entries after `after`, in order, at most `limit`.
pub(crate) fn audit_after<'a, DB>(after: i64, limit: usize) -> QueryBuilder<'a, DB>
where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::<DB>::new(AUDIT_COLUMNS);
    query
        .push(" WHERE seq > ")
        .push_bind(after)
        .push(" ORDER BY seq LIMIT ")
        .push_bind(sql_limit(limit));
    query
}

/// A request's audit entries, in order.
pub(crate) fn audit_of<'a, DB>(request: &'a str) -> QueryBuilder<'a, DB>
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::<DB>::new(AUDIT_COLUMNS);
    query
        .push(" WHERE request = ")
        .push_bind(request)
        .push(" ORDER BY seq");
    query
}
