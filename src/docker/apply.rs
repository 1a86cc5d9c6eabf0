//! Executing a `Plan`: networks, volumes, then each service in dependency order, each new
//! container health-gated; on any failure everything this run changed is put back.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HealthConfig, HostConfig, Mount,
    MountBindOptions, MountType, NetworkConnectRequest, NetworkCreateRequest, NetworkingConfig,
    PortBinding, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateImageOptions, LogsOptions, RemoveContainerOptions, RenameContainerOptions,
    StopContainerOptions,
};
use futures_util::StreamExt;
use futures_util::future::join_all;

use crate::compose::options::Engine;
use crate::compose::spec::{Condition, PullPolicy};
use crate::ids::ServiceName;
use crate::plan::container::{ContainerSpec, MountKind};
use crate::plan::{Action, Ensure, ObservedContainer, Plan, names, stop_timeout};
use crate::report::{Reporter, Source, Step, StepKind};

use super::DockerError;
use super::health::{self, NotReady, Readiness};
use crate::cancel::{Cancel, Canceled};

/// How many of a failed container's last log lines go to the build log.
const LOG_TAIL: usize = 30;

/// How long reading those lines may take: an engine that stops answering does not hold up
/// the failure they explain.
const LOG_TAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one image may take to pull.
const PULL_TIMEOUT: Duration = Duration::from_secs(20 * 60);

#[derive(Clone, Debug)]
pub(crate) struct ApplyOptions {
    /// How long each new container has to prove ready.
    pub(crate) health_timeout: Duration,
    /// An HTTP path that answers when the app is up (`health_path` in deploy.yml), probed on
    /// a container without a healthcheck instead of a bare TCP connect.
    pub(crate) http_path: Option<String>,
    /// A wait for readiness ends early when the deploy is canceled.
    pub(crate) cancel: Cancel,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    #[error(transparent)]
    Canceled(#[from] Canceled),
    #[error("external {kind} `{name}` does not exist; create it first or drop `external: true`")]
    MissingExternal { kind: &'static str, name: String },
    #[error(
        "image `{image}` for service `{service}` is not on this host and could not be pulled: {reason}"
    )]
    MissingImage {
        image: String,
        service: ServiceName,
        reason: String,
    },
    #[error(
        "service `{service}` has `pull_policy: always`, and pulling `{image}` failed: {reason}; nothing was changed"
    )]
    PullFailed {
        image: String,
        service: ServiceName,
        reason: String,
    },
    #[error("service `{service}` did not become ready: {reason}")]
    NotReady {
        service: ServiceName,
        reason: NotReady,
    },
    #[error("service `{service}` waits for `{dependency}`, which did not become ready: {reason}")]
    Dependency {
        service: ServiceName,
        dependency: ServiceName,
        reason: NotReady,
    },
    #[error(
        "services.{service}.{key} needs Docker Engine {needs} or later (API {api}); this engine speaks API {has}, and would ignore it"
    )]
    EngineTooOld {
        service: ServiceName,
        key: &'static str,
        needs: &'static str,
        api: &'static str,
        has: String,
    },
    #[error("post_start of `{container}` failed: {reason}")]
    Hook { container: String, reason: String },
    #[error(transparent)]
    Docker(#[from] DockerError),
}

/// Gets a plan ready to apply: checks what could stop it before any container is touched
/// (external networks and volumes, images), removes what killed deploys left, creates the
/// networks and volumes. The services then come up through `Applying::services`, in one
/// call or in two with the release phase between them.
pub(crate) async fn begin<'a>(
    docker: &'a Docker,
    plan: &Plan,
    reporter: &'a Reporter,
    options: &'a ApplyOptions,
) -> Result<Applying<'a>, ApplyError> {
    // Only pulls wait here, and a pull dropped part-way leaves nothing behind.
    tokio::select! {
        checked = preflight(docker, plan, reporter) => checked?,
        canceled = options.cancel.requested() => return Err(canceled.into()),
    }
    for c in &plan.leftovers {
        reporter.info(format!(
            "removing `{}`, left over by an earlier deploy",
            c.name
        ));
        remove(docker, &c.id, &c.name).await?;
    }
    ensure_networks_and_volumes(docker, plan, reporter).await?;
    Ok(Applying {
        docker,
        reporter,
        options,
        applied: Applied::default(),
    })
}

