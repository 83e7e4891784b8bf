//! The policy file: `GET|POST /tailnet/{t}/acl`, `/acl/validate`, `/acl/preview`.

use std::collections::BTreeMap;

use base64::Engine as _;
use hyper::StatusCode;
use hyper::header::ETAG;
use serde_json::{Value as Json, json};
use tailnet::{AuditActor, AuditTarget};

use super::check_tailnet;
use crate::auth::Principal;
use crate::http::{ApiError, ApiResult, Reply, Req};
use crate::server::{App, AuditSpec, Ctx};
use crate::state::State;

/// The policy as the answer to a read or a write: HuJSON as stored, or JSON on request.
fn policy_reply(st: &State, json: bool) -> ApiResult {
    let etag = st.etag();
    let reply = if json {
        let standard = hujson::standardize(&st.policy)
            .map_err(|e| ApiError::internal(format!("stored policy: {e}")))?;
        let value: Json = serde_json::from_str(&standard)
            .map_err(|e| ApiError::internal(format!("stored policy: {e}")))?;
        Reply::json(&value)
    } else {
        Reply::bytes(
            StatusCode::OK,
            "application/hujson",
            st.policy.clone().into_bytes().into(),
        )
    };
    Ok(reply.with_header(ETAG, &etag))
}

pub(crate) fn get(app: &App, req: &Req, p: &Principal, t: &str) -> ApiResult {
    p.require("policy_file", false)?;
    let st = app.lock();
    check_tailnet(&st, t)?;
    let details = req
        .query_value("details")
        .is_some_and(|v| v == "true" || v == "1");
    if details {
        let body = json!({
            "acl": base64::engine::general_purpose::STANDARD.encode(st.policy.as_bytes()),
            "warnings": warnings(&st.policy_file),
            "errors": null,
        });
        return Ok(Reply::json(&body).with_header(ETAG, &st.etag()));
    }
    policy_reply(&st, req.wants_json())
}

/// Keys the policy model does not know, as the control plane warns about them.
fn warnings(file: &policy::PolicyFile) -> Vec<String> {
    file.unknown
        .keys()
        .map(|k| format!("unknown top-level key {k:?}"))
        .collect()
}

/// `{"message": ..., "data": [{"user": src, "errors": [...]}]}` for a refused policy.
pub(crate) fn policy_error(e: &policy::PolicyError, text: &str) -> ApiError {
    let mut err = ApiError::bad_request(e.api_message());
    if let policy::PolicyError::TestsFailed(failures) = e {
        err.data = Some(Box::new(failure_data(failures, text)));
    }
    err
}

fn failure_data(failures: &[policy::TestFailure], text: &str) -> Json {
    let file = policy::Policy::parse(text).ok().map(|p| p.file);
    let src_of = |test: &str| -> String {
        let index = |prefix: &str| -> Option<usize> {
            test.strip_prefix(prefix)?.strip_suffix(']')?.parse().ok()
        };
        let file = file.as_ref();
        if let Some(i) = index("tests[") {
            let t = file.and_then(|f| f.tests.get(i));
            return t
                .and_then(|t| t.src.clone().or(t.user.clone()))
                .unwrap_or_default();
        }
        if let Some(i) = index("sshTests[") {
            return file
                .and_then(|f| f.ssh_tests.get(i))
                .and_then(|t| t.src.clone())
                .unwrap_or_default();
        }
        String::new()
    };
    let mut by_user: Vec<(String, Vec<String>)> = Vec::new();
    for f in failures {
        let user = src_of(&f.test);
        let message = format!("{}: {}", f.test, f.message);
        match by_user.iter_mut().find(|(u, _)| *u == user) {
            Some((_, errors)) => errors.push(message),
            None => by_user.push((user, vec![message])),
        }
    }
    Json::Array(
        by_user
            .into_iter()
            .map(|(user, errors)| json!({ "user": user, "errors": errors }))
            .collect(),
    )
}

