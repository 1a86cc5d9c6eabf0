//! Pure planning: `Spec` + observed state + revision → `Plan`. No I/O.
//!
//! The plan is plain data: `deploy plan` prints it, `docker::apply` executes it.

pub(crate) mod container;
#[cfg(test)]
mod golden;
pub(crate) mod names;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::compose::Spec;
use crate::compose::spec::{Build, Condition, Ipam, Network, PullPolicy, UpdateOrder};
use crate::ids::{ProjectName, Revision, ServiceName};
use crate::report::PlanRow;

pub(crate) use container::ContainerSpec;

/// One image to build from the pushed tree. Services that share an image share one step.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BuildStep {
    /// The services that run this image (for messages: `build web`).
    pub(crate) services: Vec<ServiceName>,
    /// The repository part: `bpt-server`, or `<project>-<service>` when `image:` is absent.
    pub(crate) image: String,
    /// Every tag to apply: `<image>:<full sha>` first, then `<image>:latest`.
    pub(crate) tags: Vec<String>,
    /// What to build, as the compose file says, its labels plus `deploy.project`.
    pub(crate) build: Build,
}

/// An image that exists already and only needs more tags.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Reuse {
    pub(crate) from: String,
    pub(crate) tags: Vec<String>,
}

/// What Docker says exists for this project, read back through labels.
#[derive(Clone, Debug, Default)]
pub(crate) struct Observed {
    pub(crate) containers: Vec<ObservedContainer>,
    /// Names of networks that exist (ours or external).
    pub(crate) networks: BTreeSet<String>,
    /// Names of the networks labelled as this project's.
    pub(crate) project_networks: BTreeSet<String>,
    /// The subnets of each network that exists, by name.
    pub(crate) subnets: BTreeMap<String, BTreeSet<String>>,
    /// Names of volumes that exist (ours or external).
    pub(crate) volumes: BTreeSet<String>,
    /// Which of the tags the plan asked about already exist.
    pub(crate) images: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ObservedContainer {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) service: Option<ServiceName>,
    pub(crate) revision: Option<String>,
    pub(crate) config_hash: Option<String>,
    pub(crate) running: bool,
    /// Which of its service's containers it is (`names::LABEL_REPLICA`), from 1.
    pub(crate) replica: u32,
}

/// Knobs that come from the host, not the compose file.
#[derive(Clone, Debug)]
pub(crate) struct PlanOptions {
    /// Where the pipeline writes `content:` configs, to be bind-mounted.
    pub(crate) config_dir: PathBuf,
    pub(crate) publish: container::Publish,
    /// Per built service, a key of everything its image is built from (the context's tree,
    /// Dockerfile, args): equal keys mean an identical image.
    pub(crate) build_keys: BTreeMap<ServiceName, String>,
    /// `hostnames:` and `route:` from deploy.yml; `service` may be unset (the plan picks
    /// the only built service).
    pub(crate) hosts: Option<container::HostRoute>,
}

#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) project: ProjectName,
    pub(crate) revision: Revision,
    pub(crate) networks: Vec<NetworkStep>,
    pub(crate) volumes: Vec<VolumeStep>,
    pub(crate) builds: Vec<BuildStep>,
    /// Images built earlier (for this revision, or from an identical tree), reused.
    pub(crate) reused: Vec<Reuse>,
    /// In dependency order: every service comes after what it depends on, and a service's
    /// replicas in their order.
    pub(crate) services: Vec<ServiceStep>,
    /// How many containers each service runs.
    pub(crate) replicas: BTreeMap<ServiceName, u32>,
    /// Containers of this project whose service left the compose file, or runs fewer
    /// replicas now; removed after success.
    pub(crate) orphans: Vec<ObservedContainer>,
    /// This project's networks the compose file no longer declares (or a killed deploy
    /// left); removed after success.
    pub(crate) orphan_networks: Vec<String>,
    /// Containers a killed or failed deploy left behind (stopped, parked, or a second one for
    /// a service); removed before anything starts.
    pub(crate) leftovers: Vec<ObservedContainer>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NetworkStep {
    pub(crate) name: String,
    pub(crate) action: Ensure,
    pub(crate) internal: bool,
    pub(crate) driver: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) driver_opts: BTreeMap<String, String>,
    pub(crate) attachable: bool,
    pub(crate) enable_ipv6: bool,
    pub(crate) ipam: Option<Ipam>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct VolumeStep {
    pub(crate) name: String,
    pub(crate) action: Ensure,
    pub(crate) driver: Option<String>,
    pub(crate) driver_opts: BTreeMap<String, String>,
    pub(crate) labels: BTreeMap<String, String>,
}

