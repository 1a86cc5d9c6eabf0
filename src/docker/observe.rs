//! Reading back what runs: containers, networks, volumes and images, found by our labels.

use std::collections::{BTreeSet, HashMap};

use bollard::Docker;
use bollard::models::ContainerSummaryStateEnum;
use bollard::query_parameters::{ListContainersOptions, ListNetworksOptions, ListVolumesOptions};

use crate::ids::{ProjectName, ServiceName};
use crate::plan::names::{LABEL_CONFIG_HASH, LABEL_PROJECT, LABEL_REVISION, LABEL_SERVICE};
use crate::plan::{Observed, ObservedContainer};

use super::DockerError;

/// Everything Docker knows about `project`, plus which of `tags` exist and whether the
/// networks and volumes named in `names` exist (external ones are not labelled as ours).
pub(crate) async fn observe(
    docker: &Docker,
    project: &ProjectName,
    tags: &[String],
) -> Result<Observed, DockerError> {
    let containers = containers(docker, project).await?;

    let all = docker
        .list_networks(None::<ListNetworksOptions>)
        .await
        .map_err(|e| DockerError::api("list networks", e))?;
    let project_networks = all
        .iter()
        .filter(|n| {
            n.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_PROJECT))
                .map(String::as_str)
                == Some(project.as_str())
        })
        .filter_map(|n| n.name.clone())
        .collect();
    let networks: BTreeSet<String> = all.into_iter().filter_map(|n| n.name).collect();

    let volumes: BTreeSet<String> = docker
        .list_volumes(None::<ListVolumesOptions>)
        .await
        .map_err(|e| DockerError::api("list volumes", e))?
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();

    let mut images = BTreeSet::new();
    for tag in tags {
        if image_exists(docker, tag).await? {
            images.insert(tag.clone());
        }
    }

    Ok(Observed {
        containers,
        networks,
        project_networks,
        volumes,
        images,
    })
}

/// The project's containers, newest first, whatever their state.
pub(crate) async fn containers(
    docker: &Docker,
    project: &ProjectName,
) -> Result<Vec<ObservedContainer>, DockerError> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{LABEL_PROJECT}={project}")],
    )]);
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| DockerError::api(&format!("list the containers of project `{project}`"), e))?;
    Ok(list
        .into_iter()
        .map(|c| {
            let labels = c.labels.unwrap_or_default();
            let name = c
                .names
                .and_then(|n| n.into_iter().next())
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default();
            ObservedContainer {
                id: c.id.unwrap_or_default(),
                name,
                service: labels
                    .get(LABEL_SERVICE)
                    .and_then(|s| ServiceName::parse(s).ok()),
                revision: labels.get(LABEL_REVISION).cloned(),
                config_hash: labels.get(LABEL_CONFIG_HASH).cloned(),
                running: matches!(
                    c.state,
                    Some(
                        ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::RESTARTING
                    )
                ),
            }
        })
        .collect())
}

pub(crate) async fn image_exists(docker: &Docker, image: &str) -> Result<bool, DockerError> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(DockerError::api(&format!("inspect image `{image}`"), e)),
    }
}
