//! Every recorded control-plane result in `data/policy-vectors` must be reproduced exactly,
//! compared as the vectors' README prescribes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use policy::{Engine, Inventory, Policy, PolicyError};
use serde_json::{Value, json};

/// Vectors the engine cannot model, with the reason. Keep this short.
const SKIP: &[(&str, &str)] = &[];

fn vector_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/policy-vectors");
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "json") {
                    files.push(f);
                }
            }
        }
    }
    files.sort();
    files
}

/// Missing, null and [] are equal; lists compared as sorted sets where the README says so.
fn normalize_rule(rule: &Value) -> Value {
    let mut out = serde_json::Map::new();
    let sorted = |v: Option<&Value>| -> Value {
        let mut items: Vec<String> = v
            .and_then(|v| v.as_array())
            .map(|a| a.iter().map(|x| x.to_string()).collect())
            .unwrap_or_default();
        items.sort();
        json!(items)
    };
    out.insert("SrcIPs".into(), sorted(rule.get("SrcIPs")));
    out.insert("DstPorts".into(), sorted(rule.get("DstPorts")));
    out.insert("IPProto".into(), sorted(rule.get("IPProto")));
    let caps: Vec<Value> = rule
        .get("CapGrant")
        .and_then(|c| c.as_array())
        .map(|a| {
            a.iter()
                .map(|g| json!({"Dsts": sorted(g.get("Dsts")), "CapMap": g.get("CapMap").cloned().unwrap_or(Value::Null)}))
                .collect()
        })
        .unwrap_or_default();
    out.insert("CapGrant".into(), json!(caps));
    Value::Object(out)
}

fn normalize_ssh(rule: &Value) -> Value {
    let mut rule = rule.clone();
    if let Some(p) = rule.get_mut("principals").and_then(|p| p.as_array_mut()) {
        p.sort_by_key(|x| x.to_string());
    }
    if let Some(obj) = rule.as_object_mut()
        && obj
            .get("acceptEnv")
            .is_some_and(|v| v.is_null() || v.as_array().is_some_and(|a| a.is_empty()))
    {
        obj.remove("acceptEnv");
    }
    rule
}

const DEFAULT_ATTR_PREFIXES: &[&str] = &["https://tailscale.com/cap/", "ssh-"];
const DEFAULT_ATTRS: &[&str] = &[
    "probe-udp-lifetime",
    "store-appc-routes",
    "tailnet-display-name",
    "default-auto-update",
];

