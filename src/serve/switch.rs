//! The proxy as the daemon's roots share it: one `HostProxy` for the host (its listeners,
//! which root owns each port and hostname), and one `ProxySwitch` per root, the pipeline's
//! view of it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::bail;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::Notify;

use crate::docker::routes::{Listen, Route};
use crate::pipeline::traffic::Switch;

use super::config::ServeConfig;
use super::proxy::Proxy;

/// What every root of the daemon shares.
pub(super) struct HostProxy {
    pub(super) proxy: Proxy,
    pub(super) serve: ServeConfig,
    /// Port listeners open now.
    listening: Mutex<BTreeSet<SocketAddr>>,
    /// The hostname listeners are open (from the first route to a hostname on).
    hosts_listening: Mutex<bool>,
    /// Which root routes each port and hostname: a second root claiming one is refused.
    owners: Mutex<BTreeMap<Owned, PathBuf>>,
}

/// A port or a hostname, as a root owns it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Owned {
    Port(u16),
    Host(String),
}

impl Owned {
    fn of(listen: &Listen) -> Self {
        match listen {
            Listen::Port(addr) => Owned::Port(addr.port()),
            Listen::Host { name, .. } => Owned::Host(name.clone()),
        }
    }
}

impl std::fmt::Display for Owned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owned::Port(port) => write!(f, "port `{port}`"),
            Owned::Host(host) => write!(f, "hostname `{host}`"),
        }
    }
}

impl HostProxy {
    pub(super) fn new(proxy: Proxy, serve: ServeConfig) -> Self {
        Self {
            proxy,
            serve,
            listening: Mutex::new(BTreeSet::new()),
            hosts_listening: Mutex::new(false),
            owners: Mutex::new(BTreeMap::new()),
        }
    }

    fn owners(&self) -> MutexGuard<'_, BTreeMap<Owned, PathBuf>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens the HTTP and HTTPS listeners for hostnames, once.
    fn listen_hosts(&self) -> anyhow::Result<()> {
        let mut listening = self
            .hosts_listening
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !*listening {
            self.proxy.listen_hosts(self.serve.http, false)?;
            self.proxy.listen_hosts(self.serve.https, true)?;
            *listening = true;
        }
        Ok(())
    }

    fn listen(&self, addr: SocketAddr) -> anyhow::Result<()> {
        let mut listening = self.listening.lock().unwrap_or_else(|p| p.into_inner());
        if !listening.contains(&addr) {
            self.proxy.listen(addr)?;
            listening.insert(addr);
        }
        Ok(())
    }
}

/// One root's switches, one per environment (each owns its ports and hostnames), made the
/// first time the environment is deployed or its containers are found running.
pub(super) struct Switches {
    pub(super) host: Arc<HostProxy>,
    pub(super) root: crate::root::Root,
    pub(super) drain_timeout: Duration,
    /// Told whenever one of this root's hostnames is routed (ACME looks for certificates).
    pub(super) hosts_routed: Arc<Notify>,
    by_env: Mutex<BTreeMap<crate::ids::EnvName, Arc<ProxySwitch>>>,
}

impl Switches {
    pub(super) fn new(
        host: Arc<HostProxy>,
        root: crate::root::Root,
        drain_timeout: Duration,
    ) -> Self {
        Self {
            host,
            root,
            drain_timeout,
            hosts_routed: Arc::new(Notify::new()),
            by_env: Mutex::new(BTreeMap::new()),
        }
    }

    /// The switch of `env`, whose ports and hostnames it owns under its folder's name.
    pub(super) fn get(&self, env: &crate::ids::EnvName) -> Arc<ProxySwitch> {
        let mut by_env = self.by_env.lock().unwrap_or_else(|p| p.into_inner());
        let switch = by_env.entry(env.clone()).or_insert_with(|| {
            Arc::new(ProxySwitch {
                host: Arc::clone(&self.host),
                root: self.root.with_env(env.clone()).dir(),
                drain_timeout: self.drain_timeout,
                hosts_routed: Arc::clone(&self.hosts_routed),
            })
        });
        Arc::clone(switch)
    }

    /// Every environment's switch made so far.
    pub(super) fn all(&self) -> Vec<(crate::ids::EnvName, Arc<ProxySwitch>)> {
        let by_env = self.by_env.lock().unwrap_or_else(|p| p.into_inner());
        by_env
            .iter()
            .map(|(e, s)| (e.clone(), Arc::clone(s)))
            .collect()
    }

    /// The hostnames of every environment of the root.
    pub(super) fn hosts(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .flat_map(|(_, s)| s.hosts())
            .collect()
    }
}

/// One environment's view of the proxy: the pipeline switches its routes through it.
pub(super) struct ProxySwitch {
    pub(super) host: Arc<HostProxy>,
    /// The folder of the environment whose routes these are (ROOT for `production`).
    pub(super) root: PathBuf,
    pub(super) drain_timeout: Duration,
    /// Told whenever this root's hostnames are routed (ACME looks for certificates then).
    pub(super) hosts_routed: Arc<Notify>,
}

