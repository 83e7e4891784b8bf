//! Evidence for a period: every grant (requested, approved by whom, applied, expires, ended,
//! verified removed), the compliance check runs, and the access review campaigns. The data;
//! the files an auditor takes away are rendered by the server crate.

use serde::Serialize;
use time::OffsetDateTime;

use crate::access::Auditor;
use crate::compliance::CheckRun;
use crate::request::{Request, State};
use crate::review::CampaignView;
use crate::service::{Service, ServiceError};
use crate::time_text;

/// One grant as an auditor reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantRecord {
    pub id: String,
    pub requester: String,
    pub entitlement: String,
    pub reason: String,
    pub state: String,
    pub requested_at: String,
    /// `alice@example.com at 2026-11-30T10:00:00Z`, each approval.
    pub approved_by: Vec<String>,
    pub applied_at: Option<String>,
    pub expires_at: Option<String>,
    pub ended_at: Option<String>,
    pub ended_by: Option<String>,
    pub removal_verified_at: Option<String>,
    pub break_glass: bool,
}

impl GrantRecord {
    pub fn of(r: &Request) -> GrantRecord {
        let t = |x: Option<OffsetDateTime>| x.map(time_text);
        GrantRecord {
            id: r.id.clone(),
            requester: r.requester.clone(),
            entitlement: r.entitlement.clone(),
            reason: r.reason.clone(),
            state: r.state.as_str().to_owned(),
            requested_at: time_text(r.created_at),
            approved_by: r
                .reviews
                .iter()
                .chain(r.extended.iter().flat_map(|e| e.reviews.iter()))
                .filter(|v| v.approve)
                .map(|v| format!("{} at {}", v.reviewer, time_text(v.at)))
                .collect(),
            applied_at: t(r.activated_at),
            expires_at: t(r.expires_at),
            ended_at: t(r.ended_at),
            ended_by: r.ended_by.clone(),
            removal_verified_at: t(r.tailnet.removal_verified_at),
            break_glass: r.break_glass,
        }
    }
}

/// What happened in a period.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    pub from: String,
    pub to: String,
    pub grants: Vec<GrantRecord>,
    pub check_runs: Vec<CheckRun>,
    pub campaigns: Vec<CampaignView>,
}

/// The grants as CSV, one row each.
pub fn grants_csv(grants: &[GrantRecord]) -> String {
    let mut out = csv::Writer::from_writer(Vec::new());
    let _ = out.write_record([
        "id",
        "requester",
        "entitlement",
        "reason",
        "state",
        "requested_at",
        "approved_by",
        "applied_at",
        "expires_at",
        "ended_at",
        "ended_by",
        "removal_verified_at",
        "break_glass",
    ]);
    for g in grants {
        let o = |x: &Option<String>| x.clone().unwrap_or_default();
        let _ = out.write_record([
            g.id.clone(),
            g.requester.clone(),
            g.entitlement.clone(),
            g.reason.clone(),
            g.state.clone(),
            g.requested_at.clone(),
            g.approved_by.join("; "),
            o(&g.applied_at),
            o(&g.expires_at),
            o(&g.ended_at),
            o(&g.ended_by),
            o(&g.removal_verified_at),
            g.break_glass.to_string(),
        ]);
    }
    String::from_utf8(out.into_inner().unwrap_or_default()).unwrap_or_default()
}

impl Service {
    /// Every request whose life touched `[from, to)` that was approved (or self-granted), the
    /// check runs of the period (from the audit log), and the campaigns open during it.
    pub async fn evidence(
        &self,
        auditor: Auditor<'_>,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Evidence, ServiceError> {
        if from >= to {
            return Err(ServiceError::Invalid(format!(
                "the period is empty: --from {} is not before --to {}",
                time_text(from),
                time_text(to)
            )));
        }
        let mut grants: Vec<GrantRecord> = self
            .store()
            .requests(&crate::store::RequestFilter::default())
            .await?
            .iter()
            .filter(|r| r.created_at < to && r.ended_at.is_none_or(|e| e >= from))
            .filter(|r| !matches!(r.state, State::Pending | State::Denied | State::Cancelled))
            .map(GrantRecord::of)
            .collect();
        grants.sort_by(|a, b| a.requested_at.cmp(&b.requested_at));
        let (from_text, to_text) = (time_text(from), time_text(to));
        let mut check_runs = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store().audit(after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in &page {
                // RFC 3339 UTC text compares in time order.
                if e.action == "check.run"
                    && e.at >= from_text
                    && e.at < to_text
                    && let Ok(run) = serde_json::from_str::<CheckRun>(&e.detail)
                {
                    check_runs.push(run);
                }
            }
        }
        let campaigns = self.reviews_between(auditor, from, to).await?;
        Ok(Evidence {
            from: from_text,
            to: to_text,
            grants,
            check_runs,
            campaigns,
        })
    }
}
