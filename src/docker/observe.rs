//! Reading back what runs: containers, networks, volumes and images, found by our labels.

use std::collections::{BTreeSet, HashMap};

use bollard::Docker;
use bollard::models::ContainerSummaryStateEnum;
use bollard::query_parameters::{ListContainersOptions, ListNetworksOptions, ListVolumesOptions};

use crate::ids::{ProjectName, ServiceName};
use crate::plan::names::{
    LABEL_CONFIG_HASH, LABEL_PROJECT, LABEL_REPLICA, LABEL_REVISION, LABEL_SERVICE,
};
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
    let subnets = all
        .iter()
        .filter_map(|n| {
            let pools = n.ipam.as_ref()?.config.as_ref()?;
            let subnets = pools.iter().filter_map(|p| p.subnet.clone()).collect();
            Some((n.name.clone()?, subnets))
        })
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
        subnets,
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
            let name = container_name(c.names);
            ObservedContainer {
                id: c.id.unwrap_or_default(),
                name,
                service: labels
                    .get(LABEL_SERVICE)
                    .and_then(|s| ServiceName::parse(s).ok()),
                revision: labels.get(LABEL_REVISION).cloned(),
                config_hash: labels.get(LABEL_CONFIG_HASH).cloned(),
                replica: labels
                    .get(LABEL_REPLICA)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1),
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

/// A container's name as a list shows it (`/shop-db`), without the slash.
fn container_name(names: Option<Vec<String>>) -> String {
    names
        .and_then(|n| n.into_iter().next())
        .map(|n| n.trim_start_matches('/').to_owned())
        .unwrap_or_default()
}

/// What a one-off command run in the image `reference` sees: its layers, and the config that
/// shapes how a command runs (env, entrypoint, cmd, working dir, user), digested. Two builds
/// of the same content agree on it even when their ids differ, as BuildKit's do (each
/// export records a new creation time).
pub(crate) async fn image_content(
    docker: &Docker,
    reference: &str,
) -> Result<Option<String>, DockerError> {
    use sha2::{Digest, Sha256};
    let image = match docker.inspect_image(reference).await {
        Ok(image) => image,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(None),
        Err(e) => return Err(DockerError::api(&format!("inspect image `{reference}`"), e)),
    };
    let layers = image.root_fs.and_then(|r| r.layers).unwrap_or_default();
    let config = image.config.unwrap_or_default();
    let seen = serde_json::json!({
        "layers": layers,
        "env": config.env,
        "entrypoint": config.entrypoint,
        "cmd": config.cmd,
        "working_dir": config.working_dir,
        "user": config.user,
    });
    let digest = Sha256::digest(seen.to_string().as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Some(format!("content:{hex}")))
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

/// The read-write bind mounts of every running container on this host, whatever its project:
/// (source, who). Whoever can write to a directory can swap what is below it.
pub(crate) async fn writable_binds(docker: &Docker) -> Result<Vec<(String, String)>, DockerError> {
    Ok((binds(docker, false).await?.into_iter())
        .filter(|(_, m)| m.rw == Some(true))
        .filter_map(|(name, m)| Some((m.source?, format!("the running container `{name}`"))))
        .collect())
}

/// The host paths bind-mounted into any container on the engine, running or not.
pub(crate) async fn bind_sources(docker: &Docker) -> Result<BTreeSet<String>, DockerError> {
    Ok((binds(docker, true).await?.into_iter())
        .filter_map(|(_, m)| m.source)
        .collect())
}

/// The bind mounts of the running containers (every container with `all`), by container
/// name.
async fn binds(
    docker: &Docker,
    all: bool,
) -> Result<Vec<(String, bollard::models::MountPoint)>, DockerError> {
    let options = ListContainersOptions {
        all,
        ..Default::default()
    };
    let list = (docker.list_containers(Some(options)).await)
        .map_err(|e| DockerError::api("list the containers", e))?;
    let mut out = Vec::new();
    for c in list {
        let name = container_name(c.names);
        let mounts = c.mounts.unwrap_or_default().into_iter();
        out.extend(
            mounts
                .filter(|m| m.typ.as_deref() == Some("bind"))
                .map(|m| (name.clone(), m)),
        );
    }
    Ok(out)
}

/// The names of the networks and of the volumes that exist and are not `project`'s.
pub(crate) async fn foreign_names(
    docker: &Docker,
    project: &ProjectName,
) -> Result<(BTreeSet<String>, BTreeSet<String>), DockerError> {
    let ours = |labels: Option<&HashMap<String, String>>| {
        labels
            .and_then(|l| l.get(LABEL_PROJECT))
            .map(String::as_str)
            == Some(project.as_str())
    };
    let networks = docker
        .list_networks(None::<ListNetworksOptions>)
        .await
        .map_err(|e| DockerError::api("list networks", e))?
        .into_iter()
        .filter(|n| !ours(n.labels.as_ref()))
        .filter_map(|n| n.name)
        .collect();
    let volumes = docker
        .list_volumes(None::<ListVolumesOptions>)
        .await
        .map_err(|e| DockerError::api("list volumes", e))?
        .volumes
        .unwrap_or_default()
        .into_iter()
        .filter(|v| !ours(Some(&v.labels)))
        .map(|v| v.name)
        .collect();
    Ok((networks, volumes))
}

/// The tags in image repository `repo` (`bpt-server`) and the project each image carries
/// in its `deploy.project` label, if any.
pub(crate) async fn repo_images(
    docker: &Docker,
    repo: &str,
) -> Result<Vec<(String, Option<String>)>, DockerError> {
    let filters = HashMap::from([("reference".to_owned(), vec![repo.to_owned()])]);
    let list = docker
        .list_images(Some(bollard::query_parameters::ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| DockerError::api(&format!("list the images of `{repo}`"), e))?;
    Ok(list
        .into_iter()
        .flat_map(|i| {
            let project = i.labels.get(LABEL_PROJECT).cloned();
            i.repo_tags
                .into_iter()
                .map(move |tag| (tag, project.clone()))
        })
        .collect())
}

/// The `deploy.project` label of `image`: `None` when there is no such image, `Some(None)`
/// when it carries none.
pub(crate) async fn image_project(
    docker: &Docker,
    image: &str,
) -> Result<Option<Option<String>>, DockerError> {
    match docker.inspect_image(image).await {
        Ok(i) => Ok(Some(
            i.config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(LABEL_PROJECT).cloned()),
        )),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(DockerError::api(&format!("inspect image `{image}`"), e)),
    }
}

/// Where the engine keeps its data (images, containers, volumes).
pub(crate) async fn data_root(docker: &Docker) -> Result<String, DockerError> {
    let info = docker
        .info()
        .await
        .map_err(|e| DockerError::api("ask the engine where it keeps its data", e))?;
    Ok(info
        .docker_root_dir
        .unwrap_or_else(|| "/var/lib/docker".to_owned()))
}
