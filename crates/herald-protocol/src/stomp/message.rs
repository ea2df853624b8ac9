//! `MESSAGE` frames for events, encoded once per event and shared by every subscriber.
//!
//! A `MESSAGE` differs between two subscribers of the same event only by its `subscription`
//! header (and `ack`, for subscriptions that acknowledge). So the frame is cut in two: a tiny
//! per-subscription prefix (`MESSAGE`, `subscription`, `ack`) written for each delivery, and
//! the shared tail (every other header, the body, the NUL) built once and cached on the
//! event. A socket adapter can write the two as one vectored write; a WebSocket adapter
//! concatenates them with [`SharedMessage::write`].

use bytes::{BufMut, Bytes, BytesMut};
use herald_core::Event;

use super::frame::{Command, Escaping, Version, put_decimal};
use crate::slots;

/// The shared part of a `MESSAGE` frame: every header after the per-subscription ones, the
/// body and the NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMessage {
    tail: Bytes,
}

/// `content-type` of a body that is JSON.
pub const JSON: &str = "application/json";
/// `content-type` of a body that is text (the event's data was a JSON string).
pub const TEXT: &str = "text/plain";

impl SharedMessage {
    /// Builds the shared part of a `MESSAGE` to `destination` with `message-id`, optional
    /// extra headers, `content-type` and `content-length`, escaped for `version`.
    pub fn new(
        version: Version,
        destination: &str,
        message_id: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: &[u8],
    ) -> Self {
        let esc = Escaping::of(version, Command::Message);
        let extra: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
        let mut out = BytesMut::with_capacity(body.len() + extra + destination.len() + 96);
        let mut header = |name: &str, value: &str| {
            esc.encode(name, true, &mut out);
            out.put_u8(b':');
            esc.encode(value, false, &mut out);
            out.put_u8(b'\n');
        };
        header("destination", destination);
        header("message-id", message_id);
        for (n, v) in headers {
            header(n, v);
        }
        if let Some(ct) = content_type {
            header("content-type", ct);
        }
        out.put_slice(b"content-length:");
        put_decimal(&mut out, body.len() as u64);
        out.put_slice(b"\n\n");
        out.put_slice(body);
        out.put_u8(0);
        Self { tail: out.freeze() }
    }

    /// The shared bytes (write them right after [`SharedMessage::write_prefix`]).
    pub fn tail(&self) -> &Bytes {
        &self.tail
    }

    /// Appends the per-subscription head: `MESSAGE`, `subscription` and, for `client` and
    /// `client-individual` subscriptions, `ack` (the value ACK/NACK will name).
    pub fn write_prefix(
        &self,
        subscription: &str,
        ack: Option<&str>,
        version: Version,
        out: &mut BytesMut,
    ) {
        Self::write_head(subscription, ack, version, out);
    }

    /// [`write_prefix`](Self::write_prefix) without a message at hand (the head does not
    /// depend on it).
    pub fn write_head(subscription: &str, ack: Option<&str>, version: Version, out: &mut BytesMut) {
        let esc = Escaping::of(version, Command::Message);
        out.reserve(subscription.len() + ack.map_or(0, str::len) + 32);
        out.put_slice(b"MESSAGE\nsubscription:");
        esc.encode(subscription, false, out);
        out.put_u8(b'\n');
        if let Some(a) = ack {
            out.put_slice(b"ack:");
            esc.encode(a, false, out);
            out.put_u8(b'\n');
        }
    }

    /// Appends the whole frame for one subscription (prefix, then a copy of the tail).
    pub fn write(
        &self,
        subscription: &str,
        ack: Option<&str>,
        version: Version,
        out: &mut BytesMut,
    ) {
        self.write_prefix(subscription, ack, version, out);
        out.extend_from_slice(&self.tail);
    }

    /// The whole frame for one subscription, as one buffer.
    pub fn to_bytes(&self, subscription: &str, ack: Option<&str>, version: Version) -> Bytes {
        let mut out = BytesMut::with_capacity(self.tail.len() + subscription.len() + 40);
        self.write(subscription, ack, version, &mut out);
        out.freeze()
    }
}

/// The shared `MESSAGE` part of an event, cached on the event for STOMP 1.1 and 1.2 (whose
/// escaping agrees on everything an event's headers can hold) and for 1.0 unless the event
/// type holds `:` or `\`, which 1.0 cannot escape.
///
/// Headers: `destination:/topic/<topic>`, `message-id:<event id>`, `event:<type>`,
/// `content-type` and `content-length`. The body is the event's data: compact JSON with
/// `application/json`, or, when the data is a JSON string, the string's text with
/// `text/plain` (so a text published over STOMP comes back as the same text).
pub fn event_message(ev: &Event, version: Version) -> SharedMessage {
    if version == Version::V1_0 && v1_0_cannot_share(ev) {
        return build_event_message(ev, Version::V1_0);
    }
    SharedMessage {
        tail: ev.encoded(slots::STOMP, |ev| {
            build_event_message(ev, Version::V1_2).tail
        }),
    }
}

