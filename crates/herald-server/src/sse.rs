//! SSE door (SPEC 4): `retry:` first, then events as they come (several ready events
//! coalesced into one write), `: ping` after `sse.heartbeat` of silence, a clean end at
//! shutdown, and an aborted connection when the subscriber falls too far behind (the
//! browser then reconnects with `Last-Event-ID` and resumes without a gap).

use std::{io, time::Duration};

use axum::{
    body::Body,
    http::{HeaderValue, header},
    response::Response,
};
use bytes::{Bytes, BytesMut};
use herald_core::{Cursor, Item, Subscription, SubscriptionError};
use herald_protocol::sse;
use tokio_util::sync::CancellationToken;

use crate::{
    error::ApiResult,
    events::StreamRequest,
    state::{AppState, ConnGuard, Metrics, Transport},
};

/// Most events written in one chunk.
const MAX_COALESCE: usize = 256;

struct Stream {
    sub: Subscription,
    token: CancellationToken,
    heartbeat: Duration,
    metrics: std::sync::Arc<Metrics>,
    items: Vec<Item>,
    first: Option<Bytes>,
    /// Set once the subscriber lagged: the next poll fails the body.
    abort: bool,
    _guard: ConnGuard,
}

/// Starts an SSE response. The subscription is registered before the response headers are
/// sent, so a client that has seen the headers will see every later event.
///
/// # Errors
/// 503 over the connection limit.
pub(crate) fn stream(state: &AppState, req: StreamRequest) -> ApiResult<Response> {
    let guard = state.connect(Transport::Sse)?;
    let cursor = req.cursor.unwrap_or(Cursor::Live);
    let retry_ms = req.retry_ms.unwrap_or(state.config.sse_retry_ms);
    let sub = state.hub.subscribe(req.patterns, cursor);
    let st = Stream {
        sub,
        token: state.token.clone(),
        heartbeat: state.config.sse_heartbeat,
        metrics: state.metrics.clone(),
        items: Vec::new(),
        first: Some(sse::retry(retry_ms)),
        abort: false,
        _guard: guard,
    };
    let body = futures::stream::unfold(st, next_chunk);
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell nginx-style proxies in front of us not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

async fn next_chunk(mut st: Stream) -> Option<(Result<Bytes, io::Error>, Stream)> {
    if st.abort {
        // An error, not a clean end: a clean end would leave the connection open for the
        // next request (keep-alive), holding whatever the stalled client has not read. A
        // body error makes hyper drop the connection instead.
        return Some((Err(io::Error::other("subscriber too slow")), st));
    }
    if let Some(first) = st.first.take() {
        return Some((Ok(first), st));
    }
    st.items.clear();
    let heartbeat = tokio::time::sleep(st.heartbeat);
    tokio::select! {
        biased;
        _ = st.token.cancelled() => None,
        r = st.sub.recv_many(&mut st.items, MAX_COALESCE) => match r {
            Ok(()) => {
                let chunk = encode(&st.items);
                let n = st.items.iter().filter(|i| matches!(i, Item::Event(_))).count();
                st.metrics.events_out(Transport::Sse, n as u64);
                Some((Ok(chunk), st))
            }
            Err(SubscriptionError::Lagged(n)) => {
                tracing::info!(queue = n, "closing slow SSE subscriber");
                st.abort = true;
                // Best effort: it may not be flushed before the connection is dropped.
                let msg = format!(": too slow (more than {n} events queued); reconnect with Last-Event-ID\n\n");
                Some((Ok(Bytes::from(msg)), st))
            }
            Err(e) => {
                tracing::warn!(error = %e, "SSE stream ended");
                None
            }
        },
        _ = heartbeat => Some((Ok(Bytes::from_static(sse::PING)), st)),
    }
}

fn item_bytes(item: &Item) -> Bytes {
    match item {
        Item::Event(e) => sse::event(e),
        Item::Truncated { requested, oldest } => sse::truncated(*requested, *oldest),
    }
}

fn encode(items: &[Item]) -> Bytes {
    if let [one] = items {
        // The common case: the event's shared frame, no copy.
        return item_bytes(one);
    }
    let parts: Vec<Bytes> = items.iter().map(item_bytes).collect();
    let mut buf = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
    for p in parts {
        buf.extend_from_slice(&p);
    }
    buf.freeze()
}
