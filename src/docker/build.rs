//! Image builds through the Engine API, output streamed to the reporter: BuildKit when the
//! engine has it (its trace decoded by `progress.rs`, secrets served by `session.rs`), the
//! classic builder otherwise.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use bollard::Docker;
use bollard::models::BuildInfoAux;
use bollard::query_parameters::{
    BuildImageOptions, BuildImageOptionsBuilder, BuilderVersion, TagImageOptionsBuilder,
};
use futures_util::StreamExt;

use super::context::{self, ContextError};
use super::progress::{FailedStep, Progress, redraw};
use super::{error_chain, session};
use crate::plan::BuildStep;
use crate::plan::names::{LABEL_PROJECT, split_tag};
use crate::report::Step;

/// A build that did not produce its tagged image. Every message names the image and the
/// services it was for.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    /// The Dockerfile failed; `reason` says which step and why.
    #[error("failed to build `{image}` for {services}: {reason}")]
    Failed {
        image: String,
        services: String,
        reason: String,
    },
    #[error("failed to build `{image}` for {services}: {problem}")]
    Dockerfile {
        image: String,
        services: String,
        problem: String,
    },
    #[error("failed to build `{image}` for {services}: {error}")]
    Context {
        image: String,
        services: String,
        error: ContextError,
    },
    /// The engine could not be asked, or stopped answering.
    #[error("failed to build `{image}` for {services}: {action}: {}", error_chain(.error))]
    Engine {
        image: String,
        services: String,
        action: &'static str,
        error: bollard::errors::Error,
    },
    #[error("failed to build `{image}` for {services}: {error}")]
    Session {
        image: String,
        services: String,
        error: super::DockerError,
    },
    #[error("failed to tag `{image}` as `{tag}`: {}", error_chain(.error))]
    Tag {
        image: String,
        tag: String,
        error: bollard::errors::Error,
    },
}

/// The values of the secrets builds read, by their name under the compose file's top-level
/// `secrets:`, as the pipeline read them from `.secrets/`.
#[derive(Clone, Default)]
pub(crate) struct BuildSecrets(BTreeMap<String, String>);

impl BuildSecrets {
    pub(crate) fn insert(&mut self, name: String, value: String) {
        self.0.insert(name, value);
    }
}

impl fmt::Debug for BuildSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: a value must never reach a log, even a debug one.
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Which of the engine's builders runs a build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Builder {
    BuildKit,
    /// For an engine without BuildKit (API before 1.39, or not Linux), and for a build
    /// whose settings an older engine's BuildKit would ignore.
    Classic,
}

impl Builder {
    /// BuildKit whenever the engine has it.
    pub(crate) async fn of(docker: &Docker) -> Self {
        if super::api_before(docker, 1, 39) {
            return Builder::Classic;
        }
        match docker.version().await {
            Ok(v) if v.os.as_deref().is_some_and(|os| os != "linux") => Builder::Classic,
            // An engine that does not say: let the build itself tell.
            _ => Builder::BuildKit,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Builder::BuildKit => "builder: BuildKit",
            Builder::Classic => "builder: classic",
        }
    }
}

fn service_list(step: &BuildStep, separator: &str) -> String {
    let names: Vec<&str> = step.services.iter().map(|s| s.as_str()).collect();
    names.join(separator)
}

/// `service `web`` or `services `web`, `worker``, for messages.
fn services_phrase(step: &BuildStep) -> String {
    let quoted = service_list(step, "`, `");
    if step.services.len() == 1 {
        format!("service `{quoted}`")
    } else {
        format!("services `{quoted}`")
    }
}

