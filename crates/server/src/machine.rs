//! Machine access: `POST /api/machine/authkey`. A CI job sends the OIDC token its platform
//! gives it (`Authorization: Bearer <JWT>`) and the machine entitlement it wants; tidegate
//! checks the token against the issuer's published keys (RS256 or ES256, keys found through
//! OIDC discovery, cached and refreshed on an unknown `kid` at most every 10 s), its issuer,
//! audience and times (60 s leeway, read from the service's clock), the entitlement's claim
//! patterns, that its `jti` is new (claimed in the database, so across replicas), and the
//! subject's rate (counted in this process); then mints a short-lived tagged key.
//! Every outcome is audited with the entitlement and the subject.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use tidegate_core::machine::{Limiter, MachineEntitlement};

use crate::AppState;

/// Leeway for `exp`, `nbf` and `iat`.
const LEEWAY_SECONDS: i64 = 60;

/// The least time between two fetches of one issuer's keys on an unknown `kid` (a flood of
/// tokens with made-up key ids must not become a flood of requests to the issuer).
const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// A JWT longer than this is refused before any parsing.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// State shared by the machine endpoints: issuers' keys, used token ids, rates.
#[derive(Debug)]
pub struct MachineAuth {
    http: reqwest::Client,
    keys: tokio::sync::Mutex<HashMap<String, IssuerKeys>>,
    limiter: Limiter,
}

#[derive(Debug)]
struct IssuerKeys {
    set: JwkSet,
    fetched: Instant,
}

impl Default for MachineAuth {
    fn default() -> MachineAuth {
        MachineAuth {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            keys: tokio::sync::Mutex::new(HashMap::new()),
            limiter: Limiter::default(),
        }
    }
}

/// Why a machine request was refused: the status and what the JSON error says.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    error: String,
    retry_after: Option<u64>,
}

impl Refusal {
    fn new(status: StatusCode, error: impl Into<String>) -> Refusal {
        Refusal {
            status,
            error: error.into(),
            retry_after: None,
        }
    }

    fn unauthorized(error: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::UNAUTHORIZED, error)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({"error": self.error}))).into_response();
        if let Some(seconds) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// A subject as it may be logged and audited: printable, at most 200 characters.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

impl MachineAuth {
    /// The issuer's keys: cached, or fetched through discovery (again if `refresh` and the
    /// last fetch is older than [`REFRESH_EVERY`]).
    async fn issuer_keys(&self, issuer: &str, refresh: bool) -> Result<JwkSet, String> {
        let mut keys = self.keys.lock().await;
        if let Some(cached) = keys.get(issuer)
            && (!refresh || cached.fetched.elapsed() < REFRESH_EVERY)
        {
            return Ok(cached.set.clone());
        }
        let started = Instant::now();
        let set = self.fetch_keys(issuer).await?;
        tracing::info!(
            issuer,
            keys = set.keys.len(),
            ms = started.elapsed().as_millis() as u64,
            "issuer keys fetched"
        );
        keys.insert(
            issuer.to_owned(),
            IssuerKeys {
                set: set.clone(),
                fetched: Instant::now(),
            },
        );
        Ok(set)
    }

    async fn fetch_keys(&self, issuer: &str) -> Result<JwkSet, String> {
        let discovery = format!("{issuer}/.well-known/openid-configuration");
        let config: Value = self
            .http
            .get(&discovery)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("cannot read the issuer's discovery document {discovery}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("the issuer's discovery document is not JSON: {e}"))?;
        let jwks_uri = config["jwks_uri"]
            .as_str()
            .ok_or("the issuer's discovery document has no jwks_uri")?;
        // The keys must come from the issuer's own origin: a discovery document must not send
        // tidegate to fetch keys (and trust them) from anywhere else.
        let origin = |url: &str| -> Option<String> {
            let (scheme, rest) = url.split_once("://")?;
            Some(format!("{scheme}://{}", rest.split('/').next()?))
        };
        if origin(jwks_uri) != origin(issuer) {
            return Err(format!(
                "the issuer's jwks_uri {jwks_uri:?} is not on the issuer's origin"
            ));
        }
        self.http
            .get(jwks_uri)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("cannot read the issuer's keys {jwks_uri}: {e}"))?
            .json::<JwkSet>()
            .await
            .map_err(|e| format!("the issuer's keys do not read as a JWK set: {e}"))
    }

