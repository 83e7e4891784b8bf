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

/// `POST /api/v2/oauth/token-exchange`: workload identity federation. The form's `jwt` is
/// checked against the federated identity `client_id` names: signed by one of its issuer's
/// published keys (found through discovery; RS256 or ES256), its issuer and audience, not
/// expired, its `sub` and custom claims matching the identity's patterns. Then an access
/// token with the identity's scopes and tags, as an OAuth client would get.
pub(crate) async fn token_exchange(app: &App, req: &Req) -> ApiResult {
    let text = req.text()?;
    let form = parse_form(text)
        .ok_or_else(|| ApiError::bad_request("the form body is not valid UTF-8"))?;
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (Some(client_id), Some(jwt)) = (field("client_id"), field("jwt")) else {
        return Err(ApiError::bad_request("client_id and jwt are required"));
    };
    let identity = app
        .lock()
        .keys
        .iter()
        .find(|k| k.key.key_type == "federated" && k.key.id == client_id && k.key.revoked.is_none())
        .map(|k| k.key.clone())
        .ok_or_else(|| ApiError::unauthorized("unknown federated identity"))?;
    let issuer = identity.issuer.clone().unwrap_or_default();
    let claims = verify_jwt(&jwt, &issuer, &identity, app.now()).await?;
    let subject = claims["sub"].as_str().unwrap_or_default();
    if !glob(identity.subject.as_deref().unwrap_or_default(), subject) {
        return Err(ApiError::unauthorized(format!(
            "subject {subject:?} does not match the identity's subject pattern"
        )));
    }
    for (claim, pattern) in identity.custom_claim_rules.iter().flatten() {
        let value = match &claims[claim] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        if !glob(pattern, &value) {
            return Err(ApiError::unauthorized(format!(
                "claim {claim:?} does not match the identity's rule"
            )));
        }
    }
    let scopes = identity.scopes.clone().unwrap_or_default();
    let now = app.now();
    let token = format!("tskey-api-{}-{}", identity.id, random_token(32));
    let mut st = app.lock();
    st.tokens.retain(|_, t| t.expires > now);
    st.tokens.insert(
        token.clone(),
        MintedToken {
            client_id: identity.id.clone(),
            scopes: scopes.clone(),
            expires: now.saturating_add(Duration::seconds(TOKEN_LIFETIME_SECONDS)),
        },
    );
    Ok(Reply::json(&json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME_SECONDS,
        "scope": scopes.join(" "),
    })))
}

/// `*` matches any run of characters. (The emulator keeps its own: it stands in for
/// Tailscale and depends on nothing of tidegate's.)
fn glob(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((head, tail)) => {
            let Some(rest) = value.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|i| rest.is_char_boundary(*i))
                .any(|i| glob(tail, &rest[i..]))
        }
    }
}

async fn verify_jwt(
    jwt: &str,
    issuer: &str,
    identity: &tailnet::Key,
    now: time::OffsetDateTime,
) -> Result<serde_json::Value, ApiError> {
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| issuer.starts_with(p));
    if !issuer.starts_with("https://") && !loopback {
        return Err(ApiError::unauthorized(
            "the identity's issuer must be https (http only on loopback)",
        ));
    }
    let header = jsonwebtoken::decode_header(jwt)
        .map_err(|e| ApiError::unauthorized(format!("the jwt does not read: {e}")))?;
    if !matches!(
        header.alg,
        jsonwebtoken::Algorithm::RS256 | jsonwebtoken::Algorithm::ES256
    ) {
        return Err(ApiError::unauthorized("unsupported jwt algorithm"));
    }
    let http = reqwest::Client::new();
    let discovery: serde_json::Value = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| ApiError::unauthorized(format!("cannot read the issuer's discovery: {e}")))?
        .json()
        .await
        .map_err(|e| ApiError::unauthorized(format!("bad discovery document: {e}")))?;
    let jwks_uri = discovery["jwks_uri"]
        .as_str()
        .ok_or_else(|| ApiError::unauthorized("the issuer has no jwks_uri"))?;
    let keys: jsonwebtoken::jwk::JwkSet = http
        .get(jwks_uri)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| ApiError::unauthorized(format!("cannot read the issuer's keys: {e}")))?
        .json()
        .await
        .map_err(|e| ApiError::unauthorized(format!("bad key set: {e}")))?;
    let jwk = match header.kid.as_deref() {
        Some(kid) => keys.find(kid),
        None => keys.keys.first(),
    }
    .ok_or_else(|| ApiError::unauthorized("the jwt's key is not the issuer's"))?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk)
        .map_err(|e| ApiError::unauthorized(format!("the issuer's key does not read: {e}")))?;
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    let audience = identity
        .audience
        .clone()
        .unwrap_or_else(|| format!("api.tailscale.com/{}", identity.id));
    validation.set_audience(&[audience]);
    // Expiry against the emulator's clock, which tests may move.
    validation.validate_exp = false;
    validation.required_spec_claims = Default::default();
    let claims = jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &validation)
        .map_err(|e| ApiError::unauthorized(format!("the jwt does not verify: {e}")))?
        .claims;
    match claims["exp"].as_i64() {
        Some(exp) if exp > now.unix_timestamp() => Ok(claims),
        _ => Err(ApiError::unauthorized("the jwt has expired")),
    }
}
