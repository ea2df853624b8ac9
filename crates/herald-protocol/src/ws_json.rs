//! The JSON WebSocket protocol (SPEC 6.1): one JSON object per text frame; any client
//! message may carry `ref`, echoed in the reply.

use bytes::Bytes;
use herald_core::{Event, event::write_json_str};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::slots;

/// A message from the client.
#[derive(Debug)]
pub enum ClientMessage {
    /// Start receiving a pattern, optionally from a cursor.
    Subscribe {
        /// Pattern.
        topic: String,
        /// Cursor (`"<id>"` or `"now"`; a number is accepted too).
        after: Option<Cursorish>,
        /// Echoed.
        reference: Option<Box<RawValue>>,
    },
    /// Stop receiving a pattern.
    Unsubscribe {
        /// Pattern, as subscribed.
        topic: String,
        /// Echoed.
        reference: Option<Box<RawValue>>,
    },
    /// Publish an event.
    Publish {
        /// Topic.
        topic: String,
        /// Event type.
        event: Option<String>,
        /// Any JSON.
        data: Box<RawValue>,
        /// Idempotency key.
        key: Option<String>,
        /// Echoed.
        reference: Option<Box<RawValue>>,
    },
    /// Application-level ping.
    Ping {
        /// Echoed.
        reference: Option<Box<RawValue>>,
    },
}

/// A cursor as clients send it: the SPEC says a string, a number is accepted too.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Cursorish {
    /// `"123"` or `"now"`.
    Text(String),
    /// `123`.
    Number(u64),
}

impl Cursorish {
    /// As text for [`herald_core::Cursor::parse`].
    pub fn as_text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Number(n) => n.to_string(),
        }
    }
}

/// Why a client message could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// What was wrong, for the `error` reply.
    pub message: String,
    /// The `ref` of the message, when it could be read.
    pub reference: Option<Box<RawValue>>,
}

impl ClientMessage {
    /// Parses one text frame.
    ///
    /// # Errors
    /// A [`ParseError`] naming what is wrong (not JSON, unknown type, missing field).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        // Internally tagged enums cannot hold `RawValue`s in serde, so read every field
        // first and check which the type needs.
        #[derive(Deserialize)]
        struct Wire {
            #[serde(rename = "type")]
            kind: Option<String>,
            topic: Option<String>,
            after: Option<Cursorish>,
            event: Option<String>,
            data: Option<Box<RawValue>>,
            key: Option<String>,
            #[serde(rename = "ref")]
            reference: Option<Box<RawValue>>,
        }
        let wire: Wire = serde_json::from_str(text).map_err(|e| {
            #[derive(Deserialize)]
            struct RefOnly {
                #[serde(default, rename = "ref")]
                reference: Option<Box<RawValue>>,
            }
            let reference = serde_json::from_str::<RefOnly>(text)
                .ok()
                .and_then(|r| r.reference);
            ParseError {
                message: format!("malformed message: {e}"),
                reference,
            }
        })?;
        let reference = wire.reference;
        let fail = |message: String, reference| Err(ParseError { message, reference });
        let kind = wire.kind.as_deref().unwrap_or("");
        let needs_topic = matches!(kind, "subscribe" | "unsubscribe" | "publish");
        let topic = match (needs_topic, wire.topic) {
            (true, Some(t)) => t,
            (true, None) => return fail(format!("`{kind}` needs a `topic`"), reference),
            (false, _) => String::new(),
        };
        match kind {
            "subscribe" => Ok(Self::Subscribe {
                topic,
                after: wire.after,
                reference,
            }),
            "unsubscribe" => Ok(Self::Unsubscribe { topic, reference }),
            "publish" => match wire.data {
                Some(data) => Ok(Self::Publish {
                    topic,
                    event: wire.event,
                    data,
                    key: wire.key,
                    reference,
                }),
                None => fail("`publish` needs `data`".into(), reference),
            },
            "ping" => Ok(Self::Ping { reference }),
            "" => fail("message has no `type`".into(), reference),
            other => fail(
                format!(
                    "unknown message type {:?}: use subscribe, unsubscribe, publish or ping",
                    other.chars().take(40).collect::<String>()
                ),
                reference,
            ),
        }
    }

    /// The message's `ref`.
    pub fn reference(&self) -> Option<&RawValue> {
        match self {
            Self::Subscribe { reference, .. }
            | Self::Unsubscribe { reference, .. }
            | Self::Publish { reference, .. }
            | Self::Ping { reference } => reference.as_deref(),
        }
    }
}

/// Error codes of the `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Malformed or invalid message.
    BadRequest,
    /// Not allowed for this principal.
    Forbidden,
    /// Unknown subscription.
    NotFound,
    /// Over a rate limit.
    RateLimited,
    /// Over a size or count limit.
    TooLarge,
    /// The server could not do it (storage failure).
    Unavailable,
}

impl ErrorCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::RateLimited => "rate_limited",
            Self::TooLarge => "too_large",
            Self::Unavailable => "unavailable",
        }
    }
}

