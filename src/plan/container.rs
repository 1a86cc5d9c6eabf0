//! A service's container as plain data: what `docker::apply` creates, and what the config
//! hash covers.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::compose::Spec;
use crate::compose::options::{Engine, Options};
use crate::compose::spec::{
    Config, HealthTest, Healthcheck, Hook, Mount, Protocol, Restart, Service,
};
use crate::ids::{ProjectName, Revision, ServiceName};

use super::names;

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ContainerSpec {
    pub(crate) name: String,
    /// An image reference: `<repo>:<sha>` for built services, the `image:` key otherwise.
    pub(crate) image: String,
    pub(crate) command: Option<Vec<String>>,
    pub(crate) entrypoint: Option<Vec<String>>,
    /// `KEY=value`, sorted.
    pub(crate) env: Vec<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) user: Option<String>,
    pub(crate) working_dir: Option<String>,
    /// `80/tcp`: every port the container listens on that we know of (published or exposed).
    pub(crate) exposed: Vec<String>,
    pub(crate) ports: Vec<PortBinding>,
    /// Host ports `deploy serve` owns for this container.
    pub(crate) proxied: Vec<ProxiedPort>,
    pub(crate) mounts: Vec<MountSpec>,
    /// The first network is attached at creation, the others right after.
    pub(crate) networks: Vec<NetworkAttach>,
    pub(crate) healthcheck: Option<HealthSpec>,
    pub(crate) restart: RestartSpec,
    /// The settings that go to the engine as they are (`compose/options.rs`).
    pub(crate) options: Options,
    /// `post_start` hooks, run once the container has started.
    pub(crate) post_start: Vec<Hook>,
    /// The containers of the services whose namespaces or volumes this one shares
    /// (`service:NAME`, `volumes_from`), as the plan chose them.
    pub(crate) joined: BTreeMap<String, String>,
    /// What the image is built from, for a built service: a built image is identified by
    /// that, not by the revision's tag, so a push that changes nothing it is built from
    /// keeps its container running.
    pub(crate) build_key: Option<String>,
    /// sha256 over what `Hashed` lists, at `HASH_VERSION`: equal hashes mean an unchanged
    /// container that can be kept running.
    pub(crate) config_hash: String,
    /// `DEPLOY_ENV=<environment>`, added to `env` when the container is made unless the
    /// compose file sets `DEPLOY_ENV`. Not hashed: it follows from the project, which a
    /// container never changes, so containers made before it existed are kept.
    pub(crate) deploy_env: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct PortBinding {
    /// `80/tcp`
    pub(crate) container_port: String,
    pub(crate) host_ip: Option<String>,
    pub(crate) host_port: Option<u16>,
    /// The end of a host port range that `host_port` starts (Docker picks a free port in it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) host_port_end: Option<u16>,
}

impl PortBinding {
    /// `8080`, `6005-6015`, or `None` for a port Docker chooses.
    pub(crate) fn host_ports(&self) -> Option<String> {
        match (self.host_port, self.host_port_end) {
            (Some(lo), Some(hi)) => Some(format!("{lo}-{hi}")),
            (lo, _) => lo.map(|p| p.to_string()),
        }
    }

