//! A campaign's life in the store: started (population frozen), decided item by item,
//! revocations recorded as the reconciler verifies them, closed; due dates and schedules.

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

use super::*;
use crate::access::{Actor, Admin, Auditor};
use crate::audit::NewAuditEntry;
use crate::request::{SYSTEM, check_text};
use crate::service::{Service, ServiceError};

/// A new campaign id: `rv-` and 10 random characters.
fn new_id() -> String {
    crate::service::random_id("rv-")
}

fn chunk_key(id: &str, n: usize) -> String {
    format!("{ITEMS}{id}:{n:05}")
}

/// The number of an item id (`i42` → 42).
fn item_number(item: &str) -> Option<usize> {
    item.strip_prefix('i')?.parse().ok().filter(|n| *n > 0)
}

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid(message.into())
}

fn not_allowed(message: impl Into<String>) -> ServiceError {
    ServiceError::Lifecycle(crate::request::LifecycleError::NotAllowed(message.into()))
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, text: &str) -> Result<T, ServiceError> {
    serde_json::from_str(text).map_err(|e| invalid(format!("stored {key} does not read: {e}")))
}

fn encode<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn audit(
    at: OffsetDateTime,
    actor: &str,
    action: &str,
    detail: serde_json::Value,
) -> NewAuditEntry {
    NewAuditEntry {
        at: time_text(at),
        actor: actor.to_owned(),
        action: action.to_owned(),
        request: None,
        detail: detail.to_string(),
    }
}

impl Service {
    /// Starts a campaign (admins): a fresh sync, the population of its scopes frozen with a
    /// reviewer for each item, stored and audited.
    pub async fn create_review(
        &self,
        admin: Admin<'_>,
        new: NewCampaign,
    ) -> Result<CampaignView, ServiceError> {
        self.start_review(admin.login(), new).await
    }

