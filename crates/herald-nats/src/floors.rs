//! Retention floors shared by the nodes: the KV bucket `<stream>_floors`, topic → the
//! highest id retention removed from it (decimal text).
//!
//! The node whose `maintain` purged a topic raises its floor here (compare-and-set, never
//! lowers it); every node loads the bucket at open and watches it, so `floor` knows what any
//! node's retention removed, also after a restart.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{
    self,
    kv::{self, Operation},
    stream::{self, DiscardPolicy, StorageType},
};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use herald_core::{LogError, Topic, TopicTable};

use crate::{NatsError, NatsOptions, log::Shared};

/// Compare-and-set attempts when nodes raise one floor at once.
const CAS_ATTEMPTS: usize = 5;

/// Creates or opens the bucket.
pub(crate) async fn open(
    js: &jetstream::Context,
    opts: &NatsOptions,
) -> Result<kv::Store, NatsError> {
    bucket(
        js,
        &format!("{}_floors", opts.stream),
        "Herald: highest event id retention removed, per topic",
        opts.replicas,
    )
    .await
}

/// Creates (or updates) and opens a KV bucket with one value per key. The bucket's stream is
/// made here with the layout async-nats uses (`KV_<bucket>`, `$KV.<bucket>.>`): its own
/// bucket creation first asks for the account info, whose 2.9 form it cannot parse.
pub(crate) async fn bucket(
    js: &jetstream::Context,
    name: &str,
    description: &str,
    replicas: usize,
) -> Result<kv::Store, NatsError> {
    crate::log::retry_race(|| async {
        js.create_or_update_stream(stream::Config {
            name: format!("KV_{name}"),
            description: Some(description.into()),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            storage: StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            num_replicas: replicas,
            discard: DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| NatsError::js("create or update a KV bucket", e))?;
        js.get_key_value(name)
            .await
            .map_err(|e| NatsError::js("open a KV bucket", e))
    })
    .await
}

fn apply(table: &mut TopicTable, key: &str, value: &[u8]) {
    if key == crate::log::PROBE_KEY {
        return;
    }
    let through = std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    match (Topic::new(key), through) {
        (Ok(topic), Some(through)) => {
            let s = table.entry(&topic);
            s.pruned_through = s.pruned_through.max(through);
        }
        _ => tracing::warn!(key, "ignoring a bad entry in the floors bucket"),
    }
}

/// Loads every floor into the table.
pub(crate) async fn load(store: &kv::Store, table: &mut TopicTable) -> Result<(), NatsError> {
    let keys: Vec<String> = store
        .keys()
        .await
        .map_err(|e| NatsError::js("list the floors bucket", e))?
        .try_collect()
        .await
        .map_err(|e| NatsError::js("list the floors bucket", e))?;
    for key in keys {
        if let Some(v) = store
            .get(key.as_str())
            .await
            .map_err(|e| NatsError::js("read the floors bucket", e))?
        {
            apply(table, &key, &v);
        }
    }
    Ok(())
}

/// Follows the bucket until the log stops (re-watching after errors and reconnects).
pub(crate) async fn watch(shared: Arc<Shared>) {
    loop {
        if let Ok(mut entries) = shared.floors.watch_all().await {
            loop {
                let next = tokio::select! {
                    _ = shared.stop.cancelled() => return,
                    e = entries.next() => e,
                };
                match next {
                    Some(Ok(entry)) if entry.operation == Operation::Put => {
                        apply(&mut shared.topics.write().table, &entry.key, &entry.value);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
        }
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Raises a topic's floor to `through` (unless it is higher already).
pub(crate) async fn raise(shared: &Shared, topic: &Topic, through: u64) -> Result<(), LogError> {
    let value = Bytes::from(through.to_string());
    for _ in 0..CAS_ATTEMPTS {
        let current = shared
            .floors
            .entry(topic.as_str())
            .await
            .map_err(|e| shared.fail("read a floor", e))?;
        let written = match current {
            Some(e) if e.operation == Operation::Put => {
                let old = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                if old >= through {
                    return Ok(());
                }
                shared
                    .floors
                    .update(topic.as_str(), value.clone(), e.revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            _ => shared
                .floors
                .create(topic.as_str(), value.clone())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        match written {
            Ok(()) => return Ok(()),
            // Another node wrote first: look again.
            Err(e) => tracing::debug!(topic = %topic, error = %e, "floor update raced"),
        }
    }
    Err(LogError::Unavailable(format!(
        "cannot record the retention floor of {topic}"
    )))
}
