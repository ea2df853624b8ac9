//! Codec tests: the specification's example frames, every way of splitting and joining
//! them, heart-beats, limits, malformed input, and encode/decode round trips.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

/// Feeds `chunks` one after another into one buffer, decoding after each, like a socket
/// adapter; returns everything decoded, or the first error.
fn feed<'a>(
    codec: &mut StompCodec,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Decoded>, StompError> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(d) = codec.decode(&mut buf)? {
            out.push(d);
        }
    }
    Ok(out)
}

fn codec(version: Version) -> StompCodec {
    let mut c = StompCodec::default();
    c.set_version(version);
    c
}

fn frames(decoded: Vec<Decoded>) -> Vec<Frame> {
    decoded
        .into_iter()
        .filter_map(|d| match d {
            Decoded::Frame(f) => Some(f),
            Decoded::Heartbeat => None,
        })
        .collect()
}

fn decode_one(bytes: &[u8]) -> Frame {
    let out = feed(&mut codec(Version::V1_2), [bytes]).unwrap();
    let mut fs = frames(out);
    assert_eq!(fs.len(), 1, "{:?}", String::from_utf8_lossy(bytes));
    fs.remove(0)
}

/// Decodes `bytes` whole, cut in two at every position, and one byte at a time: all must
/// give the same frames.
fn decode_every_way(version: Version, bytes: &[u8]) -> Vec<Frame> {
    let whole = frames(feed(&mut codec(version), [bytes]).unwrap());
    for cut in 0..=bytes.len() {
        let (a, b) = bytes.split_at(cut);
        let got = frames(feed(&mut codec(version), [a, b]).unwrap());
        assert_eq!(got, whole, "cut at {cut}");
    }
    let bytewise = frames(feed(&mut codec(version), bytes.chunks(1)).unwrap());
    assert_eq!(bytewise, whole, "one byte at a time");
    whole
}

