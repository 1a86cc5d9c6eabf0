//! The reverse proxy `deploy serve` runs on the host ports of services built from the repo,
//! and on one HTTP and one HTTPS listener for hostnames: it forwards each to the live
//! revision's container and switches between revisions without failing a request.
//!
//! ```text
//! host port ─ listener ─ sniff first bytes ─┬─ HTTP/1 request line ─ http: per request, the live backend,
//!                                           │      pooled keep-alive connections, upgrades → tunnel
//!                                           └─ anything else ──────── tcp: one tunnel to the backend
//!                                                                     live at connect time
//! :80  ─ listener ───────────────────────────── http: per request, the route of its Host (404 if none)
//! :443 ─ listener ─ TLS (certificate by SNI) ── http: HTTP/1.1 or HTTP/2 by ALPN, the same
//! ```
//!
//! How the daemon uses it:
//!
//! ```text
//! let proxy = Proxy::new(ProxyConfig::default());
//! proxy.listen("0.0.0.0:8080".parse()?)?;           // at start, for each published port
//! proxy.set_backend(8080, live_container_addr)?;     // from Docker labels, before any deploy
//! // a deploy, once the new container is healthy:
//! if let Some(old) = proxy.set_backend(8080, new_container_addr)? {
//!     let report = proxy.drain(old, DEFAULT_DRAIN_TIMEOUT).await?;  // log it,
//!     // then stop the old container
//! }
//! tracing::info!("{}", proxy.stats());               // counters for the daemon's log
//! // on SIGTERM:
//! proxy.shutdown(grace).await;
//! ```
//!
//! Architecture invariant: a switch never fails a request. A request, tunnel or TCP connection
//! counts as open on the backend it picked from the moment it picked it (taken under the
//! route's lock, so a switch that returned has seen it), and `drain` returns only once those
//! are done; idle pooled connections to the old backend are closed at the switch, so the old
//! server is stopped with none of ours reused mid-close. A pooled connection closed by the
//! server as we reuse it (its keep-alive timeout) is retried when that is safe (see `http`).
//!
//! Before the first deploy a port has no backend. It is bound anyway, so the daemon owns it
//! from the start and a clash shows at once rather than at the first deploy. HTTP requests get
//! `503 Service Unavailable` saying nothing is deployed yet (a closed connection would look
//! like a crash, and 503 is the status that means "temporarily"); a non-HTTP connection is
//! closed, all a byte stream can say.
//!
//! The gap when the daemon restarts: `shutdown` closes the listeners first, so from then until
//! the new daemon binds (process start, reading Docker, binding: typically well under a
//! second), connections to the ports are refused and those still in the old listener's
//! backlog are reset. Requests already received are answered, then their connections close,
//! so keep-alive clients reconnect to the new daemon. `SO_REUSEADDR` lets the new daemon bind
//! at once. There is no gap when the sockets outlive the daemon: systemd's socket unit
//! holds them (`hand_over`), or an upgrade passes them to the successor
//! (`listening_sockets`, `serve/upgrade.rs`).

mod backend;
pub(crate) mod backoff;
mod http;
mod listener;
mod sniff;
mod stats;
mod tcp;
#[cfg(test)]
mod tests;
pub(crate) mod tls;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

use backend::{Active, Backend, Work};
pub(crate) use stats::{BackendStats, ProxyStats};

/// How often an HTTP/2 client connection is pinged, and how long its answer may take.
const H2_PING_EVERY: Duration = Duration::from_secs(20);

