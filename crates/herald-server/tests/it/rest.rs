//! REST door: publish one, batch publish, topics list, and every error as problem+json.

use herald_test_support::TestServer;
use serde_json::{Value, json};

use crate::util::{
    assert_problem, get_json, id_of, publish, publish_data, sse_open, sse_open_with,
};

#[tokio::test]
async fn publish_one_returns_a_receipt() {
    let srv = TestServer::spawn().await;
    let r = srv
        .http()
        .post(srv.url("/api/v1/topics/orders.eu.created/events"))
        .json(&json!({"data": {"n": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers().contains_key("x-request-id"));
    assert!(!r.headers().contains_key("idempotent-replayed"));
    let body: Value = r.json().await.unwrap();
    let obj = body.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["event", "id", "time", "topic"]);
    assert_eq!(body["topic"], "orders.eu.created");
    assert_eq!(body["event"], "message", "default event type");
    assert!(id_of(&body["id"]) >= 1);
    let time = body["time"].as_str().unwrap();
    assert!(
        time.len() >= 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
        "RFC 3339 UTC: {time}"
    );

    let second = publish(
        &srv,
        "orders.eu.created",
        json!({"event": "created", "data": 2}),
    )
    .await;
    assert_eq!(second["event"], "created");
    assert!(id_of(&second["id"]) > id_of(&body["id"]));
    srv.stop().await;
}

#[tokio::test]
async fn any_json_data_is_stored_compacted() {
    let srv = TestServer::spawn().await;
    let http = srv.http();
    let values = [
        json!("a string"),
        json!(42),
        json!(-1.5),
        json!(null),
        json!([1, "two", {"three": 3}]),
        json!(true),
    ];
    for v in &values {
        publish_data(&srv, "kinds", v.clone()).await;
    }
    // Whitespace inside `data` is not kept: the stored (and delivered) form is compact.
    let r = http
        .post(srv.url("/api/v1/topics/kinds/events"))
        .header("content-type", "application/json")
        .body("{ \"data\" :  { \"a\" : [ 1 ,  2 ] ,\n \"b\" : \"x y\" } }")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let page = get_json(&srv, "/api/v1/topics/kinds/events?after=0").await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), values.len() + 1);
    for (ev, v) in events.iter().zip(&values) {
        assert_eq!(&ev["data"], v);
        assert_eq!(ev["topic"], "kinds");
        assert_eq!(ev["event"], "message");
    }
    assert_eq!(
        events[values.len()]["data"],
        json!({"a": [1, 2], "b": "x y"})
    );

    // The SSE payload shows the exact stored text.
    let id = id_of(&events[values.len() - 1]["id"]);
    let mut sse = crate::util::Sse::new(
        sse_open(
            &srv,
            &format!("/api/v1/topics/kinds/events?after={id}"),
            &[],
        )
        .await,
    );
    let ev = sse.event().await;
    assert_eq!(ev.data, r#"{"a":[1,2],"b":"x y"}"#);
    drop(sse);
    srv.stop().await;
}

#[tokio::test]
async fn idempotency_key_replays_the_first_event() {
    let srv = TestServer::spawn().await;
    let http = srv.http();
    let send = || {
        http.post(srv.url("/api/v1/topics/pay/events"))
            .json(&json!({"data": {"amount": 5}, "key": "k-1"}))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(!first.headers().contains_key("idempotent-replayed"));
    let first: Value = first.json().await.unwrap();
    let again = send().await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    // A different key is a different event.
    let other = publish(&srv, "pay", json!({"data": 1, "key": "k-2"})).await;
    assert_ne!(other["id"], first["id"]);
    let page = get_json(&srv, "/api/v1/topics/pay/events?after=0").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2, "{page}");
    srv.stop().await;
}

#[tokio::test]
async fn batch_publish_assigns_increasing_ids() {
    let srv = TestServer::spawn().await;
    let r = srv
        .http()
        .post(srv.url("/api/v1/events"))
        .json(&json!([
            {"topic": "b.one", "data": 1},
            {"topic": "b.two", "event": "second", "data": "two"},
            {"topic": "b.one", "data": {"three": 3}},
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let receipts: Vec<Value> = r.json().await.unwrap();
    assert_eq!(receipts.len(), 3);
    let ids: Vec<u64> = receipts.iter().map(|r| id_of(&r["id"])).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(receipts[0]["topic"], "b.one");
    assert_eq!(receipts[1]["topic"], "b.two");
    assert_eq!(receipts[1]["event"], "second");
    assert_eq!(receipts[2]["event"], "message");
    let page = get_json(&srv, "/api/v1/topics/b.%3E/events?after=0").await;
    let got: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| id_of(&e["id"]))
        .collect();
    assert_eq!(got, ids);
    srv.stop().await;
}

#[tokio::test]
async fn batch_is_all_or_nothing() {
    let srv = TestServer::spawn().await;
    let http = srv.http();
    let bad_items = [
        json!({"topic": "b.ok"}),                            // no data
        json!({"topic": "bad topic", "data": 1}),            // invalid topic
        json!({"topic": "b.ok", "event": "a b", "data": 1}), // invalid event type
        json!({"data": 1}),                                  // no topic
    ];
    for bad in bad_items {
        let r = http
            .post(srv.url("/api/v1/events"))
            .json(&json!([
                {"topic": "b.ok", "data": 1},
                {"topic": "b.ok", "data": 2},
                bad,
            ]))
            .send()
            .await
            .unwrap();
        let body = assert_problem(r, 422).await;
        assert!(
            body["detail"].as_str().unwrap().contains("[2]"),
            "detail names the item: {body}"
        );
    }
    let page = get_json(&srv, "/api/v1/topics/b.%3E/events?after=0").await;
    assert_eq!(page["events"], json!([]), "nothing stored");
    let topics = get_json(&srv, "/api/v1/topics").await;
    assert_eq!(topics, json!([]));
    // The next good publish gets the first id: the failed batches consumed none.
    let id = publish_data(&srv, "b.ok", json!(1)).await;
    assert_eq!(id, 1);
    srv.stop().await;
}

#[tokio::test]
async fn topics_list_with_prefix() {
    let srv = TestServer::spawn().await;
    publish_data(&srv, "orders.eu", json!(1)).await;
    publish_data(&srv, "orders.us", json!(2)).await;
    let last_eu = publish_data(&srv, "orders.eu", json!(3)).await;
    publish_data(&srv, "users.1", json!(4)).await;

    let all = get_json(&srv, "/api/v1/topics").await;
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topic"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["orders.eu", "orders.us", "users.1"]);

    let orders = get_json(&srv, "/api/v1/topics?prefix=orders.").await;
    assert_eq!(
        orders,
        json!([
            {"topic": "orders.eu", "last_id": last_eu.to_string(), "count": 2},
            {"topic": "orders.us", "last_id": "2", "count": 1},
        ])
    );
    let none = get_json(&srv, "/api/v1/topics?prefix=nothing").await;
    assert_eq!(none, json!([]));
    srv.stop().await;
}

#[tokio::test]
async fn percent_encoded_patterns_in_the_path() {
    let srv = TestServer::spawn().await;
    publish_data(&srv, "orders.eu", json!(1)).await;
    publish_data(&srv, "orders.eu.created", json!(2)).await;
    publish_data(&srv, "other", json!(3)).await;
    let ids = |page: &Value| -> Vec<u64> {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| id_of(&e["id"]))
            .collect()
    };
    let tail = get_json(&srv, "/api/v1/topics/orders.%3E/events").await;
    assert_eq!(ids(&tail), [1, 2]);
    let tail = get_json(&srv, "/api/v1/topics/orders.%3e/events?after=1").await;
    assert_eq!(ids(&tail), [2]);
    let star = get_json(&srv, "/api/v1/topics/orders.%2A/events").await;
    assert_eq!(ids(&star), [1]);
    let all = get_json(&srv, "/api/v1/topics/%3E/events").await;
    assert_eq!(ids(&all), [1, 2, 3]);
    // A percent-encoded topic for a publish.
    let r = publish(&srv, "orders%2Eeu", json!({"data": 4})).await;
    assert_eq!(r["topic"], "orders.eu");
    srv.stop().await;
}

#[tokio::test]
async fn bad_requests_are_400_problems() {
    let srv = TestServer::spawn().await;
    let http = srv.http();
    publish_data(&srv, "t", json!(1)).await;

    // Malformed JSON.
    let r = http
        .post(srv.url("/api/v1/topics/t/events"))
        .header("content-type", "application/json")
        .body("{\"data\": ")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400).await;
    let r = http
        .post(srv.url("/api/v1/events"))
        .header("content-type", "application/json")
        .body("[{]")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400).await;

    // Invalid topics and patterns in the URL.
    for path in [
        "/api/v1/topics/bad..topic/events",
        "/api/v1/topics/bad%20topic/events",
        "/api/v1/topics/orders.%3E/events", // a pattern is not a topic
        "/api/v1/topics/a.%3E.b/events",
    ] {
        let r = http
            .post(srv.url(path))
            .json(&json!({"data": 1}))
            .send()
            .await
            .unwrap();
        assert_problem(r, 400).await;
    }
    for path in [
        "/api/v1/topics/bad..topic/events",
        "/api/v1/topics/a.%3E.b/events",
        "/api/v1/topics/a%24b/events",
        "/api/v1/subscribe?topic=a..b",
        "/api/v1/subscribe",
    ] {
        let r = http.get(srv.url(path)).send().await.unwrap();
        assert_problem(r, 400).await;
    }

    // Bad query parameters.
    for q in [
        "after=abc",
        "after=-1",
        "after=",
        "limit=0",
        "limit=1001",
        "limit=ten",
        "wait=61",
        "wait=-1",
        "wait=soon",
    ] {
        let r = http
            .get(srv.url(&format!("/api/v1/topics/t/events?{q}")))
            .send()
            .await
            .unwrap();
        let body = assert_problem(r, 400).await;
        assert!(!body["detail"].as_str().unwrap().is_empty(), "{q}");
    }
    // A bad cursor on an SSE request too.
    let r = http
        .get(srv.url("/api/v1/topics/t/events"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "abc")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400).await;
    // The limits themselves are accepted.
    get_json(&srv, "/api/v1/topics/t/events?limit=1").await;
    get_json(&srv, "/api/v1/topics/t/events?limit=1000&after=0").await;
    srv.stop().await;
}

