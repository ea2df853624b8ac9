//! HTTP/1.1 event streams served without hyper, to keep an idle SSE connection small.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for every HTTP/1 connection for
//! as long as it lives, plus a connection task sized for both HTTP versions: most of an idle
//! SSE connection's memory. Every accepted connection is therefore *sniffed* first (`sniff`):
//! its request head is read (up to [`MAX_HEAD`]); a plain `GET` over HTTP/1.1 that asks for
//! `text/event-stream` and carries no body nor upgrade is handed to the application router
//! here, as an `http::Request`, so authentication, limits, request ids and every handler work
//! as for any request; the response is then written by this module: the head once, the body's
//! chunks with chunked transfer coding (one vectored write per chunk), and the connection
//! closes when the body ends. While the body is idle the connection is read too, so a client
//! that goes away is noticed without waiting for the next heartbeat.
//!
//! A connection that starts with a `POST` goes to `h1pub`, which serves plain single
//! publishes without hyper. Everything else (other methods, HTTP/2 prior knowledge,
//! WebSocket upgrades, heads that do not parse) goes to hyper unchanged: the bytes read while
//! sniffing are handed back in front of the connection ([`Prefixed`]).

use std::{
    io::{self, IoSlice},
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version, header},
};
use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tower::ServiceExt;

use tokio_util::sync::CancellationToken;

use crate::{conn::Connection, state::AppState};

/// Longest request head sniffed; a longer one goes to hyper (which applies its own limits).
pub(crate) const MAX_HEAD: usize = 8192;
/// Most headers a sniffed request may have.
const MAX_HEADERS: usize = 64;
/// How long a new connection may take to send its request head before it is dropped.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a sniffed connection goes.
pub(crate) enum Sniffed {
    /// To hyper, with the bytes read so far in front.
    Hyper(Prefixed),
    /// Served here (or closed): nothing more to do.
    Done,
}

/// Reads a new connection's request head and serves it here when it is an event stream, or
/// hands it to `h1pub` when it is a `POST` (plain publishes are served there too).
pub(crate) async fn sniff(
    mut conn: Connection,
    addr: SocketAddr,
    app: &Router,
    state: &AppState,
    token: &CancellationToken,
) -> Sniffed {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
    let request = loop {
        match tokio::time::timeout_at(deadline, conn.read_buf(&mut buf)).await {
            // Said nothing (or nothing complete) in time, or went away.
            Err(_) | Ok(Err(_)) => return Sniffed::Done,
            Ok(Ok(0)) if buf.is_empty() => return Sniffed::Done,
            // Closed half way: hyper answers what it can.
            Ok(Ok(0)) => break None,
            Ok(Ok(_)) => {}
        }
        if buf.starts_with(b"POST ") {
            match crate::h1pub::serve(&mut conn, &mut buf, state, token).await {
                crate::h1pub::Outcome::Hyper => break None,
                crate::h1pub::Outcome::Done => return Sniffed::Done,
            }
        }
        if buf.len() >= 4 && &buf[..4] != b"GET " {
            break None;
        }
        match parse(&buf, addr) {
            Head::Partial if buf.len() < MAX_HEAD => {
                // `read_buf` reads only into spare capacity: make some.
                buf.reserve(1024);
            }
            Head::Partial | Head::Other => break None,
            Head::Stream(req, len) => {
                if len != buf.len() {
                    // Something after the head (a pipelined request): hyper's business.
                    break None;
                }
                break Some(*req);
            }
        }
    };
    match request {
        Some(req) => {
            drop(buf);
            serve(conn, req, app).await;
            Sniffed::Done
        }
        None => Sniffed::Hyper(Prefixed {
            pre: buf.freeze(),
            io: conn,
        }),
    }
}

enum Head {
    /// Not complete yet.
    Partial,
    /// Complete, and not an event stream request (or not one handled here).
    Other,
    /// An event stream request, and the head's length.
    Stream(Box<Request<Body>>, usize),
}

/// A request head at the front of a buffer, as the sniffers (here and `h1pub`) see it.
pub(crate) enum RawHead<'b> {
    /// Not complete yet.
    Partial,
    /// Not an HTTP/1.1 request with the method asked for, or one hyper should judge (it does
    /// not parse, has too many headers, or a header `http` refuses).
    Other,
    /// Its length, its request target and its headers.
    Complete {
        len: usize,
        path: &'b str,
        headers: HeaderMap,
    },
}

/// Parses an HTTP/1.1 request head with `method` at the front of `buf`.
pub(crate) fn parse_head<'b>(buf: &'b [u8], method: &str) -> RawHead<'b> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return RawHead::Partial,
        Err(_) => return RawHead::Other,
    };
    let (Some(path), true) = (
        parsed.path,
        parsed.method == Some(method) && parsed.version == Some(1),
    ) else {
        return RawHead::Other;
    };
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return RawHead::Other;
        };
        map.append(name, value);
    }
    RawHead::Complete {
        len,
        path,
        headers: map,
    }
}

/// Whether a request asks for what only hyper does here: a transfer coding, `expect`
/// (`100-continue`), or a protocol upgrade.
pub(crate) fn needs_hyper(headers: &HeaderMap) -> bool {
    [header::TRANSFER_ENCODING, header::EXPECT, header::UPGRADE]
        .iter()
        .any(|h| headers.contains_key(h))
}

fn parse(buf: &[u8], addr: SocketAddr) -> Head {
    let (len, path, headers) = match parse_head(buf, "GET") {
        RawHead::Partial => return Head::Partial,
        RawHead::Other => return Head::Other,
        RawHead::Complete { len, path, headers } => (len, path, headers),
    };
    let Ok(uri) = path.parse::<Uri>() else {
        return Head::Other;
    };
    let with_body = headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .any(|v| v.as_bytes() != b"0");
    let wants_stream = headers.get_all(header::ACCEPT).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("text/event-stream"))
    });
    if with_body || needs_hyper(&headers) || !wants_stream {
        return Head::Other;
    }
    let mut req = Request::new(Body::empty());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    req.extensions_mut().insert(ConnectInfo(addr));
    Head::Stream(Box::new(req), len)
}

