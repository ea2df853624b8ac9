//! HTTP sessions: one entry of a service's session map per session id, living across the
//! requests that receive from it (`xhr`, `xhr_streaming`, `eventsource`, `htmlfile`,
//! `jsonp`) and send to it (`xhr_send`, `jsonp_send`).
//!
//! At most one request receives at a time: it takes the session's outgoing channel for as
//! long as it is attached ([`Receiver`]) and gives it back when dropped. A second receiving
//! request gets `c[2010,"Another connection still open"]`. With no receiving request for
//! `disconnect_delay`, the session expires: it leaves the map and drops its channels, which
//! ends the handler.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use herald_protocol::sockjs::{self, close_code};
use parking_lot::Mutex;
use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    CloseSlot, Closer, INCOMING_QUEUE, OUTGOING_QUEUE, Service, SockJsConn, SockJsTransport, drain,
};
use crate::{error::ApiError, gateway::Principal, state::AppState};

/// Reason of the close frame receivers get when the server shuts down.
const SHUTDOWN_REASON: &str = "Server shutting down";

pub(super) struct Session {
    id: String,
    close: Arc<CloseSlot>,
    inner: Mutex<Inner>,
    /// Wakes the expiry timer when a request attaches or detaches.
    watchdog: Notify,
}

struct Inner {
    /// The open frame went out.
    opened: bool,
    /// A request holds `outgoing`.
    receiving: bool,
    /// Expired: out of the map, channels dropped.
    gone: bool,
    /// The last receiving request was cut by the network: expire at once.
    interrupted: bool,
    /// When the last receiving request detached (or the session was created).
    detached_at: Instant,
    /// Handler → client; `None` while a request holds it, or once gone.
    outgoing: Option<mpsc::Receiver<String>>,
    /// Client → handler; `None` once gone.
    incoming: Option<mpsc::Sender<String>>,
}

/// What a receiving request gets from [`Session::attach`].
pub(super) enum Attach {
    /// It receives until it ends.
    Attached(Receiver),
    /// It does not receive: write these frames and end (2010, or the close frame after the
    /// messages left behind).
    Refused(VecDeque<String>),
    /// The session expired meanwhile: look it up again.
    Gone,
}

impl Session {
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// The channel to the handler, unless the session closed or expired.
    pub(super) fn incoming(&self) -> Option<mpsc::Sender<String>> {
        if self.close.get().is_some() {
            return None;
        }
        self.inner.lock().incoming.clone()
    }

    /// Attaches a receiving request.
    pub(super) fn attach(
        self: &Arc<Self>,
        heartbeat: Duration,
        token: &CancellationToken,
    ) -> Attach {
        let mut i = self.inner.lock();
        if i.interrupted && !i.receiving && !i.gone {
            expire_locked(&mut i);
            self.watchdog.notify_one();
        }
        if i.gone {
            return Attach::Gone;
        }
        if i.receiving {
            let frame = sockjs::close_frame(
                close_code::ANOTHER_CONNECTION,
                sockjs::ANOTHER_CONNECTION_REASON,
            );
            return Attach::Refused(VecDeque::from([frame]));
        }
        let open = !i.opened;
        i.opened = true;
        if !open && let Some((code, reason)) = self.close.get() {
            // Closed: what the handler sent before closing, then the close frame, to every
            // request until the session expires.
            let mut frames = VecDeque::new();
            if let Some(rx) = i.outgoing.as_mut() {
                let left = drain(rx, Vec::new());
                if !left.is_empty() {
                    frames.push_back(sockjs::message_frame(&left));
                }
            }
            frames.push_back(sockjs::close_frame(code, &reason));
            i.detached_at = Instant::now();
            self.watchdog.notify_one();
            return Attach::Refused(frames);
        }
        let Some(outgoing) = i.outgoing.take() else {
            return Attach::Gone;
        };
        i.receiving = true;
        self.watchdog.notify_one();
        Attach::Attached(Receiver {
            session: self.clone(),
            outgoing: Some(outgoing),
            open,
            pending_close: None,
            finished: false,
            completed: false,
            heartbeat,
            token: token.clone(),
        })
    }