fn h(f: &Frame) -> Vec<(&str, &str)> {
    f.headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

/// Every example frame of the STOMP 1.2 specification (`^@` written as `\0`), with the
/// command, headers and body it must decode to.
#[allow(clippy::type_complexity)]
fn spec_examples() -> Vec<(
    &'static [u8],
    Command,
    Vec<(&'static str, &'static str)>,
    &'static [u8],
)> {
    const ERROR_BODY: &[u8] = b"The message:\n-----\nMESSAGE\ndestined:/queue/a\n\
receipt:message-12345\n\nHello queue a!\n-----\nDid not contain a destination header, \
which is REQUIRED\nfor message propagation.\n";
    vec![
        // Repeated Header Entries
        (
            b"MESSAGE\nfoo:World\nfoo:Hello\n\n\0",
            Command::Message,
            vec![("foo", "World"), ("foo", "Hello")],
            b"",
        ),
        // Connecting
        (
            b"CONNECT\naccept-version:1.2\nhost:stomp.github.org\n\n\0",
            Command::Connect,
            vec![("accept-version", "1.2"), ("host", "stomp.github.org")],
            b"",
        ),
        (
            b"CONNECTED\nversion:1.2\n\n\0",
            Command::Connected,
            vec![("version", "1.2")],
            b"",
        ),
        // CONNECT or STOMP Frame (the STOMP frame is CONNECT under another name)
        (
            b"STOMP\naccept-version:1.2\nhost:stomp.github.org\n\n\0",
            Command::Stomp,
            vec![("accept-version", "1.2"), ("host", "stomp.github.org")],
            b"",
        ),
        // Protocol Negotiation
        (
            b"CONNECT\naccept-version:1.0,1.1,2.0\nhost:stomp.github.org\n\n\0",
            Command::Connect,
            vec![("accept-version", "1.0,1.1,2.0"), ("host", "stomp.github.org")],
            b"",
        ),
        (
            b"CONNECTED\nversion:1.1\n\n\0",
            Command::Connected,
            vec![("version", "1.1")],
            b"",
        ),
        (
            b"ERROR\nversion:1.2,2.1\ncontent-type:text/plain\n\nSupported protocol versions are 1.2 2.1\0",
            Command::Error,
            vec![("version", "1.2,2.1"), ("content-type", "text/plain")],
            b"Supported protocol versions are 1.2 2.1",
        ),
        // Heart-beating (the section's frames with real numbers)
        (
            b"CONNECT\nheart-beat:0,1000\n\n\0",
            Command::Connect,
            vec![("heart-beat", "0,1000")],
            b"",
        ),
        // SEND
        (
            b"SEND\ndestination:/queue/a\ncontent-type:text/plain\n\nhello queue a\n\0",
            Command::Send,
            vec![("destination", "/queue/a"), ("content-type", "text/plain")],
            b"hello queue a\n",
        ),
        // SUBSCRIBE
        (
            b"SUBSCRIBE\nid:0\ndestination:/queue/foo\nack:client\n\n\0",
            Command::Subscribe,
            vec![("id", "0"), ("destination", "/queue/foo"), ("ack", "client")],
            b"",
        ),
        // UNSUBSCRIBE
        (
            b"UNSUBSCRIBE\nid:0\n\n\0",
            Command::Unsubscribe,
            vec![("id", "0")],
            b"",
        ),
        // ACK
        (
            b"ACK\nid:12345\ntransaction:tx1\n\n\0",
            Command::Ack,
            vec![("id", "12345"), ("transaction", "tx1")],
            b"",
        ),
        // NACK ("takes the same headers as ACK")
        (
            b"NACK\nid:12345\ntransaction:tx1\n\n\0",
            Command::Nack,
            vec![("id", "12345"), ("transaction", "tx1")],
            b"",
        ),
        // BEGIN, COMMIT, ABORT
        (
            b"BEGIN\ntransaction:tx1\n\n\0",
            Command::Begin,
            vec![("transaction", "tx1")],
            b"",
        ),
        (
            b"COMMIT\ntransaction:tx1\n\n\0",
            Command::Commit,
            vec![("transaction", "tx1")],
            b"",
        ),
        (
            b"ABORT\ntransaction:tx1\n\n\0",
            Command::Abort,
            vec![("transaction", "tx1")],
            b"",
        ),
        // DISCONNECT and its RECEIPT, written in the specification without the blank line
        (
            b"DISCONNECT\nreceipt:77\n\0",
            Command::Disconnect,
            vec![("receipt", "77")],
            b"",
        ),
        (
            b"RECEIPT\nreceipt-id:77\n\0",
            Command::Receipt,
            vec![("receipt-id", "77")],
            b"",
        ),
        // Header receipt
        (
            b"SEND\ndestination:/queue/a\nreceipt:message-12345\n\nhello queue a\0",
            Command::Send,
            vec![("destination", "/queue/a"), ("receipt", "message-12345")],
            b"hello queue a",
        ),
        // MESSAGE
        (
            b"MESSAGE\nsubscription:0\nmessage-id:007\ndestination:/queue/a\ncontent-type:text/plain\n\nhello queue a\0",
            Command::Message,
            vec![
                ("subscription", "0"),
                ("message-id", "007"),
                ("destination", "/queue/a"),
                ("content-type", "text/plain"),
            ],
            b"hello queue a",
        ),
        // RECEIPT
        (
            b"RECEIPT\nreceipt-id:message-12345\n\n\0",
            Command::Receipt,
            vec![("receipt-id", "message-12345")],
            b"",
        ),
        // ERROR (content-length counts the body up to its last LF, NUL excluded)
        (
            b"ERROR\nreceipt-id:message-12345\ncontent-type:text/plain\ncontent-length:170\nmessage:malformed frame received\n\nThe message:\n-----\nMESSAGE\ndestined:/queue/a\nreceipt:message-12345\n\nHello queue a!\n-----\nDid not contain a destination header, which is REQUIRED\nfor message propagation.\n\0",
            Command::Error,
            vec![
                ("receipt-id", "message-12345"),
                ("content-type", "text/plain"),
                ("content-length", "170"),
                ("message", "malformed frame received"),
            ],
            ERROR_BODY,
        ),
    ]
}

#[test]
fn decodes_every_specification_example() {
    for (bytes, command, headers, body) in spec_examples() {
        for version in Version::ALL {
            let got = decode_every_way(version, bytes);
            assert_eq!(got.len(), 1);
            let f = &got[0];
            assert_eq!(f.command, command);
            assert_eq!(h(f), headers, "{command}");
            assert_eq!(&f.body[..], body, "{command}");
        }
        // With CRLF line ends (1.2) the same frame comes out.
        let text = bytes.to_vec();
        let nul = text.iter().position(|&b| b == 0).unwrap();
        let head_end = text
            .windows(2)
            .position(|w| w == b"\n\n")
            .map_or(nul, |p| p + 1);
        let mut crlf = Vec::new();
        for (i, &b) in text.iter().enumerate() {
            if b == b'\n' && i <= head_end {
                crlf.push(b'\r');
            }
            crlf.push(b);
        }
        let f = decode_one(&crlf);
        assert_eq!(f.command, command);
        assert_eq!(h(&f), headers);
        assert_eq!(&f.body[..], body);
    }
}

#[test]
fn decodes_all_examples_in_one_stream() {
    let examples = spec_examples();
    let mut stream = Vec::new();
    for (i, (bytes, ..)) in examples.iter().enumerate() {
        stream.extend_from_slice(bytes);
        // Trailing EOLs after the NUL are allowed, and heart-beats come between frames.
        stream.extend_from_slice([&b""[..], b"\n", b"\r\n\n"][i % 3]);
    }
    let got = decode_every_way(Version::V1_2, &stream);
    assert_eq!(got.len(), examples.len());
    for (f, (_, command, headers, body)) in got.iter().zip(&examples) {
        assert_eq!(f.command, *command);
        assert_eq!(h(f), *headers);
        assert_eq!(&f.body[..], *body);
    }
}

#[test]
fn heartbeats_are_reported_between_frames() {
    let mut c = codec(Version::V1_2);
    let out = feed(&mut c, [&b"\n"[..], b"\r\n\n", b"\r", b"\n"]).unwrap();
    assert_eq!(
        out,
        [Decoded::Heartbeat, Decoded::Heartbeat, Decoded::Heartbeat]
    );
    // A lone CR waits for its LF.
    let mut buf = BytesMut::from(&b"\r"[..]);
    assert_eq!(c.decode(&mut buf).unwrap(), None);
    assert_eq!(&buf[..], b"\r");
    // EOLs trailing a frame in the same read are eaten with it; later ones are beats.
    let out = feed(
        &mut codec(Version::V1_2),
        [&b"\nSEND\ndestination:/a\n\nx\0\n\r\n"[..], b"\n"],
    )
    .unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0], Decoded::Heartbeat);
    assert!(matches!(out[1], Decoded::Frame(_)));
    assert_eq!(out[2], Decoded::Heartbeat);
}