    /// Whether the binding holds one fixed host port, which two containers cannot share.
    pub(crate) fn is_fixed(&self) -> bool {
        self.host_port.is_some() && self.host_port_end.is_none()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) enum MountKind {
    Bind,
    Volume,
    Tmpfs,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct MountSpec {
    pub(crate) kind: MountKind,
    /// Host path, volume name, or empty for anonymous volumes and tmpfs.
    pub(crate) source: String,
    pub(crate) target: String,
    pub(crate) read_only: bool,
    /// A bind's propagation mode, when the file sets one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) propagation: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct NetworkAttach {
    /// Docker network name.
    pub(crate) network: String,
    pub(crate) aliases: Vec<String>,
    pub(crate) ipv4_address: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct HealthSpec {
    /// Docker's form: `["CMD", …]`, `["CMD-SHELL", "…"]`, `["NONE"]`, or empty to inherit.
    pub(crate) test: Vec<String>,
    pub(crate) interval: Option<Duration>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retries: Option<u32>,
    pub(crate) start_period: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) start_interval: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct RestartSpec {
    /// Docker's policy name: `no`, `always`, `unless-stopped`, `on-failure`.
    pub(crate) name: &'static str,
    pub(crate) max_retries: Option<u32>,
}

/// The restart policy when the compose file sets none. Containers must come back after an
/// engine restart or a reboot without anyone running `deploy` again.
pub(crate) const DEFAULT_RESTART: RestartSpec = RestartSpec {
    name: "unless-stopped",
    max_retries: None,
};

/// How a built service's published TCP ports reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Publish {
    /// The container binds its host ports itself.
    Direct,
    /// `deploy serve`'s proxy owns the host ports and forwards to the container over the
    /// stack's network; the container publishes nothing for them.
    Proxied,
}

/// A host port the proxy owns for a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct ProxiedPort {
    pub(crate) host_ip: Option<String>,
    pub(crate) host_port: u16,
    pub(crate) container_port: u16,
}

impl ProxiedPort {
    /// `[host_ip:]host_port:container_port`, the form kept in the `deploy.proxy` label.
    pub(crate) fn label(ports: &[ProxiedPort]) -> String {
        let parts: Vec<String> = ports
            .iter()
            .map(|p| match &p.host_ip {
                Some(ip) => format!("{ip}:{}:{}", p.host_port, p.container_port),
                None => format!("{}:{}", p.host_port, p.container_port),
            })
            .collect();
        parts.join(",")
    }

    /// Reads the `deploy.proxy` label back.
    pub(crate) fn parse_label(label: &str) -> Vec<ProxiedPort> {
        label
            .split(',')
            .filter_map(|part| {
                let mut fields: Vec<&str> = part.rsplitn(3, ':').collect();
                fields.reverse();
                let (host_ip, host, container) = match fields.as_slice() {
                    [ip, host, container] => (Some((*ip).to_owned()), *host, *container),
                    [host, container] => (None, *host, *container),
                    _ => return None,
                };
                Some(ProxiedPort {
                    host_ip,
                    host_port: host.parse().ok()?,
                    container_port: container.parse().ok()?,
                })
            })
            .collect()
    }
}

/// The hostnames `deploy serve` routes to one service of the stack (`hostnames:` and
/// `route:` in deploy.yml), kept in its containers' `deploy.hosts` label so that a restarted
/// daemon routes them again without a deploy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) struct HostRoute {
    #[serde(skip)]
    pub(crate) service: Option<ServiceName>,
    /// The container port; `None` takes the container's lowest exposed port.
    pub(crate) port: Option<u16>,
    pub(crate) hostnames: Vec<String>,
    pub(crate) https_redirect: bool,
}

impl HostRoute {
    pub(crate) fn label(&self) -> String {
        serde_json::to_string(self).expect("plain data always serializes")
    }

    pub(crate) fn parse_label(label: &str) -> Option<HostRoute> {
        serde_json::from_str(label).ok()
    }
}

/// What every container of one plan shares.
pub(crate) struct Context<'a> {
    pub(crate) spec: &'a Spec,
    pub(crate) project: &'a ProjectName,
    pub(crate) revision: &'a Revision,
    /// Where the pipeline writes `content:` configs.
    pub(crate) config_dir: &'a Path,
    pub(crate) publish: Publish,
    pub(crate) build_keys: &'a BTreeMap<ServiceName, String>,
    /// The hostnames routed to one of the services, resolved by the plan.
    pub(crate) hosts: Option<&'a HostRoute>,
}

