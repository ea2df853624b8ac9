//! The bench's own readers of the subscriber wire formats, built for cheap per-event work:
//! no allocation per event once warm, nothing decoded that the bench does not look at.
//!
//! - [`SseReader`]: `text/event-stream` events as `(id, data)` pairs.
//! - [`parse_stomp`]: one STOMP frame at the front of a buffer, headers left as byte slices.
//! - [`sockjs_frame`]: one frame of SockJS's `websocket` transport, the messages of an
//!   `a[...]` unescaped straight into a reusable buffer (no `String` per message).
//! - [`bench_payload`]: the bench's own `{"seq":N,"t":N}`, read without a JSON parser, and
//!   [`ws_json_event`]: the id and data of a JSON WebSocket `event` message, likewise.

/// Incremental `text/event-stream` reader that hands out `(id, data)` of each event.
///
/// Lines end with LF or CRLF (what servers send; a lone CR is not a line end here). Comment
/// lines are skipped, `data:` lines are joined with `\n`, an event is dispatched at a blank
/// line when it has data. The id is the `id:` field of the same event, if any (the bench
/// wants to know which event carried which id, not the standard's last-event-id buffer).
#[derive(Debug, Default)]
pub(super) struct SseReader {
    /// An incomplete line from the previous chunk.
    partial: Vec<u8>,
    id: Vec<u8>,
    has_id: bool,
    data: Vec<u8>,
    has_data: bool,
}

impl SseReader {
    /// Reads a chunk, calling `on_event(id, data)` for every event it completes.
    pub(super) fn feed(&mut self, mut bytes: &[u8], mut on_event: impl FnMut(Option<&str>, &[u8])) {
        if !self.partial.is_empty() {
            let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
                self.partial.extend_from_slice(bytes);
                return;
            };
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&bytes[..nl]);
            self.line(&line, &mut on_event);
            // Keep the allocation for the next partial line.
            line.clear();
            self.partial = line;
            bytes = &bytes[nl + 1..];
        }
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            self.line(&bytes[..nl], &mut on_event);
            bytes = &bytes[nl + 1..];
        }
        self.partial.extend_from_slice(bytes);
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(Option<&str>, &[u8])) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data {
                let id = if self.has_id {
                    std::str::from_utf8(&self.id).ok()
                } else {
                    None
                };
                on_event(id, &self.data);
            }
            self.has_id = false;
            self.has_data = false;
            self.data.clear();
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
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"id" => {
                self.id.clear();
                self.id.extend_from_slice(value);
                self.has_id = true;
            }
            _ => {}
        }
    }
}

/// The parts of a STOMP frame the bench reads. Header values are raw (not unescaped): the
/// ones used here (`message-id`, `receipt-id`, `content-length`) hold no escapable octets
/// when they come from Herald; `message` of an `ERROR` is only shown.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct StompFrame<'a> {
    pub(super) command: &'a [u8],
    pub(super) message_id: Option<&'a [u8]>,
    pub(super) receipt_id: Option<&'a [u8]>,
    pub(super) message: Option<&'a [u8]>,
    pub(super) body: &'a [u8],
}

