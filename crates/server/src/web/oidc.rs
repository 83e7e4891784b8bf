//! Sign-in with an OpenID Connect provider: authorization code flow with PKCE (S256), a
//! `state` and a `nonce`, the provider's endpoints from its discovery document. The flow's
//! secrets wait in a short-lived `HttpOnly` cookie scoped to `/login/oidc`. The ID token comes
//! straight from the token endpoint over TLS, which OpenID Connect Core (3.1.3.7) accepts in
//! place of checking its signature; its issuer, audience, expiry and nonce are checked.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use rand::Rng;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tidegate_core::config::OidcSettings;

use super::layout::signed_out_message;
use super::{local_path, session};
use crate::AppState;

const FLOW_COOKIE: &str = "tidegate_oidc";

fn random_token() -> String {
    let bytes: [u8; 32] = rand::thread_rng().r#gen();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn callback_url(app: &AppState) -> String {
    let base = app
        .service
        .config()
        .public_url
        .as_deref()
        .unwrap_or_default()
        .trim_end_matches('/');
    format!("{base}/login/oidc/callback")
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: Option<String>,
}

async fn discover(oidc: &OidcSettings) -> Result<Discovery, String> {
    let url = format!("{}/.well-known/openid-configuration", oidc.issuer);
    let found: Discovery = get_json(
        http()?.get(&url),
        &format!("the provider's discovery document {url}"),
    )
    .await?;
    if found.issuer.trim_end_matches('/') != oidc.issuer {
        return Err(format!(
            "the provider says its issuer is {:?}, not {:?}",
            found.issuer, oidc.issuer
        ));
    }
    Ok(found)
}

/// One HTTP client for every sign-in (it keeps connections to the provider).
fn http() -> Result<&'static reqwest::Client, String> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client);
    }
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    Ok(CLIENT.get_or_init(|| client))
}

/// Sends `request` and reads its JSON answer; errors name `what`.
async fn get_json<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<T, String> {
    request
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("cannot read {what}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{what} is not valid: {e}"))
}

fn unavailable(text: &str) -> Response {
    signed_out_message(StatusCode::BAD_GATEWAY, "Sign-in failed", text).into_response()
}

fn refused(text: &str) -> Response {
    signed_out_message(StatusCode::FORBIDDEN, "Sign-in refused", text).into_response()
}

#[derive(Deserialize, Default)]
pub struct StartQuery {
    next: Option<String>,
}

/// `GET /login/oidc`: off to the provider.
pub async fn start(State(app): State<AppState>, Query(q): Query<StartQuery>) -> Response {
    let Some(oidc) = app.service.config().auth.oidc.clone() else {
        return refused("OpenID Connect sign-in is not configured ([auth.oidc]).");
    };
    let provider = match discover(&oidc).await {
        Ok(d) => d,
        Err(e) => return unavailable(&e),
    };
    let (state, nonce, verifier) = (random_token(), random_token(), random_token());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    let next = local_path(q.next.as_deref());
    let mut url = match reqwest::Url::parse(&provider.authorization_endpoint) {
        Ok(u) => u,
        Err(e) => return unavailable(&format!("bad authorization endpoint: {e}")),
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &oidc.client_id)
        .append_pair("redirect_uri", &callback_url(&app))
        .append_pair("scope", &oidc.scopes.join(" "))
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let flow = format!(
        "{FLOW_COOKIE}={state}.{nonce}.{verifier}.{}; Path=/login/oidc; HttpOnly; SameSite=Lax; Max-Age=600{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(next.as_bytes()),
        if session::served_over_https(&app) {
            "; Secure"
        } else {
            ""
        }
    );
    match HeaderValue::from_str(&flow) {
        Ok(cookie) => ([(header::SET_COOKIE, cookie)], Redirect::to(url.as_str())).into_response(),
        Err(e) => unavailable(&e.to_string()),
    }
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The flow's cookie: state, nonce, PKCE verifier, where to go afterwards.
fn flow_cookie(headers: &HeaderMap) -> Option<(String, String, String, String)> {
    let value = session::cookies(headers, FLOW_COOKIE).next()?;
    let mut parts = value.split('.');
    let (state, nonce, verifier, next) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let next = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(next)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())?;
    Some((state.into(), nonce.into(), verifier.into(), next))
}

