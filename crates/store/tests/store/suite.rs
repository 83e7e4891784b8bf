//! The conformance tests: each runs once per backend (see `main.rs`).

use std::sync::Arc;

use tidegate_core::audit::{self, AuditEntry};
use tidegate_core::request::{Request, State};
use tidegate_core::store::{ApiToken, RequestFilter, Store, StoreError};
use tidegate_store::{PostgresStore, SqliteStore};

use crate::fixtures::{entry, full_request, request, t0};
use crate::harness::{Db, Kind};

/// Every audit entry, oldest first, read in pages to exercise `after` and `limit`.
async fn all_audit(store: &dyn Store) -> Vec<AuditEntry> {
    let mut out: Vec<AuditEntry> = Vec::new();
    loop {
        let after = out.last().map_or(0, |e| e.seq);
        let page = store.audit(after, 50).await.unwrap();
        assert!(page.len() <= 50);
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// A concrete store, which can be closed.
enum Opened {
    Sqlite(SqliteStore),
    Postgres(Box<PostgresStore>),
}

impl Opened {
    async fn open(db: &Db) -> Opened {
        match db.kind() {
            Kind::Sqlite => Opened::Sqlite(SqliteStore::open(db.url()).await.unwrap()),
            Kind::Postgres => {
                Opened::Postgres(Box::new(PostgresStore::open(db.url()).await.unwrap()))
            }
        }
    }

    fn store(&self) -> &dyn Store {
        match self {
            Opened::Sqlite(s) => s,
            Opened::Postgres(s) => &**s,
        }
    }

    async fn migrate(&self) {
        match self {
            Opened::Sqlite(s) => s.migrate().await.unwrap(),
            Opened::Postgres(s) => s.migrate().await.unwrap(),
        }
    }

    async fn close(self) {
        match self {
            Opened::Sqlite(s) => s.close().await,
            Opened::Postgres(s) => s.close().await,
        }
    }
}

fn json(request: &Request) -> String {
    serde_json::to_string(request).unwrap()
}

fn ids(requests: &[Request]) -> Vec<&str> {
    requests.iter().map(|r| r.id.as_str()).collect()
}

pub async fn request_round_trip(db: Db) {
    let store = db.open().await;
    assert_eq!(store.request("r-full").await.unwrap(), None);

    let full = full_request("r-full");
    let created = vec![
        entry("request.created", Some("r-full"), r#"{"n":1}"#),
        entry("request.break_glass", Some("r-full"), "{}"),
    ];
    store.insert_request(&full, &created).await.unwrap();
    let read = store.request("r-full").await.unwrap().unwrap();
    assert_eq!(read, full);
    // Equal as instants is not enough: offsets and nanoseconds survive too.
    assert_eq!(json(&read), json(&full));
    assert_eq!(
        read.start_at.unwrap().offset(),
        full.start_at.unwrap().offset()
    );
    assert_eq!(read.created_at.nanosecond(), 123_456_789);

    let listed = store.requests(&RequestFilter::default()).await.unwrap();
    assert_eq!(listed, vec![full.clone()]);

    let log = all_audit(&*store).await;
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].action, "request.created");
    assert_eq!(log[1].action, "request.break_glass");
    audit::verify(&log).unwrap();

    // A second insert of the same id is a duplicate and writes no audit entry.
    let err = store
        .insert_request(&full, &[entry("request.created", Some("r-full"), "{}")])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Duplicate(_)), "{err:?}");
    assert!(err.to_string().contains("r-full"), "{err}");
    assert_eq!(all_audit(&*store).await, log);

    // A minimal request (every optional field empty) round-trips too.
    let plain = request("r-plain", "ssh", "bob@example.com", 1);
    store.insert_request(&plain, &[]).await.unwrap();
    let read = store.request("r-plain").await.unwrap().unwrap();
    assert_eq!(read, plain);
    assert_eq!(json(&read), json(&plain));
}

