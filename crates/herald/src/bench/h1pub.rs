//! The bench's publisher connection for `http://` servers: HTTP/1.1 over one kept-alive TCP
//! connection per publisher, the request written and the response read by hand.
//!
//! A general-purpose client (reqwest over hyper, with its pool, header maps and body
//! channels) costs the load generator about 20 µs of CPU per request on this machine: at
//! 64 publishers it saturates the generator's core near 50,000 publishes/s, so a server that
//! could take more would not be seen taking it. This connection writes one request in one
//! `write`, reads the response into a reused buffer and parses only what it needs (status,
//! `content-length`, chunked coding, `connection: close`), which keeps the generator well
//! below its core at those rates and applies to every server alike.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Response heads longer than this are refused (the servers benched send a few hundred bytes).
const MAX_HEAD: usize = 64 * 1024;
/// Response bodies are read whole; a publish receipt is small.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Most response headers looked at.
const MAX_HEADERS: usize = 64;

/// Where and how to publish over plain HTTP/1.1.
#[derive(Clone, Debug)]
pub(crate) struct H1Target {
    /// The server's socket address.
    pub(crate) addr: SocketAddr,
    /// The `host` header's value (`host[:port]` as in the URL).
    pub(crate) host: String,
    /// The bearer token, if any.
    pub(crate) token: Option<String>,
}

impl H1Target {
    /// The target of `url` when it is a plain `http://` URL, with the origin-form request
    /// target (path and query) to put in the request line.
    pub(crate) fn split(url: &str) -> Option<(String, String)> {
        let parsed = reqwest::Url::parse(url).ok()?;
        if parsed.scheme() != "http" || !parsed.username().is_empty() {
            return None;
        }
        let host = parsed.host_str()?;
        let authority = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let target = match parsed.query() {
            Some(q) => format!("{}?{q}", parsed.path()),
            None => parsed.path().to_owned(),
        };
        Some((authority, target))
    }
}

/// One publisher's connection (opened on first use and again after an error or a
/// `connection: close`).
pub(crate) struct H1Publisher {
    target: H1Target,
    conn: Option<TcpStream>,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
    /// The request being written (reused).
    req: Vec<u8>,
}

impl H1Publisher {
    pub(crate) fn new(target: H1Target) -> Self {
        Self {
            target,
            conn: None,
            buf: Vec::with_capacity(4096),
            req: Vec::with_capacity(1024),
        }
    }

    /// POSTs `body` as JSON to `path` and reads the response: `Ok` for a 2xx status, an error
    /// naming the status and the start of the body otherwise.
    ///
    /// # Errors
    /// Connection failures, a malformed response, a non-2xx status, or no complete response
    /// within `timeout`.
    pub(crate) async fn post(
        &mut self,
        path: &str,
        body: &[u8],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        match tokio::time::timeout(timeout, self.exchange(path, body)).await {
            Ok(Ok(())) => Ok(()),
            // The response was read whole: the connection stays usable.
            Ok(Err(Exchange::Status(e))) => Err(e),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e.into_error())
            }
            Err(_) => {
                self.conn = None;
                bail!("no response within {} s", timeout.as_secs_f64())
            }
        }
    }

    async fn exchange(&mut self, path: &str, body: &[u8]) -> Result<(), Exchange> {
        self.req.clear();
        self.req.extend_from_slice(b"POST ");
        self.req.extend_from_slice(path.as_bytes());
        self.req.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        self.req.extend_from_slice(self.target.host.as_bytes());
        self.req
            .extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
        self.req
            .extend_from_slice(body.len().to_string().as_bytes());
        if let Some(token) = &self.target.token {
            self.req.extend_from_slice(b"\r\nauthorization: Bearer ");
            self.req.extend_from_slice(token.as_bytes());
        }
        self.req.extend_from_slice(b"\r\n\r\n");
        self.req.extend_from_slice(body);

        // A kept-alive connection the server closed in the meantime fails before any byte of
        // a response arrives: that request was not processed, so it is sent once more on a
        // new connection (what browsers and HTTP libraries do too).
        let reused = self.conn.is_some();
        match self.send_and_read().await {
            Err(Exchange::ClosedBeforeResponse) if reused => {
                self.conn = None;
                self.send_and_read().await
            }
            r => r,
        }
    }

    async fn send_and_read(&mut self) -> Result<(), Exchange> {
        if self.conn.is_none() {
            let conn = TcpStream::connect(self.target.addr)
                .await
                .with_context(|| format!("connecting to {}", self.target.addr))?;
            let _ = conn.set_nodelay(true);
            self.conn = Some(conn);
            self.buf.clear();
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(Exchange::Failed(anyhow::anyhow!("no connection")));
        };
        if let Err(e) = conn.write_all(&self.req).await {
            return Err(match e.kind() {
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                    Exchange::ClosedBeforeResponse
                }
                _ => Exchange::Failed(e.into()),
            });
        }
        loop {
            let head = parse_head(&self.buf).map_err(Exchange::Failed)?;
            let Some(head) = head else {
                if self.buf.len() > MAX_HEAD {
                    return Err(Exchange::Failed(anyhow::anyhow!(
                        "response head longer than {MAX_HEAD} bytes"
                    )));
                }
                let before = self.buf.len();
                match read_more(conn, &mut self.buf).await {
                    Ok(0) | Err(_) if before == 0 => return Err(Exchange::ClosedBeforeResponse),
                    Ok(0) => {
                        return Err(Exchange::Failed(anyhow::anyhow!(
                            "connection closed inside a response"
                        )));
                    }
                    Ok(_) => continue,
                    Err(e) => return Err(Exchange::Failed(e)),
                }
            };
            self.buf.drain(..head.len);
            if (100..200).contains(&head.status) {
                // `100 Continue` and other interim responses: the real one follows.
                continue;
            }
            let body = read_body(conn, &mut self.buf, &head).await?;
            if head.close || body.until_close {
                self.conn = None;
            }
            if !(200..300).contains(&head.status) {
                let text = String::from_utf8_lossy(&body.bytes);
                let text: String = text.chars().take(300).collect();
                return Err(Exchange::Status(anyhow::anyhow!(
                    "HTTP {}: {}",
                    head.status,
                    text.trim()
                )));
            }
            return Ok(());
        }
    }
}