/// Answers one request on a connection of its own, then closes it.
async fn serve(mut conn: Connection, req: Request<Body>, app: &Router) {
    let Ok(resp) = app.clone().oneshot(req).await;
    let (parts, body) = resp.into_parts();
    let chunked = !parts.headers.contains_key(header::CONTENT_LENGTH);
    let mut head = BytesMut::with_capacity(256);
    put_status_and_headers(
        &mut head,
        &parts,
        &[header::CONNECTION, header::TRANSFER_ENCODING],
    );
    put_date(&mut head);
    if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    drop(parts);
    if conn.write_all(&head).await.is_err() {
        return;
    }
    drop(head);
    let mut body = body.into_data_stream();
    let mut scratch = [0u8; 32];
    loop {
        tokio::select! {
            biased;
            chunk = body.next() => match chunk {
                Some(Ok(data)) if data.is_empty() => {}
                Some(Ok(data)) => {
                    let sent = if chunked {
                        write_chunk(&mut conn, &data).await
                    } else {
                        conn.write_all(&data).await
                    };
                    if sent.is_err() {
                        return;
                    }
                }
                // A body error (a subscriber too slow): drop the connection, no clean end.
                Some(Err(_)) => return,
                None => break,
            },
            // The client went away (or sent something, which is ignored).
            r = conn.read(&mut scratch) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
    if chunked && conn.write_all(b"0\r\n\r\n").await.is_err() {
        return;
    }
    let _ = conn.shutdown().await;
}

/// Appends a response's status line and its headers but those in `skip`.
pub(crate) fn put_status_and_headers(
    out: &mut BytesMut,
    parts: &axum::http::response::Parts,
    skip: &[HeaderName],
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if !skip.contains(name) {
            put_header(out, name.as_str(), value.as_bytes());
        }
    }
}

/// Appends one header line.
pub(crate) fn put_header(out: &mut BytesMut, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The `date` header's text and the second it is for (formatted once a second, as hyper
    /// does).
    static DATE: std::cell::RefCell<(u64, String)> =
        const { std::cell::RefCell::new((0, String::new())) };
}

/// Appends the `date` header line.
pub(crate) fn put_date(out: &mut BytesMut) {
    DATE.with_borrow_mut(|(secs, text)| {
        let now = std::time::SystemTime::now();
        let s = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if *secs != s || text.is_empty() {
            *secs = s;
            *text = httpdate::fmt_http_date(now);
        }
        put_header(out, "date", text.as_bytes());
    });
}

/// One chunk of the chunked coding: size line, data, CRLF, in one vectored write when the
/// socket takes it all (it nearly always does); no allocation on that path.
async fn write_chunk(conn: &mut Connection, data: &[u8]) -> io::Result<()> {
    let mut line = [0u8; 20];
    let len = size_line(data.len(), &mut line);
    let parts: [&[u8]; 3] = [&line[..len], data, b"\r\n"];
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let slices = parts.map(IoSlice::new);
    let n = conn.write_vectored(&slices).await?;
    if n == total {
        return Ok(());
    }
    if n == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    // A partial write (a full socket buffer): the rest as one copy.
    let mut rest = Vec::with_capacity(total - n);
    let mut skip = n;
    for p in parts {
        let take = skip.min(p.len());
        rest.extend_from_slice(&p[take..]);
        skip -= take;
    }
    conn.write_all(&rest).await
}

/// Writes `<len in hex>\r\n` into `out`, returning its length.
fn size_line(len: usize, out: &mut [u8; 20]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        out[digits - 1 - i] = HEX[(len >> (4 * i)) & 0xf];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    digits + 2
}

/// A connection with bytes already read from it in front (what sniffing read).
pub(crate) struct Prefixed {
    pre: Bytes,
    io: Connection,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            if self.pre.is_empty() {
                // Give the allocation back.
                self.pre = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{Head, parse, size_line};

    #[test]
    fn size_lines_are_hex() {
        for n in [0usize, 1, 15, 16, 255, 4096, 123_456_789] {
            let mut out = [0u8; 20];
            let len = size_line(n, &mut out);
            assert_eq!(&out[..len], format!("{n:x}\r\n").as_bytes());
        }
    }

    fn addr() -> std::net::SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[test]
    fn only_plain_event_stream_gets_are_taken() {
        let sse = b"GET /api/v1/topics/a/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nLast-Event-ID: 7\r\n\r\n";
        match parse(sse, addr()) {
            Head::Stream(req, len) => {
                assert_eq!(len, sse.len());
                assert_eq!(req.uri().path(), "/api/v1/topics/a/events");
                assert_eq!(req.headers()["last-event-id"], "7");
            }
            _ => panic!("not taken"),
        }
        assert!(matches!(parse(&sse[..20], addr()), Head::Partial));
        for other in [
            &b"GET /api/v1/topics/a/events HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /x HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n",
            b"POST /x HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n",
            b"GET /x HTTP/1.1\r\nAccept: text/event-stream\r\nContent-Length: 3\r\n\r\n",
            b"GET /x HTTP/1.1\r\nAccept: text/event-stream\r\nUpgrade: websocket\r\n\r\n",
            b"GET /x HTTP/1.1\r\nAccept: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /x HTTP/1.1\r\nAccept: text/event-stream\r\nBad Header: 1\r\n\r\n",
        ] {
            assert!(
                matches!(parse(other, addr()), Head::Other),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
