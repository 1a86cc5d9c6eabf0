//! The validated compose model (`Spec`): what the rest of `deploy` plans from.
//!
//! Every value here is already interpolated, merged across layered files, checked, and
//! normalised: paths are absolute, short forms are expanded, durations are parsed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::options::Options;
use crate::ids::ServiceName;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Spec {
    pub(crate) services: BTreeMap<ServiceName, Service>,
    /// Top-level networks by their compose key. Always holds `default` when a service uses it.
    pub(crate) networks: BTreeMap<String, Network>,
    /// Top-level named volumes by their compose key.
    pub(crate) volumes: BTreeMap<String, Volume>,
    /// Top-level secrets by their compose key.
    pub(crate) secrets: BTreeMap<String, Secret>,
    /// Top-level configs by their compose key.
    pub(crate) configs: BTreeMap<String, Config>,
    /// `x-deploy.release`: run once per deploy before anything is switched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) release: Option<Release>,
    /// `x-deploy.databases`: services to dump as PostgreSQL besides those whose image is
    /// `postgres` (see `Spec::databases`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) databases: Vec<ServiceName>,
}

/// The release command: `docker compose run --rm SERVICE COMMAND`, in the new image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Release {
    pub(crate) service: ServiceName,
    /// Exec form; a string is split as a shell would, as for `command:`.
    pub(crate) command: Vec<String>,
}

impl Spec {
    /// The restart policy a service's container gets. `restart:` (or
    /// `deploy.restart_policy`) decides; without it, a long-running service gets
    /// `unless-stopped`, so it comes back after an engine restart or a reboot with no one
    /// running `deploy`, and a one-shot job, one that another service waits for with
    /// `service_completed_successfully`, gets `no`, as docker-compose gives every service:
    /// restarted after it exits, it would run again and again.
    pub(crate) fn restart_of(&self, name: &ServiceName) -> Restart {
        if let Some(written) = self.services.get(name).and_then(|s| s.restart.clone()) {
            return written;
        }
        let one_shot = self.services.values().any(|s| {
            s.depends_on
                .get(name)
                .is_some_and(|d| d.condition == Condition::ServiceCompletedSuccessfully)
        });
        match one_shot {
            true => Restart::No,
            false => Restart::UnlessStopped,
        }
    }