impl ProxySwitch {
    /// Listens where needed and points each port and hostname at its backends: those of
    /// every route to it (a service's replicas), taken in turn. A port or hostname another
    /// root routes is refused, naming both roots, before anything changes.
    pub(super) fn route(&self, routes: Vec<Route>) -> anyhow::Result<()> {
        let mut owned: BTreeMap<Owned, (bool, Vec<SocketAddr>)> = BTreeMap::new();
        for r in &routes {
            let redirect = matches!(
                r.listen,
                Listen::Host {
                    https_redirect: true,
                    ..
                }
            );
            let (_, backends) = owned
                .entry(Owned::of(&r.listen))
                .or_insert((redirect, Vec::new()));
            if !backends.contains(&r.backend) {
                backends.push(r.backend);
            }
        }
        {
            let mut owners = self.host.owners();
            self.refuse_taken(&owners, owned.keys())?;
            for key in owned.keys() {
                owners.insert(key.clone(), self.root.clone());
            }
        }
        for r in &routes {
            match &r.listen {
                Listen::Port(addr) => self.host.listen(*addr)?,
                Listen::Host { .. } => self.host.listen_hosts()?,
            }
        }
        let proxy = &self.host.proxy;
        let mut routed_hosts = false;
        for (key, (redirect, backends)) in owned {
            match key {
                Owned::Port(port) => {
                    if proxy.backends(port) != backends {
                        proxy.set_backends(port, &backends)?;
                    }
                }
                Owned::Host(host) => {
                    proxy.set_host_backends(&host, &backends, redirect);
                    routed_hosts = true;
                }
            }
        }
        if routed_hosts {
            self.hosts_routed.notify_one();
        }
        Ok(())
    }

    /// Fails naming both roots when another root routes one of `keys`.
    fn refuse_taken<'a>(
        &self,
        owners: &BTreeMap<Owned, PathBuf>,
        keys: impl IntoIterator<Item = &'a Owned>,
    ) -> anyhow::Result<()> {
        for key in keys {
            match owners.get(key) {
                Some(other) if *other != self.root => bail!(
                    "{key} is routed by `{}` already, and `{}` asks for it too; a port or hostname can route to one stack only",
                    other.display(),
                    self.root.display()
                ),
                _ => {}
            }
        }
        Ok(())
    }

    /// This root's hostnames.
    pub(super) fn hosts(&self) -> Vec<String> {
        self.owned()
            .into_iter()
            .filter_map(|o| match o {
                Owned::Host(host) => Some(host),
                Owned::Port(_) => None,
            })
            .collect()
    }

    fn owned(&self) -> Vec<Owned> {
        (self.host.owners().iter())
            .filter(|(_, root)| **root == self.root)
            .map(|(owned, _)| owned.clone())
            .collect()
    }

    /// Routes only what `routes` asks for (the containers that run now, after `deploy
    /// down`): a port whose containers are gone answers `503`, a hostname `404`.
    pub(super) fn refresh(&self, routes: Vec<Route>) -> anyhow::Result<()> {
        let served: BTreeSet<Owned> = routes.iter().map(|r| Owned::of(&r.listen)).collect();
        for owned in self.owned().into_iter().filter(|o| !served.contains(o)) {
            self.release(&owned)?;
            tracing::info!(root = %self.root.display(), "no container serves {owned} any more");
        }
        self.route(routes)
    }

    /// Stops routing `owned` and gives it up.
    fn release(&self, owned: &Owned) -> anyhow::Result<()> {
        match owned {
            // The port stays bound (a clash would show at once), answering 503.
            Owned::Port(port) => {
                self.host.proxy.remove_backend(*port)?;
            }
            Owned::Host(host) => {
                self.host.proxy.remove_host(host);
            }
        }
        self.host.owners().remove(owned);
        Ok(())
    }
}

impl Switch for ProxySwitch {
    fn check(&self, routes: &[Route]) -> anyhow::Result<()> {
        let keys: Vec<Owned> = routes.iter().map(|r| Owned::of(&r.listen)).collect();
        self.refuse_taken(&self.host.owners(), &keys)
    }

    fn switch(&self, routes: Vec<Route>) -> BoxFuture<'_, anyhow::Result<()>> {
        async move { self.route(routes) }.boxed()
    }

    fn drain(&self, old: Vec<SocketAddr>) -> BoxFuture<'_, ()> {
        async move {
            let proxy = &self.host.proxy;
            // A hostname left routed only to replaced containers was taken out of deploy.yml.
            for host in self.hosts() {
                let backends = proxy.host_backends(&host);
                if !backends.is_empty() && backends.iter().all(|b| old.contains(b)) {
                    let _ = self.release(&Owned::Host(host.clone()));
                    tracing::info!(host, "hostname no longer routed");
                }
            }
            for addr in old {
                match proxy.drain(addr, self.drain_timeout).await {
                    Ok(report) => tracing::info!(%report, "drained"),
                    Err(e) => tracing::warn!(%addr, error = %e, "not drained"),
                }
            }
            tracing::info!(stats = %proxy.stats(), "proxy");
        }
        .boxed()
    }
}
