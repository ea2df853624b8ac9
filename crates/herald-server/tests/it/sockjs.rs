//! SockJS 0.3.3 (SPEC 6.3), against the protocol's test services (`sockjs.test_endpoints`):
//! what the SockJS protocol test suite checks, transport by transport, with our own clients.

use std::time::Duration;

use futures::{SinkExt, StreamExt, stream::BoxStream};
use herald_server::config::RawConfig;
use herald_test_support::TestServer;
use reqwest::{Method, Response, StatusCode, header::HeaderMap};
use serde_json::Value;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::util::{T, Ws};

const NO_CACHE: &str = "no-store, no-cache, must-revalidate, max-age=0";
const ANOTHER: &str = "c[2010,\"Another connection still open\"]\n";
const GO_AWAY: &str = "c[3000,\"Go away!\"]";

fn endpoints(c: &mut RawConfig) {
    c.sockjs.test_endpoints = true;
    // As the protocol's test server: streaming responses end after 4 KiB.
    c.sockjs.response_limit = 4096;
}

fn fast(c: &mut RawConfig) {
    endpoints(c);
    c.sockjs.heartbeat = "200ms".into();
    c.sockjs.disconnect_delay = "300ms".into();
}

async fn server() -> TestServer {
    TestServer::spawn_with(endpoints).await
}

/// A fresh `/<server>/<session>` part.
fn session() -> String {
    format!("/000/{}", ulid::Ulid::new())
}