#[test]
fn content_length_bodies_may_hold_nuls() {
    let bytes = b"SEND\ndestination:/q\ncontent-length:5\n\na\0b\0c\0\n";
    let got = decode_every_way(Version::V1_2, bytes);
    assert_eq!(&got[0].body[..], b"a\0b\0c");
    // Without content-length the body stops at the first NUL.
    let got = decode_every_way(Version::V1_2, b"SEND\ndestination:/q\n\na\0SEND\n\nb\0");
    assert_eq!(&got[0].body[..], b"a");
    assert_eq!(&got[1].body[..], b"b");
    // The byte after content-length octets must be the NUL.
    let err = feed(
        &mut codec(Version::V1_2),
        [&b"SEND\ncontent-length:2\n\nabc\0"[..]],
    )
    .unwrap_err();
    assert_eq!(err, StompError::MissingNul);
    // The first content-length wins.
    let f = decode_one(b"SEND\ncontent-length:1\ncontent-length:3\n\na\0");
    assert_eq!(&f.body[..], b"a");
}

#[test]
fn bodies_share_the_receive_buffer() {
    let mut c = codec(Version::V1_2);
    let mut buf = BytesMut::from(&b"SEND\ndestination:/q\ncontent-length:3\n\nabc\0"[..]);
    let start = buf.as_ptr() as usize;
    let Some(Decoded::Frame(f)) = c.decode(&mut buf).unwrap() else {
        panic!()
    };
    let body = f.body.as_ptr() as usize;
    assert!(body > start && body < start + 64, "body was copied");
}