    /// The handler returned: the session closes (normally, unless it said otherwise).
    fn handler_ended(&self) {
        self.close.set(close_code::NORMAL, sockjs::NORMAL_REASON);
    }

    /// Resolves once the session has had no receiving request for `delay` (or its receiving
    /// request was cut), having marked it gone.
    async fn expiry(&self, delay: Duration) {
        loop {
            let notified = self.watchdog.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let deadline = {
                let mut i = self.inner.lock();
                if i.gone {
                    return;
                }
                if i.receiving {
                    None
                } else if i.interrupted || i.detached_at + delay <= Instant::now() {
                    expire_locked(&mut i);
                    return;
                } else {
                    Some(i.detached_at + delay)
                }
            };
            match deadline {
                None => notified.await,
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = notified => {}
                    }
                }
            }
        }
    }
}

fn expire_locked(i: &mut Inner) {
    i.gone = true;
    i.outgoing = None;
    i.incoming = None;
}

/// A receiving request attached to a session. Dropping it detaches: normally when it
/// [`completed`](Receiver::complete) or delivered the close frame, as a network cut
/// otherwise (which ends the session).
pub(super) struct Receiver {
    session: Arc<Session>,
    outgoing: Option<mpsc::Receiver<String>>,
    /// The open frame is still to be sent.
    open: bool,
    /// A close frame to send after the message frame just returned.
    pending_close: Option<String>,
    /// The close frame went out: nothing follows.
    finished: bool,
    completed: bool,
    heartbeat: Duration,
    token: CancellationToken,
}

impl Receiver {
    /// The next frame for the client: `o` first on a new session, then `a[...]` as the
    /// handler sends, `h` after `heartbeat` of silence, and a close frame last. `None` after
    /// the close frame.
    ///
    /// # Cancel safety
    /// Cancel safe: a message taken from the channel is returned in the same poll.
    pub(super) async fn next_frame(&mut self) -> Option<String> {
        if std::mem::take(&mut self.open) {
            return Some(sockjs::OPEN.to_owned());
        }
        if let Some(close) = self.pending_close.take() {
            self.finished = true;
            return Some(close);
        }
        if self.finished {
            return None;
        }
        let session = self.session.clone();
        let token = self.token.clone();
        let heartbeat = self.heartbeat;
        loop {
            let notified = session.close.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some((code, reason)) = session.close.get() {
                return Some(self.closing(code, &reason));
            }
            let rx = self.outgoing.as_mut()?;
            tokio::select! {
                biased;
                _ = token.cancelled() => {
                    self.finished = true;
                    return Some(sockjs::close_frame(close_code::GOING_AWAY, SHUTDOWN_REASON));
                }
                m = rx.recv() => match m {
                    Some(m) => return Some(sockjs::message_frame(&drain(rx, vec![m]))),
                    None => {
                        // The handler dropped its sender: it is done.
                        let (code, reason) =
                            session.close.set(close_code::NORMAL, sockjs::NORMAL_REASON);
                        return Some(self.closing(code, &reason));
                    }
                },
                _ = &mut notified => continue,
                _ = tokio::time::sleep(heartbeat) => return Some(sockjs::HEARTBEAT.to_owned()),
            }
        }
    }

    /// The frames for a close: the messages still queued (if any), then the close frame.
    fn closing(&mut self, code: u16, reason: &str) -> String {
        let close = sockjs::close_frame(code, reason);
        let left = match self.outgoing.as_mut() {
            Some(rx) => drain(rx, Vec::new()),
            None => Vec::new(),
        };
        if left.is_empty() {
            self.finished = true;
            close
        } else {
            self.pending_close = Some(close);
            sockjs::message_frame(&left)
        }
    }

