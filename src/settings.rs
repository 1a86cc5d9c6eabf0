//! Host settings in `ROOT/deploy.yml`: what the operator decides, never the pushed repo.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::compose::{bytes, duration};
use crate::ids::{EnvName, ProjectName};
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
    /// Environments beside `production`, each with its branch and what it sets otherwise
    /// (the top level is every environment's default).
    pub(crate) environments: BTreeMap<EnvName, Overrides>,
    /// A throwaway environment for every push of a matching branch.
    #[serde(deserialize_with = "de_previews")]
    pub(crate) previews: Option<Previews>,
    /// The caps a preview's containers get, whatever their compose file says (set by
    /// `for_env` for a preview; never read from the file).
    #[serde(skip)]
    pub(crate) limits: Option<Limits>,
}

/// What an environment may set for itself; every key left out is the top level's.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Overrides {
    pub(crate) branch: Option<String>,
    pub(crate) compose_files: Option<Vec<PathBuf>>,
    pub(crate) profiles: Option<Vec<String>>,
    pub(crate) env_file: Option<PathBuf>,
    pub(crate) health_path: Option<String>,
    #[serde(deserialize_with = "de_some_duration")]
    pub(crate) health_timeout: Option<Duration>,
    pub(crate) retention: Option<usize>,
    #[serde(deserialize_with = "de_some_hostnames")]
    pub(crate) hostnames: Option<Vec<String>>,
    pub(crate) route: Option<RouteSettings>,
    pub(crate) https_redirect: Option<bool>,
    pub(crate) backups: Option<Backups>,
    pub(crate) backup_retention: Option<usize>,
}

/// `previews:` in deploy.yml: which branches get one, for how long, and how it starts;
/// besides these keys, a preview may set what an environment may (`Overrides`).
#[derive(Clone, Debug)]
pub(crate) struct Previews {
    /// Glob patterns of branch names (`feature/*`).
    pub(crate) branches: globset::GlobSet,
    pub(crate) patterns: Vec<String>,
    /// A preview no push reached for this long is torn down.
    pub(crate) ttl: Duration,
    /// A folder (relative to ROOT) whose files become each new preview's `code/.secrets`.
    pub(crate) secrets_from: Option<PathBuf>,
    /// The environment whose newest dump a new preview's databases start from.
    pub(crate) seed_from: Option<EnvName>,
    pub(crate) limits: Option<Limits>,
    /// The most previews at once; a push that would make one more is refused.
    pub(crate) max_previews: usize,
    /// Each preview's hostname, `{env}` standing for its name.
    pub(crate) hostname: Option<String>,
    pub(crate) overrides: Overrides,
}

/// The part of `previews:` that only previews have.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewKeys {
    branches: Vec<String>,
    #[serde(default, deserialize_with = "de_ttl")]
    ttl: Option<Duration>,
    #[serde(default)]
    secrets_from: Option<PathBuf>,
    #[serde(default)]
    seed_from: Option<EnvName>,
    #[serde(default)]
    limits: Option<Limits>,
    #[serde(default)]
    max_previews: Option<usize>,
    #[serde(default)]
    hostname: Option<String>,
}

