//! The engine's socket, dialled without bollard, for the things bollard 0.21 cannot ask of a
//! Docker 20.10 engine: the upgraded connection of a build session (`session.rs`), the build
//! cache's records in `/system/df`, whose API 1.41 form bollard's models no longer read, and
//! a container's creation, whose API 1.41 body has fields (`MacAddress`) that bollard's
//! model no longer has.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::Docker;

/// The most a JSON answer may take: `/system/df` lists every image, container and volume.
const MAX_ANSWER: usize = 64 << 20;

/// How long a request may take, as bollard's default.
const TIMEOUT: Duration = Duration::from_secs(120);

/// A new connection to the engine's socket.
pub(crate) async fn dial() -> Result<UnixStream, String> {
    let socket = super::socket_path().map_err(|e| e.to_string())?;
    UnixStream::connect(&socket)
        .await
        .map_err(|e| format!("cannot connect to `{socket}`: {e}"))
}

/// `/v<negotiated version><path>` on this engine.
pub(crate) fn versioned(docker: &Docker, path: &str) -> String {
    let version = docker.client_version();
    format!(
        "/v{}.{}{path}",
        version.major_version, version.minor_version
    )
}

/// `GET path` as JSON.
pub(crate) async fn get_json(docker: &Docker, path: &str) -> Result<serde_json::Value, String> {
    request_json(docker, hyper::Method::GET, path, None).await
}

/// `POST path` with a JSON body, answered with JSON.
pub(crate) async fn post_json(
    docker: &Docker,
    path: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    request_json(docker, hyper::Method::POST, path, Some(body)).await
}

/// One request, bounded by `TIMEOUT` as bollard bounds its own. An error answer is read
/// for the engine's `message`.
async fn request_json(
    docker: &Docker,
    method: hyper::Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let request = hyper::Request::builder()
        .method(method)
        .uri(versioned(docker, path))
        .header("Host", "docker")
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .map_err(|e| e.to_string())?;
    let io = TokioIo::new(dial().await?);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("the engine did not answer: {e}"))?;
    let driving = tokio::spawn(connection);
    let answer = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("the engine did not answer: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("the engine's answer could not be read: {e}"))?
            .to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| Some(v.get("message")?.as_str()?.to_owned()))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
            return Err(format!("the engine answered {status}: {message}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("the engine's answer is not JSON: {e}"))
    };
    let answer = tokio::time::timeout(TIMEOUT, answer)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the engine did not answer within {}s",
                TIMEOUT.as_secs()
            ))
        });
    driving.abort();
    answer
}
