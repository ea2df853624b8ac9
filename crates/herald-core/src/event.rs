//! Events as stored and pushed, and the input of a publish.

use std::{
    fmt::Write as _,
    sync::{Arc, OnceLock},
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::{Topic, ValidationError, topic::truncate_for_error};

/// The default event type.
pub const DEFAULT_EVENT_TYPE: &str = "message";
/// Longest event type, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 128;
/// Longest idempotency key, in bytes.
pub const MAX_KEY_LEN: usize = 255;
/// How many per-transport encodings one event can cache (see [`Event::encoded`]).
pub const ENCODING_SLOTS: usize = 6;

/// Validates an event type: 1–128 bytes of printable ASCII without spaces.
///
/// # Errors
/// [`ValidationError::EventType`] otherwise.
pub fn validate_event_type(s: &str) -> Result<Arc<str>, ValidationError> {
    if s.is_empty() || s.len() > MAX_EVENT_TYPE_LEN || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ValidationError::EventType(truncate_for_error(s)));
    }
    Ok(Arc::from(s))
}

/// Validates an idempotency key: 1–255 bytes.
///
/// # Errors
/// [`ValidationError::Key`] otherwise.
pub fn validate_key(s: &str) -> Result<(), ValidationError> {
    if s.is_empty() || s.len() > MAX_KEY_LEN {
        return Err(ValidationError::Key);
    }
    Ok(())
}

/// What a publisher hands to the hub: validated, not yet numbered.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Where it goes.
    pub topic: Topic,
    /// Its type (`message` by default).
    pub event: Arc<str>,
    /// Compact JSON text.
    pub data: Box<RawValue>,
    /// Optional publisher idempotency key.
    pub key: Option<String>,
}

impl NewEvent {
    /// Builds a new event from already-validated parts; `event` defaults to `message`.
    ///
    /// # Errors
    /// When the event type or key is invalid.
    pub fn new(
        topic: Topic,
        event: Option<&str>,
        data: Box<RawValue>,
        key: Option<String>,
    ) -> Result<Self, ValidationError> {
        let event = validate_event_type(event.unwrap_or(DEFAULT_EVENT_TYPE))?;
        if let Some(k) = &key {
            validate_key(k)?;
        }
        Ok(Self {
            topic,
            event,
            data,
            key,
        })
    }

    /// Encoded size of the data, the figure `limits.max_event_bytes` bounds.
    pub fn data_len(&self) -> usize {
        self.data.get().len()
    }
}

/// A stored event: numbered, timestamped, immutable, shared by `Arc` between the log, the
/// hub and every subscriber.
pub struct Event {
    /// Position in the hub's one global sequence (1, 2, ...).
    pub id: u64,
    /// Where it was published.
    pub topic: Topic,
    /// Its type.
    pub event: Arc<str>,
    /// Compact JSON text.
    pub data: Box<RawValue>,
    /// When the log stored it, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// Transport encodings built on first use and shared by every subscriber ("encode once,
    /// send many"); slots are assigned by the protocol crate.
    encoded: [OnceLock<Bytes>; ENCODING_SLOTS],
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.id)
            .field("topic", &self.topic)
            .field("event", &self.event)
            .field("data", &self.data.get())
            .field("time_ms", &self.time_ms)
            .finish()
    }
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        self.id == o.id
            && self.topic == o.topic
            && self.event == o.event
            && self.data.get() == o.data.get()
            && self.time_ms == o.time_ms
    }
}

impl Event {
    /// Assembles a stored event.
    pub fn new(id: u64, topic: Topic, event: Arc<str>, data: Box<RawValue>, time_ms: i64) -> Self {
        Self {
            id,
            topic,
            event,
            data,
            time_ms,
            encoded: Default::default(),
        }
    }

    /// Numbers a new event.
    pub fn from_new(id: u64, new: NewEvent, time_ms: i64) -> Self {
        Self::new(id, new.topic, new.event, new.data, time_ms)
    }

    /// The encoding in `slot`, built by `build` the first time any subscriber asks.
    ///
    /// # Panics
    /// When `slot >= ENCODING_SLOTS` (a programming error in the protocol crate).
    pub fn encoded(&self, slot: usize, build: impl FnOnce(&Event) -> Bytes) -> Bytes {
        self.encoded[slot].get_or_init(|| build(self)).clone()
    }

    /// The time as RFC 3339 UTC with milliseconds.
    pub fn time_rfc3339(&self) -> String {
        rfc3339_ms(self.time_ms)
    }

