//! How traffic reaches a deploy's published ports: bound by the containers themselves, or
//! owned by `deploy serve`'s proxy, which the pipeline switches to the new containers.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use crate::docker::apply::Applied;
use crate::docker::routes::{self, Listen, Route};
use crate::docker::takeover;
use crate::docker::{self, Docker};
use crate::ids::ServiceName;
use crate::plan::Plan;
use crate::report::Reporter;

/// What the daemon's proxy offers the pipeline.
pub(crate) trait Switch: Send + Sync {
    /// Whether these routes may be taken at all (no other stack routes one of their ports
    /// or hostnames): a refusal the old containers cannot cure by giving up their ports.
    fn check(&self, routes: &[Route]) -> anyhow::Result<()>;
    /// Sends new connections and requests for each route's listener to its backend, opening
    /// listeners that are not open yet. Returns once the switch is in effect.
    fn switch(&self, routes: Vec<Route>) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Waits until nothing is in flight to these old backends, or the drain timeout passes.
    fn drain(&self, old: Vec<SocketAddr>) -> BoxFuture<'_, ()>;
}

#[derive(Clone, Copy)]
pub(crate) enum Traffic<'a> {
    /// No daemon: containers publish their ports, as docker-compose does.
    Direct,
    /// `deploy serve` runs this deploy and owns the built services' ports.
    Proxied(&'a dyn Switch),
}

impl Traffic<'_> {
    pub(crate) fn publish(self) -> crate::plan::container::Publish {
        match self {
            Traffic::Direct => crate::plan::container::Publish::Direct,
            Traffic::Proxied(_) => crate::plan::container::Publish::Proxied,
        }
    }
}

/// Moves traffic to the new containers, lets the old ones finish what they serve, then
/// removes them. If the switch fails, the new containers are removed and the old ones keep
/// serving.
pub(crate) async fn cut_over(
    traffic: Traffic<'_>,
    docker: &Docker,
    plan: &Plan,
    applied: Applied,
    reporter: &Reporter,
) -> anyhow::Result<()> {
    let Traffic::Proxied(switch) = traffic else {
        applied.commit(docker, plan, reporter).await;
        return Ok(());
    };
    // Every container of a proxied service, its replicas all: the new set as one.
    let proxied: BTreeSet<&ServiceName> = (plan.services.iter())
        .filter(|s| {
            !s.container.proxied.is_empty()
                || s.container
                    .labels
                    .contains_key(crate::plan::names::LABEL_HOSTS)
        })
        .map(|s| &s.service)
        .collect();
    let (new, old) = match routes_of(docker, &proxied, &applied).await {
        Ok(routes) => routes,
        Err(e) => {
            applied.rollback(docker, reporter).await;
            return Err(
                anyhow::Error::new(e).context("failed to switch traffic to the new containers")
            );
        }
    };
    if let Err(e) = switch.check(&new) {
        applied.rollback(docker, reporter).await;
        return Err(e);
    }
    if !new.is_empty() {
        // The old containers may publish the ports themselves (deployed while the daemon
        // was not running).
        if let Err(first) = switch.switch(new.clone()).await
            && let Err(e) = take_over(switch, docker, &applied, &new, reporter).await
        {
            applied.rollback(docker, reporter).await;
            return Err(anyhow::anyhow!("{first:#}; taking the ports over: {e:#}")
                .context("failed to switch traffic to the new containers"));
        }
        for r in &new {
            reporter.info(format!("traffic on {} now goes to {}", r.listen, r.backend));
        }
    }
    if !old.is_empty() {
        switch.drain(old).await;
    }
    applied.commit(docker, plan, reporter).await;
    Ok(())
}

/// Switches traffic to `new` after taking the old containers that publish its host ports
/// (deployed while the daemon was not running) off their networks, which frees the ports at
/// once: new connections are refused for the milliseconds between, and requests in flight
/// to the old containers are cut. If the switch still fails, the old containers are put back.
async fn take_over(
    switch: &dyn Switch,
    docker: &Docker,
    applied: &Applied,
    new: &[Route],
    reporter: &Reporter,
) -> anyhow::Result<()> {
    let ports: BTreeSet<u16> = (new.iter())
        .filter_map(|r| match r.listen {
            Listen::Port(addr) => Some(addr.port()),
            Listen::Host { .. } => None,
        })
        .collect();
    let mut takeover = takeover::plan(docker, applied.retiring(), &ports).await?;
    if takeover.is_empty() {
        anyhow::bail!("no old container of this stack publishes these ports");
    }
    // The engine stops forwarding the port well before the disconnect call returns (tens of
    // ms against about a hundred here), so binding is retried while each call runs. The
    // old container keeps the networks left after the port is free, until it is removed.
    let mut last_refused = Instant::now();
    let mut switched = None;
    while switched.is_none() {
        let stepped = {
            let step = takeover.step(docker);
            tokio::pin!(step);
            loop {
                tokio::select! {
                    biased;
                    stepped = &mut step => break stepped,
                    () = tokio::time::sleep(BIND_EVERY), if switched.is_none() => {
                        match switch.switch(new.to_vec()).await {
                            Ok(()) => switched = Some(last_refused.elapsed()),
                            Err(_) => last_refused = Instant::now(),
                        }
                    }
                }
            }
        };
        match stepped {
            Ok(true) => {}
            // Off every network: the port is free, unless something else holds it.
            Ok(false) if switched.is_none() => {
                if let Err(e) = retry_switch(switch, new).await {
                    takeover.undo(docker, reporter).await;
                    return Err(e);
                }
                switched = Some(last_refused.elapsed());
            }
            Ok(false) => {}
            Err(e) if switched.is_none() => {
                takeover.undo(docker, reporter).await;
                return Err(e.into());
            }
            // The port is already the proxy's; the container is removed after the drain.
            Err(e) => reporter.warn(format!("{e}")),
        }
    }
    reporter.info(format!(
        "took the ports over from `{}`, which published them itself: the ports were closed for at most {} ms",
        takeover.containers().join("`, `"),
        switched.unwrap_or_default().as_millis()
    ));
    Ok(())
}

/// How often binding is tried while the engine lets go of a port.
const BIND_EVERY: Duration = Duration::from_millis(2);

/// The switch, retried for a short while.
async fn retry_switch(switch: &dyn Switch, new: &[Route]) -> anyhow::Result<()> {
    let mut tries = 0;
    loop {
        match switch.switch(new.to_vec()).await {
            Ok(()) => return Ok(()),
            Err(e) if tries == 50 => return Err(e),
            Err(_) => tries += 1,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The routes to the new containers of the proxied services, and the backends of the
/// containers they replace.
async fn routes_of(
    docker: &Docker,
    proxied: &BTreeSet<&ServiceName>,
    applied: &Applied,
) -> Result<(Vec<Route>, Vec<SocketAddr>), docker::DockerError> {
    let mut new = Vec::new();
    for service in proxied {
        for id in applied.containers(service) {
            new.extend(routes::of_container(docker, id).await?);
        }
    }
    let mut old = Vec::new();
    for c in applied.retiring() {
        let routes = routes::of_container(docker, &c.id).await?;
        old.extend(routes.into_iter().map(|r| r.backend));
    }
    Ok((new, old))
}