#[test]
fn repeated_headers_first_wins() {
    let f = decode_one(b"MESSAGE\nfoo:World\nfoo:Hello\n\n\0");
    assert_eq!(f.header("foo"), Some("World"));
    assert_eq!(f.headers.len(), 2);
}

#[test]
fn escaping_depends_on_version_and_command() {
    let raw = b"SEND\na\\cb:c\\\\d\\ne\\rf\n\n\0";
    let f = frames(feed(&mut codec(Version::V1_2), [&raw[..]]).unwrap()).remove(0);
    assert_eq!(h(&f), [("a:b", "c\\d\ne\rf")]);
    // 1.1 has no \r.
    let err = feed(&mut codec(Version::V1_1), [&raw[..]]).unwrap_err();
    assert_eq!(err, StompError::UndefinedEscape(b'r'));
    // 1.0 has no escaping at all: the name ends at the first colon.
    let f = frames(feed(&mut codec(Version::V1_0), [&raw[..]]).unwrap()).remove(0);
    assert_eq!(h(&f), [("a\\cb", "c\\\\d\\ne\\rf")]);
    // CONNECT is never unescaped.
    let f = frames(
        feed(
            &mut codec(Version::V1_2),
            [&b"CONNECT\nlogin:a\\tb\npasscode:x:y\n\n\0"[..]],
        )
        .unwrap(),
    )
    .remove(0);
    assert_eq!(h(&f), [("login", "a\\tb"), ("passcode", "x:y")]);
    // Undefined escapes are fatal.
    let err = feed(&mut codec(Version::V1_2), [&b"SEND\na:\\t\n\n\0"[..]]).unwrap_err();
    assert_eq!(err, StompError::UndefinedEscape(b't'));
}

#[test]
fn header_escaping_round_trips() {
    let f = Frame::new(Command::Send)
        .with_header("we:ird\\name\n", "v\r\n:\\ue")
        .with_header("plain", "text with spaces ")
        .with_body(&b"body"[..]);
    for version in [Version::V1_1, Version::V1_2] {
        let mut f = f.clone();
        if version == Version::V1_1 {
            f.headers[0].1 = "v\n:\\ue".into();
        }
        let bytes = f.to_bytes(version);
        let got = frames(feed(&mut codec(version), [&bytes[..]]).unwrap()).remove(0);
        assert_eq!(&got.headers[..2], &f.headers[..]);
        assert_eq!(got.header("content-length"), Some("4"));
    }
    // Spaces are never trimmed.
    let got = decode_one(b"SEND\n a : b \n\n\0");
    assert_eq!(h(&got), [(" a ", " b ")]);
}