/// Validates `text` against the tailnet, runs its tests and, if all is well, makes it the
/// policy: audit entry, `policyUpdate` webhook event.
pub(crate) fn apply(
    st: &mut State,
    ctx: &mut Ctx,
    text: &str,
    actor: AuditActor,
    origin: &str,
) -> Result<(), ApiError> {
    let engine = policy::load(text, &st.inventory()).map_err(|e| policy_error(&e, text))?;
    let old = std::mem::replace(&mut st.policy, text.to_owned());
    st.policy_file = engine.policy.file;
    st.policy_is_default = false;
    let target = AuditTarget {
        id: if st.tailnet_id.is_empty() {
            st.tailnet.clone()
        } else {
            st.tailnet_id.clone()
        },
        name: st.tailnet.clone(),
        kind: "TAILNET".to_owned(),
        is_ephemeral: None,
        property: "ACL".to_owned(),
    };
    let actor_login = actor.login_name.clone();
    ctx.audit(
        st,
        AuditSpec {
            origin,
            actor,
            target,
            action: "UPDATE",
            old: Some(Json::String(old.clone())),
            new: Some(Json::String(text.to_owned())),
            details: String::new(),
        },
    );
    ctx.event(
        st,
        "policyUpdate",
        "Tailnet policy file updated".to_owned(),
        json!({
            "newPolicy": text,
            "oldPolicy": old,
            "url": "https://login.tailscale.com/admin/acls",
            "actor": actor_login,
        }),
    );
    Ok(())
}

/// `If-Match` → the ETag it names (quotes and `W/` removed).
fn bare_etag(value: &str) -> &str {
    let v = value.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    v.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(v)
}

pub(crate) fn set(app: &App, req: &Req, p: &Principal, t: &str) -> ApiResult {
    p.require("policy_file", true)?;
    let text = req.text()?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("the policy file is empty"));
    }
    let if_match = match req.headers.get("if-match") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("invalid If-Match header"))?,
        ),
    };
    app.mutate(|st, ctx| {
        check_tailnet(st, t)?;
        if let Some(if_match) = if_match {
            let wanted = bare_etag(if_match);
            let current = st.etag();
            let ok = match wanted {
                "*" => true,
                "ts-default" => st.policy_is_default,
                w => w == bare_etag(&current),
            };
            if !ok {
                return Err(ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "precondition failed, invalid old hash",
                ));
            }
        }
        apply(st, ctx, text, p.actor(), "CONFIG_API")?;
        policy_reply(st, req.wants_json())
    })
}

pub(crate) fn validate(app: &App, req: &Req, p: &Principal, t: &str) -> ApiResult {
    p.require("policy_file", false)?;
    let text = req.text()?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("request body is empty"));
    }
    let st = app.lock();
    check_tailnet(&st, t)?;
    let inventory = st.inventory();
    let standard = hujson::standardize(text).ok();
    let as_tests = standard
        .as_deref()
        .and_then(|s| serde_json::from_str::<Json>(s).ok())
        .filter(Json::is_array);
    let outcome = match as_tests {
        Some(tests) => {
            // Tests run against the current policy.
            let tests: Vec<policy::model::AclTest> = serde_json::from_value(tests)
                .map_err(|e| ApiError::bad_request(format!("invalid tests: {e}")))?;
            let mut current = policy::Policy::parse(&st.policy)
                .map_err(|e| ApiError::internal(format!("stored policy: {e}")))?;
            current.file.tests = tests;
            current.file.ssh_tests = Vec::new();
            let candidate_text = serde_json::to_string(&current.file).unwrap_or_default();
            policy::Engine::build(current, &inventory)
                .and_then(|engine| {
                    let failures = engine.run_tests();
                    if failures.is_empty() {
                        Ok(())
                    } else {
                        Err(policy::PolicyError::TestsFailed(failures))
                    }
                })
                .map_err(|e| policy_error(&e, &candidate_text))
        }
        None => policy::load(text, &inventory)
            .map(|_| ())
            .map_err(|e| policy_error(&e, text)),
    };
    Ok(match outcome {
        Ok(()) => Reply::json(&json!({})),
        Err(e) => {
            let mut body = json!({ "message": e.message });
            if let Some(data) = e.data {
                body["data"] = *data;
            }
            Reply::json(&body)
        }
    })
}