/// How an exchange failed.
enum Exchange {
    /// The connection was closed (or reset) before any byte of a response.
    ClosedBeforeResponse,
    /// A complete response with a status other than 2xx.
    Status(anyhow::Error),
    Failed(anyhow::Error),
}

impl Exchange {
    fn into_error(self) -> anyhow::Error {
        match self {
            Exchange::ClosedBeforeResponse => {
                anyhow::anyhow!("the server closed the connection without a response")
            }
            Exchange::Status(e) | Exchange::Failed(e) => e,
        }
    }
}

impl From<anyhow::Error> for Exchange {
    fn from(e: anyhow::Error) -> Self {
        Exchange::Failed(e)
    }
}

/// What the bench needs of a response head.
#[derive(Debug, PartialEq)]
struct Head {
    /// Bytes of the head, blank line included.
    len: usize,
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
}

/// Parses a complete response head at the front of `buf` (`None` while incomplete).
fn parse_head(buf: &[u8]) -> anyhow::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf).context("malformed HTTP response")? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let status = resp.code.context("response without a status")?;
    let mut head = Head {
        len,
        status,
        content_length: None,
        chunked: false,
        close: resp.version == Some(0),
    };
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(
                value
                    .parse()
                    .with_context(|| format!("bad content-length {value:?}"))?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            let close = value
                .split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("close"));
            let keep = value
                .split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("keep-alive"));
            head.close = close || (head.close && !keep);
        }
    }
    Ok(Some(head))
}

/// A response body, read whole.
struct Body {
    bytes: Vec<u8>,
    /// It was delimited by the end of the connection.
    until_close: bool,
}

async fn read_body(conn: &mut TcpStream, buf: &mut Vec<u8>, head: &Head) -> anyhow::Result<Body> {
    if matches!(head.status, 204 | 304) {
        return Ok(Body {
            bytes: Vec::new(),
            until_close: false,
        });
    }
    if head.chunked {
        let mut bytes = Vec::new();
        loop {
            let (line, size) = loop {
                match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((line, size))) => break (line, size),
                    Ok(httparse::Status::Partial) => {
                        if read_more(conn, buf).await? == 0 {
                            bail!("connection closed inside a chunked body");
                        }
                    }
                    Err(_) => bail!("malformed chunk size"),
                }
            };
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size == 0 {
                buf.drain(..line);
                // Trailer lines, up to the blank line that ends the body.
                loop {
                    match buf.windows(2).position(|w| w == b"\r\n") {
                        Some(0) => {
                            buf.drain(..2);
                            return Ok(Body {
                                bytes,
                                until_close: false,
                            });
                        }
                        Some(end) => {
                            buf.drain(..end + 2);
                        }
                        None => {
                            if read_more(conn, buf).await? == 0 {
                                bail!("connection closed inside a chunked body");
                            }
                        }
                    }
                }
            }
            if bytes.len().saturating_add(size) > MAX_BODY {
                bail!("response body larger than {MAX_BODY} bytes");
            }
            let need = line + size + 2;
            while buf.len() < need {
                if read_more(conn, buf).await? == 0 {
                    bail!("connection closed inside a chunked body");
                }
            }
            if &buf[line + size..need] != b"\r\n" {
                bail!("chunk not followed by CRLF");
            }
            bytes.extend_from_slice(&buf[line..line + size]);
            buf.drain(..need);
        }
    }
    if let Some(len) = head.content_length {
        if len > MAX_BODY {
            bail!("response body larger than {MAX_BODY} bytes");
        }
        while buf.len() < len {
            if read_more(conn, buf).await? == 0 {
                bail!("connection closed inside a response body");
            }
        }
        let bytes = buf.drain(..len).collect();
        return Ok(Body {
            bytes,
            until_close: false,
        });
    }
    // Neither: the body runs to the end of the connection.
    while read_more(conn, buf).await? > 0 {
        if buf.len() > MAX_BODY {
            bail!("response body larger than {MAX_BODY} bytes");
        }
    }
    Ok(Body {
        bytes: std::mem::take(buf),
        until_close: true,
    })
}

