//! Pure planning: `Spec` + observed state + revision → `Plan`. No I/O.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::ids::ServiceName;

/// One image to build from the pushed tree. Services that share an image share one step.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BuildStep {
    /// The services that run this image (for messages: `build web`).
    pub(crate) services: Vec<ServiceName>,
    /// The repository part: `bpt-server`, or `<project>-<service>` when `image:` is absent.
    pub(crate) image: String,
    /// Every tag to apply: `<image>:<full sha>` first, then `<image>:latest`.
    pub(crate) tags: Vec<String>,
    /// Absolute build context directory.
    pub(crate) context: PathBuf,
    /// Dockerfile path relative to the context.
    pub(crate) dockerfile: String,
    pub(crate) args: BTreeMap<String, String>,
    pub(crate) target: Option<String>,
    /// Image labels: the compose file's `build.labels` plus `deploy.*`.
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) network: Option<String>,
}
