//! Who has access right now: the admin overview. One read model for the web's admin page,
//! `GET /api/access` and `tidegate access`: the active grants, every managed group's members
//! with why each is there (a grant, standing from before tidegate, or nothing: drift), and the
//! grants whose removal is overdue.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::access::Auditor;
use crate::entitlement::Strategy;
use crate::request::{Request, State};
use crate::service::{Service, ServiceError};
use crate::store::RequestFilter;

/// What the overview is narrowed to (all of it when empty).
#[derive(Debug, Clone, Default)]
pub struct AccessFilter {
    pub entitlement: Option<String>,
    pub requester: Option<String>,
    /// Only this managed group (`group:NAME`), and the grants that put people in it.
    pub group: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AccessOverview {
    #[serde(with = "time::serde::rfc3339")]
    pub at: time::OffsetDateTime,
    pub active: Vec<Request>,
    pub groups: Vec<GroupMembers>,
    /// Past their end and not yet verified removed from the tailnet.
    pub overdue: Vec<Request>,
    /// Why the live policy could not be read, when it could not (the groups are then empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_error: Option<String>,
}

/// A managed group's members as the live policy has them.
#[derive(Debug, Clone, Serialize)]
pub struct GroupMembers {
    pub group: String,
    /// The entitlements that put people in it.
    pub entitlements: Vec<String>,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub login: String,
    /// `grant` (with the requests), `standing` (there before tidegate managed the group), or
    /// `unexplained` (drift: removed where the entitlement says remove_drift).
    pub because: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<String>,
    /// When the latest of those grants ends.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub until: Option<time::OffsetDateTime>,
}

impl Service {
    /// The overview, for admins and auditors.
    pub async fn access_overview(
        &self,
        auditor: Auditor<'_>,
        filter: &AccessFilter,
    ) -> Result<AccessOverview, ServiceError> {
        let _ = auditor;
        let now = self.now();
        let group_of = |entitlement: &str| match self.entitlement(entitlement).map(|e| &e.strategy)
        {
            Ok(Strategy::Group { group, .. }) => Some(group.clone()),
            _ => None,
        };
        let keeps = |r: &Request| {
            filter
                .entitlement
                .as_ref()
                .is_none_or(|e| *e == r.entitlement)
                && filter.requester.as_ref().is_none_or(|q| *q == r.requester)
                && filter
                    .group
                    .as_ref()
                    .is_none_or(|g| group_of(&r.entitlement).as_ref() == Some(g))
        };
        let active: Vec<Request> = self
            .store()
            .requests(&RequestFilter {
                states: vec![State::Active],
                ..RequestFilter::default()
            })
            .await?
            .into_iter()
            .filter(keeps)
            .collect();
        let overdue: Vec<Request> = self
            .store()
            .requests(&RequestFilter {
                overdue_at: Some(now),
                limit: Some(500),
                ..RequestFilter::default()
            })
            .await?
            .into_iter()
            .filter(keeps)
            .collect();
        let managed = self.managed_groups().await?;
        let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in &self.config().entitlements {
            if let Strategy::Group { group, .. } = &e.strategy {
                by_group
                    .entry(group.clone())
                    .or_default()
                    .push(e.name.clone());
            }
        }
        // Read now, not the 30-second cache: this is what an admin checks after a change.
        let (policy_groups, policy_error) = match self.tailnet().policy().await {
            Ok(current) => match policy::Policy::parse(&current.text) {
                Ok(p) => (p.file.groups, None),
                Err(e) => (Default::default(), Some(e.to_string())),
            },
            Err(e) => (Default::default(), Some(e.to_string())),
        };
        let mut groups = Vec::new();
        for (group, entitlements) in by_group {
            if filter.group.as_ref().is_some_and(|g| *g != group) {
                continue;
            }
            let standing = managed.get(&group).map(|m| &m.standing);
            let members = policy_groups
                .get(&group)
                .into_iter()
                .flatten()
                .filter(|login| filter.requester.as_ref().is_none_or(|q| q == *login))
                .map(|login| {
                    let grants: Vec<&Request> = active
                        .iter()
                        .filter(|r| {
                            r.requester == *login
                                && group_of(&r.entitlement).as_ref() == Some(&group)
                        })
                        .collect();
                    let because = if !grants.is_empty() {
                        "grant"
                    } else if standing.is_some_and(|s| s.contains(login)) {
                        "standing"
                    } else {
                        "unexplained"
                    };
                    Member {
                        login: login.clone(),
                        because,
                        requests: grants.iter().map(|r| r.id.clone()).collect(),
                        until: grants.iter().filter_map(|r| r.expires_at).max(),
                    }
                })
                .collect();
            groups.push(GroupMembers {
                group,
                entitlements,
                members,
            });
        }
        Ok(AccessOverview {
            at: now,
            active,
            groups,
            overdue,
            policy_error,
        })
    }
}
