//! Access review revocations: what reviewers revoked is taken away and verified by reading the
//! tailnet back. Group and rule removals go out in one HuJSON edit and one write with
//! `If-Match` (re-read and re-applied on 412); roles, keys and suspensions one by one. Each
//! change is written to the audit log before it is made; a failure is recorded on the item
//! and retried with backoff.

use std::collections::BTreeMap;

use serde_json::json;

use super::{ChangeError, PassReport, PolicyEdit, Reconciler};
use crate::review::{PendingRevocation, Revocation};

/// Whether the revocation is an edit of the policy file.
fn in_policy(r: &Revocation) -> bool {
    matches!(
        r,
        Revocation::RemoveFromGroup { .. } | Revocation::RemoveFromRule { .. }
    )
}

fn holds(doc: &hujson::Document, path: &[hujson::Seg<'_>], login: &str) -> bool {
    doc.strings(path)
        .is_some_and(|members| members.iter().any(|m| m.eq_ignore_ascii_case(login)))
}

/// Where the revoked login sits in `doc` now: the group's members, or the sources (`src`, or
/// `users` in an old-style ACL) of the rule meant: the one at its index if it still has the
/// same destinations, else another in its section that does. `None` when no such list holds
/// the login (the access is gone).
fn locate<'a>(doc: &hujson::Document, p: &'a PendingRevocation) -> Option<Vec<hujson::Seg<'a>>> {
    use hujson::Seg::{Index, Key};
    let login = &p.item.subject;
    match &p.item.revocation {
        Revocation::RemoveFromGroup { group } => {
            let path = vec![Key("groups"), Key(group.as_str())];
            holds(doc, &path, login).then_some(path)
        }
        Revocation::RemoveFromRule {
            section,
            index,
            dst,
        } => {
            let count = doc
                .get(&[Key(section.as_str())])
                .and_then(|n| n.as_array())
                .map_or(0, <[hujson::Node]>::len);
            for i in std::iter::once(*index)
                .chain(0..count)
                .filter(|i| *i < count)
            {
                let rule_dst = doc
                    .strings(&[Key(section.as_str()), Index(i), Key("dst")])
                    .or_else(|| doc.strings(&[Key(section.as_str()), Index(i), Key("ports")]));
                if !dst.is_empty() && rule_dst.as_ref() != Some(dst) {
                    continue;
                }
                for key in ["src", "users"] {
                    let path = vec![Key(section.as_str()), Index(i), Key(key)];
                    if holds(doc, &path, login) {
                        return Some(path);
                    }
                }
            }
            None
        }
        _ => None,
    }
}

