//! A BuildKit session: the engine's builder asks it for a build's secrets, over gRPC, on a
//! connection the build request names by id.
//!
//! bollard 0.21 opens a session only with services of its own (registry credentials, no
//! secrets), so this module dials the engine's socket itself, upgrades the connection as
//! `POST /session` asks, and serves two things on it: the secrets it was handed (from
//! memory: no file is opened again once the pipeline read and judged it) and the health
//! checks the engine sends while the session lives.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use bollard_buildkit_proto::health::health_check_response::ServingStatus;
use bollard_buildkit_proto::health::health_server::{Health, HealthServer};
use bollard_buildkit_proto::health::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::secrets_server::{Secrets, SecretsServer};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::{GetSecretRequest, GetSecretResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use super::{Docker, DockerError};

/// How long the engine has to accept the session.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// The gRPC methods the session offers; the engine calls nothing else.
const METHODS: [&str; 2] = [
    "/moby.buildkit.secrets.v1.Secrets/GetSecret",
    "/grpc.health.v1.Health/Check",
];

/// An open session; dropping it closes the connection.
pub(crate) struct Session {
    pub(crate) id: String,
    serving: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

/// Opens a session that answers `RUN --mount=type=secret,id=<id>` with `secrets[id]`.
pub(crate) async fn open(
    docker: &Docker,
    secrets: BTreeMap<String, Vec<u8>>,
) -> Result<Session, DockerError> {
    let id = new_id();
    let failed = |why: String| DockerError::Session { why };
    let request = upgrade_request(&id, &super::raw::versioned(docker, "/session"));
    let stream = tokio::time::timeout(OPEN_TIMEOUT, async {
        let mut stream = super::raw::dial().await.map_err(failed)?;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| failed(format!("cannot send the request: {e}")))?;
        switched(&mut stream).await.map_err(failed)?;
        Ok::<_, DockerError>(stream)
    })
    .await
    .map_err(|_| failed(format!("no answer within {}s", OPEN_TIMEOUT.as_secs())))??;
    let router = tonic::transport::Server::builder()
        .add_service(HealthServer::new(Healthy))
        .add_service(SecretsServer::new(SecretStore(secrets)));
    let serving = tokio::spawn(async move {
        let incoming = futures_util::stream::iter([Ok::<_, std::io::Error>(stream)]);
        if let Err(e) = router.serve_with_incoming(incoming).await {
            tracing::debug!(error = %e, "the build session ended");
        }
    });
    Ok(Session { id, serving })
}

/// `POST /session` asking the engine to take the connection over as HTTP/2 (the engine is
/// then the gRPC client, this side the server).
fn upgrade_request(id: &str, path: &str) -> String {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 0\r\nX-Docker-Expose-Session-Uuid: {id}\r\nX-Docker-Expose-Session-Name: deploy\r\nX-Docker-Expose-Session-Sharedkey: {id}\r\n"
    );
    for method in METHODS {
        request.push_str(&format!(
            "X-Docker-Expose-Session-Grpc-Method: {method}\r\n"
        ));
    }
    request.push_str("\r\n");
    request
}

/// Reads the engine's answer up to the end of its headers, one byte at a time: what follows
/// is already HTTP/2 and must stay in the stream.
async fn switched(stream: &mut UnixStream) -> Result<(), String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 {
            return Err("the engine's answer has no end of headers".to_owned());
        }
        let byte = stream
            .read_u8()
            .await
            .map_err(|e| format!("the engine closed the connection: {e}"))?;
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head);
    let status = head.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) == Some("101") {
        Ok(())
    } else {
        Err(format!("the engine answered `{status}`"))
    }
}

/// 32 hex digits from the kernel's random source: the engine keys sessions by id.
fn new_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = (nanos ^ u128::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The secrets of one build, by the id its Dockerfile asks for.
struct SecretStore(BTreeMap<String, Vec<u8>>);

#[tonic::async_trait]
impl Secrets for SecretStore {
    async fn get_secret(
        &self,
        request: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let id = &request.get_ref().id;
        match self.0.get(id) {
            Some(data) => Ok(Response::new(GetSecretResponse { data: data.clone() })),
            // BuildKit skips an optional mount on `NotFound` and fails a required one.
            None => Err(Status::not_found(format!(
                "no build secret `{id}`: list it under `build.secrets` in the compose file"
            ))),
        }
    }
}

/// Answers the engine's health checks: the session lives as long as the build needs it.
struct Healthy;

type WatchStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for Healthy {
    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    async fn list(
        &self,
        _: Request<HealthListRequest>,
    ) -> Result<Response<HealthListResponse>, Status> {
        Err(Status::unimplemented("list"))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, _: Request<HealthCheckRequest>) -> Result<Response<WatchStream>, Status> {
        Err(Status::unimplemented("watch"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upgrade_names_the_session_and_its_methods() {
        let request = upgrade_request("abc", "/v1.41/session");
        assert!(request.starts_with("POST /v1.41/session HTTP/1.1\r\n"));
        assert!(request.contains("\r\nUpgrade: h2c\r\n"));
        assert!(request.contains("\r\nX-Docker-Expose-Session-Uuid: abc\r\n"));
        assert!(request.contains(
            "\r\nX-Docker-Expose-Session-Grpc-Method: /moby.buildkit.secrets.v1.Secrets/GetSecret\r\n"
        ));
        assert!(request.ends_with("\r\n\r\n"));
        assert_eq!(new_id().len(), 32);
        assert_ne!(new_id(), new_id());
    }
}
