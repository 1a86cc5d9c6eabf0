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
    // Closing at once is all a byte stream can say; the daemon's log says why.
    let Some(active) = route.enter(Work::Tunnel) else {
        Counters::bump(&shared.counters.no_backend);
        tracing::info!(port = route.port, %peer, "closed a tcp connection: no backend yet");
        return;
    };
    let addr = active.backend().addr;
    let connected =
        tokio::time::timeout(shared.config.connect_timeout, TcpStream::connect(addr)).await;
    let mut backend = match connected {
        Ok(Ok(backend)) => backend,
        Ok(Err(error)) => {
            Counters::bump(&shared.counters.tcp_failed);
            tracing::warn!(port = route.port, backend = %addr, %error, "failed to connect a tcp tunnel");
            return;
        }
        Err(_elapsed) => {
            Counters::bump(&shared.counters.tcp_failed);
            tracing::warn!(port = route.port, backend = %addr, "failed to connect a tcp tunnel: timed out");
            return;
        }
    };
    if let Err(error) = backend.set_nodelay(true) {
        tracing::debug!(backend = %addr, %error, "failed to set `TCP_NODELAY`");
    }
    if let Err(error) = backend.write_all(&prefix).await {
        tracing::debug!(backend = %addr, %error, "tcp tunnel closed before it started");
        return;
    }
    splice(&mut client, &mut backend, shared).await;
    drop(active);
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
