//! Who may do what: every rule in one place.
//!
//! A caller is resolved once per call into an [`Actor`] (by [`crate::service::Service::actor`],
//! which refuses logins that are not users of the tailnet). Operations that need a permission
//! take a capability value — [`Admin`], [`Auditor`], [`Reviewer`] (for one entitlement),
//! [`Revoker`] (for one request) — that only this module can make, so code without the
//! permission cannot call them: the request lifecycle's approve, deny and revoke take them.
//! Request-level rules (see, drop) are [`Actor`] methods here too.

use crate::config::RequestsVisible;
use crate::entitlement::{Directory, Entitlement, Selector};
use crate::request::Request;

/// Everyone who may approve a request by `requester` for `entitlement`: the tailnet users its
/// approvers select, but the requester unless it allows self-approval. (Who is mailed and
/// messaged a request to decide.)
pub fn eligible_approvers(
    entitlement: &Entitlement,
    requester: &str,
    dir: &Directory,
) -> Vec<String> {
    dir.roles
        .keys()
        .filter(|login| entitlement.self_approval || *login != requester)
        .filter(|login| dir.matches_any(&entitlement.approvers, login))
        .cloned()
        .collect()
}

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// An API token (`Authorization: Bearer`).
    ApiToken,
    /// A web session cookie.
    WebSession,
    /// The command line on the server, with the config file (an operator).
    Local,
    /// A Slack user mapped to their login (a linked account, or their Slack e-mail).
    Slack,
}

/// A resolved caller: a tailnet user, and what tidegate knows of their roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    login: String,
    admin: bool,
    auditor: bool,
}

/// Admin capability: adopt groups, act on anyone's tokens, revoke any grant, read everything.
#[derive(Debug, Clone, Copy)]
pub struct Admin<'a>(&'a Actor);

/// Auditor capability (admins have it too): read every request and the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Auditor<'a>(&'a Actor);

/// May review (approve, deny) requests for one entitlement: one of its approvers.
#[derive(Debug, Clone)]
pub struct Reviewer {
    login: String,
    entitlement: String,
}

/// May end one request's grant early: its requester (a drop), a reviewer of its entitlement,
/// or an admin.
#[derive(Debug, Clone)]
pub struct Revoker {
    login: String,
    request: String,
}

impl Admin<'_> {
    pub fn login(&self) -> &str {
        &self.0.login
    }
}

impl Auditor<'_> {
    pub fn login(&self) -> &str {
        &self.0.login
    }
}

impl Reviewer {
    pub fn login(&self) -> &str {
        &self.login
    }

    /// The entitlement whose requests this reviewer may review.
    pub fn entitlement(&self) -> &str {
        &self.entitlement
    }
}

impl Revoker {
    pub fn login(&self) -> &str {
        &self.login
    }

    /// The request this revoker may end.
    pub fn request(&self) -> &str {
        &self.request
    }
}

impl Actor {
    /// Resolves a login's tidegate roles: admins are the tailnet's owners and admins and the
    /// config's `[roles] admins`; auditors its auditor role and `[roles] auditors`.
    pub(crate) fn resolve(
        login: &str,
        via: Via,
        roles: &crate::config::Roles,
        dir: &Directory,
    ) -> Actor {
        let admin = dir.matches(&Selector::Role("admin".into()), login)
            || dir.matches_any(&roles.admins, login)
            || via == Via::Local;
        let auditor = admin
            || dir.roles.get(login).is_some_and(|r| r == "auditor")
            || dir.matches_any(&roles.auditors, login);
        Actor {
            login: login.to_owned(),
            admin,
            auditor,
        }
    }

    pub fn login(&self) -> &str {
        &self.login
    }

    pub fn is_admin(&self) -> bool {
        self.admin
    }

    pub fn is_auditor(&self) -> bool {
        self.auditor
    }

