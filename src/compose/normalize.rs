//! The raw serde model → the validated `Spec`: short forms expanded, paths resolved,
//! references between services, networks, volumes and secrets checked.

use std::collections::BTreeMap;

use super::mounts::{self, PathContext};
use super::options::{self, Options};
use super::raw::{self, Flag, Scalar, StringOr, StringOrList};
use super::spec::{
    Build, BuildSecret, Condition, Config, ConfigMount, Dependency, EnvFile, HealthTest,
    Healthcheck, Hook, Ipam, IpamPool, Link, Mount, Network, Ownership, Port, PullPolicy, Restart,
    Secret, SecretMount, Service, ServiceNetwork, Spec, UpdateOrder, Volume,
};
use super::{ComposeError, LoadOptions, bytes, duration, ports, spec};
use crate::ids::{ProjectName, ServiceName};

/// The validated spec and the project name the file asks for, if any.
pub(crate) fn spec(
    raw: raw::Compose,
    mut service_options: BTreeMap<String, Options>,
    options: &LoadOptions<'_>,
) -> Result<(Spec, Option<ProjectName>), ComposeError> {
    let name = match raw.name {
        Some(n) => {
            Some(ProjectName::parse(&n).map_err(|e| ComposeError::at("name", e.to_string()))?)
        }
        None => None,
    };
    let paths = PathContext {
        project_dir: options.project_dir,
        home: options.env.get("HOME").map(String::as_str),
    };
    let mut spec = Spec {
        networks: networks(raw.networks.unwrap_or_default())?,
        volumes: volumes(raw.volumes.unwrap_or_default(), &paths)?,
        secrets: secrets(raw.secrets.unwrap_or_default(), &paths)?,
        configs: configs(raw.configs.unwrap_or_default(), &paths)?,
        ..Spec::default()
    };
    let raw_services = raw.services.unwrap_or_default();
    if raw_services.is_empty() {
        return Err(ComposeError::at(
            "services",
            "at least one service is required",
        ));
    }
    let mut names = BTreeMap::new();
    let mut defined = Vec::new();
    for (name, raw_service) in raw_services {
        let at = format!("services.{name}");
        let parsed = ServiceName::parse(&name).map_err(|e| ComposeError::at(&at, e.to_string()))?;
        let raw_service = raw_service.ok_or_else(|| {
            ComposeError::at(&at, "the service is empty; give it an `image` or a `build`")
        })?;
        let enabled = profiles_enabled(&at, &raw_service.profiles, options.profiles)?;
        names.insert(parsed.clone(), (enabled, raw_service.profiles.clone()));
        if enabled {
            let taken = service_options.remove(&name).unwrap_or_default();
            defined.push((at, parsed, raw_service, taken));
        }
    }
    if defined.is_empty() {
        return Err(ComposeError::at(
            "services",
            "no service is enabled: every service is in a profile that is not enabled",
        ));
    }
    let ctx = Ctx {
        options,
        paths,
        names: &names,
        spec: &spec,
    };
    let mut services = BTreeMap::new();
    for (at, name, raw_service, taken) in defined {
        services.insert(name, ctx.service(&at, raw_service, taken)?);
    }
    spec.services = services;
    if let Some(x) = raw.x_deploy {
        x_deploy(&mut spec, x, &names)?;
    }
    check_cycles(&spec)?;
    check_container_names(&spec)?;
    check_links(&spec)?;
    let uses_default = spec
        .services
        .values()
        .any(|s| s.networks.contains_key("default"));
    if uses_default {
        spec.networks.entry("default".to_owned()).or_default();
    }
    Ok((spec, name))
}

/// What a service that joins another's namespace or volumes waits for.
const STARTED: Dependency = Dependency {
    condition: Condition::ServiceStarted,
    restart: false,
    required: true,
};

struct Ctx<'a> {
    options: &'a LoadOptions<'a>,
    paths: PathContext<'a>,
    /// Every defined service: whether its profiles enable it, and those profiles.
    names: &'a BTreeMap<ServiceName, (bool, Vec<String>)>,
    /// The top-level declarations, already converted.
    spec: &'a Spec,
}

/// The key `key` of the service at `at`, read by `parse` when it is there; its error names
/// the key.
fn read<T, U>(
    at: &str,
    key: &str,
    value: Option<T>,
    parse: impl FnOnce(T) -> Result<U, String>,
) -> Result<Option<U>, ComposeError> {
    value.map(parse).transpose().map_err(|m| err(at, key, m))
}

fn err(at: &str, key: &str, message: impl Into<String>) -> ComposeError {
    ComposeError::at(format!("{at}.{key}"), message)
}

/// `ports:` (ranges expanded) and `expose:`.
fn ports_of(
    at: &str,
    raw_ports: Vec<StringOr<raw::Port>>,
    raw_expose: Vec<Scalar>,
) -> Result<(Vec<Port>, Vec<String>), ComposeError> {
    let mut out = Vec::new();
    for (i, entry) in raw_ports.into_iter().enumerate() {
        let parsed = match entry {
            StringOr::Short(s) => ports::parse_short(&s),
            StringOr::Long(l) => ports::parse_long(&l).map(|p| vec![p]),
        };
        out.extend(parsed.map_err(|m| err(at, &format!("ports[{i}]"), m))?);
    }
    let mut expose = Vec::new();
    for (i, Scalar(entry)) in raw_expose.into_iter().enumerate() {
        expose
            .extend(ports::parse_expose(&entry).map_err(|m| err(at, &format!("expose[{i}]"), m))?);
    }
    Ok((out, expose))
}

