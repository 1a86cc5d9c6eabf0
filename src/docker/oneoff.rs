//! A one-off container (the release command): created, its output streamed line by line,
//! waited for within a time limit, and removed whatever happened.

use std::collections::VecDeque;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::{
    AttachContainerOptions, RemoveContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;

use super::DockerError;
use super::build::LineSplitter;
use crate::cancel::{Cancel, Canceled};
use crate::plan::container::ContainerSpec;
use crate::report::Step;

/// How many of its last lines a failed one-off gives as the reason.
pub(crate) const TAIL_LINES: usize = 15;

#[derive(Debug, thiserror::Error)]
pub(crate) enum OneOffError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("exited with code {code}{}", tail_text(.tail))]
    Exit { code: i64, tail: Vec<String> },
    #[error("still running after {}, so it was stopped{}", crate::report::format_elapsed(*.after), tail_text(.tail))]
    Timeout { after: Duration, tail: Vec<String> },
    #[error("{0}, so it was stopped")]
    Canceled(Canceled),
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        " without printing anything".to_owned()
    } else {
        format!("; its last lines:\n{}", tail.join("\n"))
    }
}

/// Runs `spec` to its end: every line it prints goes to `step`, and it must exit 0 within
/// `timeout`, unless `cancel` trips first. A container of the same name left by a killed run
/// is removed first; this one is removed (with its anonymous volumes, killed if it still
/// runs) however it ends.
pub(crate) async fn run(
    docker: &Docker,
    spec: &ContainerSpec,
    timeout: Duration,
    cancel: &Cancel,
    step: &Step,
) -> Result<(), OneOffError> {
    remove(docker, &spec.name).await?;
    let id = super::apply::create(docker, spec, &[]).await?;
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    let waited = attach_and_wait(docker, &id, &spec.name, step, &mut tail);
    let result = tokio::select! {
        result = tokio::time::timeout(timeout, waited) => Ok(result),
        canceled = cancel.requested() => Err(canceled),
    };
    let tail = tail.into_iter().collect();
    let outcome = match result {
        Ok(Ok(Ok(0))) => Ok(()),
        Ok(Ok(Ok(code))) => Err(OneOffError::Exit { code, tail }),
        Ok(Ok(Err(e))) => Err(e.into()),
        Ok(Err(_)) => Err(OneOffError::Timeout {
            after: timeout,
            tail,
        }),
        Err(canceled) => Err(OneOffError::Canceled(canceled)),
    };
    remove(docker, &spec.name).await?;
    outcome
}

/// Attaches before starting, so no line is missed; keeps the last lines in `tail` and
/// returns the exit code.
async fn attach_and_wait(
    docker: &Docker,
    id: &str,
    name: &str,
    step: &Step,
    tail: &mut VecDeque<String>,
) -> Result<i64, DockerError> {
    let options = AttachContainerOptions {
        stdout: true,
        stderr: true,
        stream: true,
        logs: true,
        ..Default::default()
    };
    let attached = docker
        .attach_container(id, Some(options))
        .await
        .map_err(|e| DockerError::api(&format!("attach to `{name}`"), e))?;
    super::apply::start(docker, id, name).await?;
    let mut output = attached.output;
    let mut lines = LineSplitter::default();
    let mut keep = |line: String| {
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        step.output(line.clone());
        tail.push_back(line);
    };
    while let Some(chunk) = output.next().await {
        let bytes = match chunk {
            Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message }) => message,
            Ok(_) => continue,
            // The stream ends with the container; an error here is only a lost line.
            Err(_) => break,
        };
        for line in lines.push(&String::from_utf8_lossy(&bytes)) {
            keep(line);
        }
    }
    if let Some(line) = lines.finish() {
        keep(line);
    }
    exit_code(docker, id, name).await
}

async fn exit_code(docker: &Docker, id: &str, name: &str) -> Result<i64, DockerError> {
    let mut wait = docker.wait_container(id, None::<WaitContainerOptions>);
    match wait.next().await {
        Some(Ok(response)) => Ok(response.status_code),
        // bollard reports a non-zero exit as an error that carries the code.
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(DockerError::api(&format!("wait for `{name}`"), e)),
        None => Err(DockerError::api(
            &format!("wait for `{name}`"),
            bollard::errors::Error::DockerStreamError {
                error: "the engine closed the wait without an exit code".to_owned(),
            },
        )),
    }
}

/// Removes the container named `name` and its anonymous volumes, if it exists.
async fn remove(docker: &Docker, name: &str) -> Result<(), DockerError> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        link: false,
    };
    match docker.remove_container(name, Some(options)).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(DockerError::api(&format!("remove container `{name}`"), e)),
    }
}
