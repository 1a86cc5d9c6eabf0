//! Plain TCP forwarding, for connections that are not HTTP/1: bytes both ways to the backend
//! that was live when the connection was sniffed, for as long as the connection lasts.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::backend::Work;
use super::stats::Counters;
use super::{Phase, Route, Shared};

pub(super) async fn forward(
    mut client: TcpStream,
    prefix: Bytes,
    peer: SocketAddr,
    route: &Route,
    shared: &Shared,
) {
    Counters::bump(&shared.counters.tcp);
    // Closing at once is all a byte stream can say; the daemon's log says why. A backend
    // that cannot be connected to has seen nothing: the next one of the port is tried.
    let mut tried = Vec::new();
    let (active, mut backend) = loop {
        let Some(active) = route.enter(Work::Tunnel, &tried) else {
            if tried.is_empty() {
                Counters::bump(&shared.counters.no_backend);
                tracing::info!(route = %route.name, %peer, "closed a tcp connection: no backend yet");
            }
            return;
        };
        let addr = active.backend().addr;
        let connected =
            tokio::time::timeout(shared.config.connect_timeout, TcpStream::connect(addr)).await;
        let error = match connected {
            Ok(Ok(backend)) => break (active, backend),
            Ok(Err(error)) => error.to_string(),
            Err(_elapsed) => "timed out".to_owned(),
        };
        Counters::bump(&shared.counters.tcp_failed);
        tracing::warn!(route = %route.name, backend = %addr, %error, "failed to connect a tcp tunnel");
        active.backend().set_up(false);
        tried.push(addr);
    };
    let addr = active.backend().addr;
    active.backend().set_up(true);
    if let Err(error) = backend.set_nodelay(true) {
        tracing::debug!(backend = %addr, %error, "failed to set `TCP_NODELAY`");
    }
    if let Err(error) = backend.write_all(&prefix).await {
        tracing::debug!(backend = %addr, %error, "tcp tunnel closed before it started");
        return;
    }
    // A client that sent nothing is waiting for a server that speaks first, or is holding a
    // descriptor for nothing (a flood of idle connections): the server has a while to speak.
    if prefix.is_empty() && !either_speaks(&client, &backend, shared).await {
        Counters::bump(&shared.counters.silent_closed);
        tracing::debug!(route = %route.name, %peer, "closed a tcp connection: silent both ways");
        return;
    }
    splice(&mut client, &mut backend, shared).await;
    drop(active);
}

/// Whether either side sends something (or closes) within `ProxyConfig::silent_timeout`.
async fn either_speaks(client: &TcpStream, backend: &TcpStream, shared: &Shared) -> bool {
    let mut phase = shared.phase.subscribe();
    let spoke = async {
        tokio::select! {
            _ = client.readable() => {}
            _ = backend.readable() => {}
        }
    };
    tokio::select! {
        spoke = tokio::time::timeout(shared.config.silent_timeout, spoke) => spoke.is_ok(),
        _ = phase.wait_for(|phase| *phase == Phase::Stopped) => false,
    }
}

/// Copies both ways until both sides are done (a half-close is passed on, so a client may
/// still read after it stopped writing), or until the proxy stops.
pub(super) async fn splice<A, B>(a: &mut A, b: &mut B, shared: &Shared)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut phase = shared.phase.subscribe();
    tokio::select! {
        copied = tokio::io::copy_bidirectional(a, b) => {
            if let Err(error) = copied {
                tracing::debug!(%error, "tunnel ended with an error");
            }
        }
        // A tunnel has no request boundary to stop at: it lasts until the shutdown's grace
        // period is over.
        _ = phase.wait_for(|phase| *phase == Phase::Stopped) => {}
    }
}
