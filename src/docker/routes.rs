//! Where `deploy serve`'s proxy sends a container's traffic: its proxied host ports (from
//! its `deploy.proxy` label), the hostnames routed to it (its `deploy.hosts` label), and its
//! address on the stack's network.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bollard::Docker;

use crate::plan::container::{HostRoute, ProxiedPort};
use crate::plan::names::{LABEL_HOSTS, LABEL_PROXY};

use super::DockerError;
use super::health::{addresses, tcp_ports};

/// What the proxy listens for: a host port, or a hostname on its HTTP and HTTPS listeners.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Listen {
    Port(SocketAddr),
    Host { name: String, https_redirect: bool },
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Port(addr) => write!(f, "port {}", addr.port()),
            Listen::Host { name, .. } => write!(f, "{name}"),
        }
    }
}

/// One host port or hostname the proxy owns, and the container address behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) listen: Listen,
    pub(crate) backend: SocketAddr,
}

/// The routes to a container; empty when it has none or no address yet.
pub(crate) async fn of_container(docker: &Docker, id: &str) -> Result<Vec<Route>, DockerError> {
    let inspect = docker
        .inspect_container(id, None)
        .await
        .map_err(|e| DockerError::api(&format!("inspect container `{id}`"), e))?;
    let config = inspect.config.as_ref();
    let label = |key: &str| {
        (config.and_then(|c| c.labels.as_ref()))
            .and_then(|l| l.get(key))
            .cloned()
    };
    let Some(ip) = addresses(&inspect).into_iter().next() else {
        return Ok(Vec::new());
    };
    let mut routes: Vec<Route> = ProxiedPort::parse_label(&label(LABEL_PROXY).unwrap_or_default())
        .into_iter()
        .map(|p| Route {
            listen: Listen::Port(SocketAddr::new(
                p.host_ip
                    .as_deref()
                    .and_then(|ip| ip.parse().ok())
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                p.host_port,
            )),
            backend: SocketAddr::new(ip, p.container_port),
        })
        .collect();
    if let Some(hosts) = label(LABEL_HOSTS)
        .as_deref()
        .and_then(HostRoute::parse_label)
    {
        let exposed = tcp_ports(&inspect).first().copied();
        let Some(port) = hosts.port.or(exposed) else {
            return Err(DockerError::Raw {
                action: format!(
                    "route `{}` to container `{id}`",
                    hosts.hostnames.join("`, `")
                ),
                why: "it exposes no TCP port; set `route.port` in deploy.yml".to_owned(),
            });
        };
        routes.extend(hosts.hostnames.into_iter().map(|name| Route {
            listen: Listen::Host {
                name,
                https_redirect: hosts.https_redirect,
            },
            backend: SocketAddr::new(ip, port),
        }));
    }
    Ok(routes)
}
