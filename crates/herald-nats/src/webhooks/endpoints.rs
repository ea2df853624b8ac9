//! Webhook endpoints in the KV bucket `<stream>_webhooks` (id → the [`Endpoint`] as JSON),
//! followed by every node into an [`EndpointSet`].
//!
//! A node's own writes are in its set at once (read-your-writes); other nodes' arrive through
//! the watch. Each id remembers the newest revision applied, so the watch delivering a write
//! older than one already applied locally never turns the set back.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use bytes::Bytes;
use herald_core::{
    Endpoint, LogError,
    webhook::{CompiledEndpoint, EndpointChange, EndpointSet},
};
use parking_lot::Mutex;
use serde_json::Value;

use crate::log::Shared;

/// Compare-and-set attempts of one `modify` when other nodes change the endpoint meanwhile.
const CAS_ATTEMPTS: usize = 8;

/// Longest endpoint id (it is a KV key and a subject token).
const MAX_ID: usize = 128;

/// What applying a bucket entry did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The endpoint was added or changed.
    Put(String),
    /// The endpoint was removed.
    Removed(String),
    /// Nothing (older than what is known, or not an endpoint).
    Ignored,
}

/// The endpoints: the bucket and this node's view of it.
pub(crate) struct Endpoints {
    pub(crate) kv: kv::Store,
    pub(crate) set: EndpointSet,
    /// Newest revision applied per id (puts and deletes).
    revisions: Mutex<HashMap<String, u64>>,
    /// Highest revision the watch has applied: every write up to it is in the set.
    seen: AtomicU64,
}

/// An endpoint id must be usable as a KV key and a subject token.
pub(crate) fn check_id(id: &str) -> Result<(), LogError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(LogError::Invalid(format!(
            "webhook endpoint id {id:?}: use 1-{MAX_ID} characters of [A-Za-z0-9_-]"
        )))
    }
}

fn invalid(e: impl std::fmt::Display) -> LogError {
    LogError::Invalid(e.to_string())
}

fn encode(e: &Endpoint) -> Result<Bytes, LogError> {
    serde_json::to_vec(e)
        .map(Bytes::from)
        .map_err(|e| LogError::Storage(format!("cannot encode a webhook endpoint: {e}")))
}

fn decode(value: &[u8]) -> Result<Endpoint, LogError> {
    serde_json::from_slice(value)
        .map_err(|e| LogError::Storage(format!("a stored webhook endpoint is not valid: {e}")))
}

