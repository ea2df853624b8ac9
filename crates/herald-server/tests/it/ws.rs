//! WebSocket JSON door (SPEC 6.1).

use futures::{SinkExt, StreamExt};
use herald_test_support::TestServer;
use serde_json::json;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};

use crate::util::{
    Sse, T, Ws, id_of, publish_data, sse_open, ws_call, ws_connect, ws_frame, ws_recv, ws_send,
};

/// Reads until a close frame (skipping text) and returns its code.
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match ws_frame(ws).await {
            Some(Message::Close(Some(frame))) => return u16::from(frame.code),
            Some(Message::Close(None)) => panic!("close frame without a code"),
            Some(Message::Text(_)) => continue,
            Some(other) => panic!("unexpected frame {other:?}"),
            None => panic!("connection ended without a close frame"),
        }
    }
}

#[tokio::test]
async fn subscribe_then_events() {
    let srv = TestServer::spawn().await;
    let mut ws = ws_connect(&srv).await;
    let reply = ws_call(
        &mut ws,
        json!({"type": "subscribe", "topic": "chat.*", "ref": "s1"}),
    )
    .await;
    assert_eq!(
        reply,
        json!({"type": "subscribed", "topic": "chat.*", "ref": "s1"})
    );
    // `ref` may be any JSON value.
    let reply = ws_call(
        &mut ws,
        json!({"type": "subscribe", "topic": "news", "ref": {"n": [1]}}),
    )
    .await;
    assert_eq!(reply["ref"], json!({"n": [1]}));
    let reply = ws_call(&mut ws, json!({"type": "subscribe", "topic": "quiet"})).await;
    assert_eq!(reply, json!({"type": "subscribed", "topic": "quiet"}));

    let a = crate::util::publish(
        &srv,
        "chat.room1",
        json!({"event": "said", "data": {"text": "hi"}}),
    )
    .await;
    publish_data(&srv, "chat.room1.thread", json!("not matched")).await;
    let b = publish_data(&srv, "news", json!("headline")).await;
    let ev = ws_recv(&mut ws).await;
    let obj = ev.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["data", "event", "id", "time", "topic", "type"]);
    assert_eq!(ev["type"], "event");
    assert_eq!(ev["id"], a["id"]);
    assert_eq!(ev["topic"], "chat.room1");
    assert_eq!(ev["event"], "said");
    assert_eq!(ev["data"], json!({"text": "hi"}));
    assert_eq!(ev["time"], a["time"]);
    let ev = ws_recv(&mut ws).await;
    assert_eq!(id_of(&ev["id"]), b);
    assert_eq!(ev["data"], "headline");
    ws.close(None).await.ok();
    srv.stop().await;
}

#[tokio::test]
async fn subscribe_after_resumes() {
    let srv = TestServer::spawn().await;
    for i in 1..=5 {
        publish_data(&srv, "r", json!(i)).await;
    }
    let mut ws = ws_connect(&srv).await;
    let reply = ws_call(
        &mut ws,
        json!({"type": "subscribe", "topic": "r", "after": "2"}),
    )
    .await;
    assert_eq!(reply["type"], "subscribed");
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(id_of(&ws_recv(&mut ws).await["id"]));
    }
    assert_eq!(got, [3, 4, 5]);
    let id = publish_data(&srv, "r", json!(6)).await;
    assert_eq!(id_of(&ws_recv(&mut ws).await["id"]), id);
    // A numeric cursor is accepted too, and `now` skips history.
    let mut ws2 = ws_connect(&srv).await;
    ws_call(
        &mut ws2,
        json!({"type": "subscribe", "topic": "r", "after": 5}),
    )
    .await;
    assert_eq!(id_of(&ws_recv(&mut ws2).await["id"]), 6);
    let mut ws3 = ws_connect(&srv).await;
    ws_call(
        &mut ws3,
        json!({"type": "subscribe", "topic": "r", "after": "now"}),
    )
    .await;
    let id = publish_data(&srv, "r", json!(7)).await;
    assert_eq!(id_of(&ws_recv(&mut ws3).await["id"]), id);
    // A bad cursor is a bad request.
    let reply = ws_call(
        &mut ws3,
        json!({"type": "subscribe", "topic": "x", "after": "abc"}),
    )
    .await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "bad_request");
    srv.stop().await;
}

#[tokio::test]
async fn unsubscribe_stops_events() {
    let srv = TestServer::spawn().await;
    let mut ws = ws_connect(&srv).await;
    ws_call(&mut ws, json!({"type": "subscribe", "topic": "a"})).await;
    ws_call(&mut ws, json!({"type": "subscribe", "topic": "b"})).await;
    let reply = ws_call(
        &mut ws,
        json!({"type": "unsubscribe", "topic": "a", "ref": 9}),
    )
    .await;
    assert_eq!(
        reply,
        json!({"type": "unsubscribed", "topic": "a", "ref": 9})
    );
    publish_data(&srv, "a", json!("dropped")).await;
    let b = publish_data(&srv, "b", json!("kept")).await;
    // The next thing on the socket is the `b` event: nothing from `a` came before it.
    let ev = ws_recv(&mut ws).await;
    assert_eq!(id_of(&ev["id"]), b);
    // And nothing after it either: a ping's pong is next.
    publish_data(&srv, "a", json!("dropped too")).await;
    let pong = ws_call(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");

    let reply = ws_call(
        &mut ws,
        json!({"type": "unsubscribe", "topic": "never", "ref": "u"}),
    )
    .await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "not_found");
    assert_eq!(reply["ref"], "u");
    assert!(reply["message"].is_string());
    srv.stop().await;
}