    /// The PostgreSQL services, dumped before a release: those whose image is `postgres`
    /// (any tag), and those `x-deploy.databases` names.
    pub(crate) fn databases(&self) -> Vec<ServiceName> {
        self.services
            .iter()
            .filter(|(name, s)| {
                self.databases.contains(name) || s.image.as_deref().is_some_and(is_postgres_image)
            })
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// `postgres`, `postgres:15`, `library/postgres:15-alpine`, `docker.io/library/postgres`.
pub(crate) fn is_postgres_image(image: &str) -> bool {
    let name = image.split('@').next().unwrap_or(image);
    let name = match name.rsplit_once(':') {
        Some((n, tag)) if !tag.contains('/') => n,
        _ => name,
    };
    let name = name.strip_prefix("docker.io/").unwrap_or(name);
    name.strip_prefix("library/").unwrap_or(name) == "postgres"
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Service {
    pub(crate) build: Option<Build>,
    /// The `image:` key as written. For a service with `build:` it names the built image.
    pub(crate) image: Option<String>,
    pub(crate) container_name: Option<String>,
    /// Exec form; a string `command:` is split as a shell would, like docker-compose does.
    pub(crate) command: Option<Vec<String>>,
    pub(crate) entrypoint: Option<Vec<String>>,
    /// `env_file` contents, then `environment`, later entries winning. `None` means the
    /// variable was listed without a value and is not set in the host env either.
    ///
    /// Until `Spec::merge_env_files` runs, this holds the `environment:` key alone: env files
    /// are read only after the security policy has judged their paths.
    pub(crate) environment: BTreeMap<String, Option<String>>,
    /// The `env_file:` entries, absolute, in order.
    pub(crate) env_files: Vec<EnvFile>,
    pub(crate) ports: Vec<Port>,
    /// `expose:` entries, as `80/tcp`.
    pub(crate) expose: Vec<String>,
    pub(crate) volumes: Vec<Mount>,
    /// Networks by compose key. A service that lists none is on `default`.
    pub(crate) networks: BTreeMap<String, ServiceNetwork>,
    pub(crate) depends_on: BTreeMap<ServiceName, Dependency>,
    pub(crate) healthcheck: Option<Healthcheck>,
    /// `None` when the file sets no `restart:`; the plan picks the default.
    pub(crate) restart: Option<Restart>,
    pub(crate) secrets: Vec<SecretMount>,
    pub(crate) user: Option<String>,
    pub(crate) working_dir: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) configs: Vec<ConfigMount>,
    /// When the image of a service that is not built is pulled.
    #[serde(skip_serializing_if = "PullPolicy::is_missing")]
    pub(crate) pull_policy: PullPolicy,
    /// `post_start:`: commands run in the container once it has started; one that fails
    /// fails the deploy, as a container that does not become ready does.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) post_start: Vec<Hook>,
    /// `pre_stop:`: commands run in the container before it is stopped for good.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) pre_stop: Vec<Hook>,
    /// `links:`: other services this one also reaches by another name (`db:database`),
    /// an alias on the networks both are on. The service's name stands in for a missing
    /// alias.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) links: Vec<Link>,
    /// `scale:` or `deploy.replicas`: how many containers run the service; `None` is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) replicas: Option<u32>,
    /// `deploy.update_config.order`: whether a replacement starts before its predecessor
    /// stops; `None` leaves it to the plan's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) update_order: Option<UpdateOrder>,
    /// The settings that go to the engine as they are (`options.rs`).
    #[serde(flatten)]
    pub(crate) options: Options,
}

impl Service {
    /// How many containers run the service.
    pub(crate) fn replicas(&self) -> u32 {
        self.replicas.unwrap_or(1)
    }
}

/// `deploy.update_config.order`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum UpdateOrder {
    /// The new container starts, and proves ready, while the old one still runs.
    StartFirst,
    /// The old container stops before the new one starts.
    StopFirst,
}

/// A lifecycle hook (`post_start`, `pre_stop`): a command run in the container by exec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) struct Hook {
    /// Exec form; a string is split as a shell would, as for `command:`.
    pub(crate) command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) privileged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) working_dir: Option<String>,
    /// `KEY=value` entries, added to the container's own environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) environment: BTreeMap<String, String>,
}

/// One `links:` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Link {
    pub(crate) service: ServiceName,
    pub(crate) alias: String,
}

/// `pull_policy:`, as compose v2 reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PullPolicy {
    /// Pull only when the image is not on the host (`missing`, `if_not_present`).
    #[default]
    Missing,
    /// Pull on every deploy; a failed pull fails the deploy.
    Always,
    /// Never pull: the image must be on the host.
    Never,
    /// Build it from `build:`, never pull it.
    Build,
}

impl PullPolicy {
    fn is_missing(&self) -> bool {
        *self == PullPolicy::Missing
    }
}

/// One `env_file:` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct EnvFile {
    pub(crate) path: PathBuf,
    /// `required: false` lets the file be missing.
    pub(crate) required: bool,
    /// Where it is written: `services.web.env_file[0]`.
    #[serde(skip)]
    pub(crate) key_path: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Ulimit {
    /// `-1` is unlimited.
    pub(crate) soft: i64,
    pub(crate) hard: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Logging {
    /// `None` keeps the daemon's default driver.
    pub(crate) driver: Option<String>,
    pub(crate) options: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Resources {
    /// Number of CPUs, fractional (`0.5`).
    pub(crate) cpus: Option<f64>,
    /// Memory limit in bytes.
    pub(crate) memory: Option<u64>,
    /// Soft memory limit in bytes.
    pub(crate) memory_reservation: Option<u64>,
    /// Maximum number of processes; `-1` is unlimited.
    pub(crate) pids: Option<i64>,
}

/// A config file mounted read-only into a container.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct ConfigMount {
    /// Top-level config key.
    pub(crate) source: String,
    /// Absolute path in the container: `/<source>` unless `target:` says otherwise.
    pub(crate) target: String,
    #[serde(flatten)]
    pub(crate) owner: Ownership,
}

/// The long form's `uid`, `gid` and `mode` of a mounted secret or config. When any is set,
/// the container gets a copy of the file with them (`pipeline/preflight.rs`), since a bind
/// mount shows the host file's own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Ownership {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) gid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mode: Option<u32>,
    /// The copy written with them, once the pipeline has written it.
    #[serde(skip)]
    pub(crate) copy: Option<PathBuf>,
}

