//! The operations people perform (request, approve, deny, cancel, drop, revoke, extend, list,
//! show), each checked by the request lifecycle and stored together with its audit entries.

use std::sync::Arc;

use rand::Rng;
use tailnet::{Clock, Tailnet};
use tokio::sync::{Mutex, Notify};

use crate::access::{Actor, Admin, Auditor, Via};
use crate::audit::NewAuditEntry;
use crate::config::Config;
use crate::entitlement::{Directory, Entitlement, Strategy};
use crate::live::Live;
use crate::request::{Ask, Event, LifecycleError, Request, State};
use crate::store::{RequestFilter, Store, StoreError};
use crate::{Span, time_text};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("no entitlement named {name:?}{}", did_you_mean(.suggestion))]
    UnknownEntitlement {
        name: String,
        /// The configured entitlement with the closest name, if one is close.
        suggestion: Option<String>,
    },
    #[error("no request {0}")]
    UnknownRequest(String),
    #[error("{owner} has no token {id}")]
    UnknownToken { owner: String, id: String },
    /// The login is not a user of the tailnet: nothing is done for it.
    #[error("{0} is not a user of the tailnet")]
    UnknownUser(String),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("tailnet: {0}")]
    Tailnet(#[from] tailnet::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("no access review {0}")]
    UnknownReview(String),
    /// Not possible yet (a campaign with undecided items or unverified revocations).
    #[error("{0}")]
    NotYet(String),
}

/// How long the directory (users and groups) is reused before it is read again.
const DIRECTORY_TTL: time::Duration = time::Duration::seconds(30);

/// The application's operations over a store, a tailnet and a clock.
pub struct Service {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    tailnet: Arc<dyn Tailnet>,
    clock: Arc<dyn Clock>,
    /// Wakes the reconciler when desired state changes.
    wake: Arc<Notify>,
    live: Mutex<Option<(time::OffsetDateTime, Arc<Live>)>>,
    /// An inventory sync is wanted before its schedule (a Tailscale webhook arrived).
    inventory_wanted: std::sync::atomic::AtomicBool,
    /// When the notifier last looked for pending requests to remind or escalate.
    pub(crate) pending_scanned: std::sync::Mutex<Option<time::OffsetDateTime>>,
}

/// Audit entries for events, stamped with the clock's time.
pub fn audit_entries(events: &[Event], now: time::OffsetDateTime) -> Vec<NewAuditEntry> {
    events
        .iter()
        .map(|e| NewAuditEntry {
            at: time_text(now),
            actor: e.actor.clone(),
            action: e.action.clone(),
            request: Some(e.request.clone()),
            detail: e.detail.to_string(),
        })
        .collect()
}

/// One log line per stored lifecycle change, with the request id (reasons and comments are
/// in the audit log, not here).
pub(crate) fn log_events(r: &Request, events: &[Event]) {
    for e in events {
        if e.action == "tailnet.change_failed" {
            continue; // logged as a warning where it happened
        }
        tracing::info!(
            request = %r.id,
            entitlement = %r.entitlement,
            requester = %r.requester,
            actor = %e.actor,
            state = r.state.as_str(),
            "{}",
            e.action
        );
    }
}

/// What tidegate recorded of a managed policy group: the members it found there when it
/// first managed the group (standing members: reported, never removed) until an admin adopts
/// the group, after which every member no grant explains is drift.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManagedGroup {
    pub group: String,
    pub standing: std::collections::BTreeSet<String>,
    pub first_managed_at: String,
    #[serde(default)]
    pub adopted_at: Option<String>,
    #[serde(default)]
    pub adopted_by: Option<String>,
}

/// The audit chain's head at a time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditHead {
    pub length: i64,
    pub hash: String,
    pub at: String,
}

/// The state record that asks the leader for a full pass.
const FULL_PASS_KEY: &str = "reconciler:full_pass_requested";

/// The state record key of a managed group.
fn managed_key(group: &str) -> String {
    format!("managed:{group}")
}

/// A new request id: `r-` and 10 random characters (see [`random_id`]).
fn new_id() -> String {
    random_id("r-")
}

/// `prefix` and 10 random base-32 characters (no 0, 1, l or o to misread).
pub(crate) fn random_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    let tail: String = (0..10)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{tail}")
}

/// What a requester submits.
#[derive(Debug, Clone, Default)]
pub struct NewRequest {
    pub entitlement: String,
    pub reason: String,
    pub duration: Option<Span>,
    pub start_at: Option<time::OffsetDateTime>,
    /// `posture` strategy: device names, hostnames, MagicDNS names or IDs; empty = all of
    /// the requester's own devices.
    pub devices: Vec<String>,
    pub break_glass: bool,
}

