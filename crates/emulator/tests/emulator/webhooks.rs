//! Webhooks: CRUD, signed JSON-array deliveries to a receiver in this test, retries after a
//! receiver failure, secret rotation, and the events mutations emit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use reqwest::Method;
use serde_json::{Value as Json, json};

use crate::support::*;

#[derive(Clone, Debug)]
struct Received {
    signature: String,
    body: Vec<u8>,
}

/// A webhook receiver that fails its first `fail_first` requests with a 503.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

async fn receiver(fail_first: usize) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let seen = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let signature = req
                            .headers()
                            .get("tailscale-webhook-signature")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
                        let n = {
                            let mut seen = seen.lock().unwrap();
                            seen.push(Received { signature, body });
                            seen.len()
                        };
                        let status = if n <= fail_first { 503 } else { 200 };
                        let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
                        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Receiver { url, got }
}

impl Receiver {
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..200 {
            let got = self.got.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "expected {n} deliveries, got {:?}",
            self.got.lock().unwrap().len()
        );
    }
}

/// Verifies `t=<unix>,v1=<hex>` as Tailscale's example verifier does.
fn verify(secret: &str, signature: &str, body: &[u8]) -> bool {
    use hmac::Mac;
    let mut t = None;
    let mut v1 = Vec::new();
    for part in signature.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_owned()),
            Some(("v1", x)) => v1.push(x.to_owned()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let want = hex::encode(mac.finalize().into_bytes());
    v1.contains(&want)
}

