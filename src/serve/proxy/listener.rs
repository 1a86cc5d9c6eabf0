//! Host ports: binding them, accepting clients, and sending each connection to HTTP or TCP.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::backoff::{AcceptBackoff, LOG_EVERY, Throttle};
use super::sniff::{self, Prefixed, Protocol};
use super::stats::Counters;
use super::{Phase, Route, Shared, Slot, http, tcp};

/// What a listener serves.
pub(super) enum Entry {
    /// A host port: one route, for HTTP and any other TCP alike.
    Port(Arc<Route>),
    /// HTTP routed by hostname; with an acceptor, HTTPS (the certificate by SNI).
    Hosts(Option<tokio_rustls::TlsAcceptor>),
}

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
///
/// A connection is accepted only with a free slot (`ProxyConfig::max_connections`): at the
/// cap the loop waits, and new connections wait in the kernel's backlog instead of being
/// accepted and failing for want of a descriptor.
pub(super) async fn accept_loop(listener: TcpListener, entry: Entry, shared: Arc<Shared>) {
    let entry = Arc::new(entry);
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut phase = shared.phase.subscribe();
    let mut backoff = AcceptBackoff::default();
    let mut at_cap = Throttle::new(LOG_EVERY);
    loop {
        let slot = match Arc::clone(&shared.slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if let Some(unlogged) = at_cap.hit(Instant::now()) {
                    tracing::warn!(
                        listen = %local,
                        max = shared.config.max_connections,
                        unlogged,
                        "the proxy is at its connection cap; new connections wait in the backlog"
                    );
                }
                tokio::select! {
                    biased;
                    _ = phase.wait_for(|phase| *phase >= Phase::Draining) => break,
                    slot = Arc::clone(&shared.slots).acquire_owned() => {
                        slot.expect("the proxy never closes its slots")
                    }
                }
            }
        };
        let accepted = tokio::select! {
            biased;
            _ = phase.wait_for(|phase| *phase >= Phase::Draining) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff.succeeded();
                Counters::bump(&shared.counters.connections);
                let guard = shared.connection_opened();
                let entry = Arc::clone(&entry);
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    match &*entry {
                        Entry::Port(route) => {
                            connection(stream, peer, Arc::clone(route), &shared, slot).await;
                        }
                        Entry::Hosts(tls) => {
                            hosts_connection(stream, peer, tls.as_ref(), &shared, slot).await
                        }
                    }
                    drop(guard);
                });
            }
            // The client gave up between its handshake and our accept: nothing to do.
            Err(error) if is_per_connection(&error) => {}
            Err(error) => {
                // Out of file descriptors or memory: retrying at once would spin.
                let pause = backoff.failed(Instant::now());
                if let Some(unlogged) = pause.log {
                    tracing::warn!(listen = %local, %error, unlogged, "failed to accept a connection; backing off");
                }
                tokio::time::sleep(pause.wait).await;
            }
        }
    }
    tracing::debug!(listen = %local, "stopped accepting");
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
    slot: Slot,
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
            http::serve(io, peer, http::Target::Port(route), shared, slot).await;
        }
        Protocol::Tcp => {
            tcp::forward(stream, prefix.freeze(), peer, &route, shared).await;
            drop(slot);
        }
    }
}

/// A connection to a hostname listener: HTTP at once, or after the TLS handshake, which
/// gets as long as a request head does.
async fn hosts_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<&tokio_rustls::TlsAcceptor>,
    shared: &Arc<Shared>,
    slot: Slot,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "failed to set `TCP_NODELAY`");
    }
    let Some(acceptor) = tls else {
        let io = Prefixed::new(bytes::Bytes::new(), stream);
        http::serve(io, peer, http::Target::Hosts { https: false }, shared, slot).await;
        return;
    };
    let mut phase = shared.phase.subscribe();
    let handshake = tokio::select! {
        _ = phase.wait_for(|phase| *phase >= Phase::Draining) => return,
        handshake = tokio::time::timeout(shared.config.header_read_timeout, acceptor.accept(stream)) => handshake,
    };
    match handshake {
        Ok(Ok(stream)) => {
            http::serve(
                stream,
                peer,
                http::Target::Hosts { https: true },
                shared,
                slot,
            )
            .await;
        }
        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
        Err(_elapsed) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}