impl Service {
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        tailnet: Arc<dyn Tailnet>,
        clock: Arc<dyn Clock>,
    ) -> Service {
        Service {
            config,
            store,
            tailnet,
            clock,
            wake: Arc::new(Notify::new()),
            live: Mutex::new(None),
            inventory_wanted: std::sync::atomic::AtomicBool::new(false),
            pending_scanned: std::sync::Mutex::new(None),
        }
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn tailnet(&self) -> &Arc<dyn Tailnet> {
        &self.tailnet
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The clock's time to whole seconds: the one way domain code reads the time.
    pub fn now(&self) -> time::OffsetDateTime {
        crate::now(self.clock.as_ref())
    }

    /// Tells the reconciler that desired state changed.
    pub fn wake_reconciler(&self) {
        self.wake.notify_one();
    }

    /// Resolves when [`Service::wake_reconciler`] is called.
    /// Asks the leader to sync the inventory now (it wakes the reconciler's loop).
    pub fn want_inventory_sync(&self) {
        self.inventory_wanted
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Whether a sync was asked for since the last call.
    pub fn take_inventory_sync_wish(&self) -> bool {
        self.inventory_wanted
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// The tailnet's users, devices and policy, read at most every 30 seconds.
    pub async fn live(&self) -> Result<Arc<Live>, ServiceError> {
        let now = self.now();
        let mut cached = self.live.lock().await;
        if let Some((at, live)) = cached.as_ref()
            && now - *at < DIRECTORY_TTL
        {
            return Ok(live.clone());
        }
        let (users, devices, policy) = tokio::try_join!(
            self.tailnet.users(),
            self.tailnet.devices(),
            self.tailnet.policy()
        )?;
        let live = Arc::new(Live::new(users, devices, policy.text).map_err(ServiceError::Invalid)?);
        *cached = Some((now, live.clone()));
        Ok(live)
    }

    /// Users and groups, read from the tailnet at most every 30 seconds.
    pub async fn directory(&self) -> Result<Arc<Directory>, ServiceError> {
        Ok(self.live().await?.directory.clone())
    }

    /// Forgets what was read of the tailnet (after the policy, users or devices change).
    pub async fn refresh_directory(&self) {
        *self.live.lock().await = None;
    }

    pub fn entitlement(&self, name: &str) -> Result<&Entitlement, ServiceError> {
        self.config
            .entitlement(name)
            .ok_or_else(|| ServiceError::UnknownEntitlement {
                name: name.to_owned(),
                suggestion: closest(
                    name,
                    self.config
                        .entitlements
                        .iter()
                        .map(|e| e.name.as_str())
                        .chain(self.config.machines.iter().map(|m| m.name.as_str())),
                ),
            })
    }

    /// Resolves a caller once: a user of the tailnet, with their tidegate roles.
    pub async fn actor(&self, login: &str, via: Via) -> Result<Actor, ServiceError> {
        let dir = self.directory().await?;
        if via != Via::Local && !dir.is_user(login) {
            return Err(ServiceError::UnknownUser(login.to_owned()));
        }
        Ok(Actor::resolve(login, via, &self.config.roles, &dir))
    }

    /// Whether `actor` may review `request` now (see [`Actor::may_review`]).
    pub fn may_review(&self, request: &Request, actor: &Actor, dir: &Directory) -> bool {
        self.entitlement(&request.entitlement)
            .is_ok_and(|e| actor.may_review(request, e, dir))
    }

    /// The audit chain's head: how long it is and its last hash. Written out periodically (log,
    /// metrics) so a log cut short later is caught by comparing.
    pub async fn audit_head(&self) -> Result<AuditHead, ServiceError> {
        let length = self.store.audit_length().await?;
        let last = self.store.audit((length - 1).max(0), 1).await?;
        Ok(AuditHead {
            length,
            hash: last
                .first()
                .map_or(crate::audit::GENESIS.to_owned(), |e| e.hash.clone()),
            at: crate::time_text(self.now()),
        })
    }

    /// Revokes one of `owner`'s API tokens or web sessions by its public id: one's own, or
    /// anyone's as an admin. Audited and logged.
    pub async fn revoke_token(
        &self,
        actor: &Actor,
        owner: &str,
        id: &str,
    ) -> Result<crate::store::ApiToken, ServiceError> {
        if !(actor.is_admin() || owner == actor.login()) {
            return Err(ServiceError::Lifecycle(LifecycleError::NotAllowed(
                format!("{} may not revoke {owner}'s tokens", actor.login()),
            )));
        }
        let unknown = || ServiceError::UnknownToken {
            owner: owner.to_owned(),
            id: id.to_owned(),
        };
        let token = self
            .store
            .tokens_of(owner)
            .await?
            .into_iter()
            .find(|t| t.id() == id)
            .ok_or_else(unknown)?;
        if !self.store.delete_token(&token.hash).await? {
            return Err(unknown());
        }
        let kind = token.kind.as_str();
        tracing::info!(user = %owner, token = %id, kind, by = %actor.login(), "token revoked");
        let entry = NewAuditEntry {
            at: time_text(self.now()),
            actor: actor.login().to_owned(),
            action: "token.revoked".into(),
            request: None,
            detail: serde_json::json!({"token": id, "kind": kind, "user": owner}).to_string(),
        };
        self.store.append_audit(&[entry]).await?;
        Ok(token)
    }

    /// Every managed group tidegate has recorded, by name.
    pub async fn managed_groups(
        &self,
    ) -> Result<std::collections::BTreeMap<String, ManagedGroup>, ServiceError> {
        let mut out = std::collections::BTreeMap::new();
        for (key, value) in self.store.states("managed:").await? {
            let group: ManagedGroup = serde_json::from_str(&value).map_err(|e| {
                ServiceError::Store(StoreError::Corrupt(format!("state {key}: {e}")))
            })?;
            out.insert(group.group.clone(), group);
        }
        Ok(out)
    }

    pub(crate) async fn save_managed_group(
        &self,
        group: &ManagedGroup,
    ) -> Result<(), ServiceError> {
        let value = serde_json::to_string(group)
            .map_err(|e| ServiceError::Invalid(format!("cannot encode {}: {e}", group.group)))?;
        self.store
            .put_state(
                &managed_key(&group.group),
                &value,
                &crate::time_text(self.now()),
            )
            .await?;
        Ok(())
    }

    /// Standing members of the managed groups, for admins and auditors.
    pub async fn standing(&self, _auditor: Auditor<'_>) -> Result<Vec<ManagedGroup>, ServiceError> {
        Ok(self.managed_groups().await?.into_values().collect())
    }

    /// The machine entitlements' nodes (with the key each joined with, when seen) and tagged
    /// devices whose tags nothing explains (admins and auditors).
    pub async fn machine_nodes(
        &self,
        _auditor: Auditor<'_>,
    ) -> Result<crate::machine::NodesReport, ServiceError> {
        let (records, devices) = self.machine_keys().await?;
        let live = self.live().await?;
        let policy = policy::Policy::parse(&live.policy_text).map_err(|e| {
            ServiceError::Invalid(format!("the tailnet's policy file does not parse: {e}"))
        })?;
        Ok(crate::machine::nodes_report(
            &self.config.machines,
            &records,
            &devices,
            &policy.file,
            &live.directory,
            self.now(),
        ))
    }

    /// An admin adopts a managed group: its standing members lose their standing, so from the
    /// next full pass every member no grant explains is drift (removed where the entitlement
    /// says `remove_drift`). Audited.
    pub async fn adopt(&self, admin: Admin<'_>, group: &str) -> Result<ManagedGroup, ServiceError> {
        let managed = self
            .config
            .entitlements
            .iter()
            .any(|e| matches!(&e.strategy, Strategy::Group { group: g, .. } if g == group));
        if !managed {
            return Err(ServiceError::Invalid(format!(
                "{group} is not managed by any entitlement of this config"
            )));
        }
        let mut record = self
            .managed_groups()
            .await?
            .remove(group)
            .ok_or_else(|| {
                ServiceError::Invalid(format!(
                    "tidegate has not managed {group} yet: start the server once so it records the group's standing members"
                ))
            })?;
        let released = std::mem::take(&mut record.standing);
        let now = crate::time_text(self.now());
        record.adopted_at = Some(now.clone());
        record.adopted_by = Some(admin.login().to_owned());
        self.save_managed_group(&record).await?;
        let entry = NewAuditEntry {
            at: now,
            actor: admin.login().to_owned(),
            action: "group.adopted".into(),
            request: None,
            detail: serde_json::json!({"group": group, "no_longer_standing": released}).to_string(),
        };
        self.store.append_audit(&[entry]).await?;
        tracing::warn!(group, by = admin.login(), released = ?released, "group adopted: its former standing members are now drift");
        self.request_full_pass().await?;
        Ok(record)
    }

    /// Asks the leader, whichever process it is, for a full pass (drift included) now rather
    /// than at its next periodic one.
    pub async fn request_full_pass(&self) -> Result<(), ServiceError> {
        let now = crate::time_text(self.now());
        let nonce: u64 = rand::thread_rng().r#gen();
        self.store
            .put_state(FULL_PASS_KEY, &format!("{now} {nonce}"), &now)
            .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// The latest full-pass request (compared by the reconciler with the one it last served).
    pub async fn full_pass_requested(&self) -> Option<String> {
        self.store.get_state(FULL_PASS_KEY).await.ok().flatten()
    }

    /// Whether `actor` may see `request`.
    fn visible(&self, request: &Request, actor: &Actor, dir: &Directory) -> bool {
        actor.may_see(
            request,
            self.config.entitlement(&request.entitlement),
            dir,
            self.config.requests_visible,
        )
    }

    /// Entitlements `login` may request.
    pub async fn entitlements_for(&self, login: &str) -> Result<Vec<Entitlement>, ServiceError> {
        let dir = self.directory().await?;
        Ok(self
            .config
            .entitlements
            .iter()
            .filter(|e| dir.matches_any(&e.requesters, login))
            .cloned()
            .collect())
    }

    /// Resolves device names to the requester's own devices' node IDs; refuses devices that
    /// are not theirs.
    async fn own_devices(
        &self,
        requester: &str,
        names: &[String],
    ) -> Result<Vec<String>, ServiceError> {
        let mut live = self.live().await?;
        // A device that joined since the last read: read again, once.
        let unknown = |live: &Live| {
            names
                .iter()
                .any(|n| !live.devices.iter().any(|d| device_matches(d, n)))
        };
        if unknown(&live) {
            self.refresh_directory().await;
            live = self.live().await?;
        }
        let devices = &live.devices;
        let own: Vec<&tailnet::Device> = devices
            .iter()
            .filter(|d| d.user == requester && d.tags.is_empty())
            .collect();
        if names.is_empty() {
            if own.is_empty() {
                return Err(ServiceError::Invalid(format!(
                    "{requester} has no devices of their own in the tailnet"
                )));
            }
            return Ok(own.iter().map(|d| node_id(d)).collect());
        }
        let mut out = Vec::new();
        for name in names {
            let found = devices.iter().find(|d| device_matches(d, name));
            match found {
                None => {
                    return Err(ServiceError::Invalid(format!(
                        "no device named {name:?} in the tailnet"
                    )));
                }
                Some(d) if d.user != requester || !d.tags.is_empty() => {
                    return Err(ServiceError::Lifecycle(LifecycleError::NotAllowed(
                        format!("device {name:?} is not {requester}'s own device"),
                    )));
                }
                Some(d) => {
                    let id = node_id(d);
                    if !out.contains(&id) {
                        out.push(id);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn store_new(&self, request: &Request, events: &[Event]) -> Result<(), ServiceError> {
        let now = self.now();
        self.store
            .insert_request(request, &audit_entries(events, now))
            .await?;
        log_events(request, events);
        self.wake.notify_one();
        Ok(())
    }

    pub async fn create(&self, actor: &Actor, new: NewRequest) -> Result<Request, ServiceError> {
        let requester = actor.login();
        if self.config.machine(&new.entitlement).is_some() {
            return Err(ServiceError::Invalid(format!(
                "{:?} is a machine entitlement: CI jobs ask for its key with `tidegate machine authkey`",
                new.entitlement
            )));
        }
        let entitlement = self.entitlement(&new.entitlement)?.clone();
        let dir = self.directory().await?;
        let devices = match entitlement.strategy {
            Strategy::Posture { .. } | Strategy::Tag { .. } => {
                self.own_devices(requester, &new.devices).await?
            }
            _ if !new.devices.is_empty() => {
                return Err(ServiceError::Invalid(format!(
                    "{:?} uses the {} strategy; --device only applies to posture and tag entitlements",
                    entitlement.name,
                    entitlement.strategy.name()
                )));
            }
            Strategy::Role { ref role } => {
                self.check_role_raises(requester, role, &dir).await?;
                Vec::new()
            }
            _ => Vec::new(),
        };
        let ask = Ask {
            reason: new.reason,
            duration: new.duration,
            start_at: new.start_at,
            devices,
            break_glass: new.break_glass,
        };
        let (request, events) =
            Request::create(new_id(), &entitlement, requester, ask, &dir, self.now())?;
        // Refused now, naming the test, rather than after someone approved it. (A device that
        // joined since `live` was read made `own_devices` read again: take the newest.)
        let live = self.live().await?;
        crate::preflight::check(&live, &entitlement.strategy, requester, &request.devices)
            .map_err(|refusal| LifecycleError::Invalid(refusal.to_string()))?;
        self.store_new(&request, &events).await?;
        Ok(request)
    }

    /// A role grant must raise the user above their own role (the one recorded by an active
    /// role grant, else the role they have now): a grant never lowers anyone.
    async fn check_role_raises(
        &self,
        requester: &str,
        role: &str,
        dir: &Directory,
    ) -> Result<(), ServiceError> {
        let open = self
            .store
            .requests(&RequestFilter {
                requester: Some(requester.to_owned()),
                open_only: true,
                ..RequestFilter::default()
            })
            .await?;
        let own = crate::request::recorded_own_role(&open)
            .or_else(|| dir.roles.get(requester).cloned())
            .unwrap_or_else(|| "member".to_owned());
        if crate::entitlement::role_above(role, &own) {
            Ok(())
        } else {
            Err(ServiceError::Lifecycle(LifecycleError::Invalid(format!(
                "{requester} is already {own}; the {role} role would not raise them (a role grant never lowers a role)"
            ))))
        }
    }

    /// A request, if `actor` may see it (otherwise it does not exist for them).
    pub async fn get(&self, actor: &Actor, id: &str) -> Result<Request, ServiceError> {
        let request = self.load(id).await?;
        let dir = self.directory().await?;
        if self.visible(&request, actor, &dir) {
            Ok(request)
        } else {
            Err(ServiceError::UnknownRequest(id.to_owned()))
        }
    }

    async fn load(&self, id: &str) -> Result<Request, ServiceError> {
        self.store
            .request(id)
            .await?
            .ok_or_else(|| ServiceError::UnknownRequest(id.to_owned()))
    }

    /// The requests matching `filter` that `actor` may see.
    pub async fn list(
        &self,
        actor: &Actor,
        filter: &RequestFilter,
    ) -> Result<Vec<Request>, ServiceError> {
        let mut requests = self.store.requests(filter).await?;
        let dir = self.directory().await?;
        requests.retain(|r| self.visible(r, actor, &dir));
        Ok(requests)
    }

    /// Loads a request, applies `change`, stores it with its audit entries. Retries when a
    /// concurrent change won the race.
    async fn change<F>(
        &self,
        actor: &Actor,
        id: &str,
        mut change: F,
    ) -> Result<Request, ServiceError>
    where
        F: FnMut(
            &mut Request,
            &Entitlement,
            &Directory,
            time::OffsetDateTime,
        ) -> Result<Vec<Event>, ServiceError>,
    {
        for _ in 0..5 {
            let mut request = self.load(id).await?;
            let entitlement = self.entitlement(&request.entitlement)?.clone();
            let dir = self.directory().await?;
            if !self.visible(&request, actor, &dir) {
                return Err(ServiceError::UnknownRequest(id.to_owned()));
            }
            let now = self.now();
            let events = change(&mut request, &entitlement, &dir, now)?;
            request.version += 1;
            match self
                .store
                .update_request(&request, &audit_entries(&events, now))
                .await
            {
                Ok(()) => {
                    log_events(&request, &events);
                    self.wake.notify_one();
                    return Ok(request);
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Store(StoreError::Conflict(id.to_owned())))
    }

    /// Ends one request of a leaver (see `people::act_on_leaver`); retried on a concurrent
    /// change like every other.
    pub(crate) async fn end_request_for_leaver(&self, id: &str) -> Result<(), ServiceError> {
        for _ in 0..5 {
            let mut request = self.load(id).await?;
            let now = self.now();
            let events = request.end_for_leaver(now)?;
            request.version += 1;
            match self
                .store
                .update_request(&request, &audit_entries(&events, now))
                .await
            {
                Ok(()) => {
                    log_events(&request, &events);
                    return Ok(());
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Store(StoreError::Conflict(id.to_owned())))
    }

    pub async fn approve(
        &self,
        actor: &Actor,
        id: &str,
        comment: &str,
    ) -> Result<Request, ServiceError> {
        self.change(actor, id, |r, e, dir, now| {
            let reviewer = actor.review(e, dir).map_err(not_allowed)?;
            Ok(r.approve(e, &reviewer, comment, now)?)
        })
        .await
    }

    pub async fn deny(
        &self,
        actor: &Actor,
        id: &str,
        comment: &str,
    ) -> Result<Request, ServiceError> {
        self.change(actor, id, |r, e, dir, now| {
            let reviewer = actor.review(e, dir).map_err(not_allowed)?;
            Ok(r.deny(e, &reviewer, comment, now)?)
        })
        .await
    }

    pub async fn cancel(&self, actor: &Actor, id: &str) -> Result<Request, ServiceError> {
        self.change(actor, id, |r, _, _, now| Ok(r.cancel(actor.login(), now)?))
            .await
    }

    /// The requester ends their own grant early (or withdraws a pending request). Another's
    /// grant is refused, pointing at `revoke`: nothing changes.
    pub async fn drop_grant(&self, actor: &Actor, id: &str) -> Result<Request, ServiceError> {
        self.change(actor, id, |r, e, dir, now| {
            if !actor.may_drop(r) {
                return Err(ServiceError::Lifecycle(LifecycleError::NotAllowed(format!(
                    "{id} is {}'s grant, not yours: drop ends only your own; an approver or admin ends another's with revoke",
                    r.requester
                ))));
            }
            if r.state == State::Pending {
                return Ok(r.cancel(actor.login(), now)?);
            }
            let revoker = actor.revoker(r, e, dir).map_err(not_allowed)?;
            Ok(r.revoke(&revoker, "", now)?)
        })
        .await
    }

    /// Ends access early: an approver of its entitlement or an admin (or the requester, as a
    /// drop). A pending request of one's own is cancelled instead.
    pub async fn revoke(
        &self,
        actor: &Actor,
        id: &str,
        reason: &str,
    ) -> Result<Request, ServiceError> {
        self.change(actor, id, |r, e, dir, now| {
            let revoker = actor.revoker(r, e, dir).map_err(not_allowed)?;
            if r.state == State::Pending && actor.login() == r.requester {
                return Ok(r.cancel(actor.login(), now)?);
            }
            Ok(r.revoke(&revoker, reason, now)?)
        })
        .await
    }

    /// Marks a break-glass grant reviewed after the fact (admins and auditors), with a note.
    pub async fn review_break_glass(
        &self,
        actor: &Actor,
        id: &str,
        note: &str,
    ) -> Result<Request, ServiceError> {
        self.change(actor, id, |r, _, _, now| {
            let auditor = actor.auditor().ok_or_else(|| {
                not_allowed(format!(
                    "{} is not an admin or auditor: only they review break-glass grants",
                    actor.login()
                ))
            })?;
            Ok(r.review_break_glass(auditor, note, now)?)
        })
        .await
    }

    /// Break-glass grants, newest first: those not yet reviewed, then the reviewed ones.
    pub async fn break_glass_grants(
        &self,
        auditor: Auditor<'_>,
        limit: usize,
    ) -> Result<Vec<Request>, ServiceError> {
        let _ = auditor;
        let mut all: Vec<Request> = self
            .store
            .requests(&RequestFilter::default())
            .await?
            .into_iter()
            .filter(|r| r.break_glass)
            .collect();
        all.sort_by_key(|r| r.break_glass_review.is_some());
        all.truncate(limit);
        Ok(all)
    }

    pub async fn extend(
        &self,
        actor: &Actor,
        id: &str,
        duration: Span,
        reason: &str,
    ) -> Result<Request, ServiceError> {
        self.change(actor, id, |r, e, dir, now| {
            Ok(r.request_extension(e, actor.login(), duration, reason, dir, now)?)
        })
        .await
    }

    /// `authkey` strategy: mints the key for an approved request and returns its secret, once.
    /// Only the key's id is stored; the grant starts now.
    pub async fn claim_key(
        &self,
        actor: &Actor,
        id: &str,
    ) -> Result<(Request, String), ServiceError> {
        let request = self.get(actor, id).await?;
        if actor.login() != request.requester {
            return Err(ServiceError::Lifecycle(LifecycleError::NotAllowed(
                format!("only {} can claim the key of {id}", request.requester),
            )));
        }
        self.mint_request_key(request).await
    }

    /// Mints the key of an approved `authkey` request, once, and activates the grant: its time
    /// starts now. Only the key's id is stored.
    async fn mint_request_key(
        &self,
        mut request: Request,
    ) -> Result<(Request, String), ServiceError> {
        let id = request.id.clone();
        let entitlement = self.entitlement(&request.entitlement)?.clone();
        let Strategy::AuthKey {
            tags,
            ephemeral,
            reusable,
            preauthorized,
        } = &entitlement.strategy
        else {
            return Err(ServiceError::Invalid(format!(
                "{id} is not an auth key request"
            )));
        };
        let now = self.now();
        if request.state == State::Approved && request.pending_until <= now {
            return Err(ServiceError::Invalid(format!(
                "{id} was approved but its key was not claimed in time (by {}); request it again",
                crate::time_text(request.pending_until)
            )));
        }
        if request.state != State::Approved || !request.wants_access(now) {
            return Err(ServiceError::Invalid(format!(
                "{id} is {}: its key can only be claimed once, after approval",
                request.state.as_str()
            )));
        }
        let create = tailnet::CreateAuthKey {
            capabilities: tailnet::KeyCapabilities {
                devices: tailnet::DeviceCapabilities {
                    create: tailnet::DeviceCreateCapabilities {
                        reusable: *reusable,
                        ephemeral: *ephemeral,
                        preauthorized: *preauthorized,
                        tags: tags.clone(),
                    },
                },
            },
            expiry_seconds: Some(request.duration.as_secs()),
            description: format!("tidegate {id}"),
        };
        let key = self.tailnet.create_auth_key(&create).await?;
        let Some(secret) = key.key.clone() else {
            return Err(ServiceError::Invalid(
                "the tailnet returned a key without its secret".into(),
            ));
        };
        request.tailnet.key_id = Some(key.id.clone());
        request.tailnet.verified_at = Some(now);
        let events = request.activate(now, serde_json::json!({"key_id": key.id, "tags": tags}))?;
        request.version += 1;
        if let Err(e) = self
            .store
            .update_request(&request, &audit_entries(&events, now))
            .await
        {
            // Nobody will ever see this key: revoke it rather than leave it valid.
            tracing::error!(request = %id, key_id = %key.id, error = %e, "cannot record a claimed key: revoking it");
            let _ = self.tailnet.delete_key(&key.id).await;
            return Err(e.into());
        }
        log_events(&request, &events);
        if let Some(subject) = request.requester.strip_prefix("machine:") {
            self.record_machine_key(crate::machine::MintedRecord {
                key_id: key.id.clone(),
                entitlement: request.entitlement.clone(),
                subject: subject.to_owned(),
                tags: tags.clone(),
                ephemeral: *ephemeral,
                minted_at: time_text(now),
                expires_at: request.expires_at.map(time_text).unwrap_or_default(),
                device: None,
            })
            .await;
        }
        self.wake.notify_one();
        Ok((request, secret))
    }
}

/// A machine request as its job sees it when polling.
#[derive(Debug)]
pub enum MachineClaim {
    /// Waiting for approval.
    Pending(Request),
    /// Approved: the key, shown this once.
    Minted(MintedKey),
    /// The key was already taken.
    Taken(Request),
    /// Denied, lapsed or cancelled: no key will come.
    Ended(Request),
}

/// An auth key minted for a machine: its secret, shown once to the job that asked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MintedKey {
    pub key: String,
    /// The tailnet's id of the key.
    pub id: String,
    pub expires_at: String,
    pub tags: Vec<String>,
}

impl Service {
    /// Mints the auth key a machine entitlement gives, for a job whose token was verified
    /// (signature, issuer, audience, times, claims, replay and rate, by the caller). Audited
    /// as `machine.key_minted` with the token's subject; only the key's id is recorded.
    pub async fn mint_machine_key(
        &self,
        machine: &crate::machine::MachineEntitlement,
        subject: &str,
    ) -> Result<MintedKey, ServiceError> {
        let create = tailnet::CreateAuthKey {
            capabilities: tailnet::KeyCapabilities {
                devices: tailnet::DeviceCapabilities {
                    create: tailnet::DeviceCreateCapabilities {
                        reusable: machine.reusable,
                        ephemeral: machine.ephemeral,
                        preauthorized: machine.preauthorized,
                        tags: machine.tags.clone(),
                    },
                },
            },
            expiry_seconds: Some(machine.key_ttl.as_secs()),
            description: format!("tidegate machine {}", machine.name),
        };
        let key = self.tailnet.create_auth_key(&create).await?;
        let Some(secret) = key.key.clone() else {
            return Err(ServiceError::Invalid(
                "the tailnet returned a key without its secret".into(),
            ));
        };
        let now = self.now();
        let expires_at = key
            .expires
            .clone()
            .unwrap_or_else(|| time_text(now + machine.key_ttl.to_time()));
        let entry = NewAuditEntry {
            at: time_text(now),
            actor: format!("machine:{subject}"),
            action: "machine.key_minted".into(),
            request: None,
            detail: serde_json::json!({
                "entitlement": machine.name,
                "subject": subject,
                "key_id": key.id,
                "tags": machine.tags,
                "expires_at": expires_at,
                "ephemeral": machine.ephemeral,
                "reusable": machine.reusable,
            })
            .to_string(),
        };
        if let Err(e) = self.store.append_audit(&[entry]).await {
            // A key nobody can account for must not stay valid.
            tracing::error!(key_id = %key.id, error = %e, "cannot audit a machine key: revoking it");
            let _ = self.tailnet.delete_key(&key.id).await;
            return Err(e.into());
        }
        tracing::info!(entitlement = %machine.name, subject, key_id = %key.id, expires_at = %expires_at, "machine key minted");
        self.record_machine_key(crate::machine::MintedRecord {
            key_id: key.id.clone(),
            entitlement: machine.name.clone(),
            subject: subject.to_owned(),
            tags: machine.tags.clone(),
            ephemeral: machine.ephemeral,
            minted_at: time_text(now),
            expires_at: expires_at.clone(),
            device: None,
        })
        .await;
        Ok(MintedKey {
            key: secret,
            id: key.id,
            expires_at,
            tags: machine.tags.clone(),
        })
    }

    /// A request for a machine key that a person must approve: stored pending, for the
    /// entitlement's approvers, with the job's subject as its requester.
    pub async fn request_machine_key(
        &self,
        machine: &crate::machine::MachineEntitlement,
        subject: &str,
    ) -> Result<Request, ServiceError> {
        let entitlement = self.entitlement(&machine.name)?.clone();
        let (request, events) = Request::for_machine(new_id(), &entitlement, subject, self.now())?;
        self.store_new(&request, &events).await?;
        Ok(request)
    }

    /// What a job polling its machine request gets: still pending, the key (once), or why
    /// not. Only the subject that asked may see the request: to others it does not exist.
    pub async fn claim_machine_key(
        &self,
        machine: &crate::machine::MachineEntitlement,
        subject: &str,
        id: &str,
    ) -> Result<MachineClaim, ServiceError> {
        let request = self.load(id).await?;
        if request.requester != crate::machine::requester(subject)
            || request.entitlement != machine.name
        {
            return Err(ServiceError::UnknownRequest(id.to_owned()));
        }
        match request.state {
            State::Pending => Ok(MachineClaim::Pending(request)),
            State::Approved => {
                let (request, key) = self.mint_request_key(request).await?;
                let expires_at = request.expires_at.map(time_text).unwrap_or_default();
                Ok(MachineClaim::Minted(MintedKey {
                    key,
                    id: request.tailnet.key_id.clone().unwrap_or_default(),
                    expires_at,
                    tags: machine.tags.clone(),
                }))
            }
            _ if request.tailnet.key_id.is_some() => Ok(MachineClaim::Taken(request)),
            _ => Ok(MachineClaim::Ended(request)),
        }
    }

    /// Claims a machine token's id (`jti`) for its one use: `true` the first time, in any
    /// replica sharing the database; kept until the token expires, then pruned.
    pub async fn claim_token_id(
        &self,
        issuer: &str,
        jti: &str,
        until: time::OffsetDateTime,
    ) -> Result<bool, ServiceError> {
        let key = format!("jti:{issuer} {jti}");
        Ok(self
            .store
            .claim_state(&key, &time_text(until), &time_text(self.now()))
            .await?)
    }

    /// Keeps a minted machine key's record, to know its node later (best effort: logged).
    async fn record_machine_key(&self, record: crate::machine::MintedRecord) {
        let key = crate::machine::record_key(&record.key_id);
        let stored = match serde_json::to_string(&record) {
            Ok(value) => self
                .store
                .put_state(&key, &value, &time_text(self.now()))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = stored {
            tracing::error!(key_id = %record.key_id, error = %e, "cannot record a machine key: its node will not be tracked");
        }
    }

    /// The keys minted for machines, each with the node that joined with it (linked now if it
    /// appeared since), and the tailnet's devices.
    pub async fn machine_keys(
        &self,
    ) -> Result<(Vec<crate::machine::MintedRecord>, Vec<tailnet::Device>), ServiceError> {
        let devices = self.tailnet.devices().await?;
        let mut records = Vec::new();
        for (key, value) in self.store.states("machine_key:").await? {
            let record: crate::machine::MintedRecord =
                serde_json::from_str(&value).map_err(|e| {
                    ServiceError::Store(StoreError::Corrupt(format!("state {key}: {e}")))
                })?;
            records.push(record);
        }
        for i in crate::machine::link_nodes(&mut records, &devices) {
            let r = &records[i];
            tracing::info!(key_id = %r.key_id, device = r.device.as_deref().unwrap_or_default(), entitlement = %r.entitlement, "machine node joined");
            self.record_machine_key(r.clone()).await;
        }
        Ok((records, devices))
    }

    /// Deletes the ephemeral nodes of machine keys that are still there after their
    /// entitlement's `node_ttl` (audited as `machine.node_deleted`), and forgets keys whose
    /// node is gone or never came. The names of the devices deleted.
    pub async fn clean_machine_nodes(&self) -> Result<Vec<String>, ServiceError> {
        let now = self.now();
        let parse = |t: &str| tailnet::clock::parse_rfc3339(t);
        // Used token ids whose tokens expired: a replay would be refused for its expiry.
        for (key, until) in self.store.states("jti:").await? {
            if parse(&until).is_none_or(|u| u < now) {
                self.store.delete_state(&key).await?;
            }
        }
        // Without a minted key on record there is no node to look for: no device list.
        if self.store.states("machine_key:").await?.is_empty() {
            return Ok(Vec::new());
        }
        let (records, devices) = self.machine_keys().await?;
        let mut deleted = Vec::new();
        for r in records {
            let ttl = self
                .config
                .machine(&r.entitlement)
                .map_or(crate::Span::hours(6), |m| m.node_ttl)
                .to_time();
            let device = r
                .device
                .as_deref()
                .and_then(|id| devices.iter().find(|d| d.id == id));
            match device {
                Some(d) if d.is_ephemeral && parse(&d.created).is_some_and(|c| c + ttl < now) => {
                    self.tailnet.delete_device(&d.id).await?;
                    tracing::info!(device = %d.hostname, key_id = %r.key_id, entitlement = %r.entitlement, "machine node deleted after node_ttl");
                    let entry = NewAuditEntry {
                        at: time_text(now),
                        actor: crate::request::SYSTEM.to_owned(),
                        action: "machine.node_deleted".into(),
                        request: None,
                        detail: serde_json::json!({
                            "device": d.id, "hostname": d.hostname, "created": d.created,
                            "key_id": r.key_id, "entitlement": r.entitlement, "subject": r.subject,
                            "note": "an ephemeral node still there after node_ttl",
                        })
                        .to_string(),
                    };
                    self.store.append_audit(&[entry]).await?;
                    self.store
                        .delete_state(&crate::machine::record_key(&r.key_id))
                        .await?;
                    deleted.push(d.hostname.clone());
                }
                Some(_) => {}
                None => {
                    // Its node left (or never came and the key expired): nothing to track.
                    let expired = parse(&r.expires_at).is_some_and(|e| e < now);
                    if r.device.is_some() || expired {
                        self.store
                            .delete_state(&crate::machine::record_key(&r.key_id))
                            .await?;
                    }
                }
            }
        }
        Ok(deleted)
    }

    /// Records a refused machine request: which entitlement, the subject the token names
    /// (`verified: false` when its signature did not verify, so the name proves nothing), and
    /// why. Best effort: it is logged too.
    pub async fn record_machine_refusal(
        &self,
        entitlement: &str,
        subject: Option<&str>,
        verified: bool,
        status: u16,
        error: &str,
    ) {
        tracing::warn!(
            entitlement,
            subject = subject.unwrap_or("-"),
            verified,
            status,
            error,
            "machine request refused"
        );
        let entry = NewAuditEntry {
            at: time_text(self.now()),
            actor: format!("machine:{}", subject.unwrap_or("unknown")),
            action: "machine.refused".into(),
            request: None,
            detail: serde_json::json!({
                "entitlement": entitlement,
                "subject": subject,
                "verified": verified,
                "status": status,
                "error": error,
            })
            .to_string(),
        };
        if let Err(e) = self.store.append_audit(&[entry]).await {
            tracing::error!(error = %e, "cannot audit a machine refusal");
        }
    }
}

fn node_id(d: &tailnet::Device) -> String {
    if d.node_id.is_empty() {
        d.id.clone()
    } else {
        d.node_id.clone()
    }
}

/// A device by hostname, MagicDNS name (full or first label) or ID.
pub fn device_matches(d: &tailnet::Device, name: &str) -> bool {
    let name = name.trim_end_matches('.');
    d.hostname == name
        || d.name == name
        || d.name.split('.').next() == Some(name)
        || d.id == name
        || d.node_id == name
}

/// A refusal from [`crate::access`], as the lifecycle reports it.
fn not_allowed(why: String) -> ServiceError {
    ServiceError::Lifecycle(LifecycleError::NotAllowed(why))
}

/// The candidate closest to `name`, if it is close enough to be what was meant.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    candidates
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_owned())
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!(": did you mean {s:?}?"))
        .unwrap_or_default()
}