/// What to do about a network or volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ensure {
    Create,
    Exists,
    /// External and absent: the deploy cannot go on.
    MissingExternal,
}

#[derive(Clone, Debug)]
pub(crate) struct ServiceStep {
    pub(crate) service: ServiceName,
    /// Which of the service's containers this is, from 1.
    pub(crate) replica: u32,
    pub(crate) container: ContainerSpec,
    pub(crate) action: Action,
    /// Conditions on other services that must hold before this one starts.
    pub(crate) waits: Vec<(ServiceName, Condition)>,
    /// Whether the service runs an image built from the repo.
    pub(crate) built: bool,
    /// When the image of a service that is not built is pulled.
    pub(crate) pull: PullPolicy,
    /// Whether a replacement starts and proves ready while its predecessor still runs.
    pub(crate) start_first: bool,
}

impl ServiceStep {
    /// The service, and which replica when it is not the first: `web`, `web #2`.
    pub(crate) fn label(&self) -> String {
        match self.replica {
            0 | 1 => self.service.to_string(),
            n => format!("{} #{n}", self.service),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Action {
    /// No container yet.
    Create,
    /// A container with another configuration runs; start the new one, then retire it.
    Replace(ObservedContainer),
    /// The container already has this exact configuration; it is started if it is stopped.
    Keep(ObservedContainer),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PlanError {
    #[error("deploy.yml: {0}")]
    Route(String),
    #[error("services.{0}: it has neither `image` nor `build`")]
    NoImage(ServiceName),
    #[error(
        "networks.{key}.ipam: network `{name}` exists with the subnets {has}, and the file now asks for {wanted}; a network keeps its subnets: run `deploy down` (which keeps volumes), then deploy again"
    )]
    SubnetsChanged {
        key: String,
        name: String,
        has: String,
        wanted: String,
    },
    #[error(
        "services.{service}: its {replicas} replicas cannot all bind host port {port}, only one container can; {hint}"
    )]
    FixedPortReplicas {
        service: ServiceName,
        replicas: u32,
        port: String,
        hint: &'static str,
    },
}

/// The service `hostnames` route to: the one `route.service` names, or else the only
/// service built from the repo; and its port: `route.port`, or else the first the compose
/// file lists for it (`ports`, then `expose`), or else (`None`) the image's lowest.
fn route_service(
    spec: &Spec,
    hosts: &container::HostRoute,
) -> Result<container::HostRoute, PlanError> {
    let service = match &hosts.service {
        Some(name) => {
            if !spec.services.contains_key(name) {
                return Err(PlanError::Route(format!(
                    "`route.service` names `{name}`, which the compose file does not have"
                )));
            }
            name.clone()
        }
        None => {
            let built: Vec<&ServiceName> = (spec.services.iter())
                .filter(|(_, s)| s.build.is_some())
                .map(|(name, _)| name)
                .collect();
            match built.as_slice() {
                [one] => (*one).clone(),
                [] => {
                    return Err(PlanError::Route(
                        "no service is built from the repo; name the one that answers `hostnames` in `route.service`".to_owned(),
                    ));
                }
                many => {
                    let names: Vec<String> = many.iter().map(|n| format!("`{n}`")).collect();
                    return Err(PlanError::Route(format!(
                        "{} are built from the repo; name the one that answers `hostnames` in `route.service`",
                        names.join(", ")
                    )));
                }
            }
        }
    };
    let svc = &spec.services[&service];
    let listed = || {
        (svc.ports.iter().map(|p| p.target))
            .chain(
                svc.expose
                    .iter()
                    .filter_map(|e| e.split('/').next()?.split('-').next()?.parse().ok()),
            )
            .next()
    };
    Ok(container::HostRoute {
        service: Some(service),
        port: hosts.port.or_else(listed),
        ..hosts.clone()
    })
}

