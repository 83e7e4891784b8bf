//! Who is calling: API access tokens (a user's rights) and OAuth access tokens (the client's
//! scopes), and what the scopes allow.

use base64::Engine as _;
use tailnet::AuditActor;
use tailnet::clock::parse_rfc3339;
use time::OffsetDateTime;

use crate::http::{ApiError, Req};
use crate::state::State;

/// Scopes a trust credential may hold (each also as `<scope>:read`).
pub const KNOWN_SCOPES: &[&str] = &[
    "all",
    "devices",
    "devices:core",
    "devices:routes",
    "devices:posture_attributes",
    "device_invites",
    "users",
    "policy_file",
    "dns",
    "auth_keys",
    "oauth_keys",
    "federated_keys",
    "api_access_tokens",
    "webhooks",
    "log_streaming",
    "logs:network",
    "logs:configuration",
    "account_settings",
    "feature_settings",
    "networking_settings",
    "services",
];

/// Whether `scope` names a known scope (`logs:configuration` exists only as `:read`).
pub fn is_known_scope(scope: &str) -> bool {
    match scope.strip_suffix(":read") {
        Some(base) => KNOWN_SCOPES.contains(&base),
        None => scope != "logs:configuration" && KNOWN_SCOPES.contains(&scope),
    }
}

/// Whether `granted` scopes allow reading (or, with `write`, changing) what `needed` covers.
pub fn scope_allows(granted: &[String], needed: &str, write: bool) -> bool {
    granted.iter().any(|g| {
        let (base, read_only) = match g.strip_suffix(":read") {
            Some(b) => (b, true),
            None => (g.as_str(), false),
        };
        if read_only && write {
            return false;
        }
        base == "all"
            || base == needed
            || needed
                .strip_prefix(base)
                .is_some_and(|rest| rest.starts_with(':'))
    })
}

/// The caller.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A user's API access token: the user's rights.
    User {
        key_id: String,
        user_id: String,
        login: String,
        display: String,
        role: String,
    },
    /// An access token minted from an OAuth client: tailnet-owned, scoped.
    OAuth {
        client_id: String,
        description: String,
        scopes: Vec<String>,
        tags: Vec<String>,
    },
}

/// The scopes a user's role amounts to.
fn role_scopes(role: &str) -> Vec<String> {
    let list: &[&str] = match role {
        "owner" | "admin" => &["all"],
        "network-admin" => &["all:read", "policy_file", "dns", "networking_settings"],
        "it-admin" => &[
            "all:read",
            "users",
            "devices",
            "auth_keys",
            "webhooks",
            "device_invites",
            "feature_settings",
        ],
        _ => &["all:read"],
    };
    list.iter().map(|s| (*s).to_owned()).collect()
}

impl Principal {
    pub fn scopes(&self) -> Vec<String> {
        match self {
            Principal::User { role, .. } => role_scopes(role),
            Principal::OAuth { scopes, .. } => scopes.clone(),
        }
    }

    pub fn allows(&self, scope: &str, write: bool) -> bool {
        scope_allows(&self.scopes(), scope, write)
    }

    /// 403 unless the token's scopes cover `scope`.
    pub fn require(&self, scope: &str, write: bool) -> Result<(), ApiError> {
        if self.allows(scope, write) {
            Ok(())
        } else {
            let needed = if write {
                scope.to_owned()
            } else {
                format!("{scope}:read")
            };
            Err(ApiError::forbidden(format!(
                "insufficient permissions: this call needs the {needed:?} scope"
            )))
        }
    }

    /// The user a user-owned token belongs to.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Principal::User { user_id, .. } => Some(user_id),
            Principal::OAuth { .. } => None,
        }
    }

    pub fn login(&self) -> &str {
        match self {
            Principal::User { login, .. } => login,
            Principal::OAuth { .. } => "",
        }
    }

    pub fn is_admin(&self) -> bool {
        match self {
            Principal::User { role, .. } => {
                matches!(
                    role.as_str(),
                    "owner" | "admin" | "it-admin" | "network-admin"
                )
            }
            Principal::OAuth { .. } => false,
        }
    }

    pub fn own_key_id(&self) -> &str {
        match self {
            Principal::User { key_id, .. } => key_id,
            Principal::OAuth { client_id, .. } => client_id,
        }
    }

    /// As the audit log names the actor.
    pub fn actor(&self) -> AuditActor {
        match self {
            Principal::User {
                user_id,
                login,
                display,
                ..
            } => AuditActor {
                id: user_id.clone(),
                kind: "USER".to_owned(),
                login_name: login.clone(),
                display_name: display.clone(),
                tags: Vec::new(),
            },
            Principal::OAuth {
                client_id,
                description,
                ..
            } => AuditActor {
                id: client_id.clone(),
                kind: "OAUTH_CLIENT".to_owned(),
                login_name: String::new(),
                display_name: description.clone(),
                tags: Vec::new(),
            },
        }
    }
}