impl Ownership {
    pub(crate) fn is_set(&self) -> bool {
        self.uid.is_some() || self.gid.is_some() || self.mode.is_some()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Config {
    /// Absolute path of the file holding the value.
    File(PathBuf),
    /// The value itself (`content:`), already interpolated.
    Content(String),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Build {
    /// Absolute path of the build context.
    pub(crate) context: PathBuf,
    /// Dockerfile path relative to the context, as the build API wants it.
    pub(crate) dockerfile: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) args: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) target: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) network: Option<String>,
    /// Secrets a `RUN --mount=type=secret,id=<target>` reads at build time, never stored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) secrets: Vec<BuildSecret>,
    /// Local images whose layers a build may reuse.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) cache_from: Vec<String>,
    /// `host:ip` entries for the build's `/etc/hosts`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) extra_hosts: Vec<String>,
    /// The size of `/dev/shm` for the build's `RUN` steps, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) shm_size: Option<u64>,
    /// The Dockerfile itself, written in the compose file: `dockerfile` then names where it
    /// goes in the context sent to the engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dockerfile_inline: Option<String>,
    /// The service's `platform:`, which its image is built for (written back there).
    #[serde(skip)]
    pub(crate) platform: Option<String>,
}

/// Where an inline Dockerfile goes in the build context sent to the engine.
pub(crate) const INLINE_DOCKERFILE: &str = ".deploy.inline.Dockerfile";

/// A top-level secret handed to a build: `source` names it under `secrets:`, `target` is the
/// id the Dockerfile's `RUN --mount=type=secret,id=…` asks for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct BuildSecret {
    pub(crate) source: String,
    pub(crate) target: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One published port. Ranges are expanded into one `Port` each, except a range of host
/// ports for one container port (`6005-6015:80`), which means any free port of the range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Port {
    pub(crate) host_ip: Option<String>,
    /// `None` lets Docker choose a free host port.
    pub(crate) published: Option<u16>,
    /// The last port of a host range that `published` starts: Docker picks a free one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) published_end: Option<u16>,
    pub(crate) target: u16,
    pub(crate) protocol: Protocol,
}

impl Port {
    /// A fixed host port: not left to Docker, not a range.
    pub(crate) fn fixed(&self) -> Option<u16> {
        self.published.filter(|_| self.published_end.is_none())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum Mount {
    /// A host path, absolute after resolution against the compose file's directory.
    Bind {
        source: PathBuf,
        target: String,
        read_only: bool,
        /// `rslave`, `shared`, …: whether mounts below it propagate, and which way.
        #[serde(skip_serializing_if = "Option::is_none")]
        propagation: Option<String>,
    },
    /// A named volume (top-level key), or an anonymous one when `source` is `None`.
    Volume {
        source: Option<String>,
        target: String,
        read_only: bool,
    },
    Tmpfs {
        target: String,
    },
}

/// A mount's parts, whatever its kind: how `deploy config` writes it and what the plan
/// turns into the engine's mount.
pub(crate) struct MountParts<'a> {
    /// `bind`, `volume` or `tmpfs`.
    pub(crate) kind: &'static str,
    /// The host path of a bind, the key of a named volume; none for an anonymous volume or a
    /// tmpfs.
    pub(crate) source: Option<String>,
    pub(crate) target: &'a str,
    pub(crate) read_only: bool,
    /// A bind's propagation mode, when the file sets one.
    pub(crate) propagation: Option<&'a str>,
}

impl Mount {
    pub(crate) fn parts(&self) -> MountParts<'_> {
        match self {
            Mount::Bind {
                source,
                target,
                read_only,
                propagation,
            } => MountParts {
                kind: "bind",
                source: Some(source.to_string_lossy().into_owned()),
                target,
                read_only: *read_only,
                propagation: propagation.as_deref(),
            },
            Mount::Volume {
                source,
                target,
                read_only,
            } => MountParts {
                kind: "volume",
                source: source.clone(),
                target,
                read_only: *read_only,
                propagation: None,
            },
            Mount::Tmpfs { target } => MountParts {
                kind: "tmpfs",
                source: None,
                target,
                read_only: false,
                propagation: None,
            },
        }
    }