    /// Appends `{"id":"…","topic":"…","event":"…","data":…,"time":"…"}` to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.write_json_fields(out);
        out.push(b'}');
    }

    /// Appends the event's JSON object without the closing brace, so that callers can add
    /// fields (`"type":"event"`) without re-encoding.
    pub fn write_json_fields(&self, out: &mut Vec<u8>) {
        let mut s = String::with_capacity(96);
        // Topics are `[A-Za-z0-9_.-]`: no escaping needed. Event types may hold `"` or `\`.
        let _ = write!(
            s,
            "{{\"id\":\"{}\",\"topic\":\"{}\",\"event\":",
            self.id, self.topic
        );
        out.extend_from_slice(s.as_bytes());
        write_json_str(out, &self.event);
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(self.data.get().as_bytes());
        out.extend_from_slice(b",\"time\":\"");
        out.extend_from_slice(self.time_rfc3339().as_bytes());
        out.push(b'"');
    }

    /// The event as a JSON value (for tests and low-volume paths).
    pub fn to_json_value(&self) -> serde_json::Value {
        let mut v = Vec::new();
        self.write_json(&mut v);
        serde_json::from_slice(&v).unwrap_or(serde_json::Value::Null)
    }
}

/// Removes insignificant whitespace from valid JSON text, so stored and pushed data is
/// compact whatever the publisher sent. Returns the input unchanged when already compact.
pub fn compact_json(raw: Box<RawValue>) -> Box<RawValue> {
    let text = raw.get();
    let needs = {
        let mut in_str = false;
        let mut esc = false;
        text.bytes().any(|b| {
            if in_str {
                if esc {
                    esc = false;
                } else if b == b'\\' {
                    esc = true;
                } else if b == b'"' {
                    in_str = false;
                }
                false
            } else if b == b'"' {
                in_str = true;
                false
            } else {
                matches!(b, b' ' | b'\n' | b'\r' | b'\t')
            }
        })
    };
    if !needs {
        return raw;
    }
    let mut out = String::with_capacity(text.len());
    let mut in_str = false;
    let mut esc = false;
    for c in text.chars() {
        if in_str {
            out.push(c);
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\n' | '\r' | '\t') {
            out.push(c);
        }
    }
    RawValue::from_string(out).unwrap_or(raw)
}

/// Appends `s` as a JSON string literal.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f)
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // serde_json escapes exactly as JSON requires; cannot fail for a str.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Formats milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Parses RFC 3339 (`2026-11-28T00:49:56Z`, with optional fraction and offset) to
/// milliseconds since the epoch.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() {
            return None;
        }
        let mut v = 0i64;
        for (n, c) in digits.bytes().take(3).enumerate() {
            v += i64::from(c - b'0') * [100, 10, 1][n];
        }
        frac_ms = v;
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if b.len() == i + 6 && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 60 + om;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_min * 60;
    Some(secs * 1000 + frac_ms)
}

// Howard Hinnant's civil-calendar algorithms (public domain descriptions).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formats() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_826_996_123), "2026-11-28T00:49:56.123Z");
        assert_eq!(
            parse_rfc3339_ms("2026-11-28T00:49:56.123Z"),
            Some(1_795_826_996_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-28T01:49:56+01:00"),
            Some(1_795_826_996_000)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
        for ms in [0i64, 951_782_400_000, 4_102_444_800_999] {
            assert_eq!(parse_rfc3339_ms(&rfc3339_ms(ms)), Some(ms));
        }
    }

    #[test]
    fn compacts() {
        let raw = |s: &str| RawValue::from_string(s.into()).unwrap();
        assert_eq!(
            compact_json(raw(" { \"a b\" : [1, 2],\n\"c\\\" \": \" x \" } ")).get(),
            r#"{"a b":[1,2],"c\" ":" x "}"#
        );
        assert_eq!(compact_json(raw("\"\"")).get(), "\"\"");
    }

    #[test]
    fn event_types() {
        assert!(validate_event_type("user-update").is_ok());
        assert!(validate_event_type("a\"b").is_ok());
        assert!(validate_event_type("").is_err());
        assert!(validate_event_type("a b").is_err());
        assert!(validate_event_type("a\nb").is_err());
        assert!(validate_event_type(&"x".repeat(129)).is_err());
    }

    #[test]
    fn json_shape() {
        let data = RawValue::from_string("{\"a\":1}".into()).unwrap();
        let ev = Event::new(7, Topic::new("t.x").unwrap(), "we\"ird".into(), data, 0);
        let v = ev.to_json_value();
        assert_eq!(v["id"], "7");
        assert_eq!(v["topic"], "t.x");
        assert_eq!(v["event"], "we\"ird");
        assert_eq!(v["data"]["a"], 1);
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
    }
}
