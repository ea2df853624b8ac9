//! STOMP door (SPEC 6.2): STOMP 1.0–1.2 over WebSocket (`GET /ws`, subprotocols
//! `v12.stomp`, `v11.stomp`, `v10.stomp`), over SockJS, and over raw TCP when
//! `stomp.tcp_listen` is set.
//!
//! The codec and the session state machine are pure code in `herald_protocol::stomp`; this
//! module is the adapter that alone owns the connection: it feeds bytes to the codec, hands
//! frames to the session and carries out the session's actions against the Hub.
//!
//! # Layout
//! - [`Wire`]: the one thing that differs between transports (WebSocket messages, TCP bytes,
//!   SockJS messages): receive bytes, write frames.
//! - `serve`: the per-connection loop.
//! - [`queue`]: `/queue/<name>` competing consumers.
//! - `app`: `/app/<name>` destinations (`chat.send`, `chat.join`, `[[stomp.app]]`).

pub(crate) mod queue;
mod tcp;
mod ws;

use std::{collections::HashMap, sync::Arc, time::Instant};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, stream::BoxStream};
use herald_core::{Cursor, Event, Item, NewEvent, Pattern, Topic};
use herald_protocol::stomp::{
    self, Action, Decoded, Destination, Frame, Publish, Session, SessionConfig, SharedMessage,
    StompCodec, Version, message::JSON,
};
use tokio_stream::StreamMap;

pub(crate) use self::{tcp::listen as listen_tcp, ws::router};
use crate::{
    gateway::{self, Principal},
    state::AppState,
};

/// Seconds a connection may stay without sending CONNECT.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Events written per wake-up of a topic subscription.
const MAX_COALESCE: usize = 128;

/// The connection underneath a STOMP session.
pub(crate) trait Wire: Send {
    /// The next bytes from the peer; `None` when the connection ended.
    fn recv(&mut self) -> impl Future<Output = Option<Bytes>> + Send;
    /// Queues one whole frame (or a heart-beat EOL) for sending.
    fn feed(&mut self, frame: Bytes) -> impl Future<Output = Result<(), ()>> + Send;
    /// Sends what was queued.
    fn flush(&mut self) -> impl Future<Output = Result<(), ()>> + Send;
    /// Queues the `MESSAGE` frame of a topic event for one subscription: `head` (its
    /// per-subscription part; `shareable` when it has no `ack`), then the event's shared
    /// part for `version`. Wires that frame the bytes again may use an encoding the event
    /// caches for them.
    fn feed_event(
        &mut self,
        head: &[u8],
        shareable: bool,
        event: &Event,
        version: Version,
    ) -> impl Future<Output = Result<(), ()>> + Send {
        // The frame cached on the event when this connection's head is the common one.
        if shareable && let Some(frame) = stomp::event_frame_after(event, version, head) {
            return futures::future::Either::Left(self.feed(frame));
        }
        let tail = stomp::event_message(event, version);
        let mut frame = BytesMut::with_capacity(head.len() + tail.tail().len());
        frame.extend_from_slice(head);
        frame.extend_from_slice(tail.tail());
        futures::future::Either::Right(self.feed(frame.freeze()))
    }
}

/// What a subscription yields.
enum Delivery {
    Topic(Result<Vec<Item>, herald_core::SubscriptionError>),
    Queue(Arc<Event>),
}

enum SubKind {
    /// The destination as subscribed (`/topic/<pattern>`).
    Topic(String),
    Queue {
        consumer: u64,
        name: String,
    },
}

struct Conn<W: Wire> {
    state: AppState,
    principal: Principal,
    /// Whether the transport already authenticated the request (credentials on the HTTP
    /// upgrade), so CONNECT needs none.
    preauthenticated: bool,
    wire: W,
    session: Session,
    codec: StompCodec,
    subs: StreamMap<String, BoxStream<'static, Delivery>>,
    kinds: HashMap<String, SubKind>,
    /// The `/app/chat.join` user name.
    user: Option<String>,
    /// Bytes that followed CONNECT in one read, decoded after the version switch.
    pending: Option<Bytes>,
}

/// Why the loop stops.
enum Stop {
    /// The session asked to close (after ERROR or DISCONNECT): flush and close.
    Close,
    /// The wire failed: nothing more can be sent.
    Broken,
}