/// How long a drain waits for the old backend's requests and tunnels unless told otherwise.
#[cfg(test)]
pub(crate) const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Tunables; `ProxyConfig::default()` suits the daemon.
#[derive(Clone, Debug)]
pub(crate) struct ProxyConfig {
    /// How long connecting to a backend may take before the request gets `502`. A stopped
    /// container's address on a bridge network does not refuse, it stays silent.
    pub(crate) connect_timeout: Duration,
    /// An idle pooled connection older than this is closed instead of reused. Below the
    /// keep-alive timeouts of common app servers (gunicorn 2 s, Node and uvicorn 5 s), so the
    /// server rarely closes a connection just as we reuse it.
    pub(crate) pool_idle_timeout: Duration,
    /// Idle keep-alive connections kept per backend.
    pub(crate) pool_max_idle: usize,
    /// How long a new connection may stay silent before it is forwarded as TCP without
    /// sniffing: protocols where the server speaks first (SMTP, MySQL) wait this long once.
    pub(crate) sniff_timeout: Duration,
    /// What to do with `X-Forwarded-For` and `X-Forwarded-Proto` sent by the client.
    pub(crate) forwarded: ForwardedHeaders,
    /// Client connections open at once, over all ports (each may hold a second descriptor
    /// to its backend). At the cap, listeners stop accepting and new connections wait in the
    /// kernel's backlog. The daemon derives it from its descriptor limit.
    pub(crate) max_connections: usize,
    /// How long a connection forwarded as TCP because its client sent nothing may stay silent
    /// both ways before it is closed: a server that speaks first has said something by then,
    /// and an idle connection holds its slot no longer.
    pub(crate) silent_timeout: Duration,
    /// How often each backend of a port with several is probed (a TCP connect, which must
    /// succeed within the same time).
    pub(crate) probe_interval: Duration,
    /// How long the app may take to answer a request (its response head) before the client
    /// gets `504 Gateway Timeout` (`proxy_timeout` in deploy.yml).
    pub(crate) upstream_timeout: Duration,
    /// How long a client may take to send a request's head: a slow client holds a
    /// connection slot no longer.
    pub(crate) header_read_timeout: Duration,
    /// The largest request head a client may send; a larger one gets `431`.
    pub(crate) max_header_bytes: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(1),
            pool_max_idle: 32,
            sniff_timeout: Duration::from_secs(2),
            forwarded: ForwardedHeaders::Extend,
            max_connections: 4096,
            silent_timeout: Duration::from_secs(10),
            probe_interval: Duration::from_secs(1),
            upstream_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 << 10,
        }
    }
}

/// `X-Forwarded-For` / `X-Forwarded-Proto` from the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ForwardedHeaders {
    /// Append the client's address to `X-Forwarded-For` and keep an `X-Forwarded-Proto`, as
    /// nginx's `$proxy_add_x_forwarded_for` and Go's `ReverseProxy` do. Right when a load
    /// balancer or TLS terminator sits in front; apps must trust only the last entry (ours)
    /// otherwise.
    Extend,
    /// Discard what the client sent; the proxy is the edge.
    Replace,
}

/// Errors from the proxy's API. Messages read after "deploy:".
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("failed to listen on `{addr}`: {error}")]
    Listen { addr: SocketAddr, error: io::Error },
    #[error("failed to listen on `{addr}`: the proxy is shut down")]
    ShutDown { addr: SocketAddr },
    #[error("failed to route port `{port}`: the proxy does not listen on it")]
    UnknownPort { port: u16 },
    #[error("refused to drain `{addr}`: {route} routes to it; switch it away first")]
    DrainLive { addr: SocketAddr, route: String },
    #[error("failed to listen for HTTPS on `{addr}`: {why}")]
    Tls { addr: SocketAddr, why: String },
}

/// What a drain found (`Proxy::drain`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DrainReport {
    pub(crate) addr: SocketAddr,
    /// Requests still in flight when the drain gave up (0 when it completed).
    pub(crate) requests: usize,
    /// TCP connections and upgraded tunnels still open when the drain gave up.
    pub(crate) tunnels: usize,
    pub(crate) waited: Duration,
}

impl DrainReport {
    /// Nothing was left open: stopping the old backend cuts nothing.
    pub(crate) fn is_complete(&self) -> bool {
        self.requests == 0 && self.tunnels == 0
    }
}

