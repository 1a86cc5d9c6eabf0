//! Counters the proxy keeps, and the snapshot of them that tests and the daemon's log read.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Totals since the proxy started. Relaxed atomics: each is a tally read for display, never a
/// condition another thread waits on.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) connections: AtomicU64,
    pub(super) requests: AtomicU64,
    pub(super) bad_gateway: AtomicU64,
    pub(super) no_backend: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) upgrades: AtomicU64,
    pub(super) tcp: AtomicU64,
    pub(super) tcp_failed: AtomicU64,
    pub(super) silent_closed: AtomicU64,
}

impl Counters {
    pub(super) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// A snapshot of the proxy's counters (`Proxy::stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProxyStats {
    /// Client connections accepted.
    pub(crate) connections: u64,
    /// Client connections open now (HTTP, TCP and tunnels, and any still being sniffed).
    pub(crate) open_connections: u64,
    /// HTTP requests received.
    pub(crate) requests: u64,
    /// Requests answered `502 Bad Gateway`: the backend refused, timed out or broke off.
    pub(crate) bad_gateway: u64,
    /// Requests answered `503` and TCP connections closed because the port had no backend yet.
    pub(crate) no_backend: u64,
    /// Requests sent again on a fresh connection after a pooled one turned out closed.
    pub(crate) retries: u64,
    /// Upgrades (WebSocket) that became tunnels.
    pub(crate) upgrades: u64,
    /// Connections forwarded as plain TCP.
    pub(crate) tcp: u64,
    /// Plain TCP connections closed because the backend could not be reached.
    pub(crate) tcp_failed: u64,
    /// Connections closed because neither side said anything (`ProxyConfig::silent_timeout`).
    pub(crate) silent_closed: u64,
    /// Every backend that is live or still has work open, by address.
    pub(crate) backends: Vec<BackendStats>,
}

/// One backend in a [`ProxyStats`] snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BackendStats {
    pub(crate) addr: SocketAddr,
    /// Whether a port routes new work here.
    pub(crate) live: bool,
    /// Whether it answered its last connection or probe.
    pub(crate) up: bool,
    /// HTTP requests in flight.
    pub(crate) requests: usize,
    /// Plain TCP connections and upgraded tunnels open.
    pub(crate) tunnels: usize,
    /// Idle keep-alive connections ready for reuse.
    pub(crate) pooled: usize,
}

impl ProxyStats {
    pub(super) fn from_counters(counters: &Counters, open_connections: u64) -> Self {
        Self {
            connections: read(&counters.connections),
            open_connections,
            requests: read(&counters.requests),
            bad_gateway: read(&counters.bad_gateway),
            no_backend: read(&counters.no_backend),
            retries: read(&counters.retries),
            upgrades: read(&counters.upgrades),
            tcp: read(&counters.tcp),
            tcp_failed: read(&counters.tcp_failed),
            silent_closed: read(&counters.silent_closed),
            backends: Vec::new(),
        }
    }

    /// Requests and connections the proxy could not serve, for whatever reason.
    #[cfg(test)]
    pub(crate) fn failures(&self) -> u64 {
        self.bad_gateway + self.no_backend + self.tcp_failed
    }

    /// The backend at `addr`, if it is live or has work open.
    #[cfg(test)]
    pub(crate) fn backend(&self, addr: SocketAddr) -> Option<&BackendStats> {
        self.backends.iter().find(|backend| backend.addr == addr)
    }
}

/// One line for the daemon's log.
impl fmt::Display for ProxyStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests ({} retried, {} bad gateway, {} without backend), {} tcp ({} failed, \
             {} silent), {} upgrades, {} connections open",
            self.requests,
            self.retries,
            self.bad_gateway,
            self.no_backend,
            self.tcp,
            self.tcp_failed,
            self.silent_closed,
            self.upgrades,
            self.open_connections,
        )?;
        for backend in &self.backends {
            write!(
                f,
                "; `{}`{}: {} requests, {} tunnels, {} pooled",
                backend.addr,
                match (backend.live, backend.up) {
                    (true, true) => " (live)",
                    (true, false) => " (live, not answering)",
                    (false, _) => "",
                },
                backend.requests,
                backend.tunnels,
                backend.pooled,
            )?;
        }
        Ok(())
    }
}
