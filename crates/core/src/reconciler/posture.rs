//! `posture`: a `custom:` attribute on a device is wanted while any active grant on that
//! (device, attribute) target lasts, with the latest end among them as Tailscale's own expiry;
//! it is deleted only when none remains. All changes of a pass go out in one batch call, and
//! each device is read back once.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;
use time::OffsetDateTime;

use super::{ChangeError, PassReport, Reconciler, event, needs_change};
use crate::entitlement::Strategy;
use crate::request::{Event, Request, State};
use crate::time_text;

/// How many devices are read back at once after a write.
const READ_CONCURRENCY: usize = 32;

/// One device's attribute.
type Target = (String, String);

/// What a target should carry: a value until a time, or nothing.
#[derive(Debug, Clone, PartialEq)]
struct Wanted {
    value: serde_json::Value,
    until: OffsetDateTime,
}

/// Whether a posture grant calls for a write on its devices: to apply, to remove, or to move
/// the expiry of an active grant whose end changed (an extension).
fn needs_write(r: &Request, now: OffsetDateTime) -> bool {
    needs_change(r, now)
        || (r.wants_access(now)
            && r.state == State::Active
            && r.tailnet.applied_until != r.expires_at)
}

impl Reconciler {
    fn posture_of(&self, r: &Request) -> Option<(String, serde_json::Value)> {
        match &self.entitlement(&r.entitlement)?.strategy {
            Strategy::Posture { attribute, value } => Some((attribute.clone(), value.clone())),
            _ => None,
        }
    }