/// Builds the plan. Pure: everything about the world comes in through `observed`.
pub(crate) fn plan(
    spec: &Spec,
    project: &ProjectName,
    revision: &Revision,
    observed: &Observed,
    options: &PlanOptions,
) -> Result<Plan, PlanError> {
    let networks: Vec<NetworkStep> = spec
        .networks
        .iter()
        .map(|(key, n)| {
            let name = if n.external {
                n.name.clone().unwrap_or_else(|| key.clone())
            } else {
                names::network(project, key, n.name.as_deref())
            };
            let mut labels = n.labels.clone();
            if !n.external {
                labels.extend(names::labels(project, None, revision));
            }
            let action = ensure(observed.networks.contains(&name), n.external);
            if action == Ensure::Exists && !n.external {
                check_subnets(key, &name, n, observed)?;
            }
            Ok(NetworkStep {
                action,
                name,
                internal: n.internal,
                driver: n.driver.clone(),
                labels,
                driver_opts: n.driver_opts.clone(),
                attachable: n.attachable,
                enable_ipv6: n.enable_ipv6,
                ipam: n.ipam.clone(),
            })
        })
        .collect::<Result<_, PlanError>>()?;

    let volumes = spec
        .volumes
        .iter()
        .map(|(key, v)| {
            let name = if v.external {
                v.name.clone().unwrap_or_else(|| key.clone())
            } else {
                names::volume(project, key, v.name.as_deref())
            };
            let mut labels = v.labels.clone();
            if !v.external {
                labels.extend(names::labels(project, None, revision));
            }
            VolumeStep {
                action: ensure(observed.volumes.contains(&name), v.external),
                name,
                driver: v.driver.clone(),
                driver_opts: v.driver_opts.clone(),
                labels,
            }
        })
        .collect();

    let (builds, reused) = builds(spec, project, revision, observed, &options.build_keys);

    let hosts = match &options.hosts {
        Some(hosts) => Some(route_service(spec, hosts)?),
        None => None,
    };
    let ctx = container::Context {
        spec,
        project,
        revision,
        config_dir: &options.config_dir,
        publish: options.publish,
        build_keys: &options.build_keys,
        hosts: hosts.as_ref(),
    };
    let order = dependency_order(spec);
    let mut services = Vec::new();
    let mut current_ids = BTreeSet::new();
    // The container each planned service will have, and whether it is a new one.
    let mut chosen: BTreeMap<ServiceName, (String, bool)> = BTreeMap::new();
    for name in order {
        let svc = &spec.services[&name];
        let built = svc.build.is_some();
        let first =
            container::spec(&ctx, &name, svc).ok_or_else(|| PlanError::NoImage(name.clone()))?;
        let replicas = svc.replicas();
        if let Some(port) = (first.ports.iter())
            .find(|p| p.is_fixed())
            .filter(|_| replicas > 1)
        {
            return Err(PlanError::FixedPortReplicas {
                service: name,
                replicas,
                port: port.host_ports().unwrap_or_default(),
                hint: match (built, options.publish) {
                    (true, container::Publish::Direct) => {
                        "run `deploy serve`: its proxy owns the port and balances across the replicas"
                    }
                    _ => {
                        "the proxy of `deploy serve` balances services built from the repo; publish a range (`8000-8009:80`) or no host port"
                    }
                },
            });
        }
        let start_first = start_first(spec, &name, &first);
        for replica in 1..=replicas {
            let mut container = first.replica(replica);
            let joins_new = container.join(&chosen);
            let current = live_container(&observed.containers, &name, replica);
            let action = match current {
                None => Action::Create,
                Some(c)
                    if !joins_new
                        && c.config_hash
                            .as_deref()
                            .is_some_and(|h| container.same_config(h)) =>
                {
                    Action::Keep(c.clone())
                }
                Some(c) => Action::Replace(c.clone()),
            };
            // Services that join this one (`service:NAME`) join its first container.
            if replica == 1 {
                let kept = match &action {
                    Action::Keep(c) => (c.name.clone(), false),
                    _ => (container.name.clone(), true),
                };
                chosen.insert(name.clone(), kept);
            }
            if let Some(c) = current {
                current_ids.insert(c.id.clone());
            }
            let waits = svc
                .depends_on
                .iter()
                .filter(|(dep, _)| spec.services.contains_key(*dep))
                .map(|(dep, d)| (dep.clone(), d.condition))
                .collect();
            services.push(ServiceStep {
                service: name.clone(),
                replica,
                container,
                action,
                waits,
                built,
                pull: svc.pull_policy,
                start_first,
            });
        }
    }
    let replicas: BTreeMap<ServiceName, u32> = (spec.services.iter())
        .map(|(name, s)| (name.clone(), s.replicas()))
        .collect();

    // A container no step took is an orphan if its service is gone or runs fewer replicas
    // now, else a leftover (a second container for a replica, parked or stopped).
    let (orphans, leftovers) = observed
        .containers
        .iter()
        .filter(|c| !current_ids.contains(&c.id))
        .cloned()
        .partition(|c| {
            c.service
                .as_ref()
                .is_none_or(|s| replicas.get(s).is_none_or(|n| c.replica > *n))
        });

    let orphan_networks = observed
        .project_networks
        .iter()
        .filter(|n| !networks.iter().any(|s: &NetworkStep| &s.name == *n))
        .cloned()
        .collect();

    Ok(Plan {
        orphan_networks,
        project: project.clone(),
        revision: revision.clone(),
        networks,
        volumes,
        builds,
        reused,
        services,
        replicas,
        orphans,
        leftovers,
    })
}

