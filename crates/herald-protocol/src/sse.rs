//! Server-Sent Events, as the WHATWG HTML standard defines the `text/event-stream` format.
//!
//! Encoding (SPEC 4): `id: <id>\nevent: <type>\ndata: <payload>\n\n`, where the payload is the
//! string itself when `data` is a JSON string (one `data:` line per line of text, so
//! `EventSource` rebuilds it exactly) and compact JSON otherwise.

use bytes::{BufMut, Bytes, BytesMut};
use herald_core::Event;

use crate::slots;

/// The heartbeat comment.
pub const PING: &[u8] = b": ping\n\n";

/// `retry: <ms>\n\n`, the first write of every stream.
pub fn retry(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

/// The SSE frame of an event, encoded once per event and shared.
pub fn event(ev: &Event) -> Bytes {
    ev.encoded(slots::SSE, encode_event)
}

fn encode_event(ev: &Event) -> Bytes {
    let raw = ev.data.get();
    let mut out = BytesMut::with_capacity(raw.len() + ev.event.len() + 40);
    out.put_slice(b"id: ");
    out.put_slice(ev.id.to_string().as_bytes());
    out.put_slice(b"\nevent: ");
    out.put_slice(ev.event.as_bytes());
    out.put_u8(b'\n');
    write_data(&mut out, raw);
    out.freeze()
}

/// Writes the `data:` lines for a JSON payload and the blank line that ends the event.
fn write_data(out: &mut BytesMut, raw_json: &str) {
    if raw_json.starts_with('"')
        && let Ok(text) = serde_json::from_str::<String>(raw_json)
    {
        write_text_lines(out, &text);
        out.put_u8(b'\n');
        return;
    }
    out.put_slice(b"data: ");
    out.put_slice(raw_json.as_bytes());
    out.put_slice(b"\n\n");
}

/// One `data:` line per line of `text` (CRLF, CR and LF all end a line in SSE).
fn write_text_lines(out: &mut BytesMut, text: &str) {
    let mut rest = text;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        out.put_slice(b"data: ");
        out.put_slice(&rest.as_bytes()[..end]);
        out.put_u8(b'\n');
        if end == rest.len() {
            return;
        }
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
}

/// A frame for an event that is not in the log (the `herald.truncated` notice, demo
/// heartbeats): `id` is omitted when `None`, `data` is raw text split into lines.
pub fn frame(id: Option<&str>, event: &str, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 48);
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"event: ");
    out.put_slice(event.as_bytes());
    out.put_u8(b'\n');
    write_text_lines(&mut out, data);
    out.put_u8(b'\n');
    out.freeze()
}

/// The `herald.truncated` notice (SPEC 1), without an id so the client's cursor stays put.
pub fn truncated(requested: u64, oldest: u64) -> Bytes {
    frame(
        None,
        "herald.truncated",
        &format!("{{\"requested\":\"{requested}\",\"oldest\":\"{oldest}\"}}"),
    )
}

/// One event as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// `id:` field, if any was set in this event.
    pub id: Option<String>,
    /// `event:` field (`message` when absent).
    pub event: String,
    /// `data:` lines joined with `\n`.
    pub data: String,
    /// `retry:` field, if this block carried one.
    pub retry: Option<u64>,
}

/// Incremental `text/event-stream` parser: feed bytes as they arrive, take events out.
/// Follows the standard's rules: CRLF/CR/LF line ends, `:` comments, one optional space after
/// the colon, events dispatched at a blank line, blocks without data not dispatched (except
/// that a `retry:` alone is reported).
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    cur: SseEvent,
    has_data: bool,
    last_cr: bool,
}

impl SseDecoder {
    /// A fresh decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; complete events are appended to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) {
        if self.last_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.last_cr = false;
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'\n' || b == b'\r' {
                let line_end = i;
                if b == b'\r' {
                    if i + 1 < bytes.len() {
                        if bytes[i + 1] == b'\n' {
                            i += 1;
                        }
                    } else {
                        self.last_cr = true;
                    }
                }
                if self.buf.is_empty() {
                    self.line(&bytes[start..line_end], out);
                } else {
                    let mut line = std::mem::take(&mut self.buf);
                    line.extend_from_slice(&bytes[start..line_end]);
                    self.line(&line, out);
                }
                start = i + 1;
            }
            i += 1;
        }
        self.buf.extend_from_slice(&bytes[start.min(bytes.len())..]);
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            let ev = std::mem::take(&mut self.cur);
            if self.has_data || ev.retry.is_some() {
                let mut ev = ev;
                if ev.event.is_empty() {
                    ev.event = "message".into();
                }
                out.push(ev);
            }
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(p) => {
                let v = &line[p + 1..];
                (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => {
                if self.has_data {
                    self.cur.data.push('\n');
                }
                self.cur.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.cur.event = value.into_owned(),
            b"id" if !value.contains('\0') => self.cur.id = Some(value.into_owned()),
            b"retry" => self.cur.retry = value.parse().ok(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::Topic;
    use proptest::prelude::*;
    use serde_json::value::RawValue;

    fn ev(id: u64, event: &str, data: &str) -> Event {
        Event::new(
            id,
            Topic::new("t").unwrap(),
            event.into(),
            RawValue::from_string(data.into()).unwrap(),
            0,
        )
    }

    #[test]
    fn encodes_json_and_strings() {
        assert_eq!(
            &event(&ev(5, "user-update", r#"{"a":1}"#))[..],
            b"id: 5\nevent: user-update\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(
            &event(&ev(6, "message", r#""line1\nline2\r\nline3""#))[..],
            b"id: 6\nevent: message\ndata: line1\ndata: line2\ndata: line3\n\n"
        );
        assert_eq!(
            &event(&ev(7, "message", r#""""#))[..],
            b"id: 7\nevent: message\ndata: \n\n"
        );
        assert_eq!(&retry(3000)[..], b"retry: 3000\n\n");
        assert_eq!(
            &truncated(3, 10)[..],
            b"event: herald.truncated\ndata: {\"requested\":\"3\",\"oldest\":\"10\"}\n\n"
        );
    }

    #[test]
    fn decodes_standard_examples() {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        d.feed(
            b"retry: 3000\n\n: ping\n\ndata: YHOO\ndata: +2\ndata: 10\n\nid: 1\r\nevent: x\r\ndata:no-space\r\n\r\n",
            &mut out,
        );
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].retry, Some(3000));
        assert_eq!(out[1].data, "YHOO\n+2\n10");
        assert_eq!(out[1].event, "message");
        assert_eq!(out[2].id.as_deref(), Some("1"));
        assert_eq!(out[2].event, "x");
        assert_eq!(out[2].data, "no-space");
    }

    proptest! {
        /// Whatever string data we encode, a standard decoder fed the bytes in arbitrary
        /// chunks gets back the same text (with line ends normalised to `\n`).
        #[test]
        fn round_trip(text in ".*", event_type in "[!-~]{1,20}", cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
            let json = serde_json::to_string(&text).unwrap();
            let bytes = event(&ev(42, &event_type, &json));
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            points.sort();
            let mut d = SseDecoder::new();
            let mut out = Vec::new();
            let mut prev = 0;
            for p in points.into_iter().chain([bytes.len()]) {
                d.feed(&bytes[prev..p], &mut out);
                prev = p;
            }
            prop_assert_eq!(out.len(), 1);
            let want = text.replace("\r\n", "\n").replace('\r', "\n");
            prop_assert_eq!(&out[0].data, &want);
            prop_assert_eq!(out[0].id.as_deref(), Some("42"));
            prop_assert_eq!(&out[0].event, &event_type);
        }
    }
}