/// Serves one STOMP connection until it ends; gives the wire back (to close it).
pub(crate) async fn serve<W: Wire>(state: AppState, principal: Principal, wire: W) -> W {
    let preauthenticated = principal.name.as_ref() != "unauthenticated";
    let config = SessionConfig {
        server_heartbeat: state.config.stomp_heartbeat,
        max_subscriptions: state.config.limits.max_subscriptions_per_connection,
        session_id: Some(ulid::Ulid::new().to_string()),
        ..SessionConfig::default()
    };
    let limits = stomp::Limits::with_max_body(state.config.limits.max_event_bytes);
    let mut conn = Conn {
        state,
        principal,
        preauthenticated,
        wire,
        session: Session::new(config),
        codec: StompCodec::new(limits),
        subs: StreamMap::new(),
        kinds: HashMap::new(),
        user: None,
        pending: None,
    };
    let stop = conn.run().await;
    if matches!(stop, Stop::Close) {
        let _ = conn.wire.flush().await;
    }
    conn.cleanup();
    conn.wire
}

impl<W: Wire> Conn<W> {
    async fn run(&mut self) -> Stop {
        let token = self.state.token.clone();
        let mut buf = BytesMut::new();
        let connect_deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        loop {
            let timer = match self.session.next_check() {
                Some(at) => tokio::time::Instant::from_std(at),
                None if !self.session.is_connected() => connect_deadline,
                None => tokio::time::Instant::now() + std::time::Duration::from_secs(3600),
            };
            let actions = tokio::select! {
                _ = token.cancelled() => {
                    let frame = Frame::error("server shutting down", None, None);
                    return self.send_and_close(frame).await;
                }
                _ = tokio::time::sleep_until(timer) => {
                    if !self.session.is_connected() && tokio::time::Instant::now() >= connect_deadline {
                        let frame = Frame::error("no CONNECT frame received in time", None, None);
                        return self.send_and_close(frame).await;
                    }
                    self.session.check(Instant::now()).into_iter().collect()
                }
                bytes = self.wire.recv() => {
                    let Some(bytes) = bytes else { return Stop::Broken };
                    buf.extend_from_slice(&bytes);
                    self.decode(&mut buf)
                }
                Some((id, delivery)) = self.subs.next(), if !self.subs.is_empty() => {
                    match self.deliver(&id, delivery).await {
                        Ok(actions) => actions,
                        Err(stop) => return stop,
                    }
                }
            };
            if let Some(stop) = self.execute(actions).await {
                return stop;
            }
            if self.wire.flush().await.is_err() {
                return Stop::Broken;
            }
        }
    }

    async fn send_and_close(&mut self, frame: Frame) -> Stop {
        let bytes = self.encode(&frame);
        if self.wire.feed(bytes).await.is_err() {
            return Stop::Broken;
        }
        Stop::Close
    }

    fn encode(&self, frame: &Frame) -> Bytes {
        let mut out = BytesMut::new();
        self.codec.encode(frame, &mut out);
        out.freeze()
    }

    /// Decodes every whole frame in `buf` and collects the session's actions. Stops at the
    /// first error (the session then answers ERROR and closes).
    fn decode(&mut self, buf: &mut BytesMut) -> Vec<Action> {
        let mut actions = Vec::new();
        loop {
            // The version can change with CONNECT: decode one frame, act, then the next.
            if actions
                .iter()
                .any(|a| matches!(a, Action::Authenticate { .. }))
            {
                break;
            }
            match self.codec.decode(buf) {
                Ok(Some(Decoded::Heartbeat)) => self.session.on_heartbeat(Instant::now()),
                Ok(Some(Decoded::Frame(frame))) => {
                    actions.extend(self.session.on_frame(frame, Instant::now()));
                    if self.session.is_closed() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    actions.extend(self.session.on_decode_error(&e));
                    break;
                }
            }
        }
        if !buf.is_empty()
            && actions
                .iter()
                .any(|a| matches!(a, Action::Authenticate { .. }))
        {
            // Frames after CONNECT in the same read: handled after the version switch.
            let rest = buf.split();
            self.pending = Some(rest.freeze());
        }
        actions
    }

