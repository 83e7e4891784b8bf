//! Hundreds of random and malformed requests: every one gets a well-formed answer (never a
//! dropped connection, never a 5xx), errors carry `{"message": ...}`, and the server still
//! answers afterwards.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::Method;

use crate::support::*;

const PATHS: &[&str] = &[
    "/api/v2/tailnet/{t}/acl",
    "/api/v2/tailnet/{t}/acl/validate",
    "/api/v2/tailnet/{t}/acl/preview",
    "/api/v2/tailnet/{t}/users",
    "/api/v2/users/{u}",
    "/api/v2/users/{u}/role",
    "/api/v2/users/{u}/approve",
    "/api/v2/users/{u}/suspend",
    "/api/v2/users/{u}/restore",
    "/api/v2/users/{u}/delete",
    "/api/v2/tailnet/{t}/devices",
    "/api/v2/tailnet/{t}/device-attributes",
    "/api/v2/device/{d}",
    "/api/v2/device/{d}/authorized",
    "/api/v2/device/{d}/tags",
    "/api/v2/device/{d}/expire",
    "/api/v2/device/{d}/key",
    "/api/v2/device/{d}/name",
    "/api/v2/device/{d}/ip",
    "/api/v2/device/{d}/routes",
    "/api/v2/device/{d}/attributes",
    "/api/v2/device/{d}/attributes/{k}",
    "/api/v2/tailnet/{t}/keys",
    "/api/v2/tailnet/{t}/keys/{id}",
    "/api/v2/tailnet/{t}/webhooks",
    "/api/v2/webhooks/{id}",
    "/api/v2/webhooks/{id}/test",
    "/api/v2/webhooks/{id}/rotate",
    "/api/v2/tailnet/{t}/logging/configuration",
    "/api/v2/oauth/token",
    "/api/v2",
    "/api/v2/",
    "/api/v2/{x}",
    "/api/v2/{x}/{x}/{x}",
    "/",
    "/{x}",
    "/api/v3/tailnet/-/devices",
];

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items.choose(rng).copied().unwrap_or_default()
}

fn junk(rng: &mut StdRng) -> String {
    let pieces = [
        "%",
        "%zz",
        "%ff",
        "%00",
        "..",
        ".",
        "%2F",
        "-",
        "😀",
        "a b",
        "'",
        "\"",
        "<",
        ">",
        "{",
        "}",
        "custom:x",
        "custom:X",
        "node:os",
        "tag:prod",
        "n0005CNTRL",
        "1005",
        "3",
        "k1",
        "~",
        "%C3%28",
    ];
    (0..rng.gen_range(0..4))
        .map(|_| pick(rng, &pieces))
        .collect()
}

fn path(rng: &mut StdRng) -> String {
    let mut p = pick(rng, PATHS).to_owned();
    for (hole, options) in [
        ("{t}", &["-", "example.com", "other.org", ""][..]),
        ("{u}", &["2", "3", "4", "999", "%zz"][..]),
        (
            "{d}",
            &["n0005CNTRL", "1006", "n0011CNTRL", "nope", "%ff"][..],
        ),
        (
            "{k}",
            &[
                "custom:jit",
                "custom:JIT",
                "node:os",
                "custom:a-b",
                "custom:",
            ][..],
        ),
        ("{id}", &["kCiClientX", "k1", "123"][..]),
    ] {
        while p.contains(hole) {
            let v = if rng.gen_bool(0.2) {
                junk(rng)
            } else {
                pick(rng, options).to_owned()
            };
            p = p.replacen(hole, &v, 1);
        }
    }
    while p.contains("{x}") {
        let v = junk(rng);
        p = p.replacen("{x}", &v, 1);
    }
    if rng.gen_bool(0.4) {
        let queries = [
            "fields=all",
            "fields=x",
            "type=user&previewFor=carol@example.com",
            "type=ipport&previewFor=100.64.0.8:22",
            "start=2000-01-01T00:00:00Z&end=2100-01-01T00:00:00Z",
            "start=x&end=y",
            "all=true",
            "details=true",
            "tags=tag:prod&tags=tag:ci",
            "%ff=%fe",
            "a",
            "&&&",
            "role=king",
            "type=shared",
        ];
        p = format!("{p}?{}", pick(rng, &queries));
    }
    p
}

