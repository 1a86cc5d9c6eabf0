//! Lifecycle hooks (`post_start`, `pre_stop`): commands run in a service's own container by
//! exec, their output going to the deploy's step line by line.

use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::StreamExt;

use super::DockerError;
use super::build::LineSplitter;
use crate::compose::spec::Hook;
use crate::plan::names;
use crate::report::{Reporter, Step};

/// How long one hook may run before the deploy stops waiting for it.
const HOOK_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs `hook` in the container `id`; its output goes to `out`. An exit other than 0, or
/// running past `HOOK_TIMEOUT`, is an error saying so.
pub(crate) async fn run(docker: &Docker, id: &str, hook: &Hook, out: &Step) -> Result<(), String> {
    match tokio::time::timeout(HOOK_TIMEOUT, exec(docker, id, hook, out)).await {
        Ok(Ok(0)) => Ok(()),
        Ok(Ok(code)) => Err(format!("`{}` exited with {code}", hook.command.join(" "))),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "`{}` still ran after {} s",
            hook.command.join(" "),
            HOOK_TIMEOUT.as_secs()
        )),
    }
}

async fn exec(docker: &Docker, id: &str, hook: &Hook, out: &Step) -> Result<i64, DockerError> {
    let env: Vec<String> = (hook.environment.iter())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let options = CreateExecOptions {
        cmd: Some(hook.command.clone()),
        user: hook.user.clone(),
        privileged: Some(hook.privileged),
        working_dir: hook.working_dir.clone(),
        env: Some(env),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let api = |action: &str, e| DockerError::api(&format!("{action} (a lifecycle hook)"), e);
    let exec = (docker.create_exec(id, options).await).map_err(|e| api("create an exec", e))?;
    let started = docker.start_exec(&exec.id, None).await;
    if let StartExecResults::Attached { mut output, .. } =
        started.map_err(|e| api("start an exec", e))?
    {
        let mut lines = LineSplitter::default();
        while let Some(chunk) = output.next().await {
            if let Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message }) = chunk {
                for line in lines.push(&String::from_utf8_lossy(&message)) {
                    out.output(line);
                }
            }
        }
        if let Some(rest) = lines.finish() {
            out.output(rest);
        }
    }
    let inspect = docker.inspect_exec(&exec.id).await;
    Ok(inspect
        .map_err(|e| api("inspect an exec", e))?
        .exit_code
        .unwrap_or(-1))
}

/// Runs the `pre_stop` hooks the container `id` was created with (its label), before it is
/// stopped for good. A hook that fails is a warning: the container is stopped all the same.
pub(crate) async fn pre_stop(docker: &Docker, reporter: &Reporter, id: &str, name: &str) {
    let Ok(inspect) = docker.inspect_container(id, None).await else {
        return;
    };
    let running = inspect.state.as_ref().and_then(|s| s.running) == Some(true);
    let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
    let Some(hooks) = labels.get(names::LABEL_PRE_STOP) else {
        return;
    };
    let Ok(hooks) = serde_json::from_str::<Vec<Hook>>(hooks) else {
        reporter.warn(format!(
            "`{name}`: its pre_stop hooks could not be read; stopping it"
        ));
        return;
    };
    if !running {
        return;
    }
    let step = reporter.step(crate::report::StepKind::Hook {
        what: format!("pre_stop of `{name}`"),
    });
    for hook in &hooks {
        if let Err(e) = run(docker, id, hook, &step).await {
            reporter.warn(format!("`{name}`: pre_stop: {e}; stopping it all the same"));
        }
    }
    step.finish();
}
