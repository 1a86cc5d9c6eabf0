//! How traffic reaches a deploy's published ports: bound by the containers themselves, or
//! owned by `deploy serve`'s proxy, which the pipeline switches to the new containers.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::docker::apply::Applied;
use crate::docker::routes::{self, Route};
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
        if let Err(first) = switch.switch(new.clone()).await {
            // The old containers may hold the host ports themselves (deployed while the
            // daemon was not running): stop them, a short gap, and take the ports over.
            reporter.warn(format!(
                "{first:#}; stopping the old containers to take over their ports"
            ));
            let mut stopped = Vec::new();
            for old in applied.retiring() {
                if docker::apply::stop(docker, &old.id, &old.name, Duration::from_secs(10))
                    .await
                    .is_ok()
                {
                    stopped.push(old.clone());
                }
            }
            if let Err(e) = switch.switch(new.clone()).await {
                for old in &stopped {
                    let _ = docker::apply::start(docker, &old.id, &old.name).await;
                }
                applied.rollback(docker, reporter).await;
                return Err(e.context("failed to switch traffic to the new containers"));
            }
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
