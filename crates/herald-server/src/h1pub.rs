//! HTTP/1.1 single publishes served without hyper: the request publishers make most.
//!
//! hyper's connection machinery, axum's router and the tower layers around a handler cost
//! about 8 µs of CPU per request on the benchmark machine, a third of a durable publish
//! (docs/benchmarks.md, target 7). So a connection whose first request is a `POST` is kept
//! here by `h1sse::sniff`, and every *plain* single publish on it is answered by this module:
//! `POST /api/v1/topics/{topic}/events` over HTTP/1.1 with a `content-length` body within
//! `limits.max_body_bytes`, a topic segment without `%`, no query string, and no `expect`,
//! `upgrade`, `transfer-encoding` or `connection: close`. It runs the same code as the route
//! (`rest::publish_one`) after the same steps as the layers in front of it: the request is
//! counted, its `x-request-id` kept or a new one made (and sent back), the principal resolved
//! by `gateway::resolve`; errors are the same problem documents. The response is written in
//! one `write`, and the connection waits for the next request.
//!
//! The first request that is anything else (another route or method, a body limit exceeded,
//! a head that does not parse, ...) goes to hyper with the connection and every byte read so
//! far, and the connection stays with hyper from then on; so does a connection that stays
//! idle for longer than [`IDLE`]. A server shutting down closes the idle ones.

use axum::{
    http::{HeaderMap, HeaderName, HeaderValue, header},
    response::{IntoResponse, Response},
};
use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::{
    conn::Connection,
    gateway,
    h1sse::{
        MAX_HEAD, RawHead, needs_hyper, parse_head, put_date, put_header, put_status_and_headers,
    },
    rest,
    state::AppState,
};

/// How long a request may take to arrive whole from its first byte, and how long a
/// connection may be idle before it is handed to hyper (which then applies its own rules).
const IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// What became of a connection served here.
pub(crate) enum Outcome {
    /// For hyper, with the bytes read and not served in front.
    Hyper,
    /// Closed (by the peer, an I/O error, a request that never completed, or shutdown).
    Done,
}

/// A plain publish at the front of the buffer.
struct Publish {
    /// Bytes of the head and of the body.
    head: usize,
    body: usize,
    topic: String,
    headers: HeaderMap,
}

enum Head {
    Partial,
    Other,
    Publish(Publish),
}

/// Serves the plain publishes at the front of `buf` and after it, until the first other
/// request (left in `buf` for hyper) or the end of the connection.
pub(crate) async fn serve(
    conn: &mut Connection,
    buf: &mut BytesMut,
    state: &AppState,
    token: &CancellationToken,
) -> Outcome {
    loop {
        // A request has `IDLE` from its first byte to arrive whole (no trickling a head in
        // one byte at a time); the wait for its first byte is bounded by `IDLE` too.
        let mut deadline = None;
        let publish = loop {
            match parse(buf, state.config.limits.max_body_bytes) {
                Head::Other => return Outcome::Hyper,
                Head::Publish(p) => break p,
                Head::Partial if buf.len() >= MAX_HEAD => return Outcome::Hyper,
                Head::Partial => {
                    let idle = buf.is_empty();
                    if !idle {
                        deadline.get_or_insert_with(|| tokio::time::Instant::now() + IDLE);
                    }
                    match read(conn, buf, token, deadline).await {
                        Read::More => {}
                        // Idle for long: hyper decides what happens to the connection.
                        Read::TimedOut if idle => return Outcome::Hyper,
                        Read::TimedOut | Read::Closed => return Outcome::Done,
                    }
                }
            }
        };
        let deadline = deadline.unwrap_or_else(|| tokio::time::Instant::now() + IDLE);
        while buf.len() < publish.head + publish.body {
            if !matches!(read(conn, buf, token, Some(deadline)).await, Read::More) {
                return Outcome::Done;
            }
        }
        let body = buf
            .split_to(publish.head + publish.body)
            .split_off(publish.head)
            .freeze();
        let Publish { topic, headers, .. } = publish;

        // What the layers of `crate::router` do, in their order.
        state
            .metrics
            .http_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request_id = headers
            .get("x-request-id")
            .cloned()
            .or_else(|| HeaderValue::from_str(&ulid::Ulid::new().to_string()).ok());
        let response = match gateway::resolve(state, &headers, None) {
            Ok(principal) => rest::publish_one(state, &principal, &topic, &headers, Ok(body))
                .await
                .unwrap_or_else(IntoResponse::into_response),
            Err(e) => e.into_response(),
        };
        if write_response(conn, response, request_id).await.is_err() {
            return Outcome::Done;
        }
    }
}

enum Read {
    More,
    TimedOut,
    Closed,
}