/// Builds the container for one service; `None` when it has neither image nor build.
pub(crate) fn spec(ctx: &Context<'_>, name: &ServiceName, svc: &Service) -> Option<ContainerSpec> {
    let Context {
        project, revision, ..
    } = *ctx;
    let built = svc.build.is_some();
    let image = if built {
        names::revision_tag(
            &names::image_repo(project, name, svc.image.as_deref()),
            revision,
        )
    } else {
        svc.image.clone()?
    };
    let mut labels = svc.labels.clone();
    labels.extend(names::labels(project, Some(name), revision));
    let env = svc
        .environment
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
    let Published {
        exposed,
        ports,
        proxied,
    } = published(svc, built && ctx.publish == Publish::Proxied);
    if !proxied.is_empty() {
        labels.insert(names::LABEL_PROXY.to_owned(), ProxiedPort::label(&proxied));
    }
    if let Some(hosts) = ctx.hosts.filter(|h| h.service.as_ref() == Some(name)) {
        labels.insert(names::LABEL_HOSTS.to_owned(), hosts.label());
    }
    if !svc.pre_stop.is_empty() {
        let hooks = serde_json::to_string(&svc.pre_stop).expect("plain data always serializes");
        labels.insert(names::LABEL_PRE_STOP.to_owned(), hooks);
    }
    let mut c = ContainerSpec {
        name: names::container(
            project,
            name,
            built.then_some(revision),
            svc.container_name.as_deref(),
        ),
        image,
        command: svc.command.clone(),
        entrypoint: svc.entrypoint.clone(),
        env,
        labels,
        user: svc.user.clone(),
        working_dir: svc.working_dir.clone(),
        exposed,
        ports,
        proxied,
        mounts: mounts(ctx, svc),
        networks: networks(ctx, name, svc),
        healthcheck: svc.healthcheck.as_ref().map(healthcheck),
        restart: restart(ctx.spec, name),
        options: svc.options.clone(),
        post_start: svc.post_start.clone(),
        joined: BTreeMap::new(),
        build_key: ctx.build_keys.get(name).filter(|_| built).cloned(),
        config_hash: String::new(),
        deploy_env: None,
    };
    c.config_hash = config_hash(&c);
    c.labels.insert(
        names::LABEL_CONFIG_HASH.to_owned(),
        hash_label(&c.config_hash),
    );
    Some(c)
}

/// A service's ports: what it listens on, what it publishes itself, what the proxy owns.
struct Published {
    exposed: Vec<String>,
    ports: Vec<PortBinding>,
    proxied: Vec<ProxiedPort>,
}

/// Behind the proxy (`proxy`), a built service's fixed TCP ports belong to the proxy; UDP,
/// Docker-chosen ports and host port ranges stay published by the container.
fn published(svc: &Service, proxy: bool) -> Published {
    let mut exposed: Vec<String> = svc
        .ports
        .iter()
        .map(|p| format!("{}/{}", p.target, p.protocol.as_str()))
        .chain(svc.expose.iter().cloned())
        .collect();
    exposed.sort();
    exposed.dedup();
    let (proxied, direct): (Vec<_>, Vec<_>) = svc
        .ports
        .iter()
        .partition(|p| proxy && p.fixed().is_some() && p.protocol == Protocol::Tcp);
    let proxied = proxied
        .into_iter()
        .filter_map(|p| {
            Some(ProxiedPort {
                host_ip: p.host_ip.clone(),
                host_port: p.fixed()?,
                container_port: p.target,
            })
        })
        .collect();
    let ports = direct
        .into_iter()
        .map(|p| PortBinding {
            container_port: format!("{}/{}", p.target, p.protocol.as_str()),
            host_ip: p.host_ip.clone(),
            host_port: p.published,
            host_port_end: p.published_end,
        })
        .collect();
    Published {
        exposed,
        ports,
        proxied,
    }
}

