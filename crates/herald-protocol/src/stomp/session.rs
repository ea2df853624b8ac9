//! The server side of one STOMP session as a state machine without I/O.
//!
//! The adapter that owns the connection feeds it what arrives ([`Session::on_frame`],
//! [`Session::on_heartbeat`]) and carries out the [`Action`]s it returns, in order:
//!
//! ```text
//! CONNECT  -> [Authenticate]        adapter checks credentials, then accept() -> [Send(CONNECTED)]
//!                                                                  or fail()   -> [Send(ERROR), Close]
//! SEND     -> [Publish, Send(RECEIPT)?]
//! SUBSCRIBE-> [Subscribe, Send(RECEIPT)?]
//! bad frame-> [Send(ERROR), Close]
//! ```
//!
//! A frame the codec cannot read goes to [`Session::on_decode_error`].
//! When carrying out an action fails (a publish the Hub refuses, a destination the principal
//! may not read), the adapter drops the remaining actions and sends what
//! [`Session::fail`] returns: `ERROR` (with the `receipt-id` of the frame being handled) and
//! `Close`. Timers are the adapter's too: it calls [`Session::check`] at
//! [`Session::next_check`] and sends a heart-beat or closes a silent peer as told.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use bytes::Bytes;
use serde_json::value::RawValue;

use super::{
    ack::{AckMode, AckTarget, AckTracker, Acked},
    frame::{Command, Frame, Version},
};

/// Settings of the server side, the same for every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// `(sx, sy)`: the smallest interval at which we can send heart-beats and the interval
    /// at which we want them, in ms (`stomp.heartbeat`, default `10000,10000`); 0 = none.
    pub server_heartbeat: (u64, u64),
    /// A silent peer is considered dead after this many negotiated intervals (timing slack
    /// the specification asks receivers to allow).
    pub heartbeat_grace: u32,
    /// `server` header of `CONNECTED` (`name/version`).
    pub server_name: String,
    /// `session` header of `CONNECTED`, when set.
    pub session_id: Option<String>,
    /// Open subscriptions per connection (`limits.max_subscriptions_per_connection`).
    pub max_subscriptions: usize,
    /// Open transactions per connection.
    pub max_transactions: usize,
    /// `SEND`, `ACK` and `NACK` frames buffered per transaction.
    pub max_transaction_frames: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            server_heartbeat: (10_000, 10_000),
            heartbeat_grace: 2,
            server_name: concat!("herald/", env!("CARGO_PKG_VERSION")).to_owned(),
            session_id: None,
            max_subscriptions: 100,
            max_transactions: 16,
            max_transaction_frames: 1000,
        }
    }
}

/// What `CONNECT` presented, for the adapter to check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// `login` header.
    pub login: Option<String>,
    /// `passcode` header (an API key, SPEC 6.2).
    pub passcode: Option<String>,
    /// `Authorization` header (`Bearer …`), also accepted in lower case.
    pub authorization: Option<String>,
    /// `host` header (virtual host; informational).
    pub host: Option<String>,
}

/// A `SUBSCRIBE` to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Subscription id, unique on the connection (the `destination` in STOMP 1.0 when the
    /// client gave none). `MESSAGE` frames carry it as `subscription`.
    pub id: String,
    /// `destination` as sent (`/topic/<pattern>`, `/queue/<name>`, …).
    pub destination: String,
    /// Acknowledgment mode.
    pub ack: AckMode,
    /// Every header of the frame (server-specific ones such as `after` included).
    pub headers: Vec<(String, String)>,
}

impl Subscribe {
    /// A header of the `SUBSCRIBE` frame (first occurrence).
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }
}

/// One message to publish (a `SEND`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// `destination` as sent.
    pub destination: String,
    /// `content-type`, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Bytes,
    /// Every header of the frame (`event` sets the event type, user headers, …).
    pub headers: Vec<(String, String)>,
}

/// Why a `SEND` body cannot become event data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// `content-type` said JSON, the body is not.
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    /// A non-JSON body must be UTF-8 text (it becomes a JSON string).
    #[error("body is not UTF-8 text; send JSON with content-type application/json")]
    NotText,
}

impl Publish {
    /// A header of the `SEND` frame (first occurrence).
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }

    /// The `event` header: the event type (SPEC 6.2).
    pub fn event_type(&self) -> Option<&str> {
        self.header("event")
    }

    /// Whether `content-type` is JSON (`application/json`, `…+json`, parameters ignored).
    pub fn is_json(&self) -> bool {
        self.content_type.as_deref().is_some_and(is_json_type)
    }

    /// The event data (SPEC 6.2): the body as compact JSON when `content-type` is JSON,
    /// otherwise the body's text as a JSON string.
    ///
    /// # Errors
    /// [`BodyError`] when a JSON body does not parse or a text body is not UTF-8.
    pub fn data(&self) -> Result<Box<RawValue>, BodyError> {
        if self.is_json() {
            let raw: Box<RawValue> = serde_json::from_slice(&self.body)
                .map_err(|e| BodyError::NotJson(e.to_string()))?;
            return Ok(herald_core::event::compact_json(raw));
        }
        let text = std::str::from_utf8(&self.body).map_err(|_| BodyError::NotText)?;
        let json = serde_json::to_string(text).map_err(|_| BodyError::NotText)?;
        RawValue::from_string(json).map_err(|_| BodyError::NotText)
    }
}