    /// Verifies `token` for `machine`: the claims, or why not (401).
    async fn verify(
        &self,
        token: &str,
        machine: &MachineEntitlement,
        now: time::OffsetDateTime,
    ) -> Result<Value, Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::unauthorized("the token is too long"));
        }
        // The algorithm is read before anything else: `none` and shared-secret (HMAC)
        // algorithms are never accepted, whatever the key set says.
        let raw_header = crate::jwt::part(token, 0)
            .map_err(|_| Refusal::unauthorized("the token is not a JWT"))?;
        let alg = raw_header["alg"].as_str().unwrap_or_default();
        let algorithm = match alg {
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            other => {
                return Err(Refusal::unauthorized(format!(
                    "algorithm {other:?} is not accepted (RS256 or ES256)"
                )));
            }
        };
        let kid = raw_header["kid"].as_str();
        let fetch_failed = |e: String| {
            tracing::warn!(issuer = %machine.issuer, error = %e, "cannot read the issuer's keys");
            Refusal::unauthorized(format!("cannot check the token's signature: {e}"))
        };
        let find = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let mut jwk = find(
            &self
                .issuer_keys(&machine.issuer, false)
                .await
                .map_err(fetch_failed)?,
        );
        if jwk.is_none() {
            jwk = find(
                &self
                    .issuer_keys(&machine.issuer, true)
                    .await
                    .map_err(fetch_failed)?,
            );
        }
        let jwk = jwk.ok_or_else(|| {
            Refusal::unauthorized(format!(
                "unknown signing key {:?}: the issuer does not publish it",
                kid.unwrap_or("(no kid)")
            ))
        })?;
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| Refusal::unauthorized(format!("the issuer's key does not read: {e}")))?;
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&machine.issuer]);
        validation.set_audience(&[&machine.audience]);
        // Times are checked below against the service's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims = Default::default();
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            let why = match e.kind() {
                ErrorKind::InvalidSignature => "the signature does not verify".to_owned(),
                ErrorKind::InvalidIssuer => format!("the issuer is not {}", machine.issuer),
                ErrorKind::InvalidAudience => {
                    format!("the audience is not {:?}", machine.audience)
                }
                ErrorKind::InvalidAlgorithm => "the key does not match the algorithm".to_owned(),
                other => format!("the token does not verify: {other:?}"),
            };
            Refusal::unauthorized(why)
        })?;
        let claims = data.claims;
        let now_s = now.unix_timestamp();
        let time = |name: &str| claims[name].as_i64();
        match time("exp") {
            None => return Err(Refusal::unauthorized("the token has no exp")),
            Some(exp) if exp + LEEWAY_SECONDS < now_s => {
                return Err(Refusal::unauthorized("the token has expired"));
            }
            Some(_) => {}
        }
        if time("nbf").is_some_and(|nbf| nbf - LEEWAY_SECONDS > now_s) {
            return Err(Refusal::unauthorized("the token is not valid yet (nbf)"));
        }
        if time("iat").is_some_and(|iat| iat - LEEWAY_SECONDS > now_s) {
            return Err(Refusal::unauthorized(
                "the token was issued in the future (iat)",
            ));
        }
        if claims["iss"].as_str() != Some(machine.issuer.as_str()) {
            return Err(Refusal::unauthorized(format!(
                "the issuer is not {}",
                machine.issuer
            )));
        }
        if claims["sub"].as_str().is_none_or(str::is_empty) {
            return Err(Refusal::unauthorized("the token has no subject (sub)"));
        }
        Ok(claims)
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct AuthKeyBody {
    entitlement: String,
}

/// `POST /api/machine/authkey`.
pub async fn authkey(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let token = bearer(&headers);
    let entitlement = match serde_json::from_slice::<AuthKeyBody>(&body) {
        Ok(b) => b.entitlement,
        Err(e) => {
            return Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("the body must be {{\"entitlement\": NAME}}: {e}"),
            )
            .into_response();
        }
    };
    // Not verified: only to name the subject of a refusal (audited as unverified).
    let unverified_subject = crate::jwt::part(&token, 1)
        .ok()
        .and_then(|c| c["sub"].as_str().map(printable));
    match mint(&state, &token, &entitlement).await {
        Ok(Granted::Key(minted)) => (StatusCode::OK, Json(json!(minted))).into_response(),
        Ok(Granted::Pending(request)) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "request": request.id,
                "state": request.state.as_str(),
                "poll": format!("/api/machine/requests/{}", request.id),
                "pending_until": tidegate_core::time_text(request.pending_until),
            })),
        )
            .into_response(),
        Err((refusal, verified_subject)) => {
            let (subject, verified) = match verified_subject {
                Some(s) => (Some(s), true),
                None => (unverified_subject, false),
            };
            state
                .service
                .record_machine_refusal(
                    &printable(&entitlement),
                    subject.as_deref(),
                    verified,
                    refusal.status.as_u16(),
                    &refusal.error,
                )
                .await;
            refusal.into_response()
        }
    }
}

/// What a job gets for a good token: the key, or a request waiting for approval.
enum Granted {
    Key(tidegate_core::service::MintedKey),
    Pending(Box<tidegate_core::request::Request>),
}

