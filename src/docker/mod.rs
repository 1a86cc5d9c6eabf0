//! bollard: the only code that talks to the Docker engine.

pub(crate) mod apply;
pub(crate) mod build;
pub(crate) mod cache;
pub(crate) mod context;
pub(crate) mod down;
pub(crate) mod events;
pub(crate) mod health;
pub(crate) mod hooks;
pub(crate) mod observe;
pub(crate) mod oneoff;
pub(crate) mod postgres;
pub(crate) mod progress;
pub(crate) mod prune;
pub(crate) mod raw;
pub(crate) mod routes;
pub(crate) mod session;
pub(crate) mod status;
pub(crate) mod takeover;

use std::time::Duration;

pub(crate) use bollard::Docker;

/// Where the engine listens when `DOCKER_HOST` is not set.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// How long to wait for the engine to answer the first request: long enough for a busy
/// engine, short enough that a hung one does not leave the pusher staring at nothing.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Every later request waits at most this long for the engine's response headers (a build's
/// output then streams for as long as it takes).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A Docker engine call that failed, with what we were doing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DockerError {
    /// The cause is in the message, not a `source`, so the error chain prints it once.
    #[error("failed to {action}: {}", error_chain(cause))]
    Api {
        action: String,
        cause: bollard::errors::Error,
    },
    /// Nothing answers on the socket. The reason is in the message, so the chain printed under
    /// it does not repeat bollard's vaguer text.
    #[error("failed to reach the Docker engine at `{socket}`: {reason}; {advice}")]
    Unreachable {
        socket: String,
        reason: String,
        advice: &'static str,
    },
    #[error(
        "`DOCKER_HOST` is `{0}`, but only a local engine (`unix://…`) is supported; unset it to use `{DEFAULT_HOST}`"
    )]
    UnsupportedHost(String),
    /// A request made without bollard (`raw.rs`) failed.
    #[error("failed to {action}: {why}")]
    Raw { action: String, why: String },
    /// The build session that hands secrets to BuildKit could not be opened.
    #[error("failed to open a build session with the Docker engine: {why}")]
    Session { why: String },
}

impl DockerError {
    pub(crate) fn api(action: &str, source: bollard::errors::Error) -> Self {
        Self::Api {
            action: action.to_owned(),
            cause: source,
        }
    }
}

/// Connects to the local engine (`DOCKER_HOST` when it is a `unix://` socket) and settles on
/// the API version both sides speak: bollard defaults to a newer API than engines such as
/// Docker 20.10 (API 1.41) accept.
pub(crate) async fn connect() -> Result<Docker, DockerError> {
    connect_to(&host()).await
}

/// Whether the API version `connect` settled on is older than `major.minor`: what an
/// engine that old does not do, it drops without a word.
pub(crate) fn api_before(docker: &Docker, major: usize, minor: usize) -> bool {
    let api = docker.client_version();
    (api.major_version, api.minor_version) < (major, minor)
}

/// `DOCKER_HOST`, or the default socket.
fn host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_HOST.to_owned())
}

/// The engine's socket, as `connect` reaches it: for the one connection bollard cannot
/// make for us (`session.rs`).
pub(crate) fn socket_path() -> Result<String, DockerError> {
    let host = host();
    host.strip_prefix("unix://")
        .map(str::to_owned)
        .ok_or(DockerError::UnsupportedHost(host))
}