impl fmt::Display for DrainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let waited = self.waited.as_secs_f32();
        if self.is_complete() {
            write!(f, "`{}` drained in {waited:.1}s", self.addr)
        } else {
            write!(
                f,
                "`{}` still had {} and {} open after {waited:.1}s",
                self.addr,
                plural(self.requests, "request"),
                plural(self.tunnels, "tunnel"),
            )
        }
    }
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// What a shutdown left behind (`Proxy::shutdown`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ShutdownReport {
    /// Client connections cut because they outlasted the grace period (tunnels, mostly).
    pub(crate) cut: u64,
    pub(crate) waited: Duration,
}

/// Where the proxy is in its life; connection tasks watch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    /// No new connections; HTTP connections finish their request in flight and close.
    Draining,
    /// Everything still open is cut.
    Stopped,
}

/// The reverse proxy: listeners on host ports, each routing to its live backend.
///
/// Needs a Tokio runtime for `listen` and everything after it. Dropping it cuts every
/// connection at once; `shutdown` is the graceful way.
pub(crate) struct Proxy {
    shared: Arc<Shared>,
}

/// What every task of the proxy shares.
struct Shared {
    config: ProxyConfig,
    counters: stats::Counters,
    phase: watch::Sender<Phase>,
    server: hyper::server::conn::http1::Builder,
    /// The hostname listeners' server: HTTP/1.1, or HTTP/2 (by ALPN over TLS).
    hosts_server: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    /// Routes by hostname, read on every request of the hostname listeners.
    hosts: RwLock<HashMap<String, HostEntry>>,
    /// The certificates (the operator's, ACME's), for the HTTPS listener and the redirect.
    certs: Option<Arc<tls::Certs>>,
    /// The HTTPS listener's port once it listens (0 before): HTTP redirects there.
    https_port: AtomicU16,
    /// ACME's HTTP-01 tokens, answered on the hostname listeners for any host.
    challenges: Arc<Challenges>,
    client: hyper::client::conn::http1::Builder,
    /// Lock order: the registry, then a route. Requests take only their route's.
    registry: Mutex<Registry>,
    open_connections: AtomicU64,
    connections_closed: Notify,
    /// One permit per client connection (`ProxyConfig::max_connections`).
    slots: Arc<Semaphore>,
}

/// A client connection's place under `ProxyConfig::max_connections`, held until it closes
/// (or, for an upgrade, until its tunnel does).
type Slot = OwnedSemaphorePermit;

#[derive(Default)]
struct Registry {
    routes: HashMap<u16, Arc<Route>>,
    /// Backends that are live or still have work open, so a drain finds the one a switch
    /// left, and a switch back reuses it.
    backends: HashMap<SocketAddr, Arc<Backend>>,
    accept_loops: Vec<JoinHandle<()>>,
    /// Listening sockets handed over at start, not listened on yet.
    handed_over: BTreeMap<SocketAddr, std::net::TcpListener>,
    /// A copy of every listening socket, to hand to a successor on an upgrade.
    listening: Vec<std::os::fd::OwnedFd>,
}

/// A hostname's route, and whether its HTTP requests go to HTTPS when it has a certificate.
#[derive(Clone)]
struct HostEntry {
    route: Arc<Route>,
    https_redirect: bool,
}

/// What a route answers for, in logs and errors.
#[derive(Clone, Debug)]
enum RouteName {
    Port(u16),
    Host(String),
}

impl fmt::Display for RouteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteName::Port(port) => write!(f, "port `{port}`"),
            RouteName::Host(host) => write!(f, "hostname `{host}`"),
        }
    }
}

/// One host port (all its listeners, IPv4 and IPv6 alike), or one hostname, and the backends
/// it routes to: one, or a service's replicas, taken in turn.
struct Route {
    name: RouteName,
    live: RwLock<Vec<Arc<Backend>>>,
    /// Round robin's position.
    next: AtomicUsize,
}

impl Route {
    fn new(name: RouteName) -> Self {
        Self {
            name,
            live: RwLock::new(Vec::new()),
            next: AtomicUsize::new(0),
        }
    }

