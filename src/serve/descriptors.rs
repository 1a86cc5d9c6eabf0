//! The daemon's file descriptors: the soft limit is raised to the hard one at start, and the
//! proxy's connection cap is what is left after a reserve for everything else the daemon does.
//!
//! Each proxied connection may hold two descriptors (the client's and one to its backend).
//! Without a cap, a flood of idle connections takes them all, and then the control socket,
//! the engine, the ledger and the proxy's own backend connections fail with `EMFILE`.

use std::io;

use super::admission;

/// Descriptors the proxy never takes: the control socket's clients (`admission::TOTAL`),
/// the proxy's idle pooled connections to its backends (up to 32 per backend, a few backends
/// during a switch), and the daemon's own (the engine's connections and event stream, the
/// ledger and its WAL, the logs, the listeners, git's pack files during a checkout, the files
/// of a build context).
pub(crate) const RESERVED: u64 = admission::TOTAL as u64 + 448;
/// The most proxied connections at once whatever the limit: each costs memory as well
/// (buffers, a task), and a host that needs more needs more than one daemon's proxy.
pub(crate) const MAX_PROXY_CONNECTIONS: u64 = 16 * 1024;
/// The fewest, even on a limit too low for the reserve, so the proxy still serves.
const MIN_PROXY_CONNECTIONS: u64 = 16;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft limit in force
/// (unchanged when raising fails).
pub(crate) fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft >= hard {
        return Ok(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => Ok(hard),
        Err(error) => {
            tracing::warn!(%error, soft, hard, "failed to raise the descriptor limit");
            Ok(soft)
        }
    }
}

/// The proxy's connection cap for a descriptor limit of `nofile`.
pub(crate) fn proxy_connections(nofile: u64) -> usize {
    let cap =
        (nofile.saturating_sub(RESERVED) / 2).clamp(MIN_PROXY_CONNECTIONS, MAX_PROXY_CONNECTIONS);
    usize::try_from(cap).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve_and_two_descriptors_per_connection() {
        assert_eq!(proxy_connections(1024), 256);
        assert_eq!(proxy_connections(4096), 1792);
        // systemd's default hard limit, and an unlimited-looking one.
        assert_eq!(proxy_connections(524_288), 16_384);
        assert_eq!(proxy_connections(u64::MAX), 16_384);
        // Below the reserve, the proxy still serves a few.
        assert_eq!(proxy_connections(256), 16);
        assert_eq!(proxy_connections(0), 16);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        use nix::sys::resource::{Resource, getrlimit};
        let limit = raise_nofile_limit().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((limit, soft), (hard, hard));
    }
}