/// The new containers are up and ready; the replaced ones still exist (stopped, or running
/// beside the new ones).
#[derive(Default)]
pub(crate) struct Applied {
    undo: Vec<Undo>,
    /// Replaced containers, removed by `commit`.
    retire: Vec<ObservedContainer>,
    /// The containers now serving each service, its replicas in order.
    ids: HashMap<ServiceName, Vec<String>>,
}

impl Applied {
    /// The container now serving `service` (its first, when it has replicas).
    pub(crate) fn container(&self, service: &ServiceName) -> Option<&str> {
        self.containers(service).first().map(String::as_str)
    }

    /// Every container now serving `service`.
    pub(crate) fn containers(&self, service: &ServiceName) -> &[String] {
        self.ids.get(service).map_or(&[], Vec::as_slice)
    }

    /// The containers `commit` will remove.
    pub(crate) fn retiring(&self) -> &[ObservedContainer] {
        &self.retire
    }

    /// Removes the replaced containers, the containers of services no longer in the compose
    /// file, and networks no longer declared.
    pub(crate) async fn commit(self, docker: &Docker, plan: &Plan, reporter: &Reporter) {
        for c in &plan.orphans {
            reporter.info(format!("removing `{}`: {}", c.name, plan.why_removed(c)));
        }
        let old: Vec<&ObservedContainer> = self.retire.iter().chain(&plan.orphans).collect();
        if !old.is_empty() {
            // Docker's time, not ours: a step, so the build log says how long it took.
            let step = reporter.step(StepKind::RemoveOld);
            join_all(old.into_iter().map(|c| retire(docker, reporter, c))).await;
            step.finish();
        }
        for n in &plan.orphan_networks {
            reporter.info(format!(
                "removing network `{n}`: no longer in the compose file"
            ));
            if let Err(e) = docker.remove_network(n).await {
                reporter.warn(format!(
                    "could not remove network `{n}`: {}",
                    super::error_chain(&e)
                ));
            }
        }
    }

    fn serving(&mut self, service: &ServiceName, id: &str) {
        self.ids
            .entry(service.clone())
            .or_default()
            .push(id.to_owned());
    }

    /// Puts back what this run changed, newest change first. Best effort: each failure is
    /// reported and the rest still runs.
    pub(crate) async fn rollback(mut self, docker: &Docker, reporter: &Reporter) {
        if self.undo.is_empty() {
            return;
        }
        reporter.warn("putting the previous containers back");
        while let Some(undo) = self.undo.pop() {
            let result = match undo {
                Undo::Remove { id, name } => remove(docker, &id, &name).await,
                Undo::Restore {
                    old,
                    renamed,
                    stopped,
                } => {
                    let mut r = Ok(());
                    if renamed {
                        r = rename(docker, &old.id, &old.name).await;
                    }
                    if r.is_ok() && stopped {
                        r = start(docker, &old.id, &old.name).await;
                        if r.is_ok() {
                            reporter.info(format!("`{}` is running again", old.name));
                        }
                    }
                    r
                }
            };
            if let Err(e) = result {
                reporter.warn(format!("could not undo a step: {e}"));
            }
        }
    }
}

/// Everything that could stop the deploy before a container is touched.
async fn preflight(docker: &Docker, plan: &Plan, reporter: &Reporter) -> Result<(), ApplyError> {
    engine_features(docker, plan)?;
    if let Some(n) = plan
        .networks
        .iter()
        .find(|n| n.action == Ensure::MissingExternal)
    {
        return Err(ApplyError::MissingExternal {
            kind: "network",
            name: n.name.clone(),
        });
    }
    if let Some(v) = plan
        .volumes
        .iter()
        .find(|v| v.action == Ensure::MissingExternal)
    {
        return Err(ApplyError::MissingExternal {
            kind: "volume",
            name: v.name.clone(),
        });
    }
    let mut seen = BTreeSet::new();
    for s in plan.services.iter().filter(|s| !s.built) {
        let image = &s.container.image;
        if !seen.insert(image.clone()) {
            continue;
        }
        let here = super::observe::image_exists(docker, image).await?;
        match s.pull {
            PullPolicy::Always => {}
            _ if here => continue,
            PullPolicy::Never => {
                return Err(ApplyError::MissingImage {
                    image: image.clone(),
                    service: s.service.clone(),
                    reason: "its `pull_policy: never` forbids pulling; load it on the host first (`docker load`, or a build)".to_owned(),
                });
            }
            PullPolicy::Missing | PullPolicy::Build => {}
        }
        let step = reporter.step(StepKind::Pull {
            image: image.clone(),
        });
        pull(
            docker,
            image,
            s.container.options.platform.as_deref(),
            &step,
        )
        .await
        .map_err(|reason| match here {
            true => ApplyError::PullFailed {
                image: image.clone(),
                service: s.service.clone(),
                reason,
            },
            false => ApplyError::MissingImage {
                image: image.clone(),
                service: s.service.clone(),
                reason,
            },
        })?;
        step.finish();
    }
    Ok(())
}

