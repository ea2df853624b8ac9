//! A `nats-server -js` of the test's own on a free port, stopped by PID when dropped; and
//! helpers to build events and record what a sink sees.

use std::{sync::Arc, time::Duration};

use herald_core::{CommitSink, Event, LogOptions, NewEvent, Pattern, Topic};
use herald_nats::{JetStreamLog, NatsOptions};
use parking_lot::Mutex;
use serde_json::value::RawValue;

pub(crate) use herald_test_support::NatsServer;

pub(crate) async fn open(server: &NatsServer, stream: &str) -> JetStreamLog {
    open_with(server, stream, LogOptions::default()).await
}

pub(crate) async fn open_with(
    server: &NatsServer,
    stream: &str,
    options: LogOptions,
) -> JetStreamLog {
    let opts = NatsOptions {
        stream: stream.into(),
        ..NatsOptions::new(server.url())
    };
    JetStreamLog::open(opts, options)
        .await
        .expect("open the log")
}

pub(crate) fn ev(topic: &str, data: &str) -> NewEvent {
    keyed(topic, data, None)
}

/// `data` is used as JSON when it is JSON, else as a JSON string.
pub(crate) fn keyed(topic: &str, data: &str, key: Option<&str>) -> NewEvent {
    let json = if serde_json::from_str::<serde_json::Value>(data).is_ok() {
        data.to_owned()
    } else {
        serde_json::to_string(data).unwrap()
    };
    NewEvent::new(
        Topic::new(topic).unwrap(),
        None,
        RawValue::from_string(json).unwrap(),
        key.map(str::to_owned),
    )
    .unwrap()
}

pub(crate) fn pats(p: &[&str]) -> Vec<Pattern> {
    p.iter().map(|s| Pattern::new(s).unwrap()).collect()
}

pub(crate) fn ids(events: &[Arc<Event>]) -> Vec<u64> {
    events.iter().map(|e| e.id).collect()
}

/// Records the ids a sink is handed.
#[derive(Default)]
pub(crate) struct Recorder {
    ids: Mutex<Vec<u64>>,
    notify: tokio::sync::Notify,
}

impl Recorder {
    pub(crate) fn seen(&self) -> Vec<u64> {
        self.ids.lock().clone()
    }

    /// Waits until at least `n` ids were seen (10 s at most).
    pub(crate) async fn wait_for(&self, n: usize) -> Vec<u64> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.notify.notified();
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("sink saw {} events, expected {n}", seen.len());
            }
        }
    }
}

impl CommitSink for Recorder {
    fn committed(&self, events: &[Arc<Event>]) {
        self.ids.lock().extend(events.iter().map(|e| e.id));
        self.notify.notify_waiters();
    }
}
