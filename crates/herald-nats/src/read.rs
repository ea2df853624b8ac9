//! Reads: `read` and `latest` through short-lived ephemeral consumers.
//!
//! Every read is capped at this node's head (the last id handed to the sink), so a read never
//! returns an event the feed has not delivered yet, and never skips one it has (no holes).
//! Before asking the server, patterns are narrowed with the in-memory topic stats: a pattern
//! none of whose topics has an event after the cursor is dropped, and one covered by another
//! is merged into it.
//!
//! Plans (2.9 servers take one filter subject per consumer):
//! - one pattern: one consumer filtered by it, from `after + 1`;
//! - up to [`MERGE_MAX`] patterns: one consumer per pattern, merged by id;
//! - more: one consumer over the patterns' common literal prefix (`a.b.>`, else every event),
//!   matching the patterns in memory.
//!
//! `latest` reads windows before the head that grow four-fold until they hold `limit`
//! matching events (or reach the start of the stream); topics known to hold at most `limit`
//! events are read from the start in one go.

use std::sync::Arc;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use futures::StreamExt;
use herald_core::{Event, LogError, Pattern};

use crate::{codec, log::Shared};

/// Most patterns read with one consumer each.
const MERGE_MAX: usize = 4;
/// Most messages asked for in one pull.
const FETCH_MAX: usize = 1024;
/// The first window `latest` tries.
const LATEST_FIRST_WINDOW: u64 = 256;
/// A read consumer that this node failed to delete goes away after this long.
const INACTIVE: std::time::Duration = std::time::Duration::from_secs(10);

/// Up to `limit` events with `after < id <= upto` matching any pattern, in id order.
pub(crate) async fn read(
    shared: &Shared,
    patterns: &[Pattern],
    after: u64,
    upto: u64,
    limit: usize,
) -> Result<Vec<Arc<Event>>, LogError> {
    if patterns.is_empty() || limit == 0 || after >= upto {
        return Ok(Vec::new());
    }
    let live = live_patterns(shared, patterns, after);
    match live.len() {
        0 => Ok(Vec::new()),
        1 => {
            scan(
                shared,
                &shared.subjects.pattern(&live[0]),
                after,
                upto,
                limit,
                None,
            )
            .await
        }
        n if n <= MERGE_MAX => {
            let reads = live.iter().map(|p| {
                let filter = shared.subjects.pattern(p);
                async move { scan(shared, &filter, after, upto, limit, None).await }
            });
            let mut all: Vec<Arc<Event>> = Vec::new();
            for part in futures::future::join_all(reads).await {
                all.extend(part?);
            }
            all.sort_by_key(|e| e.id);
            all.dedup_by_key(|e| e.id);
            all.truncate(limit);
            Ok(all)
        }
        _ => {
            let filter = covering_filter(shared, &live);
            scan(shared, &filter, after, upto, limit, Some(&live)).await
        }
    }
}

/// The newest `limit` events matching any pattern, in id order.
pub(crate) async fn latest(
    shared: &Shared,
    patterns: &[Pattern],
    limit: usize,
) -> Result<Vec<Arc<Event>>, LogError> {
    let upto = shared.head();
    if patterns.is_empty() || limit == 0 || upto == 0 {
        return Ok(Vec::new());
    }
    let known: u64 = {
        let topics = shared.topics.read();
        topics
            .table
            .iter()
            .filter(|(t, _)| patterns.iter().any(|p| p.matches(t.as_str())))
            .map(|(_, s)| s.count)
            .sum()
    };
    if known <= limit as u64 {
        // Probably all of them: one read from the start (one more to know it was all).
        let all = read(shared, patterns, 0, upto, limit.saturating_add(1)).await?;
        if all.len() <= limit {
            return Ok(all);
        }
    }
    let mut window = (limit as u64).saturating_mul(2).max(LATEST_FIRST_WINDOW);
    loop {
        let after = upto.saturating_sub(window);
        let mut found = read(shared, patterns, after, upto, usize::MAX).await?;
        if found.len() >= limit || after == 0 {
            let skip = found.len().saturating_sub(limit);
            return Ok(found.split_off(skip));
        }
        window = window.saturating_mul(4);
    }
}

/// The patterns worth a server read: some topic of theirs has an event after `after`; none
/// covered by another one kept.
fn live_patterns(shared: &Shared, patterns: &[Pattern], after: u64) -> Vec<Pattern> {
    let topics = shared.topics.read();
    let mut out: Vec<Pattern> = Vec::new();
    for p in patterns {
        if out.iter().any(|q| p.is_covered_by(q)) {
            continue;
        }
        let has_news = if p.is_literal() {
            topics
                .table
                .get(p.as_str())
                .is_some_and(|s| s.last_id > after)
        } else {
            topics
                .table
                .iter()
                .any(|(t, s)| s.last_id > after && p.matches(t.as_str()))
        };
        if has_news {
            out.retain(|q| !q.is_covered_by(p));
            out.push(p.clone());
        }
    }
    out
}