/// Volumes, binds and tmpfs as written; then secrets and configs, which are files on the
/// host bind-mounted read-only (never env, never in an image). `content:` configs were
/// written under `config_dir` by the pipeline.
fn mounts(ctx: &Context<'_>, svc: &Service) -> Vec<MountSpec> {
    let spec = ctx.spec;
    let file = |source: &Path, target: &str| MountSpec {
        kind: MountKind::Bind,
        source: source.to_string_lossy().into_owned(),
        target: target.to_owned(),
        read_only: true,
        propagation: None,
    };
    let mut mounts: Vec<MountSpec> = svc
        .volumes
        .iter()
        .map(|m| {
            let parts = m.parts();
            let (kind, source) = match m {
                Mount::Bind { .. } => (MountKind::Bind, parts.source.unwrap_or_default()),
                Mount::Volume { .. } => (
                    MountKind::Volume,
                    parts
                        .source
                        .map(|key| volume_name(spec, ctx.project, &key))
                        .unwrap_or_default(),
                ),
                Mount::Tmpfs { .. } => (MountKind::Tmpfs, String::new()),
            };
            MountSpec {
                kind,
                source,
                target: parts.target.to_owned(),
                read_only: parts.read_only,
                propagation: parts.propagation.map(str::to_owned),
            }
        })
        .collect();
    for s in &svc.secrets {
        if let Some(secret) = spec.secrets.get(&s.source) {
            mounts.push(file(
                s.owner.copy.as_ref().unwrap_or(&secret.file),
                &s.target,
            ));
        }
    }
    for c in &svc.configs {
        let source = match (&c.owner.copy, spec.configs.get(&c.source)) {
            (Some(copy), _) => copy.clone(),
            (None, Some(Config::File(path))) => path.clone(),
            (None, Some(Config::Content(_))) => ctx.config_dir.join(&c.source),
            (None, None) => continue,
        };
        mounts.push(file(&source, &c.target));
    }
    mounts
}

/// The networks a service joins, each with the service's name as an alias, then its own
/// aliases, then the names other services on that network link to it by (`links:`); none
/// when it has a `network_mode`.
fn networks(ctx: &Context<'_>, name: &ServiceName, svc: &Service) -> Vec<NetworkAttach> {
    if svc.options.network_mode.is_some() {
        return Vec::new();
    }
    let keys: Vec<(&str, _)> = if svc.networks.is_empty() {
        vec![("default", None)]
    } else {
        svc.networks
            .iter()
            .map(|(k, n)| (k.as_str(), Some(n)))
            .collect()
    };
    keys.into_iter()
        .map(|(key, n)| {
            let mut aliases = vec![name.as_str().to_owned()];
            if let Some(n) = n {
                aliases.extend(n.aliases.iter().cloned());
            }
            // The names other services on this network link to it by.
            for other in ctx.spec.services.values() {
                if other.networks.contains_key(key) {
                    for link in other.links.iter().filter(|l| &l.service == name) {
                        if !aliases.contains(&link.alias) {
                            aliases.push(link.alias.clone());
                        }
                    }
                }
            }
            NetworkAttach {
                network: network_name(ctx.spec, ctx.project, key),
                aliases,
                ipv4_address: n.and_then(|n| n.ipv4_address.clone()),
            }
        })
        .collect()
}

fn healthcheck(h: &Healthcheck) -> HealthSpec {
    HealthSpec {
        test: match &h.test {
            HealthTest::Disabled => vec!["NONE".to_owned()],
            HealthTest::Inherit => Vec::new(),
            HealthTest::Cmd(args) => std::iter::once("CMD".to_owned())
                .chain(args.iter().cloned())
                .collect(),
            HealthTest::Shell(cmd) => vec!["CMD-SHELL".to_owned(), cmd.clone()],
        },
        interval: h.interval,
        timeout: h.timeout,
        retries: h.retries,
        start_period: h.start_period,
        start_interval: h.start_interval,
    }
}

/// The restart policy, by the rule of `Spec::restart_of`.
fn restart(spec: &Spec, name: &ServiceName) -> RestartSpec {
    match spec.restart_of(name) {
        Restart::UnlessStopped => DEFAULT_RESTART,
        Restart::No => RestartSpec {
            name: "no",
            max_retries: None,
        },
        Restart::Always => RestartSpec {
            name: "always",
            max_retries: None,
        },
        Restart::OnFailure { max_retries } => RestartSpec {
            name: "on-failure",
            max_retries,
        },
    }
}