/// Settings an older engine would drop without a word: refused, as compose v2 does.
fn engine_features(docker: &Docker, plan: &Plan) -> Result<(), ApplyError> {
    for s in &plan.services {
        let c = &s.container;
        let start_interval = (c.healthcheck.as_ref()).is_some_and(|h| h.start_interval.is_some());
        if start_interval && super::api_before(docker, 1, 44) {
            return Err(ApplyError::EngineTooOld {
                service: s.service.clone(),
                key: "healthcheck.start_interval",
                needs: "25",
                api: "1.44",
                has: docker.client_version().to_string(),
            });
        }
    }
    Ok(())
}

async fn pull(
    docker: &Docker,
    image: &str,
    platform: Option<&str>,
    step: &Step,
) -> Result<(), String> {
    let options = CreateImageOptions {
        from_image: Some(image.to_owned()),
        platform: platform.unwrap_or_default().to_owned(),
        ..Default::default()
    };
    let mut stream = docker.create_image(Some(options), None, None);
    let pulled = async {
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| super::error_chain(&e))?;
            if let Some(status) = info.status {
                step.output(status);
            }
        }
        Ok(())
    };
    tokio::time::timeout(PULL_TIMEOUT, pulled)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "not pulled within {} minutes",
                PULL_TIMEOUT.as_secs() / 60
            ))
        })
}

/// A network's address pools as the Engine API takes them.
fn ipam(ipam: &crate::compose::spec::Ipam) -> bollard::models::Ipam {
    let config = ipam
        .config
        .iter()
        .map(|p| bollard::models::IpamConfig {
            subnet: p.subnet.map(|s| s.to_string()),
            ip_range: p.ip_range.map(|r| r.to_string()),
            gateway: p.gateway.map(|g| g.to_string()),
            auxiliary_addresses: (!p.aux_addresses.is_empty()).then(|| {
                p.aux_addresses
                    .iter()
                    .map(|(host, ip)| (host.clone(), ip.to_string()))
                    .collect()
            }),
        })
        .collect();
    bollard::models::Ipam {
        driver: ipam.driver.clone(),
        config: Some(config),
        options: (!ipam.options.is_empty()).then(|| ipam.options.clone().into_iter().collect()),
    }
}

async fn ensure_networks_and_volumes(
    docker: &Docker,
    plan: &Plan,
    reporter: &Reporter,
) -> Result<(), DockerError> {
    for n in plan.networks.iter().filter(|n| n.action == Ensure::Create) {
        reporter.info(format!("creating network `{}`", n.name));
        let request = NetworkCreateRequest {
            name: n.name.clone(),
            driver: n.driver.clone(),
            internal: Some(n.internal),
            labels: Some(n.labels.clone().into_iter().collect()),
            options: Some(n.driver_opts.clone().into_iter().collect()),
            attachable: n.attachable.then_some(true),
            enable_ipv6: n.enable_ipv6.then_some(true),
            ipam: n.ipam.as_ref().map(ipam),
            ..Default::default()
        };
        docker
            .create_network(request)
            .await
            .map_err(|e| DockerError::api(&format!("create network `{}`", n.name), e))?;
    }
    for v in plan.volumes.iter().filter(|v| v.action == Ensure::Create) {
        reporter.info(format!("creating volume `{}`", v.name));
        let request = VolumeCreateRequest {
            name: Some(v.name.clone()),
            driver: v.driver.clone(),
            driver_opts: Some(v.driver_opts.clone().into_iter().collect()),
            labels: Some(v.labels.clone().into_iter().collect()),
            ..Default::default()
        };
        docker
            .create_volume(request)
            .await
            .map_err(|e| DockerError::api(&format!("create volume `{}`", v.name), e))?;
    }
    Ok(())
}