/// Builds `step` from its context with BuildKit (the classic builder on an engine without
/// it), tags it with every tag of the step, and returns the image id (`sha256:…`). Each
/// line of build output goes to the pipeline's step `out` as it arrives.
pub(crate) async fn build_image(
    docker: &Docker,
    step: &BuildStep,
    secrets: &BuildSecrets,
    out: &Step,
) -> Result<String, BuildError> {
    let mut builder = Builder::of(docker).await;
    // BuildKit gives `RUN` steps the size `build.shm_size` asks for from Docker Engine 23
    // (API 1.42); an older engine's BuildKit keeps 64 MiB without a word, so such a build
    // goes to the classic builder, which honours it.
    if builder == Builder::BuildKit
        && step.build.shm_size.is_some()
        && super::api_before(docker, 1, 42)
    {
        if !step.build.secrets.is_empty() {
            return Err(Failure::of(step).dockerfile(
                "`build.shm_size` with `build.secrets` needs Docker Engine 23 or later: this engine's BuildKit ignores `shm_size`, and only BuildKit reads build secrets".to_owned(),
            ));
        }
        out.output("`build.shm_size`: this engine's BuildKit ignores it, so the classic builder runs this build");
        builder = Builder::Classic;
    }
    build_with(docker, builder, step, secrets, out).await
}

/// `build_image` with the builder chosen.
pub(crate) async fn build_with(
    docker: &Docker,
    builder: Builder,
    step: &BuildStep,
    secrets: &BuildSecrets,
    out: &Step,
) -> Result<String, BuildError> {
    let fail = Failure::of(step);
    let Some(first_tag) = step.tags.first() else {
        return Err(fail.dockerfile("the plan gave it no tag".to_owned()));
    };
    let dockerfile = check_dockerfile(step).map_err(|p| fail.dockerfile(p))?;
    out.output(builder.describe());
    let session = open_session(docker, builder, step, secrets, &fail).await?;
    let inline = step.build.dockerfile_inline.clone();
    let tar = context::tar_stream(&step.build.context, &dockerfile, inline)
        .map_err(|e| fail.context(e))?;
    let options = options(step, &dockerfile, first_tag, builder, session.as_ref());
    // Bollard's options carry one `extrahosts`; the engine takes one parameter per host.
    let hosts: Vec<(&str, String)> = (step.build.extra_hosts.iter())
        .map(|h| ("extrahosts", h.clone()))
        .collect();
    let client = super::with_query(docker, "/build", &hosts);
    let streamed = stream(&client, &options, tar.body, out).await;
    drop(session);
    let sent = match tar.done.await {
        Ok(result) => result,
        Err(join) => Err(ContextError::Io {
            path: step.build.context.clone(),
            error: std::io::Error::other(format!("the context walker stopped: {join}")),
        }),
    };
    let id = match settle(docker, streamed, sent, &dockerfile, &fail, out).await? {
        Some(id) => id,
        // Engines that do not report the id in the stream: ask for the tag just built.
        None => docker
            .inspect_image(first_tag)
            .await
            .map_err(|e| fail.engine("inspect the built image", e))?
            .id
            .ok_or_else(|| fail.failed(format!("the engine reported no id for `{first_tag}`")))?,
    };
    for tag in &step.tags[1..] {
        tag_image(docker, &id, tag).await?;
    }
    Ok(id)
}

/// A session serving the step's build secrets, when it has any (BuildKit only).
async fn open_session(
    docker: &Docker,
    builder: Builder,
    step: &BuildStep,
    secrets: &BuildSecrets,
    fail: &Failure,
) -> Result<Option<session::Session>, BuildError> {
    if step.build.secrets.is_empty() {
        return Ok(None);
    }
    if builder == Builder::Classic {
        return Err(fail.dockerfile(
            "`build.secrets` needs BuildKit, which this Docker engine does not have".to_owned(),
        ));
    }
    let mut values = BTreeMap::new();
    for secret in &step.build.secrets {
        let Some(value) = secrets.0.get(&secret.source) else {
            return Err(fail.dockerfile(format!(
                "the secret `{}` was not read before the build",
                secret.source
            )));
        };
        values.insert(secret.target.clone(), value.clone().into_bytes());
    }
    session::open(docker, values)
        .await
        .map(Some)
        .map_err(|error| fail.session(error))
}