/// Whether STOMP 1.0 needs its own `MESSAGE` for the event (its type holds `:` or `\`).
fn v1_0_cannot_share(ev: &Event) -> bool {
    ev.event.bytes().any(|b| b == b':' || b == b'\\')
}

/// The whole `MESSAGE` frame of an event after the per-subscription `head` (as written by
/// [`SharedMessage::write_head`] without an `ack`), when it is the head the event's cached
/// frame was built with: that is the first head asked for, and since STOMP clients number
/// their subscriptions the same way (stomp.js: `sub-0`, `sub-1`, ...), most connections
/// subscribed to a topic share it, and their frame is one buffer for all. `None` otherwise
/// (and for heads longer than 255 bytes).
pub fn event_frame_after(ev: &Event, version: Version, head: &[u8]) -> Option<Bytes> {
    if (version == Version::V1_0 && v1_0_cannot_share(ev)) || head.len() > 255 {
        return None;
    }
    // Layout: the head's length (one byte), then the frame (head and shared part).
    let cached = ev.encoded(slots::STOMP_FRAME, |ev| {
        let tail = event_message(ev, Version::V1_2).tail;
        let mut out = BytesMut::with_capacity(1 + head.len() + tail.len());
        out.put_u8(head.len() as u8);
        out.put_slice(head);
        out.put_slice(&tail);
        out.freeze()
    });
    let n = usize::from(*cached.first()?);
    (cached.get(1..=n)? == head).then(|| cached.slice(1..))
}

/// [`event_message`]'s shared part escaped as the inside of a JSON string (see
/// [`crate::sockjs::escape_into`]), as STOMP over SockJS carries it; cached on the event
/// under the same conditions.
pub fn event_message_for_sockjs(ev: &Event, version: Version) -> Bytes {
    let escape = |tail: &Bytes| {
        let mut out = String::with_capacity(tail.len() + tail.len() / 8);
        crate::sockjs::escape_into(&mut out, &String::from_utf8_lossy(tail));
        Bytes::from(out)
    };
    if version == Version::V1_0 && v1_0_cannot_share(ev) {
        return escape(&event_message(ev, version).tail);
    }
    ev.encoded(slots::SOCKJS_STOMP, |ev| {
        escape(&event_message(ev, Version::V1_2).tail)
    })
}

fn build_event_message(ev: &Event, version: Version) -> SharedMessage {
    let raw = ev.data.get();
    let mut destination = String::with_capacity(ev.topic.as_str().len() + 7);
    destination.push_str("/topic/");
    destination.push_str(ev.topic.as_str());
    let id = ev.id.to_string();
    let headers = [("event", &*ev.event)];
    if raw.starts_with('"')
        && let Ok(text) = serde_json::from_str::<String>(raw)
    {
        return SharedMessage::new(
            version,
            &destination,
            &id,
            &headers,
            Some(TEXT),
            text.as_bytes(),
        );
    }
    SharedMessage::new(
        version,
        &destination,
        &id,
        &headers,
        Some(JSON),
        raw.as_bytes(),
    )
}

