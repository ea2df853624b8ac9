//! Arbitrary bytes into the STOMP decoder: it must never panic, never report an error whose
//! text would break the `ERROR` frame it goes into, and every frame it accepts must encode
//! to bytes that decode to the same frame (up to the `content-length` the encoder sets).
//!
//! The first input byte picks the version (escaping) and how the rest is cut into reads.

#![no_main]

use bytes::BytesMut;
use herald_protocol::stomp::{Decoded, Frame, Limits, StompCodec, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let version = Version::ALL[usize::from(control % 3)];
    let read_size = 1 + usize::from(control >> 2);
    // Small limits so that the limit paths are reached too.
    let mut codec = StompCodec::new(Limits {
        max_frame: 4096,
        max_header_block: 1024,
        max_headers: 16,
        max_header_len: 256,
        max_body: 2048,
    });
    codec.set_version(version);
    let mut buf = BytesMut::new();
    for read in input.chunks(read_size) {
        buf.extend_from_slice(read);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(Decoded::Frame(frame))) => check_round_trip(&frame, version),
                Ok(Some(Decoded::Heartbeat)) => {}
                Ok(None) => break,
                Err(e) => {
                    let message = e.to_string();
                    assert!(!message.contains(['\n', '\r', '\0']), "{message:?}");
                    return;
                }
            }
        }
    }
    let _ = codec.decode_eof(&mut buf);
});

fn check_round_trip(frame: &Frame, version: Version) {
    let wire = frame.to_bytes(version);
    let mut codec = StompCodec::default();
    codec.set_version(version);
    let mut buf = BytesMut::from(&wire[..]);
    match codec.decode(&mut buf) {
        Ok(Some(Decoded::Frame(again))) => {
            assert_eq!(again, normalized(frame), "wire: {:?}", wire);
            assert!(buf.is_empty(), "left over: {buf:?}");
        }
        other => panic!("re-encoded frame did not decode: {other:?}, wire: {wire:?}"),
    }
}

/// What the encoder does to headers: the first `content-length` gets the body's length, and
/// a non-empty body without one gets one at the end.
fn normalized(frame: &Frame) -> Frame {
    let mut f = frame.clone();
    let len = f.body.len().to_string();
    match f.headers.iter_mut().find(|(n, _)| n == "content-length") {
        Some((_, v)) => *v = len,
        None if !f.body.is_empty() => f.headers.push(("content-length".into(), len)),
        None => {}
    }
    f
}