/// One filter subject that every pattern's topics fall under: `<common literal prefix>.>`
/// when the patterns share leading literal segments (each pattern having more after them),
/// else every event.
fn covering_filter(shared: &Shared, patterns: &[Pattern]) -> String {
    let split: Vec<Vec<&str>> = patterns
        .iter()
        .map(|p| p.as_str().split('.').collect())
        .collect();
    let shortest = split.iter().map(Vec::len).min().unwrap_or(0);
    let mut common: Vec<&str> = Vec::new();
    for i in 0..shortest.saturating_sub(1) {
        let seg = split[0][i];
        if seg == "*" || seg == ">" || !split.iter().all(|s| s[i] == seg) {
            break;
        }
        common.push(seg);
    }
    if common.is_empty() {
        shared.subjects.all_events()
    } else {
        shared.subjects.topic(&format!("{}.>", common.join(".")))
    }
}

/// Up to `limit` events under `filter` with `after < id <= upto` (and matching `only`, when
/// given), through one ephemeral consumer.
async fn scan(
    shared: &Shared,
    filter: &str,
    after: u64,
    upto: u64,
    limit: usize,
    only: Option<&[Pattern]>,
) -> Result<Vec<Arc<Event>>, LogError> {
    let config = pull::Config {
        deliver_policy: DeliverPolicy::ByStartSequence {
            start_sequence: after + 1,
        },
        ack_policy: AckPolicy::None,
        // The stream's whole subject space goes without a filter: nats-server 2.9 miscounts
        // `num_pending` for a start sequence with a filter equal to the stream's subjects
        // (the read then waited for messages that never come).
        filter_subject: if filter == shared.subjects.all_events() {
            String::new()
        } else {
            filter.to_owned()
        },
        inactive_threshold: INACTIVE,
        memory_storage: true,
        num_replicas: 1,
        ..Default::default()
    };
    let consumer: PullConsumer = shared
        .js
        .create_consumer_on_stream(config, &shared.stream_name)
        .await
        .map_err(|e| shared.fail("create a read consumer", e))?;
    let result = drain(shared, &consumer, upto, limit, only).await;
    // Deleting is clean-up only (an idle consumer expires by itself): off the read's path.
    let name = consumer.cached_info().name.clone();
    let js = shared.js.clone();
    let stream = shared.stream_name.clone();
    tokio::spawn(async move {
        let _ = js.delete_consumer_from_stream(&name, &stream).await;
    });
    result
}

async fn drain(
    shared: &Shared,
    consumer: &PullConsumer,
    upto: u64,
    limit: usize,
    only: Option<&[Pattern]>,
) -> Result<Vec<Arc<Event>>, LogError> {
    let mut pending = consumer.cached_info().num_pending;
    let mut out = Vec::new();
    let mut expected = 1u64;
    'pulls: while pending > 0 && out.len() < limit {
        let mut want = usize::try_from(pending).unwrap_or(FETCH_MAX).min(FETCH_MAX);
        if only.is_none() {
            want = want.min(limit - out.len());
        }
        let mut batch = consumer
            .fetch()
            .max_messages(want)
            .messages()
            .await
            .map_err(|e| shared.fail("read", e))?;
        let mut got = 0;
        while let Some(msg) = batch.next().await {
            let msg = msg.map_err(|e| shared.fail("read", e))?;
            got += 1;
            let info = msg
                .info()
                .map_err(|e| LogError::Storage(format!("message without metadata: {e}")))?;
            if info.consumer_sequence != expected {
                return Err(LogError::Unavailable(format!(
                    "read consumer skipped from delivery {} to {}",
                    expected - 1,
                    info.consumer_sequence
                )));
            }
            expected += 1;
            pending = info.pending;
            let seq = info.stream_sequence;
            if seq > upto {
                break 'pulls;
            }
            match codec::decode(
                &shared.subjects,
                seq,
                msg.subject.as_str(),
                msg.headers.as_ref(),
                &msg.payload,
            ) {
                Ok(ev) => {
                    if only.is_none_or(|ps| ps.iter().any(|p| p.matches(ev.topic.as_str()))) {
                        out.push(ev);
                        if out.len() == limit {
                            break 'pulls;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(seq, reason = %e.0, "skipping a message that is not an event");
                }
            }
            if pending == 0 {
                break 'pulls;
            }
        }
        if got == 0 {
            break;
        }
    }
    Ok(out)
}