impl Ctx<'_> {
    fn service(
        &self,
        at: &str,
        raw: raw::Service,
        options: Options,
    ) -> Result<Service, ComposeError> {
        if raw.build.is_none() && raw.image.is_none() {
            return Err(ComposeError::at(
                at,
                "a service needs an `image` or a `build`",
            ));
        }
        let env_files = self.env_files(at, raw.env_file)?;
        // A variable listed without a value takes the host's, if it has one.
        let environment = raw
            .environment
            .entries()
            .into_iter()
            .map(|(k, v)| (k.clone(), v.or_else(|| self.options.env.get(&k).cloned())))
            .collect();
        let built = raw.build.is_some();
        let single = single_container_key(raw.container_name.is_some(), &options);
        let replicas = replicas_of(at, raw.scale, raw.replicas, raw.mode, single)?;
        let mut service = Service {
            build: raw.build.map(|b| self.build(at, b)).transpose()?,
            image: raw.image,
            container_name: read(at, "container_name", raw.container_name, |n| {
                container_name(&n).map(|()| n)
            })?,
            command: read(at, "command", raw.command, command)?,
            entrypoint: read(at, "entrypoint", raw.entrypoint, command)?,
            environment,
            env_files,
            healthcheck: raw.healthcheck.map(|h| healthcheck(at, h)).transpose()?,
            restart: restart_of(at, raw.restart, raw.restart_policy)?,
            replicas,
            update_order: read(at, "deploy.update_config.order", raw.update_config, |u| {
                update_order(u.order.as_deref())
            })?
            .flatten(),
            user: raw.user.map(|u| u.0),
            working_dir: read(at, "working_dir", raw.working_dir, |w| {
                match w.starts_with('/') {
                    true => Ok(w),
                    false => Err(format!("`{w}` must be an absolute path")),
                }
            })?,
            labels: labels(&raw.labels),
            pull_policy: read(at, "pull_policy", raw.pull_policy, |p| {
                pull_policy(&p, built)
            })?
            .unwrap_or_default(),
            options,
            ..Service::default()
        };
        let entry =
            |key: &'static str, i: usize| move |m: String| err(at, &format!("{key}[{i}]"), m);
        service.configs = (raw.configs.into_iter().enumerate())
            .map(|(i, e)| self.config_mount(e).map_err(entry("configs", i)))
            .collect::<Result<_, _>>()?;
        service.secrets = (raw.secrets.into_iter().enumerate())
            .map(|(i, e)| self.secret_mount(e).map_err(entry("secrets", i)))
            .collect::<Result<_, _>>()?;
        if let Some(build) = &mut service.build {
            build.platform = service.options.platform.clone();
        }
        (service.ports, service.expose) = ports_of(at, raw.ports, raw.expose)?;
        service.volumes = self.volumes(at, raw.volumes, &service.options.tmpfs)?;
        service.networks =
            self.service_networks(at, raw.networks, service.options.network_mode.as_deref())?;
        service.depends_on = self.depends_on(at, raw.depends_on)?;
        service.links = self.links(at, raw.links, &mut service.depends_on)?;
        service.post_start = hooks(at, "post_start", raw.post_start)?;
        service.pre_stop = hooks(at, "pre_stop", raw.pre_stop)?;
        self.shared_namespaces(at, &mut service)?;
        swap_limit(at, &service.options)?;
        Ok(service)
    }

    /// `volumes:`, each target mounted once (`tmpfs:` targets included).
    fn volumes(
        &self,
        at: &str,
        raw: Vec<StringOr<raw::Mount>>,
        tmpfs: &BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, ComposeError> {
        let mut targets: BTreeMap<String, usize> = BTreeMap::new();
        let mut out = Vec::new();
        for (i, entry) in raw.into_iter().enumerate() {
            let key = format!("volumes[{i}]");
            let mount = match entry {
                StringOr::Short(s) => mounts::parse_short(&s, &self.paths, &self.spec.volumes),
                StringOr::Long(l) => mounts::parse_long(&l, &self.paths, &self.spec.volumes),
            }
            .map_err(|m| err(at, &key, m))?;
            if let Some(first) = targets.insert(mount.target().to_owned(), i) {
                let target = mount.target();
                let message = format!("`{target}` is already mounted by `volumes[{first}]`");
                return Err(err(at, &key, message));
            }
            out.push(mount);
        }
        if let Some((target, first)) = tmpfs.keys().find_map(|t| targets.get(t).map(|i| (t, i))) {
            let message = format!("`{target}` is already mounted by `volumes[{first}]`");
            return Err(err(at, "tmpfs", message));
        }
        Ok(out)
    }

    /// `service:NAME` in `network_mode`, `pid` or `ipc` shares another service's namespace,
    /// and a `volumes_from` entry its volumes, so that service must exist and start first,
    /// as docker-compose orders it.
    fn shared_namespaces(&self, at: &str, service: &mut Service) -> Result<(), ComposeError> {
        for (key, other) in service.options.joined_services() {
            let other = self.required_service(at, &key, &other)?;
            service.depends_on.entry(other).or_insert(STARTED);
        }
        Ok(())
    }

    /// The enabled service called `name`, which the service at `at` names at `key`.
    fn required_service(
        &self,
        at: &str,
        key: &str,
        name: &str,
    ) -> Result<ServiceName, ComposeError> {
        self.known_service(name)
            .map_err(|(Unknown::Disabled(m) | Unknown::Undefined(m))| err(at, key, m))
    }

    fn build(&self, at: &str, raw: StringOr<raw::Build>) -> Result<Build, ComposeError> {
        let (raw, context_key) = match raw {
            StringOr::Short(context) => (
                raw::Build {
                    context: Some(context),
                    ..raw::Build::default()
                },
                "build",
            ),
            StringOr::Long(b) => (b, "build.context"),
        };
        let written = raw.context.as_deref().unwrap_or(".");
        if written.contains("://") || written.starts_with("git@") {
            return Err(err(
                at,
                context_key,
                format!(
                    "remote build context `{written}` is not supported; build from a directory of the repository"
                ),
            ));
        }
        let context = self
            .paths
            .resolve(written)
            .map_err(|m| err(at, context_key, m))?;
        if raw.dockerfile_inline.is_some() && raw.dockerfile.is_some() {
            return Err(err(
                at,
                "build.dockerfile_inline",
                "set either `dockerfile` or `dockerfile_inline`, not both",
            ));
        }
        let dockerfile_written = match &raw.dockerfile_inline {
            Some(_) => spec::INLINE_DOCKERFILE,
            None => raw.dockerfile.as_deref().unwrap_or("Dockerfile"),
        };
        let dockerfile_path = mounts::normalize(&context.join(dockerfile_written));
        let dockerfile = dockerfile_path
            .strip_prefix(&context)
            .ok()
            .filter(|rel| !rel.as_os_str().is_empty())
            .ok_or_else(|| {
                err(
                    at,
                    "build.dockerfile",
                    format!("`{dockerfile_written}` is outside the build context `{written}`"),
                )
            })?
            .to_string_lossy()
            .into_owned();
        if raw.ssh.is_some() {
            return Err(err(
                at,
                "build.ssh",
                "not supported: no SSH agent is forwarded to a build; fetch private code with a token in `build.secrets`",
            ));
        }
        let mut args = BTreeMap::new();
        for (k, v) in raw.args.entries() {
            if k.starts_with("BUILDKIT_") && k != "BUILDKIT_INLINE_CACHE" {
                return Err(err(
                    at,
                    &format!("build.args.{k}"),
                    "`BUILDKIT_…` arguments set the builder's own options (its frontend, its cache namespace), which `deploy` decides",
                ));
            }
            // A bare `ARG` passes the host's value through, or nothing when it is unset.
            if let Some(v) = v.or_else(|| self.options.env.get(&k).cloned()) {
                args.insert(k, v);
            }
        }
        let mut secrets = Vec::new();
        for (i, entry) in raw.secrets.into_iter().enumerate() {
            secrets.push(
                self.build_secret(entry)
                    .map_err(|m| err(at, &format!("build.secrets[{i}]"), m))?,
            );
        }
        for (i, image) in raw.cache_from.iter().enumerate() {
            if image.contains('=') || image.contains(',') || image.trim().is_empty() {
                return Err(err(
                    at,
                    &format!("build.cache_from[{i}]"),
                    format!(
                        "`{image}` is not an image name: a build reuses layers of local images only (`name:tag`), not of a registry or a directory"
                    ),
                ));
            }
        }
        let extra_hosts = raw
            .extra_hosts
            .map(options::extra_hosts)
            .transpose()
            .map_err(|m| err(at, "build.extra_hosts", m))?
            .unwrap_or_default();
        Ok(Build {
            context,
            dockerfile,
            args,
            target: raw.target,
            labels: labels(&raw.labels),
            network: raw.network,
            secrets,
            cache_from: raw.cache_from,
            extra_hosts,
            shm_size: read(at, "build.shm_size", raw.shm_size, |s| {
                bytes::parse(&s.0).and_then(|b| match i32::try_from(b) {
                    Ok(_) => Ok(b),
                    Err(_) => Err(format!(
                        "`{}` is more than the 2 GiB a build's shared memory may have",
                        s.0
                    )),
                })
            })?,
            dockerfile_inline: raw.dockerfile_inline,
            platform: None,
        })
    }

    /// A `build.secrets` entry: a declared top-level secret, and the id the Dockerfile
    /// asks for (its name unless `target:` says otherwise).
    fn build_secret(&self, raw: StringOr<raw::SourceRef>) -> Result<BuildSecret, String> {
        let (source, target, owner) =
            declared(raw, "secret", |s| self.spec.secrets.contains_key(s))?;
        if owner.is_set() {
            return Err(
                "`uid`, `gid` and `mode` do not apply to a build secret, which BuildKit mounts for one `RUN` step".to_owned(),
            );
        }
        let target = target.unwrap_or_else(|| source.clone());
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if target.is_empty() || !target.chars().all(plain) {
            return Err(format!(
                "`{target}` is not a secret id: use letters, digits, `.`, `_` and `-`, as in `RUN --mount=type=secret,id={source}`"
            ));
        }
        Ok(BuildSecret { source, target })
    }

    /// The `env_file:` entries, resolved but not read: the policy judges their paths first.
    fn env_files(
        &self,
        at: &str,
        raw: Option<StringOrList<StringOr<raw::EnvFile>>>,
    ) -> Result<Vec<EnvFile>, ComposeError> {
        let entries: Vec<(String, String, bool)> = match raw {
            None => Vec::new(),
            Some(StringOrList::Str(s)) => vec![(format!("{at}.env_file"), s, true)],
            Some(StringOrList::List(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    let key = format!("{at}.env_file[{i}]");
                    match item {
                        StringOr::Short(s) => (key, s, true),
                        StringOr::Long(l) => (key, l.path, l.required.is_none_or(|f| f.0)),
                    }
                })
                .collect(),
        };
        entries
            .into_iter()
            .map(|(key, written, required)| {
                let path = self
                    .paths
                    .resolve(&written)
                    .map_err(|m| ComposeError::at(&key, m))?;
                Ok(EnvFile {
                    path,
                    required,
                    key_path: key,
                })
            })
            .collect()
    }

    fn service_networks(
        &self,
        at: &str,
        raw: Option<raw::NamesOr<raw::ServiceNetwork>>,
        network_mode: Option<&str>,
    ) -> Result<BTreeMap<String, ServiceNetwork>, ComposeError> {
        let Some(raw) = raw else {
            // A service with its own network mode joins no network; every other one is on
            // the project's default network.
            return Ok(match network_mode {
                Some(_) => BTreeMap::new(),
                None => [("default".to_owned(), ServiceNetwork::default())].into(),
            });
        };
        if network_mode.is_some() {
            return Err(err(
                at,
                "network_mode",
                "cannot be combined with `networks`",
            ));
        }
        let mut out = BTreeMap::new();
        for (name, index, opts) in raw.into_entries() {
            let key = match index {
                Some(i) => format!("networks[{i}]"),
                None => format!("networks.{name}"),
            };
            if name != "default" && !self.spec.networks.contains_key(&name) {
                return Err(err(
                    at,
                    &key,
                    format!("network `{name}` is not declared under top-level `networks`"),
                ));
            }
            if let Some(ip) = &opts.ipv4_address {
                self.fixed_address(&name, ip)
                    .map_err(|m| err(at, &format!("{key}.ipv4_address"), m))?;
            }
            out.insert(
                name,
                ServiceNetwork {
                    aliases: opts.aliases,
                    ipv4_address: opts.ipv4_address,
                },
            );
        }
        Ok(out)
    }

    /// A fixed address must be IPv4 and, on a network this file creates, lie in one of the
    /// subnets its `ipam` gives: Docker assigns no fixed address on a network whose pool it
    /// chose itself. An external network's subnet is checked by the engine.
    fn fixed_address(&self, network: &str, ip: &str) -> Result<(), String> {
        let address = ip
            .parse::<std::net::Ipv4Addr>()
            .map_err(|_| format!("`{ip}` is not an IPv4 address"))?;
        let declared = self.spec.networks.get(network);
        if declared.is_some_and(|n| n.external) {
            return Ok(());
        }
        let subnets: Vec<ipnet::IpNet> =
            declared.into_iter().flat_map(Network::v4_subnets).collect();
        if subnets.is_empty() {
            return Err(format!(
                "network `{network}` has no `ipam` subnet, so no fixed address can be given on it; add `ipam: {{config: [{{subnet: …}}]}}` to it"
            ));
        }
        if !subnets
            .iter()
            .any(|s| s.contains(&std::net::IpAddr::V4(address)))
        {
            let list: Vec<String> = subnets.iter().map(|s| format!("`{s}`")).collect();
            return Err(format!(
                "`{ip}` is not in the subnet of network `{network}` ({})",
                list.join(", ")
            ));
        }
        Ok(())
    }

    fn depends_on(
        &self,
        at: &str,
        raw: Option<raw::NamesOr<raw::Dependency>>,
    ) -> Result<BTreeMap<ServiceName, Dependency>, ComposeError> {
        let mut out = BTreeMap::new();
        for (name, index, dep) in raw.map(raw::NamesOr::into_entries).unwrap_or_default() {
            let key = match index {
                Some(i) => format!("depends_on[{i}]"),
                None => format!("depends_on.{name}"),
            };
            let service = match self.known_service(&name) {
                Ok(s) => s,
                // An optional dependency on a service left out by profiles is just absent.
                Err(Unknown::Disabled(_)) if dep.required.is_some_and(|f| !f.0) => continue,
                Err(Unknown::Disabled(m) | Unknown::Undefined(m)) => return Err(err(at, &key, m)),
            };
            let condition = dep.condition.unwrap_or(Condition::ServiceStarted);
            out.insert(
                service,
                Dependency {
                    condition,
                    restart: dep.restart.is_some_and(|f| f.0),
                    required: dep.required.is_none_or(|f| f.0),
                },
            );
        }
        Ok(out)
    }

    /// `links:` entries, `SERVICE` or `SERVICE:ALIAS`; each linked service starts first.
    fn links(
        &self,
        at: &str,
        raw: Vec<String>,
        depends_on: &mut BTreeMap<ServiceName, Dependency>,
    ) -> Result<Vec<Link>, ComposeError> {
        let mut out = Vec::new();
        for (i, entry) in raw.into_iter().enumerate() {
            let key = format!("links[{i}]");
            let (service, alias) = entry.split_once(':').unwrap_or((&entry, &entry));
            let service = self.required_service(at, &key, service)?;
            if ServiceName::parse(alias).is_err() {
                return Err(err(
                    at,
                    &key,
                    format!("`{alias}` is not a valid host name for `{service}`"),
                ));
            }
            depends_on.entry(service.clone()).or_insert(STARTED);
            out.push(Link {
                service,
                alias: alias.to_owned(),
            });
        }
        Ok(out)
    }

    /// The enabled service called `name`.
    fn known_service(&self, name: &str) -> Result<ServiceName, Unknown> {
        let parsed = ServiceName::parse(name).ok();
        match parsed.as_ref().and_then(|n| self.names.get(n)) {
            None => Err(Unknown::Undefined(format!(
                "service `{name}` is not defined"
            ))),
            Some((false, profiles)) => Err(Unknown::Disabled(format!(
                "service `{name}` is left out: none of its profiles ({}) is enabled",
                profiles
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            Some((true, _)) => Ok(parsed.expect("found by it")),
        }
    }

    fn config_mount(&self, raw: StringOr<raw::SourceRef>) -> Result<ConfigMount, String> {
        let (source, target, owner) =
            declared(raw, "config", |s| self.spec.configs.contains_key(s))?;
        let target = match target {
            None => format!("/{source}"),
            Some(t) if t.starts_with('/') => mounts::normalize(std::path::Path::new(&t))
                .to_string_lossy()
                .into_owned(),
            Some(t) => {
                return Err(format!(
                    "the container path `{t}` must be absolute (start with `/`)"
                ));
            }
        };
        Ok(ConfigMount {
            source,
            target,
            owner,
        })
    }

    fn secret_mount(&self, raw: StringOr<raw::SourceRef>) -> Result<SecretMount, String> {
        let (source, target, owner) =
            declared(raw, "secret", |s| self.spec.secrets.contains_key(s))?;
        let target = match target {
            None => format!("/run/secrets/{source}"),
            Some(t) if t.starts_with('/') => mounts::normalize(std::path::Path::new(&t))
                .to_string_lossy()
                .into_owned(),
            Some(t) if t.is_empty() || t.split('/').any(|part| part == "..") => {
                return Err(format!(
                    "secret target `{t}` must stay under `/run/secrets`"
                ));
            }
            Some(t) => format!("/run/secrets/{t}"),
        };
        Ok(SecretMount {
            source,
            target,
            owner,
        })
    }
}

/// The source, target and ownership of a `secrets:` or `configs:` entry (`kind` is
/// `secret` or `config`), whose source must be declared at the top level.
fn declared(
    raw: StringOr<raw::SourceRef>,
    kind: &str,
    is_declared: impl Fn(&str) -> bool,
) -> Result<(String, Option<String>, Ownership), String> {
    let (source, target, owner) = match raw {
        StringOr::Short(source) => (source, None, Ownership::default()),
        StringOr::Long(l) => {
            let id = |v: Option<Scalar>, what: &str| {
                v.map(|s| {
                    s.0.trim().parse::<u32>().map_err(|_| {
                        format!(
                            "`{what}: {}` must be a number: a name is the container's, which the host cannot look up",
                            s.0
                        )
                    })
                })
                .transpose()
            };
            let owner = Ownership {
                uid: id(l.uid, "uid")?,
                gid: id(l.gid, "gid")?,
                mode: l.mode.map(|m| file_mode(&m.0)).transpose()?,
                copy: None,
            };
            (l.source, l.target, owner)
        }
    };
    if !is_declared(&source) {
        return Err(format!(
            "{kind} `{source}` is not declared under top-level `{kind}s`"
        ));
    }
    Ok((source, target, owner))
}

/// A file mode as compose files write it: `0440` and `0o440` are octal, as YAML 1.1 (which
/// docker-compose reads) has it; a number without a leading zero is decimal.
fn file_mode(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let parsed = match t.strip_prefix("0o").or_else(|| t.strip_prefix('0')) {
        Some("") => Ok(0),
        Some(octal) => u32::from_str_radix(octal, 8),
        None => t.parse::<u32>(),
    };
    match parsed {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!("`mode: {text}` is not a file mode (like `0440`)")),
    }
}

enum Unknown {
    Undefined(String),
    Disabled(String),
}

/// Whether a service with `profiles` runs: it has none, or one of them is enabled (`*`
/// enables all, as with `docker compose --profile '*'`).
fn profiles_enabled(
    at: &str,
    profiles: &[String],
    enabled: &[String],
) -> Result<bool, ComposeError> {
    for (i, p) in profiles.iter().enumerate() {
        let mut chars = p.chars();
        let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(err(
                at,
                &format!("profiles[{i}]"),
                format!("`{p}` is not a profile name (use letters, digits, `_`, `.` and `-`)"),
            ));
        }
    }
    Ok(profiles.is_empty()
        || enabled.iter().any(|e| e == "*")
        || profiles.iter().any(|p| enabled.contains(p)))
}

fn configs(
    raw: BTreeMap<String, Option<raw::Config>>,
    paths: &PathContext<'_>,
) -> Result<BTreeMap<String, Config>, ComposeError> {
    let mut out = BTreeMap::new();
    for (key, c) in raw {
        let at = format!("configs.{key}");
        let c = c.unwrap_or_default();
        if c.external.is_some() {
            return Err(err(
                &at,
                "external",
                "not supported: external configs need Docker Swarm; use `file:` or `content:`",
            ));
        }
        let config = match (c.file, c.content) {
            (Some(file), None) => {
                Config::File(paths.resolve(&file).map_err(|m| err(&at, "file", m))?)
            }
            (None, Some(content)) => Config::Content(content),
            (Some(_), Some(_)) => {
                return Err(ComposeError::at(
                    &at,
                    "give either `file:` or `content:`, not both",
                ));
            }
            (None, None) => {
                return Err(ComposeError::at(
                    &at,
                    "a config needs a `file:` or a `content:`",
                ));
            }
        };
        out.insert(key, config);
    }
    Ok(out)
}

fn networks(
    raw: BTreeMap<String, Option<raw::Network>>,
) -> Result<BTreeMap<String, Network>, ComposeError> {
    raw.into_iter()
        .map(|(key, n)| {
            let n = n.unwrap_or_default();
            let (name, external) = external(&format!("networks.{key}"), n.name, n.external)?;
            let network = Network {
                name,
                external,
                internal: flag(n.internal),
                driver: n.driver,
                labels: labels(&n.labels),
                driver_opts: n.driver_opts.into_iter().map(|(k, s)| (k, s.0)).collect(),
                attachable: flag(n.attachable),
                enable_ipv6: flag(n.enable_ipv6),
                ipam: n
                    .ipam
                    .map(|i| ipam(&format!("networks.{key}.ipam"), i))
                    .transpose()?,
            };
            Ok((key, network))
        })
        .collect()
}

fn volumes(
    raw: BTreeMap<String, Option<raw::Volume>>,
    paths: &PathContext<'_>,
) -> Result<BTreeMap<String, Volume>, ComposeError> {
    raw.into_iter()
        .map(|(key, v)| {
            let at = format!("volumes.{key}");
            let v = v.unwrap_or_default();
            let (name, external) = external(&at, v.name, v.external)?;
            let mut volume = Volume {
                name,
                external,
                driver: v.driver,
                driver_opts: v.driver_opts.into_iter().map(|(k, s)| (k, s.0)).collect(),
                labels: labels(&v.labels),
            };
            bind_device(&at, &mut volume, paths)?;
            Ok((key, volume))
        })
        .collect()
}

/// A local volume that binds a directory (`o: bind`) takes its `device` relative to the
/// project directory, as compose v2 resolves it; the engine itself needs it absolute.
fn bind_device(at: &str, volume: &mut Volume, paths: &PathContext<'_>) -> Result<(), ComposeError> {
    let binds = volume.binds_device();
    if let Some(device) = volume.driver_opts.get_mut("device").filter(|_| binds) {
        let resolved = paths
            .resolve(device)
            .map_err(|m| err(at, "driver_opts.device", m))?;
        *device = resolved.to_string_lossy().into_owned();
    }
    Ok(())
}

/// `ipam:`, each pool checked: a range, a gateway or reserved addresses need a subnet to lie in.
fn ipam(at: &str, raw: raw::Ipam) -> Result<Ipam, ComposeError> {
    let mut config = Vec::new();
    for (i, pool) in raw.config.into_iter().enumerate() {
        let at = format!("{at}.config[{i}]");
        // The network's own address, as Docker keeps it: `172.28.5.0/16` is `172.28.0.0/16`.
        let subnet = read(&at, "subnet", pool.subnet, |s| net(&s).map(|n| n.trunc()))?;
        let ip_range = read(&at, "ip_range", pool.ip_range, |s| {
            in_subnet(subnet, net(&s)?, |n, r| n.contains(r))
        })?;
        let gateway = read(&at, "gateway", pool.gateway, |s| {
            in_subnet(subnet, address(&s)?, |n, ip| n.contains(ip))
        })?;
        let mut aux_addresses = BTreeMap::new();
        for (host, ip) in pool.aux_addresses {
            let key = format!("aux_addresses.{host}");
            let ip = in_subnet(
                subnet,
                address(&ip).map_err(|m| err(&at, &key, m))?,
                |n, ip| n.contains(ip),
            )
            .map_err(|m| err(&at, &key, m))?;
            aux_addresses.insert(host, ip);
        }
        config.push(IpamPool {
            subnet,
            ip_range,
            gateway,
            aux_addresses,
        });
    }
    Ok(Ipam {
        driver: raw.driver,
        config,
        options: raw.options.into_iter().map(|(k, s)| (k, s.0)).collect(),
    })
}

fn net(s: &str) -> Result<ipnet::IpNet, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a subnet (like `172.28.0.0/16`)"))
}