    pub fn admin(&self) -> Option<Admin<'_>> {
        self.admin.then_some(Admin(self))
    }

    pub fn auditor(&self) -> Option<Auditor<'_>> {
        self.auditor.then_some(Auditor(self))
    }

    /// May review requests for `entitlement`: one of its approvers.
    pub fn reviewer(&self, entitlement: &Entitlement, dir: &Directory) -> Option<Reviewer> {
        dir.matches_any(&entitlement.approvers, &self.login)
            .then(|| Reviewer {
                login: self.login.clone(),
                entitlement: entitlement.name.clone(),
            })
    }

    /// [`Self::reviewer`], or why not (naming the approvers).
    pub fn review(&self, entitlement: &Entitlement, dir: &Directory) -> Result<Reviewer, String> {
        self.reviewer(entitlement, dir).ok_or_else(|| {
            let who: Vec<String> = entitlement
                .approvers
                .iter()
                .map(|s| s.to_string())
                .collect();
            format!(
                "{} may not review {:?} requests: its approvers are {}",
                self.login,
                entitlement.name,
                if who.is_empty() {
                    "nobody".to_owned()
                } else {
                    who.join(", ")
                }
            )
        })
    }

    /// May end `request`'s grant early (see [`Revoker`]), or why not.
    pub fn revoker(
        &self,
        request: &Request,
        entitlement: &Entitlement,
        dir: &Directory,
    ) -> Result<Revoker, String> {
        if self.may_revoke(request, Some(entitlement), dir) {
            Ok(Revoker {
                login: self.login.clone(),
                request: request.id.clone(),
            })
        } else {
            Err(format!(
                "{} may not revoke {}: only the requester, an approver of {:?} or an admin can",
                self.login, request.id, entitlement.name
            ))
        }
    }

    /// May review `request` now: pending (or an active grant with a pending extension), not
    /// yet reviewed by them, one of its entitlement's reviewers, and not their own unless the
    /// entitlement allows self-approval.
    pub fn may_review(
        &self,
        request: &Request,
        entitlement: &Entitlement,
        dir: &Directory,
    ) -> bool {
        let reviews = match (&request.state, &request.extension) {
            (crate::request::State::Pending, _) => &request.reviews,
            (crate::request::State::Active, Some(ext)) => &ext.reviews,
            _ => return false,
        };
        !reviews.iter().any(|rev| rev.reviewer == self.login)
            && self.reviewer(entitlement, dir).is_some()
            && (entitlement.self_approval || request.requester != self.login)
    }

    /// May see `request` (others get "no such request"): its requester, its entitlement's
    /// reviewers, admins and auditors; everyone with `requests_visible = "everyone"`.
    pub fn may_see(
        &self,
        request: &Request,
        entitlement: Option<&Entitlement>,
        dir: &Directory,
        visible: RequestsVisible,
    ) -> bool {
        visible == RequestsVisible::Everyone
            || self.auditor
            || request.requester == self.login
            || entitlement.is_some_and(|e| self.reviewer(e, dir).is_some())
    }

    /// May decide an access review item about `subject`'s access, assigned to `reviewer` (a
    /// login or a selector): never one's own access; admins any other item; otherwise the
    /// item's reviewer, or a member of the selector it names.
    pub fn may_decide_review_item(
        &self,
        subject: &str,
        reviewer: &str,
        dir: &Directory,
    ) -> Result<(), String> {
        if subject.eq_ignore_ascii_case(&self.login) {
            return Err(format!(
                "{} may not review their own access; it is reviewed by {reviewer}",
                self.login
            ));
        }
        if self.admin || self.is_reviewer_of(reviewer, dir) {
            Ok(())
        } else {
            Err(format!(
                "{} may not decide it: it is reviewed by {reviewer} (or an admin)",
                self.login
            ))
        }
    }

    /// Is the reviewer an item names: that login, or one of the people its selector selects.
    pub fn is_reviewer_of(&self, reviewer: &str, dir: &Directory) -> bool {
        reviewer == self.login
            || reviewer
                .parse::<Selector>()
                .is_ok_and(|s| !matches!(s, Selector::Login(_)) && dir.matches(&s, &self.login))
    }

    /// May see an access review item: auditors and admins every item; others the items they
    /// may decide.
    pub fn may_see_review_item(&self, subject: &str, reviewer: &str, dir: &Directory) -> bool {
        self.auditor || self.may_decide_review_item(subject, reviewer, dir).is_ok()
    }

    /// May drop `request`: one's own grant only.
    pub fn may_drop(&self, request: &Request) -> bool {
        request.requester == self.login
    }

    /// May revoke `request`: its requester, its entitlement's reviewers, and admins.
    pub fn may_revoke(
        &self,
        request: &Request,
        entitlement: Option<&Entitlement>,
        dir: &Directory,
    ) -> bool {
        self.admin
            || request.requester == self.login
            || entitlement.is_some_and(|e| self.reviewer(e, dir).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Roles};
    use crate::request::{Ask, Request};

    const CONFIG: &str = r#"
[tailnet]
api_token = "tskey-api-test"

[roles]
auditors = ["erin@example.com"]

[[entitlement]]
name = "prod-ssh"
strategy = "group"
group = "group:prod"
requesters = ["autogroup:member"]
approvers = ["group:sre"]
"#;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Op {
        See,
        SeeWhenEveryone,
        Review,
        Drop,
        Revoke,
        Audit,
        Admin,
        ReviewNow,
    }

    /// Actor × operation → allowed, on one request by dave.
    #[test]
    fn who_may_do_what_table() {
        let config = Config::parse(CONFIG, "test").unwrap();
        let mut dir = Directory::default();
        for (login, role) in [
            ("owner@example.com", "owner"),
            ("admin@example.com", "admin"),
            ("sre@example.com", "member"),
            ("dave@example.com", "member"),
            ("eve@example.com", "member"),
            ("erin@example.com", "member"),
            ("tsaud@example.com", "auditor"),
        ] {
            dir.roles.insert(login.into(), role.into());
        }
        dir.groups
            .insert("group:sre".into(), ["sre@example.com".into()].into());
        let e = config.entitlement("prod-ssh").unwrap();
        let (r, _) = Request::create(
            "r1".into(),
            e,
            "dave@example.com",
            Ask {
                reason: "x".into(),
                ..Ask::default()
            },
            &dir,
            time::macros::datetime!(2026-11-22 10:00 UTC),
        )
        .unwrap();
        use Op::*;
        let table: &[(&str, Via, &[Op])] = &[
            (
                "owner@example.com",
                Via::ApiToken,
                &[See, SeeWhenEveryone, Revoke, Audit, Admin],
            ),
            (
                "admin@example.com",
                Via::WebSession,
                &[See, SeeWhenEveryone, Revoke, Audit, Admin],
            ),
            (
                "sre@example.com",
                Via::ApiToken,
                &[See, SeeWhenEveryone, Review, Revoke, ReviewNow],
            ),
            (
                "dave@example.com",
                Via::ApiToken,
                &[See, SeeWhenEveryone, Drop, Revoke],
            ),
            ("eve@example.com", Via::ApiToken, &[SeeWhenEveryone]),
            (
                "erin@example.com",
                Via::ApiToken,
                &[See, SeeWhenEveryone, Audit],
            ),
            (
                "tsaud@example.com",
                Via::WebSession,
                &[See, SeeWhenEveryone, Audit],
            ),
            (
                "ops@example.com",
                Via::Local,
                &[See, SeeWhenEveryone, Revoke, Audit, Admin],
            ),
        ];
        let roles: &Roles = &config.roles;
        for (login, via, allowed) in table {
            let actor = Actor::resolve(login, *via, roles, &dir);
            for op in [
                See,
                SeeWhenEveryone,
                Review,
                Drop,
                Revoke,
                Audit,
                Admin,
                ReviewNow,
            ] {
                let outcome = match op {
                    See => actor.may_see(&r, Some(e), &dir, RequestsVisible::Involved),
                    SeeWhenEveryone => actor.may_see(&r, Some(e), &dir, RequestsVisible::Everyone),
                    Review => actor.reviewer(e, &dir).is_some(),
                    Drop => actor.may_drop(&r),
                    Revoke => actor.may_revoke(&r, Some(e), &dir),
                    Audit => actor.auditor().is_some(),
                    Admin => actor.admin().is_some(),
                    ReviewNow => actor.may_review(&r, e, &dir),
                };
                assert_eq!(
                    outcome,
                    allowed.contains(&op),
                    "{login} via {via:?}: {op:?}"
                );
            }
        }
    }
}
