//! `POST /api/v2/oauth/token`: client credentials → a one-hour access token.

use hyper::StatusCode;
use serde_json::json;
use time::Duration;

use crate::auth::{basic_credentials, is_known_scope, scope_allows};
use crate::http::{ApiError, ApiResult, Reply, Req, parse_form};
use crate::server::App;
use crate::state::{MintedToken, random_token};

/// Access tokens live this long.
pub const TOKEN_LIFETIME_SECONDS: i64 = 3600;

pub(crate) fn token(app: &App, req: &Req) -> ApiResult {
    let text = req.text()?;
    let form = parse_form(text)
        .ok_or_else(|| ApiError::bad_request("the form body is not valid UTF-8"))?;
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if let Some(grant) = field("grant_type")
        && grant != "client_credentials"
    {
        return Err(ApiError::bad_request(format!(
            "unsupported grant_type {grant:?}: use client_credentials"
        )));
    }
    let basic = req
        .header("authorization")
        .and_then(|h| h.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, creds)| basic_credentials(creds));
    let (id, secret) = match (field("client_id"), field("client_secret"), basic) {
        (Some(id), Some(secret), _) => (id, secret),
        (_, _, Some((id, secret))) => (id, secret),
        (None, Some(secret), None) => {
            // The client id is embedded in the secret.
            let id = secret
                .strip_prefix("tskey-client-")
                .and_then(|rest| rest.split_once('-'))
                .map(|(id, _)| id.to_owned())
                .unwrap_or_default();
            (id, secret)
        }
        _ => {
            return Err(ApiError::unauthorized(
                "client_id and client_secret are required",
            ));
        }
    };
    let requested: Option<Vec<String>> = field("scope").map(|s| {
        s.split([' ', ','])
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    });
    let mut st = app.lock();
    let client = st.keys.iter().find(|k| {
        k.key.key_type == "client"
            && k.key.id == id
            && k.secret == secret
            && k.key.revoked.is_none()
    });
    let Some(client) = client else {
        return Err(ApiError::unauthorized("invalid client credentials"));
    };
    let granted = client.key.scopes.clone().unwrap_or_default();
    let scopes = match requested {
        Some(req) if !req.is_empty() => {
            if let Some(bad) = req.iter().find(|s| !is_known_scope(s)) {
                return Err(ApiError::bad_request(format!("unknown scope {bad:?}")));
            }
            if let Some(bad) = req.iter().find(|s| {
                let (base, write) = match s.strip_suffix(":read") {
                    Some(b) => (b, false),
                    None => (s.as_str(), true),
                };
                !scope_allows(&granted, base, write)
            }) {
                return Err(ApiError::bad_request(format!(
                    "scope {bad:?} is not granted to this client"
                )));
            }
            req
        }
        _ => granted,
    };
    let now = app.now();
    let token = format!("tskey-api-{}-{}", client.key.id, random_token(32));
    let client_id = client.key.id.clone();
    st.tokens.retain(|_, t| t.expires > now);
    st.tokens.insert(
        token.clone(),
        MintedToken {
            client_id,
            scopes: scopes.clone(),
            expires: now.saturating_add(Duration::seconds(TOKEN_LIFETIME_SECONDS)),
        },
    );
    Ok(Reply::json(&json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME_SECONDS,
        "scope": scopes.join(" "),
    }))
    .with_status(StatusCode::OK))
}