fn address(s: &str) -> Result<std::net::IpAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("`{s}` is not an IP address"))
}

/// `value`, when it lies in `subnet`.
fn in_subnet<T: std::fmt::Display>(
    subnet: Option<ipnet::IpNet>,
    value: T,
    fits: impl Fn(&ipnet::IpNet, &T) -> bool,
) -> Result<T, String> {
    match subnet {
        None => Err("needs a `subnet` to lie in".to_owned()),
        Some(s) if fits(&s, &value) => Ok(value),
        Some(s) => Err(format!("`{value}` is not in the subnet `{s}`")),
    }
}

/// `name:` and whether the object is external. The older `external: {name: x}` means
/// `external: true` with `name: x`, as compose v2 still reads it.
fn external(
    at: &str,
    name: Option<String>,
    external: Option<raw::External>,
) -> Result<(Option<String>, bool), ComposeError> {
    match external {
        None => Ok((name, false)),
        Some(raw::External::Flag(f)) => Ok((name, f.0)),
        Some(raw::External::Named(named)) => match name {
            Some(other) if other != named => Err(err(
                at,
                "external.name",
                format!(
                    "says `{named}` but `name:` says `{other}`; write `external: true` and one `name:`"
                ),
            )),
            _ => Ok((Some(named), true)),
        },
    }
}