#[test]
fn limits_are_enforced_as_bytes_arrive() {
    let limits = Limits {
        max_frame: 200,
        max_header_block: 100,
        max_headers: 3,
        max_header_len: 20,
        max_body: 50,
    };
    let run = |chunks: &[&[u8]]| -> Result<Vec<Decoded>, StompError> {
        let mut c = StompCodec::new(limits);
        c.set_version(Version::V1_2);
        feed(&mut c, chunks.iter().copied())
    };
    // A header line over the limit is refused before its EOL arrives.
    assert_eq!(
        run(&[b"SEND\n", &[b'x'; 22][..]]).unwrap_err(),
        StompError::HeaderLineTooLong(20)
    );
    assert!(
        run(&[b"SEND\n", &[b'x'; 21][..]]).unwrap().is_empty(),
        "could be CRLF"
    );
    assert_eq!(
        run(&[b"SEND\n", &[b'x'; 21][..], b"\n"]).unwrap_err(),
        StompError::HeaderLineTooLong(20)
    );
    let mut ok = b"SEND\n".to_vec();
    ok.extend_from_slice(&[b'x'; 19]);
    ok.extend_from_slice(b":\r\n\n\0");
    assert_eq!(run(&[&ok]).unwrap().len(), 1, "exactly at the limit, CRLF");
    // Too many headers.
    assert_eq!(
        run(&[b"SEND\na:1\nb:2\nc:3\nd:4\n"]).unwrap_err(),
        StompError::TooManyHeaders(3)
    );
    assert_eq!(run(&[b"SEND\na:1\nb:2\nc:3\n\n\0"]).unwrap().len(), 1);
    // Header block.
    let big = Limits {
        max_headers: 100,
        ..limits
    };
    let mut c = StompCodec::new(big);
    let many = b"SEND\n"
        .iter()
        .chain(b"aaaaaaaa:1\n".repeat(10).iter())
        .copied()
        .collect::<Vec<_>>();
    assert_eq!(
        feed(&mut c, [&many[..]]).unwrap_err(),
        StompError::HeaderBlockTooLarge(100)
    );
    // A declared body over the limit is refused at once, without waiting for it.
    assert_eq!(
        run(&[b"SEND\ncontent-length:51\n\n"]).unwrap_err(),
        StompError::BodyTooLarge(50)
    );
    assert_eq!(
        feed(
            &mut codec(Version::V1_2),
            [&b"SEND\ncontent-length:99999999999999999999\n\n"[..]]
        )
        .unwrap_err(),
        StompError::InvalidContentLength("99999999999999999999".into())
    );
    // Without content-length, a body that grows past the limit without a NUL.
    assert_eq!(
        run(&[b"SEND\n\n", &[b'x'; 30][..], &[b'x'; 21][..]]).unwrap_err(),
        StompError::BodyTooLarge(50)
    );
    let mut exact = b"SEND\n\n".to_vec();
    exact.extend_from_slice(&[b'x'; 50]);
    exact.push(0);
    assert_eq!(run(&[&exact]).unwrap().len(), 1);
    // The whole frame.
    let tight = Limits {
        max_frame: 30,
        ..limits
    };
    let mut c = StompCodec::new(tight);
    assert_eq!(
        feed(&mut c, [&b"SEND\ncontent-length:20\n\n"[..]]).unwrap_err(),
        StompError::FrameTooLarge(30)
    );
    // The defaults are the documented ones.
    assert_eq!(Limits::default().max_body, 1024 * 1024);
    assert_eq!(Limits::with_max_body(10).max_frame, 64 * 1024 + 11);
}