    async fn start_review(
        &self,
        creator: &str,
        new: NewCampaign,
    ) -> Result<CampaignView, ServiceError> {
        let name = new.name.trim().to_owned();
        if name.is_empty() {
            return Err(invalid("a campaign needs a name"));
        }
        check_text("campaign name", &name)?;
        if new.scopes.is_empty() {
            return Err(invalid(
                "a campaign needs a scope: group:NAME, roles, critical:NAME, keys or entitlement:NAME",
            ));
        }
        let scopes: Vec<Scope> = new
            .scopes
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, String>>()
            .map_err(invalid)?;
        if let Some(sel) = &new.reviewer {
            sel.parse::<Selector>()
                .map_err(|e| invalid(format!("reviewer: {e}")))?;
        }
        let due = new.due.unwrap_or(Span::seconds(14 * 86_400));
        let (_, inventory) = self.sync_and_keep(&|_| {}).await?;
        let active = self
            .store()
            .requests(&crate::store::RequestFilter {
                states: vec![crate::request::State::Active],
                ..Default::default()
            })
            .await?;
        let mut items = population(
            &scopes,
            &PopulationInputs {
                config: self.config(),
                inventory: &inventory,
                active: &active,
            },
        )
        .map_err(invalid)?;
        let people = self.people().await?;
        let aliases = self
            .config()
            .directory
            .as_ref()
            .map(|d| d.aliases.clone())
            .unwrap_or_default();
        for item in &mut items {
            item.reviewer = assign_reviewer(
                &item.subject,
                &people,
                &aliases,
                new.reviewer.as_deref(),
                creator,
            );
        }
        let now = crate::now(self.clock().as_ref());
        let id = new_id();
        let campaign = Campaign {
            id: id.clone(),
            name,
            scopes: scopes.iter().map(ToString::to_string).collect(),
            reviewer: new.reviewer,
            on_due: new.on_due,
            keep_reason_required: new.keep_reason_required,
            due_at: now + due.to_time(),
            created_by: creator.to_owned(),
            created_at: now,
            state: "open".into(),
            closed_at: None,
            closed_by: None,
            close_note: None,
            audit_chain_head_at_close: None,
            schedule: new.schedule,
            generated: Generation {
                tool_version: env!("CARGO_PKG_VERSION").to_owned(),
                tailnet: self.config().tailnet.tailnet.clone(),
                inventory_taken_at: inventory.taken_at.clone(),
                started_by: creator.to_owned(),
                at: now,
            },
            item_count: items.len(),
        };
        drop(inventory);
        let at = time_text(now);
        // Items first, the campaign last: a campaign is never seen without all its items.
        for (n, chunk) in items.chunks(CHUNK).enumerate() {
            self.store()
                .put_state(&chunk_key(&id, n), &encode(&chunk), &at)
                .await?;
        }
        self.store()
            .put_state(&format!("{CAMPAIGN}{id}"), &encode(&campaign), &at)
            .await?;
        self.store()
            .put_state(&format!("{OPEN}{id}"), &id, &at)
            .await?;
        let mut by_reviewer: BTreeMap<&str, usize> = BTreeMap::new();
        for item in &items {
            *by_reviewer.entry(&item.reviewer).or_default() += 1;
        }
        self.store()
            .append_audit(&[audit(
                now,
                creator,
                "review.created",
                serde_json::json!({
                    "campaign": id,
                    "name": campaign.name,
                    "scopes": campaign.scopes,
                    "items": items.len(),
                    "due_at": time_text(campaign.due_at),
                    "on_due": campaign.on_due,
                    "inventory_taken_at": campaign.generated.inventory_taken_at,
                    "reviewers": by_reviewer,
                }),
            )])
            .await?;
        // Each reviewer hears of their share (mailed, in Slack, as webhook events).
        let assigned: Vec<NewAuditEntry> = by_reviewer
            .iter()
            .map(|(reviewer, n)| {
                audit(
                    now,
                    SYSTEM,
                    "review.assigned",
                    serde_json::json!({
                        "campaign": id, "name": campaign.name, "reviewer": reviewer,
                        "items": n, "due_at": time_text(campaign.due_at),
                    }),
                )
            })
            .collect();
        if !assigned.is_empty() {
            self.store().append_audit(&assigned).await?;
        }
        tracing::info!(campaign = %id, name = %campaign.name, items = items.len(), by = creator, "access review started");
        // An empty campaign has nothing to decide: it closes at once.
        if items.is_empty() {
            self.close_if_complete(&id).await?;
        }
        let campaign = self.campaign(&id).await?;
        let views = items.iter().map(|i| ItemView::of(i, None)).collect();
        Ok(view(campaign, views, now))
    }

    /// The stored campaign (no permission check: callers check).
    async fn campaign(&self, id: &str) -> Result<Campaign, ServiceError> {
        let key = format!("{CAMPAIGN}{id}");
        match self.store().get_state(&key).await? {
            Some(text) => decode(&key, &text),
            None => Err(ServiceError::UnknownReview(id.to_owned())),
        }
    }

    /// Every item of a campaign with its decision, in item order.
    async fn items_of(&self, id: &str) -> Result<Vec<(Item, Option<Decision>)>, ServiceError> {
        let mut items: Vec<Item> = Vec::new();
        for (key, text) in self.store().states(&format!("{ITEMS}{id}:")).await? {
            items.extend(decode::<Vec<Item>>(&key, &text)?);
        }
        let mut decisions: BTreeMap<String, Decision> = BTreeMap::new();
        for (key, text) in self.store().states(&format!("{DECISION}{id}:")).await? {
            let item = key.rsplit(':').next().unwrap_or_default().to_owned();
            decisions.insert(item, decode(&key, &text)?);
        }
        Ok(items
            .into_iter()
            .map(|i| {
                let d = decisions.remove(&i.id);
                (i, d)
            })
            .collect())
    }

