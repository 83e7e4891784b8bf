//! `authkey`: each key is its own target. Keys are minted when the requester claims them (in
//! the service); here they are revoked at the end and the revocation read back.

use serde_json::json;

use super::{ChangeError, PassReport, Reconciler, event};
use crate::request::Request;

impl Reconciler {
    pub(super) async fn authkey(&self, r: Request, report: &mut PassReport) {
        let now = self.now();
        if r.wants_access(now)
            || r.tailnet.applied_at.is_none()
            || r.tailnet.removal_verified_at.is_some()
        {
            return;
        }
        let Some(key_id) = r.tailnet.key_id.clone() else {
            return;
        };
        let intent = vec![(
            Some(r.id.clone()),
            "grant.removing",
            json!({"key_id": key_id}),
        )];
        if let Err(e) = self.intend(intent).await {
            return self.note_failure(vec![r], &e, report).await;
        }
        if let Err(e) = self.revoke_key_verified(&key_id).await {
            return self.note_failure(vec![r], &e, report).await;
        }
        let mut r = r;
        r.tailnet.removed_at = Some(now);
        r.tailnet.removal_verified_at = Some(now);
        let events = vec![event(
            &r,
            "grant.removal_verified",
            json!({"key_id": key_id}),
        )];
        self.settle(vec![(r, events)], report).await;
    }

    async fn revoke_key_verified(&self, key_id: &str) -> Result<(), ChangeError> {
        match self.tailnet().delete_key(key_id).await {
            Ok(()) | Err(tailnet::Error::NotFound(_)) => {}
            Err(e) => return Err(ChangeError::tailnet(format!("revoking key {key_id}"), e)),
        }
        match self.tailnet().key(key_id).await {
            Ok(k) if k.invalid => Ok(()),
            Err(tailnet::Error::NotFound(_)) => Ok(()),
            Ok(_) => Err(ChangeError::NotVerified(format!(
                "key {key_id} is still valid"
            ))),
            Err(e) => Err(ChangeError::tailnet(format!("reading key {key_id}"), e)),
        }
    }
}
