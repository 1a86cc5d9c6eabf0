//! Host ports: binding them, accepting clients, and sending each connection to HTTP or TCP.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::sniff::{self, Prefixed, Protocol};
use super::stats::Counters;
use super::{Phase, Route, Shared, http, tcp};

/// The kernel's queue of connections not yet accepted. Generous, so a burst while the daemon
/// is busy waits instead of being refused.
const BACKLOG: u32 = 1024;

/// Binds with `SO_REUSEADDR`, so a restarted daemon can bind at once even while connections
/// of its predecessor linger in `TIME_WAIT`.
pub(super) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Accepts until the proxy shuts down, then drops the listener so the port is free.
pub(super) async fn accept_loop(listener: TcpListener, route: Arc<Route>, shared: Arc<Shared>) {
    let mut phase = shared.phase.subscribe();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = phase.wait_for(|phase| *phase >= Phase::Draining) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                Counters::bump(&shared.counters.connections);
                let guard = shared.connection_opened();
                let route = Arc::clone(&route);
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    connection(stream, peer, route, &shared).await;
                    drop(guard);
                });
            }
            // The client gave up between its handshake and our accept: nothing to do.
            Err(error) if is_per_connection(&error) => {}
            Err(error) => {
                // Out of file descriptors or memory: retrying at once would spin.
                tracing::warn!(port = route.port, %error, "failed to accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tracing::debug!(port = route.port, "stopped accepting");
}

fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// Sniffs the first bytes, then serves the connection as HTTP or forwards it as TCP.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    route: Arc<Route>,
    shared: &Arc<Shared>,
) {
    // Small writes (response heads, interactive protocols) must not wait for Nagle.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "failed to set `TCP_NODELAY`");
    }
    let mut phase = shared.phase.subscribe();
    let mut prefix = BytesMut::new();
    let sniffed = tokio::select! {
        // A connection that has not sent a request yet has nothing to finish.
        _ = phase.wait_for(|phase| *phase >= Phase::Draining) => return,
        sniffed = tokio::time::timeout(
            shared.config.sniff_timeout,
            sniff::sniff(&mut stream, &mut prefix),
        ) => sniffed,
    };
    let protocol = match sniffed {
        Ok(Ok(Some(protocol))) => protocol,
        Ok(Ok(None)) => return,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "connection failed before its first bytes");
            return;
        }
        // The client waits for the server to speak first (or is very slow): only a tunnel
        // serves that.
        Err(_elapsed) => Protocol::Tcp,
    };
    match protocol {
        Protocol::Http => {
            let io = Prefixed::new(prefix.freeze(), stream);
            http::serve(io, peer, route, shared).await;
        }
        Protocol::Tcp => tcp::forward(stream, prefix.freeze(), peer, &route, shared).await,
    }
}