    /// Campaigns the actor may see, newest first, with progress: admins and auditors see all,
    /// reviewers those with items for them.
    pub async fn reviews(&self, actor: &Actor) -> Result<Vec<CampaignView>, ServiceError> {
        let dir = self.directory().await?;
        let now = self.now();
        let mut out = Vec::new();
        for (key, text) in self.store().states(CAMPAIGN).await? {
            let campaign: Campaign = decode(&key, &text)?;
            let items = self.items_of(&campaign.id).await?;
            let all: Vec<ItemView> = items
                .iter()
                .map(|(i, d)| ItemView::of(i, d.as_ref()))
                .collect();
            let mut v = view(campaign, all, now);
            if !actor.is_auditor() {
                v.items
                    .retain(|i| actor.may_see_review_item(&i.subject, &i.reviewer, &dir));
                if v.items.is_empty() {
                    continue;
                }
            }
            // Lists carry progress, not items.
            v.items.clear();
            out.push(v);
        }
        out.sort_by_key(|v| std::cmp::Reverse(v.campaign.created_at));
        Ok(out)
    }

    /// One campaign: admins and auditors see every item, a reviewer their own items.
    pub async fn review(&self, actor: &Actor, id: &str) -> Result<CampaignView, ServiceError> {
        let campaign = self.campaign(id).await?;
        let dir = self.directory().await?;
        let items = self.items_of(id).await?;
        let mut v = view(
            campaign,
            items
                .iter()
                .map(|(i, d)| ItemView::of(i, d.as_ref()))
                .collect(),
            self.now(),
        );
        if !actor.is_auditor() {
            v.items
                .retain(|i| actor.may_see_review_item(&i.subject, &i.reviewer, &dir));
            if v.items.is_empty() {
                return Err(ServiceError::UnknownReview(id.to_owned()));
            }
        }
        Ok(v)
    }

    /// The undecided items of open campaigns that `actor` may decide, by campaign.
    pub async fn my_reviews(
        &self,
        actor: &Actor,
    ) -> Result<Vec<(Campaign, Vec<ItemView>)>, ServiceError> {
        let dir = self.directory().await?;
        let mut out = Vec::new();
        for (key, _) in self.store().states(OPEN).await? {
            let id = key.trim_start_matches(OPEN);
            let campaign = match self.campaign(id).await {
                Ok(c) if c.is_open() => c,
                _ => continue,
            };
            let mine: Vec<ItemView> = self
                .items_of(id)
                .await?
                .iter()
                .filter(|(i, d)| {
                    d.is_none()
                        && i.subject != actor.login()
                        && actor.is_reviewer_of(&i.reviewer, &dir)
                })
                .map(|(i, d)| ItemView::of(i, d.as_ref()))
                .collect();
            if !mine.is_empty() {
                out.push((campaign, mine));
            }
        }
        Ok(out)
    }

    /// Records decisions on a campaign's items. Each is checked first (the caller may decide
    /// it, it is not decided yet, a reason where one is required); if any fails, none is
    /// recorded. Revocations are handed to the reconciler.
    pub async fn decide_review(
        &self,
        actor: &Actor,
        id: &str,
        asks: &[Ask],
    ) -> Result<Vec<ItemView>, ServiceError> {
        let campaign = self.campaign(id).await?;
        if !campaign.is_open() {
            return Err(not_allowed(format!(
                "campaign {id} is closed; its decisions can no longer change"
            )));
        }
        if asks.is_empty() {
            return Err(invalid("no item to decide"));
        }
        let dir = self.directory().await?;
        let now = crate::now(self.clock().as_ref());
        let mut chunks: BTreeMap<usize, Vec<Item>> = BTreeMap::new();
        let mut checked: Vec<(Item, Decision)> = Vec::with_capacity(asks.len());
        let mut seen = BTreeSet::new();
        for ask in asks {
            if !seen.insert(ask.item.as_str()) {
                return Err(invalid(format!("item {} is listed twice", ask.item)));
            }
            let unknown = || invalid(format!("campaign {id} has no item {:?}", ask.item));
            let n = item_number(&ask.item).ok_or_else(unknown)?;
            let chunk = (n - 1) / CHUNK;
            if let std::collections::btree_map::Entry::Vacant(slot) = chunks.entry(chunk) {
                let key = chunk_key(id, chunk);
                let text = self.store().get_state(&key).await?.ok_or_else(unknown)?;
                slot.insert(decode(&key, &text)?);
            }
            let item = chunks
                .get(&chunk)
                .and_then(|c| c.iter().find(|i| i.id == ask.item))
                .ok_or_else(unknown)?;
            actor
                .may_decide_review_item(&item.subject, &item.reviewer, &dir)
                .map_err(|why| not_allowed(format!("item {}: {why}", item.id)))?;
            if let (Verdict::Revoke, Some(why)) = (ask.verdict, &item.protected) {
                return Err(not_allowed(format!(
                    "item {} cannot be revoked: {why}",
                    item.id
                )));
            }
            let reason = ask.reason.trim().to_owned();
            check_text("reason", &reason)?;
            let needs_reason = ask.verdict == Verdict::Revoke || campaign.keep_reason_required;
            if needs_reason && reason.is_empty() {
                return Err(invalid(format!(
                    "item {}: a {} needs a reason",
                    item.id,
                    ask.verdict.as_str()
                )));
            }
            checked.push((
                item.clone(),
                Decision {
                    decision: ask.verdict,
                    reason,
                    decided_by: actor.login().to_owned(),
                    decided_at: now,
                    revocation_verified_at: None,
                    revocation_error: None,
                    revocation_attempts: 0,
                },
            ));
        }
        self.record_decisions(&campaign, checked, actor.login())
            .await
    }