    /// `requests`: every open posture request on the targets concerned.
    pub(super) async fn posture(&self, requests: Vec<Request>, report: &mut PassReport) {
        if requests.is_empty() {
            return;
        }
        let now = self.now();
        // An approved grant whose time ran out before it could be given fails.
        let (requests, late): (Vec<Request>, Vec<Request>) = requests.into_iter().partition(|r| {
            !(r.state == State::Approved && r.wants_access(now) && r.access_until(now) <= now)
        });
        self.fail_requests(late, "its time ran out before it could be applied", report)
            .await;
        // Which targets need a write: any grant on them to apply, to move, or to remove.
        let mut dirty: BTreeSet<Target> = BTreeSet::new();
        for r in &requests {
            if needs_write(r, now)
                && let Some((attribute, _)) = self.posture_of(r)
            {
                for device in &r.devices {
                    dirty.insert((device.clone(), attribute.clone()));
                }
            }
        }
        if dirty.is_empty() {
            return;
        }
        let touches = |r: &Request| {
            self.posture_of(r).is_some_and(|(attribute, _)| {
                r.devices
                    .iter()
                    .any(|d| dirty.contains(&(d.clone(), attribute.clone())))
            })
        };
        let (involved, _untouched): (Vec<Request>, Vec<Request>) =
            requests.into_iter().partition(|r| touches(r));
        // The intent first: each new grant's time counts from now.
        let involved = self.record_intent(involved, |_| {}, report).await;
        let now = self.now();
        let mut wanted: BTreeMap<Target, Option<Wanted>> =
            dirty.iter().map(|t| (t.clone(), None)).collect();
        for r in involved.iter().filter(|r| r.wants_access(now)) {
            let Some((attribute, value)) = self.posture_of(r) else {
                continue;
            };
            let until = r.access_until(now);
            for device in &r.devices {
                if let Some(slot) = wanted.get_mut(&(device.clone(), attribute.clone())) {
                    let later = slot.as_ref().is_none_or(|w| until > w.until);
                    if later {
                        *slot = Some(Wanted {
                            value: value.clone(),
                            until,
                        });
                    }
                }
            }
        }
        let outcome = self.write_posture(&wanted, &involved).await;
        let mut changes: Vec<(Request, Vec<Event>)> = Vec::new();
        let mut failures: BTreeMap<String, (ChangeError, Vec<Request>)> = BTreeMap::new();
        for mut r in involved {
            if !needs_write(&r, now) {
                continue;
            }
            let Some((attribute, _)) = self.posture_of(&r) else {
                continue;
            };
            let error =
                r.devices
                    .iter()
                    .find_map(|d| match outcome.get(&(d.clone(), attribute.clone())) {
                        Some(Err(e)) => Some(e.clone()),
                        _ => None,
                    });
            if let Some(e) = error {
                failures
                    .entry(e.to_string())
                    .or_insert_with(|| (e, Vec::new()))
                    .1
                    .push(r);
                continue;
            }
            let carried: Vec<String> = r
                .devices
                .iter()
                .filter_map(|d| {
                    wanted
                        .get(&(d.clone(), attribute.clone()))
                        .cloned()
                        .flatten()
                        .map(|w| time_text(w.until))
                })
                .collect();
            let detail = json!({"attribute": attribute, "devices": r.devices});
            if r.wants_access(now) {
                if r.state == State::Approved {
                    let mut detail = detail;
                    detail["expiry"] = json!(carried.first());
                    if let Ok(events) = r.activate(now, detail) {
                        r.tailnet.applied_until = r.expires_at;
                        r.tailnet.verified_at = Some(now);
                        changes.push((r, events));
                    }
                } else {
                    r.tailnet.applied_until = r.expires_at;
                    r.tailnet.verified_at = Some(now);
                    let events = vec![event(
                        &r,
                        "grant.expiry_moved",
                        json!({"attribute": attribute, "expiry": carried.first()}),
                    )];
                    changes.push((r, events));
                }
            } else {
                let mut detail = detail;
                if let Some(until) = carried.first() {
                    detail["note"] = json!(format!(
                        "attribute kept until {until} for another active grant"
                    ));
                }
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

    /// Writes every target's wanted state in one batch call (after recording the intent for
    /// each request concerned), then reads each device back once. Per target: verified, or why
    /// not.
    async fn write_posture(
        &self,
        wanted: &BTreeMap<Target, Option<Wanted>>,
        involved: &[Request],
    ) -> BTreeMap<Target, Result<(), ChangeError>> {
        let all = |e: ChangeError| wanted.keys().map(|t| (t.clone(), Err(e.clone()))).collect();
        let now = self.now();
        let intents = involved
            .iter()
            .filter(|r| needs_write(r, now))
            .map(|r| {
                let action = if r.wants_access(now) {
                    "grant.applying"
                } else {
                    "grant.removing"
                };
                let targets: Vec<serde_json::Value> = self
                    .posture_of(r)
                    .map(|(attribute, _)| {
                        r.devices
                            .iter()
                            .map(|d| {
                                let w = wanted.get(&(d.clone(), attribute.clone())).cloned().flatten();
                                json!({"device": d, "attribute": attribute, "expiry": w.map(|w| time_text(w.until))})
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (Some(r.id.clone()), action, json!({"targets": targets}))
            })
            .collect();
        if let Err(e) = self.intend(intents).await {
            return all(e);
        }
        let changes: Vec<tailnet::PostureChange> = wanted
            .iter()
            .map(|((device, attribute), w)| tailnet::PostureChange {
                device: device.clone(),
                key: attribute.clone(),
                set: w
                    .as_ref()
                    .map(|w| (w.value.clone(), Some(time_text(w.until)))),
            })
            .collect();
        let comment = format!("tidegate: {} posture change(s)", changes.len());
        let mut out = BTreeMap::new();
        tracing::debug!(changes = changes.len(), "writing posture attributes");
        match self
            .tailnet()
            .patch_posture_attributes(&changes, Some(&comment))
            .await
        {
            Ok(()) => {
                let set = changes.iter().filter(|c| c.set.is_some()).count();
                tracing::info!(
                    set,
                    deleted = changes.len() - set,
                    "posture attributes written"
                );
            }
            // One device the batch refuses (deleted, say) must not hold back the others:
            // each change alone, so only that one fails.
            Err(e) if !e.is_transient() && changes.len() > 1 => {
                tracing::warn!(error = %e, "the batch posture change was refused; applying each change alone");
                for change in &changes {
                    if let Err(e) = self
                        .tailnet()
                        .patch_posture_attributes(std::slice::from_ref(change), Some(&comment))
                        .await
                    {
                        if change.set.is_none() && matches!(e, tailnet::Error::NotFound(_)) {
                            continue; // a device that is gone holds no attribute
                        }
                        let target = (change.device.clone(), change.key.clone());
                        out.insert(
                            target,
                            Err(ChangeError::tailnet(
                                format!("setting {} on {}", change.key, change.device),
                                e,
                            )),
                        );
                    }
                }
            }
            Err(e) => {
                let e = ChangeError::tailnet("setting posture attributes", e);
                let detail = json!({"operation": "posture attributes", "error": e.to_string()});
                self.record("tailnet.change_failed", detail).await;
                return all(e);
            }
        }
        // Each device is read back once; the reads run concurrently (bounded), since the API
        // has no call that reads many devices' attributes.
        let devices: BTreeSet<String> = wanted.keys().map(|(d, _)| d.clone()).collect();
        let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(READ_CONCURRENCY));
        let mut reads = tokio::task::JoinSet::new();
        for device in devices.iter().cloned() {
            let tailnet = self.service.tailnet().clone();
            let limit = limit.clone();
            reads.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let read = tailnet.posture_attributes(&device).await;
                (device, read)
            });
        }
        let mut read_back = BTreeMap::new();
        while let Some(joined) = reads.join_next().await {
            if let Ok((device, read)) = joined {
                read_back.insert(device, read);
            }
        }
        for device in &devices {
            let read = read_back.remove(device).unwrap_or_else(|| {
                Err(tailnet::Error::Protocol(
                    "the read-back did not finish".into(),
                ))
            });
            for ((d, attribute), w) in wanted.iter().filter(|((d, _), _)| d == device) {
                let result = match (&read, w) {
                    (Err(tailnet::Error::NotFound(_)), None) => Ok(()),
                    (Err(e), _) => Err(ChangeError::tailnet(
                        format!("reading {device}'s attributes"),
                        e.clone(),
                    )),
                    (Ok(attrs), None) if attrs.attributes.contains_key(attribute) => Err(
                        ChangeError::NotVerified(format!("{attribute} is still on {device}")),
                    ),
                    (Ok(_), None) => Ok(()),
                    (Ok(attrs), Some(w)) => {
                        let expiry = time_text(w.until);
                        if attrs.attributes.get(attribute) != Some(&w.value) {
                            Err(ChangeError::NotVerified(format!(
                                "{attribute} did not stick on {device}"
                            )))
                        } else if attrs.expiries.get(attribute) != Some(&expiry) {
                            Err(ChangeError::NotVerified(format!(
                                "{attribute} on {device} expires at {:?}, not {expiry}",
                                attrs.expiries.get(attribute)
                            )))
                        } else {
                            Ok(())
                        }
                    }
                };
                out.entry((d.clone(), attribute.clone())).or_insert(result);
            }
        }
        out
    }
}
