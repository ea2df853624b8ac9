//! SockJS protocol 0.3.3 framing (SPEC 6.3), pure: frames, their per-transport wrappings,
//! client payload parsing, the iframe page and the `info` document. The sessions, timers
//! and HTTP routes live in `herald-server`.
//!
//! Frames the server sends:
//! - `o`: open, first frame of every session;
//! - `h`: heartbeat;
//! - `a["m1","m2"]`: messages, a JSON array of strings;
//! - `c[3000,"Go away!"]`: close, with a code and a reason.
//!
//! Strings inside frames are JSON with SockJS's extra escaping ([`quote`]): besides what JSON
//! requires, the characters that browsers or proxies mangle (`U+200C..U+200F`,
//! `U+2028..U+202F`, `U+2060..U+206F`, `U+FFF0..U+FFFF`) go out as `\uXXXX`.
//!
//! Clients send bare JSON: an array of strings on the HTTP transports ([`parse_messages`],
//! [`parse_jsonp_send`]) and an array or a single string per WebSocket text frame
//! ([`parse_websocket`]).

use std::fmt::Write as _;

/// Body of `GET <prefix>` and `GET <prefix>/`.
pub const WELCOME: &str = "Welcome to SockJS!\n";
/// Open frame.
pub const OPEN: &str = "o";
/// Heartbeat frame.
pub const HEARTBEAT: &str = "h";
/// Length of the `h` run that opens an `xhr_streaming` response (before its newline): some
/// browsers only hand a streamed response to the page once 2 KiB have arrived.
pub const XHR_STREAMING_PRELUDE_LEN: usize = 2048;
/// Length an `htmlfile` prelude is padded to: Safari only renders a page once 1 KiB came.
pub const HTMLFILE_MIN_LEN: usize = 1024;
/// Longest accepted `jsonp`/`htmlfile` callback name.
pub const MAX_CALLBACK_LEN: usize = 32;

/// Close codes the protocol defines.
pub mod close_code {
    /// Normal closure (the application ended the session).
    pub const NORMAL: u16 = 1000;
    /// Server going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// A receiving request was cut by the network: the session is gone.
    pub const INTERRUPTED: u16 = 1002;
    /// A second receiving request while one is still attached to the session.
    pub const ANOTHER_CONNECTION: u16 = 2010;
    /// The application closed the session (the test service `/close` uses it).
    pub const GO_AWAY: u16 = 3000;
}

/// Reason of [`close_code::ANOTHER_CONNECTION`].
pub const ANOTHER_CONNECTION_REASON: &str = "Another connection still open";
/// Reason of [`close_code::INTERRUPTED`].
pub const INTERRUPTED_REASON: &str = "Connection interrupted";
/// Reason of [`close_code::NORMAL`].
pub const NORMAL_REASON: &str = "Normal closure";

/// Characters SockJS servers escape on top of JSON's rules.
fn extra_escape(c: char) -> bool {
    matches!(
        c,
        '\u{200c}'..='\u{200f}'
            | '\u{2028}'..='\u{202f}'
            | '\u{2060}'..='\u{206f}'
            | '\u{fff0}'..='\u{ffff}'
    )
}

/// Appends `s` as a JSON string literal with SockJS's escaping.
pub fn quote_into(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    escape_into(out, s);
    out.push('"');
}

/// Appends `s` escaped as the inside of a JSON string literal (no quotes), with SockJS's
/// escaping: the quoted form of `a + b` is `"` + escaped `a` + escaped `b` + `"`.
pub fn escape_into(out: &mut String, s: &str) {
    out.reserve(s.len());
    // Copies runs of characters that need no escape in one go; ASCII is decided by the byte,
    // other characters only need a look when they may be one of `extra_escape`'s.
    let bytes = s.as_bytes();
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (escape, len): (Option<char>, usize) = if b < 0x80 {
            let needs = b < 0x20 || b == b'"' || b == b'\\';
            (needs.then_some(b as char), 1)
        } else if b == 0xe2 || b == 0xef {
            // U+2000..U+2FFF start with E2, U+F000..U+FFFF with EF: the only leading bytes of
            // extra_escape's ranges.
            let c = s[i..].chars().next().unwrap_or('\u{fffd}');
            (extra_escape(c).then_some(c), c.len_utf8())
        } else {
            (None, 1)
        };
        let Some(c) = escape else {
            i += len;
            continue;
        };
        out.push_str(&s[run..i]);
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
        }
        i += len;
        run = i;
    }
    out.push_str(&s[run..]);
}

