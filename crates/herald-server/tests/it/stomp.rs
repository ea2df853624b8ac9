//! STOMP over WebSocket with raw frames: the happy path, and bad input that must end in an
//! ERROR frame and a closed connection, never a panic or a stuck task.

use futures::{SinkExt, StreamExt};
use herald_test_support::TestServer;
use serde_json::json;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

use crate::util::{T, Ws, get_json, publish_data};

pub(crate) async fn connect(srv: &TestServer) -> Ws {
    let mut req = srv.ws_url("/ws").into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("v12.stomp, v11.stomp"),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "v12.stomp");
    ws
}

pub(crate) async fn send(ws: &mut Ws, frame: &str) {
    ws.send(Message::text(frame)).await.unwrap();
}

/// The next frame that is not a heart-beat, as text; `None` when the server closed.
pub(crate) async fn frame(ws: &mut Ws) -> Option<String> {
    loop {
        let msg = timeout(T, ws.next()).await.expect("no frame in time")?;
        match msg {
            Ok(Message::Text(t)) if t.as_str().trim_matches(['\n', '\r']).is_empty() => continue,
            Ok(Message::Text(t)) => return Some(t.as_str().to_owned()),
            Ok(Message::Binary(b)) => return Some(String::from_utf8_lossy(&b).into_owned()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

pub(crate) async fn connected(srv: &TestServer) -> Ws {
    let mut ws = connect(srv).await;
    send(&mut ws, "CONNECT\naccept-version:1.2\nhost:herald\n\n\0").await;
    let f = frame(&mut ws).await.unwrap();
    assert!(f.starts_with("CONNECTED\n"), "{f}");
    assert!(f.contains("version:1.2"), "{f}");
    ws
}

/// Expects ERROR (with `message` containing `needle`), then the connection closing.
async fn expect_error_and_close(ws: &mut Ws, needle: &str) {
    let f = frame(ws).await.expect("an ERROR frame");
    assert!(f.starts_with("ERROR\n"), "{f}");
    let message = f
        .lines()
        .find_map(|l| l.strip_prefix("message:"))
        .unwrap_or_default();
    assert!(
        message.to_lowercase().contains(&needle.to_lowercase()),
        "ERROR message {message:?} lacks {needle:?}"
    );
    assert!(
        frame(ws).await.is_none(),
        "connection should close after ERROR"
    );
}

#[tokio::test]
async fn subscribe_receive_send_and_receipt() {
    let srv = TestServer::spawn().await;
    let mut ws = connected(&srv).await;
    send(
        &mut ws,
        "SUBSCRIBE\nid:s1\ndestination:/topic/raw.>\nreceipt:r1\n\n\0",
    )
    .await;
    let f = frame(&mut ws).await.unwrap();
    assert!(f.starts_with("RECEIPT\nreceipt-id:r1"), "{f}");
    let id = publish_data(&srv, "raw.a", json!({"x": 1})).await;
    let f = frame(&mut ws).await.unwrap();
    assert!(f.starts_with("MESSAGE\n"), "{f}");
    assert!(f.contains("subscription:s1"), "{f}");
    assert!(f.contains(&format!("message-id:{id}")), "{f}");
    assert!(f.contains("destination:/topic/raw.a"), "{f}");
    assert!(f.ends_with("{\"x\":1}\0"), "{f:?}");
    send(
        &mut ws,
        "SEND\ndestination:/topic/raw.b\ncontent-type:application/json\nreceipt:r2\n\n[1,2]\0",
    )
    .await;
    // MESSAGE (our own subscription sees it) and RECEIPT, in either order.
    let mut got = vec![frame(&mut ws).await.unwrap(), frame(&mut ws).await.unwrap()];
    got.sort();
    assert!(got[0].starts_with("MESSAGE"), "{got:?}");
    assert!(got[1].starts_with("RECEIPT\nreceipt-id:r2"), "{got:?}");
    let page = get_json(&srv, "/api/v1/topics/raw.b/events?after=0").await;
    assert_eq!(page["events"][0]["data"], json!([1, 2]));
    send(&mut ws, "DISCONNECT\nreceipt:bye\n\n\0").await;
    let f = frame(&mut ws).await.unwrap();
    assert!(f.starts_with("RECEIPT\nreceipt-id:bye"), "{f}");
    assert!(frame(&mut ws).await.is_none());
    srv.stop().await;
}

#[tokio::test]
async fn garbage_bytes_are_an_error() {
    let srv = TestServer::spawn().await;
    let mut ws = connect(&srv).await;
    ws.send(Message::binary(vec![0xff, 0xfe, 0x00, 0x13, b'\n']))
        .await
        .unwrap();
    let f = frame(&mut ws).await.expect("an ERROR frame");
    assert!(f.starts_with("ERROR\n"), "{f}");
    assert!(frame(&mut ws).await.is_none());
    srv.stop().await;
}

#[tokio::test]
async fn unknown_command_is_an_error() {
    let srv = TestServer::spawn().await;
    let mut ws = connected(&srv).await;
    send(&mut ws, "DANCE\n\n\0").await;
    expect_error_and_close(&mut ws, "DANCE").await;
    srv.stop().await;
}

#[tokio::test]
async fn oversized_frame_is_an_error() {
    let srv = TestServer::spawn_with(|c| c.limits.max_event_bytes = 1024).await;
    let mut ws = connected(&srv).await;
    let body = "x".repeat(4096);
    send(
        &mut ws,
        &format!(
            "SEND\ndestination:/topic/big\ncontent-length:{}\n\n{body}\0",
            body.len()
        ),
    )
    .await;
    let f = frame(&mut ws).await.expect("an ERROR frame");
    assert!(f.starts_with("ERROR\n"), "{f}");
    assert!(frame(&mut ws).await.is_none());
    srv.stop().await;
}

#[tokio::test]
async fn malformed_and_unknown_destinations_are_errors() {
    let srv = TestServer::spawn().await;
    let mut ws = connected(&srv).await;
    send(&mut ws, "SEND\ndestination:/topic/bad..topic\n\nx\0").await;
    expect_error_and_close(&mut ws, "topic").await;
    let mut ws = connected(&srv).await;
    send(&mut ws, "SEND\ndestination:/nowhere\n\nx\0").await;
    expect_error_and_close(&mut ws, "destination").await;
    let mut ws = connected(&srv).await;
    send(&mut ws, "SUBSCRIBE\nid:1\ndestination:/app/chat.send\n\n\0").await;
    expect_error_and_close(&mut ws, "subscribe").await;
    srv.stop().await;
}

#[tokio::test]
async fn frames_before_connect_are_errors() {
    let srv = TestServer::spawn().await;
    let mut ws = connect(&srv).await;
    send(&mut ws, "SEND\ndestination:/topic/a\n\nx\0").await;
    let f = frame(&mut ws).await.expect("an ERROR frame");
    assert!(f.starts_with("ERROR\n"), "{f}");
    assert!(frame(&mut ws).await.is_none());
    srv.stop().await;
}

#[tokio::test]
async fn silent_peer_is_dropped() {
    let srv = TestServer::spawn_with(|c| c.stomp.heartbeat = "100,100".into()).await;
    let mut ws = connect(&srv).await;
    send(
        &mut ws,
        "CONNECT\naccept-version:1.2\nhost:h\nheart-beat:100,100\n\n\0",
    )
    .await;
    let f = frame(&mut ws).await.unwrap();
    assert!(f.contains("heart-beat:100,100"), "{f}");
    // Say nothing more: the server must give up on us (it keeps sending heart-beats).
    let closed = timeout(T, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Text(t))) if t.as_str().starts_with("ERROR") => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "silent peer was not dropped");
    srv.stop().await;
}

#[tokio::test]
async fn transactions_apply_at_commit_and_vanish_at_abort() {
    let srv = TestServer::spawn().await;
    let mut ws = connected(&srv).await;
    send(&mut ws, "BEGIN\ntransaction:t1\n\n\0").await;
    send(
        &mut ws,
        "SEND\ndestination:/topic/tx.a\ntransaction:t1\n\none\0",
    )
    .await;
    send(
        &mut ws,
        "SEND\ndestination:/topic/tx.a\ntransaction:t1\n\ntwo\0",
    )
    .await;
    send(&mut ws, "BEGIN\ntransaction:t2\n\n\0").await;
    send(
        &mut ws,
        "SEND\ndestination:/topic/tx.a\ntransaction:t2\n\nnever\0",
    )
    .await;
    send(&mut ws, "ABORT\ntransaction:t2\nreceipt:ab\n\n\0").await;
    let f = frame(&mut ws).await.unwrap();
    assert!(f.starts_with("RECEIPT\nreceipt-id:ab"), "{f}");
    let page = get_json(&srv, "/api/v1/topics/tx.a/events?after=0").await;
    assert_eq!(page["events"], json!([]), "nothing stored before COMMIT");
    send(&mut ws, "COMMIT\ntransaction:t1\nreceipt:c1\n\n\0").await;
    let f = frame(&mut ws).await.unwrap();
    assert!(f.starts_with("RECEIPT\nreceipt-id:c1"), "{f}");
    let page = get_json(&srv, "/api/v1/topics/tx.a/events?after=0").await;
    let data: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"].as_str().unwrap())
        .collect();
    assert_eq!(data, ["one", "two"]);
    send(&mut ws, "COMMIT\ntransaction:nope\n\n\0").await;
    expect_error_and_close(&mut ws, "transaction").await;
    srv.stop().await;
}

#[tokio::test]
async fn queued_messages_survive_a_restart() {
    let srv = TestServer::spawn().await;
    let mut ws = connected(&srv).await;
    for body in ["first", "second", "third"] {
        send(
            &mut ws,
            &format!("SEND\ndestination:/queue/jobs\nreceipt:{body}\n\n{body}\0"),
        )
        .await;
        let f = frame(&mut ws).await.unwrap();
        assert!(f.starts_with("RECEIPT"), "{f}");
    }
    // Consume (and acknowledge) the first one only.
    send(
        &mut ws,
        "SUBSCRIBE\nid:q\ndestination:/queue/jobs\nack:client-individual\n\n\0",
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(frame(&mut ws).await.unwrap());
    }
    assert!(got[0].ends_with("first\0"), "{got:?}");
    let ack = got[0]
        .lines()
        .find_map(|l| l.strip_prefix("ack:"))
        .unwrap()
        .to_owned();
    send(&mut ws, &format!("ACK\nid:{ack}\nreceipt:acked\n\n\0")).await;
    let f = frame(&mut ws).await.unwrap();
    assert!(f.starts_with("RECEIPT\nreceipt-id:acked"), "{f}");
    drop(ws);
    let srv = srv.restart().await;
    let mut ws = connected(&srv).await;
    send(&mut ws, "SUBSCRIBE\nid:q\ndestination:/queue/jobs\n\n\0").await;
    let a = frame(&mut ws).await.unwrap();
    let b = frame(&mut ws).await.unwrap();
    assert!(
        a.ends_with("second\0") && b.ends_with("third\0"),
        "{a:?} {b:?}"
    );
    assert!(a.contains("destination:/queue/jobs"), "{a}");
    srv.stop().await;
}

/// Where the test's upstream listens (set before the server starts; `spawn_with` takes a
/// plain function, so the URL travels through here).
static UPSTREAM: std::sync::OnceLock<String> = std::sync::OnceLock::new();

#[tokio::test]
async fn configured_app_destination_forwards_upstream() {
    use axum::{Router, routing::post};
    // An upstream service that wraps what it gets.
    let upstream = Router::new().route(
        "/orders",
        post(|body: String| async move {
            (
                [("content-type", "application/json")],
                format!("{{\"accepted\":{body},\"status\":\"created\"}}"),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, upstream).await });
    UPSTREAM
        .set(format!("http://{addr}/orders"))
        .expect("set once");
    let srv = TestServer::spawn_with(|c| {
        c.stomp.app.push(herald_server::config::StompAppSection {
            destination: "/app/orders.create".into(),
            send_to: "/topic/orders.created".into(),
            forward: UPSTREAM.get().cloned(),
        });
        c.stomp.app.push(herald_server::config::StompAppSection {
            destination: "/app/orders.echo".into(),
            send_to: "/topic/orders.echoed".into(),
            forward: None,
        });
    })
    .await;
    let mut ws = connected(&srv).await;
    send(
        &mut ws,
        "SEND\ndestination:/app/orders.create\ncontent-type:application/json\nreceipt:r\n\n{\"item\":7}\0",
    )
    .await;
    let f = frame(&mut ws).await.unwrap();
    assert!(f.starts_with("RECEIPT"), "{f}");
    send(
        &mut ws,
        "SEND\ndestination:/app/orders.echo\nreceipt:e\n\nplain\0",
    )
    .await;
    let f = frame(&mut ws).await.unwrap();
    assert!(f.starts_with("RECEIPT"), "{f}");
    let page = get_json(&srv, "/api/v1/topics/orders.created/events?after=0").await;
    assert_eq!(
        page["events"][0]["data"],
        json!({"accepted": {"item": 7}, "status": "created"})
    );
    let page = get_json(&srv, "/api/v1/topics/orders.echoed/events?after=0").await;
    assert_eq!(page["events"][0]["data"], "plain");
    send(&mut ws, "SEND\ndestination:/app/unknown\n\nx\0").await;
    expect_error_and_close(&mut ws, "application destination").await;
    srv.stop().await;
}

#[tokio::test]
async fn credentials_and_forbidden_destinations() {
    let srv = TestServer::spawn_with(|c| {
        c.auth.keys.push(herald_server::config::AuthKeySection {
            key: "k-limited".into(),
            publish: vec!["allowed.>".into()],
            subscribe: vec!["allowed.>".into()],
            admin: false,
        });
    })
    .await;
    // No credentials in CONNECT: refused.
    let mut ws = connect(&srv).await;
    send(&mut ws, "CONNECT\naccept-version:1.2\nhost:h\n\n\0").await;
    expect_error_and_close(&mut ws, "credentials").await;
    // A wrong key: refused.
    let mut ws = connect(&srv).await;
    send(
        &mut ws,
        "CONNECT\naccept-version:1.2\nhost:h\nlogin:x\npasscode:nope\n\n\0",
    )
    .await;
    expect_error_and_close(&mut ws, "invalid").await;
    // The key as passcode: allowed where its patterns say, ERROR elsewhere.
    let login = "CONNECT\naccept-version:1.2\nhost:h\nlogin:x\npasscode:k-limited\n\n\0";
    let mut ws = connect(&srv).await;
    send(&mut ws, login).await;
    assert!(frame(&mut ws).await.unwrap().starts_with("CONNECTED"));
    send(
        &mut ws,
        "SEND\ndestination:/topic/allowed.a\nreceipt:ok\n\nx\0",
    )
    .await;
    assert!(frame(&mut ws).await.unwrap().starts_with("RECEIPT"));
    send(&mut ws, "SEND\ndestination:/topic/secret.a\n\nx\0").await;
    expect_error_and_close(&mut ws, "not allowed").await;
    let mut ws = connect(&srv).await;
    send(&mut ws, login).await;
    assert!(frame(&mut ws).await.unwrap().starts_with("CONNECTED"));
    send(&mut ws, "SUBSCRIBE\nid:1\ndestination:/topic/>\n\n\0").await;
    expect_error_and_close(&mut ws, "not allowed").await;
    srv.stop().await;
}