#[tokio::test]
async fn publish_reaches_an_sse_subscriber() {
    let srv = TestServer::spawn().await;
    let mut sse = Sse::new(sse_open(&srv, "/api/v1/topics/from.ws/events", &[]).await);
    let mut ws = ws_connect(&srv).await;
    let reply = ws_call(
        &mut ws,
        json!({"type": "publish", "topic": "from.ws", "event": "greeting", "data": {"x": 1}, "ref": 3}),
    )
    .await;
    assert_eq!(reply["type"], "published");
    assert_eq!(reply["ref"], 3);
    let id = id_of(&reply["id"]);
    let ev = sse.event().await;
    assert_eq!(ev.id, Some(id.to_string()));
    assert_eq!(ev.event, "greeting");
    assert_eq!(ev.data, r#"{"x":1}"#);

    // Idempotency keys work over WebSocket too.
    let first = ws_call(
        &mut ws,
        json!({"type": "publish", "topic": "from.ws", "data": 1, "key": "once"}),
    )
    .await;
    let again = ws_call(
        &mut ws,
        json!({"type": "publish", "topic": "from.ws", "data": 1, "key": "once"}),
    )
    .await;
    assert_eq!(first["id"], again["id"]);

    // Invalid publishes are errors on a connection that stays open.
    for bad in [
        json!({"type": "publish", "topic": "bad topic", "data": 1}),
        json!({"type": "publish", "topic": "ok", "event": "has space", "data": 1}),
        json!({"type": "publish", "topic": "ok"}),
    ] {
        let reply = ws_call(&mut ws, bad).await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], "bad_request", "{reply}");
    }
    let pong = ws_call(&mut ws, json!({"type": "ping", "ref": "p"})).await;
    assert_eq!(pong, json!({"type": "pong", "ref": "p"}));
    drop(sse);
    srv.stop().await;
}

#[tokio::test]
async fn publish_over_max_event_bytes_is_too_large() {
    let srv = TestServer::spawn_with(|raw| raw.limits.max_event_bytes = 32).await;
    let mut ws = ws_connect(&srv).await;
    let reply = ws_call(
        &mut ws,
        json!({"type": "publish", "topic": "t", "data": "x".repeat(100)}),
    )
    .await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "too_large");
    let pong = ws_call(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    srv.stop().await;
}

#[tokio::test]
async fn ping_pong() {
    let srv = TestServer::spawn().await;
    let mut ws = ws_connect(&srv).await;
    assert_eq!(
        ws_call(&mut ws, json!({"type": "ping"})).await,
        json!({"type": "pong"})
    );
    assert_eq!(
        ws_call(&mut ws, json!({"type": "ping", "ref": [1, "a"]})).await,
        json!({"type": "pong", "ref": [1, "a"]})
    );
    srv.stop().await;
}

#[tokio::test]
async fn malformed_messages_get_errors_and_the_connection_stays_open() {
    let srv = TestServer::spawn().await;
    let mut ws = ws_connect(&srv).await;
    for bad in [
        Message::text("not json"),
        Message::text("{\"type\":\"subscribe\"}"),
        Message::text("{\"type\":\"dance\",\"ref\":1}"),
        Message::text("{\"ref\":2}"),
        Message::text("[1,2]"),
        Message::binary(vec![1u8, 2, 3]),
    ] {
        timeout(T, ws.send(bad)).await.unwrap().unwrap();
        let reply = ws_recv(&mut ws).await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], "bad_request", "{reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // The `ref` is echoed when it could be read.
    ws_send(&mut ws, json!({"type": "dance", "ref": "r"})).await;
    assert_eq!(ws_recv(&mut ws).await["ref"], "r");
    // Still open, still working.
    ws_call(&mut ws, json!({"type": "subscribe", "topic": "ok"})).await;
    let id = publish_data(&srv, "ok", json!(1)).await;
    assert_eq!(id_of(&ws_recv(&mut ws).await["id"]), id);
    srv.stop().await;
}