/// `limits:` of previews: caps on every container of a preview.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Limits {
    pub(crate) cpus: Option<f64>,
    #[serde(deserialize_with = "de_some_bytes")]
    pub(crate) memory: Option<u64>,
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
            environments: BTreeMap::new(),
            previews: None,
            limits: None,
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
    /// Reads `ROOT/deploy.yml` (a missing file means every default), as it applies to the
    /// environment `root` is seen from.
    pub(crate) fn load(root: &Root) -> anyhow::Result<Self> {
        Ok(Self::load_all(root)?.for_env(root))
    }

    /// Reads `ROOT/deploy.yml` with its top level as it is, for what concerns every
    /// environment (which ones there are, which branch goes where).
    pub(crate) fn load_all(root: &Root) -> anyhow::Result<Self> {
        let path = root.settings_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => {
                Err(anyhow::anyhow!(e).context(format!("failed to read `{}`", path.display())))
            }
        }
    }

    /// The settings of `root`'s environment: the top level with the environment's own keys
    /// over it. An environment that `environments` does not name is a preview (its branch
    /// is the one it was made for, kept in its folder).
    pub(crate) fn for_env(mut self, root: &Root) -> Self {
        let env = root.env();
        let overrides = match self.environments.get(env) {
            Some(o) => o.clone(),
            None if env.is_production() => Overrides::default(),
            None => {
                let previews = self.previews.clone();
                self.limits = previews.as_ref().and_then(|p| p.limits);
                if let Ok(branch) = std::fs::read_to_string(root.preview_branch()) {
                    self.branch = branch.trim().to_owned();
                }
                let mut o = previews.map(|p| p.overrides).unwrap_or_default();
                if let Some(host) = self.previews.as_ref().and_then(|p| p.hostname.as_ref()) {
                    o.hostnames = Some(vec![host.replace("{env}", env.as_str())]);
                }
                o
            }
        };
        let Overrides {
            branch,
            compose_files,
            profiles,
            env_file,
            health_path,
            health_timeout,
            retention,
            hostnames,
            route,
            https_redirect,
            backups,
            backup_retention,
        } = overrides;
        fn set<T>(to: &mut T, from: Option<T>) {
            if let Some(v) = from {
                *to = v;
            }
        }
        set(&mut self.branch, branch);
        set(&mut self.compose_files, compose_files);
        set(&mut self.profiles, profiles);
        set(&mut self.env_file, env_file.map(Some));
        set(&mut self.health_path, health_path.map(Some));
        set(&mut self.health_timeout, health_timeout);
        set(&mut self.retention, retention);
        set(&mut self.hostnames, hostnames);
        set(&mut self.route, route);
        set(&mut self.https_redirect, https_redirect);
        set(&mut self.backups, backups);
        set(&mut self.backup_retention, backup_retention);
        self
    }

    /// The branch of each environment `deploy.yml` names, `production` first.
    pub(crate) fn named_environments(&self) -> Vec<(EnvName, String)> {
        let production = EnvName::production();
        let main = (self.environments.get(&production))
            .and_then(|o| o.branch.clone())
            .unwrap_or_else(|| self.branch.clone());
        let mut named = vec![(production.clone(), main)];
        for (name, o) in &self.environments {
            if *name != production {
                named.push((name.clone(), o.branch.clone().unwrap_or_default()));
            }
        }
        named
    }

    /// Where a push of `branch` goes: a named environment, or a preview (`true`).
    pub(crate) fn env_of_branch(&self, branch: &str) -> Option<(EnvName, bool)> {
        if let Some((name, _)) = (self.named_environments().into_iter()).find(|(_, b)| b == branch)
        {
            return Some((name, false));
        }
        let previews = self.previews.as_ref()?;
        if !previews.branches.is_match(branch) {
            return None;
        }
        // A branch whose safe name is a named environment's (`Staging`) never reaches it.
        let name = EnvName::of_branch(branch)?;
        let named = self.named_environments();
        (!named.iter().any(|(n, _)| *n == name)).then_some((name, true))
    }

    /// The rules no single key can check: every environment has a branch of its own, and
    /// no preview pattern takes a named environment's branch.
    fn check_environments(&self) -> Result<(), String> {
        let named = self.named_environments();
        for (name, branch) in &named {
            if branch.is_empty() {
                return Err(format!("environments: {name}: `branch` is missing"));
            }
        }
        for (i, (a, branch)) in named.iter().enumerate() {
            if let Some((b, _)) = named[i + 1..].iter().find(|(_, other)| other == branch) {
                return Err(format!(
                    "environments: `{a}` and `{b}` both deploy the branch `{branch}`; give each environment a branch of its own"
                ));
            }
        }
        if let Some(previews) = &self.previews {
            for (name, branch) in &named {
                if let Some(pattern) = (previews.branches.matches(branch).first())
                    .and_then(|i| previews.patterns.get(*i))
                {
                    return Err(format!(
                        "previews: branches: `{pattern}` matches `{branch}`, the branch of the environment `{name}`; a branch deploys to one environment only"
                    ));
                }
            }
            if let Some(seed) = &previews.seed_from
                && !named.iter().any(|(name, _)| name == seed)
            {
                return Err(format!(
                    "previews: seed_from: `{seed}` is not an environment of this deploy.yml"
                ));
            }
            if previews.overrides.branch.is_some() {
                return Err(
                    "previews: `branch` is not a preview's key; `branches` names the patterns"
                        .to_owned(),
                );
            }
        }
        Ok(())
    }

    pub(crate) fn parse(text: &str, path: &Path) -> anyhow::Result<Self> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        let settings: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner();
            let msg = inner.to_string();
            if at == "." {
                anyhow::anyhow!("`{}`: {msg}", path.display())
            } else {
                anyhow::anyhow!("`{}`: {at}: {msg}", path.display())
            }
        })?;
        settings
            .check_environments()
            .map_err(|msg| anyhow::anyhow!("`{}`: {msg}", path.display()))?;
        Ok(settings)
    }

    /// The project name: the setting, or ROOT's directory name made valid; an environment
    /// other than `production` adds `-<name>` to it.
    pub(crate) fn project(&self, root: &Root) -> anyhow::Result<ProjectName> {
        let base = self.base_project(root)?;
        if root.env().is_production() {
            return Ok(base);
        }
        Ok(ProjectName::parse(&format!("{base}-{}", root.env()))?)
    }

    fn base_project(&self, root: &Root) -> anyhow::Result<ProjectName> {
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

fn de_some_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

/// A duration, or a number of days (`5d`), which a preview's life is usually counted in.
fn de_ttl<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let raw = StringOrNumber::deserialize(d)?;
    if let Some(days) = raw.0.strip_suffix('d')
        && let Ok(days) = days.parse::<u64>()
    {
        return Ok(Some(Duration::from_secs(days * 24 * 3600)));
    }
    duration::parse(&raw.0)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn de_some_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_bytes(d).map(Some)
}

