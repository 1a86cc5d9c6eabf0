//! Waiting until a container proves itself: its healthcheck, an HTTP path, a TCP port, or
//! staying up. Probes run every 50 ms for the first second (a warm redeploy's app is often
//! up within it), then every 250 ms, whatever interval the compose file gives Docker's own
//! healthcheck, so a deploy or rollback never waits for Docker's next tick.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};
use futures_util::StreamExt;

use super::DockerError;

/// How often a starting container is probed after its first second.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// How often in its first second: an app that answers within it is not kept waiting for
/// the next 250 ms tick.
const EARLY_PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// The pause before the next probe of a container waited on for `waited`.
fn probe_pause(waited: Duration) -> Duration {
    if waited < Duration::from_secs(1) {
        EARLY_PROBE_INTERVAL
    } else {
        PROBE_INTERVAL
    }
}

/// A container without a healthcheck or a port to probe counts as up once it has run this
/// long without exiting or restarting.
const SETTLE: Duration = Duration::from_secs(2);

/// Docker's default healthcheck timeout, for a test that sets none.
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// What a container must show before it counts as ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// Its healthcheck command succeeds (run by us through `exec`), or Docker reports it
    /// `healthy`.
    Healthy {
        test: Vec<String>,
        timeout: Duration,
    },
    /// An HTTP GET of `path` on one of these ports answers 2xx or 3xx.
    Http { ports: Vec<u16>, path: String },
    /// It accepts TCP connections on one of these ports.
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

/// Picks what to wait for: the healthcheck if the container has one (from the compose file
/// or the image), else the operator's HTTP path, else a TCP connect on its ports, else
/// staying up.
pub(crate) fn readiness(inspect: &ContainerInspectResponse, http_path: Option<&str>) -> Readiness {
    if let Some(want) = healthcheck(inspect) {
        return want;
    }
    let ports = tcp_ports(inspect);
    match (ports.is_empty(), http_path) {
        (true, _) => Readiness::Running,
        (false, Some(path)) => Readiness::Http {
            ports,
            path: path.to_owned(),
        },
        (false, None) => Readiness::Tcp(ports),
    }
}

/// The container's healthcheck as a readiness test, if it has one.
pub(crate) fn healthcheck(inspect: &ContainerInspectResponse) -> Option<Readiness> {
    let check = inspect.config.as_ref()?.healthcheck.as_ref()?;
    let test = check.test.as_ref()?;
    let command = match test.first().map(String::as_str) {
        Some("CMD") => test[1..].to_vec(),
        Some("CMD-SHELL") => vec!["/bin/sh".to_owned(), "-c".to_owned(), test[1..].join(" ")],
        _ => return None,
    };
    let timeout = check
        .timeout
        .filter(|t| *t > 0)
        .map_or(DEFAULT_CHECK_TIMEOUT, |t| Duration::from_nanos(t as u64));
    Some(Readiness::Healthy {
        test: command,
        timeout,
    })
}