fn start(kind: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.push(b'"');
    out
}

fn finish(mut out: Vec<u8>, reference: Option<&RawValue>) -> String {
    if let Some(r) = reference {
        out.extend_from_slice(b",\"ref\":");
        out.extend_from_slice(r.get().as_bytes());
    }
    out.push(b'}');
    // Only valid UTF-8 was written (JSON text and escaped strings).
    String::from_utf8(out).unwrap_or_default()
}

fn str_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    write_json_str(out, value);
}

/// `{"type":"subscribed","topic":…}`.
pub fn subscribed(topic: &str, reference: Option<&RawValue>) -> String {
    let mut out = start("subscribed");
    str_field(&mut out, "topic", topic);
    finish(out, reference)
}

/// `{"type":"unsubscribed","topic":…}`.
pub fn unsubscribed(topic: &str, reference: Option<&RawValue>) -> String {
    let mut out = start("unsubscribed");
    str_field(&mut out, "topic", topic);
    finish(out, reference)
}

/// `{"type":"published","id":"…"}`.
pub fn published(id: u64, reference: Option<&RawValue>) -> String {
    let mut out = start("published");
    str_field(&mut out, "id", &id.to_string());
    finish(out, reference)
}

/// `{"type":"pong"}`.
pub fn pong(reference: Option<&RawValue>) -> String {
    finish(start("pong"), reference)
}

/// `{"type":"error","code":…,"message":…}`.
pub fn error(code: ErrorCode, message: &str, reference: Option<&RawValue>) -> String {
    let mut out = start("error");
    str_field(&mut out, "code", code.as_str());
    str_field(&mut out, "message", message);
    finish(out, reference)
}

/// `{"type":"event","id","topic","event","data","time"}`, encoded once per event and shared.
pub fn event(ev: &Event) -> Bytes {
    ev.encoded(slots::WS_JSON, |ev| {
        let mut out = Vec::with_capacity(ev.data.get().len() + 110);
        out.extend_from_slice(b"{\"type\":\"event\",");
        let mut obj = Vec::with_capacity(ev.data.get().len() + 96);
        ev.write_json(&mut obj);
        out.extend_from_slice(&obj[1..]);
        out.into()
    })
}

/// The `herald.truncated` notice for a subscription to `pattern`, without an id.
pub fn truncated(pattern: &str, requested: u64, oldest: u64) -> String {
    let mut out = start("event");
    str_field(&mut out, "topic", pattern);
    out.extend_from_slice(
        format!(
            ",\"event\":\"herald.truncated\",\"data\":{{\"requested\":\"{requested}\",\"oldest\":\"{oldest}\"}}"
        )
        .as_bytes(),
    );
    finish(out, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::Topic;
    use serde_json::{Value, json};

    fn v(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn parses_client_messages() {
        match ClientMessage::parse(r#"{"type":"subscribe","topic":"a.*","after":"5","ref":7}"#)
            .unwrap()
        {
            ClientMessage::Subscribe {
                topic,
                after,
                reference,
            } => {
                assert_eq!(topic, "a.*");
                assert_eq!(after.unwrap().as_text(), "5");
                assert_eq!(reference.unwrap().get(), "7");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"publish","topic":"a","data":{"x":[1]}}"#).unwrap(),
            ClientMessage::Publish { .. }
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"ping"}"#).unwrap(),
            ClientMessage::Ping { .. }
        ));
        let err = ClientMessage::parse(r#"{"type":"dance","ref":"r1"}"#).unwrap_err();
        assert_eq!(err.reference.unwrap().get(), "\"r1\"");
        assert!(ClientMessage::parse("not json").is_err());
        assert!(ClientMessage::parse(r#"{"type":"publish","topic":"a"}"#).is_err());
    }

    #[test]
    fn encodes_server_messages() {
        let r = RawValue::from_string("\"x\"".into()).unwrap();
        assert_eq!(
            v(&subscribed("a.>", Some(&r))),
            json!({"type":"subscribed","topic":"a.>","ref":"x"})
        );
        assert_eq!(
            v(&unsubscribed("a", None)),
            json!({"type":"unsubscribed","topic":"a"})
        );
        assert_eq!(v(&published(9, None)), json!({"type":"published","id":"9"}));
        assert_eq!(v(&pong(None)), json!({"type":"pong"}));
        assert_eq!(
            v(&error(ErrorCode::TooLarge, "big \"one\"", None)),
            json!({"type":"error","code":"too_large","message":"big \"one\""})
        );
        let ev = Event::new(
            3,
            Topic::new("t").unwrap(),
            "m".into(),
            RawValue::from_string("[1,2]".into()).unwrap(),
            0,
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&event(&ev)).unwrap(),
            json!({"type":"event","id":"3","topic":"t","event":"m","data":[1,2],"time":"1970-01-01T00:00:00.000Z"})
        );
        assert_eq!(
            v(&truncated("t.>", 1, 5)),
            json!({"type":"event","topic":"t.>","event":"herald.truncated","data":{"requested":"1","oldest":"5"}})
        );
    }
}