/// `s` as a JSON string literal with SockJS's escaping.
pub fn quote(s: &str) -> String {
    let mut out = String::new();
    quote_into(&mut out, s);
    out
}

/// A message frame: `a[` + the quoted messages + `]`.
pub fn message_frame<S: AsRef<str>>(messages: &[S]) -> String {
    let len: usize = messages.iter().map(|m| m.as_ref().len() + 3).sum();
    let mut out = String::with_capacity(len + 3);
    out.push_str("a[");
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        quote_into(&mut out, m.as_ref());
    }
    out.push(']');
    out
}

/// A close frame: `c[<code>,"<reason>"]`.
pub fn close_frame(code: u16, reason: &str) -> String {
    let mut out = format!("c[{code},");
    quote_into(&mut out, reason);
    out.push(']');
    out
}

/// Why a client payload was refused; the `Display` text is the exact body SockJS servers
/// answer (with a 500) on the HTTP transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Nothing usable: an empty body, a form without `d`, or JSON that is not an array of
    /// strings.
    #[error("Payload expected.")]
    Expected,
    /// Not JSON at all.
    #[error("Broken JSON encoding.")]
    Broken,
}

impl From<serde_json::Error> for PayloadError {
    fn from(e: serde_json::Error) -> Self {
        match e.classify() {
            // Well-formed JSON of the wrong shape (`null`, `{}`, `[1]`).
            serde_json::error::Category::Data => Self::Expected,
            _ => Self::Broken,
        }
    }
}

/// Parses the body of `xhr_send` (and the JSON of `jsonp_send`): a JSON array of strings.
///
/// # Errors
/// [`PayloadError::Expected`] for an empty body or well-formed JSON that is not an array of
/// strings; [`PayloadError::Broken`] for anything that is not JSON.
pub fn parse_messages(body: &[u8]) -> Result<Vec<String>, PayloadError> {
    if body.is_empty() {
        return Err(PayloadError::Expected);
    }
    Ok(serde_json::from_slice::<Vec<String>>(body)?)
}

/// Parses one text frame of the `websocket` transport: a JSON array of strings or a single
/// JSON string. An empty frame carries no message (clients send them; servers ignore them).
///
/// # Errors
/// [`PayloadError::Broken`] for anything else; the server then drops the connection.
pub fn parse_websocket(text: &str) -> Result<Vec<String>, PayloadError> {
    let t = text.trim_start();
    if t.is_empty() {
        return Ok(Vec::new());
    }
    let parsed = if t.starts_with('[') {
        serde_json::from_str::<Vec<String>>(t)
    } else {
        serde_json::from_str::<String>(t).map(|s| vec![s])
    };
    parsed.map_err(|_| PayloadError::Broken)
}

/// Parses the body of `jsonp_send`: a form (`application/x-www-form-urlencoded`) whose `d`
/// field holds the JSON array, or the JSON array as the raw body (any other content type).
///
/// # Errors
/// As [`parse_messages`]; a form without a non-empty `d` is [`PayloadError::Expected`].
pub fn parse_jsonp_send(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Vec<String>, PayloadError> {
    if body.is_empty() {
        return Err(PayloadError::Expected);
    }
    let is_form = content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|ct| {
            ct.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return parse_messages(body);
    }
    let form = String::from_utf8_lossy(body);
    match form_value(&form, "d") {
        Some(d) if !d.is_empty() => parse_messages(d.as_bytes()),
        _ => Err(PayloadError::Expected),
    }
}

/// The first value of `key` in an `application/x-www-form-urlencoded` string (a query
/// string or a form body), decoded (`+` is a space, `%XX` a byte). Malformed escapes are
/// kept as they are; invalid UTF-8 becomes U+FFFD.
pub fn form_value(form: &str, key: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(k) == key).then(|| form_decode(v))
    })
}

fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Whether a `jsonp`/`htmlfile` callback name is safe to paste into JavaScript:
/// `[A-Za-z0-9_.-]`, 1 to [`MAX_CALLBACK_LEN`] characters.
pub fn valid_callback(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CALLBACK_LEN
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// How a receiving transport puts frames on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// `xhr` polling: one frame per response, newline-terminated.
    Xhr,
    /// `xhr_streaming`: a 2 KiB `h` prelude, then newline-terminated frames.
    XhrStreaming,
    /// `eventsource`: a `\r\n` prelude, then each frame as an SSE `data:` event.
    EventSource,
    /// `htmlfile`: a padded HTML page calling `parent.<callback>`, then a `<script>` per
    /// frame. Holds a [`valid_callback`] name.
    HtmlFile(String),
    /// `jsonp` polling: one `<callback>("<frame>");` per response. Holds a
    /// [`valid_callback`] name.
    Jsonp(String),
}

impl Framing {
    /// What the response starts with, before any frame.
    pub fn prelude(&self) -> Option<String> {
        match self {
            Self::Xhr | Self::Jsonp(_) => None,
            Self::XhrStreaming => {
                let mut s = "h".repeat(XHR_STREAMING_PRELUDE_LEN);
                s.push('\n');
                Some(s)
            }
            Self::EventSource => Some("\r\n".to_owned()),
            Self::HtmlFile(callback) => Some(htmlfile_prelude(callback)),
        }
    }

    /// One frame (`o`, `h`, `a[...]`, `c[...]`) as this transport writes it.
    pub fn wrap(&self, frame: &str) -> String {
        match self {
            Self::Xhr | Self::XhrStreaming => {
                let mut s = String::with_capacity(frame.len() + 1);
                s.push_str(frame);
                s.push('\n');
                s
            }
            Self::EventSource => format!("data: {frame}\r\n\r\n"),
            Self::HtmlFile(_) => format!("<script>\np({});\n</script>\r\n", quote(frame)),
            Self::Jsonp(callback) => format!("{callback}({});\r\n", quote(frame)),
        }
    }

    /// Whether a response carries at most one frame (the polling transports).
    pub fn is_polling(&self) -> bool {
        matches!(self, Self::Xhr | Self::Jsonp(_))
    }
}

fn htmlfile_prelude(callback: &str) -> String {
    let mut page = format!(
        "<!doctype html>\n\
         <html><head>\n  \
         <meta http-equiv=\"X-UA-Compatible\" content=\"IE=edge\" />\n  \
         <meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\" />\n\
         </head><body><h2>Don't panic!</h2>\n  \
         <script>\n    \
         document.domain = document.domain;\n    \
         var c = parent.{callback};\n    \
         c.start();\n    \
         function p(d) {{c.message(d);}};\n    \
         window.onload = function() {{c.stop();}};\n  \
         </script>\n"
    );
    while page.len() < HTMLFILE_MIN_LEN {
        page.push(' ');
    }
    page.push_str("\r\n\r\n");
    page
}

/// The `iframe.html` page that loads the SockJS client from `sockjs_url` (for transports
/// that need a same-origin frame).
pub fn iframe_page(sockjs_url: &str) -> String {
    let url = html_attr(sockjs_url);
    format!(
        "<!DOCTYPE html>\n\
         <html>\n\
         <head>\n  \
         <meta http-equiv=\"X-UA-Compatible\" content=\"IE=edge\" />\n  \
         <meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\" />\n  \
         <script>\n    \
         document.domain = document.domain;\n    \
         _sockjs_onload = function(){{SockJS.bootstrap_iframe();}};\n  \
         </script>\n  \
         <script src=\"{url}\"></script>\n\
         </head>\n\
         <body>\n  \
         <h2>Don't panic!</h2>\n  \
         <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>\n\
         </body>\n\
         </html>"
    )
}

