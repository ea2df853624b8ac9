//! Herald's wire codecs and webhook signatures, pure code with no sockets: the doors in
//! `herald-server` wire them to connections, and clients (`herald tail`, `herald bench`) use
//! the decoders.
//!
//! # Layout
//! - [`sockjs`]: SockJS 0.3.3 framing of SPEC 6.3 (frames, transport wrappings, payload
//!   parsing, the iframe page and `info`).
//! - [`sse`]: Server-Sent Events encoder (event frames, `retry`, `: ping`) and an
//!   incremental decoder.
//! - [`stomp`]: STOMP 1.0–1.2 of SPEC 6.2: frame codec with limits, the session state
//!   machine (negotiation, heart-beats, receipts, transactions, acks) and `MESSAGE` frames
//!   encoded once per event.
//! - [`webhook`]: webhook signatures of SPEC 7: `whsec_` secrets and `whsk_`/`whpk_` ed25519
//!   keys, Standard Webhooks `v1`/`v1a` signing and verification (rotation, timestamp
//!   tolerance), GitHub's `x-hub-signature-256`, and a generic HMAC header; constant-time.
//! - [`ws_json`]: the JSON WebSocket protocol of SPEC 6.1 (client messages parsed, server
//!   messages encoded).
//!
//! Encodings of an event are cached on the event itself ([`herald_core::Event::encoded`]),
//! one slot per transport (see [`slots`]), so a fan-out to 10,000 subscribers encodes once.

pub mod sockjs;
pub mod sse;
pub mod stomp;
pub mod webhook;
pub mod ws_json;

/// Which [`herald_core::Event::encoded`] slot each transport uses.
pub mod slots {
    /// SSE frame bytes.
    pub const SSE: usize = 0;
    /// WebSocket JSON `event` message text.
    pub const WS_JSON: usize = 1;
    /// JSON object of the event (history pages, webhooks).
    pub const JSON: usize = 2;
    /// STOMP `MESSAGE` frame without its per-subscription head.
    pub const STOMP: usize = 3;
    /// The same, escaped as the inside of a JSON string (STOMP over SockJS).
    pub const SOCKJS_STOMP: usize = 4;
    /// A whole STOMP `MESSAGE` frame with the head of the first subscription that asked.
    pub const STOMP_FRAME: usize = 5;
}

/// The event's JSON object (`{"id","topic","event","data","time"}`), cached on the event.
pub fn event_json(ev: &herald_core::Event) -> bytes::Bytes {
    ev.encoded(slots::JSON, |ev| {
        let mut out = Vec::with_capacity(ev.data.get().len() + 96);
        ev.write_json(&mut out);
        out.into()
    })
}