    /// Stores decisions (each claimed: an item is decided once), their audit entries, and the
    /// revocations for the reconciler.
    async fn record_decisions(
        &self,
        campaign: &Campaign,
        decisions: Vec<(Item, Decision)>,
        actor: &str,
    ) -> Result<Vec<ItemView>, ServiceError> {
        let id = &campaign.id;
        let now = crate::now(self.clock().as_ref());
        let at = time_text(now);
        let mut entries = Vec::with_capacity(decisions.len());
        let mut views = Vec::with_capacity(decisions.len());
        let mut refused = Vec::new();
        let revoke_key = |item: &Item| format!("{REVOKE}{id}:{}", item.id);
        // A revocation's record goes first: after a crash before its decision is stored, the
        // reconciler finds no revoke decision and ignores it; the other way round, a stored
        // revoke could be left without anyone to carry it out.
        let revoking: Vec<&(Item, Decision)> = decisions
            .iter()
            .filter(|(_, d)| d.decision == Verdict::Revoke)
            .collect();
        let markers = revoking.iter().map(|(item, _)| {
            let pending = PendingRevocation {
                campaign: id.clone(),
                item: item.clone(),
                retry_at: None,
                attempts: 0,
            };
            let (key, text, at) = (revoke_key(item), encode(&pending), at.clone());
            async move { self.store().put_state(&key, &text, &at).await }
        });
        for written in futures_util::future::join_all(markers).await {
            written?;
        }
        // Claimed together: the store commits concurrent writes at once.
        let claims = decisions.iter().map(|(item, decision)| {
            let (key, text, at) = (
                format!("{DECISION}{id}:{}", item.id),
                encode(decision),
                at.clone(),
            );
            async move { self.store().claim_state(&key, &text, &at).await }
        });
        let claimed = futures_util::future::join_all(claims).await;
        let mut revocations = 0;
        for ((item, decision), claimed) in decisions.into_iter().zip(claimed) {
            if !claimed? {
                if decision.decision == Verdict::Revoke {
                    // Decided by someone else first: this revoke is not theirs to carry out.
                    let keep = self
                        .store()
                        .get_state(&format!("{DECISION}{id}:{}", item.id))
                        .await?;
                    let theirs_revokes = keep
                        .and_then(|t| serde_json::from_str::<Decision>(&t).ok())
                        .is_some_and(|d| d.decision == Verdict::Revoke);
                    if !theirs_revokes {
                        self.store().delete_state(&revoke_key(&item)).await?;
                    }
                }
                refused.push(item.id.clone());
                continue;
            }
            if decision.decision == Verdict::Revoke {
                revocations += 1;
            }
            entries.push(audit(
                now,
                &decision.decided_by,
                "review.decided",
                serde_json::json!({
                    "campaign": id,
                    "item": item.id,
                    "subject": item.subject,
                    "access": item.access,
                    "decision": decision.decision,
                    "reason": decision.reason,
                }),
            ));
            views.push(ItemView::of(&item, Some(&decision)));
        }
        if !entries.is_empty() {
            self.store().append_audit(&entries).await?;
        }
        if !refused.is_empty() && views.is_empty() {
            return Err(not_allowed(format!(
                "already decided: {}",
                refused.join(", ")
            )));
        }
        tracing::info!(campaign = %id, decided = views.len(), revocations, by = actor, "access review decisions recorded");
        if revocations > 0 {
            // A value of its own each time (not the time: two in one second must differ).
            let wish = format!("{at} {:016x}", rand::random::<u64>());
            self.store()
                .put_state(REVOCATIONS_WANTED, &wish, &at)
                .await?;
            self.wake_reconciler();
        }
        self.close_if_complete(id).await?;
        Ok(views)
    }

