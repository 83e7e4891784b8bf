//! `/readyz` and `/metrics` (Prometheus text format, names prefixed `tidegate_`).

use std::fmt::Write;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::AppState;

/// Ready when the database answers and every migration is applied.
pub async fn readyz(State(app): State<AppState>) -> Response {
    match app.service.store().ready().await {
        Ok(()) => (StatusCode::OK, axum::Json(json!({"status": "ready"}))).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not ready", "error": e.to_string()})),
        )
            .into_response(),
    }
}

/// One metric family's header lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Label values escaped as the text format wants.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub async fn metrics(State(app): State<AppState>) -> Response {
    let service = &app.service;
    let mut out = String::new();
    family(
        &mut out,
        "tidegate_leader",
        "gauge",
        "1 on the replica that runs the reconciler, 0 elsewhere.",
    );
    let _ = writeln!(out, "tidegate_leader {}", u8::from(app.metrics.leader()));
    family(
        &mut out,
        "tidegate_leader_terms_total",
        "counter",
        "How many times this replica became the leader.",
    );
    let _ = writeln!(
        out,
        "tidegate_leader_terms_total {}",
        app.metrics.terms.load(std::sync::atomic::Ordering::Relaxed)
    );
    // The last compliance run, whichever process ran it.
    if let Ok(Some(run)) = service.last_checks().await {
        family(
            &mut out,
            "tidegate_check_findings",
            "gauge",
            "Findings of the last compliance check run, by check.",
        );
        for c in &run.checks {
            let _ = writeln!(
                out,
                "tidegate_check_findings{{check=\"{}\"}} {}",
                c.id,
                c.findings.len()
            );
        }
    }
    // The outbox: deliveries waiting, by channel (a growing number is an endpoint down).
    if service.notifies()
        && let Ok(pending) = service.store().pending_deliveries().await
    {
        family(
            &mut out,
            "tidegate_deliveries_pending",
            "gauge",
            "Deliveries (webhooks, e-mail, Slack) waiting to be sent or retried, by channel.",
        );
        let channels = service
            .config()
            .webhooks
            .iter()
            .map(|w| format!("webhook:{}", w.name))
            .chain(service.config().email.as_ref().map(|_| "email".to_owned()))
            .chain(service.config().slack.as_ref().map(|_| "slack".to_owned()));
        for channel in channels {
            let _ = writeln!(
                out,
                "tidegate_deliveries_pending{{channel=\"{}\"}} {}",
                label(&channel),
                pending.get(&channel).copied().unwrap_or(0)
            );
        }
    }
    let store_up = match service.store().count_open_by_state().await {
        Ok(states) => {
            family(
                &mut out,
                "tidegate_grants_active",
                "gauge",
                "Grants active now.",
            );
            let active = states.get("active").copied().unwrap_or(0);
            let _ = writeln!(out, "tidegate_grants_active {active}");
            family(
                &mut out,
                "tidegate_requests_open",
                "gauge",
                "Requests the reconciler still has work on, by state.",
            );
            for (state, n) in &states {
                let _ = writeln!(
                    out,
                    "tidegate_requests_open{{state=\"{}\"}} {n}",
                    label(state)
                );
            }
            true
        }
        Err(_) => false,
    };
    if let Ok(overdue) = service
        .store()
        .count_overdue(tidegate_core::now(service.clock().as_ref()))
        .await
    {
        family(
            &mut out,
            "tidegate_revocations_overdue",
            "gauge",
            "Grants past their end whose removal from the tailnet is not yet verified.",
        );
        let _ = writeln!(out, "tidegate_revocations_overdue {overdue}");
    }
    // One read of the chain head gives both its length and its last hash.
    if let Ok(head) = service.audit_head().await {
        family(
            &mut out,
            "tidegate_audit_chain_length",
            "gauge",
            "Entries in the hash-chained audit log.",
        );
        let _ = writeln!(out, "tidegate_audit_chain_length {}", head.length);
        family(
            &mut out,
            "tidegate_audit_chain_head_info",
            "gauge",
            "The audit chain's last hash (label) at this length: keep it to catch a log cut short.",
        );
        let _ = writeln!(
            out,
            "tidegate_audit_chain_head_info{{hash=\"{}\",length=\"{}\"}} 1",
            head.hash, head.length
        );
    }
    family(
        &mut out,
        "tidegate_store_up",
        "gauge",
        "1 if the database answered this scrape.",
    );
    let _ = writeln!(out, "tidegate_store_up {}", u8::from(store_up));
    let (buckets, count, sum) = app.metrics.passes();
    family(
        &mut out,
        "tidegate_reconcile_duration_seconds",
        "histogram",
        "How long each reconciler pass took on this replica.",
    );
    for (bound, n) in buckets {
        let _ = writeln!(
            out,
            "tidegate_reconcile_duration_seconds_bucket{{le=\"{bound}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "tidegate_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(out, "tidegate_reconcile_duration_seconds_sum {sum}");
    let _ = writeln!(out, "tidegate_reconcile_duration_seconds_count {count}");
    family(
        &mut out,
        "tidegate_tailnet_api_calls_total",
        "counter",
        "Calls to the tailnet's API by HTTP status (\"error\": no answer).",
    );
    for (status, n) in service.tailnet().call_counts() {
        let _ = writeln!(
            out,
            "tidegate_tailnet_api_calls_total{{status=\"{}\"}} {n}",
            label(&status)
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
