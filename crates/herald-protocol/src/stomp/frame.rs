//! STOMP frames: commands, headers, versions, header escaping and the encoder.
//!
//! A frame on the wire is `COMMAND EOL *(name:value EOL) EOL body NUL *EOL`. Header names
//! and values are escaped from STOMP 1.1 on (`\n`, `\c`, `\\`, and `\r` from 1.2), except in
//! `CONNECT`, `STOMP` and `CONNECTED` frames, which stay readable by 1.0 peers.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::StompError;

/// A STOMP command, client or server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Client: open a session.
    Connect,
    /// Client: open a session (1.2 name of `CONNECT`).
    Stomp,
    /// Client: publish to a destination.
    Send,
    /// Client: start receiving a destination.
    Subscribe,
    /// Client: stop a subscription.
    Unsubscribe,
    /// Client: acknowledge a message.
    Ack,
    /// Client: reject a message.
    Nack,
    /// Client: start a transaction.
    Begin,
    /// Client: commit a transaction.
    Commit,
    /// Client: roll back a transaction.
    Abort,
    /// Client: end the session.
    Disconnect,
    /// Server: the session is open.
    Connected,
    /// Server: a message for a subscription.
    Message,
    /// Server: a frame carrying `receipt` was processed.
    Receipt,
    /// Server: something went wrong; the connection closes next.
    Error,
}

impl Command {
    /// Every command, client commands first.
    pub const ALL: [Command; 15] = [
        Self::Connect,
        Self::Stomp,
        Self::Send,
        Self::Subscribe,
        Self::Unsubscribe,
        Self::Ack,
        Self::Nack,
        Self::Begin,
        Self::Commit,
        Self::Abort,
        Self::Disconnect,
        Self::Connected,
        Self::Message,
        Self::Receipt,
        Self::Error,
    ];

    /// The command's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "CONNECT",
            Self::Stomp => "STOMP",
            Self::Send => "SEND",
            Self::Subscribe => "SUBSCRIBE",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::Ack => "ACK",
            Self::Nack => "NACK",
            Self::Begin => "BEGIN",
            Self::Commit => "COMMIT",
            Self::Abort => "ABORT",
            Self::Disconnect => "DISCONNECT",
            Self::Connected => "CONNECTED",
            Self::Message => "MESSAGE",
            Self::Receipt => "RECEIPT",
            Self::Error => "ERROR",
        }
    }

    /// Parses a command line (without its EOL). Commands are case sensitive.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str().as_bytes() == b)
    }

    /// Whether a client sends this command.
    pub fn is_client(self) -> bool {
        !self.is_server()
    }

    /// Whether a server sends this command.
    pub fn is_server(self) -> bool {
        matches!(
            self,
            Self::Connected | Self::Message | Self::Receipt | Self::Error
        )
    }

    /// `CONNECT`, `STOMP` and `CONNECTED` headers are never escaped, in any version, so
    /// that the version can be negotiated with 1.0 peers.
    pub fn escapes_headers(self) -> bool {
        !matches!(self, Self::Connect | Self::Stomp | Self::Connected)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol version; the order is the version order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// STOMP 1.0: no header escaping, no `NACK`, subscription `id` optional.
    V1_0,
    /// STOMP 1.1: escaping of `\n`, `:`, `\`; heart-beats; `NACK`.
    V1_1,
    /// STOMP 1.2: also `\r` escaped, CRLF line ends, `ACK`/`NACK` by the message's `ack`.
    V1_2,
}

impl Version {
    /// The versions Herald speaks, lowest first.
    pub const ALL: [Version; 3] = [Self::V1_0, Self::V1_1, Self::V1_2];

