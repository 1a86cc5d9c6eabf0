//! Host settings in `ROOT/deploy.yml`: what the operator decides, never the pushed repo.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::compose::{bytes, duration};
use crate::ids::ProjectName;
use crate::root::Root;

/// Everything `deploy.yml` may say. Unknown keys are errors, so a typo never goes unnoticed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Settings {
    /// The branch whose pushes deploy.
    pub(crate) branch: String,
    /// Prefix of every container, network, volume and default image name. Defaults to the
    /// name of ROOT's directory.
    pub(crate) project: Option<ProjectName>,
    /// Compose files layered in order, relative to `ROOT/code`. Empty means the default
    /// lookup (`compose.yaml`, …, plus its override file).
    pub(crate) compose_files: Vec<PathBuf>,
    /// Compose profiles to enable.
    pub(crate) profiles: Vec<String>,
    /// An env file (relative to ROOT) used for `${…}` interpolation, besides `ROOT/code/.env`.
    pub(crate) env_file: Option<PathBuf>,
    /// How many successful revisions keep their images for rollback.
    pub(crate) retention: usize,
    /// How long a new revision has to prove healthy.
    #[serde(deserialize_with = "de_duration")]
    pub(crate) health_timeout: Duration,
    /// An HTTP path (`/up`) that answers 2xx/3xx when the app is ready; probed on services
    /// without a healthcheck instead of a bare TCP connect.
    pub(crate) health_path: Option<String>,
    /// How long `deploy serve` lets requests to a replaced container finish before it stops.
    #[serde(deserialize_with = "de_duration")]
    pub(crate) drain_timeout: Duration,
    /// How long `deploy serve`'s proxy waits for the app to answer a request (`504` after).
    #[serde(deserialize_with = "de_duration")]
    pub(crate) proxy_timeout: Duration,
    /// Refuse to build when the Docker data dir has less free space than this.
    #[serde(deserialize_with = "de_bytes")]
    pub(crate) min_free_space: u64,
    /// Names of variables of the deploying process's own environment that `${…}` may read.
    /// Nothing else of that environment reaches the compose file: the daemon's and the
    /// hook's environment are the host's, not the pusher's.
    pub(crate) interpolate_env: Vec<String>,
    /// The largest env, config or secret file a compose file may name.
    #[serde(deserialize_with = "de_bytes")]
    pub(crate) file_size_limit: u64,
    /// The largest file a pushed revision may track. One that arrives packed is read whole,
    /// and the checkout then holds about twice its size (BENCHMARKS.md).
    #[serde(deserialize_with = "de_bytes")]
    pub(crate) blob_size_limit: u64,
    /// The most output (build steps, container logs) one deploy writes to its build log and
    /// the pusher's terminal; the rest is cut, and the log says where.
    #[serde(deserialize_with = "de_bytes")]
    pub(crate) build_log_limit: u64,
    /// How long the release command (`x-deploy.release`) may run.
    #[serde(deserialize_with = "de_duration")]
    pub(crate) release_timeout: Duration,
    /// How long building every image of a deploy may take.
    #[serde(deserialize_with = "de_duration")]
    pub(crate) build_timeout: Duration,
    /// When databases are dumped before a deploy.
    pub(crate) backups: Backups,
    /// How many dumps each database service keeps (the newest always stays).
    pub(crate) backup_retention: usize,
    /// `deploy serve` dumps every database this often (`daily`, `6h`, …).
    #[serde(deserialize_with = "de_schedule")]
    pub(crate) backup_schedule: Option<Duration>,
    /// The most BuildKit's build cache (layers and cache mounts) may hold after a deploy;
    /// the least recently used records beyond it are pruned.
    #[serde(deserialize_with = "de_bytes")]
    pub(crate) build_cache: u64,
    /// Exceptions to the security policy for the pushed compose file.
    pub(crate) allow: Allowances,
    /// Where a deploy's events go (webhooks, commands).
    pub(crate) notify: Vec<crate::notify::Target>,
    /// `deploy serve`'s read-only dashboard; off unless set.
    pub(crate) dashboard: Option<crate::serve::dashboard::DashboardSettings>,
    /// The hostnames `deploy serve` routes to this stack, on its HTTP and HTTPS listeners.
    #[serde(deserialize_with = "de_hostnames")]
    pub(crate) hostnames: Vec<String>,
    /// Which service and port answer `hostnames`.
    pub(crate) route: RouteSettings,
    /// HTTP to a hostname that has a certificate is redirected to HTTPS (`308`).
    pub(crate) https_redirect: bool,
    /// Certificates from an ACME server for hostnames the operator has none for.
    pub(crate) acme: Option<crate::serve::acme::AcmeSettings>,
}