    fn live(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Backend>>> {
        self.live
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Picks the next live backend in turn, skipping those that do not answer while another
    /// does, and those in `tried`; counts `work` as open on it, atomically with respect to a
    /// switch: a drain started after `set_backends` returned sees this work. `None` when no
    /// backend is left to try.
    fn enter(&self, work: Work, tried: &[SocketAddr]) -> Option<Active> {
        let live = self.live();
        let candidates: Vec<&Arc<Backend>> =
            live.iter().filter(|b| !tried.contains(&b.addr)).collect();
        if candidates.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let turn = |i: usize| candidates[(start + i) % candidates.len()];
        let backend = (0..candidates.len())
            .map(turn)
            .find(|b| b.is_up())
            .unwrap_or_else(|| turn(0));
        Some(backend.enter(work))
    }

    /// Whether a backend other than `this` and those `tried` is left to try.
    fn has_other(&self, tried: &[SocketAddr], this: &Backend) -> bool {
        (self.live().iter()).any(|b| b.addr != this.addr && !tried.contains(&b.addr))
    }

    fn live_addrs(&self) -> Vec<SocketAddr> {
        self.live().iter().map(|backend| backend.addr).collect()
    }

    /// Replaces the live backends under the write lock; returns the addresses of the ones
    /// that no longer are.
    fn switch(&self, next: Vec<Arc<Backend>>) -> Vec<SocketAddr> {
        let mut live = self
            .live
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let has = |list: &[Arc<Backend>], b: &Arc<Backend>| list.iter().any(|x| Arc::ptr_eq(x, b));
        for added in next.iter().filter(|b| !has(&live, b)) {
            added.route_added();
        }
        let mut gone = Vec::new();
        for removed in live.iter().filter(|b| !has(&next, b)) {
            removed.route_removed();
            gone.push(removed.addr);
        }
        *live = next;
        gone
    }
}

/// ACME's HTTP-01 tokens the hostname listeners answer, with their key authorizations.
#[derive(Default)]
pub(crate) struct Challenges(RwLock<HashMap<String, String>>);

impl Challenges {
    /// The key authorization for `token`, while its challenge is open.
    pub(crate) fn answer(&self, token: &str) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }

    pub(crate) fn open(&self, token: &str, key_authorization: &str) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        map.insert(token.to_owned(), key_authorization.to_owned());
    }

    pub(crate) fn close(&self, token: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }
}

/// A DNS name: dot-separated labels of letters, digits and inner `-`, each at most 63
/// characters, at most 253 in all. No wildcard, no trailing dot, no IP address.
pub(crate) fn is_hostname(host: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let numeric_tld =
        (host.rsplit('.').next()).is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
    host.len() <= 253 && host.split('.').all(label) && !numeric_tld
}

/// Watches a backend of a port with several while any port routes to it: one that does not
/// accept a connection within the probe interval is skipped until it does again.
async fn probe(backend: Arc<Backend>, shared: Arc<Shared>) {
    let every = shared.config.probe_interval;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !backend.is_live() || *shared.phase.borrow() != Phase::Running {
            backend.probed.store(false, Ordering::Release);
            return;
        }
        let connected = tokio::time::timeout(every, tokio::net::TcpStream::connect(backend.addr));
        backend.set_up(matches!(connected.await, Ok(Ok(_))));
    }
}