async fn connect_to(host: &str) -> Result<Docker, DockerError> {
    let Some(socket) = host.strip_prefix("unix://") else {
        return Err(DockerError::UnsupportedHost(host.to_owned()));
    };
    let unreachable = |e: bollard::errors::Error| {
        let (reason, advice) = diagnose(&e);
        DockerError::Unreachable {
            socket: socket.to_owned(),
            reason,
            advice,
        }
    };
    let docker = Docker::connect_with_unix(
        socket,
        PROBE_TIMEOUT.as_secs(),
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(unreachable)?;
    let docker = docker.negotiate_version().await.map_err(unreachable)?;
    Ok(docker.with_timeout(REQUEST_TIMEOUT))
}

const START_DOCKER: &str = "is Docker running? start it (`sudo systemctl start docker`) or set `DOCKER_HOST` to its socket";

/// bollard says "client error (Connect)"; the operator needs to know whether the socket is
/// missing, refused or forbidden, and what to do about it.
fn diagnose(e: &bollard::errors::Error) -> (String, &'static str) {
    use std::io::ErrorKind;
    if let bollard::errors::Error::SocketNotFoundError(_) = e {
        return ("no such socket".to_owned(), START_DOCKER);
    }
    if matches!(e, bollard::errors::Error::RequestTimeoutError) {
        return (
            format!("no answer within {}s", PROBE_TIMEOUT.as_secs()),
            START_DOCKER,
        );
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                ErrorKind::PermissionDenied => (
                    "permission denied".to_owned(),
                    "run as root or add this user to the `docker` group",
                ),
                ErrorKind::NotFound => ("no such socket".to_owned(), START_DOCKER),
                ErrorKind::ConnectionRefused => ("connection refused".to_owned(), START_DOCKER),
                _ => (io.to_string(), START_DOCKER),
            };
        }
        cause = c.source();
    }
    (error_chain(e), START_DOCKER)
}

/// A client whose requests to paths ending in `path` carry `pairs` in their query besides
/// what bollard's option structs say: for parameters those structs cannot express (a
/// repeated `extrahosts`, the `keep-storage` of API 1.41).
pub(crate) fn with_query(docker: &Docker, path: &'static str, pairs: &[(&str, String)]) -> Docker {
    let extra: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect();
    let extra = extra.join("&");
    docker.clone().with_request_modifier(move |mut request| {
        if extra.is_empty() || !request.uri().path().ends_with(path) {
            return request;
        }
        let uri = request.uri().to_string();
        let joined = if uri.contains('?') {
            format!("{uri}&{extra}")
        } else {
            format!("{uri}?{extra}")
        };
        if let Ok(uri) = joined.parse() {
            *request.uri_mut() = uri;
        }
        request
    })
}

/// `value` with every byte but the unreserved ones written `%XX`.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// For tests' drop guards: runs `clean` with an engine connection, whatever the test's
/// outcome. Drop cannot await, and the test's runtime may be the one unwinding, so it runs on
/// a thread and a runtime of its own.
#[cfg(test)]
pub(crate) fn clean_up<F, Fut>(clean: F)
where
    F: FnOnce(Docker) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            if let Ok(docker) = connect().await {
                clean(docker).await;
            }
        });
    })
    .join();
}

/// An error and its causes on one line: bollard's top-level messages rarely say enough.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_is_one_clear_line() {
        let err = connect_to("unix:///nonexistent/docker.sock")
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "failed to reach the Docker engine at `/nonexistent/docker.sock`: no such socket; \
             is Docker running? start it (`sudo systemctl start docker`) or set `DOCKER_HOST` to its socket"
        );
    }

    #[tokio::test]
    async fn a_socket_nobody_listens_on_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        // Bound but never accepting: what a crashed engine leaves behind.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let err = connect_to(&format!("unix://{}", path.display()))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("connection refused; is Docker running?"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn tcp_hosts_are_refused_up_front() {
        let err = connect_to("tcp://10.0.0.1:2375")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("`DOCKER_HOST` is `tcp://10.0.0.1:2375`"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn the_local_engine_answers_with_a_negotiated_version() {
        let docker = connect().await.expect("these tests need a Docker engine");
        // An engine older than bollard's default API refuses every call until we negotiate.
        let version = docker
            .version()
            .await
            .expect("a call at the negotiated version");
        let server = version.api_version.unwrap();
        let (major, minor) = server.split_once('.').unwrap();
        let server = bollard::ClientVersion {
            major_version: major.parse().unwrap(),
            minor_version: minor.parse().unwrap(),
        };
        let want = if server < *bollard::API_DEFAULT_VERSION {
            server
        } else {
            *bollard::API_DEFAULT_VERSION
        };
        assert_eq!(docker.client_version(), want);
    }
}