/// `route:` in deploy.yml: by default, the only service built from the repo and its first
/// exposed port.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RouteSettings {
    pub(crate) service: Option<crate::ids::ServiceName>,
    pub(crate) port: Option<u16>,
}

/// `backups:` in deploy.yml.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Backups {
    /// Before a deploy that runs the release command.
    #[default]
    Release,
    /// Before every deploy that starts or replaces a container.
    Always,
    Never,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            branch: "main".to_owned(),
            project: None,
            compose_files: Vec::new(),
            profiles: Vec::new(),
            env_file: None,
            retention: 5,
            health_timeout: Duration::from_secs(60),
            health_path: None,
            drain_timeout: Duration::from_secs(30),
            proxy_timeout: Duration::from_secs(60),
            min_free_space: 2 << 30,
            interpolate_env: Vec::new(),
            file_size_limit: 1 << 20,
            blob_size_limit: 512 << 20,
            build_log_limit: 50 << 20,
            release_timeout: Duration::from_secs(30 * 60),
            build_timeout: Duration::from_secs(30 * 60),
            backups: Backups::Release,
            backup_retention: 10,
            backup_schedule: None,
            build_cache: 5 << 30,
            allow: Allowances::default(),
            notify: Vec::new(),
            dashboard: None,
            hostnames: Vec::new(),
            route: RouteSettings::default(),
            https_redirect: true,
            acme: None,
        }
    }
}

/// What the operator lets the pushed compose file do that the policy refuses by default.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Allowances {
    pub(crate) privileged: bool,
    /// Capabilities that `cap_add` may name.
    pub(crate) cap_add: Vec<String>,
    pub(crate) devices: bool,
    /// `network_mode`, `pid`, `ipc` or `userns_mode` set to `host`.
    pub(crate) host_namespaces: bool,
    /// `security_opt` entries that disable confinement (`seccomp=unconfined`, …).
    pub(crate) unconfined: bool,
    /// Host paths outside ROOT that bind mounts may use (each one and what is below it).
    pub(crate) bind_mounts: Vec<PathBuf>,
    /// Docker networks that are not this project's but that it may join (`external: true`,
    /// a `name:` already taken, or `network_mode: bridge` for `bridge`).
    pub(crate) external_networks: Vec<String>,
    /// Docker volumes that are not this project's but that it may mount.
    pub(crate) external_volumes: Vec<String>,
    /// Named volumes with `driver_opts`; a bind `device` must still be inside `ROOT/code`.
    pub(crate) volume_driver_opts: bool,
    /// Network drivers (and IPAM drivers) beyond `bridge` and the engine's default IPAM.
    pub(crate) network_drivers: Vec<String>,
    /// Network `driver_opts` beyond the harmless ones (MTU, inter-container traffic, NAT).
    pub(crate) network_driver_opts: bool,
    /// Logging drivers beyond the ones that stay on this host (`json-file`, `local`,
    /// `journald`, `syslog` to the local socket, `none`).
    pub(crate) logging_drivers: Vec<String>,
    /// Addresses (`tcp://logs:514`) that logging options may send to.
    pub(crate) log_addresses: Vec<String>,
    /// Image repositories a built service may tag although images made outside this
    /// project (by hand, or by docker-compose before `deploy`) already carry the name.
    pub(crate) image_names: Vec<String>,
}

impl Settings {
    /// Reads `ROOT/deploy.yml`; a missing file means every default.
    pub(crate) fn load(root: &Root) -> anyhow::Result<Self> {
        let path = root.settings_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => {
                Err(anyhow::anyhow!(e).context(format!("failed to read `{}`", path.display())))
            }
        }
    }

    pub(crate) fn parse(text: &str, path: &Path) -> anyhow::Result<Self> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner();
            let msg = inner.to_string();
            if at == "." {
                anyhow::anyhow!("`{}`: {msg}", path.display())
            } else {
                anyhow::anyhow!("`{}`: {at}: {msg}", path.display())
            }
        })
    }

    /// The project name: the setting, or ROOT's directory name made valid.
    pub(crate) fn project(&self, root: &Root) -> anyhow::Result<ProjectName> {
        if let Some(p) = &self.project {
            return Ok(p.clone());
        }
        let dir = root
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        ProjectName::sanitize(&dir).ok_or_else(|| {
            anyhow::anyhow!(
                "cannot derive a project name from `{}`; set `project:` in `{}`",
                root.path().display(),
                root.settings_file().display()
            )
        })
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let raw = StringOrNumber::deserialize(d)?;
    duration::parse(&raw.0).map_err(serde::de::Error::custom)
}

