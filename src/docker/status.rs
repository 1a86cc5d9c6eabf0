//! What `deploy status` shows of each container: state, health and revision.

use bollard::Docker;
use bollard::models::HealthStatusEnum;
use serde::Serialize;

use crate::ids::ProjectName;

use super::DockerError;

#[derive(Debug, Serialize)]
pub(crate) struct ContainerStatus {
    pub(crate) service: String,
    pub(crate) name: String,
    /// Docker's state: `running`, `exited`, `restarting`, …
    pub(crate) state: String,
    /// `healthy`, `unhealthy`, `starting`, or none without a healthcheck.
    pub(crate) health: Option<String>,
    /// Who says so: `docker`; or `deploy` when Docker had not run its first check yet (right
    /// after a deploy, say) and `deploy status` ran the container's healthcheck itself.
    pub(crate) health_from: Option<&'static str>,
    pub(crate) revision: String,
    pub(crate) image: String,
}

pub(crate) async fn containers(
    docker: &Docker,
    project: &ProjectName,
) -> Result<Vec<ContainerStatus>, DockerError> {
    let mut out = Vec::new();
    for c in super::observe::containers(docker, project).await? {
        let inspect = docker
            .inspect_container(&c.id, None)
            .await
            .map_err(|e| DockerError::api(&format!("inspect container `{}`", c.name), e))?;
        let (health, health_from) = health(docker, &inspect).await;
        let state = inspect.state.unwrap_or_default();
        out.push(ContainerStatus {
            service: c.service.map(|s| s.to_string()).unwrap_or_default(),
            name: c.name,
            state: state.status.map(|s| s.to_string()).unwrap_or_default(),
            health,
            health_from,
            revision: c.revision.unwrap_or_default(),
            image: inspect.config.and_then(|c| c.image).unwrap_or_default(),
        });
    }
    out.sort_by(|a, b| a.service.cmp(&b.service).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// Docker's verdict; while it is still `starting` (its first check has not run), the
/// container's own healthcheck run now, which is what a deploy trusted when it went live.
async fn health(
    docker: &Docker,
    inspect: &bollard::models::ContainerInspectResponse,
) -> (Option<String>, Option<&'static str>) {
    let docker_says = inspect
        .state
        .as_ref()
        .and_then(|s| s.health.as_ref())
        .and_then(|h| h.status);
    match docker_says {
        None => (None, None),
        Some(HealthStatusEnum::STARTING) => match super::health::check_now(docker, inspect).await {
            Some(ok) => {
                let verdict = if ok { "healthy" } else { "unhealthy" };
                (Some(verdict.to_owned()), Some("deploy"))
            }
            None => (Some("starting".to_owned()), Some("docker")),
        },
        Some(status) => (Some(status.to_string()), Some("docker")),
    }
}