fn secrets(
    raw: BTreeMap<String, Option<raw::Secret>>,
    paths: &PathContext<'_>,
) -> Result<BTreeMap<String, Secret>, ComposeError> {
    let mut out = BTreeMap::new();
    for (key, s) in raw {
        let at = format!("secrets.{key}");
        let s = s.unwrap_or_default();
        if s.external.is_some() {
            return Err(err(
                &at,
                "external",
                "not supported: external secrets need Docker Swarm; put the value in a file and use `file:`",
            ));
        }
        if s.environment.is_some() {
            return Err(err(
                &at,
                "environment",
                "not supported: a secret taken from the environment could leak into logs; put the value in a file and use `file:`",
            ));
        }
        let file = s
            .file
            .ok_or_else(|| ComposeError::at(&at, "a secret needs a `file:`"))?;
        let file = paths.resolve(&file).map_err(|m| err(&at, "file", m))?;
        out.insert(key, Secret { file });
    }
    Ok(out)
}

fn pull_policy(written: &str, built: bool) -> Result<PullPolicy, String> {
    match written {
        "missing" | "if_not_present" => Ok(PullPolicy::Missing),
        "always" => Ok(PullPolicy::Always),
        "never" => Ok(PullPolicy::Never),
        "build" if built => Ok(PullPolicy::Build),
        "build" => Err("`build` needs a `build:` section to build from".to_owned()),
        "daily" | "weekly" => Err(format!(
            "`{written}` (pull when the image is older than that) is not supported; use `missing`, `always`, `never` or `build`"
        )),
        other if other.starts_with("every_") => Err(format!(
            "`{other}` (pull when the image is older than that) is not supported; use `missing`, `always`, `never` or `build`"
        )),
        other => Err(format!(
            "`{other}` is not a pull policy (use `missing`, `always`, `never` or `build`)"
        )),
    }
}

