//! Host ports that old containers bound themselves (deployed while `deploy serve` was not
//! running), freed for the daemon's proxy in milliseconds rather than after the old
//! container's stop time.
//!
//! The engine forwards a published port until the container leaves the network that
//! publishes it, and `POST /networks/{id}/disconnect` returns once that forwarding has
//! stopped. So the old container is taken off its networks one at a time until the proxy can
//! bind the port, and is removed afterwards. If the proxy still cannot bind, the old
//! container is put back on its networks, with the same aliases, and publishes its ports
//! again.

use std::collections::BTreeSet;

use bollard::Docker;
use bollard::models::{EndpointSettings, NetworkConnectRequest, NetworkDisconnectRequest};

use super::DockerError;
use crate::plan::ObservedContainer;
use crate::report::Reporter;

/// One container's place on one network.
struct Endpoint {
    id: String,
    name: String,
    network: String,
    settings: EndpointSettings,
}

/// The networks to take old containers off, and those they have been taken off.
pub(crate) struct Takeover {
    pending: Vec<Endpoint>,
    done: Vec<Endpoint>,
}

/// Every network of each running container in `old` that publishes one of `ports` on the
/// host.
pub(crate) async fn plan(
    docker: &Docker,
    old: &[ObservedContainer],
    ports: &BTreeSet<u16>,
) -> Result<Takeover, DockerError> {
    let mut pending = Vec::new();
    for c in old.iter().filter(|c| c.running) {
        let inspect = docker
            .inspect_container(&c.id, None)
            .await
            .map_err(|e| DockerError::api(&format!("inspect container `{}`", c.name), e))?;
        let settings = inspect.network_settings.unwrap_or_default();
        let publishes = (settings.ports.iter().flatten())
            .flat_map(|(_, bindings)| bindings.iter().flatten())
            .filter_map(|b| b.host_port.as_deref()?.parse::<u16>().ok())
            .any(|p| ports.contains(&p));
        if publishes {
            pending.extend(settings.networks.unwrap_or_default().into_iter().map(
                |(network, settings)| Endpoint {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    network,
                    settings,
                },
            ));
        }
    }
    Ok(Takeover {
        pending,
        done: Vec::new(),
    })
}

impl Takeover {
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.done.is_empty()
    }

    /// The containers this takeover concerns, each once.
    pub(crate) fn containers(&self) -> Vec<&str> {
        let mut names: Vec<&str> = (self.done.iter().chain(&self.pending))
            .map(|e| e.name.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Takes one container off one network. `Ok(false)` when none is left.
    pub(crate) async fn step(&mut self, docker: &Docker) -> Result<bool, DockerError> {
        let Some(e) = self.pending.pop() else {
            return Ok(false);
        };
        let request = NetworkDisconnectRequest {
            container: e.id.clone(),
            force: Some(false),
        };
        let result = docker.disconnect_network(&e.network, request).await;
        let what = format!("disconnect `{}` from network `{}`", e.name, e.network);
        self.done.push(e);
        result
            .map(|()| true)
            .map_err(|err| DockerError::api(&what, err))
    }

    /// Puts the containers back on the networks they were taken off, where they publish
    /// their ports again. Best effort: a failure is reported and the rest still tried.
    pub(crate) async fn undo(self, docker: &Docker, reporter: &Reporter) {
        for e in self.done.into_iter().rev() {
            let was = e.settings;
            // Only what the container asked for: the engine assigns the rest again.
            let settings = EndpointSettings {
                aliases: was.aliases,
                links: was.links,
                ipam_config: was.ipam_config,
                driver_opts: was.driver_opts,
                ..Default::default()
            };
            let request = NetworkConnectRequest {
                container: e.id.clone(),
                endpoint_config: Some(settings),
            };
            if let Err(err) = docker.connect_network(&e.network, request).await {
                reporter.warn(format!(
                    "could not put `{}` back on network `{}`: {}",
                    e.name,
                    e.network,
                    DockerError::api("connect", err)
                ));
            }
        }
    }
}