/// What the build's end means: the image id the engine reported, or the error of the
/// Dockerfile, the engine or the context, whichever says best what went wrong.
async fn settle(
    docker: &Docker,
    streamed: Streamed,
    sent: Result<context::ContextStats, ContextError>,
    dockerfile: &str,
    fail: &Failure,
    out: &Step,
) -> Result<Option<String>, BuildError> {
    match (streamed.failure, sent) {
        (Some(Err(reason)), _) => {
            if let Some(layer) = streamed.last_layer {
                remove_leftover(docker, &layer).await;
            }
            Err(fail.failed(explain(&reason, streamed.failed_step, dockerfile, out)))
        }
        // The request failed because the tar did: the context's error says why.
        (_, Err(error)) if !matches!(error, ContextError::Aborted) => Err(fail.context(error)),
        (Some(Ok(error)), _) => Err(fail.engine("the build request failed", error)),
        (None, Err(error)) => Err(fail.context(error)),
        (None, Ok(stats)) => {
            out.output(format!(
                "sent a build context of {} ({} bytes) in {} files",
                crate::compose::bytes::human(stats.bytes),
                stats.bytes,
                stats.files
            ));
            Ok(streamed.image_id)
        }
    }
}

/// The reason a build failed, in a line: the step that failed and why, or what was wrong
/// with the Dockerfile. The failed step's last output lines go to the log once more, after
/// the rest of the build's, where the pusher sees them.
fn explain(reason: &str, failed: Option<FailedStep>, dockerfile: &str, out: &Step) -> String {
    // BuildKit wraps every error in what it was doing; the innermost part is the news.
    let mut reason = reason.trim_end();
    for wrapper in [
        "failed to solve with frontend dockerfile.v0: ",
        "failed to solve: ",
        "failed to create LLB definition: ",
        "failed to build LLB: ",
        "rpc error: code = Unknown desc = ",
    ] {
        reason = reason.strip_prefix(wrapper).unwrap_or(reason);
    }
    let Some(failed) = failed else {
        if reason.contains("dockerfile parse error") || reason.contains("unknown instruction") {
            return format!("the Dockerfile `{dockerfile}` is invalid: {reason}");
        }
        return reason.to_owned();
    };
    out.output(format!(
        "the step `{}` failed; its last lines:",
        failed.name
    ));
    for line in &failed.last_lines {
        out.output(format!("  | {line}"));
    }
    // `executor failed running [/bin/sh -c make]: exit code: 2`: the command is the step.
    let why = match failed.error.rsplit_once("]: ") {
        Some((_, why)) if failed.error.starts_with("executor failed running") => why,
        _ => failed.error.as_str(),
    };
    format!("the step `{}` failed: {why}", failed.name)
}

/// The build's errors, each naming the image and its services.
struct Failure {
    image: String,
    services: String,
}

impl Failure {
    fn of(step: &BuildStep) -> Self {
        Self {
            image: step.image.clone(),
            services: services_phrase(step),
        }
    }

    fn dockerfile(&self, problem: String) -> BuildError {
        BuildError::Dockerfile {
            image: self.image.clone(),
            services: self.services.clone(),
            problem,
        }
    }

    fn context(&self, error: ContextError) -> BuildError {
        BuildError::Context {
            image: self.image.clone(),
            services: self.services.clone(),
            error,
        }
    }

    fn failed(&self, reason: String) -> BuildError {
        BuildError::Failed {
            image: self.image.clone(),
            services: self.services.clone(),
            reason,
        }
    }

    fn engine(&self, action: &'static str, error: bollard::errors::Error) -> BuildError {
        BuildError::Engine {
            image: self.image.clone(),
            services: self.services.clone(),
            action,
            error,
        }
    }

    fn session(&self, error: super::DockerError) -> BuildError {
        BuildError::Session {
            image: self.image.clone(),
            services: self.services.clone(),
            error,
        }
    }
}

