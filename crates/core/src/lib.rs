//! tidegate's domain: entitlements from the config, access requests and their lifecycle, the
//! audit log's hash chain, and the `Store` trait the storage backends implement. It knows no
//! HTTP and no SQL; the tailnet is reached through the `tailnet::Tailnet` trait and time through
//! `tailnet::Clock`.

pub mod access;
pub mod audit;
pub mod config;
pub mod duration;
pub mod entitlement;
pub mod leader;
pub mod live;
pub mod machine;
pub mod metrics;
pub mod preflight;
pub mod reconciler;
pub mod request;
pub mod service;
pub mod store;

pub use duration::Span;

/// The clock's time to whole seconds, as requests and the audit log record it.
pub fn now(clock: &dyn tailnet::Clock) -> time::OffsetDateTime {
    let t = clock.now();
    t.replace_nanosecond(0).unwrap_or(t)
}

/// RFC 3339 text for a time, as stored and shown.
pub fn time_text(t: time::OffsetDateTime) -> String {
    tailnet::clock::rfc3339(t)
}