/// Reads more of the next request: stops at `deadline` (or after [`IDLE`] without one), at
/// the end of the connection, and (while nothing of a request has arrived) when the server
/// shuts down.
async fn read(
    conn: &mut Connection,
    buf: &mut BytesMut,
    token: &CancellationToken,
    deadline: Option<tokio::time::Instant>,
) -> Read {
    buf.reserve(1024);
    let between_requests = buf.is_empty();
    let deadline = deadline.unwrap_or_else(|| tokio::time::Instant::now() + IDLE);
    let r = tokio::select! {
        _ = token.cancelled(), if between_requests => return Read::Closed,
        r = tokio::time::timeout_at(deadline, conn.read_buf(buf)) => r,
    };
    match r {
        Err(_) => Read::TimedOut,
        Ok(Ok(0) | Err(_)) => Read::Closed,
        Ok(Ok(_)) => Read::More,
    }
}

/// Whether the front of `buf` is a plain publish (see the module docs).
fn parse(buf: &[u8], max_body: usize) -> Head {
    if buf.len() >= 5 && !buf.starts_with(b"POST ") {
        return Head::Other;
    }
    let (head, path, headers) = match parse_head(buf, "POST") {
        RawHead::Partial => return Head::Partial,
        RawHead::Other => return Head::Other,
        RawHead::Complete { len, path, headers } => (len, path, headers),
    };
    let Some(topic) = path
        .strip_prefix("/api/v1/topics/")
        .and_then(|p| p.strip_suffix("/events"))
        .filter(|t| !t.is_empty() && !t.contains(['/', '%', '?', '#']))
    else {
        return Head::Other;
    };
    // Exactly one readable length within the limit; otherwise hyper and the body limit answer.
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let body = match (lengths.next(), lengths.next()) {
        (Some(v), None) => v.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()),
        _ => None,
    };
    let Some(body) = body.filter(|&len| len <= max_body) else {
        return Head::Other;
    };
    let close = headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .map_or(true, |v| v.to_ascii_lowercase().contains("close"))
    });
    if close || needs_hyper(&headers) {
        return Head::Other;
    }
    Head::Publish(Publish {
        head,
        body,
        topic: topic.to_owned(),
        headers,
    })
}

/// Writes a complete response (the bodies here are small and whole) as hyper would: status
/// line, the response's headers, `x-request-id`, `content-length`, `date`.
async fn write_response(
    conn: &mut Connection,
    response: Response,
    request_id: Option<HeaderValue>,
) -> std::io::Result<()> {
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(std::io::Error::other)?;
    let mut out = BytesMut::with_capacity(256 + body.len());
    put_status_and_headers(
        &mut out,
        &parts,
        &[
            header::CONTENT_LENGTH,
            header::CONNECTION,
            HeaderName::from_static("x-request-id"),
        ],
    );
    if let Some(id) = &request_id {
        put_header(&mut out, "x-request-id", id.as_bytes());
    }
    put_header(
        &mut out,
        "content-length",
        body.len().to_string().as_bytes(),
    );
    put_date(&mut out);
    out.put_slice(b"\r\n");
    out.put_slice(&body);
    conn.write_all(&out).await
}

#[cfg(test)]
mod tests {
    use super::{Head, parse};

    #[test]
    fn only_plain_single_publishes_are_taken() {
        let ok = b"POST /api/v1/topics/orders.eu/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"data\":1}  ";
        match parse(ok, 100) {
            Head::Publish(p) => {
                assert_eq!(p.head + p.body, ok.len());
                assert_eq!(p.topic, "orders.eu");
                assert_eq!(p.headers["content-type"], "application/json");
            }
            _ => panic!("not taken"),
        }
        assert!(matches!(parse(&ok[..30], 100), Head::Partial));
        assert!(matches!(parse(b"POS", 100), Head::Partial));
        for other in [
            &b"GET /api/v1/topics/a/events HTTP/1.1\r\n\r\n"[..],
            b"POST /api/v1/topics/a/events HTTP/1.0\r\nContent-Length: 1\r\n\r\n",
            b"POST /api/v1/events HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
            b"POST /api/v1/topics//events HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
            b"POST /api/v1/topics/a%2Eb/events HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
            b"POST /api/v1/topics/a/b/events HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
            b"POST /api/v1/topics/a/events?x=1 HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
            b"POST /api/v1/topics/a/events/ HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
            b"POST /api/v1/topics/a/events HTTP/1.1\r\n\r\n",
            b"POST /api/v1/topics/a/events HTTP/1.1\r\nContent-Length: 101\r\n\r\n",
            b"POST /api/v1/topics/a/events HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"POST /api/v1/topics/a/events HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"POST /api/v1/topics/a/events HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /api/v1/topics/a/events HTTP/1.1\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n",
            b"POST /api/v1/topics/a/events HTTP/1.1\r\nContent-Length: 1\r\nConnection: Close\r\n\r\n",
            b"POST /api/v1/topics/a/events HTTP/1.1\r\nContent-Length: 1\r\nUpgrade: h2c\r\n\r\n",
            b"POST /api/v1/topics/a/events HTTP/1.1\r\nBad Header: 1\r\n\r\n",
        ] {
            assert!(
                matches!(parse(other, 100), Head::Other),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
