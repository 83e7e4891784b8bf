//! The audit log: append-only, each entry hash-chained to the one before, so an edited,
//! deleted or reordered entry is detected by [`verify`].

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An entry to append; the store assigns `seq` and the hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    /// RFC 3339, as the clock gave it.
    pub at: String,
    pub actor: String,
    pub action: String,
    pub request: Option<String>,
    /// JSON text, hashed as stored.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub request: Option<String>,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of an entry: SHA-256 over its fields and the previous hash, each length-prefixed
/// so no two different entries can serialize alike.
pub fn entry_hash(prev_hash: &str, seq: i64, e: &NewAuditEntry) -> String {
    let mut h = Sha256::new();
    let fields: [&str; 6] = [
        prev_hash,
        &seq.to_string(),
        &e.at,
        &e.actor,
        &e.action,
        e.request.as_deref().unwrap_or(""),
    ];
    for field in fields.iter().chain(std::iter::once(&e.detail.as_str())) {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    hex::encode(h.finalize())
}

impl AuditEntry {
    /// Chains `entry` after the entry with `prev_seq` and `prev_hash`.
    pub fn chain(prev_seq: i64, prev_hash: &str, entry: &NewAuditEntry) -> AuditEntry {
        let seq = prev_seq + 1;
        AuditEntry {
            seq,
            at: entry.at.clone(),
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            request: entry.request.clone(),
            detail: entry.detail.clone(),
            prev_hash: prev_hash.to_owned(),
            hash: entry_hash(prev_hash, seq, entry),
        }
    }

    fn content(&self) -> NewAuditEntry {
        NewAuditEntry {
            at: self.at.clone(),
            actor: self.actor.clone(),
            action: self.action.clone(),
            request: self.request.clone(),
            detail: self.detail.clone(),
        }
    }
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log broken at entry {seq}: {problem}")]
pub struct ChainBreak {
    pub seq: i64,
    pub problem: String,
}

/// Checks entries in order, starting from the first entry (seq 1).
pub fn verify(entries: &[AuditEntry]) -> Result<(), ChainBreak> {
    let mut prev_hash = GENESIS.to_owned();
    let mut prev_seq = 0;
    for e in entries {
        if e.seq != prev_seq + 1 {
            return Err(ChainBreak {
                seq: prev_seq + 1,
                problem: format!("missing (the next entry is {})", e.seq),
            });
        }
        if e.prev_hash != prev_hash {
            return Err(ChainBreak {
                seq: e.seq,
                problem: "does not link to the entry before it".into(),
            });
        }
        if entry_hash(&prev_hash, e.seq, &e.content()) != e.hash {
            return Err(ChainBreak {
                seq: e.seq,
                problem: "its content was changed after it was written".into(),
            });
        }
        prev_hash = e.hash.clone();
        prev_seq = e.seq;
    }
    Ok(())
}

/// A request as the audit log tells it: its state and whether its removal was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Told {
    pub state: crate::request::State,
    pub removal_verified: bool,
}

/// Replays the log's lifecycle entries: what each request must be now.
pub fn replay(entries: &[AuditEntry]) -> std::collections::BTreeMap<String, Told> {
    use crate::request::State;
    let mut told: std::collections::BTreeMap<String, Told> = std::collections::BTreeMap::new();
    for e in entries {
        let Some(id) = &e.request else { continue };
        if e.action == "request.created" {
            told.insert(
                id.clone(),
                Told {
                    state: State::Pending,
                    removal_verified: false,
                },
            );
            continue;
        }
        let Some(t) = told.get_mut(id) else { continue };
        match e.action.as_str() {
            "request.approved" | "request.auto_approved" | "request.break_glass"
                if t.state == State::Pending =>
            {
                t.state = State::Approved
            }
            // A grant applied while its request was being ended stays ended.
            "grant.applied" if t.state == State::Approved => t.state = State::Active,
            "grant.expired" => t.state = State::Expired,
            "grant.revoked" | "grant.dropped" => t.state = State::Revoked,
            "request.denied" => t.state = State::Denied,
            "request.cancelled" | "request.lapsed" => t.state = State::Cancelled,
            "grant.failed" => t.state = State::Failed,
            "grant.removal_verified" => t.removal_verified = true,
            _ => {}
        }
    }
    told
}

/// Where the requests table and the log disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request {request}: {problem}")]
pub struct Disagreement {
    pub request: String,
    pub problem: String,
}

/// Checks the stored requests against what the (already verified) log says of them: every
/// request is in the log, in the state the log leads to, with its removal verified if and only
/// if the log says so; no request the log created is missing.
pub fn check_requests(
    entries: &[AuditEntry],
    requests: &[crate::request::Request],
) -> Vec<Disagreement> {
    let told = replay(entries);
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in requests {
        seen.insert(r.id.as_str());
        let problem = match told.get(&r.id) {
            None => Some("is in the requests table but was never created in the log".to_owned()),
            Some(t) if t.state != r.state => Some(format!(
                "is {} in the requests table, but the log says {}",
                r.state.as_str(),
                t.state.as_str()
            )),
            Some(t) if t.removal_verified != r.tailnet.removal_verified_at.is_some() => {
                Some(if t.removal_verified {
                    "the log verified its removal, the requests table does not say so".to_owned()
                } else {
                    "the requests table says its removal was verified, the log does not".to_owned()
                })
            }
            Some(_) => None,
        };
        if let Some(problem) = problem {
            out.push(Disagreement {
                request: r.id.clone(),
                problem,
            });
        }
    }
    for id in told.keys().filter(|id| !seen.contains(id.as_str())) {
        out.push(Disagreement {
            request: id.clone(),
            problem: "was created in the log but is missing from the requests table".into(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> NewAuditEntry {
        NewAuditEntry {
            at: format!("2026-11-22T10:00:{i:02}Z"),
            actor: "alice@example.com".into(),
            action: "request.created".into(),
            request: Some(format!("r{i}")),
            detail: format!("{{\"n\":{i}}}"),
        }
    }

    fn chain(n: usize) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let (seq, hash) = out
                .last()
                .map_or((0, GENESIS.to_owned()), |e| (e.seq, e.hash.clone()));
            out.push(AuditEntry::chain(seq, &hash, &entry(i)));
        }
        out
    }

    #[test]
    fn an_intact_chain_verifies() {
        verify(&chain(5)).unwrap();
    }

    #[test]
    fn edits_deletions_and_reorders_are_caught() {
        let mut edited = chain(5);
        edited[2].detail = "{\"n\":99}".into();
        assert_eq!(verify(&edited).unwrap_err().seq, 3);

        let mut deleted = chain(5);
        deleted.remove(3);
        assert_eq!(verify(&deleted).unwrap_err().seq, 4);

        let mut last_deleted = chain(5);
        last_deleted.pop();
        verify(&last_deleted).unwrap(); // a truncated tail is only caught against a manifest

        let mut rehashed = chain(5);
        rehashed[1].actor = "mallory@example.com".into();
        let content = rehashed[1].content();
        rehashed[1].hash = entry_hash(&rehashed[1].prev_hash, 2, &content);
        assert_eq!(
            verify(&rehashed).unwrap_err().seq,
            3,
            "re-hashing one entry breaks the next link"
        );
    }
}