    /// Closes a campaign (admins): every item decided and every revocation verified, or past
    /// its due date (undecided items then follow its `on_due` rule). Waits up to 20 s for
    /// the reconciler to verify revocations still in flight.
    pub async fn close_review(
        &self,
        admin: Admin<'_>,
        id: &str,
    ) -> Result<CampaignView, ServiceError> {
        let campaign = self.campaign(id).await?;
        if campaign.is_open() {
            let undecided = self
                .items_of(id)
                .await?
                .iter()
                .filter(|(_, d)| d.is_none())
                .count();
            if undecided > 0 {
                if self.now() < campaign.due_at {
                    return Err(ServiceError::NotYet(format!(
                        "campaign {id} has {undecided} undecided item{}; decide them, or wait for the due date ({}) when they are {}",
                        if undecided == 1 { "" } else { "s" },
                        time_text(campaign.due_at),
                        match campaign.on_due {
                            OnDue::Keep => "kept",
                            OnDue::Revoke => "revoked",
                        }
                    )));
                }
                self.apply_due_rule(&campaign).await?;
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                if self.close_if_complete(id).await? {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    let pending: Vec<String> = self
                        .items_of(id)
                        .await?
                        .iter()
                        .filter(|(_, d)| {
                            d.as_ref().is_some_and(|d| {
                                d.decision == Verdict::Revoke && d.revocation_verified_at.is_none()
                            })
                        })
                        .map(
                            |(i, d)| match d.as_ref().and_then(|d| d.revocation_error.clone()) {
                                Some(e) => format!("{} ({e})", i.id),
                                None => i.id.clone(),
                            },
                        )
                        .collect();
                    return Err(ServiceError::NotYet(format!(
                        "campaign {id}: revocations not yet verified: {}",
                        pending.join(", ")
                    )));
                }
                self.wake_reconciler();
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            tracing::info!(campaign = %id, by = admin.login(), "access review closed on request");
        }
        self.full_review(id).await
    }

    /// Undecided items of a campaign past its due date get the campaign's `on_due` verdict.
    async fn apply_due_rule(&self, campaign: &Campaign) -> Result<usize, ServiceError> {
        let now = crate::now(self.clock().as_ref());
        let verdict = match campaign.on_due {
            OnDue::Keep => Verdict::Keep,
            OnDue::Revoke => Verdict::Revoke,
        };
        let undecided: Vec<(Item, Decision)> = self
            .items_of(&campaign.id)
            .await?
            .into_iter()
            .filter(|(_, d)| d.is_none())
            .map(|(i, _)| {
                let (decision, reason) = match (&i.protected, verdict) {
                    (Some(why), Verdict::Revoke) => (
                        Verdict::Keep,
                        format!("undecided at the due date; kept, as it cannot be revoked: {why}"),
                    ),
                    _ => (
                        verdict,
                        format!(
                            "undecided at the due date {}: the campaign's rule is {}",
                            time_text(campaign.due_at),
                            verdict.as_str()
                        ),
                    ),
                };
                (
                    i,
                    Decision {
                        decision,
                        reason,
                        decided_by: SYSTEM.to_owned(),
                        decided_at: now,
                        revocation_verified_at: None,
                        revocation_error: None,
                        revocation_attempts: 0,
                    },
                )
            })
            .collect();
        let n = undecided.len();
        if n > 0 {
            tracing::warn!(campaign = %campaign.id, items = n, rule = verdict.as_str(), "access review due: undecided items follow the campaign's rule");
            self.record_decisions(campaign, undecided, SYSTEM).await?;
        }
        Ok(n)
    }

    /// Closes the campaign if every item is decided and every revocation verified; whether it
    /// is closed now.
    async fn close_if_complete(&self, id: &str) -> Result<bool, ServiceError> {
        let mut campaign = self.campaign(id).await?;
        if !campaign.is_open() {
            return Ok(true);
        }
        // Counted first: a large campaign is read whole only once every item is decided.
        let decided = self
            .store()
            .count_states(&format!("{DECISION}{id}:"))
            .await?;
        if decided < campaign.item_count as u64 {
            return Ok(false);
        }
        let items = self.items_of(id).await?;
        let complete = items.iter().all(|(_, d)| {
            d.as_ref()
                .is_some_and(|d| d.decision == Verdict::Keep || d.revocation_verified_at.is_some())
        });
        if !complete {
            return Ok(false);
        }
        let now = crate::now(self.clock().as_ref());
        let by_rule = items
            .iter()
            .filter(|(_, d)| d.as_ref().is_some_and(|d| d.decided_by == SYSTEM))
            .count();
        let revoked = items
            .iter()
            .filter(|(_, d)| d.as_ref().is_some_and(|d| d.decision == Verdict::Revoke))
            .count();
        let note = if by_rule == 0 && revoked == 0 {
            "every item decided and kept".to_owned()
        } else if by_rule == 0 {
            format!("every item decided; {revoked} revoked, every removal verified")
        } else {
            format!(
                "closed at the due date: {by_rule} undecided item{} {} by the campaign's rule",
                if by_rule == 1 { " was" } else { "s were" },
                match campaign.on_due {
                    OnDue::Keep => "kept",
                    OnDue::Revoke => "revoked",
                }
            )
        };
        let kept = items
            .iter()
            .filter(|(_, d)| d.as_ref().is_some_and(|d| d.decision == Verdict::Keep))
            .count();
        let written = self
            .store()
            .append_audit(&[audit(
                now,
                SYSTEM,
                "review.closed",
                serde_json::json!({
                    "campaign": id,
                    "items": items.len(),
                    "kept": kept,
                    "revoked": items.len() - kept,
                    "note": note,
                }),
            )])
            .await?;
        campaign.state = "closed".into();
        campaign.closed_at = Some(now);
        campaign.closed_by = Some(SYSTEM.to_owned());
        campaign.close_note = Some(note);
        campaign.audit_chain_head_at_close = written.last().map(|e| e.hash.clone());
        let at = time_text(now);
        self.store()
            .put_state(&format!("{CAMPAIGN}{id}"), &encode(&campaign), &at)
            .await?;
        self.store().delete_state(&format!("{OPEN}{id}")).await?;
        tracing::info!(campaign = %id, items = items.len(), kept, "access review closed");
        Ok(true)
    }

    /// Revocations still to make or verify (those waiting out a backoff too): each record
    /// whose item's stored decision is a revoke not yet verified. A record without one (left
    /// by a crash before its decision was stored) is not acted on.
    pub async fn pending_revocations(&self) -> Result<Vec<PendingRevocation>, ServiceError> {
        let mut out = Vec::new();
        for (key, text) in self.store().states(REVOKE).await? {
            let p: PendingRevocation = decode(&key, &text)?;
            let decided = self
                .store()
                .get_state(&format!("{DECISION}{}:{}", p.campaign, p.item.id))
                .await?
                .and_then(|t| serde_json::from_str::<Decision>(&t).ok());
            match decided {
                Some(d) if d.decision == Verdict::Revoke && d.revocation_verified_at.is_none() => {
                    out.push(p)
                }
                Some(_) => {
                    self.store().delete_state(&key).await?;
                }
                None => {}
            }
        }
        Ok(out)
    }

    /// Records what became of a revocation: verified (its pending record goes, the campaign
    /// may close) or failed (retried with backoff).
    pub async fn record_revocation(
        &self,
        pending: &PendingRevocation,
        outcome: Result<(), String>,
    ) -> Result<(), ServiceError> {
        let (id, item) = (&pending.campaign, &pending.item);
        let key = format!("{DECISION}{id}:{}", item.id);
        let Some(text) = self.store().get_state(&key).await? else {
            return Ok(());
        };
        let mut decision: Decision = decode(&key, &text)?;
        let now = crate::now(self.clock().as_ref());
        let at = time_text(now);
        let revoke_key = format!("{REVOKE}{id}:{}", item.id);
        match outcome {
            Ok(()) => {
                decision.revocation_verified_at = Some(now);
                decision.revocation_error = None;
                decision.revocation_attempts += 1;
                self.store()
                    .put_state(&key, &encode(&decision), &at)
                    .await?;
                self.store()
                    .append_audit(&[audit(
                        now,
                        SYSTEM,
                        "review.revocation_verified",
                        serde_json::json!({
                            "campaign": id, "item": item.id, "subject": item.subject,
                            "access": item.access, "revocation": item.revocation,
                        }),
                    )])
                    .await?;
                self.store().delete_state(&revoke_key).await?;
                tracing::info!(campaign = %id, item = %item.id, subject = %item.subject, "access review: revocation verified");
                self.close_if_complete(id).await?;
            }
            Err(error) => {
                decision.revocation_error = Some(error.clone());
                decision.revocation_attempts += 1;
                self.store()
                    .put_state(&key, &encode(&decision), &at)
                    .await?;
                let mut next = pending.clone();
                next.attempts += 1;
                let backoff = 2i64.saturating_pow(next.attempts.min(6)).min(60);
                next.retry_at = Some(now + time::Duration::seconds(backoff));
                self.store()
                    .put_state(&revoke_key, &encode(&next), &at)
                    .await?;
                self.store()
                    .append_audit(&[audit(
                        now,
                        SYSTEM,
                        "review.revocation_failed",
                        serde_json::json!({
                            "campaign": id, "item": item.id, "subject": item.subject,
                            "error": error, "attempt": next.attempts,
                        }),
                    )])
                    .await?;
                tracing::warn!(campaign = %id, item = %item.id, subject = %item.subject, error = %error, "access review: revocation failed; retrying");
            }
        }
        Ok(())
    }

    /// The leader's review duties: campaigns past their due date follow their rule and close
    /// when complete; `[[review_schedule]]`s start campaigns when due.
    pub async fn review_housekeeping(&self) -> Result<(), ServiceError> {
        let now = self.now();
        for (key, _) in self.store().states(OPEN).await? {
            let id = key.trim_start_matches(OPEN).to_owned();
            let campaign = match self.campaign(&id).await {
                Ok(c) => c,
                Err(ServiceError::UnknownReview(_)) => {
                    self.store().delete_state(&key).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if campaign.is_open() && now >= campaign.due_at {
                self.apply_due_rule(&campaign).await?;
            } else if campaign.is_open() {
                self.remind_reviewers(&campaign).await?;
            }
            self.close_if_complete(&id).await?;
        }
        for schedule in &self.config().review_schedules {
            let key = format!("{SCHEDULE}{}", schedule.name);
            let last = self
                .store()
                .get_state(&key)
                .await?
                .and_then(|t| tailnet::clock::parse_rfc3339(&t));
            if last.is_some_and(|l| now - l < schedule.every.to_time()) {
                continue;
            }
            let at = time_text(now);
            self.store().put_state(&key, &at, &at).await?;
            let started = self
                .start_review(
                    SYSTEM,
                    NewCampaign {
                        name: format!("{} {}", schedule.name, &at[..10.min(at.len())]),
                        scopes: schedule.scopes.clone(),
                        due: Some(schedule.due_in),
                        reviewer: schedule.reviewer.clone(),
                        on_due: schedule.on_due,
                        keep_reason_required: schedule.keep_reason_required,
                        schedule: Some(schedule.name.clone()),
                    },
                )
                .await;
            match started {
                Ok(c) => {
                    tracing::info!(schedule = %schedule.name, campaign = %c.campaign.id, items = c.items.len(), "scheduled access review started")
                }
                Err(e) => {
                    tracing::error!(schedule = %schedule.name, error = %e, "cannot start a scheduled access review")
                }
            }
        }
        Ok(())
    }

    /// A campaign with every item (for exports and evidence: auditors).
    pub async fn review_for_export(
        &self,
        _auditor: Auditor<'_>,
        id: &str,
    ) -> Result<CampaignView, ServiceError> {
        self.full_review(id).await
    }

    /// Records that a campaign's evidence was exported; the audit chain's head right after.
    pub async fn record_review_export(
        &self,
        auditor: Auditor<'_>,
        id: &str,
    ) -> Result<crate::service::AuditHead, ServiceError> {
        let now = crate::now(self.clock().as_ref());
        self.store()
            .append_audit(&[audit(
                now,
                auditor.login(),
                "review.exported",
                serde_json::json!({ "campaign": id }),
            )])
            .await?;
        tracing::info!(campaign = %id, by = auditor.login(), "access review exported");
        self.audit_head().await
    }

    async fn full_review(&self, id: &str) -> Result<CampaignView, ServiceError> {
        let campaign = self.campaign(id).await?;
        let items = self.items_of(id).await?;
        Ok(view(
            campaign,
            items
                .iter()
                .map(|(i, d)| ItemView::of(i, d.as_ref()))
                .collect(),
            self.now(),
        ))
    }

    /// Once per campaign, when it is due within `[notifications] remind_reviewers_before_due`:
    /// a `review.reminder` for each reviewer with items still undecided.
    async fn remind_reviewers(&self, campaign: &Campaign) -> Result<usize, ServiceError> {
        let now = crate::now(self.clock().as_ref());
        let window = self
            .config()
            .notifications
            .remind_reviewers_before_due
            .to_time();
        if campaign.due_at - now > window {
            return Ok(0);
        }
        let at = time_text(now);
        if !self
            .store()
            .claim_state(&format!("review-reminded:{}", campaign.id), &at, &at)
            .await?
        {
            return Ok(0);
        }
        let entries: Vec<NewAuditEntry> =
            undecided_by_reviewer(&self.items_of(&campaign.id).await?)
                .into_iter()
                .map(|(reviewer, n)| {
                    audit(
                        now,
                        SYSTEM,
                        "review.reminder",
                        serde_json::json!({
                            "campaign": campaign.id, "name": campaign.name, "reviewer": reviewer,
                            "items": n, "due_at": time_text(campaign.due_at),
                        }),
                    )
                })
                .collect();
        if !entries.is_empty() {
            self.store().append_audit(&entries).await?;
            tracing::info!(campaign = %campaign.id, reviewers = entries.len(), "access review: reviewers reminded");
        }
        Ok(entries.len())
    }

    /// Every campaign created before `to` and not closed before `from` (auditors).
    pub async fn reviews_between(
        &self,
        auditor: Auditor<'_>,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<CampaignView>, ServiceError> {
        let mut out = Vec::new();
        for (key, text) in self.store().states(CAMPAIGN).await? {
            let c: Campaign = decode(&key, &text)?;
            if c.created_at < to && c.closed_at.is_none_or(|t| t >= from) {
                out.push(self.review_for_export(auditor, &c.id).await?);
            }
        }
        out.sort_by_key(|v| v.campaign.created_at);
        Ok(out)
    }
}

/// Each reviewer's undecided items.
fn undecided_by_reviewer(items: &[(Item, Option<Decision>)]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (i, _) in items.iter().filter(|(_, d)| d.is_none()) {
        *out.entry(i.reviewer.clone()).or_default() += 1;
    }
    out
}