/// `GET /login/oidc/callback`: the provider's answer.
pub async fn callback(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(cb): Query<Callback>,
) -> Response {
    let Some(oidc) = app.service.config().auth.oidc.clone() else {
        return refused("OpenID Connect sign-in is not configured ([auth.oidc]).");
    };
    if let Some(error) = cb.error {
        return refused(&format!(
            "The provider refused: {error}{}",
            cb.error_description
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        ));
    }
    let Some((state, nonce, verifier, next)) = flow_cookie(&headers) else {
        return refused("This sign-in was not started here, or took too long. Start again.");
    };
    if cb.state.as_deref() != Some(state.as_str()) {
        return refused("The sign-in answer does not match the sign-in that was started (state).");
    }
    let Some(code) = cb.code else {
        return refused("The provider sent no authorization code.");
    };
    let provider = match discover(&oidc).await {
        Ok(d) => d,
        Err(e) => return unavailable(&e),
    };
    let client = match http() {
        Ok(c) => c,
        Err(e) => return unavailable(&e),
    };
    let redirect_uri = callback_url(&app);
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let mut request = client.post(&provider.token_endpoint).form(&form);
    request = match &oidc.client_secret {
        Some(secret) => request.basic_auth(&oidc.client_id, Some(secret.expose())),
        None => request.form(&[("client_id", oidc.client_id.as_str())]),
    };
    let answer: Value = match request.send().await {
        Ok(r) if r.status().is_success() => match r.json().await {
            Ok(v) => v,
            Err(e) => return unavailable(&format!("the token answer is not JSON: {e}")),
        },
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            return unavailable(&format!("the token endpoint answered {status}: {body}"));
        }
        Err(e) => return unavailable(&format!("cannot reach the token endpoint: {e}")),
    };
    let claims = match answer["id_token"].as_str().map(id_token_claims) {
        Some(Ok(c)) => c,
        Some(Err(e)) => return refused(&e),
        None => return refused("The provider sent no ID token."),
    };
    if let Err(e) = check_claims(&claims, &oidc, &provider.issuer, &nonce, app.service.now()) {
        return refused(&e);
    }
    // Providers may keep scope claims (like `email`) out of the ID token: then from userinfo,
    // when it is about the same subject.
    let Some(subject) = claims["sub"].as_str().filter(|s| !s.is_empty()) else {
        return refused("The ID token names no subject (sub).");
    };
    let mut source = claims.clone();
    if source[&oidc.login_claim].is_null()
        && let (Some(endpoint), Some(access)) =
            (&provider.userinfo_endpoint, answer["access_token"].as_str())
    {
        let info: Result<Value, String> = get_json(
            client.get(endpoint).bearer_auth(access),
            "the provider's userinfo",
        )
        .await;
        match info {
            Ok(info) if info["sub"].as_str() == Some(subject) => source = info,
            Ok(_) => return refused("The provider's userinfo is about someone else (sub)."),
            Err(e) => return unavailable(&e),
        }
    }
    let login = match login_from(&source, &oidc.login_claim) {
        Ok(login) => login,
        Err(e) => return refused(&e),
    };
    match session::start(&app, &login).await {
        Ok(cookie) => {
            let clear = HeaderValue::from_static(
                "tidegate_oidc=; Path=/login/oidc; HttpOnly; SameSite=Lax; Max-Age=0",
            );
            let mut response = Redirect::to(&local_path(Some(&next))).into_response();
            response.headers_mut().append(header::SET_COOKIE, cookie);
            response.headers_mut().append(header::SET_COOKIE, clear);
            response
        }
        Err(e) => e.into_response(),
    }
}