fn network_name(spec: &Spec, project: &ProjectName, key: &str) -> String {
    match spec.networks.get(key) {
        Some(n) if n.external => n.name.clone().unwrap_or_else(|| key.to_owned()),
        Some(n) => names::network(project, key, n.name.as_deref()),
        None => names::network(project, key, None),
    }
}

fn volume_name(spec: &Spec, project: &ProjectName, key: &str) -> String {
    match spec.volumes.get(key) {
        Some(v) if v.external => v.name.clone().unwrap_or_else(|| key.to_owned()),
        Some(v) => names::volume(project, key, v.name.as_deref()),
        None => names::volume(project, key, None),
    }
}

/// The version of the config hash. A container labelled with an older version is compared
/// by that version's rules, kept in `hash_at` (Docker cannot relabel a container in place),
/// so an upgrade that changes the hash never replaces a container whose configuration did
/// not change. Bump it only together with such a rule for the old version.
pub(crate) const HASH_VERSION: u32 = 1;

/// The `deploy.config-hash` label: the bare hash for version 1 (what every container made
/// before versions were named carries), `<version>:<hash>` for later versions.
fn hash_label(hash: &str) -> String {
    match HASH_VERSION {
        1 => hash.to_owned(),
        v => format!("{v}:{hash}"),
    }
}

impl ContainerSpec {
    /// The one-off container of a release command, made from this (the new) container of
    /// its service, as `docker compose run --rm SERVICE COMMAND` makes it: the same image,
    /// environment, mounts, networks, user and working dir, with `command` instead of the
    /// service's. It publishes no port, answers to no network alias or fixed address (no
    /// request for the service may reach it), has no healthcheck and no restart policy, and
    /// carries no service label, so that no plan takes it for the service's container.
    pub(crate) fn release(
        &self,
        project: &ProjectName,
        service: &ServiceName,
        revision: &Revision,
        command: &[String],
    ) -> ContainerSpec {
        let mut labels = self.labels.clone();
        labels.retain(|k, _| !k.starts_with("deploy."));
        labels.insert(names::LABEL_PROJECT.to_owned(), project.to_string());
        labels.insert(names::LABEL_RELEASE.to_owned(), revision.to_string());
        ContainerSpec {
            name: names::release_container(project, service),
            command: Some(command.to_vec()),
            labels,
            ports: Vec::new(),
            proxied: Vec::new(),
            post_start: Vec::new(),
            networks: self
                .networks
                .iter()
                .map(|n| NetworkAttach {
                    aliases: Vec::new(),
                    ipv4_address: None,
                    ..n.clone()
                })
                .collect(),
            healthcheck: Some(HealthSpec {
                test: vec!["NONE".to_owned()],
                interval: None,
                timeout: None,
                retries: None,
                start_period: None,
                start_interval: None,
            }),
            restart: RestartSpec {
                name: "no",
                max_retries: None,
            },
            build_key: None,
            config_hash: String::new(),
            ..self.clone()
        }
    }

    /// The service's `replica`th container (the first is this one): its own name and label,
    /// by which the next plan finds it again.
    pub(crate) fn replica(&self, replica: u32) -> ContainerSpec {
        let mut c = self.clone();
        if replica > 1 {
            c.name = names::replica(&self.name, replica);
            c.labels
                .insert(names::LABEL_REPLICA.to_owned(), replica.to_string());
            c.config_hash = config_hash(&c);
            c.labels.insert(
                names::LABEL_CONFIG_HASH.to_owned(),
                hash_label(&c.config_hash),
            );
        }
        c
    }

