//! `GET /tailnet/{t}/logging/configuration`: the configuration audit log.

use serde_json::json;
use tailnet::AuditLogEntry;
use tailnet::clock::parse_rfc3339;

use super::check_tailnet;
use crate::auth::Principal;
use crate::http::{ApiError, ApiResult, Reply, Req};
use crate::server::App;

fn event_name(e: &AuditLogEntry) -> String {
    if e.target.property.is_empty() {
        format!("{}.{}", e.target.kind, e.action)
    } else {
        format!("{}.{}.{}", e.target.kind, e.action, e.target.property)
    }
}

pub(crate) fn list(app: &App, req: &Req, p: &Principal, t: &str) -> ApiResult {
    p.require("logs:configuration", false)?;
    let time = |name: &str| {
        let text = req.query_value(name).ok_or_else(|| {
            ApiError::bad_request(format!("query parameter {name:?} is required"))
        })?;
        parse_rfc3339(text).ok_or_else(|| {
            ApiError::bad_request(format!("{name} {text:?} is not an RFC 3339 time"))
        })
    };
    let start = time("start")?;
    let end = time("end")?;
    if end < start {
        return Err(ApiError::bad_request("end is before start"));
    }
    let actors = req.query_values("actor");
    let targets = req.query_values("target");
    let events = req.query_values("event");
    let st = app.lock();
    check_tailnet(&st, t)?;
    let logs: Vec<&AuditLogEntry> = st
        .audit_log
        .iter()
        .filter(|e| parse_rfc3339(&e.event_time).is_some_and(|when| start <= when && when <= end))
        .filter(|e| {
            actors.is_empty()
                || actors.iter().any(|a| match a.strip_prefix('~') {
                    Some(search) => {
                        let search = search.to_lowercase();
                        e.actor.login_name.to_lowercase().contains(&search)
                            || e.actor.display_name.to_lowercase().contains(&search)
                    }
                    None => e.actor.id == *a,
                })
        })
        .filter(|e| {
            targets.is_empty()
                || targets
                    .iter()
                    .any(|t| e.target.id.contains(t) || e.target.name.contains(t))
        })
        .filter(|e| {
            let name = event_name(e);
            events.is_empty()
                || events
                    .iter()
                    .any(|ev| name == *ev || name.starts_with(&format!("{ev}.")))
        })
        .collect();
    Ok(Reply::json(&json!({
        "version": "1.1",
        "tailnet": st.tailnet,
        "logs": logs,
    })))
}