fn html_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("&quot;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// A strong, quoted ETag for a page: its 64-bit FNV-1a hash in hex. Stable across runs and
/// builds, so caches keep the iframe page between server restarts.
pub fn etag(page: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in page.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

/// The `info` document: capabilities, the (ignored) origin list and `entropy`, a random
/// number in `0..2^32` the caller supplies (browsers seed their session ids with it).
pub fn info_json(websocket: bool, cookie_needed: bool, entropy: u32) -> String {
    serde_json::json!({
        "websocket": websocket,
        "cookie_needed": cookie_needed,
        "origins": ["*:*"],
        "entropy": entropy,
    })
    .to_string()
}

/// Whether a server or session id from a URL is acceptable: non-empty, no dots.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && !id.contains('.')
}

/// Whether `name` (the last segment under the prefix) is the iframe page:
/// `iframe.html`, or `iframe<version>.html` with `[0-9a-z_.-]` in the version.
pub fn is_iframe_path(name: &str) -> bool {
    name.strip_prefix("iframe")
        .and_then(|rest| rest.strip_suffix(".html"))
        .is_some_and(|v| {
            v.bytes().all(|c| {
                c.is_ascii_digit() || c.is_ascii_lowercase() || matches!(c, b'_' | b'.' | b'-')
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert_eq!(message_frame(&["a"]), r#"a["a"]"#);
        assert_eq!(message_frame(&["a", "b\"c"]), r#"a["a","b\"c"]"#);
        assert_eq!(message_frame::<&str>(&[]), "a[]");
        assert_eq!(close_frame(3000, "Go away!"), r#"c[3000,"Go away!"]"#);
        assert_eq!(
            close_frame(close_code::ANOTHER_CONNECTION, ANOTHER_CONNECTION_REASON),
            r#"c[2010,"Another connection still open"]"#
        );
    }

    #[test]
    fn quoting_matches_json_for_ordinary_text() {
        for s in [
            "",
            "plain",
            "quote\" back\\slash",
            "\u{0}\n\r\t\u{8}\u{c}\u{1f}",
            "é 漢字 😀",
        ] {
            let q = quote(s);
            assert_eq!(serde_json::from_str::<String>(&q).unwrap(), s, "{q}");
        }
        assert_eq!(quote("  \u{0}\n\r "), r#""  \u0000\n\r ""#);
    }

    /// The plain definition: every character looked at on its own.
    fn quote_char_by_char(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || extra_escape(c) => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn quoting_in_runs_matches_the_character_by_character_definition() {
        let pieces = [
            "a",
            "\"",
            "\\",
            "\n",
            "\u{1}",
            "é",
            "漢",
            "😀",
            "\u{2027}",
            "\u{2028}",
            "\u{200c}",
            "\u{2070}",
            "\u{206f}",
            "\u{2fff}",
            "\u{efff}",
            "\u{fff0}",
            "\u{ffff}",
            "\u{10000}",
            " ",
            "\u{7f}",
        ];
        // Every pair and triple of pieces, so each sits at the start, middle and end of a run.
        for a in pieces {
            for b in pieces {
                for c in ["", "x", "\u{2029}"] {
                    let s = format!("{a}{b}{c}{a}");
                    assert_eq!(quote(&s), quote_char_by_char(&s), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn quoting_escapes_what_the_protocol_lists() {
        // Every character of the ranges the protocol's test suite expects escaped, above
        // U+00FF (the JSON control characters are covered above).
        let mut expected = String::from("\"");
        let mut raw = String::new();
        for cp in 255u32..=0xffff {
            let Some(c) = char::from_u32(cp) else {
                continue;
            };
            if extra_escape(c) {
                raw.push(c);
                expected.push_str(&format!("\\u{cp:04x}"));
            }
        }
        expected.push('"');
        assert_eq!(quote(&raw), expected);
        assert!(quote("\u{2028}").contains("\\u2028"));
        assert!(quote("\u{ffff}").contains("\\uffff"));
        // Just outside the ranges: verbatim.
        assert_eq!(
            quote("\u{200b}\u{2030}\u{fe00}"),
            "\"\u{200b}\u{2030}\u{fe00}\""
        );
        // Round trip through a standard JSON parser.
        assert_eq!(serde_json::from_str::<String>(&quote(&raw)).unwrap(), raw);
    }

    #[test]
    fn xhr_send_payloads() {
        assert_eq!(parse_messages(br#"["a"]"#), Ok(vec!["a".to_owned()]));
        assert_eq!(
            parse_messages(br#" ["a", "b"] "#),
            Ok(vec!["a".into(), "b".into()])
        );
        assert_eq!(parse_messages(b"[]"), Ok(vec![]));
        assert_eq!(
            parse_messages(br#"["\u2028\ud83d\ude00"]"#),
            Ok(vec!["\u{2028}😀".into()])
        );
        assert_eq!(parse_messages(b""), Err(PayloadError::Expected));
        assert_eq!(parse_messages(br#"["x"#), Err(PayloadError::Broken));
        assert_eq!(parse_messages(b"nope"), Err(PayloadError::Broken));
        assert_eq!(parse_messages(b"null"), Err(PayloadError::Expected));
        assert_eq!(parse_messages(b"{}"), Err(PayloadError::Expected));
        assert_eq!(parse_messages(b"[1]"), Err(PayloadError::Expected));
        assert_eq!(parse_messages(br#""a""#), Err(PayloadError::Expected));
        assert_eq!(PayloadError::Expected.to_string(), "Payload expected.");
        assert_eq!(PayloadError::Broken.to_string(), "Broken JSON encoding.");
    }

    #[test]
    fn websocket_payloads() {
        assert_eq!(parse_websocket(""), Ok(vec![]));
        assert_eq!(
            parse_websocket(r#"["a","b"]"#),
            Ok(vec!["a".into(), "b".into()])
        );
        assert_eq!(parse_websocket(r#""a""#), Ok(vec!["a".into()]));
        assert_eq!(parse_websocket(r#"["a"#), Err(PayloadError::Broken));
        assert_eq!(parse_websocket("a"), Err(PayloadError::Broken));
        assert_eq!(parse_websocket("[1]"), Err(PayloadError::Broken));
    }

    #[test]
    fn jsonp_send_payloads() {
        let form = Some("application/x-www-form-urlencoded");
        assert_eq!(
            parse_jsonp_send(form, b"d=%5B%22x%22%5D"),
            Ok(vec!["x".into()])
        );
        assert_eq!(
            parse_jsonp_send(
                Some("Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
                b"x=1&d=%5B%22a+b%22%5D"
            ),
            Ok(vec!["a b".into()])
        );
        assert_eq!(
            parse_jsonp_send(form, b"d=%5B%22x"),
            Err(PayloadError::Broken)
        );
        for empty in [&b""[..], b"d=", b"p=p"] {
            assert_eq!(parse_jsonp_send(form, empty), Err(PayloadError::Expected));
        }
        // Raw bodies are JSON as they are: no percent decoding.
        assert_eq!(
            parse_jsonp_send(Some("text/plain"), br#"["%61bc"]"#),
            Ok(vec!["%61bc".into()])
        );
        assert_eq!(parse_jsonp_send(None, br#"["a"]"#), Ok(vec!["a".into()]));
        assert_eq!(parse_jsonp_send(None, b""), Err(PayloadError::Expected));
    }

    #[test]
    fn forms() {
        assert_eq!(form_value("c=%63allback", "c").as_deref(), Some("callback"));
        assert_eq!(form_value("a=1&c=x&c=y", "c").as_deref(), Some("x"));
        assert_eq!(form_value("c", "c").as_deref(), Some(""));
        assert_eq!(form_value("a=1", "c"), None);
        assert_eq!(form_value("c=100%", "c").as_deref(), Some("100%"));
        assert_eq!(form_value("c=%zz%4", "c").as_deref(), Some("%zz%4"));
        assert_eq!(form_value("c=%C3%A9", "c").as_deref(), Some("é"));
    }

    #[test]
    fn callbacks() {
        assert!(valid_callback("callback"));
        assert!(valid_callback("_jp.a1-b"));
        assert!(!valid_callback(""));
        assert!(!valid_callback("alert(1)"));
        assert!(!valid_callback("a b"));
        assert!(!valid_callback(&"a".repeat(33)));
    }

    #[test]
    fn framings() {
        assert_eq!(Framing::Xhr.wrap("o"), "o\n");
        assert_eq!(Framing::Xhr.prelude(), None);
        let prelude = Framing::XhrStreaming.prelude().unwrap();
        assert_eq!(prelude.len(), 2049);
        assert!(prelude.starts_with("hhhh") && prelude.ends_with("h\n"));
        assert_eq!(Framing::EventSource.prelude().as_deref(), Some("\r\n"));
        assert_eq!(
            Framing::EventSource.wrap(r#"a["  \u0000\n\r "]"#),
            "data: a[\"  \\u0000\\n\\r \"]\r\n\r\n"
        );
        assert_eq!(
            Framing::HtmlFile("cb".into()).wrap(r#"a["x"]"#),
            "<script>\np(\"a[\\\"x\\\"]\");\n</script>\r\n"
        );
        assert_eq!(Framing::Jsonp("x".into()).wrap("o"), "x(\"o\");\r\n");
        assert_eq!(
            Framing::Jsonp("x".into()).wrap(&close_frame(3000, "Go away!")),
            "x(\"c[3000,\\\"Go away!\\\"]\");\r\n"
        );
        assert!(Framing::Xhr.is_polling() && Framing::Jsonp("x".into()).is_polling());
        assert!(!Framing::XhrStreaming.is_polling());
    }

    #[test]
    fn htmlfile_prelude_is_padded() {
        let p = Framing::HtmlFile("callback".into()).prelude().unwrap();
        assert!(p.len() > HTMLFILE_MIN_LEN);
        assert!(p.ends_with(" \r\n\r\n"));
        assert!(p.starts_with("<!doctype html>\n<html><head>\n"));
        assert!(p.contains("    var c = parent.callback;\n    c.start();\n"));
        assert!(
            p.trim_end()
                .ends_with("window.onload = function() {c.stop();};\n  </script>")
        );
    }

    #[test]
    fn iframe() {
        let page = iframe_page("https://cdn.example/sockjs.min.js");
        assert!(page.starts_with("<!DOCTYPE html>\n<html>\n<head>\n"));
        assert!(page.contains("_sockjs_onload = function(){SockJS.bootstrap_iframe();};"));
        assert!(page.contains("<script src=\"https://cdn.example/sockjs.min.js\"></script>"));
        assert!(page.ends_with("</body>\n</html>"));
        assert!(iframe_page("x\"><script>").contains("x&quot;&gt;&lt;script&gt;"));
        let tag = etag(&page);
        assert_eq!(tag, etag(&page));
        assert_ne!(tag, etag(&iframe_page("/other.js")));
        assert!(tag.starts_with('"') && tag.ends_with('"') && tag.len() == 18);
    }

    #[test]
    fn iframe_paths() {
        for ok in [
            "iframe.html",
            "iframe-a.html",
            "iframe-.html",
            "iframe-0.1.2.html",
            "iframe-0.1.2abc-dirty.2144.html",
        ] {
            assert!(is_iframe_path(ok), "{ok}");
        }
        for bad in [
            "iframe.htm",
            "iframe",
            "IFRAME.HTML",
            "IFRAME",
            "iframe.HTML",
            "iframe.xml",
            "info",
            "a.html",
        ] {
            assert!(!is_iframe_path(bad), "{bad}");
        }
    }

    #[test]
    fn info() {
        let v: serde_json::Value = serde_json::from_str(&info_json(true, false, 7)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "websocket": true,
                "cookie_needed": false,
                "origins": ["*:*"],
                "entropy": 7,
            })
        );
        let v: serde_json::Value = serde_json::from_str(&info_json(false, true, u32::MAX)).unwrap();
        assert_eq!(v["entropy"], u64::from(u32::MAX));
        assert_eq!(v["websocket"], false);
    }

    #[test]
    fn ids() {
        assert!(valid_id("000") && valid_id("abcdefgh_i-j%20"));
        assert!(!valid_id("") && !valid_id("a.") && !valid_id("."));
    }
}
