//! Where each conformance test runs: a fresh SQLite file in a temporary directory, or a fresh
//! schema (random name) in the PostgreSQL database of `TIDEGATE_TEST_POSTGRES_URL`, reached by
//! setting `search_path` in the URL's connection options. Both are removed after the test,
//! whether it passed or not.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::{Connection, PgConnection, SqliteConnection};
use tidegate_core::store::Store;

pub const POSTGRES_ENV: &str = "TIDEGATE_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// One test's database. Cheap to clone; the database goes away when the test ends.
#[derive(Clone)]
pub struct Db(Arc<Inner>);

struct Inner {
    kind: Kind,
    url: String,
    sqlite_path: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    pub fn kind(&self) -> Kind {
        self.0.kind
    }

    /// The URL to give `tidegate_store::open`.
    pub fn url(&self) -> &str {
        &self.0.url
    }

    pub fn sqlite_path(&self) -> Option<&Path> {
        self.0.sqlite_path.as_deref()
    }

    /// Opens a store (a pool of its own) on this database, running the migrations.
    pub async fn open(&self) -> Arc<dyn Store> {
        tidegate_store::open(self.url())
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.url()))
    }

    /// `SELECT COUNT(*) FROM table`, on a connection outside any store.
    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        match self.kind() {
            Kind::Sqlite => {
                let mut conn = SqliteConnection::connect(self.url()).await.unwrap();
                let n: i64 = sqlx::query_scalar(&sql).fetch_one(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                n
            }
            Kind::Postgres => {
                let mut conn = PgConnection::connect(self.url()).await.unwrap();
                let n: i64 = sqlx::query_scalar(&sql).fetch_one(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                n
            }
        }
    }
}

/// Runs `test` on a fresh SQLite file.
pub async fn run_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tidegate.db");
    let db = Db(Arc::new(Inner {
        kind: Kind::Sqlite,
        url: format!("sqlite://{}", path.display()),
        sqlite_path: Some(path),
        _dir: Some(dir),
    }));
    let outcome = tokio::spawn(test(db)).await;
    finish(outcome);
}

/// The PostgreSQL server to test against, or `None` (and a note) when there is none and this
/// is not CI. In CI a missing server is a failure, never a silent skip.
fn postgres_base() -> Option<String> {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!(
            "{POSTGRES_ENV} is not set, and CI is: the PostgreSQL conformance tests must run \
             in CI. Set it to a database where the tests may create schemas, e.g. \
             postgres://postgres@127.0.0.1:5432/test"
        ),
        _ => {
            eprintln!("skipped: {POSTGRES_ENV} is not set (set it to run the PostgreSQL tests)");
            None
        }
    }
}

/// Runs `test` in a fresh schema of the test PostgreSQL database, and drops the schema after.
pub async fn run_postgres<F, Fut>(test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(base) = postgres_base() else {
        return;
    };
    let schema = format!("tidegate_test_{:016x}", rand::random::<u64>());
    let mut admin = PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_ENV}: {e}"));
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    let db = Db(Arc::new(Inner {
        kind: Kind::Postgres,
        url: format!("{base}{separator}options=-c%20search_path%3D{schema}"),
        sqlite_path: None,
        _dir: None,
    }));
    let outcome = tokio::spawn(test(db)).await;
    // Do not wait long for a lock a failed test may have left behind.
    let _ = sqlx::query("SET lock_timeout = '10s'")
        .execute(&mut admin)
        .await;
    let dropped = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await;
    let _ = admin.close().await;
    finish(outcome);
    dropped.unwrap_or_else(|e| panic!("cannot drop test schema {schema}: {e}"));
}

fn finish(outcome: Result<(), tokio::task::JoinError>) {
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(payload) => std::panic::resume_unwind(payload),
            Err(e) => panic!("the test did not finish: {e}"),
        }
    }
}
