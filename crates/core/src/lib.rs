//! tidegate's domain: entitlements from the config, access requests and their lifecycle, the
//! audit log's hash chain, and the `Store` trait the storage backends implement. It knows no
//! HTTP and no SQL; the tailnet is reached through the `tailnet::Tailnet` trait and time through
//! `tailnet::Clock`.

pub mod access;
pub mod audit;
pub mod compliance;
pub mod config;
pub mod duration;
pub mod entitlement;
pub mod evidence;
pub mod inventory;
pub mod leader;
pub mod live;
pub mod machine;
pub mod metrics;
pub mod notify;
pub mod overview;
pub mod people;
pub mod preflight;
pub mod preview;
pub mod reconciler;
pub mod request;
pub mod review;
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

/// "in 1 h 12 min" / "3 min ago".
pub fn relative(t: time::OffsetDateTime, now: time::OffsetDateTime) -> String {
    let d = t - now;
    let secs = d.whole_seconds().abs();
    if secs < 5 {
        return "just now".to_owned();
    }
    let text = if secs < 60 {
        format!("{secs} s")
    } else if secs < 3600 {
        format!("{} min", secs / 60)
    } else if secs < 86_400 {
        let m = (secs % 3600) / 60;
        if m == 0 {
            format!("{} h", secs / 3600)
        } else {
            format!("{} h {m} min", secs / 3600)
        }
    } else {
        format!("{} d {} h", secs / 86_400, (secs % 86_400) / 3600)
    };
    if d.is_negative() {
        format!("{text} ago")
    } else {
        format!("in {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        let now = time::macros::datetime!(2026-11-22 10:00 UTC);
        let at = |secs: i64| relative(now + time::Duration::seconds(secs), now);
        assert_eq!(at(2), "just now");
        assert_eq!(at(4332), "in 1 h 12 min");
        assert_eq!(at(7200), "in 2 h");
        assert_eq!(at(-180), "3 min ago");
        assert_eq!(at(90_000), "in 1 d 1 h");
    }
}