/// A request with headers, under [`T`].
async fn request(
    srv: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut req = srv
        .http()
        .request(method.clone(), srv.url(path))
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    timeout(T, req.send())
        .await
        .unwrap_or_else(|_| panic!("{method} {path} timed out"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Status, headers and body of a whole response.
async fn call(
    srv: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, HeaderMap, String) {
    let r = request(srv, method, path, headers, body).await;
    let status = r.status();
    let h = r.headers().clone();
    let text = timeout(T, r.text())
        .await
        .expect("body timed out")
        .expect("body");
    (status, h, text)
}

async fn get(srv: &TestServer, path: &str) -> (StatusCode, HeaderMap, String) {
    call(srv, Method::GET, path, &[], "").await
}

async fn post(srv: &TestServer, path: &str, body: &str) -> (StatusCode, HeaderMap, String) {
    call(srv, Method::POST, path, &[], body).await
}

/// `POST .../xhr`, asserting 200; the body.
async fn xhr(srv: &TestServer, url: &str) -> String {
    let (status, _, body) = post(srv, &format!("{url}/xhr"), "").await;
    assert_eq!(status, StatusCode::OK, "xhr {url}: {body}");
    body
}

/// `POST .../xhr_send`, asserting 204 and no body.
async fn xhr_send(srv: &TestServer, url: &str, payload: &str) {
    let (status, _, body) = post(srv, &format!("{url}/xhr_send"), payload).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "xhr_send {payload}: {body}");
    assert!(body.is_empty());
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().expect("ASCII header"))
}

fn assert_content_type(h: &HeaderMap, expected: &str) {
    let ct = header(h, "content-type")
        .expect("content type")
        .replace(' ', "");
    assert_eq!(ct, expected);
}

fn assert_not_cached(h: &HeaderMap) {
    assert_eq!(header(h, "cache-control"), Some(NO_CACHE));
    assert!(header(h, "expires").is_none());
    assert!(header(h, "last-modified").is_none());
}

/// CORS as the protocol wants it for a request with `origin` (or none).
fn assert_cors(h: &HeaderMap, origin: Option<&str>) {
    match origin {
        Some(o) if o != "null" => {
            assert_eq!(header(h, "access-control-allow-origin"), Some(o));
            assert_eq!(header(h, "access-control-allow-credentials"), Some("true"));
        }
        _ => assert_eq!(header(h, "access-control-allow-origin"), Some("*")),
    }
}

fn assert_long_cache(h: &HeaderMap) {
    let cc = header(h, "cache-control").expect("cache-control");
    assert!(cc.contains("public"), "{cc}");
    assert!(cc.contains("max-age=31536000"), "{cc}");
    let expires = header(h, "expires").expect("expires");
    assert!(expires.ends_with(" GMT"), "{expires}");
}

/// A streaming response read as text, frame by frame.
struct Stream {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
    headers: HeaderMap,
}

impl Stream {
    async fn open(srv: &TestServer, method: Method, path: &str, headers: &[(&str, &str)]) -> Self {
        let r = request(srv, method, path, headers, "").await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let headers = r.headers().clone();
        Self {
            body: r.bytes_stream().boxed(),
            buf: String::new(),
            headers,
        }
    }

    /// Reads more; false at the end of the body.
    async fn fill(&mut self) -> bool {
        match timeout(T, self.body.next())
            .await
            .unwrap_or_else(|_| panic!("stream read timed out after {:?}", self.buf))
        {
            Some(Ok(chunk)) => {
                self.buf
                    .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
                true
            }
            Some(Err(_)) | None => false,
        }
    }

    /// Asserts the next bytes are exactly `expected`.
    async fn expect(&mut self, expected: &str) {
        while self.buf.len() < expected.len() {
            if !self.fill().await {
                break;
            }
        }
        assert!(
            self.buf.starts_with(expected),
            "expected {expected:?}, got {:?}",
            self.buf
        );
        self.buf.drain(..expected.len());
    }

    /// Asserts the body ends with nothing more.
    async fn assert_ends(mut self) {
        while self.fill().await {}
        assert!(self.buf.is_empty(), "unexpected {:?}", self.buf);
    }
}

fn prelude() -> String {
    format!("{}\n", "h".repeat(2048))
}

async fn xhr_streaming(srv: &TestServer, url: &str) -> Stream {
    Stream::open(srv, Method::POST, &format!("{url}/xhr_streaming"), &[]).await
}

async fn ws_open(srv: &TestServer, path: &str) -> Ws {
    let (ws, _) = timeout(T, tokio_tungstenite::connect_async(srv.ws_url(path)))
        .await
        .expect("WS connect timed out")
        .expect("WS connect");
    ws
}

/// The next text message; `None` once the connection closed.
async fn ws_text(ws: &mut Ws) -> Option<String> {
    loop {
        match timeout(T, ws.next()).await.expect("WS read timed out") {
            Some(Ok(Message::Text(t))) => return Some(t.to_string()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
            Some(Ok(other)) => panic!("unexpected frame {other:?}"),
        }
    }
}

async fn ws_send(ws: &mut Ws, text: &str) {
    timeout(T, ws.send(Message::text(text)))
        .await
        .expect("WS send timed out")
        .expect("WS send");
}

/// The status of a refused WebSocket handshake.
async fn ws_refused(srv: &TestServer, path: &str) -> u16 {
    match timeout(T, tokio_tungstenite::connect_async(srv.ws_url(path)))
        .await
        .expect("WS connect timed out")
    {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{path}: unexpected error {e}"),
        Ok(_) => panic!("{path}: WebSocket accepted"),
    }
}

#[tokio::test]
async fn off_by_default() {
    let srv = TestServer::spawn().await;
    assert_eq!(get(&srv, "/echo").await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(&srv, "/echo/info").await.0, StatusCode::NOT_FOUND);
    srv.stop().await;
}

#[tokio::test]
async fn greeting_and_not_found() {
    let srv = server().await;
    for path in ["/echo", "/echo/"] {
        let (status, h, body) = get(&srv, path).await;
        assert_eq!(status, StatusCode::OK);
        assert_content_type(&h, "text/plain;charset=UTF-8");
        assert_eq!(body, "Welcome to SockJS!\n");
        assert!(header(&h, "set-cookie").is_none());
    }
    let (status, h, body) = post(&srv, "/echo", "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&h, "allow"), Some("GET"));
    assert!(body.is_empty());
    for suffix in ["/a", "/a.html", "//", "///", "/a/a", "/a/a/", "/a/"] {
        let (status, _, _) = get(&srv, &format!("/echo{suffix}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "/echo{suffix}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn iframe_page_is_cached_with_an_etag() {
    let srv = server().await;
    let mut etags = Vec::new();
    for suffix in [
        "/iframe.html",
        "/iframe-a.html",
        "/iframe-.html",
        "/iframe-0.1.2.html",
        "/iframe-0.1.2abc-dirty.2144.html",
        "/iframe-a.html?t=1234",
        "/iframe-0.1.2abc-dirty.2144.html?t=qweqweq123",
    ] {
        let (status, h, body) = get(&srv, &format!("/echo{suffix}")).await;
        assert_eq!(status, StatusCode::OK, "{suffix}");
        assert_content_type(&h, "text/html;charset=UTF-8");
        assert_long_cache(&h);
        assert!(header(&h, "last-modified").is_none());
        assert!(header(&h, "set-cookie").is_none());
        etags.push(header(&h, "etag").expect("etag").to_owned());
        let body = body.trim();
        assert!(
            body.starts_with("<!DOCTYPE html>\n<html>\n<head>\n"),
            "{body}"
        );
        assert!(body.contains(concat!(
            "  <script>\n",
            "    document.domain = document.domain;\n",
            "    _sockjs_onload = function(){SockJS.bootstrap_iframe();};\n",
            "  </script>\n",
            "  <script src=\"http",
        )));
        assert!(body.contains("<h2>Don't panic!</h2>"));
        assert!(body.ends_with("</body>\n</html>"));
    }
    etags.dedup();
    assert_eq!(etags.len(), 1, "one ETag for every variant: {etags:?}");
    let (status, h, body) = call(
        &srv,
        Method::GET,
        "/echo/iframe.html",
        &[("if-none-match", &etags[0])],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(header(&h, "content-type").is_none());
    assert!(body.is_empty());
    let (status, _, _) = call(
        &srv,
        Method::GET,
        "/echo/iframe.html",
        &[("if-none-match", "\"other\"")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for suffix in [
        "/iframe.htm",
        "/iframe",
        "/IFRAME.HTML",
        "/IFRAME",
        "/iframe.HTML",
        "/iframe.xml",
        "/iframe-/.html",
    ] {
        assert_eq!(
            get(&srv, &format!("/echo{suffix}")).await.0,
            StatusCode::NOT_FOUND,
            "{suffix}"
        );
    }
    srv.stop().await;
}

#[tokio::test]
async fn info() {
    let srv = server().await;
    let (status, h, body) = get(&srv, "/echo/info").await;
    assert_eq!(status, StatusCode::OK);
    assert_content_type(&h, "application/json;charset=UTF-8");
    assert!(header(&h, "set-cookie").is_none());
    assert_not_cached(&h);
    assert_cors(&h, None);
    let v: Value = serde_json::from_str(&body).expect("info is JSON");
    assert_eq!(v["websocket"], true);
    assert_eq!(v["cookie_needed"], false);
    assert_eq!(v["origins"], serde_json::json!(["*:*"]));
    let e1 = v["entropy"].as_u64().expect("entropy is an integer");
    assert!(e1 <= u64::from(u32::MAX));
    let (_, _, body) = get(&srv, "/echo/info").await;
    let v: Value = serde_json::from_str(&body).expect("info is JSON");
    assert_ne!(v["entropy"].as_u64(), Some(e1), "entropy must change");

    let (_, h, _) = call(
        &srv,
        Method::GET,
        "/echo/info",
        &[("origin", "http://a.example")],
        "",
    )
    .await;
    assert_cors(&h, Some("http://a.example"));

    for origin in [None, Some("test"), Some("null")] {
        let headers: Vec<(&str, &str)> = origin.iter().map(|o| ("origin", *o)).collect();
        let (status, h, body) = call(&srv, Method::OPTIONS, "/echo/info", &headers, "").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_long_cache(&h);
        let max_age: u64 = header(&h, "access-control-max-age")
            .expect("max age")
            .parse()
            .expect("number");
        assert!(max_age > 1_000_000);
        assert_eq!(
            header(&h, "access-control-allow-methods"),
            Some("OPTIONS, GET")
        );
        assert!(body.is_empty());
        assert_cors(&h, origin);
    }
    assert_eq!(
        post(&srv, "/echo/info", "").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );

    let (_, _, body) = get(&srv, "/disabled_websocket_echo/info").await;
    let v: Value = serde_json::from_str(&body).expect("info is JSON");
    assert_eq!(v["websocket"], false);
    let (_, h, body) = get(&srv, "/cookie_needed_echo/info").await;
    assert!(header(&h, "set-cookie").is_none());
    let v: Value = serde_json::from_str(&body).expect("info is JSON");
    assert_eq!(v["cookie_needed"], true);
    srv.stop().await;
}

#[tokio::test]
async fn session_urls() {
    let srv = server().await;
    for part in ["/a/a", "/_/_", "/1/1", "/abcdefgh_i-j%20/abcdefg_i-j%20"] {
        assert_eq!(xhr(&srv, &format!("/echo{part}")).await, "o\n", "{part}");
    }
    for part in ["//", "/a./a", "/a/a.", "/./.", "/", "///"] {
        let path = format!("/echo{part}/xhr");
        assert_eq!(
            get(&srv, &path).await.0,
            StatusCode::NOT_FOUND,
            "GET {path}"
        );
        assert_eq!(
            post(&srv, &path, "").await.0,
            StatusCode::NOT_FOUND,
            "POST {path}"
        );
    }
    // The server id is for load balancers: a session is its session id alone.
    let id = ulid::Ulid::new();
    assert_eq!(xhr(&srv, &format!("/echo/000/{id}")).await, "o\n");
    xhr_send(&srv, &format!("/echo/000/{id}"), r#"["a"]"#).await;
    assert_eq!(xhr(&srv, &format!("/echo/999/{id}")).await, "a[\"a\"]\n");
    srv.stop().await;
}

#[tokio::test]
async fn xhr_polling() {
    let srv = server().await;
    for suffix in ["/xhr", "/xhr_send", "/xhr_streaming"] {
        for origin in [None, Some("test"), Some("null")] {
            let headers: Vec<(&str, &str)> = origin.iter().map(|o| ("origin", *o)).collect();
            let path = format!("/echo/abc/abc{suffix}");
            let (status, h, body) = call(&srv, Method::OPTIONS, &path, &headers, "").await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{path}");
            assert_long_cache(&h);
            assert_eq!(
                header(&h, "access-control-allow-methods"),
                Some("OPTIONS, POST")
            );
            assert!(header(&h, "access-control-max-age").is_some());
            assert!(body.is_empty());
            assert_cors(&h, origin);
        }
    }

    let url = format!("/echo{}", session());
    let (status, h, body) = post(&srv, &format!("{url}/xhr"), "").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "o\n"));
    assert_content_type(&h, "application/javascript;charset=UTF-8");
    assert_cors(&h, None);
    assert_not_cached(&h);

    let (status, h, body) = post(&srv, &format!("{url}/xhr_send"), r#"["x"]"#).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_empty());
    assert_content_type(&h, "text/plain;charset=UTF-8");
    assert_cors(&h, None);
    assert_not_cached(&h);
    assert_eq!(xhr(&srv, &url).await, "a[\"x\"]\n");

    // Several messages wait for the next poll, in order, in one frame.
    xhr_send(&srv, &url, r#"["1","2"]"#).await;
    xhr_send(&srv, &url, r#"["3"]"#).await;
    assert_eq!(xhr(&srv, &url).await, "a[\"1\",\"2\",\"3\"]\n");

    // Any content type.
    for ct in [
        "text/plain",
        "T",
        "application/json",
        "application/xml",
        "",
        "application/json; charset=utf-8",
        "text/xml; charset=utf-8",
        "text/xml",
    ] {
        let (status, _, _) = call(
            &srv,
            Method::POST,
            &format!("{url}/xhr_send"),
            &[("content-type", ct)],
            r#"["a"]"#,
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "content type {ct:?}");
    }
    assert_eq!(
        xhr(&srv, &url).await,
        format!("a[{}]\n", ["\"a\""; 8].join(","))
    );

    // Wrong methods.
    assert_eq!(
        get(&srv, &format!("{url}/xhr")).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        get(&srv, &format!("{url}/xhr_send")).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    srv.stop().await;
}

#[tokio::test]
async fn xhr_send_errors() {
    let srv = server().await;
    // Sending never opens a session.
    let (status, _, _) = post(&srv, &format!("/echo{}/xhr_send", session()), r#"["x"]"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let url = format!("/echo{}", session());
    assert_eq!(xhr(&srv, &url).await, "o\n");
    let (status, h, body) = post(&srv, &format!("{url}/xhr_send"), r#"["x"#).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, "Broken JSON encoding.");
    assert_content_type(&h, "text/plain;charset=UTF-8");
    for payload in ["", "null", "{}", "[1]"] {
        let (status, _, body) = post(&srv, &format!("{url}/xhr_send"), payload).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{payload:?}");
        assert_eq!(body, "Payload expected.", "{payload:?}");
    }
    // The session survived the bad requests.
    xhr_send(&srv, &url, r#"["a"]"#).await;
    assert_eq!(xhr(&srv, &url).await, "a[\"a\"]\n");
    srv.stop().await;
}

#[tokio::test]
async fn cors_request_headers_are_echoed() {
    let srv = server().await;
    let path = format!("/echo{}/xhr", session());
    let (_, h, _) = call(
        &srv,
        Method::POST,
        &path,
        &[("access-control-request-headers", "a, b, c")],
        "",
    )
    .await;
    assert_cors(&h, None);
    assert_eq!(header(&h, "access-control-allow-headers"), Some("a, b, c"));
    let path = format!("/echo{}/xhr", session());
    let (_, h, _) = call(
        &srv,
        Method::POST,
        &path,
        &[("access-control-request-headers", "")],
        "",
    )
    .await;
    assert!(header(&h, "access-control-allow-headers").is_none());
    let path = format!("/echo{}/xhr", session());
    let (_, h, _) = call(
        &srv,
        Method::POST,
        &path,
        &[("origin", "https://app.example")],
        "",
    )
    .await;
    assert_cors(&h, Some("https://app.example"));
    assert!(header(&h, "access-control-allow-headers").is_none());
    srv.stop().await;
}

#[tokio::test]
async fn second_receiver_gets_2010() {
    let srv = server().await;
    let url = format!("/echo{}", session());
    let mut first = xhr_streaming(&srv, &url).await;
    first.expect(&prelude()).await;
    first.expect("o\n").await;
    // Polling and streaming requests alike are refused while `first` receives.
    assert_eq!(xhr(&srv, &url).await, ANOTHER);
    let mut second = xhr_streaming(&srv, &url).await;
    second.expect(&prelude()).await;
    second.expect(ANOTHER).await;
    second.assert_ends().await;
    // `first` still receives.
    xhr_send(&srv, &url, r#"["still"]"#).await;
    first.expect("a[\"still\"]\n").await;
    srv.stop().await;
}

#[tokio::test]
async fn close_service() {
    let srv = server().await;
    let url = format!("/close{}", session());
    assert_eq!(xhr(&srv, &url).await, "o\n");
    // Until the session times out, every request gets the close frame.
    assert_eq!(xhr(&srv, &url).await, format!("{GO_AWAY}\n"));
    assert_eq!(xhr(&srv, &url).await, format!("{GO_AWAY}\n"));
    // Messages to a closed session are dropped.
    xhr_send(&srv, &url, r#"["x"]"#).await;
    assert_eq!(xhr(&srv, &url).await, format!("{GO_AWAY}\n"));

    // Streaming: the close frame ends the response; later requests get it again.
    let url = format!("/close{}", session());
    let mut r1 = xhr_streaming(&srv, &url).await;
    r1.expect(&prelude()).await;
    r1.expect("o\n").await;
    r1.expect(&format!("{GO_AWAY}\n")).await;
    r1.assert_ends().await;
    let mut r2 = xhr_streaming(&srv, &url).await;
    r2.expect(&prelude()).await;
    r2.expect(&format!("{GO_AWAY}\n")).await;
    r2.assert_ends().await;

    let url = format!("/close{}", session());
    let (_, _, body) = get(&srv, &format!("{url}/jsonp?c=x")).await;
    assert_eq!(body, "x(\"o\");\r\n");
    for _ in 0..2 {
        let (_, _, body) = get(&srv, &format!("{url}/jsonp?c=x")).await;
        assert_eq!(body, "x(\"c[3000,\\\"Go away!\\\"]\");\r\n");
    }
    srv.stop().await;
}

#[tokio::test]
async fn websocket_transport() {
    let srv = server().await;
    let path = format!("/echo{}/websocket", session());
    let mut ws = ws_open(&srv, &path).await;
    assert_eq!(ws_text(&mut ws).await.as_deref(), Some("o"));
    // Empty frames are ignored; an array or a single string is accepted.
    ws_send(&mut ws, "").await;
    ws_send(&mut ws, r#"["a"]"#).await;
    assert_eq!(ws_text(&mut ws).await.as_deref(), Some(r#"a["a"]"#));
    ws_send(&mut ws, r#""b""#).await;
    assert_eq!(ws_text(&mut ws).await.as_deref(), Some(r#"a["b"]"#));
    ws_send(&mut ws, r#"["c","d"]"#).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let frame = ws_text(&mut ws).await.expect("a frame");
        let inner = frame.strip_prefix('a').expect("a message frame");
        let batch: Vec<String> = serde_json::from_str(inner).expect("JSON array");
        got.extend(batch);
    }
    assert_eq!(got, ["c", "d"]);

    // A second WebSocket may use the same session id: WebSocket sessions are independent.
    let mut ws2 = ws_open(&srv, &path).await;
    assert_eq!(ws_text(&mut ws2).await.as_deref(), Some("o"));
    ws_send(&mut ws2, r#"["two"]"#).await;
    assert_eq!(ws_text(&mut ws2).await.as_deref(), Some(r#"a["two"]"#));
    ws_send(&mut ws, r#"["one"]"#).await;
    assert_eq!(ws_text(&mut ws).await.as_deref(), Some(r#"a["one"]"#));
    ws2.close(None).await.ok();

    // Broken JSON drops the connection.
    ws_send(&mut ws, r#"["a"#).await;
    assert_eq!(ws_text(&mut ws).await, None);

    // The close service: open, close frame, end of the connection.
    let mut ws = ws_open(&srv, &format!("/close{}/websocket", session())).await;
    assert_eq!(ws_text(&mut ws).await.as_deref(), Some("o"));
    assert_eq!(ws_text(&mut ws).await.as_deref(), Some(GO_AWAY));
    assert_eq!(ws_text(&mut ws).await, None);
    srv.stop().await;
}

#[tokio::test]
async fn websocket_http_errors() {
    let srv = server().await;
    let (status, h, body) = get(&srv, "/echo/0/0/websocket").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("Can \"Upgrade\" only to \"WebSocket\"."),
        "{body}"
    );
    assert_content_type(&h, "text/plain;charset=UTF-8");
    let (status, _, body) = call(
        &srv,
        Method::GET,
        "/echo/0/0/websocket",
        &[("upgrade", "WebSocket"), ("connection", "close")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("\"Connection\" must be \"Upgrade\"."),
        "{body}"
    );
    for headers in [
        &[("upgrade", "WebSocket"), ("connection", "Upgrade")][..],
        &[],
    ] {
        let (status, h, body) = call(&srv, Method::POST, "/echo/0/0/websocket", headers, "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(header(&h, "content-type").is_none());
        assert_eq!(header(&h, "allow"), Some("GET"));
        assert!(body.is_empty());
    }
    srv.stop().await;
}

#[tokio::test]
async fn raw_websocket() {
    let srv = server().await;
    let mut ws = ws_open(&srv, "/echo/websocket").await;
    ws_send(&mut ws, "Hello world!\u{ffff}").await;
    assert_eq!(
        ws_text(&mut ws).await.as_deref(),
        Some("Hello world!\u{ffff}")
    );
    // No SockJS framing on the raw endpoint: JSON is just text.
    ws_send(&mut ws, r#"["a"#).await;
    assert_eq!(ws_text(&mut ws).await.as_deref(), Some(r#"["a"#));
    ws.close(None).await.ok();

    let mut ws = ws_open(&srv, "/close/websocket").await;
    match timeout(T, ws.next()).await.expect("WS read timed out") {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 3000);
            assert_eq!(frame.reason.as_str(), "Go away!");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    srv.stop().await;
}

#[tokio::test]
async fn disabled_websocket() {
    let srv = server().await;
    let base = "/disabled_websocket_echo";
    assert_eq!(
        ws_refused(&srv, &format!("{base}{}/websocket", session())).await,
        404
    );
    assert_eq!(ws_refused(&srv, &format!("{base}/websocket")).await, 404);
    // The other transports work.
    let url = format!("{base}{}", session());
    assert_eq!(xhr(&srv, &url).await, "o\n");
    xhr_send(&srv, &url, r#"["a"]"#).await;
    assert_eq!(xhr(&srv, &url).await, "a[\"a\"]\n");
    srv.stop().await;
}

#[tokio::test]
async fn xhr_streaming_transport_and_response_limit() {
    let srv = server().await;
    let url = format!("/echo{}", session());
    let mut r = xhr_streaming(&srv, &url).await;
    assert_content_type(&r.headers, "application/javascript;charset=UTF-8");
    assert_cors(&r.headers, None);
    assert_not_cached(&r.headers);
    r.expect(&prelude()).await;
    r.expect("o\n").await;
    xhr_send(&srv, &url, r#"["x"]"#).await;
    r.expect("a[\"x\"]\n").await;
    drop(r);

    // 4096 bytes of frames (prelude excluded) end the response; the session goes on in the
    // next request.
    let url = format!("/echo{}", session());
    let mut r = xhr_streaming(&srv, &url).await;
    r.expect(&prelude()).await;
    r.expect("o\n").await;
    let msg = format!("\"{}\"", "x".repeat(128));
    for _ in 0..31 {
        xhr_send(&srv, &url, &format!("[{msg}]")).await;
        r.expect(&format!("a[{msg}]\n")).await;
    }
    r.assert_ends().await;
    xhr_send(&srv, &url, r#"["after"]"#).await;
    let mut r = xhr_streaming(&srv, &url).await;
    r.expect(&prelude()).await;
    r.expect("a[\"after\"]\n").await;
    srv.stop().await;
}

#[tokio::test]
async fn eventsource() {
    let srv = server().await;
    let url = format!("/echo{}", session());
    let mut r = Stream::open(&srv, Method::GET, &format!("{url}/eventsource"), &[]).await;
    assert_content_type(&r.headers, "text/event-stream;charset=UTF-8");
    assert_not_cached(&r.headers);
    r.expect("\r\n").await;
    r.expect("data: o\r\n\r\n").await;
    xhr_send(&srv, &url, r#"["x"]"#).await;
    r.expect("data: a[\"x\"]\r\n\r\n").await;
    xhr_send(&srv, &url, r#"["  \u0000\n\r "]"#).await;
    r.expect("data: a[\"  \\u0000\\n\\r \"]\r\n\r\n").await;
    drop(r);

    let url = format!("/echo{}", session());
    let mut r = Stream::open(&srv, Method::GET, &format!("{url}/eventsource"), &[]).await;
    r.expect("\r\n").await;
    r.expect("data: o\r\n\r\n").await;
    let msg = format!("\"{}\"", "x".repeat(4096));
    xhr_send(&srv, &url, &format!("[{msg}]")).await;
    r.expect(&format!("data: a[{msg}]\r\n\r\n")).await;
    r.assert_ends().await;
    assert_eq!(
        post(&srv, &format!("{url}/eventsource"), "").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    srv.stop().await;
}

const HTMLFILE_HEAD: &str = r#"<!doctype html>
<html><head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
</head><body><h2>Don't panic!</h2>
  <script>
    document.domain = document.domain;
    var c = parent.callback;
    c.start();
    function p(d) {c.message(d);};
    window.onload = function() {c.stop();};
  </script>"#;

#[tokio::test]
async fn htmlfile() {
    let srv = server().await;
    let url = format!("/echo{}", session());
    let mut r = Stream::open(
        &srv,
        Method::GET,
        &format!("{url}/htmlfile?c=%63allback"),
        &[],
    )
    .await;
    assert_content_type(&r.headers, "text/html;charset=UTF-8");
    assert_not_cached(&r.headers);
    // The head, padded past 1 KiB.
    while !r.buf.contains("\r\n\r\n") {
        assert!(r.fill().await, "htmlfile ended early");
    }
    let end = r.buf.find("\r\n\r\n").expect("prelude end") + 4;
    let head: String = r.buf.drain(..end).collect();
    assert!(head.len() > 1024, "{}", head.len());
    assert_eq!(head.trim(), HTMLFILE_HEAD);
    r.expect("<script>\np(\"o\");\n</script>\r\n").await;
    xhr_send(&srv, &url, r#"["x"]"#).await;
    r.expect("<script>\np(\"a[\\\"x\\\"]\");\n</script>\r\n")
        .await;
    drop(r);

    for (query, text) in [
        ("", "\"callback\" parameter required"),
        ("?c=alert(1)", "invalid \"callback\" parameter"),
    ] {
        let (status, _, body) = get(&srv, &format!("/echo/a/a/htmlfile{query}")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.contains(text), "{body}");
    }

    let url = format!("/echo{}", session());
    let mut r = Stream::open(
        &srv,
        Method::GET,
        &format!("{url}/htmlfile?callback=callback"),
        &[],
    )
    .await;
    while !r.buf.contains("\r\n\r\n") {
        assert!(r.fill().await, "htmlfile ended early");
    }
    let end = r.buf.find("\r\n\r\n").expect("prelude end") + 4;
    r.buf.drain(..end);
    r.expect("<script>\np(\"o\");\n</script>\r\n").await;
    let msg = "x".repeat(4096);
    xhr_send(&srv, &url, &format!("[\"{msg}\"]")).await;
    r.expect(&format!(
        "<script>\np(\"a[\\\"{msg}\\\"]\");\n</script>\r\n"
    ))
    .await;
    r.assert_ends().await;
    srv.stop().await;
}

async fn jsonp_send(
    srv: &TestServer,
    url: &str,
    body: &str,
    form: bool,
) -> (StatusCode, HeaderMap, String) {
    let ct = if form {
        "application/x-www-form-urlencoded"
    } else {
        "text/plain"
    };
    call(
        srv,
        Method::POST,
        &format!("{url}/jsonp_send"),
        &[("content-type", ct)],
        body,
    )
    .await
}

#[tokio::test]
async fn jsonp() {
    let srv = server().await;
    let url = format!("/echo{}", session());
    let (status, h, body) = get(&srv, &format!("{url}/jsonp?c=%63allback")).await;
    assert_eq!(status, StatusCode::OK);
    assert_content_type(&h, "application/javascript;charset=UTF-8");
    assert_not_cached(&h);
    assert_eq!(body, "callback(\"o\");\r\n");
    let (status, h, body) = jsonp_send(&srv, &url, "d=%5B%22x%22%5D", true).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    assert_content_type(&h, "text/plain;charset=UTF-8");
    assert_not_cached(&h);
    let (_, _, body) = get(&srv, &format!("{url}/jsonp?c=%63allback")).await;
    assert_eq!(body, "callback(\"a[\\\"x\\\"]\");\r\n");

    let (status, _, body) = get(&srv, "/echo/a/a/jsonp").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("\"callback\" parameter required"), "{body}");

    // Bad payloads.
    let url = format!("/echo{}", session());
    assert_eq!(
        get(&srv, &format!("{url}/jsonp?c=x")).await.2,
        "x(\"o\");\r\n"
    );
    let (status, _, body) = jsonp_send(&srv, &url, "d=%5B%22x", true).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("Broken JSON encoding."), "{body}");
    for data in ["", "d=", "p=p"] {
        let (status, _, body) = jsonp_send(&srv, &url, data, true).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{data:?}");
        assert!(body.contains("Payload expected."), "{data:?}: {body}");
    }
    assert_eq!(
        jsonp_send(&srv, &url, "d=%5B%22b%22%5D", true).await.2,
        "ok"
    );
    assert_eq!(
        get(&srv, &format!("{url}/jsonp?c=x")).await.2,
        "x(\"a[\\\"b\\\"]\");\r\n"
    );

    // A form or a raw JSON body.
    let url = format!("/echo{}", session());
    assert_eq!(
        get(&srv, &format!("{url}/jsonp?c=x")).await.2,
        "x(\"o\");\r\n"
    );
    assert_eq!(
        jsonp_send(&srv, &url, "d=%5B%22abc%22%5D", true).await.2,
        "ok"
    );
    assert_eq!(jsonp_send(&srv, &url, r#"["%61bc"]"#, false).await.2, "ok");
    assert_eq!(
        get(&srv, &format!("{url}/jsonp?c=x")).await.2,
        "x(\"a[\\\"abc\\\",\\\"%61bc\\\"]\");\r\n"
    );
    // Unknown session.
    let (status, _, _) = jsonp_send(
        &srv,
        &format!("/echo{}", session()),
        "d=%5B%22x%22%5D",
        true,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    srv.stop().await;
}

fn assert_cookie(h: &HeaderMap, value: &str) {
    let cookie = header(h, "set-cookie").expect("Set-Cookie");
    let mut parts = cookie.split(';');
    assert_eq!(parts.next().map(str::trim), Some(value));
    assert_eq!(
        parts.next().map(|p| p.trim().to_lowercase()),
        Some("path=/".into())
    );
}

#[tokio::test]
async fn jsessionid_cookie() {
    let srv = server().await;
    let base = "/cookie_needed_echo";
    let url = format!("{base}{}", session());
    let (status, h, body) = post(&srv, &format!("{url}/xhr"), "").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "o\n"));
    assert_cookie(&h, "JSESSIONID=dummy");
    let (status, h, _) = post(&srv, &format!("{url}/xhr_send"), r#"["a"]"#).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_cookie(&h, "JSESSIONID=dummy");

    // The client's value is echoed.
    let url = format!("{base}{}", session());
    let (_, h, body) = call(
        &srv,
        Method::POST,
        &format!("{url}/xhr"),
        &[("cookie", "a=b; JSESSIONID=abcdef")],
        "",
    )
    .await;
    assert_eq!(body, "o\n");
    assert_cookie(&h, "JSESSIONID=abcdef");

    let r = xhr_streaming(&srv, &format!("{base}{}", session())).await;
    assert_cookie(&r.headers, "JSESSIONID=dummy");
    let r = Stream::open(
        &srv,
        Method::GET,
        &format!("{base}{}/eventsource", session()),
        &[],
    )
    .await;
    assert_cookie(&r.headers, "JSESSIONID=dummy");
    let r = Stream::open(
        &srv,
        Method::GET,
        &format!("{base}{}/htmlfile?c=cb", session()),
        &[],
    )
    .await;
    assert_cookie(&r.headers, "JSESSIONID=dummy");
    let url = format!("{base}{}", session());
    let (_, h, body) = get(&srv, &format!("{url}/jsonp?c=%63allback")).await;
    assert_eq!(body, "callback(\"o\");\r\n");
    assert_cookie(&h, "JSESSIONID=dummy");
    let (status, h, body) = jsonp_send(&srv, &url, "d=%5B%22x%22%5D", true).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    assert_cookie(&h, "JSESSIONID=dummy");

    // Services that do not need cookies set none.
    let (_, h, _) = post(&srv, &format!("/echo{}/xhr", session()), "").await;
    assert!(header(&h, "set-cookie").is_none());
    srv.stop().await;
}

#[tokio::test]
async fn json_encoding() {
    let srv = server().await;
    // The server escapes what browsers or proxies would mangle.
    let escaped: Vec<u32> = (0x100u32..=0xffff)
        .filter(
            |c| matches!(c, 0x200c..=0x200f | 0x2028..=0x202f | 0x2060..=0x206f | 0xfff0..=0xffff),
        )
        .collect();
    let raw: String = escaped.iter().filter_map(|&c| char::from_u32(c)).collect();
    let expected: String = escaped.iter().map(|c| format!("\\u{c:04x}")).collect();
    let url = format!("/echo{}", session());
    assert_eq!(xhr(&srv, &url).await, "o\n");
    xhr_send(&srv, &url, &serde_json::to_string(&[&raw]).expect("JSON")).await;
    let body = xhr(&srv, &url).await;
    assert_eq!(body, format!("a[\"{expected}\"]\n"));

    // The server decodes what clients escape (any \uXXXX, surrogate pairs included).
    let url = format!("/echo{}", session());
    assert_eq!(xhr(&srv, &url).await, "o\n");
    let client: String = (1u32..0xd800)
        .chain(0xe000..=0xffff)
        .step_by(7)
        .filter_map(char::from_u32)
        .chain(['😀', '"', '\\'])
        .collect();
    let payload: String = client
        .encode_utf16()
        .map(|u| format!("\\u{u:04x}"))
        .collect();
    xhr_send(&srv, &url, &format!("[\"{payload}\"]")).await;
    let body = xhr(&srv, &url).await;
    let frame = body.trim_end().strip_prefix('a').expect("message frame");
    let got: Vec<String> = serde_json::from_str(frame).expect("JSON array");
    assert_eq!(got, [client]);
    srv.stop().await;
}

#[tokio::test]
async fn interrupted_receivers_end_the_session() {
    let srv = server().await;
    // Streaming.
    let url = format!("/echo{}", session());
    let mut r1 = xhr_streaming(&srv, &url).await;
    r1.expect(&prelude()).await;
    r1.expect("o\n").await;
    let mut r2 = xhr_streaming(&srv, &url).await;
    r2.expect(&prelude()).await;
    r2.expect(ANOTHER).await;
    r2.assert_ends().await;
    drop(r1);
    assert_new_session_soon(&srv, &url).await;

    // Polling: a waiting poll that goes away.
    let url = format!("/echo{}", session());
    assert_eq!(xhr(&srv, &url).await, "o\n");
    let waiting = tokio::spawn({
        let http = srv.http();
        let path = srv.url(&format!("{url}/xhr"));
        async move { http.post(path).send().await }
    });
    // Give the waiting poll time to arrive (as the protocol's test suite does).
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(xhr(&srv, &url).await, ANOTHER);
    waiting.abort();
    assert_new_session_soon(&srv, &url).await;
    srv.stop().await;
}

/// Polls until the session at `url` answers as a new one (`o`), under [`T`]: a cut
/// receiving request is noticed when the server sees its connection end.
async fn assert_new_session_soon(srv: &TestServer, url: &str) {
    timeout(T, async {
        loop {
            match xhr(srv, url).await.as_str() {
                "o\n" => return,
                ANOTHER => tokio::time::sleep(Duration::from_millis(10)).await,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("the interrupted session was never closed");
}

#[tokio::test]
async fn heartbeats() {
    let srv = TestServer::spawn_with(fast).await;
    // Polling: a poll with nothing to say answers `h` after the heartbeat interval.
    let url = format!("/echo{}", session());
    assert_eq!(xhr(&srv, &url).await, "o\n");
    assert_eq!(xhr(&srv, &url).await, "h\n");
    // Streaming: `h` frames keep coming (and keep the session alive past its 300 ms
    // disconnect delay).
    let mut r = xhr_streaming(&srv, &url).await;
    r.expect(&prelude()).await;
    for _ in 0..3 {
        r.expect("h\n").await;
    }
    xhr_send(&srv, &url, r#"["alive"]"#).await;
    r.expect("a[\"alive\"]\n").await;
    drop(r);
    // WebSocket.
    let mut ws = ws_open(&srv, &format!("/echo{}/websocket", session())).await;
    assert_eq!(ws_text(&mut ws).await.as_deref(), Some("o"));
    assert_eq!(ws_text(&mut ws).await.as_deref(), Some("h"));
    assert_eq!(ws_text(&mut ws).await.as_deref(), Some("h"));
    srv.stop().await;
}

#[tokio::test]
async fn sessions_time_out_without_a_receiver() {
    let srv = TestServer::spawn_with(fast).await;
    let url = format!("/echo{}", session());
    assert_eq!(xhr(&srv, &url).await, "o\n");
    xhr_send(&srv, &url, r#"["kept"]"#).await;
    // 300 ms without a receiving request: the session is gone.
    timeout(T, async {
        loop {
            let (status, _, _) = post(&srv, &format!("{url}/xhr_send"), r#"["x"]"#).await;
            if status == StatusCode::NOT_FOUND {
                return;
            }
            assert_eq!(status, StatusCode::NO_CONTENT);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the session never timed out");
    // The same id opens a new session.
    assert_eq!(xhr(&srv, &url).await, "o\n");

    // A closed session is forgotten too.
    let url = format!("/close{}", session());
    assert_eq!(xhr(&srv, &url).await, "o\n");
    assert_eq!(xhr(&srv, &url).await, format!("{GO_AWAY}\n"));
    // Each request to a closed session restarts its timeout, so wait past it.
    timeout(T, async {
        loop {
            tokio::time::sleep(Duration::from_millis(400)).await;
            if xhr(&srv, &url).await == "o\n" {
                return;
            }
        }
    })
    .await
    .expect("the closed session was never forgotten");
    srv.stop().await;
}

#[tokio::test]
async fn sessions_hold_connection_slots() {
    let srv = server().await;
    let before = crate::util::sample(
        &crate::util::metrics(&srv).await,
        "herald_connections{transport=\"ws\"}",
    );
    let url = format!("/echo{}", session());
    assert_eq!(xhr(&srv, &url).await, "o\n");
    let mut ws = ws_open(&srv, &format!("/echo{}/websocket", session())).await;
    assert_eq!(ws_text(&mut ws).await.as_deref(), Some("o"));
    crate::util::wait_metric(&srv, "herald_connections{transport=\"ws\"}", |v| {
        v == before + 2.0
    })
    .await;
    ws.close(None).await.ok();
    crate::util::wait_metric(&srv, "herald_connections{transport=\"ws\"}", |v| {
        v == before + 1.0
    })
    .await;
    srv.stop().await;
}

/// The messages of the next `a[...]` frame (skipping `h` frames).
async fn ws_messages(ws: &mut Ws) -> Vec<String> {
    loop {
        let frame = ws_text(ws).await.expect("a frame");
        if frame == "h" {
            continue;
        }
        let inner = frame
            .strip_prefix('a')
            .unwrap_or_else(|| panic!("not a message frame: {frame}"));
        return serde_json::from_str(inner).expect("a JSON array of strings");
    }
}

/// STOMP over the SockJS `websocket` transport of `/ws` (as sockjs-client + a STOMP client
/// use it), which runs in place on the socket: open frame, heart-beats, frames batched into
/// `a[...]`, broken framing and the shutdown close.
#[tokio::test]
async fn stomp_over_the_sockjs_websocket_transport() {
    let srv = TestServer::spawn_with(fast).await;
    let path = format!("/ws{}/websocket", session());
    let mut ws = ws_open(&srv, &path).await;
    assert_eq!(ws_text(&mut ws).await.as_deref(), Some("o"));
    // Nothing to say for 200 ms: a heart-beat frame.
    assert_eq!(ws_text(&mut ws).await.as_deref(), Some("h"));
    let connect =
        serde_json::to_string(&["CONNECT\naccept-version:1.2\nhost:herald\n\n\0"]).unwrap();
    ws_send(&mut ws, &connect).await;
    let connected = ws_messages(&mut ws).await;
    assert!(connected[0].starts_with("CONNECTED\n"), "{connected:?}");
    // Two frames in one SockJS message, one of them a plain string.
    let subscribe = serde_json::to_string(&[
        "SUBSCRIBE\nid:0\ndestination:/topic/sj.*\n\n\0",
        "SUBSCRIBE\nid:1\ndestination:/topic/sj.b\nreceipt:r1\n\n\0",
    ])
    .unwrap();
    ws_send(&mut ws, &subscribe).await;
    assert!(ws_messages(&mut ws).await[0].starts_with("RECEIPT\nreceipt-id:r1\n"));
    crate::util::publish(
        &srv,
        "sj.b",
        serde_json::json!({"data": {"text": "quote \" and \u{2028}"}}),
    )
    .await;
    let mut frames = Vec::new();
    while frames.len() < 2 {
        frames.extend(ws_messages(&mut ws).await);
    }
    let mut subs: Vec<&str> = frames
        .iter()
        .map(|f| {
            assert!(f.starts_with("MESSAGE\n"), "{f}");
            assert!(f.contains(r#""text":"quote \" and"#), "{f}");
            assert!(f.contains('\u{2028}'), "the escaped character arrives: {f}");
            f.lines()
                .find_map(|l| l.strip_prefix("subscription:"))
                .expect("a subscription header")
        })
        .collect();
    subs.sort_unstable();
    assert_eq!(subs, ["0", "1"]);

    // Shutting down: SockJS's close frame, then the end of the connection.
    let mut ws2 = ws_open(&srv, &format!("/ws{}/websocket", session())).await;
    assert_eq!(ws_text(&mut ws2).await.as_deref(), Some("o"));
    // Broken JSON drops the connection.
    ws_send(&mut ws2, r#"["CONN"#).await;
    assert_eq!(ws_text(&mut ws2).await, None);
    srv.stop().await;
    let mut last = Vec::new();
    while let Some(frame) = ws_text(&mut ws).await {
        last.push(frame);
    }
    assert_eq!(
        last.last().map(String::as_str),
        Some(r#"c[1001,"Server shutting down"]"#),
        "{last:?}"
    );
}