/// The engine refuses a swap limit without a memory limit, or below it; say so before
/// anything is built.
fn swap_limit(at: &str, options: &Options) -> Result<(), ComposeError> {
    let Some(swap) = options.memswap_limit.filter(|s| *s != -1) else {
        return Ok(());
    };
    match options.resources.memory {
        None => Err(err(
            at,
            "memswap_limit",
            "needs a memory limit too (`mem_limit` or `deploy.resources.limits.memory`): it counts memory plus swap",
        )),
        Some(memory) if u64::try_from(swap).is_ok_and(|s| s < memory) => Err(err(
            at,
            "memswap_limit",
            "is below the memory limit; it counts memory plus swap, so it must be at least as large",
        )),
        Some(_) => Ok(()),
    }
}

fn flag(f: Option<Flag>) -> bool {
    f.is_some_and(|f| f.0)
}

/// Labels take an empty value when written without one.
fn labels(raw: &raw::ListOrMap) -> BTreeMap<String, String> {
    raw.entries()
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect()
}

/// `x-deploy`: the release command and the databases, each naming an enabled service.
fn x_deploy(
    spec: &mut Spec,
    x: raw::XDeploy,
    names: &BTreeMap<ServiceName, (bool, Vec<String>)>,
) -> Result<(), ComposeError> {
    let service = |at: &str, name: &str| -> Result<ServiceName, ComposeError> {
        let parsed = ServiceName::parse(name).map_err(|e| ComposeError::at(at, e.to_string()))?;
        match names.get(&parsed) {
            Some((true, _)) => Ok(parsed),
            Some((false, profiles)) => Err(ComposeError::at(
                at,
                format!("service `{name}` is in profiles {profiles:?}, none of them enabled"),
            )),
            None => Err(ComposeError::at(
                at,
                format!("there is no service `{name}` in the compose file"),
            )),
        }
    };
    if let Some(release) = x.release {
        let command = command(release.command)
            .map_err(|m| ComposeError::at("x-deploy.release.command", m))?;
        if command.is_empty() {
            return Err(ComposeError::at(
                "x-deploy.release.command",
                "the release command is empty",
            ));
        }
        spec.release = Some(spec::Release {
            service: service("x-deploy.release.service", &release.service)?,
            command,
        });
    }
    for (i, name) in x.databases.iter().enumerate() {
        let name = service(&format!("x-deploy.databases[{i}]"), name)?;
        if !spec.databases.contains(&name) {
            spec.databases.push(name);
        }
    }
    Ok(())
}