fn is_json_type(ct: &str) -> bool {
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

fn first<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// How a `destination` is routed (SPEC 6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination<'a> {
    /// `/topic/<pattern>`: the shared topic space.
    Topic(&'a str),
    /// `/queue/<name>`: competing consumers.
    Queue(&'a str),
    /// `/app/<name>`: application destinations.
    App(&'a str),
    /// Anything else.
    Other(&'a str),
}

impl<'a> Destination<'a> {
    /// Splits off the prefix (the rest may be empty; the caller validates it).
    pub fn parse(s: &'a str) -> Self {
        if let Some(t) = s.strip_prefix("/topic/") {
            Self::Topic(t)
        } else if let Some(q) = s.strip_prefix("/queue/") {
            Self::Queue(q)
        } else if let Some(a) = s.strip_prefix("/app/") {
            Self::App(a)
        } else {
            Self::Other(s)
        }
    }
}

/// Something the adapter must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write this frame, escaped for [`Session::version`].
    Send(Frame),
    /// Check the credentials of `CONNECT`, switch the codec to `version`, then call
    /// [`Session::accept`] or [`Session::fail`].
    Authenticate {
        /// What the client presented.
        credentials: Credentials,
        /// The negotiated version.
        version: Version,
    },
    /// Start a subscription (its ack mode is tracked by the session already).
    Subscribe(Subscribe),
    /// Stop a subscription.
    Unsubscribe {
        /// Subscription id.
        id: String,
        /// Messages it had delivered without an `ACK`, oldest first (redeliver for queues).
        unacked: Vec<String>,
    },
    /// Publish these messages as one batch (one `SEND`, or every `SEND` of a committed
    /// transaction).
    Publish {
        /// In `SEND` order.
        messages: Vec<Publish>,
        /// The committed transaction, if any.
        transaction: Option<String>,
    },
    /// These messages were consumed.
    Ack {
        /// Subscription and message ids.
        acked: Acked,
        /// The committed transaction, if any.
        transaction: Option<String>,
    },
    /// These messages were not consumed (redeliver or drop).
    Nack {
        /// Subscription and message ids.
        acked: Acked,
        /// The committed transaction, if any.
        transaction: Option<String>,
    },
    /// Write one heart-beat EOL ([`super::HEARTBEAT`]).
    Heartbeat,
    /// Close the connection (after writing what came before).
    Close,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TxItem {
    Publish(Publish),
    Ack(AckTarget),
    Nack(AckTarget),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for `CONNECT`/`STOMP`.
    New,
    /// `Authenticate` was returned; waiting for `accept`/`fail`.
    Authenticating,
    /// Open.
    Connected,
    /// `ERROR` or `DISCONNECT` happened: nothing more is processed.
    Closed,
}

/// Server side of one STOMP session.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    version: Option<Version>,
    /// Client's `heart-beat` header `(cx, cy)`.
    client_heartbeat: (u64, u64),
    send_every: Option<Duration>,
    expect_every: Option<Duration>,
    last_sent: Option<Instant>,
    last_received: Option<Instant>,
    /// `receipt` of the frame being handled, for `ERROR`'s `receipt-id`.
    receipt: Option<String>,
    subscriptions: HashMap<String, AckMode>,
    transactions: HashMap<String, Vec<TxItem>>,
    acks: AckTracker,
}

impl Session {
    /// A session waiting for `CONNECT`.
    pub fn new(config: SessionConfig) -> Self {
        Self {
            config,
            state: State::New,
            version: None,
            client_heartbeat: (0, 0),
            send_every: None,
            expect_every: None,
            last_sent: None,
            last_received: None,
            receipt: None,
            subscriptions: HashMap::new(),
            transactions: HashMap::new(),
            acks: AckTracker::new(),
        }
    }

    /// The negotiated version, once `CONNECT` was read.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// Whether `CONNECTED` was sent and the session is not closed.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Whether the session ended (`ERROR` sent, `DISCONNECT` or dead peer).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Negotiated heart-beat intervals: `(we send every, we expect every)`.
    pub fn heartbeats(&self) -> (Option<Duration>, Option<Duration>) {
        (self.send_every, self.expect_every)
    }

    /// The subscription ids and their ack modes.
    pub fn subscriptions(&self) -> impl Iterator<Item = (&str, AckMode)> {
        self.subscriptions.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// The delivered-but-unacknowledged messages.
    pub fn acks(&self) -> &AckTracker {
        &self.acks
    }

    /// Records a `MESSAGE` sent on `subscription`; returns the `ack` header value it must
    /// carry (`None` for `auto` subscriptions).
    pub fn delivered(&mut self, subscription: &str, message_id: &str) -> Option<String> {
        self.acks
            .delivered_with(subscription, || message_id.to_owned())
    }

    /// [`delivered`](Self::delivered) with the message id made only when it is kept.
    pub fn delivered_with(
        &mut self,
        subscription: &str,
        message_id: impl FnOnce() -> String,
    ) -> Option<String> {
        self.acks.delivered_with(subscription, message_id)
    }

    /// The connection is gone (or closing): open transactions are aborted, and the
    /// unacknowledged messages are returned for redelivery.
    pub fn end(&mut self) -> Vec<Acked> {
        self.state = State::Closed;
        self.transactions.clear();
        self.acks.drain()
    }

    /// Data arrived that was not a frame (heart-beat EOLs): the peer is alive.
    pub fn on_heartbeat(&mut self, now: Instant) {
        self.last_received = Some(now);
    }

    /// The adapter wrote to the peer (a `MESSAGE`, say): postpones our next heart-beat.
    /// Frames returned by the session itself count as sent when returned.
    pub fn on_sent(&mut self, now: Instant) {
        self.last_sent = Some(now);
    }

    /// Handles one frame from the client.
    pub fn on_frame(&mut self, frame: Frame, now: Instant) -> Vec<Action> {
        self.last_received = Some(now);
        self.receipt = None;
        if self.state == State::Closed {
            return Vec::new();
        }
        // Kept for `ERROR`'s `receipt-id` whatever the frame; `RECEIPT`s are only sent for
        // frames after CONNECT (whose answer is `CONNECTED`).
        self.receipt = frame.header("receipt").map(str::to_owned);
        let actions = match self.state {
            State::New => match frame.command {
                Command::Connect | Command::Stomp => self.connect(&frame),
                other => self.error(&format!(
                    "expected CONNECT or STOMP as the first frame, got {other}"
                )),
            },
            State::Authenticating => self.error(&format!(
                "{} before the session was accepted",
                frame.command
            )),
            State::Connected => self.connected(frame),
            State::Closed => Vec::new(),
        };
        if actions.iter().any(|a| matches!(a, Action::Send(_))) {
            self.last_sent = Some(now);
        }
        actions
    }

    /// The credentials of `CONNECT` are good: returns `CONNECTED`.
    pub fn accept(&mut self, now: Instant) -> Vec<Action> {
        if self.state != State::Authenticating {
            return Vec::new();
        }
        self.state = State::Connected;
        let version = self.version.unwrap_or(Version::V1_0);
        let (sx, sy) = self.config.server_heartbeat;
        let (cx, cy) = self.client_heartbeat;
        self.send_every = interval(sx, cy);
        self.expect_every = interval(cx, sy);
        self.last_sent = Some(now);
        self.last_received = Some(now);
        let mut f = Frame::new(Command::Connected)
            .with_header("version", version.as_str())
            .with_header("heart-beat", format!("{sx},{sy}"))
            .with_header("server", self.config.server_name.clone());
        if let Some(id) = &self.config.session_id {
            f = f.with_header("session", id.clone());
        }
        vec![Action::Send(f)]
    }

    /// The codec could not read the next frame: returns `ERROR` with the decoder's message
    /// (no `receipt-id`: the frame's headers are unknown), then `Close`.
    pub fn on_decode_error(&mut self, err: &super::StompError) -> Vec<Action> {
        self.receipt = None;
        self.fail(&err.to_string())
    }

    /// Something went wrong carrying out an action, or the credentials were refused:
    /// returns `ERROR` with `message` (and the `receipt-id` of the frame being handled),
    /// then `Close`.
    pub fn fail(&mut self, message: &str) -> Vec<Action> {
        if self.state == State::Closed {
            return vec![Action::Close];
        }
        self.error(message)
    }

    /// What to do now about heart-beats: `Heartbeat` when we have been quiet for our
    /// interval (the session counts it as sent), `Close` when the peer has been silent for
    /// `heartbeat_grace` of its intervals (nothing is sent to a dead peer).
    pub fn check(&mut self, now: Instant) -> Option<Action> {
        if self.state != State::Connected {
            return None;
        }
        if let (Some(every), Some(last)) = (self.expect_every, self.last_received)
            && now.saturating_duration_since(last) > every * self.config.heartbeat_grace.max(1)
        {
            self.end_session();
            return Some(Action::Close);
        }
        if let (Some(every), Some(last)) = (self.send_every, self.last_sent)
            && now.saturating_duration_since(last) >= every
        {
            self.last_sent = Some(now);
            return Some(Action::Heartbeat);
        }
        None
    }

    /// When [`Session::check`] next has something to do (`None`: no heart-beats).
    pub fn next_check(&self) -> Option<Instant> {
        if self.state != State::Connected {
            return None;
        }
        let send = self.send_every.zip(self.last_sent).map(|(e, l)| l + e);
        let dead = self
            .expect_every
            .zip(self.last_received)
            .map(|(e, l)| l + e * self.config.heartbeat_grace.max(1) + Duration::from_millis(1));
        match (send, dead) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn end_session(&mut self) {
        self.state = State::Closed;
        self.transactions.clear();
    }

    /// `ERROR` + `Close`, and nothing more is processed.
    fn error(&mut self, message: &str) -> Vec<Action> {
        let receipt = self.receipt.take();
        self.end_session();
        vec![
            Action::Send(Frame::error(message, receipt.as_deref(), None)),
            Action::Close,
        ]
    }

    fn connect(&mut self, frame: &Frame) -> Vec<Action> {
        let Some(version) = Version::negotiate(frame.header("accept-version")) else {
            let list = "1.0,1.1,1.2";
            self.end_session();
            let f = Frame::new(Command::Error)
                .with_header("version", list)
                .with_header("content-type", "text/plain")
                .with_header("message", format!("Supported protocol versions are {list}"))
                .with_body(&b"Supported protocol versions are 1.0 1.1 1.2"[..]);
            return vec![Action::Send(f), Action::Close];
        };
        self.version = Some(version);
        match frame.header("heart-beat").map(parse_heartbeat) {
            None => self.client_heartbeat = (0, 0),
            Some(Some(hb)) => self.client_heartbeat = hb,
            Some(None) => {
                return self.error(&format!(
                    "invalid heart-beat header {:?}: expected two integers, as 10000,10000",
                    frame.header("heart-beat").unwrap_or_default()
                ));
            }
        }
        self.state = State::Authenticating;
        let owned = |n: &str| frame.header(n).map(str::to_owned);
        let credentials = Credentials {
            login: owned("login"),
            passcode: owned("passcode"),
            authorization: owned("Authorization").or_else(|| owned("authorization")),
            host: owned("host"),
        };
        vec![Action::Authenticate {
            credentials,
            version,
        }]
    }

    fn connected(&mut self, frame: Frame) -> Vec<Action> {
        let version = self.version.unwrap_or(Version::V1_0);
        let mut actions = match frame.command {
            Command::Connect | Command::Stomp => return self.error("already connected"),
            Command::Send => match self.send(frame) {
                Ok(a) => a,
                Err(e) => return self.error(&e),
            },
            Command::Subscribe => match self.subscribe(frame, version) {
                Ok(a) => a,
                Err(e) => return self.error(&e),
            },
            Command::Unsubscribe => {
                let id = frame
                    .header("id")
                    .or_else(|| (version == Version::V1_0).then(|| frame.header("destination"))?);
                let Some(id) = id else {
                    return self.error("UNSUBSCRIBE frame has no id header");
                };
                if self.subscriptions.remove(id).is_none() {
                    return self.error(&format!("no subscription with id {id:?}"));
                }
                let unacked = self.acks.unsubscribe(id);
                vec![Action::Unsubscribe {
                    id: id.to_owned(),
                    unacked,
                }]
            }
            Command::Ack | Command::Nack => match self.ack(&frame, version) {
                Ok(a) => a,
                Err(e) => return self.error(&e),
            },
            Command::Begin => {
                let Some(tx) = frame.header("transaction") else {
                    return self.error("BEGIN frame has no transaction header");
                };
                if self.transactions.contains_key(tx) {
                    return self.error(&format!("transaction {tx:?} is already open"));
                }
                if self.transactions.len() >= self.config.max_transactions {
                    return self.error(&format!(
                        "too many open transactions (at most {})",
                        self.config.max_transactions
                    ));
                }
                self.transactions.insert(tx.to_owned(), Vec::new());
                Vec::new()
            }
            Command::Commit => match self.commit(&frame) {
                Ok(a) => a,
                Err(e) => return self.error(&e),
            },
            Command::Abort => {
                let Some(tx) = frame.header("transaction") else {
                    return self.error("ABORT frame has no transaction header");
                };
                if self.transactions.remove(tx).is_none() {
                    return self.error(&format!("unknown transaction {tx:?}"));
                }
                Vec::new()
            }
            Command::Disconnect => {
                let mut out = Vec::with_capacity(2);
                if let Some(r) = self.receipt.take() {
                    out.push(Action::Send(Frame::receipt(&r)));
                }
                out.push(Action::Close);
                self.end_session();
                return out;
            }
            Command::Connected | Command::Message | Command::Receipt | Command::Error => {
                return self.error(&format!("{} is a server frame", frame.command));
            }
        };
        if let Some(r) = &self.receipt {
            actions.push(Action::Send(Frame::receipt(r)));
        }
        actions
    }

    fn send(&mut self, frame: Frame) -> Result<Vec<Action>, String> {
        let Some(destination) = frame.header("destination").map(str::to_owned) else {
            return Err("SEND frame has no destination header".into());
        };
        let transaction = frame.header("transaction").map(str::to_owned);
        let content_type = frame.header("content-type").map(str::to_owned);
        let publish = Publish {
            destination,
            content_type,
            body: frame.body,
            headers: frame.headers,
        };
        match transaction {
            Some(tx) => {
                self.buffer(&tx, TxItem::Publish(publish))?;
                Ok(Vec::new())
            }
            None => Ok(vec![Action::Publish {
                messages: vec![publish],
                transaction: None,
            }]),
        }
    }

    fn buffer(&mut self, tx: &str, item: TxItem) -> Result<(), String> {
        let max = self.config.max_transaction_frames;
        let Some(items) = self.transactions.get_mut(tx) else {
            return Err(format!("unknown transaction {tx:?}"));
        };
        if items.len() >= max {
            return Err(format!("transaction {tx:?} has more than {max} frames"));
        }
        items.push(item);
        Ok(())
    }

    fn subscribe(&mut self, frame: Frame, version: Version) -> Result<Vec<Action>, String> {
        let Some(destination) = frame.header("destination") else {
            return Err("SUBSCRIBE frame has no destination header".into());
        };
        let id = match frame.header("id") {
            Some(id) => id,
            // 1.0 made the id optional; the destination then names the subscription.
            None if version == Version::V1_0 => destination,
            None => return Err("SUBSCRIBE frame has no id header".into()),
        };
        let Some(ack) = AckMode::parse(frame.header("ack")) else {
            return Err(format!(
                "invalid ack mode {:?}: use auto, client or client-individual",
                frame.header("ack").unwrap_or_default()
            ));
        };
        if self.subscriptions.contains_key(id) {
            return Err(format!("subscription id {id:?} is already in use"));
        }
        if self.subscriptions.len() >= self.config.max_subscriptions {
            return Err(format!(
                "too many subscriptions (at most {} per connection)",
                self.config.max_subscriptions
            ));
        }
        let (id, destination) = (id.to_owned(), destination.to_owned());
        self.subscriptions.insert(id.clone(), ack);
        self.acks.subscribe(&id, ack);
        Ok(vec![Action::Subscribe(Subscribe {
            id,
            destination,
            ack,
            headers: frame.headers,
        })])
    }

    fn ack(&mut self, frame: &Frame, version: Version) -> Result<Vec<Action>, String> {
        let cmd = frame.command;
        let nack = cmd == Command::Nack;
        if nack && version == Version::V1_0 {
            return Err("NACK is not part of STOMP 1.0".into());
        }
        let id = frame.header("id").map(str::to_owned);
        let message_id = frame.header("message-id").map(str::to_owned);
        let subscription = frame.header("subscription").map(str::to_owned);
        // 1.2 names the MESSAGE's `ack`; 1.0/1.1 its message-id (and subscription). Accept
        // the other style too when the expected header is missing.
        let target = match (version, id, message_id) {
            (Version::V1_2, Some(id), _) => AckTarget::Id(id),
            (_, _, Some(message_id)) => AckTarget::Message {
                subscription,
                message_id,
            },
            (_, Some(id), None) => AckTarget::Id(id),
            (Version::V1_2, None, None) => return Err(format!("{cmd} frame has no id header")),
            (_, None, None) => return Err(format!("{cmd} frame has no message-id header")),
        };
        if let Some(tx) = frame.header("transaction") {
            // Checked now, settled at COMMIT (an ABORT leaves the messages unacknowledged).
            if self.acks.covers(&target).is_none() {
                return Err(unknown_ack(cmd, &target));
            }
            let item = if nack {
                TxItem::Nack(target)
            } else {
                TxItem::Ack(target)
            };
            self.buffer(tx, item)?;
            return Ok(Vec::new());
        }
        let acked = self
            .acks
            .settle(&target)
            .ok_or_else(|| unknown_ack(cmd, &target))?;
        Ok(vec![ack_action(nack, acked, None)])
    }

    fn commit(&mut self, frame: &Frame) -> Result<Vec<Action>, String> {
        let Some(tx) = frame.header("transaction") else {
            return Err("COMMIT frame has no transaction header".into());
        };
        let Some(items) = self.transactions.remove(tx) else {
            return Err(format!("unknown transaction {tx:?}"));
        };
        let mut messages = Vec::new();
        let mut settle = Vec::new();
        for item in items {
            match item {
                TxItem::Publish(p) => messages.push(p),
                TxItem::Ack(t) => settle.push((false, t)),
                TxItem::Nack(t) => settle.push((true, t)),
            }
        }
        let mut out = Vec::with_capacity(settle.len() + 2);
        if !messages.is_empty() {
            out.push(Action::Publish {
                messages,
                transaction: Some(tx.to_owned()),
            });
        }
        for (nack, target) in settle {
            // A cumulative ACK earlier in the transaction (or outside it since) may have
            // settled this one already: nothing left to do for it.
            if let Some(acked) = self.acks.settle(&target) {
                out.push(ack_action(nack, acked, Some(tx.to_owned())));
            }
        }
        Ok(out)
    }
}

fn ack_action(nack: bool, acked: Acked, transaction: Option<String>) -> Action {
    if nack {
        Action::Nack { acked, transaction }
    } else {
        Action::Ack { acked, transaction }
    }
}

fn unknown_ack(cmd: Command, target: &AckTarget) -> String {
    match target {
        AckTarget::Id(id) => format!("{cmd} for unknown or already acknowledged ack id {id:?}"),
        AckTarget::Message { message_id, .. } => {
            format!("{cmd} for unknown or already acknowledged message-id {message_id:?}")
        }
    }
}

/// `cx,cy` → `(cx, cy)`.
fn parse_heartbeat(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// The MAX rule: none if either side says 0, else the larger of the two.
fn interval(can: u64, want: u64) -> Option<Duration> {
    (can != 0 && want != 0).then(|| Duration::from_millis(can.max(want)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(command: Command, headers: &[(&str, &str)]) -> Frame {
        headers
            .iter()
            .fold(Frame::new(command), |f, (n, v)| f.with_header(*n, *v))
    }

    fn sent(actions: &[Action]) -> Vec<&Frame> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    /// The ERROR frame of `actions`, checking that `Close` follows it.
    fn error_of(actions: &[Action]) -> &Frame {
        match actions {
            [Action::Send(f), Action::Close] if f.command == Command::Error => f,
            other => panic!("expected ERROR then Close, got {other:?}"),
        }
    }

    fn config() -> SessionConfig {
        SessionConfig {
            server_heartbeat: (10_000, 10_000),
            session_id: Some("s-1".into()),
            max_subscriptions: 3,
            max_transactions: 2,
            max_transaction_frames: 3,
            ..SessionConfig::default()
        }
    }

    /// A session past CONNECT/CONNECTED with `accept-version: version`.
    fn open(version: &str, now: Instant) -> Session {
        let mut s = Session::new(config());
        let a = s.on_frame(frame(Command::Connect, &[("accept-version", version)]), now);
        assert!(matches!(a[..], [Action::Authenticate { .. }]), "{a:?}");
        let a = s.accept(now);
        assert_eq!(sent(&a)[0].command, Command::Connected);
        s
    }

    #[test]
    fn negotiates_the_highest_common_version() {
        let now = Instant::now();
        let mut s = Session::new(config());
        let a = s.on_frame(
            frame(
                Command::Connect,
                &[
                    ("accept-version", "1.0,1.1,2.0"),
                    ("host", "stomp.github.org"),
                    ("login", "me"),
                    ("passcode", "key:with:colons"),
                    ("Authorization", "Bearer t"),
                ],
            ),
            now,
        );
        assert_eq!(
            a,
            [Action::Authenticate {
                credentials: Credentials {
                    login: Some("me".into()),
                    passcode: Some("key:with:colons".into()),
                    authorization: Some("Bearer t".into()),
                    host: Some("stomp.github.org".into()),
                },
                version: Version::V1_1,
            }]
        );
        assert!(!s.is_connected());
        let a = s.accept(now);
        let connected = sent(&a)[0];
        assert_eq!(connected.command, Command::Connected);
        assert_eq!(connected.header("version"), Some("1.1"));
        assert_eq!(connected.header("heart-beat"), Some("10000,10000"));
        assert!(connected.header("server").unwrap().starts_with("herald/"));
        assert_eq!(connected.header("session"), Some("s-1"));
        assert!(s.is_connected());
        assert_eq!(s.version(), Some(Version::V1_1));

        // No accept-version: 1.0. The STOMP command is CONNECT by another name.
        let mut s = Session::new(config());
        s.on_frame(frame(Command::Stomp, &[]), now);
        assert_eq!(s.version(), Some(Version::V1_0));
        let mut s = Session::new(config());
        s.on_frame(frame(Command::Stomp, &[("accept-version", "1.2")]), now);
        assert_eq!(s.version(), Some(Version::V1_2));
    }

    #[test]
    fn no_common_version_is_an_error() {
        let mut s = Session::new(config());
        let a = s.on_frame(
            frame(Command::Connect, &[("accept-version", "2.0,2.1")]),
            Instant::now(),
        );
        let e = error_of(&a);
        assert_eq!(
            e.header("message"),
            Some("Supported protocol versions are 1.0,1.1,1.2")
        );
        assert_eq!(e.header("version"), Some("1.0,1.1,1.2"));
        assert_eq!(&e.body[..], b"Supported protocol versions are 1.0 1.1 1.2");
        assert!(s.is_closed());
        assert!(
            s.on_frame(frame(Command::Connect, &[]), Instant::now())
                .is_empty()
        );
    }

    #[test]
    fn refused_credentials() {
        let now = Instant::now();
        let mut s = Session::new(config());
        s.on_frame(frame(Command::Connect, &[("passcode", "wrong")]), now);
        let a = s.fail("invalid credentials");
        assert_eq!(error_of(&a).header("message"), Some("invalid credentials"));
        assert!(s.is_closed());
        assert!(s.accept(now).is_empty());
    }

    #[test]
    fn frames_before_connect_are_errors() {
        let now = Instant::now();
        let mut s = Session::new(config());
        let a = s.on_frame(
            frame(
                Command::Send,
                &[("destination", "/topic/a"), ("receipt", "r9")],
            ),
            now,
        );
        let e = error_of(&a);
        assert_eq!(
            e.header("message"),
            Some("expected CONNECT or STOMP as the first frame, got SEND")
        );
        assert_eq!(e.header("receipt-id"), Some("r9"));
        // Frames while the adapter authenticates are refused too.
        let mut s = Session::new(config());
        s.on_frame(frame(Command::Connect, &[]), now);
        let a = s.on_frame(frame(Command::Subscribe, &[]), now);
        error_of(&a);
    }

    #[test]
    fn heartbeat_negotiation_uses_the_max_rule() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let negotiate = |server: (u64, u64), client: Option<&str>| {
            let mut s = Session::new(SessionConfig {
                server_heartbeat: server,
                ..config()
            });
            let mut f = frame(Command::Connect, &[("accept-version", "1.2")]);
            if let Some(hb) = client {
                f = f.with_header("heart-beat", hb);
            }
            s.on_frame(f, t0);
            s.accept(t0);
            s.heartbeats()
        };
        // We send every MAX(sx, cy); we expect every MAX(cx, sy).
        assert_eq!(
            negotiate((10_000, 5_000), Some("2000,20000")),
            (Some(ms(20_000)), Some(ms(5_000)))
        );
        assert_eq!(
            negotiate((10_000, 10_000), Some("30000,1000")),
            (Some(ms(10_000)), Some(ms(30_000)))
        );
        // Zero on either side turns that direction off; no header is 0,0.
        assert_eq!(
            negotiate((10_000, 10_000), Some("0,1000")),
            (Some(ms(10_000)), None)
        );
        assert_eq!(
            negotiate((0, 10_000), Some("1000,1000")),
            (None, Some(ms(10_000)))
        );
        assert_eq!(negotiate((10_000, 10_000), None), (None, None));
        assert_eq!(negotiate((0, 0), Some("1000,1000")), (None, None));
        assert_eq!(
            negotiate((5, 5), Some(" 7 , 3 ")),
            (Some(ms(5)), Some(ms(7)))
        );
    }

    #[test]
    fn invalid_heartbeat_header() {
        for bad in ["", "10", "a,b", "1,2,3", "-1,5"] {
            let mut s = Session::new(config());
            let a = s.on_frame(
                frame(Command::Connect, &[("heart-beat", bad)]),
                Instant::now(),
            );
            assert!(
                error_of(&a)
                    .header("message")
                    .unwrap()
                    .starts_with("invalid heart-beat header"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn heartbeats_are_sent_and_silence_is_fatal() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Session::new(SessionConfig {
            server_heartbeat: (2_000, 1_000),
            heartbeat_grace: 2,
            ..config()
        });
        assert_eq!(s.check(t0), None, "not connected yet");
        assert_eq!(s.next_check(), None);
        s.on_frame(frame(Command::Connect, &[("heart-beat", "3000,1000")]), t0);
        s.accept(t0);
        // We send every 2 s, expect every 3 s, give up after 2 × 3 s of silence.
        assert_eq!(s.next_check(), Some(t0 + ms(2_000)));
        assert_eq!(s.check(t0 + ms(1_999)), None);
        assert_eq!(s.check(t0 + ms(2_000)), Some(Action::Heartbeat));
        assert_eq!(s.check(t0 + ms(2_001)), None);
        // Our own writes postpone the next beat.
        s.on_sent(t0 + ms(3_000));
        assert_eq!(s.check(t0 + ms(4_999)), None);
        assert_eq!(s.check(t0 + ms(5_000)), Some(Action::Heartbeat));
        // The peer's heart-beats (or frames) keep it alive.
        s.on_heartbeat(t0 + ms(5_500));
        assert_eq!(s.next_check(), Some(t0 + ms(7_000)));
        assert_eq!(s.check(t0 + ms(7_000)), Some(Action::Heartbeat));
        s.on_frame(
            frame(Command::Begin, &[("transaction", "t")]),
            t0 + ms(8_000),
        );
        assert_eq!(s.check(t0 + ms(9_000)), Some(Action::Heartbeat));
        assert_eq!(s.check(t0 + ms(11_000)), Some(Action::Heartbeat));
        assert_eq!(s.next_check(), Some(t0 + ms(13_000)));
        s.on_sent(t0 + ms(13_000));
        assert_eq!(s.next_check(), Some(t0 + ms(14_001)));
        assert_eq!(
            s.check(t0 + ms(14_000)),
            None,
            "exactly the grace: still alive"
        );
        assert_eq!(s.check(t0 + ms(14_001)), Some(Action::Close));
        assert!(s.is_closed());
        assert_eq!(s.check(t0 + ms(20_000)), None);
    }

    #[test]
    fn receipts_follow_the_action() {
        let now = Instant::now();
        let mut s = open("1.2", now);
        let a = s.on_frame(
            frame(
                Command::Subscribe,
                &[
                    ("id", "0"),
                    ("destination", "/topic/a.>"),
                    ("after", "5"),
                    ("receipt", "r1"),
                ],
            ),
            now,
        );
        match &a[..] {
            [Action::Subscribe(sub), Action::Send(r)] => {
                assert_eq!(sub.id, "0");
                assert_eq!(sub.destination, "/topic/a.>");
                assert_eq!(sub.ack, AckMode::Auto);
                assert_eq!(sub.header("after"), Some("5"));
                assert_eq!(r, &Frame::receipt("r1"));
            }
            other => panic!("{other:?}"),
        }
        let a = s.on_frame(
            frame(
                Command::Send,
                &[
                    ("destination", "/topic/a"),
                    ("content-type", "application/json"),
                    ("receipt", "r2"),
                ],
            )
            .with_body(&b"{}"[..]),
            now,
        );
        match &a[..] {
            [
                Action::Publish {
                    messages,
                    transaction: None,
                },
                Action::Send(r),
            ] => {
                assert_eq!(messages.len(), 1);
                assert_eq!(messages[0].destination, "/topic/a");
                assert_eq!(
                    messages[0].content_type.as_deref(),
                    Some("application/json")
                );
                assert_eq!(&messages[0].body[..], b"{}");
                assert_eq!(r.header("receipt-id"), Some("r2"));
            }
            other => panic!("{other:?}"),
        }
        let a = s.on_frame(
            frame(Command::Unsubscribe, &[("id", "0"), ("receipt", "r3")]),
            now,
        );
        assert_eq!(
            a,
            [
                Action::Unsubscribe {
                    id: "0".into(),
                    unacked: vec![]
                },
                Action::Send(Frame::receipt("r3"))
            ]
        );
        let a = s.on_frame(
            frame(Command::Begin, &[("transaction", "t"), ("receipt", "r4")]),
            now,
        );
        assert_eq!(a, [Action::Send(Frame::receipt("r4"))]);
        // A failure while carrying out an action names the frame's receipt.
        s.on_frame(
            frame(
                Command::Send,
                &[("destination", "/topic/x"), ("receipt", "r5")],
            ),
            now,
        );
        let e = s.fail("forbidden: you may not publish to x");
        assert_eq!(error_of(&e).header("receipt-id"), Some("r5"));
        assert!(s.is_closed());
        assert!(s.on_frame(frame(Command::Disconnect, &[]), now).is_empty());
    }

    #[test]
    fn decode_errors_close_without_a_stale_receipt() {
        let now = Instant::now();
        let mut s = open("1.2", now);
        s.on_frame(
            frame(Command::Begin, &[("transaction", "t"), ("receipt", "old")]),
            now,
        );
        let a = s.on_decode_error(&crate::stomp::StompError::BodyTooLarge(10));
        let e = error_of(&a);
        assert_eq!(e.header("message"), Some("frame body exceeds 10 bytes"));
        assert_eq!(e.header("receipt-id"), None);
        assert!(s.is_closed());
    }

    #[test]
    fn disconnect() {
        let now = Instant::now();
        let mut s = open("1.2", now);
        let a = s.on_frame(frame(Command::Disconnect, &[("receipt", "77")]), now);
        assert_eq!(a, [Action::Send(Frame::receipt("77")), Action::Close]);
        assert!(s.is_closed());
        let mut s = open("1.2", now);
        assert_eq!(
            s.on_frame(frame(Command::Disconnect, &[]), now),
            [Action::Close]
        );
    }

    #[test]
    fn required_headers() {
        let now = Instant::now();
        let cases: &[(&str, Frame, &str)] = &[
            (
                "1.2",
                frame(Command::Send, &[]),
                "SEND frame has no destination header",
            ),
            (
                "1.2",
                frame(Command::Subscribe, &[("id", "1")]),
                "SUBSCRIBE frame has no destination header",
            ),
            (
                "1.1",
                frame(Command::Subscribe, &[("destination", "/topic/a")]),
                "SUBSCRIBE frame has no id header",
            ),
            (
                "1.2",
                frame(Command::Unsubscribe, &[]),
                "UNSUBSCRIBE frame has no id header",
            ),
            (
                "1.2",
                frame(Command::Ack, &[]),
                "ACK frame has no id header",
            ),
            (
                "1.1",
                frame(Command::Nack, &[]),
                "NACK frame has no message-id header",
            ),
            (
                "1.0",
                frame(Command::Nack, &[("message-id", "1")]),
                "NACK is not part of STOMP 1.0",
            ),
            (
                "1.2",
                frame(Command::Begin, &[]),
                "BEGIN frame has no transaction header",
            ),
            (
                "1.2",
                frame(Command::Commit, &[]),
                "COMMIT frame has no transaction header",
            ),
            (
                "1.2",
                frame(Command::Abort, &[]),
                "ABORT frame has no transaction header",
            ),
            (
                "1.2",
                frame(Command::Commit, &[("transaction", "t")]),
                "unknown transaction \"t\"",
            ),
            (
                "1.2",
                frame(Command::Abort, &[("transaction", "t")]),
                "unknown transaction \"t\"",
            ),
            (
                "1.2",
                frame(
                    Command::Send,
                    &[("destination", "/a"), ("transaction", "t")],
                ),
                "unknown transaction \"t\"",
            ),
            (
                "1.2",
                frame(Command::Unsubscribe, &[("id", "9")]),
                "no subscription with id \"9\"",
            ),
            (
                "1.2",
                frame(
                    Command::Subscribe,
                    &[("id", "1"), ("destination", "/a"), ("ack", "manual")],
                ),
                "invalid ack mode \"manual\": use auto, client or client-individual",
            ),
            ("1.2", frame(Command::Connect, &[]), "already connected"),
            (
                "1.2",
                frame(Command::Message, &[]),
                "MESSAGE is a server frame",
            ),
            (
                "1.2",
                frame(Command::Ack, &[("id", "404")]),
                "ACK for unknown or already acknowledged ack id \"404\"",
            ),
        ];
        for (version, f, message) in cases {
            let mut s = open(version, now);
            let f = f.clone().with_header("receipt", "rx");
            let a = s.on_frame(f, now);
            let e = error_of(&a);
            assert_eq!(e.header("message"), Some(*message));
            assert_eq!(e.header("receipt-id"), Some("rx"));
            assert!(s.is_closed());
        }
    }

    #[test]
    fn subscription_ids() {
        let now = Instant::now();
        let mut s = open("1.2", now);
        let sub = |id: &str| {
            frame(
                Command::Subscribe,
                &[("id", id), ("destination", "/topic/a")],
            )
        };
        assert!(matches!(
            s.on_frame(sub("a"), now)[..],
            [Action::Subscribe(_)]
        ));
        let a = s.on_frame(sub("a"), now);
        assert_eq!(
            error_of(&a).header("message"),
            Some("subscription id \"a\" is already in use")
        );
        let mut s = open("1.2", now);
        for id in ["a", "b", "c"] {
            s.on_frame(sub(id), now);
        }
        assert_eq!(s.subscriptions().count(), 3);
        let a = s.on_frame(sub("d"), now);
        assert_eq!(
            error_of(&a).header("message"),
            Some("too many subscriptions (at most 3 per connection)")
        );
        // 1.0: the destination is the id when none is given, for UNSUBSCRIBE too.
        let mut s = open("1.0", now);
        let a = s.on_frame(
            frame(Command::Subscribe, &[("destination", "/topic/x")]),
            now,
        );
        assert!(matches!(&a[..], [Action::Subscribe(sub)] if sub.id == "/topic/x"));
        let a = s.on_frame(
            frame(Command::Unsubscribe, &[("destination", "/topic/x")]),
            now,
        );
        assert!(matches!(&a[..], [Action::Unsubscribe { id, .. }] if id == "/topic/x"));
    }

    #[test]
    fn transactions_buffer_until_commit() {
        let now = Instant::now();
        let mut s = open("1.2", now);
        let send = |tx: &str, body: &'static [u8]| {
            frame(
                Command::Send,
                &[("destination", "/topic/a"), ("transaction", tx)],
            )
            .with_body(body)
        };
        assert!(
            s.on_frame(frame(Command::Begin, &[("transaction", "t1")]), now)
                .is_empty()
        );
        assert!(s.on_frame(send("t1", b"1"), now).is_empty());
        assert!(s.on_frame(send("t1", b"2"), now).is_empty());
        // Another transaction, aborted: its SENDs are dropped.
        s.on_frame(frame(Command::Begin, &[("transaction", "t2")]), now);
        s.on_frame(send("t2", b"x"), now);
        assert!(
            s.on_frame(frame(Command::Abort, &[("transaction", "t2")]), now)
                .is_empty()
        );
        let a = s.on_frame(
            frame(Command::Commit, &[("transaction", "t1"), ("receipt", "c")]),
            now,
        );
        match &a[..] {
            [
                Action::Publish {
                    messages,
                    transaction,
                },
                Action::Send(r),
            ] => {
                assert_eq!(transaction.as_deref(), Some("t1"));
                let bodies: Vec<&[u8]> = messages.iter().map(|m| &m.body[..]).collect();
                assert_eq!(bodies, [b"1", b"2"]);
                assert_eq!(r, &Frame::receipt("c"));
            }
            other => panic!("{other:?}"),
        }
        // Committed transactions are gone; ids may not be reused while open.
        let a = s.on_frame(frame(Command::Commit, &[("transaction", "t1")]), now);
        error_of(&a);
        let mut s = open("1.2", now);
        s.on_frame(frame(Command::Begin, &[("transaction", "t")]), now);
        let a = s.on_frame(frame(Command::Begin, &[("transaction", "t")]), now);
        assert_eq!(
            error_of(&a).header("message"),
            Some("transaction \"t\" is already open")
        );
        // Limits: open transactions, frames per transaction.
        let mut s = open("1.2", now);
        s.on_frame(frame(Command::Begin, &[("transaction", "a")]), now);
        s.on_frame(frame(Command::Begin, &[("transaction", "b")]), now);
        let a = s.on_frame(frame(Command::Begin, &[("transaction", "c")]), now);
        assert_eq!(
            error_of(&a).header("message"),
            Some("too many open transactions (at most 2)")
        );
        let mut s = open("1.2", now);
        s.on_frame(frame(Command::Begin, &[("transaction", "a")]), now);
        for _ in 0..3 {
            assert!(s.on_frame(send("a", b"."), now).is_empty());
        }
        let a = s.on_frame(send("a", b"."), now);
        assert_eq!(
            error_of(&a).header("message"),
            Some("transaction \"a\" has more than 3 frames")
        );
        // An empty COMMIT is fine; DISCONNECT aborts what is open.
        let mut s = open("1.2", now);
        s.on_frame(frame(Command::Begin, &[("transaction", "e")]), now);
        assert!(
            s.on_frame(frame(Command::Commit, &[("transaction", "e")]), now)
                .is_empty()
        );
    }

    #[test]
    fn acks_cumulative_individual_and_transactional() {
        let now = Instant::now();
        let mut s = open("1.2", now);
        let sub = |id: &str, ack: &str| {
            frame(
                Command::Subscribe,
                &[("id", id), ("destination", "/queue/q"), ("ack", ack)],
            )
        };
        s.on_frame(sub("c", "client"), now);
        s.on_frame(sub("i", "client-individual"), now);
        s.on_frame(sub("a", "auto"), now);
        assert_eq!(s.delivered("a", "0"), None);
        let c1 = s.delivered("c", "1").unwrap();
        let c2 = s.delivered("c", "2").unwrap();
        let c3 = s.delivered("c", "3").unwrap();
        let i4 = s.delivered("i", "4").unwrap();
        let i5 = s.delivered("i", "5").unwrap();
        let acked = |sub: &str, ids: &[&str]| Acked {
            subscription: sub.into(),
            message_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        };
        // Cumulative.
        let a = s.on_frame(frame(Command::Ack, &[("id", &c2)]), now);
        assert_eq!(
            a,
            [Action::Ack {
                acked: acked("c", &["1", "2"]),
                transaction: None
            }]
        );
        // Individual NACK of the later message leaves the earlier one.
        let a = s.on_frame(frame(Command::Nack, &[("id", &i5)]), now);
        assert_eq!(
            a,
            [Action::Nack {
                acked: acked("i", &["5"]),
                transaction: None
            }]
        );
        assert_eq!(s.acks().unacked("i"), 1);
        // In a transaction: checked now, settled at COMMIT; ABORT keeps them unacked.
        s.on_frame(frame(Command::Begin, &[("transaction", "t")]), now);
        assert!(
            s.on_frame(
                frame(Command::Ack, &[("id", &i4), ("transaction", "t")]),
                now
            )
            .is_empty()
        );
        assert_eq!(s.acks().unacked("i"), 1);
        s.on_frame(frame(Command::Abort, &[("transaction", "t")]), now);
        assert_eq!(s.acks().unacked("i"), 1);
        s.on_frame(frame(Command::Begin, &[("transaction", "u")]), now);
        s.on_frame(
            frame(Command::Ack, &[("id", &i4), ("transaction", "u")]),
            now,
        );
        let a = s.on_frame(
            frame(Command::Nack, &[("id", &c3), ("transaction", "u")]),
            now,
        );
        assert!(a.is_empty());
        let a = s.on_frame(frame(Command::Commit, &[("transaction", "u")]), now);
        assert_eq!(
            a,
            [
                Action::Ack {
                    acked: acked("i", &["4"]),
                    transaction: Some("u".into())
                },
                Action::Nack {
                    acked: acked("c", &["3"]),
                    transaction: Some("u".into())
                },
            ]
        );
        let a = s.on_frame(frame(Command::Ack, &[("id", &c1)]), now);
        assert_eq!(
            error_of(&a).header("message"),
            Some(format!("ACK for unknown or already acknowledged ack id {c1:?}").as_str())
        );
    }

    #[test]
    fn acks_in_1_1_and_1_0_name_the_message() {
        let now = Instant::now();
        let mut s = open("1.1", now);
        s.on_frame(
            frame(
                Command::Subscribe,
                &[("id", "s"), ("destination", "/queue/q"), ("ack", "client")],
            ),
            now,
        );
        s.delivered("s", "m1");
        s.delivered("s", "m2");
        let a = s.on_frame(
            frame(Command::Ack, &[("subscription", "s"), ("message-id", "m2")]),
            now,
        );
        assert!(matches!(&a[..], [Action::Ack { acked, .. }] if acked.message_ids == ["m1", "m2"]));
        let mut s = open("1.0", now);
        s.on_frame(
            frame(
                Command::Subscribe,
                &[("destination", "/queue/q"), ("ack", "client")],
            ),
            now,
        );
        s.delivered("/queue/q", "m1");
        let a = s.on_frame(frame(Command::Ack, &[("message-id", "m1")]), now);
        assert!(matches!(&a[..], [Action::Ack { acked, .. }] if acked.subscription == "/queue/q"));
    }

    #[test]
    fn unsubscribe_and_end_return_unacked() {
        let now = Instant::now();
        let mut s = open("1.2", now);
        for id in ["x", "y"] {
            s.on_frame(
                frame(
                    Command::Subscribe,
                    &[("id", id), ("destination", "/queue/q"), ("ack", "client")],
                ),
                now,
            );
        }
        s.delivered("x", "1");
        s.delivered("y", "2");
        let a = s.on_frame(frame(Command::Unsubscribe, &[("id", "x")]), now);
        assert_eq!(
            a,
            [Action::Unsubscribe {
                id: "x".into(),
                unacked: vec!["1".into()]
            }]
        );
        let left = s.end();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].message_ids, ["2"]);
        assert!(s.is_closed());
    }

    #[test]
    fn publish_data() {
        let p = |ct: Option<&str>, body: &[u8]| Publish {
            destination: "/topic/a".into(),
            content_type: ct.map(str::to_owned),
            body: Bytes::copy_from_slice(body),
            headers: vec![("event".into(), "created".into())],
        };
        assert_eq!(
            p(Some("application/json"), b"{ \"a\" : [1, 2] }")
                .data()
                .unwrap()
                .get(),
            r#"{"a":[1,2]}"#
        );
        assert_eq!(
            p(Some("application/vnd.x+json; charset=utf-8"), b"3")
                .data()
                .unwrap()
                .get(),
            "3"
        );
        assert_eq!(
            p(Some("text/plain"), b"hi \"you\"").data().unwrap().get(),
            r#""hi \"you\"""#
        );
        assert_eq!(
            p(None, b"{\"a\":1}").data().unwrap().get(),
            r#""{\"a\":1}""#
        );
        assert!(matches!(
            p(Some("application/json"), b"{oops").data(),
            Err(BodyError::NotJson(_))
        ));
        assert_eq!(p(None, b"\xff").data().unwrap_err(), BodyError::NotText);
        assert_eq!(p(None, b"").event_type(), Some("created"));
        assert!(p(Some("Application/JSON"), b"1").is_json());
        assert!(!p(Some("text/json-ish"), b"1").is_json());
    }

    #[test]
    fn destinations() {
        assert_eq!(
            Destination::parse("/topic/orders.>"),
            Destination::Topic("orders.>")
        );
        assert_eq!(
            Destination::parse("/queue/jobs"),
            Destination::Queue("jobs")
        );
        assert_eq!(
            Destination::parse("/app/chat.send"),
            Destination::App("chat.send")
        );
        assert_eq!(Destination::parse("/topic"), Destination::Other("/topic"));
    }
}