/// Reads what is there (at least one byte, or 0 at the end of the stream) onto `buf`.
async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<usize> {
    buf.reserve(4096);
    Ok(conn.read_buf(buf).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn heads_and_targets() {
        let h = parse_head(b"HTTP/1.1 201 Created\r\ncontent-length: 12\r\n\r\n{}")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.content_length, h.chunked, h.close),
            (201, Some(12), false, false)
        );
        assert_eq!(h.len, 44);
        assert!(parse_head(b"HTTP/1.1 201 Cre").unwrap().is_none());
        let h = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert!(h.close, "HTTP/1.0 closes unless kept alive");
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(h.chunked && h.close);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());

        assert_eq!(
            H1Target::split("http://127.0.0.1:8080/pub?chan=a").unwrap(),
            ("127.0.0.1:8080".to_owned(), "/pub?chan=a".to_owned())
        );
        assert_eq!(
            H1Target::split("http://localhost/api/v1/topics/a%2Eb/events").unwrap(),
            (
                "localhost".to_owned(),
                "/api/v1/topics/a%2Eb/events".to_owned()
            )
        );
        assert!(H1Target::split("https://127.0.0.1/x").is_none());
    }

    /// A hand-written server answers with content-length, chunked and close-delimited
    /// bodies, an interim 100, an error status, and closes a kept-alive connection: the
    /// publisher reads each right, reconnects when it has to, and reports the error.
    #[tokio::test]
    async fn reads_every_body_kind_and_reconnects() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let answers: [&[&[u8]]; 3] = [
                // First connection: four exchanges, then the server closes it.
                &[
                    b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}",
                    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nt: v\r\n\r\n",
                    b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 11\r\n\r\nslow down!!",
                    b"HTTP/1.1 202 Accepted\r\nconnection: close\r\n\r\nqueued",
                ],
                // Second: one exchange, then closed before the next request is read.
                &[b"HTTP/1.1 204 No Content\r\n\r\n"],
                // Third: where that request is sent again.
                &[b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"],
            ];
            for answers in answers {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                for answer in answers {
                    // Read one whole request (head + content-length body).
                    loop {
                        let mut headers = [httparse::EMPTY_HEADER; 16];
                        let mut req = httparse::Request::new(&mut headers);
                        if let httparse::Status::Complete(n) = req.parse(&buf).unwrap() {
                            let len: usize = req
                                .headers
                                .iter()
                                .find(|h| h.name == "content-length")
                                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                                .unwrap();
                            assert_eq!(req.method, Some("POST"));
                            if buf.len() >= n + len {
                                buf.drain(..n + len);
                                break;
                            }
                        }
                        let mut chunk = [0u8; 1024];
                        let n = s.read(&mut chunk).await.unwrap();
                        assert!(n > 0);
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    s.write_all(answer).await.unwrap();
                }
                drop(s);
            }
        });
        let mut p = H1Publisher::new(H1Target {
            addr,
            host: addr.to_string(),
            token: Some("t0k".into()),
        });
        let t = Duration::from_secs(5);
        p.post("/a", b"{\"data\":1}", t).await.unwrap();
        p.post("/a", b"{}", t).await.unwrap();
        let err = p.post("/a", b"{}", t).await.unwrap_err().to_string();
        assert!(err.contains("429") && err.contains("slow down"), "{err}");
        // A body delimited by the end of the connection, then a new connection.
        p.post("/a", b"{}", t).await.unwrap();
        assert!(p.conn.is_none());
        p.post("/a", b"{}", t).await.unwrap();
        // The server closed that one without reading the next request: sent again.
        tokio::time::sleep(Duration::from_millis(50)).await;
        p.post("/a", b"{}", t).await.unwrap();
        server.await.unwrap();
    }
}
