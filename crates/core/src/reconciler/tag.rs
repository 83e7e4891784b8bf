//! `tag`: a device carries a tag while any active grant on that (device, tag) lasts. Each
//! device is a target: its tags are its own tags (recorded, with the intent, before tidegate
//! first changes them) plus the tags of its active grants; its own tags come back when no
//! grant remains, and only if the tags are still the ones tidegate set (a change made by
//! someone else in between wins, and is reported).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::{
    ChangeError, PassReport, Reconciler, each_target, event, needs_change, target_intents,
};
use crate::entitlement::Strategy;
use crate::request::{Event, Request};

impl Reconciler {
    fn tag_of(&self, r: &Request) -> Option<String> {
        match &self.entitlement(&r.entitlement)?.strategy {
            Strategy::Tag { tag } => Some(tag.clone()),
            _ => None,
        }
    }

    /// `requests`: every open tag request of the requesters concerned.
    pub(super) async fn tags(&self, requests: Vec<Request>, report: &mut PassReport) {
        let now = self.now();
        // Each device is a target, with every open request on it.
        let mut by_device: BTreeMap<String, Vec<Request>> = BTreeMap::new();
        for r in &requests {
            for device in &r.devices {
                by_device.entry(device.clone()).or_default().push(r.clone());
            }
        }
        by_device.retain(|_, rs| rs.iter().any(|r| needs_change(r, now)));
        if by_device.is_empty() {
            return;
        }
        // A request is done when every device of it is; outcomes are gathered per device, and
        // each request as its target left it (with its intent recorded, the newest version).
        type Outcome = Result<BTreeSet<String>, ChangeError>;
        let gathered: std::sync::Mutex<(BTreeMap<String, Outcome>, BTreeMap<String, Request>)> =
            std::sync::Mutex::new((BTreeMap::new(), BTreeMap::new()));
        let gathered_ref = &gathered;
        each_target(
            by_device.into_iter().collect(),
            report,
            |(device, requests)| async move {
                let mut part = PassReport::default();
                let (result, after) = self.tag_target(&device, requests, &mut part).await;
                if let Ok(mut g) = gathered_ref.lock() {
                    g.0.insert(device, result);
                    for r in after {
                        let newer = g.1.get(&r.id).is_none_or(|old| old.version < r.version);
                        if newer {
                            g.1.insert(r.id.clone(), r);
                        }
                    }
                }
                part
            },
        )
        .await;
        let (outcomes, latest) = gathered.into_inner().unwrap_or_default();
        let now = self.now();
        let mut changes: Vec<(Request, Vec<Event>)> = Vec::new();
        let mut failures: BTreeMap<String, (ChangeError, Vec<Request>)> = BTreeMap::new();
        for mut r in latest.into_values().filter(|r| needs_change(r, now)) {
            let mut carried = BTreeMap::new();
            let mut error = None;
            for device in &r.devices {
                match outcomes.get(device) {
                    Some(Ok(tags)) => {
                        carried.insert(device.clone(), tags.clone());
                    }
                    Some(Err(e)) => error = Some(e.clone()),
                    None => {}
                }
            }
            if let Some(e) = error {
                failures
                    .entry(e.to_string())
                    .or_insert_with(|| (e, Vec::new()))
                    .1
                    .push(r);
                continue;
            }
            let detail = json!({"tag": self.tag_of(&r), "devices": carried});
            if r.wants_access(now) {
                if let Ok(events) = r.activate(now, detail) {
                    r.tailnet.verified_at = Some(now);
                    changes.push((r, events));
                }
            } else {
                r.tailnet.removed_at = Some(now);
                r.tailnet.removal_verified_at = Some(now);
                let events = vec![event(&r, "grant.removal_verified", detail)];
                changes.push((r, events));
            }
        }
        self.settle(changes, report).await;
        for (_, (error, requests)) in failures {
            self.note_failure(requests, &error, report).await;
        }
    }