fn command(raw: StringOrList<Scalar>) -> Result<Vec<String>, String> {
    match raw {
        StringOrList::Str(s) => shlex::split(&s)
            .ok_or_else(|| format!("`{s}` has an unclosed quote or a trailing `\\`")),
        StringOrList::List(items) => Ok(items.into_iter().map(|s| s.0).collect()),
    }
}

/// `post_start:` or `pre_stop:` (`key`) entries.
fn hooks(at: &str, key: &str, raw: Vec<raw::Hook>) -> Result<Vec<Hook>, ComposeError> {
    let mut out = Vec::new();
    for (i, h) in raw.into_iter().enumerate() {
        let at = format!("{at}.{key}[{i}]");
        let command = command(h.command).map_err(|m| err(&at, "command", m))?;
        if command.is_empty() {
            return Err(err(&at, "command", "needs a command"));
        }
        let working_dir = match h.working_dir {
            Some(w) if !w.starts_with('/') => {
                return Err(err(
                    &at,
                    "working_dir",
                    format!("`{w}` must be an absolute path"),
                ));
            }
            w => w,
        };
        let mut environment = BTreeMap::new();
        for (k, v) in h.environment.entries() {
            let Some(v) = v else {
                return Err(err(&at, "environment", format!("`{k}` has no value")));
            };
            environment.insert(k, v);
        }
        out.push(Hook {
            command,
            user: h.user.map(|u| u.0),
            privileged: flag(h.privileged),
            working_dir,
            environment,
        });
    }
    Ok(out)
}