/// Whether a service's replacement starts beside its predecessor: `update_config.order`
/// decides, and without it only an app built from the repo does. Never with a fixed host
/// port, IP or MAC address, which two containers cannot share, nor for a database: two
/// servers must never run on one data directory.
fn start_first(spec: &Spec, name: &ServiceName, container: &ContainerSpec) -> bool {
    let svc = &spec.services[name];
    let wanted = match svc.update_order {
        Some(order) => order == UpdateOrder::StartFirst,
        None => svc.build.is_some(),
    };
    // A fixed port, IP or MAC address cannot be held by two containers at once.
    let fixed = container.ports.iter().any(|p| p.is_fixed())
        || container.networks.iter().any(|n| n.ipv4_address.is_some())
        || svc.options.mac_address.is_some();
    wanted && !fixed && !spec.databases().contains(name)
}

/// A network is created once, with the subnets it had then: one whose `ipam` now asks for
/// others would quietly keep the old ones, so the plan stops and says how to change them.
fn check_subnets(
    key: &str,
    name: &str,
    declared: &Network,
    observed: &Observed,
) -> Result<(), PlanError> {
    let Some(ipam) = &declared.ipam else {
        return Ok(());
    };
    let wanted: BTreeSet<String> = ipam
        .config
        .iter()
        .filter_map(|p| p.subnet.map(|s| s.to_string()))
        .collect();
    let Some(has) = observed.subnets.get(name) else {
        return Ok(());
    };
    if wanted.is_empty() || &wanted == has {
        return Ok(());
    }
    Err(PlanError::SubnetsChanged {
        key: key.to_owned(),
        name: name.to_owned(),
        has: has.iter().cloned().collect::<Vec<_>>().join(", "),
        wanted: wanted.into_iter().collect::<Vec<_>>().join(", "),
    })
}

fn ensure(exists: bool, external: bool) -> Ensure {
    match (exists, external) {
        (true, _) => Ensure::Exists,
        (false, false) => Ensure::Create,
        (false, true) => Ensure::MissingExternal,
    }
}