#[tokio::test]
async fn wrong_media_type_is_415() {
    let srv = TestServer::spawn().await;
    let http = srv.http();
    let r = http
        .post(srv.url("/api/v1/topics/t/events"))
        .header("content-type", "text/plain")
        .body("{\"data\": 1}")
        .send()
        .await
        .unwrap();
    assert_problem(r, 415).await;
    let r = http
        .post(srv.url("/api/v1/events"))
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_problem(r, 415).await;
    // `+json` media types are JSON.
    let r = http
        .post(srv.url("/api/v1/topics/t/events"))
        .header("content-type", "application/vnd.herald+json; charset=utf-8")
        .body("{\"data\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    srv.stop().await;
}

#[tokio::test]
async fn invalid_events_are_422() {
    let srv = TestServer::spawn().await;
    let http = srv.http();
    for body in [
        json!({}),
        json!({"event": "x"}),
        json!({"data": 1, "event": "has space"}),
        json!({"data": 1, "event": "line\nbreak"}),
        json!({"data": 1, "event": ""}),
        json!({"data": 1, "event": "x".repeat(129)}),
        json!({"data": 1, "event": 5}),
        json!({"data": 1, "key": 5}),
        json!([1, 2]),
        json!("just a string"),
    ] {
        let r = http
            .post(srv.url("/api/v1/topics/t/events"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_problem(r, 422).await;
    }
    // A batch that is not an array of objects.
    let r = http
        .post(srv.url("/api/v1/events"))
        .json(&json!({"topic": "t", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 422).await;
    let page = get_json(&srv, "/api/v1/topics/t/events?after=0").await;
    assert_eq!(page["events"], json!([]));
    srv.stop().await;
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_is_405() {
    let srv = TestServer::spawn().await;
    let http = srv.http();
    for path in ["/nope", "/api/v1/nope", "/api/v1/topics/t/other"] {
        let r = http.get(srv.url(path)).send().await.unwrap();
        assert_problem(r, 404).await;
    }
    let r = http
        .delete(srv.url("/api/v1/topics/t/events"))
        .send()
        .await
        .unwrap();
    assert_problem(r, 405).await;
    let r = http.put(srv.url("/api/v1/events")).send().await.unwrap();
    assert_problem(r, 405).await;
    let r = http.post(srv.url("/healthz")).send().await.unwrap();
    assert_problem(r, 405).await;
    srv.stop().await;
}

#[tokio::test]
async fn every_response_carries_x_request_id() {
    let srv = TestServer::spawn().await;
    let http = srv.http();
    let mut seen = Vec::new();
    let requests = [
        http.get(srv.url("/healthz")),
        http.get(srv.url("/metrics")),
        http.get(srv.url("/nope")),
        http.get(srv.url("/api/v1/topics")),
        http.get(srv.url("/api/v1/topics/t/events?after=x")),
        http.post(srv.url("/api/v1/topics/t/events"))
            .json(&json!({"data": 1})),
        http.post(srv.url("/api/v1/topics/t/events")).body("x"),
    ];
    for req in requests {
        let r = req.send().await.unwrap();
        let id = r
            .headers()
            .get("x-request-id")
            .unwrap_or_else(|| panic!("no x-request-id on {} {}", r.status(), r.url()))
            .to_str()
            .unwrap()
            .to_owned();
        assert!(!id.is_empty());
        seen.push(id);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 7, "ids are unique per request");

    // Echoed when the client sends one, on success, error and streaming responses.
    for (req, want) in [
        (http.get(srv.url("/healthz")), 200),
        (http.get(srv.url("/nope")), 404),
        (
            http.post(srv.url("/api/v1/topics/t/events"))
                .json(&json!({"data": 1})),
            201,
        ),
    ] {
        let r = req
            .header("x-request-id", "my-trace-42")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want);
        assert_eq!(r.headers()["x-request-id"], "my-trace-42");
    }
    let sse = sse_open_with(
        &http,
        &srv,
        "/api/v1/topics/t/events",
        &[("x-request-id", "sse-7")],
    )
    .await;
    assert_eq!(sse.headers()["x-request-id"], "sse-7");
    drop(sse);
    srv.stop().await;
}

/// Sends `raw` on one connection and reads until the server closes it.
async fn exchange(srv: &TestServer, raw: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the server did not close the connection")
        .unwrap();
    String::from_utf8(out).unwrap()
}

fn publish_request(topic: &str, body: &str, extra: &str) -> String {
    format!(
        "POST /api/v1/topics/{topic}/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
}

/// Plain single publishes are served without hyper (`h1pub`); pipelined on one connection,
/// followed by other requests (which hyper takes over with the bytes already read), each
/// gets the answer the router gives, with the same headers.
#[tokio::test]
async fn publishes_and_other_requests_share_a_connection() {
    let srv = TestServer::spawn().await;
    let raw = [
        publish_request("pipe.a", r#"{"data":1}"#, ""),
        publish_request(
            "pipe.a",
            r#"{"data":2,"key":"k1"}"#,
            "X-Request-Id: mine\r\n",
        ),
        publish_request("pipe.a", r#"{"data":3,"key":"k1"}"#, ""),
        publish_request("pipe.a", r#"{"dat":4}"#, ""),
        // A query string: served by hyper and the router from here on.
        publish_request("pipe.a", r#"{"data":5}"#, "").replacen(
            "/events ",
            "/events?via=hyper ",
            1,
        ),
        "GET /api/v1/topics?prefix=pipe. HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
    ]
    .concat();
    let out = exchange(&srv, raw.as_bytes()).await;
    let responses: Vec<&str> = out.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(responses.len(), 6, "{out}");
    let header_names = |r: &str| -> Vec<String> {
        let head = r.split("\r\n\r\n").next().unwrap();
        head.lines()
            .skip(1)
            .map(|l| l.split(':').next().unwrap().to_ascii_lowercase())
            .collect()
    };
    for (i, status) in [
        (0, "201"),
        (1, "201"),
        (2, "201"),
        (3, "422"),
        (4, "201"),
        (5, "200"),
    ] {
        assert!(responses[i].starts_with(status), "{i}: {}", responses[i]);
    }
    let plain = ["content-type", "x-request-id", "content-length", "date"];
    assert_eq!(header_names(responses[0]), plain);
    assert!(responses[0].contains("\"id\":\"1\""), "{}", responses[0]);
    assert!(
        responses[1].contains("x-request-id: mine\r\n"),
        "{}",
        responses[1]
    );
    assert!(responses[1].contains("\"id\":\"2\""));
    // The same key again: the first event, marked as replayed.
    assert_eq!(
        header_names(responses[2]),
        [
            "content-type",
            "idempotent-replayed",
            "x-request-id",
            "content-length",
            "date"
        ]
    );
    assert!(responses[2].contains("\"id\":\"2\""));
    assert!(responses[3].contains("application/problem+json"));
    assert!(responses[3].contains("`data` is required"));
    // hyper's answer to the same kind of request has the same headers.
    assert_eq!(header_names(responses[4]), plain);
    assert!(responses[4].contains("\"id\":\"3\""), "{}", responses[4]);
    assert!(responses[5].contains(r#""count":3"#), "{}", responses[5]);
    srv.stop().await;
}

/// API keys, permissions and the body limit apply to the publishes served without hyper.
#[tokio::test]
async fn publishes_without_hyper_keep_auth_and_limits() {
    let srv = TestServer::spawn_with(|c| {
        c.auth.keys = vec![herald_server::config::AuthKeySection {
            key: "k-pub".into(),
            publish: vec!["ok.>".into()],
            subscribe: vec![],
            admin: false,
        }];
        c.limits.max_body_bytes = 64;
    })
    .await;
    let bearer = "Authorization: Bearer k-pub\r\n";
    let raw = [
        publish_request("ok.a", r#"{"data":1}"#, bearer),
        publish_request("no.a", r#"{"data":1}"#, bearer),
        publish_request("ok.a", r#"{"data":1}"#, ""),
        publish_request("ok.a", r#"{"data":1}"#, "Authorization: Bearer wrong\r\n"),
        publish_request("ok.a", r#"{"data":2}"#, bearer),
        // Over the body limit: hyper and the router answer.
        publish_request(
            "ok.a",
            &format!(r#"{{"data":"{}"}}"#, "x".repeat(80)),
            &format!("{bearer}Connection: close\r\n"),
        ),
    ]
    .concat();
    let out = exchange(&srv, raw.as_bytes()).await;
    let statuses: Vec<&str> = out.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect();
    assert_eq!(
        statuses,
        ["201", "403", "401", "401", "201", "413"],
        "{out}"
    );
    srv.stop().await;
}