/// Counts a client connection as open until dropped, so a shutdown can wait for them.
struct ConnectionGuard {
    shared: Arc<Shared>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.shared.open_connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.connections_closed.notify_waiters();
        }
    }
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Every update of the registry is complete before anything in it can panic.
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn hosts_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, HostEntry>> {
        self.hosts.read().unwrap_or_else(|p| p.into_inner())
    }

    fn hosts_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, HostEntry>> {
        self.hosts.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The route for `host`, and whether its plain HTTP requests go to HTTPS.
    fn host(&self, host: &str) -> Option<HostEntry> {
        self.hosts_read().get(host).cloned()
    }

    /// The HTTPS port a plain HTTP request for `host` is redirected to: only when the HTTPS
    /// listener runs and a certificate covers the host.
    fn https_port_for(&self, host: &str) -> Option<u16> {
        let port = self.https_port.load(Ordering::Acquire);
        let covered = self.certs.as_ref().is_some_and(|c| c.covers(host));
        (port != 0 && covered).then_some(port)
    }

    fn connection_opened(self: &Arc<Self>) -> ConnectionGuard {
        self.open_connections.fetch_add(1, Ordering::AcqRel);
        ConnectionGuard {
            shared: Arc::clone(self),
        }
    }

    async fn wait_connections_closed(&self, deadline: tokio::time::Instant) {
        loop {
            let notified = self.connections_closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open_connections.load(Ordering::Acquire) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

impl Proxy {
    #[cfg_attr(
        not(test),
        allow(
            dead_code,
            reason = "the tests and the proxy benchmark; the daemon has certificates"
        )
    )]
    pub(crate) fn new(config: ProxyConfig) -> Self {
        Self::with_certs(config, None)
    }

    /// A proxy whose hostname listeners serve HTTPS with `certs`.
    pub(crate) fn with_certs(config: ProxyConfig, certs: Option<Arc<tls::Certs>>) -> Self {
        let mut hosts_server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        hosts_server
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(config.max_header_bytes.max(8192));
        hosts_server
            .http2()
            .enable_connect_protocol()
            .timer(TokioTimer::new())
            .max_header_list_size(config.max_header_bytes.max(8192) as u32)
            // A peer that is gone (no answer to a ping) frees its connection's slot.
            .keep_alive_interval(Some(H2_PING_EVERY))
            .keep_alive_timeout(H2_PING_EVERY);
        let mut server = hyper::server::conn::http1::Builder::new();
        // A client that opens a connection and dribbles bytes cannot hold it for ever; one
        // that sends a head too large is answered `431` (hyper's answer to a full buffer).
        server
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(config.max_header_bytes.max(8192));
        let (phase, _) = watch::channel(Phase::Running);
        let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
        Self {
            shared: Arc::new(Shared {
                config,
                counters: stats::Counters::default(),
                phase,
                server,
                hosts_server,
                hosts: RwLock::new(HashMap::new()),
                certs,
                https_port: AtomicU16::new(0),
                challenges: Arc::default(),
                client: hyper::client::conn::http1::Builder::new(),
                registry: Mutex::new(Registry::default()),
                open_connections: AtomicU64::new(0),
                connections_closed: Notify::new(),
                slots,
            }),
        }
    }

    /// Binds `addr` and starts accepting; returns the bound address (port 0 picks one). The
    /// same port bound on another address shares its route.
    pub(crate) fn listen(&self, addr: SocketAddr) -> Result<SocketAddr, ProxyError> {
        let (listener, local) = self.bind(addr)?;
        let mut registry = self.shared.registry();
        let route = Arc::clone(
            (registry.routes)
                .entry(local.port())
                .or_insert_with(|| Arc::new(Route::new(RouteName::Port(local.port())))),
        );
        let task = tokio::spawn(listener::accept_loop(
            listener,
            listener::Entry::Port(route),
            Arc::clone(&self.shared),
        ));
        registry.accept_loops.push(task);
        tracing::info!(addr = %local, "proxy listening");
        Ok(local)
    }

    /// Binds `addr` for requests routed by hostname (`set_host_backends`): plain HTTP, or
    /// HTTPS with the proxy's certificates (`tls`). Returns the bound address.
    pub(crate) fn listen_hosts(
        &self,
        addr: SocketAddr,
        tls: bool,
    ) -> Result<SocketAddr, ProxyError> {
        let config =
            match (tls, &self.shared.certs) {
                (false, _) => None,
                (true, Some(certs)) => Some(tls::server_config(Arc::clone(certs)).map_err(
                    |e| ProxyError::Tls {
                        addr,
                        why: e.to_string(),
                    },
                )?),
                (true, None) => {
                    return Err(ProxyError::Tls {
                        addr,
                        why: "the proxy has no certificates directory".to_owned(),
                    });
                }
            };
        let (listener, local) = self.bind(addr)?;
        if tls {
            self.shared
                .https_port
                .store(local.port(), Ordering::Release);
        }
        let task = tokio::spawn(listener::accept_loop(
            listener,
            listener::Entry::Hosts(config.map(tokio_rustls::TlsAcceptor::from)),
            Arc::clone(&self.shared),
        ));
        self.shared.registry().accept_loops.push(task);
        tracing::info!(addr = %local, https = tls, "proxy listening for hostnames");
        Ok(local)
    }

    /// Routes every new request for `host` on the hostname listeners to `addrs`, in turn,
    /// atomically, as `set_backends` does for a port; returns the backends no longer routed
    /// to. With `https_redirect`, plain HTTP requests for a host that has a certificate get
    /// `308` to HTTPS.
    pub(crate) fn set_host_backends(
        &self,
        host: &str,
        addrs: &[SocketAddr],
        https_redirect: bool,
    ) -> Vec<SocketAddr> {
        let mut registry = self.shared.registry();
        let backends = registry.backends_for(addrs, &self.shared);
        let route = {
            let mut hosts = self.shared.hosts_mut();
            let entry = hosts.entry(host.to_owned()).or_insert_with(|| HostEntry {
                route: Arc::new(Route::new(RouteName::Host(host.to_owned()))),
                https_redirect,
            });
            entry.https_redirect = https_redirect;
            Arc::clone(&entry.route)
        };
        let previous = route.switch(backends);
        registry.forget_idle_backends();
        drop(registry);
        tracing::info!(host, from = ?previous, to = ?addrs, "switched backends");
        previous
    }

    /// Stops routing `host`: its requests get `404`, as any unknown host's. Returns the
    /// backends it was routing to, for a drain.
    pub(crate) fn remove_host(&self, host: &str) -> Vec<SocketAddr> {
        let mut registry = self.shared.registry();
        let Some(entry) = self.shared.hosts_mut().remove(host) else {
            return Vec::new();
        };
        let previous = entry.route.switch(Vec::new());
        registry.forget_idle_backends();
        tracing::info!(host, from = ?previous, "removed hostname");
        previous
    }

    /// The HTTP-01 challenges the hostname listeners answer (ACME's).
    pub(crate) fn challenges(&self) -> Arc<Challenges> {
        Arc::clone(&self.shared.challenges)
    }

    /// The backends `host` routes to now.
    pub(crate) fn host_backends(&self, host: &str) -> Vec<SocketAddr> {
        (self.shared.hosts_read().get(host)).map_or_else(Vec::new, |e| e.route.live_addrs())
    }

    /// The listening socket for `addr`: handed over at start, or bound now.
    fn bind(&self, addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ProxyError> {
        if *self.shared.phase.borrow() != Phase::Running {
            return Err(ProxyError::ShutDown { addr });
        }
        let listener = match self.handed_over(addr) {
            Some(listener) => listener,
            None => listener::bind(addr),
        }
        .map_err(|error| ProxyError::Listen { addr, error })?;
        let local = listener
            .local_addr()
            .map_err(|error| ProxyError::Listen { addr, error })?;
        let copy = std::os::fd::AsFd::as_fd(&listener)
            .try_clone_to_owned()
            .map_err(|error| ProxyError::Listen { addr, error })?;
        self.shared.registry().listening.push(copy);
        Ok((listener, local))
    }

    /// Gives the proxy listening sockets handed over at start (`serve/activation.rs`): a
    /// `listen` on one of their addresses uses it instead of binding.
    pub(crate) fn hand_over(&self, listeners: BTreeMap<SocketAddr, std::net::TcpListener>) {
        self.shared.registry().handed_over.extend(listeners);
    }

    /// A listening socket for something other than the proxy (the dashboard): handed over
    /// at start, or bound now, and handed to a successor on an upgrade like the proxy's.
    pub(crate) fn bind_other(
        &self,
        addr: SocketAddr,
    ) -> Result<tokio::net::TcpListener, ProxyError> {
        self.bind(addr).map(|(listener, _)| listener)
    }

    /// Copies of every listening socket, for a successor (`serve/upgrade.rs`).
    pub(crate) fn listening_sockets(&self) -> std::io::Result<Vec<std::os::fd::OwnedFd>> {
        (self.shared.registry().listening.iter())
            .map(|fd| fd.try_clone())
            .collect()
    }

    fn handed_over(&self, addr: SocketAddr) -> Option<std::io::Result<tokio::net::TcpListener>> {
        let listener = self.shared.registry().handed_over.remove(&addr)?;
        Some(
            listener
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(listener)),
        )
    }

    /// Routes every new request and connection on `port` to `addr`, atomically; returns the
    /// backend it replaces (`None` if there was none, or it was `addr` already). Work already
    /// on the old backend carries on: `drain` it, then stop it.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the daemon switches whole sets (`set_backends`)")
    )]
    pub(crate) fn set_backend(
        &self,
        port: u16,
        addr: SocketAddr,
    ) -> Result<Option<SocketAddr>, ProxyError> {
        Ok(self.set_backends(port, &[addr])?.into_iter().next())
    }

    /// Routes every new request and connection on `port` to `addrs`, in turn, atomically;
    /// returns the backends no longer routed to. Work already on those carries on: `drain`
    /// them, then stop them. A port with several backends probes each every
    /// `ProxyConfig::probe_interval` and skips those that do not accept a connection.
    pub(crate) fn set_backends(
        &self,
        port: u16,
        addrs: &[SocketAddr],
    ) -> Result<Vec<SocketAddr>, ProxyError> {
        let mut registry = self.shared.registry();
        let route = registry.route(port)?;
        let backends = registry.backends_for(addrs, &self.shared);
        let previous = route.switch(backends);
        registry.forget_idle_backends();
        drop(registry);
        tracing::info!(port, from = ?previous, to = ?addrs, "switched backends");
        Ok(previous)
    }

    /// Stops routing `port` anywhere: requests get `503` until `set_backends` (after the
    /// stack is taken down, say). Returns the backends it was routing to, for a drain.
    pub(crate) fn remove_backend(&self, port: u16) -> Result<Vec<SocketAddr>, ProxyError> {
        let mut registry = self.shared.registry();
        let route = registry.route(port)?;
        let previous = route.switch(Vec::new());
        registry.forget_idle_backends();
        drop(registry);
        tracing::info!(port, from = ?previous, "removed backends");
        Ok(previous)
    }

    /// The backends `port` routes to now.
    pub(crate) fn backends(&self, port: u16) -> Vec<SocketAddr> {
        let registry = self.shared.registry();
        (registry.routes.get(&port)).map_or_else(Vec::new, |route| route.live_addrs())
    }

    /// Waits until the backend at `addr`, which no port may route to any more, has no request
    /// in flight and no tunnel open, or until `timeout` passes; then closes its idle pooled
    /// connections. The report says what was still open: stopping the backend cuts it.
    pub(crate) async fn drain(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<DrainReport, ProxyError> {
        let started = Instant::now();
        let backend = {
            let registry = self.shared.registry();
            registry.refuse_live(addr, &self.shared)?;
            registry.backends.get(&addr).cloned()
        };
        let Some(backend) = backend else {
            // Forgotten, so nothing was open on it.
            return Ok(DrainReport {
                addr,
                requests: 0,
                tunnels: 0,
                waited: started.elapsed(),
            });
        };
        backend
            .wait_quiet(tokio::time::Instant::from_std(started) + timeout)
            .await;
        let (requests, tunnels) = backend.open();
        let mut registry = self.shared.registry();
        // Switched back while we waited: whoever did that now owns it, and it must not stop.
        registry.refuse_live(addr, &self.shared)?;
        backend.clear_pool();
        registry.forget_idle_backends();
        drop(registry);
        let report = DrainReport {
            addr,
            requests,
            tunnels,
            waited: started.elapsed(),
        };
        if report.is_complete() {
            tracing::info!("{report}");
        } else {
            tracing::warn!("{report}");
        }
        Ok(report)
    }

    /// Stops accepting and frees the ports (before it returns, so a successor can bind them),
    /// lets each HTTP connection finish its request in flight and close, waits up to `grace`
    /// for connections to end, then cuts the rest (tunnels, mostly).
    pub(crate) async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let started = Instant::now();
        // Only ever forward: a second call must not take a stopped proxy back to draining.
        self.shared.phase.send_if_modified(|phase| {
            let earlier = *phase < Phase::Draining;
            if earlier {
                *phase = Phase::Draining;
            }
            earlier
        });
        let (accept_loops, copies) = {
            let mut registry = self.shared.registry();
            let loops = std::mem::take(&mut registry.accept_loops);
            (loops, std::mem::take(&mut registry.listening))
        };
        // A successor holds its own copies; ours go, so the ports are free.
        drop(copies);
        for accept_loop in accept_loops {
            if let Err(error) = accept_loop.await {
                tracing::warn!(%error, "an accept loop ended abnormally");
            }
        }
        tracing::info!("proxy stopped accepting");
        self.shared
            .wait_connections_closed(tokio::time::Instant::from_std(started) + grace)
            .await;
        let cut = self.shared.open_connections.load(Ordering::Acquire);
        self.shared.phase.send_replace(Phase::Stopped);
        let report = ShutdownReport {
            cut,
            waited: started.elapsed(),
        };
        tracing::info!(
            cut,
            waited_ms = report.waited.as_millis(),
            "proxy shut down"
        );
        report
    }

    /// The counters, and every backend that is live or has work open.
    pub(crate) fn stats(&self) -> ProxyStats {
        let mut stats = ProxyStats::from_counters(
            &self.shared.counters,
            self.shared.open_connections.load(Ordering::Acquire),
        );
        let registry = self.shared.registry();
        stats.backends = registry
            .backends
            .values()
            .map(|backend| {
                let (requests, tunnels) = backend.open();
                BackendStats {
                    addr: backend.addr,
                    live: backend.is_live(),
                    up: backend.is_up(),
                    requests,
                    tunnels,
                    pooled: backend.pooled(),
                }
            })
            .collect();
        stats.backends.sort_by_key(|backend| backend.addr);
        stats
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.phase.send_replace(Phase::Stopped);
    }
}

