//! Listening sockets handed over by whoever started the daemon, the way systemd's socket
//! activation does (`LISTEN_PID`, `LISTEN_FDS`, descriptors from 3 on). They outlive the
//! daemon: while it is down (killed, restarting, upgrading), connections wait in the
//! kernel's backlog instead of being refused, and the next daemon accepts them.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::stat::SFlag;

/// The first descriptor passed (`SD_LISTEN_FDS_START`).
const FIRST: RawFd = 3;

/// The TCP listeners passed to this process, by the address each listens on. Read once, at
/// start: the variables are removed, so no child of ours takes them for its own.
pub(crate) fn take() -> BTreeMap<SocketAddr, TcpListener> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<RawFd>().ok())
        .unwrap_or(0);
    // SAFETY (of the environment calls): at start, before any other thread reads it.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if !ours {
        return BTreeMap::new();
    }
    let mut out = BTreeMap::new();
    for fd in FIRST..FIRST + count {
        // A descriptor that is not a socket is not taken: it may be a file of ours that only
        // got the number because the socket never came.
        // SAFETY: only looked at, while it is open (fstat fails otherwise).
        let is_socket = nix::sys::stat::fstat(unsafe { BorrowedFd::borrow_raw(fd) })
            .is_ok_and(|st| st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFSOCK.bits());
        if !is_socket {
            tracing::warn!(fd, "a handed-over descriptor is not a socket; left alone");
            continue;
        }
        // SAFETY: the socket activation protocol hands these descriptors to this process
        // (LISTEN_PID is ours), and nothing else in it has taken them.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = nix::fcntl::fcntl(
            &owned,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        let listener = TcpListener::from(owned);
        match listener.local_addr() {
            Ok(addr) => {
                tracing::info!(%addr, fd, "listening socket handed over");
                out.insert(addr, listener);
            }
            Err(error) => {
                tracing::warn!(fd, %error, "a handed-over descriptor is not a TCP socket")
            }
        }
    }
    out
}
