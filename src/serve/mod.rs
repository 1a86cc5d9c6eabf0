//! `deploy serve`: the daemon. So far its reverse proxy, which the daemon will drive.

// Nothing outside calls the proxy until the daemon is wired into the pipeline; its tests do.
#![cfg_attr(not(test), allow(dead_code))]

pub(crate) mod proxy;