    pub(crate) fn target(&self) -> &str {
        match self {
            Mount::Bind { target, .. } | Mount::Volume { target, .. } | Mount::Tmpfs { target } => {
                target
            }
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct ServiceNetwork {
    pub(crate) aliases: Vec<String>,
    pub(crate) ipv4_address: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[expect(
    clippy::enum_variant_names,
    reason = "the names mirror the compose values"
)]
pub(crate) enum Condition {
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Dependency {
    pub(crate) condition: Condition,
    pub(crate) restart: bool,
    pub(crate) required: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Healthcheck {
    pub(crate) test: HealthTest,
    pub(crate) interval: Option<Duration>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retries: Option<u32>,
    pub(crate) start_period: Option<Duration>,
    /// How often the check runs during `start_period` (Docker Engine 25 and later).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) start_interval: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "form", content = "args")]
pub(crate) enum HealthTest {
    /// `disable: true` or `test: ["NONE"]`: turn off the image's healthcheck.
    Disabled,
    /// The image's own healthcheck, with the timings overridden (no `test:` given).
    Inherit,
    /// `["CMD", …]`.
    Cmd(Vec<String>),
    /// `["CMD-SHELL", "…"]` or a plain string.
    Shell(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Restart {
    No,
    Always,
    UnlessStopped,
    OnFailure { max_retries: Option<u32> },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct SecretMount {
    /// Top-level secret key.
    pub(crate) source: String,
    /// Absolute path in the container: `/run/secrets/<name>` unless `target:` says otherwise.
    pub(crate) target: String,
    #[serde(flatten)]
    pub(crate) owner: Ownership,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Network {
    /// The `name:` key: the Docker network's literal name instead of `<project>_<key>`.
    pub(crate) name: Option<String>,
    pub(crate) external: bool,
    pub(crate) internal: bool,
    pub(crate) driver: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) driver_opts: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) attachable: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) enable_ipv6: bool,
    /// Its address pools, when the file chooses them (otherwise Docker does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ipam: Option<Ipam>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Ipam {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) driver: Option<String>,
    pub(crate) config: Vec<IpamPool>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) options: BTreeMap<String, String>,
}

/// One address pool, validated: the range, the gateway and the reserved addresses lie in the
/// subnet.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct IpamPool {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) subnet: Option<ipnet::IpNet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ip_range: Option<ipnet::IpNet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) gateway: Option<std::net::IpAddr>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) aux_addresses: BTreeMap<String, std::net::IpAddr>,
}

impl Network {
    /// The IPv4 subnets the file gives the network.
    pub(crate) fn v4_subnets(&self) -> impl Iterator<Item = ipnet::IpNet> + '_ {
        self.ipam
            .iter()
            .flat_map(|i| &i.config)
            .filter_map(|p| p.subnet)
            .filter(|s| matches!(s, ipnet::IpNet::V4(_)))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Volume {
    pub(crate) name: Option<String>,
    pub(crate) external: bool,
    pub(crate) driver: Option<String>,
    pub(crate) driver_opts: BTreeMap<String, String>,
    pub(crate) labels: BTreeMap<String, String>,
}

impl Volume {
    /// Whether the local driver mounts `driver_opts.device` as a bind (`o: bind`): a host
    /// path, which the policy judges like any bind source.
    pub(crate) fn binds_device(&self) -> bool {
        self.driver.as_deref().is_none_or(|d| d == "local")
            && self.driver_opts.get("o").is_some_and(|o| {
                o.split(',')
                    .any(|opt| matches!(opt.trim(), "bind" | "rbind"))
            })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Secret {
    /// Absolute path of the file holding the value.
    pub(crate) file: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::is_postgres_image;

    #[test]
    fn postgres_images_by_name() {
        for yes in [
            "postgres",
            "postgres:15",
            "postgres:16-alpine",
            "library/postgres:15",
            "docker.io/library/postgres:15@sha256:abc",
        ] {
            assert!(is_postgres_image(yes), "{yes}");
        }
        for no in [
            "postgresql",
            "bitnami/postgresql:15",
            "example.com:5000/postgres",
            "me/postgres:15",
            "mysql:8",
        ] {
            assert!(!is_postgres_image(no), "{no}");
        }
    }
}
