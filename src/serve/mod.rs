//! `deploy serve`: the daemon (zero-downtime proxy, deploys handed over from the hook,
//! autoheal, restart-safe), and the hook's client side of the hand-off.

pub(crate) mod acme;
mod activation;
mod admission;
mod autoheal;
pub(crate) mod client;
pub(crate) mod config;
mod control;
mod daemon;
pub(crate) mod dashboard;
mod descriptors;
mod protocol;
pub(crate) mod proxy;
pub(crate) mod registry;
mod schedule;
mod switch;
pub(crate) mod upgrade;

pub(crate) use daemon::run;
