//! The engine's event stream, as `deploy serve`'s autoheal reads it: the containers of a
//! project that turn unhealthy.

use std::collections::HashMap;

use bollard::models::HealthStatusEnum;
use bollard::query_parameters::EventsOptions;
use futures_util::{Stream, StreamExt};

use super::Docker;
use crate::ids::ProjectName;
use crate::plan::names::LABEL_PROJECT;

/// A container Docker just marked `unhealthy`.
pub(crate) struct Unhealthy {
    pub(crate) id: String,
    /// Its name, or the start of its id.
    pub(crate) name: String,
}

/// The project's containers as they turn unhealthy. Ends when the engine's stream does (the
/// engine restarted, say); the caller reconnects.
pub(crate) fn unhealthy(docker: &Docker, project: &ProjectName) -> impl Stream<Item = Unhealthy> {
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        ("event".to_owned(), vec!["health_status".to_owned()]),
        (
            "label".to_owned(),
            vec![format!("{LABEL_PROJECT}={project}")],
        ),
    ]);
    docker
        .events(Some(EventsOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .take_while(|event| std::future::ready(event.is_ok()))
        .filter_map(|event| {
            let event = event.ok();
            std::future::ready(event.and_then(|event| {
                let unhealthy = event
                    .action
                    .as_deref()
                    .is_some_and(|a| a.ends_with("unhealthy"));
                let actor = event.actor.filter(|_| unhealthy)?;
                let id = actor.id?;
                let name = actor
                    .attributes
                    .and_then(|a| a.get("name").cloned())
                    .unwrap_or_else(|| id.chars().take(12).collect());
                Some(Unhealthy { id, name })
            }))
        })
}

/// Whether Docker says the container is unhealthy now.
pub(crate) async fn is_unhealthy(docker: &Docker, id: &str) -> bool {
    let health = docker
        .inspect_container(id, None)
        .await
        .ok()
        .and_then(|i| i.state)
        .and_then(|s| s.health)
        .and_then(|h| h.status);
    health == Some(HealthStatusEnum::UNHEALTHY)
}