    /// Carries out actions in order. `Some(stop)` ends the connection.
    async fn execute(&mut self, actions: Vec<Action>) -> Option<Stop> {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            let result: Result<Vec<Action>, String> = match action {
                Action::Send(frame) => {
                    let bytes = self.encode(&frame);
                    if self.wire.feed(bytes).await.is_err() {
                        return Some(Stop::Broken);
                    }
                    self.session.on_sent(Instant::now());
                    Ok(Vec::new())
                }
                Action::Heartbeat => {
                    if self
                        .wire
                        .feed(Bytes::from_static(stomp::HEARTBEAT))
                        .await
                        .is_err()
                    {
                        return Some(Stop::Broken);
                    }
                    self.session.on_sent(Instant::now());
                    Ok(Vec::new())
                }
                Action::Close => return Some(Stop::Close),
                Action::Authenticate {
                    credentials,
                    version,
                } => {
                    self.codec.set_version(version);
                    match self.authenticate(&credentials) {
                        Ok(()) => Ok(self.session.accept(Instant::now())),
                        Err(msg) => Ok(self.session.fail(&msg)),
                    }
                }
                Action::Subscribe(sub) => self.subscribe(sub).map(|()| Vec::new()),
                Action::Unsubscribe { id, .. } => {
                    self.unsubscribe(&id);
                    Ok(Vec::new())
                }
                Action::Publish { messages, .. } => {
                    self.publish(messages).await.map(|()| Vec::new())
                }
                Action::Ack { acked, .. } => self.settle(&acked, true).await.map(|()| Vec::new()),
                Action::Nack { acked, .. } => self.settle(&acked, false).await.map(|()| Vec::new()),
            };
            match result {
                Ok(more) => {
                    for a in more.into_iter().rev() {
                        queue.push_front(a);
                    }
                }
                Err(message) => {
                    // Drop the rest (a RECEIPT for a failed SEND must not go out).
                    queue = self.session.fail(&message).into();
                }
            }
            if let Some(rest) = self.pending.take() {
                let mut buf = BytesMut::from(&rest[..]);
                let more = self.decode(&mut buf);
                queue.extend(more);
                if !buf.is_empty() {
                    self.pending = Some(buf.freeze());
                }
            }
        }
        None
    }

    fn authenticate(&mut self, c: &stomp::Credentials) -> Result<(), String> {
        if self.preauthenticated || self.state.config.auth_keys.is_empty() {
            if self.state.config.auth_keys.is_empty() {
                self.principal = self.state.anyone.clone();
            }
            return Ok(());
        }
        let token = c
            .authorization
            .as_deref()
            .map(|a| a.strip_prefix("Bearer ").unwrap_or(a).trim().to_owned())
            .or_else(|| c.passcode.clone());
        let Some(token) = token else {
            return Err(
                "missing credentials: send the API key as passcode (or an Authorization header)"
                    .into(),
            );
        };
        match gateway::lookup(&self.state, &token) {
            Some(p) => {
                self.principal = p;
                Ok(())
            }
            None => Err("invalid credentials".into()),
        }
    }

    fn subscribe(&mut self, sub: stomp::Subscribe) -> Result<(), String> {
        match Destination::parse(&sub.destination) {
            Destination::Topic(p) => {
                let pattern = Pattern::new(p).map_err(|e| e.to_string())?;
                if !self.principal.can_subscribe(&pattern) {
                    return Err(format!("not allowed to subscribe to {}", sub.destination));
                }
                let cursor = match sub.header("after") {
                    Some(a) => Cursor::parse(a).map_err(|e| e.to_string())?,
                    None => Cursor::Live,
                };
                let s = self.state.hub.subscribe(vec![pattern], cursor);
                let stream = futures::stream::unfold(s, |mut s| async move {
                    let mut items = Vec::new();
                    let r = s.recv_many(&mut items, MAX_COALESCE).await;
                    Some((Delivery::Topic(r.map(|()| items)), s))
                })
                .boxed();
                self.kinds
                    .insert(sub.id.clone(), SubKind::Topic(sub.destination.clone()));
                self.subs.insert(sub.id, stream);
                Ok(())
            }
            Destination::Queue(name) => {
                if !queue::Queues::valid_name(name) {
                    return Err(format!("invalid queue name {name:?}"));
                }
                let pattern = Pattern::new(&format!("{}.{name}", queue::QUEUE_PREFIX))
                    .map_err(|e| e.to_string())?;
                if !self.principal.can_subscribe(&pattern) {
                    return Err(format!("not allowed to subscribe to {}", sub.destination));
                }
                let consumer = self.state.queues.subscribe(name);
                let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(consumer.rx)
                    .map(Delivery::Queue)
                    .boxed();
                self.kinds.insert(
                    sub.id.clone(),
                    SubKind::Queue {
                        consumer: consumer.id,
                        name: name.to_owned(),
                    },
                );
                self.subs.insert(sub.id, stream);
                Ok(())
            }
            Destination::App(_) | Destination::Other(_) => Err(format!(
                "cannot subscribe to {:?}: use /topic/<pattern> or /queue/<name>",
                sub.destination
            )),
        }
    }

    fn unsubscribe(&mut self, id: &str) {
        self.subs.remove(id);
        if let Some(SubKind::Queue { consumer, .. }) = self.kinds.remove(id) {
            self.state.queues.unsubscribe(consumer);
        }
    }

    async fn publish(&mut self, messages: Vec<Publish>) -> Result<(), String> {
        let mut batch = Vec::new();
        for m in messages {
            let data = m.data().map_err(|e| e.to_string())?;
            match Destination::parse(&m.destination) {
                Destination::Topic(t) => {
                    let topic = Topic::new(t).map_err(|e| e.to_string())?;
                    if !self.principal.can_publish(&topic) {
                        return Err(format!("not allowed to send to {}", m.destination));
                    }
                    batch.push(
                        NewEvent::new(
                            topic,
                            m.event_type(),
                            data,
                            m.header("key").map(str::to_owned),
                        )
                        .map_err(|e| e.to_string())?,
                    );
                }
                Destination::Queue(name) => {
                    let topic = Topic::new(&format!("{}.{name}", queue::QUEUE_PREFIX))
                        .map_err(|_| format!("invalid queue name {name:?}"))?;
                    if !self.principal.can_publish(&topic) {
                        return Err(format!("not allowed to send to {}", m.destination));
                    }
                    self.state
                        .queues
                        .send(name, m.event_type(), data)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Destination::App(name) => {
                    let ev = self.app(name, &m, data).await?;
                    batch.push(ev);
                }
                Destination::Other(d) => {
                    return Err(format!(
                        "unknown destination {d:?}: use /topic/<topic>, /queue/<name> or /app/<name>"
                    ));
                }
            }
        }
        if !batch.is_empty() {
            self.state
                .hub
                .publish(batch)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// `/app/<name>`: the built-in chat destinations and `[[stomp.app]]` mappings.
    async fn app(
        &mut self,
        name: &str,
        m: &Publish,
        data: Box<serde_json::value::RawValue>,
    ) -> Result<NewEvent, String> {
        let destination = format!("/app/{name}");
        let configured = self
            .state
            .config
            .stomp_apps
            .iter()
            .find(|a| a.destination == destination)
            .cloned();
        let (topic, data) = match (name, configured) {
            (_, Some(app)) => {
                let data = match &app.forward {
                    Some(url) => forward(url, m, &self.principal).await?,
                    None => data,
                };
                (app.send_to, data)
            }
            ("chat.send", None) => (Topic::new("messages").map_err(|e| e.to_string())?, data),
            ("chat.join", None) => {
                #[derive(serde::Deserialize)]
                struct Join {
                    sender: Option<String>,
                }
                if let Ok(j) = serde_json::from_str::<Join>(data.get())
                    && let Some(sender) = j.sender
                {
                    self.user = Some(sender);
                }
                (Topic::new("users").map_err(|e| e.to_string())?, data)
            }
            _ => return Err(format!("no application destination {destination:?}")),
        };
        if !self.principal.can_publish(&topic) {
            return Err(format!("not allowed to send to {destination}"));
        }
        NewEvent::new(topic, m.event_type(), data, None).map_err(|e| e.to_string())
    }

    async fn settle(&mut self, acked: &stomp::Acked, ack: bool) -> Result<(), String> {
        let Some(SubKind::Queue { consumer, .. }) = self.kinds.get(&acked.subscription) else {
            // Topic subscriptions: live push is at-most-once; nothing to settle.
            return Ok(());
        };
        let consumer = *consumer;
        let ids: Vec<u64> = acked
            .message_ids
            .iter()
            .filter_map(|m| m.parse().ok())
            .collect();
        if ack {
            self.state
                .queues
                .ack(consumer, &ids)
                .await
                .map_err(|e| e.to_string())
        } else {
            self.state.queues.nack(consumer, &ids);
            Ok(())
        }
    }

    /// Writes what a subscription produced.
    async fn deliver(&mut self, id: &str, delivery: Delivery) -> Result<Vec<Action>, Stop> {
        let version = self.session.version().unwrap_or(Version::V1_2);
        match delivery {
            Delivery::Topic(Ok(items)) => {
                let mut out = BytesMut::new();
                let mut n = 0;
                for item in &items {
                    let (shared, message_id) = match item {
                        Item::Event(e) => {
                            // The id is only spelled out for subscriptions that track acks.
                            let ack = self.session.delivered_with(id, || e.id.to_string());
                            out.clear();
                            SharedMessage::write_head(id, ack.as_deref(), version, &mut out);
                            let shareable = ack.is_none();
                            if self
                                .wire
                                .feed_event(&out, shareable, e, version)
                                .await
                                .is_err()
                            {
                                return Err(Stop::Broken);
                            }
                            n += 1;
                            continue;
                        }
                        Item::Truncated { requested, oldest } => (
                            stomp::message::truncated(
                                version,
                                &self.destination_of(id),
                                *requested,
                                *oldest,
                            ),
                            format!("truncated-{requested}-{oldest}"),
                        ),
                    };
                    let ack = self.session.delivered(id, &message_id);
                    out.clear();
                    shared.write(id, ack.as_deref(), version, &mut out);
                    if self.wire.feed(out.split().freeze()).await.is_err() {
                        return Err(Stop::Broken);
                    }
                    n += 1;
                }
                self.state
                    .metrics
                    .events_out(crate::state::Transport::Stomp, n);
                self.session.on_sent(Instant::now());
                Ok(Vec::new())
            }
            Delivery::Topic(Err(e)) => {
                self.subs.remove(id);
                Ok(self.session.fail(&e.to_string()))
            }
            Delivery::Queue(ev) => {
                let Some(SubKind::Queue { consumer, name }) = self.kinds.get(id) else {
                    return Ok(Vec::new());
                };
                let (consumer, destination) = (*consumer, format!("/queue/{name}"));
                let raw = ev.data.get();
                let (body, content_type): (Vec<u8>, &str) =
                    match serde_json::from_str::<String>(raw) {
                        Ok(text) if raw.starts_with('"') => {
                            (text.into_bytes(), stomp::message::TEXT)
                        }
                        _ => (raw.as_bytes().to_vec(), JSON),
                    };
                let message_id = ev.id.to_string();
                let shared = SharedMessage::new(
                    version,
                    &destination,
                    &message_id,
                    &[("event", &ev.event)],
                    Some(content_type),
                    &body,
                );
                let ack = self.session.delivered(id, &message_id);
                let frame = shared.to_bytes(id, ack.as_deref(), version);
                if self.wire.feed(frame).await.is_err() {
                    return Err(Stop::Broken);
                }
                self.state
                    .metrics
                    .events_out(crate::state::Transport::Stomp, 1);
                self.session.on_sent(Instant::now());
                if ack.is_none() {
                    // `auto`: consumed once written.
                    if let Err(e) = self.state.queues.ack(consumer, &[ev.id]).await {
                        return Ok(self.session.fail(&e.to_string()));
                    }
                }
                Ok(Vec::new())
            }
        }
    }

    fn destination_of(&self, id: &str) -> String {
        match self.kinds.get(id) {
            Some(SubKind::Topic(d)) => d.clone(),
            Some(SubKind::Queue { name, .. }) => format!("/queue/{name}"),
            None => String::new(),
        }
    }

    /// Gives queue messages back when the connection goes.
    fn cleanup(&mut self) {
        for (_, kind) in self.kinds.drain() {
            if let SubKind::Queue { consumer, .. } = kind {
                self.state.queues.unsubscribe(consumer);
            }
        }
        self.subs.clear();
    }
}

/// `forward`: POSTs the body upstream and returns the response as event data.
async fn forward(
    url: &str,
    m: &Publish,
    principal: &Principal,
) -> Result<Box<serde_json::value::RawValue>, String> {
    // One client for every forward: it keeps connections to the upstream alive.
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_default()
    });
    let resp = client
        .post(url)
        .header(
            "content-type",
            m.content_type
                .clone()
                .unwrap_or_else(|| "text/plain".into()),
        )
        .header("x-herald-principal", principal.name.as_ref())
        .body(m.body.clone())
        .send()
        .await
        .map_err(|e| format!("forward to {url} failed: {e}"))?;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("forward to {url} failed: {e}"))?;
    if !status.is_success() {
        return Err(format!("forward to {url} answered {status}"));
    }
    if is_json && let Ok(raw) = serde_json::from_slice::<Box<serde_json::value::RawValue>>(&body) {
        return Ok(herald_core::event::compact_json(raw));
    }
    let text = String::from_utf8_lossy(&body);
    serde_json::value::RawValue::from_string(
        serde_json::to_string(&text).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())
}
