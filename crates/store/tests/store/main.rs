#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! The store conformance suite: every test in `suite` runs against SQLite (a temporary file
//! per test) and PostgreSQL (a schema per test in the database of
//! `TIDEGATE_TEST_POSTGRES_URL`; without it the PostgreSQL tests are skipped, or fail when
//! `CI` is set).

mod fixtures;
mod harness;
mod suite;

/// Declares each suite test once per backend: `sqlite::NAME` and `postgres::NAME`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::harness::run_sqlite(crate::suite::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::harness::run_postgres(crate::suite::$name).await;
                }
            )*
        }
    };
}

conformance!(
    request_round_trip,
    filters,
    optimistic_concurrency,
    concurrent_writers_keep_one_chain,
    audit_detail_is_kept_byte_for_byte,
    tokens,
    state_records,
    outbox,
    migrations_are_idempotent,
    migrations_run_concurrently,
    reopened_store_keeps_its_data,
    due_filter,
    due_at_follows_updates,
    next_due,
    batch_insert,
    batch_update_skips_a_stale_version,
    migration_backfills_due_at,
    overdue_count,
    migration_backfills_access_ends_at,
    counts_and_readiness,
    leader_lock,
    request_trail_and_token_removal,
    batch_timings,
    abandoned_writes_leave_no_lock,
);

#[tokio::test]
async fn urls_pick_the_backend_and_errors_hide_passwords() {
    let err = tidegate_store::open("mysql://root:hunter2@127.0.0.1/x")
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("sqlite://"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");

    // Nothing listens on port 1: the connection fails, and the message keeps the secret.
    let err = tidegate_store::open("postgres://tide:hunter2@127.0.0.1:1/tidegate")
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, tidegate_store::StoreError::Database(_)),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");

    let err = tidegate_store::open("postgres://tide:hunter2@127.0.0.1:5432/tidegate?sslmode=bogus")
        .await
        .err()
        .unwrap();
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
}

#[tokio::test]
async fn sqlite_in_memory_works() {
    let store = tidegate_store::open("sqlite::memory:").await.unwrap();
    let r = fixtures::full_request("r1");
    store.insert_request(&r, &[]).await.unwrap();
    assert_eq!(store.request("r1").await.unwrap(), Some(r));
}
