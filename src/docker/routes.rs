//! Where `deploy serve`'s proxy sends a container's traffic: its proxied host ports (from
//! its `deploy.proxy` label) and its address on the stack's network.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bollard::Docker;

use crate::plan::container::ProxiedPort;
use crate::plan::names::LABEL_PROXY;

use super::DockerError;
use super::health::addresses;

/// One host port the proxy owns, and the container address behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) listen: SocketAddr,
    pub(crate) backend: SocketAddr,
}

/// The routes to a container; empty when it has no proxied ports or no address yet.
pub(crate) async fn of_container(docker: &Docker, id: &str) -> Result<Vec<Route>, DockerError> {
    let inspect = docker
        .inspect_container(id, None)
        .await
        .map_err(|e| DockerError::api(&format!("inspect container `{id}`"), e))?;
    let label = inspect
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get(LABEL_PROXY))
        .cloned()
        .unwrap_or_default();
    let Some(ip) = addresses(&inspect).into_iter().next() else {
        return Ok(Vec::new());
    };
    Ok(ProxiedPort::parse_label(&label)
        .into_iter()
        .map(|p| Route {
            listen: SocketAddr::new(
                p.host_ip
                    .as_deref()
                    .and_then(|ip| ip.parse().ok())
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                p.host_port,
            ),
            backend: SocketAddr::new(ip, p.container_port),
        })
        .collect())
}