fn container_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a container name (use letters, digits, `_`, `.` and `-`, starting with a letter or digit)"
        ))
    }
}

fn restart(s: &str) -> Result<Restart, String> {
    let bad = || {
        format!(
            "`{s}` is not a restart policy (use `no`, `always`, `unless-stopped` or `on-failure[:N]`)"
        )
    };
    match s {
        "no" => Ok(Restart::No),
        "always" => Ok(Restart::Always),
        "unless-stopped" => Ok(Restart::UnlessStopped),
        "on-failure" => Ok(Restart::OnFailure { max_retries: None }),
        _ => {
            let n = s.strip_prefix("on-failure:").ok_or_else(bad)?;
            let n = n.parse::<u32>().map_err(|_| bad())?;
            Ok(Restart::OnFailure {
                max_retries: Some(n),
            })
        }
    }
}

/// `restart:` or `deploy.restart_policy`, whichever the service sets (not both).
fn restart_of(
    at: &str,
    written: Option<Scalar>,
    policy: Option<raw::RestartPolicy>,
) -> Result<Option<Restart>, ComposeError> {
    match (written, policy) {
        (Some(_), Some(_)) => Err(err(
            at,
            "deploy.restart_policy",
            "set either `restart` or `deploy.restart_policy`, not both",
        )),
        (written, None) => read(at, "restart", written, |r| restart(&r.0)),
        (None, policy) => read(at, "deploy.restart_policy", policy, restart_policy),
    }
}

/// A key set on the service that only one container can have.
fn single_container_key(named: bool, options: &Options) -> Option<&'static str> {
    [
        ("container_name", named),
        ("mac_address", options.mac_address.is_some()),
    ]
    .into_iter()
    .find_map(|(key, set)| set.then_some(key))
}

/// `scale:` or `deploy.replicas`: if both are written, they must agree, as compose v2 wants.
/// `deploy.mode` may only say `replicated`, and a `container_name` or a `mac_address`
/// (`single`) belongs to one container.
fn replicas_of(
    at: &str,
    scale: Option<raw::Int<u32>>,
    replicas: Option<raw::Int<u32>>,
    mode: Option<String>,
    single: Option<&str>,
) -> Result<Option<u32>, ComposeError> {
    read(at, "deploy.mode", mode, |m| match m.as_str() {
        "replicated" => Ok(()),
        _ => Err(format!(
            "`{m}` is Swarm's; one host runs `replicated` services (set `scale:` or `deploy.replicas`)"
        )),
    })?;
    let n = match (scale.map(|n| n.0), replicas.map(|n| n.0)) {
        (Some(a), Some(b)) if a != b => {
            let message = format!("{b} disagrees with `scale: {a}`; set one of them");
            return Err(err(at, "deploy.replicas", message));
        }
        (scale, replicas) => scale.or(replicas),
    };
    if let Some(key) = single.filter(|_| n.is_some_and(|n| n > 1)) {
        let message = match key {
            "container_name" => "one name cannot name several containers",
            _ => "one address cannot belong to several containers",
        };
        return Err(err(
            at,
            key,
            format!("{message}: remove it to run replicas"),
        ));
    }
    Ok(n)
}