#[test]
fn malformed_input_is_an_error() {
    let cases: &[(&[u8], StompError)] = &[
        (b"FOO\n\n\0", StompError::UnknownCommand("FOO".into())),
        (b"send\n\n\0", StompError::UnknownCommand("send".into())),
        (
            b"GET / HTTP/1.1\r\n",
            StompError::UnknownCommand("GET / HTTP/1.1".into()),
        ),
        (b"SEND\nnocolon\n\n\0", StompError::MissingColon),
        (b"SEND\n:v\n\n\0", StompError::EmptyHeaderName),
        (
            b"SEND\ncontent-length:x\n\n\0",
            StompError::InvalidContentLength("x".into()),
        ),
        (
            b"SEND\ncontent-length:-1\n\n\0",
            StompError::InvalidContentLength("-1".into()),
        ),
        (
            b"SEND\ncontent-length:\n\n\0",
            StompError::InvalidContentLength(String::new()),
        ),
        (b"SEND\na:\xff\n\n\0", StompError::NotUtf8),
        (b"SEND\na:b\\\n\n\0", StompError::UnfinishedEscape),
        (b"\0", StompError::UnknownCommand("\0".into())),
    ];
    for (bytes, want) in cases {
        let err = feed(&mut codec(Version::V1_2), [*bytes]).unwrap_err();
        assert_eq!(&err, want, "{:?}", String::from_utf8_lossy(bytes));
        // Messages go into a header: one line, no NUL.
        let msg = err.to_string();
        assert!(!msg.contains(['\n', '\r', '\0']), "{msg:?}");
    }
    let long = feed(&mut codec(Version::V1_2), [&[b'Q'; 100][..], b"\n"]).unwrap_err();
    assert!(long.to_string().len() < 60, "{long}");
}

#[test]
fn end_of_stream_mid_frame() {
    let mut c = codec(Version::V1_2);
    let mut buf = BytesMut::from(&b"SEND\ndest"[..]);
    assert_eq!(c.decode(&mut buf).unwrap(), None);
    assert_eq!(c.decode_eof(&mut buf), Err(StompError::Truncated));
    let mut buf = BytesMut::from(&b"\r"[..]);
    assert_eq!(codec(Version::V1_2).decode_eof(&mut buf), Ok(None));
}

#[test]
fn tokio_util_traits() {
    use tokio_util::codec::{Decoder, Encoder};
    let mut c = codec(Version::V1_2);
    let mut out = BytesMut::new();
    Encoder::<Frame>::encode(&mut c, Frame::receipt("r:1"), &mut out).unwrap();
    Encoder::<Heartbeat>::encode(&mut c, Heartbeat, &mut out).unwrap();
    Encoder::<&Frame>::encode(&mut c, &Frame::receipt("2"), &mut out).unwrap();
    assert_eq!(
        &out[..],
        b"RECEIPT\nreceipt-id:r\\c1\n\n\0\nRECEIPT\nreceipt-id:2\n\n\0"
    );
    let first = Decoder::decode(&mut c, &mut out).unwrap();
    assert_eq!(first, Some(Decoded::Frame(Frame::receipt("r:1"))));
    // The heart-beat after the first frame was in the same buffer: eaten with it.
    assert_eq!(
        Decoder::decode_eof(&mut c, &mut out).unwrap(),
        Some(Decoded::Frame(Frame::receipt("2")))
    );
    assert_eq!(Decoder::decode_eof(&mut c, &mut out).unwrap(), None);
}

/// What the encoder does to headers: the first `content-length` says the body's length,
/// and a non-empty body without one gets one at the end.
fn normalized(f: &Frame) -> Frame {
    let mut f = f.clone();
    let len = f.body.len().to_string();
    match f.headers.iter_mut().find(|(n, _)| n == "content-length") {
        Some((_, v)) => *v = len,
        None if !f.body.is_empty() => f.headers.push(("content-length".into(), len)),
        None => {}
    }
    f
}

fn any_command() -> impl Strategy<Value = Command> {
    prop::sample::select(Command::ALL.to_vec())
}

fn any_version() -> impl Strategy<Value = Version> {
    prop::sample::select(Version::ALL.to_vec())
}

/// Header text with plenty of the octets that need escaping.
fn header_text(min: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::sample::select(vec![':', '\n', '\r', '\\', ' ', '\0', 'é', '€']),
            7 => any::<char>(),
        ],
        min..12,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

