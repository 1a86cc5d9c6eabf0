//! Listening sockets handed over by whoever started the daemon: systemd's socket activation
//! (`LISTEN_PID`, `LISTEN_FDS`, descriptors from 3 on), or the daemon this one replaces on
//! an upgrade (`DEPLOY_HANDOVER_FDS`, the same layout). They outlive the daemon: while it is
//! down (killed, restarting, upgrading), connections wait in the kernel's backlog instead of
//! being refused, and the next daemon accepts them.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use nix::sys::stat::SFlag;

/// The first descriptor passed (`SD_LISTEN_FDS_START`).
pub(crate) const FIRST: RawFd = 3;

/// Set by a daemon handing its sockets to its successor: how many, from `FIRST` on.
pub(crate) const HANDOVER_FDS: &str = "DEPLOY_HANDOVER_FDS";

/// What was handed over: the proxy's TCP listeners by address, the roots' control sockets
/// by path.
#[derive(Default)]
pub(crate) struct Handed {
    pub(crate) tcp: BTreeMap<SocketAddr, TcpListener>,
    pub(crate) unix: BTreeMap<PathBuf, UnixListener>,
}

/// The listeners passed to this process. Read once, at start: the variables are removed,
/// so no child of ours takes them for its own.
pub(crate) fn take() -> Handed {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    let systemd = var("LISTEN_PID") == Some(std::process::id());
    let count = match var(HANDOVER_FDS) {
        Some(count) => Some(count),
        None if systemd => var("LISTEN_FDS"),
        None => None,
    };
    // SAFETY (of the environment calls): at start, before any other thread reads it.
    unsafe {
        for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", HANDOVER_FDS] {
            std::env::remove_var(name);
        }
    }
    let mut out = Handed::default();
    for fd in FIRST..FIRST + count.unwrap_or(0) as RawFd {
        // A descriptor that is not a socket is not taken: it may be a file of ours that only
        // got the number because the socket never came.
        // SAFETY: only looked at, while it is open (fstat fails otherwise).
        let is_socket = nix::sys::stat::fstat(unsafe { BorrowedFd::borrow_raw(fd) })
            .is_ok_and(|st| st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFSOCK.bits());
        if !is_socket {
            tracing::warn!(fd, "a handed-over descriptor is not a socket; left alone");
            continue;
        }
        // SAFETY: the protocol hands these descriptors to this process, and nothing else in
        // it has taken them.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = nix::fcntl::fcntl(
            &owned,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        let tcp = TcpListener::from(owned);
        if let Ok(addr) = tcp.local_addr() {
            tracing::info!(%addr, fd, "listening socket handed over");
            out.tcp.insert(addr, tcp);
            continue;
        }
        let unix = UnixListener::from(OwnedFd::from(tcp));
        match unix
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(PathBuf::from))
        {
            Some(path) => {
                tracing::info!(path = %path.display(), fd, "control socket handed over");
                out.unix.insert(path, unix);
            }
            None => tracing::warn!(
                fd,
                "a handed-over descriptor is neither TCP nor a named socket"
            ),
        }
    }
    out
}