/// The build's options for `step` on `builder`.
fn options(
    step: &BuildStep,
    dockerfile: &str,
    first_tag: &str,
    builder: Builder,
    session: Option<&session::Session>,
) -> BuildImageOptions {
    let mut args: HashMap<&str, &str> = step
        .build
        .args
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let labels: HashMap<&str, &str> = step
        .build
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if builder == Builder::BuildKit {
        // Cache mounts are the engine's, shared by id: each project gets its own, so a push
        // cannot plant files in what another project's build reads.
        if let Some(project) = step.build.labels.get(LABEL_PROJECT) {
            args.insert("BUILDKIT_CACHE_MOUNT_NS", project);
        }
        // The image then carries its cache metadata, so `build.cache_from` can name it once
        // the build cache was pruned.
        args.insert("BUILDKIT_INLINE_CACHE", "1");
    }
    let mut options = BuildImageOptionsBuilder::new()
        .dockerfile(dockerfile)
        .t(first_tag)
        .buildargs(&args)
        .labels(&labels);
    options = match builder {
        Builder::BuildKit => options.version(BuilderVersion::BuilderBuildKit),
        // Intermediate containers go even when a step fails: a failing push must not leave
        // litter on the host.
        _ => options
            .rm(true)
            .forcerm(true)
            .version(BuilderVersion::BuilderV1),
    };
    if let Some(session) = session {
        options = options.session(&session.id);
    }
    if !step.build.cache_from.is_empty() {
        options = options.cachefrom(&step.build.cache_from);
    }
    if let Some(target) = &step.build.target {
        options = options.target(target);
    }
    if let Some(size) = step.build.shm_size.and_then(|s| i32::try_from(s).ok()) {
        options = options.shmsize(size);
    }
    if let Some(platform) = &step.build.platform {
        options = options.platform(platform);
    }
    if let Some(network) = &step.build.network {
        options = options.networkmode(network);
    }
    options.build()
}

/// What the engine's build stream said.
#[derive(Default)]
struct Streamed {
    image_id: Option<String>,
    /// `Err(text)` when the Dockerfile failed, `Ok(error)` when the request did.
    failure: Option<Result<bollard::errors::Error, String>>,
    /// The newest layer the classic builder committed: what a failed build leaves behind.
    last_layer: Option<String>,
    /// The step BuildKit reported failed.
    failed_step: Option<FailedStep>,
}

/// Sends the context and relays the build's output, line by line, to `out`: the classic
/// builder's text, or BuildKit's trace decoded.
async fn stream(
    docker: &Docker,
    options: &BuildImageOptions,
    body: context::Chunks,
    out: &Step,
) -> Streamed {
    let mut lines = LineSplitter::default();
    let mut progress = Progress::default();
    let mut streamed = Streamed::default();
    let mut stream =
        docker.build_image(options.clone(), None, Some(bollard::body_try_stream(body)));
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                streamed.failure = Some(Err(error));
                break;
            }
            Err(error) => {
                streamed.failure = Some(Ok(error));
                break;
            }
        };
        for line in info
            .stream
            .as_deref()
            .map(|t| lines.push(t))
            .unwrap_or_default()
        {
            if let Some(id) = layer_id(&line) {
                streamed.last_layer = Some(id.to_owned());
            }
            out.output(line);
        }
        // Only a base image pull reports status; its progress ticks are noise.
        if let Some(status) = &info.status
            && info
                .progress_detail
                .as_ref()
                .is_none_or(|p| p.current.is_none())
        {
            out.output(match &info.id {
                Some(id) => format!("{id}: {status}"),
                None => status.clone(),
            });
        }
        match info.aux {
            Some(BuildInfoAux::BuildKit(trace)) => {
                for line in progress.update(&trace) {
                    out.output(line);
                }
            }
            Some(BuildInfoAux::Default(image)) => streamed.image_id = image.id,
            None => {}
        }
    }
    // Dropping the request lets the context walker see the engine has stopped reading, so
    // the caller's wait for it cannot last forever.
    drop(stream);
    for rest in lines.finish().into_iter().chain(progress.finish()) {
        out.output(rest);
    }
    streamed.failed_step = progress.failed();
    streamed
}