    /// Whether the close frame went out (the response ends after it).
    pub(super) fn finished(&self) -> bool {
        self.finished
    }

    /// The response ended normally: dropping this detaches without ending the session.
    pub(super) fn complete(&mut self) {
        self.completed = true;
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let Some(outgoing) = self.outgoing.take() else {
            return;
        };
        let mut i = self.session.inner.lock();
        i.receiving = false;
        i.detached_at = Instant::now();
        if !i.gone {
            i.outgoing = Some(outgoing);
        }
        if !(self.completed || self.finished) {
            i.interrupted = true;
        }
        drop(i);
        self.session.watchdog.notify_one();
    }
}

impl Service {
    /// The session `id`, created (with its handler task) when new.
    ///
    /// # Errors
    /// 503 when `limits.max_connections` are open or the server is shutting down.
    pub(super) fn session_for_receive(
        self: &Arc<Self>,
        state: &AppState,
        id: &str,
        principal: Option<Principal>,
    ) -> Result<Arc<Session>, ApiError> {
        let mut map = self.sessions.lock();
        if let Some(s) = map.get(id) {
            return Ok(s.clone());
        }
        let guard = state.connect(self.options.count_as)?;
        let (in_tx, in_rx) = mpsc::channel(INCOMING_QUEUE);
        let (out_tx, out_rx) = mpsc::channel(OUTGOING_QUEUE);
        let close = Arc::new(CloseSlot::default());
        let session = Arc::new(Session {
            id: id.to_owned(),
            close: close.clone(),
            inner: Mutex::new(Inner {
                opened: false,
                receiving: false,
                gone: false,
                interrupted: false,
                detached_at: Instant::now(),
                outgoing: Some(out_rx),
                incoming: Some(in_tx),
            }),
            watchdog: Notify::new(),
        });
        map.insert(id.to_owned(), session.clone());
        drop(map);
        tracing::debug!(session = %id, "sockjs session opened");
        let conn = SockJsConn {
            incoming: in_rx,
            outgoing: out_tx,
            closer: Closer(close),
            principal,
            transport: SockJsTransport::Http,
        };
        let run = (self.handler)(state.clone(), conn);
        let svc = self.clone();
        let token = state.token.clone();
        let s = session.clone();
        state.tasks.spawn(async move {
            let mut run = run;
            let expiry = s.expiry(svc.options.disconnect_delay);
            tokio::pin!(expiry);
            tokio::select! {
                _ = token.cancelled() => {}
                _ = &mut run => {
                    s.handler_ended();
                    // Keep answering with the close frame until the session expires.
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = &mut expiry => {}
                    }
                }
                _ = &mut expiry => {
                    // Forgotten at once (the id may open a new session); the channels are
                    // dropped, so the handler sees them closed and returns.
                    svc.remove(&s);
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = &mut run => {}
                    }
                }
            }
            svc.remove(&s);
            tracing::debug!(session = %s.id, "sockjs session ended");
            drop(guard);
        });
        Ok(session)
    }

    /// Looks up `id` for a receiving request and attaches to it (retrying once past a
    /// session that expired meanwhile).
    ///
    /// # Errors
    /// As [`Service::session_for_receive`].
    pub(super) fn attach(
        self: &Arc<Self>,
        state: &AppState,
        id: &str,
        principal: Option<Principal>,
    ) -> Result<Attach, ApiError> {
        for _ in 0..3 {
            let session = self.session_for_receive(state, id, principal.clone())?;
            match session.attach(self.options.heartbeat, &state.token) {
                Attach::Gone => self.remove(&session),
                a => return Ok(a),
            }
        }
        Err(ApiError::unavailable("the SockJS session keeps expiring"))
    }

    /// The session `id`, if it exists (sending requests never create one).
    pub(super) fn existing(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.lock().get(id).cloned()
    }
}