impl Registry {
    fn route(&self, port: u16) -> Result<Arc<Route>, ProxyError> {
        self.routes
            .get(&port)
            .cloned()
            .ok_or(ProxyError::UnknownPort { port })
    }

    /// The backends at `addrs`, made if new; with several, each is probed.
    fn backends_for(&mut self, addrs: &[SocketAddr], shared: &Arc<Shared>) -> Vec<Arc<Backend>> {
        let backends: Vec<Arc<Backend>> = (addrs.iter())
            .map(|addr| {
                Arc::clone(
                    (self.backends)
                        .entry(*addr)
                        .or_insert_with(|| Arc::new(Backend::new(*addr))),
                )
            })
            .collect();
        if backends.len() > 1 {
            for backend in &backends {
                if !backend.probed.swap(true, Ordering::AcqRel) {
                    tokio::spawn(probe(Arc::clone(backend), Arc::clone(shared)));
                }
            }
        }
        backends
    }

    /// Fails when a port or hostname routes to `addr` (taken under the registry's lock, as
    /// every switch is).
    fn refuse_live(&self, addr: SocketAddr, shared: &Shared) -> Result<(), ProxyError> {
        let hosts = shared.hosts_read();
        let live = (self.routes.values())
            .chain(hosts.values().map(|entry| &entry.route))
            .find(|route| route.live_addrs().contains(&addr));
        match live {
            Some(route) => Err(ProxyError::DrainLive {
                addr,
                route: route.name.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Drops backends no port routes to and nothing uses: a drain of one finds nothing open,
    /// which is the truth.
    fn forget_idle_backends(&mut self) {
        self.backends.retain(|_, backend| {
            let (requests, tunnels) = backend.open();
            backend.is_live() || requests > 0 || tunnels > 0
        });
    }
}
