//! STOMP over raw TCP when `stomp.tcp_listen` is set (conventionally port 61613).

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::Wire;
use crate::{gateway::Principal, state::AppState, state::Transport};

/// Accepts STOMP connections until shutdown. Each connection starts unauthenticated (its
/// credentials come in CONNECT).
pub(crate) async fn listen(state: AppState, listener: TcpListener) {
    let token = state.token.clone();
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "STOMP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(guard) = state.connect(Transport::Stomp) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        state.tasks.clone().spawn(async move {
            tracing::debug!(%peer, "STOMP TCP connection");
            super::serve(state, Principal::nobody(), TcpWire::new(stream)).await;
            drop(guard);
        });
    }
}

/// A TCP connection: bytes in, frames coalesced into one write per flush.
pub(crate) struct TcpWire {
    stream: TcpStream,
    read: BytesMut,
    write: BytesMut,
}

impl TcpWire {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            read: BytesMut::new(),
            write: BytesMut::new(),
        }
    }
}

impl Wire for TcpWire {
    async fn recv(&mut self) -> Option<Bytes> {
        self.read.reserve(8192);
        match self.stream.read_buf(&mut self.read).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(self.read.split().freeze()),
        }
    }

    async fn feed(&mut self, frame: Bytes) -> Result<(), ()> {
        self.write.extend_from_slice(&frame);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ()> {
        if self.write.is_empty() {
            return Ok(());
        }
        let out = self.write.split();
        self.stream.write_all(&out).await.map_err(|_| ())
    }
}
