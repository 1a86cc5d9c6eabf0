//! bollard: the only code that talks to the Docker engine.

pub(crate) mod apply;
pub(crate) mod down;
pub(crate) mod health;
pub(crate) mod observe;
pub(crate) mod status;

/// A Docker engine call that failed, with what we were doing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DockerError {
    #[error("failed to {action}: {source}")]
    Api {
        action: String,
        source: bollard::errors::Error,
    },
}

impl DockerError {
    pub(crate) fn api(action: &str, source: bollard::errors::Error) -> Self {
        Self::Api {
            action: action.to_owned(),
            source,
        }
    }
}
