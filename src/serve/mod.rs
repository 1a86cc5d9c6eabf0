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

/// Where an environment answers: a URL per hostname of its settings, `https://` where a
/// certificate (the operator's, or one ACME obtained) serves it, `http://` otherwise.
pub(crate) fn urls(root: &crate::root::Root, hostnames: &[String]) -> Vec<String> {
    if hostnames.is_empty() {
        return Vec::new();
    }
    let dir = (config::ServeConfig::load().unwrap_or_default()).certs;
    let certs = proxy::tls::Certs::load(&acme::cert_dirs(&dir, std::slice::from_ref(root)));
    (hostnames.iter())
        .map(|h| match certs.covers(h) {
            true => format!("https://{h}/"),
            false => format!("http://{h}/"),
        })
        .collect()
}