    /// Records the containers of the services this one joins, from `chosen` (service →
    /// container name, and whether that container is new). A container joined to a new
    /// one must be new too, as it would stay joined to the one that is retired: returns
    /// whether that is so.
    pub(crate) fn join(&mut self, chosen: &BTreeMap<ServiceName, (String, bool)>) -> bool {
        let mut joined = BTreeMap::new();
        let mut renew = false;
        for (_, service) in self.options.joined_services() {
            if let Some((container, new)) =
                (chosen.iter()).find_map(|(name, c)| (name.as_str() == service).then_some(c))
            {
                joined.insert(service, container.clone());
                renew |= *new;
            }
        }
        self.joined = joined;
        renew
    }

    /// The settings of `compose/options.rs` as the engine takes them, with each joined
    /// service named by its container: `service:app` becomes `container:<name>`, and a
    /// `volumes_from` entry `app:ro` becomes `<name>:ro`.
    pub(crate) fn settings(&self) -> Engine {
        let container = |service: &str| self.joined.get(service).map(String::as_str);
        let mut out = self.options.engine();
        for (path, value) in &mut out {
            match (*path, &*value) {
                (
                    "HostConfig.NetworkMode" | "HostConfig.PidMode" | "HostConfig.IpcMode",
                    serde_json::Value::String(v),
                ) => {
                    if let Some(name) = v.strip_prefix("service:").and_then(container) {
                        *value = serde_json::Value::from(format!("container:{name}"));
                    }
                }
                ("HostConfig.VolumesFrom", serde_json::Value::Array(entries)) => {
                    let entries = entries.iter().filter_map(|e| e.as_str()).map(|e| {
                        let (service, mode) = e.split_once(':').unwrap_or((e, ""));
                        match (service, container(service)) {
                            ("container", _) | (_, None) => e.to_owned(),
                            (_, Some(name)) if mode.is_empty() => name.to_owned(),
                            (_, Some(name)) => format!("{name}:{mode}"),
                        }
                    });
                    *value = serde_json::Value::from(entries.collect::<Vec<_>>());
                }
                _ => {}
            }
        }
        out
    }

    /// Whether a running container labelled `label` has this configuration, judged by the
    /// hash version it was labelled with.
    pub(crate) fn same_config(&self, label: &str) -> bool {
        let (version, hash) = match label.split_once(':') {
            Some((v, hash)) => (v.parse::<u32>().unwrap_or(0), hash),
            None => (1, label),
        };
        hash_at(version, self).is_some_and(|ours| ours == hash)
    }
}

/// This container's hash by the rules of `version`, if they are known.
fn hash_at(version: u32, c: &ContainerSpec) -> Option<String> {
    (version == HASH_VERSION).then(|| config_hash(c))
}

/// Hashes the container's configuration without its name and revision label, so that a
/// service whose configuration did not change between revisions (the database, usually)
/// keeps running untouched. The fields, their order and their encoding are spelled out in
/// `Hashed`; `plan/golden.rs` pins the result.
fn config_hash(c: &ContainerSpec) -> String {
    let json = serde_json::to_vec(&Hashed(c)).expect("a container spec always serializes");
    let digest = Sha256::digest(&json);
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// What the config hash covers: every field below, in this order (the build key standing
/// for the image of a built service), then the settings of `options.rs`, each as its entry
/// there says.
struct Hashed<'a>(&'a ContainerSpec);

