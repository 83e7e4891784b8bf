//! Access review revocations: what reviewers revoked is taken away and verified by reading the
//! tailnet back. Group and rule removals go out in one HuJSON edit and one write with
//! `If-Match` (re-read and re-applied on 412); roles, keys and suspensions one by one. Each
//! change is written to the audit log before it is made; a failure is recorded on the item
//! and retried with backoff.

use std::collections::BTreeMap;

use serde_json::json;

use super::{ChangeError, PassReport, Reconciler};
use crate::review::{PendingRevocation, Revocation};

/// How many times one pass re-reads and re-applies the policy after a 412.
const MAX_POLICY_ATTEMPTS: usize = 8;

/// Where a revocation's login sits in the policy file.
fn policy_path(r: &Revocation) -> Option<Vec<hujson::Seg<'_>>> {
    match r {
        Revocation::RemoveFromGroup { group } => {
            Some(vec![hujson::Seg::Key("groups"), hujson::Seg::Key(group)])
        }
        Revocation::RemoveFromRule { section, index } => Some(vec![
            hujson::Seg::Key(section),
            hujson::Seg::Index(*index),
            hujson::Seg::Key("src"),
        ]),
        _ => None,
    }
}

/// The path of a rule's sources: `src`, or `users` in an old-style ACL.
fn sources_path<'a>(doc: &hujson::Document, path: Vec<hujson::Seg<'a>>) -> Vec<hujson::Seg<'a>> {
    if doc.strings(&path).is_some() {
        return path;
    }
    let mut users = path;
    if let Some(last) = users.last_mut()
        && matches!(last, hujson::Seg::Key("src"))
    {
        *last = hujson::Seg::Key("users");
    }
    users
}

/// Whether the login is gone from where the revocation took it.
fn gone_from_policy(doc: &hujson::Document, p: &PendingRevocation) -> bool {
    let Some(path) = policy_path(&p.item.revocation) else {
        return true;
    };
    let path = sources_path(doc, path);
    !doc.strings(&path).is_some_and(|members| {
        members
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&p.item.subject))
    })
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
            .partition(|p| policy_path(&p.item.revocation).is_some());
        let mut outcomes: Vec<(PendingRevocation, Result<(), String>)> = Vec::new();
        if !policy.is_empty() {
            match self.revoke_in_policy(&policy, report).await {
                Ok(doc) => {
                    for p in policy {
                        let outcome = if gone_from_policy(&doc, &p) {
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
        let mut attempts = 0;
        loop {
            attempts += 1;
            let current = self
                .tailnet()
                .policy()
                .await
                .map_err(|e| ChangeError::tailnet("reading the policy", e))?;
            let mut doc = hujson::Document::parse(&current.text).map_err(|e| {
                ChangeError::Refused(format!("the tailnet's policy file does not parse: {e}"))
            })?;
            let mut changes: Vec<String> = Vec::new();
            let mut intents = Vec::new();
            for p in pending {
                let Some(path) = policy_path(&p.item.revocation) else {
                    continue;
                };
                let path = sources_path(&doc, path);
                let Some(members) = doc.strings(&path) else {
                    continue; // the group or rule is gone: verified as gone below
                };
                let present: Vec<&str> = members
                    .iter()
                    .filter(|m| m.eq_ignore_ascii_case(&p.item.subject))
                    .map(String::as_str)
                    .collect();
                if present.is_empty() {
                    continue;
                }
                let present: Vec<String> = present.into_iter().map(str::to_owned).collect();
                let refs: Vec<&str> = present.iter().map(String::as_str).collect();
                doc.remove_strings(&path, &refs).map_err(|e| {
                    ChangeError::Refused(format!(
                        "cannot remove {} from {}: {e}",
                        p.item.subject, p.item.target
                    ))
                })?;
                changes.push(format!("-{} {}", p.item.subject, p.item.target));
                intents.push((
                    None,
                    "review.revoking",
                    json!({"campaign": p.campaign, "item": p.item.id, "subject": p.item.subject,
                           "revocation": p.item.revocation}),
                ));
            }
            if changes.is_empty() {
                return Ok(doc);
            }
            intents.push((
                None,
                "tailnet.policy_write",
                json!({"changes": changes, "if_match": current.etag}),
            ));
            self.intend(intents).await?;
            match self
                .tailnet()
                .set_policy(doc.text(), Some(&current.etag))
                .await
            {
                Ok(_) => {
                    report.policy_writes += 1;
                    tracing::info!(changes = changes.len(), first = ?&changes[..changes.len().min(20)], "policy written: access review revocations");
                    self.record("tailnet.policy_written", json!({"changes": changes}))
                        .await;
                    // Verified against the policy as the tailnet now serves it.
                    let back = self
                        .tailnet()
                        .policy()
                        .await
                        .map_err(|e| ChangeError::tailnet("reading the policy back", e))?;
                    return hujson::Document::parse(&back.text).map_err(|e| {
                        ChangeError::NotVerified(format!(
                            "the policy read back does not parse: {e}"
                        ))
                    });
                }
                Err(tailnet::Error::PreconditionFailed) if attempts < MAX_POLICY_ATTEMPTS => {
                    tracing::info!(
                        attempt = attempts,
                        "policy changed meanwhile (412): re-reading"
                    );
                }
                Err(e) => {
                    self.record(
                        "tailnet.change_failed",
                        json!({"operation": "policy write (access review)", "changes": changes, "error": e.to_string()}),
                    )
                    .await;
                    return Err(ChangeError::tailnet("writing the policy", e));
                }
            }
        }
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