    /// `1.0`, `1.1` or `1.2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1_0 => "1.0",
            Self::V1_1 => "1.1",
            Self::V1_2 => "1.2",
        }
    }

    /// Parses `1.0`, `1.1` or `1.2`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The WebSocket subprotocol name (`v12.stomp`).
    pub fn subprotocol(self) -> &'static str {
        match self {
            Self::V1_0 => "v10.stomp",
            Self::V1_1 => "v11.stomp",
            Self::V1_2 => "v12.stomp",
        }
    }

    /// The highest version in an `accept-version` list (`1.0,1.1,2.0`) that Herald speaks.
    /// A missing header means 1.0 (SPEC: "the client only supports version 1.0").
    pub fn negotiate(accept_version: Option<&str>) -> Option<Self> {
        match accept_version {
            None => Some(Self::V1_0),
            Some(list) => list.split(',').filter_map(|v| Self::parse(v.trim())).max(),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How header names and values are escaped in one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escaping {
    /// 1.0, and `CONNECT`/`STOMP`/`CONNECTED` in every version: octets as they are.
    None,
    /// 1.1: `\n`, `\c`, `\\`.
    V1_1,
    /// 1.2: `\r`, `\n`, `\c`, `\\`.
    V1_2,
}

impl Escaping {
    /// The escaping of a frame with `command` in a session of `version`.
    pub fn of(version: Version, command: Command) -> Self {
        if !command.escapes_headers() {
            return Self::None;
        }
        match version {
            Version::V1_0 => Self::None,
            Version::V1_1 => Self::V1_1,
            Version::V1_2 => Self::V1_2,
        }
    }

    /// Undoes escaping in a raw header name or value.
    ///
    /// # Errors
    /// [`StompError::UndefinedEscape`], [`StompError::UnfinishedEscape`],
    /// [`StompError::NotUtf8`].
    pub fn decode(self, raw: &[u8]) -> Result<String, StompError> {
        if self == Self::None || !raw.contains(&b'\\') {
            return std::str::from_utf8(raw)
                .map(str::to_owned)
                .map_err(|_| StompError::NotUtf8);
        }
        let mut out = Vec::with_capacity(raw.len());
        let mut it = raw.iter().copied();
        while let Some(b) = it.next() {
            if b != b'\\' {
                out.push(b);
                continue;
            }
            match it.next() {
                Some(b'n') => out.push(b'\n'),
                Some(b'c') => out.push(b':'),
                Some(b'\\') => out.push(b'\\'),
                Some(b'r') if self == Self::V1_2 => out.push(b'\r'),
                Some(other) => return Err(StompError::UndefinedEscape(other)),
                None => return Err(StompError::UnfinishedEscape),
            }
        }
        String::from_utf8(out).map_err(|_| StompError::NotUtf8)
    }

    /// Appends `s` escaped. Octets that cannot be escaped and would break the frame are
    /// replaced by a space (without escaping: a line feed anywhere; without `\r`: a carriage
    /// return that ends a value, where it would merge with the EOL) and, unescaped in a name,
    /// `:` by `_`: Herald never sends a frame a peer would misread.
    pub fn encode(self, s: &str, is_name: bool, out: &mut BytesMut) {
        let b = s.as_bytes();
        let special = |c: u8| matches!(c, b'\n' | b'\r' | b':' | b'\\');
        if !b.iter().copied().any(special) {
            out.put_slice(b);
            return;
        }
        match self {
            Self::None => {
                for (i, &c) in b.iter().enumerate() {
                    let c = match c {
                        b'\n' => b' ',
                        b'\r' if !is_name && i + 1 == b.len() => b' ',
                        b':' if is_name => b'_',
                        c => c,
                    };
                    out.put_u8(c);
                }
            }
            Self::V1_1 | Self::V1_2 => {
                for (i, &c) in b.iter().enumerate() {
                    match c {
                        b'\n' => out.put_slice(b"\\n"),
                        b':' => out.put_slice(b"\\c"),
                        b'\\' => out.put_slice(b"\\\\"),
                        b'\r' if self == Self::V1_2 => out.put_slice(b"\\r"),
                        // 1.1 has no escape for CR: raw inside, but not where it would
                        // read as part of the EOL.
                        b'\r' if !is_name && i + 1 == b.len() => out.put_u8(b' '),
                        c => out.put_u8(c),
                    }
                }
            }
        }
    }
}

/// One STOMP frame: a command, headers in wire order (repeats kept), and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The command.
    pub command: Command,
    /// Headers, unescaped, in the order received or to be sent. Repeated names are kept:
    /// the first one is the value (see [`Frame::header`]).
    pub headers: Vec<(String, String)>,
    /// The body (shares the receive buffer when decoded; no copy).
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and no body.
    pub fn new(command: Command) -> Self {
        Self {
            command,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header (after the existing ones).
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The value of header `name`: the first occurrence wins, as the specification says of
    /// repeated headers (later ones are history).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `RECEIPT` with `receipt-id`.
    pub fn receipt(receipt_id: &str) -> Self {
        Self::new(Command::Receipt).with_header("receipt-id", receipt_id)
    }

    /// `ERROR` with a short `message` header, the `receipt-id` of the offending frame when it
    /// asked for a receipt, and an optional plain-text body with details.
    pub fn error(message: &str, receipt_id: Option<&str>, details: Option<&str>) -> Self {
        let mut f = Self::new(Command::Error).with_header("message", message);
        if let Some(r) = receipt_id {
            f = f.with_header("receipt-id", r);
        }
        if let Some(d) = details {
            f = f
                .with_header("content-type", "text/plain")
                .with_body(Bytes::copy_from_slice(d.as_bytes()));
        }
        f
    }

    /// Appends the frame's wire form, escaped for `version` (see [`encode`]).
    pub fn encode(&self, version: Version, out: &mut BytesMut) {
        encode(self, version, out);
    }

    /// The frame's wire form as `Bytes`.
    pub fn to_bytes(&self, version: Version) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len_hint());
        encode(self, version, &mut out);
        out.freeze()
    }

    fn encoded_len_hint(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 2)
            .sum();
        self.command.as_str().len() + headers + self.body.len() + 32
    }
}