/// A three-way merge for a `modify` that lost a race: the fields this change altered
/// (`ours` against `base`, the endpoint it was applied to) laid over what is stored now
/// (`theirs`). The change itself cannot run again (it is `FnOnce`).
pub(crate) fn merge(base: &Value, ours: &Value, theirs: &Endpoint) -> Result<Endpoint, LogError> {
    let mut merged = serde_json::to_value(theirs)
        .map_err(|e| LogError::Storage(format!("cannot encode a webhook endpoint: {e}")))?;
    if let (Value::Object(base), Value::Object(ours), Value::Object(out)) =
        (base, ours, &mut merged)
    {
        for (k, v) in ours {
            if base.get(k) != Some(v) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::from_value(merged)
        .map_err(|e| LogError::Storage(format!("cannot merge webhook endpoint changes: {e}")))
}

impl Endpoints {
    pub(crate) fn new(kv: kv::Store) -> Self {
        Self {
            kv,
            set: EndpointSet::new(),
            revisions: Mutex::default(),
            seen: AtomicU64::new(0),
        }
    }

    /// The highest revision the watch has applied.
    pub(crate) fn seen(&self) -> u64 {
        self.seen.load(Ordering::Acquire)
    }

    /// Applies one entry of the bucket (replay or watch).
    pub(crate) fn apply(&self, entry: &kv::Entry) -> Applied {
        let applied = self.apply_entry(entry);
        // After the set changed: whoever waits for `seen` finds the change in place.
        self.seen.fetch_max(entry.revision, Ordering::AcqRel);
        applied
    }

    fn apply_entry(&self, entry: &kv::Entry) -> Applied {
        let mut revisions = self.revisions.lock();
        if revisions
            .get(&entry.key)
            .is_some_and(|r| *r >= entry.revision)
        {
            return Applied::Ignored;
        }
        match entry.operation {
            Operation::Put => {
                let compiled = decode(&entry.value)
                    .and_then(|e| CompiledEndpoint::new(e).map_err(invalid))
                    .and_then(|c| {
                        if c.endpoint.id == entry.key {
                            Ok(c)
                        } else {
                            Err(LogError::Storage("id differs from its key".into()))
                        }
                    });
                match compiled {
                    Ok(c) => {
                        revisions.insert(entry.key.clone(), entry.revision);
                        self.set.put(Arc::new(c));
                        Applied::Put(entry.key.clone())
                    }
                    Err(e) => {
                        tracing::warn!(key = %entry.key, error = %e, "ignoring a bad entry in the webhooks bucket");
                        Applied::Ignored
                    }
                }
            }
            Operation::Delete | Operation::Purge => {
                revisions.insert(entry.key.clone(), entry.revision);
                self.set.remove(&entry.key);
                Applied::Removed(entry.key.clone())
            }
        }
    }

    /// A write of this node, in the set at once (unless a newer one is there already).
    fn local(&self, compiled: CompiledEndpoint, revision: u64) {
        let mut revisions = self.revisions.lock();
        let id = compiled.endpoint.id.clone();
        if revisions.get(&id).is_some_and(|r| *r >= revision) {
            return;
        }
        revisions.insert(id, revision);
        self.set.put(Arc::new(compiled));
    }

    /// Stores an endpoint (created, or replaced when the id exists).
    pub(crate) async fn create(
        &self,
        shared: &Shared,
        endpoint: Endpoint,
    ) -> Result<Endpoint, LogError> {
        check_id(&endpoint.id)?;
        let compiled = CompiledEndpoint::new(endpoint.clone()).map_err(invalid)?;
        let revision = self
            .kv
            .put(endpoint.id.as_str(), encode(&endpoint)?)
            .await
            .map_err(|e| shared.fail("store a webhook endpoint", e))?;
        self.local(compiled, revision);
        Ok(endpoint)
    }

    /// Applies `change` to the stored endpoint with compare-and-set; on a conflict the fields
    /// it changed are merged over the newer value (see [`merge`]).
    pub(crate) async fn modify(
        &self,
        shared: &Shared,
        id: &str,
        change: EndpointChange,
    ) -> Result<Option<Endpoint>, LogError> {
        let mut change = Some(change);
        let mut mine: Option<(Value, Value)> = None;
        for _ in 0..CAS_ATTEMPTS {
            let entry = self
                .kv
                .entry(id)
                .await
                .map_err(|e| shared.fail("read a webhook endpoint", e))?;
            let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
                return Ok(None);
            };
            let current = decode(&entry.value)?;
            let mut next = match (&mine, change.take()) {
                (Some((base, ours)), _) => merge(base, ours, &current)?,
                (None, Some(f)) => {
                    let mut e = current.clone();
                    f(&mut e);
                    let as_value = |e: &Endpoint| {
                        serde_json::to_value(e).map_err(|e| {
                            LogError::Storage(format!("cannot encode a webhook endpoint: {e}"))
                        })
                    };
                    mine = Some((as_value(&current)?, as_value(&e)?));
                    e
                }
                (None, None) => {
                    return Err(LogError::Storage(
                        "webhook endpoint change lost before it was applied".into(),
                    ));
                }
            };
            next.id = id.to_owned();
            let compiled = CompiledEndpoint::new(next.clone()).map_err(invalid)?;
            match self.kv.update(id, encode(&next)?, entry.revision).await {
                Ok(revision) => {
                    self.local(compiled, revision);
                    return Ok(Some(next));
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    tracing::debug!(endpoint = id, "webhook endpoint changed meanwhile; merging");
                }
                Err(e) => return Err(shared.fail("store a webhook endpoint", e)),
            }
        }
        Err(LogError::Unavailable(format!(
            "webhook endpoint {id} keeps being changed by other nodes; try again"
        )))
    }

    /// Removes an endpoint from the bucket and the set; whether it existed.
    pub(crate) async fn delete(&self, shared: &Shared, id: &str) -> Result<bool, LogError> {
        let entry = self
            .kv
            .entry(id)
            .await
            .map_err(|e| shared.fail("read a webhook endpoint", e))?;
        let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
            // Gone already (another node's delete the watch has not brought yet).
            self.set.remove(id);
            return Ok(false);
        };
        self.kv
            .delete(id)
            .await
            .map_err(|e| shared.fail("delete a webhook endpoint", e))?;
        let mut revisions = self.revisions.lock();
        let r = revisions.entry(id.to_owned()).or_default();
        *r = (*r).max(entry.revision);
        self.set.remove(id);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {

    use serde_json::json;

    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint::new(
            "wh_1",
            "http://example.com/",
            vec![">".into()],
            "whsec_AAAA",
            1,
        )
    }

    #[test]
    fn merge_lays_our_changed_fields_over_theirs() {
        let base = endpoint();
        let mut ours = base.clone();
        ours.url = "http://ours/".into();
        ours.updated_ms = 5;
        let mut theirs = base.clone();
        theirs.failing_since_ms = Some(3);
        theirs.updated_ms = 4;
        let merged = merge(
            &serde_json::to_value(&base).unwrap(),
            &serde_json::to_value(&ours).unwrap(),
            &theirs,
        )
        .unwrap();
        assert_eq!(merged.url, "http://ours/");
        assert_eq!(merged.failing_since_ms, Some(3));
        assert_eq!(merged.updated_ms, 5);
        assert_eq!(merged.topics, vec![">".to_owned()]);
    }

    #[test]
    fn merge_keeps_theirs_when_we_changed_nothing() {
        let base = endpoint();
        let v = serde_json::to_value(&base).unwrap();
        let mut theirs = base.clone();
        theirs.enabled = false;
        assert_eq!(merge(&v, &v, &theirs).unwrap(), theirs);
        assert!(merge(&json!(1), &json!(2), &theirs).is_ok());
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("wh_01abc-D").is_ok());
        for bad in ["", "a.b", "a b", "a>", "é", &"x".repeat(MAX_ID + 1)] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }
}