fn random_json(rng: &mut StdRng, depth: u32) -> serde_json::Value {
    use serde_json::json;
    match rng.gen_range(0..if depth > 3 { 5 } else { 8 }) {
        0 => json!(null),
        1 => json!(rng.r#gen::<bool>()),
        2 => json!(rng.r#gen::<i64>()),
        3 => json!(rng.r#gen::<f64>()),
        4 => json!(junk(rng)),
        5 => serde_json::Value::Array(
            (0..rng.gen_range(0..4))
                .map(|_| random_json(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "value",
                "expiry",
                "comment",
                "tags",
                "role",
                "authorized",
                "name",
                "ipv4",
                "routes",
                "keyExpiryDisabled",
                "nodes",
                "capabilities",
                "devices",
                "create",
                "keyType",
                "scopes",
                "endpointUrl",
                "subscriptions",
                "expirySeconds",
                "src",
                "accept",
                "deny",
                "acls",
                "grants",
                "x",
            ];
            serde_json::Value::Object(
                (0..rng.gen_range(0..5))
                    .map(|_| (pick(rng, &keys).to_owned(), random_json(rng, depth + 1)))
                    .collect(),
            )
        }
    }
}

fn body(rng: &mut StdRng) -> Vec<u8> {
    match rng.gen_range(0..10) {
        0 => Vec::new(),
        1 => (0..rng.gen_range(1..300))
            .map(|_| rng.r#gen::<u8>())
            .collect(),
        2 => b"\xff\xfe\xfd{\"value\": \"\xc3\x28\"}".to_vec(),
        3 => format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
        4 => "{\"a\":".repeat(3000).into_bytes(),
        5 => format!("{{\"tags\": [{}]}}", vec!["\"tag:prod\""; 20_000].join(",")).into_bytes(),
        6 => "// comment\n{\"acls\": [,,]}".as_bytes().to_vec(),
        _ => random_json(rng, 0).to_string().into_bytes(),
    }
}

#[tokio::test]
async fn garbage_gets_well_formed_answers() {
    let emu = start().await;
    let mut rng = StdRng::seed_from_u64(0x7a11_6a7e);
    let methods = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "BREW", "TRACE",
    ];
    let tokens = [Some(ALICE), None, Some("tskey-api-bogus"), Some("")];
    for i in 0..500 {
        let method = Method::from_bytes(pick(&mut rng, &methods).as_bytes()).unwrap();
        let path = path(&mut rng);
        let mut rb = emu.client.request(method.clone(), emu.url(&path));
        if let Some(token) = *tokens.choose(&mut rng).unwrap() {
            rb = rb.bearer_auth(token);
        }
        if rng.gen_bool(0.3) {
            rb = rb.header(
                "content-type",
                pick(
                    &mut rng,
                    &[
                        "application/json",
                        "application/hujson",
                        "text/plain",
                        "application/x-www-form-urlencoded",
                        "\u{1}",
                    ],
                )
                .replace('\u{1}', "x/y"),
            );
        }
        if rng.gen_bool(0.2) {
            rb = rb.header(
                "if-match",
                pick(&mut rng, &["\"ts-default\"", "*", "\"abc\"", "W/\"x\"", ""]),
            );
        }
        if rng.gen_bool(0.2) {
            rb = rb.header(
                "accept",
                pick(&mut rng, &["application/json", "*/*", "text/html"]),
            );
        }
        if rng.gen_bool(0.1) {
            rb = rb.header(
                "authorization",
                pick(
                    &mut rng,
                    &[
                        "Basic !!!",
                        "Basic",
                        "Bearer",
                        "Basic dGVzdA==",
                        "Negotiate x",
                    ],
                ),
            );
        }
        let body = body(&mut rng);
        let size = body.len();
        let sent = rb.body(body).send().await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => panic!("request {i} {method} {path} ({size} bytes) got no answer: {e}"),
        };
        let resp = read(response).await;
        assert!(
            resp.status < 500,
            "request {i} {method} {path}: {} {}",
            resp.status,
            resp.text
        );
        if resp.status >= 400 && method != Method::HEAD {
            assert!(
                resp.json["message"].is_string(),
                "request {i} {method} {path}: error without a message: {} {}",
                resp.status,
                resp.text
            );
        }
    }
    // Huge bodies are refused, not swallowed.
    let huge = vec![b' '; emulator::MAX_BODY + 1];
    let r = emu
        .client
        .post(emu.url("/api/v2/tailnet/-/acl"))
        .bearer_auth(ALICE)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Still answering.
    emu.get("/api/v2/tailnet/-/devices").await.expect(200);
    emu.policy().await.expect(200);
}