fn events(r: &Received) -> Vec<Json> {
    serde_json::from_slice::<Json>(&r.body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn webhooks_are_signed_retried_and_rotated() {
    let emu = start().await;
    let rx = receiver(1).await;
    let created = emu
        .post("/api/v2/tailnet/-/webhooks", json!({"endpointUrl": rx.url, "subscriptions": ["policyUpdate", "userRoleUpdated", "nodeDeleted", "userSuspended", "userRestored", "userApproved", "userDeleted"]}))
        .await;
    created.expect(200);
    let id = created.json["endpointId"].as_str().unwrap().to_owned();
    let secret = created.json["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("tskey-webhook-"));
    assert_eq!(created.json["creatorLoginName"], "alice@example.com");

    let listed = emu.get("/api/v2/tailnet/-/webhooks").await;
    listed.expect(200);
    assert_eq!(listed.json["webhooks"][0]["endpointId"], id);
    assert!(
        listed.json["webhooks"][0].get("secret").is_none(),
        "the secret only at creation"
    );
    let got = emu.get(&format!("/api/v2/webhooks/{id}")).await;
    got.expect(200);
    assert!(got.json.get("secret").is_none());
    emu.get("/api/v2/webhooks/nope").await.expect(404);

    // Test event: 202, delivered as a signed JSON array; the first attempt fails (503) and is
    // retried.
    let t = emu.post_empty(&format!("/api/v2/webhooks/{id}/test")).await;
    t.expect(202);
    let got = rx.wait_for(2).await;
    assert_eq!(
        got[0].body, got[1].body,
        "the retry carries the same events"
    );
    for r in &got {
        assert!(
            verify(&secret, &r.signature, &r.body),
            "bad signature {}",
            r.signature
        );
        assert!(!verify("tskey-webhook-wrong", &r.signature, &r.body));
    }
    let test = &events(&got[1])[0];
    assert_eq!(test["type"], "test");
    assert_eq!(test["version"], 1);
    assert_eq!(test["tailnet"], "example.com");
    assert!(test["data"].is_null());
    let deliveries = emu
        .control(Method::GET, "/emulator/webhook-deliveries", None)
        .await;
    let d = deliveries.json.as_array().unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0]["status"], 503);
    assert_eq!(d[0]["delivered"], false);
    assert_eq!(d[1]["attempt"], 2);
    assert_eq!(d[1]["delivered"], true);

    // Rotation: a new secret, the old one no longer verifies.
    let rotated = emu
        .post_empty(&format!("/api/v2/webhooks/{id}/rotate"))
        .await;
    rotated.expect(200);
    let new_secret = rotated.json["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);

    // A policy change by hand in the admin console: policyUpdate, origin ADMIN_CONSOLE.
    let policy = format!("{}// edited in the console\n", emu.policy().await.text);
    let console = emu
        .client
        .post(emu.url("/emulator/policy"))
        .body(policy.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(console.status(), 200);
    let got = rx.wait_for(3).await;
    assert!(verify(&new_secret, &got[2].signature, &got[2].body));
    assert!(
        !verify(&secret, &got[2].signature, &got[2].body),
        "the old secret is dead"
    );
    let update = &events(&got[2])[0];
    assert_eq!(update["type"], "policyUpdate");
    assert_eq!(update["data"]["newPolicy"], policy);
    assert!(
        update["data"]["oldPolicy"]
            .as_str()
            .unwrap()
            .contains("// Example tailnet policy")
    );
    let entry = emu
        .audit()
        .await
        .into_iter()
        .find(|e| e["target"]["property"] == "ACL")
        .unwrap();
    assert_eq!(entry["origin"], "ADMIN_CONSOLE");
    assert_eq!(entry["actor"]["loginName"], "alice@example.com");

    // User and device events, batched into arrays.
    emu.post("/api/v2/users/3/role", json!({"role": "it-admin"}))
        .await
        .expect(200);
    emu.post_empty("/api/v2/users/4/suspend").await.expect(200);
    emu.post_empty("/api/v2/users/4/restore").await.expect(200);
    emu.post_empty("/api/v2/users/4/approve").await.expect(200); // a no-op: no event
    emu.delete("/api/v2/device/n0006CNTRL").await.expect(200);
    emu.post_empty("/api/v2/users/4/delete").await.expect(200);
    let mut kinds = Vec::new();
    for _ in 0..100 {
        let got = rx.got.lock().unwrap().clone();
        kinds = got[3..]
            .iter()
            .flat_map(events)
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>();
        if kinds.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Batches are delivered concurrently, so their order is not guaranteed.
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "nodeDeleted",
            "userDeleted",
            "userRestored",
            "userRoleUpdated",
            "userSuspended"
        ]
    );
    let all: Vec<Json> = rx.got.lock().unwrap()[3..]
        .iter()
        .flat_map(events)
        .collect();
    let role = all.iter().find(|e| e["type"] == "userRoleUpdated").unwrap();
    assert_eq!(role["data"]["user"], "carol@example.com");
    assert_eq!(role["data"]["oldRoles"], json!(["Member"]));
    assert_eq!(role["data"]["newRoles"], json!(["IT admin"]));
    let node = all.iter().find(|e| e["type"] == "nodeDeleted").unwrap();
    assert_eq!(node["data"]["nodeID"], "n0006CNTRL");

    // Only subscribed events are sent; PATCH changes the subscriptions.
    let patched = emu
        .call(
            Method::PATCH,
            &format!("/api/v2/webhooks/{id}"),
            Some(ALICE),
            Body::Json(json!({"subscriptions": ["nodeCreated"]})),
            &[],
        )
        .await;
    patched.expect(200);
    assert_eq!(patched.json["subscriptions"], json!(["nodeCreated"]));
    emu.call(
        Method::PATCH,
        &format!("/api/v2/webhooks/{id}"),
        Some(ALICE),
        Body::Json(json!({"subscriptions": ["somethingElse"]})),
        &[],
    )
    .await
    .expect(400);
    let before = rx.got.lock().unwrap().len();
    emu.set_policy(&format!("{policy}\n"), None)
        .await
        .expect(200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        rx.got.lock().unwrap().len(),
        before,
        "not subscribed to policyUpdate any more"
    );

    emu.delete(&format!("/api/v2/webhooks/{id}"))
        .await
        .expect(200);
    emu.get(&format!("/api/v2/webhooks/{id}")).await.expect(404);
    emu.post_empty(&format!("/api/v2/webhooks/{id}/test"))
        .await
        .expect(404);

    // Bad webhooks.
    emu.post(
        "/api/v2/tailnet/-/webhooks",
        json!({"endpointUrl": "ftp://x", "subscriptions": []}),
    )
    .await
    .expect(400);
    emu.post(
        "/api/v2/tailnet/-/webhooks",
        json!({"endpointUrl": rx.url, "subscriptions": ["nope"]}),
    )
    .await
    .expect(400);
    emu.post(
        "/api/v2/tailnet/-/webhooks",
        json!({"endpointUrl": rx.url, "subscriptions": [], "providerType": "fax"}),
    )
    .await
    .expect(400);
    emu.post("/api/v2/tailnet/-/webhooks", json!({"subscriptions": []}))
        .await
        .expect(400);

    let kinds: Vec<String> = emu
        .audit()
        .await
        .iter()
        .filter(|e| e["target"]["type"] == "WEBHOOK_ENDPOINT")
        .map(|e| {
            format!(
                "{}.{}",
                e["action"].as_str().unwrap(),
                e["target"]["property"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "CREATE.",
            "UPDATE.SECRET",
            "UPDATE.SUBSCRIBED_EVENTS",
            "DELETE."
        ]
    );
}

#[tokio::test]
async fn deliveries_give_up_after_the_retries() {
    let emu = start().await;
    let rx = receiver(usize::MAX).await;
    let created = emu
        .post(
            "/api/v2/tailnet/-/webhooks",
            json!({"endpointUrl": rx.url, "subscriptions": []}),
        )
        .await;
    let id = created.json["endpointId"].as_str().unwrap().to_owned();
    emu.post_empty(&format!("/api/v2/webhooks/{id}/test"))
        .await
        .expect(202);
    // One try and four retries (fast_options), then nothing more.
    rx.wait_for(5).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rx.got.lock().unwrap().len(), 5);
    let d = emu
        .control(Method::GET, "/emulator/webhook-deliveries", None)
        .await;
    assert!(
        d.json
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["delivered"] == false)
    );
}