/// The container that counts as a service's current one: a running one (not parked by an
/// interrupted swap, if there is a choice), else a stopped one to start again. Docker lists
/// newest first, so ties go to the newest.
fn live_container<'a>(
    containers: &'a [ObservedContainer],
    service: &ServiceName,
    replica: u32,
) -> Option<&'a ObservedContainer> {
    let mine = || {
        containers
            .iter()
            .filter(move |c| c.service.as_ref() == Some(service) && c.replica == replica)
    };
    let parked = |c: &&ObservedContainer| c.name.ends_with(names::PARKED_SUFFIX);
    mine()
        .find(|c| c.running && !parked(c))
        .or_else(|| mine().find(|c| c.running))
        .or_else(|| mine().find(|c| !parked(c)))
}

fn builds(
    spec: &Spec,
    project: &ProjectName,
    revision: &Revision,
    observed: &Observed,
    keys: &BTreeMap<ServiceName, String>,
) -> (Vec<BuildStep>, Vec<Reuse>) {
    let mut steps: Vec<BuildStep> = Vec::new();
    let mut reused: Vec<Reuse> = Vec::new();
    for (name, svc) in &spec.services {
        let Some(build) = &svc.build else { continue };
        let repo = names::image_repo(project, name, svc.image.as_deref());
        if let Some(step) = steps.iter_mut().find(|s| s.image == repo) {
            step.services.push(name.clone());
            continue;
        }
        if reused.iter().any(|r| names::split_tag(&r.from).0 == repo) {
            continue;
        }
        let tag = names::revision_tag(&repo, revision);
        let latest = names::latest_tag(&repo);
        let key_tag = keys.get(name).map(|k| names::build_tag(&repo, k));
        // An image built earlier for this revision is reused: rollback in seconds. One built
        // from an identical tree is too: a push that changes nothing else builds nothing.
        if observed.images.contains(&tag) {
            reused.push(Reuse {
                from: tag,
                tags: vec![latest],
            });
            continue;
        }
        if let Some(key_tag) = key_tag.as_ref().filter(|t| observed.images.contains(*t)) {
            reused.push(Reuse {
                from: key_tag.clone(),
                tags: vec![tag, latest],
            });
            continue;
        }
        // Images carry only the project label, which retention finds them by: the classic
        // builder adds one LABEL step per label, each a container commit that costs as much
        // as a COPY. The `<repo>:<sha>` tag says which revision an image is.
        let mut labels = build.labels.clone();
        labels.insert(names::LABEL_PROJECT.to_owned(), project.to_string());
        let mut tags = vec![tag, latest];
        tags.extend(key_tag);
        steps.push(BuildStep {
            services: vec![name.clone()],
            tags,
            image: repo,
            build: Build {
                labels,
                ..build.clone()
            },
        });
    }
    (steps, reused)
}

/// Services ordered so that dependencies come first; ties keep name order. Compose
/// validation already refused cycles.
pub(crate) fn dependency_order(spec: &Spec) -> Vec<ServiceName> {
    let mut done: BTreeSet<&ServiceName> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < spec.services.len() {
        let before = order.len();
        for (name, svc) in &spec.services {
            if done.contains(name) {
                continue;
            }
            let ready = svc
                .depends_on
                .keys()
                .all(|d| done.contains(d) || !spec.services.contains_key(d));
            if ready {
                done.insert(name);
                order.push(name.clone());
            }
        }
        if order.len() == before {
            // A cycle slipped through; keep going in name order rather than loop forever.
            for name in spec.services.keys() {
                if done.insert(name) {
                    order.push(name.clone());
                }
            }
        }
    }
    order
}

impl Plan {
    /// Every tag this revision's images carry, built or reused: what the ledger records.
    pub(crate) fn images(&self) -> Vec<String> {
        let revision = |tag: &&String| tag.ends_with(self.revision.as_str());
        let mut out: Vec<String> = self
            .builds
            .iter()
            .filter_map(|b| b.tags.first().cloned())
            .collect();
        for r in &self.reused {
            out.extend(
                std::iter::once(&r.from)
                    .chain(&r.tags)
                    .filter(revision)
                    .cloned(),
            );
        }
        out
    }
}