impl Reconciler {
    /// Makes and verifies the revocations reviewers decided; whether any are left for later
    /// (failed, or waiting out a backoff).
    pub(super) async fn review_revocations(&self, report: &mut PassReport) -> bool {
        let pending = match self.service.pending_revocations().await {
            Ok(p) => p,
            Err(e) => {
                report
                    .errors
                    .push(format!("cannot read access review revocations: {e}"));
                return true;
            }
        };
        let now = self.now();
        let (pending, waiting): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|p| p.retry_at.is_none_or(|t| t <= now));
        let mut left = !waiting.is_empty();
        if pending.is_empty() {
            return left;
        }
        let (policy, others): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|p| in_policy(&p.item.revocation));
        let mut outcomes: Vec<(PendingRevocation, Result<(), String>)> = Vec::new();
        if !policy.is_empty() {
            match self.revoke_in_policy(&policy, report).await {
                Ok(doc) => {
                    for p in policy {
                        let outcome = if locate(&doc, &p).is_none() {
                            Ok(())
                        } else {
                            Err(format!(
                                "read back, {} is still in the policy where it was revoked from",
                                p.item.subject
                            ))
                        };
                        outcomes.push((p, outcome));
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    outcomes.extend(policy.into_iter().map(|p| (p, Err(e.clone()))));
                }
            }
        }
        for p in others {
            let outcome = self.revoke_one(&p).await.map_err(|e| e.to_string());
            outcomes.push((p, outcome));
        }
        for (p, outcome) in outcomes {
            if outcome.is_ok() {
                report.removed += 1;
            } else if let Err(e) = &outcome {
                left = true;
                report.errors.push(format!(
                    "access review {} item {}: {e}",
                    p.campaign, p.item.id
                ));
            }
            if let Err(e) = self.service.record_revocation(&p, outcome).await {
                report
                    .errors
                    .push(format!("cannot record a review revocation: {e}"));
            }
        }
        left
    }

    /// Removes the revoked logins from their groups and rules in one policy write; the policy
    /// as read back afterwards.
    async fn revoke_in_policy(
        &self,
        pending: &[PendingRevocation],
        report: &mut PassReport,
    ) -> Result<hujson::Document, ChangeError> {
        self.write_policy("access review revocations", report, |doc| {
            let mut edit = PolicyEdit {
                changes: Vec::new(),
                intents: Vec::new(),
                found: (),
            };
            for p in pending {
                let Some(path) = locate(doc, p) else {
                    continue; // already gone: verified as gone below
                };
                doc.remove_strings(&path, &[p.item.subject.as_str()])
                    .map_err(|e| {
                        ChangeError::Refused(format!(
                            "cannot remove {} from {}: {e}",
                            p.item.subject, p.item.target
                        ))
                    })?;
                edit.changes
                    .push(format!("-{} {}", p.item.subject, p.item.target));
                edit.intents.push((
                    None,
                    "review.revoking",
                    json!({"campaign": p.campaign, "item": p.item.id, "subject": p.item.subject,
                           "revocation": p.item.revocation}),
                ));
            }
            Ok(edit)
        })
        .await?;
        // Verified against the policy as the tailnet serves it now.
        let back = self
            .tailnet()
            .policy()
            .await
            .map_err(|e| ChangeError::tailnet("reading the policy back", e))?;
        hujson::Document::parse(&back.text).map_err(|e| {
            ChangeError::NotVerified(format!("the policy read back does not parse: {e}"))
        })
    }

    /// A role, key or suspension revocation, made and verified.
    async fn revoke_one(&self, p: &PendingRevocation) -> Result<(), ChangeError> {
        let intent = |what: &str| {
            vec![(
                None,
                "review.revoking",
                json!({"campaign": p.campaign, "item": p.item.id, "subject": p.item.subject,
                       "revocation": p.item.revocation, "change": what}),
            )]
        };
        match &p.item.revocation {
            Revocation::DeleteKey { key } => {
                let live = match self.tailnet().key(key).await {
                    Ok(k) => !k.invalid,
                    Err(tailnet::Error::NotFound(_)) => false,
                    Err(e) => return Err(ChangeError::tailnet("reading the key", e)),
                };
                if live {
                    self.intend(intent(&format!("delete key {key}"))).await?;
                    match self.tailnet().delete_key(key).await {
                        Ok(()) | Err(tailnet::Error::NotFound(_)) => {}
                        Err(e) => return Err(ChangeError::tailnet("deleting the key", e)),
                    }
                    tracing::info!(key = %key, campaign = %p.campaign, "access review: key deleted");
                }
                match self.tailnet().key(key).await {
                    Err(tailnet::Error::NotFound(_)) => Ok(()),
                    Ok(k) if k.invalid => Ok(()),
                    Ok(_) => Err(ChangeError::NotVerified(format!(
                        "read back, key {key} is still valid"
                    ))),
                    Err(e) => Err(ChangeError::tailnet("reading the key back", e)),
                }
            }
            Revocation::SetRoleMember | Revocation::SuspendUser => {
                let users = self
                    .tailnet()
                    .users()
                    .await
                    .map_err(|e| ChangeError::tailnet("listing users", e))?;
                let by_login: BTreeMap<String, &tailnet::User> = users
                    .iter()
                    .map(|u| (u.login_name.to_lowercase(), u))
                    .collect();
                let Some(user) = by_login.get(&p.item.subject.to_lowercase()) else {
                    return Ok(()); // no longer a user: nothing is left to take away
                };
                let suspend = matches!(p.item.revocation, Revocation::SuspendUser);
                if suspend && user.status != "suspended" {
                    self.intend(intent("suspend user")).await?;
                    self.tailnet()
                        .suspend_user(&user.id)
                        .await
                        .map_err(|e| ChangeError::tailnet("suspending the user", e))?;
                    tracing::warn!(login = %p.item.subject, campaign = %p.campaign, "access review: user suspended");
                } else if !suspend && user.role != "member" {
                    self.intend(intent(&format!("role {} -> member", user.role)))
                        .await?;
                    self.tailnet()
                        .set_user_role(&user.id, "member")
                        .await
                        .map_err(|e| ChangeError::tailnet("setting the role", e))?;
                    tracing::info!(login = %p.item.subject, campaign = %p.campaign, "access review: role set to member");
                }
                let back = self
                    .tailnet()
                    .user(&user.id)
                    .await
                    .map_err(|e| ChangeError::tailnet("reading the user back", e))?;
                let done = if suspend {
                    back.status == "suspended"
                } else {
                    back.role == "member"
                };
                if done {
                    Ok(())
                } else {
                    Err(ChangeError::NotVerified(format!(
                        "read back, {} is still {}",
                        p.item.subject,
                        if suspend { back.status } else { back.role }
                    )))
                }
            }
            Revocation::RemoveFromGroup { .. } | Revocation::RemoveFromRule { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::Item;

    fn pending(revocation: Revocation) -> PendingRevocation {
        PendingRevocation {
            campaign: "rv-1".into(),
            item: Item {
                id: "i1".into(),
                subject: "dave@example.com".into(),
                kind: "rule".into(),
                target: "acls[0] (line 3)".into(),
                access: String::new(),
                reviewer: "bob@example.com".into(),
                revocation,
                protected: None,
            },
            retry_at: None,
            attempts: 0,
        }
    }

    /// A rule added above the reviewed one since the campaign started: the revocation finds
    /// the reviewed rule by its destinations and leaves the new one (which names the same
    /// person) alone.
    #[test]
    fn a_rule_that_moved_is_found_by_its_destinations() {
        let doc = hujson::Document::parse(
            r#"{"acls": [
                {"action": "accept", "src": ["dave@example.com"], "dst": ["tag:staging:22"]},
                {"action": "accept", "src": ["carol@example.com", "dave@example.com"], "dst": ["tag:prod:22"]},
            ], "groups": {"group:sre": ["dave@example.com"]}}"#,
        )
        .unwrap();
        let p = pending(Revocation::RemoveFromRule {
            section: "acls".into(),
            index: 0,
            dst: vec!["tag:prod:22".into()],
        });
        let path = locate(&doc, &p).unwrap();
        assert_eq!(path[1], hujson::Seg::Index(1));
        let gone = pending(Revocation::RemoveFromRule {
            section: "acls".into(),
            index: 0,
            dst: vec!["tag:db:5432".into()],
        });
        assert!(
            locate(&doc, &gone).is_none(),
            "no rule with those destinations"
        );
        let group = pending(Revocation::RemoveFromGroup {
            group: "group:sre".into(),
        });
        assert!(locate(&doc, &group).is_some());
    }
}