pub async fn filters(db: Db) {
    let store = db.open().await;
    let mut all = Vec::new();
    let mut add = |r: Request| all.push(r);
    // Created at minutes 0..7, inserted out of order below.
    add(request("a-pending", "ssh", "alice@example.com", 0));
    let mut r = request("b-active", "prod-db", "alice@example.com", 1);
    r.state = State::Active;
    r.tailnet.applied_at = Some(t0());
    add(r);
    let mut r = request("c-expired-unverified", "ssh", "bob@example.com", 2);
    r.state = State::Expired;
    r.tailnet.applied_at = Some(t0());
    add(r); // final, but its removal is not verified: still open
    let mut r = request("d-expired-verified", "prod-db", "bob@example.com", 3);
    r.state = State::Expired;
    r.tailnet.applied_at = Some(t0());
    r.tailnet.removal_verified_at = Some(t0());
    add(r);
    let mut r = request("e-denied", "ssh", "carol@example.com", 4);
    r.state = State::Denied;
    add(r); // final, never applied: closed
    let mut r = request("f-approved", "prod-db", "carol@example.com", 5);
    r.state = State::Approved;
    add(r);
    add(request("g-pending", "prod-db", "alice@example.com", 6));

    for i in [3, 0, 6, 1, 5, 2, 4] {
        store.insert_request(&all[i], &[]).await.unwrap();
    }
    let list = |filter: RequestFilter| {
        let store = Arc::clone(&store);
        async move {
            let found = store.requests(&filter).await.unwrap();
            found.iter().map(|r| r.id.clone()).collect::<Vec<_>>()
        }
    };

    let everything = list(RequestFilter::default()).await;
    assert_eq!(
        everything,
        [
            "g-pending",
            "f-approved",
            "e-denied",
            "d-expired-verified",
            "c-expired-unverified",
            "b-active",
            "a-pending"
        ],
        "newest first"
    );
    // The listed requests are whole.
    let full = store.requests(&RequestFilter::default()).await.unwrap();
    for r in &full {
        let want = all.iter().find(|w| w.id == r.id).unwrap();
        assert_eq!(r, want);
    }

    assert_eq!(
        list(RequestFilter {
            states: vec![State::Pending],
            ..Default::default()
        })
        .await,
        ["g-pending", "a-pending"]
    );
    assert_eq!(
        list(RequestFilter {
            states: vec![State::Expired, State::Denied, State::Active],
            ..Default::default()
        })
        .await,
        [
            "e-denied",
            "d-expired-verified",
            "c-expired-unverified",
            "b-active"
        ]
    );
    assert_eq!(
        list(RequestFilter {
            requester: Some("alice@example.com".into()),
            ..Default::default()
        })
        .await,
        ["g-pending", "b-active", "a-pending"]
    );
    assert_eq!(
        list(RequestFilter {
            entitlement: Some("prod-db".into()),
            ..Default::default()
        })
        .await,
        ["g-pending", "f-approved", "d-expired-verified", "b-active"]
    );
    assert_eq!(
        list(RequestFilter {
            open_only: true,
            ..Default::default()
        })
        .await,
        [
            "g-pending",
            "f-approved",
            "c-expired-unverified",
            "b-active",
            "a-pending"
        ]
    );
    assert_eq!(
        list(RequestFilter {
            limit: Some(2),
            ..Default::default()
        })
        .await,
        ["g-pending", "f-approved"]
    );
    assert!(
        list(RequestFilter {
            limit: Some(0),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    // Everything at once.
    assert_eq!(
        list(RequestFilter {
            states: vec![State::Pending, State::Active, State::Approved],
            requester: Some("alice@example.com".into()),
            entitlement: Some("prod-db".into()),
            open_only: true,
            limit: Some(1),
            due_before: None,
            overdue_at: None,
        })
        .await,
        ["g-pending"]
    );
    assert!(
        list(RequestFilter {
            requester: Some("nobody@example.com".into()),
            ..Default::default()
        })
        .await
        .is_empty()
    );

    // An update moves the filter columns with it.
    let mut g = store.request("g-pending").await.unwrap().unwrap();
    g.state = State::Cancelled;
    g.version += 1;
    store.update_request(&g, &[]).await.unwrap();
    assert_eq!(
        list(RequestFilter {
            states: vec![State::Pending],
            ..Default::default()
        })
        .await,
        ["a-pending"]
    );
    assert!(
        !list(RequestFilter {
            open_only: true,
            ..Default::default()
        })
        .await
        .contains(&"g-pending".to_owned())
    );
    assert_eq!(
        ids(&store
            .requests(&RequestFilter {
                states: vec![State::Cancelled],
                ..Default::default()
            })
            .await
            .unwrap()),
        ["g-pending"]
    );
}

pub async fn optimistic_concurrency(db: Db) {
    let store = db.open().await;
    let r = request("r1", "ssh", "alice@example.com", 0);
    store
        .insert_request(&r, &[entry("request.created", Some("r1"), "{}")])
        .await
        .unwrap();
    let log_before = all_audit(&*store).await;

    // Two writers read the same version and both change it.
    let read = store.request("r1").await.unwrap().unwrap();
    let mut approve = read.clone();
    approve.state = State::Approved;
    approve.version += 1;
    let mut cancel = read.clone();
    cancel.state = State::Cancelled;
    cancel.end_reason = Some("cancelled by the requester".into());
    cancel.version += 1;

    store
        .update_request(
            &approve,
            &[entry("request.approved", Some("r1"), r#"{"by":"bob"}"#)],
        )
        .await
        .unwrap();
    let err = store
        .update_request(
            &cancel,
            &[
                entry("request.cancelled", Some("r1"), "{}"),
                entry("request.note", Some("r1"), "{}"),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::Conflict("r1".into()));

    // The loser wrote nothing: the request is the winner's, the log has only its entry.
    assert_eq!(store.request("r1").await.unwrap().unwrap(), approve);
    let log = all_audit(&*store).await;
    assert_eq!(log.len(), log_before.len() + 1);
    assert_eq!(log.last().unwrap().action, "request.approved");
    audit::verify(&log).unwrap();

    // Skipping a version, repeating one, or updating a request that does not exist: conflict.
    let mut skip = approve.clone();
    skip.version += 2;
    assert!(matches!(
        store.update_request(&skip, &[]).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.update_request(&approve, &[]).await,
        Err(StoreError::Conflict(_))
    ));
    let mut ghost = request("ghost", "ssh", "alice@example.com", 0);
    ghost.version = 1;
    assert!(matches!(
        store
            .update_request(&ghost, &[entry("x", Some("ghost"), "{}")])
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(all_audit(&*store).await, log);
    assert_eq!(store.request("ghost").await.unwrap(), None);

    // The winner's next version goes through.
    let mut next = approve.clone();
    next.state = State::Active;
    next.version += 1;
    store
        .update_request(&next, &[entry("grant.applied", Some("r1"), "{}")])
        .await
        .unwrap();
    assert_eq!(store.request("r1").await.unwrap().unwrap().version, 2);
}

/// Several tasks on two stores (two pools, as two processes would have) update requests
/// (re-reading on conflict) and append to the log at the same time. The chain stays one
/// chain, seqs have no gaps, every update counts once, and each request's entries are in
/// version order.
pub async fn concurrent_writers_keep_one_chain(db: Db) {
    const REQUESTS: usize = 3;
    const UPDATERS: usize = 6;
    const UPDATES_EACH: usize = 12;
    const APPENDERS: usize = 3;
    const APPENDS_EACH: usize = 12;
    const BATCH: usize = 3;

    let stores = [db.open().await, db.open().await];
    for i in 0..REQUESTS {
        let id = format!("r{i}");
        stores[0]
            .insert_request(
                &request(&id, "ssh", "alice@example.com", i as i64),
                &[entry("request.created", Some(&id), "{}")],
            )
            .await
            .unwrap();
    }

    let mut tasks = tokio::task::JoinSet::new();
    for u in 0..UPDATERS {
        let store = Arc::clone(&stores[u % 2]);
        tasks.spawn(async move {
            let mut conflicts = 0;
            for n in 0..UPDATES_EACH {
                let id = format!("r{}", (u + n) % REQUESTS);
                loop {
                    let mut r = store.request(&id).await.unwrap().unwrap();
                    r.tailnet.attempts += 1;
                    r.version += 1;
                    let detail = format!(r#"{{"version":{}}}"#, r.version);
                    match store
                        .update_request(&r, &[entry("grant.retry", Some(&id), &detail)])
                        .await
                    {
                        Ok(()) => break,
                        Err(StoreError::Conflict(_)) => conflicts += 1,
                        Err(e) => panic!("update {id}: {e}"),
                    }
                }
            }
            conflicts
        });
    }
    for a in 0..APPENDERS {
        let store = Arc::clone(&stores[a % 2]);
        tasks.spawn(async move {
            for n in 0..APPENDS_EACH {
                let batch: Vec<_> = (0..BATCH)
                    .map(|b| entry("note", None, &format!(r#"{{"a":{a},"n":{n},"b":{b}}}"#)))
                    .collect();
                let written = store.append_audit(&batch).await.unwrap();
                assert_eq!(written.len(), BATCH);
                for pair in written.windows(2) {
                    assert_eq!(pair[1].seq, pair[0].seq + 1, "a batch is contiguous");
                    assert_eq!(pair[1].prev_hash, pair[0].hash);
                }
            }
            0
        });
    }
    let mut conflicts = 0;
    while let Some(done) = tasks.join_next().await {
        conflicts += done.unwrap();
    }
    println!("{:?}: {conflicts} conflicts retried", db.kind());

    let log = all_audit(&*stores[1]).await;
    let expected = REQUESTS + UPDATERS * UPDATES_EACH + APPENDERS * APPENDS_EACH * BATCH;
    assert_eq!(log.len(), expected);
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1, "seqs are 1, 2, 3 ... without gaps");
    }
    audit::verify(&log).unwrap();

    let mut total = 0;
    for i in 0..REQUESTS {
        let id = format!("r{i}");
        let r = stores[0].request(&id).await.unwrap().unwrap();
        assert_eq!(
            r.version,
            i64::from(r.tailnet.attempts),
            "no update was lost"
        );
        total += r.version;
        let versions: Vec<String> = log
            .iter()
            .filter(|e| e.action == "grant.retry" && e.request.as_deref() == Some(&id))
            .map(|e| e.detail.clone())
            .collect();
        let want: Vec<String> = (1..=r.version)
            .map(|v| format!(r#"{{"version":{v}}}"#))
            .collect();
        assert_eq!(versions, want, "{id}'s entries are in version order");
    }
    assert_eq!(total as usize, UPDATERS * UPDATES_EACH);
}

pub async fn audit_detail_is_kept_byte_for_byte(db: Db) {
    let store = db.open().await;
    assert!(store.append_audit(&[]).await.unwrap().is_empty());
    assert!(all_audit(&*store).await.is_empty());

    let details = [
        "{}",
        "{ }",
        "{\n  \"b\": 1,\n  \"a\": [1, 2.50, 1e3, -0.0, 12345678901234567890123]\n}",
        r#"{"z":1,"a":2,"z":3}"#,
        r#"{"text":"ünïcödé ✓ 🚀 \u00e9 \ud83d\ude80 \" \\ \/ \n \t","nul":"\u0000"}"#,
        "  {\"padded\": true}\t\r\n",
        "[null,true,false]",
        "\"just a string\"",
        "",
    ];
    let mut entries = Vec::new();
    for (i, d) in details.iter().enumerate() {
        let mut e = entry("detail.test", None, d);
        e.request = (i % 2 == 0).then(|| format!("r{i}"));
        e.at = format!("2026-11-22T10:00:0{i}.5+01:00");
        e.actor = format!("actor-{i} ✓");
        entries.push(e);
    }
    let written = store.append_audit(&entries[..4]).await.unwrap();
    let written2 = store.append_audit(&entries[4..]).await.unwrap();
    let written: Vec<AuditEntry> = written.into_iter().chain(written2).collect();

    let read = all_audit(&*store).await;
    assert_eq!(
        read, written,
        "what append_audit returned is what is stored"
    );
    assert_eq!(read.len(), details.len());
    for ((got, want), e) in read.iter().zip(details).zip(&entries) {
        assert_eq!(got.detail.as_bytes(), want.as_bytes());
        assert_eq!(got.at, e.at);
        assert_eq!(got.actor, e.actor);
        assert_eq!(got.request, e.request);
    }
    assert_eq!(read[0].prev_hash, audit::GENESIS);
    audit::verify(&read).unwrap();

    // Paging: after and limit.
    let page = store.audit(3, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [4, 5],
        "entries after seq 3, at most 2"
    );
    assert!(store.audit(100, 10).await.unwrap().is_empty());
    assert!(store.audit(0, 0).await.unwrap().is_empty());
}

pub async fn tokens(db: Db) {
    let store = db.open().await;
    let token = ApiToken {
        hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        user: "alice@example.com".into(),
        description: "laptop CLI — ünïcödé".into(),
        created_at: "2026-11-22T10:00:00Z".into(),
        expires_at: Some("2027-11-22T10:00:00Z".into()),
        kind: Default::default(),
        last_used_at: None,
    };
    let forever = ApiToken {
        hash: "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752".into(),
        user: "ci@example.com".into(),
        description: String::new(),
        created_at: "2026-11-22T11:00:00.123+02:00".into(),
        expires_at: None,
        kind: Default::default(),
        last_used_at: None,
    };
    assert_eq!(store.token(&token.hash).await.unwrap(), None);
    store.insert_token(&token).await.unwrap();
    store.insert_token(&forever).await.unwrap();
    assert_eq!(store.token(&token.hash).await.unwrap(), Some(token.clone()));
    assert_eq!(store.token(&forever.hash).await.unwrap(), Some(forever));

    let mut again = token.clone();
    again.user = "mallory@example.com".into();
    let err = store.insert_token(&again).await.unwrap_err();
    assert!(matches!(err, StoreError::Duplicate(_)), "{err:?}");
    assert_eq!(store.token(&token.hash).await.unwrap(), Some(token.clone()));
    assert_eq!(store.token("0000").await.unwrap(), None);

    // A user's tokens and sessions, newest first, with their kind; last use to the minute.
    let session = ApiToken {
        hash: "ab".repeat(32),
        created_at: "2026-11-23T10:00:00Z".into(),
        kind: tidegate_core::store::TokenKind::Session,
        ..token.clone()
    };
    store.insert_token(&session).await.unwrap();
    let mine = store.tokens_of("alice@example.com").await.unwrap();
    assert_eq!(mine, [session.clone(), token.clone()]);
    assert!(
        store
            .tokens_of("nobody@example.com")
            .await
            .unwrap()
            .is_empty()
    );
    store
        .touch_token(&token.hash, "2026-11-24T10:00:00Z", "2026-11-24T09:59:00Z")
        .await
        .unwrap();
    let used = store.token(&token.hash).await.unwrap().unwrap();
    assert_eq!(used.last_used_at.as_deref(), Some("2026-11-24T10:00:00Z"));
    // Used again within the minute: not written.
    store
        .touch_token(&token.hash, "2026-11-24T10:00:30Z", "2026-11-24T09:59:30Z")
        .await
        .unwrap();
    let used = store.token(&token.hash).await.unwrap().unwrap();
    assert_eq!(used.last_used_at.as_deref(), Some("2026-11-24T10:00:00Z"));
    assert!(store.delete_token(&session.hash).await.unwrap());
    assert_eq!(store.tokens_of("alice@example.com").await.unwrap().len(), 1);
}

/// Named state records: written, replaced, and listed by an exact prefix (`%` and `_` are
/// not wildcards).
pub async fn state_records(db: Db) {
    let store = db.open().await;
    assert_eq!(store.get_state("group:a").await.unwrap(), None);
    store
        .put_state("group:a", "{\"standing\":[]}", "2026-11-22T10:00:00Z")
        .await
        .unwrap();
    store
        .put_state("group:a", "{\"standing\":[\"x\"]}", "2026-11-22T10:01:00Z")
        .await
        .unwrap();
    store
        .put_state("group:a_b", "2", "2026-11-22T10:00:00Z")
        .await
        .unwrap();
    store
        .put_state("groupXa", "3", "2026-11-22T10:00:00Z")
        .await
        .unwrap();
    store
        .put_state("chain", "4", "2026-11-22T10:00:00Z")
        .await
        .unwrap();
    assert_eq!(
        store.get_state("group:a").await.unwrap().as_deref(),
        Some("{\"standing\":[\"x\"]}")
    );
    let groups = store.states("group:").await.unwrap();
    let keys: Vec<&str> = groups.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["group:a", "group:a_b"]);
    assert_eq!(store.states("group:a_").await.unwrap().len(), 1);
    assert_eq!(store.states("group%").await.unwrap().len(), 0);
    assert_eq!(store.count_states("group:").await.unwrap(), 2);
    assert_eq!(store.count_states("group:a_").await.unwrap(), 1);
    assert_eq!(store.count_states("group%").await.unwrap(), 0);
    assert!(store.claim_state("once:x", "1", "t").await.unwrap());
    assert!(
        !store.claim_state("once:x", "2", "t").await.unwrap(),
        "claimed once"
    );
    assert_eq!(
        store.get_state("once:x").await.unwrap().as_deref(),
        Some("1")
    );
    assert!(store.delete_state("group:a_b").await.unwrap());
    assert!(
        !store.delete_state("group:a_b").await.unwrap(),
        "already gone"
    );
    assert_eq!(store.states("group:").await.unwrap().len(), 1);
}

/// Opening runs the migrations; opening again (and migrating again) changes nothing.
pub async fn migrations_are_idempotent(db: Db) {
    let first = db.open().await;
    first
        .insert_request(
            &full_request("r1"),
            &[entry("request.created", Some("r1"), "{}")],
        )
        .await
        .unwrap();
    let migrations = db.count("_sqlx_migrations").await;
    assert!(migrations >= 1);

    let second = db.open().await;
    let third = Opened::open(&db).await;
    third.migrate().await;
    third.migrate().await;
    third.close().await;
    assert_eq!(db.count("_sqlx_migrations").await, migrations);
    assert_eq!(
        second.request("r1").await.unwrap().unwrap(),
        full_request("r1")
    );
    assert_eq!(all_audit(&*second).await.len(), 1);
    // The chain goes on where it was.
    let more = second
        .append_audit(&[entry("note", None, "{}")])
        .await
        .unwrap();
    assert_eq!(more[0].seq, 2);
    audit::verify(&all_audit(&*first).await).unwrap();
}

/// Several processes starting at once on an empty database: one migrates, the others wait and
/// find nothing to do; all of them work.
pub async fn migrations_run_concurrently(db: Db) {
    const POOLS: usize = 4;
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..POOLS {
        let url = db.url().to_owned();
        opening.spawn(async move { tidegate_store::open(&url).await });
    }
    let mut stores = Vec::new();
    while let Some(opened) = opening.join_next().await {
        stores.push(opened.unwrap().unwrap());
    }
    assert_eq!(stores.len(), POOLS);
    let migrations = std::fs::read_dir(match db.kind() {
        Kind::Sqlite => concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"),
        Kind::Postgres => concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"),
    })
    .unwrap()
    .count();
    assert_eq!(db.count("_sqlx_migrations").await, migrations as i64);
    for (i, store) in stores.iter().enumerate() {
        let written = store
            .append_audit(&[entry("note", None, &format!("{{\"pool\":{i}}}"))])
            .await
            .unwrap();
        assert_eq!(written[0].seq, i as i64 + 1);
    }
    audit::verify(&all_audit(&*stores[0]).await).unwrap();
}

/// Data outlives the store: a new store on the same database (for SQLite, the same file,
/// which the first open created) sees everything.
pub async fn reopened_store_keeps_its_data(db: Db) {
    if let Some(path) = db.sqlite_path() {
        assert!(!path.exists());
    }
    let token = ApiToken {
        hash: "abc".into(),
        user: "alice@example.com".into(),
        description: "t".into(),
        created_at: "2026-11-22T10:00:00Z".into(),
        expires_at: None,
        kind: Default::default(),
        last_used_at: None,
    };
    let log = {
        let opened = Opened::open(&db).await;
        let store = opened.store();
        if let Some(path) = db.sqlite_path() {
            assert!(path.exists(), "the SQLite file is created");
        }
        store
            .insert_request(
                &full_request("r1"),
                &[entry("request.created", Some("r1"), r#"{"x": 1}"#)],
            )
            .await
            .unwrap();
        let mut r = request("r2", "ssh", "bob@example.com", 1);
        store.insert_request(&r, &[]).await.unwrap();
        r.state = State::Approved;
        r.version = 1;
        store
            .update_request(&r, &[entry("request.approved", Some("r2"), "{}")])
            .await
            .unwrap();
        store.insert_token(&token).await.unwrap();
        let log = all_audit(store).await;
        opened.close().await;
        log
    };

    let store = db.open().await;
    assert_eq!(
        store.request("r1").await.unwrap().unwrap(),
        full_request("r1")
    );
    let r2 = store.request("r2").await.unwrap().unwrap();
    assert_eq!((r2.state, r2.version), (State::Approved, 1));
    assert_eq!(
        ids(&store.requests(&RequestFilter::default()).await.unwrap()),
        ["r2", "r1"]
    );
    assert_eq!(store.token("abc").await.unwrap(), Some(token));
    assert_eq!(all_audit(&*store).await, log);
    let next = store
        .append_audit(&[entry("note", None, "{}")])
        .await
        .unwrap();
    assert_eq!(next[0].seq, 3);
    assert_eq!(next[0].prev_hash, log[1].hash);
}

fn minutes(n: i64) -> time::Duration {
    time::Duration::minutes(n)
}

/// The ids of the requests due by `before`, in the order listed.
async fn due_ids(store: &dyn Store, before: time::OffsetDateTime) -> Vec<String> {
    let found = store
        .requests(&RequestFilter {
            due_before: Some(before),
            ..Default::default()
        })
        .await
        .unwrap();
    found.iter().map(|r| r.id.clone()).collect()
}

/// One request in each situation the reconciler cares about, with `due_at` as computed by core.
fn due_fixtures() -> Vec<Request> {
    let mut all = Vec::new();
    // Pending: due when its TTL ends (created + 24 h).
    all.push(request("pending", "ssh", "alice@example.com", 0));
    let mut r = request("approved-later", "ssh", "alice@example.com", 1);
    r.state = State::Approved;
    r.start_at = Some(t0() + minutes(120));
    all.push(r);
    let mut r = request("approved-now", "prod-db", "bob@example.com", 2);
    r.state = State::Approved;
    all.push(r); // no start: due at creation
    let mut r = request("active", "ssh", "bob@example.com", 3);
    r.state = State::Active;
    r.tailnet.applied_at = Some(t0());
    r.tailnet.applied_until = Some(t0() + minutes(180));
    r.expires_at = Some(t0() + minutes(180));
    all.push(r);
    let mut r = request("active-moved", "ssh", "carol@example.com", 4);
    r.state = State::Active;
    r.tailnet.applied_at = Some(t0());
    r.tailnet.applied_until = Some(t0() + minutes(60));
    r.expires_at = Some(t0() + minutes(300));
    all.push(r); // its expiry moved: due at once
    let mut r = request("ended-unverified", "prod-db", "carol@example.com", 5);
    r.state = State::Expired;
    r.tailnet.applied_at = Some(t0());
    r.ended_at = Some(t0() + minutes(30));
    all.push(r);
    let mut r = request("ended-verified", "ssh", "dave@example.com", 6);
    r.state = State::Expired;
    r.tailnet.applied_at = Some(t0());
    r.tailnet.removal_verified_at = Some(t0() + minutes(31));
    r.ended_at = Some(t0() + minutes(30));
    all.push(r); // closed
    let mut r = request("denied", "ssh", "dave@example.com", 7);
    r.state = State::Denied;
    all.push(r); // closed
    all
}

/// What the due filter must return: open requests with `due_at <= before`, oldest due first.
fn expected_due(all: &[Request], before: time::OffsetDateTime) -> Vec<String> {
    let mut due: Vec<(time::OffsetDateTime, &str)> = all
        .iter()
        .filter_map(|r| r.due_at().map(|d| (d, r.id.as_str())))
        .filter(|(d, _)| *d <= before)
        .collect();
    due.sort();
    due.into_iter().map(|(_, id)| id.to_owned()).collect()
}

pub async fn due_filter(db: Db) {
    let store = db.open().await;
    let all = due_fixtures();
    assert_eq!(all[6].due_at(), None);
    assert_eq!(all[7].due_at(), None);
    for r in all.iter().rev() {
        store.insert_request(r, &[]).await.unwrap();
    }

    assert!(due_ids(&*store, t0() - minutes(1)).await.is_empty());
    assert_eq!(
        due_ids(&*store, t0() + minutes(4)).await,
        ["approved-now", "active-moved"],
        "oldest due first"
    );
    // Exactly at a due time (nanoseconds included) is due.
    assert_eq!(
        due_ids(&*store, t0() + minutes(120)).await,
        [
            "approved-now",
            "active-moved",
            "ended-unverified",
            "approved-later"
        ]
    );
    assert_eq!(
        due_ids(&*store, t0() + minutes(120) - time::Duration::seconds(1)).await,
        ["approved-now", "active-moved", "ended-unverified"]
    );
    // Every boundary, and far in the future: never a closed request.
    let mut befores: Vec<_> = all.iter().filter_map(Request::due_at).collect();
    befores.push(t0() + time::Duration::days(365));
    for before in befores {
        assert_eq!(
            due_ids(&*store, before).await,
            expected_due(&all, before),
            "due by {before}"
        );
    }
    assert_eq!(
        due_ids(&*store, t0() + time::Duration::days(365))
            .await
            .len(),
        6
    );

    // With the other filters.
    let found = store
        .requests(&RequestFilter {
            due_before: Some(t0() + time::Duration::days(2)),
            states: vec![State::Active, State::Pending, State::Denied],
            requester: Some("bob@example.com".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&found), ["active"]);
    let found = store
        .requests(&RequestFilter {
            due_before: Some(t0() + time::Duration::days(2)),
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&found), ["approved-now", "active-moved"]);
    // The listed requests are whole.
    assert_eq!(found[0], all[2]);
}

pub async fn due_at_follows_updates(db: Db) {
    let store = db.open().await;
    let mut r = request("r1", "ssh", "alice@example.com", 0);
    store.insert_request(&r, &[]).await.unwrap();
    let at = t0() + minutes(60);
    assert!(due_ids(&*store, at).await.is_empty(), "due in 24 h");
    assert_same_time(
        &db,
        store.next_due().await.unwrap().unwrap(),
        r.pending_until,
    );

    r.state = State::Approved;
    r.start_at = Some(t0() + minutes(30));
    r.version += 1;
    store.update_request(&r, &[]).await.unwrap();
    assert_eq!(due_ids(&*store, at).await, ["r1"]);

    r.state = State::Active;
    r.tailnet.applied_at = Some(t0() + minutes(30));
    r.expires_at = Some(t0() + minutes(90));
    r.version += 1;
    let stored = store
        .update_requests(&[(r.clone(), vec![entry("grant.applied", Some("r1"), "{}")])])
        .await
        .unwrap();
    assert_eq!(stored, [true]);
    assert!(due_ids(&*store, at).await.is_empty());
    assert_eq!(due_ids(&*store, t0() + minutes(90)).await, ["r1"]);

    // Ended: due at once until the removal is verified, then never again.
    r.state = State::Expired;
    r.ended_at = Some(t0() + minutes(90));
    r.version += 1;
    store.update_request(&r, &[]).await.unwrap();
    assert_eq!(due_ids(&*store, t0() + minutes(90)).await, ["r1"]);
    r.tailnet.removal_verified_at = Some(t0() + minutes(91));
    r.version += 1;
    store.update_request(&r, &[]).await.unwrap();
    assert!(
        due_ids(&*store, t0() + time::Duration::days(365))
            .await
            .is_empty()
    );
    assert_eq!(store.next_due().await.unwrap(), None);
    // A conflicting update leaves due_at alone.
    let mut stale = r.clone();
    stale.state = State::Active;
    stale.tailnet.removal_verified_at = None;
    assert!(matches!(
        store.update_request(&stale, &[]).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.next_due().await.unwrap(), None);
}

/// `got` is `want`; PostgreSQL keeps microseconds, so there within a microsecond.
fn assert_same_time(db: &Db, got: time::OffsetDateTime, want: time::OffsetDateTime) {
    match db.kind() {
        Kind::Sqlite => assert_eq!(got, want),
        Kind::Postgres => assert!(
            (got - want).abs() < time::Duration::microseconds(1),
            "{got} is not {want}"
        ),
    }
}

pub async fn next_due(db: Db) {
    let store = db.open().await;
    assert_eq!(store.next_due().await.unwrap(), None);
    let mut all = due_fixtures();
    // Closed requests and requests due later only: the earliest open one counts.
    all.retain(|r| !matches!(r.id.as_str(), "approved-now" | "active-moved"));
    let batch: Vec<_> = all.iter().map(|r| (r.clone(), Vec::new())).collect();
    store.insert_requests(&batch).await.unwrap();
    let ended = all.iter().find(|r| r.id == "ended-unverified").unwrap();
    let want = ended.due_at().unwrap();
    let next = store.next_due().await.unwrap().unwrap();
    assert_same_time(&db, next, want);
    // What next_due says is due, the due filter finds.
    assert_eq!(due_ids(&*store, next).await, ["ended-unverified"]);

    // Its removal verified: the next one is the approved start.
    let mut ended = ended.clone();
    ended.tailnet.removal_verified_at = Some(t0() + minutes(40));
    ended.version += 1;
    store.update_request(&ended, &[]).await.unwrap();
    let next = store.next_due().await.unwrap().unwrap();
    assert_same_time(&db, next, t0() + minutes(120));
}

pub async fn batch_insert(db: Db) {
    const N: usize = 10_000;
    let store = db.open().await;
    store.insert_requests(&[]).await.unwrap();
    assert!(all_audit(&*store).await.is_empty());
    let batch: Vec<_> = (0..N)
        .map(|i| {
            let id = format!("r{i:05}");
            let mut audit = vec![entry(
                "request.created",
                Some(&id),
                &format!("{{\"i\":{i}}}"),
            )];
            if i % 3 == 0 {
                audit.push(entry("request.note", Some(&id), "{}"));
            }
            (
                request(&id, "ssh", "alice@example.com", i as i64 % 1000),
                audit,
            )
        })
        .collect();
    store.insert_requests(&batch).await.unwrap();
    assert_eq!(db.count("requests").await, N as i64);

    let log = all_audit(&*store).await;
    let want: Vec<(Option<String>, &str)> = batch
        .iter()
        .flat_map(|(_, audit)| audit.iter())
        .map(|e| (e.request.clone(), e.detail.as_str()))
        .collect();
    assert_eq!(log.len(), want.len());
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1);
        assert_eq!(
            (e.request.clone(), e.detail.as_str()),
            want[i],
            "batch order"
        );
    }
    audit::verify(&log).unwrap();
    assert_eq!(
        store.request("r04321").await.unwrap().unwrap(),
        batch[4321].0
    );
    assert_eq!(
        due_ids(&*store, t0() + time::Duration::days(2)).await.len(),
        N
    );

    // A duplicate anywhere in a batch: nothing of it is written.
    let more: Vec<_> = ["n1", "r00007", "n2"]
        .iter()
        .map(|id| {
            (
                request(id, "ssh", "bob@example.com", 0),
                vec![entry("request.created", Some(id), "{}")],
            )
        })
        .collect();
    let err = store.insert_requests(&more).await.unwrap_err();
    assert!(matches!(err, StoreError::Duplicate(_)), "{err:?}");
    assert_eq!(db.count("requests").await, N as i64);
    assert_eq!(store.request("n1").await.unwrap(), None);
    assert_eq!(all_audit(&*store).await.len(), log.len());
    // And the chain goes on after the batch.
    let next = store
        .append_audit(&[entry("note", None, "{}")])
        .await
        .unwrap();
    assert_eq!(next[0].seq, log.len() as i64 + 1);
    assert_eq!(next[0].prev_hash, log.last().unwrap().hash);
}

pub async fn batch_update_skips_a_stale_version(db: Db) {
    const N: usize = 300;
    const STALE: usize = 137;
    let store = db.open().await;
    let batch: Vec<_> = (0..N)
        .map(|i| {
            let id = format!("r{i:03}");
            (
                request(&id, "ssh", "alice@example.com", i as i64),
                vec![entry("request.created", Some(&id), "{}")],
            )
        })
        .collect();
    store.insert_requests(&batch).await.unwrap();
    // Someone else changes one of them first.
    let mut other = batch[STALE].0.clone();
    other.state = State::Cancelled;
    other.version += 1;
    store
        .update_request(&other, &[entry("request.cancelled", Some(&other.id), "{}")])
        .await
        .unwrap();
    let before = all_audit(&*store).await;

    // Every request approved from the version read before, newest first (not id order), and
    // one that does not exist.
    let mut updates: Vec<_> = batch
        .iter()
        .rev()
        .map(|(r, _)| {
            let mut r = r.clone();
            r.state = State::Approved;
            r.start_at = Some(t0() + minutes(10));
            r.version += 1;
            let audit = vec![
                entry("request.approved", Some(&r.id), "{\"n\":1}"),
                entry("request.approved", Some(&r.id), "{\"n\":2}"),
            ];
            (r, audit)
        })
        .collect();
    let mut ghost = request("ghost", "ssh", "alice@example.com", 0);
    ghost.version = 1;
    updates.insert(10, (ghost, vec![entry("x", Some("ghost"), "{}")]));
    let stored = store.update_requests(&updates).await.unwrap();
    assert_eq!(stored.len(), updates.len());
    for ((r, _), ok) in updates.iter().zip(&stored) {
        let skipped = r.id == "ghost" || r.id == other.id;
        assert_eq!(*ok, !skipped, "{}", r.id);
    }

    // The stale one and the ghost are untouched, the others stored.
    assert_eq!(store.request(&other.id).await.unwrap().unwrap(), other);
    assert_eq!(store.request("ghost").await.unwrap(), None);
    for (r, _) in &updates {
        if r.id != "ghost" && r.id != other.id {
            assert_eq!(&store.request(&r.id).await.unwrap().unwrap(), r);
        }
    }
    assert_eq!(
        due_ids(&*store, t0() + minutes(10)).await.len(),
        N - 1,
        "due_at moved with the update"
    );

    // The entries of the stored ones follow the chain, contiguous and in batch order.
    let log = all_audit(&*store).await;
    audit::verify(&log).unwrap();
    assert_eq!(&log[..before.len()], &before[..]);
    let new = &log[before.len()..];
    let want: Vec<(Option<String>, String)> = updates
        .iter()
        .zip(&stored)
        .filter(|(_, ok)| **ok)
        .flat_map(|((_, audit), _)| audit.iter())
        .map(|e| (e.request.clone(), e.detail.clone()))
        .collect();
    assert_eq!(new.len(), 2 * (N - 1));
    let got: Vec<(Option<String>, String)> = new
        .iter()
        .map(|e| (e.request.clone(), e.detail.clone()))
        .collect();
    assert_eq!(got, want);
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1);
    }

    // A batch where nothing is stored writes nothing.
    let stored = store.update_requests(&updates[..3]).await.unwrap();
    assert_eq!(stored, [false, false, false]);
    assert_eq!(all_audit(&*store).await.len(), log.len());
    assert!(store.update_requests(&[]).await.unwrap().is_empty());
}

/// Migrates a fresh database only up to (not including) migration `below`, and stores `rows`
/// (request, open flag) with the columns that existed then.
async fn store_before_migration(db: &Db, below: i64, rows: &[(&Request, bool)]) {
    use sqlx::migrate::Migrator;

    let dir = match db.kind() {
        Kind::Sqlite => concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"),
        Kind::Postgres => concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"),
    };
    let mut old = Migrator::new(std::path::Path::new(dir)).await.unwrap();
    old.migrations = old
        .migrations
        .iter()
        .filter(|m| m.version < below)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    assert!(!old.migrations.is_empty());
    let created = |t: time::OffsetDateTime| {
        let t = t.to_offset(time::UtcOffset::UTC);
        format!(
            "{}.{:09}Z",
            t.format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]"
            ))
            .unwrap(),
            t.nanosecond()
        )
    };
    match db.kind() {
        Kind::Sqlite => {
            let conn = sqlx::SqlitePool::connect(&format!("{}?mode=rwc", db.url()))
                .await
                .unwrap();
            old.run(&conn).await.unwrap();
            for (r, is_open) in rows {
                sqlx::query(
                    "INSERT INTO requests (id, entitlement, requester, state, is_open, version, \
                     created_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&r.id)
                .bind(&r.entitlement)
                .bind(&r.requester)
                .bind(r.state.as_str())
                .bind(is_open)
                .bind(r.version)
                .bind(created(r.created_at))
                .bind(json(r))
                .execute(&conn)
                .await
                .unwrap();
            }
            conn.close().await;
        }
        Kind::Postgres => {
            let conn = sqlx::PgPool::connect(db.url()).await.unwrap();
            old.run(&conn).await.unwrap();
            for (r, is_open) in rows {
                sqlx::query(
                    "INSERT INTO requests (id, entitlement, requester, state, is_open, version, \
                     created_at, body) VALUES ($1, $2, $3, $4, $5, $6, CAST($7 AS TIMESTAMPTZ), $8)",
                )
                .bind(&r.id)
                .bind(&r.entitlement)
                .bind(&r.requester)
                .bind(r.state.as_str())
                .bind(is_open)
                .bind(r.version)
                .bind(created(r.created_at))
                .bind(json(r))
                .execute(&conn)
                .await
                .unwrap();
            }
            conn.close().await;
        }
    }
}

/// A database written before `due_at` existed: the migration makes every open request due at
/// once (at its creation), and the next write stores its real due time.
pub async fn migration_backfills_due_at(db: Db) {
    let open = request("open", "ssh", "alice@example.com", 0);
    let mut closed = request("closed", "ssh", "alice@example.com", 1);
    closed.state = State::Denied;
    store_before_migration(&db, 20261122000001, &[(&open, true), (&closed, false)]).await;

    let store = db.open().await;
    // Due at creation, though core would say in 24 h; the closed one never.
    assert_eq!(due_ids(&*store, t0()).await, ["open"]);
    assert_same_time(&db, store.next_due().await.unwrap().unwrap(), t0());
    assert_eq!(
        due_ids(&*store, t0() + time::Duration::days(365)).await,
        ["open"]
    );
    // Looked at and saved again: due when core says.
    let mut r = store.request("open").await.unwrap().unwrap();
    assert_eq!(r, open);
    r.version += 1;
    store.update_request(&r, &[]).await.unwrap();
    assert!(due_ids(&*store, t0() + minutes(60)).await.is_empty());
    assert_same_time(
        &db,
        store.next_due().await.unwrap().unwrap(),
        open.pending_until,
    );
}

/// The overdue count and the overdue filter the store gives are [`Request::overdue`] over the
/// stored requests.
async fn assert_overdue_counts(store: &dyn Store, all: &[Request]) {
    let mut times: Vec<_> = all.iter().filter_map(Request::access_ends_at).collect();
    times.extend(
        times
            .clone()
            .iter()
            .map(|t| *t - time::Duration::seconds(1)),
    );
    times.push(t0() - time::Duration::days(1));
    times.push(t0() + time::Duration::days(365));
    for now in times {
        let mut want: Vec<&str> = all
            .iter()
            .filter(|r| r.overdue(now))
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(
            store.count_overdue(now).await.unwrap(),
            want.len() as u64,
            "overdue at {now}"
        );
        let listed = store
            .requests(&RequestFilter {
                overdue_at: Some(now),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut got = ids(&listed);
        got.sort();
        want.sort();
        assert_eq!(got, want, "overdue at {now}");
    }
}

pub async fn overdue_count(db: Db) {
    let store = db.open().await;
    let all = due_fixtures();
    for r in &all {
        store.insert_request(r, &[]).await.unwrap();
    }
    // "active" is overdue from its expiry (t0 + 180 min), "ended-unverified" from its end.
    assert_eq!(store.count_overdue(t0()).await.unwrap(), 0);
    assert_eq!(store.count_overdue(t0() + minutes(30)).await.unwrap(), 1);
    assert_eq!(store.count_overdue(t0() + minutes(300)).await.unwrap(), 3);
    assert_overdue_counts(&*store, &all).await;

    // Verified gone: no longer overdue, in single and batch updates alike.
    let mut changed = Vec::new();
    for id in ["active", "ended-unverified"] {
        let mut r = all.iter().find(|r| r.id == id).unwrap().clone();
        r.tailnet.removal_verified_at = Some(t0() + minutes(400));
        r.version += 1;
        changed.push(r);
    }
    store.update_request(&changed[0], &[]).await.unwrap();
    let stored = store
        .update_requests(&[(changed[1].clone(), Vec::new())])
        .await
        .unwrap();
    assert_eq!(stored, [true]);
    assert_eq!(store.count_overdue(t0() + minutes(300)).await.unwrap(), 1);
    let now: Vec<Request> = all
        .iter()
        .map(|r| changed.iter().find(|c| c.id == r.id).unwrap_or(r).clone())
        .collect();
    assert_overdue_counts(&*store, &now).await;
}

/// A database written before `access_ends_at` existed: the migration computes it from each
/// request's JSON, so overdue counts are right at once.
pub async fn migration_backfills_access_ends_at(db: Db) {
    let all = due_fixtures();
    let rows: Vec<(&Request, bool)> = all.iter().map(|r| (r, r.open())).collect();
    store_before_migration(&db, 20261123000001, &rows).await;
    let store = db.open().await;
    assert_overdue_counts(&*store, &all).await;
}

/// How long the batch calls take (printed, not asserted: the machine is shared).
pub async fn batch_timings(db: Db) {
    const INSERT: usize = 100_000;
    const UPDATE: usize = 2_000;
    let store = db.open().await;
    let batch: Vec<_> = (0..INSERT)
        .map(|i| {
            let id = format!("r{i:06}");
            (
                request(&id, "ssh", "alice@example.com", (i % 10_000) as i64),
                vec![entry("request.created", Some(&id), "{}")],
            )
        })
        .collect();
    let started = std::time::Instant::now();
    store.insert_requests(&batch).await.unwrap();
    let inserted = started.elapsed();

    let updates: Vec<_> = batch
        .iter()
        .step_by(INSERT / UPDATE)
        .map(|(r, _)| {
            let mut r = r.clone();
            r.state = State::Approved;
            r.version += 1;
            (
                r.clone(),
                vec![entry("request.approved", Some(&r.id), "{}")],
            )
        })
        .collect();
    assert_eq!(updates.len(), UPDATE);
    let started = std::time::Instant::now();
    let stored = store.update_requests(&updates).await.unwrap();
    let updated = started.elapsed();
    assert!(stored.iter().all(|ok| *ok));

    let started = std::time::Instant::now();
    let due = due_ids(&*store, t0()).await;
    let listed = started.elapsed();
    let started = std::time::Instant::now();
    store.next_due().await.unwrap();
    let next = started.elapsed();
    let want = updates.iter().filter(|(r, _)| r.created_at == t0()).count();
    assert_eq!(
        due.len(),
        want,
        "the approved ones created at t0 are due then"
    );
    eprintln!(
        "{:?}: insert_requests({INSERT}) {inserted:.2?}, update_requests({UPDATE}) \
         {updated:.2?}, due filter {listed:.2?}, next_due {next:.2?}",
        db.kind()
    );
    assert_eq!(db.count("requests").await, INSERT as i64);
    assert_eq!(db.count("audit").await, (INSERT + UPDATE) as i64);
}

/// What `/metrics` and `/readyz` read: open requests by state, the audit log's length, and
/// readiness.
pub async fn counts_and_readiness(db: Db) {
    let store = db.open().await;
    store.ready().await.unwrap();
    assert!(store.count_open_by_state().await.unwrap().is_empty());
    assert_eq!(store.audit_length().await.unwrap(), 0);
    let all = due_fixtures();
    for r in &all {
        store
            .insert_request(r, &[entry("request.created", Some(&r.id), "{}")])
            .await
            .unwrap();
    }
    let mut want: std::collections::BTreeMap<String, u64> = Default::default();
    for r in all.iter().filter(|r| r.open()) {
        *want.entry(r.state.as_str().to_owned()).or_default() += 1;
    }
    assert_eq!(store.count_open_by_state().await.unwrap(), want);
    assert_eq!(want.get("active"), Some(&2));
    assert_eq!(store.audit_length().await.unwrap(), all.len() as i64);

    // A database missing a migration is not ready, and says which.
    let last = match db.kind() {
        Kind::Sqlite => {
            let pool = sqlx::SqlitePool::connect(db.url()).await.unwrap();
            let v: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
                .fetch_one(&pool)
                .await
                .unwrap();
            sqlx::query("DELETE FROM _sqlx_migrations WHERE version = ?")
                .bind(v)
                .execute(&pool)
                .await
                .unwrap();
            v
        }
        Kind::Postgres => {
            let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
            let v: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
                .fetch_one(&pool)
                .await
                .unwrap();
            sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
                .bind(v)
                .execute(&pool)
                .await
                .unwrap();
            v
        }
    };
    let err = store.ready().await.unwrap_err().to_string();
    assert!(err.contains(&last.to_string()), "{err}");
}

/// One leader at a time; PostgreSQL frees the lock when the holder's connection ends, and the
/// holder sees it lost.
pub async fn leader_lock(db: Db) {
    let a = db.open().await.leader_lock().await.unwrap();
    let b = db.open().await.leader_lock().await.unwrap();
    if db.kind() == Kind::Sqlite {
        // One process per SQLite file: the lock is always this process's.
        assert!(a.held().await && a.try_acquire().await.unwrap());
        assert!(b.try_acquire().await.unwrap());
        return;
    }
    assert!(!a.held().await, "not held before it is taken");
    assert!(a.try_acquire().await.unwrap());
    assert!(a.held().await);
    assert!(!b.try_acquire().await.unwrap(), "two leaders");
    assert!(a.try_acquire().await.unwrap(), "taking it again keeps it");
    // Released: the other takes it.
    a.release().await;
    assert!(!a.held().await);
    assert!(b.try_acquire().await.unwrap());
    assert!(!a.try_acquire().await.unwrap());
    // The holder's connection cut from the server side: it knows at its next check, and the
    // lock is free for the other.
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND database = \
         (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND pid <> pg_backend_pid() AND objid = \
         (hashtextextended('tidegate leader ' || current_schema(), 0) & 4294967295)::oid",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(killed, [true]);
    let mut lost = false;
    for _ in 0..50 {
        if !b.held().await {
            lost = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(lost, "the holder must notice its connection is gone");
    // The ended session lets go of its locks as it exits, a moment after its client sees the
    // connection close.
    let mut taken = false;
    for _ in 0..50 {
        if a.try_acquire().await.unwrap() {
            taken = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(taken, "the lock is free once the holder's session is gone");
    a.release().await;
}

/// A request's own audit trail, and tokens (web sessions) that end.
pub async fn request_trail_and_token_removal(db: Db) {
    let store = db.open().await;
    let r = request("r1", "ssh", "alice@example.com", 0);
    let other = request("r2", "ssh", "bob@example.com", 1);
    store
        .insert_request(&r, &[entry("request.created", Some("r1"), "{}")])
        .await
        .unwrap();
    store
        .insert_request(&other, &[entry("request.created", Some("r2"), "{}")])
        .await
        .unwrap();
    store
        .append_audit(&[
            entry("drift.detected", None, "{}"),
            entry("request.approved", Some("r1"), "{\"by\":1}"),
        ])
        .await
        .unwrap();
    let trail = store.audit_of_request("r1").await.unwrap();
    let actions: Vec<&str> = trail.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["request.created", "request.approved"]);
    assert!(trail[0].seq < trail[1].seq);
    assert_eq!(trail[1].detail, "{\"by\":1}");
    assert!(store.audit_of_request("nope").await.unwrap().is_empty());

    let token = tidegate_core::store::ApiToken {
        hash: "ab".repeat(32),
        user: "alice@example.com".into(),
        description: "web session".into(),
        created_at: "2026-11-22T10:00:00Z".into(),
        expires_at: Some("2026-11-23T10:00:00Z".into()),
        kind: tidegate_core::store::TokenKind::Session,
        last_used_at: None,
    };
    store.insert_token(&token).await.unwrap();
    assert!(store.token(&token.hash).await.unwrap().is_some());
    // Purging: only what expired before the given time; tokens without expiry stay.
    let mut old = token.clone();
    old.hash = "cd".repeat(32);
    old.expires_at = Some("2026-11-20T10:00:00Z".into());
    let mut forever = token.clone();
    forever.hash = "ef".repeat(32);
    forever.expires_at = None;
    store.insert_token(&old).await.unwrap();
    store.insert_token(&forever).await.unwrap();
    assert_eq!(
        store
            .purge_expired_tokens("2026-11-21T00:00:00Z")
            .await
            .unwrap(),
        1
    );
    assert!(store.token(&old.hash).await.unwrap().is_none());
    assert!(store.token(&forever.hash).await.unwrap().is_some());
    assert!(store.token(&token.hash).await.unwrap().is_some());
    assert!(store.delete_token(&token.hash).await.unwrap());
    assert!(store.token(&token.hash).await.unwrap().is_none());
    assert!(!store.delete_token(&token.hash).await.unwrap());
}

/// Writers whose callers stop waiting at any point (an HTTP handler whose client went away, an
/// aborted task) leave no transaction open: another store on the same database can still
/// write at once, and everything written is whole.
pub async fn abandoned_writes_leave_no_lock(db: Db) {
    let store = db.open().await;
    let other = db.open().await;
    store
        .insert_request(
            &request("r0", "ssh", "alice@example.com", 0),
            &[entry("request.created", Some("r0"), "{}")],
        )
        .await
        .unwrap();
    for round in 0..40u64 {
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let detail = format!(r#"{{"round":{round},"writer":{w}}}"#);
                let _ = store.append_audit(&[entry("note", None, &detail)]).await;
            }));
        }
        // Abort them at different moments: before, during and after their transaction.
        tokio::time::sleep(std::time::Duration::from_micros(round * 50)).await;
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }
    let after = [entry("after", None, "{}")];
    let write = other.append_audit(&after);
    tokio::time::timeout(std::time::Duration::from_secs(5), write)
        .await
        .expect("another store could not write within 5 s: a transaction was left open")
        .unwrap();
    let mut r = store.request("r0").await.unwrap().unwrap();
    r.version += 1;
    let retry = [entry("grant.retry", Some("r0"), "{}")];
    let update = store.update_request(&r, &retry);
    tokio::time::timeout(std::time::Duration::from_secs(5), update)
        .await
        .expect("the store itself could not write within 5 s")
        .unwrap();
    audit::verify(&all_audit(&*other).await).unwrap();
}

/// The outbox: one delivery per channel and event (queuing again changes nothing), due ones
/// earliest first, attempts counted, a channel's log newest first, pending counts.
pub async fn outbox(db: Db) {
    use tidegate_core::store::{Attempt, NewDelivery};
    let store = db.open().await;
    let new = |channel: &str, event: &str, next_at: &str| NewDelivery {
        channel: channel.into(),
        event_id: event.into(),
        payload: format!("{{\"id\": \"{event}\"}}"),
        created_at: "2026-11-30T10:00:00Z".into(),
        next_at: next_at.into(),
    };
    let queued = store
        .enqueue_deliveries(&[
            new("webhook:a", "evt_1", "2026-11-30T10:00:05Z"),
            new("webhook:a", "evt_2", "2026-11-30T10:00:01Z"),
            new("webhook:b", "evt_1", "2026-11-30T10:00:02Z"),
            new("email", "evt_3", "2026-11-30T11:00:00Z"),
        ])
        .await
        .unwrap();
    assert_eq!(queued, 4);
    assert_eq!(
        store
            .enqueue_deliveries(&[new("webhook:a", "evt_1", "2026-11-30T10:00:00Z")])
            .await
            .unwrap(),
        0,
        "queued once per channel and event"
    );
    let due = store
        .due_deliveries("2026-11-30T10:00:10Z", 10)
        .await
        .unwrap();
    let order: Vec<(&str, &str)> = due
        .iter()
        .map(|d| (d.channel.as_str(), d.event_id.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            ("webhook:a", "evt_2"),
            ("webhook:b", "evt_1"),
            ("webhook:a", "evt_1")
        ]
    );
    assert_eq!(due[0].payload, "{\"id\": \"evt_2\"}");
    assert_eq!(
        store
            .due_deliveries("2026-11-30T10:00:10Z", 1)
            .await
            .unwrap()
            .len(),
        1
    );
    // A failure to retry later, a success, a give-up.
    store
        .record_attempt(&Attempt {
            id: due[0].id,
            state: "pending".into(),
            next_at: "2026-11-30T10:01:00Z".into(),
            last_error: Some("HTTP 503".into()),
            done_at: None,
        })
        .await
        .unwrap();
    store
        .record_attempt(&Attempt {
            id: due[1].id,
            state: "delivered".into(),
            next_at: due[1].next_at.clone(),
            last_error: None,
            done_at: Some("2026-11-30T10:00:10Z".into()),
        })
        .await
        .unwrap();
    let due = store
        .due_deliveries("2026-11-30T10:00:30Z", 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1, "the retry waits, the delivered one is done");
    let log = store.deliveries("webhook:a", 10).await.unwrap();
    assert_eq!(log.len(), 2);
    let retried = log.iter().find(|d| d.event_id == "evt_2").unwrap();
    assert_eq!(retried.attempts, 1);
    assert_eq!(retried.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(retried.state, "pending");
    let pending = store.pending_deliveries().await.unwrap();
    assert_eq!(pending.get("webhook:a"), Some(&2));
    assert_eq!(pending.get("webhook:b"), None);
    assert_eq!(pending.get("email"), Some(&1));
}