/// The token of `Authorization: Bearer <token>` or `Basic base64(<token>:)`.
pub fn bearer_token(req: &Req) -> Option<String> {
    let value = req.header("authorization")?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_owned()).filter(|t| !t.is_empty());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let (user, _) = basic_credentials(rest)?;
        return Some(user).filter(|t| !t.is_empty());
    }
    None
}

/// Decodes HTTP Basic credentials.
pub fn basic_credentials(encoded: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, pass) = text.split_once(':').unwrap_or((&text, ""));
    Some((user.to_owned(), pass.to_owned()))
}

/// Who the request's token belongs to; 401 for a missing, unknown, revoked or expired token.
pub fn authenticate(st: &State, req: &Req, now: OffsetDateTime) -> Result<Principal, ApiError> {
    let Some(token) = bearer_token(req) else {
        return Err(ApiError::unauthorized(
            "API token required: use Authorization: Bearer <token>",
        ));
    };
    if let Some(minted) = st.tokens.get(&token) {
        if minted.expires <= now {
            return Err(ApiError::unauthorized("API token expired"));
        }
        let client = st
            .keys
            .iter()
            .find(|k| {
                k.key.id == minted.client_id
                    && matches!(k.key.key_type.as_str(), "client" | "federated")
            })
            .filter(|k| k.key.revoked.is_none());
        let Some(client) = client else {
            return Err(ApiError::unauthorized("invalid API token"));
        };
        return Ok(Principal::OAuth {
            client_id: client.key.id.clone(),
            description: client.key.description.clone(),
            scopes: minted.scopes.clone(),
            tags: client.key.tags.clone().unwrap_or_default(),
        });
    }
    let Some(record) = st
        .keys
        .iter()
        .find(|k| k.key.key_type == "api" && k.secret == token)
    else {
        return Err(ApiError::unauthorized("invalid API token"));
    };
    if record.key.revoked.is_some() {
        return Err(ApiError::unauthorized("API token revoked"));
    }
    if let Some(expires) = record.key.expires.as_deref().and_then(parse_rfc3339)
        && expires <= now
    {
        return Err(ApiError::unauthorized("API token expired"));
    }
    let user = record
        .key
        .user_id
        .as_deref()
        .and_then(|id| st.users.iter().find(|u| u.id == id));
    let Some(user) = user else {
        return Err(ApiError::unauthorized("invalid API token"));
    };
    if user.status == "suspended" {
        return Err(ApiError::unauthorized("the token's user is suspended"));
    }
    Ok(Principal::User {
        key_id: record.key.id.clone(),
        user_id: user.id.clone(),
        login: user.login_name.clone(),
        display: user.display_name.clone(),
        role: user.role.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn scope_rules() {
        assert!(scope_allows(&s(&["all"]), "policy_file", true));
        assert!(scope_allows(&s(&["all:read"]), "policy_file", false));
        assert!(!scope_allows(&s(&["all:read"]), "policy_file", true));
        assert!(scope_allows(&s(&["devices:core"]), "devices:core", true));
        assert!(scope_allows(
            &s(&["devices:core:read"]),
            "devices:core",
            false
        ));
        assert!(!scope_allows(
            &s(&["devices:core:read"]),
            "devices:core",
            true
        ));
        assert!(!scope_allows(
            &s(&["devices:core"]),
            "devices:routes",
            false
        ));
        assert!(scope_allows(&s(&["devices"]), "devices:routes", true));
        assert!(!scope_allows(&s(&["devices"]), "devices_x", true));
        assert!(scope_allows(
            &s(&["logs:configuration:read"]),
            "logs:configuration",
            false
        ));
        assert!(is_known_scope("logs:configuration:read"));
        assert!(!is_known_scope("logs:configuration"));
        assert!(!is_known_scope("everything"));
    }
}