fn de_some_hostnames<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    de_hostnames(d).map(Some)
}

/// `previews:`: its own keys, and an environment's (`Overrides`) for the rest.
fn de_previews<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Previews>, D::Error> {
    use serde::de::Error;
    const OWN: [&str; 7] = [
        "branches",
        "ttl",
        "secrets_from",
        "seed_from",
        "limits",
        "max_previews",
        "hostname",
    ];
    let serde_yaml::Value::Mapping(mut all) = serde_yaml::Value::deserialize(d)? else {
        return Err(D::Error::custom("expected a mapping of preview settings"));
    };
    let mut own = serde_yaml::Mapping::new();
    for key in OWN {
        if let Some(v) = all.remove(key) {
            own.insert(key.into(), v);
        }
    }
    let keys: PreviewKeys = serde_yaml::from_value(serde_yaml::Value::Mapping(own))
        .map_err(|e| D::Error::custom(e.to_string()))?;
    let overrides: Overrides = serde_yaml::from_value(serde_yaml::Value::Mapping(all))
        .map_err(|e| D::Error::custom(e.to_string()))?;
    let mut set = globset::GlobSetBuilder::new();
    for pattern in &keys.branches {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(false)
            .build()
            .map_err(|e| D::Error::custom(format!("branches: `{pattern}`: {e}")))?;
        set.add(glob);
    }
    if let Some(host) = &keys.hostname
        && !crate::serve::proxy::is_hostname(&host.replace("{env}", "x"))
    {
        return Err(D::Error::custom(format!(
            "hostname: `{host}` is not a hostname once `{{env}}` is a preview's name"
        )));
    }
    Ok(Some(Previews {
        branches: set.build().map_err(|e| D::Error::custom(e.to_string()))?,
        patterns: keys.branches,
        ttl: keys.ttl.unwrap_or(Duration::from_secs(5 * 24 * 3600)),
        secrets_from: keys.secrets_from,
        seed_from: keys.seed_from,
        limits: keys.limits,
        max_previews: keys.max_previews.unwrap_or(10),
        hostname: keys.hostname.map(|h| h.to_ascii_lowercase()),
        overrides,
    }))
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
    fn environments_override_the_top_level() {
        let s = parse(
            "branch: main\nhealth_timeout: 30s\nenv_file: host.env\nenvironments:\n  staging:\n    branch: staging\n    env_file: staging.env\n    hostnames: [staging.example.com]\npreviews:\n  branches: [\"feature/*\"]\n  ttl: 2d\n  hostname: \"{env}.preview.example.com\"\n  limits: {cpus: 1, memory: 1GiB}\n  compose_files: [a.yml, b.yml]\n",
        )
        .unwrap();
        let root = Root::new(PathBuf::from("/srv/shop"));
        let staging = s
            .clone()
            .for_env(&root.with_env(EnvName::parse("staging").unwrap()));
        assert_eq!(staging.branch, "staging");
        assert_eq!(staging.env_file, Some(PathBuf::from("staging.env")));
        assert_eq!(
            staging.health_timeout,
            Duration::from_secs(30),
            "the top level's"
        );
        assert_eq!(staging.hostnames, ["staging.example.com"]);
        assert_eq!(staging.limits, None);
        let preview = root.with_env(EnvName::parse("feature-x").unwrap());
        assert_eq!(s.project(&preview).unwrap().as_str(), "shop-feature-x");
        let preview = s.clone().for_env(&preview);
        assert_eq!(preview.hostnames, ["feature-x.preview.example.com"]);
        assert_eq!(
            preview.compose_files,
            [PathBuf::from("a.yml"), PathBuf::from("b.yml")]
        );
        assert_eq!(preview.limits.unwrap().memory, Some(1 << 30));
        let production = s.clone().for_env(&root);
        assert_eq!(production.branch, "main");
        assert_eq!(s.project(&root).unwrap().as_str(), "shop");
        assert!(production.hostnames.is_empty());

        let to = |b: &str| s.env_of_branch(b).map(|(e, p)| (e.to_string(), p));
        assert_eq!(to("main"), Some(("production".to_owned(), false)));
        assert_eq!(to("staging"), Some(("staging".to_owned(), false)));
        assert_eq!(
            to("feature/Log-In"),
            Some(("feature-log-in".to_owned(), true))
        );
        assert_eq!(to("fix/x"), None);
        let s =
            parse("previews:\n  branches: [\"S*\"]\nenvironments:\n  staging: {branch: stage}\n")
                .unwrap();
        assert_eq!(
            s.env_of_branch("Staging"),
            None,
            "never into a named environment"
        );
    }

    #[test]
    fn bad_environments_are_named() {
        let err = |text: &str| parse(text).unwrap_err().to_string();
        let e = err("environments:\n  Staging: {branch: staging}\n");
        assert!(e.contains("`Staging`"), "{e}");
        let e = err("environments:\n  staging: {branch: main}\n");
        assert!(
            e.contains("`production` and `staging` both deploy the branch `main`"),
            "{e}"
        );
        let e = err("environments:\n  staging: {}\n");
        assert!(e.contains("staging: `branch` is missing"), "{e}");
        let e = err("previews:\n  branches: [\"*\"]\n");
        assert!(
            e.contains("`*` matches `main`, the branch of the environment `production`"),
            "{e}"
        );
        let e = err("previews:\n  branches: [\"f/*\"]\n  seed_from: staging\n");
        assert!(
            e.contains("seed_from: `staging` is not an environment"),
            "{e}"
        );
        let e = err("previews:\n  branches: [\"f/*\"]\n  tll: 1d\n");
        assert!(e.contains("unknown field `tll`"), "{e}");
    }

    #[test]
    fn project_from_root_dir() {
        let s = Settings::default();
        let root = Root::new(PathBuf::from("/srv/My App"));
        assert_eq!(s.project(&root).unwrap().as_str(), "myapp");
    }
}