/// `hourly`, `daily`, `weekly`, or a duration (`6h`).
fn de_schedule<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let raw = StringOrNumber::deserialize(d)?;
    let every = match raw.0.as_str() {
        "hourly" => Duration::from_secs(3600),
        "daily" => Duration::from_secs(24 * 3600),
        "weekly" => Duration::from_secs(7 * 24 * 3600),
        other => duration::parse(other).map_err(serde::de::Error::custom)?,
    };
    if every < Duration::from_secs(60) {
        return Err(serde::de::Error::custom(
            "a backup schedule shorter than a minute would dump without pause",
        ));
    }
    Ok(Some(every))
}

/// Hostnames, lower-cased; one that is not a DNS name, or named twice, is refused.
fn de_hostnames<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    let mut hosts: Vec<String> = Vec::new();
    for host in raw {
        let lower = host.to_ascii_lowercase();
        if !crate::serve::proxy::is_hostname(&lower) {
            return Err(serde::de::Error::custom(format!(
                "`{host}` is not a hostname (letters, digits, `-` and dots, at most 253 characters)"
            )));
        }
        if hosts.contains(&lower) {
            return Err(serde::de::Error::custom(format!("`{host}` is named twice")));
        }
        hosts.push(lower);
    }
    Ok(hosts)
}

fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let raw = StringOrNumber::deserialize(d)?;
    bytes::parse(&raw.0).map_err(serde::de::Error::custom)
}

/// A scalar written either as `60` or `"60s"`.
struct StringOrNumber(String);

impl<'de> Deserialize<'de> for StringOrNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            U(u64),
            F(f64),
        }
        Ok(Self(match Raw::deserialize(d)? {
            Raw::S(s) => s,
            Raw::U(u) => u.to_string(),
            Raw::F(f) => f.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Settings> {
        Settings::parse(text, Path::new("deploy.yml"))
    }

    #[test]
    fn defaults_when_empty() {
        let s = parse("").unwrap();
        assert_eq!(s.branch, "main");
        assert_eq!(s.retention, 5);
        assert_eq!(s.health_timeout, Duration::from_secs(60));
        assert_eq!(s.min_free_space, 2 << 30);
        assert_eq!(s.build_cache, 5 << 30);
    }

    #[test]
    fn reads_values() {
        let s = parse("branch: prod\nretention: 2\nhealth_timeout: 1m\nmin_free_space: 10g\nallow:\n  privileged: true\n")
            .unwrap();
        assert_eq!(s.branch, "prod");
        assert_eq!(s.retention, 2);
        assert_eq!(s.health_timeout, Duration::from_secs(60));
        assert_eq!(s.min_free_space, 10 << 30);
        assert!(s.allow.privileged);
    }

    #[test]
    fn backup_settings() {
        let s = parse(
            "backups: always\nbackup_schedule: daily\nrelease_timeout: 5m\nbuild_timeout: 10m\n",
        )
        .unwrap();
        assert_eq!(s.build_timeout, Duration::from_secs(600));
        assert_eq!(s.backups, Backups::Always);
        assert_eq!(s.backup_schedule, Some(Duration::from_secs(86400)));
        assert_eq!(s.release_timeout, Duration::from_secs(300));
        assert_eq!(
            parse("backup_schedule: 6h\n").unwrap().backup_schedule,
            Some(Duration::from_secs(6 * 3600))
        );
        let defaults = parse("").unwrap();
        assert_eq!(defaults.backups, Backups::Release);
        assert_eq!(defaults.backup_retention, 10);
        assert_eq!(defaults.backup_schedule, None);
        let err = parse("backups: sometimes\n").unwrap_err().to_string();
        assert!(
            err.contains("backups: unknown variant `sometimes`"),
            "{err}"
        );
        let err = parse("backup_schedule: 1s\n").unwrap_err().to_string();
        assert!(
            err.contains("backup_schedule: a backup schedule shorter"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("brnach: main\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `brnach`"), "{err}");
        let err = parse("allow:\n  priviliged: true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("allow: unknown field `priviliged`"), "{err}");
    }

    #[test]
    fn project_from_root_dir() {
        let s = Settings::default();
        let root = Root::new(PathBuf::from("/srv/My App"));
        assert_eq!(s.project(&root).unwrap().as_str(), "myapp");
    }
}