/// Cuts `bytes` at arbitrary points.
fn chunked<'a>(bytes: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut prev = 0;
    for p in points.into_iter().chain([bytes.len()]) {
        out.push(&bytes[prev..p]);
        prev = p;
    }
    out
}

proptest! {
    /// Frames with arbitrary headers (escapable octets included) and binary bodies survive
    /// encode → decode in 1.2, whatever the chunking, several in a row with heart-beats.
    #[test]
    fn round_trip_v12(
        frames_in in prop::collection::vec(
            (
                any_command().prop_filter("escaped commands", |c| c.escapes_headers()),
                prop::collection::vec((header_text(1), header_text(0)), 0..6),
                prop::collection::vec(any::<u8>(), 0..64),
            ),
            1..4,
        ),
        beats in prop::collection::vec(0usize..3, 4),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut wire = BytesMut::new();
        let mut want = Vec::new();
        for (i, (command, headers, body)) in frames_in.into_iter().enumerate() {
            let headers: Vec<_> = headers
                .into_iter()
                .filter(|(n, _)| n != "content-length" && !n.starts_with('\0'))
                .collect();
            let f = Frame { command, headers, body: Bytes::from(body) };
            f.encode(Version::V1_2, &mut wire);
            wire.extend_from_slice(&b"\n\n\n"[..beats[i]]);
            want.push(normalized(&f));
        }
        let got = frames(feed(&mut codec(Version::V1_2), chunked(&wire, &cuts)).unwrap());
        prop_assert_eq!(got, want);
    }

    /// 1.1 (no `\r` escape) and unescaped frames (1.0, CONNECT, CONNECTED) round-trip every
    /// header they can represent.
    #[test]
    fn round_trip_other_escapings(
        version in any_version(),
        command in any_command(),
        headers in prop::collection::vec((header_text(1), header_text(0)), 0..6),
        body in prop::collection::vec(any::<u8>(), 0..64),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let esc = Escaping::of(version, command);
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .map(|(n, v)| match esc {
                Escaping::V1_2 => (n, v),
                Escaping::V1_1 => (n, v.trim_end_matches('\r').to_owned()),
                Escaping::None => (
                    n.replace([':', '\n'], "x"),
                    v.replace('\n', "x").trim_end_matches('\r').to_owned(),
                ),
            })
            .filter(|(n, _)| n != "content-length" && !n.starts_with('\0'))
            .collect();
        let f = Frame { command, headers, body: Bytes::from(body) };
        let wire = f.to_bytes(version);
        let got = frames(feed(&mut codec(version), chunked(&wire, &cuts)).unwrap());
        prop_assert_eq!(got, vec![normalized(&f)]);
    }

    /// Arbitrary bytes never panic the decoder, and whatever it accepts re-encodes to bytes
    /// that decode to the same frame (what the fuzz target checks, at proptest's pace).
    #[test]
    fn garbage_never_panics(
        version in any_version(),
        bytes in prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(b"SEND\nCONNECT:\\\r\0ab-content-length:12".to_vec()),
                1 => any::<u8>(),
            ],
            0..200,
        ),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut c = StompCodec::new(Limits { max_frame: 150, max_header_block: 100, max_headers: 8, max_header_len: 40, max_body: 64 });
        c.set_version(version);
        let mut buf = BytesMut::new();
        'feed: for chunk in chunked(&bytes, &cuts) {
            buf.extend_from_slice(chunk);
            loop {
                match c.decode(&mut buf) {
                    Ok(Some(Decoded::Frame(f))) => {
                        let again = frames(feed(&mut codec(version), [&f.to_bytes(version)[..]]).unwrap());
                        prop_assert_eq!(again, vec![normalized(&f)]);
                    }
                    Ok(Some(Decoded::Heartbeat)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        prop_assert!(!e.to_string().contains('\n'));
                        break 'feed;
                    }
                }
            }
        }
    }
}
