//! Names, labels and tags of everything `deploy` creates: pure functions, one place.

use std::collections::BTreeMap;

use crate::ids::{ProjectName, Revision, ServiceName};

pub(crate) const LABEL_PROJECT: &str = "deploy.project";
pub(crate) const LABEL_SERVICE: &str = "deploy.service";
pub(crate) const LABEL_REVISION: &str = "deploy.revision";
pub(crate) const LABEL_CONFIG_HASH: &str = "deploy.config-hash";
/// On a container behind `deploy serve`: the host ports the proxy owns for it, so a restarted
/// daemon knows what to listen on without a deploy.
pub(crate) const LABEL_PROXY: &str = "deploy.proxy";
/// The hostnames `deploy serve` routes to a container (`container::HostRoute`, as JSON).
pub(crate) const LABEL_HOSTS: &str = "deploy.hosts";
/// On the one-off container of a release command: the revision it releases. It has no
/// service label, so no plan takes it for a service's container.
pub(crate) const LABEL_RELEASE: &str = "deploy.release";
/// The service's `pre_stop` hooks (JSON), read back when the container is stopped for good,
/// whichever revision's deploy stops it.
pub(crate) const LABEL_PRE_STOP: &str = "deploy.pre-stop";

/// On the second and later containers of a service with replicas: which one it is. The
/// first carries none, so a service that gains replicas keeps its container.
pub(crate) const LABEL_REPLICA: &str = "deploy.replica";

/// The labels every container, network, volume and image we create carries, so that state
/// is read back from Docker rather than guessed from names.
pub(crate) fn labels(
    project: &ProjectName,
    service: Option<&ServiceName>,
    revision: &Revision,
) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert(LABEL_PROJECT.to_owned(), project.as_str().to_owned());
    if let Some(s) = service {
        l.insert(LABEL_SERVICE.to_owned(), s.as_str().to_owned());
    }
    l.insert(LABEL_REVISION.to_owned(), revision.as_str().to_owned());
    l
}

/// A network's Docker name: its `name:`, or `<project>_<key>` as docker-compose does.
pub(crate) fn network(project: &ProjectName, key: &str, explicit: Option<&str>) -> String {
    explicit.map_or_else(|| format!("{project}_{key}"), str::to_owned)
}

/// A volume's Docker name: its `name:`, or `<project>_<key>` as docker-compose does.
pub(crate) fn volume(project: &ProjectName, key: &str, explicit: Option<&str>) -> String {
    explicit.map_or_else(|| format!("{project}_{key}"), str::to_owned)
}

/// The repository a built service's image is tagged in: the `image:` key without its tag,
/// or `<project>-<service>`.
pub(crate) fn image_repo(
    project: &ProjectName,
    service: &ServiceName,
    image: Option<&str>,
) -> String {
    match image {
        Some(image) => split_tag(image).0.to_owned(),
        None => format!("{project}-{service}"),
    }
}

/// `<repo>:<full sha>`, the tag that identifies a revision's image.
pub(crate) fn revision_tag(repo: &str, revision: &Revision) -> String {
    format!("{repo}:{revision}")
}

/// `<repo>:build-<key>`: names the image by what it was built from, so an identical tree
/// reuses it.
pub(crate) fn build_tag(repo: &str, key: &str) -> String {
    format!("{repo}:{BUILD_TAG_PREFIX}{key}")
}

pub(crate) const BUILD_TAG_PREFIX: &str = "build-";

pub(crate) fn latest_tag(repo: &str) -> String {
    format!("{repo}:latest")
}

/// Splits `registry:5000/name:tag` into (`registry:5000/name`, `Some("tag")`); a digest or a
/// port colon is not a tag.
pub(crate) fn split_tag(image: &str) -> (&str, Option<&str>) {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(i) if !image[i + 1..].contains('/') => (&image[..i], Some(&image[i + 1..])),
        _ => (image, None),
    }
}

/// A container's name. `container_name:` wins. Services built from the repo carry the
/// revision, so the new one can start beside the old one; the others keep one stable name.
pub(crate) fn container(
    project: &ProjectName,
    service: &ServiceName,
    built_at: Option<&Revision>,
    explicit: Option<&str>,
) -> String {
    match (explicit, built_at) {
        (Some(name), _) => name.to_owned(),
        (None, Some(rev)) => format!("{project}-{service}-{}", rev.short()),
        (None, None) => format!("{project}-{service}"),
    }
}

/// The name of a service's `replica`th container: the first is the service's container,
/// the others add `-<n>` to its name.
pub(crate) fn replica(container: &str, replica: u32) -> String {
    match replica {
        0 | 1 => container.to_owned(),
        n => format!("{container}-{n}"),
    }
}

/// The one-off container that runs the release command: one name per project, so one left
/// by a killed deploy is found and removed before the next starts.
pub(crate) fn release_container(project: &ProjectName, service: &ServiceName) -> String {
    format!("{project}-{service}-release")
}

/// Where a replaced container is moved while its successor proves itself, so that a fixed
/// name is free and the old one can be put back if the new one fails.
pub(crate) fn parked(name: &str) -> String {
    format!("{name}{PARKED_SUFFIX}")
}

pub(crate) const PARKED_SUFFIX: &str = ".replaced";

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> ProjectName {
        ProjectName::parse("shop").unwrap()
    }
    fn s(n: &str) -> ServiceName {
        ServiceName::parse(n).unwrap()
    }

    #[test]
    fn names() {
        let rev = Revision::parse(&"ab".repeat(20)).unwrap();
        assert_eq!(network(&p(), "default", None), "shop_default");
        assert_eq!(network(&p(), "x", Some("prod-net")), "prod-net");
        assert_eq!(volume(&p(), "pg", None), "shop_pg");
        assert_eq!(image_repo(&p(), &s("web"), None), "shop-web");
        assert_eq!(
            image_repo(&p(), &s("web"), Some("bpt-server:1.2")),
            "bpt-server"
        );
        assert_eq!(
            image_repo(&p(), &s("web"), Some("reg:5000/bpt")),
            "reg:5000/bpt"
        );
        assert_eq!(
            revision_tag("bpt-server", &rev),
            format!("bpt-server:{rev}")
        );
        assert_eq!(
            container(&p(), &s("web"), Some(&rev), None),
            "shop-web-abababababab"
        );
        assert_eq!(container(&p(), &s("db"), None, None), "shop-db");
        assert_eq!(
            container(&p(), &s("db"), None, Some("db-production")),
            "db-production"
        );
    }

    #[test]
    fn tags() {
        assert_eq!(split_tag("postgres:15"), ("postgres", Some("15")));
        assert_eq!(split_tag("postgres"), ("postgres", None));
        assert_eq!(
            split_tag("localhost:5000/app"),
            ("localhost:5000/app", None)
        );
        assert_eq!(
            split_tag("localhost:5000/app:v1"),
            ("localhost:5000/app", Some("v1"))
        );
        assert_eq!(split_tag("app@sha256:abc"), ("app", None));
    }
}
