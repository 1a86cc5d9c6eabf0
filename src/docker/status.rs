//! What `deploy status` shows of each container: state, health and revision.

use bollard::Docker;
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
        let state = inspect.state.unwrap_or_default();
        out.push(ContainerStatus {
            service: c.service.map(|s| s.to_string()).unwrap_or_default(),
            name: c.name,
            state: state.status.map(|s| s.to_string()).unwrap_or_default(),
            health: state.health.and_then(|h| h.status).map(|s| s.to_string()),
            revision: c.revision.unwrap_or_default(),
            image: inspect.config.and_then(|c| c.image).unwrap_or_default(),
        });
    }
    out.sort_by(|a, b| a.service.cmp(&b.service).then(a.name.cmp(&b.name)));
    Ok(out)
}
