//! Host ports that old containers bound themselves (deployed while `deploy serve` was not
//! running), freed for the daemon's proxy in milliseconds rather than after the old
//! container's stop time.
//!
//! The engine forwards a published port until the container leaves the network that
//! publishes it, and lets go of the port partway through `POST /networks/{id}/disconnect`
//! (about 20 ms into a call of about 100 ms here). So the old container is taken off its
//! networks one at a time while the proxy tries to bind (`pipeline/traffic.rs`), and is
//! removed afterwards. If the proxy still cannot bind, the old
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
        if let Err(err) = docker.disconnect_network(&e.network, request).await {
            let what = format!("disconnect `{}` from network `{}`", e.name, e.network);
            return Err(DockerError::api(&what, err));
        }
        self.done.push(e);
        Ok(true)
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::TcpListener;

    use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest, PortBinding};
    use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptions};

    use super::*;

    /// Removes the test's container and network, also when it panics.
    struct Cleanup(String);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let name = self.0.clone();
            crate::docker::clean_up(|docker| async move {
                let force = RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                };
                let _ = docker.remove_container(&name, Some(force)).await;
                let _ = docker.remove_network(&name).await;
            });
        }
    }

    /// With the engine: a running container taken off its network no longer holds the port
    /// it publishes, and `undo` puts it back, with its alias, publishing the port again.
    #[tokio::test]
    async fn a_detached_container_frees_its_port_and_undo_publishes_it_again() {
        let docker = crate::docker::connect()
            .await
            .expect("a Docker engine answers");
        let name = format!("deploy-takeover-test-{}", std::process::id());
        let _cleanup = Cleanup(name.clone());
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bindable = || TcpListener::bind(("127.0.0.1", port)).is_ok();
        let labels = HashMap::from([("deploy.project".to_owned(), name.clone())]);
        docker
            .create_network(NetworkCreateRequest {
                name: name.clone(),
                labels: Some(labels.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        let binding = PortBinding {
            host_ip: Some("127.0.0.1".to_owned()),
            host_port: Some(port.to_string()),
        };
        let body = ContainerCreateBody {
            image: Some("python:3.11-slim".to_owned()),
            cmd: Some(vec!["sleep".to_owned(), "300".to_owned()]),
            labels: Some(labels),
            exposed_ports: Some(vec!["8000/tcp".to_owned()]),
            host_config: Some(HostConfig {
                network_mode: Some(name.clone()),
                port_bindings: Some(HashMap::from([(
                    "8000/tcp".to_owned(),
                    Some(vec![binding]),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let id = docker
            .create_container(Some(options), body)
            .await
            .unwrap()
            .id;
        docker.start_container(&id, None).await.unwrap();
        assert!(!bindable(), "the container publishes the port");

        let old = [ObservedContainer {
            id: id.clone(),
            name: name.clone(),
            service: None,
            revision: None,
            config_hash: None,
            running: true,
            replica: 1,
        }];
        let mut takeover = plan(&docker, &old, &BTreeSet::from([port])).await.unwrap();
        assert_eq!(takeover.containers(), [name.as_str()]);
        let none = plan(&docker, &old, &BTreeSet::from([port.wrapping_add(1)]))
            .await
            .unwrap();
        assert!(none.is_empty(), "it publishes no other port");
        while takeover.step(&docker).await.unwrap() {}
        assert!(bindable(), "off its network, it no longer holds the port");

        takeover.undo(&docker, &Reporter::new()).await;
        assert!(
            !bindable(),
            "back on its network, it publishes the port again"
        );
        let inspect = docker.inspect_container(&id, None).await.unwrap();
        let networks = inspect.network_settings.unwrap().networks.unwrap();
        assert!(networks.contains_key(&name), "{networks:?}");
        assert!(inspect.state.unwrap().running.unwrap());
    }
}