/// Something to do if a later step fails.
enum Undo {
    /// A container this run created.
    Remove { id: String, name: String },
    /// A container this run stopped or renamed to make room.
    Restore {
        old: ObservedContainer,
        renamed: bool,
        stopped: bool,
    },
}

/// A plan being applied: the new containers so far, and how to undo them.
pub(crate) struct Applying<'a> {
    docker: &'a Docker,
    reporter: &'a Reporter,
    options: &'a ApplyOptions,
    applied: Applied,
}

impl Applying<'_> {
    /// Every new container is up and proven ready; the old ones still exist. The caller
    /// `commit`s once traffic is on the new ones, or `rollback`s.
    pub(crate) fn finish(self) -> Applied {
        self.applied
    }

    /// Puts back everything this run changed (see `Applied::rollback`).
    pub(crate) async fn rollback(self) {
        self.applied.rollback(self.docker, self.reporter).await;
    }

    /// The container serving `service` now, if it is up (new, or kept).
    pub(crate) fn container(&self, service: &ServiceName) -> Option<&str> {
        self.applied.container(service)
    }

    /// Waits for `service`'s dependencies as its `depends_on` conditions say, as if it were
    /// about to start (the release command's container is).
    pub(crate) async fn wait_for(
        &mut self,
        service: &ServiceName,
        waits: &[(ServiceName, Condition)],
    ) -> Result<(), ApplyError> {
        for (dep, condition) in waits {
            self.wait_dependency(service, dep, *condition).await?;
        }
        Ok(())
    }

    /// Stops the running containers of the services `which` selects, and of services no
    /// longer in the compose file, so that nothing writes to a database being restored. A
    /// rollback starts them again; `start_kept` starts the ones the plan keeps.
    pub(crate) async fn stop_services(
        &mut self,
        plan: &Plan,
        which: impl Fn(&ServiceName) -> bool,
    ) -> Result<(), ApplyError> {
        let current = plan
            .services
            .iter()
            .filter(|s| which(&s.service))
            .filter_map(|s| match &s.action {
                Action::Keep(c) | Action::Replace(c) => Some((c, stop_timeout(&s.container))),
                Action::Create => None,
            });
        let orphans = plan.orphans.iter().map(|c| (c, Duration::from_secs(10)));
        for (c, timeout) in current.chain(orphans).filter(|(c, _)| c.running) {
            self.reporter.info(format!("stopping `{}`", c.name));
            super::hooks::pre_stop(self.docker, self.reporter, &c.id, &c.name).await;
            stop(self.docker, &c.id, &c.name, timeout).await?;
            self.applied.undo.push(Undo::Restore {
                old: c.clone(),
                renamed: false,
                stopped: true,
            });
        }
        Ok(())
    }

    /// Starts again what `stop_services` stopped of the services the plan keeps as they are.
    pub(crate) async fn start_kept(
        &mut self,
        plan: &Plan,
        which: impl Fn(&ServiceName) -> bool,
    ) -> Result<(), ApplyError> {
        for step in plan.services.iter().filter(|s| which(&s.service)) {
            if let Action::Keep(c) = &step.action
                && c.running
            {
                start(self.docker, &c.id, &c.name).await?;
                self.gate(&step.service, &c.id, false).await?;
                self.reporter.info(format!("`{}` is running again", c.name));
            }
        }
        Ok(())
    }

    /// Brings up the plan's services that `which` selects, in the plan's order: a selected
    /// service's dependencies must be selected too, or already up. On error the caller
    /// rolls back.
    pub(crate) async fn services(
        &mut self,
        plan: &Plan,
        which: impl Fn(&ServiceName) -> bool,
    ) -> Result<(), ApplyError> {
        // A service others wait on with `service_completed_successfully` is a one-shot job:
        // it is ready when it exits 0, not while it runs.
        let one_shots: BTreeSet<&ServiceName> = plan
            .services
            .iter()
            .flat_map(|s| &s.waits)
            .filter(|(_, c)| *c == Condition::ServiceCompletedSuccessfully)
            .map(|(d, _)| d)
            .collect();

        for step in plan.services.iter().filter(|s| which(&s.service)) {
            for (dep, condition) in &step.waits {
                self.wait_dependency(&step.service, dep, *condition).await?;
            }
            let one_shot = one_shots.contains(&step.service);
            match &step.action {
                Action::Keep(c) => {
                    self.applied.serving(&step.service, &c.id);
                    if !c.running {
                        let s = self.reporter.step(StepKind::Start {
                            service: step.label(),
                        });
                        start(self.docker, &c.id, &c.name).await?;
                        self.gate(&step.service, &c.id, one_shot).await?;
                        s.finish();
                    } else {
                        self.reporter.info(format!(
                            "{}: unchanged, `{}` keeps running",
                            step.label(),
                            c.name
                        ));
                    }
                }
                Action::Create => {
                    let s = self.reporter.step(StepKind::Start {
                        service: step.label(),
                    });
                    let id = self.create_and_start(&step.container, &[]).await?;
                    self.gate(&step.service, &id, one_shot).await?;
                    s.finish();
                }
                Action::Replace(old) => {
                    let s = self.reporter.step(StepKind::Replace {
                        service: step.label(),
                    });
                    self.replace(step, old, one_shot).await?;
                    s.finish();
                }
            }
        }
        Ok(())
    }

    async fn replace(
        &mut self,
        step: &crate::plan::ServiceStep,
        old: &ObservedContainer,
        one_shot: bool,
    ) -> Result<(), ApplyError> {
        let spec = &step.container;
        let clash = old.name == spec.name;
        let start_first = step.start_first && old.running;
        let stopped = old.running && !start_first;
        if stopped {
            self.reporter.info(format!("stopping `{}`", old.name));
            super::hooks::pre_stop(self.docker, self.reporter, &old.id, &old.name).await;
            stop(self.docker, &old.id, &old.name, stop_timeout(spec)).await?;
        }
        if clash {
            rename(self.docker, &old.id, &names::parked(&old.name)).await?;
        }
        self.applied.undo.push(Undo::Restore {
            old: old.clone(),
            renamed: clash,
            stopped,
        });
        self.applied.retire.push(old.clone());

        let keep = anonymous_volumes(self.docker, &old.id, spec).await?;
        let id = self.create_and_start(spec, &keep).await?;
        self.gate(&step.service, &id, one_shot).await
    }

    async fn create_and_start(
        &mut self,
        spec: &ContainerSpec,
        keep: &[Mount],
    ) -> Result<String, ApplyError> {
        let id = create(self.docker, spec, keep).await?;
        self.applied.undo.push(Undo::Remove {
            id: id.clone(),
            name: spec.name.clone(),
        });
        start(self.docker, &id, &spec.name).await?;
        if !spec.post_start.is_empty() {
            let step = self.reporter.step(StepKind::Hook {
                what: format!("post_start of `{}`", spec.name),
            });
            for hook in &spec.post_start {
                // The container is this deploy's own, removed with the rest on a cancel.
                let ran = tokio::select! {
                    ran = super::hooks::run(self.docker, &id, hook, &step) => ran,
                    canceled = self.options.cancel.requested() => return Err(canceled.into()),
                };
                ran.map_err(|reason| ApplyError::Hook {
                    container: spec.name.clone(),
                    reason,
                })?;
            }
            step.finish();
        }
        if let Some(service) = spec
            .labels
            .get(names::LABEL_SERVICE)
            .and_then(|s| ServiceName::parse(s).ok())
        {
            self.applied.serving(&service, &id);
        }
        Ok(id)
    }

    /// Waits until a container just started is ready; on failure its last log lines go to
    /// the build log.
    async fn gate(
        &mut self,
        service: &ServiceName,
        id: &str,
        one_shot: bool,
    ) -> Result<(), ApplyError> {
        let want = if one_shot {
            Readiness::Completed
        } else {
            let inspect = self.docker.inspect_container(id, None).await.map_err(|e| {
                DockerError::api(&format!("inspect the container of `{service}`"), e)
            })?;
            health::readiness(&inspect, self.options.http_path.as_deref())
        };
        let waited = tokio::select! {
            waited = health::wait(self.docker, id, &want, self.options.health_timeout) => waited,
            canceled = self.options.cancel.requested() => return Err(canceled.into()),
        };
        match waited {
            Ok(()) => Ok(()),
            Err(reason) => {
                self.log_tail(service, id).await;
                Err(ApplyError::NotReady {
                    service: service.clone(),
                    reason,
                })
            }
        }
    }

    async fn wait_dependency(
        &mut self,
        service: &ServiceName,
        dependency: &ServiceName,
        condition: Condition,
    ) -> Result<(), ApplyError> {
        // Every container of the dependency must meet the condition, as compose waits.
        let timeout = self.options.health_timeout;
        for id in self.applied.containers(dependency).to_vec() {
            let waited = async {
                match condition {
                    Condition::ServiceStarted => Ok(()),
                    Condition::ServiceHealthy => {
                        health::wait_healthy(self.docker, &id, timeout).await
                    }
                    Condition::ServiceCompletedSuccessfully => {
                        health::wait(self.docker, &id, &Readiness::Completed, timeout).await
                    }
                }
            };
            let waited = tokio::select! {
                waited = waited => waited,
                canceled = self.options.cancel.requested() => return Err(canceled.into()),
            };
            waited.map_err(|reason| ApplyError::Dependency {
                service: service.clone(),
                dependency: dependency.clone(),
                reason,
            })?;
        }
        Ok(())
    }

    async fn log_tail(&self, service: &ServiceName, id: &str) {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: LOG_TAIL.to_string(),
            ..Default::default()
        };
        let mut logs = self.docker.logs(id, Some(options));
        let source = Source::Logs {
            service: service.to_string(),
        };
        self.reporter.warn(format!(
            "last {LOG_TAIL} log lines of the new `{service}` container:"
        ));
        let tail = async {
            while let Some(Ok(chunk)) = logs.next().await {
                for line in chunk.to_string().lines() {
                    self.reporter.output(source.clone(), line);
                }
            }
        };
        if tokio::time::timeout(LOG_TAIL_TIMEOUT, tail).await.is_err() {
            self.reporter
                .warn("the engine did not give the log lines in time");
        }
    }
}

