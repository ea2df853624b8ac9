//! STOMP 1.0, 1.1 and 1.2 (SPEC 6.2), server side, as pure code: frames and their codec, the
//! session state machine, acknowledgment bookkeeping and the shared `MESSAGE` encoding.
//! No sockets and no timers: the STOMP door in `herald-server` owns the connection (TCP,
//! WebSocket or SockJS), feeds bytes to a [`StompCodec`], frames to a [`Session`], and
//! carries out the [`Action`]s it gets back.
//!
//! # Layout
//! - [`frame`]: [`Frame`], [`Command`], [`Version`], header escaping and the encoder.
//! - [`codec`]: [`StompCodec`], the incremental decoder with [`Limits`] (also a
//!   `tokio_util` `Decoder`/`Encoder`), reporting heart-beats as [`Decoded::Heartbeat`].
//! - [`session`]: [`Session`]: version and heart-beat negotiation, required headers,
//!   receipts, transactions, errors; what to do comes back as [`Action`]s.
//! - [`ack`]: [`AckTracker`]: unacknowledged deliveries and what an `ACK`/`NACK` covers.
//! - [`message`]: [`SharedMessage`]: an event's `MESSAGE` encoded once, spliced per
//!   subscription.
//! - [`StompError`]: malformed or oversized input, worded for the `ERROR` frame.

pub mod ack;
pub mod codec;
mod error;
pub mod frame;
pub mod message;
pub mod session;

pub use ack::{AckMode, AckTarget, AckTracker, Acked};
pub use codec::{Decoded, Heartbeat, Limits, StompCodec};
pub use error::StompError;
pub use frame::{Command, Escaping, Frame, HEARTBEAT, Version, encode};
pub use message::{SharedMessage, event_frame_after, event_message, event_message_for_sockjs};
pub use session::{
    Action, BodyError, Credentials, Destination, Publish, Session, SessionConfig, Subscribe,
};

#[cfg(test)]
mod tests;
