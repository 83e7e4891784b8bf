//! Requests and audit entries to store.

use tidegate_core::Span;
use tidegate_core::audit::NewAuditEntry;
use tidegate_core::request::{Extension, Request, Review, State, TailnetStatus};
use time::macros::datetime;
use time::{Duration, OffsetDateTime, UtcOffset};

/// A base time with nanoseconds, so precision loss shows.
pub fn t0() -> OffsetDateTime {
    datetime!(2026-11-22 10:00:00.123456789 UTC)
}

/// A plain pending request created `minutes` after [`t0`].
pub fn request(id: &str, entitlement: &str, requester: &str, minutes: i64) -> Request {
    let created = t0() + Duration::minutes(minutes);
    Request {
        id: id.to_owned(),
        entitlement: entitlement.to_owned(),
        requester: requester.to_owned(),
        reason: format!("{id}: ticket OPS-1"),
        duration: Span::hours(1),
        devices: Vec::new(),
        state: State::Pending,
        created_at: created,
        start_at: None,
        pending_until: created + Duration::hours(24),
        reviews: Vec::new(),
        activated_at: None,
        expires_at: None,
        ended_at: None,
        ended_by: None,
        end_reason: None,
        break_glass: false,
        break_glass_review: None,
        extension: None,
        extended: Vec::new(),
        tailnet: TailnetStatus::default(),
        version: 0,
    }
}

/// A request with every field set, times in several offsets and with nanoseconds.
pub fn full_request(id: &str) -> Request {
    let t = t0();
    let cet = UtcOffset::from_hms(1, 0, 0).unwrap();
    let nst = UtcOffset::from_hms(-3, -30, 0).unwrap();
    Request {
        id: id.to_owned(),
        entitlement: "prod-db".into(),
        requester: "alice@example.com".into(),
        reason: "INC-4711: \"disk full\" on db-1 — ünïcödé, tabs\tand\nnewlines".into(),
        duration: Span::minutes(90),
        devices: vec!["nodeA1CNTRL".into(), "nodeB2CNTRL".into()],
        state: State::Active,
        created_at: t,
        start_at: Some((t + Duration::minutes(5)).to_offset(cet)),
        pending_until: t + Duration::hours(24),
        reviews: vec![
            Review {
                reviewer: "bob@example.com".into(),
                approve: true,
                comment: "ok, go".into(),
                at: (t + Duration::minutes(2)).to_offset(nst),
            },
            Review {
                reviewer: "carol@example.com".into(),
                approve: true,
                comment: String::new(),
                at: t + Duration::minutes(3) + Duration::nanoseconds(1),
            },
        ],
        activated_at: Some(t + Duration::minutes(5)),
        expires_at: Some(t + Duration::minutes(95)),
        ended_at: Some(t + Duration::minutes(60)),
        ended_by: Some("bob@example.com".into()),
        end_reason: Some("done early".into()),
        break_glass: true,
        break_glass_review: Some(tidegate_core::request::AfterReview {
            reviewer: "erin@example.com".into(),
            note: "outage INC-8, confirmed".into(),
            at: t + Duration::minutes(70),
        }),
        extension: Some(Extension {
            duration: Span::minutes(30),
            reason: "still migrating".into(),
            reviews: vec![Review {
                reviewer: "dave@example.com".into(),
                approve: false,
                comment: "no".into(),
                at: t + Duration::minutes(50),
            }],
            requested_at: t + Duration::minutes(45),
        }),
        extended: vec![Extension {
            duration: Span::minutes(15),
            reason: "one more step".into(),
            reviews: vec![Review {
                reviewer: "bob@example.com".into(),
                approve: true,
                comment: "ok".into(),
                at: t + Duration::minutes(40),
            }],
            requested_at: t + Duration::minutes(39),
        }],
        tailnet: TailnetStatus {
            applying_since: None,
            applied_at: Some(t + Duration::minutes(5)),
            verified_at: Some(t + Duration::minutes(6)),
            removed_at: Some(t + Duration::minutes(61)),
            removal_verified_at: Some(t + Duration::minutes(62)),
            attempts: 3,
            last_error: Some("HTTP 412: policy changed".into()),
            previous_role: Some("member".into()),
            previous_tags: Some(
                [("n0004CNTRL".to_owned(), vec!["tag:own".to_owned()])]
                    .into_iter()
                    .collect(),
            ),
            applied_until: Some(t + Duration::minutes(95)),
            retry_at: Some(t + Duration::minutes(63)),
            key_id: Some("kAbC123CNTRL".into()),
        },
        version: 0,
    }
}

pub fn entry(action: &str, request: Option<&str>, detail: &str) -> NewAuditEntry {
    NewAuditEntry {
        at: "2026-11-22T10:00:00Z".into(),
        actor: "alice@example.com".into(),
        action: action.to_owned(),
        request: request.map(str::to_owned),
        detail: detail.to_owned(),
    }
}