pub(crate) fn preview(app: &App, req: &Req, p: &Principal, t: &str) -> ApiResult {
    p.require("policy_file", false)?;
    let kind = req
        .query_value("type")
        .ok_or_else(|| ApiError::bad_request("query parameter \"type\" is required"))?
        .to_owned();
    let preview_for = req
        .query_value("previewFor")
        .ok_or_else(|| ApiError::bad_request("query parameter \"previewFor\" is required"))?
        .to_owned();
    let text = req.text()?;
    let inventory = {
        let st = app.lock();
        check_tailnet(&st, t)?;
        st.inventory()
    };
    let text_owned;
    let text = if text.trim().is_empty() {
        text_owned = app.lock().policy.clone();
        text_owned.as_str()
    } else {
        text
    };
    let parsed = policy::Policy::parse(text).map_err(|e| policy_error(&e, text))?;
    let engine = policy::Engine::build(parsed, &inventory).map_err(|e| policy_error(&e, text))?;
    let origins: Vec<policy::Origin> = match kind.as_str() {
        "user" => engine
            .reach(&preview_for)
            .map_err(|e| ApiError::bad_request(e.to_string()))?
            .into_iter()
            .flat_map(|r| r.rules)
            .collect(),
        "ipport" => {
            let (host, port) = preview_for
                .rsplit_once(':')
                .ok_or_else(|| ApiError::bad_request("previewFor must be ip:port"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let ip: std::net::IpAddr = host
                .parse()
                .map_err(|_| ApiError::bad_request(format!("{host:?} is not an IP address")))?;
            let port: u16 = port
                .parse()
                .map_err(|_| ApiError::bad_request(format!("{port:?} is not a port")))?;
            match engine.find_device(&ip.to_string()) {
                Some(_) => engine
                    .who_can(&ip.to_string(), port, 6)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?
                    .into_iter()
                    .flat_map(|g| g.rules)
                    .collect(),
                None => Vec::new(),
            }
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "type must be \"user\" or \"ipport\", not {other:?}"
            )));
        }
    };
    let mut rules: BTreeMap<(u8, usize), policy::Origin> = BTreeMap::new();
    for o in origins {
        let section = match o.section {
            policy::Section::Acls => 0,
            policy::Section::Grants => 1,
            policy::Section::Ssh => 2,
            policy::Section::Default => 3,
        };
        rules.entry((section, o.index)).or_insert(o);
    }
    let file = &engine.policy.file;
    let matches: Vec<Json> = rules
        .values()
        .filter_map(|o| {
            let (users, ports) = match o.section {
                policy::Section::Acls => {
                    let acl = file.acls.as_ref()?.get(o.index)?;
                    let users = if acl.src.is_empty() {
                        &acl.users
                    } else {
                        &acl.src
                    };
                    let ports = if acl.dst.is_empty() {
                        &acl.ports
                    } else {
                        &acl.dst
                    };
                    (users.clone(), ports.clone())
                }
                policy::Section::Grants => {
                    let grant = file.grants.as_ref()?.get(o.index)?;
                    let ports = grant
                        .dst
                        .iter()
                        .flat_map(|d| {
                            if grant.ip.is_empty() {
                                vec![d.clone()]
                            } else {
                                grant.ip.iter().map(|ip| format!("{d}:{ip}")).collect()
                            }
                        })
                        .collect();
                    (grant.src.clone(), ports)
                }
                policy::Section::Ssh => return None,
                policy::Section::Default => (vec!["*".to_owned()], vec!["*:*".to_owned()]),
            };
            Some(json!({ "users": users, "ports": ports, "lineNumber": o.line }))
        })
        .collect();
    Ok(Reply::json(&json!({
        "matches": matches,
        "type": kind,
        "previewFor": preview_for,
    })))
}