/// Appends `frame` as `version` writes it.
///
/// `content-length` is always right: the first `content-length` header gets the body's length
/// as its value, and a frame with a non-empty body and no such header gets one at the end of
/// its headers (so bodies with NUL octets are safe, and peers need not scan for the NUL).
/// Nothing follows the NUL; heart-beat EOLs are written separately ([`HEARTBEAT`]).
pub fn encode(frame: &Frame, version: Version, out: &mut BytesMut) {
    let esc = Escaping::of(version, frame.command);
    out.reserve(frame.encoded_len_hint());
    out.put_slice(frame.command.as_str().as_bytes());
    out.put_u8(b'\n');
    let mut length_written = false;
    for (name, value) in &frame.headers {
        esc.encode(name, true, out);
        out.put_u8(b':');
        if name == "content-length" && !length_written {
            put_decimal(out, frame.body.len() as u64);
            length_written = true;
        } else {
            esc.encode(value, false, out);
        }
        out.put_u8(b'\n');
    }
    if !length_written && !frame.body.is_empty() {
        out.put_slice(b"content-length:");
        put_decimal(out, frame.body.len() as u64);
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.put_slice(&frame.body);
    out.put_u8(0);
}

/// A heart-beat: one EOL between frames.
pub const HEARTBEAT: &[u8] = b"\n";

pub(crate) fn put_decimal(out: &mut BytesMut, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        for c in Command::ALL {
            assert_eq!(Command::from_bytes(c.as_str().as_bytes()), Some(c));
        }
        assert_eq!(Command::from_bytes(b"send"), None);
        assert_eq!(Command::from_bytes(b""), None);
        assert!(Command::Send.is_client() && Command::Message.is_server());
    }

    #[test]
    fn negotiates_versions() {
        assert_eq!(Version::negotiate(None), Some(Version::V1_0));
        assert_eq!(Version::negotiate(Some("1.0,1.1,2.0")), Some(Version::V1_1));
        assert_eq!(Version::negotiate(Some("1.2, 1.0")), Some(Version::V1_2));
        assert_eq!(Version::negotiate(Some("2.0,2.1")), None);
        assert_eq!(Version::negotiate(Some("")), None);
    }

    #[test]
    fn escapes_per_version() {
        let enc = |e: Escaping, s: &str, name: bool| {
            let mut out = BytesMut::new();
            e.encode(s, name, &mut out);
            String::from_utf8(out.to_vec()).unwrap()
        };
        assert_eq!(
            enc(Escaping::V1_2, "a:b\\c\nd\re", false),
            "a\\cb\\\\c\\nd\\re"
        );
        assert_eq!(
            enc(Escaping::V1_1, "a:b\\c\nd\re", false),
            "a\\cb\\\\c\\nd\re"
        );
        assert_eq!(enc(Escaping::V1_1, "x\r", false), "x ");
        assert_eq!(enc(Escaping::None, "a:b\nc\r", false), "a:b c ");
        assert_eq!(enc(Escaping::None, "a:b", true), "a_b");
        assert_eq!(
            Escaping::V1_2.decode(b"a\\cb\\\\c\\nd\\re").unwrap(),
            "a:b\\c\nd\re"
        );
        assert_eq!(
            Escaping::V1_1.decode(b"\\r"),
            Err(StompError::UndefinedEscape(b'r'))
        );
        assert_eq!(
            Escaping::V1_2.decode(b"a\\t"),
            Err(StompError::UndefinedEscape(b't'))
        );
        assert_eq!(
            Escaping::V1_2.decode(b"a\\"),
            Err(StompError::UnfinishedEscape)
        );
        assert_eq!(Escaping::None.decode(b"a\\tb").unwrap(), "a\\tb");
        assert_eq!(Escaping::V1_2.decode(b"\xff"), Err(StompError::NotUtf8));
        assert_eq!(
            StompError::UndefinedEscape(b't').to_string(),
            "undefined escape sequence \\t in a header"
        );
        // CONNECT and CONNECTED are never escaped.
        assert_eq!(
            Escaping::of(Version::V1_2, Command::Connected),
            Escaping::None
        );
        assert_eq!(Escaping::of(Version::V1_2, Command::Stomp), Escaping::None);
        assert_eq!(Escaping::of(Version::V1_0, Command::Send), Escaping::None);
        assert_eq!(
            Escaping::of(Version::V1_1, Command::Message),
            Escaping::V1_1
        );
    }

    #[test]
    fn encodes_with_content_length() {
        let f = Frame::new(Command::Message)
            .with_header("destination", "/topic/a:b")
            .with_body(&b"x\0y"[..]);
        assert_eq!(
            &f.to_bytes(Version::V1_2)[..],
            b"MESSAGE\ndestination:/topic/a\\cb\ncontent-length:3\n\nx\0y\0"
        );
        // A wrong content-length is corrected in place; an empty body gets none.
        let f = Frame::new(Command::Error)
            .with_header("content-length", "99")
            .with_header("content-length", "7")
            .with_body(&b"ab"[..]);
        assert_eq!(
            &f.to_bytes(Version::V1_0)[..],
            b"ERROR\ncontent-length:2\ncontent-length:7\n\nab\0"
        );
        assert_eq!(
            &Frame::receipt("77").to_bytes(Version::V1_2)[..],
            b"RECEIPT\nreceipt-id:77\n\n\0"
        );
        let e = Frame::error("bad", Some("r1"), Some("more"));
        assert_eq!(e.header("message"), Some("bad"));
        assert_eq!(e.header("receipt-id"), Some("r1"));
        assert_eq!(&e.body[..], b"more");
    }

    #[test]
    fn first_header_wins() {
        let f = Frame::new(Command::Message)
            .with_header("foo", "World")
            .with_header("foo", "Hello");
        assert_eq!(f.header("foo"), Some("World"));
        assert_eq!(f.header("bar"), None);
    }

    #[test]
    fn decimal() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            let mut out = BytesMut::new();
            put_decimal(&mut out, n);
            assert_eq!(&out[..], n.to_string().as_bytes());
        }
    }
}
