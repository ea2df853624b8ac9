//! `maintain`: per-topic retention with the stream purge API.
//!
//! What needs work is decided in memory, so a sweep with nothing to do sends nothing:
//! - count: a topic holding more than its `max_events` is purged with `filter` + `keep`;
//! - age: a topic whose oldest event (by the stream's timestamp) is older than its `max_age`
//!   is purged with `filter` + `seq`, the first sequence at or after the cut-off (found with a
//!   consumer that starts by time).
//!
//! After a purge the topic's count is read back from the stream and its oldest event looked
//! up again; what was removed raises its floor, here and in the floors bucket. Idempotency
//! keys expire by themselves (the stream's duplicate window).
//!
//! The floor recorded is an upper bound: "everything before the first retained event"
//! (`first - 1`, or the cut-off sequence `- 1`), which can lie above the highest id actually
//! removed when other topics' events sit in between. A cursor in that gap gets a
//! `herald.truncated` notice it did not need; a gap never goes unreported.

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use futures::{StreamExt, TryStreamExt};
use herald_core::{LogError, Topic, event::now_ms};

use crate::{
    codec, floors,
    log::{Oldest, Shared},
};

use std::sync::atomic::Ordering;

pub(crate) async fn maintain(shared: &Shared) -> Result<(), LogError> {
    if shared.closed.load(Ordering::Acquire) {
        return Err(LogError::Closed);
    }
    shared.connected()?;
    let retention = &shared.options.retention;
    let now = now_ms();
    let (over, old) = {
        let topics = shared.topics.read();
        let over: Vec<(Topic, u64)> = topics
            .table
            .iter()
            .filter_map(|(t, s)| {
                let (max_events, _) = retention.limits(t.as_str());
                (s.count > max_events).then(|| (t.clone(), max_events))
            })
            .collect();
        let old: Vec<(Topic, i64, u64)> = topics
            .oldest
            .iter()
            .filter_map(|(t, o)| {
                let (_, max_age) = retention.limits(t.as_str());
                let max_age = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
                let last = topics.table.get(t.as_str()).map_or(0, |s| s.last_id);
                (now.saturating_sub(o.at_ms) >= max_age)
                    .then(|| (t.clone(), now.saturating_sub(max_age), last))
            })
            .collect();
        (over, old)
    };
    for (topic, keep) in over {
        let subject = shared.subjects.topic(topic.as_str());
        let purged = shared
            .stream
            .purge()
            .filter(subject.as_str())
            .keep(keep)
            .await
            .map_err(|e| shared.fail("purge", e))?
            .purged;
        settle(shared, &topic, purged, None).await?;
    }
    for (topic, cutoff_ms, last_id) in old {
        let Some(from) = first_at_or_after(shared, &topic, cutoff_ms).await? else {
            continue;
        };
        let from = from.unwrap_or(last_id + 1);
        let subject = shared.subjects.topic(topic.as_str());
        let purged = shared
            .stream
            .purge()
            .filter(subject.as_str())
            .sequence(from)
            .await
            .map_err(|e| shared.fail("purge", e))?
            .purged;
        settle(shared, &topic, purged, Some(from)).await?;
    }
    Ok(())
}

/// The first sequence of the topic stored at or after `cutoff_ms`: `Some(None)` when every
/// event is older, `None` when the cut-off time cannot be expressed.
async fn first_at_or_after(
    shared: &Shared,
    topic: &Topic,
    cutoff_ms: i64,
) -> Result<Option<Option<u64>>, LogError> {
    let Ok(start_time) = async_nats::datetime::from_nanos(i128::from(cutoff_ms) * 1_000_000) else {
        return Ok(None);
    };
    let config = pull::Config {
        deliver_policy: DeliverPolicy::ByStartTime { start_time },
        ack_policy: AckPolicy::None,
        filter_subject: shared.subjects.topic(topic.as_str()),
        inactive_threshold: std::time::Duration::from_secs(10),
        memory_storage: true,
        num_replicas: 1,
        ..Default::default()
    };
    let consumer: PullConsumer = shared
        .js
        .create_consumer_on_stream(config, &shared.stream_name)
        .await
        .map_err(|e| shared.fail("create a retention consumer", e))?;
    let mut seq = None;
    if consumer.cached_info().num_pending > 0 {
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .messages()
            .await
            .map_err(|e| shared.fail("retention read", e))?;
        if let Some(msg) = batch
            .try_next()
            .await
            .map_err(|e| shared.fail("retention read", e))?
        {
            seq = msg.info().ok().map(|i| i.stream_sequence);
        }
    }
    let name = consumer.cached_info().name.clone();
    let _ = shared
        .js
        .delete_consumer_from_stream(&name, &shared.stream_name)
        .await;
    match seq {
        Some(s) => Ok(Some(Some(s))),
        // Pending but not fetched (removed meanwhile): try again at the next sweep.
        None if consumer.cached_info().num_pending > 0 => Ok(None),
        None => Ok(Some(None)),
    }
}

/// After a purge of a topic: its count from the stream, its oldest event, its floor.
async fn settle(
    shared: &Shared,
    topic: &Topic,
    purged: u64,
    cut: Option<u64>,
) -> Result<(), LogError> {
    let subject = shared.subjects.topic(topic.as_str());
    let first = match shared
        .stream
        .direct_get_first_for_subject(subject.as_str())
        .await
    {
        Ok(m) => Some(Oldest {
            seq: m.sequence,
            at_ms: codec::datetime_ms(&m.time),
        }),
        Err(e) if e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => None,
        Err(e) => return Err(shared.fail("get", e)),
    };
    let count = if first.is_some() {
        let mut info = shared
            .stream
            .info_with_subjects(subject.as_str())
            .await
            .map_err(|e| shared.fail("stream info", e))?;
        let mut n = 0u64;
        while let Some((s, c)) = info
            .next()
            .await
            .transpose()
            .map_err(|e| shared.fail("stream info", e))?
        {
            if s == subject {
                n = c as u64;
            }
        }
        n
    } else {
        0
    };
    let raised = {
        let mut topics = shared.topics.write();
        let s = topics.table.entry(topic);
        s.count = count;
        let mut raised = None;
        if purged > 0 {
            let through = match (first, cut) {
                (_, Some(cut)) => cut.saturating_sub(1),
                (Some(f), None) => f.seq.saturating_sub(1),
                (None, None) => s.last_id,
            };
            if through > s.pruned_through {
                s.pruned_through = through;
                raised = Some(through);
            }
        }
        match first {
            Some(f) => {
                topics.oldest.insert(topic.clone(), f);
            }
            None => {
                topics.oldest.remove(topic);
            }
        }
        raised
    };
    if let Some(through) = raised {
        floors::raise(shared, topic, through).await?;
    }
    Ok(())
}