/// How long to let a container stop before it is killed: its `stop_grace_period`, or
/// Docker's default of 10 s.
pub(crate) fn stop_timeout(spec: &ContainerSpec) -> Duration {
    spec.options
        .stop_grace_period
        .unwrap_or(Duration::from_secs(10))
}

impl Plan {
    /// `services` and everything they depend on, transitively.
    pub(crate) fn with_dependencies(
        &self,
        services: impl IntoIterator<Item = ServiceName>,
    ) -> BTreeSet<ServiceName> {
        let mut out = BTreeSet::new();
        let mut todo: Vec<ServiceName> = services.into_iter().collect();
        while let Some(service) = todo.pop() {
            if let Some(step) = self.services.iter().find(|s| s.service == service) {
                todo.extend(step.waits.iter().map(|(dep, _)| dep.clone()));
            }
            out.insert(service);
        }
        out
    }

    /// Whether applying the plan starts, replaces or removes any container.
    pub(crate) fn changes_containers(&self) -> bool {
        !self.orphans.is_empty()
            || self
                .services
                .iter()
                .any(|s| !matches!(&s.action, Action::Keep(c) if c.running))
    }

    /// Why an orphan goes.
    pub(crate) fn why_removed(&self, orphan: &ObservedContainer) -> String {
        match orphan.service.as_ref().and_then(|s| self.replicas.get(s)) {
            Some(n) => format!("its service runs {n} replica(s) now"),
            None => "its service is no longer in the compose file".to_owned(),
        }
    }

    /// The step of `service` (its first container's).
    pub(crate) fn step(&self, service: &ServiceName) -> Option<&ServiceStep> {
        self.services.iter().find(|s| &s.service == service)
    }

    /// The plan as rows of data, for the reporter and `Display`.
    pub(crate) fn rows(&self) -> Vec<PlanRow> {
        let row = |what: &str, name: &str, action: String| PlanRow {
            what: what.to_owned(),
            name: name.to_owned(),
            action,
        };
        let mut rows = Vec::new();
        for n in &self.networks {
            rows.push(row("network", &n.name, ensure_word(n.action).to_owned()));
        }
        for v in &self.volumes {
            rows.push(row("volume", &v.name, ensure_word(v.action).to_owned()));
        }
        for b in &self.builds {
            let services: Vec<&str> = b.services.iter().map(|s| s.as_str()).collect();
            rows.push(row(
                "build",
                &b.tags[0],
                format!("for {}", services.join(", ")),
            ));
        }
        for r in &self.reused {
            rows.push(row("image", &r.from, "reuse (already built)".to_owned()));
        }
        for s in &self.services {
            let what = match &s.action {
                Action::Create => format!("create `{}`", s.container.name),
                Action::Replace(old) => {
                    format!("replace `{}` with `{}`", old.name, s.container.name)
                }
                Action::Keep(old) => format!("keep `{}` (unchanged)", old.name),
            };
            rows.push(row("service", s.service.as_str(), what));
        }
        for c in &self.orphans {
            rows.push(row("remove", &c.name, format!("({})", self.why_removed(c))));
        }
        for n in &self.orphan_networks {
            let why = "(network no longer in the compose file)".to_owned();
            rows.push(row("remove", n, why));
        }
        for c in &self.leftovers {
            rows.push(row(
                "remove",
                &c.name,
                "(left over by an earlier deploy)".to_owned(),
            ));
        }
        rows
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "plan for `{}` at {}", self.project, self.revision)?;
        for row in self.rows() {
            writeln!(f, "  {row}")?;
        }
        Ok(())
    }
}

fn ensure_word(e: Ensure) -> &'static str {
    match e {
        Ensure::Create => "create",
        Ensure::Exists => "exists",
        Ensure::MissingExternal => "MISSING (external)",
    }
}