    /// Makes one device carry its own tags plus those of its active grants: the tags it
    /// carries afterwards (read back) or why not, and its requests as they are now (with
    /// their intent recorded).
    async fn tag_target(
        &self,
        device: &str,
        requests: Vec<Request>,
        report: &mut PassReport,
    ) -> (Result<BTreeSet<String>, ChangeError>, Vec<Request>) {
        let current = match self
            .tailnet()
            .device(device)
            .await
            .map_err(|e| ChangeError::tailnet(format!("reading device {device}"), e))
        {
            Ok(d) => d,
            Err(e) => return (Err(e), requests),
        };
        let current_tags: BTreeSet<String> = current.tags.iter().cloned().collect();
        let own = own_tags(device, &requests, &current_tags);
        let own_list: Vec<String> = own.iter().cloned().collect();
        let requests = self
            .record_intent(
                requests,
                |r| {
                    r.tailnet
                        .previous_tags
                        .get_or_insert_with(BTreeMap::new)
                        .insert(device.to_owned(), own_list.clone());
                },
                report,
            )
            .await;
        let result = self.tag_write(device, &requests, &own, current_tags).await;
        (result, requests)
    }

    async fn tag_write(
        &self,
        device: &str,
        requests: &[Request],
        own: &BTreeSet<String>,
        current_tags: BTreeSet<String>,
    ) -> Result<BTreeSet<String>, ChangeError> {
        let now = self.now();
        let granted: BTreeSet<String> = requests
            .iter()
            .filter(|r| r.wants_access(now))
            .filter_map(|r| self.tag_of(r))
            .collect();
        let set_by_us: BTreeSet<String> = requests
            .iter()
            .filter(|r| r.may_hold_access())
            .filter_map(|r| self.tag_of(r))
            .collect();
        let mut wanted: BTreeSet<String> = own.union(&granted).cloned().collect();
        if wanted == current_tags {
            return Ok(current_tags);
        }
        // Still what tidegate made of it: its own tags and some of the granted ones. If not,
        // someone else changed them: their tags stay (granted tags are only added).
        let ours = own.is_subset(&current_tags)
            && current_tags
                .iter()
                .all(|t| own.contains(t) || set_by_us.contains(t));
        if !ours {
            tracing::warn!(device, tags = ?current_tags, wanted = ?wanted, "device tags changed outside tidegate; theirs are kept");
            self.record(
                "grant.tags_changed_outside",
                json!({"device": device, "tags": current_tags, "tidegate_wanted": wanted}),
            )
            .await;
            wanted = current_tags.union(&granted).cloned().collect();
            if wanted == current_tags {
                return Ok(current_tags);
            }
        }
        let intents = target_intents(
            requests,
            now,
            &json!({"device": device, "tags": wanted, "from": current_tags, "own_tags": own}),
        );
        self.intend(intents).await?;
        let list: Vec<String> = wanted.iter().cloned().collect();
        self.tailnet()
            .set_device_tags(device, &list)
            .await
            .map_err(|e| ChangeError::tailnet(format!("setting the tags of {device}"), e))?;
        let read = self
            .tailnet()
            .device(device)
            .await
            .map_err(|e| ChangeError::tailnet(format!("reading device {device} back"), e))?;
        let after: BTreeSet<String> = read.tags.into_iter().collect();
        if after != wanted {
            return Err(ChangeError::NotVerified(format!(
                "{device} carries {after:?} after setting {wanted:?}"
            )));
        }
        tracing::info!(device, tags = ?wanted, "device tags set");
        Ok(after)
    }
}

/// The device's own tags: recorded by the first grant that changed them (with its intent,
/// before the write), or the tags it has now if no grant has touched it.
fn own_tags(device: &str, requests: &[Request], current: &BTreeSet<String>) -> BTreeSet<String> {
    requests
        .iter()
        .filter(|r| r.may_hold_access())
        .filter_map(|r| {
            let since = r.tailnet.applying_since.or(r.tailnet.applied_at)?;
            Some((
                since,
                r.tailnet.previous_tags.as_ref()?.get(device)?.clone(),
            ))
        })
        .min()
        .map(|(_, tags)| tags.into_iter().collect())
        .unwrap_or_else(|| current.clone())
}