#[tokio::test]
async fn invalid_pattern_is_bad_request() {
    let srv = TestServer::spawn().await;
    let mut ws = ws_connect(&srv).await;
    for topic in ["a..b", "a.>.b", "", "sp ace", "a.b>"] {
        let reply = ws_call(
            &mut ws,
            json!({"type": "subscribe", "topic": topic, "ref": topic}),
        )
        .await;
        assert_eq!(reply["type"], "error", "{topic}: {reply}");
        assert_eq!(reply["code"], "bad_request", "{topic}: {reply}");
        assert_eq!(reply["ref"], topic);
    }
    assert_eq!(
        ws_call(&mut ws, json!({"type": "ping"})).await["type"],
        "pong"
    );
    srv.stop().await;
}

#[tokio::test]
async fn too_many_garbage_messages_close_with_1008() {
    let srv = TestServer::spawn().await;
    let mut ws = ws_connect(&srv).await;
    // Good messages reset the count: 9 bad, 1 good, 9 bad keep the connection open.
    for _ in 0..9 {
        ws_send(&mut ws, json!("garbage")).await;
        assert_eq!(ws_recv(&mut ws).await["code"], "bad_request");
    }
    assert_eq!(
        ws_call(&mut ws, json!({"type": "ping"})).await["type"],
        "pong"
    );
    for _ in 0..9 {
        ws.send(Message::text("{{{")).await.unwrap();
        assert_eq!(ws_recv(&mut ws).await["code"], "bad_request");
    }
    // The tenth in a row closes the connection.
    ws.send(Message::text("{{{")).await.unwrap();
    assert_eq!(close_code(&mut ws).await, u16::from(CloseCode::Policy));
    srv.stop().await;
}

#[tokio::test]
async fn message_over_max_body_bytes_closes_with_1009() {
    let srv = TestServer::spawn_with(|raw| raw.limits.max_body_bytes = 4096).await;
    let mut ws = ws_connect(&srv).await;
    // Just under the limit is fine.
    let ok = json!({"type": "ping", "ref": "x".repeat(3000)});
    assert_eq!(ws_call(&mut ws, ok).await["type"], "pong");
    let big = json!({"type": "publish", "topic": "t", "data": "x".repeat(10_000)});
    // The server may close before it has read the whole frame, so the send may fail.
    let _ = timeout(T, ws.send(Message::text(big.to_string()))).await;
    assert_eq!(close_code(&mut ws).await, u16::from(CloseCode::Size));
    // Nothing was published.
    let page = crate::util::get_json(&srv, "/api/v1/topics/t/events?after=0").await;
    assert_eq!(page["events"], json!([]));
    srv.stop().await;
}

#[tokio::test]
async fn too_many_subscriptions_is_too_large() {
    let srv = TestServer::spawn_with(|raw| raw.limits.max_subscriptions_per_connection = 2).await;
    let mut ws = ws_connect(&srv).await;
    assert_eq!(
        ws_call(&mut ws, json!({"type": "subscribe", "topic": "a"})).await["type"],
        "subscribed"
    );
    assert_eq!(
        ws_call(&mut ws, json!({"type": "subscribe", "topic": "b.>"})).await["type"],
        "subscribed"
    );
    // Subscribing again to the same pattern is not a new subscription.
    assert_eq!(
        ws_call(&mut ws, json!({"type": "subscribe", "topic": "a"})).await["type"],
        "subscribed"
    );
    let reply = ws_call(
        &mut ws,
        json!({"type": "subscribe", "topic": "c", "ref": 1}),
    )
    .await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "too_large");
    assert_eq!(reply["ref"], 1);
    // After an unsubscribe there is room again.
    ws_call(&mut ws, json!({"type": "unsubscribe", "topic": "a"})).await;
    assert_eq!(
        ws_call(&mut ws, json!({"type": "subscribe", "topic": "c"})).await["type"],
        "subscribed"
    );
    // The refused subscription never delivers.
    publish_data(&srv, "a", json!(1)).await;
    let c = publish_data(&srv, "c", json!(2)).await;
    assert_eq!(id_of(&ws_recv(&mut ws).await["id"]), c);
    srv.stop().await;
}

#[tokio::test]
async fn server_sends_websocket_pings() {
    let srv = TestServer::spawn_with(|raw| raw.ws.ping_interval = "200ms".into()).await;
    let mut ws = ws_connect(&srv).await;
    let mut pings = 0;
    timeout(T, async {
        // tungstenite answers each ping with a pong on the next read, so the connection
        // stays open across several intervals.
        while pings < 3 {
            match ws.next().await {
                Some(Ok(Message::Ping(_))) => pings += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("no WebSocket pings from the server");
    assert_eq!(
        ws_call(&mut ws, json!({"type": "ping"})).await["type"],
        "pong"
    );
    srv.stop().await;
}

#[tokio::test]
async fn shutdown_closes_websockets_with_going_away() {
    let srv = TestServer::spawn().await;
    let mut ws = ws_connect(&srv).await;
    ws_call(&mut ws, json!({"type": "subscribe", "topic": "a"})).await;
    let stop = tokio::spawn(srv.stop());
    assert_eq!(close_code(&mut ws).await, u16::from(CloseCode::Away));
    drop(ws);
    timeout(T, stop).await.unwrap().unwrap();
}