/// The checks in order, then the key (or, where a person must approve it, a request). A
/// refusal comes with the subject when the token was verified.
async fn mint(
    state: &AppState,
    token: &str,
    entitlement: &str,
) -> Result<Granted, (Refusal, Option<String>)> {
    let service = &state.service;
    let machines = &state.machine;
    if token.is_empty() {
        return Err((
            Refusal::unauthorized("the Authorization header must be `Bearer <OIDC token>`"),
            None,
        ));
    }
    let Some(machine) = service.config().machine(entitlement) else {
        return Err((
            Refusal::new(
                StatusCode::FORBIDDEN,
                format!(
                    "there is no machine entitlement {:?}",
                    printable(entitlement)
                ),
            ),
            None,
        ));
    };
    let now = service.now();
    let claims = machines
        .verify(token, machine, now)
        .await
        .map_err(|r| (r, None))?;
    let subject = printable(claims["sub"].as_str().unwrap_or_default());
    let refused = |r: Refusal| (r, Some(subject.clone()));
    machine.claims_match(&claims).map_err(|why| {
        refused(Refusal::new(
            StatusCode::FORBIDDEN,
            format!("{why} (entitlement {:?})", machine.name),
        ))
    })?;
    if let Some(jti) = claims["jti"].as_str() {
        let until = claims["exp"]
            .as_i64()
            .and_then(|e| time::OffsetDateTime::from_unix_timestamp(e + LEEWAY_SECONDS).ok())
            .unwrap_or(now + time::Duration::hours(1));
        let first = service
            .claim_token_id(&machine.issuer, jti, until)
            .await
            .map_err(|e| {
                refused(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot record the token's use: {e}"),
                ))
            })?;
        if !first {
            return Err(refused(Refusal::unauthorized(
                "this token was already used (replayed jti)",
            )));
        }
    }
    if let Err(wait) = machines
        .limiter
        .take(&machine.name, &subject, machine.rate, now)
    {
        let seconds = wait.whole_seconds().max(1) as u64;
        let mut refusal = Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{subject} may have {} key(s) per {} from {:?}: try again in {seconds} s",
                machine.rate.count, machine.rate.per, machine.name
            ),
        );
        refusal.retry_after = Some(seconds);
        return Err(refused(refusal));
    }
    if machine.approvals > 0 {
        return match service.request_machine_key(machine, &subject).await {
            Ok(request) => Ok(Granted::Pending(Box::new(request))),
            Err(e) => {
                machines.limiter.give_back(&machine.name, &subject);
                Err(refused(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("cannot ask for approval: {e}"),
                )))
            }
        };
    }
    match service.mint_machine_key(machine, &subject).await {
        Ok(minted) => Ok(Granted::Key(minted)),
        Err(e) => {
            machines.limiter.give_back(&machine.name, &subject);
            Err(refused(Refusal::new(
                StatusCode::BAD_GATEWAY,
                format!("cannot mint the key: {e}"),
            )))
        }
    }
}

/// Shared by the router.
pub fn state() -> Arc<MachineAuth> {
    Arc::new(MachineAuth::default())
}

/// `GET /api/machine/requests/{id}`: a job polls its request with the same token (its
/// subject must be the one that asked): 202 while pending, 200 with the key once, 410 once
/// the key was taken or no key will come, 404 for another subject.
pub async fn poll(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let token = bearer(&headers);
    let service = &state.service;
    let not_found = || {
        Refusal::new(
            StatusCode::NOT_FOUND,
            format!("no machine request {}", printable(&id)),
        )
        .into_response()
    };
    if token.is_empty() {
        return Refusal::unauthorized("the Authorization header must be `Bearer <OIDC token>`")
            .into_response();
    }
    // The request names its entitlement; the token is checked against that one.
    let Ok(request) = service.store().request(&id).await else {
        return not_found();
    };
    let Some(machine) = request
        .as_ref()
        .and_then(|r| service.config().machine(&r.entitlement))
    else {
        return not_found();
    };
    // Polling reuses the token that asked: its jti is not spent again, and polls do not count
    // against the rate.
    let claims = match state.machine.verify(&token, machine, service.now()).await {
        Ok(c) => c,
        Err(refusal) => return refusal.into_response(),
    };
    let subject = printable(claims["sub"].as_str().unwrap_or_default());
    use tidegate_core::service::MachineClaim;
    match service.claim_machine_key(machine, &subject, &id).await {
        Ok(MachineClaim::Pending(r)) => (
            StatusCode::ACCEPTED,
            Json(json!({"request": r.id, "state": r.state.as_str(), "pending_until": tidegate_core::time_text(r.pending_until)})),
        )
            .into_response(),
        Ok(MachineClaim::Minted(minted)) => (StatusCode::OK, Json(json!(minted))).into_response(),
        Ok(MachineClaim::Taken(r)) => Refusal::new(
            StatusCode::GONE,
            format!("the key of {} was already taken", r.id),
        )
        .into_response(),
        Ok(MachineClaim::Ended(r)) => Refusal::new(
            StatusCode::GONE,
            format!(
                "{} is {}: no key will come{}",
                r.id,
                r.state.as_str(),
                r.end_reason.as_deref().map(|w| format!(" ({w})")).unwrap_or_default()
            ),
        )
        .into_response(),
        Err(tidegate_core::service::ServiceError::UnknownRequest(_)) => not_found(),
        Err(e) => Refusal::new(StatusCode::GONE, e.to_string()).into_response(),
    }
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default()
        .to_owned()
}
