//! Taking a project's stack down: containers and networks go, data stays unless asked.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{ListNetworksOptions, ListVolumesOptions};

use crate::ids::ProjectName;
use crate::plan::names::LABEL_PROJECT;
use crate::report::Reporter;

use super::DockerError;
use super::apply::{remove, stop};

/// Whether `down` deletes the project's named volumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Volumes {
    Keep,
    Delete,
}

pub(crate) async fn down(
    docker: &Docker,
    project: &ProjectName,
    volumes: Volumes,
    reporter: &Reporter,
) -> Result<(), DockerError> {
    for c in super::observe::containers(docker, project).await? {
        reporter.info(format!("stopping `{}`", c.name));
        super::hooks::pre_stop(docker, reporter, &c.id, &c.name).await;
        stop(docker, &c.id, &c.name, Duration::from_secs(10)).await?;
        remove(docker, &c.id, &c.name).await?;
    }
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{LABEL_PROJECT}={project}")],
    )]);
    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters.clone()),
        }))
        .await
        .map_err(|e| DockerError::api("list networks", e))?;
    for n in networks {
        let name = n.name.unwrap_or_default();
        reporter.info(format!("removing network `{name}`"));
        docker
            .remove_network(&name)
            .await
            .map_err(|e| DockerError::api(&format!("remove network `{name}`"), e))?;
    }
    if volumes == Volumes::Delete {
        let list = docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| DockerError::api("list volumes", e))?;
        for v in list.volumes.unwrap_or_default() {
            reporter.warn(format!("deleting volume `{}` and its data", v.name));
            docker
                .remove_volume(
                    &v.name,
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                )
                .await
                .map_err(|e| DockerError::api(&format!("remove volume `{}`", v.name), e))?;
        }
    }
    Ok(())
}

/// Removes every image labelled with `project` (a torn-down environment's): each of its
/// tags, so an image another project tagged too stays for that one, then what is left
/// without a tag.
pub(crate) async fn remove_images(
    docker: &Docker,
    project: &ProjectName,
    reporter: &Reporter,
) -> Result<(), DockerError> {
    use bollard::query_parameters::{ListImagesOptions, RemoveImageOptions};
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{LABEL_PROJECT}={project}")],
    )]);
    let images = docker
        .list_images(Some(ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| DockerError::api(&format!("list the images of project `{project}`"), e))?;
    for image in images {
        let mut names = image.repo_tags.clone();
        names.push(image.id.clone());
        for name in names {
            match docker
                .remove_image(&name, None::<RemoveImageOptions>, None)
                .await
            {
                Ok(_) => {}
                // The id after its last tag went with it, or a tag of another project's.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404 | 409,
                    ..
                }) => {}
                Err(e) => reporter.warn(format!("kept image `{name}`: {}", super::error_chain(&e))),
            }
        }
    }
    Ok(())
}