/// The `herald.truncated` notice (SPEC 1) for a subscription to `destination`: the events
/// after `requested` are partly gone, delivery resumes at `oldest`. Not cached: one per
/// subscription that resumes too late.
pub fn truncated(
    version: Version,
    destination: &str,
    requested: u64,
    oldest: u64,
) -> SharedMessage {
    let body = format!("{{\"requested\":\"{requested}\",\"oldest\":\"{oldest}\"}}");
    SharedMessage::new(
        version,
        destination,
        &format!("truncated-{requested}-{oldest}"),
        &[("event", "herald.truncated")],
        Some(JSON),
        body.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stomp::{Decoded, Frame, StompCodec};
    use herald_core::Topic;
    use serde_json::value::RawValue;

    fn ev(event: &str, data: &str) -> Event {
        Event::new(
            42,
            Topic::new("orders.eu").unwrap(),
            event.into(),
            RawValue::from_string(data.into()).unwrap(),
            0,
        )
    }

    fn decode(bytes: &[u8], version: Version) -> Frame {
        let mut codec = StompCodec::default();
        codec.set_version(version);
        let mut buf = BytesMut::from(bytes);
        match codec.decode(&mut buf).unwrap() {
            Some(Decoded::Frame(f)) => {
                assert!(buf.is_empty());
                f
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_first_head_shares_its_whole_frame() {
        let e = ev("order-created", r#"{"id":1}"#);
        let head = |sub: &str| {
            let mut h = BytesMut::new();
            SharedMessage::write_head(sub, None, Version::V1_2, &mut h);
            h
        };
        let whole = |sub: &str| event_message(&e, Version::V1_2).to_bytes(sub, None, Version::V1_2);
        let first = event_frame_after(&e, Version::V1_2, &head("sub-0")).unwrap();
        assert_eq!(first, whole("sub-0"));
        let again = event_frame_after(&e, Version::V1_1, &head("sub-0")).unwrap();
        assert_eq!(
            again.as_ptr(),
            first.as_ptr(),
            "one buffer for every connection"
        );
        assert_eq!(event_frame_after(&e, Version::V1_2, &head("sub-1")), None);
        assert_eq!(event_frame_after(&e, Version::V1_2, &[b'x'; 256]), None);
        // STOMP 1.0 cannot share when the event type needs escaping.
        let odd = ev("a:b", "1");
        assert_eq!(event_frame_after(&odd, Version::V1_0, &head("sub-0")), None);
    }

    #[test]
    fn sockjs_form_is_the_quoted_frame_split_at_the_head() {
        for (event, version) in [
            ("order-created", Version::V1_2),
            ("order-created", Version::V1_0),
            ("a:b\\c", Version::V1_0),
            ("a:b\\c", Version::V1_1),
        ] {
            let e = ev(event, r#"{"text":"quote \" line\n \u2028","n":[1,2]}"#);
            let whole = event_message(&e, version).to_bytes("sub-0", Some("7"), version);
            let mut head = BytesMut::new();
            SharedMessage::write_head("sub-0", Some("7"), version, &mut head);
            let tail = event_message_for_sockjs(&e, version);
            let joined = format!(
                "\"{}{}\"",
                crate::sockjs::quote(std::str::from_utf8(&head).unwrap()).trim_matches('"'),
                std::str::from_utf8(&tail).unwrap()
            );
            assert_eq!(
                joined,
                crate::sockjs::quote(std::str::from_utf8(&whole).unwrap()),
                "{event} {version:?}"
            );
            // Cached: the second call hands out the same bytes.
            if version != Version::V1_0 || !event.contains(':') {
                assert_eq!(
                    tail.as_ptr(),
                    event_message_for_sockjs(&e, version).as_ptr()
                );
            }
        }
    }

    #[test]
    fn json_event() {
        let e = ev("order-created", r#"{"id":1}"#);
        let shared = event_message(&e, Version::V1_2);
        let bytes = shared.to_bytes("sub-0", None, Version::V1_2);
        assert_eq!(
            &bytes[..],
            &b"MESSAGE\nsubscription:sub-0\ndestination:/topic/orders.eu\nmessage-id:42\n\
               event:order-created\ncontent-type:application/json\ncontent-length:8\n\n\
               {\"id\":1}\0"[..]
        );
        // Cached: the second subscriber shares the same tail allocation.
        let again = event_message(&e, Version::V1_1);
        assert_eq!(again.tail().as_ptr(), shared.tail().as_ptr());
        let f = decode(
            &again.to_bytes("s:1", Some("7"), Version::V1_1),
            Version::V1_1,
        );
        assert_eq!(f.command, Command::Message);
        assert_eq!(f.header("subscription"), Some("s:1"));
        assert_eq!(f.header("ack"), Some("7"));
        assert_eq!(f.header("message-id"), Some("42"));
        assert_eq!(f.header("destination"), Some("/topic/orders.eu"));
        assert_eq!(&f.body[..], br#"{"id":1}"#);
    }

    #[test]
    fn string_event_is_text() {
        let e = ev("note", r#""line 1\nline \"2\"""#);
        let f = decode(
            &event_message(&e, Version::V1_2).to_bytes("0", None, Version::V1_2),
            Version::V1_2,
        );
        assert_eq!(f.header("content-type"), Some("text/plain"));
        assert_eq!(&f.body[..], b"line 1\nline \"2\"");
        assert_eq!(f.header("content-length"), Some("15"));
    }

    #[test]
    fn event_type_escaping_per_version() {
        let e = ev("a:b\\c", "1");
        let f12 = decode(
            &event_message(&e, Version::V1_2).to_bytes("0", None, Version::V1_2),
            Version::V1_2,
        );
        assert_eq!(f12.header("event"), Some("a:b\\c"));
        let raw10 = event_message(&e, Version::V1_0).to_bytes("0", None, Version::V1_0);
        assert!(raw10.windows(12).any(|w| w == b"event:a:b\\c\n"));
        let f10 = decode(&raw10, Version::V1_0);
        assert_eq!(f10.header("event"), Some("a:b\\c"));
        // The cached 1.2 form was not replaced by the 1.0 one.
        let f12 = decode(
            &event_message(&e, Version::V1_2).to_bytes("0", None, Version::V1_2),
            Version::V1_2,
        );
        assert_eq!(f12.header("event"), Some("a:b\\c"));
    }

    #[test]
    fn truncated_notice() {
        let f = decode(
            &truncated(Version::V1_2, "/topic/orders.>", 3, 10).to_bytes("0", None, Version::V1_2),
            Version::V1_2,
        );
        assert_eq!(f.header("event"), Some("herald.truncated"));
        assert_eq!(f.header("destination"), Some("/topic/orders.>"));
        assert_eq!(&f.body[..], br#"{"requested":"3","oldest":"10"}"#);
    }
}