/// The TCP ports a container listens on, from its image and the compose file.
pub(crate) fn tcp_ports(inspect: &ContainerInspectResponse) -> Vec<u16> {
    let mut ports: Vec<u16> = inspect
        .config
        .as_ref()
        .and_then(|c| c.exposed_ports.as_ref())
        .map(|p| {
            p.iter()
                .filter_map(|p| p.strip_suffix("/tcp"))
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    ports.sort_unstable();
    ports
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
            (Readiness::Completed, other) => last_state = other.to_string(),
            (_, ContainerStateStatusEnum::RESTARTING) => return Err(NotReady::CrashLoop),
            _ if restarts > 0 => return Err(NotReady::CrashLoop),
            (_, ContainerStateStatusEnum::RUNNING) => {
                let health = state.health.as_ref();
                match want {
                    Readiness::Healthy { test, timeout } => match health.and_then(|h| h.status) {
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
                        _ => match exec_probe(docker, id, test, *timeout).await {
                            Ok(()) => return Ok(()),
                            Err(why) => last_state = format!("healthcheck: {why}"),
                        },
                    },
                    Readiness::Http { ports, path } => {
                        match http_probe(&inspect, ports, path).await {
                            Ok(()) => return Ok(()),
                            Err(why) => last_state = why,
                        }
                    }
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
        tokio::time::sleep(probe_pause(started.elapsed())).await;
    }
}

/// Whether a container that is already there proves ready within `within`, as a deploy's
/// health gate would judge it: a one-shot job counts when it has exited 0.
pub(crate) async fn proves_ready(
    docker: &Docker,
    id: &str,
    http_path: Option<&str>,
    within: Duration,
) -> bool {
    let Ok(inspect) = docker.inspect_container(id, None).await else {
        return false;
    };
    let state = inspect.state.clone().unwrap_or_default();
    if state.status == Some(ContainerStateStatusEnum::EXITED) && state.exit_code == Some(0) {
        return true;
    }
    let want = readiness(&inspect, http_path);
    wait(docker, id, &want, within).await.is_ok()
}

/// Runs the container's own healthcheck once, now: `None` when it has none. For
/// `deploy status`, while Docker's first check is still to come.
pub(crate) async fn check_now(docker: &Docker, inspect: &ContainerInspectResponse) -> Option<bool> {
    let Some(Readiness::Healthy { test, timeout }) = healthcheck(inspect) else {
        return None;
    };
    let id = inspect.id.as_deref()?;
    Some(exec_probe(docker, id, &test, timeout).await.is_ok())
}

/// Waits for `service_healthy`: the container must have a healthcheck.
pub(crate) async fn wait_healthy(
    docker: &Docker,
    id: &str,
    timeout: Duration,
) -> Result<(), NotReady> {
    let inspect = docker
        .inspect_container(id, None)
        .await
        .map_err(|e| Box::new(DockerError::api(&format!("inspect container `{id}`"), e)))?;
    let want = healthcheck(&inspect).ok_or(NotReady::NoHealthcheck)?;
    wait(docker, id, &want, timeout).await
}

/// Runs the healthcheck command in the container, as Docker would, and says why it failed.
async fn exec_probe(
    docker: &Docker,
    id: &str,
    test: &[String],
    timeout: Duration,
) -> Result<(), String> {
    let options = CreateExecOptions {
        cmd: Some(test.to_vec()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let run = async {
        let exec = docker
            .create_exec(id, options)
            .await
            .map_err(|e| super::error_chain(&e))?;
        let mut output = String::new();
        if let StartExecResults::Attached {
            output: mut stream, ..
        } = docker
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| super::error_chain(&e))?
        {
            while let Some(Ok(chunk)) = stream.next().await {
                output.push_str(&chunk.to_string());
            }
        }
        let code = docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| super::error_chain(&e))?
            .exit_code
            .unwrap_or(-1);
        if code == 0 {
            Ok(())
        } else {
            let last = output.lines().last().unwrap_or_default().trim().to_owned();
            Err(format!(
                "exit code {code}{}",
                if last.is_empty() {
                    String::new()
                } else {
                    format!(": {last}")
                }
            ))
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", timeout.as_secs())))
}

/// The status code of `GET path` at `addr`, through hyper's HTTP/1.1 client.
async fn http_get(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("GET {path}: {}", super::error_chain(&e)))?;
    // The connection does the I/O while the request waits for its answer; it ends when the
    // probe drops the sender.
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::USER_AGENT, "deploy-health")
        .header(hyper::header::CONNECTION, "close")
        .body(String::new())
        .map_err(|e| format!("GET {path}: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("GET {path} got no HTTP answer: {}", super::error_chain(&e)))?;
    Ok(response.status().as_u16())
}

/// `GET path` on the container's address: ready on any 2xx or 3xx answer.
async fn http_probe(
    inspect: &ContainerInspectResponse,
    ports: &[u16],
    path: &str,
) -> Result<(), String> {
    let mut last = String::from("no address");
    for ip in addresses(inspect) {
        for port in ports {
            let addr = SocketAddr::new(ip, *port);
            let probe = async {
                let code = http_get(addr, path).await?;
                if (200..400).contains(&code) {
                    Ok(())
                } else {
                    Err(format!("GET {path} answered {code}"))
                }
            };
            match tokio::time::timeout(PROBE_INTERVAL * 4, probe).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("GET {path} timed out"),
            }
        }
    }
    Err(last)
}

/// The container's addresses on its networks, for probing and proxying from the host.
pub(crate) fn addresses(inspect: &ContainerInspectResponse) -> Vec<IpAddr> {
    let mut out: Vec<(String, IpAddr)> = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .map(|nets| {
            nets.iter()
                .filter_map(|(name, e)| {
                    Some((name.clone(), e.ip_address.as_deref()?.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    // Deterministic, so every caller picks the same address.
    out.sort();
    out.into_iter().map(|(_, ip)| ip).collect()
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn the_first_second_is_probed_more_often() {
        assert_eq!(probe_pause(Duration::ZERO), Duration::from_millis(50));
        assert_eq!(
            probe_pause(Duration::from_millis(999)),
            Duration::from_millis(50)
        );
        assert_eq!(probe_pause(Duration::from_secs(1)), PROBE_INTERVAL);
    }

    /// A server on 127.0.0.1 that answers one connection with `answer`.
    async fn serve_once(answer: &'static str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await;
            let _ = stream.write_all(answer.as_bytes()).await;
        });
        addr
    }

    /// Issue 15: the probe is hyper's HTTP/1.1 client, not 16 bytes read by hand.
    #[tokio::test]
    async fn issue15_the_http_probe_reads_the_status_with_hyper() {
        let ok = serve_once("HTTP/1.1 204 No Content\r\n\r\n").await;
        assert_eq!(http_get(ok, "/up").await, Ok(204));
        let failing =
            serve_once("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await;
        assert_eq!(http_get(failing, "/up").await, Ok(503));
        let not_http = serve_once("SSH-2.0-OpenSSH_9.2\r\n").await;
        let err = http_get(not_http, "/up").await.unwrap_err();
        assert!(err.starts_with("GET /up got no HTTP answer"), "{err}");
    }
}