/// The login in `claims[claim]`. An e-mail address counts only when the provider says it has
/// verified it: otherwise anyone who can set their own address could sign in as someone else.
fn login_from(claims: &Value, claim: &str) -> Result<String, String> {
    let Some(login) = claims[claim].as_str().filter(|l| !l.trim().is_empty()) else {
        return Err(format!(
            "The provider gave no {claim:?} claim to sign in with (auth.oidc.login_claim)."
        ));
    };
    if claim == "email" {
        let verified = matches!(&claims["email_verified"], Value::Bool(true))
            || claims["email_verified"].as_str() == Some("true");
        if !verified {
            return Err(format!(
                "The provider has not verified the address {login}: it cannot be used to sign in."
            ));
        }
    }
    Ok(login.trim().to_owned())
}

/// The claims of a JWT (its payload), without checking the signature (see the module docs).
fn id_token_claims(token: &str) -> Result<Value, String> {
    crate::jwt::part(token, 1).map_err(|e| format!("the ID token: {e}"))
}

fn check_claims(
    claims: &Value,
    oidc: &OidcSettings,
    issuer: &str,
    nonce: &str,
    now: time::OffsetDateTime,
) -> Result<(), String> {
    if claims["iss"].as_str() != Some(issuer) {
        return Err(format!(
            "The ID token is from {}, not {issuer}.",
            claims["iss"]
        ));
    }
    let audience_ok = match &claims["aud"] {
        Value::String(a) => a == &oidc.client_id,
        Value::Array(list) => list
            .iter()
            .any(|a| a.as_str() == Some(oidc.client_id.as_str())),
        _ => false,
    };
    if !audience_ok {
        return Err("The ID token was not issued to tidegate (aud).".into());
    }
    let exp = claims["exp"]
        .as_i64()
        .ok_or("The ID token has no expiry.")?;
    if exp <= now.unix_timestamp() {
        return Err("The ID token has expired.".into());
    }
    if claims["nonce"].as_str() != Some(nonce) {
        return Err("The ID token does not belong to this sign-in (nonce).".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OidcSettings {
        OidcSettings {
            issuer: "https://id.example.com".into(),
            client_id: "tidegate".into(),
            client_secret: None,
            login_claim: "email".into(),
            scopes: vec!["openid".into()],
        }
    }

    #[test]
    fn claims_are_checked() {
        let now = time::macros::datetime!(2026-11-22 10:00 UTC);
        let good = serde_json::json!({
            "iss": "https://id.example.com", "aud": ["x", "tidegate"],
            "exp": now.unix_timestamp() + 60, "nonce": "n1", "email": "a@example.com"
        });
        let s = settings();
        assert!(check_claims(&good, &s, "https://id.example.com", "n1", now).is_ok());
        for (key, value, says) in [
            (
                "iss",
                serde_json::json!("https://evil.example.com"),
                "not https://id",
            ),
            ("aud", serde_json::json!("someone-else"), "aud"),
            ("exp", serde_json::json!(now.unix_timestamp()), "expired"),
            ("nonce", serde_json::json!("n2"), "nonce"),
        ] {
            let mut bad = good.clone();
            bad[key] = value;
            let e = check_claims(&bad, &s, "https://id.example.com", "n1", now).unwrap_err();
            assert!(e.contains(says), "{key}: {e}");
        }
    }

    #[test]
    fn an_unverified_email_is_no_login() {
        let claims = |verified: Value| serde_json::json!({"email": "ceo@example.com", "email_verified": verified, "upn": "x@example.com"});
        assert_eq!(
            login_from(&claims(Value::Bool(true)), "email").unwrap(),
            "ceo@example.com"
        );
        for unverified in [Value::Bool(false), Value::Null, serde_json::json!("no")] {
            let e = login_from(&claims(unverified), "email").unwrap_err();
            assert!(e.contains("not verified"), "{e}");
        }
        // Another claim is the provider's to vouch for.
        assert_eq!(
            login_from(&claims(Value::Null), "upn").unwrap(),
            "x@example.com"
        );
        assert!(login_from(&claims(Value::Null), "preferred_username").is_err());
    }

    #[test]
    fn jwt_payloads_decode() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"email":"a@example.com"}"#);
        let claims = id_token_claims(&format!("e30.{payload}.sig")).unwrap();
        assert_eq!(claims["email"], "a@example.com");
        assert!(id_token_claims("nodots").is_err());
        assert!(id_token_claims("a.!!!.c").is_err());
    }
}
