//! Retention: removing the images of revisions nobody can roll back to any more.

use std::collections::{BTreeSet, HashMap};

use bollard::Docker;
use bollard::query_parameters::{ListImagesOptions, PruneImagesOptions, RemoveImageOptions};

use crate::ids::{ProjectName, Revision};
use crate::plan::names::{BUILD_TAG_PREFIX, LABEL_PROJECT, split_tag};
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
        // The image stays while one of its revision tags is retained; its `build-…` tag
        // (reuse for identical trees) goes with the last of them.
        let retained = image.repo_tags.iter().any(|t| {
            split_tag(t).1.is_some_and(|t| {
                t == "latest" || Revision::parse(t).is_ok_and(|r| keep.contains(&r))
            })
        });
        for tag in &image.repo_tags {
            let Some(name) = split_tag(tag).1 else {
                continue;
            };
            let stale = match Revision::parse(name) {
                Ok(revision) => !keep.contains(&revision),
                Err(_) => name.starts_with(BUILD_TAG_PREFIX) && !retained,
            };
            if !stale {
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