/// ` ---> 3f57006e0074`: the id of a layer the classic builder just committed.
fn layer_id(line: &str) -> Option<&str> {
    let id = line.trim_start().strip_prefix("---> ")?.trim();
    (id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// Removes the untagged layers a failed build committed, down to the first one another image
/// still uses (the engine refuses to remove those), so failed pushes do not fill the disk.
async fn remove_leftover(docker: &Docker, layer: &str) {
    // The newest layer may be the base image itself (a failure in the first step): a tagged
    // image is someone's, never a leftover.
    match docker.inspect_image(layer).await {
        Ok(image) if image.repo_tags.as_ref().is_none_or(|t| t.is_empty()) => {}
        _ => return,
    }
    let options = bollard::query_parameters::RemoveImageOptions {
        force: false,
        noprune: false,
        ..Default::default()
    };
    if let Err(e) = docker.remove_image(layer, Some(options), None).await {
        tracing::debug!(layer, error = %e, "kept a failed build's layer");
    }
}

/// Tags `image` (an id or a tag) as `tag`: a reused image gets the revision's tag and
/// `latest` like a build does.
pub(crate) async fn tag_image(docker: &Docker, image: &str, tag: &str) -> Result<(), BuildError> {
    let (repo, name) = split_tag(tag);
    let options = TagImageOptionsBuilder::new()
        .repo(repo)
        .tag(name.unwrap_or("latest"))
        .build();
    docker
        .tag_image(image, Some(options))
        .await
        .map_err(|error| BuildError::Tag {
            image: image.to_owned(),
            tag: tag.to_owned(),
            error,
        })
}

/// The Dockerfile's path inside the context, after checking it is there and may be sent.
fn check_dockerfile(step: &BuildStep) -> Result<String, String> {
    let name = if step.build.dockerfile.is_empty() {
        "Dockerfile"
    } else {
        step.build.dockerfile.as_str()
    };
    let context = step.build.context.display();
    if !step.build.context.is_dir() {
        return Err(format!("the build context `{context}` is not a directory"));
    }
    let relative = context::dockerfile_in_context(name)
        .map_err(|why| format!("cannot use the Dockerfile `{name}`: {why}"))?;
    if step.build.dockerfile_inline.is_none() && !step.build.context.join(&relative).is_file() {
        return Err(format!(
            "no Dockerfile `{relative}` in the build context `{context}`; add it, or set `build.dockerfile` in the compose file"
        ));
    }
    Ok(relative)
}

/// Cuts the build's `stream` chunks into lines: the engine splits a command's output wherever
/// its writes fell, so a line may span chunks.
#[derive(Default)]
pub(super) struct LineSplitter {
    pending: String,
}

impl LineSplitter {
    /// The lines `chunk` completes.
    pub(super) fn push(&mut self, chunk: &str) -> Vec<String> {
        self.pending.push_str(chunk);
        let Some(end) = self.pending.rfind('\n') else {
            return Vec::new();
        };
        let rest = self.pending.split_off(end + 1);
        let done = std::mem::replace(&mut self.pending, rest);
        done.lines().map(redraw).collect()
    }

    /// What is left without a final newline.
    pub(super) fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.pending);
        (!rest.is_empty()).then(|| redraw(&rest))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use bollard::query_parameters::RemoveImageOptionsBuilder;

    use super::*;
    use crate::compose::spec::Build;
    use crate::ids::ServiceName;
    use crate::report::{Event, Reporter, StepKind};

    #[test]
    fn lines_are_joined_across_chunks() {
        let mut s = LineSplitter::default();
        assert!(s.push("Step 1/2 : FR").is_empty());
        assert_eq!(s.push("OM debian\nStep 2/2"), ["Step 1/2 : FROM debian"]);
        assert_eq!(s.push(" : RUN x\n\nlast"), ["Step 2/2 : RUN x", ""]);
        assert_eq!(s.finish().as_deref(), Some("last"));
        assert_eq!(s.finish(), None);
        assert_eq!(s.push("10%\r50%\r100%\r\n"), ["100%"]);
    }

    #[test]
    fn tags_split_at_the_last_colon_that_is_not_a_port() {
        assert_eq!(
            split_tag("bpt-server:latest"),
            ("bpt-server", Some("latest"))
        );
        assert_eq!(
            split_tag("localhost:5000/app:v1"),
            ("localhost:5000/app", Some("v1"))
        );
        assert_eq!(
            split_tag("localhost:5000/app"),
            ("localhost:5000/app", None)
        );
        assert_eq!(split_tag("app"), ("app", None));
    }

    fn step(context: &Path, image: &str, services: &[&str]) -> BuildStep {
        BuildStep {
            services: services
                .iter()
                .map(|s| ServiceName::parse(s).unwrap())
                .collect(),
            image: image.to_owned(),
            tags: vec![format!("{image}:one"), format!("{image}:two")],
            build: Build {
                context: context.to_owned(),
                dockerfile: "Dockerfile".to_owned(),
                ..Build::default()
            },
        }
    }

    #[test]
    fn a_missing_dockerfile_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = step(dir.path(), "app", &["web"]);
        let err = check_dockerfile(&s).unwrap_err();
        assert_eq!(
            err,
            format!(
                "no Dockerfile `Dockerfile` in the build context `{}`; add it, or set `build.dockerfile` in the compose file",
                dir.path().display()
            )
        );
        s.build.dockerfile = "../Dockerfile".to_owned();
        assert_eq!(
            check_dockerfile(&s).unwrap_err(),
            "cannot use the Dockerfile `../Dockerfile`: it is outside the build context"
        );
        s.build.context = dir.path().join("missing");
        assert!(
            check_dockerfile(&s)
                .unwrap_err()
                .ends_with("is not a directory")
        );
    }

    /// Removes the images a test made, whatever the test's outcome.
    struct Cleanup(Vec<String>);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let tags = std::mem::take(&mut self.0);
            super::super::clean_up(|docker| async move {
                for tag in tags {
                    let options = RemoveImageOptionsBuilder::new().force(true).build();
                    let _ = docker.remove_image(&tag, Some(options), None).await;
                }
            });
        }
    }

    /// A name no other test run uses, so parallel runs never touch each other's images.
    fn unique_image(what: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!("deploy-test-{what}-{}-{nanos}", std::process::id())
    }

    fn write(dir: &Path, path: &str, content: &str) {
        let full = dir.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }

    #[tokio::test]
    async fn builds_tags_and_sends_only_what_the_context_allows() {
        let docker = crate::docker::connect()
            .await
            .expect("these tests need a Docker engine");
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path();
        write(
            ctx,
            "Dockerfile",
            "FROM debian:bookworm-slim\nARG GREETING\nCOPY . /ctx\nRUN echo \"greeting=$GREETING\" && cd /ctx && find . | sort\n",
        );
        write(
            ctx,
            ".dockerignore",
            "ignored.txt\n!.secrets\n!.secrets/pw\n",
        );
        write(ctx, "ignored.txt", "not sent\n");
        write(ctx, "app/main.py", "print('hi')\n");
        write(ctx, ".secrets/pw", "hunter2\n");

        let image = unique_image("build");
        let mut s = step(ctx, &image, &["web", "worker"]);
        // A value of its own, so the `RUN` step is never a cache hit of an earlier run.
        s.build.args.insert("GREETING".into(), image.clone());
        s.build
            .labels
            .insert("deploy.project".into(), "test".into());
        let _cleanup = Cleanup(s.tags.clone());
        let (reporter, captured) = Reporter::capture();
        let kind = StepKind::Build {
            services: vec!["web".into(), "worker".into()],
        };
        let out = reporter.step(kind.clone());

        let id = build_image(&docker, &s, &BuildSecrets::default(), &out)
            .await
            .expect("the build succeeds");
        assert!(id.starts_with("sha256:"), "{id}");

        let output = captured.output(&kind);
        // BuildKit's lines start with their step's number: `#3 ./app`.
        let listing: Vec<&str> = output
            .iter()
            .map(|l| {
                l.split_once(' ')
                    .map_or(l.as_str(), |(_, rest)| rest)
                    .trim()
            })
            .filter(|l| l.starts_with("./") || *l == ".")
            .collect();
        assert_eq!(
            listing,
            [
                ".",
                "./.dockerignore",
                "./Dockerfile",
                "./app",
                "./app/main.py"
            ],
            "build output: {output:#?}"
        );
        assert!(
            output
                .iter()
                .any(|l| l.ends_with(&format!(" greeting={image}"))),
            "{output:#?}"
        );
        // No output line is a multi-line chunk.
        assert!(captured.events().iter().all(|e| match e {
            Event::Output { line, .. } => !line.contains('\n'),
            _ => true,
        }));

        for tag in &s.tags {
            let inspect = docker.inspect_image(tag).await.unwrap();
            assert_eq!(inspect.id.as_deref(), Some(id.as_str()), "{tag}");
            let labels = inspect.config.unwrap().labels.unwrap();
            assert_eq!(
                labels.get("deploy.project").map(String::as_str),
                Some("test")
            );
        }
    }

    #[tokio::test]
    async fn the_classic_builder_returns_dockers_error_text() {
        let docker = crate::docker::connect()
            .await
            .expect("these tests need a Docker engine");
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "Dockerfile",
            "FROM debian:bookworm-slim\nRUN false\n",
        );
        let image = unique_image("fail");
        let s = step(dir.path(), &image, &["web"]);
        let _cleanup = Cleanup(s.tags.clone());
        let (reporter, captured) = Reporter::capture();
        let kind = StepKind::Build {
            services: vec!["web".into()],
        };
        let out = reporter.step(kind.clone());

        let err = build_with(
            &docker,
            Builder::Classic,
            &s,
            &BuildSecrets::default(),
            &out,
        )
        .await
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            format!(
                "failed to build `{image}` for service `web`: The command '/bin/sh -c false' returned a non-zero code: 1"
            )
        );
        assert!(
            captured
                .output(&kind)
                .iter()
                .any(|l| l.contains("RUN false"))
        );
        assert!(
            docker.inspect_image(&s.tags[0]).await.is_err(),
            "nothing is tagged"
        );
    }

    #[tokio::test]
    async fn buildkit_names_the_failed_step_with_its_last_lines() {
        let docker = crate::docker::connect()
            .await
            .expect("these tests need a Docker engine");
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "Dockerfile",
            "FROM debian:bookworm-slim\nRUN echo about to fail && exit 3\n",
        );
        let image = unique_image("bkfail");
        let s = step(dir.path(), &image, &["web"]);
        let _cleanup = Cleanup(s.tags.clone());
        let (reporter, captured) = Reporter::capture();
        let kind = StepKind::Build {
            services: vec!["web".into()],
        };
        let out = reporter.step(kind.clone());

        let err = build_image(&docker, &s, &BuildSecrets::default(), &out)
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "failed to build `{image}` for service `web`: the step `[2/2] RUN echo about to fail && exit 3` failed: exit code: 3"
            )
        );
        let output = captured.output(&kind);
        assert_eq!(output[0], "builder: BuildKit", "{output:#?}");
        let named = output
            .iter()
            .filter(|l| l.ends_with("RUN echo about to fail && exit 3"))
            .count();
        assert_eq!(named, 1, "the step is named once: {output:#?}");
        assert!(
            output.iter().any(|l| l == "  | about to fail"),
            "its last lines close the output: {output:#?}"
        );
        assert!(docker.inspect_image(&s.tags[0]).await.is_err());
    }

    #[tokio::test]
    async fn tagging_moves_latest_to_an_earlier_build() {
        let docker = crate::docker::connect()
            .await
            .expect("these tests need a Docker engine");
        let image = unique_image("latest");
        let sha_tag = format!("{image}:0123456789abcdef0123456789abcdef01234567");
        let latest = format!("{image}:latest");
        let _cleanup = Cleanup(vec![sha_tag.clone(), latest.clone()]);
        let (repo, tag) = split_tag(&sha_tag);
        let options = TagImageOptionsBuilder::new()
            .repo(repo)
            .tag(tag.unwrap())
            .build();
        docker
            .tag_image("debian:bookworm-slim", Some(options))
            .await
            .unwrap();

        tag_image(&docker, &sha_tag, &latest).await.unwrap();
        let by_sha = docker.inspect_image(&sha_tag).await.unwrap().id;
        assert_eq!(docker.inspect_image(&latest).await.unwrap().id, by_sha);
    }
}