/// Stops and removes a replaced container; a failure is only a warning, since the new
/// revision already serves.
async fn retire(docker: &Docker, reporter: &Reporter, old: &ObservedContainer) {
    super::hooks::pre_stop(docker, reporter, &old.id, &old.name).await;
    if let Err(e) = remove(docker, &old.id, &old.name).await {
        reporter.warn(format!("could not remove `{}`: {e}", old.name));
    }
}

/// Anonymous volumes of the old container whose target the new one does not mount
/// otherwise: carried over, so data in a `VOLUME` of the image survives a replacement, as
/// docker-compose does.
async fn anonymous_volumes(
    docker: &Docker,
    old_id: &str,
    spec: &ContainerSpec,
) -> Result<Vec<Mount>, DockerError> {
    let inspect = docker
        .inspect_container(old_id, None)
        .await
        .map_err(|e| DockerError::api(&format!("inspect container `{old_id}`"), e))?;
    let configured: BTreeSet<&str> = spec.mounts.iter().map(|m| m.target.as_str()).collect();
    Ok(inspect
        .mounts
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.typ.as_deref() == Some("volume"))
        .filter(|m| m.name.as_deref().is_some_and(is_anonymous))
        .filter(|m| {
            m.destination
                .as_deref()
                .is_some_and(|d| !configured.contains(d))
        })
        .map(|m| Mount {
            typ: Some(MountType::VOLUME),
            source: m.name,
            target: m.destination,
            read_only: Some(!m.rw.unwrap_or(true)),
            ..Default::default()
        })
        .collect())
}

