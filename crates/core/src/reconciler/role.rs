//! `role`: a user's tailnet role is the highest of their own role and the roles of their
//! active grants; a grant never lowers it. The user's own role, recorded (with the intent)
//! before tidegate first raises it, is restored when no grant remains, and only if the role is
//! still one tidegate set: a change made by someone else in between wins, and is reported.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::{
    ChangeError, PassReport, Reconciler, each_target, event, needs_change, target_intents,
};
use crate::entitlement::{Strategy, role_rank};
use crate::request::{Event, Request, recorded_own_role};

impl Reconciler {
    fn role_of(&self, r: &Request) -> Option<String> {
        match &self.entitlement(&r.entitlement)?.strategy {
            Strategy::Role { role } => Some(role.clone()),
            _ => None,
        }
    }

    /// `requests`: every open role request of the users concerned.
    pub(super) async fn roles(&self, requests: Vec<Request>, report: &mut PassReport) {
        let now = self.now();
        let mut by_user: BTreeMap<String, Vec<Request>> = BTreeMap::new();
        for r in requests {
            by_user.entry(r.requester.clone()).or_default().push(r);
        }
        by_user.retain(|_, rs| rs.iter().any(|r| needs_change(r, now)));
        if by_user.is_empty() {
            return;
        }
        let users = match self.tailnet().users().await {
            Ok(users) => users,
            Err(e) => {
                let error = ChangeError::tailnet("reading users", e);
                let all = by_user
                    .into_values()
                    .flatten()
                    .filter(|r| needs_change(r, now))
                    .collect();
                return self.note_failure(all, &error, report).await;
            }
        };
        // Each user is a target of its own: their calls run concurrently (bounded).
        let users = &users;
        each_target(
            by_user.into_iter().collect(),
            report,
            |(login, requests)| async move {
                let mut part = PassReport::default();
                match users.iter().find(|u| u.login_name == login) {
                    Some(user) => self.role_target(user, requests, &mut part).await,
                    None => {
                        let error =
                            ChangeError::Refused(format!("{login} is not a user of the tailnet"));
                        let failing = requests
                            .into_iter()
                            .filter(|r| needs_change(r, now))
                            .collect();
                        self.note_failure(failing, &error, &mut part).await;
                    }
                }
                part
            },
        )
        .await;
    }

    async fn role_target(
        &self,
        user: &tailnet::User,
        requests: Vec<Request>,
        report: &mut PassReport,
    ) {
        let login = &user.login_name;
        let current = user.role.clone();
        // The user's own role: recorded by the first grant that raised it (with its intent,
        // before the write), or the role they have now if no grant has touched it.
        let base = recorded_own_role(&requests).unwrap_or_else(|| current.clone());
        let requests = self
            .record_intent(
                requests,
                |r| {
                    r.tailnet.previous_role = Some(base.clone());
                },
                report,
            )
            .await;
        let now = self.now();
        // Roles tidegate may have set on this user: those of grants applied (or being applied).
        let set_by_us: BTreeSet<String> = requests
            .iter()
            .filter(|r| r.may_hold_access())
            .filter_map(|r| self.role_of(r))
            .collect();
        let wanted: Vec<String> = requests
            .iter()
            .filter(|r| r.wants_access(now))
            .filter_map(|r| self.role_of(r))
            .collect();
        let desired = wanted
            .iter()
            .chain(std::iter::once(&base))
            .max_by_key(|role| (role_rank(role), **role == current))
            .cloned()
            .unwrap_or_else(|| base.clone());
        let ours = current == base || set_by_us.contains(&current);
        let raising = role_rank(&desired) > role_rank(&current);
        let mut note = None;
        if desired != current {
            if ours || raising {
                let intents = target_intents(
                    &requests,
                    now,
                    &json!({"user": login, "role": desired, "from": current, "own_role": base}),
                );
                let result = match self.intend(intents).await {
                    Ok(()) => self.set_role_verified(user, &desired).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    let failing = requests
                        .into_iter()
                        .filter(|r| needs_change(r, now))
                        .collect();
                    return self.note_failure(failing, &e, report).await;
                }
            } else {
                // Someone else changed the role since tidegate set it: theirs wins.
                tracing::warn!(user = %login, role = %current, wanted = %desired, "role changed outside tidegate; left as it is");
                self.record(
                    "grant.role_changed_outside",
                    json!({"user": login, "role": current, "tidegate_wanted": desired}),
                )
                .await;
                note = Some(format!(
                    "{login}'s role was changed outside tidegate to {current}; left as it is"
                ));
            }
        }
        let mut changes: Vec<(Request, Vec<Event>)> = Vec::new();
        for mut r in requests {
            if !needs_change(&r, now) {
                continue;
            }
            let mut detail =
                json!({"role": self.role_of(&r), "user_role": desired, "own_role": base});
            if let Some(note) = &note {
                detail["note"] = json!(note);
            }
            if r.wants_access(now) {
                if let Ok(events) = r.activate(now, detail) {
                    r.tailnet.verified_at = Some(now);
                    changes.push((r, events));
                }
            } else {
                if note.is_none() && !wanted.is_empty() {
                    detail["note"] =
                        json!(format!("{login} keeps {desired} for another active grant"));
                }
                r.tailnet.removed_at = Some(now);
                r.tailnet.removal_verified_at = Some(now);
                let events = vec![event(&r, "grant.removal_verified", detail)];
                changes.push((r, events));
            }
        }
        self.settle(changes, report).await;
    }

    /// Sets a user's role and reads it back.
    async fn set_role_verified(&self, user: &tailnet::User, role: &str) -> Result<(), ChangeError> {
        let login = &user.login_name;
        self.tailnet()
            .set_user_role(&user.id, role)
            .await
            .map_err(|e| ChangeError::tailnet(format!("setting {login}'s role to {role}"), e))?;
        match self.tailnet().user(&user.id).await {
            Ok(u) if u.role == role => {
                tracing::info!(user = %login, role, "role set");
                Ok(())
            }
            Ok(u) => Err(ChangeError::NotVerified(format!(
                "{login}'s role is {} after setting {role}",
                u.role
            ))),
            Err(e) => Err(ChangeError::tailnet(format!("reading {login} back"), e)),
        }
    }
}