fn update_order(order: Option<&str>) -> Result<Option<UpdateOrder>, String> {
    match order {
        None => Ok(None),
        Some("start-first") => Ok(Some(UpdateOrder::StartFirst)),
        Some("stop-first") => Ok(Some(UpdateOrder::StopFirst)),
        Some(other) => Err(format!(
            "`{other}` is not an order; use `start-first` or `stop-first`"
        )),
    }
}

/// `deploy.restart_policy` as compose v2 maps it onto the engine's policy: `none` is `no`,
/// `on-failure` keeps `max_attempts`, `any` (the default) is `always`.
fn restart_policy(raw: raw::RestartPolicy) -> Result<Restart, String> {
    match raw.condition.as_deref().unwrap_or("any") {
        "none" => Ok(Restart::No),
        "any" => Ok(Restart::Always),
        "on-failure" => Ok(Restart::OnFailure {
            max_retries: raw.max_attempts.map(|n| n.0),
        }),
        other => Err(format!(
            "`condition: {other}` is not a restart condition (use `none`, `on-failure` or `any`)"
        )),
    }
}

fn healthcheck(at: &str, raw: raw::Healthcheck) -> Result<Healthcheck, ComposeError> {
    let at = format!("{at}.healthcheck");
    let dur = |v: Option<Scalar>, key: &str| {
        v.map(|s| duration::parse(&s.0).map_err(|m| err(&at, key, m)))
            .transpose()
    };
    let test = match raw.test {
        None => HealthTest::Inherit,
        Some(StringOrList::Str(s)) => HealthTest::Shell(s),
        Some(StringOrList::List(items)) => {
            let mut items = items.into_iter().map(|s| s.0);
            let form = items.next().unwrap_or_default();
            let rest: Vec<String> = items.collect();
            match (form.as_str(), rest.as_slice()) {
                ("NONE", []) => HealthTest::Disabled,
                ("CMD", [_, ..]) => HealthTest::Cmd(rest),
                ("CMD-SHELL", [script]) => HealthTest::Shell(script.clone()),
                _ => {
                    return Err(err(
                        &at,
                        "test",
                        "use `[\"CMD\", \"prog\", \"arg\", …]`, `[\"CMD-SHELL\", \"script\"]`, `[\"NONE\"]` or a string",
                    ));
                }
            }
        }
    };
    let test = match (raw.disable.is_some_and(|f| f.0), test) {
        (false, test) => test,
        (true, HealthTest::Inherit | HealthTest::Disabled) => HealthTest::Disabled,
        (true, _) => {
            return Err(err(&at, "disable", "cannot be combined with a `test`"));
        }
    };
    Ok(Healthcheck {
        test,
        interval: dur(raw.interval, "interval")?,
        timeout: dur(raw.timeout, "timeout")?,
        retries: raw.retries.map(|r| r.0),
        start_period: dur(raw.start_period, "start_period")?,
        start_interval: dur(raw.start_interval, "start_interval")?,
    })
}

/// A dependency cycle would leave no service to start first.
fn check_cycles(spec: &Spec) -> Result<(), ComposeError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit<'a>(
        spec: &'a Spec,
        name: &'a ServiceName,
        marks: &mut BTreeMap<&'a ServiceName, Mark>,
        stack: &mut Vec<&'a ServiceName>,
    ) -> Result<(), ComposeError> {
        match marks.get(name) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Visiting) => {
                let start = stack.iter().position(|n| *n == name).unwrap_or(0);
                let cycle: Vec<String> = stack[start..]
                    .iter()
                    .chain(std::iter::once(&name))
                    .map(|n| format!("`{n}`"))
                    .collect();
                return Err(ComposeError::at(
                    format!("services.{}.depends_on", stack[start]),
                    format!("dependency cycle: {}", cycle.join(" → ")),
                ));
            }
            None => {}
        }
        marks.insert(name, Mark::Visiting);
        stack.push(name);
        if let Some(service) = spec.services.get(name) {
            for dep in service.depends_on.keys() {
                visit(spec, dep, marks, stack)?;
            }
        }
        stack.pop();
        marks.insert(name, Mark::Done);
        Ok(())
    }
    let mut marks = BTreeMap::new();
    for name in spec.services.keys() {
        visit(spec, name, &mut marks, &mut Vec::new())?;
    }
    Ok(())
}

/// A link's alias lives on the networks both services are on: there must be one.
fn check_links(spec: &Spec) -> Result<(), ComposeError> {
    for (name, s) in &spec.services {
        for (i, link) in s.links.iter().enumerate() {
            let Some(other) = spec.services.get(&link.service) else {
                continue;
            };
            if s.networks.keys().any(|k| other.networks.contains_key(k)) {
                continue;
            }
            return Err(ComposeError::at(
                format!("services.{name}.links[{i}]"),
                format!(
                    "`{name}` and `{}` share no network, so `{name}` could not reach it as `{}`; put both on one network",
                    link.service, link.alias
                ),
            ));
        }
    }
    Ok(())
}

fn check_container_names(spec: &Spec) -> Result<(), ComposeError> {
    let mut seen: BTreeMap<&str, &ServiceName> = BTreeMap::new();
    for (name, service) in &spec.services {
        if let Some(c) = &service.container_name
            && let Some(first) = seen.insert(c, name)
        {
            return Err(ComposeError::at(
                format!("services.{name}.container_name"),
                format!("`{c}` is already the container name of `{first}`"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies() {
        assert_eq!(restart("no").unwrap(), Restart::No);
        assert_eq!(
            restart("on-failure:3").unwrap(),
            Restart::OnFailure {
                max_retries: Some(3)
            }
        );
        assert!(restart("on-failure:x").is_err());
        assert!(restart("sometimes").is_err());
    }
}
