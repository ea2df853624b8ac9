//! Long polling and history pages (SPEC 5).

use std::time::Duration;

use herald_test_support::TestServer;
use serde_json::{Value, json};
use tokio::time::timeout;

use crate::util::{T, get_json, id_of, publish_data, range};

fn ids(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {page}"))
        .iter()
        .map(|e| id_of(&e["id"]))
        .collect()
}

#[tokio::test]
async fn history_pages() {
    let srv = TestServer::spawn().await;
    for i in 1..=10 {
        publish_data(&srv, "p.a", json!(i)).await;
        publish_data(&srv, "p.b", json!(i)).await;
    }
    // 20 events, ids 1..=20, odd ones on p.a.
    let page = get_json(&srv, "/api/v1/topics/p.a/events?limit=3").await;
    assert_eq!(ids(&page), [15, 17, 19], "newest `limit`, in id order");
    assert_eq!(page["next"], "19");
    let ev = &page["events"][0];
    assert_eq!(ev["topic"], "p.a");
    assert_eq!(ev["event"], "message");
    assert_eq!(ev["data"], 8);
    assert!(ev["time"].is_string());

    let page = get_json(&srv, "/api/v1/topics/p.a/events?after=3&limit=3").await;
    assert_eq!(ids(&page), [5, 7, 9]);
    assert_eq!(page["next"], "9");
    let page = get_json(&srv, "/api/v1/topics/p.a/events?after=9&limit=3").await;
    assert_eq!(ids(&page), [11, 13, 15]);
    assert_eq!(page["next"], "15");

    // Following `next` walks the whole history with no gap and no duplicate.
    let mut after = "0".to_string();
    let mut all = Vec::new();
    loop {
        let page = get_json(
            &srv,
            &format!("/api/v1/topics/p.%3E/events?after={after}&limit=7"),
        )
        .await;
        let got = ids(&page);
        if got.is_empty() {
            assert_eq!(
                page["next"],
                after.as_str(),
                "an empty page keeps the cursor"
            );
            break;
        }
        all.extend(got);
        after = page["next"].as_str().unwrap().to_owned();
    }
    assert_eq!(all, range(1, 20));

    // The default limit is 100; without events the page is empty.
    let page = get_json(&srv, "/api/v1/topics/p.%3E/events").await;
    assert_eq!(ids(&page), range(1, 20));
    let page = get_json(&srv, "/api/v1/topics/nothing/events").await;
    assert_eq!(page["events"], json!([]));
    assert!(page["next"].is_string());

    // Several patterns at once.
    let page = get_json(
        &srv,
        "/api/v1/subscribe?topic=p.b&topic=none&after=14&limit=2",
    )
    .await;
    assert_eq!(ids(&page), [16, 18]);
    srv.stop().await;
}

#[tokio::test]
async fn wait_returns_when_an_event_arrives() {
    let srv = TestServer::spawn().await;
    let head = publish_data(&srv, "lp", json!("old")).await;
    let url = srv.url(&format!("/api/v1/topics/lp/events?after={head}&wait=30"));
    let http = srv.http();
    let poll = tokio::spawn(async move {
        let r = http.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // An event on another topic does not end the wait.
    publish_data(&srv, "elsewhere", json!(0)).await;
    let id = publish_data(&srv, "lp", json!("new")).await;
    // Well before the 30 s wait runs out.
    let page = timeout(Duration::from_secs(10), poll)
        .await
        .expect("the long poll did not answer when the event arrived")
        .unwrap();
    assert_eq!(ids(&page), [id]);
    assert_eq!(page["events"][0]["data"], "new");
    assert_eq!(page["next"], id.to_string());
    srv.stop().await;
}

#[tokio::test]
async fn wait_with_events_already_there_answers_at_once() {
    let srv = TestServer::spawn().await;
    publish_data(&srv, "lp", json!(1)).await;
    publish_data(&srv, "lp", json!(2)).await;
    let page = timeout(
        Duration::from_secs(10),
        get_json(&srv, "/api/v1/topics/lp/events?after=1&wait=30"),
    )
    .await
    .expect("a wait with events pending must not block");
    assert_eq!(ids(&page), [2]);
    srv.stop().await;
}

#[tokio::test]
async fn wait_without_cursor_waits_for_the_next_event() {
    let srv = TestServer::spawn().await;
    publish_data(&srv, "lp", json!("before")).await;
    let url = srv.url("/api/v1/topics/lp/events?wait=30");
    let http = srv.http();
    let poll =
        tokio::spawn(async move { http.get(url).send().await.unwrap().json::<Value>().await });
    // Publish until the poll answers: it must get an event published after it started,
    // never the one from before.
    let page = timeout(T, async {
        loop {
            publish_data(&srv, "lp", json!("after")).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if poll.is_finished() {
                return poll.await.unwrap().unwrap();
            }
        }
    })
    .await
    .expect("long poll never answered");
    let events = page["events"].as_array().unwrap();
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e["data"] == "after"), "{page}");
    srv.stop().await;
}

#[tokio::test]
async fn wait_runs_out_with_an_empty_page() {
    let srv = TestServer::spawn().await;
    let head = publish_data(&srv, "lp", json!(1)).await;
    let page = timeout(
        T,
        get_json(
            &srv,
            &format!("/api/v1/topics/lp/events?after={head}&wait=1"),
        ),
    )
    .await
    .expect("wait=1 did not answer");
    assert_eq!(page, json!({"events": [], "next": head.to_string()}));
    // The same cursor then picks up what came later.
    let id = publish_data(&srv, "lp", json!(2)).await;
    let page = get_json(
        &srv,
        &format!("/api/v1/topics/lp/events?after={head}&wait=1"),
    )
    .await;
    assert_eq!(ids(&page), [id]);
    srv.stop().await;
}
