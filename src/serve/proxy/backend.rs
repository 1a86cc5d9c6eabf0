//! One backend address: what is in flight to it, and its pool of idle keep-alive connections.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;
use tokio::sync::Notify;

use super::http::ReqBody;

/// A container address that some port routes to, or did until a switch.
///
/// It lives in the proxy's registry while a port routes to it or work to it is open, and in
/// every request, tunnel and pooled connection that uses it.
pub(super) struct Backend {
    pub(super) addr: SocketAddr,
    /// How many ports route to this backend. Changed only under the route's write lock, so a
    /// request that took a guard under the read lock is always seen by a later drain.
    live_on: AtomicUsize,
    /// Requests and tunnels together: the one number a drain waits on. A request that becomes
    /// a tunnel moves between the two counters below without this one passing through zero.
    open: AtomicUsize,
    requests: AtomicUsize,
    tunnels: AtomicUsize,
    /// Woken whenever `open` drops to zero.
    idle: Notify,
    pool: Mutex<VecDeque<Idle>>,
    /// A connection to it failed, or its probe did: a port with other backends skips it
    /// until a connection or a probe succeeds.
    down: AtomicBool,
    /// A probe task watches it (`Proxy::set_backends`).
    pub(super) probed: AtomicBool,
}

/// A keep-alive connection that finished its last exchange and waits for the next one.
struct Idle {
    sender: SendRequest<ReqBody>,
    since: Instant,
}

/// What a guard holds open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Work {
    /// An HTTP exchange, from the request's arrival to the end of its response body.
    Request,
    /// A plain TCP connection or an upgraded one (WebSocket), until either side closes.
    Tunnel,
}

/// Counts one piece of work as open on its backend until dropped, which lets a drain know when
/// the old backend is quiet.
pub(super) struct Active {
    backend: Arc<Backend>,
    work: Work,
}

impl Backend {
    pub(super) fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            live_on: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            tunnels: AtomicUsize::new(0),
            idle: Notify::new(),
            pool: Mutex::new(VecDeque::new()),
            down: AtomicBool::new(false),
            probed: AtomicBool::new(false),
        }
    }

    pub(super) fn is_up(&self) -> bool {
        !self.down.load(Ordering::Acquire)
    }

    /// Records whether it answers; the daemon's log says when that changes.
    pub(super) fn set_up(&self, up: bool) {
        if self.down.swap(!up, Ordering::AcqRel) == up {
            match up {
                true => tracing::info!(backend = %self.addr, "backend answers again"),
                false => {
                    tracing::warn!(backend = %self.addr, "backend does not answer; skipped while others do")
                }
            }
        }
    }

    /// Whether any port routes new work here.
    pub(super) fn is_live(&self) -> bool {
        self.live_on.load(Ordering::Acquire) > 0
    }

    /// Called under the route's write lock when a port starts routing here.
    pub(super) fn route_added(&self) {
        self.live_on.fetch_add(1, Ordering::AcqRel);
    }

    /// Called under the route's write lock when a port stops routing here. The last port to
    /// leave closes the idle connections: nothing new will use them, and the old server should
    /// see no keep-alive connections from us by the time it is stopped.
    pub(super) fn route_removed(&self) {
        if self.live_on.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.clear_pool();
        }
    }

    /// Starts counting a piece of work. Callers take it under the route's read lock (see
    /// `live_on`).
    pub(super) fn enter(self: &Arc<Self>, work: Work) -> Active {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.counter(work).fetch_add(1, Ordering::AcqRel);
        Active {
            backend: Arc::clone(self),
            work,
        }
    }

    fn counter(&self, work: Work) -> &AtomicUsize {
        match work {
            Work::Request => &self.requests,
            Work::Tunnel => &self.tunnels,
        }
    }

    /// Requests and tunnels still open.
    pub(super) fn open(&self) -> (usize, usize) {
        (
            self.requests.load(Ordering::Acquire),
            self.tunnels.load(Ordering::Acquire),
        )
    }

    /// Waits until nothing is open, or until `deadline`. Returns whether it got quiet.
    pub(super) async fn wait_quiet(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            // Registered before the check, so a drop to zero between the check and the wait
            // still wakes us.
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.open.load(Ordering::Acquire) == 0;
            }
        }
    }

    fn pool(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        // The pool holds no invariant a panic could break halfway: keep using it.
        self.pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently used idle connection that is still open and younger than
    /// `idle_timeout`. Most recent first, because it is the least likely to be closed by the
    /// server's own keep-alive timeout.
    pub(super) fn checkout(&self, idle_timeout: Duration) -> Option<SendRequest<ReqBody>> {
        let mut pool = self.pool();
        let now = Instant::now();
        while let Some(idle) = pool.pop_back() {
            if now.duration_since(idle.since) < idle_timeout
                && idle.sender.is_ready()
                && !idle.sender.is_closed()
            {
                return Some(idle.sender);
            }
        }
        None
    }

    /// Puts a connection back for reuse, if this backend is still live and the pool has room.
    /// Otherwise dropping the sender closes the connection.
    pub(super) fn checkin(
        &self,
        sender: SendRequest<ReqBody>,
        idle_timeout: Duration,
        max_idle: usize,
    ) {
        let mut pool = self.pool();
        // Checked under the pool lock, which `route_removed` also takes after its decrement:
        // a connection either sees the backend retired or is cleared with the rest.
        if !self.is_live() || max_idle == 0 {
            return;
        }
        let now = Instant::now();
        while pool
            .front()
            .is_some_and(|idle| now.duration_since(idle.since) >= idle_timeout)
        {
            pool.pop_front();
        }
        if pool.len() >= max_idle {
            pool.pop_front();
        }
        pool.push_back(Idle { sender, since: now });
    }

    pub(super) fn pooled(&self) -> usize {
        self.pool().len()
    }

    pub(super) fn clear_pool(&self) {
        self.pool().clear();
    }
}

impl Active {
    pub(super) fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// Turns a request into the tunnel that its `101 Switching Protocols` started.
    pub(super) fn into_tunnel(mut self) -> Self {
        if self.work != Work::Tunnel {
            // Up before down, so `open` never passes through zero.
            self.backend.tunnels.fetch_add(1, Ordering::AcqRel);
            self.backend.requests.fetch_sub(1, Ordering::AcqRel);
            self.work = Work::Tunnel;
        }
        self
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.backend
            .counter(self.work)
            .fetch_sub(1, Ordering::AcqRel);
        if self.backend.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.backend.idle.notify_waiters();
        }
    }
}