/// Runs one vector; `Err` describes the first mismatch.
fn run_vector(v: &Value) -> Result<(), String> {
    let text = v["policy_hujson"].as_str().ok_or("no policy_hujson")?;
    let inventory: Inventory =
        serde_json::from_value(v["inventory"].clone()).map_err(|e| format!("inventory: {e}"))?;
    let expect = &v["expect"];
    let built = Policy::parse(text).and_then(|p| Engine::build(p, &inventory));
    if let Some(err) = expect.get("error") {
        let want = err["message"].as_str().unwrap_or_default();
        return match built {
            Ok(_) => Err(format!("accepted; control plane refused with {want:?}")),
            Err(e) if e.api_message().contains(want) => Ok(()),
            // The README: in ssh-e1 the message names the pre-anonymisation domain, so only
            // the text after the domain is meaningful.
            Err(e)
                if want.starts_with("PASSKEY ")
                    && e.api_message()
                        .ends_with(want.trim_start_matches("PASSKEY")) =>
            {
                Ok(())
            }
            Err(e) => Err(format!(
                "refused with {:?}; control plane said {want:?}",
                e.api_message()
            )),
        };
    }
    if let Some(tests) = expect.get("tests") {
        let result = built.map(|engine| engine.run_tests());
        return match (tests.as_str(), result) {
            (Some("pass"), Ok(f)) if f.is_empty() => Ok(()),
            (Some("pass"), Ok(f)) => Err(format!("tests failed: {f:?}")),
            (Some("pass"), Err(e)) => Err(format!("refused: {e}")),
            (_, Ok(f)) if !f.is_empty() => Ok(()),
            (_, Err(PolicyError::TestsFailed(_))) => Ok(()),
            (_, Err(e)) => {
                let want = expect["message"].as_str().unwrap_or_default();
                if want == "test(s) failed" || e.api_message().contains(want) {
                    Ok(())
                } else {
                    Err(format!(
                        "refused with {:?}, expected {want:?}",
                        e.api_message()
                    ))
                }
            }
            (_, Ok(_)) => Err("tests passed; control plane failed them".into()),
        };
    }
    let engine = built.map_err(|e| format!("refused: {}", e.api_message()))?;
    if let Some(filters) = expect.get("packetFilter").and_then(|f| f.as_object()) {
        for (device, want) in filters {
            let wire = engine
                .device_wire(device)
                .ok_or(format!("no device {device}"))?;
            let got = serde_json::to_value(&wire.packet_filter).unwrap();
            let norm = |v: &Value| -> Vec<Value> {
                v.as_array()
                    .map(|a| a.iter().map(normalize_rule).collect())
                    .unwrap_or_default()
            };
            if norm(&got) != norm(want) {
                return Err(format!(
                    "packetFilter of {device}:\n  got  {}\n  want {}",
                    serde_json::to_string(&got).unwrap(),
                    serde_json::to_string(want).unwrap()
                ));
            }
        }
    }
    if let Some(ssh) = expect.get("sshRules").and_then(|f| f.as_object()) {
        for (device, want) in ssh {
            let wire = engine
                .device_wire(device)
                .ok_or(format!("no device {device}"))?;
            let got = serde_json::to_value(&wire.ssh_rules).unwrap();
            let norm = |v: &Value| -> Vec<Value> {
                v.as_array()
                    .map(|a| a.iter().map(normalize_ssh).collect())
                    .unwrap_or_default()
            };
            if norm(&got) != norm(want) {
                return Err(format!(
                    "sshRules of {device}:\n  got  {}\n  want {}",
                    serde_json::to_string(&got).unwrap(),
                    serde_json::to_string(want).unwrap()
                ));
            }
        }
    }
    if let Some(attrs) = expect.get("nodeAttrs").and_then(|f| f.as_object()) {
        for (device, want) in attrs {
            let mut got: Vec<String> = engine
                .node_attrs(device)
                .ok_or(format!("no device {device}"))?
                .into_iter()
                .filter(|a| {
                    !DEFAULT_ATTR_PREFIXES.iter().any(|p| a.starts_with(p))
                        && !DEFAULT_ATTRS.contains(&a.as_str())
                })
                .collect();
            got.sort();
            let mut want: Vec<String> = serde_json::from_value(want.clone()).unwrap();
            want.sort();
            if got != want {
                return Err(format!("nodeAttrs of {device}: got {got:?}, want {want:?}"));
            }
        }
    }
    Ok(())
}

#[test]
fn every_policy_vector_matches_the_control_plane() {
    let files = vector_files();
    assert!(files.len() >= 428, "vectors missing: found {}", files.len());
    let mut failures: BTreeMap<String, String> = BTreeMap::new();
    for file in &files {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let id = v["id"].as_str().unwrap().to_owned();
        if let Err(why) = run_vector(&v) {
            failures.insert(id, why);
        }
    }
    let unexpected: Vec<_> = failures
        .iter()
        .filter(|(id, _)| !SKIP.iter().any(|(s, _)| s == id))
        .collect();
    let stale: Vec<_> = SKIP
        .iter()
        .filter(|(s, _)| !failures.contains_key(*s))
        .collect();
    for (id, why) in &unexpected {
        eprintln!("MISMATCH {id}: {why}");
    }
    assert!(
        unexpected.is_empty() && stale.is_empty(),
        "{} of {} vectors mismatch; stale skips: {stale:?}",
        unexpected.len(),
        files.len()
    );
}
