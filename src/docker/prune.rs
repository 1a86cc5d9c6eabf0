//! Retention: removing the images of revisions nobody can roll back to any more.

use std::collections::{BTreeSet, HashMap};

use bollard::Docker;
use bollard::query_parameters::{ListImagesOptions, PruneImagesOptions, RemoveImageOptions};

use crate::ids::{ProjectName, Revision};
use crate::plan::names::{LABEL_PROJECT, split_tag};
use crate::report::Reporter;

use super::DockerError;

/// Removes every `<repo>:<sha>` tag of the project's images whose revision is not in `keep`;
/// an image goes when its last tag does. Then removes the project's dangling images. An
/// image a container still uses is kept, whatever its revision.
pub(crate) async fn images(
    docker: &Docker,
    project: &ProjectName,
    keep: &BTreeSet<Revision>,
    reporter: &Reporter,
) -> Result<Vec<String>, DockerError> {
    let label = HashMap::from([(
        "label".to_owned(),
        vec![format!("{LABEL_PROJECT}={project}")],
    )]);
    let list = docker
        .list_images(Some(ListImagesOptions {
            filters: Some(label.clone()),
            ..Default::default()
        }))
        .await
        .map_err(|e| DockerError::api(&format!("list the images of project `{project}`"), e))?;
    let mut removed = Vec::new();
    for image in list {
        for tag in &image.repo_tags {
            let Some(revision) = split_tag(tag).1.and_then(|t| Revision::parse(t).ok()) else {
                continue;
            };
            if keep.contains(&revision) {
                continue;
            }
            let options = RemoveImageOptions {
                force: false,
                noprune: false,
                ..Default::default()
            };
            match docker.remove_image(tag, Some(options), None).await {
                Ok(_) => removed.push(tag.clone()),
                Err(e) => reporter.warn(format!("kept image `{tag}`: {}", super::error_chain(&e))),
            }
        }
    }
    let mut dangling = label;
    dangling.insert("dangling".to_owned(), vec!["true".to_owned()]);
    docker
        .prune_images(Some(PruneImagesOptions {
            filters: Some(dangling),
        }))
        .await
        .map_err(|e| {
            DockerError::api(
                &format!("prune the dangling images of project `{project}`"),
                e,
            )
        })?;
    Ok(removed)
}