impl Serialize for Hashed<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let c = self.0;
        let options = c.options.hash();
        let mut labels = c.labels.clone();
        labels.remove(names::LABEL_REVISION);
        labels.remove(names::LABEL_CONFIG_HASH);
        let mut s = serializer.serialize_struct("ContainerSpec", 15 + options.len())?;
        s.serialize_field("name", "")?;
        s.serialize_field("image", c.build_key.as_deref().unwrap_or(&c.image))?;
        s.serialize_field("command", &c.command)?;
        s.serialize_field("entrypoint", &c.entrypoint)?;
        s.serialize_field("env", &c.env)?;
        s.serialize_field("labels", &labels)?;
        s.serialize_field("user", &c.user)?;
        s.serialize_field("working_dir", &c.working_dir)?;
        s.serialize_field("exposed", &c.exposed)?;
        s.serialize_field("ports", &c.ports)?;
        s.serialize_field("proxied", &c.proxied)?;
        s.serialize_field("mounts", &c.mounts)?;
        s.serialize_field("networks", &c.networks)?;
        s.serialize_field("healthcheck", &c.healthcheck)?;
        s.serialize_field("restart", &c.restart)?;
        // Added later: enters only when set, so other containers keep their hash.
        if !c.post_start.is_empty() {
            s.serialize_field("post_start", &c.post_start)?;
        }
        for (name, value) in &options {
            s.serialize_field(name, value)?;
        }
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::compose::spec::{Condition, Dependency};

    fn restart_of(spec: &Spec, service: &str) -> &'static str {
        let project = ProjectName::parse("shop").unwrap();
        let revision = Revision::parse(&"ab".repeat(20)).unwrap();
        let name = ServiceName::parse(service).unwrap();
        let svc = &spec.services[&name];
        let ctx = Context {
            spec,
            project: &project,
            revision: &revision,
            config_dir: Path::new("/configs"),
            publish: Publish::Direct,
            build_keys: &BTreeMap::new(),
            hosts: None,
        };
        super::spec(&ctx, &name, svc).unwrap().restart.name
    }

    #[test]
    fn a_one_shot_job_is_not_restarted_unless_the_file_says_so() {
        let image = |name: &str| Service {
            image: Some(name.to_owned()),
            ..Service::default()
        };
        let waits_for = |condition| Dependency {
            condition,
            restart: false,
            required: true,
        };
        let mut app = image("app");
        app.depends_on.insert(
            ServiceName::parse("migrate").unwrap(),
            waits_for(Condition::ServiceCompletedSuccessfully),
        );
        app.depends_on.insert(
            ServiceName::parse("db").unwrap(),
            waits_for(Condition::ServiceHealthy),
        );
        let mut spec = Spec::default();
        for (name, svc) in [("app", app), ("db", image("db")), ("migrate", image("job"))] {
            spec.services.insert(ServiceName::parse(name).unwrap(), svc);
        }
        assert_eq!(restart_of(&spec, "migrate"), "no");
        assert_eq!(restart_of(&spec, "db"), "unless-stopped");
        assert_eq!(restart_of(&spec, "app"), "unless-stopped");

        let migrate = ServiceName::parse("migrate").unwrap();
        spec.services.get_mut(&migrate).unwrap().restart =
            Some(Restart::OnFailure { max_retries: None });
        assert_eq!(restart_of(&spec, "migrate"), "on-failure");
    }

    /// A container labelled by another hash version is judged by that version's rules: a
    /// bare hash is version 1; a version with no rules left never matches, so the
    /// container is replaced rather than kept on a guess.
    #[test]
    fn a_config_hash_label_is_read_by_its_version() {
        let project = ProjectName::parse("shop").unwrap();
        let revision = Revision::parse(&"ab".repeat(20)).unwrap();
        let name = ServiceName::parse("db").unwrap();
        let mut spec = Spec::default();
        spec.services.insert(
            name.clone(),
            Service {
                image: Some("postgres:15".to_owned()),
                ..Service::default()
            },
        );
        let ctx = Context {
            spec: &spec,
            project: &project,
            revision: &revision,
            config_dir: Path::new("/configs"),
            publish: Publish::Direct,
            build_keys: &BTreeMap::new(),
            hosts: None,
        };
        let c = super::spec(&ctx, &name, &spec.services[&name]).unwrap();
        let label = c.labels[names::LABEL_CONFIG_HASH].clone();
        assert_eq!(label, c.config_hash, "version 1 labels carry the bare hash");
        assert!(c.same_config(&label));
        assert!(c.same_config(&format!("1:{label}")));
        assert!(!c.same_config(&format!("9:{label}")));
        assert!(!c.same_config("0123"));
    }
}
