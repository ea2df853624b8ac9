//! Accepted connections with a bound on stalled writes.
//!
//! A peer that stops reading (a frozen tab, a stuck proxy) fills its socket buffers; the
//! SSE body or the WebSocket session writing to it then waits forever, holding the
//! connection slot, its subscription and everything buffered for it. The hub already drops
//! such a subscriber when its queue overflows, but only the connection's own task can end
//! the connection, and that task is parked in the write. So the socket itself fails a write
//! that has made no progress for [`Listener`]'s `stall` period (one byte accepted counts as
//! progress, so slow readers are fine); hyper then drops the connection.
//!
//! Every accepted connection is sniffed first (see `h1sse`): event streams and plain
//! publishes over HTTP/1.1 are served without hyper (`h1pub`), everything else reaches axum
//! through [`Listener::accept`].

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::Router;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    time::Sleep,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    h1sse::{self, Prefixed, Sniffed},
    state::AppState,
};

/// Accepts connections in the background, sniffs each (serving event streams itself) and
/// hands the others to axum: the listener axum serves from.
pub(crate) struct Listener {
    rx: mpsc::Receiver<(Prefixed, SocketAddr)>,
    local: io::Result<SocketAddr>,
}

impl Listener {
    /// Starts accepting on `inner` until `token` is cancelled. Sniffing and the event streams
    /// served without hyper run on `tasks` (shutdown waits for them); `app` serves those.
    pub(crate) fn start(
        inner: TcpListener,
        stall: Duration,
        app: Router,
        state: AppState,
        token: CancellationToken,
        tasks: &TaskTracker,
    ) -> Self {
        let local = inner.local_addr();
        // A small queue: sniffed connections wait here only until axum's loop takes them.
        let (tx, rx) = mpsc::channel(64);
        let mut acceptor = Acceptor::new(inner, stall);
        let sniffers = tasks.clone();
        tasks.spawn(async move {
            loop {
                let (io, addr) = tokio::select! {
                    _ = token.cancelled() => return,
                    a = acceptor.accept() => a,
                };
                let tx = tx.clone();
                let app = app.clone();
                let state = state.clone();
                let token = token.clone();
                sniffers.spawn(async move {
                    if let Sniffed::Hyper(io) = h1sse::sniff(io, addr, &app, &state, &token).await {
                        // Refused when the server is shutting down: the connection closes.
                        let _ = tx.send((io, addr)).await;
                    }
                });
            }
        });
        Self { rx, local }
    }
}

impl axum::serve::Listener for Listener {
    type Io = Prefixed;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(accepted) => accepted,
            // The acceptor stopped (shutdown): axum stops asking once its own signal fires.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        match &self.local {
            Ok(a) => Ok(*a),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }
}

/// A TCP listener whose connections fail writes stalled for longer than `stall`.
///
/// When the process runs out of file descriptors (`EMFILE`/`ENFILE`), `accept` fails until a
/// connection closes. The listener then keeps serving the connections it has, retries every
/// [`ACCEPT_BACKOFF`] (never a busy loop), logs the condition once, and logs once more when
/// accepting works again.
struct Acceptor {
    inner: TcpListener,
    stall: Duration,
    /// Set while accepting fails for lack of resources.
    exhausted: bool,
}

/// Pause between accept attempts while out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl Acceptor {
    fn new(inner: TcpListener, stall: Duration) -> Self {
        Self {
            inner,
            stall,
            exhausted: false,
        }
    }

    async fn accept_tcp(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok(accepted) => {
                    if self.exhausted {
                        self.exhausted = false;
                        tracing::warn!("accepting connections again");
                    }
                    return accepted;
                }
                // The peer gave up before we accepted: nothing to do.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => {
                    if !self.exhausted {
                        self.exhausted = true;
                        tracing::error!(
                            error = %e,
                            "cannot accept connections (out of file descriptors?); serving the \
                             open ones and retrying until some close"
                        );
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}

impl Acceptor {
    async fn accept(&mut self) -> (Connection, SocketAddr) {
        let (io, addr) = self.accept_tcp().await;
        let _ = io.set_nodelay(true);
        let io = Connection {
            io,
            stall: self.stall,
            stalled: None,
        };
        (io, addr)
    }
}

/// One accepted connection.
pub(crate) struct Connection {
    io: TcpStream,
    stall: Duration,
    /// Armed when a write returned `Pending`, disarmed by any write that made progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl Connection {
    fn wrote<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let stall = self.stall;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "peer accepted no data for too long",
        )))
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
