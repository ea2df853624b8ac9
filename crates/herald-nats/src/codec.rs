//! How events are laid out in the stream: subjects, headers, payloads, message ids.
//!
//! - Subject: `<prefix>.ev.<topic>` (topic segments are valid NATS tokens, so a pattern
//!   `orders.*` / `orders.>` is the filter `<prefix>.ev.orders.*` / `<prefix>.ev.orders.>`).
//! - Sequence: the event id.
//! - Headers: `Herald-Event` (the type), `Herald-Time` (ms since the epoch, the publishing
//!   node's clock), `Nats-Msg-Id` (the idempotency key, percent-encoded, when there is one).
//! - Payload: the compact JSON data.

use std::sync::Arc;

use async_nats::HeaderMap;
use bytes::Bytes;
use herald_core::{Event, NewEvent, Pattern, Topic, event::validate_event_type};
use serde_json::value::RawValue;

/// Header holding the event type.
pub(crate) const EVENT_HEADER: &str = "Herald-Event";
/// Header holding the event time (ms since the epoch).
pub(crate) const TIME_HEADER: &str = "Herald-Time";
/// JetStream's de-duplication header.
pub(crate) const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// Subject names of one stream prefix.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    /// `<prefix>.ev.`
    events: String,
    /// `<prefix>.dlv.`
    deliveries: String,
    /// `<prefix>.dlvq.`
    work: String,
}

impl Subjects {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            events: format!("{prefix}.ev."),
            deliveries: format!("{prefix}.dlv."),
            work: format!("{prefix}.dlvq."),
        }
    }

    /// `<prefix>.dlv.>`: every webhook delivery (the deliveries stream).
    pub(crate) fn all_deliveries(&self) -> String {
        format!("{}>", self.deliveries)
    }

    /// The subject of an endpoint's deliveries.
    pub(crate) fn deliveries(&self, endpoint: &str) -> String {
        format!("{}{endpoint}", self.deliveries)
    }

    /// `<prefix>.dlvq.>`: every work-queue message of a delivery (the work-queue stream).
    pub(crate) fn all_work(&self) -> String {
        format!("{}>", self.work)
    }

    /// The subject of an endpoint's work-queue messages.
    pub(crate) fn work(&self, endpoint: &str) -> String {
        format!("{}{endpoint}", self.work)
    }

    /// `<prefix>.ev.>`: every event.
    pub(crate) fn all_events(&self) -> String {
        format!("{}>", self.events)
    }

    /// The subject of a topic.
    pub(crate) fn topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.events)
    }

    /// The filter of a pattern (`*` and `>` are NATS wildcards already).
    pub(crate) fn pattern(&self, pattern: &Pattern) -> String {
        format!("{}{}", self.events, pattern.as_str())
    }

    /// The topic of an event subject, if it is one.
    pub(crate) fn topic_of<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject.strip_prefix(self.events.as_str())
    }
}

/// The headers of a new event.
pub(crate) fn headers(new: &NewEvent, time_ms: i64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(EVENT_HEADER, new.event.as_ref());
    h.insert(TIME_HEADER, time_ms.to_string().as_str());
    if let Some(key) = &new.key {
        h.insert(MSG_ID_HEADER, encode_key(key).as_str());
    }
    h
}

/// The payload of a new event.
pub(crate) fn payload(new: &NewEvent) -> Bytes {
    Bytes::copy_from_slice(new.data.get().as_bytes())
}

/// An idempotency key as a header value: printable ASCII except `%` as is, every other
/// byte as `%XX`. Injective, so distinct keys stay distinct, and never holds CR or LF.
pub(crate) fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Why a stored message is not an event (written by something else than Herald, or damaged).
#[derive(Debug)]
pub(crate) struct NotAnEvent(pub(crate) String);

/// Rebuilds the event stored at `seq` from its subject, headers and payload.
pub(crate) fn decode(
    subjects: &Subjects,
    seq: u64,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<Arc<Event>, NotAnEvent> {
    let topic = subjects
        .topic_of(subject)
        .ok_or_else(|| NotAnEvent(format!("subject {subject:?} is not an event subject")))?;
    let topic = Topic::new(topic).map_err(|e| NotAnEvent(e.to_string()))?;
    let event = headers
        .and_then(|h| h.get(EVENT_HEADER))
        .map(|v| v.as_str())
        .unwrap_or(herald_core::event::DEFAULT_EVENT_TYPE);
    let event = validate_event_type(event).map_err(|e| NotAnEvent(e.to_string()))?;
    let time_ms = headers
        .and_then(|h| h.get(TIME_HEADER))
        .and_then(|v| v.as_str().parse::<i64>().ok())
        .unwrap_or(0);
    let text = std::str::from_utf8(payload)
        .map_err(|_| NotAnEvent(format!("event {seq}: data is not UTF-8")))?;
    let data = RawValue::from_string(text.to_owned())
        .map_err(|e| NotAnEvent(format!("event {seq}: data is not JSON: {e}")))?;
    Ok(Arc::new(Event::new(seq, topic, event, data, time_ms)))
}

/// Milliseconds since the epoch of a JetStream timestamp.
pub(crate) fn datetime_ms(t: &async_nats::datetime::DateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_injectively_without_line_breaks() {
        assert_eq!(encode_key("abc-1"), "abc-1");
        assert_eq!(encode_key("a b"), "a%20b");
        assert_eq!(encode_key("50%"), "50%25");
        assert_eq!(encode_key("x\r\ny"), "x%0D%0Ay");
        assert_eq!(encode_key("é"), "%C3%A9");
        assert_ne!(encode_key("%20"), encode_key(" "));
    }

    #[test]
    fn subjects_map_topics_and_patterns() {
        let s = Subjects::new("herald");
        assert_eq!(s.all_events(), "herald.ev.>");
        assert_eq!(s.topic("orders.eu"), "herald.ev.orders.eu");
        assert_eq!(
            s.pattern(&Pattern::new("orders.*").unwrap()),
            "herald.ev.orders.*"
        );
        assert_eq!(s.topic_of("herald.ev.a.b"), Some("a.b"));
        assert_eq!(s.topic_of("herald.dlv.a"), None);
        assert_eq!(s.deliveries("wh_1"), "herald.dlv.wh_1");
        assert_eq!(s.all_deliveries(), "herald.dlv.>");
        assert_eq!(s.work("wh_1"), "herald.dlvq.wh_1");
        assert_eq!(s.all_work(), "herald.dlvq.>");
        assert_eq!(s.topic_of("herald.dlvq.a"), None);
    }

    #[test]
    fn bad_messages_are_errors_not_panics() {
        let s = Subjects::new("herald");
        assert!(decode(&s, 1, "herald.ev.a", None, b"{").is_err());
        assert!(decode(&s, 1, "herald.ev.a", None, &[0xff]).is_err());
        assert!(decode(&s, 1, "other.a", None, b"1").is_err());
        assert!(decode(&s, 1, "herald.ev.a..b", None, b"1").is_err());
        let mut h = HeaderMap::new();
        h.insert(EVENT_HEADER, "has space");
        assert!(decode(&s, 1, "herald.ev.a", Some(&h), b"1").is_err());
        let ev = decode(&s, 7, "herald.ev.a.b", None, b"{\"x\":1}").unwrap();
        assert_eq!(ev.id, 7);
        assert_eq!(ev.topic.as_str(), "a.b");
        assert_eq!(&*ev.event, "message");
    }
}