/// Parses the frame at the front of `buf`, after any heart-beat EOLs.
///
/// Returns the frame (or `None` when `buf` holds only part of one) and how many octets may
/// be dropped from the front: the frame with its NUL, or only the heart-beats before an
/// incomplete frame. Repeated headers: the first value wins (STOMP 1.2).
///
/// # Errors
/// A header line without a colon, or a `content-length` body not followed by NUL.
pub(super) fn parse_stomp(buf: &[u8]) -> Result<(Option<StompFrame<'_>>, usize), &'static str> {
    let start = buf
        .iter()
        .position(|&b| b != b'\n' && b != b'\r')
        .unwrap_or(buf.len());
    let incomplete = Ok((None, start));
    let mut frame = StompFrame::default();
    let mut content_length: Option<usize> = None;
    let mut pos = start;
    let mut first = true;
    loop {
        if !first && buf.get(pos) == Some(&0) {
            // NUL where a header line would start: a frame without the blank line.
            return Ok((Some(frame), pos + 1));
        }
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            return incomplete;
        };
        let line = &buf[pos..pos + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += nl + 1;
        if first {
            frame.command = line;
            first = false;
            continue;
        }
        if line.is_empty() {
            break;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or("a STOMP header line without a colon")?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        match name {
            b"message-id" if frame.message_id.is_none() => frame.message_id = Some(value),
            b"receipt-id" if frame.receipt_id.is_none() => frame.receipt_id = Some(value),
            b"message" if frame.message.is_none() => frame.message = Some(value),
            b"content-length" if content_length.is_none() => {
                content_length = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok());
            }
            _ => {}
        }
    }
    let body_end = match content_length {
        Some(n) => {
            let end = pos.saturating_add(n);
            if buf.len() <= end {
                return incomplete;
            }
            if buf[end] != 0 {
                return Err("a STOMP body longer than its content-length");
            }
            end
        }
        None => match buf[pos..].iter().position(|&b| b == 0) {
            Some(p) => pos + p,
            None => return incomplete,
        },
    };
    frame.body = &buf[pos..body_end];
    Ok((Some(frame), body_end + 1))
}

/// A frame the server sends on SockJS's `websocket` transport (one per WebSocket message).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SockJsFrame {
    /// `o`: the session is open.
    Open,
    /// `h`: a heartbeat.
    Heartbeat,
    /// `a[...]`: its messages were appended to the buffer given, one after the other.
    Messages,
    /// `c[code,"reason"]`: the session is closed.
    Close(u16, String),
}

/// Reads one SockJS frame. The strings of an `a[...]` are JSON-decoded straight onto the end
/// of `out`, without a `String` per message: STOMP frames end with their NUL, so
/// the concatenation is the STOMP stream they carry.
///
/// # Errors
/// Anything but `o`, `h`, an `a` with a JSON array of strings, or a `c` with `[code, reason]`.
pub(super) fn sockjs_frame(msg: &[u8], out: &mut Vec<u8>) -> Result<SockJsFrame, &'static str> {
    let Some((&kind, rest)) = msg.split_first() else {
        return Err("an empty SockJS frame");
    };
    match kind {
        b'o' if rest.is_empty() => Ok(SockJsFrame::Open),
        b'h' if rest.is_empty() => Ok(SockJsFrame::Heartbeat),
        b'a' => {
            append_strings(rest, out)
                .ok_or("a SockJS message frame that is not a JSON array of strings")?;
            Ok(SockJsFrame::Messages)
        }
        b'c' => serde_json::from_slice::<(u16, String)>(rest)
            .map(|(code, reason)| SockJsFrame::Close(code, reason))
            .map_err(|_| "a SockJS close frame that is not c[code,\"reason\"]"),
        _ => Err("not a SockJS frame (o, h, a[...] or c[...])"),
    }
}

/// Decodes a JSON array of strings, appending each string's text to `out` (`None`, with
/// `out` partly written, when it is not one). Written by hand for the bench's hottest SockJS
/// path: runs without escapes are copied whole, and nothing is allocated.
fn append_strings(json: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut i = skip_ws(json, 0);
    if json.get(i) != Some(&b'[') {
        return None;
    }
    i = skip_ws(json, i + 1);
    if json.get(i) == Some(&b']') {
        return (skip_ws(json, i + 1) == json.len()).then_some(());
    }
    loop {
        if json.get(i) != Some(&b'"') {
            return None;
        }
        i = append_string(json, i + 1, out)?;
        i = skip_ws(json, i);
        match json.get(i)? {
            b',' => i = skip_ws(json, i + 1),
            b']' => return (skip_ws(json, i + 1) == json.len()).then_some(()),
            _ => return None,
        }
    }
}

fn skip_ws(json: &[u8], mut i: usize) -> usize {
    while json
        .get(i)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        i += 1;
    }
    i
}