fn is_anonymous(volume: &str) -> bool {
    volume.len() == 64 && volume.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(crate) async fn create(
    docker: &Docker,
    spec: &ContainerSpec,
    keep: &[Mount],
) -> Result<String, DockerError> {
    let (body, extra_networks) = create_body(spec, keep);
    // Posted without bollard: its create body has lost fields that API 1.41 reads.
    let mut path = format!("/containers/create?name={}", spec.name);
    if let Some(platform) = &spec.options.platform {
        // `os/arch[/variant]`, of lower-case words only (`compose/options.rs`).
        path += &format!("&platform={}", platform.replace('/', "%2F"));
    }
    let created = super::raw::post_json(docker, &path, &body)
        .await
        .map_err(|why| DockerError::Raw {
            action: format!("create container `{}`", spec.name),
            why,
        })?;
    let id = created
        .get("Id")
        .and_then(|id| id.as_str())
        .ok_or_else(|| DockerError::Raw {
            action: format!("create container `{}`", spec.name),
            why: format!("the engine's answer has no `Id`: {created}"),
        })?
        .to_owned();
    // Engines before API 1.44 accept one network at creation; the rest are connected
    // before the container starts.
    for (network, endpoint) in extra_networks {
        let request = NetworkConnectRequest {
            container: id.clone(),
            endpoint_config: Some(endpoint),
        };
        docker
            .connect_network(&network, request)
            .await
            .map_err(|e| {
                DockerError::api(
                    &format!("connect `{}` to network `{network}`", spec.name),
                    e,
                )
            })?;
    }
    Ok(id)
}

/// The Engine API body for a container, and the networks to connect after creation.
fn create_body(
    spec: &ContainerSpec,
    keep: &[Mount],
) -> (serde_json::Value, Vec<(String, EndpointSettings)>) {
    let mut endpoints = endpoints(spec).into_iter();
    let first = endpoints.next();
    let rest: Vec<_> = endpoints.collect();
    let host_config = HostConfig {
        port_bindings: Some(port_bindings(spec)),
        mounts: Some(mounts(spec, keep)),
        restart_policy: Some(RestartPolicy {
            name: Some(match spec.restart.name {
                "no" => RestartPolicyNameEnum::NO,
                "always" => RestartPolicyNameEnum::ALWAYS,
                "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
                _ => RestartPolicyNameEnum::UNLESS_STOPPED,
            }),
            maximum_retry_count: spec.restart.max_retries.map(i64::from),
        }),
        // The first network, unless `network_mode` (a setting below) says otherwise.
        network_mode: first.as_ref().map(|(n, _)| n.clone()),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        env: Some(spec.env.iter().chain(&spec.deploy_env).cloned().collect()),
        labels: Some(spec.labels.clone().into_iter().collect()),
        user: spec.user.clone(),
        working_dir: spec.working_dir.clone(),
        exposed_ports: Some(spec.exposed.clone()),
        healthcheck: spec.healthcheck.as_ref().map(|h| HealthConfig {
            test: (!h.test.is_empty()).then(|| h.test.clone()),
            interval: h.interval.map(nanos),
            timeout: h.timeout.map(nanos),
            retries: h.retries.map(i64::from),
            start_period: h.start_period.map(nanos),
            start_interval: h.start_interval.map(nanos),
        }),
        host_config: Some(host_config),
        networking_config: first.map(|(n, e)| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(n, e)])),
        }),
        ..Default::default()
    };
    (with_settings(body, spec.settings()), rest)
}

