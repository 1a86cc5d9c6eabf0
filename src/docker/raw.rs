//! The engine's socket, dialled without bollard, for the two things bollard 0.21 cannot ask
//! of a Docker 20.10 engine: the upgraded connection of a build session (`session.rs`), and
//! the build cache's records in `/system/df`, whose API 1.41 form bollard's models no
//! longer read.

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::Docker;

/// The most a JSON answer may take: `/system/df` lists every image, container and volume.
const MAX_ANSWER: usize = 64 << 20;

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
    let io = TokioIo::new(dial().await?);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("the engine did not answer: {e}"))?;
    let driving = tokio::spawn(connection);
    let request = hyper::Request::get(versioned(docker, path))
        .header("Host", "docker")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
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
            return Err(format!(
                "the engine answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("the engine's answer is not JSON: {e}"))
    }
    .await;
    driving.abort();
    answer
}