/// Decodes the string whose text starts at `i` (after its opening quote) onto `out`;
/// returns the index after its closing quote.
fn append_string(json: &[u8], mut i: usize, out: &mut Vec<u8>) -> Option<usize> {
    loop {
        let run = json[i..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        out.extend_from_slice(&json[i..i + run]);
        i += run;
        match json[i] {
            b'"' => return Some(i + 1),
            b'\\' => {
                let esc = *json.get(i + 1)?;
                i += 2;
                let byte = match esc {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'/' => b'/',
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => {
                        let mut c = u32::from(hex4(json.get(i..i + 4)?)?);
                        i += 4;
                        if (0xD800..0xDC00).contains(&c) {
                            // A high surrogate must be followed by a low one.
                            if json.get(i..i + 2)? != b"\\u" {
                                return None;
                            }
                            let low = u32::from(hex4(json.get(i + 2..i + 6)?)?);
                            if !(0xDC00..0xE000).contains(&low) {
                                return None;
                            }
                            i += 6;
                            c = 0x10000 + ((c - 0xD800) << 10) + (low - 0xDC00);
                        } else if (0xDC00..0xE000).contains(&c) {
                            return None;
                        }
                        let ch = char::from_u32(c)?;
                        let mut utf8 = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
                        continue;
                    }
                    _ => return None,
                };
                out.push(byte);
            }
            // A raw control character: not JSON.
            _ => return None,
        }
    }
}

fn hex4(digits: &[u8]) -> Option<u16> {
    let mut v = 0u16;
    for &d in digits {
        let n = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u16::from(n);
    }
    Some(v)
}

/// `(seq, t)` of the data exactly as the publishers write it, `{"seq":N,"t":N}`; `None` for
/// anything else (which the caller then hands to a JSON parser).
pub(super) fn bench_payload(data: &[u8]) -> Option<(u64, u64)> {
    let rest = data.strip_prefix(br#"{"seq":"#)?;
    let (seq, rest) = digits(rest)?;
    let rest = rest.strip_prefix(br#","t":"#)?;
    let (t, rest) = digits(rest)?;
    (rest == b"}").then_some((seq, t))
}

/// `(id, data)` of an `event` message of Herald's JSON WebSocket protocol as the server writes
/// it, `{"type":"event","id":"N","topic":..,"event":..,"data":{"seq":..},...}`, when the data
/// is a bench payload; `None` for anything else (which the caller then parses as JSON).
/// Neither a topic nor an (escaped) event type can hold `,"data":`, so the first one found
/// after the id is the field.
pub(super) fn ws_json_event(msg: &[u8]) -> Option<(&str, &[u8])> {
    const DATA: &[u8] = br#","data":"#;
    let rest = msg.strip_prefix(br#"{"type":"event","id":""#)?;
    let q = rest.iter().position(|&b| b == b'"')?;
    let id = std::str::from_utf8(&rest[..q]).ok()?;
    let rest = &rest[q..];
    let at = rest.windows(DATA.len()).position(|w| w == DATA)?;
    let data = &rest[at + DATA.len()..];
    if !data.starts_with(br#"{"seq":"#) {
        return None;
    }
    let end = data.iter().position(|&b| b == b'}')?;
    Some((id, &data[..=end]))
}

/// A decimal number at the front of `b` (at most 19 digits: no overflow), and what follows.
fn digits(b: &[u8]) -> Option<(u64, &[u8])> {
    let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || n > 19 {
        return None;
    }
    let value = b[..n]
        .iter()
        .fold(0u64, |v, &c| v * 10 + u64::from(c - b'0'));
    Some((value, &b[n..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(chunks: &[&[u8]]) -> Vec<(Option<String>, String)> {
        let mut r = SseReader::default();
        let mut out = Vec::new();
        for c in chunks {
            r.feed(c, |id, data| {
                out.push((
                    id.map(str::to_owned),
                    String::from_utf8(data.to_vec()).unwrap(),
                ));
            });
        }
        out
    }

    #[test]
    fn sse_events_split_anywhere() {
        let stream: &[u8] = b"retry: 3000\n\n: ping\n\nid: 5\nevent: bench\ndata: {\"seq\":1}\n\n\
            data: a\r\ndata: b\r\n\r\nid: 7\ndata: x\n\n";
        let want = vec![
            (Some("5".to_owned()), r#"{"seq":1}"#.to_owned()),
            (None, "a\nb".to_owned()),
            (Some("7".to_owned()), "x".to_owned()),
        ];
        assert_eq!(read_all(&[stream]), want);
        for cut in 0..stream.len() {
            assert_eq!(
                read_all(&[&stream[..cut], &stream[cut..]]),
                want,
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(read_all(&bytes), want);
    }

    #[test]
    fn bench_payloads() {
        assert_eq!(
            bench_payload(br#"{"seq":12,"t":1764300000000000000}"#),
            Some((12, 1_764_300_000_000_000_000))
        );
        for other in [
            &br#"{"seq":1,"t":2,"x":3}"#[..],
            br#"{ "seq":1,"t":2}"#,
            br#"{"seq":-1,"t":2}"#,
            br#"{"seq":1,"t":99999999999999999999}"#,
            br#"{"seq":,"t":2}"#,
            b"",
        ] {
            assert_eq!(
                bench_payload(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn ws_json_events() {
        let msg = br#"{"type":"event","id":"42","topic":"bench.t0","event":"bench","data":{"seq":3,"t":9},"time":"2026-11-28T00:00:00Z"}"#;
        assert_eq!(ws_json_event(msg), Some(("42", &br#"{"seq":3,"t":9}"#[..])));
        assert_eq!(bench_payload(ws_json_event(msg).unwrap().1), Some((3, 9)));
        for other in [
            &br#"{"type":"subscribed","topic":"bench.t0"}"#[..],
            br#"{"type":"event","id":"1","topic":"a","event":"x","data":"text","time":"t"}"#,
            br#"{"type":"event","id":"1","topic":"a","event":"x\",\"data\":{\"seq\":1}","data":2}"#,
        ] {
            assert_eq!(
                ws_json_event(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn stomp_frames() {
        let msg = b"MESSAGE\ndestination:/topic/a\nmessage-id:12\nsubscription:0\n\
            content-length:9\n\n{\"seq\":1}\0\n";
        let (f, used) = parse_stomp(msg).unwrap();
        let f = f.unwrap();
        assert_eq!(f.command, b"MESSAGE");
        assert_eq!(f.message_id, Some(&b"12"[..]));
        assert_eq!(f.body, br#"{"seq":1}"#);
        assert_eq!(used, msg.len() - 1);
        // Every prefix is incomplete, and nothing of it is dropped.
        for cut in 0..msg.len() - 1 {
            assert_eq!(parse_stomp(&msg[..cut]).unwrap(), (None, 0), "cut at {cut}");
        }
        // Heart-beats first; a frame without content-length; several frames in one buffer.
        let two = b"\n\r\nRECEIPT\r\nreceipt-id:sub\r\n\r\n\0MESSAGE\nmessage-id:3\n\nhi\0";
        let (f, used) = parse_stomp(two).unwrap();
        assert_eq!(f.unwrap().receipt_id, Some(&b"sub"[..]));
        let (f, used2) = parse_stomp(&two[used..]).unwrap();
        let f = f.unwrap();
        assert_eq!((f.message_id, f.body), (Some(&b"3"[..]), &b"hi"[..]));
        assert_eq!(used + used2, two.len());
        // Only heart-beats: they may be dropped.
        assert_eq!(parse_stomp(b"\n\n").unwrap(), (None, 2));
        // The specification's own short form: NUL right after the headers.
        let (f, _) = parse_stomp(b"RECEIPT\nreceipt-id:77\n\0").unwrap();
        assert_eq!(f.unwrap().receipt_id, Some(&b"77"[..]));
        assert!(parse_stomp(b"MESSAGE\nbad header\n\n\0").is_err());
        assert!(parse_stomp(b"MESSAGE\ncontent-length:1\n\nab\0").is_err());
    }

    /// The hand-written decoder agrees with serde_json on every string serde_json encodes
    /// (control characters, quotes, backslashes, U+2028, astral characters), and refuses
    /// what is not a JSON array of strings.
    #[test]
    fn array_decoding_agrees_with_serde_json() {
        let samples = [
            "",
            "plain",
            "MESSAGE\nsubscription:sub-0\n\n{\"seq\":1}\0",
            "quote \" backslash \\ slash / tab \t cr \r ff \u{c} bs \u{8}",
            "\u{2028}\u{2029}\u{1}\u{1f} é ü 中 😀 \u{10ffff}",
        ];
        for n in 0..samples.len() {
            let strings: Vec<&str> = samples
                .iter()
                .cycle()
                .skip(n)
                .take(n + 1)
                .copied()
                .collect();
            let json = serde_json::to_string(&strings).unwrap();
            let mut out = Vec::new();
            assert_eq!(
                append_strings(json.as_bytes(), &mut out),
                Some(()),
                "{json}"
            );
            assert_eq!(out, strings.concat().as_bytes(), "{json}");
        }
        // Escapes serde_json does not write but JSON allows.
        let mut out = Vec::new();
        let json = br#" [ "\u0041\/\ud83d\ude00" , "" ] "#;
        assert_eq!(append_strings(json, &mut out), Some(()));
        assert_eq!(out, "A/😀".as_bytes());
        for bad in [
            &b""[..],
            b"[",
            b"[\"a\"",
            b"[\"a\",]",
            b"[1]",
            b"{}",
            b"[\"a\"] x",
            b"[\"\\x\"]",
            b"[\"\\u12\"]",
            b"[\"\\ud800\"]",
            b"[\"\\udc00\"]",
            b"[\"\\ud800\\u0041\"]",
            b"[\"\n\"]",
        ] {
            assert_eq!(
                append_strings(bad, &mut Vec::new()),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(append_strings(b"[]", &mut out), Some(()));
    }

    #[test]
    fn sockjs_frames() {
        let mut out = Vec::new();
        assert_eq!(sockjs_frame(b"o", &mut out), Ok(SockJsFrame::Open));
        assert_eq!(sockjs_frame(b"h", &mut out), Ok(SockJsFrame::Heartbeat));
        assert!(out.is_empty());
        // Two STOMP frames in one message frame, with JSON and SockJS escapes (NUL, U+2028).
        let msg = br#"a["CONNECTED\nversion:1.2\n\n\u0000","MESSAGE\nmessage-id:7\ncontent-length:12\n\n{\"seq\":1}\u2028\u0000"]"#;
        assert_eq!(sockjs_frame(msg, &mut out), Ok(SockJsFrame::Messages));
        assert_eq!(
            out,
            "CONNECTED\nversion:1.2\n\n\0MESSAGE\nmessage-id:7\ncontent-length:12\n\n{\"seq\":1}\u{2028}\0"
                .as_bytes()
        );
        let (f, used) = parse_stomp(&out).unwrap();
        assert_eq!(f.unwrap().command, b"CONNECTED");
        let (f, used2) = parse_stomp(&out[used..]).unwrap();
        let f = f.unwrap();
        assert_eq!(
            (f.message_id, f.body),
            (Some(&b"7"[..]), "{\"seq\":1}\u{2028}".as_bytes())
        );
        assert_eq!(used + used2, out.len());
        // Appends: the caller clears.
        assert_eq!(sockjs_frame(br#"a[]"#, &mut out), Ok(SockJsFrame::Messages));
        assert_eq!(
            sockjs_frame(br#"a["x"]"#, &mut out),
            Ok(SockJsFrame::Messages)
        );
        assert_eq!(out.last(), Some(&b'x'));
        assert_eq!(
            sockjs_frame(br#"c[3000,"Go away!"]"#, &mut out),
            Ok(SockJsFrame::Close(3000, "Go away!".into()))
        );
        for bad in [
            &b""[..],
            b"x",
            b"oo",
            b"a",
            b"a[1]",
            br#"a["x""#,
            br#"a["x"]]"#,
            br#"a{"x":1}"#,
            br#"c[3000]"#,
        ] {
            assert!(
                sockjs_frame(bad, &mut Vec::new()).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