fn port_bindings(spec: &ContainerSpec) -> HashMap<String, Option<Vec<PortBinding>>> {
    let mut out: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &spec.ports {
        out.entry(p.container_port.clone())
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: p.host_ip.clone(),
                host_port: p.host_ports(),
            });
    }
    out
}

/// The plan's mounts, then the anonymous volumes carried over from a predecessor (`keep`).
fn mounts(spec: &ContainerSpec, keep: &[Mount]) -> Vec<Mount> {
    spec.mounts
        .iter()
        .map(|m| Mount {
            typ: Some(match m.kind {
                MountKind::Bind => MountType::BIND,
                MountKind::Volume => MountType::VOLUME,
                MountKind::Tmpfs => MountType::TMPFS,
            }),
            source: (!m.source.is_empty()).then(|| m.source.clone()),
            target: Some(m.target.clone()),
            read_only: Some(m.read_only),
            bind_options: m.propagation.as_deref().map(|p| MountBindOptions {
                propagation: p.parse().ok(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .chain(keep.iter().cloned())
        .collect()
}

fn endpoints(spec: &ContainerSpec) -> Vec<(String, EndpointSettings)> {
    spec.networks
        .iter()
        .map(|n| {
            let settings = EndpointSettings {
                aliases: Some(n.aliases.clone()),
                ipam_config: n.ipv4_address.as_ref().map(|ip| EndpointIpamConfig {
                    ipv4_address: Some(ip.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            (n.network.clone(), settings)
        })
        .collect()
}

/// The body with the settings of `compose/options.rs` set where each entry says.
fn with_settings(body: ContainerCreateBody, settings: Engine) -> serde_json::Value {
    let mut json = serde_json::to_value(&body).expect("a create body always serializes");
    for (path, value) in settings {
        let mut at = &mut json;
        let mut keys = path.split('.').peekable();
        while let Some(key) = keys.next() {
            let object = at
                .as_object_mut()
                .expect("the create body is made of objects");
            if keys.peek().is_none() {
                object.insert(key.to_owned(), value);
                break;
            }
            at = object
                .entry(key)
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
        }
    }
    json
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

pub(crate) async fn start(docker: &Docker, id: &str, name: &str) -> Result<(), DockerError> {
    docker
        .start_container(id, None)
        .await
        .map_err(|e| DockerError::api(&format!("start container `{name}`"), e))
}

/// Restarts a container (autoheal's remedy for an unhealthy one).
pub(crate) async fn restart(docker: &Docker, id: &str, name: &str) -> Result<(), DockerError> {
    docker
        .restart_container(
            id,
            None::<bollard::query_parameters::RestartContainerOptions>,
        )
        .await
        .map_err(|e| DockerError::api(&format!("restart container `{name}`"), e))
}

pub(crate) async fn stop(
    docker: &Docker,
    id: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), DockerError> {
    let options = StopContainerOptions {
        t: Some(timeout.as_secs() as i32),
        signal: None,
    };
    match docker.stop_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        // 304: already stopped.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => Ok(()),
        Err(e) => Err(DockerError::api(&format!("stop container `{name}`"), e)),
    }
}

pub(crate) async fn rename(docker: &Docker, id: &str, to: &str) -> Result<(), DockerError> {
    docker
        .rename_container(
            id,
            RenameContainerOptions {
                name: to.to_owned(),
            },
        )
        .await
        .map_err(|e| DockerError::api(&format!("rename container to `{to}`"), e))
}

/// Removes a container, never its volumes: data outlives every container.
pub(crate) async fn remove(docker: &Docker, id: &str, name: &str) -> Result<(), DockerError> {
    let options = RemoveContainerOptions {
        force: true,
        v: false,
        link: false,
    };
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(DockerError::api(&format!("remove container `{name}`"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A setting whose path is misspelt would be ignored by the engine without a word: every
    /// setting of every fixture must land on a field of the create body, as bollard's model
    /// knows it, or on one of the API 1.41 fields that model has lost.
    #[test]
    fn every_setting_reaches_the_create_body() {
        use crate::compose::tests;
        const LOST_BY_BOLLARD: &[&str] = &["MacAddress"];
        let mut seen = 0;
        for case in tests::cases() {
            let Some(spec) = tests::load_case(&case, std::path::Path::new("/srv/app/code")) else {
                continue;
            };
            for service in spec.services.values() {
                let sent = with_settings(ContainerCreateBody::default(), service.options.engine());
                let typed: ContainerCreateBody = serde_json::from_value(sent).unwrap();
                let known = serde_json::to_value(&typed).unwrap();
                for (path, value) in service.options.engine() {
                    if LOST_BY_BOLLARD.contains(&path) {
                        continue;
                    }
                    let found = path
                        .split('.')
                        .try_fold(&known, |at, key| at.get(key))
                        .unwrap_or_else(|| panic!("`{path}` is not in the create body ({case:?})"));
                    assert_eq!(found, &value, "{path} in {case:?}");
                    seen += 1;
                }
            }
        }
        assert!(seen > 40, "too few settings seen: {seen}");
    }

    #[test]
    fn mac_address_is_sent_at_the_top_of_the_body() {
        let options = crate::compose::options::Options {
            mac_address: Some("02:42:ac:11:00:02".into()),
            ..Default::default()
        };
        let sent = with_settings(ContainerCreateBody::default(), options.engine());
        assert_eq!(sent["MacAddress"], "02:42:ac:11:00:02");
    }

    #[test]
    fn anonymous_volume_names() {
        assert!(is_anonymous(&"a1".repeat(32)));
        assert!(!is_anonymous("shop_pgdata"));
    }
}
