//! Waiting until a container proves itself: its healthcheck, a TCP port, or staying up.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};

use super::DockerError;

/// How often a starting container is looked at.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// A container without a healthcheck or a port to probe counts as up once it has run this
/// long without exiting or restarting.
const SETTLE: Duration = Duration::from_secs(2);

/// What a container must show before it counts as ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// Its healthcheck reports `healthy`.
    Healthy,
    /// It accepts TCP connections on one of these ports (a container without a healthcheck).
    Tcp(Vec<u16>),
    /// It keeps running for a moment.
    Running,
    /// It ran to completion with exit code 0 (`service_completed_successfully`).
    Completed,
}

/// Why a container did not become ready.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotReady {
    #[error("it exited with code {0}")]
    Exited(i64),
    #[error("it keeps restarting (crash loop)")]
    CrashLoop,
    #[error("its healthcheck reports unhealthy{0}")]
    Unhealthy(String),
    #[error("it was not ready within {}s ({state})", .limit.as_secs())]
    Timeout { limit: Duration, state: String },
    #[error("it has no healthcheck, so it cannot be waited on as `service_healthy`")]
    NoHealthcheck,
    #[error(transparent)]
    Docker(#[from] Box<DockerError>),
}

/// Picks what to wait for: a healthcheck if the container has one (from the compose file or
/// the image), else a TCP connect on its ports, else staying up.
pub(crate) fn readiness(inspect: &ContainerInspectResponse, ports: &[u16]) -> Readiness {
    let has_healthcheck = inspect
        .config
        .as_ref()
        .and_then(|c| c.healthcheck.as_ref())
        .and_then(|h| h.test.as_ref())
        .is_some_and(|t| !t.is_empty() && t[0] != "NONE");
    if has_healthcheck {
        Readiness::Healthy
    } else if !ports.is_empty() {
        Readiness::Tcp(ports.to_vec())
    } else {
        Readiness::Running
    }
}

/// Polls the container until it is ready, fails, or `timeout` passes.
pub(crate) async fn wait(
    docker: &Docker,
    id: &str,
    want: &Readiness,
    timeout: Duration,
) -> Result<(), NotReady> {
    let started = Instant::now();
    let mut last_state = String::from("not started");
    loop {
        let inspect = docker
            .inspect_container(id, None)
            .await
            .map_err(|e| Box::new(DockerError::api(&format!("inspect container `{id}`"), e)))?;
        let state = inspect.state.clone().unwrap_or_default();
        let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
        let restarts = inspect.restart_count.unwrap_or(0);
        let exit = state.exit_code.unwrap_or(0);

        match (want, status) {
            (Readiness::Completed, ContainerStateStatusEnum::EXITED) if exit == 0 => return Ok(()),
            (_, ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
                return Err(NotReady::Exited(exit));
            }
            (Readiness::Completed, _) => {}
            (_, ContainerStateStatusEnum::RESTARTING) => return Err(NotReady::CrashLoop),
            _ if restarts > 0 => return Err(NotReady::CrashLoop),
            (_, ContainerStateStatusEnum::RUNNING) => {
                let health = state.health.as_ref();
                match want {
                    Readiness::Healthy => match health.and_then(|h| h.status) {
                        Some(HealthStatusEnum::HEALTHY) => return Ok(()),
                        Some(HealthStatusEnum::UNHEALTHY) => {
                            let output = health
                                .and_then(|h| h.log.as_ref())
                                .and_then(|l| l.last())
                                .and_then(|r| r.output.clone())
                                .map(|o| format!(": {}", o.trim()))
                                .unwrap_or_default();
                            return Err(NotReady::Unhealthy(output));
                        }
                        None | Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) => {
                            return Err(NotReady::NoHealthcheck);
                        }
                        Some(HealthStatusEnum::STARTING) => {
                            last_state = "health: starting".to_owned()
                        }
                    },
                    Readiness::Tcp(ports) => {
                        if tcp_accepts(&inspect, ports).await {
                            return Ok(());
                        }
                        last_state = format!("no answer on port {}", join(ports));
                    }
                    Readiness::Running => {
                        if running_for(&state.started_at) >= SETTLE {
                            return Ok(());
                        }
                        last_state = "running".to_owned();
                    }
                    Readiness::Completed => {}
                }
            }
            (_, other) => last_state = other.to_string(),
        }

        if started.elapsed() >= timeout {
            return Err(NotReady::Timeout {
                limit: timeout,
                state: last_state,
            });
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// The container's addresses on its networks, for probing from the host.
pub(crate) fn addresses(inspect: &ContainerInspectResponse) -> Vec<IpAddr> {
    inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .map(|nets| {
            nets.values()
                .filter_map(|e| e.ip_address.as_deref())
                .filter_map(|ip| ip.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

async fn tcp_accepts(inspect: &ContainerInspectResponse, ports: &[u16]) -> bool {
    for ip in addresses(inspect) {
        for port in ports {
            let addr = SocketAddr::new(ip, *port);
            let attempt =
                tokio::time::timeout(PROBE_INTERVAL * 2, tokio::net::TcpStream::connect(addr))
                    .await;
            if matches!(attempt, Ok(Ok(_))) {
                return true;
            }
        }
    }
    false
}

fn running_for(started_at: &Option<String>) -> Duration {
    started_at
        .as_deref()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .and_then(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .to_std()
                .ok()
        })
        .unwrap_or_default()
}

fn join(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
